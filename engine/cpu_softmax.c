/*
 * cpu_softmax.c: softmax(scale * x + mask) over the last dim and its
 * backward, one row per iteration. The mask broadcasts over x through the
 * stride plan ops.c built (stride 0 on broadcast dims).
 */
#include "backend.h"
#include "cpu_math.h"

/* Offset of row `row`'s first mask element: the row's multi-index over
 * x's leading dims dotted with the mask strides. */
static int64_t mask_row_offset(const dq_bcast_plan *plan, int64_t row) {
  int64_t off = 0;
  for (int k = plan->ndim - 2; k >= 0; k--) {
    off += (row % plan->shape[k]) * plan->strides[k];
    row /= plan->shape[k];
  }
  return off;
}

/* Normalize z (already scaled and masked, written in out) in place. A row
 * whose max is -inf (fully masked) becomes zeros instead of NaN. */
static void softmax_row(float *z, int64_t d) {
  float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
  for (int64_t j = 0; j < d; j++) mx = z[j] > mx ? z[j] : mx;
  if (mx == -INFINITY) {
    for (int64_t j = 0; j < d; j++) z[j] = 0.0f;
    return;
  }
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < d; j++) {
    float e = dq_exp_nonpos(z[j] - mx);
    z[j] = e;
    sum += (double)e;
  }
  float inv = (float)(1.0 / sum);
  for (int64_t j = 0; j < d; j++) z[j] *= inv;
}

dq_status cpu_softmax(dq_tensor *out, const dq_tensor *x, const dq_tensor *mask, const dq_bcast_plan *mask_plan,
                      float scale) {
  int64_t d = dq_cols(x), rows = dq_rows(x);
  const float *xd = x->data, *md = mask ? mask->data : NULL;
  float *od = out->data;
  int64_t mask_col_stride = mask ? mask_plan->strides[mask_plan->ndim - 1] : 0;
  DQ_PARALLEL_FOR_IF(x->numel > DQ_OMP_MIN / 4, for (int64_t r = 0; r < rows; r++) {
    const float *xr = xd + r * d;
    float *z = od + r * d; /* out may alias x: element j is read before it is written */
    if (!md) {
      for (int64_t j = 0; j < d; j++) z[j] = scale * xr[j];
    } else {
      const float *mr = md + mask_row_offset(mask_plan, r);
      if (mask_col_stride) {
        for (int64_t j = 0; j < d; j++) z[j] = scale * xr[j] + mr[j];
      } else {
        float m0 = mr[0];
        for (int64_t j = 0; j < d; j++) z[j] = scale * xr[j] + m0;
      }
    }
    softmax_row(z, d);
  });
  return DQ_OK;
}

/* dx = scale * y * (dy - sum(dy * y)) for one row; dr may alias gr (the
 * dot product is taken first). */
static void softmax_row_backward(float *dr, const float *gr, const float *yr, int64_t d, float scale) {
  double dot = 0.0;
#pragma omp simd reduction(+ : dot)
  for (int64_t j = 0; j < d; j++) dot += (double)(gr[j] * yr[j]);
  float s = (float)dot;
  for (int64_t j = 0; j < d; j++) dr[j] = scale * yr[j] * (gr[j] - s);
}

dq_status cpu_softmax_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *y, float scale) {
  int64_t d = dq_cols(y), rows = dq_rows(y);
  const float *g = dy->data, *yd = y->data;
  float *dxd = dx->data;
  DQ_PARALLEL_FOR_IF(y->numel > DQ_OMP_MIN, for (int64_t r = 0; r < rows; r++) {
    softmax_row_backward(dxd + r * d, g + r * d, yd + r * d, d, scale);
  });
  return DQ_OK;
}
