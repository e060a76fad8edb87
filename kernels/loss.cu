/*
 * loss.cu: the fused losses of dqbart_loss.h on CUDA. engine/cpu_loss.c is
 * the reference; the formulas are the same f32 operations (explicit _rn
 * intrinsics where nvcc would contract into FMAs), except that the row
 * losses work in base 2 (one FFMA and one ex2.approx per exponential, see
 * online_lse), which agrees with the CPU to about 1e-6.
 *
 * Row losses (cross-entropy, KL): a count kernel (rows that count), then a
 * block per row. When the row fits in shared memory, its 16-byte vectors
 * are copied there at once with cp.async (the whole row in flight, no
 * registers held: the only DRAM read), laid out with the row's own 16-byte
 * alignment; pass A reads the copy (the unaligned head and tail from
 * global memory) for the log-sum-exp (and the sum, for label smoothing);
 * pass C writes the gradient, 16 bytes per store, from the copy. Rows that
 * do not fit are read from global memory by both passes. Then one block
 * sums the row losses in row order. A block of 512 threads with at most 64
 * registers each lets two rows share an SM, one reading memory while the
 * other computes (KL with both rows cached: one block of 1024 threads).
 * Inside a row, indices are 32-bit and the cross-entropy's label term is
 * applied to its one element after pass C: per-element integer work cost
 * as much as the memory traffic. MSE: a grid fixed by the element count
 * takes chunks of 8 elements (one 16-byte load of each input where the
 * tensors are aligned, element by element where not, in the same order
 * either way), writes the gradient and per-block sums; one block combines
 * them in order. No float
 * atomics, no host synchronization: the value stays on the device, and the
 * same inputs give the same bits every run.
 *
 * A cross-entropy label outside [0, V) that is not the ignore index cannot
 * be reported without a host round trip; its row's loss is NaN, which makes
 * the value NaN (its gradient row is left as for an ignored row).
 */
#include "workspace.cuh"
#include "vec16.cuh"
#include "../engine/loss_backend.h"

enum {
  ROW_THREADS = 512,        /* long rows (vocabularies); two blocks per SM */
  KL_ONE_BLOCK_THREADS = 1024, /* KL with both long rows cached: one block per SM */
  SHORT_ROW_THREADS = 256,  /* rows shorter than SHORT_ROW */
  SHORT_ROW = 4096,
  SUM_THREADS = 1024,       /* count and finalize kernels */
  MSE_THREADS = 256,
  MSE_ELEMS_PER_BLOCK = 8192,
  MSE_MAX_BLOCKS = 1024,
  VEC_UNROLL = 4,  /* 16-byte loads in flight per thread in passes A and C */
  MSE_CHUNK = 8,   /* elements per MSE chunk: 16 bytes of bf16 */
  MSE_UNROLL = 2   /* chunks in flight per thread */
};

/* ---- shared helpers ---------------------------------------------------------------- */

__device__ __forceinline__ int64_t label_at(const void *labels, int is64, int64_t r) {
  return is64 ? ((const int64_t *)labels)[r] : (int64_t)((const int32_t *)labels)[r];
}

/* count[0] = rows whose label is not ignore_index (all rows without labels). */
__global__ void loss_count_kernel(float *count, const void *labels, int is64, int64_t rows, int64_t ignore_index) {
  float c = 0.0f;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x)
    c += (!labels || label_at(labels, is64, r) != ignore_index) ? 1.0f : 0.0f;
  c = det_block_reduce(c, det_sum(), 0.0f);
  if (threadIdx.x == 0) count[0] = c;
}

/* value (=|+=) scale * sum(row_loss) / count, 0 when nothing counts. */
__global__ void loss_rows_finish_kernel(float *value, const float *row_loss, const float *count, int64_t rows,
                                        double scale, int add) {
  double s = 0.0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) s += (double)row_loss[r];
  s = det_block_reduce(s, det_sum(), 0.0);
  if (threadIdx.x == 0) {
    float c = count[0];
    float v = c > 0.0f ? (float)(scale * s / (double)c) : 0.0f;
    value[0] = add ? __fadd_rn(value[0], v) : v;
  }
}

/* A row of an input: read from global memory, or from the shared-memory
 * copy pass A made of it. */
template <typename T> struct row_src {
  const T *g;
  T *cache; /* NULL: not cached */
  __device__ __forceinline__ float at(int j) const { return dq_to_f32(cache ? cache[j] : g[j]); }
};

/* Where a row of n elements starting at g is cached in shared memory at
 * smem (room for n + dq_vec16<T>::N elements): shifted so that cache + j is
 * 16-byte aligned exactly where g + j is, and pass A copies whole vectors. */
template <typename T> __device__ __forceinline__ T *row_cache_at(T *smem, const T *g) {
  constexpr int N = dq_vec16<T>::N;
  return smem + (N - dq_vec16_head(g)) % N;
}

/* Asynchronous copies (cp.async, 16 bytes each, no registers held) of the
 * whole 16-byte vectors of a row into its cache as pass A would lay them
 * out; the unaligned head and tail elements are left to pass A. One commit
 * group per row. */
template <typename T> __device__ __forceinline__ void row_prefetch(T *cache, const T *g, int n) {
  constexpr int N = dq_vec16<T>::N;
  int head = dq_vec16_head(g);
  if (head > n) head = n;
  int nvec = (n - head) / N;
  for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
    unsigned dst = (unsigned)__cvta_generic_to_shared(cache + head + i * N);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(g + head + i * N) : "memory");
  }
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

/* Wait until at most `pending` of this thread's commit groups are in flight. */
template <int pending> __device__ __forceinline__ void prefetch_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
}

/* Pass A: the row from global memory (the unaligned head and the tail
 * element by element, the rest 16 bytes per load), copied into the cache
 * when there is one; PREFETCHED: row_prefetch has put the vectors in the
 * cache already, and only the head and tail come from global memory.
 * f(j0, v, k) gets k consecutive values v[0..k) from j0 (k = 1, or a whole
 * vector), over the thread's share of the row. */
template <bool PREFETCHED = false, typename T, typename F>
__device__ __forceinline__ void row_first_pass(const row_src<T> &src, int n, F f) {
  constexpr int N = dq_vec16<T>::N;
  int w = blockDim.x;
  int head = dq_vec16_head(src.g);
  if (head > n) head = n;
  auto single = [&](int j) {
    T x = src.g[j];
    if (src.cache) src.cache[j] = x;
    float v = dq_to_f32(x);
    f(j, &v, 1);
  };
  for (int j = threadIdx.x; j < head; j += w) single(j);
  int nvec = (n - head) / N;
  const uint4 *gv = reinterpret_cast<const uint4 *>(src.g + head);
  uint4 *cv = src.cache ? reinterpret_cast<uint4 *>(src.cache + head) : NULL;
  auto vector = [&](int i, const uint4 &raw) {
    if (cv && !PREFETCHED) cv[i] = raw;
    float v[N];
    dq_vec16_unpack(raw, v, T());
    f(head + i * N, v, N);
  };
  int i = threadIdx.x;
  for (; i + (VEC_UNROLL - 1) * w < nvec; i += VEC_UNROLL * w) {
    uint4 raw[VEC_UNROLL];
#pragma unroll
    for (int u = 0; u < VEC_UNROLL; u++) raw[u] = PREFETCHED ? cv[i + u * w] : gv[i + u * w];
#pragma unroll
    for (int u = 0; u < VEC_UNROLL; u++) vector(i + u * w, raw[u]);
  }
  for (; i < nvec; i += w) vector(i, PREFETCHED ? cv[i] : gv[i]);
  for (int j = head + nvec * N + threadIdx.x; j < n; j += w) single(j);
}

/* 2^x by one MUFU.EX2, subnormal results flushed to 0 (which changes
 * nothing a softmax sums); exp2f and __expf without -ftz add a range test
 * and two multiplies around it, and the row losses are bound by these
 * instructions as much as by memory. */
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

#define DQ_LOG2E 1.4426950408889634f
#define DQ_LN2 0.6931471805599453

/* log-sum-exp of scale * v over the values v a thread sees, in base 2:
 * c = scale * log2(e), the running maximum m of v and s = sum 2^(c (v - m)),
 * each term one FFMA and one fast_exp2; s is rescaled only when a group of
 * values raises the maximum (rare after the first groups). Then block-wide:
 * the maximum over threads, each thread's sum rescaled to it and summed in
 * a fixed order, so the result is the same bits every run. Relative error
 * about 1e-6, far inside what the loss tolerates. */
struct online_lse {
  float c, m = -INFINITY, s = 0.0f;
  __device__ __forceinline__ explicit online_lse(float scale) : c(scale * DQ_LOG2E) {}
  __device__ __forceinline__ void add(const float *v, int k) {
    float mk = m;
    for (int e = 0; e < k; e++) mk = fmaxf(mk, v[e]);
    if (mk == -INFINITY) return; /* nothing but -inf so far: contributes 0 */
    if (mk > m) {
      s = m == -INFINITY ? 0.0f : __fmul_rn(s, fast_exp2(__fmul_rn(c, __fsub_rn(m, mk))));
      m = mk;
    }
    float mc = -__fmul_rn(m, c);
    for (int e = 0; e < k; e++) s = __fadd_rn(s, fast_exp2(fmaf(v[e], c, mc)));
  }
  /* log2 of the row's sum of 2^(c v) (the natural log-sum-exp of scale * v
   * times log2(e)); every thread of the block calls it. */
  __device__ __forceinline__ float block_lse2() const {
    float mx = det_block_reduce(m, det_max(), -INFINITY);
    float mine = m == -INFINITY ? 0.0f : __fmul_rn(s, fast_exp2(__fmul_rn(c, __fsub_rn(m, mx))));
    float se = det_block_reduce(mine, det_sum(), 0.0f);
    return __fadd_rn(__fmul_rn(mx, c), log2f(se));
  }
};

/* Pass C: g[j] (= or +=) fn(j, a_j, b_j) over the row, a and b read from
 * their caches (16 bytes per load where a cache is laid out like g) or
 * global memory; g written 16 bytes at a time between its unaligned head
 * and tail, the old values of U vectors loaded together first when adding.
 * b may be a (one input). */
template <int U, typename T, typename TG, typename F>
__device__ __forceinline__ void row_grad_pass(const row_src<T> &a, const row_src<T> &b, TG *g, int n, int add,
                                              F fn) {
  constexpr int N = dq_vec16<TG>::N;
  int w = blockDim.x;
  int head = dq_vec16_head(g);
  if (head > n) head = n;
  for (int j = threadIdx.x; j < head; j += w) {
    float v = fn(j, a.at(j), b.at(j));
    g[j] = dq_from_f32<TG>(add ? __fadd_rn(dq_to_f32(g[j]), v) : v);
  }
  /* A cache whose vectors line up with g's: read N elements at once. */
  auto lined_up = [&](const row_src<T> &x) {
    return x.cache && sizeof(T) == sizeof(TG) && dq_vec16_head(x.g) == head;
  };
  bool va = lined_up(a), vb = lined_up(b), two = a.g != b.g;
  auto load = [&](const row_src<T> &x, bool vec, int j0, float *v) {
    if (vec) {
      dq_load_vec<N>(x.cache + j0, v);
    } else {
#pragma unroll
      for (int e = 0; e < N; e++) v[e] = x.at(j0 + e);
    }
  };
  int nvec = (n - head) / N;
  TG *gb = g + head;
  auto chunk = [&](int i, const float *old) {
    int j0 = head + i * N;
    float av[N], bv[N], out[N];
    load(a, va, j0, av);
    if (two) load(b, vb, j0, bv);
#pragma unroll
    for (int e = 0; e < N; e++) {
      float v = fn(j0 + e, av[e], two ? bv[e] : av[e]);
      out[e] = add ? __fadd_rn(old[e], v) : v;
    }
    dq_store_vec<N>(gb + i * N, out);
  };
  int i = threadIdx.x;
  for (; i + (U - 1) * w < nvec; i += U * w) {
    float old[U][N];
    if (add) {
#pragma unroll
      for (int u = 0; u < U; u++) dq_load_vec<N>(gb + (i + u * w) * N, old[u]);
    }
#pragma unroll
    for (int u = 0; u < U; u++) chunk(i + u * w, old[u]);
  }
  for (; i < nvec; i += w) {
    float old[N];
    if (add) dq_load_vec<N>(gb + i * N, old);
    chunk(i, old);
  }
  for (int j = head + nvec * N + threadIdx.x; j < n; j += w) {
    float v = fn(j, a.at(j), b.at(j));
    g[j] = dq_from_f32<TG>(add ? __fadd_rn(dq_to_f32(g[j]), v) : v);
  }
}

extern __shared__ __align__(16) unsigned char loss_smem[];

/* ---- cross-entropy -------------------------------------------------------------------- */

template <typename T, typename TG>
__global__ void __launch_bounds__(ROW_THREADS, 2)
    ce_row_kernel(float *row_loss, TG *grad, const T *logits, const void *labels, int is64, const float *count,
                  int V, int64_t ignore_index, float eps, float weight, int add, int cache) {
  int64_t r = blockIdx.x;
  const T *row = logits + r * V;
  row_src<T> x = {row, cache ? row_cache_at((T *)loss_smem, row) : NULL};
  TG *g = grad ? grad + r * V : NULL;
  int64_t y = label_at(labels, is64, r);
  if (y == ignore_index || y < 0 || y >= V) { /* uniform across the block */
    if (threadIdx.x == 0) row_loss[r] = y == ignore_index ? 0.0f : NAN;
    if (g && !add)
      for (int j = threadIdx.x; j < V; j += blockDim.x) g[j] = dq_from_f32<TG>(0.0f);
    return;
  }
  online_lse acc(1.0f);
  float sx = 0.0f;
  auto fold = [&](int, const float *v, int k) {
    acc.add(v, k);
    if (eps > 0.0f)
      for (int e = 0; e < k; e++) sx = __fadd_rn(sx, v[e]);
  };
  if (x.cache) {
    row_prefetch(x.cache, row, V);
    prefetch_wait<0>();
    __syncthreads();
    row_first_pass<true>(x, V, fold);
  } else {
    row_first_pass(x, V, fold);
  }
  float lse2 = acc.block_lse2(); /* its reductions also complete the cache */
  if (eps > 0.0f) sx = det_block_reduce(sx, det_sum(), 0.0f);
  float on = 1.0f - eps, off = __fdiv_rn(eps, (float)V);
  /* Thread 0 reads the label's logit and old gradient before pass C
   * writes the gradient (which may be the logits themselves). */
  float target = 0.0f, old_y = 0.0f;
  if (threadIdx.x == 0) {
    target = x.at((int)y);
    if (g && add) old_y = dq_to_f32(g[y]);
    double loss = (double)lse2 * DQ_LN2 - (double)on * (double)target;
    if (eps > 0.0f) loss -= (double)off * (double)sx;
    row_loss[r] = (float)loss;
  }
  if (!g) return;
  float k = __fdiv_rn(weight, count[0]), koff = __fmul_rn(k, off);
  __syncthreads();
  /* k (p_j - off) everywhere, one FFMA after the exponential; the label's
   * own element is rewritten after the pass, so no index test per element */
  row_grad_pass<VEC_UNROLL>(x, x, g, V, add,
                            [&](int, float v, float) { return fmaf(k, fast_exp2(fmaf(v, DQ_LOG2E, -lse2)), -koff); });
  __syncthreads();
  if (threadIdx.x == 0) {
    float p = fast_exp2(fmaf(target, DQ_LOG2E, -lse2));
    float v = __fmul_rn(k, __fsub_rn(__fsub_rn(p, off), on));
    g[y] = dq_from_f32<TG>(add ? __fadd_rn(old_y, v) : v);
  }
}

/* ---- KL with temperature ---------------------------------------------------------------- */

/* THREADS x MINB: 512 x 2 (two rows per SM), or 1024 x 1 when the two
 * cached rows fill the shared memory of an SM. */
template <int THREADS, int MINB, typename T, typename TG>
__global__ void __launch_bounds__(THREADS, MINB)
    kl_row_kernel(float *row_loss, TG *grad, const T *student, const T *teacher, const void *labels, int is64,
                  const float *count, int V, int64_t ignore_index, float inv_t, float temperature, float weight,
                  int add, int cache_s, int cache_t) {
  int64_t r = blockIdx.x;
  /* Each cached row gets V + N elements (row_cache_at's shift), rounded up
   * to whole 16-byte vectors so the second copy starts aligned too. */
  constexpr int N = dq_vec16<T>::N;
  T *cache = (T *)loss_smem;
  int slot = (V + 2 * N - 1) / N * N;
  row_src<T> t = {teacher + r * V, cache_t ? row_cache_at(cache, teacher + r * V) : NULL};
  row_src<T> s = {student + r * V, cache_s ? row_cache_at(cache + (cache_t ? slot : 0), student + r * V) : NULL};
  TG *g = grad ? grad + r * V : NULL;
  if (labels && label_at(labels, is64, r) == ignore_index) {
    if (threadIdx.x == 0) row_loss[r] = 0.0f;
    if (g && !add)
      for (int j = threadIdx.x; j < V; j += blockDim.x) g[j] = dq_from_f32<TG>(0.0f);
    return;
  }
  online_lse acc_s(inv_t), acc_t(inv_t);
  auto fold_s = [&](int, const float *v, int k) { acc_s.add(v, k); };
  auto fold_t = [&](int, const float *v, int k) { acc_t.add(v, k); };
  if (s.cache) {
    /* the cached rows copied in asynchronously; an uncached teacher row
     * read meanwhile */
    row_prefetch(s.cache, s.g, V);
    if (t.cache) row_prefetch(t.cache, t.g, V);
    else row_first_pass(t, V, fold_t);
    prefetch_wait<0>();
    __syncthreads();
    row_first_pass<true>(s, V, fold_s);
    if (t.cache) row_first_pass<true>(t, V, fold_t);
  } else {
    row_first_pass(s, V, fold_s);
    row_first_pass(t, V, fold_t);
  }
  /* the reductions also complete the caches */
  float lse2_s = acc_s.block_lse2(), lse2_t = acc_t.block_lse2(), c = acc_s.c;
  float k = g ? __fdiv_rn(__fmul_rn(weight, temperature), count[0]) : 0.0f;
  float kl = 0.0f; /* in base 2: times ln 2 at the end */
  /* log2 p and log2 q, then p (log2 p - log2 q) and the gradient k (q - p) */
  auto term = [&](float tv, float sv) {
    float lp = fmaf(tv, c, -lse2_t), lq = fmaf(sv, c, -lse2_s);
    float p = fast_exp2(lp);
    kl = fmaf(p, p > 0.0f ? __fsub_rn(lp, lq) : 0.0f, kl); /* p = 0 adds 0, even where lp = -inf */
    return __fmul_rn(k, __fsub_rn(fast_exp2(lq), p));
  };
  if (g) {
    /* two inputs: half the vectors in flight, to stay within 64 registers */
    row_grad_pass<VEC_UNROLL / 2>(t, s, g, V, add, [&](int, float tv, float sv) { return term(tv, sv); });
  } else {
    for (int j = threadIdx.x; j < V; j += blockDim.x) term(t.at(j), s.at(j));
  }
  kl = det_block_reduce(kl, det_sum(), 0.0f);
  if (threadIdx.x == 0) row_loss[r] = (float)((double)kl * DQ_LN2);
}

/* ---- MSE ------------------------------------------------------------------------------------ */

/* The arithmetic of a chunk's first m elements: acc gains the squared
 * differences in element order; gv becomes the gradient k * d, or gains it. */
__device__ __forceinline__ void mse_apply(float &acc, const float *sv, const float *tv, float *gv, int m, float k,
                                          int add) {
#pragma unroll
  for (int e = 0; e < MSE_CHUNK; e++) {
    if (e < m) {
      float d = __fsub_rn(sv[e], tv[e]);
      acc = __fadd_rn(acc, __fmul_rn(d, d));
      float g = __fmul_rn(k, d);
      gv[e] = add ? __fadd_rn(gv[e], g) : g;
    }
  }
}

/* The MSE of chunk c (elements c*8 .. c*8+7, fewer in the last): acc
 * gains the squared differences in element order, the gradient k * d is
 * written or added. VEC: 16-byte accesses (every pointer aligned, a full
 * chunk); the arithmetic is the same either way. */
template <bool VEC, typename T, typename TG>
__device__ __forceinline__ void mse_chunk(float &acc, TG *grad, const T *s, const T *t, int64_t c, int64_t n, float k,
                                          int add) {
  int64_t at = c * MSE_CHUNK;
  float sv[MSE_CHUNK], tv[MSE_CHUNK], gv[MSE_CHUNK];
  int m = VEC ? MSE_CHUNK : (int)min((int64_t)MSE_CHUNK, n - at);
  if (VEC) {
    dq_load_vec<MSE_CHUNK>(s + at, sv);
    dq_load_vec<MSE_CHUNK>(t + at, tv);
    if (grad && add) dq_load_vec<MSE_CHUNK>(grad + at, gv);
  } else {
#pragma unroll /* constant indices keep the arrays in registers */
    for (int e = 0; e < MSE_CHUNK; e++) {
      if (e >= m) break;
      sv[e] = dq_to_f32(s[at + e]);
      tv[e] = dq_to_f32(t[at + e]);
      if (grad && add) gv[e] = dq_to_f32(grad[at + e]);
    }
  }
  mse_apply(acc, sv, tv, gv, m, k, add);
  if (!grad) return;
  if (VEC) dq_store_vec<MSE_CHUNK>(grad + at, gv);
  else
#pragma unroll
    for (int e = 0; e < MSE_CHUNK; e++)
      if (e < m) grad[at + e] = dq_from_f32<TG>(gv[e]);
}

/* Chunks in grid-stride order, MSE_UNROLL at a time (all loads issued
 * before the arithmetic); then each block's sum. */
template <bool VEC, typename T, typename TG>
__global__ void __launch_bounds__(MSE_THREADS)
    mse_partial_kernel(float *partial, TG *grad, const T *s, const T *t, int64_t n, float k, int add) {
  float acc = 0.0f;
  int64_t full = n / MSE_CHUNK, chunks = (n + MSE_CHUNK - 1) / MSE_CHUNK;
  int64_t stride = (int64_t)gridDim.x * blockDim.x, c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (VEC) {
    for (; c + (MSE_UNROLL - 1) * stride < full; c += MSE_UNROLL * stride) {
      float sv[MSE_UNROLL][MSE_CHUNK], tv[MSE_UNROLL][MSE_CHUNK], gv[MSE_UNROLL][MSE_CHUNK];
#pragma unroll
      for (int u = 0; u < MSE_UNROLL; u++) {
        int64_t at = (c + u * stride) * MSE_CHUNK;
        dq_load_vec<MSE_CHUNK>(s + at, sv[u]);
        dq_load_vec<MSE_CHUNK>(t + at, tv[u]);
        if (grad && add) dq_load_vec<MSE_CHUNK>(grad + at, gv[u]);
      }
#pragma unroll
      for (int u = 0; u < MSE_UNROLL; u++) {
        mse_apply(acc, sv[u], tv[u], gv[u], MSE_CHUNK, k, add);
        if (grad) dq_store_vec<MSE_CHUNK>(grad + (c + u * stride) * MSE_CHUNK, gv[u]);
      }
    }
    for (; c < full; c += stride) mse_chunk<true>(acc, grad, s, t, c, n, k, add);
  }
  for (; c < chunks; c += stride) mse_chunk<false>(acc, grad, s, t, c, n, k, add);
  acc = det_block_reduce(acc, det_sum(), 0.0f);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void mse_finish_kernel(float *value, const float *partial, int blocks, double divisor, int add) {
  double s = 0.0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) s += (double)partial[b];
  s = det_block_reduce(s, det_sum(), 0.0);
  if (threadIdx.x == 0) {
    float v = (float)(s / divisor);
    value[0] = add ? __fadd_rn(value[0], v) : v;
  }
}

/* ---- host side ---------------------------------------------------------------------------------- */

/* Run `__VA_ARGS__` with T the inputs' storage type and TG the gradient's
 * (f32 or T; T when there is no gradient). */
#define LOSS_DISPATCH(in_dtype, grad_f32, ...)                                  \
  DQ_DISPATCH_FLOAT(in_dtype, T, {                                              \
    if (grad_f32) {                                                             \
      typedef float TG;                                                         \
      __VA_ARGS__;                                                              \
    } else {                                                                    \
      typedef T TG;                                                             \
      __VA_ARGS__;                                                              \
    }                                                                           \
  })

/* Shared memory for row caches: `rows_cached` copies of V elements of
 * `elem` bytes when they fit the device's opt-in limit. */
static dq_status max_dynamic_smem(const char *op, int device, size_t *bytes) {
  int v = 0;
  DQ_CUDA_TRY(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  /* Leave room for the reductions' static shared memory. */
  *bytes = v > 2048 ? (size_t)v - 2048 : 0;
  return DQ_OK;
}

template <typename K> static dq_status allow_smem(const char *op, K kernel, size_t bytes) {
  if (bytes > 48 * 1024) DQ_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  return DQ_OK;
}

static int row_threads(int64_t V) { return V >= SHORT_ROW ? ROW_THREADS : SHORT_ROW_THREADS; }

/* Workspace of a row loss: the count, then one float per row. */
static dq_status row_workspace(const char *op, int device, int64_t rows, float **count, float **row_loss) {
  void *ws;
  DQ_TRY(dq_cuda_workspace(op, device, sizeof(float) * (size_t)(rows + 4), &ws));
  *count = (float *)ws;
  *row_loss = (float *)ws + 4;
  return DQ_OK;
}

/* The row kernels index within a row in 32 bits. */
static dq_status check_row_length(const char *op, int64_t V) {
  if (V > INT32_MAX)
    return dq_fail(DQ_ERR_SHAPE, "%s: rows of %lld elements; the CUDA kernels take at most %d", op, (long long)V,
                   INT32_MAX);
  return DQ_OK;
}

extern "C" dq_status cuda_loss_cross_entropy(dq_tensor *value, dq_tensor *grad, float weight, int flags,
                                             const dq_tensor *logits, const dq_tensor *labels, int64_t ignore_index,
                                             float label_smoothing) {
  const char *op = "dq_loss_cross_entropy";
  int device = logits->device;
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  int64_t V = dq_cols(logits), rows = dq_rows(logits);
  DQ_TRY(check_row_length(op, V));
  float *count, *row_loss;
  DQ_TRY(row_workspace(op, device, rows, &count, &row_loss));
  int is64 = labels->dtype == DQ_I64, add = (flags & DQ_LOSS_ADD_GRAD) != 0;
  loss_count_kernel<<<1, SUM_THREADS, 0, stream>>>(count, labels->data, is64, rows, ignore_index);
  DQ_LAUNCHED("loss_count_kernel");
  /* V elements plus room to shift the copy into the row's alignment */
  size_t limit, cache_bytes = (size_t)(V + 16) * (size_t)dq_dtype_size(logits->dtype);
  DQ_TRY(max_dynamic_smem(op, device, &limit));
  int cache = cache_bytes <= limit;
  size_t smem = cache ? cache_bytes : 0;
  LOSS_DISPATCH(logits->dtype, grad && grad->dtype == DQ_F32 && logits->dtype != DQ_F32, {
    auto kernel = ce_row_kernel<T, TG>;
    DQ_TRY(allow_smem(op, kernel, smem));
    kernel<<<(unsigned)rows, row_threads(V), smem, stream>>>(row_loss, grad ? (TG *)grad->data : NULL,
                                                            (const T *)logits->data, labels->data, is64, count,
                                                            (int)V, ignore_index, label_smoothing, weight, add, cache);
  });
  DQ_LAUNCHED("ce_row_kernel");
  loss_rows_finish_kernel<<<1, SUM_THREADS, 0, stream>>>((float *)value->data, row_loss, count, rows, 1.0,
                                                         (flags & DQ_LOSS_ADD_VALUE) != 0);
  DQ_LAUNCHED("loss_rows_finish_kernel");
  return DQ_OK;
}

extern "C" dq_status cuda_loss_kl(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,
                                  const dq_tensor *teacher, const dq_tensor *labels, int64_t ignore_index,
                                  float temperature) {
  const char *op = "dq_loss_kl";
  int device = student->device;
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  int64_t V = dq_cols(student), rows = dq_rows(student);
  DQ_TRY(check_row_length(op, V));
  float *count, *row_loss;
  DQ_TRY(row_workspace(op, device, rows, &count, &row_loss));
  int is64 = labels && labels->dtype == DQ_I64, add = (flags & DQ_LOSS_ADD_GRAD) != 0;
  const void *label_data = labels ? labels->data : NULL;
  loss_count_kernel<<<1, SUM_THREADS, 0, stream>>>(count, label_data, is64, rows, ignore_index);
  DQ_LAUNCHED("loss_count_kernel");
  size_t limit, one = (size_t)(V + 16) * (size_t)dq_dtype_size(student->dtype); /* see cuda_loss_cross_entropy */
  DQ_TRY(max_dynamic_smem(op, device, &limit));
  /* Cache both rows when they fit (measured on an H100 at the bart-base
   * shape in bf16: 1,900 GB/s, against 1,790 caching the student only and
   * re-reading the teacher, which L2 mostly misses), else the student's,
   * else none. */
  int cache_t = 2 * one <= limit, cache_s = one <= limit;
  size_t smem = (size_t)(cache_t + cache_s) * one;
  /* Two long rows cached leave room for one block per SM: it gets 1024
   * threads (1,940 GB/s on the H100 against 1,900 with 512). */
  int one_block = cache_t && V >= SHORT_ROW;
  float inv_t = 1.0f / temperature;
  LOSS_DISPATCH(student->dtype, grad && grad->dtype == DQ_F32 && student->dtype != DQ_F32, {
    auto kernel = one_block ? kl_row_kernel<KL_ONE_BLOCK_THREADS, 1, T, TG> : kl_row_kernel<ROW_THREADS, 2, T, TG>;
    int threads = one_block ? KL_ONE_BLOCK_THREADS : row_threads(V);
    DQ_TRY(allow_smem(op, kernel, smem));
    kernel<<<(unsigned)rows, threads, smem, stream>>>(
        row_loss, grad ? (TG *)grad->data : NULL, (const T *)student->data, (const T *)teacher->data, label_data,
        is64, count, (int)V, ignore_index, inv_t, temperature, weight, add, cache_s, cache_t);
  });
  DQ_LAUNCHED("kl_row_kernel");
  double tt = (double)temperature * (double)temperature;
  loss_rows_finish_kernel<<<1, SUM_THREADS, 0, stream>>>((float *)value->data, row_loss, count, rows, tt,
                                                         (flags & DQ_LOSS_ADD_VALUE) != 0);
  DQ_LAUNCHED("loss_rows_finish_kernel");
  return DQ_OK;
}

extern "C" dq_status cuda_loss_mse(dq_tensor *value, dq_tensor *grad, float weight, int flags,
                                   const dq_tensor *student, const dq_tensor *teacher, double divisor) {
  const char *op = "dq_loss_mse";
  int device = student->device;
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  int64_t n = student->numel;
  /* The grid depends on n only, so the partial sums (and the value) do
   * too, whether the 16-byte path runs or not. */
  int64_t blocks = (n + MSE_ELEMS_PER_BLOCK - 1) / MSE_ELEMS_PER_BLOCK;
  if (blocks > MSE_MAX_BLOCKS) blocks = MSE_MAX_BLOCKS;
  if (blocks < 1) blocks = 1;
  void *ws;
  DQ_TRY(dq_cuda_workspace(op, device, sizeof(float) * (size_t)blocks, &ws));
  float *partial = (float *)ws;
  float k = (float)(2.0 * (double)weight / divisor);
  int add = (flags & DQ_LOSS_ADD_GRAD) != 0;
  LOSS_DISPATCH(student->dtype, grad && grad->dtype == DQ_F32 && student->dtype != DQ_F32, {
    TG *g = grad ? (TG *)grad->data : NULL;
    const T *sp = (const T *)student->data, *tp = (const T *)teacher->data;
    uintptr_t any = (uintptr_t)sp | (uintptr_t)tp | (uintptr_t)g;
    if ((any & 15u) == 0)
      mse_partial_kernel<true, T, TG><<<(unsigned)blocks, MSE_THREADS, 0, stream>>>(partial, g, sp, tp, n, k, add);
    else
      mse_partial_kernel<false, T, TG><<<(unsigned)blocks, MSE_THREADS, 0, stream>>>(partial, g, sp, tp, n, k, add);
  });
  DQ_LAUNCHED("mse_partial_kernel");
  mse_finish_kernel<<<1, SUM_THREADS, 0, stream>>>((float *)value->data, partial, (int)blocks, divisor,
                                                   (flags & DQ_LOSS_ADD_VALUE) != 0);
  DQ_LAUNCHED("mse_finish_kernel");
  return DQ_OK;
}
