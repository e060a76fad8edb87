/*
 * tokenizer_vocab.c: what both loaders share: the id <-> token tables,
 * added tokens, roles (bos/eos/pad/unk/mask) from tokenizer_config.json or
 * special_tokens_map.json, the final checks, and freeing.
 */
#include "json.h"
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

dq_status tk_set_id_token(dq_tokenizer *t, int32_t id, const char *s, size_t n) {
  if (id < 0) return dq_fail(DQ_ERR_FORMAT, "%s: token \"%.*s\" has a negative id %d", t->source, (int)n, s, id);
  if (id >= t->id_token_cap) {
    int32_t cap = t->id_token_cap ? t->id_token_cap : 256;
    while (cap <= id) cap = cap > (1 << 29) ? id + 1 : cap * 2;
    char **tokens = realloc(t->id_token, (size_t)cap * sizeof *tokens);
    if (tokens) t->id_token = tokens;
    uint32_t *lens = realloc(t->id_token_len, (size_t)cap * sizeof *lens);
    if (lens) t->id_token_len = lens;
    if (!tokens || !lens) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory for %d tokens", t->source, cap);
    for (int32_t i = t->id_token_cap; i < cap; i++) {
      t->id_token[i] = NULL;
      t->id_token_len[i] = 0;
    }
    t->id_token_cap = cap;
  }
  if (id >= t->vocab_size) t->vocab_size = id + 1;
  if (t->id_token[id]) {
    if (t->id_token_len[id] == n && memcmp(t->id_token[id], s, n) == 0) return DQ_OK;
    free(t->id_token[id]);
  }
  t->id_token[id] = tk_strndup(s, n);
  if (!t->id_token[id]) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", t->source);
  t->id_token_len[id] = (uint32_t)n;
  return DQ_OK;
}

dq_status tk_add_added_token(dq_tokenizer *t, const tk_added *a) {
  for (size_t i = 0; i < t->n_added; i++) {
    if (t->added[i].len == a->len && memcmp(t->added[i].content, a->content, a->len) == 0) {
      /* the same content again: the later flags win (tokenizers updates the entry) */
      char *content = t->added[i].content;
      t->added[i] = *a;
      t->added[i].content = content;
      return tk_set_id_token(t, a->id, a->content, a->len);
    }
  }
  tk_added *p = realloc(t->added, (t->n_added + 1) * sizeof *p);
  if (!p) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", t->source);
  t->added = p;
  p[t->n_added] = *a;
  p[t->n_added].content = tk_strndup(a->content, a->len);
  if (!p[t->n_added].content) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", t->source);
  t->n_added++;
  return tk_set_id_token(t, a->id, a->content, a->len);
}

/* ---- roles --------------------------------------------------------------------------- */

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* A role's token string in a config object: "name" or {"content": "name"}. */
static const char *role_string(const dq_json *cfg, const char *key) {
  const dq_json *v = dq_json_get(cfg, key);
  if (!v) return NULL;
  if (v->type == DQ_JSON_STRING) return v->string;
  if (v->type == DQ_JSON_OBJECT) {
    const dq_json *c = dq_json_get(v, "content");
    if (c && c->type == DQ_JSON_STRING) return c->string;
  }
  return NULL;
}

dq_status tk_load_roles(dq_tokenizer *t, const char *dir) {
  static const char *const keys[5] = {"pad_token", "bos_token", "eos_token", "unk_token", "mask_token"};
  static const char *const defaults[5] = {"<pad>", "<s>", "</s>", "<unk>", "<mask>"};
  int32_t *slots[5] = {&t->pad_id, &t->bos_id, &t->eos_id, &t->unk_id, &t->mask_id};
  const char *found[5] = {NULL};
  dq_json_doc *docs[2] = {NULL, NULL};
  static const char *const files[2] = {"tokenizer_config.json", "special_tokens_map.json"};
  dq_status st = DQ_OK;
  for (int f = 0; f < 2 && dir && !st; f++) {
    size_t n = strlen(dir) + strlen(files[f]) + 2;
    char *path = malloc(n);
    if (!path) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", t->source);
    snprintf(path, n, "%s/%s", dir, files[f]);
    if (file_exists(path)) {
      st = dq_json_parse_file(path, &docs[f]);
      if (!st && dq_json_root(docs[f])->type == DQ_JSON_OBJECT) {
        for (int r = 0; r < 5; r++)
          if (!found[r]) found[r] = role_string(dq_json_root(docs[f]), keys[r]);
      }
    }
    free(path);
  }
  for (int r = 0; r < 5 && !st; r++) {
    const char *name = found[r] ? found[r] : defaults[r];
    int32_t id = dq_tokenizer_token_to_id(t, name, (int64_t)strlen(name));
    if (id >= 0) *slots[r] = id;
  }
  /* the model's own unknown token when no file names one */
  if (!st && !found[3]) {
    int32_t model_unk = t->model_kind == TK_MODEL_BPE ? t->bpe.unk_id : t->unigram.unk_id;
    if (model_unk >= 0) t->unk_id = model_unk;
  }
  for (int f = 0; f < 2; f++) dq_json_free(docs[f]);
  return st;
}

/* ---- final tables ----------------------------------------------------------------------- */

static void byte_token_table(const dq_tokenizer *t, int32_t *table) {
  for (int b = 0; b < 256; b++) {
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    const int32_t *v = tk_strmap_get(&t->model_vocab, name, 6);
    table[b] = v ? *v : -1;
  }
}

dq_status tk_finish(dq_tokenizer *t) {
  t->added_index = malloc((size_t)(t->vocab_size ? t->vocab_size : 1) * sizeof *t->added_index);
  if (!t->added_index) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", t->source);
  for (int32_t i = 0; i < t->vocab_size; i++) t->added_index[i] = -1;
  for (size_t i = 0; i < t->n_added; i++) t->added_index[t->added[i].id] = (int32_t)i;
  /* matchers: non-normalized tokens on the raw text, normalized ones after
   * normalization (their content normalized the same way) */
  size_t n = t->n_added;
  const char **keys = malloc((n ? n : 1) * sizeof *keys);
  size_t *lens = malloc((n ? n : 1) * sizeof *lens);
  int32_t *values = malloc((n ? n : 1) * sizeof *values);
  char **owned = calloc(n ? n : 1, sizeof *owned);
  dq_status st = (!keys || !lens || !values || !owned) ? dq_fail(DQ_ERR_MEMORY, "%s: out of memory", t->source) : DQ_OK;
  for (int pass = 0; pass < 2 && !st; pass++) {
    size_t k = 0;
    for (size_t i = 0; i < n && !st; i++) {
      const tk_added *a = &t->added[i];
      if (a->normalized != pass) continue;
      keys[k] = a->content;
      lens[k] = a->len;
      values[k] = (int32_t)i;
      if (pass == 1 && t->n_norm) {
        tk_buf cur = {0}, tmp = {0};
        if (tk_buf_put(&cur, a->content, a->len)) st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", t->source);
        for (size_t s = 0; s < t->n_norm && !st; s++) {
          st = tk_norm_apply(&t->norm[s], cur.data, cur.len, &tmp, NULL);
          tk_buf swap = cur;
          cur = tmp;
          tmp = swap;
        }
        tk_buf_free(&tmp);
        if (!st && tk_buf_reserve(&cur, 1)) st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", t->source);
        owned[i] = cur.data;
        keys[k] = cur.data ? cur.data : "";
        lens[k] = cur.len;
      }
      k++;
    }
    if (!st) st = tk_matcher_build(pass ? &t->norm_matcher : &t->raw_matcher, keys, lens, values, k);
  }
  for (size_t i = 0; owned && i < n; i++) free(owned[i]);
  free(owned);
  free(keys);
  free(lens);
  free(values);
  if (st) return st;
  byte_token_table(t, t->model_kind == TK_MODEL_BPE ? t->bpe.byte_token_ids : t->unigram.byte_token_ids);
  if (t->model_kind == TK_MODEL_BPE) {
    const int32_t *table = tk_byte_table();
    for (int b = 0; b < 256; b++) {
      char u[4];
      size_t len = tk_utf8_encode(table[b], u);
      const int32_t *v = tk_strmap_get(&t->model_vocab, u, len);
      t->bpe.byte_ids[b] = v ? *v : -1;
    }
    t->bpe.byte_level = t->pre.kind == TK_PRE_BYTE_LEVEL;
  } else {
    st = tk_unigram_build_trie(t);
  }
  return st;
}

void tk_tokenizer_destroy(dq_tokenizer *t) {
  if (!t) return;
  for (int32_t i = 0; i < t->vocab_size; i++) free(t->id_token[i]);
  free(t->id_token);
  free(t->id_token_len);
  tk_strmap_free(&t->model_vocab);
  tk_u64map_free(&t->bpe.merges);
  free(t->bpe.continuing_subword_prefix);
  free(t->bpe.end_of_word_suffix);
  free(t->unigram.scores);
  tk_matcher_free(&t->unigram.trie);
  for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
  free(t->added);
  free(t->added_index);
  tk_matcher_free(&t->raw_matcher);
  tk_matcher_free(&t->norm_matcher);
  for (size_t i = 0; i < t->n_norm; i++) tk_norm_step_free(&t->norm[i]);
  free(t->norm);
  for (int k = 0; k < t->n_template; k++) free(t->template_items[k].ids);
  for (size_t i = 0; i < t->n_dec; i++) {
    free(t->dec[i].pattern);
    free(t->dec[i].content);
  }
  free(t->dec);
  while (t->pool) {
    tk_work *w = t->pool;
    t->pool = w->next;
    tk_work_free(w);
  }
  pthread_mutex_destroy(&t->pool_lock);
  free(t->source);
  free(t);
}
