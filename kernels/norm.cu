/*
 * norm.cu: LayerNorm over the last dim on CUDA, forward and backward.
 *
 * One warp per row for rows up to DQ_WARP_ROW_MAX long, else one block per
 * row. Statistics are f32 and two-pass (mean, then the mean of squared
 * deviations), like the CPU. weight and bias may each have any float dtype
 * (f32 master weights with bf16 activations); they are read through
 * dq_load_any.
 *
 * The backward's dweight/dbias are column sums over rows, done with the
 * deterministic two-pass scheme of colsum.cuh (no float atomics).
 */
#include "colsum.cuh"

template <typename T, bool WARP>
__global__ void layernorm_kernel(T *out, float *mean_out, float *rstd_out, const T *x, const void *weight, int wdtype,
                                 const void *bias, int bdtype, int64_t rows, int64_t cols, float eps) {
  dq_row_group<WARP> g;
  if (g.row >= rows) return; /* whole warps only (blocks never: one per row) */
  const T *xr = x + g.row * cols;
  T *outr = out + g.row * cols;
  float s = 0.0f;
  for (int64_t j = g.lane; j < cols; j += g.width) s += dq_to_f32(xr[j]);
  float mean = g.sum(s) / (float)cols;
  float ss = 0.0f;
  for (int64_t j = g.lane; j < cols; j += g.width) {
    float d = dq_to_f32(xr[j]) - mean;
    ss += d * d;
  }
  float var = g.sum(ss) / (float)cols;
  float rstd = 1.0f / sqrtf(var + eps);
  for (int64_t j = g.lane; j < cols; j += g.width) {
    /* ((x - mean) * rstd) * w + b in separate roundings, as the CPU does. */
    float y = __fmul_rn(__fsub_rn(dq_to_f32(xr[j]), mean), rstd);
    outr[j] = dq_from_f32<T>(__fadd_rn(__fmul_rn(y, dq_load_any(weight, wdtype, j)), dq_load_any(bias, bdtype, j)));
  }
  if (g.lane == 0 && mean_out) {
    mean_out[g.row] = mean;
    rstd_out[g.row] = rstd;
  }
}

dq_status cuda_layernorm(dq_tensor *out, dq_tensor *mean, dq_tensor *rstd, const dq_tensor *x, const dq_tensor *weight,
                         const dq_tensor *bias, float eps) {
  const char *op = "dq_layernorm";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, x->device, &stream));
  int64_t cols = dq_cols(x), rows = dq_rows(x);
  float *mean_p = mean ? (float *)mean->data : nullptr;
  float *rstd_p = rstd ? (float *)rstd->data : nullptr;
  bool warp = dq_row_use_warp(cols);
  unsigned grid = dq_row_blocks(rows, warp);
  DQ_DISPATCH_FLOAT(x->dtype, T, {
    if (warp)
      layernorm_kernel<T, true><<<grid, DQ_THREADS, 0, stream>>>((T *)out->data, mean_p, rstd_p, (const T *)x->data,
                                                                 weight->data, weight->dtype, bias->data, bias->dtype,
                                                                 rows, cols, eps);
    else
      layernorm_kernel<T, false><<<grid, DQ_BLOCK_ROW_THREADS, 0, stream>>>(
          (T *)out->data, mean_p, rstd_p, (const T *)x->data, weight->data, weight->dtype, bias->data, bias->dtype,
          rows, cols, eps);
  });
  DQ_LAUNCHED("layernorm_kernel");
  return DQ_OK;
}

/* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * weight,
 * xhat = (x - mean) * rstd. */
template <typename T, bool WARP>
__global__ void layernorm_backward_kernel(T *dx, const T *dy, const T *x, const void *weight, int wdtype,
                                          const float *mean, const float *rstd, int64_t rows, int64_t cols) {
  dq_row_group<WARP> grp;
  if (grp.row >= rows) return;
  const T *xr = x + grp.row * cols, *dyr = dy + grp.row * cols;
  T *dxr = dx + grp.row * cols;
  float mu = mean[grp.row], rs = rstd[grp.row];
  /* Products rounded on their own (__fmul_rn): were g contracted into an
   * fma with the subtraction below in one loop and not the other, a row
   * whose terms cancel exactly (one column, a constant row) would keep a
   * rounding error, scaled by rstd, where the CPU gives 0. */
  float sg = 0.0f, sgx = 0.0f;
  for (int64_t j = grp.lane; j < cols; j += grp.width) {
    float g = __fmul_rn(dq_to_f32(dyr[j]), dq_load_any(weight, wdtype, j));
    float xhat = __fmul_rn(dq_to_f32(xr[j]) - mu, rs);
    sg += g;
    sgx += g * xhat;
  }
  float mean_g = grp.sum(sg) / (float)cols;
  float mean_gx = grp.sum(sgx) / (float)cols;
  for (int64_t j = grp.lane; j < cols; j += grp.width) {
    float g = __fmul_rn(dq_to_f32(dyr[j]), dq_load_any(weight, wdtype, j));
    float xhat = __fmul_rn(dq_to_f32(xr[j]) - mu, rs);
    dxr[j] = dq_from_f32<T>(rs * (g - mean_g - __fmul_rn(xhat, mean_gx)));
  }
}

/* The two column sums: v[0] = dy * xhat (dweight), v[1] = dy (dbias). */
template <typename T> struct norm_param_grads {
  const T *dy, *x;
  const float *mean, *rstd;
  int64_t cols;
  __device__ __forceinline__ void operator()(int64_t r, int64_t c, float *v) const {
    float d = dq_to_f32(dy[r * cols + c]);
    float xhat = (dq_to_f32(x[r * cols + c]) - mean[r]) * rstd[r];
    v[0] = d * xhat;
    v[1] = d;
  }
};

template <typename O>
static dq_status finish_param_grad(const char *op, dq_tensor *g, const float *partial, const dq_colsum_plan &plan,
                                   int accumulate, cudaStream_t stream) {
  dq_colsum_finish_kernel<O><<<dq_grid_for(plan.cols, DQ_THREADS), DQ_THREADS, 0, stream>>>((O *)g->data, partial,
                                                                                            plan, accumulate);
  DQ_LAUNCHED("dq_colsum_finish_kernel");
  return DQ_OK;
}

/* dweight (+)= sum over rows of dy * xhat, dbias (+)= sum of dy, either
 * may be NULL: the two column sums in one pass over dy and x. */
static dq_status layernorm_param_grads(const char *op, dq_tensor *dweight, dq_tensor *dbias, const dq_tensor *dy,
                                       const dq_tensor *x, const dq_tensor *mean, const dq_tensor *rstd,
                                       int accumulate, cudaStream_t stream) {
  int64_t cols = dq_cols(x), rows = dq_rows(x);
  dq_colsum_plan plan = dq_colsum_plan_for(rows, cols);
  float *partial; /* [2][chunks][cols]: dweight's partial sums, then dbias's */
  DQ_TRY(dq_cuda_scratch(op, x->device, (size_t)(2 * plan.chunks * cols) * sizeof(float), (void **)&partial));
  auto run = [&]() -> dq_status {
    DQ_DISPATCH_FLOAT(x->dtype, T, {
      norm_param_grads<T> f = {(const T *)dy->data, (const T *)x->data, (const float *)mean->data,
                               (const float *)rstd->data, cols};
      dq_colsum_partial_kernel<2><<<dq_colsum_grid(plan), dq_colsum_block(), 0, stream>>>(f, partial, plan);
    });
    DQ_LAUNCHED("dq_colsum_partial_kernel");
    const float *dbias_partial = partial + plan.chunks * cols;
    if (dweight)
      DQ_DISPATCH_FLOAT(dweight->dtype, O,
                        DQ_TRY(finish_param_grad<O>(op, dweight, partial, plan, accumulate, stream)));
    if (dbias)
      DQ_DISPATCH_FLOAT(dbias->dtype, O,
                        DQ_TRY(finish_param_grad<O>(op, dbias, dbias_partial, plan, accumulate, stream)));
    return DQ_OK;
  };
  dq_status st = run();
  dq_cuda_scratch_free(x->device, partial);
  return st;
}

dq_status cuda_layernorm_backward(dq_tensor *dx, dq_tensor *dweight, dq_tensor *dbias, const dq_tensor *dy,
                                  const dq_tensor *x, const dq_tensor *weight, const dq_tensor *mean,
                                  const dq_tensor *rstd, int accumulate) {
  const char *op = "dq_layernorm_backward";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, x->device, &stream));
  int64_t cols = dq_cols(x), rows = dq_rows(x);
  /* Parameter gradients first: dx may alias dy (or x), which they read. */
  if (dweight || dbias) DQ_TRY(layernorm_param_grads(op, dweight, dbias, dy, x, mean, rstd, accumulate, stream));
  bool warp = dq_row_use_warp(cols);
  unsigned grid = dq_row_blocks(rows, warp);
  DQ_DISPATCH_FLOAT(x->dtype, T, {
    if (warp)
      layernorm_backward_kernel<T, true><<<grid, DQ_THREADS, 0, stream>>>(
          (T *)dx->data, (const T *)dy->data, (const T *)x->data, weight->data, weight->dtype,
          (const float *)mean->data, (const float *)rstd->data, rows, cols);
    else
      layernorm_backward_kernel<T, false><<<grid, DQ_BLOCK_ROW_THREADS, 0, stream>>>(
          (T *)dx->data, (const T *)dy->data, (const T *)x->data, weight->data, weight->dtype,
          (const float *)mean->data, (const float *)rstd->data, rows, cols);
  });
  DQ_LAUNCHED("layernorm_backward_kernel");
  return DQ_OK;
}
