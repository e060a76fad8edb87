/*
 * cpu_matmul.c: out = alpha * op(a) @ op(b) + beta * out on OpenBLAS.
 * Arguments were checked in ops.c: a [..., M, K] ([..., K, M] when trans_a),
 * b [K, N] ([N, K] when trans_b) shared by the batch or with a's batch dims,
 * out [..., M, N] f32 and allocated, numel > 0.
 *
 * Threading: OpenBLAS's own threads give results that change with the
 * thread count (its partition decides which micro-kernel computes an
 * element), and its pthread pool spins against the OpenMP team the other
 * CPU ops use. So OpenBLAS runs single-threaded and the output is split
 * into fixed tiles (a function of the shape only) spread over OpenMP
 * threads: the same bits for any thread count, one thread pool.
 */
#include "backend.h"
#include "cpu_math.h"

#include <cblas.h>
#include <limits.h>

/* Tile of the output one OpenBLAS call computes. Large enough that
 * re-packing the A and B panels per tile costs ~1% of the multiply. */
#define TILE_M 256
#define TILE_N 512
/* Below this many multiply-adds the product runs on the calling thread. */
#define PARALLEL_MIN_WORK (1 << 21)

/* out = beta * out without reading out when beta is 0 (it may hold NaN). */
static void scale_out(float *o, int64_t n, float beta) {
  if (beta == 0.0f) {
    DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t i = 0; i < n; i++) o[i] = 0.0f);
  } else if (beta != 1.0f) {
    DQ_PARALLEL_FOR_IF(n > DQ_OMP_MIN, for (int64_t i = 0; i < n; i++) o[i] *= beta);
  }
}

dq_status cpu_matmul(dq_tensor *out, const dq_tensor *a, const dq_tensor *b, int trans_a, int trans_b, float alpha,
                     float beta) {
  int64_t m = a->shape[a->ndim - (trans_a ? 1 : 2)], k = a->shape[a->ndim - (trans_a ? 2 : 1)];
  int64_t n = b->shape[b->ndim - (trans_b ? 2 : 1)];
  int64_t batch = out->numel / (m * n);
  float *o = out->data;
  const float *ad = a->data, *bd = b->data;
  /* K == 0: the product is empty, only the beta term remains. (BLAS would
   * also reject the leading dimension 0 that K == 0 gives.) */
  if (k == 0) {
    scale_out(o, out->numel, beta);
    return DQ_OK;
  }
  if (m > INT_MAX || n > INT_MAX || k > INT_MAX)
    return dq_fail(DQ_ERR_SHAPE, "dq_matmul: a %s and b %s exceed BLAS's 32-bit dimensions", dq_desc(a), dq_desc(b));
  if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
  bool shared_b = b->ndim == 2;
  /* A shared b and an untransposed a: the batch is one [batch*M, K] matrix
   * (tiles then cross batch entries, and B panels are reused across them). */
  if (shared_b && !trans_a) {
    m *= batch;
    batch = 1;
  }
  enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  int64_t lda = trans_a ? m : k, ldb = trans_b ? k : n;
  int64_t a_step = m * k, b_step = shared_b ? 0 : k * n, o_step = m * n;
  int64_t tiles_m = (m + TILE_M - 1) / TILE_M, tiles_n = (n + TILE_N - 1) / TILE_N;
  int64_t tiles = batch * tiles_m * tiles_n;
  double work = (double)batch * (double)m * (double)n * (double)k;
  bool parallel = tiles > 1 && work > PARALLEL_MIN_WORK;
  DQ_PARALLEL_FOR_WITH_IF(parallel, "omp parallel for schedule(dynamic, 1)", for (int64_t t = 0; t < tiles; t++) {
    int64_t p = t / (tiles_m * tiles_n), rest = t % (tiles_m * tiles_n);
    int64_t i0 = (rest / tiles_n) * TILE_M, j0 = (rest % tiles_n) * TILE_N;
    int64_t tm = m - i0 < TILE_M ? m - i0 : TILE_M, tn = n - j0 < TILE_N ? n - j0 : TILE_N;
    /* Row i0 of op(a) starts at column i0 of a stored [K, M]; column j0 of
     * op(b) at row j0 of b stored [N, K]. */
    const float *at = ad + p * a_step + (trans_a ? i0 : i0 * k);
    const float *bt = bd + p * b_step + (trans_b ? j0 * k : j0);
    float *ot = o + p * o_step + i0 * n + j0;
    cblas_sgemm(CblasRowMajor, ta, tb, (int)tm, (int)tn, (int)k, alpha, at, (int)lda, bt, (int)ldb, beta, ot, (int)n);
  });
  return DQ_OK;
}
