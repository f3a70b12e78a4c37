// CUDA kernels of partial_channel_mix (PC-DARTS): the weighted sum of the
// sampled channels, the bypass of the others, the concat and the channel
// shuffle in one pass that reads each input once and writes the output once;
// and the data movement of its backward (the weighted-sum part of the
// backward is weighted_sum's backward kernel).
#include "device_utils.cuh"

namespace pynas {
namespace cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;

// One thread per pack of V output elements along s (V == 1 when channels are
// innermost in out), in out's memory order.
template <typename T, int V, typename I, typename Ptrs>
__global__ void pcm_forward_kernel(Ptrs ys, int k, NcsStrides ys_st, const acc_t<T>* __restrict__ w,
                                   bool per_sample, const T* __restrict__ x, NcsStrides x_st, T* __restrict__ out,
                                   NcsStrides out_st, I d1, I packs, I total, bool channels_inner, I groups, I cg) {
  using A = acc_t<T>;
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    int64_t n, o, s;
    ncs_position<I>(i, d1, packs, channels_inner, V, n, o, s);
    const I j = static_cast<I>(o) / groups;
    const I gi = static_cast<I>(o) - j * groups;
    T* dst = out + ncs_offset(out_st, n, o, s);
    if (gi != 0) {
      const T* src = x + ncs_offset(x_st, n, static_cast<int64_t>(gi * cg + j), s);
      if (V > 1) {
        store_pack<T, V>(dst, load_pack<T, V>(src));
      } else {
        *dst = *src;
      }
      continue;
    }
    const A* wn = w + (per_sample ? n * k : 0);
    const int64_t off = ncs_offset(ys_st, n, static_cast<int64_t>(j), s);
    A acc[V];
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] = A(0);
#pragma unroll 4
    for (int kk = 0; kk < k; ++kk) {
      const A wk = wn[kk];
      if (V > 1) {
        const Pack<T, V> y = load_pack<T, V>(ys[kk] + off);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] += wk * to_acc(y.v[e]);
      } else {
        acc[0] += wk * to_acc(ys[kk][off]);
      }
    }
    if (V > 1) {
      Pack<T, V> r;
#pragma unroll
      for (int e = 0; e < V; ++e) r.v[e] = from_acc<T>(acc[e]);
      store_pack<T, V>(dst, r);
    } else {
      *dst = from_acc<T>(acc[0]);
    }
  }
}

template <typename T, int V, typename Ptrs>
cudaError_t forward_launch(const Ptrs& ys, int k, NcsStrides ys_st, const acc_t<T>* w, bool per_sample, const T* x,
                           NcsStrides x_st, T* out, NcsStrides out_st, const NcsWalk& walk, int64_t groups,
                           int64_t cg, cudaStream_t stream) {
  const int64_t d1 = walk.channels_inner ? walk.s : walk.c;
  const int64_t packs = walk.packs_per_row();
  const int64_t total = walk.total();
  if (total <= PYNAS_CUDA_INDEX32_LIMIT) {
    auto kernel = pcm_forward_kernel<T, V, uint32_t, Ptrs>;
    kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(
        ys, k, ys_st, w, per_sample, x, x_st, out, out_st, static_cast<uint32_t>(d1), static_cast<uint32_t>(packs),
        static_cast<uint32_t>(total), walk.channels_inner, static_cast<uint32_t>(groups), static_cast<uint32_t>(cg));
  } else {
    auto kernel = pcm_forward_kernel<T, V, int64_t, Ptrs>;
    kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(ys, k, ys_st, w, per_sample, x, x_st, out,
                                                                        out_st, d1, packs, total,
                                                                        walk.channels_inner, groups, cg);
  }
  return cudaGetLastError();
}

// Walks [n, cw, s] in the layout of the primary output (grad_x when given,
// else grad_sel): channel q < cg takes grad channel q * groups (to grad_sel;
// grad_x gets 0), channel q >= cg = i * cg + j takes grad channel
// j * groups + i (to grad_x). U: an unsigned type of the element's size.
template <typename U, int V, typename I>
__global__ void pcm_unshuffle_kernel(const U* __restrict__ grad, NcsStrides g_st, U* __restrict__ sel,
                                     NcsStrides sel_st, U* __restrict__ gx, NcsStrides gx_st, I d1, I packs,
                                     I total, bool channels_inner, I groups, I cg) {
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    int64_t n, q, s;
    ncs_position<I>(i, d1, packs, channels_inner, V, n, q, s);
    const I qi = static_cast<I>(q);
    if (qi < cg) {
      if (sel != nullptr) {
        const U* src = grad + ncs_offset(g_st, n, static_cast<int64_t>(qi * groups), s);
        U* dst = sel + ncs_offset(sel_st, n, q, s);
        if (V > 1) {
          store_pack<U, V>(dst, load_pack<U, V>(src));
        } else {
          *dst = *src;
        }
      }
      if (gx != nullptr) {
        U* dst = gx + ncs_offset(gx_st, n, q, s);
        if (V > 1) {
          Pack<U, V> z;
#pragma unroll
          for (int e = 0; e < V; ++e) z.v[e] = U(0);
          store_pack<U, V>(dst, z);
        } else {
          *dst = U(0);
        }
      }
    } else {
      const I gi = qi / cg;
      const I j = qi - gi * cg;
      const U* src = grad + ncs_offset(g_st, n, static_cast<int64_t>(j * groups + gi), s);
      U* dst = gx + ncs_offset(gx_st, n, q, s);
      if (V > 1) {
        store_pack<U, V>(dst, load_pack<U, V>(src));
      } else {
        *dst = *src;
      }
    }
  }
}

template <typename U, int V>
cudaError_t unshuffle_launch(const U* grad, NcsStrides g_st, U* sel, NcsStrides sel_st, U* gx, NcsStrides gx_st,
                             const NcsWalk& walk, int64_t groups, int64_t cg, cudaStream_t stream) {
  const int64_t d1 = walk.channels_inner ? walk.s : walk.c;
  const int64_t packs = walk.packs_per_row();
  const int64_t total = walk.total();
  if (total <= PYNAS_CUDA_INDEX32_LIMIT && groups * cg <= PYNAS_CUDA_INDEX32_LIMIT) {
    auto kernel = pcm_unshuffle_kernel<U, V, uint32_t>;
    kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(
        grad, g_st, sel, sel_st, gx, gx_st, static_cast<uint32_t>(d1), static_cast<uint32_t>(packs),
        static_cast<uint32_t>(total), walk.channels_inner, static_cast<uint32_t>(groups), static_cast<uint32_t>(cg));
  } else {
    auto kernel = pcm_unshuffle_kernel<U, V, int64_t>;
    kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(
        grad, g_st, sel, sel_st, gx, gx_st, d1, packs, total, walk.channels_inner, groups, cg);
  }
  return cudaGetLastError();
}

template <typename U>
cudaError_t unshuffle_typed(const void* grad, NcsStrides g_st, void* sel, NcsStrides sel_st, void* gx,
                            NcsStrides gx_st, int64_t n, int64_t c, int64_t s, int64_t groups, cudaStream_t stream) {
  constexpr int V = vec16<U>();
  const int64_t cg = c / groups;
  NcsWalk walk;
  walk.n = n;
  walk.c = gx != nullptr ? c : cg;
  walk.s = s;
  walk.channels_inner = channels_inner_layout(gx != nullptr ? gx_st : sel_st, walk.c, s);
  const bool vec = !walk.channels_inner && s % V == 0 && packable(grad, g_st, V) && packable(sel, sel_st, V) &&
                   packable(gx, gx_st, V);
  const U* g = static_cast<const U*>(grad);
  U* se = static_cast<U*>(sel);
  U* x = static_cast<U*>(gx);
  if (vec) {
    walk.v = V;
    return unshuffle_launch<U, V>(g, g_st, se, sel_st, x, gx_st, walk, groups, cg, stream);
  }
  return unshuffle_launch<U, 1>(g, g_st, se, sel_st, x, gx_st, walk, groups, cg, stream);
}

}  // namespace

cudaError_t launch_partial_channel_mix_forward(DType dtype, const void* const* ys, const void* const* ys_device,
                                               int64_t k, NcsStrides ys_st, const void* weights, int64_t w_samples,
                                               const void* x, NcsStrides x_st, void* out, NcsStrides out_st,
                                               int64_t n, int64_t c, int64_t s, int64_t groups, cudaStream_t stream) {
  if (k <= 0 || k > INT32_MAX || ys == nullptr || weights == nullptr || groups < 1 || n < 0 || c < 0 || s < 0 ||
      c % groups != 0 || (w_samples != 1 && w_samples != n)) {
    return cudaErrorInvalidValue;
  }
  if (k > kMaxInlineInputs && ys_device == nullptr) return cudaErrorInvalidValue;
  if (n == 0 || c == 0 || s == 0) return cudaSuccess;
  return dispatch_float(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int V = vec16<T>();
    NcsWalk walk;
    walk.n = n;
    walk.c = c;
    walk.s = s;
    walk.channels_inner = channels_inner_layout(out_st, c, s);
    bool vec = !walk.channels_inner && s % V == 0 && packable(x, x_st, V) && packable(out, out_st, V);
    for (int64_t i = 0; i < k && vec; ++i) vec = packable(ys[i], ys_st, V);
    const A* w = static_cast<const A*>(weights);
    const bool per_sample = w_samples > 1;
    const T* xp = static_cast<const T*>(x);
    T* op = static_cast<T*>(out);
    const int kk = static_cast<int>(k);
    const int64_t cg = c / groups;
    if (vec) walk.v = V;
    if (k <= kMaxInlineInputs) {
      InlinePtrs<const T, kMaxInlineInputs> ptrs{};
      for (int64_t i = 0; i < k; ++i) ptrs.p[i] = static_cast<const T*>(ys[i]);
      return vec ? forward_launch<T, V>(ptrs, kk, ys_st, w, per_sample, xp, x_st, op, out_st, walk, groups, cg, stream)
                 : forward_launch<T, 1>(ptrs, kk, ys_st, w, per_sample, xp, x_st, op, out_st, walk, groups, cg, stream);
    }
    DevicePtrs<const T> ptrs{reinterpret_cast<const T* const*>(ys_device)};
    return vec ? forward_launch<T, V>(ptrs, kk, ys_st, w, per_sample, xp, x_st, op, out_st, walk, groups, cg, stream)
               : forward_launch<T, 1>(ptrs, kk, ys_st, w, per_sample, xp, x_st, op, out_st, walk, groups, cg, stream);
  });
}

cudaError_t launch_partial_channel_mix_unshuffle(DType dtype, const void* grad, NcsStrides grad_st, void* grad_sel,
                                                 NcsStrides sel_st, void* grad_x, NcsStrides gx_st, int64_t n,
                                                 int64_t c, int64_t s, int64_t groups, cudaStream_t stream) {
  if (grad == nullptr || groups < 1 || n < 0 || c < 0 || s < 0 || c % groups != 0) return cudaErrorInvalidValue;
  if (grad_sel == nullptr && grad_x == nullptr) return cudaSuccess;
  if (n == 0 || c == 0 || s == 0) return cudaSuccess;
  switch (dtype_size(dtype)) {
    case 2:
      return unshuffle_typed<uint16_t>(grad, grad_st, grad_sel, sel_st, grad_x, gx_st, n, c, s, groups, stream);
    case 4:
      return unshuffle_typed<uint32_t>(grad, grad_st, grad_sel, sel_st, grad_x, gx_st, n, c, s, groups, stream);
    case 8:
      return unshuffle_typed<uint64_t>(grad, grad_st, grad_sel, sel_st, grad_x, gx_st, n, c, s, groups, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace cuda
}  // namespace pynas
