/*
 * quant.cu: the quantizers of dqbart_quant.h on CUDA, and the
 * straight-through backward. engine/cpu_quant.c is the reference: every
 * value below is the same sequence of f32 operations (explicit _rn
 * intrinsics keep nvcc from contracting them into FMAs), and the sums of
 * TWN and BWN are accumulated in double.
 *
 * A call carries a list of tensors ("jobs", each with its own groups); the
 * job table travels in the kernel parameters (__grid_constant__, at most
 * MAX_JOBS per launch), so quantizing every weight of a model takes a
 * handful of launches and no host-to-device copy. Two paths:
 *
 *  - fused (groups of at most FUSED_MAX_GROUP elements, e.g. rows): a warp
 *    (groups up to 1024) or a block per group computes the statistics and
 *    writes the result in one kernel; the group's re-reads hit L1/L2;
 *  - multi-pass (large groups: whole weight matrices, attention heads):
 *    blocks over (group, chunk) write partial statistics to the device
 *    workspace, one block per group combines them in chunk order, a last
 *    kernel applies the group's parameters (TWN needs two statistics
 *    rounds). Jobs are taken in sub-batches that fit in half the L2, so the
 *    passes after the first read from L2 rather than DRAM.
 *
 * Deterministic: the chunking depends only on the shapes, every combine is
 * a fixed tree or a fixed order, and no float atomics are used.
 */
#include "workspace.cuh"
#include "../engine/quant_backend.h"

#include <stdlib.h>
#include <string.h>

enum {
  MAX_JOBS = 40,
  THREADS = 256,             /* multi-pass blocks */
  GROUP_THREADS = 512,       /* fused path, block per group */
  WARP_GROUP_MAX = 1024,     /* fused path: a warp per group up to this size */
  FUSED_MAX_GROUP = 16384,   /* larger groups take the multi-pass path... */
  FUSED_MIN_GROUPS = 1024,   /* ...unless there are this many of them */
  CHUNK_ELEMS = 4096,        /* multi-pass: elements per block (at least) */
  MAX_CHUNKS = 1024,         /* multi-pass: blocks per group (at most) */
  UNROLL = 8                 /* independent loads in flight per thread */
};

enum phase { PHASE_ABSMAX, PHASE_MINMAX, PHASE_ABSSUM, PHASE_MASKED_ABSSUM };

struct quant_job {
  const void *x;
  void *out;
  int64_t groups, group_size;
  int64_t chunks;        /* multi-pass: blocks per group */
  int64_t first_block;   /* this job's first block in the launch */
  int64_t first_group;   /* this job's first slot in the per-group parameters */
  int64_t first_partial; /* multi-pass: this job's first partial slot */
};

struct quant_batch {
  int count;
  int method, bits;
  float clip;
  quant_job job[MAX_JOBS];
};

/* ---- device helpers ------------------------------------------------------------- */

/* clamp(v, -c, c) keeping NaN, as the CPU's clip_to. */
__device__ __forceinline__ float clip_to(float v, float c) { return v < -c ? -c : (v > c ? c : v); }

/* The job owning block `block` (by first_block) or group slot `slot` (by
 * first_group); jobs are few, a linear scan is cheapest. */
__device__ __forceinline__ int job_of_block(const quant_batch &b, int64_t block) {
  int j = 0;
  while (j + 1 < b.count && b.job[j + 1].first_block <= block) j++;
  return j;
}
__device__ __forceinline__ int job_of_slot(const quant_batch &b, int64_t slot) {
  int j = 0;
  while (j + 1 < b.count && b.job[j + 1].first_group <= slot) j++;
  return j;
}

/* f(i, x[i]) for i in [begin, end) stepping by `width` from begin + lane,
 * UNROLL loads issued before their uses. */
template <typename TX, typename F>
__device__ __forceinline__ void for_range(const TX *x, int64_t begin, int64_t end, int lane, int width, F f) {
  int64_t i = begin + lane;
  for (; i + (int64_t)(UNROLL - 1) * width < end; i += (int64_t)UNROLL * width) {
    float v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; u++) v[u] = dq_to_f32(x[i + (int64_t)u * width]);
#pragma unroll
    for (int u = 0; u < UNROLL; u++) f(i + (int64_t)u * width, v[u]);
  }
  for (; i < end; i += width) f(i, dq_to_f32(x[i]));
}

struct stats {
  float hi, lo;
  double sum, count;
};

/* One thread's share of a phase over its part of [begin, end). */
template <typename TX>
__device__ __forceinline__ stats thread_stats(const TX *x, int64_t begin, int64_t end, int lane, int width, int phase,
                                              float c, float threshold) {
  stats s = {phase == PHASE_ABSMAX ? 0.0f : -INFINITY, INFINITY, 0.0, 0.0};
  if (phase == PHASE_ABSMAX) {
    for_range(x, begin, end, lane, width, [&](int64_t, float v) { s.hi = fmaxf(s.hi, fabsf(clip_to(v, c))); });
  } else if (phase == PHASE_MINMAX) {
    for_range(x, begin, end, lane, width, [&](int64_t, float v) {
      float cv = clip_to(v, c);
      s.hi = fmaxf(s.hi, cv);
      s.lo = fminf(s.lo, cv);
    });
  } else if (phase == PHASE_ABSSUM) {
    for_range(x, begin, end, lane, width, [&](int64_t, float v) { s.sum += (double)fabsf(clip_to(v, c)); });
  } else {
    for_range(x, begin, end, lane, width, [&](int64_t, float v) {
      float a = fabsf(clip_to(v, c));
      if (a > threshold) {
        s.sum += (double)a;
        s.count += 1.0;
      }
    });
  }
  return s;
}

/* Combine a phase's statistics across the warp or block. */
template <bool WARP> __device__ __forceinline__ stats group_combine(stats s, int phase) {
  if (phase == PHASE_ABSMAX) {
    s.hi = det_group_reduce<WARP>(s.hi, det_max(), 0.0f);
  } else if (phase == PHASE_MINMAX) {
    s.hi = det_group_reduce<WARP>(s.hi, det_max(), -INFINITY);
    s.lo = det_group_reduce<WARP>(s.lo, det_min(), INFINITY);
  } else {
    s.sum = det_group_reduce<WARP>(s.sum, det_sum(), 0.0);
    if (phase == PHASE_MASKED_ABSSUM) s.count = det_group_reduce<WARP>(s.count, det_sum(), 0.0);
  }
  return s;
}

__device__ __forceinline__ float sym_levels(int bits) { return (float)((1 << (bits - 1)) - 1); }
__device__ __forceinline__ float asym_levels(int bits) { return (float)((1 << bits) - 1); }

/* The group parameters (a, b) of cpu_quant.c from a finished phase:
 *   SYM: (s, 0)   ASYM: (lo, r)   BWN: (alpha, 0)   TWN: (alpha, D).
 * TWN's first round gives (0, D), its second (alpha, D) from prev.y. */
__device__ __forceinline__ float2 params_from(const stats &s, int phase, int method, int bits, int64_t n,
                                              float2 prev) {
  switch (phase) {
  case PHASE_ABSMAX: return make_float2(s.hi == 0.0f ? 0.0f : __fdiv_rn(sym_levels(bits), s.hi), 0.0f);
  case PHASE_MINMAX: return make_float2(s.lo, __fadd_rn(__fsub_rn(s.hi, s.lo), 1e-8f));
  case PHASE_ABSSUM: {
    float mean = (float)(s.sum / (double)n);
    if (method == DQ_QUANT_BWN) return make_float2(mean, 0.0f);
    return make_float2(0.0f, __fmul_rn(0.7f, mean));
  }
  default: return make_float2(s.count > 0.0 ? (float)(s.sum / s.count) : 0.0f, prev.y);
  }
}

__device__ __forceinline__ float quantized(float v, int method, int bits, float clip, float2 p) {
  float cv = clip_to(v, clip);
  switch (method) {
  case DQ_QUANT_SYM:
    return p.x == 0.0f ? 0.0f : __fdiv_rn(rintf(__fmul_rn(cv, p.x)), p.x);
  case DQ_QUANT_ASYM: {
    float levels = asym_levels(bits);
    float t = __fdiv_rn(__fsub_rn(cv, p.x), p.y);
    t = __fdiv_rn(rintf(__fmul_rn(t, levels)), levels);
    return __fadd_rn(__fmul_rn(t, p.y), p.x);
  }
  case DQ_QUANT_BWN: return cv > 0.0f ? p.x : (cv < 0.0f ? -p.x : 0.0f);
  default: return cv > p.y ? p.x : (cv < -p.y ? -p.x : 0.0f); /* TWN */
  }
}

/* The phases a method runs, in order (TWN: two). */
__host__ __device__ __forceinline__ int first_phase(int method) {
  return method == DQ_QUANT_SYM ? PHASE_ABSMAX : method == DQ_QUANT_ASYM ? PHASE_MINMAX : PHASE_ABSSUM;
}

/* ---- fused path: a warp or a block per group ---------------------------------------- */

template <typename TX, typename TO, bool WARP> __global__ void quant_fused_kernel(const __grid_constant__ quant_batch b) {
  const quant_job &job = b.job[job_of_block(b, blockIdx.x)];
  int64_t per_block = WARP ? (int64_t)(blockDim.x >> 5) : 1;
  int64_t group = ((int64_t)blockIdx.x - job.first_block) * per_block + (WARP ? (threadIdx.x >> 5) : 0);
  if (group >= job.groups) return; /* whole warps (WARP) or never (a block per group) */
  int lane = WARP ? (threadIdx.x & 31) : threadIdx.x, width = WARP ? 32 : blockDim.x;
  int64_t n = job.group_size;
  const TX *x = (const TX *)job.x + group * n;
  TO *out = (TO *)job.out + group * n;
  int phase = first_phase(b.method);
  stats s = group_combine<WARP>(thread_stats(x, 0, n, lane, width, phase, b.clip, 0.0f), phase);
  float2 p = params_from(s, phase, b.method, b.bits, n, make_float2(0.0f, 0.0f));
  if (b.method == DQ_QUANT_TWN) {
    phase = PHASE_MASKED_ABSSUM;
    s = group_combine<WARP>(thread_stats(x, 0, n, lane, width, phase, b.clip, p.y), phase);
    p = params_from(s, phase, b.method, b.bits, n, p);
  }
  /* out may be x: each element is read (for_range loads first) before the
   * same thread writes it. */
  for_range(x, 0, n, lane, width,
            [&](int64_t i, float v) { out[i] = dq_from_f32<TO>(quantized(v, b.method, b.bits, b.clip, p)); });
}

/* ---- multi-pass path ------------------------------------------------------------------- */

/* The (group, chunk) of this block and the chunk's element range. */
struct chunk_pos {
  const quant_job *job;
  int64_t local, group, begin, end;
};

__device__ __forceinline__ chunk_pos chunk_of(const quant_batch &b) {
  chunk_pos c;
  c.job = &b.job[job_of_block(b, blockIdx.x)];
  c.local = (int64_t)blockIdx.x - c.job->first_block;
  c.group = c.local / c.job->chunks;
  int64_t chunk = c.local % c.job->chunks, n = c.job->group_size;
  int64_t per = (n + c.job->chunks - 1) / c.job->chunks;
  c.begin = chunk * per < n ? chunk * per : n;
  c.end = c.begin + per < n ? c.begin + per : n;
  return c;
}

template <typename TX>
__global__ void quant_partial_kernel(const __grid_constant__ quant_batch b, int phase, const float2 *params,
                                     double2 *partial) {
  chunk_pos c = chunk_of(b);
  const TX *x = (const TX *)c.job->x + c.group * c.job->group_size;
  float threshold = phase == PHASE_MASKED_ABSSUM ? params[c.job->first_group + c.group].y : 0.0f;
  stats s = group_combine<false>(thread_stats(x, c.begin, c.end, threadIdx.x, blockDim.x, phase, b.clip, threshold),
                                 phase);
  if (threadIdx.x == 0) {
    double2 r;
    if (phase == PHASE_ABSMAX || phase == PHASE_MINMAX) r = make_double2((double)s.hi, (double)s.lo);
    else r = make_double2(s.sum, s.count);
    partial[c.job->first_partial + c.local] = r;
  }
}

/* One block per group: the group's chunk partials, combined in a fixed
 * order (thread t takes chunks t, t + blockDim, ...; then the tree). */
__global__ void quant_finalize_kernel(const __grid_constant__ quant_batch b, int phase, float2 *params,
                                      const double2 *partial) {
  int64_t slot = blockIdx.x;
  const quant_job &job = b.job[job_of_slot(b, slot)];
  int64_t group = slot - job.first_group;
  const double2 *p = partial + job.first_partial + group * job.chunks;
  stats s = {phase == PHASE_ABSMAX ? 0.0f : -INFINITY, INFINITY, 0.0, 0.0};
  for (int64_t k = threadIdx.x; k < job.chunks; k += blockDim.x) {
    double2 v = p[k];
    if (phase == PHASE_ABSMAX || phase == PHASE_MINMAX) {
      s.hi = fmaxf(s.hi, (float)v.x);
      s.lo = fminf(s.lo, (float)v.y);
    } else {
      s.sum += v.x;
      s.count += v.y;
    }
  }
  s = group_combine<false>(s, phase);
  if (threadIdx.x == 0) params[slot] = params_from(s, phase, b.method, b.bits, job.group_size, params[slot]);
}

template <typename TX, typename TO>
__global__ void quant_apply_kernel(const __grid_constant__ quant_batch b, const float2 *params) {
  chunk_pos c = chunk_of(b);
  int64_t base = c.group * c.job->group_size;
  const TX *x = (const TX *)c.job->x + base;
  TO *out = (TO *)c.job->out + base;
  float2 p = params[c.job->first_group + c.group];
  for_range(x, c.begin, c.end, threadIdx.x, blockDim.x,
            [&](int64_t i, float v) { out[i] = dq_from_f32<TO>(quantized(v, b.method, b.bits, b.clip, p)); });
}

/* ---- host side ------------------------------------------------------------------------ */

static void batch_init(quant_batch &b, const dq_quant_plan &plan) {
  memset(&b, 0, sizeof b);
  b.method = plan.method;
  b.bits = plan.bits;
  b.clip = plan.clip;
}

static int64_t chunks_for(int64_t n) {
  int64_t c = (n + CHUNK_ELEMS - 1) / CHUNK_ELEMS;
  return c < 1 ? 1 : (c > MAX_CHUNKS ? MAX_CHUNKS : c);
}

/* One fused launch over b's jobs (first_block set). */
static dq_status launch_fused(const char *op, cudaStream_t stream, const quant_batch &b, bool warp, int64_t blocks,
                              int x_dtype, int out_dtype) {
  if (blocks <= 0) return DQ_OK;
  DQ_DISPATCH_FLOAT(x_dtype, TX, DQ_DISPATCH_FLOAT(out_dtype, TO, {
    if (warp)
      quant_fused_kernel<TX, TO, true><<<(unsigned)blocks, DQ_THREADS, 0, stream>>>(b);
    else
      quant_fused_kernel<TX, TO, false><<<(unsigned)blocks, GROUP_THREADS, 0, stream>>>(b);
  }));
  DQ_LAUNCHED("quant_fused_kernel");
  return DQ_OK;
}

/* The fused-path jobs of one kind (warp or block per group), in launches
 * of at most MAX_JOBS. */
static dq_status run_fused(const char *op, cudaStream_t stream, int count, dq_tensor *const *outs,
                           const dq_tensor *const *xs, const dq_quant_plan *plans, const bool *fused, bool warp) {
  quant_batch b;
  batch_init(b, plans[0]);
  int64_t blocks = 0;
  int per_block = warp ? DQ_THREADS / 32 : 1;
  for (int i = 0; i < count; i++) {
    if (!fused[i] || (plans[i].group_size <= WARP_GROUP_MAX) != warp) continue;
    if (b.count == MAX_JOBS) {
      DQ_TRY(launch_fused(op, stream, b, warp, blocks, xs[0]->dtype, outs[0]->dtype));
      batch_init(b, plans[0]);
      blocks = 0;
    }
    quant_job &j = b.job[b.count++];
    j.x = xs[i]->data;
    j.out = outs[i]->data;
    j.groups = plans[i].groups;
    j.group_size = plans[i].group_size;
    j.first_block = blocks;
    blocks += (plans[i].groups + per_block - 1) / per_block;
  }
  if (b.count) DQ_TRY(launch_fused(op, stream, b, warp, blocks, xs[0]->dtype, outs[0]->dtype));
  return DQ_OK;
}

/* Statistics rounds and the apply kernel for one sub-batch. */
static dq_status launch_multipass(const char *op, cudaStream_t stream, const quant_batch &b, int64_t blocks,
                                  int64_t groups, int x_dtype, int out_dtype, float2 *params, double2 *partial) {
  int phases[2] = {first_phase(b.method), PHASE_MASKED_ABSSUM};
  int rounds = b.method == DQ_QUANT_TWN ? 2 : 1;
  for (int r = 0; r < rounds; r++) {
    DQ_DISPATCH_FLOAT(x_dtype, TX, {
      quant_partial_kernel<TX><<<(unsigned)blocks, THREADS, 0, stream>>>(b, phases[r], params, partial);
    });
    DQ_LAUNCHED("quant_partial_kernel");
    quant_finalize_kernel<<<(unsigned)groups, THREADS, 0, stream>>>(b, phases[r], params, partial);
    DQ_LAUNCHED("quant_finalize_kernel");
  }
  DQ_DISPATCH_FLOAT(x_dtype, TX, DQ_DISPATCH_FLOAT(out_dtype, TO, {
    quant_apply_kernel<TX, TO><<<(unsigned)blocks, THREADS, 0, stream>>>(b, params);
  }));
  DQ_LAUNCHED("quant_apply_kernel");
  return DQ_OK;
}

/* The multi-pass jobs in sub-batches of at most MAX_JOBS whose inputs fit
 * in `budget` bytes together (a larger tensor goes alone). */
static dq_status run_multipass(const char *op, int device, cudaStream_t stream, int count, dq_tensor *const *outs,
                               const dq_tensor *const *xs, const dq_quant_plan *plans, const bool *fused,
                               size_t budget) {
  /* Workspace: the largest sub-batch's partials and parameters. Sizing
   * walks the same sub-batches as the launches below. */
  size_t need = 0;
  for (int pass = 0; pass < 2; pass++) {
    float2 *params = NULL;
    double2 *partial = NULL;
    if (pass == 1) {
      if (need == 0) return DQ_OK;
      void *ws;
      DQ_TRY(dq_cuda_workspace(op, device, need, &ws));
      partial = (double2 *)ws;
    }
    quant_batch b;
    batch_init(b, plans[0]);
    int64_t blocks = 0, groups = 0, partials = 0;
    size_t bytes = 0;
    auto flush = [&]() -> dq_status {
      if (!b.count) return DQ_OK;
      size_t ws = (size_t)partials * sizeof(double2) + (size_t)groups * sizeof(float2);
      if (pass == 0) {
        if (ws > need) need = ws;
      } else {
        params = (float2 *)(partial + partials);
        DQ_TRY(launch_multipass(op, stream, b, blocks, groups, xs[0]->dtype, outs[0]->dtype, params, partial));
      }
      batch_init(b, plans[0]);
      blocks = groups = partials = 0;
      bytes = 0;
      return DQ_OK;
    };
    for (int i = 0; i < count; i++) {
      if (fused[i]) continue;
      size_t x_bytes = (size_t)(xs[i]->numel * dq_dtype_size(xs[i]->dtype));
      if (b.count == MAX_JOBS || (b.count > 0 && bytes + x_bytes > budget)) DQ_TRY(flush());
      quant_job &j = b.job[b.count++];
      j.x = xs[i]->data;
      j.out = outs[i]->data;
      j.groups = plans[i].groups;
      j.group_size = plans[i].group_size;
      j.chunks = chunks_for(plans[i].group_size);
      j.first_block = blocks;
      j.first_group = groups;
      j.first_partial = partials;
      blocks += j.groups * j.chunks;
      groups += j.groups;
      partials += j.groups * j.chunks;
      bytes += x_bytes;
    }
    DQ_TRY(flush());
  }
  return DQ_OK;
}

extern "C" dq_status cuda_quantize_many(int count, dq_tensor *const *outs, const dq_tensor *const *xs,
                                        const dq_quant_plan *plans) {
  const char *op = "dq_quantize";
  int device = xs[0]->device;
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  int sms; /* unused: the paths depend on shapes only, so results do not depend on the GPU model */
  size_t l2;
  DQ_TRY(dq_cuda_device_shape(op, device, &sms, &l2));
  /* Which path each tensor takes (host scratch: a few bytes per tensor). */
  bool stack_fused[128];
  bool *fused = count <= 128 ? stack_fused : (bool *)malloc((size_t)count);
  if (!fused) return dq_fail(DQ_ERR_MEMORY, "%s: cannot allocate the plan of %d tensors", op, count);
  bool any_fused = false;
  for (int i = 0; i < count; i++) {
    /* Large groups need several blocks each unless there are enough groups
     * to fill the GPU with one block per group. */
    fused[i] = plans[i].group_size <= FUSED_MAX_GROUP || plans[i].groups >= FUSED_MIN_GROUPS;
    any_fused = any_fused || fused[i];
  }
  dq_status st = DQ_OK;
  if (any_fused) st = run_fused(op, stream, count, outs, xs, plans, fused, true);
  if (!st && any_fused) st = run_fused(op, stream, count, outs, xs, plans, fused, false);
  if (!st) st = run_multipass(op, device, stream, count, outs, xs, plans, fused, l2 / 2);
  if (fused != stack_fused) free(fused);
  return st;
}

/* ---- backward ------------------------------------------------------------------------------ */

template <typename TY, typename TX, typename TD>
__global__ void quant_backward_kernel(TD *dx, const TY *dy, const TX *x, int64_t n, float clip, int accumulate) {
  DQ_GRID_STRIDE(i, n) {
    float xv = dq_to_f32(x[i]);
    /* zero where x >= c or x <= -c, as the reference (NaN passes) */
    float g = (xv >= clip || xv <= -clip) ? 0.0f : dq_to_f32(dy[i]);
    dx[i] = dq_from_f32<TD>(accumulate ? __fadd_rn(dq_to_f32(dx[i]), g) : g);
  }
}

extern "C" dq_status cuda_quantize_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x, float clip,
                                            int accumulate) {
  const char *op = "dq_quantize_backward";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, x->device, &stream));
  int64_t n = x->numel;
  unsigned grid = dq_grid_for(n, DQ_THREADS);
  bool f32_out = dx->dtype == DQ_F32;
  DQ_DISPATCH_FLOAT(dy->dtype, TY, DQ_DISPATCH_FLOAT(x->dtype, TX, {
    if (f32_out)
      quant_backward_kernel<TY, TX, float><<<grid, DQ_THREADS, 0, stream>>>(
          (float *)dx->data, (const TY *)dy->data, (const TX *)x->data, n, clip, accumulate);
    else
      quant_backward_kernel<TY, TX, TY><<<grid, DQ_THREADS, 0, stream>>>(
          (TY *)dx->data, (const TY *)dy->data, (const TX *)x->data, n, clip, accumulate);
  }));
  DQ_LAUNCHED("quant_backward_kernel");
  return DQ_OK;
}
