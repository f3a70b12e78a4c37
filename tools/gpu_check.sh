#!/usr/bin/env bash
# Everything pynas checks on a GPU, as one run for the day a GPU is lent (about 8 minutes on an H100):
#
#   bash tools/gpu_check.sh            # on the GPU machine, in the checkout; python3 there holds a CUDA torch
#
# Stages (each with its own time limit; a failed stage is recorded and the next ones still run, except
# that nothing runs after a failed build):
#   env      nvidia-smi, torch, nvcc
#   build    pynas with FORCE_CUDA=1 for this GPU's arch, installed editable with --no-deps (no network there)
#   tests    the CUDA tests (pytest -m cuda: CPU/CUDA parity of every op, no-sync checks, layouts)
#   ops      bench.ops on the GPU, trimmed to fit: float32, fused op vs eager reference (no compile)
#   step     bench.supernet, DARTS first order at the paper's size (8 cells, C=16, batch 64)
#   paths    bench.paths, batched vs one-path evaluation on NAS-Bench-Macro, P=32
# The benchmarks append their records to bench/results/<device>.json (commit that file). Logs and a
# summary (gpu_check.json: each stage's exit code and seconds) go to $GPU_CHECK_OUT (default: $OUT
# when the device tool sets it, else build/gpu-check), with a copy of the results file.
set -u -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
LOGS=${GPU_CHECK_OUT:-${OUT:-$ROOT/build/gpu-check}}
mkdir -p "$LOGS"
SUMMARY="$LOGS/gpu_check.json"
echo "[" > "$SUMMARY.tmp"
failed=0
start_all=$(date +%s)

stage() {  # stage NAME SECONDS CMD...
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s)
  echo "=== gpu_check: $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  tail -n 40 "$LOGS/$name.log"
  local secs=$(( $(date +%s) - t0 ))
  [ "$rc" -eq 0 ] || failed=1
  [ "$rc" -eq 124 ] && echo "=== gpu_check: $name TIMED OUT after ${limit}s"
  echo "=== gpu_check: $name exit $rc in ${secs}s"
  printf '  {"stage": "%s", "exit": %d, "seconds": %d},\n' "$name" "$rc" "$secs" >> "$SUMMARY.tmp"
  return "$rc"
}

finish() {
  sed -i '$ s/,$//' "$SUMMARY.tmp"
  echo "]" >> "$SUMMARY.tmp"
  mv "$SUMMARY.tmp" "$SUMMARY"
  for f in bench/results/*.json; do
    [ -f "$f" ] && cp "$f" "$LOGS/" 2>/dev/null
  done
  echo "=== gpu_check: done in $(( $(date +%s) - start_all ))s; summary $SUMMARY"
  cat "$SUMMARY"
  exit "$failed"
}

stage env 60 bash -c "nvidia-smi -L && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv &&
  $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(0),
    torch.cuda.get_device_capability(0))' && (nvcc --version || \${CUDA_HOME:-/usr/local/cuda}/bin/nvcc --version)"

ARCH=$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))' 2>/dev/null || echo "9.0")
if ! stage build 300 env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$(nproc)" \
    "$PY" -m pip install -q --no-build-isolation --no-deps -e .; then
  echo "=== gpu_check: the build failed; nothing else can run"
  finish
fi
stage import 60 "$PY" -c "import pynas, sys; info = pynas.build_info(); print(info);
sys.exit(0 if info['cuda'] and '$ARCH' in info['cuda_archs'] else 'pynas.build_info() reports no CUDA kernels for $ARCH')"

stage tests 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider tests
stage ops 120 "$PY" -m bench.ops --preset gpu --no-compile --repeats 10
stage step 90 "$PY" -m bench.supernet --preset gpu --cases darts-1st --no-compile --repeats 5
stage paths 90 "$PY" -m bench.paths --preset gpu --cases macro-eval --paths 32
finish
