/*
 * loss.cu: the fused losses of dqbart_loss.h on CUDA. engine/cpu_loss.c is
 * the reference; the formulas are the same f32 operations (explicit _rn
 * intrinsics where nvcc would contract into FMAs).
 *
 * Row losses (cross-entropy, KL): a count kernel (rows that count), then a
 * block per row: pass A reads the row from global memory (the only DRAM
 * read when the row fits in shared memory, where pass A keeps a copy) for
 * the maximum (and the sum for label smoothing), pass B sums the
 * exponentials, pass C writes the gradient and the row's loss; then one
 * block sums the row losses in row order. MSE: a grid fixed by the element
 * count writes the gradient and per-block sums, one block combines them in
 * order. No float atomics, no host synchronization: the value stays on the
 * device, and the same inputs give the same bits every run.
 *
 * A cross-entropy label outside [0, V) that is not the ignore index cannot
 * be reported without a host round trip; its row's loss is NaN, which makes
 * the value NaN (its gradient row is left as for an ignored row).
 */
#include "workspace.cuh"
#include "../engine/loss_backend.h"

enum {
  ROW_THREADS = 1024,       /* long rows (vocabularies) */
  SHORT_ROW_THREADS = 256,  /* rows shorter than SHORT_ROW */
  SHORT_ROW = 4096,
  SUM_THREADS = 1024,       /* count and finalize kernels */
  MSE_THREADS = 256,
  MSE_ELEMS_PER_BLOCK = 8192,
  MSE_MAX_BLOCKS = 1024,
  UNROLL = 8 /* independent loads in flight per thread and input */
};

/* ---- shared helpers ---------------------------------------------------------------- */

__device__ __forceinline__ int64_t label_at(const void *labels, int is64, int64_t r) {
  return is64 ? ((const int64_t *)labels)[r] : (int64_t)((const int32_t *)labels)[r];
}

/* count[0] = rows whose label is not ignore_index (all rows without labels). */
__global__ void loss_count_kernel(float *count, const void *labels, int is64, int64_t rows, int64_t ignore_index) {
  float c = 0.0f;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x)
    c += (!labels || label_at(labels, is64, r) != ignore_index) ? 1.0f : 0.0f;
  c = det_block_reduce(c, det_sum(), 0.0f);
  if (threadIdx.x == 0) count[0] = c;
}

/* value (=|+=) scale * sum(row_loss) / count, 0 when nothing counts. */
__global__ void loss_rows_finish_kernel(float *value, const float *row_loss, const float *count, int64_t rows,
                                        double scale, int add) {
  double s = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) s += (double)row_loss[r];
  s = det_block_reduce(s, det_sum(), 0.0);
  if (threadIdx.x == 0) {
    float c = count[0];
    float v = c > 0.0f ? (float)(scale * s / (double)c) : 0.0f;
    value[0] = add ? __fadd_rn(value[0], v) : v;
  }
}

/* A row of an input: read from global memory, or from the shared-memory
 * copy pass A made of it. */
template <typename T> struct row_src {
  const T *g;
  T *cache; /* NULL: not cached */
  __device__ __forceinline__ float at(int64_t j) const { return dq_to_f32(cache ? cache[j] : g[j]); }
};

/* f(j, x_j) over the thread's share of the row, UNROLL loads first. */
template <typename T, typename F>
__device__ __forceinline__ void row_for(const row_src<T> &src, int64_t n, F f) {
  int64_t j = threadIdx.x;
  int w = blockDim.x;
  for (; j + (int64_t)(UNROLL - 1) * w < n; j += (int64_t)UNROLL * w) {
    float v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) v[u] = src.at(j + (int64_t)u * w);
#pragma unroll
    for (int u = 0; u < UNROLL; u++) f(j + (int64_t)u * w, v[u]);
  }
  for (; j < n; j += w) f(j, src.at(j));
}

/* Pass A: from global memory, keeping a copy in the cache when there is one. */
template <typename T, typename F>
__device__ __forceinline__ void row_first_pass(const row_src<T> &src, int64_t n, F f) {
  row_src<T> global = {src.g, NULL};
  row_for(global, n, [&](int64_t j, float v) {
    if (src.cache) src.cache[j] = dq_from_f32<T>(v); /* exact: v came from a T */
    f(j, v);
  });
}

template <typename TG>
__device__ __forceinline__ void store_grad(TG *g, int64_t j, float v, int add) {
  g[j] = dq_from_f32<TG>(add ? __fadd_rn(dq_to_f32(g[j]), v) : v);
}

extern __shared__ __align__(16) unsigned char loss_smem[];

/* ---- cross-entropy -------------------------------------------------------------------- */

template <typename T, typename TG>
__global__ void __launch_bounds__(ROW_THREADS)
    ce_row_kernel(float *row_loss, TG *grad, const T *logits, const void *labels, int is64, const float *count,
                  int64_t V, int64_t ignore_index, float eps, float weight, int add, int cache) {
  int64_t r = blockIdx.x;
  row_src<T> x = {logits + r * V, cache ? (T *)loss_smem : NULL};
  TG *g = grad ? grad + r * V : NULL;
  int64_t y = label_at(labels, is64, r);
  if (y == ignore_index || y < 0 || y >= V) { /* uniform across the block */
    if (threadIdx.x == 0) row_loss[r] = y == ignore_index ? 0.0f : NAN;
    if (g && !add)
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) g[j] = dq_from_f32<TG>(0.0f);
    return;
  }
  /* The label's logit, read before any thread writes the gradient (which
   * may be the logits themselves). */
  float target = threadIdx.x == 0 ? dq_to_f32(logits[r * V + y]) : 0.0f;
  float mx = -INFINITY, sx = 0.0f;
  row_first_pass(x, V, [&](int64_t, float v) {
    mx = fmaxf(mx, v);
    sx += v;
  });
  mx = det_block_reduce(mx, det_max(), -INFINITY);
  if (eps > 0.0f) sx = det_block_reduce(sx, det_sum(), 0.0f);
  __syncthreads(); /* the cache is complete */
  float se = 0.0f;
  row_for(x, V, [&](int64_t, float v) { se += expf(__fsub_rn(v, mx)); });
  se = det_block_reduce(se, det_sum(), 0.0f);
  float lse = __fadd_rn(mx, logf(se));
  float on = 1.0f - eps, off = __fdiv_rn(eps, (float)V);
  if (threadIdx.x == 0) {
    double loss = (double)lse - (double)on * (double)target;
    if (eps > 0.0f) loss -= (double)off * (double)sx;
    row_loss[r] = (float)loss;
  }
  if (!g) return;
  float k = __fdiv_rn(weight, count[0]);
  row_for(x, V, [&](int64_t j, float v) {
    float p = expf(__fsub_rn(v, lse));
    store_grad(g, j, __fmul_rn(k, __fsub_rn(__fsub_rn(p, off), j == y ? on : 0.0f)), add);
  });
}

/* ---- KL with temperature ---------------------------------------------------------------- */

template <typename T, typename TG>
__global__ void __launch_bounds__(ROW_THREADS)
    kl_row_kernel(float *row_loss, TG *grad, const T *student, const T *teacher, const void *labels, int is64,
                  const float *count, int64_t V, int64_t ignore_index, float inv_t, float temperature, float weight,
                  int add, int cache_s, int cache_t) {
  int64_t r = blockIdx.x;
  T *cache = (T *)loss_smem;
  row_src<T> t = {teacher + r * V, cache_t ? cache : NULL};
  row_src<T> s = {student + r * V, cache_s ? cache + (cache_t ? V : 0) : NULL};
  TG *g = grad ? grad + r * V : NULL;
  if (labels && label_at(labels, is64, r) == ignore_index) {
    if (threadIdx.x == 0) row_loss[r] = 0.0f;
    if (g && !add)
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) g[j] = dq_from_f32<TG>(0.0f);
    return;
  }
  float ms = -INFINITY, mt = -INFINITY;
  row_first_pass(s, V, [&](int64_t, float v) { ms = fmaxf(ms, __fmul_rn(v, inv_t)); });
  row_first_pass(t, V, [&](int64_t, float v) { mt = fmaxf(mt, __fmul_rn(v, inv_t)); });
  ms = det_block_reduce(ms, det_max(), -INFINITY);
  mt = det_block_reduce(mt, det_max(), -INFINITY);
  __syncthreads(); /* the caches are complete */
  float ss = 0.0f, st = 0.0f;
  row_for(s, V, [&](int64_t, float v) { ss += expf(__fsub_rn(__fmul_rn(v, inv_t), ms)); });
  row_for(t, V, [&](int64_t, float v) { st += expf(__fsub_rn(__fmul_rn(v, inv_t), mt)); });
  ss = det_block_reduce(ss, det_sum(), 0.0f);
  st = det_block_reduce(st, det_sum(), 0.0f);
  float lse_s = __fadd_rn(ms, logf(ss)), lse_t = __fadd_rn(mt, logf(st));
  float k = g ? __fdiv_rn(__fmul_rn(weight, temperature), count[0]) : 0.0f;
  float kl = 0.0f;
  row_for(t, V, [&](int64_t j, float tv) {
    float lp = __fsub_rn(__fmul_rn(tv, inv_t), lse_t);
    float lq = __fsub_rn(__fmul_rn(s.at(j), inv_t), lse_s);
    float p = expf(lp);
    kl += p > 0.0f ? __fmul_rn(p, __fsub_rn(lp, lq)) : 0.0f;
    if (g) store_grad(g, j, __fmul_rn(k, __fsub_rn(expf(lq), p)), add);
  });
  kl = det_block_reduce(kl, det_sum(), 0.0f);
  if (threadIdx.x == 0) row_loss[r] = kl;
}

/* ---- MSE ------------------------------------------------------------------------------------ */

template <typename T, typename TG>
__global__ void mse_partial_kernel(float *partial, TG *grad, const T *s, const T *t, int64_t n, float k, int add) {
  float acc = 0.0f;
  int64_t stride = (int64_t)gridDim.x * blockDim.x, i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  auto one = [&](int64_t at, float sv, float tv) {
    float d = __fsub_rn(sv, tv);
    acc = __fadd_rn(acc, __fmul_rn(d, d));
    if (grad) store_grad(grad, at, __fmul_rn(k, d), add);
  };
  for (; i + (UNROLL - 1) * stride < n; i += UNROLL * stride) {
    float sv[UNROLL], tv[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) {
      sv[u] = dq_to_f32(s[i + u * stride]);
      tv[u] = dq_to_f32(t[i + u * stride]);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; u++) one(i + u * stride, sv[u], tv[u]);
  }
  for (; i < n; i += stride) one(i, dq_to_f32(s[i]), dq_to_f32(t[i]));
  acc = det_block_reduce(acc, det_sum(), 0.0f);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void mse_finish_kernel(float *value, const float *partial, int blocks, double divisor, int add) {
  double s = 0.0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) s += (double)partial[b];
  s = det_block_reduce(s, det_sum(), 0.0);
  if (threadIdx.x == 0) {
    float v = (float)(s / divisor);
    value[0] = add ? __fadd_rn(value[0], v) : v;
  }
}

/* ---- host side ---------------------------------------------------------------------------------- */

/* Run `__VA_ARGS__` with T the inputs' storage type and TG the gradient's
 * (f32 or T; T when there is no gradient). */
#define LOSS_DISPATCH(in_dtype, grad_f32, ...)                                  \
  DQ_DISPATCH_FLOAT(in_dtype, T, {                                              \
    if (grad_f32) {                                                             \
      typedef float TG;                                                         \
      __VA_ARGS__;                                                              \
    } else {                                                                    \
      typedef T TG;                                                             \
      __VA_ARGS__;                                                              \
    }                                                                           \
  })

/* Shared memory for row caches: `rows_cached` copies of V elements of
 * `elem` bytes when they fit the device's opt-in limit. */
static dq_status max_dynamic_smem(const char *op, int device, size_t *bytes) {
  int v = 0;
  DQ_CUDA_TRY(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  /* Leave room for the reductions' static shared memory. */
  *bytes = v > 2048 ? (size_t)v - 2048 : 0;
  return DQ_OK;
}

template <typename K> static dq_status allow_smem(const char *op, K kernel, size_t bytes) {
  if (bytes > 48 * 1024) DQ_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  return DQ_OK;
}

static int row_threads(int64_t V) { return V >= SHORT_ROW ? ROW_THREADS : SHORT_ROW_THREADS; }

/* Workspace of a row loss: the count, then one float per row. */
static dq_status row_workspace(const char *op, int device, int64_t rows, float **count, float **row_loss) {
  void *ws;
  DQ_TRY(dq_cuda_workspace(op, device, sizeof(float) * (size_t)(rows + 4), &ws));
  *count = (float *)ws;
  *row_loss = (float *)ws + 4;
  return DQ_OK;
}

extern "C" dq_status cuda_loss_cross_entropy(dq_tensor *value, dq_tensor *grad, float weight, int flags,
                                             const dq_tensor *logits, const dq_tensor *labels, int64_t ignore_index,
                                             float label_smoothing) {
  const char *op = "dq_loss_cross_entropy";
  int device = logits->device;
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  int64_t V = dq_cols(logits), rows = dq_rows(logits);
  float *count, *row_loss;
  DQ_TRY(row_workspace(op, device, rows, &count, &row_loss));
  int is64 = labels->dtype == DQ_I64, add = (flags & DQ_LOSS_ADD_GRAD) != 0;
  loss_count_kernel<<<1, SUM_THREADS, 0, stream>>>(count, labels->data, is64, rows, ignore_index);
  DQ_LAUNCHED("loss_count_kernel");
  size_t limit, cache_bytes = (size_t)V * (size_t)dq_dtype_size(logits->dtype);
  DQ_TRY(max_dynamic_smem(op, device, &limit));
  int cache = cache_bytes <= limit;
  size_t smem = cache ? cache_bytes : 0;
  LOSS_DISPATCH(logits->dtype, grad && grad->dtype == DQ_F32 && logits->dtype != DQ_F32, {
    auto kernel = ce_row_kernel<T, TG>;
    DQ_TRY(allow_smem(op, kernel, smem));
    kernel<<<(unsigned)rows, row_threads(V), smem, stream>>>(row_loss, grad ? (TG *)grad->data : NULL,
                                                            (const T *)logits->data, labels->data, is64, count, V,
                                                            ignore_index, label_smoothing, weight, add, cache);
  });
  DQ_LAUNCHED("ce_row_kernel");
  loss_rows_finish_kernel<<<1, SUM_THREADS, 0, stream>>>((float *)value->data, row_loss, count, rows, 1.0,
                                                         (flags & DQ_LOSS_ADD_VALUE) != 0);
  DQ_LAUNCHED("loss_rows_finish_kernel");
  return DQ_OK;
}

extern "C" dq_status cuda_loss_kl(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,
                                  const dq_tensor *teacher, const dq_tensor *labels, int64_t ignore_index,
                                  float temperature) {
  const char *op = "dq_loss_kl";
  int device = student->device;
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  int64_t V = dq_cols(student), rows = dq_rows(student);
  float *count, *row_loss;
  DQ_TRY(row_workspace(op, device, rows, &count, &row_loss));
  int is64 = labels && labels->dtype == DQ_I64, add = (flags & DQ_LOSS_ADD_GRAD) != 0;
  const void *label_data = labels ? labels->data : NULL;
  loss_count_kernel<<<1, SUM_THREADS, 0, stream>>>(count, label_data, is64, rows, ignore_index);
  DQ_LAUNCHED("loss_count_kernel");
  size_t limit, one = (size_t)V * (size_t)dq_dtype_size(student->dtype);
  DQ_TRY(max_dynamic_smem(op, device, &limit));
  /* Cache both rows when they fit, else the student's (read in two passes
   * besides pass A, like the teacher's), else none. */
  int cache_t = 2 * one <= limit, cache_s = one <= limit;
  size_t smem = (size_t)(cache_t + cache_s) * one;
  float inv_t = 1.0f / temperature;
  LOSS_DISPATCH(student->dtype, grad && grad->dtype == DQ_F32 && student->dtype != DQ_F32, {
    auto kernel = kl_row_kernel<T, TG>;
    DQ_TRY(allow_smem(op, kernel, smem));
    kernel<<<(unsigned)rows, row_threads(V), smem, stream>>>(
        row_loss, grad ? (TG *)grad->data : NULL, (const T *)student->data, (const T *)teacher->data, label_data,
        is64, count, V, ignore_index, inv_t, temperature, weight, add, cache_s, cache_t);
  });
  DQ_LAUNCHED("kl_row_kernel");
  double tt = (double)temperature * (double)temperature;
  loss_rows_finish_kernel<<<1, SUM_THREADS, 0, stream>>>((float *)value->data, row_loss, count, rows, tt,
                                                         (flags & DQ_LOSS_ADD_VALUE) != 0);
  DQ_LAUNCHED("loss_rows_finish_kernel");
  return DQ_OK;
}

extern "C" dq_status cuda_loss_mse(dq_tensor *value, dq_tensor *grad, float weight, int flags,
                                   const dq_tensor *student, const dq_tensor *teacher, double divisor) {
  const char *op = "dq_loss_mse";
  int device = student->device;
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  int64_t n = student->numel;
  /* The grid depends on n only, so the partial sums (and the value) do too. */
  int64_t blocks = (n + MSE_ELEMS_PER_BLOCK - 1) / MSE_ELEMS_PER_BLOCK;
  if (blocks > MSE_MAX_BLOCKS) blocks = MSE_MAX_BLOCKS;
  if (blocks < 1) blocks = 1;
  void *ws;
  DQ_TRY(dq_cuda_workspace(op, device, sizeof(float) * (size_t)blocks, &ws));
  float *partial = (float *)ws;
  float k = (float)(2.0 * (double)weight / divisor);
  int add = (flags & DQ_LOSS_ADD_GRAD) != 0;
  LOSS_DISPATCH(student->dtype, grad && grad->dtype == DQ_F32 && student->dtype != DQ_F32, {
    mse_partial_kernel<T, TG><<<(unsigned)blocks, MSE_THREADS, 0, stream>>>(
        partial, grad ? (TG *)grad->data : NULL, (const T *)student->data, (const T *)teacher->data, n, k, add);
  });
  DQ_LAUNCHED("mse_partial_kernel");
  mse_finish_kernel<<<1, SUM_THREADS, 0, stream>>>((float *)value->data, partial, (int)blocks, divisor,
                                                   (flags & DQ_LOSS_ADD_VALUE) != 0);
  DQ_LAUNCHED("mse_finish_kernel");
  return DQ_OK;
}
