/* error.c: the thread-local last-error message behind dq_last_error(). */
#include "internal.h"

#include <stdio.h>
#include <string.h>

enum { DQ_ERROR_CAP = 4096, DQ_DESC_SLOTS = 8, DQ_DESC_CAP = 160 };

static _Thread_local char last_error[DQ_ERROR_CAP];
static _Thread_local int last_code;

const char *dq_last_error(void) { return last_error; }
int dq_last_error_code(void) { return last_code; }

void dq_clear_error(void) {
  last_error[0] = '\0';
  last_code = DQ_OK;
}

dq_status dq_failv(int code, const char *fmt, va_list ap) {
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  last_code = code;
  return code;
}

dq_status dq_fail(int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  dq_failv(code, fmt, ap);
  va_end(ap);
  return code;
}

dq_status dq_fail_context(dq_status code, const char *fmt, ...) {
  char old[DQ_ERROR_CAP];
  memcpy(old, last_error, sizeof old);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  if (n >= 0 && (size_t)n < sizeof last_error)
    memcpy(last_error + n, old, strnlen(old, sizeof last_error - 1 - (size_t)n) + 1);
  last_error[sizeof last_error - 1] = '\0';
  last_code = code;
  return code;
}

dq_status dq_no_cuda(const char *op) {
  return dq_fail(DQ_ERR_NO_CUDA, "%s: this dqbart was built without CUDA; rebuild with -DDQ_CUDA=ON on a machine with the CUDA toolkit", op);
}

/* Rotating buffers let one message describe several tensors. */
static char *next_desc_slot(void) {
  static _Thread_local char slots[DQ_DESC_SLOTS][DQ_DESC_CAP];
  static _Thread_local int next;
  char *s = slots[next];
  next = (next + 1) % DQ_DESC_SLOTS;
  return s;
}

const char *dq_device_name(int device) {
  char *s = next_desc_slot();
  if (device == DQ_CPU)
    snprintf(s, DQ_DESC_CAP, "cpu");
  else
    snprintf(s, DQ_DESC_CAP, "cuda:%d", device);
  return s;
}

static int format_shape(char *s, size_t cap, int ndim, const int64_t *shape) {
  int n = snprintf(s, cap, "[");
  for (int i = 0; i < ndim && (size_t)n < cap; i++)
    n += snprintf(s + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if ((size_t)n < cap) n += snprintf(s + n, cap - n, "]");
  return n;
}

const char *dq_shape_str(int ndim, const int64_t *shape) {
  char *s = next_desc_slot();
  format_shape(s, DQ_DESC_CAP, ndim, shape);
  return s;
}

const char *dq_desc(const dq_tensor *t) {
  char *s = next_desc_slot();
  if (!t) {
    snprintf(s, DQ_DESC_CAP, "(null)");
  } else if (!t->storage) {
    snprintf(s, DQ_DESC_CAP, "(undefined tensor)");
  } else {
    int n = format_shape(s, DQ_DESC_CAP, t->ndim, t->shape);
    if (n < DQ_DESC_CAP)
      snprintf(s + n, DQ_DESC_CAP - n, " %s %s", dq_dtype_name(t->dtype),
               t->device == DQ_CPU ? "cpu" : "cuda");
    if (t->device >= 0) {
      size_t len = strlen(s);
      snprintf(s + len, DQ_DESC_CAP - len, ":%d", t->device);
    }
  }
  return s;
}
