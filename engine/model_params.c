/*
 * model_params.c: the parameter table of a BART / mBART model (transformers
 * names, shapes, offsets in one buffer), the master / working / gradient
 * buffers and borrowed views into them.
 *
 * Layout: parameters in forward order, each starting on a 16-element
 * boundary, except that the q, k and v weights of an attention block are
 * adjacent (one [3D, D] matrix) and so are their biases (one [3D] vector),
 * and likewise k, v of cross-attention: a fused projection is one GEMM.
 * final_logits_bias (no gradient) comes last, so the trainable parameters
 * are a prefix of the buffer.
 */
#include "model_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PARAM_ALIGN = 16 };

typedef struct layout_builder {
  dq_model *m;
  int cap;
  int64_t next; /* next free element */
} layout_builder;

/* A parameter name; names past MODEL_NAME_CAP are refused, not cut. */
static dq_status name_of(char *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static dq_status name_of(char *out, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(out, MODEL_NAME_CAP, fmt, ap);
  va_end(ap);
  if (n < 0 || n >= MODEL_NAME_CAP)
    return dq_fail(DQ_ERR_INTERNAL, "model: parameter name '%s...' is longer than %d bytes", out, MODEL_NAME_CAP - 1);
  return DQ_OK;
}

static dq_status add_param(layout_builder *lb, const char *name, int ndim, int64_t d0, int64_t d1, int aligned,
                           int64_t *offset) {
  dq_model *m = lb->m;
  if (m->num_params == lb->cap) {
    int cap = lb->cap ? lb->cap * 2 : 64;
    model_param *p = realloc(m->params, sizeof *p * (size_t)cap);
    if (!p) return dq_fail(DQ_ERR_MEMORY, "model: out of host memory for the parameter table");
    m->params = p;
    lb->cap = cap;
  }
  if (aligned) lb->next = (lb->next + PARAM_ALIGN - 1) / PARAM_ALIGN * PARAM_ALIGN;
  model_param *p = &m->params[m->num_params++];
  memset(p, 0, sizeof *p);
  memcpy(p->name, name, strlen(name) + 1);
  p->ndim = ndim;
  p->shape[0] = d0;
  p->shape[1] = ndim > 1 ? d1 : 0;
  p->offset = lb->next;
  p->trainable = 1;
  lb->next += d0 * (ndim > 1 ? d1 : 1);
  if (offset) *offset = p->offset;
  return DQ_OK;
}

static dq_status add_norm(layout_builder *lb, const char *prefix, int64_t dim, model_norm *n) {
  char name[MODEL_NAME_CAP];
  n->dim = dim;
  MODEL_TRY(name_of(name, "%s.weight", prefix));
  MODEL_TRY(add_param(lb, name, 1, dim, 0, 1, &n->w_off));
  MODEL_TRY(name_of(name, "%s.bias", prefix));
  return add_param(lb, name, 1, dim, 0, 1, &n->b_off);
}

static dq_status add_linear(layout_builder *lb, const char *prefix, int64_t out, int64_t in, model_linear *l) {
  char name[MODEL_NAME_CAP];
  l->out = out;
  l->in = in;
  MODEL_TRY(name_of(name, "%s.weight", prefix));
  MODEL_TRY(add_param(lb, name, 2, out, in, 1, &l->w_off));
  MODEL_TRY(name_of(name, "%s.bias", prefix));
  return add_param(lb, name, 1, out, 0, 1, &l->b_off);
}

/* Projections named prefix.{names[i]}_proj with a shared input: weights
 * adjacent, then biases adjacent. */
static dq_status add_fused(layout_builder *lb, const char *prefix, const char *const *names, int count, int64_t d,
                           model_linear *l) {
  char name[MODEL_NAME_CAP];
  l->out = d * count;
  l->in = d;
  for (int i = 0; i < count; i++) {
    MODEL_TRY(name_of(name, "%s.%s_proj.weight", prefix, names[i]));
    MODEL_TRY(add_param(lb, name, 2, d, d, i == 0, i == 0 ? &l->w_off : NULL));
  }
  for (int i = 0; i < count; i++) {
    MODEL_TRY(name_of(name, "%s.%s_proj.bias", prefix, names[i]));
    MODEL_TRY(add_param(lb, name, 1, d, 0, i == 0, i == 0 ? &l->b_off : NULL));
  }
  return DQ_OK;
}

static dq_status layout_stack(layout_builder *lb, int decoder) {
  dq_model *m = lb->m;
  const dq_bart_config *c = &m->cfg;
  const char *stack = decoder ? "model.decoder" : "model.encoder";
  model_stack_w *w = decoder ? &m->dec_w : &m->enc_w;
  int64_t d = c->d_model;
  int layers = decoder ? c->decoder_layers : c->encoder_layers;
  int64_t ffn = decoder ? c->decoder_ffn_dim : c->encoder_ffn_dim;
  char name[MODEL_NAME_CAP], prefix[MODEL_NAME_CAP];
  static const char *const qkv[3] = {"q", "k", "v"};

  MODEL_TRY(name_of(name, "%s.embed_positions.weight", stack));
  MODEL_TRY(add_param(lb, name, 2, (int64_t)c->max_position_embeddings + 2, d, 1, &w->pos_off));
  MODEL_TRY(name_of(prefix, "%s.layernorm_embedding", stack));
  MODEL_TRY(add_norm(lb, prefix, d, &w->ln_emb));
  w->layers = calloc((size_t)(layers > 0 ? layers : 1), sizeof *w->layers);
  if (!w->layers) return dq_fail(DQ_ERR_MEMORY, "model: out of host memory for the layer table");
  for (int i = 0; i < layers; i++) {
    model_layer_w *L = &w->layers[i];
    MODEL_TRY(name_of(prefix, "%s.layers.%d.self_attn", stack, i));
    MODEL_TRY(add_fused(lb, prefix, qkv, 3, d, &L->self_qkv));
    MODEL_TRY(name_of(prefix, "%s.layers.%d.self_attn.out_proj", stack, i));
    MODEL_TRY(add_linear(lb, prefix, d, d, &L->self_out));
    MODEL_TRY(name_of(prefix, "%s.layers.%d.self_attn_layer_norm", stack, i));
    MODEL_TRY(add_norm(lb, prefix, d, &L->self_ln));
    if (decoder) {
      MODEL_TRY(name_of(prefix, "%s.layers.%d.encoder_attn", stack, i));
      /* q alone (decoder input), then k, v adjacent (encoder output). */
      MODEL_TRY(add_fused(lb, prefix, qkv, 1, d, &L->cross_q));
      MODEL_TRY(add_fused(lb, prefix, qkv + 1, 2, d, &L->cross_kv));
      MODEL_TRY(name_of(prefix, "%s.layers.%d.encoder_attn.out_proj", stack, i));
      MODEL_TRY(add_linear(lb, prefix, d, d, &L->cross_out));
      MODEL_TRY(name_of(prefix, "%s.layers.%d.encoder_attn_layer_norm", stack, i));
      MODEL_TRY(add_norm(lb, prefix, d, &L->cross_ln));
    }
    MODEL_TRY(name_of(prefix, "%s.layers.%d.fc1", stack, i));
    MODEL_TRY(add_linear(lb, prefix, ffn, d, &L->fc1));
    MODEL_TRY(name_of(prefix, "%s.layers.%d.fc2", stack, i));
    MODEL_TRY(add_linear(lb, prefix, d, ffn, &L->fc2));
    MODEL_TRY(name_of(prefix, "%s.layers.%d.final_layer_norm", stack, i));
    MODEL_TRY(add_norm(lb, prefix, d, &L->final_ln));
  }
  if (m->is_mbart) {
    MODEL_TRY(name_of(prefix, "%s.layer_norm", stack));
    MODEL_TRY(add_norm(lb, prefix, d, &w->ln_final));
  }
  return DQ_OK;
}

dq_status model_layout(dq_model *m) {
  layout_builder lb = {.m = m};
  const dq_bart_config *c = &m->cfg;
  MODEL_TRY(add_param(&lb, "model.shared.weight", 2, c->vocab_size, c->d_model, 1, &m->shared_off));
  MODEL_TRY(layout_stack(&lb, 0));
  MODEL_TRY(layout_stack(&lb, 1));
  lb.next = (lb.next + PARAM_ALIGN - 1) / PARAM_ALIGN * PARAM_ALIGN;
  m->trainable_numel = lb.next;
  MODEL_TRY(add_param(&lb, "final_logits_bias", 2, 1, c->vocab_size, 1, &m->final_bias_off));
  m->params[m->num_params - 1].trainable = 0;
  m->numel = (lb.next + PARAM_ALIGN - 1) / PARAM_ALIGN * PARAM_ALIGN;
  return DQ_OK;
}

dq_status model_alloc_params(dq_model *m) {
  int64_t shape[1] = {m->numel};
  MODEL_TRY(dq_tensor_empty(&m->master, 1, shape, DQ_F32, m->device));
  MODEL_TRY(dq_fill(&m->master, 0.0));
  if (m->dtype == DQ_F32) {
    MODEL_TRY(dq_tensor_share(&m->work, &m->master));
    m->work_is_master = 1;
  } else {
    MODEL_TRY(dq_tensor_empty(&m->work, 1, shape, m->dtype, m->device));
    m->work_is_master = 0;
  }
  m->work_dirty = 1;
  return DQ_OK;
}

dq_status model_refresh_work(dq_model *m, int force) {
  if (m->work_is_master || (!force && !m->work_dirty)) return DQ_OK;
  MODEL_TRY(dq_copy(&m->work, &m->master));
  if (dq_tensor_defined(&m->lm_head_work)) {
    int64_t s[2] = {m->cfg.vocab_size, m->cfg.d_model};
    dq_tensor shared = model_view(&m->master, m->shared_off, 2, s);
    MODEL_TRY(dq_copy(&m->lm_head_work, &shared));
  }
  m->work_dirty = 0;
  return DQ_OK;
}

dq_status model_ensure_grads(dq_model *m) {
  if (dq_tensor_defined(&m->grads)) return DQ_OK;
  int64_t shape[1] = {m->numel};
  MODEL_TRY(dq_tensor_empty(&m->grads, 1, shape, DQ_F32, m->device));
  return dq_fill(&m->grads, 0.0);
}

void model_free_params(dq_model *m) {
  dq_tensor_release(&m->master);
  dq_tensor_release(&m->work);
  dq_tensor_release(&m->grads);
  dq_tensor_release(&m->lm_head_work);
  free(m->params);
  m->params = NULL;
  m->num_params = 0;
  free(m->enc_w.layers);
  free(m->dec_w.layers);
  m->enc_w.layers = m->dec_w.layers = NULL;
}

int model_find_param(const dq_model *m, const char *name) {
  for (int i = 0; i < m->num_params; i++)
    if (strcmp(m->params[i].name, name) == 0) return i;
  return -1;
}

dq_tensor model_view(const dq_tensor *buf, int64_t offset, int ndim, const int64_t *shape) {
  dq_tensor v = model_as(buf, ndim, shape);
  v.data = (char *)buf->data + offset * dq_dtype_size(buf->dtype);
  return v;
}

dq_tensor model_param_view(const dq_model *m, const dq_tensor *buf, int index) {
  const model_param *p = &m->params[index];
  return model_view(buf, p->offset, p->ndim, p->shape);
}

dq_tensor model_lin_w(const dq_model *m, const model_linear *l) {
  int64_t s[2] = {l->out, l->in};
  return model_view(&m->work, l->w_off, 2, s);
}

dq_tensor model_lin_b(const dq_model *m, const model_linear *l) {
  int64_t s[1] = {l->out};
  return model_view(&m->work, l->b_off, 1, s);
}

dq_tensor model_lin_gw(const dq_model *m, const model_linear *l) {
  int64_t s[2] = {l->out, l->in};
  return model_view(&m->grads, l->w_off, 2, s);
}

dq_tensor model_lin_gb(const dq_model *m, const model_linear *l) {
  int64_t s[1] = {l->out};
  return model_view(&m->grads, l->b_off, 1, s);
}

dq_tensor model_embed_weight(const dq_model *m) {
  int64_t s[2] = {m->cfg.vocab_size, m->cfg.d_model};
  return model_view(&m->work, m->shared_off, 2, s);
}

/* The token lookup reads the working copy (which a quantizer overwrites);
 * the LM head never reads a quantized matrix: with a separate f32 working
 * buffer it reads the master, in bf16 mode with weight hooks its own copy. */
dq_tensor model_lm_head_weight(const dq_model *m) {
  int64_t s[2] = {m->cfg.vocab_size, m->cfg.d_model};
  if (dq_tensor_defined(&m->lm_head_work)) return model_as(&m->lm_head_work, 2, s);
  if (!m->work_is_master && m->dtype == DQ_F32) return model_view(&m->master, m->shared_off, 2, s);
  return model_view(&m->work, m->shared_off, 2, s);
}

dq_status model_install_hooks(dq_model *m, const model_hooks *hooks) {
  m->hooks = hooks;
  m->carved = 0; /* the arena gains (or loses) the quantized copies */
  m->work_dirty = 1;
  if (!hooks || !hooks->weights) {
    /* Nothing overwrites working weights any more: f32 reads the master
     * weights again, and the LM head the (unquantized) working copy. */
    dq_tensor_release(&m->lm_head_work);
    if (m->dtype == DQ_F32 && !m->work_is_master) {
      dq_tensor_release(&m->work);
      MODEL_TRY(dq_tensor_share(&m->work, &m->master));
      m->work_is_master = 1;
    }
    return DQ_OK;
  }
  int64_t shape[1] = {m->numel};
  if (m->work_is_master) {
    dq_tensor_release(&m->work);
    MODEL_TRY(dq_tensor_empty(&m->work, 1, shape, m->dtype, m->device));
    m->work_is_master = 0;
  }
  if (m->dtype != DQ_F32 && !dq_tensor_defined(&m->lm_head_work)) {
    int64_t s[2] = {m->cfg.vocab_size, m->cfg.d_model};
    MODEL_TRY(dq_tensor_empty(&m->lm_head_work, 2, s, m->dtype, m->device));
  }
  m->work_dirty = 1;
  return DQ_OK;
}
