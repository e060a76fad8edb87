/*
 * model_forward.c: a model's forward (inputs checked and staged, masks,
 * encoder, decoder, LM head), its backward from the injected output
 * gradients, and the outputs as the API hands them out.
 */
#include "model_internal.h"

#include <string.h>

/* ---- inputs ------------------------------------------------------------------------ */

static dq_status check_ids(const dq_model *m, const dq_tensor *ids, const char *what, int64_t B) {
  const char *op = "dq_model_forward";
  MODEL_TRY(dq_check_defined(op, what, ids));
  if (ids->dtype != DQ_I32 && ids->dtype != DQ_I64)
    return dq_fail(DQ_ERR_DTYPE, "%s: %s is %s; expected i32 or i64 token ids", op, what, dq_desc(ids));
  if (ids->ndim != 2)
    return dq_fail(DQ_ERR_SHAPE, "%s: %s is %s; expected [batch, length]", op, what, dq_desc(ids));
  if (B >= 0 && ids->shape[0] != B)
    return dq_fail(DQ_ERR_SHAPE, "%s: %s is %s but input_ids has batch %lld", op, what, dq_desc(ids), (long long)B);
  int64_t L = ids->shape[1], P = m->cfg.max_position_embeddings;
  if (ids->shape[0] < 1 || L < 1)
    return dq_fail(DQ_ERR_SHAPE, "%s: %s is %s; batch and length must be at least 1", op, what, dq_desc(ids));
  if (L > P)
    return dq_fail(DQ_ERR_SHAPE, "%s: %s has length %lld, longer than max_position_embeddings = %lld of this model",
                   op, what, (long long)L, (long long)P);
  if (ids->device == DQ_CPU) {
    int64_t V = m->cfg.vocab_size;
    for (int64_t i = 0; i < ids->numel; i++) {
      int64_t id = ids->dtype == DQ_I64 ? ((const int64_t *)ids->data)[i] : ((const int32_t *)ids->data)[i];
      if (id < 0 || id >= V)
        return dq_fail(DQ_ERR_ARGUMENT, "%s: %s[%lld][%lld] is %lld, outside the vocabulary [0, %lld)", op, what,
                       (long long)(i / L), (long long)(i % L), (long long)id, (long long)V);
    }
  }
  return DQ_OK;
}

static dq_status check_mask(const dq_tensor *mask, const char *what, const dq_tensor *ids) {
  const char *op = "dq_model_forward";
  if (!mask || !dq_tensor_defined(mask)) return DQ_OK;
  if (mask->ndim != 2 || mask->shape[0] != ids->shape[0] || mask->shape[1] != ids->shape[1])
    return dq_fail(DQ_ERR_SHAPE, "%s: %s is %s; expected the shape of the ids %s", op, what, dq_desc(mask),
                   dq_desc(ids));
  return DQ_OK;
}

/* Copy the caller's ids into the arena in their own dtype (a plain copy,
 * also across devices). */
static dq_status stage_ids(model_stack_act *st, const dq_tensor *ids) {
  int64_t n[1] = {ids->numel};
  st->ids.dtype = ids->dtype;
  dq_tensor src = model_as(ids, 1, n);
  return dq_copy(&st->ids, &src);
}

/* 1/0 keep flags into the activation dtype. From another device the bytes
 * move first in the source dtype through scratch, so nothing is allocated. */
static dq_status stage_mask(dq_model *m, model_stack_act *st, const dq_tensor *mask) {
  st->has_pad = mask && dq_tensor_defined(mask);
  if (!st->has_pad) return DQ_OK;
  int64_t n[1] = {mask->numel};
  dq_tensor src = model_as(mask, 1, n);
  if (mask->device == m->device) return dq_copy(&st->pad, &src);
  dq_tensor stage = model_as(&m->s_proj, 1, n);
  stage.dtype = mask->dtype;
  MODEL_TRY(dq_copy(&stage, &src));
  return dq_copy(&st->pad, &stage);
}

/* ---- forward ------------------------------------------------------------------------ */

static dq_status run_stack(dq_model *m, int decoder) {
  int layers = decoder ? m->cfg.decoder_layers : m->cfg.encoder_layers;
  MODEL_TRY(bart_embed_forward(m, decoder));
  for (int l = 0; l < layers; l++) MODEL_TRY(bart_layer_forward(m, decoder, l));
  if (m->is_mbart) MODEL_TRY(bart_final_norm_forward(m, decoder));
  return DQ_OK;
}

dq_status model_prepare_weights(dq_model *m, int force) {
  /* A plain bf16 copy is refreshed by every training forward; quantized
   * weights only when the latent weights may have changed (work_dirty), so
   * that they are computed once per step, not once per forward. */
  int quantized = m->hooks && m->hooks->weights;
  if (!force && !m->work_dirty && (quantized || !m->training)) return DQ_OK;
  MODEL_TRY(model_refresh_work(m, 1));
  if (m->hooks && m->hooks->weights) MODEL_TRY(m->hooks->weights(m->hooks->ctx, m));
  m->work_dirty = 0;
  return DQ_OK;
}

dq_status dq_model_forward(dq_model *m, const dq_tensor *input_ids, const dq_tensor *attention_mask,
                           const dq_tensor *decoder_input_ids, const dq_tensor *decoder_attention_mask,
                           int32_t flags) {
  const char *op = "dq_model_forward";
  if (!m) return dq_fail(DQ_ERR_ARGUMENT, "%s: model is NULL", op);
  if (flags & ~(DQ_FORWARD_HIDDEN_STATES | DQ_FORWARD_ATTENTIONS))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: unknown flags 0x%x", op, (unsigned)flags);
  MODEL_TRY(check_ids(m, input_ids, "input_ids", -1));
  MODEL_TRY(check_ids(m, decoder_input_ids, "decoder_input_ids", input_ids->shape[0]));
  MODEL_TRY(check_mask(attention_mask, "attention_mask", input_ids));
  MODEL_TRY(check_mask(decoder_attention_mask, "decoder_attention_mask", decoder_input_ids));
  m->have_forward = m->have_train_forward = 0;
  int64_t B = input_ids->shape[0], S = input_ids->shape[1], T = decoder_input_ids->shape[1];
  MODEL_TRY(model_prepare_arena(m, B, S, T, flags));
  m->forward_flags = flags;
  MODEL_TRY(stage_ids(&m->enc, input_ids));
  MODEL_TRY(stage_ids(&m->dec, decoder_input_ids));
  MODEL_TRY(stage_mask(m, &m->enc, attention_mask));
  MODEL_TRY(stage_mask(m, &m->dec, decoder_attention_mask));
  MODEL_TRY(model_prepare_weights(m, 0));
  MODEL_TRY(bart_build_masks(m));
  MODEL_TRY(run_stack(m, 0));
  MODEL_TRY(run_stack(m, 1));
  MODEL_TRY(bart_lm_head_forward(m));
  m->have_forward = 1;
  if (m->training) {
    MODEL_TRY(model_injections_reset(m));
    m->have_train_forward = 1;
  }
  return DQ_OK;
}

/* ---- backward --------------------------------------------------------------------------- */

/* grad ([N, D] rows) += the injected gradient of hidden state `index`. */
static dq_status add_hidden_injection(dq_model *m, int kind, int index, dq_tensor *grad, int64_t N) {
  model_injection *inj = &m->inj[kind][index];
  if (!inj->active) return DQ_OK;
  dq_tensor g = model_as2(grad, N, m->cfg.d_model), v = model_as2(&inj->view, N, m->cfg.d_model);
  return dq_add(&g, &g, &v);
}

/* From the gradient of the stack's last hidden state in *cur to the
 * embeddings. */
static dq_status backward_stack(dq_model *m, int decoder, dq_tensor *cur, dq_tensor *other) {
  int layers = decoder ? m->cfg.decoder_layers : m->cfg.encoder_layers;
  int kind = decoder ? DQ_OUT_DECODER_HIDDEN : DQ_OUT_ENCODER_HIDDEN;
  int64_t N = m->B * (decoder ? m->T : m->S), D = m->cfg.d_model;
  MODEL_TRY(add_hidden_injection(m, kind, layers, cur, N));
  if (m->is_mbart) {
    dq_tensor dy = model_as2(cur, N, D), dx = model_as2(other, N, D);
    MODEL_TRY(bart_final_norm_backward(m, decoder, &dy, &dx));
    dq_tensor *t = cur;
    cur = other;
    other = t;
  }
  for (int l = layers - 1; l >= 0; l--) {
    MODEL_TRY(bart_layer_backward(m, decoder, l, &cur, &other));
    MODEL_TRY(add_hidden_injection(m, kind, l, cur, N));
  }
  return bart_embed_backward(m, decoder, cur);
}

dq_status dq_model_backward(dq_model *m) {
  const char *op = "dq_model_backward";
  if (!m) return dq_fail(DQ_ERR_ARGUMENT, "%s: model is NULL", op);
  if (!m->training || !m->have_train_forward)
    return dq_fail(DQ_ERR_STATE, "%s: needs a forward in training mode first (dq_model_set_training(m, 1))", op);
  MODEL_TRY(model_ensure_grads(m));
  int64_t Nd = m->B * m->T, D = m->cfg.d_model;
  dq_tensor top = model_as2(&m->g_a, Nd, D);
  model_injection *dlogits = &m->inj[DQ_OUT_LOGITS][0];
  if (dlogits->active) MODEL_TRY(bart_lm_head_backward(m, &dlogits->view, &top));
  else MODEL_TRY(dq_fill(&top, 0.0));
  /* Cross-attention adds the gradient of the encoder output here. */
  MODEL_TRY(dq_fill(&m->g_enc, 0.0));
  MODEL_TRY(backward_stack(m, 1, &m->g_a, &m->g_b));
  MODEL_TRY(backward_stack(m, 0, &m->g_enc, &m->g_a));
  if (m->hooks && m->hooks->weights_backward) MODEL_TRY(m->hooks->weights_backward(m->hooks->ctx, m));
  /* An optimizer step is expected before the next forward (unless the
   * caller recomputes quantized weights once per step itself). */
  if (!m->weights_by_caller) m->work_dirty = 1;
  return DQ_OK;
}

/* ---- outputs ------------------------------------------------------------------------------ */

dq_status dq_model_num_outputs(const dq_model *m, int32_t kind, int32_t *count) {
  if (!m || !count) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_num_outputs: NULL argument");
  int n = model_num_outputs(m, kind);
  if (n < 0) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_num_outputs: output kind %d is not valid (0 to %d)", kind,
                            DQ_OUT_NUM_KINDS - 1);
  *count = n;
  return DQ_OK;
}

dq_status dq_model_output(dq_model *m, int32_t kind, int32_t index, dq_tensor *out) {
  if (!m || !out) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_output: NULL argument");
  dq_tensor v = {0};
  MODEL_TRY(model_output_view(m, kind, index, &v));
  return dq_tensor_share(out, &v);
}

dq_status dq_model_output_grad(dq_model *m, int32_t kind, int32_t index, dq_tensor *out) {
  if (!m || !out) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_output_grad: NULL argument");
  dq_tensor v = {0};
  MODEL_TRY(model_injection_get(m, kind, index, &v));
  return dq_tensor_share(out, &v);
}
