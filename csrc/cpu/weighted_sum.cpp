// CPU host functions of weighted_sum: one pass that reads each input once and
// writes the output once (eager PyTorch makes 2K passes), and a backward that
// reads grad once, writes every needed input gradient and accumulates every
// weight's dot product in the same pass. The vectorized kernels are in
// kernels_impl.h.
#include <torch/library.h>

#include <vector>

#include "../ops/common.h"
#include "kernels.h"

namespace pynas {
namespace {

// The tensors split into `samples` blocks of `inner` elements, each tensor
// with its own sample stride; when the weights are shared and every tensor is
// dense (stride == inner), the storage is one flat range.
struct Grid {
  int64_t samples, inner;
};

Grid make_grid(const SampleBlocks& b, bool per_sample_weights, const std::vector<int64_t>& strides) {
  bool flat = !per_sample_weights;
  for (const int64_t s : strides) flat = flat && s == b.inner;
  return flat ? Grid{1, b.samples * b.inner} : Grid{b.samples, b.inner};
}

at::Tensor weighted_sum_cpu(at::TensorList xs_in, const at::Tensor& weights) {
  check_same_inputs(xs_in, "xs");
  TORCH_CHECK_VALUE(xs_in[0].is_cpu(), "xs must be on the CPU for the CPU kernel");
  const int64_t k_count = static_cast<int64_t>(xs_in.size());
  const at::Tensor w = checked_weights(weights, k_count, xs_in[0], "xs[0]");
  const SampleBlocks xs = to_sample_blocks(xs_in, xs_in[0]);
  at::Tensor out = empty_sample_blocks_like(xs_in[0]);
  if (out.numel() == 0) return out;
  std::vector<int64_t> strides = xs.sample_strides;
  strides.push_back(xs.inner);  // out is dense
  const bool per_sample_w = w.dim() == 2;
  const Grid grid = make_grid(xs, per_sample_w, strides);
  cpu::WeightedSumForward args;
  for (size_t k = 0; k < xs.tensors.size(); ++k) {
    args.xs.push_back(xs.tensors[k].const_data_ptr());
    args.x_strides.push_back(grid.samples == 1 ? 0 : xs.sample_strides[k]);
  }
  args.weights = w.const_data_ptr();
  args.per_sample_weights = per_sample_w;
  args.samples = grid.samples;
  args.inner = grid.inner;
  args.out = out.mutable_data_ptr();
  args.out_stride = grid.samples == 1 ? 0 : xs.inner;
  cpu::kernels().weighted_sum_forward(out.scalar_type(), args);
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> weighted_sum_backward_cpu(const at::Tensor& grad_in,
                                                                          at::TensorList xs_in,
                                                                          const at::Tensor& weights,
                                                                          c10::List<bool> xs_need_grad,
                                                                          bool weights_need_grad) {
  const WeightedSumBackwardInputs in =
      check_weighted_sum_backward(grad_in, xs_in, weights, xs_need_grad, weights_need_grad);
  const int64_t k_count = static_cast<int64_t>(xs_in.size());
  const at::Tensor& w = in.weights;
  const at::Tensor& grad = in.grad.tensors[0];
  const bool per_sample_w = w.dim() == 2;

  std::vector<at::Tensor> grads_x;
  for (int64_t k = 0; k < k_count; ++k) {
    if (xs_need_grad.get(k)) grads_x.push_back(empty_sample_blocks_like(grad));
  }
  std::vector<int64_t> strides = in.xs.sample_strides;
  strides.push_back(in.grad.sample_strides[0]);
  strides.push_back(in.grad.inner);  // the grads of the xs are dense
  const Grid grid = make_grid(in.grad, per_sample_w, strides);
  const auto stride = [&](int64_t s) { return grid.samples == 1 ? 0 : s; };
  at::Tensor grad_w = weights_need_grad ? at::zeros({per_sample_w ? in.grad.samples : 1, k_count}, w.options())
                                        : at::empty({0}, weights.options());
  if (grad.numel() > 0) {
    cpu::WeightedSumBackward args;
    args.grad = grad.const_data_ptr();
    args.grad_stride = stride(in.grad.sample_strides[0]);
    size_t next = 0;
    for (int64_t k = 0; k < k_count; ++k) {
      if (weights_need_grad) {
        args.xs.push_back(in.xs.tensors[k].const_data_ptr());
        args.x_strides.push_back(stride(in.xs.sample_strides[k]));
      }
      args.grad_xs.push_back(xs_need_grad.get(k) ? grads_x[next++].mutable_data_ptr() : nullptr);
      args.grad_x_strides.push_back(stride(in.grad.inner));
    }
    args.weights = w.const_data_ptr();
    args.per_sample_weights = per_sample_w;
    args.samples = grid.samples;
    args.inner = grid.inner;
    // Per-sample sums land in [samples, K]; shared ones in [1, K].
    args.grad_w = weights_need_grad ? grad_w.mutable_data_ptr() : nullptr;
    cpu::kernels().weighted_sum_backward(grad.scalar_type(), args);
  }
  if (weights_need_grad) grad_w = grad_w.reshape(weights.sizes()).to(weights.scalar_type());
  return {grads_x, grad_w};
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CPU, m) {
  m.impl("weighted_sum", &weighted_sum_cpu);
  m.impl("_weighted_sum_backward", &weighted_sum_backward_cpu);
}

}  // namespace pynas
