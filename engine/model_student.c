/*
 * model_student.c: student surgery (DQBART.md section 3). A student has the
 * teacher's configuration with fewer layers; its non-layer weights (shared
 * embedding, positions, layernorm_embedding, mBART's final layer norms,
 * final_logits_bias) are the teacher's, and student layer i of a stack is a
 * copy of the teacher layer the map names.
 */
#include "model_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static dq_status check_map(const char *stack, const int32_t *map, int32_t n, int teacher_layers) {
  const char *op = "dq_model_student";
  if (n < 1) return dq_fail(DQ_ERR_ARGUMENT, "%s: the %s needs at least one layer (got %d)", op, stack, n);
  if (!map) return dq_fail(DQ_ERR_ARGUMENT, "%s: the %s layer list is NULL", op, stack);
  for (int32_t i = 0; i < n; i++)
    if (map[i] < 0 || map[i] >= teacher_layers)
      return dq_fail(DQ_ERR_ARGUMENT, "%s: %s layer %d copies teacher layer %d, but the teacher's %s has layers 0 to %d",
                     op, stack, i, map[i], stack, teacher_layers - 1);
  return DQ_OK;
}

/* The teacher parameter a student parameter copies: the same name, with the
 * layer index of "model.<stack>.layers.<i>." mapped. */
static void teacher_name(const char *name, const int32_t *enc, const int32_t *dec, char *out, size_t cap) {
  static const char *const stacks[2] = {"model.encoder.layers.", "model.decoder.layers."};
  for (int s = 0; s < 2; s++) {
    size_t len = strlen(stacks[s]);
    if (strncmp(name, stacks[s], len) != 0) continue;
    char *rest = NULL;
    long i = strtol(name + len, &rest, 10);
    snprintf(out, cap, "%s%d%s", stacks[s], (s ? dec : enc)[i], rest);
    return;
  }
  snprintf(out, cap, "%s", name);
}

dq_status dq_model_student(dq_model **out, dq_model *teacher, const int32_t *encoder_layers,
                           int32_t num_encoder_layers, const int32_t *decoder_layers, int32_t num_decoder_layers) {
  const char *op = "dq_model_student";
  if (!out || !teacher) return dq_fail(DQ_ERR_ARGUMENT, "%s: out or teacher is NULL", op);
  MODEL_TRY(check_map("encoder", encoder_layers, num_encoder_layers, teacher->cfg.encoder_layers));
  MODEL_TRY(check_map("decoder", decoder_layers, num_decoder_layers, teacher->cfg.decoder_layers));
  dq_bart_config cfg = teacher->cfg;
  cfg.encoder_layers = num_encoder_layers;
  cfg.decoder_layers = num_decoder_layers;
  dq_model *s = NULL;
  MODEL_TRY(model_create(&s, &cfg, teacher->device, teacher->dtype, "the student configuration"));
  dq_status st = DQ_OK;
  char name[MODEL_NAME_CAP];
  for (int i = 0; !st && i < s->num_params; i++) {
    teacher_name(s->params[i].name, encoder_layers, decoder_layers, name, sizeof name);
    int j = model_find_param(teacher, name);
    if (j < 0) {
      st = dq_fail(DQ_ERR_INTERNAL, "%s: the teacher has no parameter %s for the student's %s", op, name,
                   s->params[i].name);
      break;
    }
    dq_tensor dst = model_param_view(s, &s->master, i), src = model_param_view(teacher, &teacher->master, j);
    st = dq_copy(&dst, &src);
  }
  if (!st && teacher->source_dir && !(s->source_dir = strdup(teacher->source_dir)))
    st = dq_fail(DQ_ERR_MEMORY, "%s: out of host memory", op);
  if (st) {
    dq_model_free(s);
    return st;
  }
  s->rng_seed = teacher->rng_seed;
  *out = s;
  return DQ_OK;
}
