// CPU host functions of partial_channel_mix (PC-DARTS): the weighted sum of
// the sampled channels, the bypass of the others, the concat and the channel
// shuffle, all in one pass that writes each output element once; the backward
// likewise reads grad once. Contiguous (planes) and channels-last (rows of
// channels) layouts are kept and both have vectorized kernels
// (kernels_impl.h); other layouts take a strided element loop.
#include <torch/library.h>

#include <vector>

#include "../ops/common.h"
#include "../ops/partial_channel_mix.h"
#include "kernels.h"

namespace pynas {

namespace {

at::Tensor partial_channel_mix_cpu(at::TensorList ys_in, const at::Tensor& weights, const at::Tensor& x_in,
                                   int64_t groups) {
  PartialChannelMixInputs in = check_partial_channel_mix(ys_in, weights, x_in, groups);
  TORCH_CHECK_VALUE(in.x.is_cpu(), "x must be on the CPU for the CPU kernel");
  at::Tensor out = empty_like_ncs(in.x, in.x.size(1));
  if (out.numel() == 0) return out;
  cpu::PartialChannelMixForward args;
  for (const auto& y : in.ys) args.ys.push_back(y.const_data_ptr());
  args.yv = ncs_view(in.ys[0]);
  args.weights = in.weights.const_data_ptr();
  args.per_sample_weights = in.weights.dim() == 2;
  args.x = in.x.const_data_ptr();
  args.xv = ncs_view(in.x);
  args.groups = groups;
  args.out = out.mutable_data_ptr();
  args.ov = ncs_view(out);
  cpu::kernels().partial_channel_mix_forward(out.scalar_type(), args);
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> partial_channel_mix_backward_cpu(
    const at::Tensor& grad_in, at::TensorList ys_in, const at::Tensor& weights, int64_t groups,
    c10::List<bool> ys_need_grad, bool weights_need_grad, bool x_need_grad) {
  TORCH_CHECK_TYPE(grad_in.defined(), "grad is undefined");
  // grad has x's shape, so it stands in for x in the checks.
  PartialChannelMixInputs in = check_partial_channel_mix(ys_in, weights, grad_in, groups);
  const int64_t k_count = static_cast<int64_t>(in.ys.size());
  TORCH_CHECK_VALUE(static_cast<int64_t>(ys_need_grad.size()) == k_count, "ys_need_grad must have ", k_count,
                    " entries, got ", ys_need_grad.size());
  const at::Tensor& grad = in.x;
  const int64_t c_part = grad.size(1) / groups;
  std::vector<at::Tensor> grad_ys;
  for (int64_t k = 0; k < k_count; ++k) {
    if (ys_need_grad.get(k)) grad_ys.push_back(empty_like_ncs(in.ys[0], c_part));
  }
  at::Tensor grad_x = x_need_grad ? empty_like_ncs(grad, grad.size(1)) : at::empty({0}, grad.options());
  const bool per_sample = in.weights.dim() == 2;
  at::Tensor grad_w = at::empty({0}, weights.options());
  if (weights_need_grad) grad_w = at::zeros({per_sample ? grad.size(0) : 1, k_count}, in.weights.options());
  if (grad.numel() > 0) {
    cpu::PartialChannelMixBackward args;
    args.grad = grad.const_data_ptr();
    args.gv = ncs_view(grad);
    size_t next = 0;
    for (int64_t k = 0; k < k_count; ++k) {
      args.ys.push_back(in.ys[k].const_data_ptr());
      args.grad_ys.push_back(ys_need_grad.get(k) ? grad_ys[next++].mutable_data_ptr() : nullptr);
    }
    args.yv = ncs_view(in.ys[0]);
    args.gyv = grad_ys.empty() ? NCSView{} : ncs_view(grad_ys[0]);
    args.weights = in.weights.const_data_ptr();
    args.per_sample_weights = per_sample;
    args.groups = groups;
    args.grad_w = weights_need_grad ? grad_w.mutable_data_ptr() : nullptr;
    args.grad_x = x_need_grad ? grad_x.mutable_data_ptr() : nullptr;
    args.gxv = x_need_grad ? ncs_view(grad_x) : NCSView{};
    cpu::kernels().partial_channel_mix_backward(grad.scalar_type(), args);
  }
  if (weights_need_grad) {
    if (!per_sample) grad_w = grad_w.reshape({k_count});
    grad_w = grad_w.to(weights.scalar_type());
  }
  return {grad_ys, grad_w, grad_x};
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CPU, m) {
  m.impl("partial_channel_mix", &partial_channel_mix_cpu);
  m.impl("_partial_channel_mix_backward", &partial_channel_mix_backward_cpu);
}

}  // namespace pynas
