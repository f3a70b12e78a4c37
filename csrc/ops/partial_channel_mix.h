#pragma once
#include <ATen/ATen.h>

#include <vector>

namespace pynas {

struct PartialChannelMixInputs {
  std::vector<at::Tensor> ys;  // one shared [N, C/groups, *] layout
  at::Tensor weights;          // accumulate dtype, contiguous, [K] or [N, K]
  at::Tensor x;                // [N, C, *] with mergeable trailing dims
};

// Validates the arguments of partial_channel_mix and lays them out for the
// kernels (shared by the CPU and CUDA backends).
PartialChannelMixInputs check_partial_channel_mix(at::TensorList ys, const at::Tensor& weights, const at::Tensor& x,
                                                  int64_t groups);

}  // namespace pynas
