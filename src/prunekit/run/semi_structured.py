"""2:4 on NVIDIA GPUs: swap valid 2:4 linear weights for ``torch.sparse`` semi-structured tensors.

Needs CUDA compute capability ≥ 8.0 (Ampere or newer) and fp16/bf16 weights; everywhere else
``support()`` says why not and nothing is converted. torch's kernels also need both dimensions of
the weight to be multiples of its backend's tile (e.g. 32 × 64 for fp16 with CUTLASS): a layer that
is not is left dense, and ``to_semi_structured`` says which and why.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from ..selection import is_valid_nm
from ..targets import find_targets

log = logging.getLogger(__name__)
DTYPES = (torch.float16, torch.bfloat16)


def support(device: int | str = 0) -> tuple[bool, str]:
    """(True, "") where 2:4 semi-structured kernels can run; otherwise (False, the reason)."""
    if not torch.cuda.is_available():
        return False, "no CUDA GPU"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 0):
        return False, f"{torch.cuda.get_device_name(device)} has compute capability {major}.{minor} (< 8.0)"
    return True, ""


def why_not(weight: torch.Tensor) -> str | None:
    """Why this weight cannot be stored semi-structured (before torch's own device and shape checks)."""
    if weight.dtype not in DTYPES:
        return f"{weight.dtype}, not float16 or bfloat16"
    if not is_valid_nm(weight, 2, 4):
        return "not 2:4"
    return None


def compress(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every weight that can be stored semi-structured, compressed; and for the rest, why not.
    Nothing is changed: the caller swaps them in once all are made."""
    from torch.sparse import to_sparse_semi_structured

    done, skipped = {}, {}
    for name, w in weights.items():
        reason = why_not(w)
        if reason is None:
            try:
                done[name] = to_sparse_semi_structured(w.detach().contiguous())
            except RuntimeError as e:  # torch's device and shape rules for its backend: say which, go on
                reason = str(e).splitlines()[0]
        if reason is not None:
            skipped[name] = reason
    return done, skipped


def to_semi_structured(model: nn.Module, include: tuple[str, ...] = (),
                       exclude: tuple[str, ...] = ()) -> tuple[list[str], dict[str, str]]:
    """Convert (in place) every block ``nn.Linear`` whose weight is fp16/bf16, exactly 2:4, on the GPU
    and of a shape torch's kernels take. Returns the converted names and, for the other block
    linears, why not. All are compressed before the first is swapped: an error leaves the model as
    it was."""
    ok, why = support()
    if not ok:
        raise RuntimeError(f"2:4 semi-structured sparsity is not available here: {why}")
    linears = {name: m for name, m in find_targets(model, include, exclude).items() if isinstance(m, nn.Linear)}
    done, skipped = compress({name: m.weight for name, m in linears.items()})
    for name, w in done.items():
        linears[name].weight = nn.Parameter(w, requires_grad=False)
    log.info("2:4 semi-structured: %d layers converted, %d left dense", len(done), len(skipped))
    for name, reason in skipped.items():
        log.info("  %s left dense: %s", name, reason)
    return list(done), skipped


def plain_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """The tensors holding ``t``'s memory: itself, or a semi-structured (or any wrapper) tensor's inner ones."""
    if is_traceable_wrapper_subclass(t):
        return [p for name in t.__tensor_flatten__()[0] for p in plain_tensors(getattr(t, name))]
    return [t]


def time_2to4(shape: tuple[int, int], batch: int, dtype: torch.dtype = torch.float16, reps: int = 50) -> dict:
    """One random 2:4 layer, dense vs semi-structured ``F.linear``: median milliseconds of each (CUDA
    events), the largest output difference relative to the largest dense output, and weight bytes."""
    from torch.sparse import to_sparse_semi_structured

    rows, cols = shape
    dense = torch.randn(rows, cols, dtype=dtype, device="cuda")
    dense = dense * torch.tensor([0, 0, 1, 1], dtype=dtype, device="cuda").tile(rows, cols // 4)
    sparse = to_sparse_semi_structured(dense)
    x = torch.randn(batch, cols, dtype=dtype, device="cuda")
    ms = {}
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
        ms[name] = sorted(times)[len(times) // 2]
    ref = F.linear(x, dense).float()
    error = (F.linear(x, sparse).float() - ref).abs().max() / ref.abs().max().clamp(min=1e-30)
    return {"ms": ms, "max_rel_error": float(error), "dense_bytes": dense.numel() * dense.element_size(),
            "stored_bytes": sum(t.numel() * t.element_size() for t in plain_tensors(sparse))}
