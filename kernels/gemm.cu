/*
 * gemm.cu: dq_matmul on CUDA through cuBLASLt.
 *
 * Row-major to column-major: a row-major [R, C] matrix is, read column-major,
 * its transpose [C, R] with leading dimension C. So the row-major product
 * out = op(a) @ op(b) is computed as the column-major product
 * out^T = op(b)^T @ op(a)^T: cuBLASLt's A is our b, its B is our a, and
 * its m, n, k are our N, M, K. No data moves.
 *
 * Precision: f32 inputs use CUBLAS_COMPUTE_32F (true f32, never TF32, so
 * results match the CPU to about 1e-6 relative); bf16/f16 inputs use f32
 * accumulation with out in the input dtype or f32.
 *
 * Batching: a and b both batched -> strided batch. A shared 2-d b with an
 * untransposed a folds the batch into M (one plain GEMM). A shared b with a
 * transposed a runs one GEMM per batch entry (rare; avoids relying on a
 * zero batch stride).
 *
 * Descriptors, layouts and the heuristic's algorithm are cached per shape
 * (and pointer alignment, which decides which kernels are legal) in a
 * small table, so a training step's repeated shapes never query the
 * heuristic again.
 */
#include "common.cuh"

#include <mutex>
#include <string.h>

namespace {

struct gemm_key {
  int device;
  int in_dtype, out_dtype;
  int trans_a, trans_b;
  int64_t m, n, k; /* our (row-major) M, N, K */
  int32_t batch;
  int64_t stride_a, stride_b, stride_c; /* elements; 0 when batch == 1 */
  uint32_t align_a, align_b, align_c;   /* bytes, powers of two up to 256 */
};

struct gemm_plan {
  bool used;
  gemm_key key;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t layout_a, layout_b, layout_c; /* cuBLASLt's A (our b), B (our a), C = D */
  cublasLtMatmulAlgo_t algo;
};

enum { PLAN_SLOTS = 64 };
gemm_plan plans[PLAN_SLOTS];
int next_victim;
std::mutex plans_lock;

bool same_key(const gemm_key &x, const gemm_key &y) { return memcmp(&x, &y, sizeof x) == 0; }

void destroy_plan(gemm_plan &p) {
  if (!p.used) return;
  cublasLtMatrixLayoutDestroy(p.layout_a);
  cublasLtMatrixLayoutDestroy(p.layout_b);
  cublasLtMatrixLayoutDestroy(p.layout_c);
  cublasLtMatmulDescDestroy(p.desc);
  p.used = false;
}

cudaDataType_t cuda_type(int dtype) {
  switch (dtype) {
  case DQ_BF16: return CUDA_R_16BF;
  case DQ_F16: return CUDA_R_16F;
  default: return CUDA_R_32F;
  }
}

/* The largest power of two (at most 256) dividing x; 256 for 0. */
uint32_t alignment_of(uint64_t x) {
  if (x == 0) return 256;
  uint64_t low = x & (~x + 1);
  return low >= 256 ? 256 : (uint32_t)low;
}

uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

dq_status make_layout(const char *op, cublasLtMatrixLayout_t *layout, int dtype, int64_t rows, int64_t cols,
                      int64_t ld, int32_t batch, int64_t stride) {
  DQ_CUBLAS_TRY(cublasLtMatrixLayoutCreate(layout, cuda_type(dtype), (uint64_t)rows, (uint64_t)cols, ld));
  if (batch > 1) {
    dq_status st = DQ_OK;
    cublasStatus_t s =
        cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch);
    if (s == CUBLAS_STATUS_SUCCESS)
      s = cublasLtMatrixLayoutSetAttribute(*layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                           sizeof stride);
    if (s != CUBLAS_STATUS_SUCCESS) {
      st = dq_cublas_fail(op, "cublasLtMatrixLayoutSetAttribute", s);
      cublasLtMatrixLayoutDestroy(*layout);
      return st;
    }
  }
  return DQ_OK;
}

/* Build descriptors for `key` and ask the heuristic for the best algorithm
 * that fits the workspace and the operands' alignment. */
dq_status build_plan(const char *op, cublasLtHandle_t lt, size_t workspace_bytes, const gemm_key &key, gemm_plan &p) {
  memset(&p, 0, sizeof p);
  p.key = key;
  DQ_CUBLAS_TRY(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  cublasOperation_t op_a = key.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N; /* cuBLASLt's A is our b */
  cublasOperation_t op_b = key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N; /* cuBLASLt's B is our a */
  cublasStatus_t s = cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b);
  if (s != CUBLAS_STATUS_SUCCESS) {
    cublasLtMatmulDescDestroy(p.desc);
    return dq_cublas_fail(op, "cublasLtMatmulDescSetAttribute", s);
  }
  int64_t M = key.m, N = key.n, K = key.k;
  /* Stored shapes read column-major: our b is [K, N] (or [N, K] when
   * transposed) row-major, i.e. N x K (K x N) column-major. */
  int64_t a_rows = key.trans_b ? K : N, a_cols = key.trans_b ? N : K;
  int64_t b_rows = key.trans_a ? M : K, b_cols = key.trans_a ? K : M;
  dq_status st = make_layout(op, &p.layout_a, key.in_dtype, a_rows, a_cols, a_rows, key.batch, key.stride_b);
  if (st) {
    cublasLtMatmulDescDestroy(p.desc);
    return st;
  }
  st = make_layout(op, &p.layout_b, key.in_dtype, b_rows, b_cols, b_rows, key.batch, key.stride_a);
  if (st) {
    cublasLtMatrixLayoutDestroy(p.layout_a);
    cublasLtMatmulDescDestroy(p.desc);
    return st;
  }
  st = make_layout(op, &p.layout_c, key.out_dtype, N, M, N, key.batch, key.stride_c);
  if (st) {
    cublasLtMatrixLayoutDestroy(p.layout_a);
    cublasLtMatrixLayoutDestroy(p.layout_b);
    cublasLtMatmulDescDestroy(p.desc);
    return st;
  }
  p.used = true; /* from here destroy_plan cleans up */

  cublasLtMatmulPreference_t pref;
  s = cublasLtMatmulPreferenceCreate(&pref);
  if (s != CUBLAS_STATUS_SUCCESS) {
    destroy_plan(p);
    return dq_cublas_fail(op, "cublasLtMatmulPreferenceCreate", s);
  }
  uint64_t ws = workspace_bytes;
  uint32_t align_a = key.align_b, align_b = key.align_a; /* cuBLASLt's A/B are our b/a */
  s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                             sizeof align_a);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                             sizeof align_b);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &key.align_c,
                                             sizeof key.align_c);
  if (s == CUBLAS_STATUS_SUCCESS)
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &key.align_c,
                                             sizeof key.align_c);
  if (s != CUBLAS_STATUS_SUCCESS) {
    cublasLtMatmulPreferenceDestroy(pref);
    destroy_plan(p);
    return dq_cublas_fail(op, "cublasLtMatmulPreferenceSetAttribute", s);
  }
  cublasLtMatmulHeuristicResult_t result;
  memset(&result, 0, sizeof result);
  int found = 0;
  s = cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.layout_a, p.layout_b, p.layout_c, p.layout_c, pref, 1, &result,
                                     &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (s != CUBLAS_STATUS_SUCCESS || found == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
    destroy_plan(p);
    return dq_fail(DQ_ERR_CUDA,
                   "%s: cuBLASLt has no algorithm for M=%lld N=%lld K=%lld batch=%d %s x %s -> %s "
                   "(trans_a=%d trans_b=%d, alignment a=%u b=%u out=%u bytes): %s",
                   op, (long long)M, (long long)N, (long long)K, (int)key.batch, dq_dtype_name(key.in_dtype),
                   dq_dtype_name(key.in_dtype), dq_dtype_name(key.out_dtype), key.trans_a, key.trans_b, key.align_a,
                   key.align_b, key.align_c,
                   s != CUBLAS_STATUS_SUCCESS ? cublasLtGetStatusString(s) : "no result");
  }
  p.algo = result.algo;
  return DQ_OK;
}

/* The cached plan for `key`, building it on a miss. Call with plans_lock held. */
dq_status find_plan(const char *op, cublasLtHandle_t lt, size_t workspace_bytes, const gemm_key &key,
                    gemm_plan **out) {
  for (int i = 0; i < PLAN_SLOTS; i++) {
    if (plans[i].used && same_key(plans[i].key, key)) {
      *out = &plans[i];
      return DQ_OK;
    }
  }
  int slot = -1;
  for (int i = 0; i < PLAN_SLOTS && slot < 0; i++)
    if (!plans[i].used) slot = i;
  if (slot < 0) {
    slot = next_victim;
    next_victim = (next_victim + 1) % PLAN_SLOTS;
    destroy_plan(plans[slot]);
  }
  DQ_TRY(build_plan(op, lt, workspace_bytes, key, plans[slot]));
  *out = &plans[slot];
  return DQ_OK;
}

/* out = beta * out, for K = 0 (an empty sum), as BLAS defines it. */
template <typename T> __global__ void scale_kernel(T *p, float beta, int64_t n) {
  DQ_GRID_STRIDE(i, n) p[i] = dq_from_f32<T>(beta * dq_to_f32(p[i]));
}

dq_status scale_out(const char *op, dq_tensor *out, float beta, cudaStream_t stream) {
  if (beta == 0.0f) {
    DQ_CUDA_TRY(cudaMemsetAsync(out->data, 0, (size_t)(out->numel * dq_dtype_size(out->dtype)), stream));
    return DQ_OK;
  }
  DQ_DISPATCH_FLOAT(out->dtype, T,
                    scale_kernel<T><<<dq_grid_for(out->numel, DQ_THREADS), DQ_THREADS, 0, stream>>>(
                        (T *)out->data, beta, out->numel));
  DQ_LAUNCHED("scale_kernel");
  return DQ_OK;
}

} // namespace

dq_status cuda_matmul(dq_tensor *out, const dq_tensor *a, const dq_tensor *b, int trans_a, int trans_b, float alpha,
                      float beta) {
  const char *op = "dq_matmul";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, a->device, &stream));
  int64_t M = a->shape[a->ndim - (trans_a ? 1 : 2)], K = a->shape[a->ndim - (trans_a ? 2 : 1)];
  int64_t N = b->shape[b->ndim - (trans_b ? 2 : 1)];
  int64_t batch = 1;
  for (int i = 0; i < a->ndim - 2; i++) batch *= a->shape[i];
  if (K == 0) return scale_out(op, out, beta, stream);

  bool shared_b = b->ndim == 2;
  int64_t in_size = dq_dtype_size(a->dtype), out_size = dq_dtype_size(out->dtype);
  gemm_key key;
  memset(&key, 0, sizeof key); /* the key is compared bytewise, padding included */
  key.device = a->device;
  key.in_dtype = a->dtype;
  key.out_dtype = out->dtype;
  key.trans_a = trans_a ? 1 : 0;
  key.trans_b = trans_b ? 1 : 0;
  key.n = N;
  key.k = K;
  int64_t loops = 1; /* GEMMs issued, one per batch entry when b is shared and a transposed */
  if (shared_b && !trans_a) {
    key.m = batch * M; /* [batch, M, K] is [batch * M, K] */
    key.batch = 1;
  } else if (shared_b) {
    key.m = M;
    key.batch = 1;
    loops = batch;
  } else {
    if (batch > INT32_MAX)
      return dq_fail(DQ_ERR_SHAPE, "%s: %lld batch entries exceed cuBLASLt's limit of %d (a %s)", op,
                     (long long)batch, INT32_MAX, dq_desc(a));
    key.m = M;
    key.batch = (int32_t)batch;
    if (batch > 1) {
      key.stride_a = M * K;
      key.stride_b = K * N;
      key.stride_c = M * N;
    }
  }
  /* Alignment holds for every batch entry's (or loop iteration's) pointers. */
  uint32_t align_a = alignment_of((uint64_t)(uintptr_t)a->data);
  uint32_t align_b = alignment_of((uint64_t)(uintptr_t)b->data);
  uint32_t align_c = alignment_of((uint64_t)(uintptr_t)out->data);
  if (batch > 1 && !(shared_b && !trans_a)) {
    align_a = min_u32(align_a, alignment_of((uint64_t)(M * K * in_size)));
    if (!shared_b) align_b = min_u32(align_b, alignment_of((uint64_t)(K * N * in_size)));
    align_c = min_u32(align_c, alignment_of((uint64_t)(M * N * out_size)));
  }
  key.align_a = align_a;
  key.align_b = align_b;
  key.align_c = align_c;

  cublasLtHandle_t lt;
  void *workspace;
  size_t workspace_bytes;
  DQ_TRY(dq_cuda_cublaslt(op, a->device, &lt, &workspace, &workspace_bytes));

  /* Held across the launches so no other thread evicts the plan in use. */
  std::lock_guard<std::mutex> guard(plans_lock);
  gemm_plan *p;
  DQ_TRY(find_plan(op, lt, workspace_bytes, key, &p));
  for (int64_t i = 0; i < loops; i++) {
    const char *pa = (const char *)a->data + i * M * K * in_size;
    char *pc = (char *)out->data + i * M * N * out_size;
    /* cuBLASLt's A is our b, its B our a; C and D are both out (beta reads it). */
    DQ_CUBLAS_TRY(cublasLtMatmul(lt, p->desc, &alpha, b->data, p->layout_a, pa, p->layout_b, &beta, pc, p->layout_c,
                                 pc, p->layout_c, &p->algo, workspace, workspace_bytes, stream));
  }
  return DQ_OK;
}
