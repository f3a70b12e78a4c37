#include "path_gather.h"

#include "common.h"

namespace pynas {

PathDispatchInputs prepare_path_dispatch(const at::Tensor& x, const at::Tensor& choices, int64_t num_choices,
                                         const std::vector<int64_t>& counts) {
  PathDispatchInputs in;
  in.x = to_common_row_layout({x}, x)[0];
  for (int64_t k = 0; k < num_choices; ++k) in.outputs.push_back(empty_rows_like(in.x, counts[k]));
  in.choices = choices;
  return in;
}

PathCombineInputs prepare_path_combine(at::TensorList ys, const at::Tensor& choices,
                                       const c10::optional<at::Tensor>& residual) {
  TORCH_CHECK_VALUE(!ys.empty(), "ys must hold at least one tensor, got an empty list");
  const at::Tensor& y0 = ys[0];
  TORCH_CHECK_VALUE(y0.dim() >= 1, "ys[0] must have a batch dimension, got shape ", y0.sizes());
  for (size_t k = 0; k < ys.size(); ++k) {
    const at::Tensor& y = ys[k];
    TORCH_CHECK_VALUE(y.device() == y0.device(), "ys[", k, "] is on ", y.device(), " but ys[0] is on ", y0.device());
    TORCH_CHECK_TYPE(y.scalar_type() == y0.scalar_type(), "ys[", k, "] has dtype ", y.scalar_type(),
                     " but ys[0] has ", y0.scalar_type());
    TORCH_CHECK_VALUE(y.dim() == y0.dim() && y.sizes().slice(1) == y0.sizes().slice(1), "ys[", k,
                      "] has shape ", y.sizes(), " but every bucket must be [rows, ", y0.sizes().slice(1), "]");
  }
  PathCombineInputs in;
  const int64_t n = choices.defined() && choices.dim() == 1 ? choices.size(0) : -1;
  in.choices = checked_choices(choices, n, static_cast<int64_t>(ys.size()), y0.device(), "choices",
                               "len(ys)");
  // The first bucket with rows fixes the layout: an empty bucket's strides say nothing (an op on an
  // empty tensor returns it contiguous), and would turn a channels-last output NCHW.
  size_t proto = 0;
  while (proto + 1 < ys.size() && ys[proto].size(0) == 0) ++proto;
  in.ys = to_common_row_layout(ys, ys[proto]);
  in.out = empty_rows_like(in.ys[proto], n);
  if (residual.has_value() && residual->defined()) {
    const at::Tensor& r = *residual;
    TORCH_CHECK_VALUE(r.sizes() == in.out.sizes(), "residual must have shape ", in.out.sizes(), ", got ", r.sizes());
    TORCH_CHECK_TYPE(r.scalar_type() == y0.scalar_type(), "residual has dtype ", r.scalar_type(), " but ys have ",
                     y0.scalar_type());
    TORCH_CHECK_VALUE(r.device() == y0.device(), "residual is on ", r.device(), " but ys are on ", y0.device());
    TORCH_CHECK_TYPE(at::isFloatingType(r.scalar_type()), "residual must be floating, got ", r.scalar_type());
    in.residual = to_common_row_layout({r}, in.out)[0];
  }
  return in;
}

void check_bucket_sizes(at::TensorList ys, const std::vector<int64_t>& counts) {
  for (size_t k = 0; k < ys.size(); ++k) {
    TORCH_CHECK_VALUE(ys[k].size(0) == counts[k], "ys[", k, "] has ", ys[k].size(0), " rows but choices select ", k,
                      " for ", counts[k], " samples");
  }
}

}  // namespace pynas
