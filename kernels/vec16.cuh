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

/* The two-element type of a 16-bit T and its conversions. */
template <typename T> struct dq_pair16;
template <> struct dq_pair16<__nv_bfloat16> {
  typedef __nv_bfloat162 type;
  static __device__ __forceinline__ float2 to_float2(type p) { return __bfloat1622float2(p); }
  static __device__ __forceinline__ type from_floats(float a, float b) { return __floats2bfloat162_rn(a, b); }
};
template <> struct dq_pair16<__half> {
  typedef __half2 type;
  static __device__ __forceinline__ float2 to_float2(type p) { return __half22float2(p); }
  static __device__ __forceinline__ type from_floats(float a, float b) { return __floats2half2_rn(a, b); }
};

/* The N floats of a raw 16-byte vector of T (the last argument names T). */
__device__ __forceinline__ void dq_vec16_unpack(const uint4 &r, float *v, float) {
  v[0] = __uint_as_float(r.x);
  v[1] = __uint_as_float(r.y);
  v[2] = __uint_as_float(r.z);
  v[3] = __uint_as_float(r.w);
}
template <typename T> __device__ __forceinline__ void dq_vec16_unpack(const uint4 &r, float *v, T) {
  typedef dq_pair16<T> P;
  const typename P::type *h = reinterpret_cast<const typename P::type *>(&r);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    float2 f = P::to_float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}

/* A raw 16-byte vector of T from N floats, each rounded as dq_from_f32. */
__device__ __forceinline__ uint4 dq_vec16_pack(const float *v, float) {
  return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3]));
}
template <typename T> __device__ __forceinline__ uint4 dq_vec16_pack(const float *v, T) {
  typedef dq_pair16<T> P;
  uint4 r;
  typename P::type *h = reinterpret_cast<typename P::type *>(&r);
#pragma unroll
  for (int i = 0; i < 4; i++) h[i] = P::from_floats(v[2 * i], v[2 * i + 1]);
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
