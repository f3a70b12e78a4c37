#include "common.h"

#include <c10/util/irange.h>

#include <algorithm>
#include <utility>

namespace pynas {

at::ScalarType accumulate_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

static bool supported_float(at::ScalarType t) {
  return t == at::kDouble || t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

void check_same_inputs(at::TensorList xs, const char* name) {
  TORCH_CHECK_VALUE(!xs.empty(), name, " must hold at least one tensor, got an empty list");
  const at::Tensor& x0 = xs[0];
  TORCH_CHECK_TYPE(supported_float(x0.scalar_type()), name,
                   "[0] must be float64, float32, float16 or bfloat16, got ", x0.scalar_type());
  for (const auto k : c10::irange(xs.size())) {
    const at::Tensor& x = xs[k];
    TORCH_CHECK_TYPE(x.defined(), name, "[", k, "] is undefined");
    TORCH_CHECK_VALUE(x.device() == x0.device(), name, "[", k, "] is on ", x.device(), " but ", name,
                      "[0] is on ", x0.device(), "; all must be on one device");
    TORCH_CHECK_TYPE(x.scalar_type() == x0.scalar_type(), name, "[", k, "] has dtype ", x.scalar_type(),
                     " but ", name, "[0] has ", x0.scalar_type(), "; all must have one dtype");
    TORCH_CHECK_VALUE(x.sizes() == x0.sizes(), name, "[", k, "] has shape ", x.sizes(), " but ", name,
                      "[0] has ", x0.sizes(), "; all must have one shape");
  }
}

at::Tensor checked_weights(const at::Tensor& weights, int64_t k, const at::Tensor& like, const char* like_name) {
  TORCH_CHECK_TYPE(weights.defined(), "weights is undefined");
  TORCH_CHECK_TYPE(at::isFloatingType(weights.scalar_type()), "weights must be a floating tensor, got ",
                   weights.scalar_type());
  TORCH_CHECK_VALUE(weights.device() == like.device(), "weights is on ", weights.device(), " but ", like_name,
                    " is on ", like.device());
  if (weights.dim() == 1) {
    TORCH_CHECK_VALUE(weights.size(0) == k, "weights must have shape [K] or [N, K] with K = ", k,
                      " (the number of inputs), got ", weights.sizes());
  } else {
    TORCH_CHECK_VALUE(weights.dim() == 2, "weights must have shape [K] or [N, K], got ", weights.sizes());
    TORCH_CHECK_VALUE(like.dim() >= 1, "per-sample weights [N, K] need inputs with a batch dimension, ",
                      like_name, " has shape ", like.sizes());
    TORCH_CHECK_VALUE(weights.size(0) == like.size(0) && weights.size(1) == k,
                      "weights must have shape [K] or [N, K] with N = ", like.size(0), " and K = ", k, ", got ",
                      weights.sizes());
  }
  return weights.to(accumulate_type(like.scalar_type())).contiguous();
}

WeightedSumBackwardInputs check_weighted_sum_backward(const at::Tensor& grad, at::TensorList xs,
                                                      const at::Tensor& weights, const c10::List<bool>& xs_need_grad,
                                                      bool weights_need_grad) {
  check_same_inputs(xs, "xs");
  const int64_t k_count = static_cast<int64_t>(xs.size());
  TORCH_CHECK_VALUE(static_cast<int64_t>(xs_need_grad.size()) == k_count, "xs_need_grad must have ", k_count,
                    " entries, got ", xs_need_grad.size());
  TORCH_CHECK_TYPE(grad.defined(), "grad is undefined");
  TORCH_CHECK_VALUE(grad.sizes() == xs[0].sizes(), "grad must have shape ", xs[0].sizes(), ", got ", grad.sizes());
  TORCH_CHECK_VALUE(grad.device() == xs[0].device(), "grad is on ", grad.device(), " but xs are on ",
                    xs[0].device());
  WeightedSumBackwardInputs in;
  in.weights = checked_weights(weights, k_count, xs[0], "xs[0]");
  const at::Tensor g = grad.to(xs[0].scalar_type());
  in.grad = to_sample_blocks({g}, g);
  if (weights_need_grad) in.xs = to_sample_blocks(xs, in.grad.tensors[0]);
  return in;
}

// Whether the dims of sizes/strides (size-1 dims ignored) tile one dense block
// in some order.
static bool dense_block(at::IntArrayRef sizes, at::IntArrayRef strides) {
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size)
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (sizes[d] == 0) return true;
    if (sizes[d] != 1) dims.emplace_back(strides[d], sizes[d]);
  }
  std::sort(dims.begin(), dims.end());
  int64_t expected = 1;
  for (const auto& dim : dims) {
    if (dim.first != expected) return false;
    expected *= dim.second;
  }
  return true;
}

static int64_t inner_numel(const at::Tensor& t) {
  int64_t inner = 1;
  for (int64_t d = 1; d < t.dim(); ++d) inner *= t.size(d);
  return inner;
}

bool is_sample_blocked(const at::Tensor& t) {
  if (t.dim() == 0 || t.numel() == 0) return true;
  if (!dense_block(t.sizes().slice(1), t.strides().slice(1))) return false;
  return t.size(0) == 1 || t.stride(0) >= inner_numel(t);
}

// Whether a and b (one shape) place the elements of a sample alike.
static bool same_inner_layout(const at::Tensor& a, const at::Tensor& b) {
  for (int64_t d = 1; d < a.dim(); ++d) {
    if (a.size(d) != 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

static bool usable_proto(const at::Tensor& proto) {
  return proto.dim() > 0 && proto.numel() > 0 && is_sample_blocked(proto);
}

at::Tensor empty_sample_blocks_like(const at::Tensor& proto) {
  if (!usable_proto(proto)) return at::empty(proto.sizes(), proto.options());
  std::vector<int64_t> strides(proto.strides().begin(), proto.strides().end());
  strides[0] = inner_numel(proto);
  return at::empty_strided(proto.sizes(), strides, proto.options());
}

SampleBlocks to_sample_blocks(at::TensorList ts, const at::Tensor& proto) {
  SampleBlocks out;
  const bool proto_ok = usable_proto(proto);
  if (proto.dim() > 0) {
    out.samples = proto.size(0);
    out.inner = inner_numel(proto);
  }
  for (const auto& t : ts) {
    const bool keep = t.dim() == 0 || t.numel() == 0 ||
                      (is_sample_blocked(t) && (proto_ok ? same_inner_layout(t, proto) : t.is_contiguous()));
    at::Tensor laid = t;
    if (!keep) {
      laid = proto_ok ? empty_sample_blocks_like(proto) : at::empty(t.sizes(), t.options());
      laid.copy_(t);
    }
    out.sample_strides.push_back(laid.dim() == 0 || laid.size(0) <= 1 ? out.inner : laid.stride(0));
    out.tensors.push_back(laid);
  }
  return out;
}

// Whether the trailing dims (2 on) of size above 1 nest, each stride the
// product of the next one's stride and size, so that they read as one axis of
// stride stride_s. Size-1 dims are skipped: they must not let the dims around
// them merge when those do not nest (x.transpose(2, 3).unsqueeze(3)).
static bool trailing_dims_merge(const at::Tensor& t) {
  int64_t inner = -1;  // the next dim inwards of size above 1
  for (int64_t d = t.dim() - 1; d >= 2; --d) {
    if (t.size(d) == 1) continue;
    if (inner >= 0 && t.stride(d) != t.stride(inner) * t.size(inner)) return false;
    inner = d;
  }
  return true;
}

at::Tensor mergeable_ncs(const at::Tensor& t) {
  if (t.is_non_overlapping_and_dense() && trailing_dims_merge(t)) return t;
  return t.contiguous();
}

NCSView ncs_view(const at::Tensor& t) {
  NCSView v;
  v.n = t.size(0);
  v.c = t.size(1);
  v.stride_n = t.stride(0);
  v.stride_c = t.stride(1);
  v.s = 1;
  v.stride_s = 1;
  // The innermost non-trivial trailing dim carries the spatial stride.
  for (int64_t d = t.dim() - 1; d >= 2; --d) {
    if (t.size(d) != 1) {
      v.stride_s = t.stride(d);
      break;
    }
  }
  for (int64_t d = 2; d < t.dim(); ++d) v.s *= t.size(d);
  return v;
}

at::Tensor empty_like_ncs(const at::Tensor& like, int64_t c) {
  std::vector<int64_t> sizes(like.sizes().begin(), like.sizes().end());
  sizes[1] = c;
  const bool channels_last = like.dim() >= 3 && like.size(1) > 1 && like.stride(1) == 1;
  if (channels_last && like.dim() == 4) {
    return at::empty(sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast));
  }
  if (channels_last && like.dim() == 5) {
    return at::empty(sizes, like.options().memory_format(at::MemoryFormat::ChannelsLast3d));
  }
  return at::empty(sizes, like.options());
}

at::Tensor checked_choices(const at::Tensor& choices, int64_t n, int64_t num_choices, const at::Device& device,
                           const char* name, const char* range_name) {
  TORCH_CHECK_TYPE(choices.defined(), name, " is undefined");
  TORCH_CHECK_TYPE(at::isIntegralType(choices.scalar_type(), /*includeBool=*/false), name,
                   " must be an integer tensor, got ", choices.scalar_type());
  TORCH_CHECK_VALUE(choices.dim() == 1, name, " must be 1-D (one entry per sample), got shape ", choices.sizes());
  TORCH_CHECK_VALUE(choices.size(0) == n, name, " has ", choices.size(0), " entries but the batch has ", n,
                    " samples");
  TORCH_CHECK_VALUE(num_choices >= 1, range_name, " must be at least 1, got ", num_choices);
  TORCH_CHECK_VALUE(choices.is_cpu() || choices.device() == device, name, " must be on the CPU or on ", device,
                    ", got ", choices.device());
  // Kernels read the choices as a dense int64 array: a strided view (a column of a
  // [N, L] path table) must be copied, not read with the wrong stride.
  at::Tensor c = choices.to(at::kLong).contiguous();
  if (c.is_cpu() && n > 0) {
    const int64_t lo = c.min().item<int64_t>();
    const int64_t hi = c.max().item<int64_t>();
    TORCH_CHECK_INDEX(lo >= 0 && hi < num_choices, name, " must lie in [0, ", range_name, " = ", num_choices,
                      "), got values in [", lo, ", ", hi, "]");
  }
  return c;
}

PathPlan plan_paths(const at::Tensor& choices_cpu, int64_t num_choices) {
  PathPlan plan;
  plan.counts.assign(num_choices, 0);
  const at::Tensor c = choices_cpu.contiguous();
  const int64_t n = c.numel();
  plan.rank = at::empty({n}, c.options());
  const int64_t* cp = c.data_ptr<int64_t>();
  int64_t* rp = plan.rank.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) rp[i] = plan.counts[cp[i]]++;
  return plan;
}

static bool row_dense(const at::Tensor& t) {
  if (!t.is_non_overlapping_and_dense()) return false;
  if (t.dim() == 0 || t.size(0) <= 1 || t.numel() == 0) return true;
  return t.stride(0) == t.numel() / t.size(0);
}

at::Tensor empty_rows_like(const at::Tensor& like, int64_t rows) {
  std::vector<int64_t> sizes(like.sizes().begin(), like.sizes().end());
  sizes[0] = rows;
  if (!row_dense(like)) return at::empty(sizes, like.options());
  std::vector<int64_t> strides(like.strides().begin(), like.strides().end());
  int64_t row = 1;
  for (size_t d = 1; d < sizes.size(); ++d) row *= sizes[d];
  strides[0] = row;
  // A size-1 inner dim may carry any stride; empty_strided keeps it harmless.
  return at::empty_strided(sizes, strides, like.options());
}

std::vector<at::Tensor> to_common_row_layout(at::TensorList ys, const at::Tensor& like) {
  // `like` fixes the inner layout; each y is copied only when its own differs.
  const at::Tensor proto = row_dense(like) ? like : like.contiguous();
  std::vector<at::Tensor> out;
  out.reserve(ys.size());
  for (const auto& y : ys) {
    at::Tensor target = empty_rows_like(proto, y.size(0));
    if (row_dense(y) && (y.numel() == 0 || y.strides().slice(1) == target.strides().slice(1))) {
      out.push_back(y);
    } else {
      target.copy_(y);
      out.push_back(target);
    }
  }
  return out;
}

}  // namespace pynas
