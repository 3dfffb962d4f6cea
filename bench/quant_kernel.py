"""Issue 17's per-layer kernel targets: quantized layouts against dense bf16, one layer at a time.

Every linear shape of SmolLM2-135M plus 4096×4096 and 11008×4096, batch 1, bfloat16 inputs (a bf16 model).
Random weights are rounded to an RTN grid (int4 asymmetric in groups of 128, the last group of a 576-wide
row 64 wide; int8 symmetric per output channel: an asymmetric int8 grid does not survive rounding to bf16,
whose 8-bit significand cannot hold every level − zero above 128), pruned per row by magnitude where a
pattern is given; the candidates are the modules a model calls: torch's ``nn.Linear`` on the dequantized
bf16 weight ("torch"), prunekit's compiled dense bf16 layout (``gemv``) and each quantized layout that fits
(``qdense``, ``qnm`` for 2:4, ``qbitmask``).
They alternate call by call in this one process on copies rotated past the last-level cache (every call
reads its weight from memory); the sweep runs ``--passes`` times and each row reports its median pass.
"limit" is the memory-bound speedup against torch (dense bf16 bytes ÷ the layout's bytes). Target: 2:4 +
int4 g128 at least 3× torch. Each layout's output is checked against the float32 dequantized product.

    .venv/bin/python bench/quant_kernel.py [--reps 30] [--passes 3] [--dtype bfloat16] [--out runs/bench-quant-kernel.json]
    # as on a CPU without AVX-512 (torch's kernels and prunekit's capped at AVX2):
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 PRUNEKIT_KERNEL_ISA=avx2 \
        .venv/bin/python bench/quant_kernel.py --dtype float32 --shapes 576x1536,4096x4096
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
from prunekit.quant.grid import LayerGrid, rtn
from prunekit.run.sparse_linear import SparseLinear
from prunekit.run.swap import candidates, layout_bytes, measure_layer
from prunekit.selection import Pattern
from prunekit.store.manifest import build_manifest, write_json

SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (4096, 4096), (11008, 4096)]
CONFIGS = [("int8 per-channel sym", 8, 0, None), ("int4 g128", 4, 128, None), ("2:4 + int4 g128", 4, 128, "2:4"),
           ("50% + int4 g128", 4, 128, "50%"), ("70% + int4 g128", 4, 128, "70%")]
QUANT = ("gemv", "qdense", "qnm", "qbitmask")
TARGET = {"2:4 + int4 g128": 3.0}


def layer(shape: tuple[int, int], bits: int, groupsize: int, pattern: str | None, dtype: torch.dtype = torch.bfloat16
          ) -> tuple[torch.Tensor, LayerGrid]:
    """A (rows, cols) weight of ``dtype`` on an RTN grid (pruned first to ``pattern``), and the grid."""
    g = torch.Generator().manual_seed(0)
    w = pruned_weight(shape, Pattern.parse(pattern), torch.float32) if pattern else torch.randn(shape, generator=g)
    q, grid = rtn(w, bits, groupsize, sym=bits == 8)
    return q.to(dtype), grid


def max_rel_error(w: torch.Tensor, grid: LayerGrid, layout: str) -> float:
    x = torch.randn(1, w.shape[1], dtype=w.dtype)
    ref = F.linear(x.double(), grid.apply(w.float()).double())
    y = SparseLinear(w, None, layout, grid)(x).double()
    return float((y - ref).abs().max() / ref.abs().max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--shapes", default=",".join(f"{r}x{c}" for r, c in SHAPES))
    ap.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16", help="the model's dtype")
    ap.add_argument("--out", default="runs/bench-quant-kernel.json")
    args = ap.parse_args()
    if not extension.available():
        sys.exit("the compiled kernel could not be built here (no C++ compiler?)")
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    keys = [(shape, config) for shape in shapes for config in CONFIGS]
    weights = {key: layer(key[0], *key[1][1:], getattr(torch, args.dtype)) for key in keys}
    options = {key: candidates(w, float((w == 0).float().mean()), QUANT, 0.05, grid) for key, (w, grid) in weights.items()}
    passes: dict[tuple, list[dict[str, float]]] = {key: [] for key in keys}
    for i in range(args.passes):
        for key in tqdm(keys, desc=f"pass {i + 1}/{args.passes}"):
            w, grid = weights[key]
            passes[key].append(measure_layer(w, None, options[key], args.reps, (1,), grid)[1])
    rows = []
    print(f"{'shape':>11} {'config':>18} | torch {args.dtype} us | gemv × | " + " | ".join(f"{k} ×" for k in QUANT[1:])
          + " | best × (limit) | vs gemv × | target | err")
    for key, runs in passes.items():
        (shape, config), (w, grid) = key, weights[key]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        quant = [k for k in options[key] if k != "gemv"]
        best = min(quant, key=med.get)
        dense_bytes = w.numel() * w.element_size()
        stored = layout_bytes(w, tuple(options[key]), grid)
        speed = {k: med["dense"] / med[k] for k in options[key]}
        rows.append({"shape": list(shape), "config": config[0], "torch_us": round(med["dense"] * 1e6, 1),
                     "speedup": {k: round(v, 2) for k, v in speed.items()}, "best": best,
                     "best_speedup": round(speed[best], 2),
                     "best_range": [round(min(r["dense"] / r[best] for r in runs), 2),
                                    round(max(r["dense"] / r[best] for r in runs), 2)],
                     "vs_gemv": round(med["gemv"] / med[best], 2),
                     "limit": round(dense_bytes / stored[best], 2), "bytes": stored, "dense_bytes": dense_bytes,
                     "target": TARGET.get(config[0]), "max_rel_error": max_rel_error(w, grid, best)})
        r = rows[-1]
        cells = " | ".join(f"{speed[k]:5.2f}" if k in speed else "    -" for k in QUANT[1:])
        print(f"{shape[0]:>5}x{shape[1]:<5} {config[0]:>18} | {r['torch_us']:>10.1f} | {speed['gemv']:5.2f} | {cells} | "
              f"{r['best_speedup']:5.2f} [{r['best_range'][0]:.2f}-{r['best_range'][1]:.2f}] ({r['limit']:.2f}) | "
              f"{r['vs_gemv']:5.2f} | {r['target'] or '-'} | {r['max_rel_error']:.1e}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(build_manifest(command=sys.argv, machine=cpu_info(), kernel_isa=extension.isa(), dtype=args.dtype,
                              reps=args.reps, passes=args.passes, rows=rows), args.out)
    print(json.dumps({"out": args.out, "below_target": [(r["shape"], r["config"], r["best_speedup"]) for r in rows
                                                         if r["target"] and r["best_speedup"] < r["target"]]}))


if __name__ == "__main__":
    main()
