/* test_cpu_ops.c: every core op on the CPU against naive double-precision
 * loops, on small odd shapes; determinism across thread counts; dropout
 * statistics; and one rejected call per op. Public API only. */
#include "dqbart.h"
#include "check.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* ---- helpers ------------------------------------------------------------- */

#define SHAPE(...) (int64_t[]){__VA_ARGS__}, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t))

static uint64_t lcg_state = 0x9E3779B97F4A7C15ull;
static double urand(void) {
  lcg_state = lcg_state * 6364136223846793005ull + 1442695040888963407ull;
  return (double)(lcg_state >> 11) / 9007199254740992.0;
}

static float *host_random(int64_t n, double lo, double hi) {
  float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
  for (int64_t i = 0; i < n; i++) p[i] = (float)(lo + (hi - lo) * urand());
  return p;
}

static dq_tensor tensor_of(const int64_t *shape, int ndim, int dtype) {
  dq_tensor t = {0};
  CHECK_OK(dq_tensor_empty(&t, ndim, shape, dtype, DQ_CPU));
  return t;
}

/* A f32 tensor holding a copy of `values`. */
static dq_tensor upload(const int64_t *shape, int ndim, const float *values) {
  dq_tensor t = tensor_of(shape, ndim, DQ_F32);
  CHECK_OK(dq_copy_from_host(&t, values, t.numel * 4));
  return t;
}

static float *download(const dq_tensor *t) {
  float *p = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
  CHECK_OK(dq_copy_to_host(t, p, t->numel * 4));
  return p;
}

/* got (a tensor) against want within atol + rtol * |want|; one CHECK. */
static void expect_close(const char *what, const dq_tensor *got, const double *want, int64_t n, double atol,
                         double rtol) {
  CHECK(got->numel == n, "%s: %lld elements, expected %lld", what, (long long)got->numel, (long long)n);
  if (got->numel != n) return;
  float *g = download(got);
  int64_t bad = -1;
  for (int64_t i = 0; i < n && bad < 0; i++) {
    double err = fabs((double)g[i] - want[i]);
    if (!(err <= atol + rtol * fabs(want[i])) && !(isinf(want[i]) && g[i] == want[i])) bad = i;
  }
  CHECK(bad < 0, "%s: element %lld is %.9g, expected %.9g", what, (long long)bad, bad >= 0 ? g[bad] : 0.0,
        bad >= 0 ? want[bad] : 0.0);
  free(g);
}

static int same_bits(const dq_tensor *a, const dq_tensor *b) {
  if (a->numel != b->numel) return 0;
  float *x = download(a), *y = download(b);
  int same = memcmp(x, y, (size_t)a->numel * 4) == 0;
  free(x);
  free(y);
  return same;
}

static void release(int n, dq_tensor **ts) {
  for (int i = 0; i < n; i++) dq_tensor_release(ts[i]);
}
#define RELEASE(...) release(sizeof((dq_tensor *[]){__VA_ARGS__}) / sizeof(dq_tensor *), (dq_tensor *[]){__VA_ARGS__})

static double gelu_ref(double x) { return 0.5 * x * erfc(-x / sqrt(2.0)); }
static double gelu_grad_ref(double x) {
  return 0.5 * erfc(-x / sqrt(2.0)) + x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI);
}

/* ---- binary ops, axpby, scale, sum_leading --------------------------------- */

static void test_binary_case(const int64_t *sa, int nda, const int64_t *sb, int ndb) {
  dq_tensor a0 = tensor_of(sa, nda, DQ_F32), b0 = tensor_of(sb, ndb, DQ_F32);
  int64_t na = a0.numel, nb = b0.numel, n = na > nb ? na : nb;
  float *ha = host_random(na, -2, 2), *hb = host_random(nb, -2, 2);
  dq_tensor a = upload(sa, nda, ha), b = upload(sb, ndb, hb);
  double *want = malloc((size_t)n * sizeof(double));
  dq_status (*fns[3])(dq_tensor *, const dq_tensor *, const dq_tensor *) = {dq_add, dq_sub, dq_mul};
  const char *names[3] = {"add", "sub", "mul"};
  for (int op = 0; op < 3; op++) {
    for (int64_t i = 0; i < n; i++) {
      double x = ha[i % na], y = hb[i % nb];
      want[i] = op == 0 ? x + y : op == 1 ? x - y : x * y;
    }
    dq_tensor out = {0};
    CHECK_OK(fns[op](&out, &a, &b));
    char what[64];
    snprintf(what, sizeof what, "%s [%lld] with [%lld]", names[op], (long long)na, (long long)nb);
    expect_close(what, &out, want, n, 1e-6, 1e-6);
    /* In place into the larger operand. */
    dq_tensor big = {0};
    const float *hbig = na >= nb ? ha : hb;
    big = na >= nb ? upload(sa, nda, hbig) : upload(sb, ndb, hbig);
    dq_tensor alias = {0};
    CHECK_OK(dq_tensor_share(&alias, &big));
    CHECK_OK(na >= nb ? fns[op](&alias, &big, &b) : fns[op](&alias, &a, &big));
    snprintf(what, sizeof what, "%s in place", names[op]);
    expect_close(what, &big, want, n, 1e-6, 1e-6);
    RELEASE(&out, &big, &alias);
  }
  free(want);
  free(ha);
  free(hb);
  RELEASE(&a, &b, &a0, &b0);
}

static void test_binary(void) {
  test_binary_case(SHAPE(3, 5, 7), SHAPE(3, 5, 7));
  test_binary_case(SHAPE(3, 5, 7), SHAPE(5, 7));
  test_binary_case(SHAPE(3, 5, 7), SHAPE(1, 7));
  test_binary_case(SHAPE(7), SHAPE(3, 5, 7));
  test_binary_case(SHAPE(3, 5, 7), SHAPE(1));
  test_binary_case(SHAPE(1), SHAPE(4, 3));
  test_binary_case(SHAPE(9, 5000), SHAPE(5000)); /* several column blocks, parallel */
  dq_tensor a = tensor_of(SHAPE(3, 5, 7), DQ_F32), b = tensor_of(SHAPE(5, 6), DQ_F32), out = {0};
  CHECK_FAILS(dq_add(&out, &a, &b), "dq_add");
  CHECK_FAILS(dq_sub(&out, &a, &b), "dq_sub");
  CHECK_FAILS(dq_mul(&out, &a, &b), "dq_mul");
  RELEASE(&a, &b);
}

static void test_axpby_scale(void) {
  int64_t n = 3 * 5 * 7;
  float *hx = host_random(n, -1, 1), *hy = host_random(n, -1, 1);
  dq_tensor x = upload(SHAPE(3, 5, 7), hx), y = upload(SHAPE(3, 5, 7), hy);
  double *want = malloc((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; i++) want[i] = 0.5 * hx[i] - 1.5 * hy[i];
  CHECK_OK(dq_axpby(&y, &x, 0.5f, -1.5f));
  expect_close("axpby", &y, want, n, 1e-6, 1e-6);
  /* scale into an out full of NaN: beta 0 must not read it */
  dq_tensor out = tensor_of(SHAPE(3, 5, 7), DQ_F32);
  CHECK_OK(dq_fill(&out, NAN));
  for (int64_t i = 0; i < n; i++) want[i] = 3.0 * hx[i];
  CHECK_OK(dq_scale(&out, &x, 3.0f));
  expect_close("scale over NaN", &out, want, n, 1e-6, 1e-6);
  CHECK_OK(dq_scale(&x, &x, 3.0f));
  expect_close("scale in place", &x, want, n, 1e-6, 1e-6);
  dq_tensor wrong = tensor_of(SHAPE(3, 5), DQ_F32);
  CHECK_FAILS(dq_axpby(&wrong, &x, 1, 1), "dq_axpby");
  CHECK_FAILS(dq_scale(&wrong, &x, 2), "dq_scale");
  free(want);
  free(hx);
  free(hy);
  RELEASE(&x, &y, &out, &wrong);
}

static void sum_leading_case(int64_t rows, int64_t cols, const int64_t *out_shape, int out_nd) {
  int64_t n = rows * cols;
  float *hx = host_random(n, -1, 1), *ho = host_random(cols, -1, 1);
  dq_tensor x = upload(SHAPE(rows, cols), hx), out = upload(out_shape, out_nd, ho);
  double *want = calloc((size_t)cols, sizeof(double));
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c = 0; c < cols; c++) want[c] += hx[r * cols + c];
  CHECK_OK(dq_sum_leading(&out, &x, 0));
  char what[64];
  snprintf(what, sizeof what, "sum_leading %lldx%lld", (long long)rows, (long long)cols);
  expect_close(what, &out, want, cols, 1e-5, 1e-6);
  for (int64_t c = 0; c < cols; c++) want[c] *= 2.0;
  CHECK_OK(dq_sum_leading(&out, &x, 1));
  expect_close("sum_leading accumulate", &out, want, cols, 1e-5, 1e-6);
  free(want);
  free(hx);
  free(ho);
  RELEASE(&x, &out);
}

static void test_sum_leading(void) {
  int64_t n = 3 * 5 * 7;
  float *hx = host_random(n, -1, 1);
  dq_tensor x = upload(SHAPE(3, 5, 7), hx), out = tensor_of(SHAPE(5, 7), DQ_F32);
  double want[35] = {0};
  for (int64_t i = 0; i < n; i++) want[i % 35] += hx[i];
  CHECK_OK(dq_sum_leading(&out, &x, 0));
  expect_close("sum_leading [3,5,7] -> [5,7]", &out, want, 35, 1e-6, 1e-6);
  sum_leading_case(30001, 3, SHAPE(3));  /* row-chunk path */
  sum_leading_case(40, 600, SHAPE(600)); /* column-block path */
  sum_leading_case(7, 1, SHAPE(1));
  dq_tensor bad = tensor_of(SHAPE(4), DQ_F32);
  CHECK_FAILS(dq_sum_leading(&bad, &x, 0), "dq_sum_leading");
  free(hx);
  RELEASE(&x, &out, &bad);
}

/* ---- activations ------------------------------------------------------------ */

static void test_activations(void) {
  int64_t n = 3 * 5 * 7 + 6;
  float *hx = host_random(n, -6, 6), *hg = host_random(n, -1, 1);
  hx[0] = 0.0f; hx[1] = -12.0f; hx[2] = 12.0f; hx[3] = 1e-3f; hx[4] = -0.8f; hx[5] = 2.7f;
  dq_tensor x = upload(SHAPE(n), hx), g = upload(SHAPE(n), hg), out = {0}, dx = {0};
  double *want = malloc((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; i++) want[i] = gelu_ref(hx[i]);
  CHECK_OK(dq_gelu(&out, &x));
  expect_close("gelu", &out, want, n, 1e-7, 2e-6);
  for (int64_t i = 0; i < n; i++) want[i] = hg[i] * gelu_grad_ref(hx[i]);
  CHECK_OK(dq_gelu_backward(&dx, &g, &x));
  expect_close("gelu_backward", &dx, want, n, 1e-7, 2e-6);
  for (int64_t i = 0; i < n; i++) want[i] = hx[i] > 0 ? hx[i] : 0;
  CHECK_OK(dq_relu(&out, &x));
  expect_close("relu", &out, want, n, 0, 0);
  for (int64_t i = 0; i < n; i++) want[i] = hx[i] > 0 ? hg[i] : 0;
  CHECK_OK(dq_relu_backward(&dx, &g, &x));
  expect_close("relu_backward", &dx, want, n, 0, 0);
  /* in place: dx aliases dy */
  dq_tensor alias = {0};
  CHECK_OK(dq_tensor_share(&alias, &g));
  for (int64_t i = 0; i < n; i++) want[i] = hg[i] * gelu_grad_ref(hx[i]);
  CHECK_OK(dq_gelu_backward(&alias, &g, &x));
  expect_close("gelu_backward in place", &g, want, n, 1e-7, 2e-6);

  /* a dense sweep of GELU over [-10, 10] */
  int64_t m = 200001;
  float *hs = malloc((size_t)m * sizeof(float));
  double *ws = malloc((size_t)m * sizeof(double)), *wd = malloc((size_t)m * sizeof(double));
  for (int64_t i = 0; i < m; i++) {
    hs[i] = (float)(-10.0 + 20.0 * (double)i / (double)(m - 1));
    ws[i] = gelu_ref(hs[i]);
    wd[i] = gelu_grad_ref(hs[i]);
  }
  dq_tensor s = upload(SHAPE(m), hs), so = {0}, ones = tensor_of(SHAPE(m), DQ_F32), sd = {0};
  CHECK_OK(dq_fill(&ones, 1.0));
  CHECK_OK(dq_gelu(&so, &s));
  expect_close("gelu sweep", &so, ws, m, 1e-7, 2e-6);
  CHECK_OK(dq_gelu_backward(&sd, &ones, &s));
  expect_close("gelu_backward sweep", &sd, wd, m, 1e-7, 2e-6);

  /* the negative tail keeps its relative accuracy (no 1 + erf cancellation) */
  float tail[5] = {-1.5f, -3.0f, -5.0f, -8.0f, -12.0f};
  double wtail[5];
  for (int i = 0; i < 5; i++) wtail[i] = gelu_ref(tail[i]);
  dq_tensor t = upload(SHAPE(5), tail), to = {0};
  CHECK_OK(dq_gelu(&to, &t));
  expect_close("gelu negative tail", &to, wtail, 5, 0, 2e-6);

  dq_tensor wrong = tensor_of(SHAPE(4), DQ_F32);
  CHECK_FAILS(dq_gelu(&wrong, &x), "dq_gelu");
  CHECK_FAILS(dq_gelu_backward(&dx, &wrong, &x), "dq_gelu_backward");
  CHECK_FAILS(dq_relu(&wrong, &x), "dq_relu");
  CHECK_FAILS(dq_relu_backward(&dx, &wrong, &x), "dq_relu_backward");
  free(want);
  free(hx);
  free(hg);
  free(hs);
  free(ws);
  free(wd);
  RELEASE(&x, &g, &out, &dx, &alias, &s, &so, &ones, &sd, &t, &to, &wrong);
}

/* ---- matmul ----------------------------------------------------------------- */

/* a: batch x [M,K] (or [K,M]); b: [K,N] ([N,K]) per batch or shared. */
static void matmul_case(int64_t batch, int64_t m, int64_t k, int64_t nn, int ta, int tb, int shared_b, float alpha,
                        float beta) {
  int64_t as[4] = {batch, 1, ta ? k : m, ta ? m : k};
  int64_t bs[4] = {batch, 1, tb ? nn : k, tb ? k : nn};
  /* a gets two batch dims ([batch, 1, ...]) to exercise flattening */
  dq_tensor a = tensor_of(as, 4, DQ_F32);
  dq_tensor b = shared_b ? tensor_of(bs + 2, 2, DQ_F32) : tensor_of(bs, 4, DQ_F32);
  float *ha = host_random(a.numel, -1, 1), *hb = host_random(b.numel, -1, 1);
  CHECK_OK(dq_copy_from_host(&a, ha, a.numel * 4));
  CHECK_OK(dq_copy_from_host(&b, hb, b.numel * 4));
  int64_t on = batch * m * nn;
  float *ho = host_random(on, -1, 1);
  dq_tensor out = upload(SHAPE(batch, 1, m, nn), ho);
  if (beta == 0.0f) CHECK_OK(dq_fill(&out, NAN)); /* must not be read */
  double *want = malloc((size_t)on * sizeof(double));
  for (int64_t p = 0; p < batch; p++)
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < nn; j++) {
        double s = 0;
        for (int64_t q = 0; q < k; q++) {
          double av = ha[p * m * k + (ta ? q * m + i : i * k + q)];
          double bv = hb[(shared_b ? 0 : p * k * nn) + (tb ? j * k + q : q * nn + j)];
          s += av * bv;
        }
        int64_t o = (p * m + i) * nn + j;
        want[o] = alpha * s + (beta != 0.0f ? beta * (double)ho[o] : 0.0);
      }
  CHECK_OK(dq_matmul(&out, &a, &b, ta, tb, alpha, beta));
  char what[128];
  snprintf(what, sizeof what, "matmul batch %lld %lldx%lldx%lld ta %d tb %d shared %d beta %g", (long long)batch,
           (long long)m, (long long)k, (long long)nn, ta, tb, shared_b, (double)beta);
  expect_close(what, &out, want, on, 1e-5, 1e-5);
  free(ha);
  free(hb);
  free(ho);
  free(want);
  RELEASE(&a, &b, &out);
}

static void test_matmul(void) {
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++)
      for (int shared = 0; shared < 2; shared++) {
        matmul_case(3, 5, 7, 4, ta, tb, shared, 1.0f, 0.0f);
        matmul_case(3, 5, 7, 4, ta, tb, shared, 0.5f, 2.0f);
      }
  matmul_case(1, 1, 1, 1, 0, 0, 1, 1.0f, 0.0f);
  matmul_case(2, 33, 65, 17, 1, 1, 0, -1.0f, 1.0f);
  matmul_case(2, 70, 80, 90, 0, 1, 0, 1.0f, 0.0f); /* past the small-GEMM batching threshold */
  matmul_case(2, 3, 0, 4, 0, 0, 1, 1.0f, 0.0f);    /* K = 0: zeros, never NaN */
  matmul_case(2, 3, 0, 4, 1, 0, 0, 1.0f, 0.5f);
  /* a freshly allocated out */
  float ha[6] = {1, 2, 3, 4, 5, 6}, hb[6] = {1, 0, 0, 1, 1, 1};
  dq_tensor a = upload(SHAPE(2, 3), ha), b = upload(SHAPE(3, 2), hb), out = {0};
  CHECK_OK(dq_matmul(&out, &a, &b, 0, 0, 1.0f, 0.0f));
  double want[4] = {4, 5, 10, 11};
  expect_close("matmul fresh out", &out, want, 4, 0, 0);
  dq_tensor fresh = {0};
  CHECK_FAILS(dq_matmul(&fresh, &a, &b, 0, 0, 1.0f, 1.0f), "dq_matmul");
  CHECK_FAILS(dq_matmul(&out, &a, &a, 0, 0, 1.0f, 0.0f), "dq_matmul");
  RELEASE(&a, &b, &out);
}

/* ---- layernorm ---------------------------------------------------------------- */

static void test_layernorm(void) {
  int64_t rows = 15, d = 7, n = rows * d;
  float *hx = host_random(n, -3, 5), *hw = host_random(d, 0.5, 1.5), *hb = host_random(d, -1, 1);
  float *hg = host_random(n, -1, 1), *hdw = host_random(d, -1, 1), *hdb = host_random(d, -1, 1);
  dq_tensor x = upload(SHAPE(3, 5, 7), hx), w = upload(SHAPE(7), hw), b = upload(SHAPE(7), hb);
  dq_tensor out = {0}, mean = {0}, rstd = {0}, out2 = {0};
  const float eps = 1e-5f;
  double *want = malloc((size_t)n * sizeof(double)), *wmean = malloc((size_t)rows * sizeof(double));
  double *wrstd = malloc((size_t)rows * sizeof(double)), *wdx = malloc((size_t)n * sizeof(double));
  double wdw[7] = {0}, wdb[7] = {0};
  for (int64_t r = 0; r < rows; r++) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < d; j++) mu += hx[r * d + j];
    mu /= d;
    for (int64_t j = 0; j < d; j++) var += (hx[r * d + j] - mu) * (hx[r * d + j] - mu);
    var /= d;
    double rs = 1.0 / sqrt(var + eps);
    wmean[r] = mu;
    wrstd[r] = rs;
    double sg = 0, sgx = 0;
    for (int64_t j = 0; j < d; j++) {
      double xh = (hx[r * d + j] - mu) * rs, gw = hg[r * d + j] * (double)hw[j];
      want[r * d + j] = xh * hw[j] + hb[j];
      sg += gw;
      sgx += gw * xh;
      wdw[j] += hg[r * d + j] * xh;
      wdb[j] += hg[r * d + j];
    }
    for (int64_t j = 0; j < d; j++) {
      double xh = (hx[r * d + j] - mu) * rs;
      wdx[r * d + j] = rs * (hg[r * d + j] * (double)hw[j] - sg / d - xh * sgx / d);
    }
  }
  CHECK_OK(dq_layernorm(&out, &mean, &rstd, &x, &w, &b, eps));
  expect_close("layernorm", &out, want, n, 1e-5, 1e-5);
  expect_close("layernorm mean", &mean, wmean, rows, 1e-6, 1e-6);
  expect_close("layernorm rstd", &rstd, wrstd, rows, 1e-6, 1e-5);
  CHECK_OK(dq_layernorm(&out2, NULL, NULL, &x, &w, &b, eps));
  CHECK(same_bits(&out, &out2), "layernorm without saved stats gives the same values");

  dq_tensor g = upload(SHAPE(3, 5, 7), hg), dx = {0}, dw = {0}, db = {0};
  CHECK_OK(dq_layernorm_backward(&dx, &dw, &db, &g, &x, &w, &mean, &rstd, 0));
  expect_close("layernorm dx", &dx, wdx, n, 1e-5, 1e-4);
  expect_close("layernorm dweight", &dw, wdw, d, 1e-5, 1e-5);
  expect_close("layernorm dbias", &db, wdb, d, 1e-5, 1e-5);
  /* accumulate into existing grads; dbias skipped */
  dq_tensor dw2 = upload(SHAPE(7), hdw);
  for (int j = 0; j < 7; j++) wdw[j] += hdw[j];
  CHECK_OK(dq_layernorm_backward(&dx, &dw2, NULL, &g, &x, &w, &mean, &rstd, 1));
  expect_close("layernorm dweight accumulate", &dw2, wdw, d, 1e-5, 1e-5);
  /* dx in place over dy, with parameter grads read from dy first */
  dq_tensor alias = {0}, db2 = upload(SHAPE(7), hdb);
  CHECK_OK(dq_tensor_share(&alias, &g));
  for (int j = 0; j < 7; j++) wdb[j] += hdb[j];
  CHECK_OK(dq_layernorm_backward(&alias, NULL, &db2, &g, &x, &w, &mean, &rstd, 1));
  expect_close("layernorm dx in place", &g, wdx, n, 1e-5, 1e-4);
  expect_close("layernorm dbias in place", &db2, wdb, d, 1e-5, 1e-5);

  dq_tensor w5 = tensor_of(SHAPE(5), DQ_F32);
  CHECK_FAILS(dq_layernorm(&out, NULL, NULL, &x, &w5, &b, eps), "dq_layernorm");
  CHECK_FAILS(dq_layernorm_backward(&dx, NULL, NULL, &g, &x, &w5, &mean, &rstd, 0), "dq_layernorm_backward");
  free(hx); free(hw); free(hb); free(hg); free(hdw); free(hdb);
  free(want); free(wmean); free(wrstd); free(wdx);
  RELEASE(&x, &w, &b, &out, &mean, &rstd, &out2, &g, &dx, &dw, &db, &dw2, &alias, &db2, &w5);
}

/* ---- softmax ---------------------------------------------------------------- */

static void softmax_ref(double *y, const float *x, const float *mask, const int64_t *ms, float scale) {
  /* x [3,5,7], mask broadcast shape ms (3 dims) or NULL */
  for (int64_t i = 0; i < 3; i++)
    for (int64_t j = 0; j < 5; j++) {
      double z[7], mx = -INFINITY, sum = 0;
      for (int64_t c = 0; c < 7; c++) {
        double m = 0;
        if (mask) {
          int64_t mi = ms[0] == 1 ? 0 : i, mj = ms[1] == 1 ? 0 : j, mc = ms[2] == 1 ? 0 : c;
          m = mask[(mi * ms[1] + mj) * ms[2] + mc];
        }
        z[c] = (double)scale * x[(i * 5 + j) * 7 + c] + m;
        if (z[c] > mx) mx = z[c];
      }
      for (int64_t c = 0; c < 7; c++) {
        z[c] = mx == -INFINITY ? 0 : exp(z[c] - mx);
        sum += z[c];
      }
      for (int64_t c = 0; c < 7; c++) y[(i * 5 + j) * 7 + c] = sum > 0 ? z[c] / sum : 0;
    }
}

static void test_softmax(void) {
  int64_t n = 105;
  float *hx = host_random(n, -4, 4), *hg = host_random(n, -1, 1);
  dq_tensor x = upload(SHAPE(3, 5, 7), hx), y = {0}, g = upload(SHAPE(3, 5, 7), hg);
  double want[105], wdx[105];
  softmax_ref(want, hx, NULL, NULL, 0.7f);
  CHECK_OK(dq_softmax(&y, &x, NULL, 0.7f));
  expect_close("softmax", &y, want, n, 1e-6, 1e-5);

  int64_t mask_shapes[3][3] = {{3, 1, 7}, {1, 5, 1}, {3, 5, 7}};
  for (int s = 0; s < 3; s++) {
    const int64_t *ms = mask_shapes[s];
    int64_t mn = ms[0] * ms[1] * ms[2];
    float *hm = host_random(mn, -3, 0);
    for (int64_t i = 0; i < mn; i += 3) hm[i] = -INFINITY;
    dq_tensor mask = upload(ms, 3, hm);
    softmax_ref(want, hx, hm, ms, 1.3f);
    CHECK_OK(dq_softmax(&y, &x, &mask, 1.3f));
    char what[64];
    snprintf(what, sizeof what, "softmax mask [%lld,%lld,%lld]", (long long)ms[0], (long long)ms[1], (long long)ms[2]);
    expect_close(what, &y, want, n, 1e-6, 1e-5);
    free(hm);
    dq_tensor_release(&mask);
  }
  /* a row of -inf gives zeros, not NaN */
  float hm[7];
  for (int c = 0; c < 7; c++) hm[c] = -INFINITY;
  dq_tensor mask = upload(SHAPE(1, 1, 7), hm);
  CHECK_OK(dq_softmax(&y, &x, &mask, 1.0f));
  float *hy = download(&y);
  int all_zero = 1;
  for (int64_t i = 0; i < n; i++) all_zero &= hy[i] == 0.0f;
  CHECK(all_zero, "fully masked rows must be zeros");
  free(hy);

  /* backward: dx = scale * y * (dy - sum(dy * y)) */
  softmax_ref(want, hx, NULL, NULL, 0.7f);
  CHECK_OK(dq_softmax(&y, &x, NULL, 0.7f));
  for (int64_t r = 0; r < 15; r++) {
    double dot = 0;
    for (int c = 0; c < 7; c++) dot += hg[r * 7 + c] * want[r * 7 + c];
    for (int c = 0; c < 7; c++) wdx[r * 7 + c] = 0.7 * want[r * 7 + c] * (hg[r * 7 + c] - dot);
  }
  dq_tensor dx = {0}, alias = {0};
  CHECK_OK(dq_softmax_backward(&dx, &g, &y, 0.7f));
  expect_close("softmax_backward", &dx, wdx, n, 1e-6, 1e-5);
  CHECK_OK(dq_tensor_share(&alias, &g));
  CHECK_OK(dq_softmax_backward(&alias, &g, &y, 0.7f));
  expect_close("softmax_backward in place", &g, wdx, n, 1e-6, 1e-5);
  /* softmax in place */
  CHECK_OK(dq_tensor_share(&alias, &x));
  softmax_ref(want, hx, NULL, NULL, 0.7f);
  CHECK_OK(dq_softmax(&alias, &x, NULL, 0.7f));
  expect_close("softmax in place", &x, want, n, 1e-6, 1e-5);

  dq_tensor bad_mask = tensor_of(SHAPE(3, 5), DQ_F32), wrong = tensor_of(SHAPE(3, 5, 6), DQ_F32);
  CHECK_FAILS(dq_softmax(&y, &x, &bad_mask, 1.0f), "dq_softmax");
  CHECK_FAILS(dq_softmax_backward(&dx, &wrong, &y, 1.0f), "dq_softmax_backward");
  free(hx);
  free(hg);
  RELEASE(&x, &y, &g, &mask, &dx, &alias, &bad_mask, &wrong);
}

/* ---- dropout ---------------------------------------------------------------- */

static void test_dropout(void) {
  int64_t n = 100003;
  float *hx = host_random(n, 0.5, 2.0);
  dq_tensor x = upload(SHAPE(n), hx), out = {0}, u = tensor_of(SHAPE(n), DQ_F32);
  const float p = 0.3f;
  const uint64_t seed = 1234, offset = 77;
  CHECK_OK(dq_dropout(&out, &x, p, seed, offset));
  CHECK_OK(dq_rand(&u, seed, offset)); /* the same uniforms decide the mask */
  float *ho = download(&out), *hu = download(&u);
  int64_t kept = 0, mismatch = 0;
  const float keep_scale = 1.0f / (1.0f - p);
  for (int64_t i = 0; i < n; i++) {
    int keep = hu[i] >= p;
    kept += keep;
    if (ho[i] != (keep ? hx[i] * keep_scale : 0.0f)) mismatch++;
  }
  CHECK(mismatch == 0, "%lld elements disagree with the rand(seed, offset) mask", (long long)mismatch);
  double frac = (double)kept / (double)n, sd = sqrt(p * (1 - p) / (double)n);
  CHECK(fabs(frac - (1 - p)) < 5 * sd, "kept fraction %.4f, expected %.4f", frac, 1 - p);
  /* backward = same mask on dy: dropout_backward(ones) * x == dropout(x) */
  dq_tensor ones = tensor_of(SHAPE(n), DQ_F32), dx = {0}, prod = {0};
  CHECK_OK(dq_fill(&ones, 1.0));
  CHECK_OK(dq_dropout_backward(&dx, &ones, p, seed, offset));
  CHECK_OK(dq_mul(&prod, &dx, &x));
  CHECK(same_bits(&prod, &out), "dropout_backward applies the forward's mask");
  /* another offset gives another mask */
  dq_tensor other = {0};
  CHECK_OK(dq_dropout(&other, &x, p, seed, offset + dq_rng_span(n)));
  CHECK(!same_bits(&other, &out), "a new offset draws a new mask");
  /* p = 0 is a copy */
  dq_tensor copy = {0};
  CHECK_OK(dq_dropout(&copy, &x, 0.0f, seed, offset));
  CHECK(same_bits(&copy, &x), "p = 0 copies");
  CHECK_FAILS(dq_dropout(&copy, &x, 1.0f, seed, offset), "dq_dropout");
  dq_tensor wrong = tensor_of(SHAPE(5), DQ_F32);
  CHECK_FAILS(dq_dropout_backward(&wrong, &x, p, seed, offset), "dq_dropout_backward");
  free(hx);
  free(ho);
  free(hu);
  RELEASE(&x, &out, &u, &ones, &dx, &prod, &other, &copy, &wrong);
}

/* ---- embedding ------------------------------------------------------------- */

static void test_embedding(void) {
  int64_t rows = 11, d = 7;
  float *hw = host_random(rows * d, -1, 1), *hg = host_random(15 * d, -1, 1), *hdw = host_random(rows * d, -1, 1);
  dq_tensor w = upload(SHAPE(rows, d), hw);
  int32_t ids32[15];
  int64_t ids64[15];
  for (int i = 0; i < 15; i++) ids32[i] = (int32_t)(ids64[i] = (i * 7 + 3) % 5 + (i == 14 ? 6 : 0));
  dq_tensor i32 = tensor_of(SHAPE(3, 5), DQ_I32), i64 = tensor_of(SHAPE(3, 5), DQ_I64);
  CHECK_OK(dq_copy_from_host(&i32, ids32, sizeof ids32));
  CHECK_OK(dq_copy_from_host(&i64, ids64, sizeof ids64));
  double want[15 * 7];
  for (int t = 0; t < 15; t++)
    for (int c = 0; c < d; c++) want[t * d + c] = hw[ids64[t] * d + c];
  dq_tensor out = {0}, out64 = {0};
  CHECK_OK(dq_embedding(&out, &w, &i32));
  expect_close("embedding i32", &out, want, 15 * d, 0, 0);
  CHECK(out.ndim == 3 && out.shape[2] == d, "embedding out shape");
  CHECK_OK(dq_embedding(&out64, &w, &i64));
  expect_close("embedding i64", &out64, want, 15 * d, 0, 0);

  /* backward: repeated ids accumulate */
  dq_tensor g = upload(SHAPE(3, 5, 7), hg), dw = upload(SHAPE(rows, d), hdw);
  double wdw[11 * 7];
  for (int i = 0; i < rows * d; i++) wdw[i] = hdw[i];
  for (int t = 0; t < 15; t++)
    for (int c = 0; c < d; c++) wdw[ids64[t] * d + c] += hg[t * d + c];
  CHECK_OK(dq_embedding_backward(&dw, &g, &i32));
  expect_close("embedding_backward", &dw, wdw, rows * d, 1e-6, 1e-6);

  /* an id out of range fails with the position and value, writing nothing */
  ids64[9] = rows;
  CHECK_OK(dq_copy_from_host(&i64, ids64, sizeof ids64));
  CHECK_OK(dq_fill(&out64, 5.0));
  CHECK_FAILS(dq_embedding(&out64, &w, &i64), "dq_embedding: ids[9]");
  CHECK(strstr(dq_last_error(), "is 11") && strstr(dq_last_error(), "< 11"), "message: %s", dq_last_error());
  float *ho = download(&out64);
  CHECK(ho[0] == 5.0f && ho[15 * d - 1] == 5.0f, "out untouched after the failure");
  free(ho);
  ids32[0] = -1;
  CHECK_OK(dq_copy_from_host(&i32, ids32, sizeof ids32));
  CHECK_FAILS(dq_embedding_backward(&dw, &g, &i32), "dq_embedding_backward: ids[0]");
  dq_tensor wrong = tensor_of(SHAPE(3, 5, 6), DQ_F32);
  CHECK_FAILS(dq_embedding(&wrong, &w, &i64), "dq_embedding");
  CHECK_FAILS(dq_embedding_backward(&dw, &wrong, &i64), "dq_embedding_backward");
  free(hw);
  free(hg);
  free(hdw);
  RELEASE(&w, &i32, &i64, &out, &out64, &g, &dw, &wrong);
}

/* ---- reductions ------------------------------------------------------------ */

static void test_reduce(void) {
  int64_t n = 105;
  float *hx = host_random(n, -2, 2), *hg = host_random(15, -1, 1);
  /* ties: the first maximal element of row 1 gets the gradient */
  hx[7 + 2] = 5.0f; hx[7 + 5] = 5.0f;
  /* row 2: the largest magnitude is negative */
  hx[14 + 3] = -6.0f;
  dq_tensor x = upload(SHAPE(3, 5, 7), hx);
  for (int op = 0; op < 4; op++) {
    double want_all = op == 2 || op == 3 ? -INFINITY : 0, want_rows[15];
    for (int64_t r = 0; r < 15; r++) {
      double acc = op == 2 || op == 3 ? -INFINITY : 0;
      for (int c = 0; c < 7; c++) {
        double v = hx[r * 7 + c];
        if (op == 3) v = fabs(v);
        acc = op < 2 ? acc + v : (v > acc ? v : acc);
        want_all = op < 2 ? want_all + v : (v > want_all ? v : want_all);
      }
      want_rows[r] = op == 1 ? acc / 7 : acc;
    }
    if (op == 1) want_all /= n;
    dq_tensor all = {0}, rows = {0};
    CHECK_OK(dq_reduce_all(&all, &x, op));
    CHECK(all.ndim == 0, "reduce_all gives a scalar");
    expect_close("reduce_all", &all, &want_all, 1, 1e-6, 1e-6);
    CHECK_OK(dq_reduce_rows(&rows, &x, op));
    CHECK(rows.ndim == 2 && rows.shape[0] == 3 && rows.shape[1] == 5, "reduce_rows shape");
    expect_close("reduce_rows", &rows, want_rows, 15, 1e-6, 1e-6);

    /* backward of rows */
    double wdx[105];
    for (int64_t r = 0; r < 15; r++) {
      int first = -1;
      for (int c = 0; c < 7; c++) {
        double v = op == 3 ? fabs(hx[r * 7 + c]) : hx[r * 7 + c];
        if (first < 0 && v == want_rows[r]) first = c;
      }
      for (int c = 0; c < 7; c++) {
        double s = hx[r * 7 + c] > 0 ? 1 : -1;
        wdx[r * 7 + c] = op == 0 ? hg[r] : op == 1 ? hg[r] / 7.0 : c == first ? (op == 3 ? s * hg[r] : hg[r]) : 0;
      }
    }
    dq_tensor g = upload(SHAPE(3, 5), hg), dx = {0};
    CHECK_OK(dq_reduce_backward(&dx, &g, &x, &rows, op, 1));
    char what[64];
    snprintf(what, sizeof what, "reduce_backward rows op %d", op);
    expect_close(what, &dx, wdx, n, 1e-7, 1e-6);
    if (op == 2) {
      float *hd = download(&dx);
      CHECK(hd[7 + 2] == hg[1] && hd[7 + 5] == 0.0f, "ties route to the first maximum");
      free(hd);
    }
    /* backward of all */
    dq_tensor g0 = upload(SHAPE(1), hg), g0s = {0};
    CHECK_OK(dq_reshape(&g0s, &g0, 0, NULL));
    int first = -1;
    for (int64_t i = 0; i < n && op >= 2; i++)
      if ((op == 3 ? fabs(hx[i]) : hx[i]) == want_all) { first = (int)i; break; }
    for (int64_t i = 0; i < n; i++)
      wdx[i] = op == 0 ? hg[0] : op == 1 ? hg[0] / (double)n : i == first ? (op == 3 && hx[i] < 0 ? -hg[0] : hg[0]) : 0;
    CHECK_OK(dq_reduce_backward(&dx, &g0s, &x, &all, op, 0));
    snprintf(what, sizeof what, "reduce_backward all op %d", op);
    expect_close(what, &dx, wdx, n, 1e-7, 1e-6);
    RELEASE(&all, &rows, &g, &dx, &g0, &g0s);
  }
  /* many blocks */
  int64_t big = 300007;
  float *hb = host_random(big, -1, 1);
  hb[big - 2] = -3.0f;
  dq_tensor xb = upload(SHAPE(big), hb), s = {0};
  double sum = 0;
  for (int64_t i = 0; i < big; i++) sum += hb[i];
  CHECK_OK(dq_reduce_all(&s, &xb, DQ_REDUCE_SUM));
  expect_close("reduce_all sum of many blocks", &s, &sum, 1, 1e-5, 1e-6);
  double am = 3.0;
  CHECK_OK(dq_reduce_all(&s, &xb, DQ_REDUCE_ABSMAX));
  expect_close("reduce_all absmax of many blocks", &s, &am, 1, 0, 0);

  dq_tensor wrong = tensor_of(SHAPE(3, 4), DQ_F32), dx = {0};
  CHECK_FAILS(dq_reduce_rows(&wrong, &x, DQ_REDUCE_SUM), "dq_reduce_rows");
  CHECK_FAILS(dq_reduce_all(&wrong, &x, DQ_REDUCE_SUM), "dq_reduce_all");
  CHECK_FAILS(dq_reduce_backward(&dx, &wrong, &x, &wrong, DQ_REDUCE_MAX, 1), "dq_reduce_backward");
  free(hx);
  free(hg);
  free(hb);
  RELEASE(&x, &xb, &s, &wrong);
}

/* ---- determinism ----------------------------------------------------------------
 * Every op with an order-sensitive sum, run twice with 2 threads and once
 * with 1: all bits equal. */

enum { DET_OUTS = 9 };

static void run_for_determinism(dq_tensor *res) {
  lcg_state = 42;
  int64_t rows = 2000, d = 96;
  float *hx = host_random(rows * d, -2, 2), *hg = host_random(rows * d, -1, 1), *hw = host_random(d, 0.5, 1.5);
  dq_tensor x = upload(SHAPE(rows, d), hx), g = upload(SHAPE(rows, d), hg), w = upload(SHAPE(d), hw);
  dq_tensor b = upload(SHAPE(d), hg), mean = {0}, rstd = {0}, ln = {0};
  CHECK_OK(dq_layernorm(&ln, &mean, &rstd, &x, &w, &b, 1e-5f));
  res[0] = tensor_of(SHAPE(d), DQ_F32);
  CHECK_OK(dq_sum_leading(&res[0], &x, 0));
  CHECK_OK(dq_reduce_all(&res[1], &x, DQ_REDUCE_SUM));
  dq_tensor dx = {0};
  CHECK_OK(dq_layernorm_backward(&dx, &res[2], &res[3], &g, &x, &w, &mean, &rstd, 0));
  int64_t ids[2000];
  for (int i = 0; i < rows; i++) ids[i] = (i * 31) % 50;
  dq_tensor idt = tensor_of(SHAPE(rows), DQ_I64);
  CHECK_OK(dq_copy_from_host(&idt, ids, sizeof ids));
  res[4] = tensor_of(SHAPE(50, d), DQ_F32);
  CHECK_OK(dq_fill(&res[4], 0.0));
  CHECK_OK(dq_embedding_backward(&res[4], &g, &idt));
  CHECK_OK(dq_softmax(&res[5], &x, NULL, 0.3f));
  CHECK_OK(dq_matmul(&res[6], &x, &g, 1, 0, 1.0f, 0.0f));
  CHECK_OK(dq_matmul(&res[8], &x, &g, 0, 1, 1.0f, 0.0f)); /* [2000, 2000]: many tiles */
  dq_tensor narrow = {0};
  CHECK_OK(dq_reshape(&narrow, &x, 2, (int64_t[]){rows * d / 3, 3}));
  res[7] = tensor_of(SHAPE(3), DQ_F32);
  CHECK_OK(dq_sum_leading(&res[7], &narrow, 0));
  free(hx);
  free(hg);
  free(hw);
  RELEASE(&x, &g, &w, &b, &mean, &rstd, &ln, &dx, &idt, &narrow);
}

static void test_determinism(void) {
  dq_tensor r1[DET_OUTS] = {{0}}, r2[DET_OUTS] = {{0}}, r3[DET_OUTS] = {{0}};
  int threads = dq_get_num_threads();
  CHECK_OK(dq_set_num_threads(2));
  run_for_determinism(r1);
  run_for_determinism(r2);
  CHECK_OK(dq_set_num_threads(1));
  run_for_determinism(r3);
  CHECK_OK(dq_set_num_threads(threads));
  for (int i = 0; i < DET_OUTS; i++) {
    CHECK(same_bits(&r1[i], &r2[i]), "output %d differs between two runs", i);
    CHECK(same_bits(&r1[i], &r3[i]), "output %d differs between 2 threads and 1", i);
    dq_tensor_release(&r1[i]);
    dq_tensor_release(&r2[i]);
    dq_tensor_release(&r3[i]);
  }
}

int main(void) {
  test_binary();
  test_axpby_scale();
  test_sum_leading();
  test_activations();
  test_matmul();
  test_layernorm();
  test_softmax();
  test_dropout();
  test_embedding();
  test_reduce();
  test_determinism();
  CHECK(dq_memory_allocated(DQ_CPU) == 0, "%lld bytes still allocated", (long long)dq_memory_allocated(DQ_CPU));
  return check_summary();
}
