/*
 * model.c: the dq_model object: creation for a configuration, its
 * parameters as the API hands them out, mode and dropout generator.
 * Files are model_io.c, students model_student.c, running model_forward.c.
 */
#include "model_internal.h"

#include <stdlib.h>
#include <string.h>

static dq_status alloc_stack_acts(model_stack_act *st, int layers) {
  st->hidden = calloc((size_t)layers + 1, sizeof *st->hidden);
  st->layers = calloc((size_t)(layers > 0 ? layers : 1), sizeof *st->layers);
  if (!st->hidden || !st->layers) return dq_fail(DQ_ERR_MEMORY, "model: out of host memory for the activation table");
  return DQ_OK;
}

dq_status model_create(dq_model **out, const dq_bart_config *cfg, int device, int dtype, const char *source) {
  const char *op = "dq_model";
  if (dtype != DQ_F32 && dtype != DQ_BF16)
    return dq_fail(DQ_ERR_DTYPE, "%s: dtype %s is not supported; use f32 or bf16 (CUDA)", op, dq_dtype_name(dtype));
  if (dtype == DQ_BF16 && device == DQ_CPU)
    return dq_fail(DQ_ERR_DTYPE, "%s: bf16 activations run on CUDA only; the CPU computes in f32", op);
  if (device < DQ_CPU) return dq_fail(DQ_ERR_DEVICE, "%s: device %d is not valid (cpu is -1, cuda:N is N)", op, device);
  MODEL_TRY(dq_bart_config_validate(cfg, source));
  if (cfg->encoder_layers < 1 || cfg->decoder_layers < 1)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s has %d encoder and %d decoder layers; a model needs at least one of each",
                   op, source, cfg->encoder_layers, cfg->decoder_layers);
  dq_model *m = calloc(1, sizeof *m);
  if (!m) return dq_fail(DQ_ERR_MEMORY, "%s: out of host memory", op);
  m->cfg = *cfg;
  m->is_mbart = strcmp(cfg->model_type, "mbart") == 0;
  m->device = device;
  m->dtype = dtype;
  m->p_dropout = (float)cfg->dropout;
  m->p_attention = (float)cfg->attention_dropout;
  m->p_activation = (float)cfg->activation_dropout;
  dq_status st = model_layout(m);
  if (!st) st = model_alloc_params(m);
  if (!st) st = alloc_stack_acts(&m->enc, cfg->encoder_layers);
  if (!st) st = alloc_stack_acts(&m->dec, cfg->decoder_layers);
  for (int k = 0; !st && k < DQ_OUT_NUM_KINDS; k++) {
    int n = model_num_outputs(m, k);
    m->inj[k] = calloc((size_t)n, sizeof *m->inj[k]);
    if (!m->inj[k]) st = dq_fail(DQ_ERR_MEMORY, "%s: out of host memory", op);
  }
  if (st) {
    dq_model_free(m);
    return st;
  }
  *out = m;
  return DQ_OK;
}

void dq_model_free(dq_model *m) {
  if (!m) return;
  model_quant_free(m);
  model_free_arena(m);
  model_free_params(m);
  for (int k = 0; k < DQ_OUT_NUM_KINDS; k++) {
    if (!m->inj[k]) continue;
    int n = model_num_outputs(m, k);
    for (int i = 0; i < n; i++) dq_tensor_release(&m->inj[k][i].buffer);
    free(m->inj[k]);
  }
  free(m->enc.hidden);
  free(m->enc.layers);
  free(m->dec.hidden);
  free(m->dec.layers);
  free(m->host_mask);
  free(m->source_dir);
  free(m);
}

static dq_status check_model(const dq_model *m, const char *op) {
  if (!m) return dq_fail(DQ_ERR_ARGUMENT, "%s: model is NULL", op);
  return DQ_OK;
}

dq_status dq_model_get_info(const dq_model *m, dq_model_info *info) {
  MODEL_TRY(check_model(m, "dq_model_get_info"));
  if (!info) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_get_info: info is NULL");
  memset(info, 0, sizeof *info);
  const dq_bart_config *c = &m->cfg;
  info->is_mbart = m->is_mbart;
  info->vocab_size = c->vocab_size;
  info->d_model = c->d_model;
  info->encoder_layers = c->encoder_layers;
  info->decoder_layers = c->decoder_layers;
  info->encoder_heads = c->encoder_attention_heads;
  info->decoder_heads = c->decoder_attention_heads;
  info->encoder_ffn_dim = c->encoder_ffn_dim;
  info->decoder_ffn_dim = c->decoder_ffn_dim;
  info->max_position_embeddings = c->max_position_embeddings;
  info->device = m->device;
  info->dtype = m->dtype;
  info->training = m->training;
  info->num_params = m->num_params;
  info->numel = m->numel;
  info->trainable_numel = m->trainable_numel;
  info->arena_bytes = m->arena_bytes;
  if (m->have_forward) {
    info->batch = m->B;
    info->source_len = m->S;
    info->target_len = m->T;
  }
  return DQ_OK;
}

dq_status dq_model_get_config(const dq_model *m, dq_bart_config *cfg) {
  MODEL_TRY(check_model(m, "dq_model_get_config"));
  if (!cfg) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_get_config: cfg is NULL");
  *cfg = m->cfg;
  return DQ_OK;
}

/* ---- parameters ------------------------------------------------------------------ */

static dq_status check_index(const dq_model *m, int32_t index, const char *op) {
  MODEL_TRY(check_model(m, op));
  if (index < 0 || index >= m->num_params)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: parameter index %d is out of range (0 to %d)", op, index, m->num_params - 1);
  return DQ_OK;
}

dq_status dq_model_param_name(const dq_model *m, int32_t index, const char **name) {
  MODEL_TRY(check_index(m, index, "dq_model_param_name"));
  if (!name) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_param_name: name is NULL");
  *name = m->params[index].name;
  return DQ_OK;
}

/* Edit distance, for "did you mean" in messages. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  size_t *row = malloc(sizeof *row * (lb + 1));
  if (!row) return (size_t)-1;
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  size_t d = row[lb];
  free(row);
  return d;
}

const char *model_closest_param(const dq_model *m, const char *name) {
  const char *best = NULL;
  size_t best_d = (size_t)-1;
  for (int i = 0; i < m->num_params; i++) {
    size_t d = edit_distance(name, m->params[i].name);
    if (d < best_d) {
      best_d = d;
      best = m->params[i].name;
    }
  }
  return best ? best : "";
}

dq_status dq_model_param_index(const dq_model *m, const char *name, int32_t *index) {
  MODEL_TRY(check_model(m, "dq_model_param_index"));
  if (!name || !index) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_param_index: name or index is NULL");
  int i = model_find_param(m, name);
  if (i < 0)
    return dq_fail(DQ_ERR_ARGUMENT, "dq_model_param_index: '%s' is not a parameter of this model (closest: '%s')", name,
                   model_closest_param(m, name));
  *index = i;
  return DQ_OK;
}

dq_status dq_model_param(dq_model *m, int32_t index, dq_tensor *out) {
  MODEL_TRY(check_index(m, index, "dq_model_param"));
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_param: out is NULL");
  dq_tensor v = model_param_view(m, &m->master, index);
  m->work_dirty = 1; /* the caller may write through the view */
  return dq_tensor_share(out, &v);
}

dq_status dq_model_param_trainable(const dq_model *m, int32_t index, int32_t *trainable) {
  MODEL_TRY(check_index(m, index, "dq_model_param_trainable"));
  if (!trainable) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_param_trainable: trainable is NULL");
  *trainable = m->params[index].trainable;
  return DQ_OK;
}

dq_status dq_model_grad(dq_model *m, int32_t index, dq_tensor *out) {
  MODEL_TRY(check_index(m, index, "dq_model_grad"));
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_grad: out is NULL");
  MODEL_TRY(model_ensure_grads(m));
  dq_tensor v = model_param_view(m, &m->grads, index);
  return dq_tensor_share(out, &v);
}

dq_status dq_model_params(dq_model *m, dq_tensor *out) {
  MODEL_TRY(check_model(m, "dq_model_params"));
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_params: out is NULL");
  m->work_dirty = 1;
  return dq_tensor_share(out, &m->master);
}

dq_status dq_model_grads(dq_model *m, dq_tensor *out) {
  MODEL_TRY(check_model(m, "dq_model_grads"));
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_grads: out is NULL");
  MODEL_TRY(model_ensure_grads(m));
  return dq_tensor_share(out, &m->grads);
}

dq_status dq_model_zero_grad(dq_model *m) {
  MODEL_TRY(check_model(m, "dq_model_zero_grad"));
  if (!dq_tensor_defined(&m->grads)) return model_ensure_grads(m);
  return dq_fill(&m->grads, 0.0);
}

dq_status dq_model_params_changed(dq_model *m) {
  MODEL_TRY(check_model(m, "dq_model_params_changed"));
  m->work_dirty = 1;
  return DQ_OK;
}

/* ---- mode and randomness -------------------------------------------------------------- */

dq_status dq_model_set_training(dq_model *m, int32_t training) {
  MODEL_TRY(check_model(m, "dq_model_set_training"));
  if (m->training != (training != 0)) {
    m->training = training != 0;
    m->work_dirty = 1; /* e.g. an eval forward after the last optimizer step */
    m->have_forward = 0; /* outputs and backward belong to a forward in the old mode */
    m->have_train_forward = 0;
  }
  return DQ_OK;
}

dq_status dq_model_set_dropout_rng(dq_model *m, uint64_t seed, uint64_t offset) {
  MODEL_TRY(check_model(m, "dq_model_set_dropout_rng"));
  m->rng_seed = seed;
  m->rng_offset = offset;
  return DQ_OK;
}

dq_status dq_model_set_dropout(dq_model *m, float dropout, float attention_dropout, float activation_dropout) {
  const char *op = "dq_model_set_dropout";
  MODEL_TRY(check_model(m, op));
  float p[3] = {dropout, attention_dropout, activation_dropout};
  static const char *const names[3] = {"dropout", "attention_dropout", "activation_dropout"};
  for (int i = 0; i < 3; i++)
    if (!(p[i] >= 0.0f && p[i] < 1.0f))
      return dq_fail(DQ_ERR_ARGUMENT, "%s: %s is %g; expected 0 <= p < 1", op, names[i], (double)p[i]);
  m->p_dropout = dropout;
  m->p_attention = attention_dropout;
  m->p_activation = activation_dropout;
  m->carved = 0; /* what the arena keeps depends on which dropouts are on */
  m->have_forward = m->have_train_forward = 0;
  return DQ_OK;
}

dq_status dq_model_get_dropout_rng(const dq_model *m, uint64_t *seed, uint64_t *offset) {
  MODEL_TRY(check_model(m, "dq_model_get_dropout_rng"));
  if (!seed || !offset) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_get_dropout_rng: NULL output pointer");
  *seed = m->rng_seed;
  *offset = m->rng_offset;
  return DQ_OK;
}
