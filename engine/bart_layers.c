/*
 * bart_layers.c: forward and backward of the encoder and decoder layers.
 *
 * A layer is residual sub-blocks (self-attention, cross-attention in the
 * decoder, feed-forward), each
 *   BART (post-LN):  y = LN(x + dropout(f(x)))
 *   mBART (pre-LN):  y = x + dropout(f(LN(x)))
 * as transformers' BartEncoderLayer / MBartEncoderLayer and the decoder
 * layers compute them. The activations each block keeps for its backward
 * are views the arena carved (model_arena.c); shared scratch holds what the
 * backward recomputes (dropout masks from their Philox offsets).
 */
#include "model_internal.h"

enum { BLOCK_SELF = 0, BLOCK_CROSS = 1, BLOCK_FFN = 2 };

/* ---- small shared pieces ------------------------------------------------------ */

int bart_dropout_active(const dq_model *m, float p) { return m->training && p > 0.0f; }

dq_status bart_dropout(dq_model *m, const dq_tensor *x, dq_tensor *out, float p, uint64_t *offset) {
  *offset = m->rng_offset;
  m->rng_offset += dq_rng_span(x->numel);
  return dq_dropout(out, x, p, m->rng_seed, *offset);
}

dq_status bart_dropout_backward(dq_model *m, const dq_tensor *dy, dq_tensor *dx, float p, uint64_t offset) {
  return dq_dropout_backward(dx, dy, p, m->rng_seed, offset);
}

/* LayerNorm reads the f32 master weights in every mode (they are never
 * quantized; the CUDA kernels take bf16 activations with f32 parameters),
 * so its parameter gradients go straight into the f32 gradient buffer. */
static void norm_views(const model_norm *n, const dq_tensor *buf, dq_tensor *w, dq_tensor *b) {
  int64_t s[1] = {n->dim};
  *w = model_view(buf, n->w_off, 1, s);
  *b = model_view(buf, n->b_off, 1, s);
}

dq_status bart_norm(dq_model *m, const model_norm *n, const dq_tensor *x, dq_tensor *y, dq_tensor *mean,
                    dq_tensor *rstd) {
  dq_tensor w, b;
  norm_views(n, &m->master, &w, &b);
  int keep = m->training && mean && dq_tensor_defined(mean);
  return dq_layernorm(y, keep ? mean : NULL, keep ? rstd : NULL, x, &w, &b, (float)m->cfg.layer_norm_eps);
}

dq_status bart_norm_backward(dq_model *m, const model_norm *n, const dq_tensor *dy, const dq_tensor *x,
                             const dq_tensor *mean, const dq_tensor *rstd, dq_tensor *dx) {
  dq_tensor w, b, gw, gb;
  norm_views(n, &m->master, &w, &b);
  norm_views(n, &m->grads, &gw, &gb);
  return dq_layernorm_backward(dx, &gw, &gb, dy, x, &w, mean, rstd, 1);
}

/* ---- geometry ------------------------------------------------------------------ */

typedef struct geom {
  int64_t B, L, S, H, Dh, D, N;
} geom;

static geom layer_geom(const dq_model *m, int decoder) {
  geom g;
  g.B = m->B;
  g.L = decoder ? m->T : m->S;
  g.S = m->S;
  g.D = m->cfg.d_model;
  g.H = decoder ? m->cfg.decoder_attention_heads : m->cfg.encoder_attention_heads;
  g.Dh = g.D / g.H;
  g.N = g.B * g.L;
  return g;
}

static const model_layer_w *layer_w(const dq_model *m, int decoder, int layer) {
  return decoder ? &m->dec_w.layers[layer] : &m->enc_w.layers[layer];
}

static model_layer_act *layer_act(dq_model *m, int decoder, int layer) {
  return decoder ? &m->dec.layers[layer] : &m->enc.layers[layer];
}

/* The arena keeps the encoder mask carved between batches, so whether it
 * applies is this forward's has_pad, never whether the buffer exists. The
 * decoder always has one: causal, plus padding when has_pad. */
static const dq_tensor *self_mask(const dq_model *m, int decoder) {
  if (decoder) return &m->dec.mask;
  return m->enc.has_pad ? &m->enc.mask : NULL;
}

static const dq_tensor *cross_mask(const dq_model *m) { return m->enc.has_pad ? &m->enc.mask : NULL; }

/* The encoder output the cross-attention reads: the last encoder hidden state. */
static const dq_tensor *encoder_output(const dq_model *m) { return &m->enc.hidden[m->cfg.encoder_layers]; }

static const dq_tensor *probs_injection(dq_model *m, int decoder, int kind, int layer) {
  int out = kind == BLOCK_CROSS ? DQ_OUT_CROSS_ATTENTION : decoder ? DQ_OUT_DECODER_ATTENTION : DQ_OUT_ENCODER_ATTENTION;
  model_injection *inj = &m->inj[out][layer];
  return inj->active ? &inj->view : NULL;
}

static model_site make_site(int decoder, int layer, int kind, int which) {
  model_site s = {.decoder = decoder, .layer = layer, .kind = kind, .which = which};
  return s;
}

/* ---- f of each block: forward ----------------------------------------------------- */

static dq_status self_attn_forward(dq_model *m, int decoder, int layer, model_block_act *a, dq_tensor *fout) {
  const model_layer_w *w = layer_w(m, decoder, layer);
  geom g = layer_geom(m, decoder);
  model_site lin = make_site(decoder, layer, MODEL_SITE_LINEAR_INPUT, MODEL_LIN_SELF_QKV);
  model_site att = make_site(decoder, layer, MODEL_SITE_ATTN_QUERY, 0);
  /* One GEMM for q, k, v, then one permute [B, L, 3, H, Dh] -> [3, B, H, L, Dh]. */
  dq_tensor proj = model_as2(&m->s_proj, g.N, 3 * g.D);
  MODEL_TRY(bart_linear(m, &w->self_qkv, &lin, &a->f_in, &a->q_in, &proj));
  int64_t s5[5] = {g.B, g.L, 3, g.H, g.Dh};
  dq_tensor proj5 = model_as(&proj, 5, s5);
  static const int to_heads[5] = {2, 0, 3, 1, 4};
  MODEL_TRY(dq_permute(&a->heads, &proj5, to_heads));
  dq_tensor q = model_slice0(&a->heads, 0), k = model_slice0(&a->heads, 1), v = model_slice0(&a->heads, 2);
  int64_t s4[4] = {g.B, g.H, g.L, g.Dh};
  dq_tensor ctxh = model_as(&m->s_ctxh, 4, s4);
  MODEL_TRY(bart_attention_core(m, a, &att, &q, &k, &v, self_mask(m, decoder), &ctxh));
  int64_t c4[4] = {g.B, g.L, g.H, g.Dh};
  dq_tensor ctx4 = model_as(&a->ctx, 4, c4);
  static const int from_heads[4] = {0, 2, 1, 3};
  MODEL_TRY(dq_permute(&ctx4, &ctxh, from_heads));
  lin.which = MODEL_LIN_SELF_OUT;
  return bart_linear(m, &w->self_out, &lin, &a->ctx, &a->q_ctx, fout);
}

static dq_status cross_attn_forward(dq_model *m, int layer, model_block_act *a, dq_tensor *fout) {
  const model_layer_w *w = layer_w(m, 1, layer);
  geom g = layer_geom(m, 1);
  int64_t Ne = g.B * g.S;
  model_site lin = make_site(1, layer, MODEL_SITE_LINEAR_INPUT, MODEL_LIN_CROSS_Q);
  model_site att = make_site(1, layer, MODEL_SITE_ATTN_QUERY, 1);
  static const int bthd_to_bhtd[4] = {0, 2, 1, 3};
  dq_tensor proj = model_as2(&m->s_proj, g.N, g.D);
  MODEL_TRY(bart_linear(m, &w->cross_q, &lin, &a->f_in, &a->q_in, &proj));
  int64_t q4[4] = {g.B, g.L, g.H, g.Dh};
  dq_tensor proj4 = model_as(&proj, 4, q4);
  MODEL_TRY(dq_permute(&a->heads, &proj4, bthd_to_bhtd));
  lin.which = MODEL_LIN_CROSS_KV;
  dq_tensor kvproj = model_as2(&m->s_proj, Ne, 2 * g.D);
  MODEL_TRY(bart_linear(m, &w->cross_kv, &lin, encoder_output(m), &a->q_in2, &kvproj));
  int64_t s5[5] = {g.B, g.S, 2, g.H, g.Dh};
  dq_tensor kv5 = model_as(&kvproj, 5, s5);
  static const int to_heads[5] = {2, 0, 3, 1, 4};
  MODEL_TRY(dq_permute(&a->kv, &kv5, to_heads));
  dq_tensor k = model_slice0(&a->kv, 0), v = model_slice0(&a->kv, 1);
  int64_t s4[4] = {g.B, g.H, g.L, g.Dh};
  dq_tensor ctxh = model_as(&m->s_ctxh, 4, s4);
  MODEL_TRY(bart_attention_core(m, a, &att, &a->heads, &k, &v, cross_mask(m), &ctxh));
  dq_tensor ctx4 = model_as(&a->ctx, 4, q4);
  MODEL_TRY(dq_permute(&ctx4, &ctxh, bthd_to_bhtd));
  lin.which = MODEL_LIN_CROSS_OUT;
  return bart_linear(m, &w->cross_out, &lin, &a->ctx, &a->q_ctx, fout);
}

static dq_status ffn_forward(dq_model *m, int decoder, int layer, model_block_act *a, dq_tensor *fout) {
  const model_layer_w *w = layer_w(m, decoder, layer);
  model_site lin = make_site(decoder, layer, MODEL_SITE_LINEAR_INPUT, MODEL_LIN_FC1);
  MODEL_TRY(bart_linear(m, &w->fc1, &lin, &a->f_in, &a->q_in, &a->f1));
  if (m->cfg.activation == DQ_ACT_RELU) MODEL_TRY(dq_relu(&a->act, &a->f1));
  else MODEL_TRY(dq_gelu(&a->act, &a->f1));
  const dq_tensor *actd = &a->act;
  float p = m->p_activation;
  dq_tensor dropped = model_as(&m->s_actd, a->act.ndim, a->act.shape);
  if (bart_dropout_active(m, p)) {
    MODEL_TRY(bart_dropout(m, &a->act, &dropped, p, &a->off_act));
    actd = &dropped;
  }
  lin.which = MODEL_LIN_FC2;
  return bart_linear(m, &w->fc2, &lin, actd, &a->q_act, fout);
}

/* ---- f of each block: backward (dfo: gradient of f's output; the gradient
 * of f's input goes to dfin, added when beta is 1) ------------------------------- */

static dq_status out_proj_backward(dq_model *m, const model_linear *out, const model_site *site, model_block_act *a,
                                   const dq_tensor *dfo, const geom *g, dq_tensor *dctxh) {
  dq_tensor dctx = model_as2(&m->g_d, g->N, g->D);
  MODEL_TRY(bart_linear_backward(m, out, site, &a->ctx, &a->q_ctx, dfo, &dctx, 0.0f));
  int64_t c4[4] = {g->B, g->L, g->H, g->Dh};
  dq_tensor dctx4 = model_as(&dctx, 4, c4);
  static const int to_heads[4] = {0, 2, 1, 3};
  return dq_permute(dctxh, &dctx4, to_heads);
}

static dq_status self_attn_backward(dq_model *m, int decoder, int layer, model_block_act *a, const dq_tensor *dfo,
                                    dq_tensor *dfin, float beta) {
  const model_layer_w *w = layer_w(m, decoder, layer);
  geom g = layer_geom(m, decoder);
  model_site lin = make_site(decoder, layer, MODEL_SITE_LINEAR_INPUT, MODEL_LIN_SELF_OUT);
  model_site att = make_site(decoder, layer, MODEL_SITE_ATTN_QUERY, 0);
  int64_t s4[4] = {g.B, g.H, g.L, g.Dh};
  dq_tensor dctxh = model_as(&m->s_ctxh, 4, s4);
  MODEL_TRY(out_proj_backward(m, &w->self_out, &lin, a, dfo, &g, &dctxh));
  int64_t h5[5] = {3, g.B, g.H, g.L, g.Dh};
  dq_tensor gh = model_as(&m->g_heads, 5, h5);
  dq_tensor q = model_slice0(&a->heads, 0), k = model_slice0(&a->heads, 1), v = model_slice0(&a->heads, 2);
  dq_tensor dq = model_slice0(&gh, 0), dk = model_slice0(&gh, 1), dv = model_slice0(&gh, 2);
  MODEL_TRY(bart_attention_core_backward(m, a, &att, &q, &k, &v, &dctxh,
                                         probs_injection(m, decoder, BLOCK_SELF, layer), &dq, &dk, &dv));
  int64_t p5[5] = {g.B, g.L, 3, g.H, g.Dh};
  dq_tensor gp = model_as(&m->g_proj, 5, p5);
  static const int from_heads[5] = {1, 3, 0, 2, 4};
  MODEL_TRY(dq_permute(&gp, &gh, from_heads));
  dq_tensor gp2 = model_as2(&gp, g.N, 3 * g.D);
  lin.which = MODEL_LIN_SELF_QKV;
  return bart_linear_backward(m, &w->self_qkv, &lin, &a->f_in, &a->q_in, &gp2, dfin, beta);
}

static dq_status cross_attn_backward(dq_model *m, int layer, model_block_act *a, const dq_tensor *dfo,
                                     dq_tensor *dfin, float beta) {
  const model_layer_w *w = layer_w(m, 1, layer);
  geom g = layer_geom(m, 1);
  int64_t Ne = g.B * g.S;
  model_site lin = make_site(1, layer, MODEL_SITE_LINEAR_INPUT, MODEL_LIN_CROSS_OUT);
  model_site att = make_site(1, layer, MODEL_SITE_ATTN_QUERY, 1);
  int64_t s4[4] = {g.B, g.H, g.L, g.Dh};
  dq_tensor dctxh = model_as(&m->s_ctxh, 4, s4);
  MODEL_TRY(out_proj_backward(m, &w->cross_out, &lin, a, dfo, &g, &dctxh));
  /* g_heads holds dq [B, H, T, Dh] followed by dk, dv [2, B, H, S, Dh]. */
  dq_tensor gq = model_as(&m->g_heads, 4, s4);
  int64_t kv5[5] = {2, g.B, g.H, g.S, g.Dh};
  dq_tensor gkv = model_view(&m->g_heads, g.N * g.D, 5, kv5);
  dq_tensor k = model_slice0(&a->kv, 0), v = model_slice0(&a->kv, 1);
  dq_tensor dk = model_slice0(&gkv, 0), dv = model_slice0(&gkv, 1);
  MODEL_TRY(bart_attention_core_backward(m, a, &att, &a->heads, &k, &v, &dctxh,
                                         probs_injection(m, 1, BLOCK_CROSS, layer), &gq, &dk, &dv));
  int64_t q4[4] = {g.B, g.L, g.H, g.Dh};
  dq_tensor gp = model_as(&m->g_proj, 4, q4);
  static const int from_heads4[4] = {0, 2, 1, 3};
  MODEL_TRY(dq_permute(&gp, &gq, from_heads4));
  dq_tensor gp2 = model_as2(&gp, g.N, g.D);
  lin.which = MODEL_LIN_CROSS_Q;
  MODEL_TRY(bart_linear_backward(m, &w->cross_q, &lin, &a->f_in, &a->q_in, &gp2, dfin, beta));
  int64_t p5[5] = {g.B, g.S, 2, g.H, g.Dh};
  dq_tensor gpkv = model_as(&m->g_proj, 5, p5);
  static const int from_heads5[5] = {1, 3, 0, 2, 4};
  MODEL_TRY(dq_permute(&gpkv, &gkv, from_heads5));
  dq_tensor gpkv2 = model_as2(&gpkv, Ne, 2 * g.D);
  dq_tensor genc = model_as2(&m->g_enc, Ne, g.D);
  lin.which = MODEL_LIN_CROSS_KV;
  return bart_linear_backward(m, &w->cross_kv, &lin, encoder_output(m), &a->q_in2, &gpkv2, &genc, 1.0f);
}

static dq_status ffn_backward(dq_model *m, int decoder, int layer, model_block_act *a, const dq_tensor *dfo,
                              dq_tensor *dfin, float beta) {
  const model_layer_w *w = layer_w(m, decoder, layer);
  model_site lin = make_site(decoder, layer, MODEL_SITE_LINEAR_INPUT, MODEL_LIN_FC2);
  float p = m->p_activation;
  int drop = bart_dropout_active(m, p);
  const dq_tensor *actd = &a->act;
  dq_tensor dropped = model_as(&m->s_actd, a->act.ndim, a->act.shape);
  if (drop) {
    MODEL_TRY(dq_dropout(&dropped, &a->act, p, m->rng_seed, a->off_act));
    actd = &dropped;
  }
  dq_tensor gf = model_as(&m->g_ff, a->act.ndim, a->act.shape);
  MODEL_TRY(bart_linear_backward(m, &w->fc2, &lin, actd, &a->q_act, dfo, &gf, 0.0f));
  if (drop) MODEL_TRY(bart_dropout_backward(m, &gf, &gf, p, a->off_act));
  if (m->cfg.activation == DQ_ACT_RELU) MODEL_TRY(dq_relu_backward(&gf, &gf, &a->f1));
  else MODEL_TRY(dq_gelu_backward(&gf, &gf, &a->f1));
  lin.which = MODEL_LIN_FC1;
  return bart_linear_backward(m, &w->fc1, &lin, &a->f_in, &a->q_in, &gf, dfin, beta);
}

/* ---- blocks ----------------------------------------------------------------------- */

static const model_norm *block_norm(const model_layer_w *w, int kind) {
  return kind == BLOCK_SELF ? &w->self_ln : kind == BLOCK_CROSS ? &w->cross_ln : &w->final_ln;
}

static model_block_act *block_act(model_layer_act *la, int kind) {
  return kind == BLOCK_SELF ? &la->self : kind == BLOCK_CROSS ? &la->cross : &la->ffn;
}

static dq_status block_forward(dq_model *m, int decoder, int layer, int kind) {
  const model_norm *ln = block_norm(layer_w(m, decoder, layer), kind);
  model_block_act *a = block_act(layer_act(m, decoder, layer), kind);
  geom g = layer_geom(m, decoder);
  if (m->is_mbart) MODEL_TRY(bart_norm(m, ln, &a->x, &a->f_in, &a->mean, &a->rstd));
  dq_tensor fout = model_as2(&m->s_fout, g.N, g.D);
  if (kind == BLOCK_SELF) MODEL_TRY(self_attn_forward(m, decoder, layer, a, &fout));
  else if (kind == BLOCK_CROSS) MODEL_TRY(cross_attn_forward(m, layer, a, &fout));
  else MODEL_TRY(ffn_forward(m, decoder, layer, a, &fout));
  float p = m->p_dropout;
  if (bart_dropout_active(m, p)) MODEL_TRY(bart_dropout(m, &fout, &fout, p, &a->off_out));
  if (m->is_mbart) return dq_add(&a->y, &a->x, &fout);
  MODEL_TRY(dq_add(&a->norm_in, &a->x, &fout));
  return bart_norm(m, ln, &a->norm_in, &a->y, &a->mean, &a->rstd);
}

static dq_status f_backward(dq_model *m, int decoder, int layer, int kind, model_block_act *a, const dq_tensor *dfo,
                            dq_tensor *dfin, float beta) {
  if (kind == BLOCK_SELF) return self_attn_backward(m, decoder, layer, a, dfo, dfin, beta);
  if (kind == BLOCK_CROSS) return cross_attn_backward(m, layer, a, dfo, dfin, beta);
  return ffn_backward(m, decoder, layer, a, dfo, dfin, beta);
}

/* dy: gradient of the block output; dx (another buffer) receives the
 * gradient of its input. */
static dq_status block_backward(dq_model *m, int decoder, int layer, int kind, const dq_tensor *dy, dq_tensor *dx) {
  const model_norm *ln = block_norm(layer_w(m, decoder, layer), kind);
  model_block_act *a = block_act(layer_act(m, decoder, layer), kind);
  geom g = layer_geom(m, decoder);
  float p = m->p_dropout;
  int drop = bart_dropout_active(m, p);
  dq_tensor t1 = model_as2(&m->g_c, g.N, g.D);
  if (!m->is_mbart) {
    /* y = LN(x + drop(f(x))): dx = dsum + f'(drop'(dsum)) */
    MODEL_TRY(bart_norm_backward(m, ln, dy, &a->norm_in, &a->mean, &a->rstd, dx));
    const dq_tensor *dfo = dx;
    if (drop) {
      MODEL_TRY(bart_dropout_backward(m, dx, &t1, p, a->off_out));
      dfo = &t1;
    }
    return f_backward(m, decoder, layer, kind, a, dfo, dx, 1.0f);
  }
  /* y = x + drop(f(LN(x))): dx = dy + LN'(f'(drop'(dy))) */
  const dq_tensor *dfo = dy;
  if (drop) {
    MODEL_TRY(bart_dropout_backward(m, dy, &t1, p, a->off_out));
    dfo = &t1;
  }
  dq_tensor dfin = model_as2(&m->s_fout, g.N, g.D);
  MODEL_TRY(f_backward(m, decoder, layer, kind, a, dfo, &dfin, 0.0f));
  MODEL_TRY(bart_norm_backward(m, ln, &dfin, &a->x, &a->mean, &a->rstd, dx));
  return dq_axpby(dx, dy, 1.0f, 1.0f);
}

/* ---- layers --------------------------------------------------------------------------- */

dq_status bart_layer_forward(dq_model *m, int decoder, int layer) {
  /* The arena wired the layer input to the self block's x and the layer
   * output to the feed-forward block's y. */
  MODEL_TRY(block_forward(m, decoder, layer, BLOCK_SELF));
  if (decoder) MODEL_TRY(block_forward(m, decoder, layer, BLOCK_CROSS));
  return block_forward(m, decoder, layer, BLOCK_FFN);
}

dq_status bart_layer_backward(dq_model *m, int decoder, int layer, dq_tensor **cur, dq_tensor **other) {
  /* Blocks in reverse, each from *cur into *other, then the two swap. */
  static const int order[3] = {BLOCK_FFN, BLOCK_CROSS, BLOCK_SELF};
  geom g = layer_geom(m, decoder);
  for (int i = 0; i < 3; i++) {
    if (order[i] == BLOCK_CROSS && !decoder) continue;
    dq_tensor dy = model_as2(*cur, g.N, g.D), dx = model_as2(*other, g.N, g.D);
    MODEL_TRY(block_backward(m, decoder, layer, order[i], &dy, &dx));
    dq_tensor *t = *cur;
    *cur = *other;
    *other = t;
  }
  return DQ_OK;
}
