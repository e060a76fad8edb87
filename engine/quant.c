/*
 * quant.c: argument checks of the quantizer ops (dqbart_quant.h), once,
 * then dispatch to engine/cpu_quant.c or kernels/quant.cu. The spec is
 * resolved here into per-tensor plans (AUTO decided, groups laid out), so
 * the backends see only contiguous groups of equal size.
 */
#include "quant_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TRY(expr)           \
  do {                      \
    dq_status st_ = (expr); \
    if (st_) return st_;    \
  } while (0)

/* Host-side plan arrays up to this many tensors live on the stack. */
enum { STACK_TENSORS = 128 };

static const char *method_name(int method) {
  switch (method) {
  case DQ_QUANT_AUTO: return "auto";
  case DQ_QUANT_SYM: return "sym";
  case DQ_QUANT_TWN: return "twn";
  case DQ_QUANT_BWN: return "bwn";
  case DQ_QUANT_ASYM: return "asym";
  default: return "unknown";
  }
}

/* The method a spec runs (AUTO decided by bits) after checking bits, clip
 * and granularity. */
static dq_status resolve_spec(const char *op, const dq_quant_spec *spec, int *method) {
  if (!spec) return dq_fail(DQ_ERR_ARGUMENT, "%s: spec is NULL", op);
  int m = spec->method, b = spec->bits;
  if (m < DQ_QUANT_AUTO || m > DQ_QUANT_ASYM)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: method %d is not one of auto (0), sym (1), twn (2), bwn (3), asym (4)", op, m);
  if (m == DQ_QUANT_AUTO) {
    if (b < 1 || b > 16)
      return dq_fail(DQ_ERR_ARGUMENT, "%s: bits = %d; the auto method takes 1 (bwn), 2 (twn) or 3..16 (sym)", op, b);
    m = b == 1 ? DQ_QUANT_BWN : b == 2 ? DQ_QUANT_TWN : DQ_QUANT_SYM;
  }
  int lo = 1, hi = 16;
  if (m == DQ_QUANT_SYM) lo = 2;
  if (m == DQ_QUANT_TWN) lo = hi = 2;
  if (m == DQ_QUANT_BWN) lo = hi = 1;
  if (b < lo || b > hi) {
    if (lo == hi)
      return dq_fail(DQ_ERR_ARGUMENT, "%s: bits = %d for the %s quantizer, which is %d-bit by definition", op, b,
                     method_name(m), lo);
    return dq_fail(DQ_ERR_ARGUMENT, "%s: bits = %d for the %s quantizer; expected %d..%d", op, b, method_name(m), lo,
                   hi);
  }
  if (!(spec->clip > 0.0f))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: clip = %g; expected a positive value (2.5 in the reference, inf for none)", op,
                   (double)spec->clip);
  int g = spec->granularity;
  if (g < DQ_QUANT_PER_TENSOR || g > DQ_QUANT_PER_HEAD)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: granularity %d is not one of per tensor (0), per row (1), per head (2)", op, g);
  *method = m;
  return DQ_OK;
}

/* Groups of x under the spec's granularity. */
static dq_status plan_for(const char *op, const dq_tensor *x, const dq_quant_spec *spec, int method,
                          dq_quant_plan *plan) {
  plan->method = method;
  plan->bits = spec->bits;
  plan->clip = spec->clip;
  int64_t groups = 1;
  if (spec->granularity == DQ_QUANT_PER_ROW) {
    if (x->ndim < 1) return dq_fail(DQ_ERR_SHAPE, "%s: per-row quantization of x %s needs at least 1 dim", op, dq_desc(x));
    groups = dq_rows(x);
  } else if (spec->granularity == DQ_QUANT_PER_HEAD) {
    if (x->ndim < 3)
      return dq_fail(DQ_ERR_SHAPE,
                     "%s: per-head quantization of x %s needs at least 3 dims (groups are slices of the two leading "
                     "dims, e.g. [B, H, T, S])",
                     op, dq_desc(x));
    groups = x->shape[0] * x->shape[1];
  }
  plan->groups = groups;
  plan->group_size = groups ? x->numel / groups : 0;
  return DQ_OK;
}

/* Byte range of a tensor's elements. */
static void byte_range(const dq_tensor *t, uintptr_t *lo, uintptr_t *hi) {
  *lo = (uintptr_t)t->data;
  *hi = *lo + (uintptr_t)(t->numel * dq_dtype_size(t->dtype));
}

static bool overlap(const dq_tensor *a, const dq_tensor *b) {
  if (a->device != b->device || a->numel == 0 || b->numel == 0) return false;
  uintptr_t alo, ahi, blo, bhi;
  byte_range(a, &alo, &ahi);
  byte_range(b, &blo, &bhi);
  return alo < bhi && blo < ahi;
}

/* An output may be its input exactly (in place, elementwise), nothing else. */
static dq_status check_alias(const char *op, const char *wo, const dq_tensor *out, const char *wi, const dq_tensor *in) {
  if (!overlap(out, in)) return DQ_OK;
  if (out->data == in->data && out->dtype == in->dtype && out->numel == in->numel) return DQ_OK;
  return dq_fail(DQ_ERR_ARGUMENT, "%s: %s %s overlaps %s %s without being the same elements (in place must be exact)", op,
                 wo, dq_desc(out), wi, dq_desc(in));
}

static dq_status check_x(const char *op, const char *what, const dq_tensor *x) {
  TRY(dq_check_defined(op, what, x));
  return dq_check_compute_dtype(op, what, x);
}

/* out: allocated like x when undefined; else same shape and device, a float
 * dtype (f32 on the CPU). */
static dq_status prepare_quant_out(const char *op, const char *what, dq_tensor *out, const dq_tensor *x) {
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "%s: %s is NULL", op, what);
  if (!dq_tensor_defined(out)) return dq_prepare_like(op, out, x);
  TRY(dq_check_compute_dtype(op, what, out));
  TRY(dq_check_same_device(op, out, x));
  if (!dq_same_shape(out, x))
    return dq_fail(DQ_ERR_SHAPE, "%s: %s is %s; expected the shape of x %s", op, what, dq_desc(out), dq_desc(x));
  return DQ_OK;
}

static dq_status dispatch(int count, dq_tensor *const *outs, const dq_tensor *const *xs, const dq_quant_plan *plans) {
  if (dq_on_cuda(xs[0])) {
#ifdef DQ_HAVE_CUDA
    return cuda_quantize_many(count, outs, xs, plans);
#else
    return dq_no_cuda("dq_quantize");
#endif
  }
  return cpu_quantize_many(count, outs, xs, plans);
}

dq_status dq_quantize(dq_tensor *out, const dq_tensor *x, const dq_quant_spec *spec) {
  const char *op = "dq_quantize";
  int method = DQ_QUANT_SYM;
  TRY(resolve_spec(op, spec, &method));
  TRY(check_x(op, "x", x));
  dq_quant_plan plan;
  TRY(plan_for(op, x, spec, method, &plan));
  TRY(prepare_quant_out(op, "out", out, x));
  TRY(check_alias(op, "out", out, "x", x));
  if (x->numel == 0) return DQ_OK;
  const dq_tensor *xs[1] = {x};
  dq_tensor *outs[1] = {out};
  return dispatch(1, outs, xs, &plan);
}

/* An output's byte range and its index, for the batch's overlap check. */
typedef struct span {
  uintptr_t lo, hi;
  int index;
} span;

static int span_order(const void *a, const void *b) {
  const span *x = a, *y = b;
  if (x->lo != y->lo) return x->lo < y->lo ? -1 : 1;
  return (x->hi > y->hi) - (x->hi < y->hi);
}

/* Outputs are written while other inputs may still be read (CUDA works
 * through the list in phases), so outputs must be disjoint and an input may
 * overlap only its own output, exactly. Sorting the outputs makes this
 * O(n log n): a model's worth of tensors is checked in microseconds. All
 * tensors are on one device (checked before). */
static dq_status check_batch_alias(const char *op, int count, dq_tensor *const *outs, const dq_tensor *const *xs,
                                   span *sorted) {
  int n = 0;
  for (int i = 0; i < count; i++) {
    if (outs[i]->numel == 0) continue;
    byte_range(outs[i], &sorted[n].lo, &sorted[n].hi);
    sorted[n++].index = i;
  }
  qsort(sorted, (size_t)n, sizeof *sorted, span_order);
  for (int k = 1; k < n; k++)
    if (sorted[k].lo < sorted[k - 1].hi)
      return dq_fail(DQ_ERR_ARGUMENT, "%s: outs[%d] %s overlaps outs[%d] %s", op, sorted[k - 1].index,
                     dq_desc(outs[sorted[k - 1].index]), sorted[k].index, dq_desc(outs[sorted[k].index]));
  for (int j = 0; j < count; j++) {
    if (xs[j]->numel == 0) continue;
    uintptr_t lo, hi;
    byte_range(xs[j], &lo, &hi);
    /* Disjoint sorted outputs have sorted ends: the first that ends after lo. */
    int a = 0, b = n;
    while (a < b) {
      int mid = (a + b) / 2;
      if (sorted[mid].hi > lo) b = mid;
      else a = mid + 1;
    }
    for (int k = a; k < n && sorted[k].lo < hi; k++) {
      int i = sorted[k].index;
      if (i != j)
        return dq_fail(DQ_ERR_ARGUMENT, "%s: outs[%d] %s overlaps xs[%d] %s", op, i, dq_desc(outs[i]), j,
                       dq_desc(xs[j]));
      char wo[32], wi[32];
      snprintf(wo, sizeof wo, "outs[%d]", i);
      snprintf(wi, sizeof wi, "xs[%d]", j);
      TRY(check_alias(op, wo, outs[i], wi, xs[j]));
    }
  }
  return DQ_OK;
}

dq_status dq_quantize_many(int count, dq_tensor *const *outs, const dq_tensor *const *xs, const dq_quant_spec *spec) {
  const char *op = "dq_quantize_many";
  int method = DQ_QUANT_SYM;
  TRY(resolve_spec(op, spec, &method));
  if (count < 0) return dq_fail(DQ_ERR_ARGUMENT, "%s: count = %d; expected >= 0", op, count);
  if (count == 0) return DQ_OK;
  if (!outs || !xs) return dq_fail(DQ_ERR_ARGUMENT, "%s: outs or xs is NULL (count = %d)", op, count);
  char what[32];
  for (int i = 0; i < count; i++) {
    snprintf(what, sizeof what, "xs[%d]", i);
    TRY(check_x(op, what, xs[i]));
    if (xs[i]->device != xs[0]->device || xs[i]->dtype != xs[0]->dtype)
      return dq_fail(DQ_ERR_DTYPE, "%s: xs[%d] is %s but xs[0] is %s; all inputs share one dtype and device", op, i,
                     dq_desc(xs[i]), dq_desc(xs[0]));
    snprintf(what, sizeof what, "outs[%d]", i);
    TRY(prepare_quant_out(op, what, outs[i], xs[i]));
    if (outs[i]->dtype != outs[0]->dtype)
      return dq_fail(DQ_ERR_DTYPE, "%s: outs[%d] is %s but outs[0] is %s; all outputs share one dtype", op, i,
                     dq_desc(outs[i]), dq_desc(outs[0]));
  }
  /* Host scratch: on the stack for up to STACK_TENSORS tensors. */
  dq_quant_plan stack_plans[STACK_TENSORS];
  const dq_tensor *stack_xs[STACK_TENSORS];
  dq_tensor *stack_outs[STACK_TENSORS];
  span stack_spans[STACK_TENSORS];
  bool heap = count > STACK_TENSORS;
  dq_quant_plan *plans = heap ? malloc(sizeof *plans * (size_t)count) : stack_plans;
  const dq_tensor **live_xs = heap ? malloc(sizeof *live_xs * (size_t)count) : stack_xs;
  dq_tensor **live_outs = heap ? malloc(sizeof *live_outs * (size_t)count) : stack_outs;
  span *spans = heap ? malloc(sizeof *spans * (size_t)count) : stack_spans;
  dq_status st = DQ_OK;
  if (!plans || !live_xs || !live_outs || !spans) {
    st = dq_fail(DQ_ERR_MEMORY, "%s: cannot allocate plans for %d tensors", op, count);
  } else {
    st = check_batch_alias(op, count, outs, xs, spans);
    int live = 0;
    for (int i = 0; i < count && !st; i++) {
      if (xs[i]->numel == 0) continue; /* nothing to quantize */
      st = plan_for(op, xs[i], spec, method, &plans[live]);
      live_xs[live] = xs[i];
      live_outs[live] = outs[i];
      live++;
    }
    if (!st && live > 0) st = dispatch(live, live_outs, live_xs, plans);
  }
  if (heap) {
    free(plans);
    free(live_xs);
    free(live_outs);
    free(spans);
  }
  return st;
}

dq_status dq_quantize_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x, float clip, int accumulate) {
  const char *op = "dq_quantize_backward";
  if (!(clip > 0.0f))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: clip = %g; expected a positive value (the forward's)", op, (double)clip);
  TRY(check_x(op, "dy", dy));
  TRY(check_x(op, "x", x));
  TRY(dq_check_same_device(op, dy, x));
  if (!dq_same_shape(dy, x))
    return dq_fail(DQ_ERR_SHAPE, "%s: dy %s and x %s must have the same shape", op, dq_desc(dy), dq_desc(x));
  if (!dx) return dq_fail(DQ_ERR_ARGUMENT, "%s: dx is NULL", op);
  if (!dq_tensor_defined(dx)) {
    if (accumulate) return dq_fail(DQ_ERR_ARGUMENT, "%s: accumulate is set but dx is not allocated", op);
    TRY(dq_prepare_like(op, dx, dy));
  } else {
    TRY(dq_check_compute_dtype(op, "dx", dx));
    TRY(dq_check_same_device(op, dx, dy));
    if (!dq_same_shape(dx, dy))
      return dq_fail(DQ_ERR_SHAPE, "%s: dx is %s; expected the shape of dy %s", op, dq_desc(dx), dq_desc(dy));
    if (dx->dtype != dy->dtype && dx->dtype != DQ_F32)
      return dq_fail(DQ_ERR_DTYPE, "%s: dx is %s; expected f32 or dy's dtype %s", op, dq_desc(dx),
                     dq_dtype_name(dy->dtype));
  }
  TRY(check_alias(op, "dx", dx, "dy", dy));
  TRY(check_alias(op, "dx", dx, "x", x));
  if (x->numel == 0) return DQ_OK;
  if (dq_on_cuda(x)) DQ_CUDA_CALL(cuda_quantize_backward(dx, dy, x, clip, accumulate));
  return cpu_quantize_backward(dx, dy, x, clip, accumulate);
}

#undef TRY
