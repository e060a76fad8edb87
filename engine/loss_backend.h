/*
 * loss_backend.h: the per-device halves of the fused losses (loss.c checks
 * the arguments; engine/cpu_loss.c and kernels/loss.cu compute). value is a
 * 0-d f32 tensor, grad NULL or shaped (and checked) like the student,
 * flags as in dqbart_loss.h; every input has numel > 0.
 */
#ifndef DQ_LOSS_BACKEND_H
#define DQ_LOSS_BACKEND_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows of the last dim: logits / student / teacher are [rows, V] in effect;
 * labels NULL (KL: every row counts) or one per row. */
#define DQ_LOSS_BACKEND_DECLS(P)                                                                                  \
  dq_status P##loss_cross_entropy(dq_tensor *value, dq_tensor *grad, float weight, int flags,                     \
                                  const dq_tensor *logits, const dq_tensor *labels, int64_t ignore_index,         \
                                  float label_smoothing);                                                         \
  /* sum((s - t)^2) / divisor; grad 2 (s - t) / divisor */                                                        \
  dq_status P##loss_mse(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,      \
                        const dq_tensor *teacher, double divisor);                                                \
  dq_status P##loss_kl(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,       \
                       const dq_tensor *teacher, const dq_tensor *labels, int64_t ignore_index, float temperature);

DQ_LOSS_BACKEND_DECLS(cpu_)
DQ_LOSS_BACKEND_DECLS(cuda_)

#ifdef __cplusplus
}
#endif
#endif
