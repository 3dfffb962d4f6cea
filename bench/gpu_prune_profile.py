"""Where ``--device cuda`` pruning spends its time: cProfile of Wanda 50% and SparseGPT 2:4 on SmolLM2-135M's
architecture (random weights, random calibration tokens 32 × 2048) with each block on the GPU; prints the
functions with the most own time.

    PYTHONPATH=src python3 bench/gpu_prune_profile.py
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import time
from pathlib import Path

import torch

from prunekit import PruneConfig, prune
from prunekit.native import extension
from prunekit.oneshot.residency import InMemory

sys.path.insert(0, str(Path(__file__).parent))
from gpu_2to4 import random_smollm2  # noqa: E402 - beside this file

torch.zeros(1, device="cuda")  # the CUDA context and the compiled extension, outside the timings
extension.load()
CONFIGS = {"wanda 50%": PruneConfig(method="wanda"), "sparsegpt 2:4": PruneConfig(method="sparsegpt", pattern="2:4")}
for name, config in CONFIGS.items():
    model = random_smollm2()
    calib = torch.randint(0, model.config.vocab_size, (32, 2048), generator=torch.Generator().manual_seed(0))
    profile = cProfile.Profile()
    t = time.perf_counter()
    profile.runcall(prune, model, config, calib, progress=False, residency=InMemory("cuda"))
    print(f"== {name}: {time.perf_counter() - t:.1f} s", flush=True)
    pstats.Stats(profile).sort_stats("tottime").print_stats(14)
