/*
 * common.cuh: what every CUDA source of the backend shares: error helpers
 * that turn a failed CUDA call into a dq_fail message naming the op, the
 * per-device runtime (engine stream, cuBLASLt handle, scratch memory, all
 * implemented in device.cu), float storage types and launch helpers.
 *
 * Conventions of the kernels:
 *  - every host entry point starts with dq_cuda_begin(op, device, &stream),
 *    which selects the device and fetches its engine stream; all work goes
 *    to that stream, so ops run in issue order without host synchronization;
 *  - float data is stored as f32, bf16 or f16 (template parameter T), loaded
 *    to float, computed in float and stored with round-to-nearest-even;
 *  - element counts and offsets are int64_t; launches use grid-stride loops.
 */
#ifndef DQ_KERNELS_COMMON_CUH
#define DQ_KERNELS_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cublasLt.h>

#include <math.h>
#include <stdint.h>

#include "kernels.h"
#include "../engine/half.h"
#include "../engine/philox.h"

/* ---- errors ------------------------------------------------------------------ */

/* "<op>: <call> failed: <CUDA's message>" as DQ_ERR_CUDA. */
dq_status dq_cuda_fail(const char *op, const char *call, cudaError_t err);
dq_status dq_cublas_fail(const char *op, const char *call, cublasStatus_t st);

/* Return from the enclosing function with a DQ_ERR_CUDA status when a CUDA
 * runtime call fails. `op` must be in scope (the op's name). */
#define DQ_CUDA_TRY(call)                                          \
  do {                                                             \
    cudaError_t dq_err_ = (call);                                  \
    if (dq_err_ != cudaSuccess) return dq_cuda_fail(op, #call, dq_err_); \
  } while (0)

#define DQ_CUBLAS_TRY(call)                                            \
  do {                                                                 \
    cublasStatus_t dq_st_ = (call);                                    \
    if (dq_st_ != CUBLAS_STATUS_SUCCESS) return dq_cublas_fail(op, #call, dq_st_); \
  } while (0)

#define DQ_TRY(expr)             \
  do {                           \
    dq_status dq_s_ = (expr);    \
    if (dq_s_) return dq_s_;     \
  } while (0)

/* After a launch: a bad configuration shows up here at once (cheap, no
 * synchronization); faults inside kernels surface at the next sync. */
static inline dq_status dq_cuda_launched(const char *op, const char *kernel) {
  cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? DQ_OK : dq_cuda_fail(op, kernel, err);
}
#define DQ_LAUNCHED(kernel) DQ_TRY(dq_cuda_launched(op, "launching " kernel))

/* ---- per-device runtime (device.cu) ------------------------------------------ */

/* cudaSetDevice(device) and the device's engine stream (created on first
 * use, non-blocking). Every op calls this before any other CUDA call. */
dq_status dq_cuda_begin(const char *op, int device, cudaStream_t *stream);

/* The device's cuBLASLt handle and its 32 MiB workspace (created on first
 * use). Call after dq_cuda_begin. */
dq_status dq_cuda_cublaslt(const char *op, int device, cublasLtHandle_t *handle, void **workspace,
                           size_t *workspace_bytes);

/* Stream-ordered scratch memory from the device's pool: valid for work
 * queued on the engine stream after the call; dq_cuda_scratch_free queues
 * its release behind that work, so no synchronization is needed. */
dq_status dq_cuda_scratch(const char *op, int device, size_t bytes, void **ptr);
void dq_cuda_scratch_free(int device, void *ptr);

/* ---- float storage types -------------------------------------------------------- */

typedef __nv_bfloat16 dq_bf16_t;
typedef __half dq_f16_t;

__device__ __forceinline__ float dq_to_f32(float v) { return v; }
__device__ __forceinline__ float dq_to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float dq_to_f32(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T dq_from_f32(float v);
template <> __device__ __forceinline__ float dq_from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 dq_from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <> __device__ __forceinline__ __half dq_from_f32<__half>(float v) { return __float2half_rn(v); }

/* A float element of a tensor whose dtype is only known at run time (mask,
 * layernorm weight): the branch is uniform across a warp, so it is cheap
 * for the small parameter vectors it serves. */
__device__ __forceinline__ float dq_load_any(const void *base, int dtype, int64_t i) {
  if (dtype == DQ_F32) return ((const float *)base)[i];
  if (dtype == DQ_BF16) return __bfloat162float(((const __nv_bfloat16 *)base)[i]);
  return __half2float(((const __half *)base)[i]);
}

/* Run `__VA_ARGS__` with T bound to the storage type of float dtype `dt`.
 * ops.c guarantees compute tensors are float; anything else is an internal
 * error reported by the caller's `default` path. */
#define DQ_DISPATCH_FLOAT(dt, T, ...)                 \
  switch (dt) {                                       \
  case DQ_F32: { typedef float T; __VA_ARGS__; } break;          \
  case DQ_BF16: { typedef __nv_bfloat16 T; __VA_ARGS__; } break; \
  case DQ_F16: { typedef __half T; __VA_ARGS__; } break;         \
  default: return dq_fail(DQ_ERR_INTERNAL, "%s: unexpected dtype %s", op, dq_dtype_name(dt)); \
  }

/* ---- launch helpers -------------------------------------------------------------- */

enum { DQ_THREADS = 256 };

/* Blocks for a grid-stride loop over n items with `threads` per block:
 * enough to fill the GPU, few enough that each thread does some work. */
static inline unsigned dq_grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks > 65536) blocks = 65536;
  if (blocks < 1) blocks = 1;
  return (unsigned)blocks;
}

#define DQ_GRID_STRIDE(i, n) \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

/* ---- reductions inside a warp or a block ------------------------------------------
 * Butterfly (xor) shuffles: every lane ends with the same value, and the
 * order of additions is fixed, so results are deterministic run to run. */

struct dq_op_sum {
  __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};
struct dq_op_max {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
/* A maximum that is NaN once either side is (the CPU's reductions). */
struct dq_op_nanmax {
  __device__ __forceinline__ float operator()(float a, float b) const { return (b > a || b != b) && a == a ? b : a; }
};

template <typename Op> __device__ __forceinline__ float dq_warp_reduce(float v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* Every thread of the block must call this (blockDim.x a multiple of 32, at
 * most 1024); every thread gets the result. */
template <typename Op> __device__ __forceinline__ float dq_block_reduce(float v, Op op, float identity) {
  __shared__ float partial[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = dq_warp_reduce(v, op);
  __syncthreads(); /* an earlier call may still be reading `partial` */
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  v = lane < nwarps ? partial[lane] : identity;
  return dq_warp_reduce(v, op);
}

/* Row kernels come in two shapes, picked by row length: a warp per row
 * (WARP = true, DQ_THREADS / 32 rows per block) for short rows, a block per
 * row for long ones. These give the row a thread handles, the thread's
 * position in it and the number of threads sharing it. */
template <bool WARP> struct dq_row_group {
  int64_t row;
  int lane, width;
  __device__ __forceinline__ dq_row_group() {
    if constexpr (WARP) {
      row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
      lane = threadIdx.x & 31;
      width = 32;
    } else {
      row = blockIdx.x;
      lane = threadIdx.x;
      width = blockDim.x;
    }
  }
  template <typename Op> __device__ __forceinline__ float reduce(float v, Op op, float identity) const {
    if constexpr (WARP) return dq_warp_reduce(v, op);
    else return dq_block_reduce(v, op, identity);
  }
  __device__ __forceinline__ float sum(float v) const { return reduce(v, dq_op_sum(), 0.0f); }
  __device__ __forceinline__ float max(float v) const { return reduce(v, dq_op_max(), -INFINITY); }
};

/* Rows at most this long get a warp each. */
enum { DQ_WARP_ROW_MAX = 1024, DQ_BLOCK_ROW_THREADS = 512 };

static inline bool dq_row_use_warp(int64_t cols) { return cols <= DQ_WARP_ROW_MAX; }
static inline unsigned dq_row_blocks(int64_t rows, bool warp) {
  int64_t blocks = warp ? (rows + DQ_THREADS / 32 - 1) / (DQ_THREADS / 32) : rows;
  return (unsigned)(blocks > 0 ? blocks : 1); /* rows beyond `rows` exit at once */
}

#endif
