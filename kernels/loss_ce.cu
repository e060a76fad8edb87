/*
 * loss_ce.cu: CUDA half of dq_cross_entropy (engine/loss_ce.c), a plain
 * three-kernel version: count the non-ignored rows, then one block per row
 * computes logsumexp, the row's loss share and its gradient, then one block
 * sums the row losses in a fixed order (deterministic, no atomics). Nothing
 * synchronizes with the host: the loss stays on the device.
 * A label outside [0, V) counts as ignored here (a check would need a
 * device-to-host copy).
 */
#include "common.cuh"
#include "../engine/loss_ce.h"

__device__ __forceinline__ int64_t ce_label(const void *labels, int is64, int64_t r) {
  return is64 ? ((const int64_t *)labels)[r] : (int64_t)((const int32_t *)labels)[r];
}

__device__ __forceinline__ bool ce_valid(int64_t y, int64_t ignore_index, int64_t V) {
  return y != ignore_index && y >= 0 && y < V;
}

__global__ void ce_count_kernel(float *count, const void *labels, int is64, int64_t rows, int64_t ignore_index,
                                int64_t V) {
  float c = 0.0f;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) c += ce_valid(ce_label(labels, is64, r), ignore_index, V);
  c = dq_block_reduce(c, dq_op_sum(), 0.0f);
  if (threadIdx.x == 0) *count = c;
}

template <typename T>
__global__ void ce_row_kernel(float *row_loss, T *dlogits, const T *logits, const void *labels, int is64,
                              const float *count, int64_t V, int64_t ignore_index, float grad_scale, int accumulate) {
  int64_t r = blockIdx.x;
  const T *x = logits + r * V;
  T *g = dlogits ? dlogits + r * V : NULL;
  int64_t y = ce_label(labels, is64, r);
  if (!ce_valid(y, ignore_index, V)) {
    if (threadIdx.x == 0) row_loss[r] = 0.0f;
    if (g && !accumulate)
      for (int64_t j = threadIdx.x; j < V; j += blockDim.x) g[j] = dq_from_f32<T>(0.0f);
    return; /* uniform across the block */
  }
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, dq_to_f32(x[j]));
  mx = dq_block_reduce(mx, dq_op_max(), -INFINITY);
  float s = 0.0f;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) s += expf(dq_to_f32(x[j]) - mx);
  s = dq_block_reduce(s, dq_op_sum(), 0.0f);
  float lse = mx + logf(s), inv = 1.0f / *count;
  if (threadIdx.x == 0) row_loss[r] = (lse - dq_to_f32(x[y])) * inv;
  if (!g) return;
  float c = grad_scale * inv;
  for (int64_t j = threadIdx.x; j < V; j += blockDim.x) {
    float v = c * (expf(dq_to_f32(x[j]) - lse) - (j == y ? 1.0f : 0.0f));
    g[j] = dq_from_f32<T>(accumulate ? dq_to_f32(g[j]) + v : v);
  }
}

__global__ void ce_sum_kernel(float *loss, const float *row_loss, const float *count, int64_t rows) {
  float s = 0.0f;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) s += row_loss[r];
  s = dq_block_reduce(s, dq_op_sum(), 0.0f);
  if (threadIdx.x == 0) *loss = *count > 0.0f ? s : 0.0f;
}

extern "C" dq_status cuda_cross_entropy(dq_tensor *loss, dq_tensor *dlogits, const dq_tensor *logits,
                                        const dq_tensor *labels, int64_t ignore_index, float grad_scale,
                                        int accumulate) {
  const char *op = "dq_cross_entropy";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, logits->device, &stream));
  int64_t V = logits->shape[logits->ndim - 1], rows = V ? logits->numel / V : 0;
  void *scratch = NULL;
  DQ_TRY(dq_cuda_scratch(op, logits->device, sizeof(float) * (size_t)(rows + 1), &scratch));
  float *count = (float *)scratch, *row_loss = count + 1;
  int is64 = labels->dtype == DQ_I64;
  ce_count_kernel<<<1, 1024, 0, stream>>>(count, labels->data, is64, rows, ignore_index, V);
  dq_status st = dq_cuda_launched(op, "ce_count_kernel");
  if (!st && rows > 0) {
    switch (logits->dtype) {
    case DQ_F32:
      ce_row_kernel<float><<<(unsigned)rows, DQ_THREADS, 0, stream>>>(
          row_loss, dlogits ? (float *)dlogits->data : NULL, (const float *)logits->data, labels->data, is64, count,
          V, ignore_index, grad_scale, accumulate);
      break;
    case DQ_BF16:
      ce_row_kernel<dq_bf16_t><<<(unsigned)rows, DQ_THREADS, 0, stream>>>(
          row_loss, dlogits ? (dq_bf16_t *)dlogits->data : NULL, (const dq_bf16_t *)logits->data, labels->data, is64,
          count, V, ignore_index, grad_scale, accumulate);
      break;
    default:
      ce_row_kernel<dq_f16_t><<<(unsigned)rows, DQ_THREADS, 0, stream>>>(
          row_loss, dlogits ? (dq_f16_t *)dlogits->data : NULL, (const dq_f16_t *)logits->data, labels->data, is64,
          count, V, ignore_index, grad_scale, accumulate);
      break;
    }
    st = dq_cuda_launched(op, "ce_row_kernel");
  }
  if (!st) {
    ce_sum_kernel<<<1, 1024, 0, stream>>>((float *)loss->data, row_loss, count, rows);
    st = dq_cuda_launched(op, "ce_sum_kernel");
  }
  dq_cuda_scratch_free(logits->device, scratch);
  return st;
}
