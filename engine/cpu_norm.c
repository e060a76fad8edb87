/*
 * cpu_norm.c: LayerNorm over the last dim, forward and backward, on the CPU.
 * Row statistics are accumulated in double. The parameter gradients are
 * summed over rows by column blocks, each column by one thread in row
 * order, so they are bitwise the same whatever the thread count.
 */
#include "backend.h"
#include "cpu_math.h"

/* Mean and 1/sqrt(biased variance + eps) of one row (two passes: the
 * one-pass formula loses digits when the mean is large). */
static void row_stats(const float *x, int64_t d, float eps, float *mean_out, float *rstd_out) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < d; j++) sum += (double)x[j];
  double mean = sum / (double)d, sq = 0.0;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < d; j++) {
    double c = (double)x[j] - mean;
    sq += c * c;
  }
  *mean_out = (float)mean;
  *rstd_out = (float)(1.0 / sqrt(sq / (double)d + (double)eps));
}

dq_status cpu_layernorm(dq_tensor *out, dq_tensor *mean, dq_tensor *rstd, const dq_tensor *x,
                        const dq_tensor *weight, const dq_tensor *bias, float eps) {
  int64_t d = dq_cols(x), rows = dq_rows(x);
  const float *xd = x->data, *w = weight->data, *b = bias->data;
  float *od = out->data, *md = mean ? mean->data : NULL, *rd = rstd ? rstd->data : NULL;
  DQ_PARALLEL_FOR_IF(x->numel > DQ_OMP_MIN, for (int64_t r = 0; r < rows; r++) {
    const float *xr = xd + r * d;
    float *orow = od + r * d;
    float mu, rs;
    row_stats(xr, d, eps, &mu, &rs);
    /* Stats first, then the writes: out may alias x. */
    for (int64_t j = 0; j < d; j++) orow[j] = (xr[j] - mu) * rs * w[j] + b[j];
    if (md) {
      md[r] = mu;
      rd[r] = rs;
    }
  });
  return DQ_OK;
}

#define NORM_COL_BLOCK 64

/* dweight[c] (+)= sum_r dy[r,c] * xhat[r,c], dbias[c] (+)= sum_r dy[r,c]. */
static void param_grads(float *dw, float *db, const float *dy, const float *x, const float *mean,
                        const float *rstd, int64_t rows, int64_t d, int accumulate) {
  int64_t blocks = (d + NORM_COL_BLOCK - 1) / NORM_COL_BLOCK;
  DQ_PARALLEL_FOR_IF(rows * d > DQ_OMP_MIN, for (int64_t blk = 0; blk < blocks; blk++) {
    int64_t c0 = blk * NORM_COL_BLOCK, w = d - c0 < NORM_COL_BLOCK ? d - c0 : NORM_COL_BLOCK;
    double aw[NORM_COL_BLOCK] = {0}, ab[NORM_COL_BLOCK] = {0};
    for (int64_t r = 0; r < rows; r++) {
      const float *g = dy + r * d + c0, *xr = x + r * d + c0;
      float mu = mean[r], rs = rstd[r];
      for (int64_t c = 0; c < w; c++) {
        aw[c] += (double)(g[c] * ((xr[c] - mu) * rs));
        ab[c] += (double)g[c];
      }
    }
    for (int64_t c = 0; c < w; c++) {
      if (dw) dw[c0 + c] = (float)(aw[c] + (accumulate ? (double)dw[c0 + c] : 0.0));
      if (db) db[c0 + c] = (float)(ab[c] + (accumulate ? (double)db[c0 + c] : 0.0));
    }
  });
}

/* With xhat = (x - mean) * rstd and g = dy * weight:
 * dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), for one row. */
static void row_backward(float *dr, const float *gr, const float *xr, const float *w, int64_t d, float mu, float rs) {
  double sg = 0.0, sgx = 0.0;
#pragma omp simd reduction(+ : sg, sgx)
  for (int64_t j = 0; j < d; j++) {
    float gw = gr[j] * w[j];
    sg += (double)gw;
    sgx += (double)(gw * ((xr[j] - mu) * rs));
  }
  float mg = (float)(sg / (double)d), mgx = (float)(sgx / (double)d);
  for (int64_t j = 0; j < d; j++) {
    float xhat = (xr[j] - mu) * rs;
    dr[j] = rs * (gr[j] * w[j] - mg - xhat * mgx);
  }
}

dq_status cpu_layernorm_backward(dq_tensor *dx, dq_tensor *dweight, dq_tensor *dbias, const dq_tensor *dy,
                                 const dq_tensor *x, const dq_tensor *weight, const dq_tensor *mean,
                                 const dq_tensor *rstd, int accumulate) {
  int64_t d = dq_cols(x), rows = dq_rows(x);
  const float *g = dy->data, *xd = x->data, *w = weight->data, *md = mean->data, *rd = rstd->data;
  float *dxd = dx->data;
  /* Parameter gradients first: dx may alias dy. */
  if (dweight || dbias)
    param_grads(dweight ? dweight->data : NULL, dbias ? dbias->data : NULL, g, xd, md, rd, rows, d, accumulate);
  DQ_PARALLEL_FOR_IF(x->numel > DQ_OMP_MIN, for (int64_t r = 0; r < rows; r++) {
    row_backward(dxd + r * d, g + r * d, xd + r * d, w, d, md[r], rd[r]);
  });
  return DQ_OK;
}
