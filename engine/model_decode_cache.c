/*
 * model_decode_cache.c: the self-attention cache update of a decoding step:
 * each row's cached keys (or values) gathered from its parent row (beam
 * search reorders rows every step) with the step's fresh ones appended, as
 * one pass into a new contiguous buffer. The CPU half is here, the CUDA
 * half in kernels/beam_cache.cu.
 */
#include "beam_backend.h"
#include "model_decode.h"

#include <string.h>

dq_status cpu_kv_append(dq_tensor *out, const dq_tensor *cache, const dq_tensor *fresh, const int32_t *index,
                        int64_t rows, int64_t heads, int64_t t, int64_t head_dim) {
  float *o = out->data;
  const float *c = cache->data, *f = fresh->data;
  size_t old_bytes = (size_t)(t * head_dim) * sizeof(float), new_bytes = (size_t)head_dim * sizeof(float);
#pragma omp parallel for collapse(2) schedule(static) if (rows * heads * (t + 1) * head_dim > 32768)
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t h = 0; h < heads; h++) {
      int64_t src = index ? index[r] : r;
      float *dst = o + (r * heads + h) * (t + 1) * head_dim;
      if (t > 0) memcpy(dst, c + (src * heads + h) * t * head_dim, old_bytes);
      memcpy(dst + t * head_dim, f + (r * heads + h) * head_dim, new_bytes);
    }
  }
  return DQ_OK;
}

dq_status decode_kv_append(dq_tensor *out, const dq_tensor *cache, const dq_tensor *fresh, const dq_tensor *index,
                           int64_t rows, int64_t heads, int64_t t, int64_t head_dim) {
  const char *op = "generate: cache update";
  if (out->numel != rows * heads * (t + 1) * head_dim || cache->numel != rows * heads * t * head_dim ||
      fresh->numel != rows * heads * head_dim)
    return dq_fail(DQ_ERR_INTERNAL, "%s: out %s, cache %s, fresh %s do not fit %lld rows x %lld heads x %lld "
                                    "positions x %lld",
                   op, dq_desc(out), dq_desc(cache), dq_desc(fresh), (long long)rows, (long long)heads,
                   (long long)t, (long long)head_dim);
  if (out->dtype != cache->dtype || out->dtype != fresh->dtype || out->device != cache->device ||
      out->device != fresh->device)
    return dq_fail(DQ_ERR_INTERNAL, "%s: out %s, cache %s and fresh %s must share dtype and device", op, dq_desc(out),
                   dq_desc(cache), dq_desc(fresh));
  if (index && (index->dtype != DQ_I32 || index->numel != rows || index->device != out->device))
    return dq_fail(DQ_ERR_INTERNAL, "%s: index %s; expected [%lld] i32 on %s", op, dq_desc(index), (long long)rows,
                   dq_device_name(out->device));
  const int32_t *idx = index ? (const int32_t *)index->data : NULL;
  if (dq_on_cuda(out)) DQ_CUDA_CALL(cuda_kv_append(out, cache, fresh, idx, rows, heads, t, head_dim));
  if (out->dtype != DQ_F32) return dq_fail(DQ_ERR_INTERNAL, "%s: the CPU caches f32, not %s", op, dq_desc(out));
  return cpu_kv_append(out, cache, fresh, idx, rows, heads, t, head_dim);
}
