"""The compiled extension: build it with the machine's compiler, load it.

The C++ sources (``csrc/sparse_linear.cpp``, the sparse kernel; ``csrc/dense_quant_linear.cpp``, the
dense and quantized kernels; ``csrc/memory_pool.cpp``, the calibration memory pool) are compiled once,
into one extension, by ``torch.utils.cpp_extension`` into ``<cache>/kernels/<torch version>/``
(``scripts/setup.sh`` does it at install time; otherwise the first use does). Without a working
compiler ``available()`` is False and callers fall back to dense.
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

from ..fsutil import cache_dir

log = logging.getLogger(__name__)
SOURCES = [Path(__file__).parent / "csrc" / f for f in ("sparse_linear.cpp", "dense_quant_linear.cpp", "memory_pool.cpp")]
ISAS = {"scalar": 0, "avx2": 1, "avx512": 2, "avx512_bf16": 3, "avx512_permute": 4}


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
