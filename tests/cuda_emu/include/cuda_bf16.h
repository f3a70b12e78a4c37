// cuemu: __nv_bfloat16 as the pynas kernels use it: storage plus the
// conversion intrinsics (round to nearest even, like the real ones). No
// implicit conversions or operators (see cuda_fp16.h).
#pragma once

#include "cuda_fp16.h"

struct __nv_bfloat16_raw {
  unsigned short x;
};

struct alignas(2) __nv_bfloat16 {
  unsigned short __x;
  __nv_bfloat16() = default;
  constexpr __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
  operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
};
typedef __nv_bfloat16 nv_bfloat16;

struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

namespace cuemu {
// float -> bfloat16, round to nearest even; NaN to the canonical 0x7fff.
inline unsigned short f32_to_bf16_rn(float value) {
  const uint32_t u = f32_bits(value);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;
  return static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_to_f32(unsigned short b) { return f32_from_bits(static_cast<uint32_t>(b) << 16); }
}  // namespace cuemu

inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16_raw{cuemu::f32_to_bf16_rn(f)}; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __float2bfloat16_rn(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return cuemu::bf16_to_f32(b.__x); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) { return __nv_bfloat16_raw{u}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.__x; }
