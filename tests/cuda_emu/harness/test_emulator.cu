// Tests of the emulator itself (it is compiled through rewrite.sed like the
// kernels): half / bfloat16 conversions against independent ones, warp
// collectives, barriers with a result, shared memory (fresh NaN bytes per
// block, alignment), built-in variables in 3-D launches, launch limits and
// errors, stream recording, devices and occupancy, per-thread parameters.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>

#include "device_utils.cuh"
#include "harness.h"

namespace emu {
namespace {

// ------------------------------------------------------------- conversions
void test_conversions(Suite& suite) {
  Compare cmp(suite, "emulator conversions", "__half / __nv_bfloat16 intrinsics");
#if defined(__FLT16_MAX__)
  // Every half to float.
  for (uint32_t h = 0; h < 65536; ++h) {
    _Float16 r;
    const uint16_t hb = static_cast<uint16_t>(h);
    std::memcpy(&r, &hb, 2);
    const float want = static_cast<float>(r);
    const float got = __half2float(__ushort_as_half(hb));
    if (want != want) {
      cmp.truth(strf("half2float(0x%04x)", h), got != got, "not NaN");
    } else {
      cmp.exact_bits(strf("half2float(0x%04x)", h), cuemu::f32_bits(got), cuemu::f32_bits(want));
    }
  }
  // float to half: a sweep of all float bit patterns, and every tie (the
  // float halfway between two consecutive halves) and its neighbours.
  auto check_f2h = [&](float f) {
    const _Float16 r = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &r, 2);
    const uint16_t got = __half_as_ushort(__float2half_rn(f));
    if (got == want) return cmp.passed();
    if (f != f) {
      cmp.truth(strf("float2half_rn(%a)", f), (got & 0x7c00) == 0x7c00 && (got & 0x3ff) != 0, "not NaN");
    } else {
      cmp.exact_bits(strf("float2half_rn(%a)", static_cast<double>(f)), got, want);
    }
  };
  for (uint64_t u = 0; u < (1ULL << 32); u += 4093) check_f2h(cuemu::f32_from_bits(static_cast<uint32_t>(u)));
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    const float lo = cuemu::f16_to_f32(static_cast<uint16_t>(h)), hi = cuemu::f16_to_f32(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((static_cast<double>(lo) + hi) / 2);
    for (float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      check_f2h(f);
      check_f2h(-f);
    }
  }
  for (float f : {65504.0f, 65519.99f, 65520.0f, 1e30f, INFINITY, -INFINITY, NAN, 0.0f, -0.0f, 5.96e-8f, 2.98e-8f,
                  2.99e-8f}) {
    check_f2h(f);
  }
#else
  suite.note("no _Float16 in this compiler: half conversions not cross-checked");
#endif
  // bfloat16: float -> bf16 against rounding to 8 significant bits in
  // double (normal range), and bf16 -> float.
  for (uint64_t u = 0; u < (1ULL << 32); u += 4093) {
    const float f = cuemu::f32_from_bits(static_cast<uint32_t>(u));
    const float a = std::fabs(f);
    if (!(a >= 0x1p-126f) || a >= 0x1.fep127f) continue;
    const float want = static_cast<float>(round_to(kBFloat16, f));
    const float got = __bfloat162float(__float2bfloat16_rn(f));
    if (cuemu::f32_bits(got) == cuemu::f32_bits(want)) {
      cmp.passed();
      continue;
    }
    cmp.exact_bits(strf("float2bfloat16_rn(%a)", static_cast<double>(f)), cuemu::f32_bits(got), cuemu::f32_bits(want));
  }
  cmp.exact_bits("float2bfloat16_rn(max)", __bfloat16_as_ushort(__float2bfloat16_rn(0x1.fep127f)), 0x7f7f);
  cmp.exact_bits("float2bfloat16_rn(overflow)", __bfloat16_as_ushort(__float2bfloat16_rn(0x1.ffp127f)), 0x7f80);
  cmp.truth("float2bfloat16_rn(NaN)", (__bfloat16_as_ushort(__float2bfloat16_rn(NAN)) & 0x7fff) > 0x7f80, "not NaN");
}

// ------------------------------------------------------------- warp collectives
// out[t * 8 + j]: results of the collectives of thread t.
__global__ void collectives_kernel(int* out, int width) {
  const int t = threadIdx.x, lane = t & 31;
  int* o = out + t * 8;
  o[0] = __shfl_xor_sync(0xffffffffu, t * 10, 5, width);
  o[1] = __shfl_down_sync(0xffffffffu, t * 10, 3, width);
  o[2] = __shfl_up_sync(0xffffffffu, t * 10, 2, width);
  o[3] = __shfl_sync(0xffffffffu, t * 10, (lane * 7) % 32, width);
  o[4] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
  o[5] = __any_sync(0xffffffffu, t == 40) * 2 + __all_sync(0xffffffffu, t != 3);
  o[6] = static_cast<int>(pynas::cuda::detail::warp_sum(static_cast<long long>(t)));
  const double d = __shfl_xor_sync(0xffffffffu, 0.5 + t, 1);
  o[7] = static_cast<int>(d * 2);
}

void test_collectives(Suite& suite) {
  for (int width : {32, 16, 8, 1}) {
    const int n = 64;
    std::vector<int> out(n * 8, -1);
    collectives_kernel<<<1, n>>>(out.data(), width);
    Compare cmp(suite, strf("emulator warp collectives (width %d)", width), "results");
    for (int t = 0; t < n; ++t) {
      const int lane = t & 31, seg = lane & ~(width - 1), base = t - lane;
      auto val = [&](int l) { return (base + l) * 10; };
      const int x = lane ^ 5;
      const int want_xor = (x & ~(width - 1)) <= seg ? val(x) : val(lane);
      const int want_down = (lane - seg) + 3 < width ? val(lane + 3) : val(lane);
      const int want_up = (lane - seg) >= 2 ? val(lane - 2) : val(lane);
      const int want_idx = val(seg + ((lane * 7) % 32) % width);
      unsigned ballot = 0;
      for (int l = 0; l < 32; ++l) ballot |= (l % 3 == 0 ? 1u : 0u) << l;
      const int want_vote = (base == 32 ? 2 : 0) + (base == 0 ? 0 : 1);
      long long sum = 0;
      for (int l = 0; l < 32; ++l) sum += base + l;
      const int* o = &out[t * 8];
      cmp.close(strf("xor t=%d", t), o[0], want_xor, 0);
      cmp.close(strf("down t=%d", t), o[1], want_down, 0);
      cmp.close(strf("up t=%d", t), o[2], want_up, 0);
      cmp.close(strf("idx t=%d", t), o[3], want_idx, 0);
      cmp.close(strf("ballot t=%d", t), o[4], static_cast<int>(ballot), 0);
      cmp.close(strf("any/all t=%d", t), o[5], want_vote, 0);
      cmp.close(strf("warp_sum t=%d", t), o[6], static_cast<double>(sum), 0);
      cmp.close(strf("xor double t=%d", t), o[7], 2 * (0.5 + (t ^ 1)), 0);
    }
  }
}

// ------------------------------------------------------------- barriers, shared memory
__global__ void barrier_kernel(int* out) {
  const int t = threadIdx.x;
  __shared__ int slots[256];
  slots[t] = t * 3;
  const int count = __syncthreads_count(t % 4 == 0);
  const int all = __syncthreads_and(t < 1000);
  const int any = __syncthreads_or(t == 7);
  // After the barriers every slot is written: read a neighbour's.
  out[t] = slots[(t + 1) % blockDim.x] + count * 1000 + all * 100000 + any * 1000000;
}

// Reads shared memory before anything writes it (bytes of block b: b's
// first byte), then writes it, so the next block would see the writes if
// the emulator did not refill it.
__global__ void fresh_shared_kernel(unsigned char* out) {
  __shared__ unsigned char raw[64];
  __shared__ double d[3];
  __shared__ float f[5];
  if (threadIdx.x == 0) {
    out[blockIdx.x * 4 + 0] = raw[0];
    out[blockIdx.x * 4 + 1] = raw[63];
    double v = d[1];
    out[blockIdx.x * 4 + 2] = v != v ? 1 : 0;  // NaN
    out[blockIdx.x * 4 + 3] = (reinterpret_cast<uintptr_t>(&f[0]) % 8 == 4 ? 1 : 0) +
                              (reinterpret_cast<uintptr_t>(&d[0]) % 8 == 0 ? 2 : 0);
    raw[0] = 7;
    raw[63] = 7;
    d[1] = 1.0;
  }
  __syncthreads();
}

void test_barriers_shared(Suite& suite) {
  {
    const int n = 96;
    std::vector<int> out(n, -1);
    barrier_kernel<<<1, n>>>(out.data());
    Compare cmp(suite, "emulator barriers", "__syncthreads_count/and/or");
    for (int t = 0; t < n; ++t) {
      cmp.close(strf("t=%d", t), out[t], ((t + 1) % n) * 3 + 24 * 1000 + 100000 + 1000000, 0);
    }
  }
  {
    std::vector<unsigned char> out(3 * 4, 0);
    fresh_shared_kernel<<<3, 32>>>(out.data());
    Compare cmp(suite, "emulator shared memory", "fresh 0xff bytes per block, alignment");
    for (int b = 0; b < 3; ++b) {
      cmp.close(strf("block %d raw[0]", b), out[b * 4], 0xff, 0);
      cmp.close(strf("block %d raw[63]", b), out[b * 4 + 1], 0xff, 0);
      cmp.close(strf("block %d d[1] NaN", b), out[b * 4 + 2], 1, 0);
      cmp.close(strf("block %d placement", b), out[b * 4 + 3], 3, 0);
    }
  }
}

// ------------------------------------------------------------- indices
__global__ void index_kernel(int* out, int* dims) {
  const int bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const int tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const int nthreads = blockDim.x * blockDim.y * blockDim.z;
  out[bx * nthreads + tx] += 1;
  if (bx == 0 && tx == 0) {
    dims[0] = gridDim.x, dims[1] = gridDim.y, dims[2] = gridDim.z;
    dims[3] = blockDim.x, dims[4] = blockDim.y, dims[5] = blockDim.z;
  }
}

// A kernel that changes its by-value parameter: each thread has its own copy.
__global__ void param_kernel(int* out, int v) {
  v += threadIdx.x;
  out[threadIdx.x] = v;
}

void test_indices(Suite& suite) {
  for (bool reverse : {false, true}) {
    cuemu::set_reverse_schedule(reverse);
    const dim3 grid(3, 2, 2), block(8, 4, 2);
    std::vector<int> out(12 * 64, 0), dims(6, 0);
    index_kernel<<<grid, block>>>(out.data(), dims.data());
    Compare cmp(suite, strf("emulator indices (reverse %d)", reverse), "each (block, thread) once");
    for (size_t i = 0; i < out.size(); ++i) cmp.close(strf("slot %zu", i), out[i], 1, 0);
    const int want[6] = {3, 2, 2, 8, 4, 2};
    for (int i = 0; i < 6; ++i) cmp.close(strf("dims[%d]", i), dims[i], want[i], 0);
  }
  cuemu::set_reverse_schedule(false);
  std::vector<int> out(64, 0);
  param_kernel<<<1, 64>>>(out.data(), 100);
  Compare cmp(suite, "emulator parameters", "per-thread copies");
  for (int t = 0; t < 64; ++t) cmp.close(strf("t=%d", t), out[t], 100 + t, 0);
}

// ------------------------------------------------------------- launches
__global__ void touch_kernel(int* out) { out[0] = 1; }

void test_launch_limits(Suite& suite) {
  cudaStream_t s;
  cudaStreamCreate(&s);
  int flag = 0;
  struct Bad {
    const char* what;
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
    cudaError_t want;
  };
  const Bad bad[] = {
      {"zero grid", dim3(0), dim3(32), 0, s, cudaErrorInvalidConfiguration},
      {"zero block", dim3(1), dim3(0), 0, s, cudaErrorInvalidConfiguration},
      {"1025 threads", dim3(1), dim3(1025), 0, s, cudaErrorInvalidConfiguration},
      {"block z 65", dim3(1), dim3(1, 1, 65), 0, s, cudaErrorInvalidConfiguration},
      {"grid y 65536", dim3(1, 65536), dim3(32), 0, s, cudaErrorInvalidConfiguration},
      {"grid z 65536", dim3(1, 1, 65536), dim3(32), 0, s, cudaErrorInvalidConfiguration},
      {"48 KiB + 1 shared", dim3(1), dim3(32), 48 * 1024 + 1, s, cudaErrorInvalidValue},
      {"destroyed stream", dim3(1), dim3(32), 0, reinterpret_cast<cudaStream_t>(&flag), cudaErrorInvalidResourceHandle},
  };
  Compare cmp(suite, "emulator launch limits", "rejected launches");
  for (const Bad& b : bad) {
    const size_t mark = cuemu::log().size();
    touch_kernel<<<b.grid, b.block, b.smem, b.stream>>>(&flag);
    const cudaError_t peek = cudaPeekAtLastError();
    const cudaError_t got = cudaGetLastError();
    cmp.truth(b.what, got == b.want && peek == b.want && cudaGetLastError() == cudaSuccess,
              strf("cudaGetLastError %s, want %s", cudaGetErrorName(got), cudaGetErrorName(b.want)));
    cmp.truth(strf("%s: logged", b.what), cuemu::log().size() == mark + 1 && cuemu::log().back().error == b.want,
              "not logged with its error");
    cmp.truth(strf("%s: not run", b.what), flag == 0, "the kernel ran");
  }
  // Good launches: 1024 threads, a large grid y, 48 KiB dynamic shared memory, recorded with their stream.
  const size_t mark = cuemu::log().size();
  touch_kernel<<<dim3(1, 3, 2), dim3(32, 32), 48 * 1024, s>>>(&flag);
  cmp.truth("good launch", cudaGetLastError() == cudaSuccess && flag == 1, "rejected or not run");
  cmp.truth("good launch: stream recorded",
            cuemu::log().size() == mark + 1 && cuemu::log().back().stream == static_cast<void*>(s), "wrong record");
  int v[4] = {1, 2, 3, 4};
  cudaMemsetAsync(v, 0, sizeof v, s);
  cmp.truth("memset", v[0] == 0 && v[3] == 0 && cuemu::log().back().kind == cuemu::Enqueued::kMemset &&
                          cuemu::log().back().stream == static_cast<void*>(s),
            "memset not done or not recorded");
  cudaStreamDestroy(s);
}

void test_devices(Suite& suite) {
  Compare cmp(suite, "emulator devices", "attributes and occupancy");
  const int want_sms[4] = {4, 1, 2, 132};
  const int want_blocks[4] = {8, 2, 4, 8};  // of 256 threads
  for (int d = 0; d < 4; ++d) {
    cudaSetDevice(d);
    int sms = 0, dev = -1, blocks = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, touch_kernel, 256, 0);
    cmp.close(strf("device %d SMs", d), sms, want_sms[d], 0);
    cmp.close(strf("device %d blocks/SM", d), blocks, want_blocks[d], 0);
    cmp.close(strf("device %d pynas sm_count", d), pynas::cuda::detail::sm_count(), want_sms[d], 0);
  }
  cudaSetDevice(0);
}

// ------------------------------------------------------------- occupancy cache
// grid_for caches cudaOccupancyMaxActiveBlocksPerMultiprocessor per (kernel,
// block size, device): a repeated launch must not query again.
__global__ void occupancy_probe_kernel(int* out) { out[0] = 2; }

void test_occupancy_cache(Suite& suite) {
  using pynas::cuda::detail::grid_for;
  using pynas::cuda::detail::occupancy_queries;
  Compare cmp(suite, "occupancy cache", "one query per (kernel, block size, device)");
  cudaSetDevice(0);
  const long q0 = occupancy_queries().load();
  const unsigned g1 = grid_for(occupancy_probe_kernel, 256, 1 << 20);
  const long q1 = occupancy_queries().load();
  const unsigned g2 = grid_for(occupancy_probe_kernel, 256, 1 << 20);
  const long q2 = occupancy_queries().load();
  cmp.close("first call queries once", static_cast<double>(q1 - q0), 1, 0);
  cmp.close("second identical call does not query", static_cast<double>(q2 - q1), 0, 0);
  cmp.close("same answer (4 SMs x 8 blocks)", g1, 32, 0);
  cmp.close("same answer again", g2, 32, 0);
  grid_for(occupancy_probe_kernel, 128, 1 << 20);  // another block size: its own entry
  cmp.close("other block size queries", static_cast<double>(occupancy_queries().load() - q2), 1, 0);
  cudaSetDevice(1);  // another device (1 SM, 512 threads/SM): its own entry, its own answer
  const long q3 = occupancy_queries().load();
  const unsigned g3 = grid_for(occupancy_probe_kernel, 256, 1 << 20);
  grid_for(occupancy_probe_kernel, 256, 1 << 20);
  cmp.close("other device queries once", static_cast<double>(occupancy_queries().load() - q3), 1, 0);
  cmp.close("other device answer (1 SM x 2 blocks)", g3, 2, 0);
  cudaSetDevice(0);
  // Through a launcher: the second identical call is answered from the cache.
  const int64_t n = 2, c = 4, s = 8;
  std::vector<float> grad(n * c * s, 1.0f), gx(n * c * s, 0.0f);
  const pynas::cuda::NcsStrides st{c * s, s, 1};
  long per_call[2];
  for (int r = 0; r < 2; ++r) {
    const long before = occupancy_queries().load();
    const cudaError_t err = pynas::cuda::launch_partial_channel_mix_unshuffle(
        kFloat32, grad.data(), st, nullptr, st, gx.data(), st, n, c, s, 2, nullptr);
    cmp.truth(strf("launcher call %d", r), err == cudaSuccess, "failed");
    per_call[r] = occupancy_queries().load() - before;
  }
  cmp.close("launcher: second identical call does not query", static_cast<double>(per_call[1]), 0, 0);
}

// ------------------------------------------------------------- rewrite forms
// A templated launch expression, a template-dependent __shared__ type with
// __align__, and dynamic shared memory.
template <typename T, int V>
__global__ void rewrite_forms_kernel(T* out) {
  __shared__ __align__(16) pynas::cuda::detail::Pack<T, V> packs[2];
  extern __shared__ unsigned char dyn[];
  const int t = threadIdx.x;
  if (t < V) packs[1].v[t] = static_cast<T>(t + 1);
  if (t == 0) dyn[0] = 42;
  __syncthreads();
  if (t == 0) {
    T sum = 0;
    for (int e = 0; e < V; ++e) sum += packs[1].v[e];
    out[0] = sum;
    out[1] = static_cast<T>(dyn[0]);
    out[2] = static_cast<T>(reinterpret_cast<uintptr_t>(&packs[0]) % 16);
    out[3] = static_cast<T>(reinterpret_cast<uintptr_t>(dyn) % 16);
  }
}

void test_rewrite_forms(Suite& suite) {
  std::vector<int> out(4, -1);
  rewrite_forms_kernel<int, 4><<<2, 32, 100>>>(out.data());
  Compare cmp(suite, "emulator rewrite forms", "templated launch, __shared__ forms");
  cmp.truth("launch", cudaGetLastError() == cudaSuccess, "rejected");
  cmp.close("sum", out[0], 10, 0);
  cmp.close("dynamic", out[1], 42, 0);
  cmp.close("__align__(16)", out[2], 0, 0);
  cmp.close("dynamic alignment", out[3], 0, 0);
}

void test_emulator(Suite& suite) {
  test_rewrite_forms(suite);
  test_conversions(suite);
  test_collectives(suite);
  test_barriers_shared(suite);
  test_indices(suite);
  test_launch_limits(suite);
  test_devices(suite);
  test_occupancy_cache(suite);
}

Register r("emulator", "the emulator: conversions, collectives, barriers, shared memory, launches, devices",
           test_emulator);

}  // namespace
}  // namespace emu
