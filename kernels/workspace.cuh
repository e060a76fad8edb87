/*
 * workspace.cuh: what quant.cu and loss.cu share: a persistent per-device
 * workspace for the partial results of multi-kernel reductions, and
 * deterministic warp/block reductions of any arithmetic type (float, double)
 * in the style of common.cuh's float-only ones.
 */
#ifndef DQ_KERNELS_WORKSPACE_CUH
#define DQ_KERNELS_WORKSPACE_CUH

#include "common.cuh"

/* At least `bytes` of device memory that stays allocated between ops, for
 * work queued on the device's engine stream after this call. The next call
 * (by any op) may hand out the same memory: the engine stream runs ops in
 * issue order, so an op's kernels finish with it before the next op's
 * start. It grows (stream-ordered free of the old block, new allocation)
 * when a call needs more, so steady-state steps allocate nothing. One host
 * thread issues the work of a device at a time (as for every engine op). */
dq_status dq_cuda_workspace(const char *op, int device, size_t bytes, void **ptr);

/* Number of SMs and the L2 size of the device (cached). */
dq_status dq_cuda_device_shape(const char *op, int device, int *sms, size_t *l2_bytes);

/* ---- reductions of any type: fixed butterfly trees, deterministic ----------------- */

struct det_sum {
  template <typename V> __device__ __forceinline__ V operator()(V a, V b) const { return a + b; }
};
/* Maxima and minima that skip NaN (fmax semantics). */
struct det_max {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct det_min {
  __device__ __forceinline__ float operator()(float a, float b) const { return fminf(a, b); }
};

template <typename V, typename Op> __device__ __forceinline__ V det_warp_reduce(V v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* Every thread of the block calls this (blockDim.x a multiple of 32, at
 * most 1024) and gets the result. */
template <typename V, typename Op> __device__ __forceinline__ V det_block_reduce(V v, Op op, V identity) {
  __shared__ V det_partial[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = det_warp_reduce(v, op);
  __syncthreads(); /* an earlier call may still be reading det_partial */
  if (lane == 0) det_partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? det_partial[lane] : identity;
  return det_warp_reduce(v, op);
}

/* A warp (WARP) or the whole block reduces. */
template <bool WARP, typename V, typename Op> __device__ __forceinline__ V det_group_reduce(V v, Op op, V identity) {
  if constexpr (WARP) return det_warp_reduce(v, op);
  else return det_block_reduce(v, op, identity);
}

#endif
