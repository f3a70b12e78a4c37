// The kernels of kernels_impl.h for AVX2 (+ FMA, F16C), used only when the CPU
// has them (see kernels.cpp). The instruction set is selected for this file's
// own code alone, after kernels_prelude.h: see there why.
#include "kernels_prelude.h"

#if PYNAS_CPU_X86_KERNELS
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#pragma GCC push_options
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"  // vectors passed by value inside at::vec
#pragma GCC target("avx2,fma,f16c")
// GCC's C++ front end does not define the ISA macros for a target pragma, and
// sleef.h (which at::vec includes) declares its vector functions only under
// them: define them for that header alone.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
#include <sleef.h>
#undef __AVX__
#undef __AVX2__
#undef __FMA__
#undef __F16C__
#include "kernels_impl.h"
#pragma GCC diagnostic pop
#pragma GCC pop_options

PYNAS_DEFINE_KERNEL_TABLE(AVX2)
#endif
