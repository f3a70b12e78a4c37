// cuemu: the device side. Each thread of a block is a fiber; blocks run one
// after the other. __syncthreads and the warp collectives switch fibers and
// are checked (same call site for every thread, full warps, no exited
// participant); everything else runs as plain C++.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../cuda_runtime_api.h"

// ------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// __restrict__ is a GCC keyword already; __noinline__ is left undefined (libstdc++
// uses __attribute__((__noinline__))).
#define __constant__
#define __managed__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// __CUDA_ARCH__ stays undefined: host and device code share one compilation
// here, and host code guarded by #ifndef __CUDA_ARCH__ must stay.
// Shared memory declarations are rewritten at build time by
// tests/cuda_emu/rewrite.sed (into per-block storage that is refilled with
// NaN bytes and poisoned around each variable). One the rewrite missed
// lands here and fails to compile, naming this:
#define __shared__ cuemu_shared_declaration_not_rewritten_see_tests_cuda_emu_rewrite_sed

namespace cuemu {
namespace detail {
extern uint3 g_thread_idx;
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;

enum class Coll : int { kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kSyncWarp };
uint64_t warp_collective(Coll kind, unsigned mask, uint64_t value, int bytes, int arg, int width, const char* file,
                         int line);
int syncthreads(int op, int predicate, const char* file, int line);  // op: 0 plain, 1 count, 2 and, 3 or
unsigned activemask();
void* shared_var(const void* key, size_t bytes, size_t align, const char* name);
void* dynamic_shared();
[[noreturn]] void fatal_in_kernel(const char* what);
}  // namespace detail
}  // namespace cuemu

// ------------------------------------------------------------- built-ins
// Read-only views of the current fiber's indices (the scheduler sets them
// whenever it switches fibers).
inline const uint3& threadIdx = ::cuemu::detail::g_thread_idx;
inline const uint3& blockIdx = ::cuemu::detail::g_block_idx;
inline const dim3& blockDim = ::cuemu::detail::g_block_dim;
inline const dim3& gridDim = ::cuemu::detail::g_grid_dim;
constexpr int warpSize = 32;

// ------------------------------------------------------------- barriers
// The call site (file, line) identifies the barrier: every live thread of the
// block must wait at the same one, and none may have exited.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::cuemu::detail::syncthreads(0, 0, file, line);
}
inline int __syncthreads_count(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::cuemu::detail::syncthreads(1, pred != 0, file, line);
}
inline int __syncthreads_and(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::cuemu::detail::syncthreads(2, pred != 0, file, line);
}
inline int __syncthreads_or(int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::cuemu::detail::syncthreads(3, pred != 0, file, line);
}
inline void __threadfence() {}
inline void __threadfence_block() {}

// ------------------------------------------------------------- warp collectives
// All 32 lanes of the warp must be at the same collective (same call site)
// with mask 0xffffffff; anything else (a partial mask, an exited lane, a lane
// elsewhere) aborts the run with a message naming the kernel.
namespace cuemu {
namespace detail {
template <typename T>
inline uint64_t to_bits(const T& v) {
  static_assert(std::is_trivially_copyable<T>::value && (sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8),
                "cuemu: warp shuffles take 2, 4 or 8 byte values");
  uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <typename T>
inline T from_bits(uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <typename T>
inline T shuffle(Coll kind, unsigned mask, T var, int arg, int width, const char* file, int line) {
  return from_bits<T>(warp_collective(kind, mask, to_bits(var), static_cast<int>(sizeof(T)), arg, width, file, line));
}
}  // namespace detail
}  // namespace cuemu

template <typename T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  return ::cuemu::detail::shuffle(::cuemu::detail::Coll::kShflIdx, mask, var, src_lane, width, file, line);
}
template <typename T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::cuemu::detail::shuffle(::cuemu::detail::Coll::kShflUp, mask, var, static_cast<int>(delta), width, file,
                                  line);
}
template <typename T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::cuemu::detail::shuffle(::cuemu::detail::Coll::kShflDown, mask, var, static_cast<int>(delta), width, file,
                                  line);
}
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                         const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::cuemu::detail::shuffle(::cuemu::detail::Coll::kShflXor, mask, var, lane_mask, width, file, line);
}
inline unsigned __ballot_sync(unsigned mask, int pred, const char* file = __builtin_FILE(),
                              int line = __builtin_LINE()) {
  return static_cast<unsigned>(
      ::cuemu::detail::warp_collective(::cuemu::detail::Coll::kBallot, mask, pred != 0, 4, 0, 32, file, line));
}
inline int __any_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return static_cast<int>(
      ::cuemu::detail::warp_collective(::cuemu::detail::Coll::kAny, mask, pred != 0, 4, 0, 32, file, line));
}
inline int __all_sync(unsigned mask, int pred, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return static_cast<int>(
      ::cuemu::detail::warp_collective(::cuemu::detail::Coll::kAll, mask, pred != 0, 4, 0, 32, file, line));
}
inline void __syncwarp(unsigned mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  ::cuemu::detail::warp_collective(::cuemu::detail::Coll::kSyncWarp, mask, 0, 4, 0, 32, file, line);
}
inline unsigned __activemask() { return ::cuemu::detail::activemask(); }

// ------------------------------------------------------------- atomics
// Fibers of one block never run at the same time and blocks run one after
// the other, so plain read-modify-writes are atomic. Floating-point atomics
// are deleted: kernels.h promises no atomics on floats (fixed-order
// reductions, bit-identical results).
#define CUEMU_INT_ATOMICS(T)                       \
  inline T atomicAdd(T* p, T v) {                  \
    T old = *p;                                    \
    *p = old + v;                                  \
    return old;                                    \
  }                                                \
  inline T atomicSub(T* p, T v) {                  \
    T old = *p;                                    \
    *p = old - v;                                  \
    return old;                                    \
  }                                                \
  inline T atomicMax(T* p, T v) {                  \
    T old = *p;                                    \
    *p = old < v ? v : old;                        \
    return old;                                    \
  }                                                \
  inline T atomicMin(T* p, T v) {                  \
    T old = *p;                                    \
    *p = v < old ? v : old;                        \
    return old;                                    \
  }                                                \
  inline T atomicExch(T* p, T v) {                 \
    T old = *p;                                    \
    *p = v;                                        \
    return old;                                    \
  }                                                \
  inline T atomicCAS(T* p, T compare, T v) {       \
    T old = *p;                                    \
    if (old == compare) *p = v;                    \
    return old;                                    \
  }
CUEMU_INT_ATOMICS(int)
CUEMU_INT_ATOMICS(unsigned int)
CUEMU_INT_ATOMICS(unsigned long long)
#undef CUEMU_INT_ATOMICS
float atomicAdd(float*, float) = delete;
double atomicAdd(double*, double) = delete;

// ------------------------------------------------------------- math & loads
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }

// ------------------------------------------------------------- launches
// `k<<<grid, block, smem, stream>>>(args)` is rewritten at build time (see
// rewrite.sed) into
// `::cuemu::launch(k, "k", __FILE__, __LINE__, grid, block, smem, stream)(args)`.
namespace cuemu {
namespace detail {
struct LaunchDesc {
  const void* kernel;
  const char* expr;
  const char* file;
  int line;
  dim3 grid, block;
  size_t smem;
  cudaStream_t stream;
  size_t param_bytes;
  void (*invoke)(void* ctx);  // runs the kernel body for the current thread
  void* ctx;
};
void launch(const LaunchDesc& d);

// Kernel arguments are converted to the parameter types as by copy
// initialization, and copied once per launch (the parameter buffer).
template <typename P>
inline P implicit_convert(P v) {
  return v;
}
}  // namespace detail

template <typename... P>
class Launch {
 public:
  using Fn = void (*)(P...);
  Launch(Fn fn, const char* expr, const char* file, int line, dim3 grid, dim3 block, size_t smem,
         cudaStream_t stream)
      : fn_(fn), expr_(expr), file_(file), line_(line), grid_(grid), block_(block), smem_(smem), stream_(stream) {}

  template <typename... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "cuemu: wrong number of kernel arguments");
    static_assert((... && !std::is_reference<P>::value), "cuemu: kernel parameters are passed by value");
    static_assert((... && std::is_trivially_copyable<std::decay_t<P>>::value),
                  "cuemu: kernel parameters must be trivially copyable");
    struct Ctx {
      Fn fn;
      std::tuple<std::decay_t<P>...> params;
    } ctx{fn_, std::tuple<std::decay_t<P>...>(detail::implicit_convert<P>(std::forward<A>(args))...)};
    detail::LaunchDesc d;
    d.kernel = reinterpret_cast<const void*>(fn_);
    d.expr = expr_;
    d.file = file_;
    d.line = line_;
    d.grid = grid_;
    d.block = block_;
    d.smem = smem_;
    d.stream = stream_;
    d.param_bytes = (size_t{0} + ... + sizeof(P));
    d.invoke = [](void* c) {
      Ctx* x = static_cast<Ctx*>(c);
      std::apply(x->fn, x->params);  // each thread gets its own copy of the parameters
    };
    d.ctx = &ctx;
    detail::launch(d);
  }

 private:
  Fn fn_;
  const char* expr_;
  const char* file_;
  int line_;
  dim3 grid_, block_;
  size_t smem_;
  cudaStream_t stream_;
};

template <typename... P>
inline Launch<P...> launch(void (*fn)(P...), const char* expr, const char* file, int line, dim3 grid, dim3 block,
                           size_t smem = 0, cudaStream_t stream = 0) {
  return Launch<P...>(fn, expr, file, line, grid, block, smem, stream);
}
}  // namespace cuemu
