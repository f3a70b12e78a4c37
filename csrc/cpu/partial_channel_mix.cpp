// CPU kernels of partial_channel_mix (PC-DARTS): the weighted sum of the
// sampled channels, the bypass of the others, the concat and the channel
// shuffle, all in one pass that writes each output element once.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../ops/common.h"
#include "../ops/partial_channel_mix.h"

namespace pynas {

namespace {

template <typename scalar_t>
void forward_kernel(const std::vector<const scalar_t*>& ys, const NCSView& yv, const at::opmath_type<scalar_t>* w,
                    bool per_sample, const scalar_t* x, const NCSView& xv, int64_t groups, scalar_t* out,
                    const NCSView& ov) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k_count = static_cast<int64_t>(ys.size());
  const int64_t c_part = ov.c / groups;
  at::parallel_for(0, ov.n * ov.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(ov.s);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / ov.c, o = item % ov.c;
      const int64_t j = o / groups, i = o % groups;
      scalar_t* dst = out + n * ov.stride_n + o * ov.stride_c;
      if (i != 0) {
        const scalar_t* src = x + n * xv.stride_n + (i * c_part + j) * xv.stride_c;
        for (int64_t s = 0; s < ov.s; ++s) dst[s * ov.stride_s] = src[s * xv.stride_s];
        continue;
      }
      const acc_t* wn = w + (per_sample ? n * k_count : 0);
      std::fill(buf.begin(), buf.end(), acc_t(0));
      const int64_t offset = n * yv.stride_n + j * yv.stride_c;
      for (int64_t k = 0; k < k_count; ++k) {
        const scalar_t* y = ys[k] + offset;
        const acc_t wk = wn[k];
        for (int64_t s = 0; s < ov.s; ++s) buf[s] += wk * static_cast<acc_t>(y[s * yv.stride_s]);
      }
      for (int64_t s = 0; s < ov.s; ++s) dst[s * ov.stride_s] = static_cast<scalar_t>(buf[s]);
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad, const NCSView& gv, const std::vector<const scalar_t*>& ys,
                     const std::vector<scalar_t*>& grad_ys, const NCSView& gyv, const NCSView& yv, const at::opmath_type<scalar_t>* w,
                     bool per_sample, int64_t groups, at::opmath_type<scalar_t>* partial_w,  // [N, Cg, K] or null
                     scalar_t* grad_x, const NCSView& xv) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k_count = static_cast<int64_t>(ys.size());
  const int64_t c_part = gv.c / groups;
  at::parallel_for(0, gv.n * gv.c, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> g(gv.s);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / gv.c, o = item % gv.c;
      const int64_t j = o / groups, i = o % groups;
      const scalar_t* src = grad + n * gv.stride_n + o * gv.stride_c;
      if (i != 0) {
        if (grad_x) {
          scalar_t* dst = grad_x + n * xv.stride_n + (i * c_part + j) * xv.stride_c;
          for (int64_t s = 0; s < gv.s; ++s) dst[s * xv.stride_s] = src[s * gv.stride_s];
        }
        continue;
      }
      if (grad_x) {
        scalar_t* dst = grad_x + n * xv.stride_n + j * xv.stride_c;
        for (int64_t s = 0; s < gv.s; ++s) dst[s * xv.stride_s] = scalar_t(0);
      }
      for (int64_t s = 0; s < gv.s; ++s) g[s] = static_cast<acc_t>(src[s * gv.stride_s]);
      const acc_t* wn = w + (per_sample ? n * k_count : 0);
      const int64_t offset = n * yv.stride_n + j * yv.stride_c;
      const int64_t grad_offset = n * gyv.stride_n + j * gyv.stride_c;
      acc_t* pw = partial_w ? partial_w + (n * c_part + j) * k_count : nullptr;
      for (int64_t k = 0; k < k_count; ++k) {
        if (scalar_t* gy = grad_ys[k]) {
          const acc_t wk = wn[k];
          for (int64_t s = 0; s < gv.s; ++s) gy[grad_offset + s * gyv.stride_s] = static_cast<scalar_t>(wk * g[s]);
        }
        if (pw) {
          const scalar_t* y = ys[k] + offset;
          acc_t dot = 0;
          for (int64_t s = 0; s < gv.s; ++s) dot += g[s] * static_cast<acc_t>(y[s * yv.stride_s]);
          pw[k] = dot;
        }
      }
    }
  });
}

at::Tensor partial_channel_mix_cpu(at::TensorList ys_in, const at::Tensor& weights, const at::Tensor& x_in,
                                   int64_t groups) {
  PartialChannelMixInputs in = check_partial_channel_mix(ys_in, weights, x_in, groups);
  TORCH_CHECK_VALUE(in.x.is_cpu(), "x must be on the CPU for the CPU kernel");
  at::Tensor out = empty_like_ncs(in.x, in.x.size(1));
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "partial_channel_mix_cpu", [&] {
    std::vector<const scalar_t*> ptrs;
    for (const auto& y : in.ys) ptrs.push_back(y.const_data_ptr<scalar_t>());
    forward_kernel<scalar_t>(ptrs, ncs_view(in.ys[0]), in.weights.const_data_ptr<at::opmath_type<scalar_t>>(),
                             in.weights.dim() == 2, in.x.const_data_ptr<scalar_t>(), ncs_view(in.x), groups,
                             out.mutable_data_ptr<scalar_t>(), ncs_view(out));
  });
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
  at::Tensor partial;
  if (weights_need_grad) partial = at::zeros({grad.size(0), c_part, k_count}, in.weights.options());
  if (grad.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "partial_channel_mix_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      std::vector<const scalar_t*> y_ptrs;
      std::vector<scalar_t*> gy_ptrs;
      size_t next = 0;
      for (int64_t k = 0; k < k_count; ++k) {
        y_ptrs.push_back(in.ys[k].const_data_ptr<scalar_t>());
        gy_ptrs.push_back(ys_need_grad.get(k) ? grad_ys[next++].mutable_data_ptr<scalar_t>() : nullptr);
      }
      backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), ncs_view(grad), y_ptrs, gy_ptrs,
                                grad_ys.empty() ? NCSView{} : ncs_view(grad_ys[0]), ncs_view(in.ys[0]),
                                in.weights.const_data_ptr<acc_t>(), per_sample, groups,
                                weights_need_grad ? partial.mutable_data_ptr<acc_t>() : nullptr,
                                x_need_grad ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
                                x_need_grad ? ncs_view(grad_x) : NCSView{});
    });
  }
  at::Tensor grad_w = at::empty({0}, weights.options());
  if (weights_need_grad) {
    grad_w = partial.sum(1);  // [N, K]
    if (!per_sample) grad_w = grad_w.sum(0);
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
