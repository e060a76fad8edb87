/*
 * dqbart_quant.h: the quantizers of DQ-BART (DQBART.md section 2) as ops,
 * forward (fake quantization: the values are quantized, the storage stays
 * float) and backward (straight-through estimator with clipping).
 *
 * Every quantizer first clips x to [-clip, clip]; every statistic below is
 * taken over the clipped values. Statistics are per group: the whole
 * tensor, each row (the last dim), or each slice of the leading two dims
 * (per (batch, head) of a [B, H, T, S] attention tensor). With xc the
 * clipped x and G the group:
 *
 *  - SYM(b), symmetric uniform: m = max |xc| over G, s = (2^(b-1) - 1) / m,
 *    q = round(xc * s) / s, round half to even (torch.round), all in f32.
 *  - TWN, ternary: D = 0.7 * mean |xc| over G, a = mean of |xc| over the
 *    entries of G with |xc| > D, q = a if xc > D, -a if xc < -D, else 0.
 *  - BWN, binary: a = mean |xc| over G, q = a * sign(xc) (0 stays 0).
 *  - ASYM(b), min-max (the reference's AsymQuantizer): lo = min xc,
 *    r = (max xc - lo) + 1e-8, q = round((xc - lo) / r * (2^b - 1)) /
 *    (2^b - 1) * r + lo.
 *  - AUTO: the reference's choice by bits: 1 BWN, 2 TWN, 3..16 SYM.
 *
 * A group whose clipped values are all zero quantizes to zeros (SYM: m = 0;
 * TWN: no entry exceeds D) where the reference divides 0 by 0 and gives
 * NaN. NaN inputs give NaN outputs in their own place only (maxima skip NaN).
 *
 * Sums (the means of TWN and BWN) are accumulated in double in a fixed
 * order on both devices, so results repeat bit for bit run to run; CPU and
 * CUDA agree bit for bit on SYM and ASYM and up to the last bit of the
 * means (almost always exactly) on TWN and BWN.
 *
 * Devices and dtypes: CPU computes f32 in, f32 out. CUDA takes f32, bf16 or
 * f16 in and writes f32, bf16 or f16 (an f32 master weight can be quantized
 * straight into a bf16 working copy); values are computed in f32 and
 * rounded once on store. out may be x itself (in place); any other overlap
 * is an error. On CUDA nothing synchronizes and nothing is allocated once
 * the device's workspace is large enough (it grows on first use).
 */
#ifndef DQBART_QUANT_H
#define DQBART_QUANT_H

enum dq_quant_method {
  DQ_QUANT_AUTO = 0,
  DQ_QUANT_SYM = 1,
  DQ_QUANT_TWN = 2,
  DQ_QUANT_BWN = 3,
  DQ_QUANT_ASYM = 4
};

enum dq_quant_granularity {
  DQ_QUANT_PER_TENSOR = 0, /* the reference's layerwise = True */
  DQ_QUANT_PER_ROW = 1,    /* each row of the last dim (embedding rows; per output channel of [out, in]) */
  DQ_QUANT_PER_HEAD = 2    /* each slice of the two leading dims; needs at least 3 dims */
};

/* How to quantize. bits: SYM 2..16, ASYM 1..16, TWN 2, BWN 1, AUTO 1..16.
 * clip: c > 0 (+inf disables clipping); the reference uses 2.5. */
typedef struct dq_quant_spec {
  int32_t method;
  int32_t bits;
  int32_t granularity;
  float clip;
} dq_quant_spec;

/* out = Q(x). out undefined: allocated like x. */
DQ_API dq_status dq_quantize(dq_tensor *out, const dq_tensor *x, const dq_quant_spec *spec);

/* The same quantizer on `count` tensors in one go (every weight of a model
 * once per step): xs[i] -> outs[i]. All xs share one dtype and device, all
 * outs one dtype; each tensor has its own statistics. On CUDA the work runs
 * in a handful of launches however many tensors there are. */
DQ_API dq_status dq_quantize_many(int count, dq_tensor *const *outs, const dq_tensor *const *xs,
                                  const dq_quant_spec *spec);

/* Straight-through estimator with clipping: dx = dy where -clip < x < clip
 * (x the unclipped forward input), else 0; with accumulate = 1 the result is
 * added to dx instead (the latent weight's gradient). dx may be dy itself.
 * On CUDA dy and x may have different float dtypes and dx is f32 or dy's
 * dtype. */
DQ_API dq_status dq_quantize_backward(dq_tensor *dx, const dq_tensor *dy, const dq_tensor *x, float clip,
                                      int accumulate);

#endif
