// The kernels of kernels_impl.h with at::vec's portable Vectorized: built for
// the compiler's baseline instruction set, they run on any CPU.
#include "kernels_prelude.h"

#define CPU_CAPABILITY DEFAULT
#include "kernels_impl.h"

PYNAS_DEFINE_KERNEL_TABLE(DEFAULT)
