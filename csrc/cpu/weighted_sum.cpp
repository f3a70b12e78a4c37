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

// The tensors split into `samples` blocks of `inner` elements (one block for
// shared weights over dense tensors: their storage is then one flat range),
// and each block into chunks. Each tensor has its own sample stride.
struct ChunkGrid {
  int64_t samples, inner, per_sample;
  int64_t count() const { return samples * per_sample; }
};

ChunkGrid make_grid(const SampleBlocks& b, bool per_sample_weights, const std::vector<int64_t>& strides) {
  bool flat = !per_sample_weights;
  for (const int64_t s : strides) flat = flat && s == b.inner;
  ChunkGrid g;
  g.samples = flat ? 1 : b.samples;
  g.inner = flat ? b.samples * b.inner : b.inner;
  g.per_sample = (g.inner + kChunk - 1) / kChunk;
  return g;
}

// A tensor's base pointer and sample stride (elements).
template <typename T>
struct Blocks {
  T* p;
  int64_t stride;
  T* at(int64_t sample) const { return p + sample * stride; }
};

template <typename scalar_t>
void forward_kernel(const std::vector<Blocks<const scalar_t>>& xs, const at::opmath_type<scalar_t>* w,
                    bool per_sample_w, const ChunkGrid& grid, Blocks<scalar_t> out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k_count = static_cast<int64_t>(xs.size());
  at::parallel_for(0, grid.count(), 1, [&](int64_t begin, int64_t end) {
    acc_t buf[kTile];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t sample = item / grid.per_sample;
      const int64_t lo = (item % grid.per_sample) * kChunk;
      const int64_t hi = std::min(lo + kChunk, grid.inner);
      const acc_t* ws = w + (per_sample_w ? sample * k_count : 0);
      scalar_t* o = out.at(sample);
      for (int64_t t = lo; t < hi; t += kTile) {
        const int64_t len = std::min(kTile, hi - t);
        for (int64_t j = 0; j < len; ++j) buf[j] = acc_t(0);
        for (int64_t k = 0; k < k_count; ++k) {
          const acc_t wk = ws[k];
          const scalar_t* x = xs[k].at(sample) + t;
          for (int64_t j = 0; j < len; ++j) buf[j] += wk * static_cast<acc_t>(x[j]);
        }
        for (int64_t j = 0; j < len; ++j) o[t + j] = static_cast<scalar_t>(buf[j]);
      }
    }
  });
}

template <typename scalar_t>
void backward_kernel(Blocks<const scalar_t> grad, const std::vector<Blocks<const scalar_t>>& xs,  // xs: empty
                     const std::vector<Blocks<scalar_t>>& grad_xs,  // p == nullptr where not needed
                     const at::opmath_type<scalar_t>* w, bool per_sample_w, const ChunkGrid& grid,
                     at::opmath_type<scalar_t>* partial_w) {  // [chunks, K] or nullptr
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t k_count = static_cast<int64_t>(grad_xs.size());
  at::parallel_for(0, grid.count(), 1, [&](int64_t begin, int64_t end) {
    acc_t g[kTile];
    for (int64_t item = begin; item < end; ++item) {
      const int64_t sample = item / grid.per_sample;
      const int64_t lo = (item % grid.per_sample) * kChunk;
      const int64_t hi = std::min(lo + kChunk, grid.inner);
      const acc_t* ws = w + (per_sample_w ? sample * k_count : 0);
      const scalar_t* gs = grad.at(sample);
      acc_t* pw = partial_w ? partial_w + item * k_count : nullptr;
      if (pw) std::fill(pw, pw + k_count, acc_t(0));
      for (int64_t t = lo; t < hi; t += kTile) {
        const int64_t len = std::min(kTile, hi - t);
        for (int64_t j = 0; j < len; ++j) g[j] = static_cast<acc_t>(gs[t + j]);
        for (int64_t k = 0; k < k_count; ++k) {
          if (grad_xs[k].p != nullptr) {
            scalar_t* gx = grad_xs[k].at(sample);
            const acc_t wk = ws[k];
            for (int64_t j = 0; j < len; ++j) gx[t + j] = static_cast<scalar_t>(wk * g[j]);
          }
          if (pw) {
            const scalar_t* x = xs[k].at(sample) + t;
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
  const SampleBlocks xs = to_sample_blocks(xs_in, xs_in[0]);
  at::Tensor out = empty_sample_blocks_like(xs_in[0]);
  if (out.numel() == 0) return out;
  std::vector<int64_t> strides = xs.sample_strides;
  strides.push_back(xs.inner);  // out is dense
  const bool per_sample_w = w.dim() == 2;
  const ChunkGrid grid = make_grid(xs, per_sample_w, strides);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "weighted_sum_cpu", [&] {
    std::vector<Blocks<const scalar_t>> ptrs;
    for (size_t k = 0; k < xs.tensors.size(); ++k) {
      ptrs.push_back({xs.tensors[k].const_data_ptr<scalar_t>(), xs.sample_strides[k]});
    }
    forward_kernel<scalar_t>(ptrs, w.const_data_ptr<at::opmath_type<scalar_t>>(), per_sample_w, grid,
                             {out.mutable_data_ptr<scalar_t>(), xs.inner});
  });
  return out;
}

std::tuple<std::vector<at::Tensor>, at::Tensor> weighted_sum_backward_cpu(const at::Tensor& grad_in,
                                                                          at::TensorList xs_in,
                                                                          const at::Tensor& weights,
                                                                          c10::List<bool> xs_need_grad,
                                                                          bool weights_need_grad) {
  const WeightedSumBackwardInputs in =
      check_weighted_sum_backward(grad_in, xs_in, weights, xs_need_grad, weights_need_grad);
  const int64_t k_count = static_cast<int64_t>(xs_in.size());
  const at::Tensor& w = in.weights;
  const at::Tensor& grad = in.grad.tensors[0];
  const bool per_sample_w = w.dim() == 2;

  std::vector<at::Tensor> grads_x;
  for (int64_t k = 0; k < k_count; ++k) {
    if (xs_need_grad.get(k)) grads_x.push_back(empty_sample_blocks_like(grad));
  }
  std::vector<int64_t> strides = in.xs.sample_strides;
  strides.push_back(in.grad.sample_strides[0]);
  strides.push_back(in.grad.inner);  // the grads of the xs are dense
  const ChunkGrid grid = make_grid(in.grad, per_sample_w, strides);
  at::Tensor partial;
  if (weights_need_grad) partial = at::empty({grid.samples, grid.per_sample, k_count}, w.options());
  if (grad.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "weighted_sum_backward_cpu", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      std::vector<Blocks<const scalar_t>> x_ptrs;
      std::vector<Blocks<scalar_t>> gx_ptrs;
      size_t next = 0;
      for (int64_t k = 0; k < k_count; ++k) {
        if (weights_need_grad) x_ptrs.push_back({in.xs.tensors[k].const_data_ptr<scalar_t>(), in.xs.sample_strides[k]});
        scalar_t* gx = xs_need_grad.get(k) ? grads_x[next++].mutable_data_ptr<scalar_t>() : nullptr;
        gx_ptrs.push_back({gx, in.grad.inner});
      }
      backward_kernel<scalar_t>({grad.const_data_ptr<scalar_t>(), in.grad.sample_strides[0]}, x_ptrs, gx_ptrs,
                                w.const_data_ptr<acc_t>(), per_sample_w, grid,
                                weights_need_grad ? partial.mutable_data_ptr<acc_t>() : nullptr);
    });
  }
  at::Tensor grad_w;
  if (weights_need_grad) {
    if (grad.numel() == 0) {
      grad_w = at::zeros({per_sample_w ? in.grad.samples : 1, k_count}, w.options());
    } else {
      grad_w = per_sample_w ? partial.sum(1) : partial.sum({0, 1}, /*keepdim=*/false).unsqueeze(0);
    }
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
