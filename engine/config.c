/*
 * config.c: config.json (and generation_config.json) of BART and mBART
 * checkpoints into dq_bart_config, read the way transformers 5 reads them:
 * absent keys take the model class's defaults, generation defaults come
 * from generation_config.json when it exists and from config.json
 * otherwise. Every value is type- and range-checked, with messages naming
 * the file and the key.
 */
#include "json.h"
#include "safetensors_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const supported_types =
    "\"bart\" (BartForConditionalGeneration), \"mbart\" (MBartForConditionalGeneration)";

const char *dq_activation_name(int activation) {
  switch (activation) {
  case DQ_ACT_GELU: return "gelu";
  case DQ_ACT_RELU: return "relu";
  default: return NULL;
  }
}

static void default_generation(dq_generation_config *g) {
  /* transformers' GenerationConfig._get_default_generation_params */
  memset(g, 0, sizeof *g);
  g->num_beams = 1;
  g->min_length = 0;
  g->max_length = 20;
  g->no_repeat_ngram_size = 0;
  g->early_stopping = DQ_EARLY_STOPPING_FALSE;
  g->length_penalty = 1.0;
  g->bos_token_id = g->eos_token_id = g->pad_token_id = -1;
  g->decoder_start_token_id = g->forced_bos_token_id = g->forced_eos_token_id = -1;
}

dq_status dq_bart_config_defaults(dq_bart_config *cfg, const char *model_type) {
  if (!cfg) return dq_fail(DQ_ERR_ARGUMENT, "dq_bart_config_defaults: cfg is NULL");
  int mbart = model_type && strcmp(model_type, "mbart") == 0;
  if (!model_type || (!mbart && strcmp(model_type, "bart") != 0))
    return dq_fail(DQ_ERR_ARGUMENT, "dq_bart_config_defaults: model_type %s%s%s is not supported (supported: %s)",
                   model_type ? "\"" : "", model_type ? model_type : "NULL", model_type ? "\"" : "", supported_types);
  /* BartConfig and MBartConfig (transformers 5.24) share these defaults. */
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->model_type, sizeof cfg->model_type, "%s", model_type);
  cfg->vocab_size = 50265;
  cfg->max_position_embeddings = 1024;
  cfg->encoder_layers = cfg->decoder_layers = 12;
  cfg->encoder_ffn_dim = cfg->decoder_ffn_dim = 4096;
  cfg->encoder_attention_heads = cfg->decoder_attention_heads = 16;
  cfg->d_model = 1024;
  cfg->activation = DQ_ACT_GELU;
  cfg->scale_embedding = 0;
  cfg->normalize_before = mbart;
  cfg->add_final_layer_norm = mbart;
  cfg->tie_word_embeddings = 1;
  cfg->use_cache = 1;
  cfg->dropout = 0.1;
  cfg->attention_dropout = cfg->activation_dropout = cfg->classifier_dropout = 0.0;
  cfg->encoder_layerdrop = cfg->decoder_layerdrop = 0.0;
  cfg->init_std = 0.02;
  cfg->layer_norm_eps = 1e-5; /* nn.LayerNorm's default, hardcoded in modeling_bart.py */
  cfg->pad_token_id = 1;
  cfg->bos_token_id = 0;
  cfg->eos_token_id = 2;
  cfg->decoder_start_token_id = mbart ? -1 : 2;
  cfg->forced_eos_token_id = 2;
  default_generation(&cfg->generation);
  return DQ_OK;
}

/* ---- typed keys ----------------------------------------------------------------------
 * A present key must have the right type; null is refused except for
 * token ids (where it means "none"). An absent key leaves *out alone. */

typedef struct keys {
  const dq_json *obj;
  const char *source;
} keys;

static const char *json_type_name(const dq_json *v) {
  switch (v->type) {
  case DQ_JSON_NULL: return "null";
  case DQ_JSON_FALSE:
  case DQ_JSON_TRUE: return "a boolean";
  case DQ_JSON_NUMBER: return "a number";
  case DQ_JSON_STRING: return "a string";
  case DQ_JSON_ARRAY: return "an array";
  default: return "an object";
  }
}

static dq_status wrong_type(const keys *k, const char *key, const dq_json *v, const char *expected) {
  return dq_fail(DQ_ERR_FORMAT, "%s: key \"%s\" is %s; expected %s", k->source, key, json_type_name(v), expected);
}

static int json_integer(const dq_json *v, int64_t *out) {
  if (v->type != DQ_JSON_NUMBER) return 0;
  if (v->is_integer) {
    *out = v->integer;
    return 1;
  }
  if (v->number == floor(v->number) && fabs(v->number) < 9.007199254740992e15) {
    *out = (int64_t)v->number; /* 12.0 reads as 12, as Python's int() would accept */
    return 1;
  }
  return 0;
}

static dq_status get_int(const keys *k, const char *key, int64_t min, int32_t *out) {
  const dq_json *v = dq_json_get(k->obj, key);
  if (!v) return DQ_OK;
  int64_t x;
  if (!json_integer(v, &x)) return wrong_type(k, key, v, "an integer");
  if (x < min || x > INT32_MAX)
    return dq_fail(DQ_ERR_FORMAT, "%s: key \"%s\" is %lld; expected an integer from %lld to %d", k->source, key,
                   (long long)x, (long long)min, INT32_MAX);
  *out = (int32_t)x;
  return DQ_OK;
}

static dq_status get_double(const keys *k, const char *key, double *out) {
  const dq_json *v = dq_json_get(k->obj, key);
  if (!v) return DQ_OK;
  if (v->type != DQ_JSON_NUMBER) return wrong_type(k, key, v, "a number");
  *out = v->number;
  return DQ_OK;
}

static dq_status get_bool(const keys *k, const char *key, int32_t *out) {
  const dq_json *v = dq_json_get(k->obj, key);
  if (!v) return DQ_OK;
  if (v->type != DQ_JSON_TRUE && v->type != DQ_JSON_FALSE) return wrong_type(k, key, v, "true or false");
  *out = v->type == DQ_JSON_TRUE;
  return DQ_OK;
}

/* A token id: null (-1), a non-negative integer, or (transformers allows
 * it for eos) a list holding one. */
static dq_status get_token(const keys *k, const char *key, int64_t *out) {
  const dq_json *v = dq_json_get(k->obj, key);
  if (!v) return DQ_OK;
  if (v->type == DQ_JSON_NULL) {
    *out = -1;
    return DQ_OK;
  }
  const dq_json *one = v;
  if (v->type == DQ_JSON_ARRAY) {
    if (v->count != 1)
      return dq_fail(DQ_ERR_FORMAT, "%s: key \"%s\" lists %zu token ids; dqbart supports exactly one", k->source, key,
                     v->count);
    one = &v->items[0];
  }
  int64_t x;
  if (!json_integer(one, &x)) return wrong_type(k, key, one, "a token id (an integer) or null");
  if (x < 0)
    return dq_fail(DQ_ERR_FORMAT, "%s: key \"%s\" is %lld; expected a non-negative token id or null", k->source, key,
                   (long long)x);
  *out = x;
  return DQ_OK;
}

/* ---- reading ------------------------------------------------------------------------------ */

static dq_status read_model(const keys *k, dq_bart_config *c) {
  dq_status st = DQ_OK;
#define INT_KEY(name, min) \
  if (!st) st = get_int(k, #name, min, &c->name)
#define DOUBLE_KEY(name) \
  if (!st) st = get_double(k, #name, &c->name)
#define BOOL_KEY(name) \
  if (!st) st = get_bool(k, #name, &c->name)
#define TOKEN_KEY(name) \
  if (!st) st = get_token(k, #name, &c->name)
  INT_KEY(vocab_size, 1);
  INT_KEY(d_model, 1);
  INT_KEY(encoder_layers, 1);
  INT_KEY(decoder_layers, 1);
  INT_KEY(encoder_attention_heads, 1);
  INT_KEY(decoder_attention_heads, 1);
  INT_KEY(encoder_ffn_dim, 1);
  INT_KEY(decoder_ffn_dim, 1);
  INT_KEY(max_position_embeddings, 1);
  BOOL_KEY(scale_embedding);
  BOOL_KEY(normalize_before);
  BOOL_KEY(add_final_layer_norm);
  BOOL_KEY(tie_word_embeddings);
  BOOL_KEY(use_cache);
  DOUBLE_KEY(dropout);
  DOUBLE_KEY(attention_dropout);
  DOUBLE_KEY(activation_dropout);
  DOUBLE_KEY(classifier_dropout);
  DOUBLE_KEY(encoder_layerdrop);
  DOUBLE_KEY(decoder_layerdrop);
  DOUBLE_KEY(init_std);
  TOKEN_KEY(pad_token_id);
  TOKEN_KEY(bos_token_id);
  TOKEN_KEY(eos_token_id);
  TOKEN_KEY(decoder_start_token_id);
  TOKEN_KEY(forced_eos_token_id);
#undef INT_KEY
#undef DOUBLE_KEY
#undef BOOL_KEY
#undef TOKEN_KEY
  if (st) return st;

  const dq_json *act = dq_json_get(k->obj, "activation_function");
  if (act) {
    if (act->type != DQ_JSON_STRING) return wrong_type(k, "activation_function", act, "a string");
    if (strcmp(act->string, "gelu") == 0) c->activation = DQ_ACT_GELU;
    else if (strcmp(act->string, "relu") == 0) c->activation = DQ_ACT_RELU;
    else
      return dq_fail(DQ_ERR_FORMAT,
                     "%s: key \"activation_function\" is \"%s\"; dqbart implements \"gelu\" (the exact erf form) and "
                     "\"relu\"",
                     k->source, act->string);
  }
  /* Keys of configs converted by old transformers versions: transformers 5
   * ignores them, so only values that agree with the layout it builds are
   * accepted. */
  int32_t normalize_embedding = 1, static_positions = 0;
  if ((st = get_bool(k, "normalize_embedding", &normalize_embedding)) ||
      (st = get_bool(k, "static_position_embeddings", &static_positions)))
    return st;
  if (!normalize_embedding)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: key \"normalize_embedding\" is false, but transformers' %s always applies layernorm_embedding",
                   k->source, c->model_type);
  if (static_positions)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: key \"static_position_embeddings\" is true, but transformers' %s uses learned positions",
                   k->source, c->model_type);
  const dq_json *arch = dq_json_get(k->obj, "architectures");
  if (arch && arch->type != DQ_JSON_NULL) {
    if (arch->type != DQ_JSON_ARRAY) return wrong_type(k, "architectures", arch, "an array of strings");
    for (size_t i = 0; i < arch->count; i++)
      if (arch->items[i].type != DQ_JSON_STRING) return wrong_type(k, "architectures", arch, "an array of strings");
  }
  return DQ_OK;
}

static dq_status check_token(const char *source, const char *where, const char *key, int64_t id, int32_t vocab);

static dq_status read_generation(const keys *k, dq_generation_config *g, int32_t vocab) {
  dq_status st = DQ_OK;
  if (!st) st = get_int(k, "num_beams", 1, &g->num_beams);
  if (!st) st = get_int(k, "min_length", 0, &g->min_length);
  if (!st) st = get_int(k, "max_length", 1, &g->max_length);
  if (!st) st = get_int(k, "no_repeat_ngram_size", 0, &g->no_repeat_ngram_size);
  if (!st) st = get_double(k, "length_penalty", &g->length_penalty);
  if (!st) st = get_token(k, "bos_token_id", &g->bos_token_id);
  if (!st) st = get_token(k, "eos_token_id", &g->eos_token_id);
  if (!st) st = get_token(k, "pad_token_id", &g->pad_token_id);
  if (!st) st = get_token(k, "decoder_start_token_id", &g->decoder_start_token_id);
  if (!st) st = get_token(k, "forced_bos_token_id", &g->forced_bos_token_id);
  if (!st) st = get_token(k, "forced_eos_token_id", &g->forced_eos_token_id);
  if (st) return st;
  const dq_json *v = dq_json_get(k->obj, "early_stopping");
  if (v) {
    if (v->type == DQ_JSON_TRUE) g->early_stopping = DQ_EARLY_STOPPING_TRUE;
    else if (v->type == DQ_JSON_FALSE) g->early_stopping = DQ_EARLY_STOPPING_FALSE;
    else if (v->type == DQ_JSON_STRING && strcmp(v->string, "never") == 0) g->early_stopping = DQ_EARLY_STOPPING_NEVER;
    else return wrong_type(k, "early_stopping", v, "true, false or \"never\"");
  }
  /* Range-check token ids here, where the message can name this file. */
  const struct {
    const char *key;
    int64_t id;
  } tokens[] = {{"bos_token_id", g->bos_token_id},
                {"eos_token_id", g->eos_token_id},
                {"pad_token_id", g->pad_token_id},
                {"decoder_start_token_id", g->decoder_start_token_id},
                {"forced_bos_token_id", g->forced_bos_token_id},
                {"forced_eos_token_id", g->forced_eos_token_id}};
  for (size_t i = 0; i < sizeof tokens / sizeof tokens[0] && !st; i++)
    st = check_token(k->source, "", tokens[i].key, tokens[i].id, vocab);
  return st;
}

/* ---- validation ---------------------------------------------------------------------------- */

static dq_status check_probability(const char *source, const char *key, double v, int inclusive_one) {
  if (!(v >= 0) || (inclusive_one ? v > 1 : v >= 1))
    return dq_fail(DQ_ERR_FORMAT, "%s: key \"%s\" is %g; expected a probability in [0, 1%s", source, key, v,
                   inclusive_one ? "]" : ")");
  return DQ_OK;
}

static dq_status check_token(const char *source, const char *where, const char *key, int64_t id, int32_t vocab) {
  if (id < -1 || id >= vocab)
    return dq_fail(DQ_ERR_FORMAT, "%s: %skey \"%s\" is %lld; expected null or a token id below vocab_size %d", source,
                   where, key, (long long)id, vocab);
  return DQ_OK;
}

static dq_status check_positive(const char *source, const char *key, int64_t v) {
  if (v < 1)
    return dq_fail(DQ_ERR_FORMAT, "%s: key \"%s\" is %lld; expected a positive integer", source, key, (long long)v);
  return DQ_OK;
}

dq_status dq_bart_config_validate(const dq_bart_config *c, const char *source) {
  if (!c) return dq_fail(DQ_ERR_ARGUMENT, "dq_bart_config_validate: cfg is NULL");
  if (!source) source = "BART configuration";
  if (!memchr(c->model_type, '\0', sizeof c->model_type))
    return dq_fail(DQ_ERR_FORMAT, "%s: model_type is not a terminated string (supported: %s)", source, supported_types);
  int mbart = strcmp(c->model_type, "mbart") == 0;
  if (!mbart && strcmp(c->model_type, "bart") != 0)
    return dq_fail(DQ_ERR_FORMAT, "%s: model_type \"%.15s\" is not supported (supported: %s)", source, c->model_type,
                   supported_types);
  dq_status st = DQ_OK;
  const struct {
    const char *key;
    int64_t value;
  } sizes[] = {{"vocab_size", c->vocab_size},
               {"d_model", c->d_model},
               {"encoder_layers", c->encoder_layers},
               {"decoder_layers", c->decoder_layers},
               {"encoder_attention_heads", c->encoder_attention_heads},
               {"decoder_attention_heads", c->decoder_attention_heads},
               {"encoder_ffn_dim", c->encoder_ffn_dim},
               {"decoder_ffn_dim", c->decoder_ffn_dim},
               {"max_position_embeddings", c->max_position_embeddings}};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0] && !st; i++)
    st = check_positive(source, sizes[i].key, sizes[i].value);
  if (st) return st;
  if (c->d_model % c->encoder_attention_heads != 0)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: key \"d_model\" (%d) is not divisible by key \"encoder_attention_heads\" (%d); each head needs "
                   "d_model / heads dims",
                   source, c->d_model, c->encoder_attention_heads);
  if (c->d_model % c->decoder_attention_heads != 0)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: key \"d_model\" (%d) is not divisible by key \"decoder_attention_heads\" (%d); each head needs "
                   "d_model / heads dims",
                   source, c->d_model, c->decoder_attention_heads);
  if (!dq_activation_name(c->activation))
    return dq_fail(DQ_ERR_FORMAT, "%s: activation %d is not one of gelu (0), relu (1)", source, c->activation);
  if (c->normalize_before != mbart)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: key \"normalize_before\" is %s, but transformers builds model_type \"%s\" %s whatever this key "
                   "says; use model_type \"%s\" for a %s model",
                   source, c->normalize_before ? "true" : "false", c->model_type, mbart ? "pre-LN" : "post-LN",
                   mbart ? "bart" : "mbart", mbart ? "post-LN" : "pre-LN");
  if (c->add_final_layer_norm != mbart)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: key \"add_final_layer_norm\" is %s, but transformers builds model_type \"%s\" %s a final "
                   "layer_norm whatever this key says",
                   source, c->add_final_layer_norm ? "true" : "false", c->model_type, mbart ? "with" : "without");
  if ((st = check_probability(source, "dropout", c->dropout, 0)) ||
      (st = check_probability(source, "attention_dropout", c->attention_dropout, 0)) ||
      (st = check_probability(source, "activation_dropout", c->activation_dropout, 0)) ||
      (st = check_probability(source, "classifier_dropout", c->classifier_dropout, 0)) ||
      (st = check_probability(source, "encoder_layerdrop", c->encoder_layerdrop, 1)) ||
      (st = check_probability(source, "decoder_layerdrop", c->decoder_layerdrop, 1)))
    return st;
  if (!(c->init_std >= 0) || isinf(c->init_std))
    return dq_fail(DQ_ERR_FORMAT, "%s: key \"init_std\" is %g; expected a finite non-negative number", source,
                   c->init_std);
  if (!(c->layer_norm_eps > 0))
    return dq_fail(DQ_ERR_FORMAT, "%s: layer_norm_eps is %g; expected a positive number", source, c->layer_norm_eps);
  const dq_generation_config *g = &c->generation;
  const struct {
    const char *where, *key;
    int64_t id;
  } tokens[] = {{"", "pad_token_id", c->pad_token_id},
                {"", "bos_token_id", c->bos_token_id},
                {"", "eos_token_id", c->eos_token_id},
                {"", "decoder_start_token_id", c->decoder_start_token_id},
                {"", "forced_eos_token_id", c->forced_eos_token_id},
                {"generation ", "bos_token_id", g->bos_token_id},
                {"generation ", "eos_token_id", g->eos_token_id},
                {"generation ", "pad_token_id", g->pad_token_id},
                {"generation ", "decoder_start_token_id", g->decoder_start_token_id},
                {"generation ", "forced_bos_token_id", g->forced_bos_token_id},
                {"generation ", "forced_eos_token_id", g->forced_eos_token_id}};
  for (size_t i = 0; i < sizeof tokens / sizeof tokens[0] && !st; i++)
    st = check_token(source, tokens[i].where, tokens[i].key, tokens[i].id, c->vocab_size);
  if (st) return st;
  if (g->num_beams < 1)
    return dq_fail(DQ_ERR_FORMAT, "%s: generation key \"num_beams\" is %d; expected at least 1", source, g->num_beams);
  if (g->min_length < 0 || g->max_length < 1 || g->no_repeat_ngram_size < 0)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: generation keys min_length %d, max_length %d, no_repeat_ngram_size %d; expected min_length >= 0, "
                   "max_length >= 1, no_repeat_ngram_size >= 0",
                   source, g->min_length, g->max_length, g->no_repeat_ngram_size);
  if (g->early_stopping < 0 || g->early_stopping > 2)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: generation key \"early_stopping\" is %d; expected false (0), true (1) or never (2)", source,
                   g->early_stopping);
  if (!isfinite(g->length_penalty))
    return dq_fail(DQ_ERR_FORMAT, "%s: generation key \"length_penalty\" is %g; expected a finite number", source,
                   g->length_penalty);
  return DQ_OK;
}

/* ---- load ------------------------------------------------------------------------------------- */

static dq_status load_generation(dq_bart_config *cfg, const char *config_path, const dq_json *config_root) {
  char *dir = dq_path_dirname(config_path);
  char *path = dir ? dq_path_join(dir, "generation_config.json") : NULL;
  free(dir);
  if (!path) return dq_fail(DQ_ERR_MEMORY, "dq_bart_config_load: out of memory");
  dq_status st = DQ_OK;
  if (dq_path_exists(path)) {
    /* transformers takes generation_config.json whole: config.json's
     * generation keys no longer count once it exists. */
    dq_json_doc *doc = NULL;
    st = dq_json_parse_file(path, &doc);
    if (!st && dq_json_root(doc)->type != DQ_JSON_OBJECT)
      st = dq_fail(DQ_ERR_FORMAT, "%s: expected a JSON object", path);
    if (!st) {
      keys k = {dq_json_root(doc), path};
      st = read_generation(&k, &cfg->generation, cfg->vocab_size);
      cfg->generation.from_generation_config = 1;
    }
    dq_json_free(doc);
  } else {
    keys k = {config_root, config_path};
    st = read_generation(&k, &cfg->generation, cfg->vocab_size);
  }
  free(path);
  return st;
}

dq_status dq_bart_config_load(dq_bart_config *cfg, const char *dir) {
  const char *op = "dq_bart_config_load";
  if (!cfg || !dir) return dq_fail(DQ_ERR_ARGUMENT, "%s: cfg and dir must not be NULL", op);
  char *path = dq_path_is_dir(dir) ? dq_path_join(dir, "config.json") : strdup(dir);
  if (!path) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
  if (!dq_path_exists(path)) {
    dq_status st = dq_path_is_dir(dir) ? dq_fail(DQ_ERR_IO, "%s: %s has no config.json", op, dir)
                                       : dq_fail(DQ_ERR_IO, "%s: %s does not exist (expected a checkpoint directory "
                                                            "or its config.json)", op, dir);
    free(path);
    return st;
  }
  dq_json_doc *doc = NULL;
  dq_status st = dq_json_parse_file(path, &doc);
  const dq_json *root = st ? NULL : dq_json_root(doc);
  if (!st && root->type != DQ_JSON_OBJECT) st = dq_fail(DQ_ERR_FORMAT, "%s: expected a JSON object", path);
  if (!st) {
    const dq_json *type = dq_json_get(root, "model_type");
    if (!type)
      st = dq_fail(DQ_ERR_FORMAT, "%s: missing key \"model_type\" (supported: %s)", path, supported_types);
    else if (type->type != DQ_JSON_STRING)
      st = dq_fail(DQ_ERR_FORMAT, "%s: key \"model_type\" is %s; expected a string (supported: %s)", path,
                   json_type_name(type), supported_types);
    else if (strcmp(type->string, "bart") != 0 && strcmp(type->string, "mbart") != 0)
      st = dq_fail(DQ_ERR_FORMAT, "%s: model_type \"%s\" is not supported (supported: %s)", path, type->string,
                   supported_types);
    else
      st = dq_bart_config_defaults(cfg, type->string);
  }
  if (!st) {
    keys k = {root, path};
    st = read_model(&k, cfg);
  }
  if (!st) st = load_generation(cfg, path, root);
  if (!st) st = dq_bart_config_validate(cfg, path);
  dq_json_free(doc);
  free(path);
  return st;
}
