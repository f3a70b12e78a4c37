// Helpers shared by the pynas .cu files: accumulate types and conversions,
// 16-byte packs, dtype dispatch and launch sizing. CUDA headers only.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels.h"

// The largest flat index the launchers let a kernel's 32-bit index variant
// handle (above it they pick the int64_t variant). Only tests override it
// (tests/cuda_emu lowers it to run the int64_t variants on small inputs).
#ifndef PYNAS_CUDA_INDEX32_LIMIT
#define PYNAS_CUDA_INDEX32_LIMIT INT32_MAX
#endif

namespace pynas {
namespace cuda {
namespace detail {

constexpr int kWarp = 32;

// ------------------------------------------------------------- types
template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
struct Cast;
template <>
struct Cast<double> {
  __device__ __forceinline__ static double from(double v) { return v; }
};
template <>
struct Cast<float> {
  __device__ __forceinline__ static float from(float v) { return v; }
};
template <>
struct Cast<__half> {
  __device__ __forceinline__ static __half from(float v) { return __float2half_rn(v); }
};
template <>
struct Cast<__nv_bfloat16> {
  __device__ __forceinline__ static __nv_bfloat16 from(float v) { return __float2bfloat16_rn(v); }
};
// acc (or double) -> storage type, rounding to nearest.
template <typename T, typename A>
__device__ __forceinline__ T from_acc(A v) {
  return Cast<T>::from(static_cast<acc_t<T>>(v));
}

// Elements of T in one 16-byte access.
template <typename T>
constexpr int vec16() {
  return static_cast<int>(16 / sizeof(T));
}

// V elements of T, loaded and stored as one access of V * sizeof(T) bytes.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}
template <typename T, int V>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, V>& x) {
  *reinterpret_cast<Pack<T, V>*>(p) = x;
}

// Pointer tables: by value in the kernel parameters (up to N entries), or a
// device array. Both are indexed the same way in the kernels.
template <typename T, int N>
struct InlinePtrs {
  T* p[N];
  __device__ __forceinline__ T* operator[](int i) const { return p[i]; }
};
template <typename T>
struct DevicePtrs {
  T* const* p;
  __device__ __forceinline__ T* operator[](int i) const { return p[i]; }
};

// ------------------------------------------------------------- reductions
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ long long warp_sum(long long v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Running (count, mean, M2) of a set of values (Welford / Chan et al.).
struct Moments {
  long long count;
  double mean;
  double m2;
};

// Merges b into a (Chan et al.'s pairwise update). Exact for empty sides.
__device__ __forceinline__ void merge_moments(Moments& a, long long nb, double mean_b, double m2_b) {
  if (nb == 0) return;
  if (a.count == 0) {
    a.count = nb;
    a.mean = mean_b;
    a.m2 = m2_b;
    return;
  }
  const long long n = a.count + nb;
  const double delta = mean_b - a.mean;
  const double fb = static_cast<double>(nb) / static_cast<double>(n);
  a.mean += delta * fb;
  a.m2 += m2_b + delta * delta * static_cast<double>(a.count) * fb;
  a.count = n;
}

// Merges the moments of every lane of the warp; all lanes take part and lane
// 0 ends with the merge of all (in a fixed order, so deterministically).
__device__ __forceinline__ void warp_merge_moments(Moments& m) {
#pragma unroll
  for (int o = 1; o < kWarp; o *= 2) {
    const long long nb = __shfl_down_sync(0xffffffffu, m.count, o);
    const double mb = __shfl_down_sync(0xffffffffu, m.mean, o);
    const double m2b = __shfl_down_sync(0xffffffffu, m.m2, o);
    // Lane l merges lane l + o (when that lane is in range: the upper lanes'
    // results are never read by lane 0, so their merges are harmless).
    if ((threadIdx.x & (kWarp - 1)) + o < kWarp) merge_moments(m, nb, mb, m2b);
  }
}

// Moments of the first `m` of V values (two-pass in registers).
template <int V>
__device__ __forceinline__ void batch_moments(const double (&v)[V], int m, double& mean, double& m2) {
  double sum = 0;
#pragma unroll
  for (int j = 0; j < V; ++j) sum += j < m ? v[j] : 0.0;
  mean = sum / static_cast<double>(m);
  double sq = 0;
#pragma unroll
  for (int j = 0; j < V; ++j) {
    const double d = v[j] - mean;
    sq += j < m ? d * d : 0.0;
  }
  m2 = sq;
}

// ------------------------------------------------------------- host side
// Streaming multiprocessors of the current device (cached per device).
inline int sm_count() {
  static std::atomic<int> cache[128];
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 128) return 132;
  int n = cache[dev].load(std::memory_order_relaxed);
  if (n > 0) return n;
  if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n <= 0) return 132;
  cache[dev].store(n, std::memory_order_relaxed);
  return n;
}

// Occupancy queries made by occupancy_per_sm (cache misses): what tests read
// to check that a repeated launch is answered from the cache.
inline std::atomic<long>& occupancy_queries() {
  static std::atomic<long> count{0};
  return count;
}

// cudaOccupancyMaxActiveBlocksPerMultiprocessor(kernel, threads, 0) on the
// current device, cached per (kernel, block size, device): the query costs
// microseconds and grid_for runs on every launch. The cache is a fixed
// lock-free open-addressing table (one slot per key, never evicted; kernels
// x block sizes x devices stay in the hundreds). A slot is claimed by one
// CAS on its state (empty -> writing), filled, then published (ready, with
// release); readers use only acquire loads, so the hot path is a hash and a
// few loads. A thread that finds a slot being written, or a full table,
// queries without caching (correct, only slower).
struct OccupancySlot {
  std::atomic<int> state{0};  // 0 empty, 1 being written, 2 ready
  std::atomic<const void*> fn{nullptr};
  std::atomic<int64_t> key{0};  // threads | device << 32
  std::atomic<int> per_sm{0};
};
constexpr int kOccupancySlots = 1024;  // a power of two

inline OccupancySlot* occupancy_table() {
  static OccupancySlot table[kOccupancySlots];
  return table;
}

template <typename Kernel>
inline int occupancy_per_sm(Kernel kernel, int threads) {
  OccupancySlot* table = occupancy_table();
  const void* fn = reinterpret_cast<const void*>(kernel);
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) dev = -1;
  const int64_t key = static_cast<int64_t>(static_cast<uint32_t>(threads)) | (static_cast<int64_t>(dev) << 32);
  auto query = [&]() {
    occupancy_queries().fetch_add(1, std::memory_order_relaxed);
    int per_sm = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0) != cudaSuccess || per_sm < 1) {
      return 0;  // failed: the caller uses 1 and caches nothing
    }
    return per_sm;
  };
  uint64_t h = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(fn)) ^
               (static_cast<uint64_t>(key) * 0x9E3779B97F4A7C15ull);
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  for (int probe = 0; probe < kOccupancySlots; ++probe) {
    OccupancySlot& slot = table[(h + static_cast<uint64_t>(probe)) & (kOccupancySlots - 1)];
    int state = slot.state.load(std::memory_order_acquire);
    if (state == 0) {
      int expected = 0;
      if (!slot.state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
        state = expected;  // another thread claimed it: look at what it holds
      } else {
        const int per_sm = query();
        if (per_sm == 0) {
          slot.state.store(0, std::memory_order_release);
          return 1;
        }
        slot.fn.store(fn, std::memory_order_relaxed);
        slot.key.store(key, std::memory_order_relaxed);
        slot.per_sm.store(per_sm, std::memory_order_relaxed);
        slot.state.store(2, std::memory_order_release);
        return per_sm;
      }
    }
    if (state == 1) {  // being written (maybe our key): do not wait
      const int per_sm = query();
      return per_sm > 0 ? per_sm : 1;
    }
    if (slot.fn.load(std::memory_order_relaxed) == fn && slot.key.load(std::memory_order_relaxed) == key) {
      return slot.per_sm.load(std::memory_order_relaxed);
    }
  }
  const int per_sm = query();  // table full
  return per_sm > 0 ? per_sm : 1;
}

// Blocks for a grid-stride kernel over `items` work items of one thread
// each: no more than fit on the device at once.
template <typename Kernel>
inline unsigned grid_for(Kernel kernel, int threads, int64_t items) {
  const int64_t full = static_cast<int64_t>(sm_count()) * occupancy_per_sm(kernel, threads);
  int64_t need = (items + threads - 1) / threads;
  if (need < 1) need = 1;
  return static_cast<unsigned>(need < full ? need : full);
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Calls f(T{}) with T the storage type of dtype.
template <typename F>
inline cudaError_t dispatch_float(DType dtype, F&& f) {
  switch (dtype) {
    case kFloat64:
      return f(double{});
    case kFloat32:
      return f(float{});
    case kFloat16:
      return f(__half{});
    case kBFloat16:
      return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

inline int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case kFloat64:
      return 8;
    case kFloat32:
      return 4;
    case kFloat16:
    case kBFloat16:
      return 2;
  }
  return 0;
}

// ------------------------------------------------------------- [N, C, S] walks
// Elementwise kernels walk an [n, c, s] tensor in the memory order of the
// tensor they write, in packs of V elements along s, or along c when
// channels are innermost (channels_inner: packs of V consecutive channels of
// one position; c a multiple of V). Index type I is uint32_t when every
// flat index fits, else int64_t, to keep the divisions cheap.
struct NcsWalk {
  int64_t n = 0, c = 0, s = 0;
  bool channels_inner = false;  // order (n, s, c) instead of (n, c, s)
  int v = 1;                    // elements per pack (along c when channels_inner, else along s)
  int64_t rows() const { return channels_inner ? n * s : n * c; }
  int64_t packs_per_row() const { return channels_inner ? c / v : s / v; }
  int64_t total() const { return rows() * packs_per_row(); }
};

// Whether the tensor with these strides is laid out channels-innermost.
inline bool channels_inner_layout(const NcsStrides& st, int64_t c, int64_t s) {
  return c > 1 && s > 1 && st.c == 1;
}

template <typename I>
__device__ __forceinline__ void ncs_position(I idx, I d1, I packs, bool channels_inner, int v, int64_t& n,
                                             int64_t& c, int64_t& s) {
  const I r = idx / packs;
  const I p = idx - r * packs;
  const I nn = r / d1;
  const I a = r - nn * d1;
  n = static_cast<int64_t>(nn);
  if (channels_inner) {
    c = static_cast<int64_t>(p) * v;
    s = static_cast<int64_t>(a);
  } else {
    c = static_cast<int64_t>(a);
    s = static_cast<int64_t>(p) * v;
  }
}

__device__ __forceinline__ int64_t ncs_offset(const NcsStrides& st, int64_t n, int64_t c, int64_t s) {
  return n * st.n + c * st.c + s * st.s;
}

// Whether a pack of v elements along s is one aligned access for a tensor:
// stride_s 1, n/c strides multiples of v, base 16-byte aligned.
inline bool packable(const void* p, const NcsStrides& st, int v) {
  return p == nullptr || (aligned16(p) && st.s == 1 && st.n % v == 0 && st.c % v == 0);
}

// Whether a pack of v consecutive channels is one aligned access for a
// tensor: stride_c 1, n/s strides multiples of v, base 16-byte aligned (c a
// multiple of v is the caller's check).
inline bool channel_packable(const void* p, const NcsStrides& st, int v) {
  return p == nullptr || (aligned16(p) && st.c == 1 && st.n % v == 0 && st.s % v == 0);
}

}  // namespace detail
}  // namespace cuda
}  // namespace pynas
