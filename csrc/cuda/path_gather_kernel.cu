// CUDA kernels of path_dispatch and path_combine: one launch moves every row
// (per group of kMaxInlineBuckets buckets), each row between its place in the
// batch and its place in its bucket, in the widest aligned unit (up to 16
// bytes) that divides the row.
#include "device_utils.cuh"

namespace pynas {
namespace cuda {
namespace {

using namespace detail;

constexpr int kThreads = 256;

// The widest unit (16, 8, 4, 2 or 1 bytes) dividing row_bytes and the
// address of every pointer.
inline int copy_unit(int64_t row_bytes, const void* const* ptrs, int64_t count, const void* extra) {
  uintptr_t bits = static_cast<uintptr_t>(row_bytes) | reinterpret_cast<uintptr_t>(extra);
  for (int64_t i = 0; i < count; ++i) bits |= reinterpret_cast<uintptr_t>(ptrs[i]);
  int unit = 16;
  while (unit > 1 && (bits & static_cast<uintptr_t>(unit - 1)) != 0) unit /= 2;
  return unit;
}

// Copies unit u of row r of x to row plan[1][r] of bucket plan[0][r] - b0,
// when that bucket is one of this launch's nb.
template <typename U, typename I>
__global__ void path_dispatch_kernel(const U* __restrict__ x, I rows, I upr, I total,
                                     const int64_t* __restrict__ plan, InlinePtrs<U, kMaxInlineBuckets> dst,
                                     int64_t b0, int nb) {
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const I r = i / upr;
    const I u = i - r * upr;
    const int64_t b = plan[r] - b0;
    if (b < 0 || b >= nb) continue;
    const int64_t rank = plan[static_cast<int64_t>(rows) + r];
    dst[static_cast<int>(b)][rank * static_cast<int64_t>(upr) + u] = x[static_cast<int64_t>(i)];
  }
}

// out row r = bucket plan[0][r] - b0, row plan[1][r] (for this launch's buckets).
template <typename U, typename I>
__global__ void path_combine_copy_kernel(InlinePtrs<const U, kMaxInlineBuckets> src, int64_t b0, int nb,
                                         const int64_t* __restrict__ plan, I rows, I upr, I total,
                                         U* __restrict__ out) {
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const I r = i / upr;
    const I u = i - r * upr;
    const int64_t b = plan[r] - b0;
    if (b < 0 || b >= nb) continue;
    const int64_t rank = plan[static_cast<int64_t>(rows) + r];
    out[static_cast<int64_t>(i)] = src[static_cast<int>(b)][rank * static_cast<int64_t>(upr) + u];
  }
}

// As above plus the residual row, added in acc; packs of V elements.
template <typename T, int V, typename I>
__global__ void path_combine_residual_kernel(InlinePtrs<const T, kMaxInlineBuckets> src, int64_t b0, int nb,
                                             const int64_t* __restrict__ plan, I rows, I ppr, I total,
                                             const T* __restrict__ residual, T* __restrict__ out) {
  const I stride = static_cast<I>(gridDim.x) * kThreads;
  for (I i = static_cast<I>(blockIdx.x) * kThreads + threadIdx.x; i < total; i += stride) {
    const I r = i / ppr;
    const I p = i - r * ppr;
    const int64_t b = plan[r] - b0;
    if (b < 0 || b >= nb) continue;
    const int64_t rank = plan[static_cast<int64_t>(rows) + r];
    const int64_t s_off = (rank * static_cast<int64_t>(ppr) + p) * V;
    const int64_t o_off = static_cast<int64_t>(i) * V;
    const Pack<T, V> a = load_pack<T, V>(src[static_cast<int>(b)] + s_off);
    const Pack<T, V> c = load_pack<T, V>(residual + o_off);
    Pack<T, V> o;
#pragma unroll
    for (int e = 0; e < V; ++e) o.v[e] = from_acc<T>(to_acc(a.v[e]) + to_acc(c.v[e]));
    store_pack<T, V>(out + o_off, o);
  }
}

template <typename U>
cudaError_t dispatch_typed(const void* x, int64_t rows, int64_t row_bytes, const int64_t* plan, void* const* buckets,
                           int64_t num_buckets, cudaStream_t stream) {
  const int64_t upr = row_bytes / static_cast<int64_t>(sizeof(U));
  const int64_t total = rows * upr;
  const bool small = total <= PYNAS_CUDA_INDEX32_LIMIT;
  for (int64_t b0 = 0; b0 < num_buckets; b0 += kMaxInlineBuckets) {
    const int64_t nb = num_buckets - b0 < kMaxInlineBuckets ? num_buckets - b0 : kMaxInlineBuckets;
    InlinePtrs<U, kMaxInlineBuckets> dst{};
    for (int64_t i = 0; i < nb; ++i) dst.p[i] = static_cast<U*>(buckets[b0 + i]);
    const U* src = static_cast<const U*>(x);
    if (small) {
      auto kernel = path_dispatch_kernel<U, uint32_t>;
      kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(
          src, static_cast<uint32_t>(rows), static_cast<uint32_t>(upr), static_cast<uint32_t>(total), plan, dst, b0,
          static_cast<int>(nb));
    } else {
      auto kernel = path_dispatch_kernel<U, int64_t>;
      kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(src, rows, upr, total, plan, dst, b0,
                                                                          static_cast<int>(nb));
    }
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename U>
cudaError_t combine_typed(const void* const* ys, int64_t num_buckets, const int64_t* plan, int64_t rows,
                          int64_t row_bytes, void* out, cudaStream_t stream) {
  const int64_t upr = row_bytes / static_cast<int64_t>(sizeof(U));
  const int64_t total = rows * upr;
  const bool small = total <= PYNAS_CUDA_INDEX32_LIMIT;
  for (int64_t b0 = 0; b0 < num_buckets; b0 += kMaxInlineBuckets) {
    const int64_t nb = num_buckets - b0 < kMaxInlineBuckets ? num_buckets - b0 : kMaxInlineBuckets;
    InlinePtrs<const U, kMaxInlineBuckets> src{};
    for (int64_t i = 0; i < nb; ++i) src.p[i] = static_cast<const U*>(ys[b0 + i]);
    U* o = static_cast<U*>(out);
    if (small) {
      auto kernel = path_combine_copy_kernel<U, uint32_t>;
      kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(
          src, b0, static_cast<int>(nb), plan, static_cast<uint32_t>(rows), static_cast<uint32_t>(upr),
          static_cast<uint32_t>(total), o);
    } else {
      auto kernel = path_combine_copy_kernel<U, int64_t>;
      kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(src, b0, static_cast<int>(nb), plan, rows,
                                                                          upr, total, o);
    }
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename T, int V>
cudaError_t combine_residual_typed(const void* const* ys, int64_t num_buckets, const int64_t* plan, int64_t rows,
                                   int64_t row_elems, const void* residual, void* out, cudaStream_t stream) {
  const int64_t ppr = row_elems / V;
  const int64_t total = rows * ppr;
  const bool small = total <= PYNAS_CUDA_INDEX32_LIMIT;
  for (int64_t b0 = 0; b0 < num_buckets; b0 += kMaxInlineBuckets) {
    const int64_t nb = num_buckets - b0 < kMaxInlineBuckets ? num_buckets - b0 : kMaxInlineBuckets;
    InlinePtrs<const T, kMaxInlineBuckets> src{};
    for (int64_t i = 0; i < nb; ++i) src.p[i] = static_cast<const T*>(ys[b0 + i]);
    const T* res = static_cast<const T*>(residual);
    T* o = static_cast<T*>(out);
    if (small) {
      auto kernel = path_combine_residual_kernel<T, V, uint32_t>;
      kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(
          src, b0, static_cast<int>(nb), plan, static_cast<uint32_t>(rows), static_cast<uint32_t>(ppr),
          static_cast<uint32_t>(total), res, o);
    } else {
      auto kernel = path_combine_residual_kernel<T, V, int64_t>;
      kernel<<<grid_for(kernel, kThreads, total), kThreads, 0, stream>>>(src, b0, static_cast<int>(nb), plan, rows,
                                                                          ppr, total, res, o);
    }
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

}  // namespace

cudaError_t launch_path_dispatch(const void* x, int64_t rows, int64_t row_bytes, const int64_t* plan,
                                 void* const* buckets, int64_t num_buckets, cudaStream_t stream) {
  if (rows < 0 || row_bytes < 0 || num_buckets < 1 || buckets == nullptr) return cudaErrorInvalidValue;
  if (rows == 0 || row_bytes == 0) return cudaSuccess;
  if (x == nullptr || plan == nullptr) return cudaErrorInvalidValue;
  switch (copy_unit(row_bytes, const_cast<const void* const*>(buckets), num_buckets, x)) {
    case 16:
      return dispatch_typed<uint4>(x, rows, row_bytes, plan, buckets, num_buckets, stream);
    case 8:
      return dispatch_typed<uint2>(x, rows, row_bytes, plan, buckets, num_buckets, stream);
    case 4:
      return dispatch_typed<uint32_t>(x, rows, row_bytes, plan, buckets, num_buckets, stream);
    case 2:
      return dispatch_typed<uint16_t>(x, rows, row_bytes, plan, buckets, num_buckets, stream);
    default:
      return dispatch_typed<uint8_t>(x, rows, row_bytes, plan, buckets, num_buckets, stream);
  }
}

cudaError_t launch_path_combine(const void* const* ys, int64_t num_buckets, const int64_t* plan, int64_t rows,
                                int64_t row_bytes, void* out, cudaStream_t stream) {
  if (rows < 0 || row_bytes < 0 || num_buckets < 1 || ys == nullptr) return cudaErrorInvalidValue;
  if (rows == 0 || row_bytes == 0) return cudaSuccess;
  if (out == nullptr || plan == nullptr) return cudaErrorInvalidValue;
  switch (copy_unit(row_bytes, ys, num_buckets, out)) {
    case 16:
      return combine_typed<uint4>(ys, num_buckets, plan, rows, row_bytes, out, stream);
    case 8:
      return combine_typed<uint2>(ys, num_buckets, plan, rows, row_bytes, out, stream);
    case 4:
      return combine_typed<uint32_t>(ys, num_buckets, plan, rows, row_bytes, out, stream);
    case 2:
      return combine_typed<uint16_t>(ys, num_buckets, plan, rows, row_bytes, out, stream);
    default:
      return combine_typed<uint8_t>(ys, num_buckets, plan, rows, row_bytes, out, stream);
  }
}

cudaError_t launch_path_combine_residual(DType dtype, const void* const* ys, int64_t num_buckets,
                                         const int64_t* plan, int64_t rows, int64_t row_elems, const void* residual,
                                         void* out, cudaStream_t stream) {
  if (rows < 0 || row_elems < 0 || num_buckets < 1 || ys == nullptr) return cudaErrorInvalidValue;
  if (rows == 0 || row_elems == 0) return cudaSuccess;
  if (out == nullptr || plan == nullptr || residual == nullptr) return cudaErrorInvalidValue;
  return dispatch_float(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    constexpr int V = vec16<T>();
    const int64_t row_bytes = row_elems * static_cast<int64_t>(sizeof(T));
    const bool vec = row_elems % V == 0 && copy_unit(row_bytes, ys, num_buckets, out) == 16 && aligned16(residual);
    return vec ? combine_residual_typed<T, V>(ys, num_buckets, plan, rows, row_elems, residual, out, stream)
               : combine_residual_typed<T, 1>(ys, num_buckets, plan, rows, row_elems, residual, out, stream);
  });
}

}  // namespace cuda
}  // namespace pynas
