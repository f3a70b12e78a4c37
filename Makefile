# Fresh-machine entry points: `make demo` (the main job) and `make test`.
# Both install what they need: build tools from Debian, a pinned CPU torch
# when no torch is installed, and pynas itself (built in place).
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
CUDA_ARCHS ?= 80;90
PYTEST_ARGS ?=

.PHONY: all deps install test demo fashion-mnist bench check-cuda check-cuda-build check-cuda-emu cuda-venv clean

all: install

deps:
	@command -v g++ >/dev/null && command -v make >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq g++ make)
	@# libjpeg-turbo's headers: the streaming loader's region JPEG decoder (pynas._jpeg; optional, Pillow otherwise)
	@test -f /usr/include/jpeglib.h || (apt-get update -qq && apt-get install -y -qq libjpeg-dev) || \
		echo "make: libjpeg-dev not installed; pynas builds without its region JPEG decoder"
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q "$(TORCH_PIN)"
	@$(PYTHON) -c "import numpy, yaml, pytest, scipy" 2>/dev/null || $(PYTHON) -m pip install -q numpy pyyaml pytest scipy

# The extension is rebuilt only when its sources changed, or when the installed pynas is not this
# checkout's or does not import (a new torch, `make clean`): a rebuild takes minutes on 2 cores.
PYNAS_STAMP := build/.pynas-installed
PYNAS_SOURCES := $(shell find csrc -type f 2>/dev/null) setup.py pyproject.toml

install: deps
	@cd / && $(PYTHON) -c "import os, sys, pynas; here = os.path.realpath('$(CURDIR)') + os.sep; \
		sys.exit(0 if os.path.realpath(pynas.__file__).startswith(here) else 1)" 2>/dev/null || rm -f $(PYNAS_STAMP)
	@$(MAKE) --no-print-directory $(PYNAS_STAMP)
	@$(PYTHON) -c "import pynas; print('pynas', pynas.build_info())"

$(PYNAS_STAMP): $(PYNAS_SOURCES)
	$(PYTHON) -m pip install -q --no-build-isolation -e .
	@mkdir -p build && touch $@

test: install fashion-mnist
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

# The main job: FTSO on Fashion-MNIST (CPU), then a short training of the found cell.
demo: install fashion-mnist
	$(PYTHON) -m pynas.cli demo --out runs/demo

fashion-mnist:
	@test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz || \
		(apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)

bench: install
	$(PYTHON) -m bench.ops
	$(PYTHON) -m bench.supernet
	$(PYTHON) -m bench.paths

# The real CUDA build, proven without a GPU: the CUDA build of the pinned torch (and the nvidia-*
# libraries it needs) from the package index in a git-ignored virtual environment, pynas built
# with FORCE_CUDA=1 for CUDA_BUILD_ARCHS and installed there, then imported (build_info() must report
# CUDA and the archs) and the test suite run against that install (CUDA tests skip without a GPU).
CUDA_VENV ?= .venv-cuda
CUDA_BUILD_ARCHS ?= 9.0
check-cuda-build:
	bash tools/check_cuda_build.sh "$(CUDA_VENV)" "$(TORCH_PIN)" "$(CUDA_BUILD_ARCHS)"

cuda-venv:
	bash tools/make_cuda_venv.sh "$(CUDA_VENV)" "$(TORCH_PIN)"

# The CMake build (CMakeLists.txt) of the op library against the CUDA torch of CUDA_VENV, for sm_80
# and sm_90: every kernel, the glue and the link; the library is then loaded and must register a CUDA
# kernel for every op. No GPU needed.
check-cuda: cuda-venv
	@command -v cmake >/dev/null || (apt-get update -qq && apt-get install -y -qq cmake)
	cmake -S . -B build/cmake-cuda -DPYTHON_EXECUTABLE="$(CURDIR)/$(CUDA_VENV)/bin/python" \
		-DCMAKE_CUDA_ARCHITECTURES="$(CUDA_ARCHS)"
	cmake --build build/cmake-cuda -j2
	$(CUDA_VENV)/bin/python tools/check_op_library.py build/cmake-cuda/libpynas_ops.so

# Every CUDA kernel executed on the CPU under the project's CUDA emulation (tests/cuda_emu/).
check-cuda-emu:
	bash tests/cuda_emu/run.sh

clean:
	rm -rf build dist *.egg-info pynas/_C*.so
