/*
 * loss_ce.h: the per-device halves of dq_cross_entropy (loss_ce.c checks
 * the arguments and dispatches; kernels/loss_ce.cu is the CUDA half).
 * rows x vocab logits, labels (i32 or i64) one per row; loss is an f32
 * scalar on the logits' device; dlogits may be NULL.
 */
#ifndef DQ_LOSS_CE_H
#define DQ_LOSS_CE_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

dq_status cpu_cross_entropy(dq_tensor *loss, dq_tensor *dlogits, const dq_tensor *logits, const dq_tensor *labels,
                            int64_t ignore_index, float grad_scale, int accumulate);
dq_status cuda_cross_entropy(dq_tensor *loss, dq_tensor *dlogits, const dq_tensor *logits, const dq_tensor *labels,
                             int64_t ignore_index, float grad_scale, int accumulate);

#ifdef __cplusplus
}
#endif
#endif
