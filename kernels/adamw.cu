/*
 * adamw.cu: AdamW over a flat buffer, the global gradient norm and the
 * non-finite flag on CUDA (dqbart_optim.h). Nothing here synchronizes: the
 * AdamW kernel reads the gradient norm from device memory and derives the
 * clip factor itself, so clipping costs neither a pass nor a host round
 * trip.
 *
 * The element update is optim_backend.h's dq_adamw_element with
 * correctly rounded f32 intrinsics, the same operations in the same order
 * as the CPU, so both devices give the same bits.
 *
 * The norm is deterministic: a fixed number of blocks (from the element
 * count only) each sum squares in double over a fixed grid-stride pattern
 * and a fixed shuffle tree; one block adds the partial sums in order.
 */
#include "common.cuh"
#include "../engine/optim_backend.h"

/* ---- AdamW ------------------------------------------------------------------------ */

template <typename W>
__global__ void adamw_kernel(float *p, float *m, float *v, const float *g, const float *norm, const int8_t *mask,
                             W *working, int64_t n, dq_adamw_consts c) {
  float scale = 1.0f;
  if (norm) {
    float nv = *norm;
    if (c.skip_nonfinite && !isfinite(nv)) return;
    scale = dq_clip_scale(nv, c.max_norm);
  }
  bool clip = c.max_norm > 0.0f;
  DQ_GRID_STRIDE(i, n) {
    float gi = clip ? __fmul_rn(g[i], scale) : g[i];
    int decay = c.has_decay && (!mask || mask[i] != 0);
    float pv = p[i], mv = m[i], vv = v[i];
    dq_adamw_element(&c, gi, decay, &pv, &mv, &vv);
    p[i] = pv;
    m[i] = mv;
    v[i] = vv;
    if (working) working[i] = dq_from_f32<W>(pv);
  }
}

dq_status cuda_adamw(dq_tensor *params, dq_tensor *exp_avg, dq_tensor *exp_avg_sq, const dq_tensor *grads,
                     const dq_tensor *grad_norm, const dq_tensor *decay_mask, dq_tensor *working,
                     const dq_adamw_consts *c) {
  const char *op = "dq_adamw_step";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, params->device, &stream));
  int64_t n = params->numel;
  unsigned grid = dq_grid_for(n, DQ_THREADS);
  float *p = (float *)params->data, *m = (float *)exp_avg->data, *v = (float *)exp_avg_sq->data;
  const float *g = (const float *)grads->data;
  const float *norm = grad_norm ? (const float *)grad_norm->data : NULL;
  const int8_t *mask = decay_mask ? (const int8_t *)decay_mask->data : NULL;
  if (!working) {
    adamw_kernel<float><<<grid, DQ_THREADS, 0, stream>>>(p, m, v, g, norm, mask, (float *)NULL, n, *c);
  } else {
    DQ_DISPATCH_FLOAT(working->dtype, W, {
      adamw_kernel<W><<<grid, DQ_THREADS, 0, stream>>>(p, m, v, g, norm, mask, (W *)working->data, n, *c);
    });
  }
  DQ_LAUNCHED("adamw_kernel");
  return DQ_OK;
}

/* ---- gradient norm: pass 1 per block, pass 2 one block ------------------------------- */

enum { NORM_MAX_BLOCKS = 1024, NORM_ITEMS_PER_THREAD = 8 };

static unsigned norm_blocks(int64_t n) {
  int64_t b = (n + (int64_t)DQ_THREADS * NORM_ITEMS_PER_THREAD - 1) / ((int64_t)DQ_THREADS * NORM_ITEMS_PER_THREAD);
  if (b > NORM_MAX_BLOCKS) b = NORM_MAX_BLOCKS;
  return (unsigned)(b < 1 ? 1 : b);
}

__device__ __forceinline__ double warp_sum_double(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/* Every thread of the block calls it (blockDim.x a multiple of 32); thread 0
 * gets the block's sum in a fixed order. */
__device__ __forceinline__ double block_sum_double(double v) {
  __shared__ double partial[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum_double(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : 0.0;
  return warp_sum_double(v);
}

template <typename T> __global__ void norm_partial_kernel(double *partial, const T *x, int64_t n) {
  double acc = 0.0;
  DQ_GRID_STRIDE(i, n) {
    double xv = (double)dq_to_f32(x[i]);
    acc += xv * xv;
  }
  double r = block_sum_double(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = r;
}

__global__ void norm_finish_kernel(float *out, const double *partial, int blocks) {
  double v = (int)threadIdx.x < blocks ? partial[threadIdx.x] : 0.0;
  double r = block_sum_double(v);
  if (threadIdx.x == 0) out[0] = (float)sqrt(r);
}

dq_status cuda_grad_norm(dq_tensor *norm, const dq_tensor *grads) {
  const char *op = "dq_grad_norm";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, grads->device, &stream));
  int64_t n = grads->numel;
  unsigned blocks = norm_blocks(n);
  double *partial;
  DQ_TRY(dq_cuda_scratch(op, grads->device, blocks * sizeof(double), (void **)&partial));
  auto run = [&]() -> dq_status {
    DQ_DISPATCH_FLOAT(grads->dtype, T, {
      norm_partial_kernel<T><<<blocks, DQ_THREADS, 0, stream>>>(partial, (const T *)grads->data, n);
    });
    DQ_LAUNCHED("norm_partial_kernel");
    norm_finish_kernel<<<1, NORM_MAX_BLOCKS, 0, stream>>>((float *)norm->data, partial, (int)blocks);
    DQ_LAUNCHED("norm_finish_kernel");
    return DQ_OK;
  };
  dq_status st = run();
  dq_cuda_scratch_free(grads->device, partial);
  return st;
}

/* ---- non-finite flag ---------------------------------------------------------------- */

/* Every writer stores the same 1, so the result does not depend on order. */
template <typename T> __global__ void flag_nonfinite_kernel(int32_t *flag, const T *x, int64_t n) {
  bool bad = false;
  DQ_GRID_STRIDE(i, n) bad |= !isfinite(dq_to_f32(x[i]));
  if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) *flag = 1;
}

dq_status cuda_flag_nonfinite(dq_tensor *flag, const dq_tensor *x) {
  const char *op = "dq_flag_nonfinite";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, x->device, &stream));
  int64_t n = x->numel;
  unsigned grid = dq_grid_for(n, DQ_THREADS);
  DQ_DISPATCH_FLOAT(x->dtype, T, {
    flag_nonfinite_kernel<T><<<grid, DQ_THREADS, 0, stream>>>((int32_t *)flag->data, (const T *)x->data, n);
  });
  DQ_LAUNCHED("flag_nonfinite_kernel");
  return DQ_OK;
}
