/*
 * model_quant.c: a model under a DQ-BART quantization plan
 * (dqbart_model_quant.h): the plan checked and kept, and the quantization
 * hooks of the model seam (model_hooks in model_internal.h) implemented
 * with the quantizer ops of dqbart_quant.h:
 *  - weights: every planned weight tensor quantized from the latent (master)
 *    weights into the working copy in one dq_quantize_many, the embedding
 *    with its own spec;
 *  - activation / activation_backward: a planned site's input quantized
 *    into its arena slot, its gradient masked by the clipped estimator;
 *  - embedding_grad: the lookup gradient masked where the latent embedding
 *    row is outside the clip (the LM head's gradient never passes here);
 *  - weights_backward: the gradients of the quantized weights masked in
 *    place where the latent weight is outside the clip.
 */
#include "model_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One quantized weight tensor: q, k and v are slices of one stored block. */
typedef struct quant_weight {
  int64_t off, rows, cols;
} quant_weight;

struct model_quant {
  model_hooks hooks;
  dq_model *m;              /* the model it belongs to (the embedding hook is not handed it) */
  dq_model_quant_plan plan; /* as set; the layer arrays point at flags[] */
  dq_quant_spec weight, embedding, activation;
  int weight_on, embedding_on, activation_on;
  int32_t *flags[2]; /* [stack][layer] */
  int num_weights;
  quant_weight *weights;
  dq_tensor *views;   /* 2 * num_weights: working (quantized) then latent */
  dq_tensor **outs;
  const dq_tensor **xs;
  dq_tensor emb_rows; /* f32 [rows, D]: latent embedding rows of a lookup */
  int64_t updates;
  int32_t activation_sites;
};

typedef struct model_quant model_quant;

enum {
  SELF_QKV_FLAGS = DQ_QL_SELF_Q | DQ_QL_SELF_K | DQ_QL_SELF_V,
  CROSS_KV_FLAGS = DQ_QL_CROSS_K | DQ_QL_CROSS_V,
  CROSS_FLAGS = DQ_QL_CROSS_Q | CROSS_KV_FLAGS | DQ_QL_CROSS_OUT | DQ_QL_CROSS_QUERY | DQ_QL_CROSS_KEY |
                DQ_QL_CROSS_PROBS | DQ_QL_CROSS_VALUE
};

/* ---- the plan ------------------------------------------------------------------ */

static const char *role_method_name(int method) {
  switch (method) {
  case DQ_QUANT_AUTO: return "auto";
  case DQ_QUANT_SYM: return "sym";
  case DQ_QUANT_TWN: return "twn";
  case DQ_QUANT_BWN: return "bwn";
  case DQ_QUANT_ASYM: return "asym";
  default: return "?";
  }
}

/* The quantizer ops' own rules (dqbart_quant.h), checked here so that a bad
 * plan fails when it is set, naming the role, not at the next forward. */
static dq_status check_role(const char *op, const char *name, const dq_quant_role *r, dq_quant_spec *spec,
                            int *on) {
  *on = r->bits != 32;
  if (!*on) return DQ_OK;
  int method = r->method, b = r->bits;
  if (method < DQ_QUANT_AUTO || method > DQ_QUANT_ASYM)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s method %d is not one of auto (0), sym (1), twn (2), bwn (3), asym (4)",
                   op, name, method);
  int lo = 1, hi = 16;
  if (method == DQ_QUANT_SYM) lo = 2;
  if (method == DQ_QUANT_TWN) lo = hi = 2;
  if (method == DQ_QUANT_BWN) lo = hi = 1;
  if (b < lo || b > hi)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s bits = %d for the %s quantizer; expected %d..%d, or 32 for full precision",
                   op, name, b, role_method_name(method), lo, hi);
  if (r->granularity != DQ_QUANT_PER_TENSOR && r->granularity != DQ_QUANT_PER_ROW)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s granularity %d is not per tensor (%d) or per row (%d)", op, name,
                   r->granularity, DQ_QUANT_PER_TENSOR, DQ_QUANT_PER_ROW);
  if (!(r->clip > 0.0f))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s clip = %g; expected a positive value (2.5 in the reference, inf for none)",
                   op, name, (double)r->clip);
  spec->method = method;
  spec->bits = b;
  spec->granularity = r->granularity;
  spec->clip = r->clip;
  return DQ_OK;
}

/* Layer flags of one stack into out[layers] (all on when given NULL). */
static dq_status check_flags(const char *op, const dq_model_quant_plan *p, int decoder, int layers, int32_t *out) {
  const char *stack = decoder ? "decoder" : "encoder";
  const int32_t *given = decoder ? p->decoder_layers : p->encoder_layers;
  int32_t count = decoder ? p->num_decoder_layers : p->num_encoder_layers;
  int32_t all = decoder ? DQ_QL_DECODER_ALL : DQ_QL_ENCODER_ALL;
  if (given && count != layers)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: the plan has flags for %d %s layers; the model has %d", op, count, stack,
                   layers);
  for (int l = 0; l < layers; l++) {
    int32_t f = given ? given[l] : all;
    if (f & ~all)
      return dq_fail(DQ_ERR_ARGUMENT, "%s: %s layer %d has flags 0x%x outside 0x%x%s", op, stack, l, (unsigned)f,
                     (unsigned)all, decoder ? "" : " (an encoder layer has no cross-attention)");
    if (p->activation.bits != 32) {
      /* Members of a fused projection share one input GEMM. */
      int qkv = f & SELF_QKV_FLAGS, kv = f & CROSS_KV_FLAGS;
      if (qkv != 0 && qkv != SELF_QKV_FLAGS)
        return dq_fail(DQ_ERR_ARGUMENT,
                       "%s: %s layer %d quantizes some but not all of self-attention q, k, v (flags 0x%x); they read "
                       "one input, which is quantized for all or none of them while activations are quantized",
                       op, stack, l, (unsigned)f);
      if (kv != 0 && kv != CROSS_KV_FLAGS)
        return dq_fail(DQ_ERR_ARGUMENT,
                       "%s: %s layer %d quantizes one of cross-attention k, v (flags 0x%x); they read one input, "
                       "which is quantized for both or neither while activations are quantized",
                       op, stack, l, (unsigned)f);
    }
    out[l] = f;
  }
  return DQ_OK;
}

/* The weight tensors of one layer the flags select (NULL list: count only). */
static int layer_weights(const model_layer_w *w, int32_t f, int64_t d, quant_weight *list) {
  struct {
    int32_t flag;
    const model_linear *l;
    int slice;
  } items[10] = {
      {DQ_QL_SELF_Q, &w->self_qkv, 0},  {DQ_QL_SELF_K, &w->self_qkv, 1},  {DQ_QL_SELF_V, &w->self_qkv, 2},
      {DQ_QL_SELF_OUT, &w->self_out, 0}, {DQ_QL_CROSS_Q, &w->cross_q, 0}, {DQ_QL_CROSS_K, &w->cross_kv, 0},
      {DQ_QL_CROSS_V, &w->cross_kv, 1}, {DQ_QL_CROSS_OUT, &w->cross_out, 0}, {DQ_QL_FC1, &w->fc1, 0},
      {DQ_QL_FC2, &w->fc2, 0},
  };
  int n = 0;
  for (int i = 0; i < 10; i++) {
    if (!(f & items[i].flag)) continue;
    const model_linear *l = items[i].l;
    /* the fused blocks are [members * d, d], a member's d rows each */
    int fused = l == &w->self_qkv || l == &w->cross_kv;
    if (list) {
      list[n].rows = fused ? d : l->out;
      list[n].cols = l->in;
      list[n].off = l->w_off + (fused ? items[i].slice * d * d : 0);
    }
    n++;
  }
  return n;
}

static int count_sites(const model_quant *q, const dq_model *m) {
  static const int32_t site_flags[] = {SELF_QKV_FLAGS, DQ_QL_SELF_OUT, DQ_QL_CROSS_Q, CROSS_KV_FLAGS,
                                       DQ_QL_CROSS_OUT, DQ_QL_FC1, DQ_QL_FC2, DQ_QL_SELF_QUERY,
                                       DQ_QL_SELF_KEY, DQ_QL_SELF_PROBS, DQ_QL_SELF_VALUE, DQ_QL_CROSS_QUERY,
                                       DQ_QL_CROSS_KEY, DQ_QL_CROSS_PROBS, DQ_QL_CROSS_VALUE};
  if (!q->activation_on) return 0;
  int n = 0;
  for (int s = 0; s < 2; s++) {
    int layers = s ? m->cfg.decoder_layers : m->cfg.encoder_layers;
    for (int l = 0; l < layers; l++)
      for (size_t i = 0; i < sizeof site_flags / sizeof site_flags[0]; i++) n += (q->flags[s][l] & site_flags[i]) != 0;
  }
  return n;
}

/* ---- the hooks -------------------------------------------------------------------- */

static int32_t site_flag(const model_site *s) {
  if (s->kind == MODEL_SITE_LINEAR_INPUT) {
    switch (s->which) {
    case MODEL_LIN_SELF_QKV: return SELF_QKV_FLAGS;
    case MODEL_LIN_SELF_OUT: return DQ_QL_SELF_OUT;
    case MODEL_LIN_CROSS_Q: return DQ_QL_CROSS_Q;
    case MODEL_LIN_CROSS_KV: return CROSS_KV_FLAGS;
    case MODEL_LIN_CROSS_OUT: return DQ_QL_CROSS_OUT;
    case MODEL_LIN_FC1: return DQ_QL_FC1;
    default: return DQ_QL_FC2;
    }
  }
  static const int32_t self_ops[4] = {DQ_QL_SELF_QUERY, DQ_QL_SELF_KEY, DQ_QL_SELF_PROBS, DQ_QL_SELF_VALUE};
  static const int32_t cross_ops[4] = {DQ_QL_CROSS_QUERY, DQ_QL_CROSS_KEY, DQ_QL_CROSS_PROBS, DQ_QL_CROSS_VALUE};
  int k = s->kind - MODEL_SITE_ATTN_QUERY;
  return s->which ? cross_ops[k] : self_ops[k];
}

static int site_on(const model_quant *q, const model_site *s) {
  return (q->flags[s->decoder != 0][s->layer] & site_flag(s)) != 0;
}

static dq_status hook_activation(void *ctx, const model_site *site, const dq_tensor *x, dq_tensor *out) {
  model_quant *q = ctx;
  if (!site_on(q, site)) return dq_copy(out, x);
  return dq_quantize(out, x, &q->activation);
}

static dq_status hook_activation_backward(void *ctx, const model_site *site, dq_tensor *grad, const dq_tensor *x) {
  model_quant *q = ctx;
  if (!site_on(q, site)) return DQ_OK;
  return dq_quantize_backward(grad, grad, x, q->activation.clip, 0);
}

/* Views of quantized weight i: working (out) and latent (x). */
static void weight_views(model_quant *q, const dq_model *m, int i) {
  const quant_weight *w = &q->weights[i];
  int64_t s[2] = {w->rows, w->cols};
  q->views[i] = model_view(&m->work, w->off, 2, s);
  q->views[q->num_weights + i] = model_view(&m->master, w->off, 2, s);
  q->outs[i] = &q->views[i];
  q->xs[i] = &q->views[q->num_weights + i];
}

static dq_tensor shared_view(const dq_model *m, const dq_tensor *buf) {
  int64_t s[2] = {m->cfg.vocab_size, m->cfg.d_model};
  return model_view(buf, m->shared_off, 2, s);
}

/* After the master weights were copied into the working buffer: overwrite
 * the planned tensors there with their quantized latent values. */
static dq_status hook_weights(void *ctx, dq_model *m) {
  model_quant *q = ctx;
  if (q->weight_on && q->num_weights > 0) {
    for (int i = 0; i < q->num_weights; i++) weight_views(q, m, i);
    MODEL_TRY(dq_quantize_many(q->num_weights, q->outs, q->xs, &q->weight));
  }
  if (q->embedding_on) {
    dq_tensor work = shared_view(m, &m->work), latent = shared_view(m, &m->master);
    MODEL_TRY(dq_quantize(&work, &latent, &q->embedding));
  }
  q->updates++;
  return DQ_OK;
}

static dq_status hook_weights_backward(void *ctx, dq_model *m) {
  model_quant *q = ctx;
  for (int i = 0; i < q->num_weights; i++) {
    const quant_weight *w = &q->weights[i];
    int64_t s[2] = {w->rows, w->cols};
    dq_tensor g = model_view(&m->grads, w->off, 2, s), x = model_view(&m->master, w->off, 2, s);
    MODEL_TRY(dq_quantize_backward(&g, &g, &x, q->weight.clip, 0));
  }
  return DQ_OK;
}

/* The lookup gradient of the embedding rows `ids` masked where the latent
 * row is outside the clip. Both lookups (encoder and decoder input) read
 * the one quantized table, so masking each lookup's part is masking their
 * sum. */
static dq_status hook_embedding_grad(void *ctx, int decoder, dq_tensor *grad, const dq_tensor *ids) {
  (void)decoder;
  model_quant *q = ctx;
  dq_model *m = q->m;
  int64_t rows = ids->numel, D = m->cfg.d_model;
  if (!dq_tensor_defined(&q->emb_rows) || q->emb_rows.numel < rows * D) {
    dq_tensor_release(&q->emb_rows);
    int64_t s[2] = {rows, D};
    MODEL_TRY(dq_tensor_empty(&q->emb_rows, 2, s, DQ_F32, m->device));
  }
  dq_tensor latent = shared_view(m, &m->master), gathered = model_as2(&q->emb_rows, rows, D);
  MODEL_TRY(dq_embedding(&gathered, &latent, ids));
  dq_tensor g = model_as2(grad, rows, D);
  return dq_quantize_backward(&g, &g, &gathered, q->embedding.clip, 0);
}

/* ---- the model's plan ------------------------------------------------------------------ */

static void quant_destroy(model_quant *q) {
  if (!q) return;
  free(q->flags[0]);
  free(q->flags[1]);
  free(q->weights);
  free(q->views);
  free(q->outs);
  free(q->xs);
  dq_tensor_release(&q->emb_rows);
  free(q);
}

void model_quant_free(dq_model *m) {
  if (!m->quant) return;
  if (m->hooks == &m->quant->hooks) m->hooks = NULL;
  quant_destroy(m->quant);
  m->quant = NULL;
  m->weights_by_caller = 0;
}


static dq_status quant_alloc_fail(model_quant *q, const char *op) {
  quant_destroy(q);
  return dq_fail(DQ_ERR_MEMORY, "%s: out of host memory for the plan", op);
}

/* A checked plan for m, with its weight list; NULL *out when it quantizes
 * nothing. */
static dq_status quant_build(dq_model *m, const dq_model_quant_plan *p, model_quant **out) {
  const char *op = "dq_model_set_quant";
  *out = NULL;
  model_quant *q = calloc(1, sizeof *q);
  if (!q) return dq_fail(DQ_ERR_MEMORY, "%s: out of host memory", op);
  q->m = m;
  q->plan = *p;
  int layers[2] = {m->cfg.encoder_layers, m->cfg.decoder_layers};
  dq_status st = check_role(op, "weight", &p->weight, &q->weight, &q->weight_on);
  if (!st) st = check_role(op, "embedding", &p->embedding, &q->embedding, &q->embedding_on);
  if (!st) st = check_role(op, "activation", &p->activation, &q->activation, &q->activation_on);
  for (int s = 0; !st && s < 2; s++) {
    q->flags[s] = calloc((size_t)layers[s], sizeof *q->flags[s]);
    if (!q->flags[s]) return quant_alloc_fail(q, op);
    st = check_flags(op, p, s, layers[s], q->flags[s]);
  }
  if (st) {
    quant_destroy(q);
    return st;
  }
  q->plan.encoder_layers = q->flags[0];
  q->plan.decoder_layers = q->flags[1];
  q->plan.num_encoder_layers = layers[0];
  q->plan.num_decoder_layers = layers[1];
  if (q->weight_on) {
    int n = 0;
    for (int s = 0; s < 2; s++)
      for (int l = 0; l < layers[s]; l++)
        n += layer_weights(s ? &m->dec_w.layers[l] : &m->enc_w.layers[l], q->flags[s][l], m->cfg.d_model, NULL);
    q->weights = calloc((size_t)(n > 0 ? n : 1), sizeof *q->weights);
    q->views = calloc((size_t)(2 * (n > 0 ? n : 1)), sizeof *q->views);
    q->outs = calloc((size_t)(n > 0 ? n : 1), sizeof *q->outs);
    q->xs = calloc((size_t)(n > 0 ? n : 1), sizeof *q->xs);
    if (!q->weights || !q->views || !q->outs || !q->xs) return quant_alloc_fail(q, op);
    for (int s = 0; s < 2; s++)
      for (int l = 0; l < layers[s]; l++)
        q->num_weights += layer_weights(s ? &m->dec_w.layers[l] : &m->enc_w.layers[l], q->flags[s][l],
                                        m->cfg.d_model, q->weights + q->num_weights);
  }
  q->activation_sites = count_sites(q, m);
  int weights = q->num_weights > 0, acts = q->activation_sites > 0;
  if (!weights && !q->embedding_on && !acts) {
    quant_destroy(q);
    return DQ_OK;
  }
  q->hooks.ctx = q;
  if (acts) {
    q->hooks.activation = hook_activation;
    q->hooks.activation_backward = hook_activation_backward;
  }
  if (weights || q->embedding_on) q->hooks.weights = hook_weights;
  if (weights) q->hooks.weights_backward = hook_weights_backward;
  if (q->embedding_on) q->hooks.embedding_grad = hook_embedding_grad;
  *out = q;
  return DQ_OK;
}

dq_status dq_model_quant_plan_init(dq_model_quant_plan *plan, int32_t weight_bits, int32_t embedding_bits,
                                   int32_t activation_bits, float clip) {
  if (!plan) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_quant_plan_init: plan is NULL");
  memset(plan, 0, sizeof *plan);
  plan->weight = (dq_quant_role){weight_bits, DQ_QUANT_AUTO, DQ_QUANT_PER_TENSOR, clip};
  plan->embedding = (dq_quant_role){embedding_bits, DQ_QUANT_AUTO, DQ_QUANT_PER_ROW, clip};
  plan->activation = (dq_quant_role){activation_bits, DQ_QUANT_SYM, DQ_QUANT_PER_TENSOR, clip};
  return DQ_OK;
}

dq_status dq_model_set_quant(dq_model *m, const dq_model_quant_plan *plan) {
  const char *op = "dq_model_set_quant";
  if (!m) return dq_fail(DQ_ERR_ARGUMENT, "%s: model is NULL", op);
  model_quant *q = NULL;
  if (plan) MODEL_TRY(quant_build(m, plan, &q));
  model_quant *old = m->quant;
  dq_status st = model_install_hooks(m, q ? &q->hooks : NULL);
  if (st) {
    /* Back to the previous plan (its buffers exist already). */
    model_install_hooks(m, old ? &old->hooks : NULL);
    quant_destroy(q);
    return dq_fail_context(st, "%s: ", op);
  }
  quant_destroy(old);
  m->quant = q;
  m->weights_by_caller = 0;
  m->have_forward = m->have_train_forward = 0; /* outputs of the old plan */
  return DQ_OK;
}

dq_status dq_model_quantize_weights(dq_model *m) {
  if (!m) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_quantize_weights: model is NULL");
  if (!m->quant) return DQ_OK;
  MODEL_TRY(model_prepare_weights(m, 1));
  m->weights_by_caller = 1;
  return DQ_OK;
}

dq_status dq_model_get_quant(const dq_model *m, dq_model_quant_info *info) {
  if (!m || !info) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_get_quant: NULL argument");
  memset(info, 0, sizeof *info);
  dq_quant_role off = {32, DQ_QUANT_AUTO, DQ_QUANT_PER_TENSOR, 0.0f};
  info->weight = info->embedding = info->activation = off;
  const model_quant *q = m->quant;
  if (!q) return DQ_OK;
  info->active = 1;
  info->caller_schedules = m->weights_by_caller;
  info->weight = q->plan.weight;
  info->embedding = q->plan.embedding;
  info->activation = q->plan.activation;
  for (int i = 0; i < q->num_weights; i++) {
    info->quantized_weights++;
    info->quantized_weight_numel += q->weights[i].rows * q->weights[i].cols;
  }
  if (q->embedding_on) info->quantized_embedding_numel = (int64_t)m->cfg.vocab_size * m->cfg.d_model;
  info->quantized_activations = q->activation_sites;
  info->weight_updates = q->updates;
  return DQ_OK;
}

dq_status dq_model_working_param(dq_model *m, int32_t index, dq_tensor *out) {
  const char *op = "dq_model_working_param";
  if (!m || !out) return dq_fail(DQ_ERR_ARGUMENT, "%s: NULL argument", op);
  if (index < 0 || index >= m->num_params)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: parameter index %d is out of range (0 to %d)", op, index, m->num_params - 1);
  dq_tensor v = model_param_view(m, &m->work, index);
  return dq_tensor_share(out, &v);
}
