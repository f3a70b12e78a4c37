// The CPU kernels, written once with at::vec::Vectorized and compiled once per
// CPU capability by kernels_<capability>.cpp (see kernels.h). Include only
// from those files, after kernels_prelude.h and after CPU_CAPABILITY (and
// CPU_CAPABILITY_AVX2 / _AVX512) are defined.
//
// Conventions. Work is split into fixed-size items (kChunk elements, whole
// rows or planes), never by thread: a reduction is summed per item, in a
// fixed order inside the item, and then over the items in item order, so
// results do not depend on the thread count. Items are indexed with one
// division each, never per element. Loads and stores are unaligned and the
// tails of rows use partial loads/stores (zero-filled lanes).
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#ifndef CPU_CAPABILITY
#error "define CPU_CAPABILITY before including kernels_impl.h"
#endif

namespace pynas::cpu::CPU_CAPABILITY {

using at::vec::Vectorized;

template <typename scalar_t>
using acc_type = at::opmath_type<scalar_t>;

constexpr int kMaxGroup = 8;         // inputs read together, accumulating in registers
constexpr int64_t kTileBytes = 16384;  // the L1 accumulator tile (more than kMaxGroup inputs)
constexpr int64_t kChunk = 16384;    // elements per work item
constexpr int64_t kFlush = 2048;     // float partial sums go to double every this many elements
// Elements moved under which one thread runs it all: below ~1 MB the fork and
// join of the thread pool (and, on a busy machine, waiting for a descheduled
// worker) costs more than a second core gains.
constexpr int64_t kSerialWork = 1 << 18;

// f(begin, end) over consecutive ranges of [0, items): on one thread when
// fewer than kSerialWork elements move, else on the pool's threads, which
// take blocks of items in turn (a dynamic schedule). A thread that gets less
// of the CPU, on a machine shared with other work, then does less of the
// work instead of holding up the others at the join. Results do not depend on
// which thread ran which items: every reduction is per item.
//
// reverse: blocks are handed out from the end, so a second pass over data
// that a first pass just read ascending starts with what the caches still hold.
template <typename F>
void parallel_items(int64_t items, int64_t elements_moved, const F& f, bool reverse = false) {
  if (items <= 0) return;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), items);
  const bool serial = elements_moved < kSerialWork || threads <= 1 || at::in_parallel_region();
  if (serial && !reverse) {
    f(0, items);
    return;
  }
  // About 8 blocks per thread: long runs for the prefetchers, fine enough to even out.
  const int64_t block = std::max<int64_t>(1, items / (8 * std::max<int64_t>(threads, 1)));
  const int64_t blocks = (items + block - 1) / block;
  const auto run = [&](int64_t b) {
    const int64_t k = reverse ? blocks - 1 - b : b;
    f(k * block, std::min(items, (k + 1) * block));
  };
  if (serial) {
    for (int64_t b = 0; b < blocks; ++b) run(b);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t b = next.fetch_add(1); b < blocks; b = next.fetch_add(1)) run(b);
  });
}

// The second pass of a two-pass kernel (batch norm's affine after its sums).
template <typename F>
void parallel_items_reverse(int64_t items, int64_t elements_moved, const F& f) {
  parallel_items(items, elements_moved, f, /*reverse=*/true);
}

// Elements of the accumulator tile: 16 KiB of accumulators, so that each
// input is read in runs of 16 KiB (fp32) and the hardware prefetcher keeps up.
template <typename acc_t>
constexpr int64_t kTile = kTileBytes / sizeof(acc_t);

// ------------------------------------------------------------------ streaming stores
// Outputs of kStreamBytes or more (in all) are written with non-temporal
// stores where the run is vector-aligned: they skip the read of each line
// before its write (a third of a copy's traffic) and leave the caches to the
// inputs. x86 builds only; the portable build stores normally.
constexpr int64_t kStreamBytes = 4 << 20;
#if defined(CPU_CAPABILITY_AVX512)
constexpr uintptr_t kStreamAlign = 64;  // (no AVX512 build at present: see kernels.cpp)
#elif defined(CPU_CAPABILITY_AVX2)
constexpr uintptr_t kStreamAlign = 32;
#else
constexpr uintptr_t kStreamAlign = 0;
#endif

// Whether an op writing `bytes` in all streams its output.
inline bool stream_output(int64_t bytes) { return kStreamAlign > 0 && bytes >= kStreamBytes; }

// Whether a run starting at p can be streamed.
template <typename T>
inline bool stream_aligned(const T* p) {
  return kStreamAlign > 0 && reinterpret_cast<uintptr_t>(p) % kStreamAlign == 0;
}

// Orders this thread's streaming stores before what follows (the join of the
// parallel region, and whoever reads the output next).
inline void stream_fence() {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  _mm_sfence();
#endif
}

// One vector to aligned memory, non-temporally where the build can.
template <typename T>
inline void stream_vec(T* p, const Vectorized<T>& v) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    _mm512_stream_ps(p, v);
  } else if constexpr (std::is_same_v<T, double>) {
    _mm512_stream_pd(p, v);
  } else {
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), v);
  }
#elif defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    _mm256_stream_ps(p, v);
  } else if constexpr (std::is_same_v<T, double>) {
    _mm256_stream_pd(p, v);
  } else {
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v);
  }
#else
  v.store(p);
#endif
}

// ------------------------------------------------------------------ loads/stores
// Io<T>: kStep elements of T as two vectors of the accumulate type.
template <typename T, typename Enable = void>
struct Io;

template <typename T>
struct Io<T, std::enable_if_t<std::is_same_v<T, float> || std::is_same_v<T, double>>> {
  using acc_t = T;
  using V = Vectorized<T>;
  static constexpr int64_t kW = V::size();
  static constexpr int64_t kStep = 2 * kW;
  static inline void load(const T* p, V& a, V& b) {
    a = V::loadu(p);
    b = V::loadu(p + kW);
  }
  static inline void load(const T* p, int64_t n, V& a, V& b) {  // 0 < n < kStep
    if (n > kW) {
      a = V::loadu(p);
      b = V::loadu(p + kW, n - kW);
    } else {
      a = V::loadu(p, n);
      b = V(T(0));
    }
  }
  static inline void store(T* p, const V& a, const V& b) {
    a.store(p);
    b.store(p + kW);
  }
  static inline void store(T* p, int64_t n, const V& a, const V& b) {
    if (n > kW) {
      a.store(p);
      b.store(p + kW, static_cast<int>(n - kW));
    } else {
      a.store(p, static_cast<int>(n));
    }
  }
  // kStep elements to p, which stream_aligned(p) (streaming) or not (plain).
  static inline void put(T* p, bool stream, const V& a, const V& b) {
    if (stream) {
      stream_vec(p, a);
      stream_vec(p + kW, b);
    } else {
      store(p, a, b);
    }
  }
};

template <typename T>
struct Io<T, std::enable_if_t<std::is_same_v<T, at::Half> || std::is_same_v<T, at::BFloat16>>> {
  using acc_t = float;
  using V = Vectorized<float>;
  using R = Vectorized<T>;
  static constexpr int64_t kW = V::size();
  static constexpr int64_t kStep = 2 * kW;
  static_assert(R::size() == kStep, "a vector of half/bfloat16 must widen to two float vectors");
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  static inline void load(const T* p, V& a, V& b) { std::tie(a, b) = at::vec::convert_to_float<T>(R::loadu(p)); }
  static inline void load(const T* p, int64_t n, V& a, V& b) {
    std::tie(a, b) = at::vec::convert_to_float<T>(R::loadu(p, n));
  }
  static inline void store(T* p, const V& a, const V& b) { at::vec::convert_from_float<T>(a, b).store(p); }
  static inline void store(T* p, int64_t n, const V& a, const V& b) {
    at::vec::convert_from_float<T>(a, b).store(p, static_cast<int>(n));
  }
#else
  // The portable build: at::vec converts element by element through calls
  // (20x slower than the AVX2 build for half); plain loops over arrays, which
  // the compiler vectorizes, are much faster.
  static inline void load(const T* p, V& a, V& b) { load(p, kStep, a, b); }
  static inline void load(const T* p, int64_t n, V& a, V& b) {
    __at_align__ float f[kStep];
    for (int64_t i = 0; i < kStep; ++i) f[i] = i < n ? static_cast<float>(p[i]) : 0.0f;
    a = V::loadu(f);
    b = V::loadu(f + kW);
  }
  static inline void store(T* p, const V& a, const V& b) { store(p, kStep, a, b); }
  static inline void store(T* p, int64_t n, const V& a, const V& b) {
    __at_align__ float f[kStep];
    a.store(f);
    b.store(f + kW);
    for (int64_t i = 0; i < n; ++i) p[i] = static_cast<T>(f[i]);
  }
#endif
  static inline void put(T* p, bool stream, const V& a, const V& b) {
    if (stream) {
      stream_vec(p, at::vec::convert_from_float<T>(a, b));
    } else {
      store(p, a, b);
    }
  }
};

// Sum of a vector's lanes, in lane order.
template <typename A>
inline A lane_sum(const Vectorized<A>& v) {
  __at_align__ A lanes[Vectorized<A>::size()];
  v.store(lanes);
  A s = 0;
  for (int64_t i = 0; i < Vectorized<A>::size(); ++i) s += lanes[i];
  return s;
}

// ------------------------------------------------------------------ weighted sum
// One group of G inputs over len elements: acc (the L1 tile `buf`, or zero
// when `first`) += sum_g w[g] * x[g]; the result goes to `out` when `last`
// (streamed when `stream`: out is then stream_aligned), else back to `buf`
// (len rounded up to kStep: buf has room).
template <typename scalar_t, int G>
void ws_group(const scalar_t* const* x, const acc_type<scalar_t>* w, bool first, bool last,
              acc_type<scalar_t>* buf, scalar_t* out, int64_t len, bool stream) {
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  using acc_t = acc_type<scalar_t>;
  constexpr int64_t S = IO::kStep, W = IO::kW;
  V wv[G];
  const scalar_t* xp[G];
  for (int g = 0; g < G; ++g) {
    wv[g] = V(w[g]);
    xp[g] = x[g];
  }
  int64_t j = 0;
  for (; j + S <= len; j += S) {
    V a(acc_t(0)), b(acc_t(0));
    if (!first) {
      a = V::loadu(buf + j);
      b = V::loadu(buf + j + W);
    }
    for (int g = 0; g < G; ++g) {
      V p, q;
      IO::load(xp[g] + j, p, q);
      a = at::vec::fmadd(p, wv[g], a);
      b = at::vec::fmadd(q, wv[g], b);
    }
    if (last) {
      IO::put(out + j, stream, a, b);
    } else {
      a.store(buf + j);
      b.store(buf + j + W);
    }
  }
  if (j < len) {
    const int64_t n = len - j;
    V a(acc_t(0)), b(acc_t(0));
    if (!first) {
      a = V::loadu(buf + j);
      b = V::loadu(buf + j + W);
    }
    for (int g = 0; g < G; ++g) {
      V p, q;
      IO::load(xp[g] + j, n, p, q);
      a = at::vec::fmadd(p, wv[g], a);
      b = at::vec::fmadd(q, wv[g], b);
    }
    if (last) {
      IO::store(out + j, n, a, b);
    } else {
      a.store(buf + j);
      b.store(buf + j + W);
    }
  }
}

template <typename scalar_t>
void ws_group_n(int g, const scalar_t* const* x, const acc_type<scalar_t>* w, bool first, bool last,
                acc_type<scalar_t>* buf, scalar_t* out, int64_t len, bool stream) {
  switch (g) {
    case 1: return ws_group<scalar_t, 1>(x, w, first, last, buf, out, len, stream);
    case 2: return ws_group<scalar_t, 2>(x, w, first, last, buf, out, len, stream);
    case 3: return ws_group<scalar_t, 3>(x, w, first, last, buf, out, len, stream);
    case 4: return ws_group<scalar_t, 4>(x, w, first, last, buf, out, len, stream);
    case 5: return ws_group<scalar_t, 5>(x, w, first, last, buf, out, len, stream);
    case 6: return ws_group<scalar_t, 6>(x, w, first, last, buf, out, len, stream);
    case 7: return ws_group<scalar_t, 7>(x, w, first, last, buf, out, len, stream);
    default: return ws_group<scalar_t, 8>(x, w, first, last, buf, out, len, stream);
  }
}

// Per-thread scratch of the weighted sums: the L1 tile and K pointers.
template <typename scalar_t>
struct WsScratch {
  std::vector<acc_type<scalar_t>> buf = std::vector<acc_type<scalar_t>>(kTile<acc_type<scalar_t>> + Io<scalar_t>::kStep);
  std::vector<const scalar_t*> ptrs;
};

// out[0, len) = sum_k w[k] * x[k][0, len): up to kMaxGroup inputs in one pass
// with register accumulators; more go through an L1 tile, kMaxGroup at a time.
// stream: the op streams its output (where this run is aligned).
template <typename scalar_t>
void ws_range(const scalar_t* const* x, const acc_type<scalar_t>* w, int64_t k_count, scalar_t* out, int64_t len,
              WsScratch<scalar_t>& scratch, bool stream) {
  stream = stream && stream_aligned(out);
  if (k_count <= kMaxGroup) {
    ws_group_n<scalar_t>(static_cast<int>(k_count), x, w, true, true, nullptr, out, len, stream);
    return;
  }
  constexpr int64_t tile = kTile<acc_type<scalar_t>>;
  const scalar_t* xs[kMaxGroup];
  for (int64_t t = 0; t < len; t += tile) {
    const int64_t n = std::min(tile, len - t);
    for (int64_t k0 = 0; k0 < k_count; k0 += kMaxGroup) {
      const int g = static_cast<int>(std::min<int64_t>(kMaxGroup, k_count - k0));
      for (int i = 0; i < g; ++i) xs[i] = x[k0 + i] + t;
      ws_group_n<scalar_t>(g, xs, w + k0, k0 == 0, k0 + g == k_count, scratch.buf.data(), out + t, n, stream);
    }
  }
}

template <typename scalar_t>
void weighted_sum_forward_impl(const WeightedSumForward& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t k_count = static_cast<int64_t>(a.xs.size());
  const int64_t per = (a.inner + kChunk - 1) / kChunk;
  const int64_t items = a.samples * per;
  const auto* w = static_cast<const acc_t*>(a.weights);
  auto* out = static_cast<scalar_t*>(a.out);
  const bool stream = stream_output(a.samples * a.inner * static_cast<int64_t>(sizeof(scalar_t)));
  parallel_items(items, a.samples * a.inner * (k_count + 1), [&](int64_t begin, int64_t end) {
    WsScratch<scalar_t> scratch;
    scratch.ptrs.resize(k_count);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t sample = item / per;
      const int64_t lo = (item - sample * per) * kChunk;
      const int64_t len = std::min(kChunk, a.inner - lo);
      for (int64_t k = 0; k < k_count; ++k) {
        scratch.ptrs[k] = static_cast<const scalar_t*>(a.xs[k]) + sample * a.x_strides[k] + lo;
      }
      ws_range<scalar_t>(scratch.ptrs.data(), w + (a.per_sample_weights ? sample * k_count : 0), k_count,
                         out + sample * a.out_stride + lo, len, scratch, stream);
    }
    if (stream) stream_fence();
  });
}

// Backward of one group of G inputs over len elements, reading grad g once:
// gx[i] = w[i] * g where gx[i] is set (streamed when `stream`: every gx[i] is
// then stream_aligned); when kDots, dots[i] += g * x[i] with two vectors of
// lanes per input (dots: 2 * G * kW values, unaligned).
template <typename scalar_t, int G, bool kDots>
void wsb_group(const scalar_t* g, const scalar_t* const* x, scalar_t* const* gx, const acc_type<scalar_t>* w,
               acc_type<scalar_t>* dots, int64_t len, bool stream) {
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  constexpr int64_t S = IO::kStep, W = IO::kW;
  V wv[G], da[G], db[G];
  const scalar_t* xp[G];
  scalar_t* gp[G];
  for (int i = 0; i < G; ++i) {
    wv[i] = V(w[i]);
    gp[i] = gx[i];
    if (kDots) {
      xp[i] = x[i];
      da[i] = V::loadu(dots + 2 * i * W);
      db[i] = V::loadu(dots + (2 * i + 1) * W);
    }
  }
  int64_t j = 0;
  for (; j + S <= len; j += S) {
    V a, b;
    IO::load(g + j, a, b);
    for (int i = 0; i < G; ++i) {
      if (gp[i] != nullptr) IO::put(gp[i] + j, stream, a * wv[i], b * wv[i]);
      if (kDots) {
        V p, q;
        IO::load(xp[i] + j, p, q);
        da[i] = at::vec::fmadd(a, p, da[i]);
        db[i] = at::vec::fmadd(b, q, db[i]);
      }
    }
  }
  if (j < len) {
    const int64_t n = len - j;
    V a, b;
    IO::load(g + j, n, a, b);
    for (int i = 0; i < G; ++i) {
      if (gp[i] != nullptr) IO::store(gp[i] + j, n, a * wv[i], b * wv[i]);
      if (kDots) {
        V p, q;
        IO::load(xp[i] + j, n, p, q);
        da[i] = at::vec::fmadd(a, p, da[i]);
        db[i] = at::vec::fmadd(b, q, db[i]);
      }
    }
  }
  if (kDots) {
    for (int i = 0; i < G; ++i) {
      da[i].store(dots + 2 * i * W);
      db[i].store(dots + (2 * i + 1) * W);
    }
  }
}

template <typename scalar_t, bool kDots>
void wsb_group_n(int n, const scalar_t* g, const scalar_t* const* x, scalar_t* const* gx,
                 const acc_type<scalar_t>* w, acc_type<scalar_t>* dots, int64_t len, bool stream) {
  switch (n) {
    case 1: return wsb_group<scalar_t, 1, kDots>(g, x, gx, w, dots, len, stream);
    case 2: return wsb_group<scalar_t, 2, kDots>(g, x, gx, w, dots, len, stream);
    case 3: return wsb_group<scalar_t, 3, kDots>(g, x, gx, w, dots, len, stream);
    case 4: return wsb_group<scalar_t, 4, kDots>(g, x, gx, w, dots, len, stream);
    case 5: return wsb_group<scalar_t, 5, kDots>(g, x, gx, w, dots, len, stream);
    case 6: return wsb_group<scalar_t, 6, kDots>(g, x, gx, w, dots, len, stream);
    case 7: return wsb_group<scalar_t, 7, kDots>(g, x, gx, w, dots, len, stream);
    default: return wsb_group<scalar_t, 8, kDots>(g, x, gx, w, dots, len, stream);
  }
}

// Per-thread scratch of the weighted-sum backward. (Plain arrays of lanes:
// std::vector does not align over-aligned element types everywhere.)
template <typename scalar_t>
struct WsbScratch {
  using acc_t = acc_type<scalar_t>;
  static constexpr int64_t kW = Io<scalar_t>::kW;
  std::vector<const scalar_t*> x;
  std::vector<scalar_t*> gx;
  std::vector<acc_t> dots;  // two vectors of lanes per input
  explicit WsbScratch(int64_t k) : x(k, nullptr), gx(k, nullptr), dots(2 * k * kW) {}
  void clear_dots() { std::fill(dots.begin(), dots.end(), acc_t(0)); }
  // The dot product of input k: its lanes summed in a fixed order.
  acc_t dot(int64_t k) const {
    acc_t s = 0;
    for (int64_t i = 0; i < 2 * kW; ++i) s += dots[2 * k * kW + i];
    return s;
  }
};

// Over [0, len): gx[k] = w[k] * g (where set), dots[k] += g * x[k] (when
// with_dots), kMaxGroup inputs at a time over L1-sized tiles of g. stream: the
// op streams its outputs (where all of a group's runs are aligned).
template <typename scalar_t>
void wsb_range(const scalar_t* g, WsbScratch<scalar_t>& s, const acc_type<scalar_t>* w, int64_t k_count,
               bool with_dots, int64_t len, bool stream) {
  const int64_t tile = k_count <= kMaxGroup ? len : kTile<acc_type<scalar_t>>;
  const scalar_t* xs[kMaxGroup];
  scalar_t* gxs[kMaxGroup];
  for (int64_t t = 0; t < len; t += tile) {
    const int64_t n = std::min(tile, len - t);
    for (int64_t k0 = 0; k0 < k_count; k0 += kMaxGroup) {
      const int gsize = static_cast<int>(std::min<int64_t>(kMaxGroup, k_count - k0));
      bool any = with_dots, aligned = stream;
      for (int i = 0; i < gsize; ++i) {
        xs[i] = with_dots ? s.x[k0 + i] + t : nullptr;
        gxs[i] = s.gx[k0 + i] != nullptr ? s.gx[k0 + i] + t : nullptr;
        any = any || gxs[i] != nullptr;
        aligned = aligned && (gxs[i] == nullptr || stream_aligned(gxs[i]));
      }
      if (!any) continue;
      if (with_dots) {
        wsb_group_n<scalar_t, true>(gsize, g + t, xs, gxs, w + k0, s.dots.data() + 2 * k0 * s.kW, n, aligned);
      } else {
        wsb_group_n<scalar_t, false>(gsize, g + t, xs, gxs, w + k0, nullptr, n, aligned);
      }
    }
  }
}

// Fixed-order sums of per-item partials [items, K] into [rows, K], item i
// going to row i / items_per_row.
template <typename acc_t>
void sum_partials(const std::vector<acc_t>& partial, int64_t items, int64_t k_count, int64_t items_per_row,
                  acc_t* out) {
  const int64_t rows = items_per_row > 0 ? items / items_per_row : 0;
  for (int64_t r = 0; r < std::max<int64_t>(rows, 1); ++r) {
    for (int64_t k = 0; k < k_count; ++k) out[r * k_count + k] = acc_t(0);
  }
  for (int64_t i = 0; i < items; ++i) {
    acc_t* o = out + (i / items_per_row) * k_count;
    for (int64_t k = 0; k < k_count; ++k) o[k] += partial[i * k_count + k];
  }
}

template <typename scalar_t>
void weighted_sum_backward_impl(const WeightedSumBackward& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t k_count = static_cast<int64_t>(a.grad_xs.size());
  const bool with_dots = a.grad_w != nullptr;
  const int64_t per = (a.inner + kChunk - 1) / kChunk;
  const int64_t items = a.samples * per;
  const auto* w = static_cast<const acc_t*>(a.weights);
  const auto* grad = static_cast<const scalar_t*>(a.grad);
  std::vector<acc_t> partial(with_dots ? items * k_count : 0);
  int64_t streams = 1, outputs = 0;
  for (int64_t k = 0; k < k_count; ++k) {
    streams += (a.grad_xs[k] != nullptr) + with_dots;
    outputs += a.grad_xs[k] != nullptr;
  }
  const bool stream = stream_output(outputs * a.samples * a.inner * static_cast<int64_t>(sizeof(scalar_t)));
  parallel_items(items, a.samples * a.inner * streams, [&](int64_t begin, int64_t end) {
    WsbScratch<scalar_t> s(k_count);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t sample = item / per;
      const int64_t lo = (item - sample * per) * kChunk;
      const int64_t len = std::min(kChunk, a.inner - lo);
      for (int64_t k = 0; k < k_count; ++k) {
        s.x[k] = with_dots ? static_cast<const scalar_t*>(a.xs[k]) + sample * a.x_strides[k] + lo : nullptr;
        s.gx[k] = a.grad_xs[k] != nullptr
                      ? static_cast<scalar_t*>(a.grad_xs[k]) + sample * a.grad_x_strides[k] + lo
                      : nullptr;
      }
      if (with_dots) s.clear_dots();
      wsb_range<scalar_t>(grad + sample * a.grad_stride + lo, s, w + (a.per_sample_weights ? sample * k_count : 0),
                          k_count, with_dots, len, stream);
      if (with_dots) {
        for (int64_t k = 0; k < k_count; ++k) partial[item * k_count + k] = s.dot(k);
      }
    }
    if (stream) stream_fence();
  });
  if (with_dots) {
    sum_partials(partial, items, k_count, a.per_sample_weights ? per : std::max<int64_t>(items, 1),
                 static_cast<acc_t*>(a.grad_w));
  }
}

// ------------------------------------------------------------------ layouts
// [N, C, S] views: "planes" when each (n, c) is S contiguous elements, "rows"
// (channels-last) when each (n, s) is C contiguous elements.
inline bool planes(const NCSView& v) { return v.stride_s == 1 || v.s <= 1; }
inline bool rows(const NCSView& v) { return v.stride_c == 1 || v.c <= 1; }

enum class Kind { kPlanes, kRows, kStrided };

// One kind for all the views (null ones, not read, are skipped).
inline Kind common_kind(std::initializer_list<const NCSView*> views) {
  bool all_planes = true, all_rows = true;
  int64_t s = 1, c = 1;
  for (const NCSView* v : views) {
    if (v == nullptr) continue;
    all_planes = all_planes && planes(*v);
    all_rows = all_rows && rows(*v);
    s = v->s;
    c = std::max(c, v->c);
  }
  if (all_rows && (!all_planes || s < c)) return Kind::kRows;
  if (all_planes) return Kind::kPlanes;
  return all_rows ? Kind::kRows : Kind::kStrided;
}

// Rows per work item for channels-last kernels over rows of c elements.
inline int64_t rows_per_item(int64_t c) { return std::max<int64_t>(1, kChunk / std::max<int64_t>(c, 1)); }

// ------------------------------------------------------------------ channel interleave
// out[j * G + i] = in[i][j] for j < W (one vector each): G vectors in, G out.
template <int G, typename V>
inline void interleave(const V* in, V* out) {
  if constexpr (G == 1) {
    out[0] = in[0];
  } else {
    constexpr int H = G / 2;
    V lo[H], hi[H];
    for (int i = 0; i < H; ++i) std::tie(lo[i], hi[i]) = at::vec::interleave2(in[i], in[i + H]);
    interleave<H>(lo, out);
    interleave<H>(hi, out + H);
  }
}

// The inverse: in[j * G + i] -> out[i][j].
template <int G, typename V>
inline void deinterleave(const V* in, V* out) {
  if constexpr (G == 1) {
    out[0] = in[0];
  } else {
    constexpr int H = G / 2;
    V lo[H], hi[H];
    deinterleave<H>(in, lo);
    deinterleave<H>(in + H, hi);
    for (int i = 0; i < H; ++i) std::tie(out[i], out[i + H]) = at::vec::deinterleave2(lo[i], hi[i]);
  }
}

// One channels-last output row: out[j * G + i] = i == 0 ? mixed[j] : x[i * cp + j].
template <typename scalar_t, int G>
void shuffle_row(const scalar_t* mixed, const scalar_t* x, int64_t cp, scalar_t* out, bool stream) {
  stream = stream && stream_aligned(out);
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  constexpr int64_t S = IO::kStep;
  int64_t j = 0;
  for (; j + S <= cp; j += S) {
    V a[G], b[G], oa[G], ob[G];
    IO::load(mixed + j, a[0], b[0]);
    for (int i = 1; i < G; ++i) IO::load(x + i * cp + j, a[i], b[i]);
    interleave<G>(a, oa);
    interleave<G>(b, ob);
    scalar_t* o = out + j * G;
    for (int i = 0; i < G; i += 2) IO::put(o + i * IO::kW, stream, oa[i], oa[i + 1]);
    for (int i = 0; i < G; i += 2) IO::put(o + (G + i) * IO::kW, stream, ob[i], ob[i + 1]);
  }
  for (; j < cp; ++j) {
    out[j * G] = mixed[j];
    for (int i = 1; i < G; ++i) out[j * G + i] = x[i * cp + j];
  }
}

// Any groups: element by element.
template <typename scalar_t>
void shuffle_row_any(const scalar_t* mixed, const scalar_t* x, int64_t cp, int64_t groups, scalar_t* out) {
  for (int64_t j = 0; j < cp; ++j) {
    out[j * groups] = mixed[j];
    for (int64_t i = 1; i < groups; ++i) out[j * groups + i] = x[i * cp + j];
  }
}

// The inverse for the backward: gmix[j] = grad[j * G], gx[i * cp + j] =
// grad[j * G + i] for i > 0 and gx[j] = 0 (gx may be null).
template <typename scalar_t, int G>
void unshuffle_row(const scalar_t* grad, int64_t cp, scalar_t* gmix, scalar_t* gx, bool stream) {
  stream = stream && gx != nullptr && stream_aligned(gx) && stream_aligned(gx + cp);
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  constexpr int64_t S = IO::kStep;
  int64_t j = 0;
  for (; j + S <= cp; j += S) {
    V ia[G], ib[G], a[G], b[G];
    const scalar_t* g = grad + j * G;
    for (int i = 0; i < G; i += 2) IO::load(g + i * IO::kW, ia[i], ia[i + 1]);
    for (int i = 0; i < G; i += 2) IO::load(g + (G + i) * IO::kW, ib[i], ib[i + 1]);
    deinterleave<G>(ia, a);
    deinterleave<G>(ib, b);
    IO::store(gmix + j, a[0], b[0]);
    if (gx != nullptr) {
      for (int i = 1; i < G; ++i) IO::put(gx + i * cp + j, stream, a[i], b[i]);
    }
  }
  for (; j < cp; ++j) {
    gmix[j] = grad[j * G];
    if (gx != nullptr) {
      for (int i = 1; i < G; ++i) gx[i * cp + j] = grad[j * G + i];
    }
  }
  if (gx != nullptr) std::memset(static_cast<void*>(gx), 0, cp * sizeof(scalar_t));
}

template <typename scalar_t>
void unshuffle_row_any(const scalar_t* grad, int64_t cp, int64_t groups, scalar_t* gmix, scalar_t* gx) {
  for (int64_t j = 0; j < cp; ++j) {
    gmix[j] = grad[j * groups];
    if (gx != nullptr) {
      gx[j] = scalar_t(0);
      for (int64_t i = 1; i < groups; ++i) gx[i * cp + j] = grad[j * groups + i];
    }
  }
}

// ------------------------------------------------------------------ partial channel mix
template <typename scalar_t>
void partial_channel_mix_forward_impl(const PartialChannelMixForward& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t k_count = static_cast<int64_t>(a.ys.size());
  const NCSView& ov = a.ov;
  const NCSView& xv = a.xv;
  const NCSView& yv = a.yv;
  const int64_t groups = a.groups, cp = ov.c / groups;
  const auto* w = static_cast<const acc_t*>(a.weights);
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* out = static_cast<scalar_t*>(a.out);
  std::vector<const scalar_t*> ys;
  for (const void* y : a.ys) ys.push_back(static_cast<const scalar_t*>(y));
  const int64_t moved = ov.n * ov.s * (ov.c * 2 + cp * k_count);
  const bool stream = stream_output(ov.n * ov.c * ov.s * static_cast<int64_t>(sizeof(scalar_t)));
  const Kind kind = common_kind({&ov, &xv, &yv});

  if (kind == Kind::kPlanes) {
    const int64_t items = ov.n * ov.c;
    parallel_items(items, moved, [&](int64_t begin, int64_t end) {
      WsScratch<scalar_t> scratch;
      scratch.ptrs.resize(k_count);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / ov.c, o = item - n * ov.c;
        const int64_t j = o / groups, i = o - j * groups;
        scalar_t* dst = out + n * ov.stride_n + o * ov.stride_c;
        if (i != 0) {
          std::memcpy(static_cast<void*>(dst), x + n * xv.stride_n + (i * cp + j) * xv.stride_c,
                      ov.s * sizeof(scalar_t));
          continue;
        }
        for (int64_t k = 0; k < k_count; ++k) scratch.ptrs[k] = ys[k] + n * yv.stride_n + j * yv.stride_c;
        ws_range<scalar_t>(scratch.ptrs.data(), w + (a.per_sample_weights ? n * k_count : 0), k_count, dst, ov.s,
                           scratch, stream);
      }
      if (stream) stream_fence();
    });
    return;
  }
  if (kind == Kind::kRows) {
    const int64_t rpi = rows_per_item(ov.c);
    const int64_t per = (ov.s + rpi - 1) / rpi;
    const int64_t items = ov.n * per;
    parallel_items(items, moved, [&](int64_t begin, int64_t end) {
      WsScratch<scalar_t> scratch;
      scratch.ptrs.resize(k_count);
      std::vector<scalar_t> mixed(cp + Io<scalar_t>::kStep);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / per;
        const int64_t s_lo = (item - n * per) * rpi, s_hi = std::min(ov.s, s_lo + rpi);
        const acc_t* wn = w + (a.per_sample_weights ? n * k_count : 0);
        for (int64_t s = s_lo; s < s_hi; ++s) {
          scalar_t* dst = out + n * ov.stride_n + s * ov.stride_s;
          const scalar_t* xr = x + n * xv.stride_n + s * xv.stride_s;
          for (int64_t k = 0; k < k_count; ++k) scratch.ptrs[k] = ys[k] + n * yv.stride_n + s * yv.stride_s;
          // groups == 1: the output row is the mix itself.
          scalar_t* m = groups == 1 ? dst : mixed.data();
          ws_range<scalar_t>(scratch.ptrs.data(), wn, k_count, m, cp, scratch, stream && groups == 1);
          switch (groups) {
            case 1: break;
            case 2: shuffle_row<scalar_t, 2>(m, xr, cp, dst, stream); break;
            case 4: shuffle_row<scalar_t, 4>(m, xr, cp, dst, stream); break;
            case 8: shuffle_row<scalar_t, 8>(m, xr, cp, dst, stream); break;
            default: shuffle_row_any<scalar_t>(m, xr, cp, groups, dst);
          }
        }
      }
      if (stream) stream_fence();
    });
    return;
  }
  // Mixed or other layouts: element by element.
  parallel_items(ov.n * ov.c, moved, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / ov.c, o = item - n * ov.c;
      const int64_t j = o / groups, i = o - j * groups;
      scalar_t* dst = out + n * ov.stride_n + o * ov.stride_c;
      if (i != 0) {
        const scalar_t* src = x + n * xv.stride_n + (i * cp + j) * xv.stride_c;
        for (int64_t s = 0; s < ov.s; ++s) dst[s * ov.stride_s] = src[s * xv.stride_s];
        continue;
      }
      const acc_t* wn = w + (a.per_sample_weights ? n * k_count : 0);
      for (int64_t s = 0; s < ov.s; ++s) {
        acc_t acc = 0;
        for (int64_t k = 0; k < k_count; ++k) {
          acc += wn[k] * static_cast<acc_t>(ys[k][n * yv.stride_n + j * yv.stride_c + s * yv.stride_s]);
        }
        dst[s * ov.stride_s] = static_cast<scalar_t>(acc);
      }
    }
  });
}

template <typename scalar_t>
void partial_channel_mix_backward_impl(const PartialChannelMixBackward& a) {
  using acc_t = acc_type<scalar_t>;
  const int64_t k_count = static_cast<int64_t>(a.grad_ys.size());
  const bool with_dots = a.grad_w != nullptr;
  const NCSView& gv = a.gv;
  const int64_t groups = a.groups, cp = gv.c / groups;
  const auto* w = static_cast<const acc_t*>(a.weights);
  const auto* grad = static_cast<const scalar_t*>(a.grad);
  auto* grad_x = static_cast<scalar_t*>(a.grad_x);
  std::vector<const scalar_t*> ys(k_count, nullptr);
  std::vector<scalar_t*> gys(k_count, nullptr);
  bool any_gy = false;
  for (int64_t k = 0; k < k_count; ++k) {
    if (with_dots) ys[k] = static_cast<const scalar_t*>(a.ys[k]);
    gys[k] = static_cast<scalar_t*>(a.grad_ys[k]);
    any_gy = any_gy || gys[k] != nullptr;
  }
  const NCSView* yv = with_dots ? &a.yv : nullptr;
  const NCSView* gyv = any_gy ? &a.gyv : nullptr;
  const NCSView* gxv = grad_x != nullptr ? &a.gxv : nullptr;
  const int64_t moved = gv.n * gv.s * (gv.c * 2 + cp * k_count * 2);
  int64_t outputs = grad_x != nullptr ? gv.c : 0;
  for (int64_t k = 0; k < k_count; ++k) outputs += gys[k] != nullptr ? cp : 0;
  const bool stream = stream_output(outputs * gv.n * gv.s * static_cast<int64_t>(sizeof(scalar_t)));
  const Kind kind = common_kind({&gv, yv, gyv, gxv});

  // Per item partial dot products [items, K], items of one sample contiguous.
  int64_t items = 0, per = 1;
  if (kind == Kind::kRows) {
    per = (gv.s + rows_per_item(gv.c) - 1) / rows_per_item(gv.c);
    items = gv.n * per;
  } else {
    per = cp;
    items = gv.n * cp;  // one per (sample, mixed channel)
  }
  std::vector<acc_t> partial(with_dots ? items * k_count : 0, acc_t(0));

  if (kind == Kind::kPlanes) {
    const int64_t all = gv.n * gv.c;
    parallel_items(all, moved, [&](int64_t begin, int64_t end) {
      WsbScratch<scalar_t> s(k_count);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / gv.c, o = item - n * gv.c;
        const int64_t j = o / groups, i = o - j * groups;
        const scalar_t* src = grad + n * gv.stride_n + o * gv.stride_c;
        if (i != 0) {
          if (grad_x != nullptr) {
            std::memcpy(static_cast<void*>(grad_x + n * a.gxv.stride_n + (i * cp + j) * a.gxv.stride_c), src,
                        gv.s * sizeof(scalar_t));
          }
          continue;
        }
        if (grad_x != nullptr) {
          std::memset(static_cast<void*>(grad_x + n * a.gxv.stride_n + j * a.gxv.stride_c), 0,
                      gv.s * sizeof(scalar_t));
        }
        for (int64_t k = 0; k < k_count; ++k) {
          s.x[k] = with_dots ? ys[k] + n * a.yv.stride_n + j * a.yv.stride_c : nullptr;
          s.gx[k] = gys[k] != nullptr ? gys[k] + n * a.gyv.stride_n + j * a.gyv.stride_c : nullptr;
        }
        if (with_dots) s.clear_dots();
        wsb_range<scalar_t>(src, s, w + (a.per_sample_weights ? n * k_count : 0), k_count, with_dots, gv.s, stream);
        if (with_dots) {
          acc_t* p = partial.data() + (n * cp + j) * k_count;
          for (int64_t k = 0; k < k_count; ++k) p[k] = s.dot(k);
        }
      }
      if (stream) stream_fence();
    });
  } else if (kind == Kind::kRows) {
    const int64_t rpi = rows_per_item(gv.c);
    parallel_items(items, moved, [&](int64_t begin, int64_t end) {
      WsbScratch<scalar_t> s(k_count);
      std::vector<scalar_t> gmix(cp + Io<scalar_t>::kStep);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / per;
        const int64_t s_lo = (item - n * per) * rpi, s_hi = std::min(gv.s, s_lo + rpi);
        const acc_t* wn = w + (a.per_sample_weights ? n * k_count : 0);
        if (with_dots) s.clear_dots();
        for (int64_t p = s_lo; p < s_hi; ++p) {
          const scalar_t* src = grad + n * gv.stride_n + p * gv.stride_s;
          scalar_t* gx = grad_x != nullptr ? grad_x + n * a.gxv.stride_n + p * a.gxv.stride_s : nullptr;
          const scalar_t* gm = src;  // groups == 1: the grad row is the mix's gradient
          if (groups > 1) {
            switch (groups) {
              case 2: unshuffle_row<scalar_t, 2>(src, cp, gmix.data(), gx, stream); break;
              case 4: unshuffle_row<scalar_t, 4>(src, cp, gmix.data(), gx, stream); break;
              case 8: unshuffle_row<scalar_t, 8>(src, cp, gmix.data(), gx, stream); break;
              default: unshuffle_row_any<scalar_t>(src, cp, groups, gmix.data(), gx);
            }
            gm = gmix.data();
          } else if (gx != nullptr) {
            std::memset(static_cast<void*>(gx), 0, cp * sizeof(scalar_t));
          }
          for (int64_t k = 0; k < k_count; ++k) {
            s.x[k] = with_dots ? ys[k] + n * a.yv.stride_n + p * a.yv.stride_s : nullptr;
            s.gx[k] = gys[k] != nullptr ? gys[k] + n * a.gyv.stride_n + p * a.gyv.stride_s : nullptr;
          }
          wsb_range<scalar_t>(gm, s, wn, k_count, with_dots, cp, stream);
        }
        if (with_dots) {
          for (int64_t k = 0; k < k_count; ++k) partial[item * k_count + k] = s.dot(k);
        }
      }
      if (stream) stream_fence();
    });
  } else {
    const int64_t all = gv.n * gv.c;
    parallel_items(all, moved, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / gv.c, o = item - n * gv.c;
        const int64_t j = o / groups, i = o - j * groups;
        const scalar_t* src = grad + n * gv.stride_n + o * gv.stride_c;
        if (i != 0) {
          if (grad_x != nullptr) {
            scalar_t* dst = grad_x + n * a.gxv.stride_n + (i * cp + j) * a.gxv.stride_c;
            for (int64_t s = 0; s < gv.s; ++s) dst[s * a.gxv.stride_s] = src[s * gv.stride_s];
          }
          continue;
        }
        if (grad_x != nullptr) {
          scalar_t* dst = grad_x + n * a.gxv.stride_n + j * a.gxv.stride_c;
          for (int64_t s = 0; s < gv.s; ++s) dst[s * a.gxv.stride_s] = scalar_t(0);
        }
        const acc_t* wn = w + (a.per_sample_weights ? n * k_count : 0);
        acc_t* p = with_dots ? partial.data() + (n * cp + j) * k_count : nullptr;
        for (int64_t k = 0; k < k_count; ++k) {
          acc_t dot = 0;
          for (int64_t s = 0; s < gv.s; ++s) {
            const acc_t g = static_cast<acc_t>(src[s * gv.stride_s]);
            if (gys[k] != nullptr) {
              gys[k][n * a.gyv.stride_n + j * a.gyv.stride_c + s * a.gyv.stride_s] = static_cast<scalar_t>(wn[k] * g);
            }
            if (p != nullptr) dot += g * static_cast<acc_t>(ys[k][n * a.yv.stride_n + j * a.yv.stride_c + s * a.yv.stride_s]);
          }
          if (p != nullptr) p[k] = dot;
        }
      }
    });
  }
  if (with_dots) {
    sum_partials(partial, items, k_count, a.per_sample_weights ? per : std::max<int64_t>(items, 1),
                 static_cast<acc_t*>(a.grad_w));
  }
}

// ------------------------------------------------------------------ batch norm
// Shifted sums: sum (x - shift) and sum (x - shift)^2 in the accumulate type,
// moved to double every kFlush elements.
template <typename scalar_t>
void shifted_sums(const scalar_t* p, int64_t len, acc_type<scalar_t> shift, double& s1, double& s2) {
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  using acc_t = acc_type<scalar_t>;
  constexpr int64_t S = IO::kStep;
  const V k(shift);
  for (int64_t lo = 0; lo < len; lo += kFlush) {
    const int64_t hi = std::min(len, lo + kFlush);
    V a1(acc_t(0)), b1(acc_t(0)), a2(acc_t(0)), b2(acc_t(0));
    int64_t j = lo;
    for (; j + S <= hi; j += S) {
      V a, b;
      IO::load(p + j, a, b);
      a = a - k;
      b = b - k;
      a1 = a1 + a;
      b1 = b1 + b;
      a2 = at::vec::fmadd(a, a, a2);
      b2 = at::vec::fmadd(b, b, b2);
    }
    if (j < hi) {
      const int64_t n = hi - j;
      V a, b;
      IO::load(p + j, n, a, b);
      // Lanes past n load as zero: after the shift they must be masked out.
      __at_align__ acc_t mask[S];
      for (int64_t i = 0; i < S; ++i) mask[i] = i < n ? acc_t(1) : acc_t(0);
      a = (a - k) * V::loadu(mask);
      b = (b - k) * V::loadu(mask + IO::kW);
      a1 = a1 + a;
      b1 = b1 + b;
      a2 = at::vec::fmadd(a, a, a2);
      b2 = at::vec::fmadd(b, b, b2);
    }
    s1 += static_cast<double>(lane_sum(a1)) + static_cast<double>(lane_sum(b1));
    s2 += static_cast<double>(lane_sum(a2)) + static_cast<double>(lane_sum(b2));
  }
}

// Per channel over a row of c elements: s1[c] += x - shift[c], s2[c] += (x - shift[c])^2.
template <typename scalar_t>
void shifted_row_sums(const scalar_t* x, const acc_type<scalar_t>* shift, int64_t c, acc_type<scalar_t>* s1,
                      acc_type<scalar_t>* s2) {
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  constexpr int64_t S = IO::kStep, W = IO::kW;
  int64_t j = 0;
  for (; j + S <= c; j += S) {
    V a, b;
    IO::load(x + j, a, b);
    a = a - V::loadu(shift + j);
    b = b - V::loadu(shift + j + W);
    (V::loadu(s1 + j) + a).store(s1 + j);
    (V::loadu(s1 + j + W) + b).store(s1 + j + W);
    at::vec::fmadd(a, a, V::loadu(s2 + j)).store(s2 + j);
    at::vec::fmadd(b, b, V::loadu(s2 + j + W)).store(s2 + j + W);
  }
  for (; j < c; ++j) {
    const acc_type<scalar_t> d = static_cast<acc_type<scalar_t>>(x[j]) - shift[j];
    s1[j] += d;
    s2[j] += d * d;
  }
}

template <typename scalar_t>
void batch_norm_moments_impl(const BatchNormMoments& a) {
  using acc_t = acc_type<scalar_t>;
  const NCSView& v = a.v;
  const auto* x = static_cast<const scalar_t*>(a.x);
  const Kind kind = common_kind({&v});
  if (kind == Kind::kRows && v.c > 1) {
    // Channels-last: rows of C values; per item (sample, block of rows)
    // shifted sums per channel, the shift being the sample's first row, so
    // the blocks' sums add up exactly (in double, in block order).
    const int64_t rpi = std::max<int64_t>(1, std::min<int64_t>(rows_per_item(v.c), kFlush));
    const int64_t per = (v.s + rpi - 1) / rpi;
    const int64_t items = v.n * per;
    std::vector<double> p1(items * v.c), p2(items * v.c);
    parallel_items(items, v.n * v.c * v.s, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> shift(v.c), s1(v.c), s2(v.c);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / per;
        const int64_t s_lo = (item - n * per) * rpi, s_hi = std::min(v.s, s_lo + rpi);
        const scalar_t* base = x + n * v.stride_n;
        for (int64_t c = 0; c < v.c; ++c) shift[c] = static_cast<acc_t>(base[c]);
        std::fill(s1.begin(), s1.end(), acc_t(0));
        std::fill(s2.begin(), s2.end(), acc_t(0));
        for (int64_t s = s_lo; s < s_hi; ++s) shifted_row_sums<scalar_t>(base + s * v.stride_s, shift.data(), v.c, s1.data(), s2.data());
        for (int64_t c = 0; c < v.c; ++c) {
          p1[item * v.c + c] = static_cast<double>(s1[c]);
          p2[item * v.c + c] = static_cast<double>(s2[c]);
        }
      }
    });
    for (int64_t n = 0; n < v.n; ++n) {
      const scalar_t* base = x + n * v.stride_n;
      for (int64_t c = 0; c < v.c; ++c) {
        double s1 = 0, s2 = 0;
        for (int64_t b = 0; b < per; ++b) {
          s1 += p1[(n * per + b) * v.c + c];
          s2 += p2[(n * per + b) * v.c + c];
        }
        const double shift = static_cast<double>(static_cast<acc_t>(base[c]));
        const double d = v.s > 0 ? s1 / v.s : 0.0;
        a.mean[n * v.c + c] = shift + d;
        a.m2[n * v.c + c] = std::max(0.0, s2 - s1 * d);
      }
    }
    return;
  }
  // Planes (or strided): per (sample, channel), shifted by its first element.
  const int64_t items = v.n * v.c;
  parallel_items(items, items * v.s, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / v.c, c = item - n * v.c;
      const scalar_t* p = x + n * v.stride_n + c * v.stride_c;
      const acc_t shift = v.s > 0 ? static_cast<acc_t>(p[0]) : acc_t(0);
      double s1 = 0, s2 = 0;
      if (v.stride_s == 1 || v.s <= 1) {
        shifted_sums<scalar_t>(p, v.s, shift, s1, s2);
      } else {
        for (int64_t s = 0; s < v.s; ++s) {
          const double d = static_cast<double>(static_cast<acc_t>(p[s * v.stride_s]) - shift);
          s1 += d;
          s2 += d * d;
        }
      }
      const double d = v.s > 0 ? s1 / v.s : 0.0;
      a.mean[item] = static_cast<double>(shift) + d;
      a.m2[item] = std::max(0.0, s2 - s1 * d);
    }
  });
}

// out = (x - m) * a + b over a contiguous run.
template <typename scalar_t>
inline void affine_run(const scalar_t* x, acc_type<scalar_t> m, acc_type<scalar_t> a, acc_type<scalar_t> b,
                       scalar_t* out, int64_t len, bool stream) {
  stream = stream && stream_aligned(out);
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  constexpr int64_t S = IO::kStep;
  const V mv(m), av(a), bv(b);
  int64_t j = 0;
  for (; j + S <= len; j += S) {
    V p, q;
    IO::load(x + j, p, q);
    IO::put(out + j, stream, at::vec::fmadd(p - mv, av, bv), at::vec::fmadd(q - mv, av, bv));
  }
  if (j < len) {
    V p, q;
    IO::load(x + j, len - j, p, q);
    IO::store(out + j, len - j, at::vec::fmadd(p - mv, av, bv), at::vec::fmadd(q - mv, av, bv));
  }
}

// The same over a channels-last row with per-channel m, a, b.
template <typename scalar_t>
inline void affine_row(const scalar_t* x, const acc_type<scalar_t>* m, const acc_type<scalar_t>* a,
                       const acc_type<scalar_t>* b, scalar_t* out, int64_t c, bool stream) {
  stream = stream && stream_aligned(out);
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  constexpr int64_t S = IO::kStep, W = IO::kW;
  int64_t j = 0;
  for (; j + S <= c; j += S) {
    V p, q;
    IO::load(x + j, p, q);
    IO::put(out + j, stream, at::vec::fmadd(p - V::loadu(m + j), V::loadu(a + j), V::loadu(b + j)),
            at::vec::fmadd(q - V::loadu(m + j + W), V::loadu(a + j + W), V::loadu(b + j + W)));
  }
  for (; j < c; ++j) out[j] = static_cast<scalar_t>((static_cast<acc_type<scalar_t>>(x[j]) - m[j]) * a[j] + b[j]);
}

template <typename scalar_t>
void batch_norm_apply_impl(const BatchNormApply& a) {
  using acc_t = acc_type<scalar_t>;
  const NCSView& xv = a.xv;
  const NCSView& ov = a.ov;
  const auto* x = static_cast<const scalar_t*>(a.x);
  auto* out = static_cast<scalar_t*>(a.out);
  const auto* mean = static_cast<const acc_t*>(a.mean);
  const auto* scale = static_cast<const acc_t*>(a.scale);
  const auto* shift = static_cast<const acc_t*>(a.shift);
  const int64_t moved = 2 * xv.n * xv.c * xv.s;
  const bool stream = stream_output(xv.n * xv.c * xv.s * static_cast<int64_t>(sizeof(scalar_t)));
  const Kind kind = common_kind({&xv, &ov});
  if (kind == Kind::kRows) {
    const int64_t rpi = rows_per_item(xv.c);
    const int64_t per = (xv.s + rpi - 1) / rpi;
    const int64_t items = xv.n * per;
    parallel_items_reverse(items, moved, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / per;
        const int64_t s_lo = (item - n * per) * rpi, s_hi = std::min(xv.s, s_lo + rpi);
        const int64_t g = a.groups[n] * xv.c;
        for (int64_t s = s_lo; s < s_hi; ++s) {
          affine_row<scalar_t>(x + n * xv.stride_n + s * xv.stride_s, mean + g, scale + g, shift,
                               out + n * ov.stride_n + s * ov.stride_s, xv.c, stream);
        }
      }
      if (stream) stream_fence();
    });
    return;
  }
  const int64_t items = xv.n * xv.c;
  parallel_items_reverse(items, moved, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / xv.c, c = item - n * xv.c;
      const int64_t gc = a.groups[n] * xv.c + c;
      const scalar_t* p = x + n * xv.stride_n + c * xv.stride_c;
      scalar_t* q = out + n * ov.stride_n + c * ov.stride_c;
      if (kind == Kind::kPlanes) {
        affine_run<scalar_t>(p, mean[gc], scale[gc], shift[c], q, xv.s, stream);
      } else {
        for (int64_t s = 0; s < xv.s; ++s) {
          q[s * ov.stride_s] =
              static_cast<scalar_t>((static_cast<acc_t>(p[s * xv.stride_s]) - mean[gc]) * scale[gc] + shift[c]);
        }
      }
    }
    if (stream) stream_fence();
  });
}

// sum dy and sum dy * (x - m) over a contiguous run (float partials, double totals).
template <typename scalar_t>
void dy_sums_run(const scalar_t* dy, const scalar_t* x, acc_type<scalar_t> m, int64_t len, double& s1, double& s2) {
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  using acc_t = acc_type<scalar_t>;
  constexpr int64_t S = IO::kStep;
  const V mv(m);
  for (int64_t lo = 0; lo < len; lo += kFlush) {
    const int64_t hi = std::min(len, lo + kFlush);
    V a1(acc_t(0)), b1(acc_t(0)), a2(acc_t(0)), b2(acc_t(0));
    int64_t j = lo;
    for (; j + S <= hi; j += S) {
      V ga, gb, xa, xb;
      IO::load(dy + j, ga, gb);
      IO::load(x + j, xa, xb);
      a1 = a1 + ga;
      b1 = b1 + gb;
      a2 = at::vec::fmadd(ga, xa - mv, a2);
      b2 = at::vec::fmadd(gb, xb - mv, b2);
    }
    if (j < hi) {
      // Zero-filled lanes of dy contribute nothing.
      V ga, gb, xa, xb;
      IO::load(dy + j, hi - j, ga, gb);
      IO::load(x + j, hi - j, xa, xb);
      a1 = a1 + ga;
      b1 = b1 + gb;
      a2 = at::vec::fmadd(ga, xa - mv, a2);
      b2 = at::vec::fmadd(gb, xb - mv, b2);
    }
    s1 += static_cast<double>(lane_sum(a1)) + static_cast<double>(lane_sum(b1));
    s2 += static_cast<double>(lane_sum(a2)) + static_cast<double>(lane_sum(b2));
  }
}

template <typename scalar_t>
void dy_sums_row(const scalar_t* dy, const scalar_t* x, const acc_type<scalar_t>* m, int64_t c,
                 acc_type<scalar_t>* s1, acc_type<scalar_t>* s2) {
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  constexpr int64_t S = IO::kStep, W = IO::kW;
  int64_t j = 0;
  for (; j + S <= c; j += S) {
    V ga, gb, xa, xb;
    IO::load(dy + j, ga, gb);
    IO::load(x + j, xa, xb);
    (V::loadu(s1 + j) + ga).store(s1 + j);
    (V::loadu(s1 + j + W) + gb).store(s1 + j + W);
    at::vec::fmadd(ga, xa - V::loadu(m + j), V::loadu(s2 + j)).store(s2 + j);
    at::vec::fmadd(gb, xb - V::loadu(m + j + W), V::loadu(s2 + j + W)).store(s2 + j + W);
  }
  for (; j < c; ++j) {
    const acc_type<scalar_t> g = static_cast<acc_type<scalar_t>>(dy[j]);
    s1[j] += g;
    s2[j] += g * (static_cast<acc_type<scalar_t>>(x[j]) - m[j]);
  }
}

template <typename scalar_t>
void batch_norm_backward_sums_impl(const BatchNormBackwardSums& a) {
  using acc_t = acc_type<scalar_t>;
  const NCSView& xv = a.xv;
  const NCSView& gv = a.gv;
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* dy = static_cast<const scalar_t*>(a.grad);
  const auto* mean = static_cast<const acc_t*>(a.mean);
  const int64_t moved = 2 * xv.n * xv.c * xv.s;
  const Kind kind = common_kind({&xv, &gv});
  if (kind == Kind::kRows && xv.c > 1) {
    const int64_t rpi = std::max<int64_t>(1, std::min<int64_t>(rows_per_item(xv.c), kFlush));
    const int64_t per = (xv.s + rpi - 1) / rpi;
    const int64_t items = xv.n * per;
    std::vector<double> p1(items * xv.c), p2(items * xv.c);
    parallel_items(items, moved, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> s1(xv.c), s2(xv.c);
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / per;
        const int64_t s_lo = (item - n * per) * rpi, s_hi = std::min(xv.s, s_lo + rpi);
        const acc_t* m = mean + a.groups[n] * xv.c;
        std::fill(s1.begin(), s1.end(), acc_t(0));
        std::fill(s2.begin(), s2.end(), acc_t(0));
        for (int64_t s = s_lo; s < s_hi; ++s) {
          dy_sums_row<scalar_t>(dy + n * gv.stride_n + s * gv.stride_s, x + n * xv.stride_n + s * xv.stride_s, m,
                                xv.c, s1.data(), s2.data());
        }
        for (int64_t c = 0; c < xv.c; ++c) {
          p1[item * xv.c + c] = static_cast<double>(s1[c]);
          p2[item * xv.c + c] = static_cast<double>(s2[c]);
        }
      }
    });
    for (int64_t n = 0; n < xv.n; ++n) {
      for (int64_t c = 0; c < xv.c; ++c) {
        double s1 = 0, s2 = 0;
        for (int64_t b = 0; b < per; ++b) {
          s1 += p1[(n * per + b) * xv.c + c];
          s2 += p2[(n * per + b) * xv.c + c];
        }
        a.sum_dy[n * xv.c + c] = s1;
        a.sum_dy_xmu[n * xv.c + c] = s2;
      }
    }
    return;
  }
  const int64_t items = xv.n * xv.c;
  parallel_items(items, moved, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / xv.c, c = item - n * xv.c;
      const acc_t m = mean[a.groups[n] * xv.c + c];
      const scalar_t* px = x + n * xv.stride_n + c * xv.stride_c;
      const scalar_t* pg = dy + n * gv.stride_n + c * gv.stride_c;
      double s1 = 0, s2 = 0;
      if (kind == Kind::kPlanes) {
        dy_sums_run<scalar_t>(pg, px, m, xv.s, s1, s2);
      } else {
        for (int64_t s = 0; s < xv.s; ++s) {
          const double g = static_cast<double>(pg[s * gv.stride_s]);
          s1 += g;
          s2 += g * static_cast<double>(static_cast<acc_t>(px[s * xv.stride_s]) - m);
        }
      }
      a.sum_dy[item] = s1;
      a.sum_dy_xmu[item] = s2;
    }
  });
}

template <typename scalar_t>
void batch_norm_backward_apply_impl(const BatchNormBackwardApply& a) {
  using acc_t = acc_type<scalar_t>;
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  constexpr int64_t S = IO::kStep, W = IO::kW;
  const NCSView& xv = a.xv;
  const NCSView& gv = a.gv;
  const NCSView& ov = a.ov;
  const auto* x = static_cast<const scalar_t*>(a.x);
  const auto* dy = static_cast<const scalar_t*>(a.grad);
  auto* gx = static_cast<scalar_t*>(a.grad_x);
  const auto* mean = static_cast<const acc_t*>(a.mean);
  const auto* k1 = static_cast<const acc_t*>(a.k1);
  const auto* k2 = static_cast<const acc_t*>(a.k2);
  const auto* k3 = static_cast<const acc_t*>(a.k3);
  const int64_t moved = 3 * xv.n * xv.c * xv.s;
  const bool stream = stream_output(xv.n * xv.c * xv.s * static_cast<int64_t>(sizeof(scalar_t)));
  const Kind kind = common_kind({&xv, &gv, &ov});
  if (kind == Kind::kRows) {
    const int64_t rpi = rows_per_item(xv.c);
    const int64_t per = (xv.s + rpi - 1) / rpi;
    const int64_t items = xv.n * per;
    parallel_items_reverse(items, moved, [&](int64_t begin, int64_t end) {
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / per;
        const int64_t s_lo = (item - n * per) * rpi, s_hi = std::min(xv.s, s_lo + rpi);
        const int64_t g = a.groups[n] * xv.c;
        const acc_t *m = mean + g, *c1 = k1 + g, *c2 = k2 + g, *c3 = k3 + g;
        for (int64_t s = s_lo; s < s_hi; ++s) {
          const scalar_t* px = x + n * xv.stride_n + s * xv.stride_s;
          const scalar_t* pg = dy + n * gv.stride_n + s * gv.stride_s;
          scalar_t* po = gx + n * ov.stride_n + s * ov.stride_s;
          const bool st = stream && stream_aligned(po);
          int64_t j = 0;
          for (; j + S <= xv.c; j += S) {
            V ga, gb, xa, xb;
            IO::load(pg + j, ga, gb);
            IO::load(px + j, xa, xb);
            const V ra = at::vec::fmadd(V::loadu(c1 + j), ga,
                                        at::vec::fmadd(V::loadu(c2 + j), xa - V::loadu(m + j), V::loadu(c3 + j)));
            const V rb = at::vec::fmadd(
                V::loadu(c1 + j + W), gb,
                at::vec::fmadd(V::loadu(c2 + j + W), xb - V::loadu(m + j + W), V::loadu(c3 + j + W)));
            IO::put(po + j, st, ra, rb);
          }
          for (; j < xv.c; ++j) {
            po[j] = static_cast<scalar_t>(c1[j] * static_cast<acc_t>(pg[j]) +
                                          c2[j] * (static_cast<acc_t>(px[j]) - m[j]) + c3[j]);
          }
        }
      }
      if (stream) stream_fence();
    });
    return;
  }
  const int64_t items = xv.n * xv.c;
  parallel_items_reverse(items, moved, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / xv.c, c = item - n * xv.c;
      const int64_t gc = a.groups[n] * xv.c + c;
      const acc_t m = mean[gc], c1 = k1[gc], c2 = k2[gc], c3 = k3[gc];
      const scalar_t* px = x + n * xv.stride_n + c * xv.stride_c;
      const scalar_t* pg = dy + n * gv.stride_n + c * gv.stride_c;
      scalar_t* po = gx + n * ov.stride_n + c * ov.stride_c;
      if (kind == Kind::kPlanes) {
        const V mv(m), v1(c1), v2(c2), v3(c3);
        const bool st = stream && stream_aligned(po);
        int64_t j = 0;
        for (; j + S <= xv.s; j += S) {
          V ga, gb, xa, xb;
          IO::load(pg + j, ga, gb);
          IO::load(px + j, xa, xb);
          IO::put(po + j, st, at::vec::fmadd(v1, ga, at::vec::fmadd(v2, xa - mv, v3)),
                  at::vec::fmadd(v1, gb, at::vec::fmadd(v2, xb - mv, v3)));
        }
        if (j < xv.s) {
          const int64_t r = xv.s - j;
          V ga, gb, xa, xb;
          IO::load(pg + j, r, ga, gb);
          IO::load(px + j, r, xa, xb);
          IO::store(po + j, r, at::vec::fmadd(v1, ga, at::vec::fmadd(v2, xa - mv, v3)),
                    at::vec::fmadd(v1, gb, at::vec::fmadd(v2, xb - mv, v3)));
        }
      } else {
        for (int64_t s = 0; s < xv.s; ++s) {
          po[s * ov.stride_s] = static_cast<scalar_t>(c1 * static_cast<acc_t>(pg[s * gv.stride_s]) +
                                                      c2 * (static_cast<acc_t>(px[s * xv.stride_s]) - m) + c3);
        }
      }
    }
    if (stream) stream_fence();
  });
}

// ------------------------------------------------------------------ path combine
template <typename scalar_t>
void path_combine_residual_impl(const PathCombineResidual& a) {
  using IO = Io<scalar_t>;
  using V = typename IO::V;
  constexpr int64_t S = IO::kStep;
  const auto* res = static_cast<const scalar_t*>(a.residual);
  auto* out = static_cast<scalar_t*>(a.out);
  std::vector<const scalar_t*> ys;
  for (const void* y : a.ys) ys.push_back(static_cast<const scalar_t*>(y));
  const int64_t len = a.row_numel;
  const bool stream = stream_output(a.rows * len * static_cast<int64_t>(sizeof(scalar_t)));
  parallel_items(a.rows, 3 * a.rows * len, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const scalar_t* y = ys[a.choices[i]] + a.rank[i] * len;
      const scalar_t* r = res + i * len;
      scalar_t* o = out + i * len;
      const bool st = stream && stream_aligned(o);
      int64_t j = 0;
      for (; j + S <= len; j += S) {
        V p, q, u, v;
        IO::load(y + j, p, q);
        IO::load(r + j, u, v);
        IO::put(o + j, st, p + u, q + v);
      }
      if (j < len) {
        V p, q, u, v;
        IO::load(y + j, len - j, p, q);
        IO::load(r + j, len - j, u, v);
        IO::store(o + j, len - j, p + u, q + v);
      }
    }
    if (stream) stream_fence();
  });
}

// Row copies of the path ops (any dtype: bytes). memcpy's own large-copy code
// (rep movsb) writes whole lines without reading them first.
inline void path_rows(const PathRows& a, bool dispatch) {
  auto* dense = static_cast<char*>(a.dense);
  const int64_t rb = a.row_bytes;
  parallel_items(a.rows, 2 * a.rows * rb / 4, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      char* bucket = static_cast<char*>(a.buckets[a.choices[i]]) + a.rank[i] * rb;
      if (dispatch) {
        std::memcpy(bucket, dense + i * rb, rb);
      } else {
        std::memcpy(dense + i * rb, bucket, rb);
      }
    }
  });
}

inline void path_dispatch_rows(const PathRows& a) { path_rows(a, true); }
inline void path_combine_rows(const PathRows& a) { path_rows(a, false); }

// ------------------------------------------------------------------ entry points
#define PYNAS_CPU_DISPATCH(dtype, name, impl, args)                                      \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, [&] { impl<scalar_t>(args); })

inline void weighted_sum_forward(at::ScalarType t, const WeightedSumForward& a) {
  PYNAS_CPU_DISPATCH(t, "weighted_sum_cpu", weighted_sum_forward_impl, a);
}
inline void weighted_sum_backward(at::ScalarType t, const WeightedSumBackward& a) {
  PYNAS_CPU_DISPATCH(t, "weighted_sum_backward_cpu", weighted_sum_backward_impl, a);
}
inline void partial_channel_mix_forward(at::ScalarType t, const PartialChannelMixForward& a) {
  PYNAS_CPU_DISPATCH(t, "partial_channel_mix_cpu", partial_channel_mix_forward_impl, a);
}
inline void partial_channel_mix_backward(at::ScalarType t, const PartialChannelMixBackward& a) {
  PYNAS_CPU_DISPATCH(t, "partial_channel_mix_backward_cpu", partial_channel_mix_backward_impl, a);
}
inline void batch_norm_moments(at::ScalarType t, const BatchNormMoments& a) {
  PYNAS_CPU_DISPATCH(t, "grouped_batch_norm_stats_cpu", batch_norm_moments_impl, a);
}
inline void batch_norm_apply(at::ScalarType t, const BatchNormApply& a) {
  PYNAS_CPU_DISPATCH(t, "grouped_batch_norm_cpu", batch_norm_apply_impl, a);
}
inline void batch_norm_backward_sums(at::ScalarType t, const BatchNormBackwardSums& a) {
  PYNAS_CPU_DISPATCH(t, "grouped_batch_norm_sums_cpu", batch_norm_backward_sums_impl, a);
}
inline void batch_norm_backward_apply(at::ScalarType t, const BatchNormBackwardApply& a) {
  PYNAS_CPU_DISPATCH(t, "grouped_batch_norm_backward_cpu", batch_norm_backward_apply_impl, a);
}
inline void path_combine_residual(at::ScalarType t, const PathCombineResidual& a) {
  PYNAS_CPU_DISPATCH(t, "path_combine_cpu", path_combine_residual_impl, a);
}

#undef PYNAS_CPU_DISPATCH

}  // namespace pynas::cpu::CPU_CAPABILITY

// Defines pynas::cpu::<capability>::kKernels, the table of this capability's
// kernels (constant-initialised: no code runs when the library loads).
#define PYNAS_DEFINE_KERNEL_TABLE(cap)                                                            \
  namespace pynas::cpu::cap {                                                                     \
  extern const Kernels kKernels;                                                                  \
  const Kernels kKernels = {#cap,                                                                 \
                            &weighted_sum_forward,                                                \
                            &weighted_sum_backward,                                               \
                            &partial_channel_mix_forward,                                         \
                            &partial_channel_mix_backward,                                        \
                            &batch_norm_moments,                                                  \
                            &batch_norm_apply,                                                    \
                            &batch_norm_backward_sums,                                            \
                            &batch_norm_backward_apply,                                           \
                            &path_combine_residual,                                               \
                            &path_dispatch_rows,                                                  \
                            &path_combine_rows};                                                  \
  }
