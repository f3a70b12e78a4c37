// CUDA glue of grouped_batch_norm: the host logic of
// csrc/cpu/grouped_batch_norm.cpp (same checks, layouts, outputs) around the
// kernels of grouped_batch_norm_kernel.cu.
//
// Synchronization: none when groups are on the CPU (checked on the host, the
// group index built there, both uploaded in one non-blocking copy from
// pinned memory); one when they are on the device (their range check; the
// group index is built there by a stable sort).
#include <torch/library.h>

#include <array>

#include "../ops/common.h"
#include "../ops/grouped_batch_norm.h"
#include "glue_utils.h"
#include "kernels.h"

namespace pynas {
namespace {

using namespace cuda_glue;

std::tuple<at::Tensor, at::Tensor, at::Tensor> grouped_batch_norm_cuda(
    const at::Tensor& x_in, const at::Tensor& groups_in, int64_t num_groups, const c10::optional<at::Tensor>& weight,
    const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& mean_in,
    const c10::optional<at::Tensor>& var_in, double eps) {
  GroupedBatchNormInputs in = check_grouped_batch_norm(x_in, groups_in, num_groups, weight, bias);
  check_cuda_tensor(in.x, "x");
  const bool have_mean = mean_in.has_value() && mean_in->defined();
  const bool have_var = var_in.has_value() && var_in->defined();
  TORCH_CHECK_VALUE(have_mean == have_var, "mean and var must be given together (evaluation) or both omitted");
  TORCH_CHECK_VALUE(eps >= 0, "eps must be non-negative, got ", eps);
  c10::cuda::CUDAGuard guard(in.x.device());
  const at::Tensor& x = in.x;
  const NCSView v = ncs_view(x);
  const cuda::NcsStrides xs = ncs_strides(x);
  const auto acc = accumulate_type(x.scalar_type());
  const cuda::DType dtype = kernel_dtype(x.scalar_type());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  // The group index only for the batch statistics (the reductions' merges).
  const DeviceGroups dg = groups_on_device(in.groups, num_groups, x.device(), /*with_index=*/!have_mean, "groups",
                                           "num_groups");
  const at::Tensor& groups = dg.labels;
  at::Tensor mean, invstd;
  if (have_mean) {
    // A copy: an output must not alias an input (the caller may update it in place).
    mean = checked_group_stats(*mean_in, "mean", num_groups, x).clone();
    invstd = (checked_group_stats(*var_in, "var", num_groups, x) + eps).rsqrt();
  } else {
    const auto opts = x.options().dtype(acc);
    mean = at::empty({num_groups, v.c}, opts);
    invstd = at::empty({num_groups, v.c}, opts);
    const int64_t parts = cuda::grouped_batch_norm_parts(v.n, v.c, v.s, xs.s == 1);
    at::Tensor workspace;
    if (x.numel() > 0) workspace = at::empty({2 * v.n * parts * v.c}, x.options().dtype(at::kDouble));
    C10_CUDA_CHECK(cuda::launch_grouped_batch_norm_stats(
        dtype, x.const_data_ptr(), xs, v.n, v.c, v.s, dg.index.const_data_ptr<int64_t>(), num_groups, parts, eps,
        workspace.defined() ? workspace.mutable_data_ptr<double>() : nullptr, mean.mutable_data_ptr(),
        invstd.mutable_data_ptr(), stream));
  }
  at::Tensor out = empty_like_ncs(x, v.c);
  if (x.numel() > 0) {
    C10_CUDA_CHECK(cuda::launch_grouped_batch_norm_apply(
        dtype, x.const_data_ptr(), xs, out.mutable_data_ptr(), ncs_strides(out), v.n, v.c, v.s,
        groups.const_data_ptr<int64_t>(), mean.const_data_ptr(), invstd.const_data_ptr(),
        in.weight.defined() ? in.weight.const_data_ptr() : nullptr,
        in.bias.defined() ? in.bias.const_data_ptr() : nullptr, stream));
  }
  return {out, mean, invstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> grouped_batch_norm_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& groups_in, int64_t num_groups,
    const c10::optional<at::Tensor>& weight, const at::Tensor& mean_in, const at::Tensor& invstd_in,
    bool batch_stats, std::array<bool, 3> output_mask) {
  GroupedBatchNormInputs in = check_grouped_batch_norm(x_in, groups_in, num_groups, weight, c10::nullopt);
  TORCH_CHECK_VALUE(grad_in.sizes() == x_in.sizes(), "grad must have x's shape ", x_in.sizes(), ", got ",
                    grad_in.sizes());
  check_cuda_tensor(in.x, "x");
  TORCH_CHECK_VALUE(grad_in.device() == x_in.device(), "grad is on ", grad_in.device(), " but x is on ",
                    x_in.device());
  c10::cuda::CUDAGuard guard(in.x.device());
  const at::Tensor& x = in.x;
  const at::Tensor grad = mergeable_ncs(grad_in.to(x.scalar_type()));
  const at::Tensor mean = checked_group_stats(mean_in, "mean", num_groups, x);
  const at::Tensor invstd = checked_group_stats(invstd_in, "invstd", num_groups, x);
  const NCSView v = ncs_view(x);
  const cuda::NcsStrides xs = ncs_strides(x), gs = ncs_strides(grad);
  const auto acc = accumulate_type(x.scalar_type());
  const auto acc_opts = x.options().dtype(acc);
  const cuda::DType dtype = kernel_dtype(x.scalar_type());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const bool want_w = output_mask[1] && in.weight.defined();
  const bool want_x_coefs = output_mask[0] && batch_stats;
  const bool need_sums = want_w || output_mask[2] || want_x_coefs;
  // The group index only for the reductions.
  const DeviceGroups dg = groups_on_device(in.groups, num_groups, x.device(), /*with_index=*/need_sums, "groups",
                                           "num_groups");
  const at::Tensor& groups = dg.labels;

  // Both come back in the accumulate dtype; the caller casts to the parameters'.
  at::Tensor grad_w = want_w ? at::empty({v.c}, acc_opts) : at::empty({0}, acc_opts);
  at::Tensor grad_b = output_mask[2] ? at::empty({v.c}, acc_opts) : at::empty({0}, acc_opts);
  at::Tensor coef_a, coef_b;
  if (want_x_coefs) {
    coef_a = at::empty({num_groups, v.c}, acc_opts);
    coef_b = at::empty({num_groups, v.c}, acc_opts);
  }
  if (need_sums) {
    const int64_t parts = cuda::grouped_batch_norm_parts(v.n, v.c, v.s, xs.s == 1 && gs.s == 1);
    const int64_t units = x.numel() > 0 ? v.n * parts * v.c : 0;
    at::Tensor workspace = at::empty({2 * units + 2 * num_groups * v.c}, x.options().dtype(at::kDouble));
    C10_CUDA_CHECK(cuda::launch_grouped_batch_norm_backward_reduce(
        dtype, grad.const_data_ptr(), gs, x.const_data_ptr(), xs, v.n, v.c, v.s, groups.const_data_ptr<int64_t>(),
        dg.index.const_data_ptr<int64_t>(), num_groups, parts, mean.const_data_ptr(), invstd.const_data_ptr(),
        workspace.mutable_data_ptr<double>(),
        want_x_coefs ? coef_a.mutable_data_ptr() : nullptr, want_x_coefs ? coef_b.mutable_data_ptr() : nullptr,
        want_w ? grad_w.mutable_data_ptr() : nullptr, output_mask[2] ? grad_b.mutable_data_ptr() : nullptr,
        stream));
  }
  if (!output_mask[0]) return {at::empty({0}, x.options()), grad_w, grad_b};

  at::Tensor grad_x = empty_like_ncs(x, v.c);
  if (x.numel() > 0) {
    C10_CUDA_CHECK(cuda::launch_grouped_batch_norm_backward_input(
        dtype, grad.const_data_ptr(), gs, x.const_data_ptr(), xs, grad_x.mutable_data_ptr(), ncs_strides(grad_x),
        v.n, v.c, v.s, groups.const_data_ptr<int64_t>(), mean.const_data_ptr(), invstd.const_data_ptr(),
        in.weight.defined() ? in.weight.const_data_ptr() : nullptr,
        batch_stats ? coef_a.const_data_ptr() : nullptr, batch_stats ? coef_b.const_data_ptr() : nullptr, stream));
  }
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CUDA, m) {
  m.impl("grouped_batch_norm", &grouped_batch_norm_cuda);
  m.impl("_grouped_batch_norm_backward", &grouped_batch_norm_backward_cuda);
}

}  // namespace pynas
