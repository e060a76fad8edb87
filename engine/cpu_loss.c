/*
 * cpu_loss.c: the fused losses of dqbart_loss.h on the CPU (f32 inputs).
 *
 * Row losses (cross-entropy, KL) run one row per iteration: a first pass
 * finds the row's maximum, sum of exponentials (and sum of logits for label
 * smoothing), a second writes the gradient and the row's loss. Row results
 * go to an array summed in row order, and MSE sums fixed blocks in block
 * order (all in double), so every value is independent of the thread count.
 * Gradients are f32 and use the same formulas as kernels/loss.cu.
 */
#include "loss_backend.h"
#include "cpu_math.h"

#include <stdlib.h>

#define MSE_BLOCK 16384
#define STACK_ROWS 1024

static inline int64_t label_at(const dq_tensor *labels, int64_t r) {
  return labels->dtype == DQ_I64 ? ((const int64_t *)labels->data)[r] : (int64_t)((const int32_t *)labels->data)[r];
}

static void store_value(dq_tensor *value, int flags, double v) {
  float *p = value->data;
  *p = (flags & DQ_LOSS_ADD_VALUE) ? *p + (float)v : (float)v;
}

/* A row-sized scratch array of doubles: on the stack when small. */
typedef struct row_buffer {
  double stack[STACK_ROWS];
  double *p;
} row_buffer;

static dq_status row_buffer_init(row_buffer *b, int64_t rows, const char *op) {
  b->p = rows <= STACK_ROWS ? b->stack : malloc(sizeof(double) * (size_t)rows);
  if (!b->p) return dq_fail(DQ_ERR_MEMORY, "%s: cannot allocate %lld row results", op, (long long)rows);
  return DQ_OK;
}

static void row_buffer_free(row_buffer *b) {
  if (b->p != b->stack) free(b->p);
}

static double sum_in_order(const double *v, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; i++) s += v[i];
  return s;
}

/* ---- softmax statistics of a row ------------------------------------------------- */

static float row_max(const float *x, int64_t n, float inv_t) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; j++) {
    float v = x[j] * inv_t;
    m = v > m ? v : m;
  }
  return m;
}

/* log sum_j exp(x_j * inv_t) in double, from the row's max m. */
static double row_lse(const float *x, int64_t n, float inv_t, float m) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; j++) s += (double)dq_exp_nonpos(x[j] * inv_t - m);
  return (double)m + log(s);
}

static double row_sum(const float *x, int64_t n) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; j++) s += (double)x[j];
  return s;
}

/* ---- cross-entropy ------------------------------------------------------------------ */

dq_status cpu_loss_cross_entropy(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *logits,
                                 const dq_tensor *labels, int64_t ignore_index, float label_smoothing) {
  const char *op = "dq_loss_cross_entropy";
  int64_t V = dq_cols(logits), rows = dq_rows(logits);
  int64_t count = 0;
  for (int64_t r = 0; r < rows; r++) {
    int64_t y = label_at(labels, r);
    if (y == ignore_index) continue;
    if (y < 0 || y >= V)
      return dq_fail(DQ_ERR_ARGUMENT,
                     "%s: label %lld at position %lld is outside the vocabulary [0, %lld) and is not the ignore index "
                     "%lld",
                     op, (long long)y, (long long)r, (long long)V, (long long)ignore_index);
    count++;
  }
  row_buffer rl;
  dq_status st = row_buffer_init(&rl, rows, op);
  if (st) return st;
  const float *x = logits->data;
  float *g = grad ? grad->data : NULL;
  int add = (flags & DQ_LOSS_ADD_GRAD) != 0;
  float eps = label_smoothing, on = 1.0f - eps, off = eps / (float)V;
  float k = count ? weight / (float)count : 0.0f;
#pragma omp parallel for schedule(static) if (rows * V > DQ_OMP_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * V;
    float *gr = g ? g + r * V : NULL;
    int64_t y = label_at(labels, r);
    rl.p[r] = 0.0;
    if (y == ignore_index) {
      if (gr && !add)
        for (int64_t j = 0; j < V; j++) gr[j] = 0.0f;
      continue;
    }
    float m = row_max(xr, V, 1.0f);
    double lse = row_lse(xr, V, 1.0f, m);
    double loss = lse - (double)on * (double)xr[y];
    if (eps > 0.0f) loss -= (double)off * row_sum(xr, V);
    rl.p[r] = loss;
    if (!gr) continue;
    /* g_j = k * ((p_j - eps / V) - (1 - eps) [j = y]); lse_f >= every x_j,
     * so the exponent is never positive. */
    float lse_f = (float)lse;
    if (add) {
#pragma omp simd
      for (int64_t j = 0; j < V; j++) gr[j] += k * ((dq_exp_nonpos(xr[j] - lse_f) - off) - dq_pick(j == y, on, 0.0f));
    } else {
#pragma omp simd
      for (int64_t j = 0; j < V; j++) gr[j] = k * ((dq_exp_nonpos(xr[j] - lse_f) - off) - dq_pick(j == y, on, 0.0f));
    }
  }
  store_value(value, flags, count ? sum_in_order(rl.p, rows) / (double)count : 0.0);
  row_buffer_free(&rl);
  return DQ_OK;
}

/* ---- MSE ------------------------------------------------------------------------------ */

dq_status cpu_loss_mse(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,
                       const dq_tensor *teacher, double divisor) {
  const char *op = "dq_loss_mse";
  int64_t n = student->numel, blocks = (n + MSE_BLOCK - 1) / MSE_BLOCK;
  row_buffer part;
  dq_status st = row_buffer_init(&part, blocks, op);
  if (st) return st;
  const float *s = student->data, *t = teacher->data;
  float *g = grad ? grad->data : NULL;
  int add = (flags & DQ_LOSS_ADD_GRAD) != 0;
  float k = (float)(2.0 * (double)weight / divisor);
#pragma omp parallel for schedule(static) if (n > DQ_OMP_MIN)
  for (int64_t b = 0; b < blocks; b++) {
    int64_t i0 = b * MSE_BLOCK, i1 = n - i0 < MSE_BLOCK ? n : i0 + MSE_BLOCK;
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = i0; i < i1; i++) {
      float d = s[i] - t[i];
      acc += (double)(d * d);
    }
    part.p[b] = acc;
    if (!g) continue;
    if (add) {
#pragma omp simd
      for (int64_t i = i0; i < i1; i++) g[i] += k * (s[i] - t[i]);
    } else {
#pragma omp simd
      for (int64_t i = i0; i < i1; i++) g[i] = k * (s[i] - t[i]);
    }
  }
  store_value(value, flags, sum_in_order(part.p, blocks) / divisor);
  row_buffer_free(&part);
  return DQ_OK;
}

/* ---- KL with temperature ----------------------------------------------------------------- */

dq_status cpu_loss_kl(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,
                      const dq_tensor *teacher, const dq_tensor *labels, int64_t ignore_index, float temperature) {
  const char *op = "dq_loss_kl";
  int64_t V = dq_cols(student), rows = dq_rows(student);
  int64_t count = 0;
  for (int64_t r = 0; r < rows; r++) count += !labels || label_at(labels, r) != ignore_index;
  row_buffer rl;
  dq_status st = row_buffer_init(&rl, rows, op);
  if (st) return st;
  const float *s = student->data, *t = teacher->data;
  float *g = grad ? grad->data : NULL;
  int add = (flags & DQ_LOSS_ADD_GRAD) != 0;
  float inv_t = 1.0f / temperature;
  float k = count ? weight * temperature / (float)count : 0.0f;
#pragma omp parallel for schedule(static) if (rows * V > DQ_OMP_MIN)
  for (int64_t r = 0; r < rows; r++) {
    const float *sr = s + r * V, *tr = t + r * V;
    float *gr = g ? g + r * V : NULL;
    rl.p[r] = 0.0;
    if (labels && label_at(labels, r) == ignore_index) {
      if (gr && !add)
        for (int64_t j = 0; j < V; j++) gr[j] = 0.0f;
      continue;
    }
    float lse_s = (float)row_lse(sr, V, inv_t, row_max(sr, V, inv_t));
    float lse_t = (float)row_lse(tr, V, inv_t, row_max(tr, V, inv_t));
    /* Vectorizable loops: the value, then the gradient (exp(lp) again). */
    double kl = 0.0;
#pragma omp simd reduction(+ : kl)
    for (int64_t j = 0; j < V; j++) {
      float lp = tr[j] * inv_t - lse_t, lq = sr[j] * inv_t - lse_s;
      float p = dq_exp_nonpos(lp);
      kl += (double)dq_pick(isgreater(p, 0.0f), p * (lp - lq), 0.0f); /* p = 0: no term (lp may be -inf) */
    }
    if (gr && add) {
#pragma omp simd
      for (int64_t j = 0; j < V; j++)
        gr[j] += k * (dq_exp_nonpos(sr[j] * inv_t - lse_s) - dq_exp_nonpos(tr[j] * inv_t - lse_t));
    } else if (gr) {
#pragma omp simd
      for (int64_t j = 0; j < V; j++)
        gr[j] = k * (dq_exp_nonpos(sr[j] * inv_t - lse_s) - dq_exp_nonpos(tr[j] * inv_t - lse_t));
    }
    rl.p[r] = kl;
  }
  double tt = (double)temperature * (double)temperature;
  store_value(value, flags, count ? tt * sum_in_order(rl.p, rows) / (double)count : 0.0);
  row_buffer_free(&rl);
  return DQ_OK;
}
