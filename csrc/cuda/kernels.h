// Launchers of the pynas CUDA kernels. Plain C++ (no torch types): the .cu
// files that define them are compiled by nvcc alone, and the glue files
// (csrc/cuda/*.cpp) check tensors, allocate outputs and call these.
//
// Conventions shared by every launcher:
//  * Pointers are device pointers unless said otherwise; sizes and strides
//    are in elements (not bytes) and 64-bit.
//  * "acc" is the accumulate type: double for kFloat64, float otherwise.
//  * Every launcher enqueues its kernels on `stream` and returns the value of
//    cudaGetLastError() after its last launch (cudaSuccess when nothing had
//    to be launched), or cudaErrorInvalidValue for arguments it cannot
//    handle (callers validate first, so that means a caller bug).
//  * No launcher synchronizes, allocates memory or uses atomics on floats:
//    every reduction is done in a fixed order, so results are bit-identical
//    from run to run on one device.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pynas {
namespace cuda {

enum DType : int { kFloat64 = 0, kFloat32 = 1, kFloat16 = 2, kBFloat16 = 3 };

// Input pointers passed by value in one launch (weighted_sum, partial_channel_mix).
constexpr int kMaxInlineInputs = 128;
// Bucket pointers passed by value in one launch (path_dispatch, path_combine).
constexpr int kMaxInlineBuckets = 64;

// Element strides of a tensor [N, C, *] seen as [N, C, S].
struct NcsStrides {
  int64_t n = 0, c = 0, s = 1;
};

// ------------------------------------------------------------- weighted_sum
// Every x, out and grad is `samples` blocks of `inner` elements sharing one
// inner layout (elementwise ops see a block as flat storage): block i of a
// tensor starts at its base + i * (its sample stride). Sample strides are
// >= inner (blocks never overlap; gaps between them are neither read nor
// written); the outputs (out, grad_xs) are dense: sample stride inner.
// A stride array may be null: every stride is then inner.
// weights: acc [w_samples, k] with w_samples = samples (per-sample weights)
// or 1 (weights of shape [K], shared by every sample).
// Dense inputs with shared weights take a flat path (one block of
// samples * inner); 16-byte packs are used when every base is 16-byte
// aligned and, with several blocks, inner and the strides are multiples of
// the pack width.

// out = sum_k weights[sample, k] * xs[k]. xs: host array of k device
// pointers, xs_sample_strides: host array of their k sample strides (or
// null). xs_device / xs_strides_device: device arrays holding the same k
// pointers / k strides; read only (and then required) when
// k > kMaxInlineInputs (xs_strides_device only when some stride is not
// inner), may be null otherwise.
cudaError_t launch_weighted_sum_forward(DType dtype, const void* const* xs, const void* const* xs_device,
                                        const int64_t* xs_sample_strides, const int64_t* xs_strides_device,
                                        int64_t k, const void* weights, int64_t w_samples, int64_t samples,
                                        int64_t inner, void* out, cudaStream_t stream);

// Blocks per sample the backward should use (any value >= 1 is correct;
// this one fills the current device). Sizes the partial buffer below.
int64_t weighted_sum_backward_blocks_per_sample(int64_t samples, int64_t inner);

// grad_xs[k] = weights[sample, k] * grad for every non-null grad_xs[k];
// grad_weights[s, k] = sum over sample s's elements of grad * xs[k]
// (acc [w_samples, k]; with shared weights the sum over every sample) when
// grad_weights is non-null: then partial, a double buffer of
// samples * blocks_per_sample * k elements, is its workspace, and xs (with
// xs_sample_strides, may be null) are read (only then). grad has sample
// stride grad_sample_stride. xs, grad_xs: host arrays of k device pointers
// (entries of grad_xs may be null). Inputs beyond kMaxInlineInputs are
// handled by more launches (grad is then read once per group of
// kMaxInlineInputs inputs).
cudaError_t launch_weighted_sum_backward(DType dtype, const void* grad, int64_t grad_sample_stride,
                                         const void* const* xs, const int64_t* xs_sample_strides,
                                         void* const* grad_xs, int64_t k, const void* weights, int64_t w_samples,
                                         int64_t samples, int64_t inner, int64_t blocks_per_sample,
                                         double* partial, void* grad_weights, cudaStream_t stream);

// ------------------------------------------------------ partial_channel_mix
// x, out: [n, c, s]; ys: k tensors [n, c / groups, s] sharing strides ys_st.
// out[n, j * groups + i, s] = i == 0 ? sum_k w[n, k] * ys[k][n, j, s]
//                                    : x[n, i * (c / groups) + j, s].
// weights: acc [w_samples, k] with w_samples 1 or n. ys / ys_device as xs /
// xs_device of launch_weighted_sum_forward.
cudaError_t launch_partial_channel_mix_forward(DType dtype, const void* const* ys, const void* const* ys_device,
                                               int64_t k, NcsStrides ys_st, const void* weights, int64_t w_samples,
                                               const void* x, NcsStrides x_st, void* out, NcsStrides out_st,
                                               int64_t n, int64_t c, int64_t s, int64_t groups, cudaStream_t stream);

// The data movement of the backward. grad: [n, c, s]. For each grad element
// at channel o = j * groups + i: when i == 0 it goes to grad_sel[n, j, s]
// (if grad_sel is non-null; [n, c / groups, s]) and grad_x[n, j, s] = 0;
// otherwise grad_x[n, i * (c / groups) + j, s] = grad (if grad_x is non-null;
// [n, c, s]). The weighted-sum part of the backward is then
// launch_weighted_sum_backward on grad_sel.
cudaError_t launch_partial_channel_mix_unshuffle(DType dtype, const void* grad, NcsStrides grad_st, void* grad_sel,
                                                 NcsStrides sel_st, void* grad_x, NcsStrides gx_st, int64_t n,
                                                 int64_t c, int64_t s, int64_t groups, cudaStream_t stream);

// ----------------------------------------------------- path_dispatch/combine
// Rows are dense blocks of row_bytes (or row_elems elements); every bucket
// has the same inner layout. plan: int64 [2, rows] on the device, row 0
// the choice of each row (in [0, num_buckets)), row 1 its rank in its bucket.

// buckets[plan[0][i]] row plan[1][i] = x row i. buckets: host array of
// num_buckets device pointers (more than kMaxInlineBuckets: several launches).
cudaError_t launch_path_dispatch(const void* x, int64_t rows, int64_t row_bytes, const int64_t* plan,
                                 void* const* buckets, int64_t num_buckets, cudaStream_t stream);

// out row i = ys[plan[0][i]] row plan[1][i], copied by bytes (any dtype).
// ys: host array of num_buckets device pointers.
cudaError_t launch_path_combine(const void* const* ys, int64_t num_buckets, const int64_t* plan, int64_t rows,
                                int64_t row_bytes, void* out, cudaStream_t stream);

// As launch_path_combine, plus residual row i (same layout as out), added in
// acc and rounded once.
cudaError_t launch_path_combine_residual(DType dtype, const void* const* ys, int64_t num_buckets,
                                         const int64_t* plan, int64_t rows, int64_t row_elems, const void* residual,
                                         void* out, cudaStream_t stream);

// ------------------------------------------------------- grouped_batch_norm
// x, dy, out, grad_x: [n, c, s] with their own strides. groups: int64 [n] on
// the device, in [0, num_groups). group_index: int64 [num_groups + 1 + n] on
// the device, the same labels grouped: offsets[0..num_groups] (offsets[g] =
// number of samples of the groups before g) then the samples in group order,
// increasing within a group (a stable sort of 0..n-1 by label); the
// reductions' merges visit only a group's own samples with it. Per-(group,
// channel) tensors are acc [num_groups, c] (contiguous); weight / bias acc
// [c] or null (identity). The statistics reductions run in double for every
// dtype.

// How many parts the S axis of each (sample, channel) is split into (any
// value >= 1 is correct; this one fills the current device). s_inner: x (and
// dy) have stride_s == 1. Sizes the workspaces below.
int64_t grouped_batch_norm_parts(int64_t n, int64_t c, int64_t s, bool s_inner);

// Batch statistics: mean_out[g, c] and invstd_out[g, c] = 1 / sqrt(var + eps)
// (biased variance over every element of the group's samples), 0 and 0 for a
// group without samples. workspace: double [2 * n * parts * c].
// (Reads group_index, not groups.)
cudaError_t launch_grouped_batch_norm_stats(DType dtype, const void* x, NcsStrides x_st, int64_t n, int64_t c,
                                            int64_t s, const int64_t* group_index, int64_t num_groups,
                                            int64_t parts, double eps, double* workspace, void* mean_out,
                                            void* invstd_out, cudaStream_t stream);

// out = (x - mean[g, c]) * invstd[g, c] * weight[c] + bias[c], g = groups[n].
cudaError_t launch_grouped_batch_norm_apply(DType dtype, const void* x, NcsStrides x_st, void* out,
                                            NcsStrides out_st, int64_t n, int64_t c, int64_t s,
                                            const int64_t* groups, const void* mean, const void* invstd,
                                            const void* weight, const void* bias, cudaStream_t stream);

// Per (g, c): A = sum dy, B = sum dy * (x - mean[g, c]) over the group's
// elements, M = (#samples of g) * s. Writes (each when non-null)
// coef_a[g, c] = A / M, coef_b[g, c] = invstd^2 * B / M (acc [num_groups, c];
// 0 for empty groups), grad_weight[c] = sum_g B * invstd and
// grad_bias[c] = sum_g A (acc [c]). workspace: double [2 * n * parts * c]
// plus 2 * num_groups * c.
cudaError_t launch_grouped_batch_norm_backward_reduce(DType dtype, const void* dy, NcsStrides dy_st,
                                                      const void* x, NcsStrides x_st, int64_t n, int64_t c,
                                                      int64_t s, const int64_t* groups,
                                                      const int64_t* group_index, int64_t num_groups,
                                                      int64_t parts, const void* mean, const void* invstd,
                                                      double* workspace, void* coef_a, void* coef_b,
                                                      void* grad_weight, void* grad_bias, cudaStream_t stream);

// grad_x = weight[c] * invstd[g, c] * (dy - coef_a[g, c] - (x - mean[g, c]) * coef_b[g, c])
// with coef_a / coef_b from the reduce (batch statistics), or
// grad_x = weight[c] * invstd[g, c] * dy when coef_a is null (x, mean and
// coef_b are then not read).
cudaError_t launch_grouped_batch_norm_backward_input(DType dtype, const void* dy, NcsStrides dy_st, const void* x,
                                                     NcsStrides x_st, void* grad_x, NcsStrides gx_st, int64_t n,
                                                     int64_t c, int64_t s, const int64_t* groups,
                                                     const void* mean, const void* invstd, const void* weight,
                                                     const void* coef_a, const void* coef_b, cudaStream_t stream);

}  // namespace cuda
}  // namespace pynas
