// The vectorized CPU kernels behind the host functions in csrc/cpu/*.cpp.
//
// The host functions check and lay out the arguments (csrc/ops) and call the
// kernels through the table that kernels() returns. The kernels themselves
// (kernels_impl.h) are compiled once per CPU capability, each in its own
// translation unit and namespace, the way ATen compiles its own CPU kernels:
//
//   kernels_default.cpp  at::vec's portable Vectorized (any CPU)
//   kernels_avx2.cpp     AVX2 + FMA + F16C (x86-64 with GCC)
//
// kernels() picks the best one that both the CPU and torch allow: it follows
// torch's own choice (at::get_cpu_capability(), which honours
// ATEN_CPU_CAPABILITY=default|avx2|avx512; AVX512 runs the AVX2 build), so
// ATEN_CPU_CAPABILITY=default runs (and tests) the portable kernels on any
// machine.
//
// Guarantees of every kernel: accumulation in float (double for float64
// data), results independent of the thread count (reductions are summed per
// fixed-size work item and then over items in a fixed order), and no
// per-element integer division.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <vector>

#include "../ops/common.h"

// The AVX2 build selects its instruction set per file with
// `#pragma GCC target`, which GCC alone supports; other compilers build the
// portable kernels only.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER) && defined(__x86_64__)
#define PYNAS_CPU_X86_KERNELS 1
#else
#define PYNAS_CPU_X86_KERNELS 0
#endif

namespace pynas::cpu {

// weighted_sum: out[i] = sum_k w[k] * xs[k][i] over `samples` blocks of
// `inner` elements. Every tensor has its own sample stride (elements).
struct WeightedSumForward {
  std::vector<const void*> xs;
  std::vector<int64_t> x_strides;
  const void* weights = nullptr;  // accumulate dtype, [K] or [samples, K]
  bool per_sample_weights = false;
  int64_t samples = 0, inner = 0;
  void* out = nullptr;
  int64_t out_stride = 0;
};

// Its backward in one pass over grad: grad_xs[k] = w[k] * grad where wanted
// (nullptr elsewhere), and grad_w[., k] = sum grad * xs[k] when grad_w is set
// (xs are read only then).
struct WeightedSumBackward {
  const void* grad = nullptr;
  int64_t grad_stride = 0;
  std::vector<const void*> xs;  // empty unless grad_w
  std::vector<int64_t> x_strides;
  std::vector<void*> grad_xs;  // K entries, nullptr where not needed
  std::vector<int64_t> grad_x_strides;
  const void* weights = nullptr;
  bool per_sample_weights = false;
  int64_t samples = 0, inner = 0;
  void* grad_w = nullptr;  // accumulate dtype, [samples or 1, K], or nullptr
};

// partial_channel_mix: out channel o = j * groups + i is the mix of the ys'
// channel j for i == 0, else x's channel i * C/groups + j.
struct PartialChannelMixForward {
  std::vector<const void*> ys;
  NCSView yv;
  const void* weights = nullptr;
  bool per_sample_weights = false;
  const void* x = nullptr;
  NCSView xv;
  int64_t groups = 1;
  void* out = nullptr;
  NCSView ov;
};

struct PartialChannelMixBackward {
  const void* grad = nullptr;
  NCSView gv;
  std::vector<const void*> ys;  // read only for grad_w
  NCSView yv;
  std::vector<void*> grad_ys;  // K entries, nullptr where not needed
  NCSView gyv;
  const void* weights = nullptr;
  bool per_sample_weights = false;
  int64_t groups = 1;
  void* grad_w = nullptr;  // accumulate dtype [N or 1, K], or nullptr
  void* grad_x = nullptr;  // or nullptr
  NCSView gxv;
};

// grouped_batch_norm pieces. mean/scale/k* are [num_groups, C] in the
// accumulate dtype, shift is [C]; groups is int64 [N] on the host.
struct BatchNormMoments {
  const void* x = nullptr;
  NCSView v;
  double* mean = nullptr;  // [N, C]: per (sample, channel) mean and sum of squared deviations
  double* m2 = nullptr;
};

struct BatchNormApply {
  const void* x = nullptr;
  NCSView xv;
  const int64_t* groups = nullptr;
  const void* mean = nullptr;
  const void* scale = nullptr;
  const void* shift = nullptr;
  void* out = nullptr;
  NCSView ov;
};

struct BatchNormBackwardSums {
  const void* grad = nullptr;
  NCSView gv;
  const void* x = nullptr;
  NCSView xv;
  const int64_t* groups = nullptr;
  const void* mean = nullptr;
  double* sum_dy = nullptr;      // [N, C]
  double* sum_dy_xmu = nullptr;  // [N, C]
};

// grad_x = k1 * dy + k2 * (x - mean) + k3.
struct BatchNormBackwardApply {
  const void* grad = nullptr;
  NCSView gv;
  const void* x = nullptr;
  NCSView xv;
  const int64_t* groups = nullptr;
  const void* mean = nullptr;
  const void* k1 = nullptr;
  const void* k2 = nullptr;
  const void* k3 = nullptr;
  void* grad_x = nullptr;
  NCSView ov;
};

// path_combine with a residual: out row i = ys[choices[i]] row rank[i] + residual row i (all row-dense).
struct PathCombineResidual {
  std::vector<const void*> ys;
  const int64_t* choices = nullptr;
  const int64_t* rank = nullptr;
  const void* residual = nullptr;
  void* out = nullptr;
  int64_t rows = 0, row_numel = 0;
};

// path_dispatch and path_combine without a residual: whole-row copies between
// the dense [N, *] tensor and the buckets (bucket k's row rank[i] is row i).
struct PathRows {
  std::vector<void*> buckets;  // read by combine, written by dispatch
  const int64_t* choices = nullptr;
  const int64_t* rank = nullptr;
  void* dense = nullptr;  // x (read by dispatch) or out (written by combine)
  int64_t rows = 0, row_bytes = 0;
};

struct Kernels {
  const char* name;  // "DEFAULT" or "AVX2"
  void (*weighted_sum_forward)(at::ScalarType, const WeightedSumForward&);
  void (*weighted_sum_backward)(at::ScalarType, const WeightedSumBackward&);
  void (*partial_channel_mix_forward)(at::ScalarType, const PartialChannelMixForward&);
  void (*partial_channel_mix_backward)(at::ScalarType, const PartialChannelMixBackward&);
  void (*batch_norm_moments)(at::ScalarType, const BatchNormMoments&);
  void (*batch_norm_apply)(at::ScalarType, const BatchNormApply&);
  void (*batch_norm_backward_sums)(at::ScalarType, const BatchNormBackwardSums&);
  void (*batch_norm_backward_apply)(at::ScalarType, const BatchNormBackwardApply&);
  void (*path_combine_residual)(at::ScalarType, const PathCombineResidual&);
  void (*path_dispatch_rows)(const PathRows&);
  void (*path_combine_rows)(const PathRows&);
};

// The kernels for this CPU and torch's capability setting.
const Kernels& kernels();

}  // namespace pynas::cpu
