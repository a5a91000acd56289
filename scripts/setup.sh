#!/usr/bin/env bash
# Create a virtual environment (default .venv) with a CPU build of torch and the harness installed
# editable. Idempotent: rerunning reuses what is there. Override with VENV=dir, PYTHON=python3.X,
# TORCH_SPEC='torch==2.13.0' (e.g. TORCH_SPEC=torch on a CUDA box to take PyPI's CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# torch first: a bare `torch` requirement with no torch installed would pull a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || pip install --quiet "$TORCH_SPEC"
pip install --quiet -e ".[dev]"
echo "setup: $(python -c 'import torch, harness; print("torch", torch.__version__, "| harness", harness.__version__)') in $VENV"
