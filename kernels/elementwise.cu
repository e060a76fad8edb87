/*
 * elementwise.cu: add/sub/mul with suffix broadcasting, axpby (scale),
 * sum_leading, GELU, ReLU and dropout on CUDA.
 *
 * Values are loaded to float, computed in float and stored with RNE.
 * Products and sums the CPU computes as separate roundings are written with
 * _rn intrinsics, so nvcc does not contract them into FMAs and f32 results
 * match the CPU's exactly where the formula is the same.
 */
#include "colsum.cuh"

/* ---- binary ops with suffix broadcasting ---------------------------------------- */

/* How the operands map onto out: both full, or one of them repeating
 * (out[i] uses a[i % na] / b[i % nb]). */
enum { BCAST_NONE = 0, BCAST_B = 1, BCAST_A = 2 };

__device__ __forceinline__ float apply_binary(int op, float x, float y) {
  if (op == DQ_BIN_ADD) return __fadd_rn(x, y);
  if (op == DQ_BIN_SUB) return __fsub_rn(x, y);
  return __fmul_rn(x, y);
}

/* I: uint32_t when n fits, for cheap modulo. */
template <typename T, typename I, int MODE>
__global__ void binary_kernel(T *out, const T *a, const T *b, int64_t n, int64_t na, int64_t nb, int op) {
  DQ_GRID_STRIDE(i, n) {
    I ia = MODE == BCAST_A ? (I)((I)i % (I)na) : (I)i;
    I ib = MODE == BCAST_B ? (I)((I)i % (I)nb) : (I)i;
    out[i] = dq_from_f32<T>(apply_binary(op, dq_to_f32(a[ia]), dq_to_f32(b[ib])));
  }
}

template <typename T, int MODE>
static void launch_binary(dq_tensor *out, const dq_tensor *a, const dq_tensor *b, int op, cudaStream_t stream) {
  int64_t n = out->numel;
  unsigned grid = dq_grid_for(n, DQ_THREADS);
  if (n < ((int64_t)1 << 31))
    binary_kernel<T, uint32_t, MODE><<<grid, DQ_THREADS, 0, stream>>>((T *)out->data, (const T *)a->data,
                                                                       (const T *)b->data, n, a->numel, b->numel, op);
  else
    binary_kernel<T, int64_t, MODE><<<grid, DQ_THREADS, 0, stream>>>((T *)out->data, (const T *)a->data,
                                                                      (const T *)b->data, n, a->numel, b->numel, op);
}

dq_status cuda_binary(dq_tensor *out, const dq_tensor *a, const dq_tensor *b, int kind) {
  const char *op = kind == DQ_BIN_ADD ? "dq_add" : kind == DQ_BIN_SUB ? "dq_sub" : "dq_mul";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, out->device, &stream));
  int64_t n = out->numel;
  int mode = a->numel == n && b->numel == n ? BCAST_NONE : a->numel == n ? BCAST_B : BCAST_A;
  DQ_DISPATCH_FLOAT(a->dtype, T, {
    if (mode == BCAST_NONE) launch_binary<T, BCAST_NONE>(out, a, b, kind, stream);
    else if (mode == BCAST_B) launch_binary<T, BCAST_B>(out, a, b, kind, stream);
    else launch_binary<T, BCAST_A>(out, a, b, kind, stream);
  });
  DQ_LAUNCHED("binary_kernel");
  return DQ_OK;
}

/* ---- axpby: y = alpha * x + beta * y (x and y may differ in dtype) ---------------- */

template <typename X, typename Y>
__global__ void axpby_kernel(Y *y, const X *x, float alpha, float beta, int64_t n) {
  if (beta == 0.0f) {
    /* y may be uninitialized (dq_scale into a fresh tensor): never read it. */
    DQ_GRID_STRIDE(i, n) y[i] = dq_from_f32<Y>(__fmul_rn(alpha, dq_to_f32(x[i])));
  } else {
    DQ_GRID_STRIDE(i, n)
    y[i] = dq_from_f32<Y>(__fadd_rn(__fmul_rn(alpha, dq_to_f32(x[i])), __fmul_rn(beta, dq_to_f32(y[i]))));
  }
}

dq_status cuda_axpby(dq_tensor *y, const dq_tensor *x, float alpha, float beta) {
  const char *op = "dq_axpby";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, y->device, &stream));
  unsigned grid = dq_grid_for(y->numel, DQ_THREADS);
  DQ_DISPATCH_FLOAT(x->dtype, X, DQ_DISPATCH_FLOAT(y->dtype, Y, {
    axpby_kernel<X, Y><<<grid, DQ_THREADS, 0, stream>>>((Y *)y->data, (const X *)x->data, alpha, beta, y->numel);
  }));
  DQ_LAUNCHED("axpby_kernel");
  return DQ_OK;
}

/* ---- sum_leading: out[j] (+)= sum over r of x[r * m + j] ---------------------------- */

template <typename X> struct leading_value {
  const X *x;
  int64_t cols;
  __device__ __forceinline__ void operator()(int64_t r, int64_t c, float *v) const {
    v[0] = dq_to_f32(x[r * cols + c]);
  }
};

dq_status cuda_sum_leading(dq_tensor *out, const dq_tensor *x, int accumulate) {
  const char *op = "dq_sum_leading";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, out->device, &stream));
  int64_t cols = out->numel, rows = x->numel / cols;
  dq_colsum_plan plan = dq_colsum_plan_for(rows, cols);
  float *partial;
  DQ_TRY(dq_cuda_scratch(op, out->device, (size_t)(plan.chunks * cols) * sizeof(float), (void **)&partial));
  dq_status st = DQ_OK;
  /* X is x's storage type, O out's (x's or f32). */
  auto run = [&]() -> dq_status {
    DQ_DISPATCH_FLOAT(x->dtype, X, {
      leading_value<X> f = {(const X *)x->data, cols};
      dq_colsum_partial_kernel<1><<<dq_colsum_grid(plan), dq_colsum_block(), 0, stream>>>(f, partial, plan);
    });
    DQ_LAUNCHED("dq_colsum_partial_kernel");
    DQ_DISPATCH_FLOAT(out->dtype, O, {
      dq_colsum_finish_kernel<O><<<dq_grid_for(cols, DQ_THREADS), DQ_THREADS, 0, stream>>>((O *)out->data, partial,
                                                                                            plan, accumulate);
    });
    DQ_LAUNCHED("dq_colsum_finish_kernel");
    return DQ_OK;
  };
  st = run();
  dq_cuda_scratch_free(out->device, partial);
  return st;
}

/* ---- GELU (exact erf form) and ReLU -------------------------------------------------- */

#define DQ_INV_SQRT_2PI 0.39894228040143267794f

/* Phi(x) through normcdff (erfc based) rather than 0.5 * (1 + erff(x /
 * sqrt(2))), which cancels for negative x: the tail keeps its relative
 * accuracy, as the CPU's dq_normal_cdf does. */
struct gelu_fwd {
  __device__ __forceinline__ float operator()(float x) const { return x * normcdff(x); }
};
struct relu_fwd {
  __device__ __forceinline__ float operator()(float x) const { return x > 0.0f ? x : 0.0f; }
};
/* d/dx [x * Phi(x)] = Phi(x) + x * phi(x) */
struct gelu_bwd {
  __device__ __forceinline__ float operator()(float dy, float x) const {
    float pdf = expf(-0.5f * x * x) * DQ_INV_SQRT_2PI;
    return dy * (normcdff(x) + x * pdf);
  }
};
struct relu_bwd {
  __device__ __forceinline__ float operator()(float dy, float x) const { return x > 0.0f ? dy : 0.0f; }
};

template <typename T, typename F> __global__ void unary_kernel(T *out, const T *x, int64_t n, F f) {
  DQ_GRID_STRIDE(i, n) out[i] = dq_from_f32<T>(f(dq_to_f32(x[i])));
}

template <typename T, typename F>
__global__ void unary_backward_kernel(T *dx, const T *dy, const T *x, int64_t n, F f) {
  DQ_GRID_STRIDE(i, n) dx[i] = dq_from_f32<T>(f(dq_to_f32(dy[i]), dq_to_f32(x[i])));
}

template <typename F> static dq_status run_unary(const char *op, dq_tensor *out, const dq_tensor *x, F f) {
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, x->device, &stream));
  DQ_DISPATCH_FLOAT(x->dtype, T, {
    unary_kernel<T, F><<<dq_grid_for(x->numel, DQ_THREADS), DQ_THREADS, 0, stream>>>((T *)out->data,
                                                                                     (const T *)x->data, x->numel, f);
  });
  DQ_LAUNCHED("unary_kernel");
  return DQ_OK;
}

template <typename F>
static dq_status run_unary_backward(const char *op, dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x, F f) {
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, x->device, &stream));
  DQ_DISPATCH_FLOAT(x->dtype, T, {
    unary_backward_kernel<T, F><<<dq_grid_for(x->numel, DQ_THREADS), DQ_THREADS, 0, stream>>>(
        (T *)dx->data, (const T *)dy->data, (const T *)x->data, x->numel, f);
  });
  DQ_LAUNCHED("unary_backward_kernel");
  return DQ_OK;
}

dq_status cuda_gelu(dq_tensor *out, const dq_tensor *x) { return run_unary("dq_gelu", out, x, gelu_fwd()); }
dq_status cuda_relu(dq_tensor *out, const dq_tensor *x) { return run_unary("dq_relu", out, x, relu_fwd()); }
dq_status cuda_gelu_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x) {
  return run_unary_backward("dq_gelu_backward", dx, dy, x, gelu_bwd());
}
dq_status cuda_relu_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x) {
  return run_unary_backward("dq_relu_backward", dx, dy, x, relu_bwd());
}

/* ---- dropout ----------------------------------------------------------------------------
 * Element i is kept when dq_philox_uniform(seed, offset, i) >= p, i.e. lane
 * i % 4 of counter offset + i / 4, and scaled by 1 / (1 - p). One thread per
 * counter draws the four lanes once. The backward applies the same mask to
 * dy, so forward and backward call the same kernel. */

template <typename T>
__global__ void dropout_kernel(T *out, const T *x, int64_t n, float p, float scale, uint64_t seed, uint64_t offset) {
  int64_t groups = (n + 3) / 4;
  DQ_GRID_STRIDE(g, groups) {
    dq_u32x4 r = dq_philox(seed, offset + (uint64_t)g);
#pragma unroll
    for (int lane = 0; lane < 4; lane++) {
      int64_t i = g * 4 + lane;
      if (i < n) {
        bool keep = dq_u32_to_uniform(r.v[lane]) >= p;
        out[i] = dq_from_f32<T>(keep ? __fmul_rn(dq_to_f32(x[i]), scale) : 0.0f);
      }
    }
  }
}

dq_status cuda_dropout(dq_tensor *out, const dq_tensor *x, float p, uint64_t seed, uint64_t offset, int backward) {
  const char *op = backward ? "dq_dropout_backward" : "dq_dropout";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, x->device, &stream));
  float scale = 1.0f / (1.0f - p);
  int64_t groups = (x->numel + 3) / 4;
  DQ_DISPATCH_FLOAT(x->dtype, T, {
    dropout_kernel<T><<<dq_grid_for(groups, DQ_THREADS), DQ_THREADS, 0, stream>>>(
        (T *)out->data, (const T *)x->data, x->numel, p, scale, seed, offset);
  });
  DQ_LAUNCHED("dropout_kernel");
  return DQ_OK;
}
