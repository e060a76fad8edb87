/*
 * beam_select.cu: a generation step's token selection on CUDA (semantics:
 * engine/beam_backend.h; the CPU half: engine/beam_select.c), so that only
 * the k chosen candidates per source travel to the host.
 *
 *  1. beam_row_kernel, one block per row: the row's max and sum of
 *     exponentials (log-softmax, over the raw logits as torch takes them),
 *     then the banned tokens set to -inf in place, then every thread keeps
 *     the k best of its strided share of the row's processed scores (plus
 *     the row's beam score) in a sorted local list, and k rounds of a
 *     block-wide argmax over the lists' heads give the row's k best,
 *     sorted, ties to the lower index;
 *  2. beam_merge_kernel, one thread per source: the k best of its beams'
 *     sorted lists (a k-way merge).
 * NaN scores count as -inf here (the CPU skips them); nothing else
 * differs, so CPU and CUDA select the same candidates from the same logits.
 */
#include "common.cuh"
#include "../engine/beam_backend.h"

namespace {

struct cand {
  float v;
  int32_t i;
};

/* a before b: higher score, or the same score and a lower index. */
__device__ __forceinline__ bool before(float av, int32_t ai, float bv, int32_t bi) {
  return av > bv || (av == bv && ai < bi);
}

__device__ __forceinline__ cand warp_best(cand c) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float v = __shfl_xor_sync(0xffffffffu, c.v, o);
    int32_t i = __shfl_xor_sync(0xffffffffu, c.i, o);
    if (before(v, i, c.v, c.i)) c = cand{v, i};
  }
  return c;
}

/* Every thread gets the block's best candidate. */
__device__ __forceinline__ cand block_best(cand c) {
  __shared__ cand partial[32];
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  c = warp_best(c);
  __syncthreads();
  if (lane == 0) partial[warp] = c;
  __syncthreads();
  c = lane < nwarps ? partial[lane] : cand{-INFINITY, INT32_MAX};
  return warp_best(c);
}

enum { ROW_THREADS = 256 };

template <int KMAX>
__global__ void __launch_bounds__(ROW_THREADS) beam_row_kernel(float *logits, beam_select_args a) {
  int64_t r = blockIdx.x, V = a.vocab;
  float *x = logits + r * V;
  int k = a.k;
  float add = a.row_scores ? a.row_scores[r] : 0.0f;
  float mx = 0.0f, logsum = 0.0f;
  if (a.forced < 0 && a.log_softmax) {
    float m = -INFINITY;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) m = fmaxf(m, x[v]);
    m = dq_block_reduce(m, dq_op_max(), -INFINITY);
    float s = 0.0f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) s += expf(x[v] - m);
    s = dq_block_reduce(s, dq_op_sum(), 0.0f);
    if (m == -INFINITY) m = 0.0f, s = 1.0f; /* a row of -inf stays -inf */
    mx = m;
    logsum = logf(s);
  }
  if (a.forced < 0) {
    __syncthreads(); /* every read of pass 1 is done before bans overwrite */
    if (a.ban_start)
      for (int32_t i = a.ban_start[r] + threadIdx.x; i < a.ban_start[r + 1]; i += blockDim.x) x[a.ban_tokens[i]] = -INFINITY;
    if (a.ban_eos >= 0 && threadIdx.x == 0) x[a.ban_eos] = -INFINITY;
    __syncthreads();
  }
  float lv[KMAX];
  int32_t li[KMAX];
  int have = 0;
  int32_t base = (int32_t)((r % a.beams) * V);
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    float s;
    if (a.forced >= 0) s = v == a.forced ? 0.0f : -INFINITY;
    else s = a.log_softmax ? (x[v] - mx) - logsum : x[v];
    s += add;
    if (s != s) s = -INFINITY;
    int32_t id = base + (int32_t)v;
    if (have == k && !before(s, id, lv[k - 1], li[k - 1])) continue;
    int pos = have < k ? have : k - 1;
    while (pos > 0 && before(s, id, lv[pos - 1], li[pos - 1])) {
      lv[pos] = lv[pos - 1];
      li[pos] = li[pos - 1];
      pos--;
    }
    lv[pos] = s;
    li[pos] = id;
    if (have < k) have++;
  }
  int head = 0;
  for (int j = 0; j < k; j++) {
    cand mine = head < have ? cand{lv[head], li[head]} : cand{-INFINITY, INT32_MAX};
    cand best = block_best(mine);
    if (head < have && best.i == mine.i) head++;
    if (threadIdx.x == 0) {
      /* A row shorter than k (k > V) pads its list with (-inf, INT32_MAX),
       * which sorts after every real candidate: the merge never reaches
       * them, since a source has beams * V >= k real ones. */
      a.cand_scores[r * k + j] = best.v;
      a.cand_index[r * k + j] = best.i;
    }
  }
}

__global__ void beam_merge_kernel(beam_select_args a) {
  int64_t b = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= a.batch) return;
  int k = a.k;
  int nb = (int)a.beams;
  int heads[BEAM_MAX_K / 2];
  for (int q = 0; q < nb; q++) heads[q] = 0;
  for (int j = 0; j < k; j++) {
    int best = -1;
    float bv = 0.0f;
    int32_t bi = 0;
    for (int q = 0; q < nb; q++) {
      if (heads[q] >= k) continue;
      int64_t row = b * nb + q;
      float v = a.cand_scores[row * k + heads[q]];
      int32_t i = a.cand_index[row * k + heads[q]];
      if (best < 0 || before(v, i, bv, bi)) {
        best = q;
        bv = v;
        bi = i;
      }
    }
    heads[best]++;
    a.out_scores[b * k + j] = bv;
    a.out_index[b * k + j] = bi;
  }
}

template <int KMAX>
dq_status launch_rows(const char *op, dq_tensor *logits, const beam_select_args *a, cudaStream_t stream) {
  int64_t rows = a->batch * a->beams;
  beam_row_kernel<KMAX><<<(unsigned)rows, ROW_THREADS, 0, stream>>>((float *)logits->data, *a);
  DQ_LAUNCHED("beam_row_kernel");
  return DQ_OK;
}

} // namespace

extern "C" dq_status cuda_beam_select(dq_tensor *logits, const beam_select_args *a) {
  const char *op = "generate: token selection";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, logits->device, &stream));
  if (logits->dtype != DQ_F32)
    return dq_fail(DQ_ERR_INTERNAL, "%s: logits are %s; expected f32", op, dq_desc(logits));
  if (a->k < 1 || a->k > BEAM_MAX_K || a->beams > BEAM_MAX_K / 2)
    return dq_fail(DQ_ERR_INTERNAL, "%s: k = %d, beams = %lld out of range", op, a->k, (long long)a->beams);
  if (a->k <= 1) DQ_TRY(launch_rows<1>(op, logits, a, stream));
  else if (a->k <= 8) DQ_TRY(launch_rows<8>(op, logits, a, stream));
  else if (a->k <= 16) DQ_TRY(launch_rows<16>(op, logits, a, stream));
  else if (a->k <= 32) DQ_TRY(launch_rows<32>(op, logits, a, stream));
  else if (a->k <= 64) DQ_TRY(launch_rows<64>(op, logits, a, stream));
  else DQ_TRY(launch_rows<128>(op, logits, a, stream));
  beam_merge_kernel<<<dq_grid_for(a->batch, 128), 128, 0, stream>>>(*a);
  DQ_LAUNCHED("beam_merge_kernel");
  return DQ_OK;
}
