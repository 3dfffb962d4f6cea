"""The runtime layouts a ``SparseLinear`` can hold, one row each: how its weight is built into buffers, checked and
unpacked, which compiled entry runs it, and what it needs (a quantization grid the kernel runs, an N:M pattern,
enough zeros to pay). A new layout is one row here plus its packer; nothing else compares layout names.

``bitmask`` here is the compiled kernel's layout (16-bit mask words, each row starting on a new word; ``kernel.py``),
not the export's storage format of the same name (one bit stream; ``store/formats.py``)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from ..quant.grid import LayerGrid
from . import kernel, quant_pack

CSR_PARTS = ("csr_crow", "csr_col", "csr_values")  # torch_csr's buffers


def _csr_build(weight: torch.Tensor, grid: LayerGrid | None) -> tuple[torch.Tensor, ...]:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.float().to_sparse_csr()
    return csr.crow_indices(), csr.col_indices(), csr.values()


def csr_tensor(parts: tuple[torch.Tensor, ...], shape: tuple[int, int], check: bool = False) -> torch.Tensor:
    return torch.sparse_csr_tensor(*parts, shape, check_invariants=check)


def _csr_check(parts: tuple[torch.Tensor, ...], shape: tuple[int, int]) -> None:
    try:
        csr_tensor(parts, shape, check=True)
    except RuntimeError as e:
        raise ValueError(f"not a valid CSR weight for this layer: {e}") from e
    if parts[2].dtype != torch.float32:
        raise ValueError(f"float32 values expected, got {parts[2].dtype}")


def _kernel_check(parts: tuple[torch.Tensor, ...], shape: tuple[int, int]) -> tuple[str, tuple[int, int], torch.dtype]:
    kind, stored, packed = kernel.check(parts[0])
    return kind, stored, packed["values"].dtype


def _pack_check(parts: tuple[torch.Tensor, ...], shape: tuple[int, int]) -> tuple[str, tuple[int, int], torch.dtype]:
    kind, stored, dtype, *_ = quant_pack.check(parts[0])
    return kind, stored, dtype


@dataclass(frozen=True)
class Layout:
    buffers: tuple[str, ...]  # the weight's buffers on the module (state_dict, .to() and torch.save carry them)
    build: Callable[[torch.Tensor, LayerGrid | None], tuple[torch.Tensor, ...]]  # (weight, grid) -> buffers
    # buffers -> what they say they hold, (layout, shape, float dtype or None), for the layer to compare, or None when
    # they carry no such header; ValueError when an index is out of range or the bytes were changed
    check: Callable[[tuple[torch.Tensor, ...], tuple[int, int]], tuple | None]
    dense: Callable[[tuple[torch.Tensor, ...], tuple[int, int]], torch.Tensor]  # buffers -> the (out, in) weight
    entry: str | None  # the compiled extension's call, or None: stock torch
    quantized: bool = False  # holds a weight's levels on its grid (4 or 8 bits, groups of a multiple of 64 columns)
    sparse: bool = True      # stores only nonzeros: worth timing from a few zeros on (the dense ones always)
    pattern: tuple[int, int] | None = None  # holds only weights whose zeros follow this N:M


def _kernel_row(name: str) -> Layout:
    return Layout(("packed",), lambda w, g: (kernel.pack(w, name),), _kernel_check,
                  lambda parts, shape: kernel.unpack(parts[0]), "sparse_forward")


def _pack_row(name: str, quantized: bool, sparse: bool, pattern: tuple[int, int] | None = None) -> Layout:
    return Layout(("packed",), lambda w, g: (quant_pack.pack(w, name, g),), _pack_check,
                  lambda parts, shape: quant_pack.unpack(parts[0]), "quant_forward", quantized, sparse, pattern)


LAYOUTS: Mapping[str, Layout] = MappingProxyType({
    "bitmask": _kernel_row("bitmask"),
    "sell": _kernel_row("sell"),
    "torch_csr": Layout(CSR_PARTS, _csr_build, _csr_check, lambda parts, shape: csr_tensor(parts, shape).to_dense(),
                        None),
    "gemv": _pack_row("gemv", quantized=False, sparse=False),
    "qdense": _pack_row("qdense", quantized=True, sparse=False),
    "qbitmask": _pack_row("qbitmask", quantized=True, sparse=True),
    "qnm": _pack_row("qnm", quantized=True, sparse=True, pattern=(2, 4)),
})
FLOAT_LAYOUTS = tuple(k for k, row in LAYOUTS.items() if not row.quantized)  # for float weights
QUANT_LAYOUTS = tuple(k for k, row in LAYOUTS.items() if row.quantized)  # for weights on a LayerGrid
DENSE = "dense"  # no layout: the layer stays an ``nn.Linear``
GEMV = "gemv"  # the compiled dense layout: the baseline sparse speedups are quoted against, and the output head's
COMPILED = tuple(k for k, row in LAYOUTS.items() if row.entry is not None)
