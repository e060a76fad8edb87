/*
 * bart_embed.c: what surrounds the layers: attention masks, the embedding
 * path (tokens * embed_scale + learned positions at offset 2, then
 * layernorm_embedding and dropout), mBART's final layer_norm and the LM head
 * (logits = h shared^T + final_logits_bias), forward and backward.
 */
#include "model_internal.h"
#include "half.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static model_stack_act *stack_act(dq_model *m, int decoder) { return decoder ? &m->dec : &m->enc; }
static const model_stack_w *stack_w(const dq_model *m, int decoder) { return decoder ? &m->dec_w : &m->enc_w; }
static int stack_layers(const dq_model *m, int decoder) {
  return decoder ? m->cfg.decoder_layers : m->cfg.encoder_layers;
}

/* ---- masks ----------------------------------------------------------------------- */

/* additive = MASK_VALUE * (1 - keep), exactly 0 or MASK_VALUE (2^100 * 1 -
 * 2^100 is exact). keep is 1/0 in the activation dtype. */
static dq_status additive_from_keep(dq_tensor *additive, const dq_tensor *keep) {
  MODEL_TRY(dq_fill(additive, MODEL_MASK_VALUE));
  dq_tensor k = model_as(keep, additive->ndim, additive->shape);
  return dq_axpby(additive, &k, -MODEL_MASK_VALUE, 1.0f);
}

/* The [T, T] causal keep flags (1 on and below the diagonal), built on the
 * host once per target length and copied over (no device sync), and the
 * additive mask made from them. */
static dq_status build_causal(dq_model *m, int64_t T) {
  if (m->causal_len == T) return DQ_OK;
  size_t elt = (size_t)dq_dtype_size(m->dtype), bytes = (size_t)(T * T) * elt;
  if (bytes > m->host_mask_cap) {
    void *p = realloc(m->host_mask, bytes);
    if (!p) return dq_fail(DQ_ERR_MEMORY, "model: out of host memory for a %lldx%lld causal mask", (long long)T,
                           (long long)T);
    m->host_mask = p;
    m->host_mask_cap = bytes;
  }
  for (int64_t i = 0; i < T; i++)
    for (int64_t j = 0; j < T; j++) {
      float v = j > i ? 0.0f : 1.0f;
      if (m->dtype == DQ_F32) ((float *)m->host_mask)[i * T + j] = v;
      else if (m->dtype == DQ_BF16) ((uint16_t *)m->host_mask)[i * T + j] = dq_f32_to_bf16(v);
      else ((uint16_t *)m->host_mask)[i * T + j] = dq_f32_to_f16(v);
    }
  MODEL_TRY(dq_copy_from_host(&m->causal_keep, m->host_mask, (int64_t)bytes));
  MODEL_TRY(additive_from_keep(&m->causal, &m->causal_keep));
  m->causal_len = T;
  return DQ_OK;
}

dq_status bart_build_masks(dq_model *m) {
  int64_t B = m->B, T = m->T;
  model_stack_act *enc = &m->enc, *dec = &m->dec;
  /* forward staged the 1/0 keep flags into enc.pad / dec.pad. */
  if (enc->has_pad) MODEL_TRY(additive_from_keep(&enc->mask, &enc->pad));
  MODEL_TRY(build_causal(m, T));
  if (!dec->has_pad) {
    int64_t s4[4] = {1, 1, T, T};
    dec->mask = model_as(&m->causal, 4, s4);
    return DQ_OK;
  }
  /* keep[b, i, j] = causal[i, j] * padding[b, j], then one additive value
   * for every masked key, whichever the reason (a row with no key left is
   * then uniform, as transformers' mask gives it). The padding row is
   * broadcast over i through a [T, B, T] staging tensor and a permute. */
  int64_t tbt[3] = {T, B, T}, btt[3] = {B, T, T};
  dq_tensor stage = model_as(&m->s_attn1, 3, tbt);
  MODEL_TRY(dq_fill(&stage, 0.0));
  dq_tensor pad = model_as2(&dec->pad, B, T);
  MODEL_TRY(dq_add(&stage, &stage, &pad));
  dq_tensor keep = model_as(&m->s_attn2, 3, btt);
  static const int swap01[3] = {1, 0, 2};
  MODEL_TRY(dq_permute(&keep, &stage, swap01));
  MODEL_TRY(dq_mul(&keep, &keep, &m->causal_keep));
  dq_tensor mask3 = model_as(&dec->mask, 3, btt);
  return additive_from_keep(&mask3, &keep);
}

/* ---- embeddings ----------------------------------------------------------------------- */

static float embed_scale(const dq_model *m) {
  return m->cfg.scale_embedding ? sqrtf((float)m->cfg.d_model) : 1.0f;
}

dq_status bart_embed_forward(dq_model *m, int decoder) {
  model_stack_act *st = stack_act(m, decoder);
  const model_stack_w *w = stack_w(m, decoder);
  int64_t D = m->cfg.d_model, L = st->len;
  dq_tensor table = model_embed_weight(m);
  MODEL_TRY(dq_embedding(&st->emb, &table, &st->ids));
  float scale = embed_scale(m);
  if (scale != 1.0f) MODEL_TRY(dq_scale(&st->emb, &st->emb, scale));
  /* Positions 0..L-1 read rows 2..L+1: a contiguous slice of the table. */
  int64_t ld[2] = {L, D}, bld[3] = {m->B, L, D};
  dq_tensor pos = model_view(&m->work, w->pos_off + 2 * D, 2, ld);
  dq_tensor emb3 = model_as(&st->emb, 3, bld);
  MODEL_TRY(dq_add(&emb3, &emb3, &pos));
  MODEL_TRY(bart_norm(m, &w->ln_emb, &st->emb, &st->emb_ln, &st->emb_mean, &st->emb_rstd));
  float p = m->p_dropout;
  if (bart_dropout_active(m, p)) MODEL_TRY(bart_dropout(m, &st->emb_ln, &st->hidden[0], p, &st->off_emb));
  return DQ_OK;
}

dq_status bart_embed_backward(dq_model *m, int decoder, dq_tensor *dh0) {
  model_stack_act *st = stack_act(m, decoder);
  const model_stack_w *w = stack_w(m, decoder);
  int64_t D = m->cfg.d_model, L = st->len, N = m->B * L;
  dq_tensor g = model_as2(dh0, N, D);
  float p = m->p_dropout;
  if (bart_dropout_active(m, p)) {
    dq_tensor t = model_as2(&m->g_c, N, D);
    MODEL_TRY(bart_dropout_backward(m, &g, &t, p, st->off_emb));
    g = t;
  }
  dq_tensor dx = model_as2(&m->g_d, N, D);
  MODEL_TRY(bart_norm_backward(m, &w->ln_emb, &g, &st->emb, &st->emb_mean, &st->emb_rstd, &dx));
  int64_t ld[2] = {L, D}, bld[3] = {m->B, L, D};
  dq_tensor gpos = model_view(&m->grads, w->pos_off + 2 * D, 2, ld);
  dq_tensor dx3 = model_as(&dx, 3, bld);
  MODEL_TRY(dq_sum_leading(&gpos, &dx3, 1));
  float scale = embed_scale(m);
  if (scale != 1.0f) MODEL_TRY(dq_scale(&dx, &dx, scale));
  if (m->hooks && m->hooks->embedding_grad)
    MODEL_TRY(m->hooks->embedding_grad(m->hooks->ctx, decoder, &dx, &st->ids));
  int64_t vd[2] = {m->cfg.vocab_size, D};
  dq_tensor gshared = model_view(&m->grads, m->shared_off, 2, vd);
  /* The embedding's padding_idx row (pad_token_id) gets no gradient from
   * lookups, as in torch: its gradient is set aside and restored. */
  int64_t pad = m->cfg.pad_token_id;
  int keep_pad = pad >= 0 && pad < m->cfg.vocab_size;
  int64_t d1[1] = {D};
  dq_tensor pad_row = model_view(&m->grads, m->shared_off + pad * D, 1, d1), saved = model_as(&m->g_row, 1, d1);
  if (keep_pad) MODEL_TRY(dq_copy(&saved, &pad_row));
  MODEL_TRY(dq_embedding_backward(&gshared, &dx, &st->ids));
  return keep_pad ? dq_copy(&pad_row, &saved) : DQ_OK;
}

/* ---- mBART's final layer_norm ---------------------------------------------------------- */

dq_status bart_final_norm_forward(dq_model *m, int decoder) {
  model_stack_act *st = stack_act(m, decoder);
  const model_stack_w *w = stack_w(m, decoder);
  return bart_norm(m, &w->ln_final, &st->last_out, &st->hidden[stack_layers(m, decoder)], &st->final_mean,
                   &st->final_rstd);
}

dq_status bart_final_norm_backward(dq_model *m, int decoder, const dq_tensor *dy, dq_tensor *dx) {
  model_stack_act *st = stack_act(m, decoder);
  const model_stack_w *w = stack_w(m, decoder);
  return bart_norm_backward(m, &w->ln_final, dy, &st->last_out, &st->final_mean, &st->final_rstd, dx);
}

/* ---- LM head --------------------------------------------------------------------------------- */

dq_status bart_lm_head_forward(dq_model *m) {
  int64_t N = m->B * m->T, D = m->cfg.d_model, V = m->cfg.vocab_size;
  dq_tensor h = model_as2(&m->dec.hidden[m->cfg.decoder_layers], N, D);
  dq_tensor logits = model_as2(&m->logits, N, V);
  dq_tensor w = model_lm_head_weight(m);
  int64_t v1[1] = {V};
  dq_tensor bias = model_view(&m->work, m->final_bias_off, 1, v1);
  MODEL_TRY(dq_matmul(&logits, &h, &w, 0, 1, 1.0f, 0.0f));
  return dq_add(&logits, &logits, &bias);
}

dq_status bart_lm_head_backward(dq_model *m, const dq_tensor *dlogits, dq_tensor *dh) {
  int64_t N = m->B * m->T, D = m->cfg.d_model, V = m->cfg.vocab_size;
  dq_tensor h = model_as2(&m->dec.hidden[m->cfg.decoder_layers], N, D);
  dq_tensor dl = model_as2(dlogits, N, V), dh2 = model_as2(dh, N, D);
  dq_tensor w = model_lm_head_weight(m);
  int64_t vd[2] = {V, D};
  dq_tensor gw = model_view(&m->grads, m->shared_off, 2, vd);
  MODEL_TRY(dq_matmul(&dh2, &dl, &w, 0, 0, 1.0f, 0.0f));
  return dq_matmul(&gw, &dl, &h, 1, 0, 1.0f, 1.0f);
}
