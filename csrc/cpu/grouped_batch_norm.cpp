// CPU host functions of grouped_batch_norm: batch norm whose statistics are taken per
// group of samples, so P paths batched together each see their own.
//
// Statistics are reduced per (sample, channel) first, in one pass over x
// (sums shifted by the sample's first value, so large means cancel nothing),
// and then merged per (group, channel) in increasing sample order (Chan et
// al.'s pairwise update), which is exact in any thread count. The vectorized
// kernels (kernels_impl.h) take contiguous planes and channels-last rows
// alike; other layouts take a strided element loop.
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../ops/common.h"
#include "../ops/grouped_batch_norm.h"
#include "kernels.h"

namespace pynas {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> grouped_batch_norm_cpu(
    const at::Tensor& x_in, const at::Tensor& groups_in, int64_t num_groups, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& mean_in,
    const c10::optional<at::Tensor>& var_in, double eps) {
  GroupedBatchNormInputs in = check_grouped_batch_norm(x_in, groups_in, num_groups, weight, bias);
  TORCH_CHECK_VALUE(in.x.is_cpu(), "x must be on the CPU for the CPU kernel");
  TORCH_CHECK_VALUE(in.groups.is_cpu(), "groups must be on the CPU for the CPU kernel");
  const bool have_mean = mean_in.has_value() && mean_in->defined();
  const bool have_var = var_in.has_value() && var_in->defined();
  TORCH_CHECK_VALUE(have_mean == have_var, "mean and var must be given together (evaluation) or both omitted");
  TORCH_CHECK_VALUE(eps >= 0, "eps must be non-negative, got ", eps);
  const at::Tensor& x = in.x;
  const NCSView v = ncs_view(x);
  const auto acc = accumulate_type(x.scalar_type());
  at::Tensor mean, invstd;
  if (have_mean) {
    // A copy: an output must not alias an input (the caller may update it in place).
    mean = checked_group_stats(*mean_in, "mean", num_groups, x).clone();
    invstd = (checked_group_stats(*var_in, "var", num_groups, x) + eps).rsqrt();
  } else {
    const auto dopts = x.options().dtype(at::kDouble);
    at::Tensor m_nc = at::empty({v.n, v.c}, dopts), m2_nc = at::empty({v.n, v.c}, dopts);
    if (x.numel() > 0) {
      cpu::BatchNormMoments args;
      args.x = x.const_data_ptr();
      args.v = v;
      args.mean = m_nc.data_ptr<double>();
      args.m2 = m2_nc.data_ptr<double>();
      cpu::kernels().batch_norm_moments(x.scalar_type(), args);
    }
    at::Tensor gm = at::zeros({num_groups, v.c}, dopts), gm2 = at::zeros({num_groups, v.c}, dopts);
    std::vector<double> count(num_groups, 0.0);
    const int64_t* g = in.groups.const_data_ptr<int64_t>();
    double* pm = gm.data_ptr<double>();
    double* pm2 = gm2.data_ptr<double>();
    const double* qm = m_nc.const_data_ptr<double>();
    const double* qm2 = m2_nc.const_data_ptr<double>();
    for (int64_t n = 0; n < v.n; ++n) {
      const double before = count[g[n]], after = before + static_cast<double>(v.s);
      count[g[n]] = after;
      if (after == 0) continue;
      for (int64_t c = 0; c < v.c; ++c) {
        const int64_t gc = g[n] * v.c + c;
        const double delta = qm[n * v.c + c] - pm[gc];
        pm[gc] += delta * v.s / after;
        pm2[gc] += qm2[n * v.c + c] + delta * delta * before * v.s / after;
      }
    }
    at::Tensor cnt = at::tensor(count, dopts).unsqueeze(1);
    // Groups without samples get invstd 0: nothing reads them.
    invstd = at::where(cnt > 0, (gm2 / cnt.clamp_min(1) + eps).rsqrt(), at::zeros_like(gm2)).to(acc);
    mean = gm.to(acc);
  }
  const at::Tensor scale = (in.weight.defined() ? invstd * in.weight : invstd).contiguous();
  const at::Tensor shift = in.bias.defined() ? in.bias : at::zeros({v.c}, invstd.options());
  at::Tensor out = empty_like_ncs(x, v.c);
  if (x.numel() > 0) {
    cpu::BatchNormApply args;
    args.x = x.const_data_ptr();
    args.xv = v;
    args.groups = in.groups.const_data_ptr<int64_t>();
    args.mean = mean.const_data_ptr();
    args.scale = scale.const_data_ptr();
    args.shift = shift.const_data_ptr();
    args.out = out.mutable_data_ptr();
    args.ov = ncs_view(out);
    cpu::kernels().batch_norm_apply(x.scalar_type(), args);
  }
  return {out, mean, invstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> grouped_batch_norm_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& groups_in, int64_t num_groups,
    const c10::optional<at::Tensor>& weight, const at::Tensor& mean_in, const at::Tensor& invstd_in,
    bool batch_stats, std::array<bool, 3> output_mask) {
  GroupedBatchNormInputs in = check_grouped_batch_norm(x_in, groups_in, num_groups, weight, c10::nullopt);
  TORCH_CHECK_VALUE(grad_in.sizes() == x_in.sizes(), "grad must have x's shape ", x_in.sizes(), ", got ",
                    grad_in.sizes());
  TORCH_CHECK_VALUE(in.groups.is_cpu(), "groups must be on the CPU for the CPU kernel");
  const at::Tensor& x = in.x;
  const at::Tensor grad = mergeable_ncs(grad_in.to(x.scalar_type()));
  const at::Tensor mean = checked_group_stats(mean_in, "mean", num_groups, x);
  const at::Tensor invstd = checked_group_stats(invstd_in, "invstd", num_groups, x);
  const NCSView xv = ncs_view(x), gv = ncs_view(grad);
  const auto acc = accumulate_type(x.scalar_type());
  const int64_t* g = in.groups.const_data_ptr<int64_t>();
  const bool need_sums = output_mask[1] || output_mask[2] || (output_mask[0] && batch_stats);

  // Per (sample, channel): sum of dy and of dy * (x - mean), merged per group.
  at::Tensor sum_dy = at::zeros({num_groups, xv.c}, x.options().dtype(at::kDouble));
  at::Tensor sum_dy_xmu = at::zeros_like(sum_dy);
  if (need_sums && x.numel() > 0) {
    at::Tensor a_nc = at::empty({xv.n, xv.c}, sum_dy.options()), b_nc = at::empty_like(a_nc);
    cpu::BatchNormBackwardSums args;
    args.grad = grad.const_data_ptr();
    args.gv = gv;
    args.x = x.const_data_ptr();
    args.xv = xv;
    args.groups = g;
    args.mean = mean.const_data_ptr();
    args.sum_dy = a_nc.data_ptr<double>();
    args.sum_dy_xmu = b_nc.data_ptr<double>();
    cpu::kernels().batch_norm_backward_sums(x.scalar_type(), args);
    // Merged per group in sample order (index_add_ may not keep an order).
    double* pa = sum_dy.data_ptr<double>();
    double* pb = sum_dy_xmu.data_ptr<double>();
    const double* qa = a_nc.const_data_ptr<double>();
    const double* qb = b_nc.const_data_ptr<double>();
    for (int64_t n = 0; n < xv.n; ++n) {
      for (int64_t c = 0; c < xv.c; ++c) {
        pa[g[n] * xv.c + c] += qa[n * xv.c + c];
        pb[g[n] * xv.c + c] += qb[n * xv.c + c];
      }
    }
  }
  at::Tensor grad_x, grad_w, grad_b;
  const at::Tensor inv_d = invstd.to(at::kDouble);
  // Both come back in the accumulate dtype; the caller casts to the parameters'.
  grad_w = output_mask[1] && in.weight.defined() ? (sum_dy_xmu * inv_d).sum(0).to(acc) : at::empty({0}, x.options().dtype(acc));
  grad_b = output_mask[2] ? sum_dy.sum(0).to(acc) : at::empty({0}, x.options().dtype(acc));
  if (!output_mask[0]) return {at::empty({0}, x.options()), grad_w, grad_b};

  // grad_x = k1 * dy + k2 * (x - mean) + k3 per (group, channel).
  at::Tensor w = in.weight.defined() ? in.weight.to(at::kDouble) : at::ones({xv.c}, sum_dy.options());
  at::Tensor k1 = inv_d * w, k2 = at::zeros_like(k1), k3 = at::zeros_like(k1);
  if (batch_stats) {
    std::vector<double> count(num_groups, 0.0);
    for (int64_t n = 0; n < xv.n; ++n) count[g[n]] += static_cast<double>(xv.s);
    at::Tensor m = at::tensor(count, sum_dy.options()).clamp_min(1).unsqueeze(1);
    k2 = -k1 * inv_d * inv_d * sum_dy_xmu / m;
    k3 = -k1 * sum_dy / m;
  }
  k1 = k1.to(acc).contiguous();
  k2 = k2.to(acc).contiguous();
  k3 = k3.to(acc).contiguous();
  grad_x = empty_like_ncs(x, xv.c);
  if (x.numel() > 0) {
    cpu::BatchNormBackwardApply args;
    args.grad = grad.const_data_ptr();
    args.gv = gv;
    args.x = x.const_data_ptr();
    args.xv = xv;
    args.groups = g;
    args.mean = mean.const_data_ptr();
    args.k1 = k1.const_data_ptr();
    args.k2 = k2.const_data_ptr();
    args.k3 = k3.const_data_ptr();
    args.grad_x = grad_x.mutable_data_ptr();
    args.ov = ncs_view(grad_x);
    cpu::kernels().batch_norm_backward_apply(x.scalar_type(), args);
  }
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CPU, m) {
  m.impl("grouped_batch_norm", &grouped_batch_norm_cpu);
  m.impl("_grouped_batch_norm_backward", &grouped_batch_norm_backward_cpu);
}

}  // namespace pynas
