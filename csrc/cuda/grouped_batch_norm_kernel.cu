// CUDA kernels of grouped_batch_norm: batch norm whose statistics are taken
// per group of samples.
//
// Reductions run in two deterministic stages. Stage 1 reduces each
// (sample, part of S, channel) "unit" in double: moments (count, mean, M2) by
// exact per-batch moments merged with Chan et al.'s update (forward), or
// plain sums (backward). Stage 2 merges, per (group, channel), the units of
// the group's samples in a fixed order: with the entries e = n * parts + p
// numbered sample-major over the whole batch, lane l of a warp takes the
// group's entries with e % 32 == l in increasing order, then the lanes are
// merged in a fixed tree. No atomics, so results are bit-identical from run
// to run. A per-group index (offsets and the member samples in increasing
// order, built once by the caller) lets a warp visit only its group's
// entries: O(C * N * parts) merge work in all instead of O(G * C * N * parts)
// (same entries, same order, same results as a scan of every entry).
#include "device_utils.cuh"

namespace pynas {
namespace cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;
constexpr int kBatch = 8;  // values per exact batch in stage 1 (and chunk granularity)

// Stage-1 layout: unit u = (n * parts + p) * c + ch covers s in
// [p * chunk, min(s, (p + 1) * chunk)). chunk is a multiple of kBatch, hence
// of every pack width.
__device__ __forceinline__ void unit_position(int64_t u, int64_t c, int64_t parts, int64_t& n, int64_t& p,
                                              int64_t& ch) {
  ch = u % c;
  const int64_t r = u / c;
  p = r % parts;
  n = r / parts;
}

// Rows (stride_s == 1, S large): one warp per unit, lanes along s.
template <typename T, int V>
__global__ void gbn_moments_row_kernel(const T* __restrict__ x, NcsStrides st, int64_t n, int64_t c, int64_t s,
                                       int64_t parts, int64_t chunk, double* __restrict__ out_mean,
                                       double* __restrict__ out_m2) {
  constexpr int kPacks = kBatch / V;
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t units = n * parts * c;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / kWarp);
  for (int64_t u = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kWarp; u < units; u += warps) {
    int64_t nn, p, ch;
    unit_position(u, c, parts, nn, p, ch);
    const T* base = x + nn * st.n + ch * st.c;
    const int64_t s0 = p * chunk;
    const int64_t s1 = s0 + chunk < s ? s0 + chunk : s;
    Moments m{0, 0.0, 0.0};
    for (int64_t i0 = s0; i0 < s1; i0 += static_cast<int64_t>(kWarp) * kBatch) {
      double v[kBatch];
      int valid = 0;
#pragma unroll
      for (int q = 0; q < kPacks; ++q) {
        const int64_t e = i0 + (static_cast<int64_t>(q) * kWarp + lane) * V;
        if (e < s1) {  // whole pack: s1 - s0 is a multiple of V when V > 1
          valid = (q + 1) * V;
          if (V > 1) {
            const Pack<T, V> pk = load_pack<T, V>(base + e);
#pragma unroll
            for (int t = 0; t < V; ++t) v[q * V + t] = static_cast<double>(to_acc(pk.v[t]));
          } else {
            v[q] = static_cast<double>(to_acc(base[e]));
          }
        } else {
#pragma unroll
          for (int t = 0; t < V; ++t) v[q * V + t] = 0.0;
        }
      }
      if (valid > 0) {
        double bm, bm2;
        batch_moments<kBatch>(v, valid, bm, bm2);
        merge_moments(m, valid, bm, bm2);
      }
    }
    warp_merge_moments(m);
    if (lane == 0) {
      out_mean[u] = m.mean;
      out_m2[u] = m.m2;
    }
  }
}

// Any strides: one thread per unit (consecutive threads take consecutive
// channels, which is coalesced for channels-last layouts).
template <typename T>
__global__ void gbn_moments_col_kernel(const T* __restrict__ x, NcsStrides st, int64_t n, int64_t c, int64_t s,
                                       int64_t parts, int64_t chunk, double* __restrict__ out_mean,
                                       double* __restrict__ out_m2) {
  const int64_t units = n * parts * c;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * kThreads) {
    int64_t nn, p, ch;
    unit_position(u, c, parts, nn, p, ch);
    const T* base = x + nn * st.n + ch * st.c;
    const int64_t s0 = p * chunk;
    const int64_t s1 = s0 + chunk < s ? s0 + chunk : s;
    Moments m{0, 0.0, 0.0};
    for (int64_t i0 = s0; i0 < s1; i0 += kBatch) {
      const int valid = s1 - i0 < kBatch ? static_cast<int>(s1 - i0) : kBatch;
      double v[kBatch];
#pragma unroll
      for (int j = 0; j < kBatch; ++j) v[j] = j < valid ? static_cast<double>(to_acc(base[(i0 + j) * st.s])) : 0.0;
      double bm, bm2;
      batch_moments<kBatch>(v, valid, bm, bm2);
      merge_moments(m, valid, bm, bm2);
    }
    out_mean[u] = m.mean;
    out_m2[u] = m.m2;
  }
}

__device__ __forceinline__ int64_t part_count(int64_t s, int64_t p, int64_t chunk) {
  const int64_t left = s - p * chunk;
  return left <= 0 ? 0 : (left < chunk ? left : chunk);
}

// First part p >= 0 of sample entry base = n * parts with (base + p) % 32 == lane.
__device__ __forceinline__ int64_t first_part_of_lane(int64_t base, int lane) {
  return static_cast<int64_t>((lane - static_cast<int>(base % kWarp) + kWarp) % kWarp);
}

// Stage 2 of the statistics: one warp per (group, channel), over the group's
// members only (group_offsets / group_members: the group index of
// kernels.h; null when there are no entries at all).
template <typename A>
__global__ void gbn_stats_merge_kernel(const double* __restrict__ w_mean, const double* __restrict__ w_m2,
                                       const int64_t* __restrict__ group_offsets,
                                       const int64_t* __restrict__ group_members, int64_t c, int64_t s,
                                       int64_t parts, int64_t chunk, int64_t num_groups, double eps,
                                       A* __restrict__ mean_out, A* __restrict__ invstd_out) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t units = num_groups * c;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / kWarp);
  for (int64_t u = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kWarp; u < units; u += warps) {
    const int64_t g = u / c;
    const int64_t ch = u - g * c;
    Moments m{0, 0.0, 0.0};
    const int64_t j0 = group_offsets != nullptr ? group_offsets[g] : 0;
    const int64_t j1 = group_offsets != nullptr ? group_offsets[g + 1] : 0;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t base = group_members[j] * parts;
      for (int64_t p = first_part_of_lane(base, lane); p < parts; p += kWarp) {
        const int64_t cnt = part_count(s, p, chunk);
        if (cnt == 0) continue;
        const int64_t e = base + p;
        merge_moments(m, cnt, w_mean[e * c + ch], w_m2[e * c + ch]);
      }
    }
    warp_merge_moments(m);
    if (lane == 0) {
      double mean = 0.0, invstd = 0.0;
      if (m.count > 0) {
        mean = m.mean;
        invstd = 1.0 / sqrt(m.m2 / static_cast<double>(m.count) + eps);
      }
      mean_out[u] = static_cast<A>(mean);
      invstd_out[u] = static_cast<A>(invstd);
    }
  }
}

// Stage 1 of the backward sums: A = sum dy, B = sum dy * (x - mean[g, c]).
template <typename T, int V>
__global__ void gbn_sums_row_kernel(const T* __restrict__ dy, NcsStrides dy_st, const T* __restrict__ x,
                                    NcsStrides x_st, int64_t n, int64_t c, int64_t s, int64_t parts, int64_t chunk,
                                    const int64_t* __restrict__ groups, const acc_t<T>* __restrict__ mean,
                                    double* __restrict__ out_a, double* __restrict__ out_b) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t units = n * parts * c;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / kWarp);
  for (int64_t u = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kWarp; u < units; u += warps) {
    int64_t nn, p, ch;
    unit_position(u, c, parts, nn, p, ch);
    const T* gb = dy + nn * dy_st.n + ch * dy_st.c;
    const T* xb = x + nn * x_st.n + ch * x_st.c;
    const double mu = static_cast<double>(mean[groups[nn] * c + ch]);
    const int64_t s0 = p * chunk;
    const int64_t s1 = s0 + chunk < s ? s0 + chunk : s;
    double a = 0.0, b = 0.0;
    for (int64_t e = s0 + static_cast<int64_t>(lane) * V; e < s1; e += static_cast<int64_t>(kWarp) * V) {
      if (V > 1) {
        const Pack<T, V> pg = load_pack<T, V>(gb + e);
        const Pack<T, V> px = load_pack<T, V>(xb + e);
#pragma unroll
        for (int t = 0; t < V; ++t) {
          const double d = static_cast<double>(to_acc(pg.v[t]));
          a += d;
          b += d * (static_cast<double>(to_acc(px.v[t])) - mu);
        }
      } else {
        const double d = static_cast<double>(to_acc(gb[e]));
        a += d;
        b += d * (static_cast<double>(to_acc(xb[e])) - mu);
      }
    }
    a = warp_sum(a);
    b = warp_sum(b);
    if (lane == 0) {
      out_a[u] = a;
      out_b[u] = b;
    }
  }
}

template <typename T>
__global__ void gbn_sums_col_kernel(const T* __restrict__ dy, NcsStrides dy_st, const T* __restrict__ x,
                                    NcsStrides x_st, int64_t n, int64_t c, int64_t s, int64_t parts, int64_t chunk,
                                    const int64_t* __restrict__ groups, const acc_t<T>* __restrict__ mean,
                                    double* __restrict__ out_a, double* __restrict__ out_b) {
  const int64_t units = n * parts * c;
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * kThreads) {
    int64_t nn, p, ch;
    unit_position(u, c, parts, nn, p, ch);
    const T* gb = dy + nn * dy_st.n + ch * dy_st.c;
    const T* xb = x + nn * x_st.n + ch * x_st.c;
    const double mu = static_cast<double>(mean[groups[nn] * c + ch]);
    const int64_t s0 = p * chunk;
    const int64_t s1 = s0 + chunk < s ? s0 + chunk : s;
    double a = 0.0, b = 0.0;
    for (int64_t e = s0; e < s1; ++e) {
      const double d = static_cast<double>(to_acc(gb[e * dy_st.s]));
      a += d;
      b += d * (static_cast<double>(to_acc(xb[e * x_st.s])) - mu);
    }
    out_a[u] = a;
    out_b[u] = b;
  }
}

// Stage 2 of the backward sums: one warp per (group, channel). Writes the
// group sums (double, for the per-channel gradients) and the coefficients of
// grad_x.
template <typename A>
__global__ void gbn_sums_merge_kernel(const double* __restrict__ w_a, const double* __restrict__ w_b,
                                      const int64_t* __restrict__ group_offsets,
                                      const int64_t* __restrict__ group_members, int64_t c, int64_t s,
                                      int64_t parts, int64_t num_groups, const A* __restrict__ invstd,
                                      double* __restrict__ sum_a, double* __restrict__ sum_b, A* __restrict__ coef_a,
                                      A* __restrict__ coef_b) {
  const int lane = threadIdx.x & (kWarp - 1);
  const int64_t units = num_groups * c;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (kThreads / kWarp);
  for (int64_t u = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kWarp; u < units; u += warps) {
    const int64_t g = u / c;
    const int64_t ch = u - g * c;
    double a = 0.0, b = 0.0;
    long long samples = 0;
    const int64_t j0 = group_offsets != nullptr ? group_offsets[g] : 0;
    const int64_t j1 = group_offsets != nullptr ? group_offsets[g + 1] : 0;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t base = group_members[j] * parts;
      for (int64_t p = first_part_of_lane(base, lane); p < parts; p += kWarp) {
        if (p == 0) ++samples;
        const int64_t e = base + p;
        a += w_a[e * c + ch];
        b += w_b[e * c + ch];
      }
    }
    a = warp_sum(a);
    b = warp_sum(b);
    samples = warp_sum(samples);
    if (lane == 0) {
      sum_a[u] = a;
      sum_b[u] = b;
      if (coef_a != nullptr) {
        const double m = static_cast<double>(samples) * static_cast<double>(s);
        const double inv = static_cast<double>(invstd[u]);
        coef_a[u] = static_cast<A>(m > 0 ? a / m : 0.0);
        coef_b[u] = static_cast<A>(m > 0 ? inv * inv * b / m : 0.0);
      }
    }
  }
}

// grad_weight[c] = sum_g B[g, c] * invstd[g, c]; grad_bias[c] = sum_g A[g, c].
template <typename A>
__global__ void gbn_param_grad_kernel(const double* __restrict__ sum_a, const double* __restrict__ sum_b,
                                      const A* __restrict__ invstd, int64_t c, int64_t num_groups,
                                      A* __restrict__ grad_weight, A* __restrict__ grad_bias) {
  for (int64_t ch = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; ch < c;
       ch += static_cast<int64_t>(gridDim.x) * kThreads) {
    double gw = 0.0, gb = 0.0;
    for (int64_t g = 0; g < num_groups; ++g) {
      gw += sum_b[g * c + ch] * static_cast<double>(invstd[g * c + ch]);
      gb += sum_a[g * c + ch];
    }
    if (grad_weight != nullptr) grad_weight[ch] = static_cast<A>(gw);
    if (grad_bias != nullptr) grad_bias[ch] = static_cast<A>(gb);
  }
}

// out = (x - mean) * (invstd * weight) + bias, walked in out's memory order.
// V > 1: a pack of V elements along s (one channel), or, when channels are
// innermost (channels_inner), of V consecutive channels (one position):
// 16-byte accesses either way, with per-channel parameters per element.
template <typename T, int V, typename I>
__global__ void gbn_apply_kernel(const T* __restrict__ x, NcsStrides x_st, T* __restrict__ out, NcsStrides o_st,
                                 I d1, I packs, I total, bool channels_inner, const int64_t* __restrict__ groups,
                                 int64_t c, const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ invstd,
                                 const acc_t<T>* __restrict__ weight, const acc_t<T>* __restrict__ bias) {
  using A = acc_t<T>;
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    int64_t n, ch, s;
    ncs_position<I>(i, d1, packs, channels_inner, V, n, ch, s);
    const int64_t gc = groups[n] * c + ch;
    const T* src = x + ncs_offset(x_st, n, ch, s);
    T* dst = out + ncs_offset(o_st, n, ch, s);
    if (V > 1 && channels_inner) {
      const Pack<T, V> v = load_pack<T, V>(src);
      Pack<T, V> r;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const A k = invstd[gc + e] * (weight != nullptr ? weight[ch + e] : A(1));
        const A b = bias != nullptr ? bias[ch + e] : A(0);
        r.v[e] = from_acc<T>((to_acc(v.v[e]) - mean[gc + e]) * k + b);
      }
      store_pack<T, V>(dst, r);
      continue;
    }
    const A mu = mean[gc];
    const A k = invstd[gc] * (weight != nullptr ? weight[ch] : A(1));
    const A b = bias != nullptr ? bias[ch] : A(0);
    if (V > 1) {
      const Pack<T, V> v = load_pack<T, V>(src);
      Pack<T, V> r;
#pragma unroll
      for (int e = 0; e < V; ++e) r.v[e] = from_acc<T>((to_acc(v.v[e]) - mu) * k + b);
      store_pack<T, V>(dst, r);
    } else {
      *dst = from_acc<T>((to_acc(*src) - mu) * k + b);
    }
  }
}

// grad_x = weight * invstd * (dy - coef_a - (x - mean) * coef_b), or
// weight * invstd * dy without coef_a; walked in grad_x's memory order,
// packs along s or (channels_inner) along channels as in gbn_apply_kernel.
template <typename T, int V, typename I>
__global__ void gbn_backward_input_kernel(const T* __restrict__ dy, NcsStrides dy_st, const T* __restrict__ x,
                                          NcsStrides x_st, T* __restrict__ gx, NcsStrides gx_st, I d1, I packs,
                                          I total, bool channels_inner, const int64_t* __restrict__ groups,
                                          int64_t c, const acc_t<T>* __restrict__ mean,
                                          const acc_t<T>* __restrict__ invstd, const acc_t<T>* __restrict__ weight,
                                          const acc_t<T>* __restrict__ coef_a, const acc_t<T>* __restrict__ coef_b) {
  using A = acc_t<T>;
  const bool batch_stats = coef_a != nullptr;
  // Channel packs: parameters per element (step 1); packs along s: one channel (step 0).
  const int64_t step = V > 1 && channels_inner ? 1 : 0;
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    int64_t n, ch, s;
    ncs_position<I>(i, d1, packs, channels_inner, V, n, ch, s);
    const int64_t gc = groups[n] * c + ch;
    const T* g = dy + ncs_offset(dy_st, n, ch, s);
    T* dst = gx + ncs_offset(gx_st, n, ch, s);
    A r[V];
    if (V > 1) {
      const Pack<T, V> v = load_pack<T, V>(g);
#pragma unroll
      for (int e = 0; e < V; ++e) r[e] = to_acc(v.v[e]);
    } else {
      r[0] = to_acc(*g);
    }
    if (batch_stats) {
      const T* xs = x + ncs_offset(x_st, n, ch, s);
      if (V > 1) {
        const Pack<T, V> v = load_pack<T, V>(xs);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          const int64_t q = gc + e * step;
          r[e] = r[e] - coef_a[q] - (to_acc(v.v[e]) - mean[q]) * coef_b[q];
        }
      } else {
        r[0] = r[0] - coef_a[gc] - (to_acc(*xs) - mean[gc]) * coef_b[gc];
      }
    }
    if (V > 1) {
      Pack<T, V> o;
#pragma unroll
      for (int e = 0; e < V; ++e) {
        const A k1 = invstd[gc + e * step] * (weight != nullptr ? weight[ch + e * step] : A(1));
        o.v[e] = from_acc<T>(k1 * r[e]);
      }
      store_pack<T, V>(dst, o);
    } else {
      const A k1 = invstd[gc] * (weight != nullptr ? weight[ch] : A(1));
      *dst = from_acc<T>(k1 * r[0]);
    }
  }
}

// Units of stage 1 go to warps (row kernels) or threads (column kernels).
inline bool use_rows(const NcsStrides& a, const NcsStrides& b, int64_t s) {
  return a.s == 1 && b.s == 1 && s >= kWarp;
}

inline int64_t chunk_for(int64_t s, int64_t parts) {
  const int64_t per = ceil_div(s, parts);
  return ceil_div(per, kBatch) * kBatch;
}

// Blocks for a grid-stride loop over `warps` warp-sized work items.
template <typename Kernel>
inline unsigned grid_for_warps(Kernel kernel, int64_t warps) {
  return grid_for(kernel, kThreads, warps * kWarp);
}

// Runs an elementwise kernel over `walk` with uint32 indices when they fit.
template <typename T, int V, typename Launch>
cudaError_t walk_launch(const NcsWalk& walk, Launch&& launch) {
  const int64_t d1 = walk.channels_inner ? walk.s : walk.c;
  const int64_t packs = walk.packs_per_row();
  const int64_t total = walk.total();
  if (total <= PYNAS_CUDA_INDEX32_LIMIT) {
    launch(static_cast<uint32_t>(d1), static_cast<uint32_t>(packs), static_cast<uint32_t>(total));
  } else {
    launch(d1, packs, total);
  }
  return cudaGetLastError();
}

}  // namespace

int64_t grouped_batch_norm_parts(int64_t n, int64_t c, int64_t s, bool s_inner) {
  if (n <= 0 || c <= 0 || s <= 0) return 1;
  const bool rows = s_inner && s >= kWarp;
  const int64_t threads_per_unit = rows ? kWarp : 1;
  const int64_t min_per_part = rows ? kWarp * kBatch * 2 : kBatch * 8;
  // About two waves of full SMs of threads.
  const int64_t target = static_cast<int64_t>(sm_count()) * 2048 * 2;
  int64_t parts = ceil_div(target, n * c * threads_per_unit);
  const int64_t by_size = s / min_per_part;
  if (parts > by_size) parts = by_size;
  // Stage 2 visits only a group's own entries (the group index), so the
  // merge work in all is one visit per stage-1 unit, whatever the number of
  // groups; this cap only bounds one warp's serial chain when a single group
  // holds every sample (n * parts entries, 512 per lane).
  const int64_t by_merge = 16384 / n;
  if (parts > by_merge) parts = by_merge;
  return parts < 1 ? 1 : parts;
}

cudaError_t launch_grouped_batch_norm_stats(DType dtype, const void* x, NcsStrides x_st, int64_t n, int64_t c,
                                            int64_t s, const int64_t* group_index, int64_t num_groups,
                                            int64_t parts, double eps, double* workspace, void* mean_out,
                                            void* invstd_out, cudaStream_t stream) {
  if (n < 0 || c < 0 || s < 0 || num_groups < 0 || parts < 1) return cudaErrorInvalidValue;
  if (num_groups == 0 || c == 0) return cudaSuccess;
  if (mean_out == nullptr || invstd_out == nullptr) return cudaErrorInvalidValue;
  const bool empty = n == 0 || s == 0;
  if (!empty && (x == nullptr || group_index == nullptr || workspace == nullptr)) return cudaErrorInvalidValue;
  return dispatch_float(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int V = vec16<T>();
    if (empty) {
      // No element in any group: mean 0 and invstd 0 everywhere (zero bits).
      const size_t bytes = static_cast<size_t>(num_groups * c) * sizeof(A);
      cudaMemsetAsync(mean_out, 0, bytes, stream);
      cudaMemsetAsync(invstd_out, 0, bytes, stream);
      return cudaGetLastError();
    }
    const T* xp = static_cast<const T*>(x);
    const int64_t chunk = chunk_for(s, parts);
    const int64_t units = n * parts * c;
    double* w_mean = workspace;
    double* w_m2 = workspace + units;
    if (use_rows(x_st, x_st, s)) {
      if (packable(x, x_st, V) && s % V == 0) {
        auto kernel = gbn_moments_row_kernel<T, V>;
        kernel<<<grid_for_warps(kernel, units), kThreads, 0, stream>>>(xp, x_st, n, c, s, parts, chunk, w_mean, w_m2);
      } else {
        auto kernel = gbn_moments_row_kernel<T, 1>;
        kernel<<<grid_for_warps(kernel, units), kThreads, 0, stream>>>(xp, x_st, n, c, s, parts, chunk, w_mean, w_m2);
      }
    } else {
      auto kernel = gbn_moments_col_kernel<T>;
      kernel<<<grid_for(kernel, kThreads, units), kThreads, 0, stream>>>(xp, x_st, n, c, s, parts, chunk, w_mean,
                                                                          w_m2);
    }
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    auto merge = gbn_stats_merge_kernel<A>;
    merge<<<grid_for_warps(merge, num_groups * c), kThreads, 0, stream>>>(
        w_mean, w_m2, group_index, group_index + num_groups + 1, c, s, parts, chunk, num_groups, eps,
        static_cast<A*>(mean_out), static_cast<A*>(invstd_out));
    return cudaGetLastError();
  });
}

cudaError_t launch_grouped_batch_norm_apply(DType dtype, const void* x, NcsStrides x_st, void* out,
                                            NcsStrides out_st, int64_t n, int64_t c, int64_t s,
                                            const int64_t* groups, const void* mean, const void* invstd,
                                            const void* weight, const void* bias, cudaStream_t stream) {
  if (n < 0 || c < 0 || s < 0) return cudaErrorInvalidValue;
  if (n == 0 || c == 0 || s == 0) return cudaSuccess;
  if (x == nullptr || out == nullptr || groups == nullptr || mean == nullptr || invstd == nullptr) {
    return cudaErrorInvalidValue;
  }
  return dispatch_float(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int V = vec16<T>();
    NcsWalk walk;
    walk.n = n;
    walk.c = c;
    walk.s = s;
    walk.channels_inner = channels_inner_layout(out_st, c, s);
    const bool vec = walk.channels_inner
                         ? c % V == 0 && channel_packable(x, x_st, V) && channel_packable(out, out_st, V)
                         : s % V == 0 && packable(x, x_st, V) && packable(out, out_st, V);
    const T* xp = static_cast<const T*>(x);
    T* op = static_cast<T*>(out);
    const A* mp = static_cast<const A*>(mean);
    const A* ip = static_cast<const A*>(invstd);
    const A* wp = static_cast<const A*>(weight);
    const A* bp = static_cast<const A*>(bias);
    auto run = [&](auto v_tag) {
      constexpr int W = decltype(v_tag)::value;
      walk.v = W;
      return walk_launch<T, W>(walk, [&](auto d1, auto packs, auto total) {
        using I = decltype(total);
        auto kernel = gbn_apply_kernel<T, W, I>;
        kernel<<<grid_for(kernel, kThreads, static_cast<int64_t>(total)), kThreads, 0, stream>>>(
            xp, x_st, op, out_st, d1, packs, total, walk.channels_inner, groups, c, mp, ip, wp, bp);
      });
    };
    return vec ? run(std::integral_constant<int, V>{}) : run(std::integral_constant<int, 1>{});
  });
}

cudaError_t launch_grouped_batch_norm_backward_reduce(DType dtype, const void* dy, NcsStrides dy_st,
                                                      const void* x, NcsStrides x_st, int64_t n, int64_t c,
                                                      int64_t s, const int64_t* groups,
                                                      const int64_t* group_index, int64_t num_groups,
                                                      int64_t parts, const void* mean, const void* invstd,
                                                      double* workspace, void* coef_a, void* coef_b,
                                                      void* grad_weight, void* grad_bias, cudaStream_t stream) {
  if (n < 0 || c < 0 || s < 0 || num_groups < 0 || parts < 1) return cudaErrorInvalidValue;
  if ((coef_a == nullptr) != (coef_b == nullptr)) return cudaErrorInvalidValue;
  if (c == 0 || num_groups == 0) {
    // No channel, or no group (then no sample either): nothing to sum.
    if (grad_weight == nullptr && grad_bias == nullptr) return cudaSuccess;
    if (c > 0) {
      const size_t bytes = static_cast<size_t>(c) * (dtype == kFloat64 ? sizeof(double) : sizeof(float));
      if (grad_weight != nullptr) cudaMemsetAsync(grad_weight, 0, bytes, stream);
      if (grad_bias != nullptr) cudaMemsetAsync(grad_bias, 0, bytes, stream);
    }
    return c > 0 ? cudaGetLastError() : cudaSuccess;
  }
  const bool empty = n == 0 || s == 0;
  if (workspace == nullptr || invstd == nullptr ||
      (!empty && (dy == nullptr || x == nullptr || mean == nullptr || groups == nullptr || group_index == nullptr))) {
    return cudaErrorInvalidValue;
  }
  return dispatch_float(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int V = vec16<T>();
    const int64_t chunk = chunk_for(s, parts);
    const int64_t units = empty ? 0 : n * parts * c;
    double* w_a = workspace;
    double* w_b = workspace + units;
    double* sum_a = workspace + 2 * units;
    double* sum_b = sum_a + num_groups * c;
    if (!empty) {
      const T* dp = static_cast<const T*>(dy);
      const T* xp = static_cast<const T*>(x);
      const A* mp = static_cast<const A*>(mean);
      if (use_rows(dy_st, x_st, s)) {
        if (packable(dy, dy_st, V) && packable(x, x_st, V) && s % V == 0) {
          auto kernel = gbn_sums_row_kernel<T, V>;
          kernel<<<grid_for_warps(kernel, units), kThreads, 0, stream>>>(dp, dy_st, xp, x_st, n, c, s, parts, chunk,
                                                                         groups, mp, w_a, w_b);
        } else {
          auto kernel = gbn_sums_row_kernel<T, 1>;
          kernel<<<grid_for_warps(kernel, units), kThreads, 0, stream>>>(dp, dy_st, xp, x_st, n, c, s, parts, chunk,
                                                                         groups, mp, w_a, w_b);
        }
      } else {
        auto kernel = gbn_sums_col_kernel<T>;
        kernel<<<grid_for(kernel, kThreads, units), kThreads, 0, stream>>>(dp, dy_st, xp, x_st, n, c, s, parts,
                                                                            chunk, groups, mp, w_a, w_b);
      }
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
    const A* ip = static_cast<const A*>(invstd);
    {
      // With no elements (empty) there are no units: sums 0.
      auto merge = gbn_sums_merge_kernel<A>;
      const int64_t* offsets = empty ? nullptr : group_index;
      const int64_t* members = empty ? nullptr : group_index + num_groups + 1;
      merge<<<grid_for_warps(merge, num_groups * c), kThreads, 0, stream>>>(
          w_a, w_b, offsets, members, c, s, parts, num_groups, ip, sum_a, sum_b, static_cast<A*>(coef_a),
          static_cast<A*>(coef_b));
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
    if (grad_weight != nullptr || grad_bias != nullptr) {
      auto kernel = gbn_param_grad_kernel<A>;
      kernel<<<grid_for(kernel, kThreads, c), kThreads, 0, stream>>>(sum_a, sum_b, ip, c, num_groups,
                                                                      static_cast<A*>(grad_weight),
                                                                      static_cast<A*>(grad_bias));
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_grouped_batch_norm_backward_input(DType dtype, const void* dy, NcsStrides dy_st, const void* x,
                                                     NcsStrides x_st, void* grad_x, NcsStrides gx_st, int64_t n,
                                                     int64_t c, int64_t s, const int64_t* groups,
                                                     const void* mean, const void* invstd, const void* weight,
                                                     const void* coef_a, const void* coef_b, cudaStream_t stream) {
  if (n < 0 || c < 0 || s < 0) return cudaErrorInvalidValue;
  if (n == 0 || c == 0 || s == 0) return cudaSuccess;
  const bool batch_stats = coef_a != nullptr;
  if (dy == nullptr || grad_x == nullptr || groups == nullptr || invstd == nullptr ||
      (batch_stats && (x == nullptr || mean == nullptr || coef_b == nullptr))) {
    return cudaErrorInvalidValue;
  }
  return dispatch_float(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    constexpr int V = vec16<T>();
    NcsWalk walk;
    walk.n = n;
    walk.c = c;
    walk.s = s;
    walk.channels_inner = channels_inner_layout(gx_st, c, s);
    const T* xp = batch_stats ? static_cast<const T*>(x) : nullptr;
    const bool vec = walk.channels_inner ? c % V == 0 && channel_packable(dy, dy_st, V) &&
                                               channel_packable(xp, x_st, V) && channel_packable(grad_x, gx_st, V)
                                         : s % V == 0 && packable(dy, dy_st, V) && packable(xp, x_st, V) &&
                                               packable(grad_x, gx_st, V);
    const T* dp = static_cast<const T*>(dy);
    T* gp = static_cast<T*>(grad_x);
    const A* mp = static_cast<const A*>(mean);
    const A* ip = static_cast<const A*>(invstd);
    const A* wp = static_cast<const A*>(weight);
    const A* ap = static_cast<const A*>(coef_a);
    const A* bp = static_cast<const A*>(coef_b);
    auto run = [&](auto v_tag) {
      constexpr int W = decltype(v_tag)::value;
      walk.v = W;
      return walk_launch<T, W>(walk, [&](auto d1, auto packs, auto total) {
        using I = decltype(total);
        auto kernel = gbn_backward_input_kernel<T, W, I>;
        kernel<<<grid_for(kernel, kThreads, static_cast<int64_t>(total)), kThreads, 0, stream>>>(
            dp, dy_st, xp, x_st, gp, gx_st, d1, packs, total, walk.channels_inner, groups, c, mp, ip, wp, ap, bp);
      });
    };
    return vec ? run(std::integral_constant<int, V>{}) : run(std::integral_constant<int, 1>{});
  });
}

}  // namespace cuda
}  // namespace pynas
