/*
 * model_arena.c: the activation arena. Every activation of a forward (and
 * the scratch of its backward) is a view into one allocation, carved for
 * the batch shape at hand. The arena grows only when a batch needs more
 * bytes than any before it, so once the largest batch has been through, a
 * step allocates nothing.
 *
 * Training mode keeps, per layer, what the backward needs; eval mode keeps
 * nothing for a backward: the layers share one set of buffers, hidden
 * states alternate between two buffers unless they were asked for, and
 * attention maps exist only when asked for.
 *
 * Also here: the outputs as callers see them and the injection buffers of
 * their gradients.
 */
#include "model_internal.h"

#include <string.h>

enum { ARENA_ALIGN = 256 };

typedef struct carver {
  int measure;
  int64_t bytes;
  const dq_tensor *arena;
} carver;

static void carve(carver *c, dq_tensor *t, int ndim, const int64_t *shape, int dtype) {
  int64_t off = (c->bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
  int64_t bytes = dq_shape_numel(ndim, shape) * dq_dtype_size(dtype);
  if (!c->measure) {
    dq_tensor v = model_as(c->arena, ndim, shape);
    v.data = (char *)c->arena->data + off;
    v.dtype = dtype;
    *t = v;
  }
  c->bytes = off + bytes;
}

static void carve2(carver *c, dq_tensor *t, int64_t rows, int64_t cols, int dtype) {
  int64_t s[2] = {rows, cols};
  carve(c, t, 2, s, dtype);
}

static void carve1(carver *c, dq_tensor *t, int64_t n, int dtype) {
  int64_t s[1] = {n};
  carve(c, t, 1, s, dtype);
}

static void carve4(carver *c, dq_tensor *t, int64_t a, int64_t b, int64_t d, int64_t e, int dtype) {
  int64_t s[4] = {a, b, d, e};
  carve(c, t, 4, s, dtype);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

typedef struct carve_plan {
  int64_t B, S, T;
  int save;        /* training: keep everything for the backward */
  int keep_hidden; /* eval: hidden states asked for */
  int keep_attn;   /* eval: attention maps asked for */
  int hooks;       /* quantized copies */
} carve_plan;

static void carve_block(const dq_model *m, carver *c, const carve_plan *p, int decoder, int kind,
                        model_block_act *a) {
  int act = m->dtype;
  int64_t B = p->B, L = decoder ? p->T : p->S, S = p->S, N = B * L, D = m->cfg.d_model;
  int64_t H = decoder ? m->cfg.decoder_attention_heads : m->cfg.encoder_attention_heads, Dh = D / H;
  int64_t F = decoder ? m->cfg.decoder_ffn_dim : m->cfg.encoder_ffn_dim;
  /* kind: 0 self, 1 cross, 2 ffn */
  if (m->is_mbart) carve2(c, &a->f_in, N, D, act);
  else carve2(c, &a->norm_in, N, D, act);
  if (kind != 2) carve2(c, &a->y, N, D, act); /* the ffn block's y is the layer output */
  if (p->save) {
    carve1(c, &a->mean, N, DQ_F32);
    carve1(c, &a->rstd, N, DQ_F32);
  }
  if (kind == 0) {
    int64_t s5[5] = {3, B, H, L, Dh};
    carve(c, &a->heads, 5, s5, act);
    carve4(c, &a->probs, B, H, L, L, act);
    carve2(c, &a->ctx, N, D, act);
  } else if (kind == 1) {
    int64_t s5[5] = {2, B, H, S, Dh};
    carve4(c, &a->heads, B, H, L, Dh, act);
    carve(c, &a->kv, 5, s5, act);
    carve4(c, &a->probs, B, H, L, S, act);
    carve2(c, &a->ctx, N, D, act);
  } else {
    carve2(c, &a->f1, N, F, act);
    carve2(c, &a->act, N, F, act);
  }
  if (p->hooks) {
    int64_t keys = kind == 1 ? S : L;
    carve2(c, &a->q_in, N, D, act);
    if (kind == 2) {
      carve2(c, &a->q_act, N, F, act);
    } else {
      if (kind == 1) carve2(c, &a->q_in2, B * S, D, act);
      carve2(c, &a->q_ctx, N, D, act);
      carve4(c, &a->query_scaled, B, H, L, Dh, act);
      carve4(c, &a->q_query, B, H, L, Dh, act);
      carve4(c, &a->q_key, B, H, keys, Dh, act);
      carve4(c, &a->q_value, B, H, keys, Dh, act);
      carve4(c, &a->q_probs, B, H, L, keys, act);
    }
  }
}

/* Wire the blocks of a layer to each other and to the layer's input x and
 * output y. */
static void wire_layer(const dq_model *m, int decoder, model_layer_act *la, const dq_tensor *x, const dq_tensor *y) {
  model_block_act *blocks[3] = {&la->self, decoder ? &la->cross : NULL, &la->ffn};
  const dq_tensor *in = x;
  for (int i = 0; i < 3; i++) {
    model_block_act *a = blocks[i];
    if (!a) continue;
    a->x = *in;
    if (m->is_mbart) a->norm_in = a->x;
    else a->f_in = a->x;
    if (i == 2) a->y = *y;
    in = &a->y;
  }
}

static void carve_stack(dq_model *m, carver *c, const carve_plan *p, int decoder) {
  model_stack_act *st = decoder ? &m->dec : &m->enc;
  int layers = decoder ? m->cfg.decoder_layers : m->cfg.encoder_layers;
  int act = m->dtype;
  int64_t B = p->B, L = decoder ? p->T : p->S, N = B * L, D = m->cfg.d_model;
  int keep_hidden = p->save || p->keep_hidden;
  int keep_attn = p->save || p->keep_attn;

  /* Reset the views (a previous carving may have been for another mode),
   * keeping the per-layer arrays. */
  dq_tensor *hidden = st->hidden;
  model_layer_act *acts = st->layers;
  int has_pad = st->has_pad;
  memset(st, 0, sizeof *st);
  st->hidden = hidden;
  st->layers = acts;
  st->has_pad = has_pad;
  memset(hidden, 0, sizeof *hidden * (size_t)(layers + 1));
  memset(acts, 0, sizeof *acts * (size_t)(layers > 0 ? layers : 1));
  st->len = L;

  carve1(c, &st->ids, N, DQ_I64); /* dtype set to the input's (i32 or i64) when staged */
  carve1(c, &st->pad, N, act);
  if (decoder) carve4(c, &st->mask, B, 1, L, L, act);
  else carve4(c, &st->mask, B, 1, 1, L, act);
  carve2(c, &st->emb, N, D, act);
  if (p->save) {
    carve1(c, &st->emb_mean, N, DQ_F32);
    carve1(c, &st->emb_rstd, N, DQ_F32);
  }
  dq_tensor pp[2];
  if (!keep_hidden) {
    carve2(c, &pp[0], N, D, act);
    carve2(c, &pp[1], N, D, act);
  }
  for (int i = 0; i <= layers; i++) {
    if (keep_hidden) carve2(c, &hidden[i], N, D, act);
    else hidden[i] = pp[i % 2];
  }
  if (m->is_mbart) {
    /* hidden[layers] is the final layer_norm's output; the last layer's own
     * output is kept apart. */
    if (!keep_hidden) carve2(c, &hidden[layers], N, D, act);
    if (p->save) {
      carve2(c, &st->last_out, N, D, act);
      carve1(c, &st->final_mean, N, DQ_F32);
      carve1(c, &st->final_rstd, N, DQ_F32);
    } else if (keep_hidden) {
      carve2(c, &st->last_out, N, D, act);
    } else {
      st->last_out = pp[layers % 2];
    }
  }
  if (p->save && m->p_dropout > 0.0f) carve2(c, &st->emb_ln, N, D, act);
  else st->emb_ln = hidden[0];

  for (int l = 0; l < layers; l++) {
    model_layer_act *la = &acts[l];
    if (p->save || l == 0) {
      carve_block(m, c, p, decoder, 0, &la->self);
      if (decoder) carve_block(m, c, p, decoder, 1, &la->cross);
      carve_block(m, c, p, decoder, 2, &la->ffn);
    } else {
      *la = acts[0];
      if (keep_attn) {
        int64_t H = decoder ? m->cfg.decoder_attention_heads : m->cfg.encoder_attention_heads;
        carve4(c, &la->self.probs, B, H, L, L, act);
        if (decoder) carve4(c, &la->cross.probs, B, H, L, p->S, act);
      }
    }
    const dq_tensor *y = m->is_mbart && l == layers - 1 ? &st->last_out : &hidden[l + 1];
    wire_layer(m, decoder, la, &hidden[l], y);
  }
}

static void carve_all(dq_model *m, carver *c, const carve_plan *p) {
  int act = m->dtype;
  const dq_bart_config *cfg = &m->cfg;
  int64_t B = p->B, S = p->S, T = p->T, D = cfg->d_model, V = cfg->vocab_size;
  int64_t Nmax = B * max64(S, T), F = max64(cfg->encoder_ffn_dim, cfg->decoder_ffn_dim);
  int64_t He = cfg->encoder_attention_heads, Hd = cfg->decoder_attention_heads;
  int64_t attn = max64(max64(B * He * S * S, B * Hd * T * T), max64(B * Hd * T * S, B * T * T));

  carve2(c, &m->s_proj, Nmax, 3 * D, act);
  carve1(c, &m->s_attn1, attn, act);
  carve1(c, &m->s_attn2, attn, act);
  carve2(c, &m->s_ctxh, Nmax, D, act);
  carve2(c, &m->s_fout, Nmax, D, act);
  if (p->save && m->p_activation > 0.0f) carve2(c, &m->s_actd, Nmax, F, act);
  if (p->hooks) carve2(c, &m->s_ste, Nmax, max64(D, F), act);
  carve2(c, &m->causal, T, T, act);
  carve2(c, &m->causal_keep, T, T, act);
  int64_t btv[3] = {B, T, V};
  carve(c, &m->logits, 3, btv, act);
  carve_stack(m, c, p, 0);
  carve_stack(m, c, p, 1);
  if (p->save) {
    carve2(c, &m->g_a, Nmax, D, act);
    carve2(c, &m->g_b, Nmax, D, act);
    carve2(c, &m->g_c, Nmax, D, act);
    carve2(c, &m->g_d, Nmax, D, act);
    carve2(c, &m->g_heads, Nmax, 3 * D, act);
    carve2(c, &m->g_proj, Nmax, 3 * D, act);
    carve2(c, &m->g_ff, Nmax, F, act);
    carve2(c, &m->g_enc, B * S, D, act);
    carve1(c, &m->g_row, D, DQ_F32);
  }
}

void model_free_arena(dq_model *m) {
  dq_tensor_release(&m->arena);
  m->arena_bytes = 0;
  m->carved = 0;
  m->causal_len = 0;
}

dq_status model_prepare_arena(dq_model *m, int64_t B, int64_t S, int64_t T, int flags) {
  /* Quantized activation copies exist only with an activation hook. */
  carve_plan p = {.B = B, .S = S, .T = T, .save = m->training, .hooks = m->hooks && m->hooks->activation};
  if (!m->training) {
    p.keep_hidden = (flags & DQ_FORWARD_HIDDEN_STATES) != 0;
    p.keep_attn = (flags & DQ_FORWARD_ATTENTIONS) != 0;
  }
  int mode = (p.save ? 1 : 0) | (p.keep_hidden ? 2 : 0) | (p.keep_attn ? 4 : 0);
  if (m->carved && m->B == B && m->S == S && m->T == T && m->arena_mode == mode &&
      m->arena_hooks == p.hooks)
    return DQ_OK;
  carver c = {.measure = 1};
  carve_all(m, &c, &p);
  if (c.bytes > m->arena_bytes) {
    /* Views handed out earlier keep the old arena alive until released. */
    dq_tensor_release(&m->arena);
    m->arena_bytes = 0;
    m->carved = 0;
    int64_t shape[1] = {c.bytes};
    dq_status st = dq_tensor_empty(&m->arena, 1, shape, DQ_I8, m->device);
    if (st) return dq_fail_context(st, "allocating the activation arena for batch %lld x (%lld, %lld): ",
                                   (long long)B, (long long)S, (long long)T);
    m->arena_bytes = c.bytes;
  }
  c = (carver){.measure = 0, .arena = &m->arena};
  carve_all(m, &c, &p);
  m->B = B;
  m->S = S;
  m->T = T;
  m->arena_mode = mode;
  m->arena_hooks = p.hooks;
  m->carved = 1;
  m->causal_len = 0; /* the causal mask's place may have moved */
  return DQ_OK;
}

/* ---- outputs and their injected gradients ------------------------------------------ */

int model_num_outputs(const dq_model *m, int kind) {
  switch (kind) {
  case DQ_OUT_LOGITS: return 1;
  case DQ_OUT_ENCODER_HIDDEN: return m->cfg.encoder_layers + 1;
  case DQ_OUT_DECODER_HIDDEN: return m->cfg.decoder_layers + 1;
  case DQ_OUT_ENCODER_ATTENTION: return m->cfg.encoder_layers;
  case DQ_OUT_DECODER_ATTENTION:
  case DQ_OUT_CROSS_ATTENTION: return m->cfg.decoder_layers;
  default: return -1;
  }
}

static const char *kind_name(int kind) {
  static const char *const names[DQ_OUT_NUM_KINDS] = {"logits", "encoder hidden states", "decoder hidden states",
                                                      "encoder attentions", "decoder attentions",
                                                      "cross attentions"};
  return kind >= 0 && kind < DQ_OUT_NUM_KINDS ? names[kind] : "?";
}

dq_status model_check_output(const dq_model *m, int kind, int index, const char *op) {
  int n = model_num_outputs(m, kind);
  if (n < 0)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: output kind %d is not one of logits (0), encoder hidden (1), decoder hidden "
                                    "(2), encoder attention (3), decoder attention (4), cross attention (5)",
                   op, kind);
  if (index < 0 || index >= n)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: index %d of %s is out of range (0 to %d)", op, index, kind_name(kind), n - 1);
  if (!m->carved || !m->have_forward)
    return dq_fail(DQ_ERR_STATE, "%s: no forward has run yet", op);
  return DQ_OK;
}

static int stored(const dq_model *m, int kind) {
  if (m->training || kind == DQ_OUT_LOGITS) return 1;
  if (kind == DQ_OUT_ENCODER_HIDDEN || kind == DQ_OUT_DECODER_HIDDEN)
    return (m->forward_flags & DQ_FORWARD_HIDDEN_STATES) != 0;
  return (m->forward_flags & DQ_FORWARD_ATTENTIONS) != 0;
}

dq_status model_output_view(dq_model *m, int kind, int index, dq_tensor *view) {
  const char *op = "dq_model_output";
  MODEL_TRY(model_check_output(m, kind, index, op));
  if (!stored(m, kind))
    return dq_fail(DQ_ERR_STATE, "%s: the last forward ran in eval mode without keeping %s; pass %s to the forward",
                   op, kind_name(kind),
                   kind == DQ_OUT_ENCODER_HIDDEN || kind == DQ_OUT_DECODER_HIDDEN ? "DQ_FORWARD_HIDDEN_STATES"
                                                                                  : "DQ_FORWARD_ATTENTIONS");
  int64_t D = m->cfg.d_model;
  switch (kind) {
  case DQ_OUT_LOGITS: *view = m->logits; break;
  case DQ_OUT_ENCODER_HIDDEN:
  case DQ_OUT_DECODER_HIDDEN: {
    const model_stack_act *st = kind == DQ_OUT_ENCODER_HIDDEN ? &m->enc : &m->dec;
    int64_t s[3] = {m->B, st->len, D};
    *view = model_as(&st->hidden[index], 3, s);
    break;
  }
  case DQ_OUT_ENCODER_ATTENTION: *view = m->enc.layers[index].self.probs; break;
  case DQ_OUT_DECODER_ATTENTION: *view = m->dec.layers[index].self.probs; break;
  default: *view = m->dec.layers[index].cross.probs; break;
  }
  return DQ_OK;
}

/* Point an injection at the current output shape, growing its buffer when
 * the output outgrew it, and zero it. */
static dq_status injection_fit(dq_model *m, model_injection *inj, const dq_tensor *like) {
  if (!dq_tensor_defined(&inj->buffer) || inj->buffer.numel < like->numel) {
    dq_tensor_release(&inj->buffer);
    int64_t shape[1] = {like->numel};
    MODEL_TRY(dq_tensor_empty(&inj->buffer, 1, shape, m->dtype, m->device));
  }
  inj->view = model_as(&inj->buffer, like->ndim, like->shape);
  return dq_fill(&inj->view, 0.0);
}

dq_status model_injection_get(dq_model *m, int kind, int index, dq_tensor *view) {
  const char *op = "dq_model_output_grad";
  MODEL_TRY(model_check_output(m, kind, index, op));
  if (!m->training)
    return dq_fail(DQ_ERR_STATE, "%s: output gradients exist in training mode only (the model is in eval mode)", op);
  model_injection *inj = &m->inj[kind][index];
  if (!inj->active) {
    dq_tensor out = {0};
    MODEL_TRY(model_output_view(m, kind, index, &out));
    MODEL_TRY(injection_fit(m, inj, &out));
    inj->active = 1;
  }
  *view = inj->view;
  return DQ_OK;
}

dq_status model_injections_reset(dq_model *m) {
  for (int kind = 0; kind < DQ_OUT_NUM_KINDS; kind++) {
    int n = model_num_outputs(m, kind);
    for (int i = 0; i < n; i++) {
      model_injection *inj = &m->inj[kind][i];
      if (!inj->active) continue;
      dq_tensor out = {0};
      MODEL_TRY(model_output_view(m, kind, i, &out));
      MODEL_TRY(injection_fit(m, inj, &out));
    }
  }
  return DQ_OK;
}
