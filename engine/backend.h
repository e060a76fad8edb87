/*
 * backend.h: the per-device implementations behind ops.c. ops.c validates
 * every argument (shapes, dtypes, devices, out allocated with the right
 * shape) before calling these, so they only compute. cpu_* are in
 * engine/cpu_*.c files; cuda_* in the kernels/ .cu files (declared in kernels/kernels.h with
 * the same signatures).
 */
#ifndef DQ_BACKEND_H
#define DQ_BACKEND_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Geometry of a strided gather used by permute and narrow_copy: out element
 * with multi-index (i0..i{n-1}) over `shape` reads src element
 * src_offset + sum(ik * src_strides[k]) (strides in elements). */
typedef struct dq_gather_plan {
  int ndim;
  int64_t shape[DQ_MAX_DIMS];
  int64_t src_strides[DQ_MAX_DIMS];
  int64_t src_offset;
} dq_gather_plan;

/* Broadcast geometry for softmax masks: strides of the mask over x's shape
 * (0 on broadcast dims), in elements. */
typedef struct dq_bcast_plan {
  int ndim;
  int64_t shape[DQ_MAX_DIMS];
  int64_t strides[DQ_MAX_DIMS];
} dq_bcast_plan;

enum dq_binary_op { DQ_BIN_ADD = 0, DQ_BIN_SUB = 1, DQ_BIN_MUL = 2 };

#define DQ_BACKEND_DECLS(P)                                                                          \
  dq_status P##fill(dq_tensor *t, double value);                                                    \
  dq_status P##arange(dq_tensor *t, double start, double step);                                     \
  dq_status P##rand(dq_tensor *t, uint64_t seed, uint64_t offset, int normal);                      \
  /* same device; dtypes may differ; numel equal */                                                 \
  dq_status P##convert(dq_tensor *dst, const dq_tensor *src);                                       \
  dq_status P##gather(dq_tensor *out, const dq_tensor *src, const dq_gather_plan *plan);            \
  dq_status P##matmul(dq_tensor *out, const dq_tensor *a, const dq_tensor *b, int trans_a,          \
                      int trans_b, float alpha, float beta);                                         \
  /* out.numel = max(na, nb); out[i] = a[i % na] op b[i % nb] */                                    \
  dq_status P##binary(dq_tensor *out, const dq_tensor *a, const dq_tensor *b, int op);              \
  dq_status P##axpby(dq_tensor *y, const dq_tensor *x, float alpha, float beta);                    \
  dq_status P##sum_leading(dq_tensor *out, const dq_tensor *x, int accumulate);                     \
  dq_status P##gelu(dq_tensor *out, const dq_tensor *x);                                            \
  dq_status P##gelu_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x);               \
  dq_status P##relu(dq_tensor *out, const dq_tensor *x);                                            \
  dq_status P##relu_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x);               \
  dq_status P##layernorm(dq_tensor *out, dq_tensor *mean, dq_tensor *rstd, const dq_tensor *x,      \
                         const dq_tensor *weight, const dq_tensor *bias, float eps);                \
  dq_status P##layernorm_backward(dq_tensor *dx, dq_tensor *dweight, dq_tensor *dbias,              \
                                  const dq_tensor *dy, const dq_tensor *x, const dq_tensor *weight, \
                                  const dq_tensor *mean, const dq_tensor *rstd, int accumulate);    \
  /* mask may be NULL; plan gives its strides over x's shape */                                     \
  dq_status P##softmax(dq_tensor *out, const dq_tensor *x, const dq_tensor *mask,                   \
                       const dq_bcast_plan *mask_plan, float scale);                                 \
  dq_status P##softmax_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *y, float scale); \
  dq_status P##dropout(dq_tensor *out, const dq_tensor *x, float p, uint64_t seed, uint64_t offset,  \
                       int backward);                                                                \
  dq_status P##embedding(dq_tensor *out, const dq_tensor *weight, const dq_tensor *ids);            \
  dq_status P##embedding_backward(dq_tensor *dweight, const dq_tensor *dout, const dq_tensor *ids); \
  dq_status P##reduce(dq_tensor *out, const dq_tensor *x, int op, int rows);                        \
  dq_status P##reduce_backward(dq_tensor *dx, const dq_tensor *dout, const dq_tensor *x,            \
                               const dq_tensor *out, int op, int rows);

DQ_BACKEND_DECLS(cpu_)

#ifdef __cplusplus
}
#endif
#endif
