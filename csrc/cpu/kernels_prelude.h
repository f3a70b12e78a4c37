// Everything kernels_impl.h needs except at::vec, included by each
// kernels_<capability>.cpp *before* it selects its instruction set: these
// headers are then compiled for the baseline ISA in every translation unit,
// so the inline functions they define (c10::Half's conversions, ...) are the
// same everywhere (one definition) and never contain AVX instructions that a
// baseline caller could pick up at link time. Only at::vec (in its
// CPU_CAPABILITY namespace) and the kernels (in pynas::cpu::<capability>) are
// compiled for the selected instruction set.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/NumericUtils.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/native/Math.h>
#include <ATen/native/cpu/zmath.h>
#include <c10/macros/Macros.h>
#include <c10/util/BFloat16-math.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>
#include <c10/util/Load.h>
#include <c10/util/TypeCast.h>
#include <c10/util/copysign.h>
#include <c10/util/irange.h>
#include <c10/util/qint32.h>
#include <c10/util/qint8.h>
#include <c10/util/quint8.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cassert>
#include <climits>
#include <cmath>
#include <cstring>
#include <functional>
#include <ostream>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <x86intrin.h>
#endif

#include "kernels.h"
