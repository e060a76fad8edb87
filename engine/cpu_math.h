/*
 * cpu_math.h: what the CPU backend files (engine/cpu_*.c) share: the OpenMP
 * size threshold and branch-free float math that GCC can vectorize (libm's
 * expf/erff stay scalar without -ffast-math, which would cost the softmax
 * and GELU loops most of their speed).
 */
#ifndef DQ_CPU_MATH_H
#define DQ_CPU_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Below this many elements a loop runs on the calling thread: waking the
 * OpenMP team costs more than the work. */
#define DQ_OMP_MIN 32768

/* DQ_PARALLEL_FOR_IF(large, for (...) body) runs the for statement as
 * `#pragma omp parallel for` when `large` is true and as a plain loop on
 * the calling thread otherwise. The OpenMP `if` clause is not enough: GCC
 * still calls GOMP_parallel when it is false, and libgomp then builds a
 * one-thread team (malloc, futex calls), which made a 1-element op cost
 * several hundred ns. The loop text is expanded twice and each copy is
 * compiled, and vectorized, on its own; one thread runs the same
 * iterations in the same order either way, so the results are the same
 * bits. DQ_PARALLEL_FOR_WITH_IF takes the whole pragma for loops that need
 * clauses, e.g. "omp parallel for schedule(dynamic, 1)"; its serial copy
 * runs without them (a reduction(+ : s) variable then simply accumulates,
 * as it would in a one-thread team). The for statement is a macro
 * argument, so it cannot hold #pragma lines: an inner `omp simd` loop goes
 * in a helper function. */
#define DQ_PARALLEL_FOR_IF(large, ...) DQ_PARALLEL_FOR_WITH_IF(large, "omp parallel for", __VA_ARGS__)
#define DQ_PARALLEL_FOR_WITH_IF(large, omp_pragma, ...) \
  do {                                                  \
    if (large) {                                        \
      _Pragma(omp_pragma) __VA_ARGS__;                  \
    } else {                                            \
      __VA_ARGS__;                                      \
    }                                                   \
  } while (0)

/* The math below must be inlined into the loops to vectorize; GCC would
 * otherwise keep dq_normal_cdf out of line once it has two callers. */
#define DQ_VEC_INLINE static inline __attribute__((always_inline))

DQ_VEC_INLINE float dq_bits_to_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
DQ_VEC_INLINE uint32_t dq_float_to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* cond ? a : b as bit masking. Under the default -ftrapping-math GCC turns
 * a float ?: into a branch and moves arithmetic into its arms, after which
 * the loop no longer vectorizes; masks keep the code straight-line. Pair it
 * with the quiet comparisons isless()/isgreater() for the same reason. */
DQ_VEC_INLINE float dq_pick(int cond, float a, float b) {
  uint32_t m = -(uint32_t)(cond != 0);
  return dq_bits_to_float((dq_float_to_bits(a) & m) | (dq_float_to_bits(b) & ~m));
}

/* exp(x) for x <= 0 (and NaN, which stays NaN), within 2 ulp; 0 below
 * -87.33 where the result would be subnormal. Every caller only needs
 * non-positive arguments (softmax shifts by the row max; Gaussian tails),
 * which keeps the 2^n scaling free of overflow cases. Cody-Waite reduction
 * x = n ln2 + r, |r| <= ln2/2 (n rounded by adding 1.5 * 2^23, which also
 * leaves n in the low bits of t), then Cephes' degree-6 polynomial. */
DQ_VEC_INLINE float dq_exp_nonpos(float x) {
  float xc = dq_pick(isless(x, -88.0f), -88.0f, x); /* keeps NaN */
  float t = fmaf(xc, 1.44269504088896341f, 12582912.0f);
  float n = t - 12582912.0f;
  float r = fmaf(n, -0.693359375f, xc);
  r = fmaf(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = fmaf(p, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  p = fmaf(p * r, r, r) + 1.0f;
  /* 2^n from the bits of t = 0x4B400000 + n, n in [-127, 0] */
  float scale = dq_bits_to_float((dq_float_to_bits(t) - 0x4B400000u + 127u) << 23);
  return dq_pick(isless(x, -87.33654475f), 0.0f, p * scale);
}

/* The standard normal CDF Phi(x) = 0.5 * (1 + erf(x / sqrt(2))), within
 * 1e-6 relative error (8e-7 just above x = -sqrt(2), where 1 + erf(a)
 * cancels; below 2e-7 elsewhere); NaN gives NaN. With a = x / sqrt(2) and
 * t = |a|:
 *   t <= 1: erf(a) = a * P(a^2), P of degree 6 (fit error 1.2e-9);
 *   t > 1:  erfc(t) = exp(-t^2) * H(v) / t with v = 2/t - 1 in [-1, 1), H of
 *           degree 11 fitting t * erfcx(t) (fit error 3.1e-8); the negative
 *           tail is then 0.5 * erfc(t) itself, accurate down to 1e-38.
 * Coefficients: weighted least squares against mpmath, reproduced by
 * spec/fixtures/fit_normal_cdf.py. Both branches are computed and one is
 * selected, so loops over this vectorize. */
DQ_VEC_INLINE float dq_normal_cdf(float x) {
  float a = x * 0.70710678118654752f, s = a * a, t = fabsf(a);
  float p = 7.851653245e-05f;
  p = fmaf(p, s, -8.009524039e-04f);
  p = fmaf(p, s, 5.188251356e-03f);
  p = fmaf(p, s, -2.685377169e-02f);
  p = fmaf(p, s, 1.128358418e-01f);
  p = fmaf(p, s, -3.761262574e-01f);
  p = fmaf(p, s, 1.128379166e+00f);
  float near = fmaf(0.5f * a, p, 0.5f);

  float tc = dq_pick(isless(t, 1.0f), 1.0f, t); /* keeps NaN */
  float u = 1.0f / tc, v = fmaf(2.0f, u, -1.0f);
  float h = 9.480189807e-05f;
  h = fmaf(h, v, -1.544324014e-04f);
  h = fmaf(h, v, -1.686591111e-04f);
  h = fmaf(h, v, 6.261455411e-04f);
  h = fmaf(h, v, -8.276651578e-04f);
  h = fmaf(h, v, 5.654258028e-04f);
  h = fmaf(h, v, 1.334834661e-03f);
  h = fmaf(h, v, -6.782433243e-03f);
  h = fmaf(h, v, 1.486913404e-02f);
  h = fmaf(h, v, -9.159479935e-03f);
  h = fmaf(h, v, -8.360545093e-02f);
  h = fmaf(h, v, 5.107913676e-01f);
  /* t^2 = x^2 / 2 from x itself (a = x / sqrt(2) is already rounded),
   * with the rounding error of x^2 carried as a first-order correction.
   * |x| is capped where exp(-x^2/2) is 0 in f32 anyway, keeping inf out of
   * the fma. */
  float xl = dq_pick(isgreater(fabsf(x), 16.0f), 16.0f, fabsf(x));
  float sq = xl * xl, sq_err = fmaf(xl, xl, -sq);
  float half_erfc = 0.5f * dq_exp_nonpos(-0.5f * sq) * (1.0f - 0.5f * sq_err) * h * u;
  float far = dq_pick(isless(x, 0.0f), half_erfc, 1.0f - half_erfc);
  return dq_pick(islessequal(t, 1.0f), near, far);
}

#endif
