/*
 * cpu_optim.c: AdamW, the global gradient norm and the non-finite flag on
 * the CPU. Arguments were checked in optim.c. The norm sums squares in
 * double over fixed blocks added in block order, so it does not depend on
 * the thread count; the update is elementwise and needs no such care.
 */
#include "optim_backend.h"
#include "cpu_math.h"
#include "half.h"

#include <stdlib.h>

#define NORM_BLOCK 16384
#define NORM_STACK_BLOCKS 256

/* One block's sum of squares (a function of its own: the loop below is a
 * macro argument, which cannot hold the simd pragma). */
static double block_sumsq(const float *g, int64_t len) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < len; i++) s += (double)g[i] * (double)g[i];
  return s;
}

dq_status cpu_grad_norm(dq_tensor *norm, const dq_tensor *grads) {
  const float *g = grads->data;
  int64_t n = grads->numel, blocks = (n + NORM_BLOCK - 1) / NORM_BLOCK;
  double stack[NORM_STACK_BLOCKS];
  double *part = blocks <= NORM_STACK_BLOCKS ? stack : malloc((size_t)blocks * sizeof(double));
  if (!part) return dq_fail(DQ_ERR_MEMORY, "dq_grad_norm: cannot allocate %lld block sums", (long long)blocks);
  DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t b = 0; b < blocks; b++) {
    int64_t i0 = b * NORM_BLOCK, len = n - i0 < NORM_BLOCK ? n - i0 : NORM_BLOCK;
    part[b] = block_sumsq(g + i0, len);
  });
  double total = 0.0;
  for (int64_t b = 0; b < blocks; b++) total += part[b];
  *(float *)norm->data = (float)sqrt(total);
  if (part != stack) free(part);
  return DQ_OK;
}

dq_status cpu_flag_nonfinite(dq_tensor *flag, const dq_tensor *x) {
  const float *xd = x->data;
  int64_t n = x->numel;
  int bad = 0;
  DQ_PARALLEL_FOR_WITH_IF(n > DQ_OMP_MIN, "omp parallel for reduction(| : bad)",
                          for (int64_t i = 0; i < n; i++) bad |= !isfinite(xd[i]));
  if (bad) *(int32_t *)flag->data = 1;
  return DQ_OK;
}

static void store_working(dq_tensor *w, int64_t i, float v) {
  switch (w->dtype) {
  case DQ_F32: ((float *)w->data)[i] = v; break;
  case DQ_BF16: ((uint16_t *)w->data)[i] = dq_f32_to_bf16(v); break;
  default: ((uint16_t *)w->data)[i] = dq_f32_to_f16(v); break;
  }
}

dq_status cpu_adamw(dq_tensor *params, dq_tensor *exp_avg, dq_tensor *exp_avg_sq, const dq_tensor *grads,
                    const dq_tensor *grad_norm, const dq_tensor *decay_mask, dq_tensor *working,
                    const dq_adamw_consts *c) {
  float norm = grad_norm ? *(const float *)grad_norm->data : 0.0f;
  if (c->skip_nonfinite && !isfinite(norm)) return DQ_OK;
  float scale = grad_norm ? dq_clip_scale(norm, c->max_norm) : 1.0f;
  int clip = c->max_norm > 0.0f;
  float *p = params->data, *m = exp_avg->data, *v = exp_avg_sq->data;
  const float *g = grads->data;
  const int8_t *mask = decay_mask ? decay_mask->data : NULL;
  int64_t n = params->numel;
  DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t i = 0; i < n; i++) {
    float gi = clip ? g[i] * scale : g[i];
    int decay = c->has_decay && (!mask || mask[i] != 0);
    dq_adamw_element(c, gi, decay, p + i, m + i, v + i);
    if (working) store_working(working, i, p[i]);
  });
  return DQ_OK;
}
