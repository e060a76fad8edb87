/*
 * reduce.cu: sum / mean / max / absmax on CUDA, over everything or over the
 * last dim, into f32; and the backward.
 *
 * Deterministic: rows reduce with fixed shuffle trees; reduce-all is two
 * passes (a fixed number of blocks, chosen from the element count only,
 * writes partial results; one block combines them in order).
 *
 * Max and absmax propagate NaN, like the CPU. Backward of max/absmax routes
 * the gradient to the first element (lowest index) equal to the forward's
 * result (|x| for absmax, times sign(x), which is 0 at x = 0), like the CPU;
 * none gets it when no element matches (a NaN maximum). Finding that index
 * is an integer minimum, for which atomics are exact and order independent.
 * Mean's gradient is dout / count computed in double, as on the CPU.
 */
#include "common.cuh"

#include <limits.h>

__device__ __forceinline__ float reduce_value(int op, float x) { return op == DQ_REDUCE_ABSMAX ? fabsf(x) : x; }
__device__ __forceinline__ bool reduce_is_max(int op) { return op == DQ_REDUCE_MAX || op == DQ_REDUCE_ABSMAX; }

/* ---- over rows ------------------------------------------------------------------ */

template <typename T, bool WARP>
__global__ void reduce_rows_kernel(float *out, const T *x, int64_t rows, int64_t cols, int op) {
  dq_row_group<WARP> g;
  if (g.row >= rows) return;
  const T *xr = x + g.row * cols;
  float r;
  if (reduce_is_max(op)) {
    float m = -INFINITY;
    for (int64_t j = g.lane; j < cols; j += g.width) m = dq_op_nanmax()(m, reduce_value(op, dq_to_f32(xr[j])));
    r = g.reduce(m, dq_op_nanmax(), -INFINITY);
  } else {
    float s = 0.0f;
    for (int64_t j = g.lane; j < cols; j += g.width) s += dq_to_f32(xr[j]);
    r = g.sum(s);
    if (op == DQ_REDUCE_MEAN) r = (float)((double)r / (double)cols);
  }
  if (g.lane == 0) out[g.row] = r;
}

/* ---- over everything: pass 1 per block, pass 2 one block ------------------------- */

enum { REDUCE_MAX_BLOCKS = 1024, REDUCE_ITEMS_PER_THREAD = 8 };

static unsigned reduce_all_blocks(int64_t n) {
  int64_t b = (n + (int64_t)DQ_THREADS * REDUCE_ITEMS_PER_THREAD - 1) / ((int64_t)DQ_THREADS * REDUCE_ITEMS_PER_THREAD);
  if (b > REDUCE_MAX_BLOCKS) b = REDUCE_MAX_BLOCKS;
  return (unsigned)(b < 1 ? 1 : b);
}

template <typename T> __global__ void reduce_all_partial_kernel(float *partial, const T *x, int64_t n, int op) {
  float acc = reduce_is_max(op) ? -INFINITY : 0.0f;
  DQ_GRID_STRIDE(i, n) {
    float v = reduce_value(op, dq_to_f32(x[i]));
    acc = reduce_is_max(op) ? dq_op_nanmax()(acc, v) : acc + v;
  }
  float r =
      reduce_is_max(op) ? dq_block_reduce(acc, dq_op_nanmax(), -INFINITY) : dq_block_reduce(acc, dq_op_sum(), 0.0f);
  if (threadIdx.x == 0) partial[blockIdx.x] = r;
}

/* One block of REDUCE_MAX_BLOCKS threads: thread t holds partial t. */
__global__ void reduce_all_finish_kernel(float *out, const float *partial, int blocks, int64_t n, int op) {
  bool is_max = reduce_is_max(op);
  float identity = is_max ? -INFINITY : 0.0f;
  float v = (int)threadIdx.x < blocks ? partial[threadIdx.x] : identity;
  float r = is_max ? dq_block_reduce(v, dq_op_nanmax(), identity) : dq_block_reduce(v, dq_op_sum(), identity);
  if (threadIdx.x == 0) out[0] = op == DQ_REDUCE_MEAN ? (float)((double)r / (double)n) : r;
}

dq_status cuda_reduce(dq_tensor *out, const dq_tensor *x, int op_kind, int rows_mode) {
  const char *op = rows_mode ? "dq_reduce_rows" : "dq_reduce_all";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, x->device, &stream));
  if (rows_mode) {
    int64_t cols = dq_cols(x), rows = out->numel;
    bool warp = dq_row_use_warp(cols);
    unsigned grid = dq_row_blocks(rows, warp);
    DQ_DISPATCH_FLOAT(x->dtype, T, {
      if (warp)
        reduce_rows_kernel<T, true><<<grid, DQ_THREADS, 0, stream>>>((float *)out->data, (const T *)x->data, rows,
                                                                     cols, op_kind);
      else
        reduce_rows_kernel<T, false><<<grid, DQ_BLOCK_ROW_THREADS, 0, stream>>>((float *)out->data,
                                                                                (const T *)x->data, rows, cols,
                                                                                op_kind);
    });
    DQ_LAUNCHED("reduce_rows_kernel");
    return DQ_OK;
  }
  int64_t n = x->numel;
  unsigned blocks = reduce_all_blocks(n);
  float *partial;
  DQ_TRY(dq_cuda_scratch(op, x->device, blocks * sizeof(float), (void **)&partial));
  auto run = [&]() -> dq_status {
    DQ_DISPATCH_FLOAT(x->dtype, T, {
      reduce_all_partial_kernel<T><<<blocks, DQ_THREADS, 0, stream>>>(partial, (const T *)x->data, n, op_kind);
    });
    DQ_LAUNCHED("reduce_all_partial_kernel");
    reduce_all_finish_kernel<<<1, REDUCE_MAX_BLOCKS, 0, stream>>>((float *)out->data, partial, (int)blocks, n,
                                                                  op_kind);
    DQ_LAUNCHED("reduce_all_finish_kernel");
    return DQ_OK;
  };
  dq_status st = run();
  dq_cuda_scratch_free(x->device, partial);
  return st;
}

/* ---- backward --------------------------------------------------------------------- */

/* sum: dx = dout; mean: dx = dout / count. `group` is cols (rows mode) or n. */
template <typename T>
__global__ void reduce_backward_spread_kernel(T *dx, const void *dout, int dout_dtype, int64_t n, int64_t group,
                                              int op) {
  DQ_GRID_STRIDE(i, n) {
    float g = dq_load_any(dout, dout_dtype, i / group);
    dx[i] = dq_from_f32<T>(op == DQ_REDUCE_MEAN ? (float)((double)g / (double)group) : g);
  }
}

__device__ __forceinline__ bool is_argmax(int op, float x, float target) {
  return (op == DQ_REDUCE_ABSMAX ? fabsf(x) : x) == target;
}

/* The gradient at the argmax: g, times sign(x) (0 at x = 0) for absmax. */
__device__ __forceinline__ float routed(int op, float g, float x) {
  if (op != DQ_REDUCE_ABSMAX) return g;
  return g * (x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f));
}

__device__ __forceinline__ long long warp_min_ll(long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    long long other = __shfl_xor_sync(0xffffffffu, v, o);
    v = other < v ? other : v;
  }
  return v;
}

/* Same contract as dq_block_reduce, for an integer minimum. */
__device__ __forceinline__ long long block_min_ll(long long v) {
  __shared__ long long partial[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_min_ll(v);
  __syncthreads();
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : LLONG_MAX;
  return warp_min_ll(v);
}

template <typename T, bool WARP>
__global__ void reduce_rows_argmax_backward_kernel(T *dx, const void *dout, int dout_dtype, const T *x,
                                                   const void *out, int out_dtype, int64_t rows, int64_t cols, int op) {
  dq_row_group<WARP> g;
  if (g.row >= rows) return;
  const T *xr = x + g.row * cols;
  T *dxr = dx + g.row * cols;
  float target = dq_load_any(out, out_dtype, g.row);
  long long first = LLONG_MAX;
  for (int64_t j = g.lane; j < cols && first == LLONG_MAX; j += g.width)
    if (is_argmax(op, dq_to_f32(xr[j]), target)) first = j;
  if constexpr (WARP) first = warp_min_ll(first);
  else first = block_min_ll(first);
  float grad = dq_load_any(dout, dout_dtype, g.row);
  for (int64_t j = g.lane; j < cols; j += g.width)
    dxr[j] = dq_from_f32<T>(j == first ? routed(op, grad, dq_to_f32(xr[j])) : 0.0f);
}

/* Reduce-all argmax: each block's first match, combined by an exact integer
 * atomicMin into *first (preset to all ones, i.e. "none"). */
template <typename T>
__global__ void first_match_kernel(unsigned long long *first, const T *x, int64_t n, const void *out, int out_dtype,
                                   int op) {
  float target = dq_load_any(out, out_dtype, 0);
  long long mine = LLONG_MAX;
  /* Grid-stride indices grow per thread, so the first hit is the thread's minimum. */
  DQ_GRID_STRIDE(i, n) {
    if (is_argmax(op, dq_to_f32(x[i]), target)) {
      mine = i;
      break;
    }
  }
  long long block_first = block_min_ll(mine);
  if (threadIdx.x == 0 && block_first != LLONG_MAX) atomicMin(first, (unsigned long long)block_first);
}

template <typename T>
__global__ void route_all_kernel(T *dx, const T *x, int64_t n, const unsigned long long *first, const void *dout,
                                 int dout_dtype, int op) {
  unsigned long long f = *first;
  float grad = dq_load_any(dout, dout_dtype, 0);
  DQ_GRID_STRIDE(i, n) dx[i] = dq_from_f32<T>((unsigned long long)i == f ? routed(op, grad, dq_to_f32(x[i])) : 0.0f);
}

dq_status cuda_reduce_backward(dq_tensor *dx, const dq_tensor *dout, const dq_tensor *x, const dq_tensor *out,
                               int op_kind, int rows_mode) {
  const char *op = "dq_reduce_backward";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, x->device, &stream));
  int64_t n = x->numel, cols = rows_mode ? dq_cols(x) : n;
  if (op_kind == DQ_REDUCE_SUM || op_kind == DQ_REDUCE_MEAN) {
    DQ_DISPATCH_FLOAT(x->dtype, T, {
      reduce_backward_spread_kernel<T><<<dq_grid_for(n, DQ_THREADS), DQ_THREADS, 0, stream>>>(
          (T *)dx->data, dout->data, dout->dtype, n, cols, op_kind);
    });
    DQ_LAUNCHED("reduce_backward_spread_kernel");
    return DQ_OK;
  }
  if (rows_mode) {
    int64_t rows = dq_rows(x);
    bool warp = dq_row_use_warp(cols);
    unsigned grid = dq_row_blocks(rows, warp);
    DQ_DISPATCH_FLOAT(x->dtype, T, {
      if (warp)
        reduce_rows_argmax_backward_kernel<T, true><<<grid, DQ_THREADS, 0, stream>>>(
            (T *)dx->data, dout->data, dout->dtype, (const T *)x->data, out->data, out->dtype, rows, cols, op_kind);
      else
        reduce_rows_argmax_backward_kernel<T, false><<<grid, DQ_BLOCK_ROW_THREADS, 0, stream>>>(
            (T *)dx->data, dout->data, dout->dtype, (const T *)x->data, out->data, out->dtype, rows, cols, op_kind);
    });
    DQ_LAUNCHED("reduce_rows_argmax_backward_kernel");
    return DQ_OK;
  }
  unsigned long long *first;
  DQ_TRY(dq_cuda_scratch(op, x->device, sizeof *first, (void **)&first));
  auto run = [&]() -> dq_status {
    DQ_CUDA_TRY(cudaMemsetAsync(first, 0xff, sizeof *first, stream));
    unsigned grid = dq_grid_for(n, DQ_THREADS);
    DQ_DISPATCH_FLOAT(x->dtype, T, {
      first_match_kernel<T><<<grid, DQ_THREADS, 0, stream>>>(first, (const T *)x->data, n, out->data, out->dtype,
                                                              op_kind);
    });
    DQ_LAUNCHED("first_match_kernel");
    DQ_DISPATCH_FLOAT(x->dtype, T, {
      route_all_kernel<T><<<grid, DQ_THREADS, 0, stream>>>((T *)dx->data, (const T *)x->data, n, first, dout->data,
                                                            dout->dtype, op_kind);
    });
    DQ_LAUNCHED("route_all_kernel");
    return DQ_OK;
  };
  dq_status st = run();
  dq_cuda_scratch_free(x->device, first);
  return st;
}
