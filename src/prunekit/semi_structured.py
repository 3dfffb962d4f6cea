"""2:4 on NVIDIA GPUs: swap valid 2:4 linear weights for ``torch.sparse`` semi-structured tensors.

Needs CUDA compute capability ≥ 8.0 (Ampere or newer) and fp16/bf16 weights; everywhere else
``support()`` says why not and nothing is converted.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from .selection import is_valid_nm
from .targets import find_targets

log = logging.getLogger(__name__)


def support(device: int | str = 0) -> tuple[bool, str]:
    """(True, "") where 2:4 semi-structured kernels can run; otherwise (False, the reason)."""
    if not torch.cuda.is_available():
        return False, "no CUDA GPU"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 0):
        return False, f"{torch.cuda.get_device_name(device)} has compute capability {major}.{minor} (< 8.0)"
    return True, ""


def to_semi_structured(model: nn.Module, include: tuple[str, ...] = (), exclude: tuple[str, ...] = ()) -> list[str]:
    """Convert (in place) every CUDA fp16/bf16 block ``nn.Linear`` whose weight is exactly 2:4; return their names."""
    ok, why = support()
    if not ok:
        raise RuntimeError(f"2:4 semi-structured sparsity is not available here: {why}")
    from torch.sparse import to_sparse_semi_structured

    converted = []
    for name, module in find_targets(model, include, exclude).items():
        if not isinstance(module, nn.Linear):
            continue
        w = module.weight
        if w.device.type != "cuda" or w.dtype not in (torch.float16, torch.bfloat16) or not is_valid_nm(w.data, 2, 4):
            continue
        module.weight = nn.Parameter(to_sparse_semi_structured(w.data), requires_grad=False)
        converted.append(name)
    log.info("2:4 semi-structured: %d layers converted", len(converted))
    return converted


def time_2to4(shape: tuple[int, int], batch: int, dtype: torch.dtype = torch.float16, reps: int = 50) -> dict[str, float]:
    """Median milliseconds of dense vs semi-structured ``F.linear`` on one random 2:4 layer (CUDA events)."""
    from torch.sparse import to_sparse_semi_structured

    rows, cols = shape
    dense = torch.randn(rows, cols, dtype=dtype, device="cuda")
    dense = dense * torch.tensor([0, 0, 1, 1], dtype=dtype, device="cuda").tile(rows, cols // 4)
    sparse = to_sparse_semi_structured(dense)
    x = torch.randn(batch, cols, dtype=dtype, device="cuda")
    out = {}
    for name, w in (("dense", dense), ("semi_structured", sparse)):
        for _ in range(5):
            F.linear(x, w)
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            F.linear(x, w)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        out[name] = sorted(times)[len(times) // 2]
    return out
