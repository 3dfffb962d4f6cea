#!/usr/bin/env bash
# The reference model as GGUF files for llama.cpp, from the same safetensors folder prunekit loads: F16,
# BF16 and Q8_0 by llama.cpp's own convert_hf_to_gguf.py, Q4_0 by llama.cpp's quantizer from the F16 file,
# both in bench/llamacpp/.venv (setup.sh).
#   bash bench/llamacpp/make_gguf.sh [OUT_DIR]      (default: runs/gguf; run setup.sh first)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-runs/gguf}
mkdir -p "$OUT"
MODEL=$(.venv/bin/python -c "from prunekit.models import resolve_model_path; print(resolve_model_path('default'))")
for t in f16 bf16 q8_0; do
  [ -f "$OUT/smollm2-135m-$t.gguf" ] || bench/llamacpp/.venv/bin/python bench/llamacpp/.src/convert_hf_to_gguf.py "$MODEL" \
      --outtype $t --outfile "$OUT/smollm2-135m-$t.gguf"
done
[ -f "$OUT/smollm2-135m-q4_0.gguf" ] || bench/llamacpp/.venv/bin/python - "$OUT" <<'PY'
import sys
import llama_cpp
out = sys.argv[1]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
rc = llama_cpp.llama_model_quantize(f"{out}/smollm2-135m-f16.gguf".encode(), f"{out}/smollm2-135m-q4_0.gguf".encode(), params)
sys.exit(rc)
PY
ls -la "$OUT"
