"""Where a semi-structured 2:4 ``F.linear`` spends its time on a GPU: host dispatch vs kernels, per backend.

For each shape and batch, dense and 2:4 (torch's CUTLASS and cuSPARSELt backends): milliseconds per call with a
sync after each (what ``time_2to4`` reports), host milliseconds per call issuing 50 calls back to back, and GPU
kernel milliseconds per call from the profiler. Prints a table and JSON.

    PYTHONPATH=src python3 bench/gpu_2to4_where.py
"""

from __future__ import annotations

import functools
import json
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

N = 50


def _synced(fn) -> float:
    times = []
    for _ in range(N):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return sorted(times)[N // 2]


def _host(fn) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(N):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) * 1e3 / N


def _kernels(fn) -> tuple[float, list[str]]:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(N):
            fn()
        torch.cuda.synchronize()
    evs = prof.key_averages()
    total = sum(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0) for e in evs)
    names = sorted(((getattr(e, "self_device_time_total", 0), e.key) for e in evs), reverse=True)[:3]
    return total / 1e3 / N, [f"{k[:60]} {t / N:.1f}us" for t, k in names]


def main() -> None:
    rows = []
    print("shape | batch | backend | synced ms | host ms/call | kernel ms/call | top kernels")
    for shape in ((576, 1536), (4096, 4096), (11008, 4096)):
        for batch in (1, 2048):
            r, c = shape
            dense = torch.randn(r, c, dtype=torch.float16, device="cuda")
            dense = dense * torch.tensor([0, 0, 1, 1], dtype=dense.dtype, device="cuda").tile(r, c // 4)
            x = torch.randn(batch, c, dtype=dense.dtype, device="cuda")
            variants = {"dense": dense}
            for force in (True, False):
                SparseSemiStructuredTensor._FORCE_CUTLASS = force
                try:
                    w = to_sparse_semi_structured(dense)
                    variants[type(w).__name__.replace("SparseSemiStructuredTensor", "2:4 ")] = w
                except Exception as e:  # noqa: BLE001 - a backend that does not run here is reported
                    print(f"{shape} {'cutlass' if force else 'cusparselt'}: {type(e).__name__}: {e}")
            for name, w in variants.items():
                fn = functools.partial(F.linear, x, w)
                try:
                    for _ in range(5):
                        fn()
                except RuntimeError as e:  # e.g. CUTLASS's 2:4 kernels on compute capability 9.0
                    print(f"{shape} | {batch} | {name} | {str(e).splitlines()[0]}")
                    continue
                row = {"shape": shape, "batch": batch, "backend": name, "synced_ms": _synced(fn), "host_ms": _host(fn)}
                row["kernel_ms"], row["top"] = _kernels(fn)
                rows.append(row)
                print(f"{shape} | {batch} | {name} | {row['synced_ms']:.4f} | {row['host_ms']:.4f} | "
                      f"{row['kernel_ms']:.4f} | {'; '.join(row['top'])}", flush=True)
    print(json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "rows": rows}))


if __name__ == "__main__":
    main()
