// Argument checks of grouped_batch_norm, shared by the CPU and CUDA backends.
#pragma once
#include <ATen/ATen.h>

namespace pynas {

struct GroupedBatchNormInputs {
  at::Tensor x;       // [N, C, *] with mergeable trailing dims
  at::Tensor groups;  // int64 [N], on the CPU or x's device
  at::Tensor weight;  // accumulate dtype [C], or undefined
  at::Tensor bias;    // accumulate dtype [C], or undefined
};

GroupedBatchNormInputs check_grouped_batch_norm(const at::Tensor& x, const at::Tensor& groups, int64_t num_groups,
                                                const c10::optional<at::Tensor>& weight,
                                                const c10::optional<at::Tensor>& bias);

// mean/var (or invstd) of shape [num_groups, C]; returned in the accumulate dtype.
at::Tensor checked_group_stats(const at::Tensor& t, const char* name, int64_t num_groups, const at::Tensor& x);

}  // namespace pynas
