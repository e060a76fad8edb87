/*
 * ops.c: every core op's argument checks, once, then dispatch to the CPU
 * (engine/cpu_ files) or CUDA (kernels/) implementation. A check failure
 * names the op and describes the tensors at fault.
 */
#include "backend.h"
#include "../kernels/kernels.h"

#include <math.h>
#include <string.h>

/* Dispatch one backend call by the device of `t`. */
#define DISPATCH(t, call)                          \
  do {                                             \
    if (dq_on_cuda(t)) DQ_CUDA_CALL(cuda_##call);  \
    return cpu_##call;                             \
  } while (0)

#define TRY(expr)                   \
  do {                                \
    dq_status st_ = (expr);           \
    if (st_) return st_;              \
  } while (0)

static dq_status check_input(const char *op, const char *what, const dq_tensor *t) {
  TRY(dq_check_defined(op, what, t));
  return dq_check_compute_dtype(op, what, t);
}

/* Two compute inputs on one device with one dtype. */
static dq_status check_pair(const char *op, const char *wa, const dq_tensor *a, const char *wb, const dq_tensor *b) {
  TRY(check_input(op, wa, a));
  TRY(check_input(op, wb, b));
  TRY(dq_check_same_device(op, a, b));
  if (a->dtype != b->dtype)
    return dq_fail(DQ_ERR_DTYPE, "%s: %s is %s but %s is %s; cast one so the dtypes match", op, wa, dq_desc(a), wb,
                   dq_desc(b));
  return DQ_OK;
}

static dq_status check_same_shape(const char *op, const char *wa, const dq_tensor *a, const char *wb,
                                  const dq_tensor *b) {
  if (!dq_same_shape(a, b))
    return dq_fail(DQ_ERR_SHAPE, "%s: %s %s and %s %s must have the same shape", op, wa, dq_desc(a), wb, dq_desc(b));
  return DQ_OK;
}

/* ---- matmul -------------------------------------------------------------- */

dq_status dq_matmul(dq_tensor *out, const dq_tensor *a, const dq_tensor *b, int trans_a, int trans_b, float alpha,
                    float beta) {
  const char *op = "dq_matmul";
  TRY(check_pair(op, "a", a, "b", b));
  if (a->ndim < 2 || b->ndim < 2)
    return dq_fail(DQ_ERR_SHAPE, "%s: a %s and b %s need at least 2 dims each", op, dq_desc(a), dq_desc(b));
  int64_t m = a->shape[a->ndim - (trans_a ? 1 : 2)], k = a->shape[a->ndim - (trans_a ? 2 : 1)];
  int64_t kb = b->shape[b->ndim - (trans_b ? 1 : 2)], n = b->shape[b->ndim - (trans_b ? 2 : 1)];
  if (k != kb)
    return dq_fail(DQ_ERR_SHAPE, "%s: inner dims differ: a %s%s gives K=%lld, b %s%s gives K=%lld", op, dq_desc(a),
                   trans_a ? " (transposed)" : "", (long long)k, dq_desc(b), trans_b ? " (transposed)" : "",
                   (long long)kb);
  if (b->ndim > 2) {
    bool batch_match = b->ndim == a->ndim;
    for (int i = 0; batch_match && i < a->ndim - 2; i++) batch_match = a->shape[i] == b->shape[i];
    if (!batch_match)
      return dq_fail(DQ_ERR_SHAPE, "%s: batch dims of a %s and b %s differ (b must be 2-d or have a's batch dims)", op,
                     dq_desc(a), dq_desc(b));
  }
  int64_t shape[DQ_MAX_DIMS];
  memcpy(shape, a->shape, sizeof shape);
  shape[a->ndim - 2] = m;
  shape[a->ndim - 1] = n;
  int out_dtype = a->dtype;
  if (dq_tensor_defined(out)) {
    if (out->dtype != a->dtype && out->dtype != DQ_F32)
      return dq_fail(DQ_ERR_DTYPE, "%s: out is %s; expected %s or f32 for inputs of %s", op, dq_desc(out),
                     dq_dtype_name(a->dtype), dq_dtype_name(a->dtype));
    out_dtype = out->dtype;
  } else if (beta != 0.0f) {
    return dq_fail(DQ_ERR_ARGUMENT, "%s: beta = %g adds to out, but out is not allocated", op, (double)beta);
  }
  TRY(dq_prepare_out(op, out, a->ndim, shape, out_dtype, a->device));
  if (out->numel == 0) return DQ_OK;
  DISPATCH(a, matmul(out, a, b, trans_a, trans_b, alpha, beta));
}

/* ---- elementwise ------------------------------------------------------------ */

/* The smaller operand (leading 1s dropped) must match the larger's trailing
 * dims; returns the larger in *big. */
static dq_status check_suffix_broadcast(const char *op, const dq_tensor *a, const dq_tensor *b, const dq_tensor **big) {
  const dq_tensor *large = a->numel >= b->numel ? a : b, *small = large == a ? b : a;
  int first = 0;
  while (first < small->ndim && small->shape[first] == 1 && small->ndim - first > 0) first++;
  int rest = small->ndim - first;
  bool ok = rest <= large->ndim;
  for (int i = 0; ok && i < rest; i++) ok = small->shape[first + i] == large->shape[large->ndim - rest + i];
  if (!ok || (small->numel == 0 && large->numel != 0))
    return dq_fail(DQ_ERR_SHAPE,
                   "%s: cannot broadcast %s with %s (the smaller shape must equal the trailing dims of the larger)", op,
                   dq_desc(a), dq_desc(b));
  *big = large;
  return DQ_OK;
}

static dq_status binary(const char *op, dq_tensor *out, const dq_tensor *a, const dq_tensor *b, int kind) {
  TRY(check_pair(op, "a", a, "b", b));
  const dq_tensor *big;
  TRY(check_suffix_broadcast(op, a, b, &big));
  TRY(dq_prepare_out(op, out, big->ndim, big->shape, a->dtype, a->device));
  if (out->numel == 0) return DQ_OK;
  DISPATCH(a, binary(out, a, b, kind));
}

dq_status dq_add(dq_tensor *out, const dq_tensor *a, const dq_tensor *b) { return binary("dq_add", out, a, b, DQ_BIN_ADD); }
dq_status dq_sub(dq_tensor *out, const dq_tensor *a, const dq_tensor *b) { return binary("dq_sub", out, a, b, DQ_BIN_SUB); }
dq_status dq_mul(dq_tensor *out, const dq_tensor *a, const dq_tensor *b) { return binary("dq_mul", out, a, b, DQ_BIN_MUL); }

dq_status dq_scale(dq_tensor *out, const dq_tensor *x, float alpha) {
  const char *op = "dq_scale";
  TRY(check_input(op, "x", x));
  TRY(dq_prepare_like(op, out, x));
  if (out->numel == 0) return DQ_OK;
  /* out = alpha * x + 0 * out, written without reading out when it is fresh. */
  DISPATCH(x, axpby(out, x, alpha, 0.0f));
}

dq_status dq_axpby(dq_tensor *y, const dq_tensor *x, float alpha, float beta) {
  const char *op = "dq_axpby";
  TRY(check_input(op, "x", x));
  TRY(dq_check_defined(op, "y", y));
  TRY(dq_check_compute_dtype(op, "y", y));
  TRY(dq_check_same_device(op, x, y));
  TRY(check_same_shape(op, "y", y, "x", x));
  if (y->numel == 0) return DQ_OK;
  DISPATCH(x, axpby(y, x, alpha, beta));
}

dq_status dq_sum_leading(dq_tensor *out, const dq_tensor *x, int accumulate) {
  const char *op = "dq_sum_leading";
  TRY(check_input(op, "x", x));
  if (!dq_tensor_defined(out))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: out must be allocated with the trailing shape to sum into (x is %s)", op,
                   dq_desc(x));
  TRY(dq_check_compute_dtype(op, "out", out));
  TRY(dq_check_same_device(op, out, x));
  const dq_tensor *big;
  if (check_suffix_broadcast(op, x, out, &big) || big != x)
    return dq_fail(DQ_ERR_SHAPE, "%s: out %s must equal the trailing dims of x %s", op, dq_desc(out), dq_desc(x));
  if (out->dtype != x->dtype && out->dtype != DQ_F32)
    return dq_fail(DQ_ERR_DTYPE, "%s: out is %s; expected %s or f32", op, dq_desc(out), dq_dtype_name(x->dtype));
  if (out->numel == 0) return DQ_OK;
  DISPATCH(x, sum_leading(out, x, accumulate));
}

/* ---- activations ------------------------------------------------------------ */

static dq_status unary_checks(const char *op, dq_tensor *out, const dq_tensor *x) {
  TRY(check_input(op, "x", x));
  return dq_prepare_like(op, out, x);
}

static dq_status unary_backward_checks(const char *op, dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x) {
  TRY(check_pair(op, "dy", dy, "x", x));
  TRY(check_same_shape(op, "dy", dy, "x", x));
  return dq_prepare_like(op, dx, x);
}

dq_status dq_gelu(dq_tensor *out, const dq_tensor *x) {
  TRY(unary_checks("dq_gelu", out, x));
  if (x->numel == 0) return DQ_OK;
  DISPATCH(x, gelu(out, x));
}

dq_status dq_gelu_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x) {
  TRY(unary_backward_checks("dq_gelu_backward", dx, dy, x));
  if (x->numel == 0) return DQ_OK;
  DISPATCH(x, gelu_backward(dx, dy, x));
}

dq_status dq_relu(dq_tensor *out, const dq_tensor *x) {
  TRY(unary_checks("dq_relu", out, x));
  if (x->numel == 0) return DQ_OK;
  DISPATCH(x, relu(out, x));
}

dq_status dq_relu_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x) {
  TRY(unary_backward_checks("dq_relu_backward", dx, dy, x));
  if (x->numel == 0) return DQ_OK;
  DISPATCH(x, relu_backward(dx, dy, x));
}

/* ---- layernorm ------------------------------------------------------------- */

static dq_status check_norm_param(const char *op, const char *what, const dq_tensor *p, const dq_tensor *x) {
  TRY(check_input(op, what, p));
  TRY(dq_check_same_device(op, p, x));
  if (p->ndim != 1 || p->shape[0] != dq_cols(x))
    return dq_fail(DQ_ERR_SHAPE, "%s: %s is %s; expected [%lld] for the last dim of x %s", op, what, dq_desc(p),
                   (long long)dq_cols(x), dq_desc(x));
  return DQ_OK;
}

/* mean/rstd: f32 with x's shape minus its last dim. */
static dq_status prepare_row_stats(const char *op, dq_tensor *stat, const dq_tensor *x) {
  return dq_prepare_out(op, stat, x->ndim - 1, x->shape, DQ_F32, x->device);
}

dq_status dq_layernorm(dq_tensor *out, dq_tensor *mean, dq_tensor *rstd, const dq_tensor *x, const dq_tensor *weight,
                       const dq_tensor *bias, float eps) {
  const char *op = "dq_layernorm";
  TRY(check_input(op, "x", x));
  if (x->ndim < 1) return dq_fail(DQ_ERR_SHAPE, "%s: x %s needs at least one dim", op, dq_desc(x));
  TRY(check_norm_param(op, "weight", weight, x));
  TRY(check_norm_param(op, "bias", bias, x));
  if (!(eps > 0.0f)) return dq_fail(DQ_ERR_ARGUMENT, "%s: eps is %g; expected a positive value", op, (double)eps);
  if ((mean == NULL) != (rstd == NULL))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: give both mean and rstd (to save for the backward) or neither", op);
  TRY(dq_prepare_like(op, out, x));
  if (mean) {
    TRY(prepare_row_stats(op, mean, x));
    TRY(prepare_row_stats(op, rstd, x));
  }
  if (x->numel == 0) return DQ_OK;
  DISPATCH(x, layernorm(out, mean, rstd, x, weight, bias, eps));
}

static dq_status check_param_grad(const char *op, const char *what, dq_tensor *g, const dq_tensor *weight,
                                  int accumulate) {
  if (!g) return DQ_OK;
  if (accumulate && !dq_tensor_defined(g))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: accumulate is set but %s is not allocated", op, what);
  return dq_prepare_like(op, g, weight);
}

dq_status dq_layernorm_backward(dq_tensor *dx, dq_tensor *dweight, dq_tensor *dbias, const dq_tensor *dy,
                                const dq_tensor *x, const dq_tensor *weight, const dq_tensor *mean,
                                const dq_tensor *rstd, int accumulate) {
  const char *op = "dq_layernorm_backward";
  TRY(check_pair(op, "dy", dy, "x", x));
  TRY(check_same_shape(op, "dy", dy, "x", x));
  if (x->ndim < 1) return dq_fail(DQ_ERR_SHAPE, "%s: x %s needs at least one dim", op, dq_desc(x));
  TRY(check_norm_param(op, "weight", weight, x));
  const dq_tensor *stats[2] = {mean, rstd};
  const char *names[2] = {"mean", "rstd"};
  for (int i = 0; i < 2; i++) {
    TRY(dq_check_defined(op, names[i], stats[i]));
    if (stats[i]->dtype != DQ_F32 || stats[i]->device != x->device || stats[i]->numel != dq_rows(x))
      return dq_fail(DQ_ERR_SHAPE, "%s: %s is %s; expected f32 with one value per row of x %s (the forward's)", op,
                     names[i], dq_desc(stats[i]), dq_desc(x));
  }
  TRY(dq_prepare_like(op, dx, x));
  TRY(check_param_grad(op, "dweight", dweight, weight, accumulate));
  TRY(check_param_grad(op, "dbias", dbias, weight, accumulate));
  if (x->numel == 0) return DQ_OK;
  DISPATCH(x, layernorm_backward(dx, dweight, dbias, dy, x, weight, mean, rstd, accumulate));
}

/* ---- softmax ---------------------------------------------------------------- */

dq_status dq_softmax(dq_tensor *out, const dq_tensor *x, const dq_tensor *mask, float scale) {
  const char *op = "dq_softmax";
  TRY(check_input(op, "x", x));
  if (x->ndim < 1) return dq_fail(DQ_ERR_SHAPE, "%s: x %s needs at least one dim", op, dq_desc(x));
  dq_bcast_plan plan = {.ndim = x->ndim};
  if (mask) {
    TRY(check_input(op, "mask", mask));
    TRY(dq_check_same_device(op, mask, x));
    bool ok = mask->ndim == x->ndim;
    for (int i = 0; ok && i < x->ndim; i++) ok = mask->shape[i] == x->shape[i] || mask->shape[i] == 1;
    if (!ok)
      return dq_fail(DQ_ERR_SHAPE, "%s: mask %s does not broadcast to x %s (same ndim; each dim equal or 1)", op,
                     dq_desc(mask), dq_desc(x));
    int64_t stride = 1;
    for (int i = x->ndim - 1; i >= 0; i--) {
      plan.shape[i] = x->shape[i];
      plan.strides[i] = mask->shape[i] == 1 ? 0 : stride;
      stride *= mask->shape[i];
    }
  }
  TRY(dq_prepare_like(op, out, x));
  if (x->numel == 0) return DQ_OK;
  DISPATCH(x, softmax(out, x, mask, mask ? &plan : NULL, scale));
}

dq_status dq_softmax_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *y, float scale) {
  const char *op = "dq_softmax_backward";
  TRY(check_pair(op, "dy", dy, "y", y));
  TRY(check_same_shape(op, "dy", dy, "y", y));
  if (y->ndim < 1) return dq_fail(DQ_ERR_SHAPE, "%s: y %s needs at least one dim", op, dq_desc(y));
  TRY(dq_prepare_like(op, dx, y));
  if (y->numel == 0) return DQ_OK;
  DISPATCH(y, softmax_backward(dx, dy, y, scale));
}

/* ---- dropout ---------------------------------------------------------------- */

static dq_status check_probability(const char *op, float p) {
  if (!(p >= 0.0f && p < 1.0f))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: dropout probability is %g; expected 0 <= p < 1", op, (double)p);
  return DQ_OK;
}

dq_status dq_dropout(dq_tensor *out, const dq_tensor *x, float p, uint64_t seed, uint64_t offset) {
  const char *op = "dq_dropout";
  TRY(check_probability(op, p));
  TRY(unary_checks(op, out, x));
  if (x->numel == 0) return DQ_OK;
  DISPATCH(x, dropout(out, x, p, seed, offset, 0));
}

dq_status dq_dropout_backward(dq_tensor *dx, const dq_tensor *dy, float p, uint64_t seed, uint64_t offset) {
  const char *op = "dq_dropout_backward";
  TRY(check_probability(op, p));
  TRY(unary_checks(op, dx, dy));
  if (dy->numel == 0) return DQ_OK;
  DISPATCH(dy, dropout(dx, dy, p, seed, offset, 1));
}

/* ---- embedding -------------------------------------------------------------- */

static dq_status check_ids(const char *op, const dq_tensor *ids, const dq_tensor *weight) {
  TRY(dq_check_defined(op, "ids", ids));
  if (ids->dtype != DQ_I32 && ids->dtype != DQ_I64)
    return dq_fail(DQ_ERR_DTYPE, "%s: ids is %s; expected i32 or i64", op, dq_desc(ids));
  TRY(dq_check_same_device(op, ids, weight));
  if (ids->ndim >= DQ_MAX_DIMS)
    return dq_fail(DQ_ERR_SHAPE, "%s: ids %s has too many dims (at most %d)", op, dq_desc(ids), DQ_MAX_DIMS - 1);
  return DQ_OK;
}

static void embedding_shape(const dq_tensor *ids, int64_t dim, int64_t *shape) {
  memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
  shape[ids->ndim] = dim;
}

dq_status dq_embedding(dq_tensor *out, const dq_tensor *weight, const dq_tensor *ids) {
  const char *op = "dq_embedding";
  TRY(check_input(op, "weight", weight));
  if (weight->ndim != 2) return dq_fail(DQ_ERR_SHAPE, "%s: weight %s must be 2-d [rows, dim]", op, dq_desc(weight));
  TRY(check_ids(op, ids, weight));
  int64_t shape[DQ_MAX_DIMS];
  embedding_shape(ids, weight->shape[1], shape);
  TRY(dq_prepare_out(op, out, ids->ndim + 1, shape, weight->dtype, weight->device));
  if (out->numel == 0) return DQ_OK;
  DISPATCH(weight, embedding(out, weight, ids));
}

dq_status dq_embedding_backward(dq_tensor *dweight, const dq_tensor *dout, const dq_tensor *ids) {
  const char *op = "dq_embedding_backward";
  TRY(check_input(op, "dweight", dweight));
  if (dweight->ndim != 2)
    return dq_fail(DQ_ERR_SHAPE, "%s: dweight %s must be 2-d [rows, dim]", op, dq_desc(dweight));
  TRY(check_input(op, "dout", dout));
  TRY(dq_check_same_device(op, dout, dweight));
  TRY(check_ids(op, ids, dweight));
  int64_t shape[DQ_MAX_DIMS];
  embedding_shape(ids, dweight->shape[1], shape);
  if (dout->ndim != ids->ndim + 1 || memcmp(dout->shape, shape, sizeof(int64_t) * (size_t)dout->ndim) != 0)
    return dq_fail(DQ_ERR_SHAPE, "%s: dout is %s; expected %s for ids %s", op, dq_desc(dout),
                   dq_shape_str(ids->ndim + 1, shape), dq_desc(ids));
  if (dout->numel == 0) return DQ_OK;
  DISPATCH(dweight, embedding_backward(dweight, dout, ids));
}

/* ---- reductions --------------------------------------------------------------- */

static dq_status check_reduce_op(const char *op, int kind) {
  if (kind < DQ_REDUCE_SUM || kind > DQ_REDUCE_ABSMAX)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: reduction %d is not one of sum (0), mean (1), max (2), absmax (3)", op, kind);
  return DQ_OK;
}

/* The shape of a reduction's result: a scalar, or x without its last dim. */
static int reduced_shape(const dq_tensor *x, int rows, int64_t *shape) {
  if (!rows) return 0;
  memcpy(shape, x->shape, sizeof(int64_t) * (size_t)(x->ndim - 1));
  return x->ndim - 1;
}

static dq_status reduce(const char *op, dq_tensor *out, const dq_tensor *x, int kind, int rows) {
  TRY(check_reduce_op(op, kind));
  TRY(check_input(op, "x", x));
  if (rows && x->ndim < 1) return dq_fail(DQ_ERR_SHAPE, "%s: x %s has no last dim to reduce", op, dq_desc(x));
  if ((kind == DQ_REDUCE_MAX || kind == DQ_REDUCE_ABSMAX) && (rows ? dq_cols(x) : x->numel) == 0)
    return dq_fail(DQ_ERR_SHAPE, "%s: the maximum of an empty set is undefined (x %s)", op, dq_desc(x));
  int64_t shape[DQ_MAX_DIMS];
  int ndim = reduced_shape(x, rows, shape);
  TRY(dq_prepare_out(op, out, ndim, shape, DQ_F32, x->device));
  if (out->numel == 0) return DQ_OK;
  DISPATCH(x, reduce(out, x, kind, rows));
}

dq_status dq_reduce_all(dq_tensor *out, const dq_tensor *x, int op) { return reduce("dq_reduce_all", out, x, op, 0); }
dq_status dq_reduce_rows(dq_tensor *out, const dq_tensor *x, int op) { return reduce("dq_reduce_rows", out, x, op, 1); }

dq_status dq_reduce_backward(dq_tensor *dx, const dq_tensor *dout, const dq_tensor *x, const dq_tensor *out, int kind,
                             int rows) {
  const char *op = "dq_reduce_backward";
  TRY(check_reduce_op(op, kind));
  TRY(check_input(op, "x", x));
  TRY(check_input(op, "dout", dout));
  TRY(dq_check_same_device(op, dout, x));
  if (rows && x->ndim < 1) return dq_fail(DQ_ERR_SHAPE, "%s: x %s has no last dim", op, dq_desc(x));
  int64_t shape[DQ_MAX_DIMS];
  int ndim = reduced_shape(x, rows, shape);
  if (dout->numel != dq_shape_numel(ndim, shape))
    return dq_fail(DQ_ERR_SHAPE, "%s: dout is %s; expected %s for x %s", op, dq_desc(dout), dq_shape_str(ndim, shape),
                   dq_desc(x));
  if (kind == DQ_REDUCE_MAX || kind == DQ_REDUCE_ABSMAX) {
    TRY(check_input(op, "out", out));
    if (out->numel != dout->numel || out->device != x->device)
      return dq_fail(DQ_ERR_SHAPE, "%s: out is %s; expected the forward's result %s", op, dq_desc(out),
                     dq_shape_str(ndim, shape));
  }
  TRY(dq_prepare_like(op, dx, x));
  if (x->numel == 0) return DQ_OK;
  DISPATCH(x, reduce_backward(dx, dout, x, out, kind, rows));
}

#undef DISPATCH
#undef TRY
