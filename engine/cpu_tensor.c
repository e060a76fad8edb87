/*
 * cpu_tensor.c: CPU side of filling, random numbers, dtype conversion and
 * strided gathers (permute, narrow_copy). Arguments were checked in
 * tensor.c.
 */
#include "backend.h"
#include "cpu_math.h"
#include "half.h"
#include "philox.h"

#include <math.h>
#include <string.h>

/* ---- element access by dtype --------------------------------------------- */

static inline double load_as_double(const void *base, int dtype, int64_t i) {
  switch (dtype) {
  case DQ_F32: return ((const float *)base)[i];
  case DQ_BF16: return dq_bf16_to_f32(((const uint16_t *)base)[i]);
  case DQ_F16: return dq_f16_to_f32(((const uint16_t *)base)[i]);
  case DQ_I8: return ((const int8_t *)base)[i];
  case DQ_I32: return ((const int32_t *)base)[i];
  default: return (double)((const int64_t *)base)[i];
  }
}

/* Float to integer conversion truncates toward zero, as a C cast (and
 * torch's .to(int)) does; out-of-range values saturate. */
static inline int64_t saturate(double v, double lo, double hi) {
  if (v != v) return 0;
  if (v <= lo) return (int64_t)lo;
  if (v >= hi) return (int64_t)hi;
  return (int64_t)v;
}

static inline void store_double(void *base, int dtype, int64_t i, double v) {
  switch (dtype) {
  case DQ_F32: ((float *)base)[i] = (float)v; break;
  case DQ_BF16: ((uint16_t *)base)[i] = dq_f32_to_bf16((float)v); break;
  case DQ_F16: ((uint16_t *)base)[i] = dq_f32_to_f16((float)v); break;
  case DQ_I8: ((int8_t *)base)[i] = (int8_t)saturate(v, -128.0, 127.0); break;
  case DQ_I32: ((int32_t *)base)[i] = (int32_t)saturate(v, -2147483648.0, 2147483647.0); break;
  default: ((int64_t *)base)[i] = saturate(v, -9223372036854775808.0, 9223372036854774784.0); break;
  }
}

dq_status cpu_fill(dq_tensor *t, double value) {
  int64_t n = t->numel, esize = dq_dtype_size(t->dtype);
  unsigned char pattern[8];
  store_double(pattern, t->dtype, 0, value);
  if (esize == 4) {
    uint32_t v;
    memcpy(&v, pattern, 4);
    uint32_t *p = t->data;
    DQ_PARALLEL_FOR_IF(n > 65536, for (int64_t i = 0; i < n; i++) p[i] = v);
  } else {
    char *p = t->data;
    DQ_PARALLEL_FOR_IF(n > 65536, for (int64_t i = 0; i < n; i++) {
      memcpy(p + i * esize, pattern, (size_t)esize);
    });
  }
  return DQ_OK;
}

dq_status cpu_arange(dq_tensor *t, double start, double step) {
  int64_t n = t->numel;
  DQ_PARALLEL_FOR_IF(n > 65536, for (int64_t i = 0; i < n; i++) {
    store_double(t->data, t->dtype, i, start + (double)i * step);
  });
  return DQ_OK;
}

/* Box-Muller on two uniforms; u1 is moved off 0 so log() stays finite. The
 * same float formula runs in kernels/random.cu. */
static inline void box_muller(uint32_t a, uint32_t b, float *z0, float *z1) {
  float u1 = dq_u32_to_uniform(a) + (1.0f / 33554432.0f); /* (0, 1) */
  float u2 = dq_u32_to_uniform(b);
  float r = sqrtf(-2.0f * logf(u1));
  float theta = 6.2831853071795864769f * u2;
  *z0 = r * cosf(theta);
  *z1 = r * sinf(theta);
}

dq_status cpu_rand(dq_tensor *t, uint64_t seed, uint64_t offset, int normal) {
  int64_t n = t->numel, blocks = (n + 3) / 4;
  DQ_PARALLEL_FOR_IF(n > 65536, for (int64_t blk = 0; blk < blocks; blk++) {
    dq_u32x4 r = dq_philox(seed, offset + (uint64_t)blk);
    float v[4];
    if (normal) {
      box_muller(r.v[0], r.v[1], &v[0], &v[1]);
      box_muller(r.v[2], r.v[3], &v[2], &v[3]);
    } else {
      for (int lane = 0; lane < 4; lane++) v[lane] = dq_u32_to_uniform(r.v[lane]);
    }
    for (int lane = 0; lane < 4 && blk * 4 + lane < n; lane++) store_double(t->data, t->dtype, blk * 4 + lane, v[lane]);
  });
  return DQ_OK;
}

dq_status cpu_convert(dq_tensor *dst, const dq_tensor *src) {
  int64_t n = dst->numel;
  if (dst->dtype == src->dtype) {
    memmove(dst->data, src->data, (size_t)(n * dq_dtype_size(dst->dtype)));
    return DQ_OK;
  }
  /* Integer to integer keeps 64-bit precision; everything else via double,
   * which holds every f32/bf16/f16 value exactly. */
  if (dq_is_int(src->dtype) && dq_is_int(dst->dtype)) {
    for (int64_t i = 0; i < n; i++) {
      int64_t v = src->dtype == DQ_I64 ? ((const int64_t *)src->data)[i] : (int64_t)load_as_double(src->data, src->dtype, i);
      if (dst->dtype == DQ_I64) ((int64_t *)dst->data)[i] = v;
      else store_double(dst->data, dst->dtype, i, (double)v);
    }
    return DQ_OK;
  }
  DQ_PARALLEL_FOR_IF(n > 65536, for (int64_t i = 0; i < n; i++) {
    store_double(dst->data, dst->dtype, i, load_as_double(src->data, src->dtype, i));
  });
  return DQ_OK;
}

/* Copy the innermost dim as a run when it is contiguous in the source. */
dq_status cpu_gather(dq_tensor *out, const dq_tensor *src, const dq_gather_plan *plan) {
  int nd = plan->ndim;
  int64_t esize = dq_dtype_size(src->dtype);
  int64_t inner = nd ? plan->shape[nd - 1] : 1;
  int64_t inner_stride = nd ? plan->src_strides[nd - 1] : 1;
  int64_t outer = inner ? out->numel / inner : 0;
  const char *s = src->data;
  char *d = out->data;
  DQ_PARALLEL_FOR_IF(out->numel > 65536, for (int64_t row = 0; row < outer; row++) {
    int64_t rest = row, src_index = plan->src_offset;
    for (int k = nd - 2; k >= 0; k--) {
      src_index += (rest % plan->shape[k]) * plan->src_strides[k];
      rest /= plan->shape[k];
    }
    char *drow = d + row * inner * esize;
    if (inner_stride == 1) {
      memcpy(drow, s + src_index * esize, (size_t)(inner * esize));
    } else {
      for (int64_t j = 0; j < inner; j++)
        memcpy(drow + j * esize, s + (src_index + j * inner_stride) * esize, (size_t)esize);
    }
  });
  return DQ_OK;
}
