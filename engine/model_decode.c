/*
 * model_decode.c: the decoder arena of incremental decoding (its carving
 * for a batch shape) and the start of a batch: the encoder forward, the
 * cross-attention keys and values of every decoder layer, the source mask.
 * The step itself is model_decode_step.c; see model_decode.h.
 */
#include "model_decode.h"

#include <stdlib.h>
#include <string.h>

enum { DECODE_ALIGN = 256 };

typedef struct carver {
  int measure;
  int64_t bytes;
  const dq_tensor *arena;
} carver;

/* A 1-d view of n elements of `dtype` (reshaped with model_as by its users). */
static void carve(carver *c, dq_tensor *t, int64_t n, int dtype) {
  int64_t off = (c->bytes + DECODE_ALIGN - 1) / DECODE_ALIGN * DECODE_ALIGN;
  if (!c->measure) {
    int64_t s[1] = {n};
    dq_tensor v = model_as(c->arena, 1, s);
    v.data = (char *)c->arena->data + off;
    v.dtype = dtype;
    *t = v;
  }
  c->bytes = off + n * dq_dtype_size(dtype);
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

static void carve_all(const dq_model *m, model_decode *d, carver *c) {
  const dq_bart_config *cfg = &m->cfg;
  int act = m->dtype;
  int64_t B = d->B, R = d->rows, S = d->S, L = d->L, D = cfg->d_model, F = cfg->decoder_ffn_dim;
  int64_t V = cfg->vocab_size, H = cfg->decoder_attention_heads;
  int64_t attn = R * H * max64(L, S);
  for (int i = 0; i < 2 * d->layers + 1; i++) carve(c, &d->pool[i], R * L * D, act);
  for (int l = 0; l < d->layers; l++) carve(c, &d->cross_kv[l], 2 * B * S * D, act);
  carve(c, &d->enc_mask, B * S, act);
  dq_tensor *rd[] = {&d->x0, &d->x1, &d->f_in, &d->norm_in, &d->qh, &d->ctxh, &d->ctx, &d->fout, &d->emb};
  for (size_t i = 0; i < sizeof rd / sizeof rd[0]; i++) carve(c, rd[i], R * D, act);
  carve(c, &d->proj, R * 3 * D, act);
  carve(c, &d->heads, R * 3 * D, act);
  carve(c, &d->f1, R * F, act);
  carve(c, &d->act, R * F, act);
  carve(c, &d->probs, attn, act);
  carve(c, &d->attn1, attn, act);
  carve(c, &d->attn2, attn, act);
  carve(c, &d->logits, R * V, DQ_F32);
  carve(c, &d->kvproj, B * S * 2 * D, act);
  if (d->hooks) {
    int64_t keys = max64(R * L * D, B * S * D);
    carve(c, &d->q_in, R * D, act);
    carve(c, &d->q_ctx, R * D, act);
    carve(c, &d->q_act, R * F, act);
    carve(c, &d->q_in2, B * S * D, act);
    carve(c, &d->query_scaled, R * D, act);
    carve(c, &d->q_query, R * D, act);
    carve(c, &d->q_key, keys, act);
    carve(c, &d->q_value, keys, act);
    carve(c, &d->q_probs, attn, act);
  }
}

static dq_status alloc_tables(model_decode *d, int layers) {
  if (d->pool && d->c_layers == layers) return DQ_OK;
  free(d->pool);
  free(d->self_k);
  free(d->self_v);
  free(d->cross_kv);
  d->pool = calloc((size_t)(2 * layers + 1), sizeof *d->pool);
  d->self_k = calloc((size_t)layers, sizeof *d->self_k);
  d->self_v = calloc((size_t)layers, sizeof *d->self_v);
  d->cross_kv = calloc((size_t)layers, sizeof *d->cross_kv);
  if (!d->pool || !d->self_k || !d->self_v || !d->cross_kv)
    return dq_fail(DQ_ERR_MEMORY, "generate: out of host memory for the decoder cache tables");
  d->carved = 0;
  return DQ_OK;
}

dq_status model_decode_prepare(dq_model *m, model_decode *d, int64_t B, int64_t beams, int64_t S, int64_t L) {
  const dq_bart_config *cfg = &m->cfg;
  int layers = cfg->decoder_layers;
  int hooks = m->hooks && m->hooks->activation;
  MODEL_TRY(alloc_tables(d, layers));
  d->B = B;
  d->beams = beams;
  d->rows = B * beams;
  d->S = S;
  d->L = L;
  d->t = 0;
  d->layers = layers;
  d->hooks = hooks;
  d->device = m->device;
  d->dtype = m->dtype;
  for (int l = 0; l < layers; l++) {
    d->self_k[l] = 2 * l;
    d->self_v[l] = 2 * l + 1;
  }
  d->spare = 2 * layers;
  int same = d->carved && d->c_B == B && d->c_beams == beams && d->c_S == S && d->c_L == L && d->c_hooks == hooks &&
             d->c_layers == layers && d->c_device == m->device && d->c_dtype == m->dtype &&
             d->c_D == cfg->d_model && d->c_F == cfg->decoder_ffn_dim && d->c_V == cfg->vocab_size &&
             d->c_H == cfg->decoder_attention_heads;
  if (same) return DQ_OK;
  carver c = {.measure = 1};
  carve_all(m, d, &c);
  if (c.bytes > d->arena_bytes || d->arena.device != m->device) {
    dq_tensor_release(&d->arena);
    d->arena_bytes = 0;
    d->carved = 0;
    int64_t shape[1] = {c.bytes};
    dq_status st = dq_tensor_empty(&d->arena, 1, shape, DQ_I8, m->device);
    if (st)
      return dq_fail_context(st, "allocating the decoder cache for %lld sources x %lld beams, source length %lld, "
                                 "max_length %lld: ",
                             (long long)B, (long long)beams, (long long)S, (long long)L);
    d->arena_bytes = c.bytes;
  }
  c = (carver){.measure = 0, .arena = &d->arena};
  carve_all(m, d, &c);
  d->carved = 1;
  d->c_B = B;
  d->c_beams = beams;
  d->c_S = S;
  d->c_L = L;
  d->c_hooks = hooks;
  d->c_layers = layers;
  d->c_device = m->device;
  d->c_dtype = m->dtype;
  d->c_D = cfg->d_model;
  d->c_F = cfg->decoder_ffn_dim;
  d->c_V = cfg->vocab_size;
  d->c_H = cfg->decoder_attention_heads;
  return DQ_OK;
}

dq_status model_decode_encode(dq_model *m, model_decode *d, const dq_tensor *input_ids,
                              const dq_tensor *attention_mask) {
  const dq_bart_config *cfg = &m->cfg;
  int64_t B = d->B, S = d->S, D = cfg->d_model, H = cfg->decoder_attention_heads, Dh = D / H;
  /* The model's own forward runs the encoder (and one decoder position we
   * do not use: the price of not duplicating the encoder's code). */
  dq_tensor start = {0}, ones = {0};
  int64_t s2[2] = {B, 1}, bs[2] = {B, S};
  MODEL_TRY(dq_tensor_empty(&start, 2, s2, DQ_I32, DQ_CPU));
  for (int64_t b = 0; b < B; b++) ((int32_t *)start.data)[b] = (int32_t)cfg->decoder_start_token_id;
  /* Always an explicit mask: the model's forward without one reads the
   * encoder mask a previous padded forward left in its arena. */
  dq_status st = DQ_OK;
  if (!attention_mask || !dq_tensor_defined(attention_mask)) {
    st = dq_tensor_empty(&ones, 2, bs, DQ_I32, DQ_CPU);
    if (!st) st = dq_fill(&ones, 1.0);
    attention_mask = &ones;
  }
  if (!st) st = dq_model_forward(m, input_ids, attention_mask, &start, NULL, 0);
  dq_tensor_release(&start);
  dq_tensor_release(&ones);
  if (st) return dq_fail_context(st, "generate: encoder: ");

  d->has_mask = m->enc.has_pad;
  if (d->has_mask) {
    int64_t s4[4] = {B, 1, 1, S};
    d->enc_mask = model_as(&d->enc_mask, 4, s4);
    MODEL_TRY(dq_copy(&d->enc_mask, &m->enc.mask));
  }
  const dq_tensor *enc_out = &m->enc.hidden[cfg->encoder_layers];
  dq_tensor enc2 = model_as2(enc_out, B * S, D);
  dq_tensor kvproj = model_as2(&d->kvproj, B * S, 2 * D);
  dq_tensor q_in2 = d->hooks ? model_as2(&d->q_in2, B * S, D) : (dq_tensor){0};
  int64_t s5[5] = {B, S, 2, H, Dh}, k5[5] = {2, B, H, S, Dh};
  static const int to_heads[5] = {2, 0, 3, 1, 4};
  for (int l = 0; l < d->layers; l++) {
    model_site site = {.decoder = 1, .layer = l, .kind = MODEL_SITE_LINEAR_INPUT, .which = MODEL_LIN_CROSS_KV};
    MODEL_TRY(bart_linear(m, &m->dec_w.layers[l].cross_kv, &site, &enc2, &q_in2, &kvproj));
    dq_tensor kv5 = model_as(&kvproj, 5, s5);
    d->cross_kv[l] = model_as(&d->cross_kv[l], 5, k5);
    MODEL_TRY(dq_permute(&d->cross_kv[l], &kv5, to_heads));
  }
  d->t = 0;
  return DQ_OK;
}

void model_decode_free(model_decode *d) {
  dq_tensor_release(&d->arena);
  free(d->pool);
  free(d->self_k);
  free(d->self_v);
  free(d->cross_kv);
  memset(d, 0, sizeof *d);
}
