/*
 * dqbart_optim.h: the optimizer of the DQ loop. AdamW updates a whole flat
 * parameter buffer (f32 master weights) from a flat gradient buffer with
 * two moment buffers in one pass; gradient-norm clipping and the check for
 * non-finite values stay on the device, so a training step never waits for
 * the host.
 *
 *  - dq_grad_norm writes the global L2 norm of a gradient buffer into a 0-d
 *    f32 tensor on the gradient's device. Deterministic: partial sums of
 *    squares (in double) over fixed blocks whose layout depends only on the
 *    element count, combined in a fixed order.
 *  - dq_adamw_step reads that norm tensor itself when clipping, computing
 *    torch.nn.utils.clip_grad_norm_'s factor min(1, max_norm / (norm +
 *    1e-6)) on the device and applying it to each gradient as it is read:
 *    no extra pass over the gradients, no synchronization. The gradient
 *    buffer is left as it is (torch scales it in place).
 *  - dq_flag_nonfinite sets a 0-d i32 flag to 1 when any element of a
 *    tensor (a loss, a gradient norm) is NaN or infinite; the flag is never
 *    cleared by it, so a trainer reads it once per logging interval.
 */
#ifndef DQBART_OPTIM_H
#define DQBART_OPTIM_H

enum dq_adamw_variant {
  /* torch.optim.AdamW: p *= 1 - lr * wd; m = lerp(m, g, 1 - b1);
   * v = b2 v + (1 - b2) g^2; p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
   * with bc_i = 1 - b_i^step. */
  DQ_ADAMW_TORCH = 0,
  /* transformers.AdamW (transformers 4.x, removed in 5; the DQ-BART
   * reference's optimizer): m = b1 m + (1 - b1) g; v as above;
   * p -= lr * sqrt(bc2) / bc1 * m / (sqrt(v) + eps); then p -= lr * wd * p
   * (eps is added before the bias correction; decay after the update). */
  DQ_ADAMW_TRANSFORMERS = 1
};

typedef struct dq_adamw_options {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  /* > 0: clip with the norm tensor (required then); <= 0: no clipping. */
  double max_grad_norm;
  /* The number of this update, 1 for the first (bias corrections). */
  int64_t step;
  int32_t variant;        /* enum dq_adamw_variant */
  /* 1: when the norm tensor holds NaN or inf, leave parameters, moments and
   * the working copy untouched (a skipped step, as AMP's grad scaler does);
   * needs the norm tensor. 0: update anyway (torch: NaN spreads). */
  int32_t skip_nonfinite;
} dq_adamw_options;

/* One AdamW update of every element.
 *  params      1-d or any shape, f32, updated in place
 *  exp_avg     f32 like params (first moment), updated in place
 *  exp_avg_sq  f32 like params (second moment), updated in place
 *  grads       f32 like params (read only)
 *  grad_norm   NULL, or a 0-d f32 tensor on the same device (dq_grad_norm's
 *              result), read for clipping and skip_nonfinite
 *  decay_mask  NULL (decay everything), or an i8 tensor with params' numel:
 *              weight decay applies where it is non-zero
 *  working     NULL, or a tensor with params' numel (f32, bf16 or f16)
 *              receiving the updated parameters, rounded to its dtype (the
 *              forward's working copy, written in the same pass)
 * All tensors on one device. Moments start as zeros (dq_fill). */
DQ_API dq_status dq_adamw_step(dq_tensor *params, dq_tensor *exp_avg, dq_tensor *exp_avg_sq, const dq_tensor *grads,
                               const dq_tensor *grad_norm, const dq_tensor *decay_mask, dq_tensor *working,
                               const dq_adamw_options *options);

/* norm = sqrt(sum of grads^2) over every element; grads f32 (CUDA: also
 * bf16 or f16). norm undefined: allocated 0-d f32 on grads' device. */
DQ_API dq_status dq_grad_norm(dq_tensor *norm, const dq_tensor *grads);

/* flag (0-d i32; undefined: allocated as 0 on x's device) = 1 when any
 * element of x (a float tensor) is NaN or +-inf; otherwise unchanged. */
DQ_API dq_status dq_flag_nonfinite(dq_tensor *flag, const dq_tensor *x);

#endif
