// Self-test of the emulator and harness: one deliberately broken kernel (or
// launcher) per bug class, each with its fixed twin. Every case runs in its
// own process (run.sh):
//
//   cuemu_selftest --list            name|expected finding|what is wrong
//   cuemu_selftest CASE              the broken version: must FAIL with the finding
//   cuemu_selftest CASE --fixed      the fixed version: must pass
//
// The launchers follow kernels.h's conventions (return cudaGetLastError()
// after the last launch) and are checked like the real ones (LaunchScope,
// Compare, sentinel-filled gaps).
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "device_utils.cuh"
#include "harness.h"

namespace emu {
namespace {

using pynas::cuda::detail::load_pack;
using pynas::cuda::detail::Pack;
using pynas::cuda::detail::store_pack;

constexpr int kThreads = 256;

// ------------------------------------------------------------- warp shuffles
// Per-warp sums of x[0, n): out[w] = sum of x[32 w, 32 w + 32).
__global__ void warp_sums_broken(const float* x, int n, float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;  // BUG: lanes past n leave before the full-warp shuffle
  float v = x[i];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) out[i / 32] = v;
}
__global__ void warp_sums_partial_mask(const float* x, int n, float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = i < n ? x[i] : 0.0f;
  // BUG: a partial mask; lanes 16-31 are not part of the exchange.
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0x0000ffffu, v, o);
  if ((threadIdx.x & 31) == 0 && i < n) out[i / 32] = v;
}
__global__ void warp_sums_fixed(const float* x, int n, float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  float v = i < n ? x[i] : 0.0f;  // every lane takes part
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0 && i < n) out[i / 32] = v;
}

int run_warp_sums(Suite& suite, int variant) {  // 0 fixed, 1 exited lanes, 2 partial mask
  const int n = 100;
  Rng rng(1);
  Tensor x = Tensor::flat(kFloat32, n), out = Tensor::flat(kFloat32, (n + 31) / 32);
  x.fill_random(rng, -1, 1);
  LaunchScope scope(suite, "warp sums");
  auto k = variant == 0 ? warp_sums_fixed : variant == 1 ? warp_sums_broken : warp_sums_partial_mask;
  k<<<1, 128, 0, scope.stream()>>>(static_cast<const float*>(x.data()), n, static_cast<float*>(out.data()));
  scope.finish(cudaGetLastError());
  Compare cmp(suite, "warp sums", "out");
  for (int w = 0; w * 32 < n; ++w) {
    double ref = 0;
    for (int i = w * 32; i < n && i < w * 32 + 32; ++i) ref += x.at(i);
    cmp.close(strf("out[%d]", w), out.at(w), ref, 1e-5);
  }
  return 0;
}

// ------------------------------------------------------------- misaligned pack
// out = 2 * x in packs of 4 floats.
__global__ void scale_packs(const float* x, int64_t packs, float* out) {
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < packs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Pack<float, 4> v = load_pack<float, 4>(x + 4 * p);
    for (int e = 0; e < 4; ++e) v.v[e] *= 2.0f;
    store_pack<float, 4>(out + 4 * p, v);
  }
}
__global__ void scale_scalar(const float* x, int64_t n, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = 2.0f * x[i];
  }
}
cudaError_t launch_scale(const float* x, int64_t n, float* out, bool check_alignment, cudaStream_t stream) {
  const bool vec = n % 4 == 0 && (!check_alignment || (pynas::cuda::detail::aligned16(x) &&
                                                        pynas::cuda::detail::aligned16(out)));  // BUG when unchecked
  if (vec) {
    scale_packs<<<2, kThreads, 0, stream>>>(x, n / 4, out);
  } else {
    scale_scalar<<<2, kThreads, 0, stream>>>(x, n, out);
  }
  return cudaGetLastError();
}

int run_scale(Suite& suite, bool fixed) {
  const int64_t n = 64;
  Rng rng(2);
  Tensor x = Tensor::flat(kFloat32, n, /*misaligned=*/true), out = Tensor::flat(kFloat32, n);
  x.fill_random(rng, -1, 1);
  LaunchScope scope(suite, "scale (misaligned input)");
  scope.finish(launch_scale(static_cast<const float*>(x.data()), n, static_cast<float*>(out.data()), fixed,
                            scope.stream()));
  Compare cmp(suite, "scale", "out");
  for (int64_t i = 0; i < n; ++i) cmp.close(strf("out[%lld]", (long long)i), out.at(i), 2 * x.at(i), 0);
  return 0;
}

// ------------------------------------------------------------- out-of-bounds read
// out[i] = x[i] + x[i + 1] (x[n] counts as 0).
__global__ void pair_sums(const float* x, int n, float* out, bool fixed) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float next = fixed ? (i + 1 < n ? x[i + 1] : 0.0f) : x[i + 1];  // BUG: reads x[n]
  out[i] = x[i] + (i + 1 < n ? next : 0.0f);
}

int run_pair_sums(Suite& suite, bool fixed) {
  const int n = 50;
  Rng rng(3);
  Tensor x = Tensor::flat(kFloat32, n), out = Tensor::flat(kFloat32, n);
  x.fill_random(rng, -1, 1);
  LaunchScope scope(suite, "pair sums");
  pair_sums<<<1, 64, 0, scope.stream()>>>(static_cast<const float*>(x.data()), n, static_cast<float*>(out.data()),
                                          fixed);
  scope.finish(cudaGetLastError());
  Compare cmp(suite, "pair sums", "out");
  for (int i = 0; i < n; ++i) {
    const double ref = x.at(i) + (i + 1 < n ? x.at(i + 1) : 0.0);
    cmp.close(strf("out[%d]", i), out.at(i), ref, 1e-6);
  }
  return 0;
}

// ------------------------------------------------------------- uninitialized shared memory
// out[b] = sum of x over block b's 256 slots (a shared-memory tree).
__global__ void block_sums(const float* x, int n, float* out, bool fixed) {
  __shared__ float buf[kThreads];
  const int t = threadIdx.x, i = blockIdx.x * kThreads + t;
  if (i < n) {
    buf[t] = x[i];
  } else if (fixed) {
    buf[t] = 0.0f;  // BUG when missing: the tree below reads every slot
  }
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s /= 2) {
    if (t < s) buf[t] += buf[t + s];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = buf[0];
}

int run_block_sums(Suite& suite, bool fixed) {
  const int n = 300;
  Rng rng(4);
  Tensor x = Tensor::flat(kFloat32, n), out = Tensor::flat(kFloat32, 2);
  x.fill_random(rng, -1, 1);
  LaunchScope scope(suite, "block sums");
  block_sums<<<2, kThreads, 0, scope.stream()>>>(static_cast<const float*>(x.data()), n,
                                                 static_cast<float*>(out.data()), fixed);
  scope.finish(cudaGetLastError());
  Compare cmp(suite, "block sums", "out");
  for (int b = 0; b < 2; ++b) {
    double ref = 0;
    for (int i = b * kThreads; i < n && i < (b + 1) * kThreads; ++i) ref += x.at(i);
    cmp.close(strf("out[%d]", b), out.at(b), ref, 1e-4);
  }
  return 0;
}

// ------------------------------------------------------------- barriers
// Doubles x in place through shared memory, with a barrier between the
// load and the store.
__global__ void divergent_barrier(float* x, int n, bool fixed) {
  __shared__ float buf[kThreads];
  const int t = threadIdx.x, i = blockIdx.x * kThreads + t;
  buf[t] = i < n ? x[i] : 0.0f;
  if (fixed) {
    __syncthreads();
  } else if (t < 64) {
    buf[t] *= 1.0f;
    __syncthreads();  // BUG: the other threads wait at a different barrier
  } else {
    __syncthreads();
  }
  if (i < n) x[i] = 2.0f * buf[t];
}
__global__ void barrier_after_exit(float* x, int n, bool fixed) {
  __shared__ float buf[kThreads];
  const int t = threadIdx.x, i = blockIdx.x * kThreads + t;
  if (!fixed && i >= n) return;  // BUG: these threads never reach the barrier
  buf[t] = i < n ? x[i] : 0.0f;
  __syncthreads();
  if (i < n) x[i] = 2.0f * buf[t];
}

int run_barrier(Suite& suite, bool fixed, bool exit_case) {
  const int n = 200;
  Rng rng(5);
  Tensor x = Tensor::flat(kFloat32, n);
  x.fill_random(rng, -1, 1);
  std::vector<double> before(n);
  for (int i = 0; i < n; ++i) before[i] = x.at(i);
  LaunchScope scope(suite, "in-place doubling");
  if (exit_case) {
    barrier_after_exit<<<1, kThreads, 0, scope.stream()>>>(static_cast<float*>(x.data()), n, fixed);
  } else {
    divergent_barrier<<<1, kThreads, 0, scope.stream()>>>(static_cast<float*>(x.data()), n, fixed);
  }
  scope.finish(cudaGetLastError());
  Compare cmp(suite, "in-place doubling", "x");
  for (int i = 0; i < n; ++i) cmp.close(strf("x[%d]", i), x.at(i), 2 * before[i], 0);
  return 0;
}

// ------------------------------------------------------------- launch configuration
__global__ void fill_kernel(float* out, int64_t n, float v) {
  const int64_t i = (static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = v;
}
// variant: 0 zero grid for n = 0, 1 one block of n threads, 2 a grid of n rows in y.
cudaError_t launch_fill(float* out, int64_t n, float v, int variant, bool fixed, cudaStream_t stream) {
  if (fixed) {
    if (n == 0) return cudaSuccess;
    const int64_t blocks = (n + kThreads - 1) / kThreads;
    fill_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(out, n, v);
  } else if (variant == 0) {
    fill_kernel<<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, stream>>>(out, n, v);  // BUG: n = 0
  } else if (variant == 1) {
    fill_kernel<<<1, static_cast<unsigned>(n), 0, stream>>>(out, n, v);  // BUG: n > 1024 threads
  } else {
    fill_kernel<<<dim3(1, static_cast<unsigned>(n)), 1, 0, stream>>>(out, n, v);  // BUG: n > 65535 rows
  }
  return cudaGetLastError();
}

int run_fill(Suite& suite, int variant, bool fixed) {
  const int64_t n = variant == 0 ? 0 : variant == 1 ? 2000 : 70000;
  Tensor out = Tensor::flat(kFloat32, n);
  LaunchScope scope(suite, strf("fill n=%lld", (long long)n));
  scope.finish(launch_fill(static_cast<float*>(out.data()), n, 1.5f, variant, fixed, scope.stream()),
               n == 0 ? LaunchScope::kNoLaunches : LaunchScope::kSomeLaunches);
  Compare cmp(suite, "fill", "out");
  for (int64_t i = 0; i < n; ++i) {
    if (out.at(i) == 1.5) {
      cmp.passed();
    } else {
      cmp.close(strf("out[%lld]", (long long)i), out.at(i), 1.5, 0);
    }
  }
  return 0;
}

// ------------------------------------------------------------- streams
cudaError_t launch_fill_on(float* out, int64_t n, float v, bool fixed, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  if (fixed) {
    fill_kernel<<<blocks, kThreads, 0, stream>>>(out, n, v);
  } else {
    fill_kernel<<<blocks, kThreads>>>(out, n, v);  // BUG: the default stream, not `stream`
  }
  return cudaGetLastError();
}

int run_stream(Suite& suite, bool fixed) {
  const int64_t n = 100;
  Tensor out = Tensor::flat(kFloat32, n);
  LaunchScope scope(suite, "fill on a stream");
  scope.finish(launch_fill_on(static_cast<float*>(out.data()), n, 2.5f, fixed, scope.stream()));
  Compare cmp(suite, "fill on a stream", "out");
  for (int64_t i = 0; i < n; ++i) cmp.close(strf("out[%lld]", (long long)i), out.at(i), 2.5, 0);
  return 0;
}

// ------------------------------------------------------------- shared memory bounds and size
__global__ void shared_reverse(float* x, int n, bool fixed) {
  __shared__ float buf[kThreads / 2];
  const int t = threadIdx.x;
  const int slots = fixed ? kThreads / 2 : kThreads;  // BUG: a block of 256 threads, 128 slots
  float* p = buf;  // through a pointer, as a helper taking the buffer would
  if (t < slots) p[t] = t < n ? x[t] : 0.0f;
  __syncthreads();
  if (t < n && t < kThreads / 2) x[t] = buf[kThreads / 2 - 1 - t];
}

int run_shared_reverse(Suite& suite, bool fixed) {
  const int n = 128;
  Rng rng(6);
  Tensor x = Tensor::flat(kFloat32, n);
  x.fill_random(rng, -1, 1);
  std::vector<double> before(n);
  for (int i = 0; i < n; ++i) before[i] = x.at(i);
  LaunchScope scope(suite, "reverse through shared memory");
  shared_reverse<<<1, kThreads, 0, scope.stream()>>>(static_cast<float*>(x.data()), n, fixed);
  scope.finish(cudaGetLastError());
  Compare cmp(suite, "reverse", "x");
  for (int i = 0; i < n; ++i) cmp.close(strf("x[%d]", i), x.at(i), before[n - 1 - i], 0);
  return 0;
}

__global__ void big_shared(double* out) {
  __shared__ double table[7000];  // BUG: 56000 bytes > 48 KiB
  table[threadIdx.x] = threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = table[threadIdx.x];
}
__global__ void small_shared(double* out) {
  __shared__ double table[4000];
  table[threadIdx.x] = threadIdx.x;
  __syncthreads();
  out[threadIdx.x] = table[threadIdx.x];
}

int run_big_shared(Suite& suite, bool fixed) {
  Tensor out = Tensor::flat(kFloat64, 64);
  LaunchScope scope(suite, "shared table");
  if (fixed) {
    small_shared<<<1, 64, 0, scope.stream()>>>(static_cast<double*>(out.data()));
  } else {
    big_shared<<<1, 64, 0, scope.stream()>>>(static_cast<double*>(out.data()));
  }
  scope.finish(cudaGetLastError());
  Compare cmp(suite, "shared table", "out");
  for (int i = 0; i < 64; ++i) cmp.close(strf("out[%d]", i), out.at(i), i, 0);
  return 0;
}

// ------------------------------------------------------------- writes into gaps
// Copies x into out, both [n, c, s]; the broken one ignores out's strides.
__global__ void copy_ncs(const float* x, NcsStrides xs, float* out, NcsStrides os, int64_t n, int64_t c, int64_t s,
                         bool fixed) {
  const int64_t total = n * c * s;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t a = i / (c * s), b = (i / s) % c, d = i % s;
    const int64_t o = fixed ? a * os.n + b * os.c + d * os.s : i;  // BUG: assumes out is contiguous
    out[o] = x[a * xs.n + b * xs.c + d * xs.s];
  }
}

int run_gap_write(Suite& suite, bool fixed) {
  Rng rng(7);
  Tensor x(kFloat32, 2, 3, 5, Layout::kContig), out(kFloat32, 2, 3, 5, Layout::kPadded);
  x.fill_random(rng, -1, 1);
  LaunchScope scope(suite, "strided copy");
  copy_ncs<<<1, 64, 0, scope.stream()>>>(static_cast<const float*>(x.data()), x.strides(),
                                         static_cast<float*>(out.data()), out.strides(), 2, 3, 5, fixed);
  scope.finish(cudaGetLastError());
  check_untouched(suite, "strided copy", {&out}, {});
  Compare cmp(suite, "strided copy", "out");
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 3; ++b)
      for (int d = 0; d < 5; ++d) cmp.exact_bits(strf("out[%d, %d, %d]", a, b, d), out.bits(a, b, d), x.bits(a, b, d));
  return 0;
}

// ------------------------------------------------------------- the cases
struct Case {
  const char* name;
  const char* finding;  // what the output of the broken run must contain
  const char* what;
  std::function<int(Suite&, bool)> run;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"partial_warp_shuffle", "has exited", "lanes past n return before a full-warp __shfl_xor_sync",
       [](Suite& s, bool f) { return run_warp_sums(s, f ? 0 : 1); }},
      {"partial_mask_shuffle", "partial mask", "__shfl_xor_sync with mask 0x0000ffff",
       [](Suite& s, bool f) { return run_warp_sums(s, f ? 0 : 2); }},
      {"misaligned_vector_load", "misaligned address", "16-byte pack loads from a base one float off alignment",
       run_scale},
      {"out_of_bounds_read", "heap-buffer-overflow", "reads x[n], one past the end", run_pair_sums},
      {"uninitialized_shared_read", "MISMATCH", "a shared-memory tree reads slots no thread wrote", run_block_sums},
      {"divergent_barrier", "wait at different barriers", "threads < 64 and the others call different __syncthreads",
       [](Suite& s, bool f) { return run_barrier(s, f, false); }},
      {"barrier_after_exit", "exited while others wait", "threads past n return before a __syncthreads",
       [](Suite& s, bool f) { return run_barrier(s, f, true); }},
      {"zero_grid", "cudaErrorInvalidConfiguration", "a grid of ceil(n / 256) = 0 blocks for n = 0",
       [](Suite& s, bool f) { return run_fill(s, 0, f); }},
      {"oversized_block", "cudaErrorInvalidConfiguration", "a block of n = 2000 threads",
       [](Suite& s, bool f) { return run_fill(s, 1, f); }},
      {"oversized_grid", "cudaErrorInvalidConfiguration", "gridDim.y = n = 70000 > 65535",
       [](Suite& s, bool f) { return run_fill(s, 2, f); }},
      {"wrong_stream", "not to the launcher's stream", "the kernel is launched on the default stream", run_stream},
      {"shared_out_of_bounds", "use-after-poison", "256 threads write a 128-slot __shared__ array",
       run_shared_reverse},
      {"shared_too_large", "> 49152", "56000 bytes of static __shared__ memory", run_big_shared},
      {"write_into_gap", "gap bytes changed", "a copy that ignores the output's strides", run_gap_write},
  };
  return c;
}

}  // namespace
}  // namespace emu

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  using emu::cases;
  if (argc >= 2 && std::strcmp(argv[1], "--list") == 0) {
    for (const auto& c : cases()) std::printf("%s|%s|%s\n", c.name, c.finding, c.what);
    return 0;
  }
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s --list | CASE [--fixed]\n", argv[0]);
    return 2;
  }
  const bool fixed = argc >= 3 && std::strcmp(argv[2], "--fixed") == 0;
  for (const auto& c : cases()) {
    if (c.name != std::string(argv[1])) continue;
    emu::configure_envs();
    emu::enter(emu::all_envs()[0]);
    emu::Suite suite(c.name);
    c.run(suite, fixed);
    std::printf("%s (%s): %d failure(s)\n", c.name, fixed ? "fixed" : "broken", suite.failures());
    return suite.failures() ? 1 : 0;
  }
  std::fprintf(stderr, "unknown case %s\n", argv[1]);
  return 2;
}
