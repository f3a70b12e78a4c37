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

// Work split (both kernels): one thread per pack of V elements of the ys'
// shape [n, c / groups, s], walked in the output's memory order; the thread
// owns output channels j * groups .. j * groups + groups - 1 for its ys
// channel(s) j: the mixed channel j * groups (the K-input weighted sum) and
// the groups - 1 bypass channels (copies of x channels i * cg + j). Every
// thread does the same work (one K-input mix and groups - 1 copies per
// element), so no lane idles while others mix (the old one-output-element-
// per-thread split left the lanes with o % groups != 0 waiting for the
// mixing ones), the kernel is one pass over ys, x and out, and each load or
// store instruction of a warp is contiguous across its lanes:
//  * channels not innermost (NCHW-like): packs along s (V elements, 16-byte
//    accesses when s, strides and bases allow); lanes take consecutive packs
//    of one channel, so every ys / x / out access is a coalesced row segment.
//  * channels innermost (channels-last): packs of V consecutive ys channels
//    j .. j + V - 1 of one position (16-byte loads of ys and of each bypass
//    slice of x when cg = c / groups, strides and bases allow); the outputs
//    of a thread are the V * groups consecutive channels
//    j * groups .. (j + V) * groups - 1 of that position, stored element by
//    element (their order interleaves the mixed and bypass values); lanes
//    cover consecutive channel ranges, so a warp's stores fill whole sectors.
// On an H100 this is memory-bound: the split reads every input element once
// and writes every output element once with full-sector accesses, which is
// the minimum traffic; the balanced work keeps all lanes issuing memory ops.
template <typename T, int V, typename I, typename Ptrs>
__global__ void pcm_forward_kernel(Ptrs ys, int k, NcsStrides ys_st, const acc_t<T>* __restrict__ w,
                                   bool per_sample, const T* __restrict__ x, NcsStrides x_st, T* __restrict__ out,
                                   NcsStrides out_st, I d1, I packs, I total, bool channels_inner, I groups, I cg) {
  using A = acc_t<T>;
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  const bool ch_packs = V > 1 && channels_inner;  // packs along channels, else along s
  const int64_t ng = static_cast<int64_t>(groups);
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    int64_t n, j, s;
    ncs_position<I>(i, d1, packs, channels_inner, V, n, j, s);
    // The mixed channel(s).
    const A* wn = w + (per_sample ? n * k : 0);
    const int64_t off = ncs_offset(ys_st, n, j, s);
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
    if (ch_packs) {
#pragma unroll
      for (int e = 0; e < V; ++e) out[ncs_offset(out_st, n, (j + e) * ng, s)] = from_acc<T>(acc[e]);
    } else if (V > 1) {
      Pack<T, V> r;
#pragma unroll
      for (int e = 0; e < V; ++e) r.v[e] = from_acc<T>(acc[e]);
      store_pack<T, V>(out + ncs_offset(out_st, n, j * ng, s), r);
    } else {
      out[ncs_offset(out_st, n, j * ng, s)] = from_acc<T>(acc[0]);
    }
    // The bypass channels.
    for (int64_t gi = 1; gi < ng; ++gi) {
      const T* src = x + ncs_offset(x_st, n, gi * static_cast<int64_t>(cg) + j, s);
      if (ch_packs) {
        const Pack<T, V> v = load_pack<T, V>(src);
#pragma unroll
        for (int e = 0; e < V; ++e) out[ncs_offset(out_st, n, (j + e) * ng + gi, s)] = v.v[e];
      } else if (V > 1) {
        store_pack<T, V>(out + ncs_offset(out_st, n, j * ng + gi, s), load_pack<T, V>(src));
      } else {
        out[ncs_offset(out_st, n, j * ng + gi, s)] = *src;
      }
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

// Walks the ys' shape [n, cg, s] in the layout of the primary output
// (grad_x when given, else grad_sel), the split of pcm_forward_kernel: the
// thread of ys channel(s) j reads grad channels j * groups + i for every i:
// i == 0 goes to grad_sel channel j (grad_x channel j gets 0), i > 0 to
// grad_x channel i * cg + j. Packs along s, or (channels innermost) of V
// consecutive channels j .. j + V - 1: then the outputs are 16-byte stores
// and the grad reads (V * groups consecutive channels of one position) are
// element loads. U: an unsigned type of the element's size.
template <typename U, int V, typename I>
__global__ void pcm_unshuffle_kernel(const U* __restrict__ grad, NcsStrides g_st, U* __restrict__ sel,
                                     NcsStrides sel_st, U* __restrict__ gx, NcsStrides gx_st, I d1, I packs,
                                     I total, bool channels_inner, I groups, I cg) {
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  const bool ch_packs = V > 1 && channels_inner;
  const int64_t ng = static_cast<int64_t>(groups);
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    int64_t n, j, s;
    ncs_position<I>(i, d1, packs, channels_inner, V, n, j, s);
    for (int64_t gi = 0; gi < ng; ++gi) {
      if (gi == 0 && sel == nullptr && gx == nullptr) continue;
      if (gi > 0 && gx == nullptr) break;
      Pack<U, V> v;
      if (ch_packs) {
#pragma unroll
        for (int e = 0; e < V; ++e) v.v[e] = grad[ncs_offset(g_st, n, (j + e) * ng + gi, s)];
      } else if (V > 1) {
        v = load_pack<U, V>(grad + ncs_offset(g_st, n, j * ng + gi, s));
      } else {
        v.v[0] = grad[ncs_offset(g_st, n, j * ng + gi, s)];
      }
      if (gi == 0) {
        if (sel != nullptr) {
          U* dst = sel + ncs_offset(sel_st, n, j, s);
          if (V > 1) {
            store_pack<U, V>(dst, v);
          } else {
            *dst = v.v[0];
          }
        }
        if (gx != nullptr) {
          U* dst = gx + ncs_offset(gx_st, n, j, s);
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
        U* dst = gx + ncs_offset(gx_st, n, gi * static_cast<int64_t>(cg) + j, s);
        if (V > 1) {
          store_pack<U, V>(dst, v);
        } else {
          *dst = v.v[0];
        }
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
  walk.c = cg;
  walk.s = s;
  const NcsStrides& primary = gx != nullptr ? gx_st : sel_st;
  walk.channels_inner = channels_inner_layout(primary, c, s) && primary.c == 1 && cg > 1;
  // Channel packs: the stores are packs (grad is read by element).
  const bool vec = walk.channels_inner
                       ? cg % V == 0 && channel_packable(sel, sel_st, V) && channel_packable(gx, gx_st, V)
                       : s % V == 0 && packable(grad, g_st, V) && packable(sel, sel_st, V) && packable(gx, gx_st, V);
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
    const int64_t cg = c / groups;
    NcsWalk walk;  // over the ys' shape [n, cg, s], in out's memory order
    walk.n = n;
    walk.c = cg;
    walk.s = s;
    walk.channels_inner = channels_inner_layout(out_st, cg, s);
    // Channel packs: loads of ys and x are packs (out is stored by element).
    bool vec = walk.channels_inner ? cg % V == 0 && channel_packable(x, x_st, V)
                                   : s % V == 0 && packable(x, x_st, V) && packable(out, out_st, V);
    for (int64_t i = 0; i < k && vec; ++i) {
      vec = walk.channels_inner ? channel_packable(ys[i], ys_st, V) : packable(ys[i], ys_st, V);
    }
    const A* w = static_cast<const A*>(weights);
    const bool per_sample = w_samples > 1;
    const T* xp = static_cast<const T*>(x);
    T* op = static_cast<T*>(out);
    const int kk = static_cast<int>(k);
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
