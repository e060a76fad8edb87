/*
 * optim.c: argument checks of the optimizer ops (dqbart_optim.h), the
 * scalars of an AdamW update computed once on the host, then dispatch to
 * engine/cpu_optim.c or kernels/adamw.cu.
 */
#include "optim_backend.h"

#include <math.h>

#define TRY(expr)               \
  do {                          \
    dq_status st_ = (expr);     \
    if (st_) return st_;        \
  } while (0)

static dq_status check_f32(const char *op, const char *what, const dq_tensor *t, const dq_tensor *params) {
  TRY(dq_check_defined(op, what, t));
  if (t->dtype != DQ_F32) return dq_fail(DQ_ERR_DTYPE, "%s: %s is %s; expected f32", op, what, dq_desc(t));
  if (params && t != params) {
    TRY(dq_check_same_device(op, params, t));
    if (t->numel != params->numel)
      return dq_fail(DQ_ERR_SHAPE, "%s: %s %s must have the %lld elements of params %s", op, what, dq_desc(t),
                     (long long)params->numel, dq_desc(params));
  }
  return DQ_OK;
}

/* 0-d f32 (or i32 for the flag) on the device of `like`. */
static dq_status check_scalar(const char *op, const char *what, const dq_tensor *t, int dtype, const dq_tensor *like) {
  TRY(dq_check_defined(op, what, t));
  if (t->ndim != 0 || t->dtype != dtype)
    return dq_fail(DQ_ERR_SHAPE, "%s: %s is %s; expected a 0-d %s tensor", op, what, dq_desc(t),
                   dq_dtype_name(dtype));
  return dq_check_same_device(op, like, t);
}

static dq_status check_options(const char *op, const dq_adamw_options *o, const dq_tensor *grad_norm) {
  if (!o) return dq_fail(DQ_ERR_ARGUMENT, "%s: options is NULL", op);
  if (!(o->lr >= 0.0) || !isfinite(o->lr))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: lr = %g; expected a finite value >= 0", op, o->lr);
  if (!(o->beta1 >= 0.0 && o->beta1 < 1.0))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: beta1 = %g; expected 0 <= beta1 < 1", op, o->beta1);
  if (!(o->beta2 >= 0.0 && o->beta2 < 1.0))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: beta2 = %g; expected 0 <= beta2 < 1", op, o->beta2);
  if (!(o->eps >= 0.0) || !isfinite(o->eps))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: eps = %g; expected a finite value >= 0", op, o->eps);
  if (!(o->weight_decay >= 0.0) || !isfinite(o->weight_decay))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: weight_decay = %g; expected a finite value >= 0", op, o->weight_decay);
  if (isnan(o->max_grad_norm))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: max_grad_norm is NaN; expected a positive value, or <= 0 for no clipping",
                   op);
  if (o->step < 1)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: step = %lld; expected the update's number, 1 for the first", op,
                   (long long)o->step);
  if (o->variant != DQ_ADAMW_TORCH && o->variant != DQ_ADAMW_TRANSFORMERS)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: variant = %d; expected DQ_ADAMW_TORCH (0) or DQ_ADAMW_TRANSFORMERS (1)", op,
                   o->variant);
  if (!grad_norm && o->max_grad_norm > 0.0)
    return dq_fail(DQ_ERR_ARGUMENT,
                   "%s: max_grad_norm = %g needs the gradient norm tensor (dq_grad_norm's result); got NULL", op,
                   o->max_grad_norm);
  if (!grad_norm && o->skip_nonfinite)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: skip_nonfinite needs the gradient norm tensor; got NULL", op);
  return DQ_OK;
}

static int overlap(const dq_tensor *a, const dq_tensor *b) {
  const char *a0 = a->data, *b0 = b->data;
  const char *a1 = a0 + a->numel * dq_dtype_size(a->dtype), *b1 = b0 + b->numel * dq_dtype_size(b->dtype);
  return a->numel > 0 && b->numel > 0 && a0 < b1 && b0 < a1;
}

/* The scalars as torch derives them: Python doubles, rounded to f32 where
 * they meet the f32 tensors. */
static dq_adamw_consts make_consts(const dq_adamw_options *o) {
  dq_adamw_consts c;
  double step = (double)o->step;
  double bc1 = 1.0 - pow(o->beta1, step), bc2 = 1.0 - pow(o->beta2, step);
  c.beta1 = (float)o->beta1;
  c.one_minus_beta1 = (float)(1.0 - o->beta1);
  c.beta2 = (float)o->beta2;
  c.one_minus_beta2 = (float)(1.0 - o->beta2);
  c.eps = (float)o->eps;
  c.variant = o->variant;
  c.has_decay = o->weight_decay != 0.0;
  c.skip_nonfinite = o->skip_nonfinite != 0;
  c.max_norm = o->max_grad_norm > 0.0 ? (float)o->max_grad_norm : 0.0f;
  if (o->variant == DQ_ADAMW_TORCH) {
    c.neg_step_size = (float)(-(o->lr / bc1));
    c.bc2_sqrt = (float)sqrt(bc2);
    c.decay = (float)(1.0 - o->lr * o->weight_decay);
  } else {
    c.neg_step_size = (float)(-(o->lr * sqrt(bc2) / bc1));
    c.bc2_sqrt = 1.0f;
    c.decay = (float)(-o->lr * o->weight_decay);
  }
  return c;
}

dq_status dq_adamw_step(dq_tensor *params, dq_tensor *exp_avg, dq_tensor *exp_avg_sq, const dq_tensor *grads,
                        const dq_tensor *grad_norm, const dq_tensor *decay_mask, dq_tensor *working,
                        const dq_adamw_options *options) {
  const char *op = "dq_adamw_step";
  TRY(check_f32(op, "params", params, NULL));
  TRY(check_f32(op, "exp_avg", exp_avg, params));
  TRY(check_f32(op, "exp_avg_sq", exp_avg_sq, params));
  TRY(check_f32(op, "grads", grads, params));
  if (grad_norm) TRY(check_scalar(op, "grad_norm", grad_norm, DQ_F32, params));
  if (decay_mask) {
    TRY(dq_check_defined(op, "decay_mask", decay_mask));
    if (decay_mask->dtype != DQ_I8)
      return dq_fail(DQ_ERR_DTYPE, "%s: decay_mask is %s; expected i8 (non-zero: decay)", op, dq_desc(decay_mask));
    TRY(dq_check_same_device(op, params, decay_mask));
    if (decay_mask->numel != params->numel)
      return dq_fail(DQ_ERR_SHAPE, "%s: decay_mask %s must have the %lld elements of params %s", op,
                     dq_desc(decay_mask), (long long)params->numel, dq_desc(params));
  }
  if (working) {
    TRY(dq_check_defined(op, "working", working));
    TRY(dq_check_float(op, "working", working));
    TRY(dq_check_same_device(op, params, working));
    if (working->numel != params->numel)
      return dq_fail(DQ_ERR_SHAPE, "%s: working %s must have the %lld elements of params %s", op, dq_desc(working),
                     (long long)params->numel, dq_desc(params));
  }
  TRY(check_options(op, options, grad_norm));
  /* The update reads and writes element i of each buffer only, so buffers
   * that overlap would silently corrupt each other: refuse them. */
  const dq_tensor *bufs[] = { params, exp_avg, exp_avg_sq, grads, working };
  const char *names[] = { "params", "exp_avg", "exp_avg_sq", "grads", "working" };
  for (int a = 0; a < 5; a++)
    for (int b = a + 1; b < 5; b++)
      if (bufs[a] && bufs[b] && overlap(bufs[a], bufs[b]))
        return dq_fail(DQ_ERR_ARGUMENT, "%s: %s %s and %s %s overlap in memory; they must be separate buffers", op,
                       names[a], dq_desc(bufs[a]), names[b], dq_desc(bufs[b]));
  if (params->numel == 0) return DQ_OK;
  dq_adamw_consts c = make_consts(options);
  if (dq_on_cuda(params)) DQ_CUDA_CALL(cuda_adamw(params, exp_avg, exp_avg_sq, grads, grad_norm, decay_mask, working, &c));
  return cpu_adamw(params, exp_avg, exp_avg_sq, grads, grad_norm, decay_mask, working, &c);
}

dq_status dq_grad_norm(dq_tensor *norm, const dq_tensor *grads) {
  const char *op = "dq_grad_norm";
  TRY(dq_check_defined(op, "grads", grads));
  TRY(dq_check_compute_dtype(op, "grads", grads));
  TRY(dq_prepare_out(op, norm, 0, NULL, DQ_F32, grads->device));
  if (grads->numel == 0) return dq_fill(norm, 0.0);
  if (dq_on_cuda(grads)) DQ_CUDA_CALL(cuda_grad_norm(norm, grads));
  return cpu_grad_norm(norm, grads);
}

dq_status dq_flag_nonfinite(dq_tensor *flag, const dq_tensor *x) {
  const char *op = "dq_flag_nonfinite";
  TRY(dq_check_defined(op, "x", x));
  TRY(dq_check_compute_dtype(op, "x", x));
  if (!dq_tensor_defined(flag)) {
    TRY(dq_prepare_out(op, flag, 0, NULL, DQ_I32, x->device));
    TRY(dq_fill(flag, 0.0));
  }
  TRY(check_scalar(op, "flag", flag, DQ_I32, x));
  if (x->numel == 0) return DQ_OK;
  if (dq_on_cuda(x)) DQ_CUDA_CALL(cuda_flag_nonfinite(flag, x));
  return cpu_flag_nonfinite(flag, x);
}
