/*
 * config_write.c: config.json and generation_config.json as transformers
 * 5.24's save_pretrained writes them for BartForConditionalGeneration and
 * MBartForConditionalGeneration: json.dumps(indent=2, sort_keys=True) plus
 * a newline, the keys of BartConfig / MBartConfig, Python's float repr.
 * For the same values the bytes are those transformers writes (checked by
 * spec/config_spec.lua against files transformers made).
 */
#include "safetensors_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The transformers version whose file layout this reproduces. */
#define LAYOUT_TRANSFORMERS_VERSION "5.24.0"

/* Members are appended in sorted key order by the callers; this tracks
 * the separators of one indent-2 object. */
typedef struct writer {
  dq_text text;
  int first;
} writer;

static void key(writer *w, const char *k) {
  dq_text_puts(&w->text, w->first ? "\n  " : ",\n  ");
  w->first = 0;
  dq_text_json_string(&w->text, k, strlen(k), DQ_ESCAPE_PYTHON_ASCII);
  dq_text_puts(&w->text, ": ");
}

static void put_int(writer *w, const char *k, int64_t v) {
  key(w, k);
  dq_text_printf(&w->text, "%lld", (long long)v);
}

static void put_token(writer *w, const char *k, int64_t v) {
  key(w, k);
  if (v < 0) dq_text_puts(&w->text, "null");
  else dq_text_printf(&w->text, "%lld", (long long)v);
}

static void put_float(writer *w, const char *k, double v) {
  key(w, k);
  dq_text_python_float(&w->text, v);
}

static void put_bool(writer *w, const char *k, int v) {
  key(w, k);
  dq_text_puts(&w->text, v ? "true" : "false");
}

static void put_string(writer *w, const char *k, const char *v) {
  key(w, k);
  dq_text_json_string(&w->text, v, strlen(v), DQ_ESCAPE_PYTHON_ASCII);
}

static void put_raw(writer *w, const char *k, const char *json) {
  key(w, k);
  dq_text_puts(&w->text, json);
}

static void close_object(writer *w) { dq_text_puts(&w->text, w->first ? "}\n" : "\n}\n"); }

static void build_config(writer *w, const dq_bart_config *c) {
  int mbart = strcmp(c->model_type, "mbart") == 0;
  dq_text_puts(&w->text, "{");
  w->first = 1;
  put_float(w, "activation_dropout", c->activation_dropout);
  put_string(w, "activation_function", dq_activation_name(c->activation));
  put_raw(w, "architectures",
          mbart ? "[\n    \"MBartForConditionalGeneration\"\n  ]" : "[\n    \"BartForConditionalGeneration\"\n  ]");
  put_float(w, "attention_dropout", c->attention_dropout);
  put_token(w, "bos_token_id", c->bos_token_id);
  put_float(w, "classifier_dropout", c->classifier_dropout);
  put_int(w, "d_model", c->d_model);
  put_int(w, "decoder_attention_heads", c->decoder_attention_heads);
  put_int(w, "decoder_ffn_dim", c->decoder_ffn_dim);
  put_float(w, "decoder_layerdrop", c->decoder_layerdrop);
  put_int(w, "decoder_layers", c->decoder_layers);
  put_token(w, "decoder_start_token_id", c->decoder_start_token_id);
  put_float(w, "dropout", c->dropout);
  put_int(w, "encoder_attention_heads", c->encoder_attention_heads);
  put_int(w, "encoder_ffn_dim", c->encoder_ffn_dim);
  put_float(w, "encoder_layerdrop", c->encoder_layerdrop);
  put_int(w, "encoder_layers", c->encoder_layers);
  put_token(w, "eos_token_id", c->eos_token_id);
  put_token(w, "forced_eos_token_id", c->forced_eos_token_id);
  /* BartConfig (not MBartConfig) gives every config three labels. */
  if (!mbart)
    put_raw(w, "id2label", "{\n    \"0\": \"LABEL_0\",\n    \"1\": \"LABEL_1\",\n    \"2\": \"LABEL_2\"\n  }");
  put_float(w, "init_std", c->init_std);
  put_bool(w, "is_decoder", 0);
  put_bool(w, "is_encoder_decoder", 1);
  if (!mbart)
    put_raw(w, "label2id", "{\n    \"LABEL_0\": 0,\n    \"LABEL_1\": 1,\n    \"LABEL_2\": 2\n  }");
  put_int(w, "max_position_embeddings", c->max_position_embeddings);
  put_string(w, "model_type", c->model_type);
  put_token(w, "pad_token_id", c->pad_token_id);
  put_bool(w, "scale_embedding", c->scale_embedding);
  put_bool(w, "tie_word_embeddings", c->tie_word_embeddings);
  put_string(w, "transformers_version", LAYOUT_TRANSFORMERS_VERSION);
  put_bool(w, "use_cache", c->use_cache);
  put_int(w, "vocab_size", c->vocab_size);
  close_object(w);
}

/* GenerationConfig.save_pretrained writes what is set; unset fields take
 * the global defaults at generate time, so writing only the values that
 * differ from those defaults (and the token ids that are not null)
 * describes the same generation. */
static void build_generation(writer *w, const dq_generation_config *g) {
  dq_text_puts(&w->text, "{");
  w->first = 1;
  if (g->bos_token_id >= 0) put_int(w, "bos_token_id", g->bos_token_id);
  if (g->decoder_start_token_id >= 0) put_int(w, "decoder_start_token_id", g->decoder_start_token_id);
  if (g->early_stopping == DQ_EARLY_STOPPING_TRUE) put_bool(w, "early_stopping", 1);
  if (g->early_stopping == DQ_EARLY_STOPPING_NEVER) put_string(w, "early_stopping", "never");
  if (g->eos_token_id >= 0) put_int(w, "eos_token_id", g->eos_token_id);
  if (g->forced_bos_token_id >= 0) put_int(w, "forced_bos_token_id", g->forced_bos_token_id);
  if (g->forced_eos_token_id >= 0) put_int(w, "forced_eos_token_id", g->forced_eos_token_id);
  if (g->length_penalty != 1.0) put_float(w, "length_penalty", g->length_penalty);
  if (g->max_length != 20) put_int(w, "max_length", g->max_length);
  if (g->min_length != 0) put_int(w, "min_length", g->min_length);
  if (g->no_repeat_ngram_size != 0) put_int(w, "no_repeat_ngram_size", g->no_repeat_ngram_size);
  if (g->num_beams != 1) put_int(w, "num_beams", g->num_beams);
  if (g->pad_token_id >= 0) put_int(w, "pad_token_id", g->pad_token_id);
  put_string(w, "transformers_version", LAYOUT_TRANSFORMERS_VERSION);
  close_object(w);
}

static dq_status write_json(const char *dir, const char *name, writer *w, const char *op) {
  if (w->text.failed) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory building %s", op, name);
  char *path = dq_path_join(dir, name);
  if (!path) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
  dq_status st = dq_atomic_write_file(path, w->text.data, w->text.len, op);
  free(path);
  return st;
}

dq_status dq_bart_config_save(const dq_bart_config *cfg, const char *dir) {
  const char *op = "dq_bart_config_save";
  if (!cfg || !dir) return dq_fail(DQ_ERR_ARGUMENT, "%s: cfg and dir must not be NULL", op);
  dq_status st = dq_bart_config_validate(cfg, op);
  if (st || (st = dq_make_dirs(dir, op))) return st;
  writer config = {{0}, 1}, generation = {{0}, 1};
  build_config(&config, cfg);
  build_generation(&generation, &cfg->generation);
  st = write_json(dir, "config.json", &config, op);
  if (!st) st = write_json(dir, "generation_config.json", &generation, op);
  dq_text_free(&config.text);
  dq_text_free(&generation.text);
  return st;
}
