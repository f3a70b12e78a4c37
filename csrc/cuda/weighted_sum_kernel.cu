// CUDA kernels of weighted_sum: out = sum_k w[(n,) k] * xs[k] in one pass
// over flat, batch-major storage, and its fused backward.
#include "device_utils.cuh"

namespace pynas {
namespace cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarp;

// Input tables: pointer and sample stride (elements from one sample's block
// to the next) of each input, by value (up to kMaxInlineInputs) or in device
// arrays (stride null: every stride is `inner`, the dense layout).
template <typename T, int N>
struct InlineInputs {
  T* p[N];
  int64_t st[N];
  __device__ __forceinline__ T* operator[](int i) const { return p[i]; }
  __device__ __forceinline__ int64_t stride(int i) const { return st[i]; }
};
template <typename T>
struct DeviceInputs {
  T* const* p;
  const int64_t* st;
  int64_t inner;
  __device__ __forceinline__ T* operator[](int i) const { return p[i]; }
  __device__ __forceinline__ int64_t stride(int i) const { return st != nullptr ? st[i] : inner; }
};

// ----------------------------------------------------------------- forward
// One thread per pack of V elements of one sample (a pack never straddles
// two samples: V == 1 or inner % V == 0 or samples == 1); the last pack of a
// sample may be partial (then loaded element by element). Input kk's sample
// `sample` starts at xs[kk] + sample * xs.stride(kk); out is dense (sample
// stride inner). w_stride: k for per-sample weights, 0 for shared ones.
// Dense inputs with shared weights are launched as one sample of
// samples * inner elements (the flat path).
template <typename T, int V, typename I, typename Ptrs>
__global__ void weighted_sum_forward_kernel(Ptrs xs, int k, const acc_t<T>* __restrict__ w, int64_t w_stride,
                                            I samples, I inner, I packs, T* __restrict__ out) {
  using A = acc_t<T>;
  const I total = samples * packs;
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    I sample = 0, pk = i;
    if (samples > 1) {
      sample = i / packs;
      pk = i - sample * packs;
    }
    const I e_in = pk * V;
    const int64_t sample64 = static_cast<int64_t>(sample);
    const int64_t e0 = sample64 * static_cast<int64_t>(inner) + static_cast<int64_t>(e_in);
    const A* ws = w + sample64 * w_stride;
    A acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = A(0);
    if (inner - e_in >= static_cast<I>(V)) {
#pragma unroll 4
      for (int kk = 0; kk < k; ++kk) {
        const A wk = ws[kk];
        const Pack<T, V> x = load_pack<T, V>(xs[kk] + (sample64 * xs.stride(kk) + e_in));
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += wk * to_acc(x.v[j]);
      }
      Pack<T, V> o;
#pragma unroll
      for (int j = 0; j < V; ++j) o.v[j] = from_acc<T>(acc[j]);
      store_pack<T, V>(out + e0, o);
    } else {
      const int m = static_cast<int>(inner - e_in);
      for (int kk = 0; kk < k; ++kk) {
        const A wk = ws[kk];
        const T* x = xs[kk] + (sample64 * xs.stride(kk) + e_in);
#pragma unroll
        for (int j = 0; j < V; ++j) {
          if (j < m) acc[j] += wk * to_acc(x[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < V; ++j) {
        if (j < m) out[e0 + j] = from_acc<T>(acc[j]);
      }
    }
  }
}

template <typename T, int V, typename Ptrs>
cudaError_t forward_launch(const Ptrs& ptrs, int k, const acc_t<T>* w, int64_t w_stride, int64_t samples,
                           int64_t inner, T* out, cudaStream_t stream) {
  const int64_t packs = ceil_div(inner, V);
  const int64_t total = samples * packs;
  if (samples * inner <= PYNAS_CUDA_INDEX32_LIMIT) {  // then every index fits in 32 bits
    auto kernel = weighted_sum_forward_kernel<T, V, uint32_t, Ptrs>;
    kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(
        ptrs, k, w, w_stride, static_cast<uint32_t>(samples), static_cast<uint32_t>(inner),
        static_cast<uint32_t>(packs), out);
  } else {
    auto kernel = weighted_sum_forward_kernel<T, V, int64_t, Ptrs>;
    kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(ptrs, k, w, w_stride, samples, inner, packs,
                                                                        out);
  }
  return cudaGetLastError();
}

// ---------------------------------------------------------------- backward
// Work item (sample, part): block-uniform; a block loops over items. Within
// an item, thread t handles packs part * kThreads + t + i * bps * kThreads.
// For the weights' gradient each warp reduces its dot products with
// shuffles and lane 0 adds them, in loop order, to the warp's row of `red`;
// at the end of the item the rows are summed in warp order. Everything is in
// a fixed order, so the partial sums do not depend on scheduling.
// Sample `sample` of grad starts at grad + sample * grad_stride, of input kk
// at xs[kk] + sample * xs.stride(kk); grad_xs are dense (stride inner).
// w_stride: k_total (per-sample weights) or 0 (shared). partial holds one
// row of k_total per item (sample-major).
template <typename T, int V, typename I>
__global__ void weighted_sum_backward_kernel(const T* __restrict__ grad, int64_t grad_stride,
                                             InlineInputs<const T, kMaxInlineInputs> xs,
                                             InlinePtrs<T, kMaxInlineInputs> grad_xs, int k, int k_offset,
                                             int k_total, const acc_t<T>* __restrict__ w, int64_t w_stride,
                                             I samples, I inner, I packs, I bps, double* __restrict__ partial) {
  using A = acc_t<T>;
  __shared__ double red[kWarps][kMaxInlineInputs];
  const bool need_w = partial != nullptr;
  const int lane = threadIdx.x & (kWarp - 1);
  const int warp = threadIdx.x / kWarp;
  if (need_w) {
    for (int t = threadIdx.x; t < kWarps * kMaxInlineInputs; t += kThreads) (&red[0][0])[t] = 0.0;
  }
  __syncthreads();
  const I items = samples * bps;
  for (I item = blockIdx.x; item < items; item += gridDim.x) {
    const I sample = item / bps;
    const I part = item - sample * bps;
    const int64_t sample64 = static_cast<int64_t>(sample);
    const int64_t sample_base = sample64 * static_cast<int64_t>(inner);  // of grad_xs
    const int64_t grad_base = sample64 * grad_stride;
    const A* ws = w + sample64 * w_stride + k_offset;
    for (I base = part * kThreads; base < packs; base += bps * kThreads) {
      const I pk = base + threadIdx.x;
      int m = 0;  // valid elements of this thread's pack
      if (pk < packs) {
        const I left = inner - pk * V;
        m = left >= static_cast<I>(V) ? V : static_cast<int>(left);
      }
      const int64_t e_in = static_cast<int64_t>(pk) * V;
      const int64_t e0 = sample_base + e_in;
      A g[V];
      if (m == V) {
        const Pack<T, V> p = load_pack<T, V>(grad + (grad_base + e_in));
#pragma unroll
        for (int j = 0; j < V; ++j) g[j] = to_acc(p.v[j]);
      } else {
#pragma unroll
        for (int j = 0; j < V; ++j) g[j] = j < m ? to_acc(grad[grad_base + e_in + j]) : A(0);
      }
      for (int kk = 0; kk < k; ++kk) {
        T* gx = grad_xs[kk];
        if (gx != nullptr) {
          const A wk = ws[kk];
          if (m == V) {
            Pack<T, V> o;
#pragma unroll
            for (int j = 0; j < V; ++j) o.v[j] = from_acc<T>(wk * g[j]);
            store_pack<T, V>(gx + e0, o);
          } else {
#pragma unroll
            for (int j = 0; j < V; ++j) {
              if (j < m) gx[e0 + j] = from_acc<T>(wk * g[j]);
            }
          }
        }
        if (need_w) {
          A d = A(0);
          const T* x = xs[kk] + (sample64 * xs.stride(kk) + e_in);
          if (m == V) {
            const Pack<T, V> p = load_pack<T, V>(x);
#pragma unroll
            for (int j = 0; j < V; ++j) d += g[j] * to_acc(p.v[j]);
          } else {
#pragma unroll
            for (int j = 0; j < V; ++j) {
              if (j < m) d += g[j] * to_acc(x[j]);
            }
          }
          d = warp_sum(d);
          if (lane == 0) red[warp][kk] += static_cast<double>(d);
        }
      }
    }
    if (need_w) {
      __syncthreads();
      for (int kk = threadIdx.x; kk < k; kk += kThreads) {
        double t = 0.0;
#pragma unroll
        for (int wp = 0; wp < kWarps; ++wp) {
          t += red[wp][kk];
          red[wp][kk] = 0.0;
        }
        partial[static_cast<int64_t>(item) * k_total + k_offset + kk] = t;
      }
      __syncthreads();
    }
  }
}

// grad_weights[s, k] = sum_p partial[s, p, k], p increasing.
template <typename A>
__global__ void weighted_sum_finalize_kernel(const double* __restrict__ partial, int64_t samples, int64_t bps,
                                             int64_t k, A* __restrict__ grad_weights) {
  const int64_t total = samples * k;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * kThreads) {
    const int64_t s = i / k;
    const int64_t kk = i - s * k;
    const double* p = partial + s * bps * k + kk;
    double t = 0.0;
    for (int64_t b = 0; b < bps; ++b) t += p[b * k];
    grad_weights[i] = static_cast<A>(t);
  }
}

template <typename T, int V>
void backward_launch(const T* grad, int64_t grad_stride, const InlineInputs<const T, kMaxInlineInputs>& xs,
                     const InlinePtrs<T, kMaxInlineInputs>& grad_xs, int k, int k_offset, int k_total,
                     const acc_t<T>* w, int64_t w_stride, int64_t samples, int64_t inner, int64_t bps,
                     double* partial, cudaStream_t stream) {
  const int64_t packs = ceil_div(inner, V);
  const int64_t items = samples * bps;
  // 32-bit indices when every index and loop bound of the kernel fits.
  const bool small = samples * inner <= PYNAS_CUDA_INDEX32_LIMIT && items <= PYNAS_CUDA_INDEX32_LIMIT &&
                     packs + bps * kThreads <= PYNAS_CUDA_INDEX32_LIMIT;
  if (small) {
    auto kernel = weighted_sum_backward_kernel<T, V, uint32_t>;
    // At most one block per item; grid_for counts threads, so scale by kThreads.
    kernel<<<grid_for(kernel, kThreads, items * kThreads), kThreads, 0, stream>>>(
        grad, grad_stride, xs, grad_xs, k, k_offset, k_total, w, w_stride, static_cast<uint32_t>(samples),
        static_cast<uint32_t>(inner), static_cast<uint32_t>(packs), static_cast<uint32_t>(bps), partial);
  } else {
    auto kernel = weighted_sum_backward_kernel<T, V, int64_t>;
    kernel<<<grid_for(kernel, kThreads, items * kThreads), kThreads, 0, stream>>>(
        grad, grad_stride, xs, grad_xs, k, k_offset, k_total, w, w_stride, samples, inner, packs, bps, partial);
  }
}

}  // namespace

cudaError_t launch_weighted_sum_forward(DType dtype, const void* const* xs, const void* const* xs_device,
                                        const int64_t* xs_sample_strides, const int64_t* xs_strides_device,
                                        int64_t k, const void* weights, int64_t w_samples, int64_t samples,
                                        int64_t inner, void* out, cudaStream_t stream) {
  if (k <= 0 || samples <= 0 || inner < 0 || xs == nullptr || weights == nullptr) return cudaErrorInvalidValue;
  if (w_samples != 1 && w_samples != samples) return cudaErrorInvalidValue;
  if (k > kMaxInlineInputs && xs_device == nullptr) return cudaErrorInvalidValue;
  if (k > INT32_MAX) return cudaErrorInvalidValue;
  if (inner == 0) return cudaSuccess;
  bool dense = true;  // every input's sample stride is inner (or one sample)
  if (xs_sample_strides != nullptr && samples > 1) {
    for (int64_t i = 0; i < k; ++i) {
      if (xs_sample_strides[i] < inner) return cudaErrorInvalidValue;
      dense = dense && xs_sample_strides[i] == inner;
    }
  }
  if (!dense && k > kMaxInlineInputs && xs_strides_device == nullptr) return cudaErrorInvalidValue;
  // The flat path: dense inputs and shared weights are one sample of
  // samples * inner elements (packs may then cross sample boundaries).
  const bool flat = samples == 1 || (dense && w_samples == 1);
  const int64_t l_samples = flat ? 1 : samples;
  const int64_t l_inner = flat ? samples * inner : inner;
  const int64_t w_stride = w_samples > 1 ? k : 0;
  return dispatch_float(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int V = vec16<T>();
    bool vec = aligned16(out) && (l_samples == 1 || l_inner % V == 0);
    for (int64_t i = 0; i < k && vec; ++i) {
      vec = aligned16(xs[i]) && (l_samples == 1 || xs_sample_strides == nullptr || xs_sample_strides[i] % V == 0);
    }
    const A* w = static_cast<const A*>(weights);
    T* o = static_cast<T*>(out);
    const int kk = static_cast<int>(k);
    if (k <= kMaxInlineInputs) {
      InlineInputs<const T, kMaxInlineInputs> ptrs{};
      for (int64_t i = 0; i < k; ++i) {
        ptrs.p[i] = static_cast<const T*>(xs[i]);
        ptrs.st[i] = flat || xs_sample_strides == nullptr ? l_inner : xs_sample_strides[i];
      }
      return vec ? forward_launch<T, V>(ptrs, kk, w, w_stride, l_samples, l_inner, o, stream)
                 : forward_launch<T, 1>(ptrs, kk, w, w_stride, l_samples, l_inner, o, stream);
    }
    DeviceInputs<const T> ptrs{reinterpret_cast<const T* const*>(xs_device), dense ? nullptr : xs_strides_device,
                               l_inner};
    return vec ? forward_launch<T, V>(ptrs, kk, w, w_stride, l_samples, l_inner, o, stream)
               : forward_launch<T, 1>(ptrs, kk, w, w_stride, l_samples, l_inner, o, stream);
  });
}

int64_t weighted_sum_backward_blocks_per_sample(int64_t samples, int64_t inner) {
  if (samples <= 0 || inner <= 0) return 1;
  // About 8 blocks of 256 threads per SM in all, each thread with >= 4 elements.
  const int64_t target = static_cast<int64_t>(sm_count()) * 8;
  int64_t bps = ceil_div(target, samples);
  const int64_t useful = ceil_div(inner, static_cast<int64_t>(kThreads) * 4);
  if (bps > useful) bps = useful;
  return bps < 1 ? 1 : bps;
}

cudaError_t launch_weighted_sum_backward(DType dtype, const void* grad, int64_t grad_sample_stride,
                                         const void* const* xs, const int64_t* xs_sample_strides,
                                         void* const* grad_xs, int64_t k, const void* weights, int64_t w_samples,
                                         int64_t samples, int64_t inner, int64_t blocks_per_sample,
                                         double* partial, void* grad_weights, cudaStream_t stream) {
  if (k <= 0 || k > INT32_MAX || samples <= 0 || inner < 0 || blocks_per_sample < 1 || grad_xs == nullptr ||
      weights == nullptr || (w_samples != 1 && w_samples != samples)) {
    return cudaErrorInvalidValue;
  }
  const bool need_w = grad_weights != nullptr;
  if (need_w && (partial == nullptr || xs == nullptr)) return cudaErrorInvalidValue;
  // Dense: every block read (grad, and the xs when read) has sample stride inner.
  bool dense = true;
  if (samples > 1) {
    if (grad_sample_stride < inner) return cudaErrorInvalidValue;
    dense = grad_sample_stride == inner;
    if (need_w && xs_sample_strides != nullptr) {
      for (int64_t i = 0; i < k; ++i) {
        if (xs_sample_strides[i] < inner) return cudaErrorInvalidValue;
        dense = dense && xs_sample_strides[i] == inner;
      }
    }
  }
  // The flat path (dense, shared weights): one sample of samples * inner
  // elements with samples * blocks_per_sample blocks (the partial buffer has
  // that many rows either way).
  const bool flat = samples == 1 || (dense && w_samples == 1);
  const int64_t l_samples = flat ? 1 : samples;
  const int64_t l_inner = flat ? samples * inner : inner;
  const int64_t l_bps = flat ? samples * blocks_per_sample : blocks_per_sample;
  const int64_t l_grad_stride = flat ? l_inner : grad_sample_stride;
  return dispatch_float(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int V = vec16<T>();
    if (inner == 0) {
      if (!need_w) return cudaSuccess;
      // No elements: the weights' gradient is zero (all-zero bits).
      cudaMemsetAsync(grad_weights, 0, static_cast<size_t>(w_samples * k) * sizeof(A), stream);
      return cudaGetLastError();
    }
    const A* w = static_cast<const A*>(weights);
    const T* g = static_cast<const T*>(grad);
    const int64_t w_stride = w_samples > 1 ? k : 0;
    for (int64_t k0 = 0; k0 < k; k0 += kMaxInlineInputs) {
      const int64_t kc = k - k0 < kMaxInlineInputs ? k - k0 : kMaxInlineInputs;
      InlineInputs<const T, kMaxInlineInputs> xp{};
      InlinePtrs<T, kMaxInlineInputs> gp{};
      bool any_gx = false;
      bool vec = aligned16(grad) && (l_samples == 1 || (l_inner % V == 0 && l_grad_stride % V == 0));
      for (int64_t i = 0; i < kc; ++i) {
        gp.p[i] = static_cast<T*>(grad_xs[k0 + i]);
        if (gp.p[i] != nullptr) {
          any_gx = true;
          vec = vec && aligned16(gp.p[i]);
        }
        xp.st[i] = l_inner;
        if (need_w) {
          xp.p[i] = static_cast<const T*>(xs[k0 + i]);
          if (!flat && xs_sample_strides != nullptr) xp.st[i] = xs_sample_strides[k0 + i];
          vec = vec && aligned16(xp.p[i]) && (l_samples == 1 || xp.st[i] % V == 0);
        }
      }
      if (!any_gx && !need_w) continue;
      double* part = need_w ? partial : nullptr;
      const int kc_i = static_cast<int>(kc), k0_i = static_cast<int>(k0), k_i = static_cast<int>(k);
      if (vec) {
        backward_launch<T, V>(g, l_grad_stride, xp, gp, kc_i, k0_i, k_i, w, w_stride, l_samples, l_inner, l_bps,
                              part, stream);
      } else {
        backward_launch<T, 1>(g, l_grad_stride, xp, gp, kc_i, k0_i, k_i, w, w_stride, l_samples, l_inner, l_bps,
                              part, stream);
      }
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
    if (need_w) {
      // Per-sample weights: row s sums its own items; shared weights: one row
      // sums every item (sample-major, then part).
      const int64_t rows = w_samples;
      const int64_t per_row = l_samples * l_bps / rows;
      const int64_t total = rows * k;
      auto kernel = weighted_sum_finalize_kernel<A>;
      kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(partial, rows, per_row, k,
                                                                         static_cast<A*>(grad_weights));
    }
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace pynas
