#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one run, for a lent GPU machine that has torch, transformers, pytest and
# hypothesis but no prunekit venv (the model's file cannot travel there: the 2:4 bench builds its architecture with
# random weights). Writes its logs and JSON into OUTDIR:
#   bash bench/gpu_check.sh OUTDIR
set -uo pipefail
out=${1:-runs/gpu-check}
mkdir -p "$out"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
'capability', torch.cuda.get_device_capability())"; } 2>&1 | tee "$out/gpu.txt"
# 1. The tests that skip without a GPU, with the CPU tests of the same files around them.
timeout 240 python3 -m pytest -q -p no:cacheprovider -rs -m "not real_model" tests/run/test_semi_structured.py \
  tests/oneshot/test_offload.py tests/measure/test_hardware.py tests/quant/test_compose.py \
  tests/test_cli.py::test_prune_quantize_and_bench_on_cuda 2>&1 | tee "$out/tests-gpu.txt"
# 2. 2:4 semi-structured against dense: per layer shape and batch, then the whole model (logits check, decode).
timeout 240 python3 bench/gpu_2to4.py --random-init --out "$out/bench-gpu-2to4.json" 2>&1 | tee "$out/gpu_2to4.txt"
