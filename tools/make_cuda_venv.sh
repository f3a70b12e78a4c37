#!/usr/bin/env bash
# A git-ignored virtual environment with the CUDA build of the pinned torch (no GPU needed):
#
#   bash tools/make_cuda_venv.sh [VENV] [TORCH_PIN]       # defaults: .venv-cuda torch==2.13.0
#
# The local wheel folder that pip's configuration lists holds only the CPU build of torch, so it is
# hidden behind an empty PIP_FIND_LINKS and torch comes from the package index, with the nvidia-*
# libraries it needs. Fails unless the torch installed there has CUDA.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-.venv-cuda}
TORCH_PIN=${2:-torch==2.13.0}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
[ -x "$PY" ] || { echo "make_cuda_venv: creating $VENV"; python3 -m venv "$VENV"; }
mkdir -p "$ROOT/build/no-local-wheels"
echo "make_cuda_venv: installing the CUDA build of $TORCH_PIN into $VENV"
PIP_FIND_LINKS="$ROOT/build/no-local-wheels" PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$PY" -m pip install -q "$TORCH_PIN" numpy pyyaml pytest scipy pillow matplotlib setuptools wheel ninja
"$PY" -c "import sys, torch; sys.exit(0 if torch.version.cuda else 'make_cuda_venv: FAILED: torch ' + torch.__version__ + ' in the venv has no CUDA')"
echo "make_cuda_venv: $("$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "| GPU visible:", torch.cuda.is_available())')"
