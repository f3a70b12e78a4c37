// CPU host function of path_dispatch: each row of x is copied once, straight
// into its bucket (kernels_impl.h). The copy is by bytes, so every dtype works.
#include <torch/library.h>

#include "../ops/common.h"
#include "../ops/path_gather.h"
#include "kernels.h"

namespace pynas {
namespace {

std::vector<at::Tensor> path_dispatch_cpu(const at::Tensor& x, const at::Tensor& choices, int64_t num_choices) {
  TORCH_CHECK_TYPE(x.defined(), "x is undefined");
  TORCH_CHECK_VALUE(x.dim() >= 1, "x must have a batch dimension, got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.is_cpu(), "x must be on the CPU for the CPU kernel");
  const at::Tensor c = checked_choices(choices, x.size(0), num_choices, x.device(), "choices", "num_choices");
  const PathPlan plan = plan_paths(c, num_choices);
  PathDispatchInputs in = prepare_path_dispatch(x, c, num_choices, plan.counts);
  const int64_t rows = in.x.size(0);
  const int64_t row_bytes = rows > 0 ? in.x.numel() / rows * in.x.element_size() : 0;
  if (row_bytes == 0) return in.outputs;
  cpu::PathRows args;
  for (auto& out : in.outputs) args.buckets.push_back(out.data_ptr());
  args.choices = c.const_data_ptr<int64_t>();
  args.rank = plan.rank.const_data_ptr<int64_t>();
  args.dense = const_cast<void*>(in.x.const_data_ptr());  // read only
  args.rows = rows;
  args.row_bytes = row_bytes;
  cpu::kernels().path_dispatch_rows(args);
  return in.outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CPU, m) { m.impl("path_dispatch", &path_dispatch_cpu); }

}  // namespace pynas
