/*
 * loss.c: argument checks of the fused losses (dqbart_loss.h), once, then
 * dispatch to engine/cpu_loss.c or kernels/loss.cu.
 */
#include "loss_backend.h"

#include <math.h>
#include <string.h>

#define TRY(expr)           \
  do {                      \
    dq_status st_ = (expr); \
    if (st_) return st_;    \
  } while (0)

#define DISPATCH(t, call)                         \
  do {                                            \
    if (dq_on_cuda(t)) DQ_CUDA_CALL(cuda_##call); \
    return cpu_##call;                            \
  } while (0)

static dq_status check_input(const char *op, const char *what, const dq_tensor *t) {
  TRY(dq_check_defined(op, what, t));
  return dq_check_compute_dtype(op, what, t);
}

static dq_status check_common(const char *op, int flags, float weight) {
  if (flags & ~(DQ_LOSS_ADD_GRAD | DQ_LOSS_ADD_VALUE))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: flags = %d; expected a combination of DQ_LOSS_ADD_GRAD (1) and "
                   "DQ_LOSS_ADD_VALUE (2)", op, flags);
  if (!isfinite(weight)) return dq_fail(DQ_ERR_ARGUMENT, "%s: weight = %g; expected a finite value", op, (double)weight);
  return DQ_OK;
}

/* value: a 0-d f32 on the inputs' device; must exist to be added to. */
static dq_status prepare_value(const char *op, dq_tensor *value, int flags, const dq_tensor *like) {
  if (!value) return dq_fail(DQ_ERR_ARGUMENT, "%s: value is NULL", op);
  if ((flags & DQ_LOSS_ADD_VALUE) && !dq_tensor_defined(value))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: DQ_LOSS_ADD_VALUE is set but value is not allocated", op);
  return dq_prepare_out(op, value, 0, NULL, DQ_F32, like->device);
}

static bool overlap(const dq_tensor *a, const dq_tensor *b) {
  if (!b || a->device != b->device || a->numel == 0 || b->numel == 0) return false;
  uintptr_t alo = (uintptr_t)a->data, ahi = alo + (uintptr_t)(a->numel * dq_dtype_size(a->dtype));
  uintptr_t blo = (uintptr_t)b->data, bhi = blo + (uintptr_t)(b->numel * dq_dtype_size(b->dtype));
  return alo < bhi && blo < ahi;
}

/* An elementwise in-place gradient (grad over the student itself) is fine;
 * any other overlap with an input is not. */
static dq_status check_grad_alias(const char *op, const dq_tensor *grad, const char *what, const dq_tensor *in) {
  if (!overlap(grad, in)) return DQ_OK;
  if (grad->data == in->data && grad->dtype == in->dtype && grad->numel == in->numel) return DQ_OK;
  return dq_fail(DQ_ERR_ARGUMENT, "%s: grad %s overlaps %s %s without being the same elements", op, dq_desc(grad), what,
                 dq_desc(in));
}

/* grad: NULL, or shaped like the student, f32 or the student's dtype. */
static dq_status prepare_grad(const char *op, dq_tensor *grad, int flags, const dq_tensor *student) {
  if (!grad) return DQ_OK;
  if (!dq_tensor_defined(grad)) {
    if (flags & DQ_LOSS_ADD_GRAD)
      return dq_fail(DQ_ERR_ARGUMENT, "%s: DQ_LOSS_ADD_GRAD is set but grad is not allocated", op);
    return dq_prepare_like(op, grad, student);
  }
  TRY(dq_check_compute_dtype(op, "grad", grad));
  TRY(dq_check_same_device(op, grad, student));
  if (!dq_same_shape(grad, student))
    return dq_fail(DQ_ERR_SHAPE, "%s: grad is %s; expected the shape of %s", op, dq_desc(grad), dq_desc(student));
  if (grad->dtype != student->dtype && grad->dtype != DQ_F32)
    return dq_fail(DQ_ERR_DTYPE, "%s: grad is %s; expected f32 or the input's dtype %s", op, dq_desc(grad),
                   dq_dtype_name(student->dtype));
  return DQ_OK;
}

/* Labels (i32 or i64) shaped like x without its last dim. */
static dq_status check_labels(const char *op, const dq_tensor *labels, const dq_tensor *x, const char *xname) {
  TRY(dq_check_defined(op, "labels", labels));
  if (labels->dtype != DQ_I32 && labels->dtype != DQ_I64)
    return dq_fail(DQ_ERR_DTYPE, "%s: labels is %s; expected i32 or i64", op, dq_desc(labels));
  TRY(dq_check_same_device(op, labels, x));
  if (labels->ndim != x->ndim - 1 || memcmp(labels->shape, x->shape, sizeof(int64_t) * (size_t)labels->ndim) != 0)
    return dq_fail(DQ_ERR_SHAPE, "%s: labels %s must have the shape of %s %s without its last dim", op, dq_desc(labels),
                   xname, dq_desc(x));
  return DQ_OK;
}

/* Student and teacher: one shape, dtype and device. */
static dq_status check_pair(const char *op, const dq_tensor *s, const dq_tensor *t) {
  TRY(check_input(op, "student", s));
  TRY(check_input(op, "teacher", t));
  TRY(dq_check_same_device(op, s, t));
  if (s->dtype != t->dtype)
    return dq_fail(DQ_ERR_DTYPE, "%s: student is %s but teacher is %s; cast one so the dtypes match", op, dq_desc(s),
                   dq_desc(t));
  if (!dq_same_shape(s, t))
    return dq_fail(DQ_ERR_SHAPE, "%s: student %s and teacher %s must have the same shape", op, dq_desc(s), dq_desc(t));
  return DQ_OK;
}

/* No rows: the loss is 0 and there is no gradient to write. */
static dq_status empty_rows(dq_tensor *value, int flags) {
  return (flags & DQ_LOSS_ADD_VALUE) ? DQ_OK : dq_fill(value, 0.0);
}

dq_status dq_loss_cross_entropy(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *logits,
                                const dq_tensor *labels, int64_t ignore_index, float label_smoothing) {
  const char *op = "dq_loss_cross_entropy";
  TRY(check_common(op, flags, weight));
  TRY(check_input(op, "logits", logits));
  if (logits->ndim < 1) return dq_fail(DQ_ERR_SHAPE, "%s: logits %s need a vocabulary dim", op, dq_desc(logits));
  TRY(check_labels(op, labels, logits, "logits"));
  if (!(label_smoothing >= 0.0f && label_smoothing <= 1.0f))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: label_smoothing = %g; expected 0 <= eps <= 1", op, (double)label_smoothing);
  if (dq_cols(logits) == 0 && logits->numel == 0 && dq_shape_numel(labels->ndim, labels->shape) > 0)
    return dq_fail(DQ_ERR_SHAPE, "%s: logits %s have an empty vocabulary", op, dq_desc(logits));
  TRY(prepare_value(op, value, flags, logits));
  TRY(prepare_grad(op, grad, flags, logits));
  if (grad) TRY(check_grad_alias(op, grad, "logits", logits));
  if (logits->numel == 0) return empty_rows(value, flags);
  DISPATCH(logits, loss_cross_entropy(value, grad, weight, flags, logits, labels, ignore_index, label_smoothing));
}

static dq_status mse(const char *op, dq_tensor *value, dq_tensor *grad, float weight, int flags,
                     const dq_tensor *student, const dq_tensor *teacher, int per_sample) {
  TRY(check_common(op, flags, weight));
  TRY(check_pair(op, student, teacher));
  if (per_sample && student->ndim < 1)
    return dq_fail(DQ_ERR_SHAPE, "%s: student %s needs a sample (first) dim", op, dq_desc(student));
  if (student->numel == 0)
    return dq_fail(DQ_ERR_SHAPE, "%s: student %s is empty; a mean over no elements is undefined", op,
                   dq_desc(student));
  TRY(prepare_value(op, value, flags, student));
  TRY(prepare_grad(op, grad, flags, student));
  if (grad) {
    TRY(check_grad_alias(op, grad, "student", student));
    TRY(check_grad_alias(op, grad, "teacher", teacher));
  }
  double divisor = per_sample ? (double)(student->numel / student->shape[0]) : (double)student->numel;
  DISPATCH(student, loss_mse(value, grad, weight, flags, student, teacher, divisor));
}

dq_status dq_loss_mse(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,
                      const dq_tensor *teacher) {
  return mse("dq_loss_mse", value, grad, weight, flags, student, teacher, 0);
}

dq_status dq_loss_mse_per_sample(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,
                                 const dq_tensor *teacher) {
  return mse("dq_loss_mse_per_sample", value, grad, weight, flags, student, teacher, 1);
}

dq_status dq_loss_kl(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,
                     const dq_tensor *teacher, const dq_tensor *labels, int64_t ignore_index, float temperature) {
  const char *op = "dq_loss_kl";
  TRY(check_common(op, flags, weight));
  TRY(check_pair(op, student, teacher));
  if (student->ndim < 1) return dq_fail(DQ_ERR_SHAPE, "%s: student %s needs a class dim", op, dq_desc(student));
  if (labels) TRY(check_labels(op, labels, student, "student"));
  if (!(temperature > 0.0f) || !isfinite(temperature))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: temperature = %g; expected a finite positive value", op, (double)temperature);
  TRY(prepare_value(op, value, flags, student));
  TRY(prepare_grad(op, grad, flags, student));
  if (grad) {
    TRY(check_grad_alias(op, grad, "student", student));
    TRY(check_grad_alias(op, grad, "teacher", teacher));
  }
  if (student->numel == 0) return empty_rows(value, flags);
  DISPATCH(student, loss_kl(value, grad, weight, flags, student, teacher, labels, ignore_index, temperature));
}

#undef DISPATCH
#undef TRY
