// cuemu: the CUDA runtime and the device side of CUDA C++ (qualifiers,
// built-in variables, barriers, warp collectives, atomics, launches), for
// running CUDA kernels on the host. See tests/cuda_emu/README.md.
#pragma once

#include "cuda_runtime_api.h"
#include "cuemu/device.h"
