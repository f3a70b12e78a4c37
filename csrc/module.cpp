// The pybind11 module pynas._C. Importing it loads the operator registrations
// (TORCH_LIBRARY / TORCH_LIBRARY_IMPL in the other translation units).
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include "cpu/kernels.h"

#ifndef PYNAS_VERSION
#define PYNAS_VERSION "0.0.0"
#endif
#ifndef PYNAS_TORCH_VERSION
#define PYNAS_TORCH_VERSION "unknown"
#endif
#ifndef PYNAS_CUDA_ARCHS
#define PYNAS_CUDA_ARCHS ""
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  info["version"] = PYNAS_VERSION;
#ifdef PYNAS_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  pybind11::list archs;
  std::string all = PYNAS_CUDA_ARCHS;
  size_t start = 0;
  while (start < all.size()) {
    size_t end = all.find(';', start);
    if (end == std::string::npos) end = all.size();
    if (end > start) archs.append(all.substr(start, end - start));
    start = end + 1;
  }
  info["cuda_archs"] = archs;
  info["openmp"] = AT_PARALLEL_OPENMP == 1;
  info["num_threads"] = at::get_num_threads();
  info["torch_built_with"] = PYNAS_TORCH_VERSION;
  // Which build of the CPU kernels runs here: DEFAULT or AVX2.
  info["cpu_kernels"] = pynas::cpu::kernels().name;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pynas fused supernet kernels";
  m.def("build_info", &build_info,
        "Version, whether CUDA kernels were compiled, the compiled archs, the OpenMP thread count and the CPU kernels' instruction set.");
}
