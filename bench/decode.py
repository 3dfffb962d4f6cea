"""Issue 5's end-to-end target: SmolLM2-135M decode speed at batch 1, dense vs sparse execution.

For each sparsity the default model is magnitude-pruned (per layer, all block linears) and run by
``prunekit.measure.bench.bench_model``: the dense copy (zeros multiplied) and the sparsified copy (per-layer
measured choice of dense / bitmask / sell / torch CSR) alternate in one process; medians and ratios.
Targets: decode ≥ 1.5× dense at 70%, and never below 0.97× at any sparsity.

    .venv/bin/python bench/decode.py [--sparsities 0.1,0.3,0.5,0.7,0.9] [--dtype float32|bfloat16] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from prunekit.measure.bench import bench_model
from prunekit.measure.hardware import cpu_info
from prunekit.models import load_model
from prunekit.oneshot.config import PruneConfig
from prunekit.oneshot.pruner import prune
from prunekit.settings import DTYPES
from prunekit.store.manifest import build_manifest, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--sparsities", default="0.1,0.3,0.5,0.7,0.9")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="runs/bench-decode.json")
    args = ap.parse_args()
    rows = []
    print("sparsity | layouts | decode tok/s dense → sparse | decode × | prefill × | weights MB dense → sparse")
    for sparsity in [float(s) for s in args.sparsities.split(",")]:
        model, _, _ = load_model(args.model, DTYPES[args.dtype])
        prune(model, PruneConfig(method="magnitude", sparsity=sparsity))
        r = bench_model(model, args.prompt_tokens, args.new_tokens, args.reps)
        rows.append({"sparsity": sparsity, **r})
        d, s = r["dense"], r["sparse"]
        print(f"{sparsity:.2f} | {r['layouts']} | {d['decode_tokens_per_s']:.1f} → {s['decode_tokens_per_s']:.1f}"
              f" | {r['ratios']['decode_speedup']:.2f}× | {r['ratios']['prefill_speedup']:.2f}× | "
              f"{d['weight_mb']:.0f} → {s['weight_mb']:.0f}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(build_manifest(command=sys.argv, machine=cpu_info(), rows=rows), args.out)
    print(json.dumps({"out": args.out, "decode_speedup": {r["sparsity"]: r["ratios"]["decode_speedup"] for r in rows}}))


if __name__ == "__main__":
    main()
