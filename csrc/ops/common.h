// Host-side argument checks and layout normalisation shared by the CPU and
// CUDA implementations, so both backends reject the same inputs with the
// same messages and see tensors in the same layouts.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <vector>

namespace pynas {

// float for float32/float16/bfloat16, double for float64.
at::ScalarType accumulate_type(at::ScalarType t);

// xs: non-empty, one shape, dtype and device, a floating dtype we support.
void check_same_inputs(at::TensorList xs, const char* name);

// weights: floating, on `device`, shape [K] or [N, K]. Returns it converted to
// the accumulate dtype of `value_dtype`, contiguous.
at::Tensor checked_weights(const at::Tensor& weights, int64_t k, const at::Tensor& like, const char* like_name);

// Tensors of one shape seen as `samples` blocks of `inner` elements each:
// every block is dense (no gaps, no overlap) and all blocks of all tensors
// place their elements alike (one "inner layout"), but each tensor has its
// own sample stride (elements from one block's start to the next; >= inner).
// Contiguous and channels-last tensors are sample blocks, and so is a channel
// slice of a contiguous tensor (a DARTS node's gradient is a channel slice of
// its cell's concatenation): kernels read those in place, with no copy.
// A 0-d tensor is one sample of one element.
struct SampleBlocks {
  std::vector<at::Tensor> tensors;
  std::vector<int64_t> sample_strides;  // per tensor
  int64_t samples = 1, inner = 1;
};

// Whether t (any shape) is a sample block tensor as above on its own.
bool is_sample_blocked(const at::Tensor& t);

// Lays out the tensors of ts (one shape) as sample blocks sharing proto's
// inner layout, copying only those that are not blocks of that layout (a copy
// is dense). proto: one of ts, or any tensor of that shape; when it is not
// sample-blocked itself, the contiguous layout is used.
SampleBlocks to_sample_blocks(at::TensorList ts, const at::Tensor& proto);

// A dense tensor (sample stride = inner) shaped like proto, in proto's inner
// layout when proto is sample-blocked, else contiguous: the output layout of
// weighted_sum (proto xs[0]) and of its input gradients (proto grad).
at::Tensor empty_sample_blocks_like(const at::Tensor& proto);

// Checks the arguments of _weighted_sum_backward (both backends) and returns
// the weights in the accumulate dtype, grad as sample blocks (in its own
// layout when it has one) and, only when the weights need a gradient, the xs
// as sample blocks of grad's inner layout (the xs are not read otherwise).
struct WeightedSumBackwardInputs {
  at::Tensor weights;
  SampleBlocks grad;  // one tensor
  SampleBlocks xs;    // empty unless weights_need_grad
};
WeightedSumBackwardInputs check_weighted_sum_backward(const at::Tensor& grad, at::TensorList xs,
                                                      const at::Tensor& weights, const c10::List<bool>& xs_need_grad,
                                                      bool weights_need_grad);

// A tensor [N, C, *] seen as [N, C, S] with S the product of the trailing
// sizes, through three strides. Holds only when the trailing dims merge.
struct NCSView {
  int64_t n = 0, c = 0, s = 1;
  int64_t stride_n = 0, stride_c = 0, stride_s = 1;
};
// Returns t unchanged when it is dense and its trailing dims (those of size
// above 1) merge into one stride (this covers contiguous and channels_last),
// else a contiguous copy.
at::Tensor mergeable_ncs(const at::Tensor& t);
NCSView ncs_view(const at::Tensor& t);

// Same layout as `like` (an [N, C, *] tensor) but with `c` channels. For
// channels_last-like inputs the channel stride stays 1.
at::Tensor empty_like_ncs(const at::Tensor& like, int64_t c);

// choices: integral, 1-D, length n, on the CPU or on `device`. Validates the
// range when on the CPU (no sync) and returns it as int64.
at::Tensor checked_choices(const at::Tensor& choices, int64_t n, int64_t num_choices,
                           const at::Device& device, const char* name, const char* range_name);

// For each row i: its rank among the rows with the same choice; plus the
// bucket sizes. choices: int64 on the CPU, already range-checked.
struct PathPlan {
  std::vector<int64_t> counts;
  at::Tensor rank;  // int64 [N] on the CPU
};
PathPlan plan_paths(const at::Tensor& choices_cpu, int64_t num_choices);

// Row-major dense with the same inner strides for all ys (dim 0 outermost).
std::vector<at::Tensor> to_common_row_layout(at::TensorList ys, const at::Tensor& like);

// Empty tensor of sizes [rows, like.sizes()[1:]] with like's inner strides.
at::Tensor empty_rows_like(const at::Tensor& like, int64_t rows);

}  // namespace pynas
