// CUDA glue of partial_channel_mix: the host logic of
// csrc/cpu/partial_channel_mix.cpp (same checks, layouts, outputs) around the
// kernels of partial_channel_mix_kernel.cu and weighted_sum_kernel.cu.
//
// Backward: one kernel reads grad once and writes grad_x (the un-shuffled
// bypass channels, zeros for the mixed ones) and grad_sel = grad's mixed
// channels [N, C/groups, *]; weighted_sum's backward kernel then makes the
// ys' and weights' gradients from grad_sel in one pass.
#include <torch/library.h>

#include <vector>

#include "../ops/common.h"
#include "../ops/partial_channel_mix.h"
#include "glue_utils.h"
#include "kernels.h"

namespace pynas {
namespace {

using namespace cuda_glue;

at::Tensor partial_channel_mix_cuda(at::TensorList ys_in, const at::Tensor& weights, const at::Tensor& x_in,
                                    int64_t groups) {
  PartialChannelMixInputs in = check_partial_channel_mix(ys_in, weights, x_in, groups);
  check_cuda_tensor(in.x, "x");
  c10::cuda::CUDAGuard guard(in.x.device());
  at::Tensor out = empty_like_ncs(in.x, in.x.size(1));
  if (out.numel() == 0) return out;
  const int64_t k_count = static_cast<int64_t>(in.ys.size());
  std::vector<const void*> ptrs;
  ptrs.reserve(in.ys.size());
  for (const auto& y : in.ys) ptrs.push_back(y.const_data_ptr());
  at::Tensor table;  // device pointer array, only beyond the by-value limit
  if (k_count > cuda::kMaxInlineInputs) table = pointer_table(ptrs, out.device());
  const NCSView v = ncs_view(out);
  C10_CUDA_CHECK(cuda::launch_partial_channel_mix_forward(
      kernel_dtype(out.scalar_type()), ptrs.data(),
      table.defined() ? static_cast<const void* const*>(table.const_data_ptr()) : nullptr, k_count,
      ncs_strides(in.ys[0]), in.weights.const_data_ptr(), in.weights.dim() == 2 ? v.n : 1,
      in.x.const_data_ptr(), ncs_strides(in.x), out.mutable_data_ptr(), ncs_strides(out), v.n, v.c, v.s, groups,
      c10::cuda::getCurrentCUDAStream()));
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor> partial_channel_mix_backward_cuda(
    const at::Tensor& grad_in, at::TensorList ys_in, const at::Tensor& weights, int64_t groups,
    c10::List<bool> ys_need_grad, bool weights_need_grad, bool x_need_grad) {
  TORCH_CHECK_TYPE(grad_in.defined(), "grad is undefined");
  // grad has x's shape, so it stands in for x in the checks.
  PartialChannelMixInputs in = check_partial_channel_mix(ys_in, weights, grad_in, groups);
  const int64_t k_count = static_cast<int64_t>(in.ys.size());
  TORCH_CHECK_VALUE(static_cast<int64_t>(ys_need_grad.size()) == k_count, "ys_need_grad must have ", k_count,
                    " entries, got ", ys_need_grad.size());
  const at::Tensor& grad = in.x;
  check_cuda_tensor(grad, "grad");
  c10::cuda::CUDAGuard guard(grad.device());
  const int64_t c_part = grad.size(1) / groups;
  std::vector<at::Tensor> grad_ys;
  for (int64_t k = 0; k < k_count; ++k) {
    if (ys_need_grad.get(k)) grad_ys.push_back(empty_like_ncs(in.ys[0], c_part));
  }
  at::Tensor grad_x = x_need_grad ? empty_like_ncs(grad, grad.size(1)) : at::empty({0}, grad.options());
  const bool per_sample = in.weights.dim() == 2;
  const NCSView gv = ncs_view(grad);
  const int64_t samples = per_sample ? gv.n : 1;
  at::Tensor grad_w_acc;
  if (weights_need_grad) grad_w_acc = at::empty({samples, k_count}, in.weights.options());
  const bool need_sel = !grad_ys.empty() || weights_need_grad;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (grad.numel() > 0 && (need_sel || x_need_grad)) {
    const cuda::DType dtype = kernel_dtype(grad.scalar_type());
    // grad_sel, the ys read for the weights' gradient and grad_ys share one
    // dense batch-major layout (that of the grad_ys), so the weighted-sum
    // kernel can work on their flat storage.
    at::Tensor sel;
    if (need_sel) sel = empty_like_ncs(in.ys[0], c_part);
    C10_CUDA_CHECK(cuda::launch_partial_channel_mix_unshuffle(
        dtype, grad.const_data_ptr(), ncs_strides(grad), need_sel ? sel.mutable_data_ptr() : nullptr,
        need_sel ? ncs_strides(sel) : cuda::NcsStrides{}, x_need_grad ? grad_x.mutable_data_ptr() : nullptr,
        x_need_grad ? ncs_strides(grad_x) : cuda::NcsStrides{}, gv.n, gv.c, gv.s, groups, stream));
    if (need_sel) {
      // The ys are read (for the weights' gradient) in place as sample blocks
      // of sel's inner layout, each with its own sample stride; only a y
      // whose inner layout differs from sel's is laid out (copied).
      SampleBlocks ys_blocks;
      if (weights_need_grad) ys_blocks = to_sample_blocks(in.ys, sel);
      std::vector<const void*> y_ptrs(k_count, nullptr);
      std::vector<void*> gy_ptrs(k_count, nullptr);
      size_t next = 0;
      for (int64_t k = 0; k < k_count; ++k) {
        if (ys_need_grad.get(k)) gy_ptrs[k] = grad_ys[next++].mutable_data_ptr();
        if (weights_need_grad) y_ptrs[k] = ys_blocks.tensors[k].const_data_ptr();
      }
      const int64_t inner = sel.numel() / gv.n;
      const int64_t bps = cuda::weighted_sum_backward_blocks_per_sample(gv.n, inner);
      at::Tensor partial;
      if (weights_need_grad) partial = at::empty({gv.n * bps * k_count}, in.weights.options().dtype(at::kDouble));
      C10_CUDA_CHECK(cuda::launch_weighted_sum_backward(
          dtype, sel.const_data_ptr(), inner, y_ptrs.data(),
          weights_need_grad ? ys_blocks.sample_strides.data() : nullptr, gy_ptrs.data(), k_count,
          in.weights.const_data_ptr(), samples, gv.n, inner, bps,
          weights_need_grad ? partial.mutable_data_ptr<double>() : nullptr,
          weights_need_grad ? grad_w_acc.mutable_data_ptr() : nullptr, stream));
    }
  } else if (weights_need_grad) {
    grad_w_acc.zero_();
  }
  at::Tensor grad_w = at::empty({0}, weights.options());
  if (weights_need_grad) grad_w = grad_w_acc.reshape(weights.sizes()).to(weights.scalar_type());
  return {grad_ys, grad_w, grad_x};
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CUDA, m) {
  m.impl("partial_channel_mix", &partial_channel_mix_cuda);
  m.impl("_partial_channel_mix_backward", &partial_channel_mix_backward_cuda);
}

}  // namespace pynas
