/*
 * cpu_reduce.c: sum / mean / max / absmax of a whole tensor or of each row
 * (the last dim), and the gradient of either. Sums run in double over
 * fixed-size blocks added in block order, so the result does not depend on
 * the thread count. MAX and ABSMAX propagate NaN.
 */
#include "backend.h"
#include "cpu_math.h"

#include <stdlib.h>
#include <string.h>

#define REDUCE_BLOCK 16384
#define REDUCE_STACK_BLOCKS 256

static double block_sum(const float *x, int64_t n) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; i++) s += (double)x[i];
  return s;
}

/* Largest value (ABSMAX: magnitude); NaN once any element is NaN. */
static float block_max(const float *x, int64_t n, int absolute) {
  float m = -INFINITY;
  int nan = 0;
  if (absolute) {
#pragma omp simd reduction(max : m) reduction(| : nan)
    for (int64_t i = 0; i < n; i++) {
      float v = fabsf(x[i]);
      m = v > m ? v : m;
      nan |= v != v;
    }
  } else {
#pragma omp simd reduction(max : m) reduction(| : nan)
    for (int64_t i = 0; i < n; i++) {
      float v = x[i];
      m = v > m ? v : m;
      nan |= v != v;
    }
  }
  return nan ? NAN : m;
}

static float reduce_span(const float *x, int64_t n, int op) {
  switch (op) {
  case DQ_REDUCE_SUM: return (float)block_sum(x, n);
  case DQ_REDUCE_MEAN: return (float)(block_sum(x, n) / (double)n);
  case DQ_REDUCE_MAX: return block_max(x, n, 0);
  default: return block_max(x, n, 1);
  }
}

/* The whole tensor: per-block results (double sums or maxima), combined in
 * block order. */
static dq_status reduce_all(float *out, const float *x, int64_t n, int op) {
  int64_t blocks = (n + REDUCE_BLOCK - 1) / REDUCE_BLOCK;
  double stack[REDUCE_STACK_BLOCKS];
  double *part = blocks <= REDUCE_STACK_BLOCKS ? stack : malloc((size_t)blocks * sizeof(double));
  if (!part) return dq_fail(DQ_ERR_MEMORY, "dq_reduce_all: cannot allocate %lld block results", (long long)blocks);
  bool is_sum = op == DQ_REDUCE_SUM || op == DQ_REDUCE_MEAN;
  DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t b = 0; b < blocks; b++) {
    int64_t i0 = b * REDUCE_BLOCK, len = n - i0 < REDUCE_BLOCK ? n - i0 : REDUCE_BLOCK;
    part[b] = is_sum ? block_sum(x + i0, len) : (double)block_max(x + i0, len, op == DQ_REDUCE_ABSMAX);
  });
  double r = is_sum ? 0.0 : -INFINITY;
  for (int64_t b = 0; b < blocks; b++) r = is_sum ? r + part[b] : ((part[b] > r || part[b] != part[b]) ? part[b] : r);
  if (op == DQ_REDUCE_MEAN) r /= (double)n;
  *out = (float)r;
  if (part != stack) free(part);
  return DQ_OK;
}

dq_status cpu_reduce(dq_tensor *out, const dq_tensor *x, int op, int rows) {
  const float *xd = x->data;
  float *od = out->data;
  if (!rows) {
    /* A mean over no elements is NaN, as 0/0; a sum is 0. */
    if (x->numel == 0) {
      *od = op == DQ_REDUCE_MEAN ? NAN : 0.0f;
      return DQ_OK;
    }
    return reduce_all(od, xd, x->numel, op);
  }
  int64_t d = dq_cols(x), nrows = out->numel;
  if (d == 0) {
    float v = op == DQ_REDUCE_MEAN ? NAN : 0.0f;
    for (int64_t r = 0; r < nrows; r++) od[r] = v;
    return DQ_OK;
  }
  DQ_PARALLEL_FOR_IF(x->numel > DQ_OMP_MIN, for (int64_t r = 0; r < nrows; r++) od[r] = reduce_span(xd + r * d, d, op));
  return DQ_OK;
}

/* ---- backward ---------------------------------------------------------------- */

/* Index of the first element of x[0..n) equal to the forward's maximum m
 * (by magnitude for ABSMAX), or -1 when none is (m NaN). */
static int64_t first_max(const float *x, int64_t n, float m, int absolute) {
  for (int64_t i = 0; i < n; i++)
    if ((absolute ? fabsf(x[i]) : x[i]) == m) return i;
  return -1;
}

static inline float sign_of(float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f); }

/* dx[0..n) for one reduced span with upstream gradient g. */
static void span_backward(float *dx, const float *x, int64_t n, float g, float m, int op) {
  if (op == DQ_REDUCE_SUM || op == DQ_REDUCE_MEAN) {
    float v = op == DQ_REDUCE_SUM ? g : (float)((double)g / (double)n);
    for (int64_t i = 0; i < n; i++) dx[i] = v;
    return;
  }
  int absolute = op == DQ_REDUCE_ABSMAX;
  int64_t at = first_max(x, n, m, absolute);
  float xat = at >= 0 ? x[at] : 0.0f; /* read before dx (which may alias x) is cleared */
  for (int64_t i = 0; i < n; i++) dx[i] = 0.0f;
  if (at >= 0) dx[at] = absolute ? g * sign_of(xat) : g;
}

dq_status cpu_reduce_backward(dq_tensor *dx, const dq_tensor *dout, const dq_tensor *x, const dq_tensor *out, int op,
                              int rows) {
  const float *xd = x->data, *g = dout->data, *m = out ? out->data : NULL;
  float *d = dx->data;
  bool needs_max = op == DQ_REDUCE_MAX || op == DQ_REDUCE_ABSMAX;
  if (!rows) {
    /* Read the scalars before dx is written (dx may share their storage). */
    float g0 = g[0], m0 = needs_max ? m[0] : 0.0f;
    int64_t n = x->numel;
    if (!needs_max) {
      float v = op == DQ_REDUCE_SUM ? g0 : (float)((double)g0 / (double)n);
      DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t i = 0; i < n; i++) d[i] = v);
      return DQ_OK;
    }
    int64_t at = first_max(xd, n, m0, op == DQ_REDUCE_ABSMAX);
    float xat = at >= 0 ? xd[at] : 0.0f; /* dx may alias x */
    DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t i = 0; i < n; i++) d[i] = 0.0f);
    if (at >= 0) d[at] = op == DQ_REDUCE_ABSMAX ? g0 * sign_of(xat) : g0;
    return DQ_OK;
  }
  int64_t cols = dq_cols(x), nrows = dq_rows(x);
  DQ_PARALLEL_FOR_IF(x->numel > DQ_OMP_MIN, for (int64_t r = 0; r < nrows; r++) {
    span_backward(d + r * cols, xd + r * cols, cols, g[r], needs_max ? m[r] : 0.0f, op);
  });
  return DQ_OK;
}
