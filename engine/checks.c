/* checks.c: argument checks shared by every op, each failing with a message
 * that names the op, the argument and its shape/dtype/device. */
#include "internal.h"

#include <string.h>

bool dq_same_shape(const dq_tensor *a, const dq_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int i = 0; i < a->ndim; i++)
    if (a->shape[i] != b->shape[i]) return false;
  return true;
}

dq_status dq_check_defined(const char *op, const char *what, const dq_tensor *t) {
  if (!t) return dq_fail(DQ_ERR_ARGUMENT, "%s: %s is NULL", op, what);
  if (!t->storage)
    return dq_fail(DQ_ERR_STATE, "%s: %s is an undefined tensor (never allocated, or already freed)", op, what);
  return DQ_OK;
}

dq_status dq_check_same_device(const char *op, const dq_tensor *a, const dq_tensor *b) {
  if (a->device != b->device)
    return dq_fail(DQ_ERR_DEVICE, "%s: tensors on different devices: %s and %s", op, dq_desc(a), dq_desc(b));
  return DQ_OK;
}

dq_status dq_check_float(const char *op, const char *what, const dq_tensor *t) {
  if (!dq_is_float(t->dtype))
    return dq_fail(DQ_ERR_DTYPE, "%s: %s is %s; expected a floating-point tensor (f32, bf16 or f16)", op, what,
                   dq_desc(t));
  return DQ_OK;
}

dq_status dq_check_compute_dtype(const char *op, const char *what, const dq_tensor *t) {
  dq_status st = dq_check_float(op, what, t);
  if (st) return st;
  if (t->device == DQ_CPU && t->dtype != DQ_F32)
    return dq_fail(DQ_ERR_DTYPE, "%s: %s is %s; CPU ops compute in f32, cast it first (t:float())", op, what,
                   dq_desc(t));
  return DQ_OK;
}

dq_status dq_prepare_out(const char *op, dq_tensor *out, int ndim, const int64_t *shape, int dtype, int device) {
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "%s: out is NULL", op);
  if (!out->storage) return dq_tensor_empty(out, ndim, shape, dtype, device);
  if (out->device != device || out->dtype != dtype || out->ndim != ndim ||
      memcmp(out->shape, shape, sizeof(int64_t) * (size_t)ndim) != 0) {
    const char *want = dq_shape_str(ndim, shape);
    return dq_fail(DQ_ERR_SHAPE, "%s: out is %s but the result is %s %s %s", op, dq_desc(out), want,
                   dq_dtype_name(dtype), dq_device_name(device));
  }
  return DQ_OK;
}

dq_status dq_prepare_like(const char *op, dq_tensor *out, const dq_tensor *like) {
  return dq_prepare_out(op, out, like->ndim, like->shape, like->dtype, like->device);
}
