// CUDA glue of path_combine: the host logic of csrc/cpu/path_combine.cpp
// (same checks, layouts, outputs) around the kernels of path_gather_kernel.cu.
//
// Synchronization: none when choices are on the CPU; one when they are on
// the device (the bucket sizes are checked against ys on the host; see
// plan_paths_cuda).
#include <torch/library.h>

#include <vector>

#include "../ops/common.h"
#include "../ops/path_gather.h"
#include "glue_utils.h"
#include "kernels.h"

namespace pynas {
namespace {

using namespace cuda_glue;

at::Tensor path_combine_cuda(at::TensorList ys, const at::Tensor& choices, const c10::optional<at::Tensor>& residual) {
  PathCombineInputs in = prepare_path_combine(ys, choices, residual);
  check_cuda_tensor(in.out, "ys");
  c10::cuda::CUDAGuard guard(in.out.device());
  const int64_t k_count = static_cast<int64_t>(ys.size());
  const DevicePathPlan plan = plan_paths_cuda(in.choices, k_count, in.out.device(), "choices", "len(ys)");
  check_bucket_sizes(in.ys, plan.counts);
  const int64_t rows = in.out.size(0);
  if (in.out.numel() == 0) return in.out;
  const int64_t row_numel = in.out.numel() / rows;
  std::vector<const void*> src;
  src.reserve(in.ys.size());
  for (const auto& y : in.ys) src.push_back(y.const_data_ptr());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  if (!in.residual.defined()) {
    const int64_t row_bytes = row_numel * static_cast<int64_t>(in.out.element_size());
    C10_CUDA_CHECK(cuda::launch_path_combine(src.data(), k_count, plan.plan.const_data_ptr<int64_t>(), rows, row_bytes,
                                             in.out.mutable_data_ptr(), stream));
    return in.out;
  }
  C10_CUDA_CHECK(cuda::launch_path_combine_residual(kernel_dtype(in.out.scalar_type()), src.data(), k_count,
                                                    plan.plan.const_data_ptr<int64_t>(), rows, row_numel,
                                                    in.residual.const_data_ptr(), in.out.mutable_data_ptr(), stream));
  return in.out;
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CUDA, m) { m.impl("path_combine", &path_combine_cuda); }

}  // namespace pynas
