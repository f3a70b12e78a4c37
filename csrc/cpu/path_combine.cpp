// CPU host function of path_combine: row i of the output is read from its bucket,
// plus the residual row when given (a vectorized kernel, kernels_impl.h), in
// one pass.
#include <torch/library.h>

#include "../ops/common.h"
#include "../ops/path_gather.h"
#include "kernels.h"

namespace pynas {
namespace {

at::Tensor path_combine_cpu(at::TensorList ys, const at::Tensor& choices, const c10::optional<at::Tensor>& residual) {
  PathCombineInputs in = prepare_path_combine(ys, choices, residual);
  TORCH_CHECK_VALUE(in.out.is_cpu(), "ys must be on the CPU for the CPU kernel");
  const PathPlan plan = plan_paths(in.choices, static_cast<int64_t>(ys.size()));
  check_bucket_sizes(in.ys, plan.counts);
  const int64_t rows = in.out.size(0);
  if (in.out.numel() == 0) return in.out;
  const int64_t row_numel = in.out.numel() / rows;
  const int64_t* cp = in.choices.const_data_ptr<int64_t>();
  const int64_t* rp = plan.rank.const_data_ptr<int64_t>();
  if (!in.residual.defined()) {
    cpu::PathRows args;
    for (const auto& y : in.ys) args.buckets.push_back(const_cast<void*>(y.const_data_ptr()));  // read only
    args.choices = cp;
    args.rank = rp;
    args.dense = in.out.mutable_data_ptr();
    args.rows = rows;
    args.row_bytes = row_numel * in.out.element_size();
    cpu::kernels().path_combine_rows(args);
    return in.out;
  }
  cpu::PathCombineResidual args;
  for (const auto& y : in.ys) args.ys.push_back(y.const_data_ptr());
  args.choices = cp;
  args.rank = rp;
  args.residual = in.residual.const_data_ptr();
  args.out = in.out.mutable_data_ptr();
  args.rows = rows;
  args.row_numel = row_numel;
  cpu::kernels().path_combine_residual(in.out.scalar_type(), args);
  return in.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CPU, m) { m.impl("path_combine", &path_combine_cpu); }

}  // namespace pynas
