"""Issue 5's GPU part: 2:4 semi-structured against dense on an NVIDIA GPU (compute capability ≥ 8.0).

1. Per layer: dense vs semi-structured ``F.linear`` at SmolLM2's shapes and 4096×4096 / 11008×4096,
   batches 1 / 8 / 128 / 2048 (``prunekit.measure.hardware.gpu_bench``), with the verdict line.
2. The model: SmolLM2-135M magnitude-pruned 2:4, run in float16; logits of the semi-structured model
   against the dense masked model, then ``bench_model`` on the GPU (prefill, decode, weight memory).

Prints a table per part and writes JSON. Where there is no capable GPU it says so and exits 1.
``--random-init`` builds SmolLM2-135M's architecture with random weights instead of loading it: the
same layer shapes, so the same speed, for a machine the model cannot reach (the workplace's GPU
machine takes 64 MiB of files; the model's GGUF is 98 MB). Its logits check is then against the
dense masked random model.

    .venv/bin/python bench/gpu_2to4.py [--model default | --random-init] [--out runs/bench-gpu-2to4.json]
    PYTHONPATH=src python3 bench/gpu_2to4.py --random-init      # on a machine with torch + transformers
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections import Counter
from pathlib import Path

import torch

from prunekit.measure.bench import bench_model
from prunekit.measure.hardware import gpu_bench, gpu_info, gpu_verdict, model_shapes
from prunekit.models import load_model
from prunekit.oneshot.config import PruneConfig
from prunekit.oneshot.pruner import prune
from prunekit.run import semi_structured
from prunekit.settings import DTYPES
from prunekit.store.manifest import build_manifest, write_json

SMOLLM2_135M = {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 8192,
                "tie_word_embeddings": True}  # its config.json's sizes: the layer shapes are what speed depends on


def random_smollm2() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--random-init", action="store_true", help="SmolLM2-135M's architecture, random weights")
    ap.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    ap.add_argument("--batches", default="1,8,128,2048")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="runs/bench-gpu-2to4.json")
    args = ap.parse_args()
    ok, why = semi_structured.support()
    if not ok:
        print(f"no GPU 2:4 here: {why}")
        sys.exit(1)
    dtype = DTYPES[args.dtype]
    model = random_smollm2() if args.random_init else load_model(args.model)[0]  # float32, on CPU
    shapes = model_shapes(model) + Counter({(4096, 4096): 1, (11008, 4096): 1})
    rows = gpu_bench(shapes, tuple(int(b) for b in args.batches.split(",")), dtype)
    print("shape | batch | dense ms | 2:4 ms | speedup | max rel error")
    for r in rows:
        if "error" in r:
            print(f"{r['shape']} | {r['batch']} | refused: {r['error']}")
        else:
            ms = r["ms"]
            print(f"{r['shape']} | {r['batch']} | {ms['dense']:.4f} | {ms['semi_structured']:.4f} | "
                  f"{ms['dense'] / ms['semi_structured']:.2f}× | {r['max_rel_error']:.1e}")
    verdict = gpu_verdict(rows, gpu_info()["gpu"])
    print(verdict, flush=True)

    prune(model, PruneConfig(method="magnitude", sparsity=0.5, pattern="2:4"))
    model = model.to(dtype).cuda()  # pruned on CPU in float32: zeros stay zeros in float16
    ids = torch.randint(0, model.config.vocab_size, (1, 256), generator=torch.Generator().manual_seed(0)).cuda()
    sparse = copy.deepcopy(model)
    with torch.inference_mode():
        ref = model(ids).logits.float()
        names, skipped = semi_structured.to_semi_structured(sparse)
        error = float((sparse(ids).logits.float() - ref).abs().max() / ref.abs().max())
    del sparse
    result = bench_model(model, reps=args.reps)
    d, s = result["dense"], result["sparse"]
    print("layers 2:4 / dense | logits max rel error | prefill × | decode tok/s dense → 2:4 | decode × | weights MB")
    print(f"{len(names)} / {len(skipped)} | {error:.1e} | {result['ratios']['prefill_speedup']:.2f}× | "
          f"{d['decode_tokens_per_s']:.1f} → {s['decode_tokens_per_s']:.1f} | {result['ratios']['decode_speedup']:.2f}× | "
          f"{d['weight_mb']:.0f} → {s['weight_mb']:.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(build_manifest(command=sys.argv, gpu=gpu_info(), layers=rows, verdict=verdict,
                              model={"spec": "random-init SmolLM2-135M" if args.random_init else args.model,
                                     "converted": len(names), "left_dense": skipped, "logits_max_rel_error": error,
                                     "bench": result}), args.out)
    print(json.dumps({"out": args.out, "verdict": verdict, "decode_speedup": result["ratios"]["decode_speedup"],
                      "logits_max_rel_error": error}))


if __name__ == "__main__":
    main()
