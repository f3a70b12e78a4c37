#include "grouped_batch_norm.h"

#include "common.h"

namespace pynas {

static at::Tensor checked_affine(const c10::optional<at::Tensor>& t, const char* name, const at::Tensor& x) {
  if (!t.has_value() || !t->defined()) return at::Tensor();
  TORCH_CHECK_TYPE(at::isFloatingType(t->scalar_type()), name, " must be floating, got ", t->scalar_type());
  TORCH_CHECK_VALUE(t->dim() == 1 && t->size(0) == x.size(1), name, " must have shape [C] = [", x.size(1),
                    "], got ", t->sizes());
  TORCH_CHECK_VALUE(t->device() == x.device(), name, " is on ", t->device(), " but x is on ", x.device());
  return t->to(accumulate_type(x.scalar_type())).contiguous();
}

GroupedBatchNormInputs check_grouped_batch_norm(const at::Tensor& x, const at::Tensor& groups, int64_t num_groups,
                                                const c10::optional<at::Tensor>& weight,
                                                const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK_TYPE(x.defined(), "x is undefined");
  TORCH_CHECK_VALUE(x.dim() >= 2, "x must have shape [N, C, *], got ", x.sizes());
  const auto t = x.scalar_type();
  TORCH_CHECK_TYPE(t == at::kDouble || t == at::kFloat || t == at::kHalf || t == at::kBFloat16,
                   "x must be float64, float32, float16 or bfloat16, got ", t);
  GroupedBatchNormInputs in;
  in.groups = checked_choices(groups, x.size(0), num_groups, x.device(), "groups", "num_groups");
  in.x = mergeable_ncs(x);
  in.weight = checked_affine(weight, "weight", x);
  in.bias = checked_affine(bias, "bias", x);
  return in;
}

at::Tensor checked_group_stats(const at::Tensor& t, const char* name, int64_t num_groups, const at::Tensor& x) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name, " must be floating, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == num_groups && t.size(1) == x.size(1), name,
                    " must have shape [num_groups, C] = [", num_groups, ", ", x.size(1), "], got ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == x.device(), name, " is on ", t.device(), " but x is on ", x.device());
  return t.to(accumulate_type(x.scalar_type())).contiguous();
}

}  // namespace pynas
