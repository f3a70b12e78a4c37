#!/usr/bin/env bash
# Syntax-checks the CUDA glue files (csrc/cuda/*.cpp) with the host compiler
# against torch's headers and the CUDA toolkit's, so that glue typos are
# caught on a machine without a GPU or a CUDA build of torch.
#
#   bash tools/check_cuda_glue.sh        # exit 0: all passed (or SKIPPED, said loudly)
#
# Environment: PYTHON (default python3), CXX (default g++), CUDA_HOME
# (default /usr/local/cuda). Set PYNAS_GLUE_STRICT=1 to make a skip an error.
#
# CPU-only torch wheels ship the c10/cuda headers but not the generated
# c10/cuda/impl/cuda_cmake_macros.h; it only defines export macros, so the
# script then compiles with C10_CUDA_NO_CMAKE_CONFIGURE_FILE (which makes
# c10/cuda/CUDAMacros.h skip it) and says so.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
CXX=${CXX:-g++}
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}

skip() {
  echo "check_cuda_glue: SKIPPED: $*" >&2
  if [ "${PYNAS_GLUE_STRICT:-0}" = "1" ]; then exit 1; fi
  exit 0
}

command -v "$CXX" >/dev/null 2>&1 || skip "no C++ compiler ($CXX)"
TORCH_DIR=$("$PYTHON" -c 'import os, torch; print(os.path.dirname(torch.__file__))' 2>/dev/null) ||
  skip "cannot import torch with $PYTHON"
INCLUDES=$("$PYTHON" -c "from torch.utils.cpp_extension import include_paths; print(' '.join(include_paths()))") ||
  skip "torch.utils.cpp_extension.include_paths() failed"
[ -d "$TORCH_DIR/include/c10/cuda" ] ||
  skip "this torch ($TORCH_DIR) ships no c10/cuda headers, so the CUDA glue cannot be compiled here"
[ -f "$CUDA_HOME/include/cuda_runtime_api.h" ] ||
  skip "no CUDA toolkit headers under $CUDA_HOME/include (set CUDA_HOME)"

FLAGS=(-fsyntax-only -std=c++17 -Wall -DPYNAS_WITH_CUDA)
for inc in $INCLUDES; do FLAGS+=(-isystem "$inc"); done
FLAGS+=(-isystem "$CUDA_HOME/include")
if [ ! -f "$TORCH_DIR/include/c10/cuda/impl/cuda_cmake_macros.h" ]; then
  echo "check_cuda_glue: note: $TORCH_DIR/include/c10/cuda/impl/cuda_cmake_macros.h is missing" \
    "(CPU-only torch); compiling with -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE"
  FLAGS+=(-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE)
fi

shopt -s nullglob
files=("$ROOT"/csrc/cuda/*.cpp)
[ ${#files[@]} -gt 0 ] || skip "no glue files in $ROOT/csrc/cuda"

status=0
for f in "${files[@]}"; do
  if "$CXX" "${FLAGS[@]}" "$f"; then
    echo "ok    ${f#"$ROOT"/}"
  else
    echo "FAIL  ${f#"$ROOT"/}"
    status=1
  fi
done
if [ $status -eq 0 ]; then
  echo "check_cuda_glue: all ${#files[@]} glue files compile"
else
  echo "check_cuda_glue: some glue files do not compile" >&2
fi
exit $status
