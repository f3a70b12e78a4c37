// Argument checks of partial_channel_mix, shared by the CPU and CUDA backends.
#include "partial_channel_mix.h"

#include "common.h"

namespace pynas {

PartialChannelMixInputs check_partial_channel_mix(at::TensorList ys_in, const at::Tensor& weights,
                                                  const at::Tensor& x_in, int64_t groups) {
  TORCH_CHECK_TYPE(x_in.defined(), "x is undefined");
  TORCH_CHECK_VALUE(x_in.dim() >= 2, "x must have shape [N, C, *], got ", x_in.sizes());
  TORCH_CHECK_VALUE(groups >= 1, "groups must be at least 1, got ", groups);
  TORCH_CHECK_VALUE(x_in.size(1) % groups == 0, "x has ", x_in.size(1), " channels, which groups = ", groups,
                    " does not divide");
  check_same_inputs(ys_in, "ys");
  TORCH_CHECK_TYPE(ys_in[0].scalar_type() == x_in.scalar_type(), "ys have dtype ", ys_in[0].scalar_type(),
                   " but x has ", x_in.scalar_type());
  TORCH_CHECK_VALUE(ys_in[0].device() == x_in.device(), "ys are on ", ys_in[0].device(), " but x is on ",
                    x_in.device());
  std::vector<int64_t> expect(x_in.sizes().begin(), x_in.sizes().end());
  expect[1] = x_in.size(1) / groups;
  TORCH_CHECK_VALUE(ys_in[0].sizes() == at::IntArrayRef(expect), "ys must have shape ", at::IntArrayRef(expect),
                    " (x's shape with C / groups channels), got ", ys_in[0].sizes());
  PartialChannelMixInputs in;
  in.weights = checked_weights(weights, static_cast<int64_t>(ys_in.size()), ys_in[0], "ys[0]");
  in.x = mergeable_ncs(x_in);
  // The ys share one layout so the kernel needs one set of strides for them.
  std::vector<at::Tensor> ys;
  const at::Tensor y0 = mergeable_ncs(ys_in[0]);
  for (const auto& y : ys_in) {
    if (y.strides() == y0.strides() && y.is_non_overlapping_and_dense()) {
      ys.push_back(y);
    } else {
      at::Tensor copy = at::empty_strided(y0.sizes(), y0.strides(), y0.options());
      copy.copy_(y);
      ys.push_back(copy);
    }
  }
  in.ys = std::move(ys);
  return in;
}

}  // namespace pynas
