"""Issue 5's and 17's kernel targets: prunekit's CPU sparse kernel vs dense, one layer at a time.

Every linear shape of SmolLM2-135M plus 4096×4096 and 11008×4096; 50%, 70%, 90% unstructured and
2:4; batch 1; float32, and bfloat16 values against dense bfloat16. Weights are random, pruned per
row by magnitude, and rotated over enough copies to exceed twice the last-level cache, so every call
reads its weight from memory as in a real forward pass. Dense and each sparse layout alternate call
by call in this one process; medians. The whole sweep runs ``--passes`` times and each row reports
its median pass and the range over passes (on a shared machine one pass can land in a slow spell).
Two comparisons: the modules a model calls (``nn.Linear`` vs ``SparseLinear``; the target columns),
and the bare calls under them (``F.linear`` vs the compiled ``sparse_forward``), which shows how much
of a small layer's time is call overhead. "limit" is the memory-bound speedup: dense bytes ÷ bytes of
the smaller kernel layout; "of limit" is how much of it the faster layout reached (over 100% where
dense GEMV itself falls short of memory bandwidth). Every sparse speedup is also quoted against
prunekit's own compiled dense layout of the same dtype (``gemv``: the same kernel quality, no mask):
"vs gemv" is what the zeros alone buy, "of limit (gemv)" its share of the bytes-ratio limit (issue 17's
target: at least 80% at 50%, 70% and 90%). Also checks each output against dense (max error relative
to max |y|).

    .venv/bin/python bench/kernel.py [--dtypes float32,bfloat16] [--reps 30] [--passes 3] [--out runs/bench-kernel.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from prunekit.measure.hardware import cpu_info, pruned_weight
from prunekit.native import extension
from prunekit.run import kernel
from prunekit.run.layouts import FLOAT_LAYOUTS as LAYOUTS
from prunekit.run.sparse_linear import SMALL_BATCH, SparseLinear
from prunekit.run.swap import layout_bytes, measure_layer
from prunekit.selection import Pattern
from prunekit.settings import DTYPES
from prunekit.store.manifest import build_manifest, write_json
from prunekit.timing import alternate, copies_past_cache

SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (4096, 4096), (11008, 4096)]
PATTERNS = tuple(map(Pattern.parse, ["50%", "2:4", "70%", "90%"]))
TARGETS = {"50%": 1.25, "70%": 2.0, "90%": 4.5}
OF_LIMIT_TARGET = {"50%": 0.8, "70%": 0.8, "90%": 0.8}  # sparse vs gemv, share of the bytes-ratio limit


def max_rel_error(w: torch.Tensor, layout: str) -> float:
    x = torch.randn(1, w.shape[1], dtype=w.dtype)
    ref = F.linear(x.double(), w.double())
    y = SparseLinear(w, None, layout)(x).double()
    return float((y - ref).abs().max() / ref.abs().max())


def bare_seconds(w: torch.Tensor, reps: int) -> dict[str, float]:
    """Median seconds of bare ``F.linear`` and of the compiled call under ``SparseLinear`` (per layout)."""
    n = copies_past_cache(w.numel() * w.element_size())
    dense = [w.clone() for _ in range(n)]
    call, isa = extension.load().sparse_forward, extension.forced_isa()
    x = torch.randn(1, w.shape[1], dtype=w.dtype)
    fns = {"dense": lambda i: F.linear(x, dense[i % n])}
    for k in kernel.KINDS:
        packed = [kernel.pack(d, k) for d in dense]
        fns[k] = lambda i, packed=packed: call(x, packed[i % n], None, isa, SMALL_BATCH, 0)
    with torch.inference_mode():
        return alternate(fns, reps=reps)


def measure(w: torch.Tensor, reps: int) -> dict[str, float]:
    """One pass over one weight: speedups of each layout (modules) and of the best bare call."""
    t = measure_layer(w, None, LAYOUTS, reps)[1]
    bare = bare_seconds(w, reps)
    return {"dense_s": t["dense"], "bare_dense_s": bare["dense"], **{k: t["dense"] / t[k] for k in LAYOUTS},
            "bare_speedup": bare["dense"] / min(bare[k] for k in kernel.KINDS),
            "vs_gemv": t["gemv"] / min(t[k] for k in kernel.KINDS)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--passes", type=int, default=3, help="sweeps over every row; each row reports the median pass")
    ap.add_argument("--out", default="runs/bench-kernel.json")
    args = ap.parse_args()
    if not extension.available():
        sys.exit("the sparse kernel could not be built here (no C++ compiler?)")
    if args.passes < 1 or args.reps < 1:
        sys.exit("--passes and --reps must be at least 1")
    keys = [(DTYPES[d], shape, pattern) for d in args.dtypes.split(",") for shape in SHAPES for pattern in PATTERNS]
    passes: dict[tuple, list[dict[str, float]]] = {key: [] for key in keys}
    for i in range(args.passes):  # whole sweeps, so a slow spell of the machine hits one pass of every row
        for key in tqdm(keys, desc=f"pass {i + 1}/{args.passes}"):
            passes[key].append(measure(pruned_weight(key[1], key[2], key[0]), args.reps))
    rows = []
    for (dtype, shape, pattern), runs in passes.items():
        w = pruned_weight(shape, pattern, dtype)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        best = max(kernel.KINDS, key=med.get)
        dense_bytes = w.numel() * w.element_size()
        limit = dense_bytes / min(layout_bytes(w, kernel.KINDS).values())
        of_limit_gemv = med["vs_gemv"] / limit
        rows.append({"dtype": str(dtype).removeprefix("torch."), "shape": list(shape), "pattern": str(pattern),
                     "dense_us": round(med["dense_s"] * 1e6, 1), "best": best, "speedup": round(med[best], 2),
                     "speedup_range": [round(min(r[best] for r in runs), 2), round(max(r[best] for r in runs), 2)],
                     **{k: round(med[k], 2) for k in LAYOUTS}, "limit": round(limit, 2),
                     "of_limit": round(med[best] / limit, 2), "target": TARGETS.get(str(pattern)),
                     "vs_gemv": round(med["vs_gemv"], 2), "of_limit_gemv": round(of_limit_gemv, 2),
                     "of_limit_gemv_target": OF_LIMIT_TARGET.get(str(pattern)),
                     "dense_gb_s": round(dense_bytes / med["dense_s"] / 1e9, 1),
                     "bare_dense_us": round(med["bare_dense_s"] * 1e6, 1), "bare_speedup": round(med["bare_speedup"], 2),
                     "max_rel_error": max_rel_error(w, best)})
        r = rows[-1]
        print(f"{r['dtype']:>8} {shape[0]:>5}x{shape[1]:<5} {pattern!s:>4}  dense {r['dense_us']:>8.1f} us "
              f"({r['dense_gb_s']:>5.1f} GB/s)  bitmask {r['bitmask']:>5.2f}x  sell {r['sell']:>5.2f}x  "
              f"torch_csr {r['torch_csr']:>5.2f}x  gemv {r['gemv']:>5.2f}x  best {r['speedup']:>5.2f}x "
              f"[{r['speedup_range'][0]:.2f}-"
              f"{r['speedup_range'][1]:.2f}]  bare {r['bare_speedup']:>5.2f}x  limit {r['limit']:>5.2f}x "
              f"({r['of_limit']:.0%})  vs gemv {r['vs_gemv']:>5.2f}x ({r['of_limit_gemv']:.0%} of limit)  "
              f"target {r['target'] or '-'}  err {r['max_rel_error']:.1e}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(build_manifest(command=sys.argv, machine=cpu_info(), kernel_isa=extension.isa(), reps=args.reps,
                              passes=args.passes, rows=rows), args.out)
    print(json.dumps({"out": args.out, "rows": len(rows),
                      "below_target": [r for r in rows if r["target"] and r["speedup"] < r["target"]],
                      "below_of_limit_gemv": [(r["dtype"], r["shape"], r["pattern"], r["of_limit_gemv"]) for r in rows
                                              if (r["of_limit_gemv_target"] or 0) > r["of_limit_gemv"]]},
                     indent=1))


if __name__ == "__main__":
    main()
