/*
 * embedding.cu: embedding lookup and its backward on CUDA.
 *
 * Forward: one block per token copies the weight row in the widest unit
 * (16, 8, 4 or 2 bytes) that the row size and both pointers allow. An id
 * outside [0, rows) cannot be reported without synchronizing the host, so
 * its output row is written as zeros instead (the CPU fails with an error;
 * callers validate token ids when they build batches).
 *
 * Backward, deterministic without float atomics: the token indices are
 * sorted by id with a stable radix sort (CUB), so equal ids form runs in
 * token order; the first position of each run adds its tokens' dout rows,
 * in token order, to dweight[id] (starting from dweight's value, the order
 * the CPU adds in). Out-of-range ids are sorted into a sentinel run and
 * skipped. Cost: one sort of the token count plus one pass over dout; a
 * very frequent id (padding) is summed by one block sequentially.
 */
#include "common.cuh"

#include <cub/device/device_radix_sort.cuh>

/* ---- forward ------------------------------------------------------------------- */

template <typename U, typename ID>
__global__ void embedding_kernel(U *out, const U *weight, const ID *ids, int64_t tokens, int64_t rows,
                                 int64_t units) {
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    int64_t id = (int64_t)ids[t];
    bool valid = id >= 0 && id < rows;
    U *dst = out + t * units;
    const U *src = weight + (valid ? id : 0) * units;
    for (int64_t u = threadIdx.x; u < units; u += blockDim.x) {
      U zero{};
      dst[u] = valid ? src[u] : zero;
    }
  }
}

enum { EMBED_THREADS = 128 };

template <typename U>
static dq_status launch_embedding(const char *op, dq_tensor *out, const dq_tensor *weight, const dq_tensor *ids,
                                  int64_t unit_bytes, cudaStream_t stream) {
  int64_t tokens = ids->numel, rows = weight->shape[0];
  int64_t units = weight->shape[1] * dq_dtype_size(weight->dtype) / unit_bytes;
  unsigned grid = (unsigned)(tokens < (1 << 20) ? tokens : (1 << 20));
  if (ids->dtype == DQ_I32)
    embedding_kernel<U, int32_t><<<grid, EMBED_THREADS, 0, stream>>>((U *)out->data, (const U *)weight->data,
                                                                     (const int32_t *)ids->data, tokens, rows, units);
  else
    embedding_kernel<U, int64_t><<<grid, EMBED_THREADS, 0, stream>>>((U *)out->data, (const U *)weight->data,
                                                                     (const int64_t *)ids->data, tokens, rows, units);
  DQ_LAUNCHED("embedding_kernel");
  return DQ_OK;
}

dq_status cuda_embedding(dq_tensor *out, const dq_tensor *weight, const dq_tensor *ids) {
  const char *op = "dq_embedding";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, weight->device, &stream));
  uint64_t row_bytes = (uint64_t)(weight->shape[1] * dq_dtype_size(weight->dtype));
  uint64_t both = row_bytes | (uint64_t)(uintptr_t)out->data | (uint64_t)(uintptr_t)weight->data;
  if (both % 16 == 0) return launch_embedding<uint4>(op, out, weight, ids, 16, stream);
  if (both % 8 == 0) return launch_embedding<uint2>(op, out, weight, ids, 8, stream);
  if (both % 4 == 0) return launch_embedding<uint32_t>(op, out, weight, ids, 4, stream);
  return launch_embedding<uint16_t>(op, out, weight, ids, 2, stream);
}

/* ---- backward -------------------------------------------------------------------- */

/* key = the id, or `rows` (sorts last, skipped) when out of range; value =
 * the token index, so the stable sort keeps each id's tokens in order. */
template <typename ID>
__global__ void embedding_keys_kernel(uint32_t *keys, uint32_t *tokens_of, const ID *ids, int64_t n, int64_t rows) {
  DQ_GRID_STRIDE(t, n) {
    int64_t id = (int64_t)ids[t];
    keys[t] = (uint32_t)(id >= 0 && id < rows ? id : rows);
    tokens_of[t] = (uint32_t)t;
  }
}

/* Block p handles sorted position p when it starts a run of one id. The
 * run's end is found by binary search (keys are sorted), so the summing
 * loop has known bounds and its loads can be in flight together. */
template <typename W, typename G>
__global__ void embedding_backward_kernel(W *dweight, const G *dout, const uint32_t *keys, const uint32_t *tokens_of,
                                          int64_t n, int64_t rows, int64_t dim) {
  for (int64_t p = blockIdx.x; p < n; p += gridDim.x) {
    uint32_t id = keys[p];
    if (id >= rows || (p > 0 && keys[p - 1] == id)) continue;
    int64_t lo = p + 1, hi = n; /* first position after p with another key */
    while (lo < hi) {
      int64_t mid = lo + (hi - lo) / 2;
      if (keys[mid] == id) lo = mid + 1;
      else hi = mid;
    }
    int64_t end = lo;
    W *row = dweight + (int64_t)id * dim;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
      float acc = dq_to_f32(row[c]);
#pragma unroll 4
      for (int64_t q = p; q < end; q++) acc += dq_to_f32(dout[(int64_t)tokens_of[q] * dim + c]);
      row[c] = dq_from_f32<W>(acc);
    }
  }
}

static size_t round_up_256(size_t x) { return (x + 255) & ~(size_t)255; }

dq_status cuda_embedding_backward(dq_tensor *dweight, const dq_tensor *dout, const dq_tensor *ids) {
  const char *op = "dq_embedding_backward";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, dweight->device, &stream));
  int64_t n = ids->numel, rows = dweight->shape[0], dim = dweight->shape[1];
  if (rows == 0 || n == 0) return DQ_OK; /* every id is out of range, or no tokens */
  if (n > (int64_t)INT32_MAX || rows >= (int64_t)UINT32_MAX)
    return dq_fail(DQ_ERR_SHAPE, "%s: %lld tokens and %lld rows exceed the CUDA backward's 32-bit sort keys "
                   "(ids %s, dweight %s)", op, (long long)n, (long long)rows, dq_desc(ids), dq_desc(dweight));
  int end_bit = 0; /* keys are 0..rows, so only these bits need sorting */
  while (end_bit < 32 && ((uint64_t)1 << end_bit) <= (uint64_t)rows) end_bit++;

  size_t sort_bytes = 0;
  DQ_CUDA_TRY(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (const uint32_t *)nullptr, (uint32_t *)nullptr,
                                              (const uint32_t *)nullptr, (uint32_t *)nullptr, (int)n, 0, end_bit,
                                              stream));
  size_t array_bytes = round_up_256((size_t)n * sizeof(uint32_t));
  char *scratch;
  DQ_TRY(dq_cuda_scratch(op, dweight->device, 4 * array_bytes + sort_bytes, (void **)&scratch));
  uint32_t *keys_in = (uint32_t *)scratch, *keys = (uint32_t *)(scratch + array_bytes);
  uint32_t *tokens_in = (uint32_t *)(scratch + 2 * array_bytes), *tokens_of = (uint32_t *)(scratch + 3 * array_bytes);
  void *sort_tmp = scratch + 4 * array_bytes;

  auto run = [&]() -> dq_status {
    unsigned grid = dq_grid_for(n, DQ_THREADS);
    if (ids->dtype == DQ_I32)
      embedding_keys_kernel<int32_t><<<grid, DQ_THREADS, 0, stream>>>(keys_in, tokens_in, (const int32_t *)ids->data, n,
                                                                      rows);
    else
      embedding_keys_kernel<int64_t><<<grid, DQ_THREADS, 0, stream>>>(keys_in, tokens_in, (const int64_t *)ids->data, n,
                                                                      rows);
    DQ_LAUNCHED("embedding_keys_kernel");
    size_t tmp_bytes = sort_bytes;
    DQ_CUDA_TRY(cub::DeviceRadixSort::SortPairs(sort_tmp, tmp_bytes, keys_in, keys, tokens_in, tokens_of, (int)n, 0,
                                                end_bit, stream));
    unsigned blocks = (unsigned)(n < (1 << 20) ? n : (1 << 20));
    DQ_DISPATCH_FLOAT(dweight->dtype, W, DQ_DISPATCH_FLOAT(dout->dtype, G, {
      embedding_backward_kernel<W, G><<<blocks, EMBED_THREADS, 0, stream>>>((W *)dweight->data, (const G *)dout->data,
                                                                           keys, tokens_of, n, rows, dim);
    }));
    DQ_LAUNCHED("embedding_backward_kernel");
    return DQ_OK;
  };
  dq_status st = run();
  dq_cuda_scratch_free(dweight->device, scratch);
  return st;
}
