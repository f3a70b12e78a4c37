// CUDA glue of weighted_sum: the host logic of csrc/cpu/weighted_sum.cpp
// (same checks, layouts, outputs) around the kernels of weighted_sum_kernel.cu.
#include <torch/library.h>

#include <vector>

#include "../ops/common.h"
#include "glue_utils.h"
#include "kernels.h"

namespace pynas {
namespace {

using namespace cuda_glue;

// Tensors reach the kernels as sample blocks (csrc/ops/common.h) read in
// place, each with its own sample stride: no copy of a strided input (a
// DARTS node's channel-slice gradient, a channels-last slice).
at::Tensor weighted_sum_cuda(at::TensorList xs_in, const at::Tensor& weights) {
  check_same_inputs(xs_in, "xs");
  check_cuda_tensor(xs_in[0], "xs");
  c10::cuda::CUDAGuard guard(xs_in[0].device());
  const int64_t k_count = static_cast<int64_t>(xs_in.size());
  const at::Tensor w = checked_weights(weights, k_count, xs_in[0], "xs[0]");
  const SampleBlocks xs = to_sample_blocks(xs_in, xs_in[0]);
  at::Tensor out = empty_sample_blocks_like(xs_in[0]);
  if (out.numel() == 0) return out;
  const int64_t samples = xs.samples;
  const int64_t inner = xs.inner;
  std::vector<const void*> ptrs;
  ptrs.reserve(xs.tensors.size());
  for (const auto& x : xs.tensors) ptrs.push_back(x.const_data_ptr());
  InputTable table;  // device arrays, only beyond the by-value limit
  if (k_count > cuda::kMaxInlineInputs) table = input_table(ptrs, xs.sample_strides, out.device());
  C10_CUDA_CHECK(cuda::launch_weighted_sum_forward(
      kernel_dtype(out.scalar_type()), ptrs.data(), table.ptrs, xs.sample_strides.data(), table.strides, k_count,
      w.const_data_ptr(), w.dim() == 2 ? samples : 1, samples, inner, out.mutable_data_ptr(),
      c10::cuda::getCurrentCUDAStream()));
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> weighted_sum_backward_cuda(const at::Tensor& grad_in,
                                                                           at::TensorList xs_in,
                                                                           const at::Tensor& weights,
                                                                           c10::List<bool> xs_need_grad,
                                                                           bool weights_need_grad) {
  const WeightedSumBackwardInputs in =
      check_weighted_sum_backward(grad_in, xs_in, weights, xs_need_grad, weights_need_grad);
  const int64_t k_count = static_cast<int64_t>(xs_in.size());
  const at::Tensor& w = in.weights;
  check_cuda_tensor(xs_in[0], "xs");
  c10::cuda::CUDAGuard guard(xs_in[0].device());
  const at::Tensor& grad = in.grad.tensors[0];  // read in place, with its sample stride
  const std::vector<at::Tensor>& xs = in.xs.tensors;  // empty unless weights_need_grad

  std::vector<at::Tensor> grads_x;
  std::vector<void*> gx_ptrs(k_count, nullptr);
  std::vector<const void*> x_ptrs(k_count, nullptr);
  for (int64_t k = 0; k < k_count; ++k) {
    if (xs_need_grad.get(k)) {
      grads_x.push_back(empty_sample_blocks_like(grad));
      gx_ptrs[k] = grads_x.back().mutable_data_ptr();
    }
    if (weights_need_grad) x_ptrs[k] = xs[k].const_data_ptr();
  }
  const int64_t samples = in.grad.samples;
  const int64_t inner = in.grad.inner;
  const int64_t w_samples = w.dim() == 2 ? samples : 1;
  at::Tensor grad_w_acc;
  if (weights_need_grad) grad_w_acc = at::empty({w_samples, k_count}, w.options());
  const bool any_gx = !grads_x.empty();
  if (grad.numel() > 0 && (any_gx || weights_need_grad)) {
    const int64_t bps = cuda::weighted_sum_backward_blocks_per_sample(samples, inner);
    at::Tensor partial;
    if (weights_need_grad) partial = at::empty({samples * bps * k_count}, w.options().dtype(at::kDouble));
    C10_CUDA_CHECK(cuda::launch_weighted_sum_backward(
        kernel_dtype(grad.scalar_type()), grad.const_data_ptr(), in.grad.sample_strides[0], x_ptrs.data(),
        weights_need_grad ? in.xs.sample_strides.data() : nullptr, gx_ptrs.data(), k_count, w.const_data_ptr(),
        w_samples, samples, inner, bps, weights_need_grad ? partial.mutable_data_ptr<double>() : nullptr,
        weights_need_grad ? grad_w_acc.mutable_data_ptr() : nullptr, c10::cuda::getCurrentCUDAStream()));
  } else if (weights_need_grad) {
    grad_w_acc.zero_();
  }
  at::Tensor grad_w;
  if (weights_need_grad) {
    grad_w = grad_w_acc.reshape(weights.sizes()).to(weights.scalar_type());
  } else {
    grad_w = at::empty({0}, weights.options());
  }
  return {grads_x, grad_w};
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CUDA, m) {
  m.impl("weighted_sum", &weighted_sum_cuda);
  m.impl("_weighted_sum_backward", &weighted_sum_backward_cuda);
}

}  // namespace pynas
