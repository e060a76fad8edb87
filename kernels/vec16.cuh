/*
 * vec16.cuh: 16-byte loads and stores of float storage types (8 bf16 or
 * f16 elements, 4 f32), for kernels that stream long rows or whole tensors
 * and would otherwise be bound by the number of 2-byte load instructions
 * in flight rather than by memory bandwidth.
 */
#ifndef DQ_VEC16_CUH
#define DQ_VEC16_CUH

#include <stdint.h>

#include "common.cuh"

/* Elements of T in 16 bytes. */
template <typename T> struct dq_vec16 {
  static constexpr int N = 16 / (int)sizeof(T);
};

/* Elements of p before the first 16-byte boundary (p is aligned to its
 * element size, as every tensor is). */
template <typename T> __device__ __forceinline__ int dq_vec16_head(const T *p) {
  return (int)(((16u - ((uintptr_t)p & 15u)) & 15u) / sizeof(T));
}

template <typename T> __device__ __forceinline__ bool dq_vec16_aligned(const T *p) {
  return ((uintptr_t)p & 15u) == 0;
}

/* The N floats of a raw 16-byte vector of T. */
__device__ __forceinline__ void dq_vec16_unpack(const uint4 &r, float *v, float) {
  v[0] = __uint_as_float(r.x);
  v[1] = __uint_as_float(r.y);
  v[2] = __uint_as_float(r.z);
  v[3] = __uint_as_float(r.w);
}
__device__ __forceinline__ void dq_vec16_unpack(const uint4 &r, float *v, __nv_bfloat16) {
  const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&r);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
__device__ __forceinline__ void dq_vec16_unpack(const uint4 &r, float *v, __half) {
  const __half2 *h = reinterpret_cast<const __half2 *>(&r);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float2 f = __half22float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

/* A raw 16-byte vector of T from N floats, each rounded as dq_from_f32. */
__device__ __forceinline__ uint4 dq_vec16_pack(const float *v, float) {
  return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3]));
}
__device__ __forceinline__ uint4 dq_vec16_pack(const float *v, __nv_bfloat16) {
  uint4 r;
  __nv_bfloat162 *h = reinterpret_cast<__nv_bfloat162 *>(&r);
#pragma unroll
  for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
  return r;
}
__device__ __forceinline__ uint4 dq_vec16_pack(const float *v, __half) {
  uint4 r;
  __half2 *h = reinterpret_cast<__half2 *>(&r);
#pragma unroll
  for (int i = 0; i < 4; i++) h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
  return r;
}

/* K consecutive elements of p (16-byte aligned, K a multiple of N) as floats. */
template <int K, typename T> __device__ __forceinline__ void dq_load_vec(const T *p, float *v) {
  constexpr int N = dq_vec16<T>::N;
#pragma unroll
  for (int i = 0; i < K / N; i++) dq_vec16_unpack(reinterpret_cast<const uint4 *>(p)[i], v + i * N, T());
}

/* K floats into consecutive elements of p (16-byte aligned). */
template <int K, typename T> __device__ __forceinline__ void dq_store_vec(T *p, const float *v) {
  constexpr int N = dq_vec16<T>::N;
#pragma unroll
  for (int i = 0; i < K / N; i++) reinterpret_cast<uint4 *>(p)[i] = dq_vec16_pack(v + i * N, T());
}

#endif
