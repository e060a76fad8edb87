/*
 * cpu_elementwise.c: CPU binary ops with suffix broadcasting, axpby,
 * sum_leading (the backward of broadcasting), GELU/ReLU and dropout.
 * Arguments were checked in ops.c. out may alias an input: every loop reads
 * element i before writing element i and never reads a written one.
 */
#include "backend.h"
#include "cpu_math.h"
#include "philox.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- binary ---------------------------------------------------------------
 * out[i] = a[i % na] op b[i % nb]; one of na, nb equals n and the other
 * divides it. The small operand repeats along rows of its length, so the
 * work is split into (row, column block) tiles whose inner loop is a plain
 * vectorizable run over one row segment. */

#define BIN_COL_BLOCK 4096

#define BIN_EXPR_ADD(x, y) ((x) + (y))
#define BIN_EXPR_SUB(x, y) ((x) - (y))
#define BIN_EXPR_MUL(x, y) ((x) * (y))

/* Expands to the tiled loop for one operator, so the operator is fixed at
 * compile time inside the loop (no per-element dispatch). */
#define BIN_LOOPS(EXPR)                                                                      \
  do {                                                                                       \
    if (na == nb) {                                                                          \
      DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN,                                                     \
                         for (int64_t i = 0; i < n; i++) o[i] = EXPR(x[i], y[i]));           \
    } else if (nb == 1 || na == 1) {                                                         \
      if (nb == 1) {                                                                         \
        const float s = y[0];                                                                \
        DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN,                                                   \
                           for (int64_t i = 0; i < n; i++) o[i] = EXPR(x[i], s));            \
      } else {                                                                               \
        const float s = x[0];                                                                \
        DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN,                                                   \
                           for (int64_t i = 0; i < n; i++) o[i] = EXPR(s, y[i]));            \
      }                                                                                      \
    } else {                                                                                 \
      int64_t len = na < nb ? na : nb, rows = n / len;                                       \
      int64_t blocks = (len + BIN_COL_BLOCK - 1) / BIN_COL_BLOCK;                            \
      DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t t = 0; t < rows * blocks; t++) {       \
        int64_t r = t / blocks, c0 = (t % blocks) * BIN_COL_BLOCK;                           \
        int64_t c1 = c0 + BIN_COL_BLOCK < len ? c0 + BIN_COL_BLOCK : len;                    \
        float *orow = o + r * len;                                                           \
        if (na < nb) {                                                                       \
          const float *yrow = y + r * len;                                                   \
          for (int64_t c = c0; c < c1; c++) orow[c] = EXPR(x[c], yrow[c]);                   \
        } else {                                                                             \
          const float *xrow = x + r * len;                                                   \
          for (int64_t c = c0; c < c1; c++) orow[c] = EXPR(xrow[c], y[c]);                   \
        }                                                                                    \
      });                                                                                    \
    }                                                                                        \
  } while (0)

dq_status cpu_binary(dq_tensor *out, const dq_tensor *a, const dq_tensor *b, int op) {
  const float *x = a->data, *y = b->data;
  float *o = out->data;
  int64_t n = out->numel, na = a->numel, nb = b->numel;
  switch (op) {
  case DQ_BIN_ADD: BIN_LOOPS(BIN_EXPR_ADD); break;
  case DQ_BIN_SUB: BIN_LOOPS(BIN_EXPR_SUB); break;
  case DQ_BIN_MUL: BIN_LOOPS(BIN_EXPR_MUL); break;
  default: return dq_fail(DQ_ERR_INTERNAL, "cpu_binary: unknown operator %d", op);
  }
  return DQ_OK;
}

/* ---- axpby ------------------------------------------------------------------ */

/* beta == 0 never reads y: dq_scale passes a freshly allocated out. */
dq_status cpu_axpby(dq_tensor *y, const dq_tensor *x, float alpha, float beta) {
  float *yd = y->data;
  const float *xd = x->data;
  int64_t n = y->numel;
  if (beta == 0.0f) {
    DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t i = 0; i < n; i++) yd[i] = alpha * xd[i]);
  } else if (beta == 1.0f) {
    DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t i = 0; i < n; i++) yd[i] += alpha * xd[i]);
  } else {
    DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t i = 0; i < n; i++) yd[i] = alpha * xd[i] + beta * yd[i]);
  }
  return DQ_OK;
}

/* ---- sum_leading ------------------------------------------------------------
 * out[c] (+)= sum_r x[r, c]. Deterministic whatever the thread count: each
 * output column is summed in double by one thread in row order. Wide rows
 * are split into column blocks; narrow rows (few columns, many rows) into
 * fixed-size row chunks whose partial sums are added in chunk order. The
 * split depends only on the shape. */

#define SUM_COL_BLOCK 64
#define SUM_CHUNK_ELEMS 65536

/* acc[0..w) += x[r, c0..c0+w) for r in [r0, r1). */
static void sum_rows_block(double *acc, const float *x, int64_t cols, int64_t r0, int64_t r1, int64_t c0,
                           int64_t w) {
  for (int64_t r = r0; r < r1; r++) {
    const float *row = x + r * cols + c0;
    for (int64_t c = 0; c < w; c++) acc[c] += (double)row[c];
  }
}

dq_status cpu_sum_leading(dq_tensor *out, const dq_tensor *x, int accumulate) {
  int64_t cols = out->numel, rows = x->numel / cols;
  const float *xd = x->data;
  float *od = out->data;
  int64_t chunk_rows = SUM_CHUNK_ELEMS / cols;
  if (cols >= 512 || chunk_rows >= rows) {
    int64_t blocks = (cols + SUM_COL_BLOCK - 1) / SUM_COL_BLOCK;
    DQ_PARALLEL_FOR_IF(x->numel > DQ_OMP_MIN, for (int64_t blk = 0; blk < blocks; blk++) {
      int64_t c0 = blk * SUM_COL_BLOCK, w = cols - c0 < SUM_COL_BLOCK ? cols - c0 : SUM_COL_BLOCK;
      double acc[SUM_COL_BLOCK] = {0};
      sum_rows_block(acc, xd, cols, 0, rows, c0, w);
      for (int64_t c = 0; c < w; c++) od[c0 + c] = (float)(acc[c] + (accumulate ? (double)od[c0 + c] : 0.0));
    });
    return DQ_OK;
  }
  /* cols < 512 here, so a chunk's partial row of cols doubles is small. */
  int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
  double *partial = calloc((size_t)(chunks * cols), sizeof(double));
  if (!partial)
    return dq_fail(DQ_ERR_MEMORY, "dq_sum_leading: cannot allocate %lld partial sums",
                   (long long)(chunks * cols));
  DQ_PARALLEL_FOR_IF(x->numel > DQ_OMP_MIN, for (int64_t k = 0; k < chunks; k++) {
    int64_t r0 = k * chunk_rows, r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
    sum_rows_block(partial + k * cols, xd, cols, r0, r1, 0, cols);
  });
  for (int64_t c = 0; c < cols; c++) {
    double s = accumulate ? (double)od[c] : 0.0;
    for (int64_t k = 0; k < chunks; k++) s += partial[k * cols + c];
    od[c] = (float)s;
  }
  free(partial);
  return DQ_OK;
}

/* ---- activations ------------------------------------------------------------ */

dq_status cpu_gelu(dq_tensor *out, const dq_tensor *x) {
  const float *xd = x->data;
  float *od = out->data;
  int64_t n = x->numel;
  DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN / 8, for (int64_t i = 0; i < n; i++) {
    float v = xd[i];
    od[i] = v * dq_normal_cdf(v);
  });
  return DQ_OK;
}

/* d/dx x Phi(x) = Phi(x) + x phi(x), phi the standard normal density. */
dq_status cpu_gelu_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x) {
  const float *xd = x->data, *g = dy->data;
  float *d = dx->data;
  int64_t n = x->numel;
  DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN / 8, for (int64_t i = 0; i < n; i++) {
    float v = xd[i];
    float pdf = 0.398942280401432678f * dq_exp_nonpos(-0.5f * v * v);
    d[i] = g[i] * (dq_normal_cdf(v) + v * pdf);
  });
  return DQ_OK;
}

dq_status cpu_relu(dq_tensor *out, const dq_tensor *x) {
  const float *xd = x->data;
  float *od = out->data;
  int64_t n = x->numel;
  DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t i = 0; i < n; i++) od[i] = xd[i] > 0.0f ? xd[i] : 0.0f);
  return DQ_OK;
}

/* The gradient at 0 is taken as 0 (torch's convention). */
dq_status cpu_relu_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x) {
  const float *xd = x->data, *g = dy->data;
  float *d = dx->data;
  int64_t n = x->numel;
  DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t i = 0; i < n; i++) d[i] = xd[i] > 0.0f ? g[i] : 0.0f);
  return DQ_OK;
}

/* ---- dropout ------------------------------------------------------------------
 * Element i is kept when dq_philox_uniform(seed, offset, i) >= p: one Philox
 * call serves four consecutive elements (counter offset + i/4, lane i%4), as
 * on the GPU. The backward is the same mask applied to dy. */
dq_status cpu_dropout(dq_tensor *out, const dq_tensor *x, float p, uint64_t seed, uint64_t offset, int backward) {
  (void)backward; /* forward and backward are the same masked scaling */
  const float *xd = x->data;
  float *od = out->data;
  int64_t n = x->numel;
  if (p == 0.0f) {
    if (od != xd) memmove(od, xd, (size_t)n * sizeof(float));
    return DQ_OK;
  }
  const float keep_scale = 1.0f / (1.0f - p);
  /* Whole groups of four in a loop GCC vectorizes (Philox is plain 32-bit
   * integer arithmetic), then the partial last group. */
  int64_t full = n / 4;
  DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN / 4, for (int64_t g = 0; g < full; g++) {
    dq_u32x4 r = dq_philox(seed, offset + (uint64_t)g);
    for (int lane = 0; lane < 4; lane++) {
      float u = dq_u32_to_uniform(r.v[lane]);
      od[g * 4 + lane] = dq_pick(isgreaterequal(u, p), xd[g * 4 + lane] * keep_scale, 0.0f);
    }
  });
  if (n % 4) {
    dq_u32x4 r = dq_philox(seed, offset + (uint64_t)full);
    for (int64_t i = full * 4; i < n; i++) {
      float u = dq_u32_to_uniform(r.v[i - full * 4]);
      od[i] = dq_pick(isgreaterequal(u, p), xd[i] * keep_scale, 0.0f);
    }
  }
  return DQ_OK;
}
