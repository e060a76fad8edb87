/*
 * half.h: bf16 and f16 <-> f32 conversions with round-to-nearest-even, the
 * rounding CUDA's __float2bfloat16 and torch use, so CPU casts give the same
 * bits as GPU casts. Shared by the CPU code and the kernels.
 */
#ifndef DQ_HALF_H
#define DQ_HALF_H

#include <stdint.h>
#include <string.h>

#include "philox.h" /* DQ_HOSTDEV */

DQ_HOSTDEV uint32_t dq_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
DQ_HOSTDEV float dq_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

DQ_HOSTDEV uint16_t dq_f32_to_bf16(float f) {
  uint32_t u = dq_f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

DQ_HOSTDEV float dq_bf16_to_f32(uint16_t h) { return dq_bits_f32((uint32_t)h << 16); }

DQ_HOSTDEV uint16_t dq_f32_to_f16(float f) {
  uint32_t u = dq_f32_bits(f);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);    /* NaN */
  if (absu >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* overflow (rounds to inf) */
  if (absu < 0x38800000u) {                                     /* f16 subnormal or zero */
    if (absu < 0x33000000u) return (uint16_t)sign;              /* below half the smallest subnormal */
    uint32_t mant = (absu & 0x007fffffu) | 0x00800000u;
    int shift = 126 - (int)(absu >> 23);                         /* to units of 2^-24 */
    uint32_t half_ulp = 1u << (shift - 1);
    uint32_t rest = mant & ((1u << shift) - 1u);
    uint32_t r = mant >> shift;
    if (rest > half_ulp || (rest == half_ulp && (r & 1u))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = absu - 0x38000000u;                              /* rebias exponent 127 -> 15 */
  uint32_t lower = r & 0x1fffu;
  r >>= 13;
  if (lower > 0x1000u || (lower == 0x1000u && (r & 1u))) r++;
  return (uint16_t)(sign | r);
}

DQ_HOSTDEV float dq_f16_to_f32(uint16_t h) {
  uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
  uint32_t exp = ((uint32_t)h >> 10) & 0x1fu;
  uint32_t mant = (uint32_t)h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return dq_bits_f32(sign);
    float f = (float)mant * (1.0f / 16777216.0f); /* mant * 2^-24 */
    return sign ? -f : f;
  }
  if (exp == 31) return dq_bits_f32(sign | 0x7f800000u | (mant << 13));
  return dq_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

#endif
