// Host helpers shared by the CUDA glue files (csrc/cuda/*.cpp): dtype and
// stride conversion for the launchers, host-to-device uploads that do not
// synchronize, and the bucket plan of path_dispatch / path_combine.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../ops/common.h"
#include "kernels.h"

namespace pynas {
namespace cuda_glue {

inline cuda::DType kernel_dtype(at::ScalarType t) {
  switch (t) {
    case at::kDouble:
      return cuda::kFloat64;
    case at::kFloat:
      return cuda::kFloat32;
    case at::kHalf:
      return cuda::kFloat16;
    case at::kBFloat16:
      return cuda::kBFloat16;
    default:
      TORCH_CHECK_TYPE(false, "the CUDA kernels support float64, float32, float16 and bfloat16, got ", t);
  }
  return cuda::kFloat32;  // unreachable
}

inline cuda::NcsStrides ncs_strides(const at::Tensor& t) {
  const NCSView v = ncs_view(t);
  cuda::NcsStrides st;
  st.n = v.stride_n;
  st.c = v.stride_c;
  st.s = v.stride_s;
  return st;
}

inline void check_cuda_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, " must be on a CUDA device for the CUDA kernel, got ", t.device());
}

// Copies a CPU int64 tensor to `device` through pinned memory with a
// non-blocking copy on the current stream: no host synchronization (the
// caching host allocator keeps the pinned block until the copy is done).
inline at::Tensor upload_int64(const at::Tensor& host, const at::Device& device) {
  at::Tensor pinned = at::empty(host.sizes(), at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  pinned.copy_(host);
  return pinned.to(device, at::kLong, /*non_blocking=*/true);
}

// Device array of tensor data pointers (for launches with more inputs than
// fit in the kernel parameters).
inline at::Tensor pointer_table(const std::vector<const void*>& ptrs, const at::Device& device) {
  at::Tensor host = at::empty({static_cast<int64_t>(ptrs.size())}, at::TensorOptions().dtype(at::kLong));
  int64_t* p = host.data_ptr<int64_t>();
  for (size_t i = 0; i < ptrs.size(); ++i) p[i] = static_cast<int64_t>(reinterpret_cast<uintptr_t>(ptrs[i]));
  return upload_int64(host, device);
}

// Device arrays of input pointers and their sample strides, in one upload
// (int64 [2k]: k pointers, then k strides): for weighted_sum launches with
// more inputs than fit in the kernel parameters.
struct InputTable {
  at::Tensor table;
  const void* const* ptrs = nullptr;
  const int64_t* strides = nullptr;
};
inline InputTable input_table(const std::vector<const void*>& ptrs, const std::vector<int64_t>& strides,
                              const at::Device& device) {
  const int64_t k = static_cast<int64_t>(ptrs.size());
  at::Tensor host = at::empty({2 * k}, at::TensorOptions().dtype(at::kLong));
  int64_t* p = host.data_ptr<int64_t>();
  for (int64_t i = 0; i < k; ++i) {
    p[i] = static_cast<int64_t>(reinterpret_cast<uintptr_t>(ptrs[i]));
    p[k + i] = strides[i];
  }
  InputTable t;
  t.table = upload_int64(host, device);
  const int64_t* d = t.table.const_data_ptr<int64_t>();
  t.ptrs = reinterpret_cast<const void* const*>(d);
  t.strides = d + k;
  return t;
}

// Range check of integer labels that live on the device (checked_choices
// checks only host tensors). Synchronizes once (the .cpu()); same message as
// the host check.
inline void check_device_range(const at::Tensor& c, int64_t k, const char* name, const char* range_name) {
  if (c.numel() == 0) return;
  const at::Tensor bounds = at::stack({c.min(), c.max()}).cpu();
  const int64_t lo = bounds[0].item<int64_t>();
  const int64_t hi = bounds[1].item<int64_t>();
  TORCH_CHECK_INDEX(lo >= 0 && hi < k, name, " must lie in [0, ", range_name, " = ", k, "), got values in [", lo,
                    ", ", hi, "]");
}

// Group labels on the device and, when with_index, the group index of the
// grouped_batch_norm reductions (kernels.h: int64 [k + 1 + n], offsets then
// the samples in group order, stable). labels: int64 [n], on the CPU already
// range-checked, or on `device`. Host labels: the index is built on the host
// and uploaded with the labels in one non-blocking pinned upload, no sync.
// Device labels: a stable sort and searchsorted on the device, and the one
// sync of the range check (before any launch reads them).
struct DeviceGroups {
  at::Tensor labels;  // int64 [n]
  at::Tensor index;   // int64 [k + 1 + n], only when asked for
};
inline DeviceGroups groups_on_device(const at::Tensor& labels, int64_t k, const at::Device& device, bool with_index,
                                     const char* name, const char* range_name) {
  DeviceGroups out;
  const int64_t n = labels.size(0);
  if (labels.is_cpu()) {
    const at::Tensor c = labels.contiguous();
    if (!with_index) {
      out.labels = upload_int64(c, device);
      return out;
    }
    at::Tensor host = at::empty({n + k + 1 + n}, at::TensorOptions().dtype(at::kLong));
    int64_t* h = host.data_ptr<int64_t>();
    const int64_t* l = c.const_data_ptr<int64_t>();
    int64_t* offsets = h + n;
    int64_t* members = offsets + k + 1;
    std::copy(l, l + n, h);
    std::fill(offsets, offsets + k + 1, 0);
    for (int64_t i = 0; i < n; ++i) ++offsets[l[i] + 1];
    for (int64_t g = 0; g < k; ++g) offsets[g + 1] += offsets[g];
    std::vector<int64_t> next(offsets, offsets + k);
    for (int64_t i = 0; i < n; ++i) members[next[l[i]]++] = i;  // increasing i: stable
    const at::Tensor up = upload_int64(host, device);
    out.labels = up.slice(0, 0, n);
    out.index = up.slice(0, n, n + k + 1 + n);
    return out;
  }
  out.labels = labels.contiguous();
  if (with_index) {
    const auto opts = out.labels.options();
    if (n == 0) {
      out.index = at::zeros({k + 1}, opts);
    } else {
      // Out-of-range labels are clamped here and rejected below, before any use.
      const at::Tensor c = out.labels.clamp(0, k - 1);
      const auto sorted = at::sort(c, /*stable=*/true, /*dim=*/0, /*descending=*/false);
      const at::Tensor offsets = at::searchsorted(std::get<0>(sorted), at::arange(k + 1, opts));
      out.index = at::cat({offsets, std::get<1>(sorted)}).contiguous();
    }
  }
  check_device_range(out.labels, k, name, range_name);  // the one sync
  return out;
}

// What the path kernels need: bucket sizes on the host, and an int64 [2, n]
// device tensor holding each row's choice (row 0) and rank within its bucket
// (row 1).
struct DevicePathPlan {
  std::vector<int64_t> counts;
  at::Tensor plan;
};

// choices: int64 [n] from checked_choices (on the CPU and range-checked, or on
// `device`). Host choices: plan_paths on the host and one non-blocking upload
// of choices and ranks together, no synchronization. Device choices: ranks
// from a stable sort on the device; the bucket sizes and the range check
// need one synchronization (a single .cpu()).
inline DevicePathPlan plan_paths_cuda(const at::Tensor& choices, int64_t k, const at::Device& device,
                                      const char* name, const char* range_name) {
  DevicePathPlan out;
  const int64_t n = choices.size(0);
  if (choices.is_cpu()) {
    PathPlan p = plan_paths(choices, k);
    out.counts = std::move(p.counts);
    if (n > 0) {
      out.plan = upload_int64(at::stack({choices, p.rank}), device);
    } else {
      out.plan = at::empty({2, 0}, at::TensorOptions().dtype(at::kLong).device(device));
    }
    return out;
  }
  const auto opts = choices.options().dtype(at::kLong);
  if (n == 0) {
    out.counts.assign(k, 0);
    out.plan = at::empty({2, 0}, opts);
    return out;
  }
  // Out-of-range values are clamped here and rejected below, before any use.
  const at::Tensor c = choices.clamp(0, k - 1).contiguous();
  const auto sorted = at::sort(c, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor& keys = std::get<0>(sorted);
  const at::Tensor& perm = std::get<1>(sorted);
  // bounds[b] = number of rows with a choice < b.
  const at::Tensor bounds = at::searchsorted(keys, at::arange(k + 1, opts));
  const at::Tensor rank_sorted = at::arange(n, opts) - bounds.index_select(0, keys);
  const at::Tensor rank = at::empty_like(c).scatter_(0, perm, rank_sorted);
  out.plan = at::stack({c, rank}).contiguous();
  const at::Tensor counts = bounds.slice(0, 1, k + 1) - bounds.slice(0, 0, k);
  const at::Tensor summary =
      at::cat({counts, choices.min().reshape({1}), choices.max().reshape({1})}).cpu();  // the one sync
  const int64_t* s = summary.const_data_ptr<int64_t>();
  const int64_t lo = s[k], hi = s[k + 1];
  TORCH_CHECK_INDEX(lo >= 0 && hi < k, name, " must lie in [0, ", range_name, " = ", k, "), got values in [", lo,
                    ", ", hi, "]");
  out.counts.assign(s, s + k);
  return out;
}

}  // namespace cuda_glue
}  // namespace pynas
