/*
 * internal.h: what the engine's C files share and the bindings never see:
 * error reporting, storage, argument-check helpers.
 */
#ifndef DQ_INTERNAL_H
#define DQ_INTERNAL_H

#include "dqbart.h"

#include <stdarg.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors --------------------------------------------------------------
 * dq_fail formats the thread's error message and returns the code, so a
 * failure reads `return dq_fail(DQ_ERR_SHAPE, "dq_add: ...", ...);`. */
dq_status dq_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
dq_status dq_failv(int code, const char *fmt, va_list ap);
/* Prepend context ("loading model.safetensors: ") to the current message. */
dq_status dq_fail_context(dq_status code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The standard answer of a CUDA entry point in a build without CUDA. */
dq_status dq_no_cuda(const char *op);

/* "[2, 3] f32 cpu": a description of a tensor for messages. Returns one of
 * a few rotating thread-local buffers, so several fit in one message. */
const char *dq_desc(const dq_tensor *t);
const char *dq_shape_str(int ndim, const int64_t *shape);
const char *dq_device_name(int device);

/* ---- storage ------------------------------------------------------------- */

typedef void (*dq_release_fn)(void *ctx, void *ptr, int64_t bytes);

struct dq_storage {
  void *ptr;
  int64_t bytes;
  int device;
  int refcount;            /* atomically updated */
  dq_release_fn release;   /* NULL: memory from the engine's allocator */
  void *release_ctx;
};

/* Wrap memory the engine does not own (an mmap'ed file, say): `release` runs
 * when the last tensor referencing it is released. */
dq_status dq_tensor_wrap(dq_tensor *out, void *ptr, int64_t bytes, int ndim, const int64_t *shape,
                         int dtype, int device, dq_release_fn release, void *release_ctx);

/* ---- checks --------------------------------------------------------------- */

int64_t dq_shape_numel(int ndim, const int64_t *shape);
bool dq_same_shape(const dq_tensor *a, const dq_tensor *b);
/* Fail unless t holds storage; `what` names it ("dq_add: argument a"). */
dq_status dq_check_defined(const char *op, const char *what, const dq_tensor *t);
/* Fail unless a and b are on the same device. */
dq_status dq_check_same_device(const char *op, const dq_tensor *a, const dq_tensor *b);
dq_status dq_check_float(const char *op, const char *what, const dq_tensor *t);
/* CPU tensors must be f32 for compute ops. */
dq_status dq_check_compute_dtype(const char *op, const char *what, const dq_tensor *t);
/* Make `out` ready for a result of the given shape/dtype/device: allocate it
 * when empty, else check that it matches. */
dq_status dq_prepare_out(const char *op, dq_tensor *out, int ndim, const int64_t *shape, int dtype, int device);
dq_status dq_prepare_like(const char *op, dq_tensor *out, const dq_tensor *like);

static inline bool dq_on_cuda(const dq_tensor *t) { return t->device >= 0; }
static inline bool dq_is_float(int dtype) { return dtype == DQ_F32 || dtype == DQ_BF16 || dtype == DQ_F16; }
static inline bool dq_is_int(int dtype) { return dtype == DQ_I8 || dtype == DQ_I32 || dtype == DQ_I64; }
/* Product of all dims but the last (rows) and the last dim (cols). */
static inline int64_t dq_cols(const dq_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static inline int64_t dq_rows(const dq_tensor *t) { int64_t c = dq_cols(t); return c ? t->numel / c : 0; }

/* Dispatch to the CUDA backend, or fail cleanly in a build without it. */
#ifdef DQ_HAVE_CUDA
#define DQ_CUDA_CALL(expr) return (expr)
#else
#define DQ_CUDA_CALL(expr) return dq_no_cuda(__func__)
#endif

#ifdef __cplusplus
}
#endif
#endif
