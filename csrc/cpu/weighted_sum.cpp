// CPU kernels of weighted_sum: one pass that reads each input once and writes
// the output once (eager PyTorch makes 2K passes), and a fused backward.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../ops/common.h"

namespace pynas {
namespace {

// Elements per work item. Reductions are summed per chunk and then over
// chunks in a fixed order, so results do not depend on the thread count.
constexpr int64_t kChunk = 4096;
constexpr int64_t kTile = 256;

// The flat range splits into `samples` segments of `inner` elements each
// (samples = 1 for shared weights) and each segment into chunks.
struct ChunkGrid {
  int64_t samples, inner, per_sample;
  int64_t count() const { return samples * per_sample; }
};

ChunkGrid make_grid(int64_t numel, bool per_sample_weights, int64_t n) {
  ChunkGrid g;
  g.samples = per_sample_weights ? n : 1;
  g.inner = g.samples > 0 ? numel / g.samples : 0;
  g.per_sample = (g.inner + kChunk - 1) / kChunk;
  return g;
}

template <typename scalar_t>
void forward_kernel(const std::vector<const scalar_t*>& xs, const at::opmath_type<scalar_t>* w, const ChunkGrid& grid,
                    scalar_t* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k_count = static_cast<int64_t>(xs.size());
  at::parallel_for(0, grid.count(), 1, [&](int64_t begin, int64_t end) {
    acc_t buf[kTile];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t sample = item / grid.per_sample;
      const int64_t lo = sample * grid.inner + (item % grid.per_sample) * kChunk;
      const int64_t hi = std::min(lo + kChunk, (sample + 1) * grid.inner);
      const acc_t* ws = w + sample * k_count;
      for (int64_t t = lo; t < hi; t += kTile) {
        const int64_t len = std::min(kTile, hi - t);
        for (int64_t j = 0; j < len; ++j) buf[j] = acc_t(0);
        for (int64_t k = 0; k < k_count; ++k) {
          const acc_t wk = ws[k];
          const scalar_t* x = xs[k] + t;
          for (int64_t j = 0; j < len; ++j) buf[j] += wk * static_cast<acc_t>(x[j]);
        }
        for (int64_t j = 0; j < len; ++j) out[t + j] = static_cast<scalar_t>(buf[j]);
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad, const std::vector<const scalar_t*>& xs,
                     const std::vector<scalar_t*>& grad_xs,  // nullptr where not needed
                     const at::opmath_type<scalar_t>* w, const ChunkGrid& grid,
                     at::opmath_type<scalar_t>* partial_w) {  // [chunks, K] or nullptr
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k_count = static_cast<int64_t>(xs.size());
  at::parallel_for(0, grid.count(), 1, [&](int64_t begin, int64_t end) {
    acc_t g[kTile];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t sample = item / grid.per_sample;
      const int64_t lo = sample * grid.inner + (item % grid.per_sample) * kChunk;
      const int64_t hi = std::min(lo + kChunk, (sample + 1) * grid.inner);
      const acc_t* ws = w + sample * k_count;
      acc_t* pw = partial_w ? partial_w + item * k_count : nullptr;
      if (pw) std::fill(pw, pw + k_count, acc_t(0));
      for (int64_t t = lo; t < hi; t += kTile) {
        const int64_t len = std::min(kTile, hi - t);
        for (int64_t j = 0; j < len; ++j) g[j] = static_cast<acc_t>(grad[t + j]);
        for (int64_t k = 0; k < k_count; ++k) {
          if (scalar_t* gx = grad_xs[k]) {
            const acc_t wk = ws[k];
            for (int64_t j = 0; j < len; ++j) gx[t + j] = static_cast<scalar_t>(wk * g[j]);
          }
          if (pw) {
            const scalar_t* x = xs[k] + t;
            acc_t dot = 0;
            for (int64_t j = 0; j < len; ++j) dot += g[j] * static_cast<acc_t>(x[j]);
            pw[k] += dot;
          }
        }
      }
    }
  });
}

at::Tensor weighted_sum_cpu(at::TensorList xs_in, const at::Tensor& weights) {
  check_same_inputs(xs_in, "xs");
  TORCH_CHECK_VALUE(xs_in[0].is_cpu(), "xs must be on the CPU for the CPU kernel");
  const int64_t k_count = static_cast<int64_t>(xs_in.size());
  const at::Tensor w = checked_weights(weights, k_count, xs_in[0], "xs[0]");
  const std::vector<at::Tensor> xs = to_common_layout(xs_in);
  at::Tensor out = at::empty_strided(xs[0].sizes(), xs[0].strides(), xs[0].options());
  if (out.numel() == 0) return out;
  const ChunkGrid grid = make_grid(out.numel(), w.dim() == 2, xs[0].dim() > 0 ? xs[0].size(0) : 1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "weighted_sum_cpu", [&] {
    std::vector<const scalar_t*> ptrs;
    for (const auto& x : xs) ptrs.push_back(x.const_data_ptr<scalar_t>());
    forward_kernel<scalar_t>(ptrs, w.const_data_ptr<at::opmath_type<scalar_t>>(), grid, out.mutable_data_ptr<scalar_t>());
  });
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> weighted_sum_backward_cpu(const at::Tensor& grad_in,
                                                                          at::TensorList xs_in,
                                                                          const at::Tensor& weights,
                                                                          c10::List<bool> xs_need_grad,
                                                                          bool weights_need_grad) {
  const WeightedSumBackwardInputs in = check_weighted_sum_backward(grad_in, xs_in, weights, xs_need_grad);
  const int64_t k_count = static_cast<int64_t>(xs_in.size());
  const at::Tensor& w = in.weights;
  const std::vector<at::Tensor>& laid = in.grad_and_xs;
  const at::Tensor grad = laid[0];

  std::vector<at::Tensor> grads_x;
  for (int64_t k = 0; k < k_count; ++k) {
    if (xs_need_grad.get(k)) grads_x.push_back(at::empty_strided(grad.sizes(), grad.strides(), grad.options()));
  }
  const ChunkGrid grid = make_grid(grad.numel(), w.dim() == 2, grad.dim() > 0 ? grad.size(0) : 1);
  at::Tensor partial;
  if (weights_need_grad) partial = at::empty({grid.samples, grid.per_sample, k_count}, w.options());
  if (grad.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "weighted_sum_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      std::vector<const scalar_t*> x_ptrs;
      std::vector<scalar_t*> gx_ptrs;
      size_t next = 0;
      for (int64_t k = 0; k < k_count; ++k) {
        x_ptrs.push_back(laid[k + 1].const_data_ptr<scalar_t>());
        gx_ptrs.push_back(xs_need_grad.get(k) ? grads_x[next++].mutable_data_ptr<scalar_t>() : nullptr);
      }
      backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), x_ptrs, gx_ptrs, w.const_data_ptr<acc_t>(), grid,
                                weights_need_grad ? partial.mutable_data_ptr<acc_t>() : nullptr);
    });
  }
  at::Tensor grad_w;
  if (weights_need_grad) {
    grad_w = grad.numel() > 0 ? partial.sum(1) : at::zeros({grid.samples, k_count}, w.options());
    grad_w = grad_w.reshape(weights.sizes()).to(weights.scalar_type());
  } else {
    grad_w = at::empty({0}, weights.options());
  }
  return {grads_x, grad_w};
}

}  // namespace

TORCH_LIBRARY_IMPL(pynas, CPU, m) {
  m.impl("weighted_sum", &weighted_sum_cpu);
  m.impl("_weighted_sum_backward", &weighted_sum_backward_cpu);
}

}  // namespace pynas
