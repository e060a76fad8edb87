/*
 * softmax.cu: softmax(scale * x + mask) over the last dim on CUDA, and its
 * backward.
 *
 * One warp per row for rows up to DQ_WARP_ROW_MAX long, else one block per
 * row; three passes over the row (max, sum of exponentials, write), which
 * stay in L1/L2 for the row lengths attention produces. The mask may have
 * any float dtype and broadcasts over x through the strides ops.c computed
 * (dq_bcast_plan: 0 on broadcast dims). A row whose entries are all -inf
 * gives zeros.
 */
#include "common.cuh"

struct mask_geometry {
  const void *data; /* NULL: no mask */
  int dtype;
  int ndim;
  int64_t shape[DQ_MAX_DIMS];
  int64_t strides[DQ_MAX_DIMS];
};

/* Offset of the mask element under x's (row, 0): the row index decomposed
 * over x's leading dims, each weighted by the mask's stride there. */
__device__ __forceinline__ int64_t mask_row_offset(const mask_geometry &m, int64_t row) {
  int64_t rest = row, off = 0;
  for (int k = m.ndim - 2; k >= 0; k--) {
    off += (rest % m.shape[k]) * m.strides[k];
    rest /= m.shape[k];
  }
  return off;
}

template <typename T, bool WARP>
__global__ void softmax_kernel(T *out, const T *x, mask_geometry m, int64_t rows, int64_t cols, float scale) {
  dq_row_group<WARP> g;
  if (g.row >= rows) return; /* whole warps only (blocks never: one per row) */
  const T *xr = x + g.row * cols;
  T *outr = out + g.row * cols;
  int64_t mbase = 0, mstride = 0;
  if (m.data) {
    mbase = mask_row_offset(m, g.row);
    mstride = m.strides[m.ndim - 1];
  }
  /* scale * x + mask in two roundings, as the CPU computes it. */
#define VALUE(j) \
  __fadd_rn(__fmul_rn(scale, dq_to_f32(xr[j])), m.data ? dq_load_any(m.data, m.dtype, mbase + (j) * mstride) : 0.0f)
  float mx = -INFINITY;
  for (int64_t j = g.lane; j < cols; j += g.width) mx = fmaxf(mx, VALUE(j));
  mx = g.max(mx);
  if (mx == -INFINITY) {
    for (int64_t j = g.lane; j < cols; j += g.width) outr[j] = dq_from_f32<T>(0.0f);
    return; /* uniform across the row's threads: mx is the same for all */
  }
  float s = 0.0f;
  for (int64_t j = g.lane; j < cols; j += g.width) s += expf(VALUE(j) - mx);
  s = g.sum(s);
  for (int64_t j = g.lane; j < cols; j += g.width) outr[j] = dq_from_f32<T>(expf(VALUE(j) - mx) / s);
#undef VALUE
}

dq_status cuda_softmax(dq_tensor *out, const dq_tensor *x, const dq_tensor *mask, const dq_bcast_plan *mask_plan,
                       float scale) {
  const char *op = "dq_softmax";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, x->device, &stream));
  mask_geometry m;
  memset(&m, 0, sizeof m);
  if (mask) {
    m.data = mask->data;
    m.dtype = mask->dtype;
    m.ndim = mask_plan->ndim;
    for (int k = 0; k < mask_plan->ndim; k++) {
      m.shape[k] = mask_plan->shape[k];
      m.strides[k] = mask_plan->strides[k];
    }
  }
  int64_t cols = dq_cols(x), rows = dq_rows(x);
  bool warp = dq_row_use_warp(cols);
  unsigned grid = dq_row_blocks(rows, warp);
  DQ_DISPATCH_FLOAT(x->dtype, T, {
    if (warp)
      softmax_kernel<T, true><<<grid, DQ_THREADS, 0, stream>>>((T *)out->data, (const T *)x->data, m, rows, cols,
                                                               scale);
    else
      softmax_kernel<T, false><<<grid, DQ_BLOCK_ROW_THREADS, 0, stream>>>((T *)out->data, (const T *)x->data, m,
                                                                          rows, cols, scale);
  });
  DQ_LAUNCHED("softmax_kernel");
  return DQ_OK;
}

/* dx = scale * y * (dy - sum(dy * y)) */
template <typename T, bool WARP>
__global__ void softmax_backward_kernel(T *dx, const T *dy, const T *y, int64_t rows, int64_t cols, float scale) {
  dq_row_group<WARP> g;
  if (g.row >= rows) return;
  const T *dyr = dy + g.row * cols, *yr = y + g.row * cols;
  T *dxr = dx + g.row * cols;
  float dot = 0.0f;
  for (int64_t j = g.lane; j < cols; j += g.width) dot += dq_to_f32(dyr[j]) * dq_to_f32(yr[j]);
  dot = g.sum(dot);
  for (int64_t j = g.lane; j < cols; j += g.width)
    dxr[j] = dq_from_f32<T>(__fmul_rn(__fmul_rn(scale, dq_to_f32(yr[j])), __fsub_rn(dq_to_f32(dyr[j]), dot)));
}

dq_status cuda_softmax_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *y, float scale) {
  const char *op = "dq_softmax_backward";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, y->device, &stream));
  int64_t cols = dq_cols(y), rows = dq_rows(y);
  bool warp = dq_row_use_warp(cols);
  unsigned grid = dq_row_blocks(rows, warp);
  DQ_DISPATCH_FLOAT(y->dtype, T, {
    if (warp)
      softmax_backward_kernel<T, true><<<grid, DQ_THREADS, 0, stream>>>((T *)dx->data, (const T *)dy->data,
                                                                        (const T *)y->data, rows, cols, scale);
    else
      softmax_backward_kernel<T, false><<<grid, DQ_BLOCK_ROW_THREADS, 0, stream>>>(
          (T *)dx->data, (const T *)dy->data, (const T *)y->data, rows, cols, scale);
  });
  DQ_LAUNCHED("softmax_backward_kernel");
  return DQ_OK;
}
