/*
 * beam_select.c: a generation step's token selection on the CPU (the
 * semantics are in beam_backend.h; kernels/beam_select.cu is the CUDA
 * half): every row's scores are computed in place (log-softmax, bans,
 * forced token, plus the row's beam score), then each source keeps the k
 * best of its beams * V candidates.
 */
#include "beam_backend.h"

#include <math.h>
#include <string.h>

/* Row r's scores in place. log_softmax: (x - max) - log(sum exp(x - max)),
 * in that order, as torch computes it (the sum in double). */
static void process_row(float *x, int64_t r, const beam_select_args *a) {
  int64_t V = a->vocab;
  float add = a->row_scores ? a->row_scores[r] : 0.0f;
  if (a->forced >= 0) {
    for (int64_t v = 0; v < V; v++) x[v] = -INFINITY;
    x[a->forced] = 0.0f + add;
    return;
  }
  if (a->log_softmax) {
    float mx = -INFINITY;
    for (int64_t v = 0; v < V; v++)
      if (x[v] > mx) mx = x[v];
    double sum = 0.0;
    for (int64_t v = 0; v < V; v++) sum += (double)expf(x[v] - mx);
    float logsum = (float)log(sum);
    if (mx == -INFINITY) mx = 0.0f, logsum = 0.0f; /* a row of -inf stays -inf */
    for (int64_t v = 0; v < V; v++) x[v] = (x[v] - mx) - logsum;
  }
  if (a->ban_start)
    for (int32_t i = a->ban_start[r]; i < a->ban_start[r + 1]; i++) x[a->ban_tokens[i]] = -INFINITY;
  if (a->ban_eos >= 0) x[a->ban_eos] = -INFINITY;
  if (add != 0.0f)
    for (int64_t v = 0; v < V; v++) x[v] += add;
}

/* The k best of x[0..n) by (value descending, index ascending) into
 * scores / index. NaN never enters; slots no finite-or-infinite value
 * filled keep -inf and the lowest unused indices. */
static void top_k(const float *x, int64_t n, int k, float *scores, int32_t *index) {
  int have = 0;
  for (int64_t i = 0; i < n; i++) {
    float v = x[i];
    if (have == k && !(v > scores[k - 1])) continue;
    if (have < k && v != v) continue;
    int pos = have < k ? have : k - 1;
    /* equal values keep their earlier (lower) index ahead */
    while (pos > 0 && v > scores[pos - 1]) {
      scores[pos] = scores[pos - 1];
      index[pos] = index[pos - 1];
      pos--;
    }
    scores[pos] = v;
    index[pos] = (int32_t)i;
    if (have < k) have++;
  }
  /* Fewer than k comparable values (all NaN): fill deterministically. */
  for (int j = have; j < k; j++) {
    scores[j] = -INFINITY;
    index[j] = j;
  }
}

dq_status cpu_beam_select(dq_tensor *logits, const beam_select_args *a) {
  float *x = logits->data;
  int64_t rows = a->batch * a->beams, V = a->vocab;
#pragma omp parallel for schedule(static) if (rows * V > 65536)
  for (int64_t r = 0; r < rows; r++) process_row(x + r * V, r, a);
#pragma omp parallel for schedule(static) if (a->batch > 1 && rows * V > 65536)
  for (int64_t b = 0; b < a->batch; b++)
    top_k(x + b * a->beams * V, a->beams * V, a->k, a->out_scores + b * a->k, a->out_index + b * a->k);
  return DQ_OK;
}
