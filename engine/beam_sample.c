/*
 * beam_sample.c: one token drawn from a row of processed logits with
 * transformers' sampling warpers, in their order (TemperatureLogitsWarper,
 * TopKLogitsWarper, TopPLogitsWarper, min_tokens_to_keep 1), then the
 * softmax's inverse CDF at a uniform u (generate.c draws u from Philox, so
 * a seed reproduces a run exactly; torch's multinomial stream cannot be
 * matched, only the distribution).
 */
#include "beam_internal.h"

#include <math.h>
#include <stdlib.h>

typedef struct scored {
  float v;
  int32_t i;
} scored;

/* Descending by value, ties by index: a strict total order. */
static int by_value_desc(const void *pa, const void *pb) {
  const scored *a = pa, *b = pb;
  if (a->v != b->v) return a->v > b->v ? -1 : 1;
  return a->i < b->i ? -1 : a->i > b->i;
}

int64_t beam_sample_row(float *x, int64_t V, float temperature, int top_k, float top_p, float u, void *work) {
  scored *s = work;
  if (temperature != 1.0f)
    for (int64_t v = 0; v < V; v++) x[v] = x[v] / temperature;
  int need_sort = (top_k > 0 && top_k < V) || top_p < 1.0f;
  if (need_sort) {
    for (int64_t v = 0; v < V; v++) s[v] = (scored){x[v], (int32_t)v};
    qsort(s, (size_t)V, sizeof *s, by_value_desc);
  }
  if (top_k > 0 && top_k < V) {
    /* Remove what is below the k-th largest value (ties with it stay). */
    float kth = s[top_k - 1].v;
    for (int64_t v = 0; v < V; v++)
      if (x[v] < kth) x[v] = -INFINITY;
    for (int64_t j = top_k; j < V; j++)
      if (s[j].v < kth) s[j].v = -INFINITY;
  }
  if (top_p < 1.0f) {
    /* Ascending cumulative softmax mass; remove while it stays <= 1 - p,
     * always keeping the largest. */
    float mx = s[0].v;
    double total = 0.0;
    for (int64_t j = 0; j < V; j++) total += exp((double)s[j].v - mx);
    double cum = 0.0;
    for (int64_t j = V - 1; j >= 1; j--) {
      cum += exp((double)s[j].v - mx) / total;
      if ((float)cum <= 1.0f - top_p) x[s[j].i] = -INFINITY;
      else break;
    }
  }
  float mx = -INFINITY;
  for (int64_t v = 0; v < V; v++)
    if (x[v] > mx) mx = x[v];
  if (mx == -INFINITY) return 0; /* nothing allowed: transformers would fail; take token 0 */
  double total = 0.0;
  for (int64_t v = 0; v < V; v++) total += exp((double)x[v] - mx);
  double target = (double)u * total, cum = 0.0;
  int64_t last = 0;
  for (int64_t v = 0; v < V; v++) {
    double p = exp((double)x[v] - mx);
    if (p <= 0.0) continue;
    cum += p;
    last = v;
    if (cum > target) return v;
  }
  return last;
}
