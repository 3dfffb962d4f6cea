#!/usr/bin/env bash
# The speed anchor: llama.cpp through llama-cpp-python, in a venv of its own (it builds llama.cpp from
# source with the machine's compiler: several minutes on 2 cores), with what llama.cpp's converter needs
# (torch's CPU wheel, transformers, sentencepiece). Also unpacks the same release's convert_hf_to_gguf.py
# (with its conversion package and gguf-py) into bench/llamacpp/.src, which make_gguf.sh runs to turn the
# reference model into F16, BF16, Q8_0 and Q4_0 GGUF files.
set -euo pipefail
cd "$(dirname "$0")/../.."
VERSION=0.3.36
VENV=bench/llamacpp/.venv
SRC=bench/llamacpp/.src
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
$VENV/bin/python -m pip install -q --upgrade pip
# AVX-512 (VNNI, BF16, VBMI) without AMX: the native build's AMX path segfaults in llama_decode for Q4_0 and
# Q8_0 on this Xeon (seen with llama-cpp-python 0.3.36); F16/BF16 ran either way. CMAKE_ARGS overrides.
FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX_VNNI=ON"
FLAGS="$FLAGS -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON"
FLAGS="$FLAGS -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
CMAKE_ARGS="${CMAKE_ARGS:-$FLAGS}" $VENV/bin/python -m pip install -q "llama-cpp-python==$VERSION"
$VENV/bin/python -m pip install -q "numpy<3" "torch==2.13.0" "transformers>=4.56" sentencepiece safetensors pyyaml
if [ ! -d $SRC/conversion ]; then
  TMP=$(mktemp -d)
  $VENV/bin/python -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$TMP"
  mkdir -p $SRC
  tar xzf "$TMP"/llama_cpp_python-$VERSION.tar.gz -C "$TMP"
  cp -r "$TMP"/llama_cpp_python-$VERSION/vendor/llama.cpp/convert_hf_to_gguf.py "$TMP"/llama_cpp_python-$VERSION/vendor/llama.cpp/conversion \
        "$TMP"/llama_cpp_python-$VERSION/vendor/llama.cpp/gguf-py $SRC/
  rm -rf "$TMP"
fi
$VENV/bin/python -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
