/*
 * rouge_bootstrap.c: scoring.BootstrapAggregator._bootstrap_resample from
 * rouge-score. For each of `samples` resamples, draw `rows` row indices
 * uniformly with replacement and take the mean of each column; report
 * np.percentile of those means at 100 * [(1 - c) / 2, 0.5, 1 - (1 - c) / 2]
 * with numpy's default 'linear' method. Note that mid is therefore the
 * median of the bootstrap means, not the plain mean (which callers report
 * separately).
 *
 * Indices come from Philox4x32-10 (philox.h) keyed by the seed: draw number
 * d = resample * rows + row takes lanes (0, 1) or (2, 3) of counter d / 2 as
 * a 64-bit number, whose top 53 bits scale to [0, rows). numpy draws from
 * its own generator, so intervals agree statistically, not bitwise.
 */
#include "philox.h"
#include "rouge_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* numpy.percentile(v, q) with method='linear' on sorted v (n >= 1). */
static double percentile_linear(const double *v, int64_t n, double q) {
  double pos = q / 100.0 * (double)(n - 1);
  double lo = floor(pos);
  int64_t i = (int64_t)lo;
  if (i >= n - 1) return v[n - 1];
  double frac = pos - lo, a = v[i], b = v[i + 1];
  /* numpy's _lerp: a + (b - a) * t, from the upper end when t >= 0.5 */
  return frac >= 0.5 ? b - (b - a) * (1.0 - frac) : a + (b - a) * frac;
}

dq_status dq_bootstrap_mean(int64_t rows, int64_t cols, const double *values, int64_t samples,
                            double confidence, uint64_t seed, double *low, double *mid, double *high) {
  const char *op = "dq_bootstrap_mean";
  if (rows <= 0 || cols <= 0)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %lld rows x %lld cols; expected at least one of each", op,
                   (long long)rows, (long long)cols);
  if (samples <= 0) return dq_fail(DQ_ERR_ARGUMENT, "%s: samples is %lld; expected > 0", op, (long long)samples);
  if (!(confidence >= 0 && confidence <= 1))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: confidence is %g; expected a value in [0, 1]", op, confidence);
  if (!values || !low || !mid || !high) return dq_fail(DQ_ERR_ARGUMENT, "%s: a NULL array", op);

  double *means = malloc((size_t)samples * (size_t)cols * sizeof *means);
  double *sum = malloc((size_t)cols * sizeof *sum);
  double *column = malloc((size_t)samples * sizeof *column);
  if (!means || !sum || !column) {
    free(means);
    free(sum);
    free(column);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory for %lld x %lld resample means", op,
                   (long long)samples, (long long)cols);
  }
  for (int64_t s = 0; s < samples; s++) {
    memset(sum, 0, (size_t)cols * sizeof *sum);
    dq_u32x4 x = {{0, 0, 0, 0}};
    for (int64_t r = 0; r < rows; r++) {
      uint64_t draw_index = (uint64_t)s * (uint64_t)rows + (uint64_t)r;
      if (r == 0 || (draw_index & 1) == 0) x = dq_philox(seed, draw_index >> 1);
      int lane = (int)(draw_index & 1) * 2;
      uint64_t draw = ((uint64_t)x.v[lane] << 32) | x.v[lane + 1];
      int64_t idx = (int64_t)((double)(draw >> 11) * 0x1p-53 * (double)rows);
      if (idx >= rows) idx = rows - 1; /* rounding of the product, at most */
      const double *row = values + idx * cols;
      for (int64_t c = 0; c < cols; c++) sum[c] += row[c];
    }
    for (int64_t c = 0; c < cols; c++) means[s * cols + c] = sum[c] / (double)rows;
  }
  double delta = (1.0 - confidence) / 2.0;
  for (int64_t c = 0; c < cols; c++) {
    for (int64_t s = 0; s < samples; s++) column[s] = means[s * cols + c];
    qsort(column, (size_t)samples, sizeof *column, cmp_double);
    low[c] = percentile_linear(column, samples, 100.0 * delta);
    mid[c] = percentile_linear(column, samples, 50.0);
    high[c] = percentile_linear(column, samples, 100.0 * (1.0 - delta));
  }
  free(means);
  free(sum);
  free(column);
  return DQ_OK;
}
