// cuemu: __half as the pynas kernels use it: storage plus the conversion
// intrinsics, which round to nearest even like the real ones. No implicit
// conversions or operators (pynas's torch build defines
// __CUDA_NO_HALF_CONVERSIONS__ / __CUDA_NO_HALF_OPERATORS__).
#pragma once

#include <cstdint>
#include <cstring>

struct __half_raw {
  unsigned short x;
};

struct alignas(2) __half {
  unsigned short __x;
  __half() = default;
  constexpr __half(const __half_raw& r) : __x(r.x) {}
  operator __half_raw() const { return __half_raw{__x}; }
};
typedef __half half;

struct alignas(4) __half2 {
  __half x, y;
};

namespace cuemu {
inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// float -> binary16, round to nearest even; overflow to infinity; NaN to the
// canonical NaN 0x7fff (as cvt.rn.f16.f32).
inline unsigned short f32_to_f16_rn(float value) {
  uint32_t f = f32_bits(value);
  const uint32_t sign = (f >> 16) & 0x8000u;
  f &= 0x7fffffffu;
  if (f > 0x7f800000u) return 0x7fffu;
  if (f >= 0x477ff000u) return static_cast<unsigned short>(sign | 0x7c00u);  // >= 65520: rounds to inf
  if (f < 0x38800000u) {
    // Below 2^-14: subnormal (or zero). Adding 0.5 makes the FPU round the
    // value to a multiple of 2^-24 (round to nearest even), in the low bits.
    const float magic = f32_from_bits(0x3f000000u);  // 0.5f
    const uint32_t r = f32_bits(f32_from_bits(f) + magic) - 0x3f000000u;
    return static_cast<unsigned short>(sign | r);
  }
  const uint32_t odd = (f >> 13) & 1u;
  f += 0xc8000fffu + odd;  // rebias the exponent (-112 << 23) and round
  return static_cast<unsigned short>(sign | (f >> 13));
}
inline float f16_to_f32(unsigned short h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | (mant << 13));
  if (exp != 0) return f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
  if (mant == 0) return f32_from_bits(sign);
  // Subnormal: mant * 2^-24, exact in float.
  return (sign ? -1.0f : 1.0f) * static_cast<float>(mant) * f32_from_bits(0x33800000u);
}
}  // namespace cuemu

inline __half __float2half_rn(float f) { return __half_raw{cuemu::f32_to_f16_rn(f)}; }
inline __half __float2half(float f) { return __float2half_rn(f); }
inline float __half2float(__half h) { return cuemu::f16_to_f32(h.__x); }
inline __half __ushort_as_half(unsigned short u) { return __half_raw{u}; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half2 __floats2half2_rn(float a, float b) { return __half2{__float2half_rn(a), __float2half_rn(b)}; }
inline float __low2float(__half2 h) { return __half2float(h.x); }
inline float __high2float(__half2 h) { return __half2float(h.y); }
