/*
 * loss_ce.c: token cross-entropy with its gradient in one pass: the mean
 * over non-ignored rows of logsumexp(x) - x[label], and
 * dlogits = grad_scale * (softmax(x) - onehot(label)) / count.
 * A plain reference implementation (CPU here, CUDA in kernels/loss_ce.cu);
 * fused, faster losses live elsewhere.
 */
#include "cpu_math.h"
#include "loss_ce.h"

#include <math.h>
#include <string.h>

static inline int64_t label_at(const dq_tensor *labels, int64_t r) {
  return labels->dtype == DQ_I64 ? ((const int64_t *)labels->data)[r] : (int64_t)((const int32_t *)labels->data)[r];
}

dq_status cpu_cross_entropy(dq_tensor *loss, dq_tensor *dlogits, const dq_tensor *logits, const dq_tensor *labels,
                            int64_t ignore_index, float grad_scale, int accumulate) {
  int64_t V = logits->shape[logits->ndim - 1], R = V ? logits->numel / V : 0;
  int64_t count = 0;
  for (int64_t r = 0; r < R; r++) {
    int64_t y = label_at(labels, r);
    if (y == ignore_index) continue;
    if (y < 0 || y >= V)
      return dq_fail(DQ_ERR_ARGUMENT,
                     "dq_cross_entropy: label %lld at position %lld is outside the vocabulary [0, %lld) and is not "
                     "the ignore index %lld",
                     (long long)y, (long long)r, (long long)V, (long long)ignore_index);
    count++;
  }
  double total = 0.0;
  float inv = count ? 1.0f / (float)count : 0.0f;
  const float *x = logits->data;
  float *g = dlogits ? dlogits->data : NULL;
  DQ_PARALLEL_FOR_WITH_IF(R * V > 65536, "omp parallel for reduction(+ : total)", for (int64_t r = 0; r < R; r++) {
    const float *xr = x + r * V;
    float *gr = g ? g + r * V : NULL;
    int64_t y = label_at(labels, r);
    if (y == ignore_index) {
      if (gr && !accumulate) memset(gr, 0, sizeof(float) * (size_t)V);
      continue;
    }
    float mx = -INFINITY;
    for (int64_t j = 0; j < V; j++) mx = xr[j] > mx ? xr[j] : mx;
    double s = 0.0;
    for (int64_t j = 0; j < V; j++) s += exp((double)xr[j] - mx);
    double lse = mx + log(s);
    total += lse - xr[y];
    if (!gr) continue;
    float c = grad_scale * inv;
    for (int64_t j = 0; j < V; j++) {
      float v = c * ((float)exp((double)xr[j] - lse) - (j == y ? 1.0f : 0.0f));
      gr[j] = accumulate ? gr[j] + v : v;
    }
  });
  *(float *)loss->data = count ? (float)(total / (double)count) : 0.0f;
  return DQ_OK;
}

dq_status dq_cross_entropy(dq_tensor *loss, dq_tensor *dlogits, const dq_tensor *logits, const dq_tensor *labels,
                           int64_t ignore_index, float grad_scale, int32_t accumulate) {
  const char *op = "dq_cross_entropy";
  dq_status st;
  if ((st = dq_check_defined(op, "logits", logits)) || (st = dq_check_compute_dtype(op, "logits", logits))) return st;
  if ((st = dq_check_defined(op, "labels", labels))) return st;
  if (labels->dtype != DQ_I32 && labels->dtype != DQ_I64)
    return dq_fail(DQ_ERR_DTYPE, "%s: labels is %s; expected i32 or i64", op, dq_desc(labels));
  if ((st = dq_check_same_device(op, logits, labels))) return st;
  if (logits->ndim < 1 || labels->ndim != logits->ndim - 1 ||
      memcmp(labels->shape, logits->shape, sizeof(int64_t) * (size_t)labels->ndim) != 0)
    return dq_fail(DQ_ERR_SHAPE, "%s: labels %s must have the leading shape of logits %s (all but the vocabulary dim)",
                   op, dq_desc(labels), dq_desc(logits));
  if (dlogits) {
    if (accumulate && !dq_tensor_defined(dlogits))
      return dq_fail(DQ_ERR_ARGUMENT, "%s: accumulate is set but dlogits is not allocated", op);
    if ((st = dq_prepare_like(op, dlogits, logits))) return st;
  }
  if ((st = dq_prepare_out(op, loss, 0, NULL, DQ_F32, logits->device))) return st;
  if (dq_on_cuda(logits)) {
#ifdef DQ_HAVE_CUDA
    return cuda_cross_entropy(loss, dlogits, logits, labels, ignore_index, grad_scale, accumulate);
#else
    return dq_no_cuda(op);
#endif
  }
  return cpu_cross_entropy(loss, dlogits, logits, labels, ignore_index, grad_scale, accumulate);
}
