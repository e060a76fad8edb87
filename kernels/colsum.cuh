/*
 * colsum.cuh: deterministic column sums over the rows of a [rows, cols]
 * array of values, for sum_leading (bias and broadcast gradients) and the
 * layernorm weight/bias gradients. No float atomics: pass 1 sums fixed
 * chunks of rows into an f32 scratch array [NV][chunks][cols], pass 2 adds
 * the chunks in order, so the result is the same on every run.
 *
 * Pass 1 uses 32 x 8 thread blocks: 32 adjacent columns (coalesced loads)
 * times 8 row lanes that stride through the chunk; the 8 lane sums are
 * then added in lane order through shared memory.
 */
#ifndef DQ_KERNELS_COLSUM_CUH
#define DQ_KERNELS_COLSUM_CUH

#include "common.cuh"

enum { DQ_COLSUM_COLS = 32, DQ_COLSUM_LANES = 8, DQ_COLSUM_TARGET_BLOCKS = 1024 };

struct dq_colsum_plan {
  int64_t rows, cols, chunks, rows_per_chunk;
};

/* Enough chunks to give the GPU about DQ_COLSUM_TARGET_BLOCKS blocks, with
 * at least one row per lane in each chunk. */
static inline dq_colsum_plan dq_colsum_plan_for(int64_t rows, int64_t cols) {
  dq_colsum_plan p;
  p.rows = rows;
  p.cols = cols;
  int64_t col_blocks = (cols + DQ_COLSUM_COLS - 1) / DQ_COLSUM_COLS;
  int64_t want = (DQ_COLSUM_TARGET_BLOCKS + col_blocks - 1) / col_blocks;
  int64_t most = (rows + DQ_COLSUM_LANES - 1) / DQ_COLSUM_LANES;
  if (want > most) want = most;
  if (want < 1) want = 1;
  p.rows_per_chunk = rows > 0 ? (rows + want - 1) / want : 1;
  p.chunks = rows > 0 ? (rows + p.rows_per_chunk - 1) / p.rows_per_chunk : 1;
  return p;
}

/* F: `__device__ void operator()(int64_t row, int64_t col, float *v) const`
 * writes the NV values of element (row, col). */
template <int NV, typename F>
__global__ void dq_colsum_partial_kernel(F f, float *partial, dq_colsum_plan p) {
  __shared__ float lanes[NV][DQ_COLSUM_LANES][DQ_COLSUM_COLS];
  int tx = threadIdx.x, ty = threadIdx.y;
  int64_t col = (int64_t)blockIdx.x * DQ_COLSUM_COLS + tx;
  int64_t chunk = blockIdx.y;
  int64_t first = chunk * p.rows_per_chunk;
  int64_t last = first + p.rows_per_chunk < p.rows ? first + p.rows_per_chunk : p.rows;
  float acc[NV];
#pragma unroll
  for (int v = 0; v < NV; v++) acc[v] = 0.0f;
  if (col < p.cols) {
    for (int64_t r = first + ty; r < last; r += DQ_COLSUM_LANES) {
      float val[NV];
      f(r, col, val);
#pragma unroll
      for (int v = 0; v < NV; v++) acc[v] += val[v];
    }
  }
#pragma unroll
  for (int v = 0; v < NV; v++) lanes[v][ty][tx] = acc[v];
  __syncthreads();
  if (ty == 0 && col < p.cols) {
#pragma unroll
    for (int v = 0; v < NV; v++) {
      float s = lanes[v][0][tx];
      for (int l = 1; l < DQ_COLSUM_LANES; l++) s += lanes[v][l][tx];
      partial[((int64_t)v * p.chunks + chunk) * p.cols + col] = s;
    }
  }
}

/* out[col] = (accumulate ? out[col] : 0) + sum over chunks, in chunk order. */
template <typename O>
__global__ void dq_colsum_finish_kernel(O *out, const float *partial, dq_colsum_plan p, int accumulate) {
  DQ_GRID_STRIDE(col, p.cols) {
    float s = 0.0f;
    for (int64_t c = 0; c < p.chunks; c++) s += partial[c * p.cols + col];
    if (accumulate) s = dq_to_f32(out[col]) + s;
    out[col] = dq_from_f32<O>(s);
  }
}

static inline dim3 dq_colsum_grid(const dq_colsum_plan &p) {
  return dim3((unsigned)((p.cols + DQ_COLSUM_COLS - 1) / DQ_COLSUM_COLS), (unsigned)p.chunks);
}

static inline dim3 dq_colsum_block() { return dim3(DQ_COLSUM_COLS, DQ_COLSUM_LANES); }

#endif
