// CUDA glue of path_dispatch: the host logic of csrc/cpu/path_dispatch.cpp
// (same checks, layouts, outputs) around the kernel of path_gather_kernel.cu.
//
// Synchronization: none when choices are on the CPU (the plan is computed on
// the host and uploaded with a non-blocking copy from pinned memory); one
// when choices are on the device (the bucket sizes must reach the host to
// allocate the buckets; see plan_paths_cuda).
#include <torch/library.h>

#include <vector>

#include "../ops/common.h"
#include "../ops/path_gather.h"
#include "glue_utils.h"
#include "kernels.h"

namespace pynas {
namespace {

using namespace cuda_glue;

std::vector<at::Tensor> path_dispatch_cuda(const at::Tensor& x, const at::Tensor& choices, int64_t num_choices) {
  TORCH_CHECK_TYPE(x.defined(), "x is undefined");
  TORCH_CHECK_VALUE(x.dim() >= 1, "x must have a batch dimension, got shape ", x.sizes());
  check_cuda_tensor(x, "x");
  c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor c = checked_choices(choices, x.size(0), num_choices, x.device(), "choices", "num_choices");
  const DevicePathPlan plan = plan_paths_cuda(c, num_choices, x.device(), "choices", "num_choices");
  PathDispatchInputs in = prepare_path_dispatch(x, c, num_choices, plan.counts);
  const int64_t rows = in.x.size(0);
  const int64_t row_bytes = rows > 0 ? in.x.numel() / rows * static_cast<int64_t>(in.x.element_size()) : 0;
  if (row_bytes == 0) return in.outputs;
  std::vector<void*> dst;
  dst.reserve(in.outputs.size());
  for (auto& out : in.outputs) dst.push_back(out.data_ptr());
  C10_CUDA_CHECK(cuda::launch_path_dispatch(in.x.const_data_ptr(), rows, row_bytes, plan.plan.const_data_ptr<int64_t>(),
                                            dst.data(), num_choices, c10::cuda::getCurrentCUDAStream()));
  return in.outputs;
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CUDA, m) { m.impl("path_dispatch", &path_dispatch_cuda); }

}  // namespace pynas
