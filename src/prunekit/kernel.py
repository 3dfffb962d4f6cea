"""The compiled CPU sparse kernel: build it with the machine's compiler, load it, call it.

The C++ sources (``csrc/sparse_linear.cpp``, and ``csrc/memory_pool.cpp`` for ``memory_pool``) are
compiled once, into one extension, by ``torch.utils.cpp_extension``
into ``<cache>/kernels/<torch version>/`` (``scripts/setup.sh`` does it at install time; otherwise the
first use does). Without a working compiler ``available()`` is False and callers fall back to dense.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

from .models import cache_dir

log = logging.getLogger(__name__)
SOURCES = [Path(__file__).parent / "csrc" / f for f in ("sparse_linear.cpp", "memory_pool.cpp")]
ISAS = {"scalar": 0, "avx2": 1, "avx512": 2, "avx512_bf16": 3, "avx512_permute": 4}
KINDS = ("bitmask", "csr")
PARTS = {"bitmask": ("mask", "values", "row_ptr"), "csr": ("crow", "col", "values")}  # in the kernel's argument order
PAD = 32  # zeros after the packed values, so vector loads never leave the buffer


def forced_isa() -> int:
    """``PRUNEKIT_KERNEL_ISA=avx512_bf16|avx512|avx2|scalar`` caps the instruction set (to test every
    path on one machine); ``SparseLinear`` reads it when the layer is built."""
    name = os.environ.get("PRUNEKIT_KERNEL_ISA", "")
    return ISAS.get(name, -1)


@cache
def load(verbose: bool = False) -> ModuleType:
    """Compile (first time) and import the extension; raises if there is no working compiler."""
    from torch.utils import cpp_extension

    venv_bin = str(Path(sys.executable).parent)  # pip's ninja lands here; torch looks for it on PATH
    if shutil.which("ninja") is None and shutil.which("ninja", path=venv_bin):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")
    build = cache_dir() / "kernels" / torch.__version__.replace("+", "_")
    build.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(name="prunekit_sparse_linear", sources=[str(s) for s in SOURCES], build_directory=str(build),
                              extra_cflags=["-O3", "-fopenmp"], extra_ldflags=["-fopenmp"], verbose=verbose)


@cache
def available() -> bool:
    try:
        load()
        return True
    except Exception as e:  # no compiler, no ninja, headers missing: fall back to dense, say why once
        log.warning("prunekit's sparse kernel could not be built (%s); sparse layers will run dense", e)
        return False


def isa() -> str:
    """The instruction set the kernel uses on this machine (after any ``PRUNEKIT_KERNEL_ISA`` cap)."""
    return load().isa_name(forced_isa())


def pack_bitmask(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """(rows, cols) → 16-bit mask words per 16 columns, row-major nonzeros (+ padding), row offsets."""
    rows, cols = weight.shape
    chunks = (cols + 15) // 16
    keep = torch.zeros(rows, chunks * 16, dtype=torch.bool)
    keep[:, :cols] = weight != 0
    bits = keep.view(rows, chunks, 16).to(torch.int32) << torch.arange(16, dtype=torch.int32)
    words = bits.sum(2, dtype=torch.int32)  # (rows, chunks) in [0, 65535]
    mask = torch.where(words > 32767, words - 65536, words).to(torch.int16).contiguous()
    values = weight[weight != 0]
    row_ptr = torch.zeros(rows + 1, dtype=torch.int64)
    row_ptr[1:] = (weight != 0).sum(1).cumsum(0)
    return {"mask": mask, "values": torch.cat([values, values.new_zeros(PAD)]).contiguous(), "row_ptr": row_ptr}


def pack_csr(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """(rows, cols) → int64 row pointers, int16 (or int32 when cols > 32767) columns, values."""
    rows, cols = weight.shape
    keep = weight != 0
    crow = torch.zeros(rows + 1, dtype=torch.int64)
    crow[1:] = keep.sum(1).cumsum(0)
    col = keep.nonzero()[:, 1].to(torch.int16 if cols <= 32767 else torch.int32)
    return {"crow": crow, "col": col.contiguous(), "values": weight[keep].contiguous()}


def pack(weight: torch.Tensor, kind: str) -> dict[str, torch.Tensor]:
    if kind not in KINDS:
        raise ValueError(f"unknown kernel layout {kind!r}; choose one of {KINDS}")
    return pack_bitmask(weight) if kind == "bitmask" else pack_csr(weight)


def unpack(packed: dict[str, torch.Tensor], kind: str, shape: tuple[int, int]) -> torch.Tensor:
    """The exact dense (rows, cols) weight back from ``pack``'s tensors, in the values' dtype."""
    rows, cols = shape
    values = packed["values"]
    dense = values.new_zeros(rows, cols)
    if kind == "bitmask":
        words = packed["mask"].to(torch.int32) & 0xFFFF  # (rows, chunks)
        bits = (words[:, :, None] >> torch.arange(16, dtype=torch.int32)) & 1
        keep = bits.reshape(rows, -1)[:, :cols].bool()
        dense[keep] = values[: int(packed["row_ptr"][-1])]
    else:
        row = torch.repeat_interleave(torch.arange(rows), packed["crow"].diff())
        dense[row, packed["col"].long()] = values
    return dense


def forward(x: torch.Tensor, kind: str, packed: dict[str, torch.Tensor], rows: int, bias: torch.Tensor | None = None,
            small_batch: int = 16, tile_rows: int = 0, isa: int | None = None) -> torch.Tensor:
    """nn.Linear's forward for a packed W, in one compiled call: x is (..., cols), y (..., rows) in x's
    dtype. Up to ``small_batch`` rows of x run the sparse kernel (computed in float32); more unpack
    tiles of ``tile_rows`` rows (0: ~8 MB) and multiply each with dense GEMM."""
    if kind not in KINDS:
        raise ValueError(f"unknown kernel layout {kind!r}; choose one of {KINDS}")
    isa = forced_isa() if isa is None else isa
    parts = [packed[name] for name in PARTS[kind]]
    cols = x.shape[-1] if x.dim() else 0  # the packed layouts do not record their width: SparseLinear checks it
    return load().sparse_forward(x, KINDS.index(kind), *parts, rows, cols, bias, isa, small_batch, tile_rows)


def linear(x: torch.Tensor, kind: str, packed: dict[str, torch.Tensor], rows: int,
           bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x·Wᵀ (+ bias) through the sparse kernel at any batch: (batch, cols) → (batch, rows)."""
    return forward(x, kind, packed, rows, bias, small_batch=x.shape[0])


def linear_tiled(x: torch.Tensor, kind: str, packed: dict[str, torch.Tensor], rows: int,
                 bias: torch.Tensor | None = None, tile_rows: int = 0) -> torch.Tensor:
    """Large batches: unpack tiles of rows (~8 MB) and multiply each with dense GEMM."""
    return forward(x, kind, packed, rows, bias, small_batch=-1, tile_rows=tile_rows)
