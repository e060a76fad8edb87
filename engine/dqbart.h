/*
 * dqbart.h: the public C API of the dqbart engine.
 *
 * This is the only header the Lua bindings read: the build preprocesses it
 * with -DDQ_FFI_CDEF and hands the result to ffi.cdef, so everything between
 * the guards below must be plain C declarations LuaJIT's FFI understands
 * (no system headers, no inline functions, no function-like macros).
 *
 * Conventions
 *  - Every function returns dq_status: 0 on success, a DQ_ERR_* code on
 *    failure, with a message readable through dq_last_error() (thread local)
 *    that names the operation, the offending value and the expected one.
 *  - dq_tensor is a small value struct the caller owns (Lua allocates it with
 *    ffi.new). Functions that produce a tensor take `dq_tensor *out`:
 *      * if out holds no storage (all zero, or released), the function
 *        allocates it with the shape it infers, on the device and with the
 *        dtype of its first input;
 *      * if out already holds storage, its shape, dtype and device are
 *        checked against what the function would produce and the result is
 *        written in place (this is how arenas avoid allocation in a step).
 *    Releasing is dq_tensor_release(); it is idempotent.
 *  - Tensors are contiguous (row-major) views into reference-counted
 *    storage. Views (reshape, narrow, select, view) share storage; permute
 *    and transpose produce contiguous copies.
 *  - A device is an int: DQ_CPU (-1) or a CUDA ordinal (0, 1, ...).
 *  - CPU ops compute in f32 (inputs must be f32; cast first). CUDA ops take
 *    f32, bf16 or f16 and accumulate in f32.
 *  - Ops on CUDA are asynchronous on the device's engine stream; only
 *    functions that hand values to the host synchronize.
 */
#ifndef DQBART_H
#define DQBART_H

#ifndef DQ_FFI_CDEF
#include <stddef.h>
#include <stdint.h>
#define DQ_API __attribute__((visibility("default")))
#ifdef __cplusplus
extern "C" {
#endif
#else
#define DQ_API
#endif

enum {
  DQ_MAX_DIMS = 8,
  DQ_CPU = -1
};

typedef int dq_status;

enum dq_error_code {
  DQ_OK = 0,
  DQ_ERR_ARGUMENT = 1, /* a bad value: negative size, unknown enum, NULL */
  DQ_ERR_SHAPE = 2,    /* shapes that do not fit the operation */
  DQ_ERR_DTYPE = 3,    /* a dtype the operation does not take */
  DQ_ERR_DEVICE = 4,   /* tensors on different devices, or a missing GPU */
  DQ_ERR_MEMORY = 5,   /* allocation failed */
  DQ_ERR_IO = 6,       /* a file could not be read or written */
  DQ_ERR_FORMAT = 7,   /* a file's content is malformed */
  DQ_ERR_CUDA = 8,     /* a CUDA, cuBLAS or NCCL call failed */
  DQ_ERR_NO_CUDA = 9,  /* a GPU entry point in a build without CUDA */
  DQ_ERR_STATE = 10,   /* an object used in the wrong state (e.g. freed) */
  DQ_ERR_INTERNAL = 11
};

typedef enum dq_dtype {
  DQ_F32 = 0,
  DQ_BF16 = 1,
  DQ_F16 = 2,
  DQ_I8 = 3,
  DQ_I32 = 4,
  DQ_I64 = 5,
  DQ_NUM_DTYPES = 6
} dq_dtype;

typedef struct dq_storage dq_storage;

/* A tensor: a contiguous row-major view into a storage. Fields are read by
 * the bindings directly (shape, ndim, dtype, device, numel); they are written
 * only by the engine. `data` points at the first element (a device pointer
 * for CUDA tensors). ndim 0 is a scalar with numel 1. */
typedef struct dq_tensor {
  void *data;
  dq_storage *storage;
  int64_t shape[DQ_MAX_DIMS];
  int64_t numel;
  int32_t ndim;
  int32_t dtype;
  int32_t device;
  int32_t reserved;
} dq_tensor;

/* ---- library ----------------------------------------------------------- */

DQ_API const char *dq_version(void);
/* The message of the last failure on this thread ("" when none). */
DQ_API const char *dq_last_error(void);
DQ_API int dq_last_error_code(void);
DQ_API void dq_clear_error(void);
/* 1 when the library was built with CUDA support, else 0. */
DQ_API int dq_built_with_cuda(void);
/* Number of CUDA devices usable now (0 without a GPU or without CUDA). */
DQ_API int dq_cuda_device_count(void);
/* Wait until every queued operation on the device has finished. */
DQ_API dq_status dq_sync(int device);
/* Bytes of device memory free and in total (CPU: physical memory). */
DQ_API dq_status dq_memory_info(int device, int64_t *free_bytes, int64_t *total_bytes);
/* Bytes currently held by live tensor storage on the device. */
DQ_API int64_t dq_memory_allocated(int device);
/* The most bytes live tensor storage on the device has held since the start
   or the last dq_memory_reset_peak (scratch inside an op is not counted). */
DQ_API int64_t dq_memory_peak(int device);
DQ_API void dq_memory_reset_peak(int device);
/* Threads used by CPU ops (OpenMP and OpenBLAS). */
DQ_API dq_status dq_set_num_threads(int n);
DQ_API int dq_get_num_threads(void);

/* ---- dtypes ------------------------------------------------------------ */

DQ_API const char *dq_dtype_name(int dtype);
DQ_API int64_t dq_dtype_size(int dtype);
/* Parse "f32", "float32", "bf16", ...; returns -1 for an unknown name. */
DQ_API int dq_dtype_from_name(const char *name);

/* ---- tensor lifetime and views ------------------------------------------ */

/* Allocate uninitialized storage for the shape (ndim 0..DQ_MAX_DIMS). */
DQ_API dq_status dq_tensor_empty(dq_tensor *out, int ndim, const int64_t *shape, int dtype, int device);
/* Drop this tensor's reference to its storage and zero the struct. */
DQ_API void dq_tensor_release(dq_tensor *t);
/* out becomes a second reference to the same view (out is released first). */
DQ_API dq_status dq_tensor_share(dq_tensor *out, const dq_tensor *src);
/* 1 when the tensor holds storage, else 0. */
DQ_API int dq_tensor_defined(const dq_tensor *t);
/* 1 when a and b view the same storage. */
DQ_API int dq_tensor_same_storage(const dq_tensor *a, const dq_tensor *b);
/* Elements from the view's first element to the end of its storage. */
DQ_API int64_t dq_tensor_storage_span(const dq_tensor *t);

/* A view of `ndim`/`shape` starting `offset` elements after src's first
 * element; must lie inside src's storage. This is how one parameter buffer
 * is carved into per-parameter tensors. */
DQ_API dq_status dq_view(dq_tensor *out, const dq_tensor *src, int64_t offset, int ndim, const int64_t *shape);
/* Same elements, new shape; one entry may be -1 (inferred). */
DQ_API dq_status dq_reshape(dq_tensor *out, const dq_tensor *src, int ndim, const int64_t *shape);
/* The slice [start, start+length) along dim, as a view. Fails (naming
 * dq_narrow_copy) when the slice is not contiguous in memory. */
DQ_API dq_status dq_narrow(dq_tensor *out, const dq_tensor *src, int dim, int64_t start, int64_t length);
/* Index `index` along dim, dropping the dim, as a view (same rule). */
DQ_API dq_status dq_select(dq_tensor *out, const dq_tensor *src, int dim, int64_t index);
/* The slice along any dim as a contiguous copy. */
DQ_API dq_status dq_narrow_copy(dq_tensor *out, const dq_tensor *src, int dim, int64_t start, int64_t length);
/* Contiguous copy with dims reordered: out.shape[i] = src.shape[perm[i]]. */
DQ_API dq_status dq_permute(dq_tensor *out, const dq_tensor *src, const int *perm);
DQ_API dq_status dq_transpose(dq_tensor *out, const dq_tensor *src, int dim0, int dim1);

/* ---- filling, copies, host transfer ------------------------------------ */

DQ_API dq_status dq_fill(dq_tensor *t, double value);
/* t[i] = start + i * step */
DQ_API dq_status dq_arange(dq_tensor *t, double start, double step);
/* Counter-based Philox4x32-10 keyed by seed: element i of the tensor draws
 * from counter (offset + i / 4), lane i % 4, so the same (seed, offset)
 * gives the same numbers on every device. rand: uniform [0, 1) from the top
 * 24 bits. randn: Box-Muller over lanes (0,1) and (2,3) of counter
 * (offset + i / 4). A caller advances offset by dq_rng_span(numel). */
DQ_API dq_status dq_rand(dq_tensor *t, uint64_t seed, uint64_t offset);
DQ_API dq_status dq_randn(dq_tensor *t, uint64_t seed, uint64_t offset);
DQ_API uint64_t dq_rng_span(int64_t numel);
/* Copy values across dtypes and devices; shapes must have equal numel. */
DQ_API dq_status dq_copy(dq_tensor *dst, const dq_tensor *src);
/* Raw bytes between a tensor (any device) and host memory: `bytes` must be
 * numel * dtype size. to_host synchronizes. */
DQ_API dq_status dq_copy_from_host(dq_tensor *dst, const void *src, int64_t bytes);
DQ_API dq_status dq_copy_to_host(const dq_tensor *src, void *dst, int64_t bytes);
/* Element i converted to double (synchronizes on CUDA). */
DQ_API dq_status dq_get_item(const dq_tensor *t, int64_t index, double *value);

/* ---- core ops (forward and backward) ----------------------------------- */

/* out = alpha * op(a) @ op(b) + beta * out, op = transpose when trans_* is 1.
 * a: [..., M, K] ([..., K, M] transposed); b: [K, N] ([N, K] transposed)
 * shared by every batch entry, or [..., K, N] with the same batch dims as a.
 * out: [..., M, N]. beta != 0 requires out to be allocated. On CUDA a and b
 * share one dtype; out may be f32 or that dtype. */
DQ_API dq_status dq_matmul(dq_tensor *out, const dq_tensor *a, const dq_tensor *b,
                           int trans_a, int trans_b, float alpha, float beta);

/* Elementwise with suffix broadcasting: the smaller operand's shape (leading
 * 1s dropped) must equal the trailing dims of the larger one, which gives
 * the output shape. */
DQ_API dq_status dq_add(dq_tensor *out, const dq_tensor *a, const dq_tensor *b);
DQ_API dq_status dq_sub(dq_tensor *out, const dq_tensor *a, const dq_tensor *b);
DQ_API dq_status dq_mul(dq_tensor *out, const dq_tensor *a, const dq_tensor *b);
/* out = alpha * x */
DQ_API dq_status dq_scale(dq_tensor *out, const dq_tensor *x, float alpha);
/* y = alpha * x + beta * y (same shapes); y must be allocated. */
DQ_API dq_status dq_axpby(dq_tensor *y, const dq_tensor *x, float alpha, float beta);
/* Backward of broadcasting and of a bias: out (a suffix shape of x) =
 * x summed over its leading dims, plus out when accumulate is 1. */
DQ_API dq_status dq_sum_leading(dq_tensor *out, const dq_tensor *x, int accumulate);

/* GELU, the exact erf form: x * 0.5 * (1 + erf(x / sqrt(2))). */
DQ_API dq_status dq_gelu(dq_tensor *out, const dq_tensor *x);
DQ_API dq_status dq_gelu_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x);
DQ_API dq_status dq_relu(dq_tensor *out, const dq_tensor *x);
DQ_API dq_status dq_relu_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x);

/* LayerNorm over the last dim: out = (x - mean) * rstd * weight + bias,
 * rstd = 1 / sqrt(var + eps) with the biased variance. mean and rstd
 * (f32, shape x.shape[:-1]) are saved for the backward when not NULL. */
DQ_API dq_status dq_layernorm(dq_tensor *out, dq_tensor *mean, dq_tensor *rstd,
                              const dq_tensor *x, const dq_tensor *weight,
                              const dq_tensor *bias, float eps);
/* dx is overwritten; dweight and dbias (either may be NULL) are overwritten,
 * or added to when accumulate is 1. */
DQ_API dq_status dq_layernorm_backward(dq_tensor *dx, dq_tensor *dweight, dq_tensor *dbias,
                                       const dq_tensor *dy, const dq_tensor *x,
                                       const dq_tensor *weight, const dq_tensor *mean,
                                       const dq_tensor *rstd, int accumulate);

/* out = softmax(scale * x + mask) over the last dim. mask (may be NULL) has
 * x's ndim and each of its dims equal to x's or 1 (broadcast). A row whose
 * entries are all -inf gives zeros. */
DQ_API dq_status dq_softmax(dq_tensor *out, const dq_tensor *x, const dq_tensor *mask, float scale);
/* dx = scale * y * (dy - sum(dy * y)) over the last dim. */
DQ_API dq_status dq_softmax_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *y, float scale);

/* Dropout with probability p: element i is kept when rand(seed, offset)[i]
 * >= p and then scaled by 1 / (1 - p). The backward regenerates the same
 * mask from (seed, offset), so nothing is stored. */
DQ_API dq_status dq_dropout(dq_tensor *out, const dq_tensor *x, float p, uint64_t seed, uint64_t offset);
DQ_API dq_status dq_dropout_backward(dq_tensor *dx, const dq_tensor *dy, float p, uint64_t seed, uint64_t offset);

/* out[..., :] = weight[ids[...], :]; ids are i32 or i64 and must lie in
 * [0, rows). out: ids.shape + [D]. */
DQ_API dq_status dq_embedding(dq_tensor *out, const dq_tensor *weight, const dq_tensor *ids);
/* dweight[ids[...], :] += dout[..., :] (deterministic order). */
DQ_API dq_status dq_embedding_backward(dq_tensor *dweight, const dq_tensor *dout, const dq_tensor *ids);

enum dq_reduce_op {
  DQ_REDUCE_SUM = 0,
  DQ_REDUCE_MEAN = 1,
  DQ_REDUCE_MAX = 2,
  DQ_REDUCE_ABSMAX = 3
};
/* Reduce every element to a scalar (out ndim 0, f32). */
DQ_API dq_status dq_reduce_all(dq_tensor *out, const dq_tensor *x, int op);
/* Reduce the last dim (out shape x.shape[:-1], f32). */
DQ_API dq_status dq_reduce_rows(dq_tensor *out, const dq_tensor *x, int op);
/* Gradient of either reduction: dx from dout (shape of out), with x and the
 * forward's out. MAX/ABSMAX route the gradient to the first maximal element
 * (with the sign of x for ABSMAX). rows selects which reduction it was. */
DQ_API dq_status dq_reduce_backward(dq_tensor *dx, const dq_tensor *dout, const dq_tensor *x,
                                    const dq_tensor *out, int op, int rows);

/* ---- further API areas, one header each (same rules as this file: plain
 * declarations, DQ_API on every function, no includes of their own) ----- */
#include "dqbart_data.h"
#include "dqbart_tokenizer.h"
#include "dqbart_metrics.h"
#include "dqbart_io.h"
#include "dqbart_model.h"
#include "dqbart_model_quant.h"
#include "dqbart_optim.h"
#include "dqbart_quant.h"
#include "dqbart_loss.h"
#include "dqbart_generate.h"

#ifndef DQ_FFI_CDEF
#ifdef __cplusplus
}
#endif
#endif
#endif /* DQBART_H */
