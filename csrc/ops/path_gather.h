// Argument checks of path_dispatch and path_combine, shared by the backends.
#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace pynas {

struct PathDispatchInputs {
  at::Tensor x;        // row-dense [N, *]
  at::Tensor choices;  // int64 [N], on the CPU or x's device
  std::vector<at::Tensor> outputs;  // bucket k: [count_k, *] with x's inner layout
};

// With choices on the CPU: counts and per-row ranks come from the host.
PathDispatchInputs prepare_path_dispatch(const at::Tensor& x, const at::Tensor& choices, int64_t num_choices,
                                         const std::vector<int64_t>& counts);

struct PathCombineInputs {
  std::vector<at::Tensor> ys;  // one row-dense inner layout
  at::Tensor choices;          // int64 [N]
  at::Tensor residual;         // undefined, or laid out like out
  at::Tensor out;              // [N, *ys[0].shape[1:]]
};

// Checks everything that needs no bucket counts.
PathCombineInputs prepare_path_combine(at::TensorList ys, const at::Tensor& choices,
                                       const c10::optional<at::Tensor>& residual);

// Checks that ys[k] has counts[k] rows.
void check_bucket_sizes(at::TensorList ys, const std::vector<int64_t>& counts);

}  // namespace pynas
