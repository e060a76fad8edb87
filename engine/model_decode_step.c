/*
 * model_decode_step.c: one decoder position for every row, with the
 * self-attention keys and values of earlier positions from the caches
 * (model_decode.h). The blocks compute what bart_layers.c computes for
 * the last position of a full forward:
 *   BART (post-LN):  y = LN(x + f(x))        mBART (pre-LN):  y = x + f(LN(x))
 * through the same seams (bart_linear, bart_attention_core) with the same
 * sites, so quantization hooks apply as in the model's forward.
 */
#include "model_decode.h"

#include <math.h>

typedef struct step_geom {
  int64_t B, beams, R, S, t, D, H, Dh, F, V;
} step_geom;

static model_site lin_site(int layer, int which) {
  model_site s = {.decoder = 1, .layer = layer, .kind = MODEL_SITE_LINEAR_INPUT, .which = which};
  return s;
}

static model_site attn_site(int layer, int cross) {
  model_site s = {.decoder = 1, .layer = layer, .kind = MODEL_SITE_ATTN_QUERY, .which = cross};
  return s;
}

/* An attention's activation record: the probabilities (and quantized
 * copies) shaped for this step, in the decoder arena. */
static model_block_act attention_act(const model_decode *d, const int64_t *q4, const int64_t *k4, const int64_t *p4) {
  model_block_act a = {0};
  a.probs = model_as(&d->probs, 4, p4);
  if (d->hooks) {
    a.query_scaled = model_as(&d->query_scaled, 4, q4);
    a.q_query = model_as(&d->q_query, 4, q4);
    a.q_key = model_as(&d->q_key, 4, k4);
    a.q_value = model_as(&d->q_value, 4, k4);
    a.q_probs = model_as(&d->q_probs, 4, p4);
  }
  return a;
}

static dq_tensor rows_view(const dq_tensor *t, const step_geom *g, int64_t cols) { return model_as2(t, g->R, cols); }

static dq_status self_attention(dq_model *m, model_decode *d, const step_geom *g, int l, const dq_tensor *fin,
                                const dq_tensor *reorder, dq_tensor *fout) {
  const model_layer_w *w = &m->dec_w.layers[l];
  model_site site = lin_site(l, MODEL_LIN_SELF_QKV);
  dq_tensor q_in = rows_view(&d->q_in, g, g->D), q_ctx = rows_view(&d->q_ctx, g, g->D);
  dq_tensor proj = rows_view(&d->proj, g, 3 * g->D);
  MODEL_TRY(bart_linear(m, &w->self_qkv, &site, fin, &q_in, &proj));
  /* [R, 3, D] -> [3, R, D]: q, k and v each contiguous. */
  int64_t p3[3] = {g->R, 3, g->D}, h3[3] = {3, g->R, g->D};
  static const int swap01[3] = {1, 0, 2};
  dq_tensor proj3 = model_as(&proj, 3, p3), heads = model_as(&d->heads, 3, h3);
  MODEL_TRY(dq_permute(&heads, &proj3, swap01));
  int64_t q4[4] = {g->R, g->H, 1, g->Dh}, f3[3] = {g->R, g->H, g->Dh};
  int64_t old4[4] = {g->R, g->H, g->t, g->Dh}, new4[4] = {g->R, g->H, g->t + 1, g->Dh};
  dq_tensor q = model_slice0(&heads, 0);
  q = model_as(&q, 4, q4);
  dq_tensor fresh_k = model_slice0(&heads, 1), fresh_v = model_slice0(&heads, 2);
  fresh_k = model_as(&fresh_k, 3, f3);
  fresh_v = model_as(&fresh_v, 3, f3);
  /* Gather (beam reordering) and append into the spare buffer, which then
   * holds the layer's cache; the old buffer becomes the spare. */
  int *slots[2] = {&d->self_k[l], &d->self_v[l]};
  const dq_tensor *fresh[2] = {&fresh_k, &fresh_v};
  dq_tensor kv[2];
  for (int i = 0; i < 2; i++) {
    dq_tensor old = model_as(&d->pool[*slots[i]], 4, old4);
    kv[i] = model_as(&d->pool[d->spare], 4, new4);
    MODEL_TRY(decode_kv_append(&kv[i], &old, fresh[i], reorder, g->R, g->H, g->t, g->Dh));
    int was = *slots[i];
    *slots[i] = d->spare;
    d->spare = was;
  }
  int64_t p4[4] = {g->R, g->H, 1, g->t + 1};
  model_block_act a = attention_act(d, q4, new4, p4);
  dq_tensor ctxh = model_as(&d->ctxh, 4, q4);
  model_site att = attn_site(l, 0);
  MODEL_TRY(bart_attention_core(m, &a, &att, &q, &kv[0], &kv[1], NULL, &ctxh));
  /* One query position: [R, H, 1, Dh] is already the [R, D] row layout. */
  dq_tensor ctx = rows_view(&ctxh, g, g->D);
  site.which = MODEL_LIN_SELF_OUT;
  return bart_linear(m, &w->self_out, &site, &ctx, &q_ctx, fout);
}

static dq_status cross_attention(dq_model *m, model_decode *d, const step_geom *g, int l, const dq_tensor *fin,
                                 dq_tensor *fout) {
  const model_layer_w *w = &m->dec_w.layers[l];
  model_site site = lin_site(l, MODEL_LIN_CROSS_Q);
  dq_tensor q_in = rows_view(&d->q_in, g, g->D), q_ctx = rows_view(&d->q_ctx, g, g->D);
  dq_tensor proj = rows_view(&d->proj, g, g->D);
  MODEL_TRY(bart_linear(m, &w->cross_q, &site, fin, &q_in, &proj));
  /* A source's beams are the query positions: [B, beams, H, Dh] -> [B, H, beams, Dh]. */
  int64_t r4[4] = {g->B, g->beams, g->H, g->Dh}, q4[4] = {g->B, g->H, g->beams, g->Dh};
  int64_t k4[4] = {g->B, g->H, g->S, g->Dh}, p4[4] = {g->B, g->H, g->beams, g->S};
  static const int swap12[4] = {0, 2, 1, 3};
  dq_tensor proj4 = model_as(&proj, 4, r4), q = model_as(&d->qh, 4, q4);
  MODEL_TRY(dq_permute(&q, &proj4, swap12));
  dq_tensor k = model_view(&d->cross_kv[l], 0, 4, k4), v = model_view(&d->cross_kv[l], g->B * g->S * g->D, 4, k4);
  model_block_act a = attention_act(d, q4, k4, p4);
  dq_tensor ctxh = model_as(&d->ctxh, 4, q4);
  model_site att = attn_site(l, 1);
  MODEL_TRY(bart_attention_core(m, &a, &att, &q, &k, &v, d->has_mask ? &d->enc_mask : NULL, &ctxh));
  dq_tensor ctx4 = model_as(&d->ctx, 4, r4);
  MODEL_TRY(dq_permute(&ctx4, &ctxh, swap12));
  dq_tensor ctx = rows_view(&d->ctx, g, g->D);
  site.which = MODEL_LIN_CROSS_OUT;
  return bart_linear(m, &w->cross_out, &site, &ctx, &q_ctx, fout);
}

static dq_status feed_forward(dq_model *m, model_decode *d, const step_geom *g, int l, const dq_tensor *fin,
                              dq_tensor *fout) {
  const model_layer_w *w = &m->dec_w.layers[l];
  model_site site = lin_site(l, MODEL_LIN_FC1);
  dq_tensor q_in = rows_view(&d->q_in, g, g->D), q_act = rows_view(&d->q_act, g, g->F);
  dq_tensor f1 = rows_view(&d->f1, g, g->F), act = rows_view(&d->act, g, g->F);
  MODEL_TRY(bart_linear(m, &w->fc1, &site, fin, &q_in, &f1));
  if (m->cfg.activation == DQ_ACT_RELU) MODEL_TRY(dq_relu(&act, &f1));
  else MODEL_TRY(dq_gelu(&act, &f1));
  site.which = MODEL_LIN_FC2;
  return bart_linear(m, &w->fc2, &site, &act, &q_act, fout);
}

enum { BLOCK_SELF = 0, BLOCK_CROSS = 1, BLOCK_FFN = 2 };

/* One residual block from *x into *y. */
static dq_status block(dq_model *m, model_decode *d, const step_geom *g, int l, int kind, const dq_tensor *reorder,
                       const dq_tensor *x, dq_tensor *y) {
  const model_layer_w *w = &m->dec_w.layers[l];
  const model_norm *ln = kind == BLOCK_SELF ? &w->self_ln : kind == BLOCK_CROSS ? &w->cross_ln : &w->final_ln;
  dq_tensor fout = rows_view(&d->fout, g, g->D);
  dq_tensor f_in = rows_view(&d->f_in, g, g->D);
  const dq_tensor *fin = x;
  if (m->is_mbart) {
    MODEL_TRY(bart_norm(m, ln, x, &f_in, NULL, NULL));
    fin = &f_in;
  }
  if (kind == BLOCK_SELF) MODEL_TRY(self_attention(m, d, g, l, fin, reorder, &fout));
  else if (kind == BLOCK_CROSS) MODEL_TRY(cross_attention(m, d, g, l, fin, &fout));
  else MODEL_TRY(feed_forward(m, d, g, l, fin, &fout));
  if (m->is_mbart) return dq_add(y, x, &fout);
  dq_tensor norm_in = rows_view(&d->norm_in, g, g->D);
  MODEL_TRY(dq_add(&norm_in, x, &fout));
  return bart_norm(m, ln, &norm_in, y, NULL, NULL);
}

static dq_status embed(dq_model *m, model_decode *d, const step_geom *g, const dq_tensor *tokens, dq_tensor *h) {
  dq_tensor table = model_embed_weight(m);
  dq_tensor emb = rows_view(&d->emb, g, g->D);
  int64_t n1[1] = {g->R};
  dq_tensor ids = model_as(tokens, 1, n1);
  MODEL_TRY(dq_embedding(&emb, &table, &ids));
  if (m->cfg.scale_embedding) MODEL_TRY(dq_scale(&emb, &emb, sqrtf((float)g->D)));
  /* Position t reads row t + 2 of the learned table (fairseq's offset). */
  int64_t d1[1] = {g->D};
  dq_tensor pos = model_view(&m->work, m->dec_w.pos_off + (g->t + 2) * g->D, 1, d1);
  MODEL_TRY(dq_add(&emb, &emb, &pos));
  return bart_norm(m, &m->dec_w.ln_emb, &emb, h, NULL, NULL);
}

static dq_status lm_head(dq_model *m, model_decode *d, const step_geom *g, const dq_tensor *h) {
  dq_tensor logits = rows_view(&d->logits, g, g->V);
  dq_tensor w = model_lm_head_weight(m);
  /* f32 logits from the GEMM itself, plus the f32 (never quantized) bias. */
  int64_t v1[1] = {g->V};
  dq_tensor bias = model_view(&m->master, m->final_bias_off, 1, v1);
  MODEL_TRY(dq_matmul(&logits, h, &w, 0, 1, 1.0f, 0.0f));
  return dq_add(&logits, &logits, &bias);
}

static dq_status run_step(dq_model *m, model_decode *d, const step_geom *g, const dq_tensor *tokens,
                          const dq_tensor *reorder) {
  dq_tensor a = rows_view(&d->x0, g, g->D), b = rows_view(&d->x1, g, g->D);
  dq_tensor *x = &a, *y = &b;
  MODEL_TRY(embed(m, d, g, tokens, x));
  for (int l = 0; l < d->layers; l++) {
    for (int kind = BLOCK_SELF; kind <= BLOCK_FFN; kind++) {
      MODEL_TRY(block(m, d, g, l, kind, reorder, x, y));
      dq_tensor *t = x;
      x = y;
      y = t;
    }
  }
  if (m->is_mbart) {
    MODEL_TRY(bart_norm(m, &m->dec_w.ln_final, x, y, NULL, NULL));
    x = y;
  }
  return lm_head(m, d, g, x);
}

dq_status model_decode_step(dq_model *m, model_decode *d, const dq_tensor *tokens, const dq_tensor *reorder) {
  const dq_bart_config *cfg = &m->cfg;
  if (d->t + 1 > d->L || d->t >= cfg->max_position_embeddings)
    return dq_fail(DQ_ERR_INTERNAL, "generate: decoder step at position %lld beyond max_length %lld",
                   (long long)d->t, (long long)d->L);
  step_geom g = {.B = d->B, .beams = d->beams, .R = d->rows, .S = d->S, .t = d->t, .D = cfg->d_model,
                 .H = cfg->decoder_attention_heads, .F = cfg->decoder_ffn_dim, .V = cfg->vocab_size};
  g.Dh = g.D / g.H;
  /* bart_attention_core takes its score and dropout scratch from the
   * model's arena, which is sized for the model's last full forward: lend
   * it the decoder's for the step. */
  dq_tensor s1 = m->s_attn1, s2 = m->s_attn2;
  m->s_attn1 = d->attn1;
  m->s_attn2 = d->attn2;
  dq_status st = run_step(m, d, &g, tokens, reorder);
  m->s_attn1 = s1;
  m->s_attn2 = s2;
  if (st) return st;
  d->t++;
  return DQ_OK;
}
