/*
 * optim_backend.h: the per-device halves of dqbart_optim.h (optim.c checks
 * the arguments; engine/cpu_optim.c and kernels/adamw.cu compute) and the
 * AdamW element update both share, so the two devices round alike.
 */
#ifndef DQ_OPTIM_BACKEND_H
#define DQ_OPTIM_BACKEND_H

#include "internal.h"
#include "philox.h" /* DQ_HOSTDEV */

#include <math.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The scalars of one update, computed once on the host (in double, then
 * rounded to f32 as torch rounds a Python scalar for an f32 tensor op). */
typedef struct dq_adamw_consts {
  float one_minus_beta1; /* torch: lerp weight; transformers: add_ alpha */
  float beta1;
  float beta2;
  float one_minus_beta2;
  float eps;
  float neg_step_size;   /* torch: -lr / bc1; transformers: -lr * sqrt(bc2) / bc1 */
  float bc2_sqrt;        /* torch only: sqrt(1 - beta2^step) */
  float decay;           /* torch: 1 - lr * wd (a factor); transformers: -lr * wd (an alpha) */
  float max_norm;        /* > 0: clip */
  int32_t variant;
  int32_t has_decay;     /* weight_decay != 0 */
  int32_t skip_nonfinite;
} dq_adamw_consts;

#define DQ_OPTIM_BACKEND_DECLS(P)                                                                                   \
  /* grad_norm (0-d f32) and decay_mask / working may be NULL; numel > 0 */                                         \
  dq_status P##adamw(dq_tensor *params, dq_tensor *exp_avg, dq_tensor *exp_avg_sq, const dq_tensor *grads,           \
                     const dq_tensor *grad_norm, const dq_tensor *decay_mask, dq_tensor *working,                     \
                     const dq_adamw_consts *c);                                                                     \
  dq_status P##grad_norm(dq_tensor *norm, const dq_tensor *grads);                                                  \
  dq_status P##flag_nonfinite(dq_tensor *flag, const dq_tensor *x);

DQ_OPTIM_BACKEND_DECLS(cpu_)
DQ_OPTIM_BACKEND_DECLS(cuda_)

/* Plain f32 arithmetic with one rounding per operation on both devices:
 * nvcc would otherwise contract a*b+c into an FMA (the C build uses
 * -std=c11, which keeps contraction off), and the CPU and CUDA updates would
 * drift apart by an ulp. */
#ifdef __CUDA_ARCH__
#define DQ_FMUL(a, b) __fmul_rn((a), (b))
#define DQ_FADD(a, b) __fadd_rn((a), (b))
#define DQ_FSUB(a, b) __fsub_rn((a), (b))
#define DQ_FDIV(a, b) __fdiv_rn((a), (b))
#define DQ_FSQRT(a) __fsqrt_rn(a)
#else
#define DQ_FMUL(a, b) ((a) * (b))
#define DQ_FADD(a, b) ((a) + (b))
#define DQ_FSUB(a, b) ((a) - (b))
#define DQ_FDIV(a, b) ((a) / (b))
#define DQ_FSQRT(a) sqrtf(a)
#endif

/* torch.nn.utils.clip_grad_norm_'s factor, in f32 as torch computes it:
 * clamp(max_norm / (norm + 1e-6), max = 1). 1 without clipping. A NaN norm
 * gives NaN (clamp keeps NaN), as in torch. */
DQ_HOSTDEV float dq_clip_scale(float norm, float max_norm) {
  if (!(max_norm > 0.0f)) return 1.0f;
  float coef = DQ_FDIV(max_norm, DQ_FADD(norm, 1e-6f));
  return coef > 1.0f ? 1.0f : coef;
}

/* One element of the update, in the order of torch's single-tensor
 * kernels (lerp for weight < 0.5 is self + w * (end - self); addcmul is
 * self + value * t1 * t2; addcdiv is self + value * t1 / t2). g already
 * carries the clip factor. */
DQ_HOSTDEV void dq_adamw_element(const dq_adamw_consts *c, float g, int decay, float *p, float *m, float *v) {
  float pv = *p, mv = *m, vv = *v;
  if (c->variant == 0) {
    if (decay) pv = DQ_FMUL(pv, c->decay);
    mv = DQ_FADD(mv, DQ_FMUL(c->one_minus_beta1, DQ_FSUB(g, mv)));
    vv = DQ_FADD(DQ_FMUL(vv, c->beta2), DQ_FMUL(DQ_FMUL(c->one_minus_beta2, g), g));
    float denom = DQ_FADD(DQ_FDIV(DQ_FSQRT(vv), c->bc2_sqrt), c->eps);
    pv = DQ_FADD(pv, DQ_FDIV(DQ_FMUL(c->neg_step_size, mv), denom));
  } else {
    mv = DQ_FADD(DQ_FMUL(mv, c->beta1), DQ_FMUL(c->one_minus_beta1, g));
    vv = DQ_FADD(DQ_FMUL(vv, c->beta2), DQ_FMUL(DQ_FMUL(c->one_minus_beta2, g), g));
    float denom = DQ_FADD(DQ_FSQRT(vv), c->eps);
    pv = DQ_FADD(pv, DQ_FDIV(DQ_FMUL(c->neg_step_size, mv), denom));
    if (decay) pv = DQ_FADD(pv, DQ_FMUL(c->decay, pv));
  }
  *p = pv;
  *m = mv;
  *v = vv;
}

#ifdef __cplusplus
}
#endif
#endif
