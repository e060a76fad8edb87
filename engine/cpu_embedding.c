/*
 * cpu_embedding.c: row gather out[t, :] = weight[ids[t], :] and its
 * backward, the scatter-add dweight[ids[t], :] += dout[t, :].
 */
#include "backend.h"
#include "cpu_math.h"

#include <string.h>

static inline int64_t id_at(const dq_tensor *ids, int64_t t) {
  return ids->dtype == DQ_I64 ? ((const int64_t *)ids->data)[t] : (int64_t)((const int32_t *)ids->data)[t];
}

/* Every id must index a row; checked before anything is written so a bad
 * batch leaves out untouched. */
static dq_status check_ids_in_range(const char *op, const dq_tensor *ids, int64_t rows) {
  for (int64_t t = 0; t < ids->numel; t++) {
    int64_t id = id_at(ids, t);
    if (id < 0 || id >= rows)
      return dq_fail(DQ_ERR_ARGUMENT, "%s: ids[%lld] (flat position in ids %s) is %lld; expected 0 <= id < %lld", op,
                     (long long)t, dq_desc(ids), (long long)id, (long long)rows);
  }
  return DQ_OK;
}

dq_status cpu_embedding(dq_tensor *out, const dq_tensor *weight, const dq_tensor *ids) {
  int64_t rows = weight->shape[0], d = weight->shape[1], n = ids->numel;
  dq_status st = check_ids_in_range("dq_embedding", ids, rows);
  if (st) return st;
  const float *w = weight->data;
  float *o = out->data;
  DQ_PARALLEL_FOR_IF(n * d > DQ_OMP_MIN, for (int64_t t = 0; t < n; t++) {
    memcpy(o + t * d, w + id_at(ids, t) * d, (size_t)d * sizeof(float));
  });
  return DQ_OK;
}

/* Deterministic without atomics: threads own disjoint column blocks of
 * dweight and each walks the tokens in order, so every element receives
 * its additions in the same order whatever the thread count. */
#define EMB_COL_BLOCK 64

dq_status cpu_embedding_backward(dq_tensor *dweight, const dq_tensor *dout, const dq_tensor *ids) {
  int64_t rows = dweight->shape[0], d = dweight->shape[1], n = ids->numel;
  dq_status st = check_ids_in_range("dq_embedding_backward", ids, rows);
  if (st) return st;
  const float *g = dout->data;
  float *dw = dweight->data;
  int64_t blocks = (d + EMB_COL_BLOCK - 1) / EMB_COL_BLOCK;
  DQ_PARALLEL_FOR_IF(n * d > DQ_OMP_MIN, for (int64_t blk = 0; blk < blocks; blk++) {
    int64_t c0 = blk * EMB_COL_BLOCK, w = d - c0 < EMB_COL_BLOCK ? d - c0 : EMB_COL_BLOCK;
    for (int64_t t = 0; t < n; t++) {
      float *dst = dw + id_at(ids, t) * d + c0;
      const float *src = g + t * d + c0;
      for (int64_t c = 0; c < w; c++) dst[c] += src[c];
    }
  });
  return DQ_OK;
}
