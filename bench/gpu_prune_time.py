"""Pruning time with ``--device cuda`` (each block calibrated and solved on the GPU) against the same machine's
CPU cores, for SmolLM2-135M's architecture (random weights: the time depends on the shapes, and the model's file
cannot reach a lent GPU machine) and random calibration tokens, 32 × 2048 as protocol P.

Runs, one after the other in this process: Wanda 50%, SparseGPT 2:4, and SparseGPT 2:4 + int4 g128 joint GPTQ,
each on the GPU and on the CPU (all of its threads); prints a table and JSON (seconds, and how closely the GPU's
masks agree with the CPU's).

    PYTHONPATH=src python3 bench/gpu_prune_time.py [--nsamples 32] [--out runs/bench-gpu-prune.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from prunekit import PruneConfig, prune
from prunekit.native import extension
from prunekit.oneshot.residency import InMemory
from prunekit.quant.config import QuantConfig

sys.path.insert(0, str(Path(__file__).parent))
from gpu_2to4 import random_smollm2  # noqa: E402 - beside this file

CONFIGS = {
    "wanda 50%": PruneConfig(method="wanda"),
    "sparsegpt 2:4": PruneConfig(method="sparsegpt", pattern="2:4"),
    "sparsegpt 2:4 + int4 g128 joint": PruneConfig(method="sparsegpt", pattern="2:4", quant=QuantConfig(
        wbits=4, groupsize=128, uneven_groups=True, order="joint")),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--out", default="runs/bench-gpu-prune.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here")
        sys.exit(1)
    extension.load()  # compiled on first use (tens of seconds): outside the timings
    rows = []
    print("configuration | GPU s | CPU s | CPU / GPU | masks agreeing")
    for name, config in CONFIGS.items():
        result = {}
        for where, residency in (("gpu", InMemory("cuda")), ("cpu", None)):
            model = random_smollm2()
            calib = torch.randint(0, model.config.vocab_size, (args.nsamples, args.seqlen),
                                  generator=torch.Generator().manual_seed(0))
            t = time.perf_counter()
            result[where] = prune(model, config, calib, progress=False, residency=residency)
            result[f"{where}_s"] = time.perf_counter() - t
        agree = min(float((result["gpu"].masks[n] == result["cpu"].masks[n]).float().mean()) for n in result["cpu"].masks)
        row = {"config": name, "gpu_s": round(result["gpu_s"], 2), "cpu_s": round(result["cpu_s"], 2),
               "cpu_over_gpu": round(result["cpu_s"] / result["gpu_s"], 2), "min_mask_agreement": round(agree, 4)}
        rows.append(row)
        print(f"{name} | {row['gpu_s']} | {row['cpu_s']} | {row['cpu_over_gpu']}× | {agree:.4f}", flush=True)
    out = {"gpu": torch.cuda.get_device_name(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
           "nsamples": args.nsamples, "seqlen": args.seqlen, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
