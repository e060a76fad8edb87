/*
 * tensor.cu: filling, arange, random numbers, dtype conversion and strided
 * gathers on CUDA. Every value rule matches engine/cpu_tensor.c bit for bit:
 * conversions go through double like the CPU's load_as_double/store_double
 * (float -> integer truncates toward zero and saturates, NaN -> 0; float
 * rounding is RNE via engine/half.h), arithmetic that the CPU does in
 * separate steps is written with explicit _rn intrinsics so nvcc cannot fuse
 * it into an FMA, and random numbers come from the shared Philox in
 * engine/philox.h.
 */
#include "common.cuh"

#include <string.h>

/* ---- values by dtype, as cpu_tensor.c's load_as_double / store_double --------- */

template <int DT> struct dq_storage_of;
template <> struct dq_storage_of<DQ_F32> { typedef float type; };
template <> struct dq_storage_of<DQ_BF16> { typedef uint16_t type; };
template <> struct dq_storage_of<DQ_F16> { typedef uint16_t type; };
template <> struct dq_storage_of<DQ_I8> { typedef int8_t type; };
template <> struct dq_storage_of<DQ_I32> { typedef int32_t type; };
template <> struct dq_storage_of<DQ_I64> { typedef int64_t type; };

template <int DT> __host__ __device__ __forceinline__ double load_as_double(const void *base, int64_t i) {
  const typename dq_storage_of<DT>::type v = ((const typename dq_storage_of<DT>::type *)base)[i];
  if constexpr (DT == DQ_BF16) return (double)dq_bf16_to_f32(v);
  else if constexpr (DT == DQ_F16) return (double)dq_f16_to_f32(v);
  else return (double)v;
}

/* Float to integer truncates toward zero; out-of-range saturates; NaN is 0. */
__host__ __device__ __forceinline__ int64_t saturate(double v, double lo, double hi) {
  if (v != v) return 0;
  if (v <= lo) return (int64_t)lo;
  if (v >= hi) return (int64_t)hi;
  return (int64_t)v;
}

template <int DT> __host__ __device__ __forceinline__ void store_double(void *base, int64_t i, double v) {
  if constexpr (DT == DQ_F32) ((float *)base)[i] = (float)v;
  else if constexpr (DT == DQ_BF16) ((uint16_t *)base)[i] = dq_f32_to_bf16((float)v);
  else if constexpr (DT == DQ_F16) ((uint16_t *)base)[i] = dq_f32_to_f16((float)v);
  else if constexpr (DT == DQ_I8) ((int8_t *)base)[i] = (int8_t)saturate(v, -128.0, 127.0);
  else if constexpr (DT == DQ_I32) ((int32_t *)base)[i] = (int32_t)saturate(v, -2147483648.0, 2147483647.0);
  else ((int64_t *)base)[i] = saturate(v, -9223372036854775808.0, 9223372036854774784.0);
}

/* Run `__VA_ARGS__` with the constant DT bound to dtype `dt` (any dtype). */
#define DISPATCH_ANY(dt, DT, ...)                                   \
  switch (dt) {                                                     \
  case DQ_F32: { const int DT = DQ_F32; __VA_ARGS__; } break;       \
  case DQ_BF16: { const int DT = DQ_BF16; __VA_ARGS__; } break;     \
  case DQ_F16: { const int DT = DQ_F16; __VA_ARGS__; } break;       \
  case DQ_I8: { const int DT = DQ_I8; __VA_ARGS__; } break;         \
  case DQ_I32: { const int DT = DQ_I32; __VA_ARGS__; } break;       \
  case DQ_I64: { const int DT = DQ_I64; __VA_ARGS__; } break;       \
  default: return dq_fail(DQ_ERR_INTERNAL, "%s: unexpected dtype %d", op, (int)(dt)); \
  }

#define DISPATCH_FLOAT_DT(dt, DT, ...)                              \
  switch (dt) {                                                     \
  case DQ_F32: { const int DT = DQ_F32; __VA_ARGS__; } break;       \
  case DQ_BF16: { const int DT = DQ_BF16; __VA_ARGS__; } break;     \
  case DQ_F16: { const int DT = DQ_F16; __VA_ARGS__; } break;       \
  default: return dq_fail(DQ_ERR_INTERNAL, "%s: unexpected dtype %d", op, (int)(dt)); \
  }

/* ---- fill ------------------------------------------------------------------------ */

template <typename U> __global__ void fill_kernel(U *p, U value, int64_t n) {
  DQ_GRID_STRIDE(i, n) p[i] = value;
}

dq_status cuda_fill(dq_tensor *t, double value) {
  const char *op = "dq_fill";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, t->device, &stream));
  /* The element's bytes, converted on the host exactly as the CPU does. */
  alignas(8) unsigned char pattern[8] = {0};
  DISPATCH_ANY(t->dtype, DT, store_double<DT>(pattern, 0, value));
  int64_t esize = dq_dtype_size(t->dtype), n = t->numel;
  bool zero = true;
  for (int64_t i = 0; i < esize; i++) zero = zero && pattern[i] == 0;
  if (zero) {
    DQ_CUDA_TRY(cudaMemsetAsync(t->data, 0, (size_t)(n * esize), stream));
    return DQ_OK;
  }
  unsigned grid = dq_grid_for(n, DQ_THREADS);
  switch (esize) {
  case 1: {
    uint8_t v;
    memcpy(&v, pattern, 1);
    fill_kernel<<<grid, DQ_THREADS, 0, stream>>>((uint8_t *)t->data, v, n);
    break;
  }
  case 2: {
    uint16_t v;
    memcpy(&v, pattern, 2);
    fill_kernel<<<grid, DQ_THREADS, 0, stream>>>((uint16_t *)t->data, v, n);
    break;
  }
  case 4: {
    uint32_t v;
    memcpy(&v, pattern, 4);
    fill_kernel<<<grid, DQ_THREADS, 0, stream>>>((uint32_t *)t->data, v, n);
    break;
  }
  default: {
    uint64_t v;
    memcpy(&v, pattern, 8);
    fill_kernel<<<grid, DQ_THREADS, 0, stream>>>((uint64_t *)t->data, v, n);
    break;
  }
  }
  DQ_LAUNCHED("fill_kernel");
  return DQ_OK;
}

/* ---- arange ------------------------------------------------------------------------ */

template <int DT> __global__ void arange_kernel(void *p, double start, double step, int64_t n) {
  /* start + i * step in two roundings, as the CPU computes it (no FMA). */
  DQ_GRID_STRIDE(i, n) store_double<DT>(p, i, __dadd_rn(start, __dmul_rn((double)i, step)));
}

dq_status cuda_arange(dq_tensor *t, double start, double step) {
  const char *op = "dq_arange";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, t->device, &stream));
  DISPATCH_ANY(t->dtype, DT,
               arange_kernel<DT><<<dq_grid_for(t->numel, DQ_THREADS), DQ_THREADS, 0, stream>>>(t->data, start, step,
                                                                                                  t->numel));
  DQ_LAUNCHED("arange_kernel");
  return DQ_OK;
}

/* ---- random numbers ------------------------------------------------------------------ */

/* cpu_tensor.c's box_muller, step by step. logf/cosf/sinf are evaluated in
 * double and rounded once to float, which gives the correctly rounded float
 * result; glibc's float functions are within about half an ulp of it, so
 * the two devices agree except, rarely, in the last bit. */
__device__ __forceinline__ void box_muller(uint32_t a, uint32_t b, float *z0, float *z1) {
  float u1 = __fadd_rn(dq_u32_to_uniform(a), 1.0f / 33554432.0f); /* (0, 1) */
  float u2 = dq_u32_to_uniform(b);
  float log_u1 = (float)log((double)u1);
  float r = __fsqrt_rn(__fmul_rn(-2.0f, log_u1));
  float theta = __fmul_rn(6.2831853071795864769f, u2);
  *z0 = __fmul_rn(r, (float)cos((double)theta));
  *z1 = __fmul_rn(r, (float)sin((double)theta));
}

/* One thread per Philox counter: elements 4b .. 4b+3. */
template <int DT> __global__ void rand_kernel(void *p, int64_t n, uint64_t seed, uint64_t offset, int normal) {
  int64_t blocks = (n + 3) / 4;
  DQ_GRID_STRIDE(b, blocks) {
    dq_u32x4 r = dq_philox(seed, offset + (uint64_t)b);
    float v[4];
    if (normal) {
      box_muller(r.v[0], r.v[1], &v[0], &v[1]);
      box_muller(r.v[2], r.v[3], &v[2], &v[3]);
    } else {
#pragma unroll
      for (int lane = 0; lane < 4; lane++) v[lane] = dq_u32_to_uniform(r.v[lane]);
    }
#pragma unroll
    for (int lane = 0; lane < 4; lane++)
      if (b * 4 + lane < n) store_double<DT>(p, b * 4 + lane, (double)v[lane]);
  }
}

dq_status cuda_rand(dq_tensor *t, uint64_t seed, uint64_t offset, int normal) {
  const char *op = normal ? "dq_randn" : "dq_rand";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, t->device, &stream));
  int64_t blocks = (t->numel + 3) / 4;
  DISPATCH_FLOAT_DT(t->dtype, DT,
                    rand_kernel<DT><<<dq_grid_for(blocks, DQ_THREADS), DQ_THREADS, 0, stream>>>(t->data, t->numel, seed,
                                                                                                offset, normal));
  DQ_LAUNCHED("rand_kernel");
  return DQ_OK;
}

/* ---- dtype conversion ------------------------------------------------------------------ */

template <int SRC, int DST> __global__ void convert_kernel(void *dst, const void *src, int64_t n) {
  DQ_GRID_STRIDE(i, n) {
    if constexpr (SRC >= DQ_I8 && DST >= DQ_I8) {
      /* Integer to integer keeps 64-bit precision, as on the CPU. */
      int64_t v = SRC == DQ_I64 ? ((const int64_t *)src)[i] : (int64_t)load_as_double<SRC>(src, i);
      if constexpr (DST == DQ_I64) ((int64_t *)dst)[i] = v;
      else store_double<DST>(dst, i, (double)v);
    } else {
      store_double<DST>(dst, i, load_as_double<SRC>(src, i));
    }
  }
}

template <int SRC>
static dq_status convert_from(const char *op, dq_tensor *dst, const dq_tensor *src, cudaStream_t stream) {
  unsigned grid = dq_grid_for(dst->numel, DQ_THREADS);
  DISPATCH_ANY(dst->dtype, DST,
               convert_kernel<SRC, DST><<<grid, DQ_THREADS, 0, stream>>>(dst->data, src->data, dst->numel));
  DQ_LAUNCHED("convert_kernel");
  return DQ_OK;
}

dq_status cuda_convert(dq_tensor *dst, const dq_tensor *src) {
  const char *op = "dq_copy";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, dst->device, &stream));
  if (dst->dtype == src->dtype) {
    /* Views of one storage may overlap (the CPU uses memmove); a stream
     * ordered copy does not promise that, so overlapping ranges go through
     * a scratch buffer. */
    size_t bytes = (size_t)(dst->numel * dq_dtype_size(dst->dtype));
    uintptr_t d = (uintptr_t)dst->data, s = (uintptr_t)src->data;
    if (d < s + bytes && s < d + bytes) {
      void *tmp;
      DQ_TRY(dq_cuda_scratch(op, dst->device, bytes, &tmp));
      cudaError_t err = cudaMemcpyAsync(tmp, src->data, bytes, cudaMemcpyDeviceToDevice, stream);
      if (err == cudaSuccess) err = cudaMemcpyAsync(dst->data, tmp, bytes, cudaMemcpyDeviceToDevice, stream);
      dq_cuda_scratch_free(dst->device, tmp);
      if (err != cudaSuccess) return dq_cuda_fail(op, "cudaMemcpyAsync", err);
      return DQ_OK;
    }
    DQ_CUDA_TRY(cudaMemcpyAsync(dst->data, src->data, bytes, cudaMemcpyDeviceToDevice, stream));
    return DQ_OK;
  }
  DISPATCH_ANY(src->dtype, SRC, return convert_from<SRC>(op, dst, src, stream));
  return DQ_OK;
}

/* ---- strided gather (permute, narrow_copy) ------------------------------------------------ */

struct gather_geometry {
  int ndim;
  int64_t shape[DQ_MAX_DIMS];
  int64_t strides[DQ_MAX_DIMS];
  int64_t offset;
};

/* Out element o (row-major over shape) reads src element offset +
 * sum(index_k * strides_k). I is uint32_t when every index fits, which
 * makes the divisions much cheaper than 64-bit ones. */
template <typename U, typename I> __global__ void gather_kernel(U *out, const U *src, gather_geometry g, int64_t n) {
  DQ_GRID_STRIDE(o, n) {
    I rest = (I)o, from = (I)g.offset;
    for (int k = g.ndim - 1; k >= 0; k--) {
      I size = (I)g.shape[k];
      from += (rest % size) * (I)g.strides[k];
      rest /= size;
    }
    out[o] = src[from];
  }
}

template <typename U>
static dq_status launch_gather(const char *op, void *out, const void *src, const gather_geometry &g, int64_t n,
                               bool small, cudaStream_t stream) {
  unsigned grid = dq_grid_for(n, DQ_THREADS);
  if (small) gather_kernel<U, uint32_t><<<grid, DQ_THREADS, 0, stream>>>((U *)out, (const U *)src, g, n);
  else gather_kernel<U, int64_t><<<grid, DQ_THREADS, 0, stream>>>((U *)out, (const U *)src, g, n);
  DQ_LAUNCHED("gather_kernel");
  return DQ_OK;
}

dq_status cuda_gather(dq_tensor *out, const dq_tensor *src, const dq_gather_plan *plan) {
  const char *op = "dq_permute/dq_narrow_copy";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, out->device, &stream));
  gather_geometry g;
  memset(&g, 0, sizeof g);
  g.ndim = plan->ndim;
  g.offset = plan->src_offset;
  int64_t last = plan->src_offset; /* the largest source index read */
  for (int k = 0; k < plan->ndim; k++) {
    g.shape[k] = plan->shape[k];
    g.strides[k] = plan->src_strides[k];
    last += (plan->shape[k] - 1) * plan->src_strides[k];
  }
  const int64_t limit = (int64_t)1 << 31;
  bool small = out->numel < limit && last < limit;
  int64_t n = out->numel;
  switch (dq_dtype_size(src->dtype)) {
  case 1: return launch_gather<uint8_t>(op, out->data, src->data, g, n, small, stream);
  case 2: return launch_gather<uint16_t>(op, out->data, src->data, g, n, small, stream);
  case 4: return launch_gather<uint32_t>(op, out->data, src->data, g, n, small, stream);
  case 8: return launch_gather<uint64_t>(op, out->data, src->data, g, n, small, stream);
  default: return dq_fail(DQ_ERR_INTERNAL, "%s: unexpected element size for %s", op, dq_desc(src));
  }
}
