/*
 * quant_backend.h: the per-device halves of the quantizer ops. quant.c
 * validates the arguments and resolves the spec into plans (the method
 * with AUTO decided, the groups); engine/cpu_quant.c and kernels/quant.cu
 * only compute.
 */
#ifndef DQ_QUANT_BACKEND_H
#define DQ_QUANT_BACKEND_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One tensor's quantization: `groups` contiguous groups of `group_size`
 * elements each (groups * group_size = numel), method one of SYM, TWN, BWN,
 * ASYM (never AUTO). */
typedef struct dq_quant_plan {
  int method;
  int bits;
  float clip;
  int64_t groups;
  int64_t group_size;
} dq_quant_plan;

/* outs[i] = Q(xs[i]) under plans[i]; count >= 1, every numel > 0, all xs
 * share a device and a dtype, all outs a dtype (CPU: f32), and every plan
 * has the same method, bits and clip. */
dq_status cpu_quantize_many(int count, dq_tensor *const *outs, const dq_tensor *const *xs, const dq_quant_plan *plans);
dq_status cuda_quantize_many(int count, dq_tensor *const *outs, const dq_tensor *const *xs,
                             const dq_quant_plan *plans);

/* dx = dy * [-clip < x < clip] (+ dx when accumulate); numel > 0. */
dq_status cpu_quantize_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x, float clip, int accumulate);
dq_status cuda_quantize_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x, float clip, int accumulate);

#ifdef __cplusplus
}
#endif
#endif
