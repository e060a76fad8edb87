/*
 * bart_linear.c: the two places every product of a BART layer passes
 * through: the linear layer (weight, bias, input) and the attention
 * products (scores, probabilities, values). Quantization plugs in exactly
 * here (model_hooks): the linear reads its weight from the working buffer
 * (which a weight quantizer overwrites once per step) and its input through
 * the activation hook; attention quantizes the scaled query, the key, the
 * probabilities after dropout and the values. Without hooks the code is
 * plain full-precision math.
 */
#include "model_internal.h"

#include <math.h>

static int quantizing(const dq_model *m, const model_site *site) {
  return m->hooks && m->hooks->activation && site;
}

static dq_status quantize(dq_model *m, const model_site *site, const dq_tensor *x, dq_tensor *q) {
  if (!dq_tensor_defined(q) || !dq_same_shape(x, q))
    return dq_fail(DQ_ERR_INTERNAL, "model: no arena slot of shape %s for a quantized activation", dq_desc(x));
  return m->hooks->activation(m->hooks->ctx, site, x, q);
}

/* grad (dL/d quantized) -> dL/d x in place. */
static dq_status quantize_backward(dq_model *m, const model_site *site, dq_tensor *grad, const dq_tensor *x) {
  if (!m->hooks->activation_backward) return DQ_OK;
  return m->hooks->activation_backward(m->hooks->ctx, site, grad, x);
}

dq_status bart_linear(dq_model *m, const model_linear *l, const model_site *site, const dq_tensor *x,
                      dq_tensor *q_x, dq_tensor *y) {
  const dq_tensor *in = x;
  if (quantizing(m, site)) {
    MODEL_TRY(quantize(m, site, x, q_x));
    in = q_x;
  }
  int64_t rows = x->numel / l->in;
  dq_tensor x2 = model_as2(in, rows, l->in), y2 = model_as2(y, rows, l->out);
  dq_tensor w = model_lin_w(m, l), b = model_lin_b(m, l);
  MODEL_TRY(dq_matmul(&y2, &x2, &w, 0, 1, 1.0f, 0.0f));
  return dq_add(&y2, &y2, &b);
}

dq_status bart_linear_backward(dq_model *m, const model_linear *l, const model_site *site, const dq_tensor *x,
                               const dq_tensor *q_x, const dq_tensor *dy, dq_tensor *dx, float dx_beta) {
  int quant = quantizing(m, site);
  int64_t rows = dy->numel / l->out;
  dq_tensor dy2 = model_as2(dy, rows, l->out);
  dq_tensor in2 = model_as2(quant ? q_x : x, rows, l->in);
  dq_tensor gw = model_lin_gw(m, l), gb = model_lin_gb(m, l);
  /* dW += dy^T x (f32 gradient straight from the GEMM), db += sum of dy. */
  MODEL_TRY(dq_matmul(&gw, &dy2, &in2, 1, 0, 1.0f, 1.0f));
  MODEL_TRY(dq_sum_leading(&gb, &dy2, 1));
  if (!dx) return DQ_OK;
  dq_tensor w = model_lin_w(m, l);
  dq_tensor dx2 = model_as2(dx, rows, l->in);
  if (!quant) return dq_matmul(&dx2, &dy2, &w, 0, 0, 1.0f, dx_beta);
  /* The estimator applies to this linear's own input gradient only, so a
   * gradient being accumulated into dx is staged separately. */
  dq_tensor stage = dx_beta != 0.0f ? model_as2(&m->s_ste, rows, l->in) : dx2;
  dq_tensor x2 = model_as2(x, rows, l->in);
  MODEL_TRY(dq_matmul(&stage, &dy2, &w, 0, 0, 1.0f, 0.0f));
  MODEL_TRY(quantize_backward(m, site, &stage, &x2));
  if (dx_beta != 0.0f) return dq_axpby(&dx2, &stage, 1.0f, dx_beta);
  return DQ_OK;
}

static model_site attn_site(const model_site *site, int kind) {
  model_site s = *site;
  s.kind = kind;
  return s;
}

dq_status bart_attention_core(dq_model *m, model_block_act *a, const model_site *site, const dq_tensor *q,
                              const dq_tensor *k, const dq_tensor *v, const dq_tensor *mask, dq_tensor *out) {
  float scale = 1.0f / sqrtf((float)q->shape[q->ndim - 1]);
  float p = m->p_attention;
  int quant = quantizing(m, site);
  dq_tensor scores = model_as(&m->s_attn1, a->probs.ndim, a->probs.shape);
  const dq_tensor *qq = q, *kk = k, *vv = v;
  float alpha = scale;
  if (quant) {
    model_site sq = attn_site(site, MODEL_SITE_ATTN_QUERY), sk = attn_site(site, MODEL_SITE_ATTN_KEY);
    MODEL_TRY(dq_scale(&a->query_scaled, q, scale));
    MODEL_TRY(quantize(m, &sq, &a->query_scaled, &a->q_query));
    MODEL_TRY(quantize(m, &sk, k, &a->q_key));
    qq = &a->q_query;
    kk = &a->q_key;
    alpha = 1.0f;
  }
  MODEL_TRY(dq_matmul(&scores, qq, kk, 0, 1, alpha, 0.0f));
  MODEL_TRY(dq_softmax(&a->probs, &scores, mask, 1.0f));
  const dq_tensor *pd = &a->probs;
  dq_tensor dropped = model_as(&m->s_attn2, a->probs.ndim, a->probs.shape);
  if (bart_dropout_active(m, p)) {
    MODEL_TRY(bart_dropout(m, &a->probs, &dropped, p, &a->off_probs));
    pd = &dropped;
  }
  if (quant) {
    model_site sp = attn_site(site, MODEL_SITE_ATTN_PROBS), sv = attn_site(site, MODEL_SITE_ATTN_VALUE);
    MODEL_TRY(quantize(m, &sp, pd, &a->q_probs));
    MODEL_TRY(quantize(m, &sv, v, &a->q_value));
    pd = &a->q_probs;
    vv = &a->q_value;
  }
  return dq_matmul(out, pd, vv, 0, 0, 1.0f, 0.0f);
}

dq_status bart_attention_core_backward(dq_model *m, model_block_act *a, const model_site *site,
                                       const dq_tensor *q, const dq_tensor *k, const dq_tensor *v,
                                       const dq_tensor *dout, const dq_tensor *dprobs_injected, dq_tensor *dq,
                                       dq_tensor *dk, dq_tensor *dv) {
  float scale = 1.0f / sqrtf((float)q->shape[q->ndim - 1]);
  float p = m->p_attention;
  int quant = quantizing(m, site), drop = bart_dropout_active(m, p);
  dq_tensor a1 = model_as(&m->s_attn1, a->probs.ndim, a->probs.shape);
  dq_tensor a2 = model_as(&m->s_attn2, a->probs.ndim, a->probs.shape);
  /* The dropped probabilities are recomputed from the same (seed, offset)
   * rather than kept: one attention-sized buffer less per layer. */
  const dq_tensor *pd = &a->probs;
  if (drop) {
    MODEL_TRY(dq_dropout(&a1, &a->probs, p, m->rng_seed, a->off_probs));
    pd = &a1;
  }
  const dq_tensor *pd_used = quant ? &a->q_probs : pd, *v_used = quant ? &a->q_value : v;
  model_site sq = attn_site(site, MODEL_SITE_ATTN_QUERY), sk = attn_site(site, MODEL_SITE_ATTN_KEY);
  model_site sp = attn_site(site, MODEL_SITE_ATTN_PROBS), sv = attn_site(site, MODEL_SITE_ATTN_VALUE);
  /* dV = P^T dO;  dP = dO V^T */
  MODEL_TRY(dq_matmul(dv, pd_used, dout, 1, 0, 1.0f, 0.0f));
  if (quant) MODEL_TRY(quantize_backward(m, &sv, dv, v));
  MODEL_TRY(dq_matmul(&a2, dout, v_used, 0, 1, 1.0f, 0.0f));
  if (quant) MODEL_TRY(quantize_backward(m, &sp, &a2, pd));
  if (drop) MODEL_TRY(dq_dropout_backward(&a2, &a2, p, m->rng_seed, a->off_probs));
  if (dprobs_injected) MODEL_TRY(dq_add(&a2, &a2, dprobs_injected));
  /* dS = softmax'(dP) into the buffer the dropped probabilities held. */
  MODEL_TRY(dq_softmax_backward(&a1, &a2, &a->probs, 1.0f));
  if (!quant) {
    /* S = scale Q K^T: dQ = scale dS K, dK = scale dS^T Q */
    MODEL_TRY(dq_matmul(dq, &a1, k, 0, 0, scale, 0.0f));
    return dq_matmul(dk, &a1, q, 1, 0, scale, 0.0f);
  }
  MODEL_TRY(dq_matmul(dq, &a1, &a->q_key, 0, 0, 1.0f, 0.0f));
  MODEL_TRY(quantize_backward(m, &sq, dq, &a->query_scaled));
  MODEL_TRY(dq_scale(dq, dq, scale));
  MODEL_TRY(dq_matmul(dk, &a1, &a->q_query, 1, 0, 1.0f, 0.0f));
  return quantize_backward(m, &sk, dk, k);
}
