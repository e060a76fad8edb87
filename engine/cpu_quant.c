/*
 * cpu_quant.c: the quantizers of dqbart_quant.h on the CPU (f32), and the
 * straight-through backward.
 *
 * A group's statistics come from fixed blocks of QBLOCK elements combined
 * in block order (sums in double), whether the blocks run on one thread or
 * many, so results do not depend on the thread count. Each formula is the
 * reference's sequence of f32 operations (no contraction into FMA: the
 * build is ISO C, where GCC does not contract), which kernels/quant.cu
 * repeats operation for operation.
 */
#include "quant_backend.h"
#include "cpu_math.h"

#include <stdlib.h>

#define QBLOCK 16384
#define STACK_BLOCKS 256

/* clamp(v, -c, c), NaN kept (torch.clamp). */
DQ_VEC_INLINE float clip_to(float v, float c) { return dq_pick(isless(v, -c), -c, dq_pick(isgreater(v, c), c, v)); }

/* ---- statistics ------------------------------------------------------------------ */

enum phase { PHASE_ABSMAX, PHASE_MINMAX, PHASE_ABSSUM, PHASE_MASKED_ABSSUM };

/* What one block (or a whole group) contributes: max/min of the clipped
 * values (NaN skipped), or a double sum and count. */
typedef struct stats {
  float hi, lo;
  double sum, count;
} stats;

static stats stats_identity(void) { return (stats){.hi = -INFINITY, .lo = INFINITY, .sum = 0.0, .count = 0.0}; }

/* `threshold` is TWN's D for PHASE_MASKED_ABSSUM. */
static stats span_stats(const float *x, int64_t n, float c, int phase, float threshold) {
  stats r = stats_identity();
  if (phase == PHASE_ABSMAX) {
    float m = 0.0f;
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < n; i++) {
      float v = fabsf(clip_to(x[i], c));
      v = dq_pick(v == v, v, 0.0f); /* NaN: skipped (|x| >= 0 anyway) */
      m = v > m ? v : m;
    }
    r.hi = m;
  } else if (phase == PHASE_MINMAX) {
    float hi = -INFINITY, lo = INFINITY;
#pragma omp simd reduction(max : hi) reduction(min : lo)
    for (int64_t i = 0; i < n; i++) {
      float v = clip_to(x[i], c);
      float vh = dq_pick(v == v, v, -INFINITY), vl = dq_pick(v == v, v, INFINITY);
      hi = vh > hi ? vh : hi;
      lo = vl < lo ? vl : lo;
    }
    r.hi = hi;
    r.lo = lo;
  } else if (phase == PHASE_ABSSUM) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += (double)fabsf(clip_to(x[i], c));
    r.sum = s;
  } else {
    double s = 0.0, k = 0.0;
#pragma omp simd reduction(+ : s, k)
    for (int64_t i = 0; i < n; i++) {
      float v = fabsf(clip_to(x[i], c));
      int above = isgreater(v, threshold);
      s += (double)dq_pick(above, v, 0.0f);
      k += above ? 1.0 : 0.0;
    }
    r.sum = s;
    r.count = k;
  }
  return r;
}

static stats combine(stats a, stats b) {
  a.hi = b.hi > a.hi ? b.hi : a.hi;
  a.lo = b.lo < a.lo ? b.lo : a.lo;
  a.sum += b.sum;
  a.count += b.count;
  return a;
}

/* A group's statistic over blocks of QBLOCK, combined in block order; the
 * blocks run in parallel when `parallel` is set (only from a serial caller). */
static dq_status group_stats(const float *x, int64_t n, float c, int phase, float threshold, int parallel,
                             stats *out) {
  int64_t blocks = (n + QBLOCK - 1) / QBLOCK;
  if (!parallel || blocks == 1) {
    stats r = stats_identity();
    for (int64_t b = 0; b < blocks; b++) {
      int64_t i0 = b * QBLOCK, len = n - i0 < QBLOCK ? n - i0 : QBLOCK;
      r = combine(r, span_stats(x + i0, len, c, phase, threshold));
    }
    *out = r;
    return DQ_OK;
  }
  stats stack[STACK_BLOCKS];
  stats *part = blocks <= STACK_BLOCKS ? stack : malloc(sizeof *part * (size_t)blocks);
  if (!part) return dq_fail(DQ_ERR_MEMORY, "dq_quantize: cannot allocate %lld block statistics", (long long)blocks);
#pragma omp parallel for
  for (int64_t b = 0; b < blocks; b++) {
    int64_t i0 = b * QBLOCK, len = n - i0 < QBLOCK ? n - i0 : QBLOCK;
    part[b] = span_stats(x + i0, len, c, phase, threshold);
  }
  stats r = stats_identity();
  for (int64_t b = 0; b < blocks; b++) r = combine(r, part[b]);
  if (part != stack) free(part);
  *out = r;
  return DQ_OK;
}

/* ---- per-group parameters and the quantized values ------------------------------- */

/* The two numbers each method needs to map xc to q:
 *   SYM:  a = s (0: all-zero group)         ASYM: a = lo, b = r = (hi - lo) + 1e-8
 *   TWN:  a = alpha, b = D                  BWN:  a = alpha */
typedef struct params {
  float a, b;
} params;

static dq_status group_params(const float *x, int64_t n, const dq_quant_plan *p, int parallel, params *out) {
  stats s;
  float c = p->clip;
  switch (p->method) {
  case DQ_QUANT_SYM: {
    dq_status st = group_stats(x, n, c, PHASE_ABSMAX, 0.0f, parallel, &s);
    if (st) return st;
    float levels = (float)((1 << (p->bits - 1)) - 1);
    out->a = s.hi == 0.0f ? 0.0f : levels / s.hi;
    out->b = 0.0f;
    return DQ_OK;
  }
  case DQ_QUANT_ASYM: {
    dq_status st = group_stats(x, n, c, PHASE_MINMAX, 0.0f, parallel, &s);
    if (st) return st;
    out->a = s.lo;
    out->b = (s.hi - s.lo) + 1e-8f;
    return DQ_OK;
  }
  case DQ_QUANT_BWN: {
    dq_status st = group_stats(x, n, c, PHASE_ABSSUM, 0.0f, parallel, &s);
    if (st) return st;
    out->a = (float)(s.sum / (double)n);
    out->b = 0.0f;
    return DQ_OK;
  }
  default: { /* TWN */
    dq_status st = group_stats(x, n, c, PHASE_ABSSUM, 0.0f, parallel, &s);
    if (st) return st;
    float threshold = 0.7f * (float)(s.sum / (double)n);
    st = group_stats(x, n, c, PHASE_MASKED_ABSSUM, threshold, parallel, &s);
    if (st) return st;
    out->a = s.count > 0.0 ? (float)(s.sum / s.count) : 0.0f;
    out->b = threshold;
    return DQ_OK;
  }
  }
}

/* out[i] = q(x[i]) for one span; out may be x. */
static void span_apply(float *out, const float *x, int64_t n, const dq_quant_plan *p, params g) {
  float c = p->clip;
  switch (p->method) {
  case DQ_QUANT_SYM:
    if (g.a == 0.0f) { /* all-zero group: the reference's 0/0 */
      for (int64_t i = 0; i < n; i++) out[i] = 0.0f;
      return;
    }
#pragma omp simd
    for (int64_t i = 0; i < n; i++) out[i] = rintf(clip_to(x[i], c) * g.a) / g.a;
    return;
  case DQ_QUANT_ASYM: {
    float levels = (float)((1 << p->bits) - 1);
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
      float t = (clip_to(x[i], c) - g.a) / g.b;
      t = rintf(t * levels) / levels;
      out[i] = t * g.b + g.a;
    }
    return;
  }
  case DQ_QUANT_BWN:
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
      float v = clip_to(x[i], c);
      out[i] = dq_pick(isgreater(v, 0.0f), g.a, dq_pick(isless(v, 0.0f), -g.a, 0.0f));
    }
    return;
  default: /* TWN */
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
      float v = clip_to(x[i], c);
      out[i] = dq_pick(isgreater(v, g.b), g.a, dq_pick(isless(v, -g.b), -g.a, 0.0f));
    }
    return;
  }
}

static void group_apply(float *out, const float *x, int64_t n, const dq_quant_plan *p, params g, int parallel) {
  int64_t blocks = (n + QBLOCK - 1) / QBLOCK;
  DQ_PARALLEL_FOR_IF(parallel && blocks > 1, for (int64_t b = 0; b < blocks; b++) {
    int64_t i0 = b * QBLOCK, len = n - i0 < QBLOCK ? n - i0 : QBLOCK;
    span_apply(out + i0, x + i0, len, p, g);
  });
}

static dq_status quantize_one(dq_tensor *out, const dq_tensor *x, const dq_quant_plan *p) {
  const float *xd = x->data;
  float *od = out->data;
  int64_t groups = p->groups, n = p->group_size;
  /* Many groups: one thread per group. Few (large) groups: the blocks of
   * each group in parallel. Either way each group's blocks combine in order. */
  if (groups > 1 && (groups >= 16 || n <= QBLOCK)) {
    int par = x->numel > DQ_OMP_MIN;
    DQ_PARALLEL_FOR_WITH_IF(par, "omp parallel for schedule(static)", for (int64_t g = 0; g < groups; g++) {
      params prm;
      group_params(xd + g * n, n, p, 0, &prm); /* cannot fail without parallel blocks */
      span_apply(od + g * n, xd + g * n, n, p, prm);
    });
    return DQ_OK;
  }
  int parallel = n > DQ_OMP_MIN;
  for (int64_t g = 0; g < groups; g++) {
    params prm;
    dq_status st = group_params(xd + g * n, n, p, parallel, &prm);
    if (st) return st;
    group_apply(od + g * n, xd + g * n, n, p, prm, parallel);
  }
  return DQ_OK;
}

dq_status cpu_quantize_many(int count, dq_tensor *const *outs, const dq_tensor *const *xs, const dq_quant_plan *plans) {
  for (int i = 0; i < count; i++) {
    dq_status st = quantize_one(outs[i], xs[i], &plans[i]);
    if (st) return st;
  }
  return DQ_OK;
}

/* ---- backward ------------------------------------------------------------------------ */

dq_status cpu_quantize_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x, float clip, int accumulate) {
  const float *g = dy->data, *xd = x->data;
  float *d = dx->data;
  int64_t n = x->numel;
  /* The reference zeroes the gradient where x >= c or x <= -c (so a NaN x
   * passes its gradient through). */
  if (accumulate) {
    DQ_PARALLEL_FOR_WITH_IF(n > DQ_OMP_MIN, "omp parallel for simd", for (int64_t i = 0; i < n; i++) {
      int outside = isgreaterequal(xd[i], clip) | islessequal(xd[i], -clip);
      d[i] += dq_pick(outside, 0.0f, g[i]);
    });
  } else {
    DQ_PARALLEL_FOR_WITH_IF(n > DQ_OMP_MIN, "omp parallel for simd", for (int64_t i = 0; i < n; i++) {
      int outside = isgreaterequal(xd[i], clip) | islessequal(xd[i], -clip);
      d[i] = dq_pick(outside, 0.0f, g[i]);
    });
  }
  return DQ_OK;
}
