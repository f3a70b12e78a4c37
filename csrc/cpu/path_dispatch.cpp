// CPU kernel of path_dispatch: each row of x is copied once, straight into
// its bucket. The copy is by bytes, so every dtype works.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>

#include "../ops/common.h"
#include "../ops/path_gather.h"

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
  const char* src = static_cast<const char*>(in.x.const_data_ptr());
  std::vector<char*> dst;
  for (auto& out : in.outputs) dst.push_back(static_cast<char*>(out.data_ptr()));
  const int64_t* cp = c.const_data_ptr<int64_t>();
  const int64_t* rp = plan.rank.const_data_ptr<int64_t>();
  // One thread under ~1 MB: the fork and join of the pool cost more than a second core gains.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 20) / row_bytes);
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) std::memcpy(dst[cp[i]] + rp[i] * row_bytes, src + i * row_bytes, row_bytes);
  });
  return in.outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CPU, m) { m.impl("path_dispatch", &path_dispatch_cpu); }

}  // namespace pynas
