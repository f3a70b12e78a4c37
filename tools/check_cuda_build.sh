#!/usr/bin/env bash
# The CUDA build of pynas on a machine without a GPU (make check-cuda-build; CI runs it).
#
#   bash tools/check_cuda_build.sh [VENV] [TORCH_PIN] [ARCHS]     # defaults: .venv-cuda torch==2.13.0 9.0
#
# 1. VENV (git-ignored) gets the CUDA build of TORCH_PIN from the package index (tools/make_cuda_venv.sh).
# 2. pynas is built with FORCE_CUDA=1 for ARCHS (kernels and glue compiled and linked into pynas._C)
#    and installed into VENV (not editable: the checkout's own pynas/_C*.so is the CPU build).
# 3. From outside the checkout, pynas is imported: build_info() must say cuda=True with ARCHS, and the
#    installed metadata must require the torch release it was built against.
# 4. The extension's tests (PYNAS_CUDA_BUILD_TESTS=all: the whole suite) run against that install
#    (CUDA tests skip: there is no device).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-.venv-cuda}
TORCH_PIN=${2:-torch==2.13.0}
ARCHS=${3:-9.0}
cd "$ROOT"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PY="$VENV/bin/python"
say() { echo "check_cuda_build: $*"; }

command -v nvcc >/dev/null || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] ||
  { echo "check_cuda_build: FAILED: no nvcc (on PATH or \$CUDA_HOME/bin)" >&2; exit 1; }
bash "$ROOT/tools/make_cuda_venv.sh" "$VENV" "$TORCH_PIN"

say "building pynas with FORCE_CUDA=1 for archs $ARCHS"
start=$(date +%s)
FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCHS" MAX_JOBS="${MAX_JOBS:-2}" PIP_DISABLE_PIP_VERSION_CHECK=1 \
  "$PY" -m pip install -q --no-build-isolation --no-deps --force-reinstall "$ROOT"
say "built and installed in $(( $(date +%s) - start )) s"

OUTSIDE="$ROOT/build/cuda-check"
mkdir -p "$OUTSIDE"
cd "$OUTSIDE"
PYNAS_EXPECT_ARCHS="$ARCHS" "$PY" - <<'PYEOF'
import os
from importlib import metadata

import torch
import pynas

info = pynas.build_info()
print("check_cuda_build: pynas", pynas.__file__, info)
want = sorted(a.strip() for a in os.environ["PYNAS_EXPECT_ARCHS"].replace(" ", ";").split(";") if a.strip())
problems = []
if not info["cuda"]:
    problems.append("build_info() reports no CUDA kernels")
if sorted(info["cuda_archs"]) != want:
    problems.append(f"build_info() archs {info['cuda_archs']} != {want}")
if "site-packages" not in pynas.__file__:
    problems.append(f"imported {pynas.__file__}, not the venv's install")
req = [r for r in metadata.requires("pynas") if r.replace(" ", "").startswith("torch==")]
if req != [f"torch=={torch.__version__.split('+')[0]}"]:
    problems.append(f"metadata requires {req}, expected torch=={torch.__version__.split('+')[0]}")
ops = [op for op in ("weighted_sum", "partial_channel_mix", "path_dispatch", "path_combine", "grouped_batch_norm")
       if not torch._C._dispatch_has_kernel_for_dispatch_key(f"pynas::{op}", "CUDA")]
if ops:
    problems.append(f"no CUDA kernel registered for {ops}")
if problems:
    raise SystemExit("check_cuda_build: FAILED: " + "; ".join(problems))
print("check_cuda_build: pynas imports with CUDA kernels for", want, "and every op has a CUDA kernel")
PYEOF

# The tests of everything the extension builds (ops, layouts, compile, supernets on the ops, path
# evaluation, the build itself); PYNAS_CUDA_BUILD_TESTS=all runs the whole suite (about twice as long).
TESTS=(test_build.py test_weighted_sum.py test_partial_channel_mix.py test_path_gather.py
       test_grouped_batch_norm.py test_opcheck.py test_compile.py test_host_layouts.py test_channels_last.py
       test_edge_batch.py test_path_evaluation.py test_cuda.py)
if [ "${PYNAS_CUDA_BUILD_TESTS:-ops}" = "all" ]; then
  TARGETS=("$ROOT/tests")
else
  TARGETS=("${TESTS[@]/#/$ROOT/tests/}")
fi
WHICH="the extension's tests"
[ "${PYNAS_CUDA_BUILD_TESTS:-ops}" = "all" ] && WHICH="the whole test suite"
say "running $WHICH against the CUDA build (CUDA tests skip without a GPU)"
# From outside the checkout, so `import pynas` is the venv's install and not the checkout's CPU build.
PYNAS_EXPECT_CUDA_BUILD=1 "$PY" -m pytest -q -p no:cacheprovider --rootdir "$ROOT" -c "$ROOT/pyproject.toml" \
  "${TARGETS[@]}" ${PYTEST_ARGS:-}
