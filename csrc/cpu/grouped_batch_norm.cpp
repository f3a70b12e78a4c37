// CPU host functions of grouped_batch_norm: batch norm whose statistics are taken per
// group of samples, so P paths batched together each see their own.
//
// Statistics are reduced per (sample, channel) first, in one pass over x
// (sums shifted by the sample's first value, so large means cancel nothing),
// and then merged per (group, channel) in increasing sample order (Chan et
// al.'s pairwise update), which is exact in any thread count. The vectorized
// kernels (kernels_impl.h) take contiguous planes and channels-last rows
// alike; other layouts take a strided element loop.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../ops/common.h"
#include "../ops/grouped_batch_norm.h"
#include "kernels.h"

namespace pynas {
namespace {

// The per-(group, channel) arithmetic is a few hundred values: plain loops in
// double, not a dozen small ATen ops (their fixed cost showed at 4 MB inputs).
template <typename acc_t>
void batch_stats(const double* gm, const double* gm2, const std::vector<double>& count, int64_t num_groups,
                 int64_t c, double eps, const acc_t* weight, acc_t* mean, acc_t* invstd, acc_t* scale) {
  for (int64_t g = 0; g < num_groups; ++g) {
    const double n = count[g];
    for (int64_t j = 0; j < c; ++j) {
      const int64_t gc = g * c + j;
      mean[gc] = static_cast<acc_t>(gm[gc]);
      // Groups without samples get invstd 0: nothing reads them.
      invstd[gc] = n > 0 ? static_cast<acc_t>(1.0 / std::sqrt(gm2[gc] / n + eps)) : acc_t(0);
      scale[gc] = weight != nullptr ? invstd[gc] * weight[j] : invstd[gc];
    }
  }
}

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
  const auto acc_opts = x.options().dtype(acc);
  at::Tensor mean, invstd, scale;
  if (have_mean) {
    // A copy: an output must not alias an input (the caller may update it in place).
    mean = checked_group_stats(*mean_in, "mean", num_groups, x).clone();
    invstd = (checked_group_stats(*var_in, "var", num_groups, x) + eps).rsqrt();
    scale = (in.weight.defined() ? invstd * in.weight : invstd).contiguous();
  } else {
    std::vector<double> m_nc(v.n * v.c), m2_nc(v.n * v.c);
    if (x.numel() > 0) {
      cpu::BatchNormMoments args;
      args.x = x.const_data_ptr();
      args.v = v;
      args.mean = m_nc.data();
      args.m2 = m2_nc.data();
      cpu::kernels().batch_norm_moments(x.scalar_type(), args);
    }
    std::vector<double> gm(num_groups * v.c, 0.0), gm2(num_groups * v.c, 0.0), count(num_groups, 0.0);
    const int64_t* g = in.groups.const_data_ptr<int64_t>();
    for (int64_t n = 0; n < v.n; ++n) {
      const double before = count[g[n]], after = before + static_cast<double>(v.s);
      count[g[n]] = after;
      if (after == 0) continue;
      for (int64_t c = 0; c < v.c; ++c) {
        const int64_t gc = g[n] * v.c + c;
        const double delta = m_nc[n * v.c + c] - gm[gc];
        gm[gc] += delta * v.s / after;
        gm2[gc] += m2_nc[n * v.c + c] + delta * delta * before * v.s / after;
      }
    }
    mean = at::empty({num_groups, v.c}, acc_opts);
    invstd = at::empty_like(mean);
    scale = at::empty_like(mean);
    AT_DISPATCH_FLOATING_TYPES(acc, "grouped_batch_norm_stats_cpu", [&] {
      batch_stats<scalar_t>(gm.data(), gm2.data(), count, num_groups, v.c, eps,
                            in.weight.defined() ? in.weight.const_data_ptr<scalar_t>() : nullptr,
                            mean.mutable_data_ptr<scalar_t>(), invstd.mutable_data_ptr<scalar_t>(),
                            scale.mutable_data_ptr<scalar_t>());
    });
  }
  const at::Tensor shift = in.bias.defined() ? in.bias : at::zeros({v.c}, acc_opts);
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

// grad_x = k1 * dy + k2 * (x - mean) + k3 per (group, channel), and the
// parameters' gradients, from the per-group sums (double).
template <typename acc_t>
void backward_coefficients(const double* sum_dy, const double* sum_dy_xmu, const std::vector<double>& count,
                           const acc_t* invstd, const acc_t* weight, int64_t num_groups, int64_t c, bool batch_stats,
                           acc_t* k1, acc_t* k2, acc_t* k3, acc_t* grad_w, acc_t* grad_b) {
  for (int64_t j = 0; j < c; ++j) {
    double gw = 0, gb = 0;
    for (int64_t g = 0; g < num_groups; ++g) {
      const int64_t gc = g * c + j;
      const double inv = static_cast<double>(invstd[gc]);
      gw += sum_dy_xmu[gc] * inv;
      gb += sum_dy[gc];
      if (k1 == nullptr) continue;
      const double a = inv * (weight != nullptr ? static_cast<double>(weight[j]) : 1.0);
      const double m = std::max(count[g], 1.0);
      k1[gc] = static_cast<acc_t>(a);
      k2[gc] = static_cast<acc_t>(batch_stats ? -a * inv * inv * sum_dy_xmu[gc] / m : 0.0);
      k3[gc] = static_cast<acc_t>(batch_stats ? -a * sum_dy[gc] / m : 0.0);
    }
    if (grad_w != nullptr) grad_w[j] = static_cast<acc_t>(gw);
    if (grad_b != nullptr) grad_b[j] = static_cast<acc_t>(gb);
  }
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
  const auto acc_opts = x.options().dtype(accumulate_type(x.scalar_type()));
  const int64_t* g = in.groups.const_data_ptr<int64_t>();
  const bool need_sums = output_mask[1] || output_mask[2] || (output_mask[0] && batch_stats);

  // Per (sample, channel): sum of dy and of dy * (x - mean), merged per group in sample order.
  std::vector<double> sum_dy(num_groups * xv.c, 0.0), sum_dy_xmu(num_groups * xv.c, 0.0);
  if (need_sums && x.numel() > 0) {
    std::vector<double> a_nc(xv.n * xv.c), b_nc(xv.n * xv.c);
    cpu::BatchNormBackwardSums args;
    args.grad = grad.const_data_ptr();
    args.gv = gv;
    args.x = x.const_data_ptr();
    args.xv = xv;
    args.groups = g;
    args.mean = mean.const_data_ptr();
    args.sum_dy = a_nc.data();
    args.sum_dy_xmu = b_nc.data();
    cpu::kernels().batch_norm_backward_sums(x.scalar_type(), args);
    for (int64_t n = 0; n < xv.n; ++n) {
      for (int64_t c = 0; c < xv.c; ++c) {
        sum_dy[g[n] * xv.c + c] += a_nc[n * xv.c + c];
        sum_dy_xmu[g[n] * xv.c + c] += b_nc[n * xv.c + c];
      }
    }
  }
  std::vector<double> count(num_groups, 0.0);
  for (int64_t n = 0; n < xv.n; ++n) count[g[n]] += static_cast<double>(xv.s);
  // Both parameter gradients come back in the accumulate dtype; the caller casts to the parameters'.
  const bool want_w = output_mask[1] && in.weight.defined();
  at::Tensor grad_w = at::empty({want_w ? xv.c : 0}, acc_opts);
  at::Tensor grad_b = at::empty({output_mask[2] ? xv.c : 0}, acc_opts);
  at::Tensor k1, k2, k3;
  if (output_mask[0]) {
    k1 = at::empty({num_groups, xv.c}, acc_opts);
    k2 = at::empty_like(k1);
    k3 = at::empty_like(k1);
  }
  AT_DISPATCH_FLOATING_TYPES(acc_opts.dtype().toScalarType(), "grouped_batch_norm_backward_coefficients", [&] {
    backward_coefficients<scalar_t>(
        sum_dy.data(), sum_dy_xmu.data(), count, invstd.const_data_ptr<scalar_t>(),
        in.weight.defined() ? in.weight.const_data_ptr<scalar_t>() : nullptr, num_groups, xv.c, batch_stats,
        output_mask[0] ? k1.mutable_data_ptr<scalar_t>() : nullptr,
        output_mask[0] ? k2.mutable_data_ptr<scalar_t>() : nullptr,
        output_mask[0] ? k3.mutable_data_ptr<scalar_t>() : nullptr,
        want_w ? grad_w.mutable_data_ptr<scalar_t>() : nullptr,
        output_mask[2] ? grad_b.mutable_data_ptr<scalar_t>() : nullptr);
  });
  if (!output_mask[0]) return {at::empty({0}, x.options()), grad_w, grad_b};

  at::Tensor grad_x = empty_like_ncs(x, xv.c);
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
