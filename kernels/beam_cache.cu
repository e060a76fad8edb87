/*
 * beam_cache.cu: the self-attention cache update of a decoding step on
 * CUDA (the CPU half and the semantics: engine/model_decode_cache.c): each
 * row's cached keys or values, gathered from its parent row, with the
 * step's fresh ones appended, written as one contiguous [rows, H, t + 1,
 * Dh] buffer. One grid-stride pass in the widest unit (16, 8, 4 or 2
 * bytes) that the head size and the pointers allow.
 */
#include "common.cuh"
#include "../engine/beam_backend.h"

template <typename U>
__global__ void kv_append_kernel(U *out, const U *cache, const U *fresh, const int32_t *index, int64_t rows,
                                 int64_t heads, int64_t t, int64_t units) {
  int64_t total = rows * heads * (t + 1) * units;
  DQ_GRID_STRIDE(i, total) {
    int64_t u = i % units, line = i / units;
    int64_t j = line % (t + 1), rh = line / (t + 1);
    int64_t h = rh % heads, r = rh / heads;
    if (j < t) {
      int64_t src = index ? (int64_t)index[r] : r;
      out[i] = cache[((src * heads + h) * t + j) * units + u];
    } else {
      out[i] = fresh[(r * heads + h) * units + u];
    }
  }
}

template <typename U>
static dq_status launch(const char *op, dq_tensor *out, const dq_tensor *cache, const dq_tensor *fresh,
                        const int32_t *index, int64_t rows, int64_t heads, int64_t t, int64_t units,
                        cudaStream_t stream) {
  int64_t total = rows * heads * (t + 1) * units;
  kv_append_kernel<U><<<dq_grid_for(total, DQ_THREADS), DQ_THREADS, 0, stream>>>(
      (U *)out->data, (const U *)cache->data, (const U *)fresh->data, index, rows, heads, t, units);
  DQ_LAUNCHED("kv_append_kernel");
  return DQ_OK;
}

extern "C" dq_status cuda_kv_append(dq_tensor *out, const dq_tensor *cache, const dq_tensor *fresh,
                                    const int32_t *index, int64_t rows, int64_t heads, int64_t t, int64_t head_dim) {
  const char *op = "generate: cache update";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, out->device, &stream));
  if (out->numel == 0) return DQ_OK;
  uint64_t line = (uint64_t)(head_dim * dq_dtype_size(out->dtype));
  uint64_t all = line | (uint64_t)(uintptr_t)out->data | (uint64_t)(uintptr_t)fresh->data |
                 (t > 0 ? (uint64_t)(uintptr_t)cache->data : 0);
  if (all % 16 == 0) return launch<uint4>(op, out, cache, fresh, index, rows, heads, t, (int64_t)(line / 16), stream);
  if (all % 8 == 0) return launch<uint2>(op, out, cache, fresh, index, rows, heads, t, (int64_t)(line / 8), stream);
  if (all % 4 == 0)
    return launch<uint32_t>(op, out, cache, fresh, index, rows, heads, t, (int64_t)(line / 4), stream);
  return launch<uint16_t>(op, out, cache, fresh, index, rows, heads, t, (int64_t)(line / 2), stream);
}
