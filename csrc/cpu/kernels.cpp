// Picks the kernels of kernels_impl.h built for the best instruction set that
// both this CPU and torch allow (see kernels.h).
#include "kernels.h"

#include <ATen/Version.h>

#include <string>

namespace pynas::cpu {

namespace DEFAULT {
extern const Kernels kKernels;
}
#if PYNAS_CPU_X86_KERNELS
namespace AVX2 {
extern const Kernels kKernels;
}
#endif

const Kernels& kernels() {
  // torch's choice: the CPU's best, or what ATEN_CPU_CAPABILITY asks for.
  // AVX512 CPUs run the AVX2 build: these kernels are memory-bound, and on
  // the 2-core AMD EPYC (Zen 4) a 512-bit build of them was up to 15% slower
  // (weighted_sum's forward) and nowhere faster.
  static const Kernels* chosen = [] {
    const std::string cap = at::get_cpu_capability();
#if PYNAS_CPU_X86_KERNELS
    if (cap == "AVX512" || cap == "AVX2") return &AVX2::kKernels;
#endif
    return &DEFAULT::kKernels;
  }();
  return *chosen;
}

}  // namespace pynas::cpu
