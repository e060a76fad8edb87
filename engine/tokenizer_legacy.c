/*
 * tokenizer_legacy.c: a GPT-2 / RoBERTa / BART tokenizer from vocab.json +
 * merges.txt, set up as transformers' RobertaTokenizer (BartTokenizer)
 * builds it: byte-level BPE without an unknown token, ByteLevel
 * pre-tokenization (add_prefix_space from tokenizer_config.json, default
 * false), the special tokens <s> <pad> </s> <unk> <mask> (names from
 * tokenizer_config.json / special_tokens_map.json when given; <mask> strips
 * the whitespace on its left unless added_tokens_decoder says otherwise),
 * the other entries of added_tokens_decoder, and `cls $A sep` wrapping.
 */
#include "json.h"
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/%s", dir, name);
  return p;
}

static int file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static dq_status read_file(const char *path, char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return dq_fail(DQ_ERR_IO, "dq_tokenizer_load: cannot open %s", path);
  tk_buf b = {0};
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (tk_buf_put(&b, chunk, n)) {
      fclose(f);
      tk_buf_free(&b);
      return dq_fail(DQ_ERR_MEMORY, "dq_tokenizer_load: out of memory reading %s", path);
    }
  }
  int err = ferror(f);
  fclose(f);
  if (err) {
    tk_buf_free(&b);
    return dq_fail(DQ_ERR_IO, "dq_tokenizer_load: error reading %s", path);
  }
  if (tk_buf_reserve(&b, 1)) {
    tk_buf_free(&b);
    return dq_fail(DQ_ERR_MEMORY, "dq_tokenizer_load: out of memory reading %s", path);
  }
  b.data[b.len] = '\0';
  *out = b.data;
  *len = b.len;
  return DQ_OK;
}

static dq_status load_vocab(dq_tokenizer *t, const char *path) {
  dq_json_doc *doc;
  dq_status st = dq_json_parse_file(path, &doc);
  if (st) return st;
  const dq_json *root = dq_json_root(doc);
  if (root->type != DQ_JSON_OBJECT) st = dq_fail(DQ_ERR_FORMAT, "%s: expected an object {token: id}", path);
  for (size_t i = 0; !st && i < root->count; i++) {
    const dq_json *v = &root->items[i];
    if (v->type != DQ_JSON_NUMBER || !v->is_integer || v->integer < 0 || v->integer > INT32_MAX) {
      st = dq_fail(DQ_ERR_FORMAT, "%s: the id of \"%s\" must be a non-negative integer", path, v->key);
    } else if (tk_strmap_set(&t->model_vocab, v->key, v->key_length, (int32_t)v->integer)) {
      st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
    } else {
      st = tk_set_id_token(t, (int32_t)v->integer, v->key, v->key_length);
    }
  }
  dq_json_free(doc);
  return st;
}

static dq_status load_merges(dq_tokenizer *t, const char *path) {
  char *text;
  size_t len;
  dq_status st = read_file(path, &text, &len);
  if (st) return st;
  uint32_t rank = 0;
  size_t line_no = 0;
  for (char *p = text; !st && p < text + len;) {
    char *end = memchr(p, '\n', (size_t)(text + len - p));
    if (!end) end = text + len;
    size_t n = (size_t)(end - p);
    if (n && p[n - 1] == '\r') n--;
    line_no++;
    if (n && !(line_no == 1 && n >= 8 && memcmp(p, "#version", 8) == 0)) {
      char *sp = memchr(p, ' ', n);
      if (!sp || memchr(sp + 1, ' ', (size_t)(p + n - sp - 1))) {
        st = dq_fail(DQ_ERR_FORMAT, "%s: line %zu is not two tokens separated by one space", path, line_no);
        break;
      }
      size_t alen = (size_t)(sp - p), blen = n - alen - 1;
      const int32_t *ia = tk_strmap_get(&t->model_vocab, p, alen), *ib = tk_strmap_get(&t->model_vocab, sp + 1, blen);
      tk_buf joined = {0};
      const int32_t *inew = NULL;
      if (tk_buf_put(&joined, p, alen) || tk_buf_put(&joined, sp + 1, blen)) {
        st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
      } else {
        inew = tk_strmap_get(&t->model_vocab, joined.data, joined.len);
      }
      tk_buf_free(&joined);
      if (!st && (!ia || !ib || !inew)) {
        st = dq_fail(DQ_ERR_FORMAT, "%s: line %zu: merge \"%.*s\" uses or makes a token missing from vocab.json", path,
                     line_no, (int)n, p);
      } else if (!st) {
        uint64_t key = (uint64_t)(uint32_t)*ia << 32 | (uint32_t)*ib;
        if (!tk_u64map_get(&t->bpe.merges, key) && tk_u64map_set(&t->bpe.merges, key, (uint64_t)rank << 32 | (uint32_t)*inew))
          st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
        rank++;
      }
    }
    p = end + 1;
  }
  free(text);
  return st;
}

/* The config's string for a key ("name" or {"content": "name"}), or dflt. */
static const char *config_string(const dq_json *cfg, const char *key, const char *dflt) {
  const dq_json *v = cfg ? dq_json_get(cfg, key) : NULL;
  if (v && v->type == DQ_JSON_STRING) return v->string;
  if (v && v->type == DQ_JSON_OBJECT) {
    const dq_json *c = dq_json_get(v, "content");
    if (c && c->type == DQ_JSON_STRING) return c->string;
  }
  return dflt;
}

static int flag(const dq_json *obj, const char *key, int dflt) {
  const dq_json *v = obj ? dq_json_get(obj, key) : NULL;
  if (v && v->type == DQ_JSON_TRUE) return 1;
  if (v && v->type == DQ_JSON_FALSE) return 0;
  return dflt;
}

/* The added_tokens_decoder entry of a content, if any. */
static const dq_json *decoder_entry(const dq_json *decoder, const char *content) {
  for (size_t i = 0; decoder && i < decoder->count; i++) {
    const dq_json *c = dq_json_get(&decoder->items[i], "content");
    if (c && c->type == DQ_JSON_STRING && !strcmp(c->string, content)) return &decoder->items[i];
  }
  return NULL;
}

static dq_status add_special(dq_tokenizer *t, const dq_json *decoder, const char *name, int lstrip_default) {
  const dq_json *e = decoder_entry(decoder, name);
  int32_t id = dq_tokenizer_token_to_id(t, name, (int64_t)strlen(name));
  if (id < 0) id = t->vocab_size; /* a new token after the vocabulary, as add_tokens does */
  tk_added a = {(char *)name, strlen(name), id, flag(e, "special", 1), flag(e, "lstrip", lstrip_default),
                flag(e, "rstrip", 0), flag(e, "single_word", 0), flag(e, "normalized", 0)};
  return tk_add_added_token(t, &a);
}

dq_status tk_load_vocab_merges(dq_tokenizer *t, const char *dir) {
  char *vocab = join(dir, "vocab.json"), *merges = join(dir, "merges.txt"), *config = join(dir, "tokenizer_config.json");
  dq_status st = (!vocab || !merges || !config) ? dq_fail(DQ_ERR_MEMORY, "dq_tokenizer_load: out of memory") : DQ_OK;
  dq_json_doc *doc = NULL;
  if (!st) {
    t->source = tk_strndup(vocab, strlen(vocab));
    if (!t->source) st = dq_fail(DQ_ERR_MEMORY, "dq_tokenizer_load: out of memory");
  }
  if (!st && !file_exists(merges)) st = dq_fail(DQ_ERR_IO, "dq_tokenizer_load: %s has vocab.json but no merges.txt", dir);
  if (!st) st = load_vocab(t, vocab);
  if (!st) st = load_merges(t, merges);
  if (!st && file_exists(config)) st = dq_json_parse_file(config, &doc);
  const dq_json *cfg = doc && dq_json_root(doc)->type == DQ_JSON_OBJECT ? dq_json_root(doc) : NULL;
  if (!st) {
    t->model_kind = TK_MODEL_BPE;
    t->bpe.unk_id = -1;
    t->pre.kind = TK_PRE_BYTE_LEVEL;
    t->pre.add_prefix_space = flag(cfg, "add_prefix_space", 0);
    t->pre.use_regex = 1;
    tk_dec_step d;
    memset(&d, 0, sizeof d);
    d.kind = TK_DEC_BYTE_LEVEL;
    t->dec = malloc(sizeof *t->dec);
    if (!t->dec) st = dq_fail(DQ_ERR_MEMORY, "dq_tokenizer_load: out of memory");
    else {
      t->dec[0] = d;
      t->n_dec = 1;
      t->has_decoder = 1;
    }
  }
  const dq_json *decoder = cfg ? dq_json_get(cfg, "added_tokens_decoder") : NULL;
  if (decoder && decoder->type != DQ_JSON_OBJECT) decoder = NULL;
  /* the added tokens the config lists, with their ids and flags */
  for (size_t i = 0; !st && decoder && i < decoder->count; i++) {
    const dq_json *e = &decoder->items[i];
    const dq_json *c = dq_json_get(e, "content");
    char *endp;
    long id = strtol(e->key, &endp, 10);
    if (!c || c->type != DQ_JSON_STRING || *endp || id < 0) {
      st = dq_fail(DQ_ERR_FORMAT, "%s: added_tokens_decoder[\"%s\"] needs an integer key and a \"content\" string", config, e->key);
      break;
    }
    if (!c->length) continue;
    tk_added a = {(char *)c->string, c->length, (int32_t)id, flag(e, "special", 0), flag(e, "lstrip", 0),
                  flag(e, "rstrip", 0), flag(e, "single_word", 0), flag(e, "normalized", 1)};
    st = tk_add_added_token(t, &a);
  }
  const char *cls = config_string(cfg, "cls_token", "<s>"), *sep = config_string(cfg, "sep_token", "</s>");
  const char *names[7] = {config_string(cfg, "bos_token", "<s>"),  config_string(cfg, "pad_token", "<pad>"),
                          config_string(cfg, "eos_token", "</s>"), config_string(cfg, "unk_token", "<unk>"),
                          cls, sep, config_string(cfg, "mask_token", "<mask>")};
  for (int r = 0; r < 7 && !st; r++) st = add_special(t, decoder, names[r], r == 6);
  if (!st) {
    t->template_items[0].ids = malloc(sizeof(int32_t));
    t->template_items[2].ids = malloc(sizeof(int32_t));
    if (!t->template_items[0].ids || !t->template_items[2].ids) {
      free(t->template_items[0].ids);
      free(t->template_items[2].ids);
      t->template_items[0].ids = t->template_items[2].ids = NULL;
      st = dq_fail(DQ_ERR_MEMORY, "dq_tokenizer_load: out of memory");
    } else {
      t->template_items[0].ids[0] = dq_tokenizer_token_to_id(t, cls, (int64_t)strlen(cls));
      t->template_items[0].n_ids = 1;
      t->template_items[1].is_sequence = 1;
      t->template_items[2].ids[0] = dq_tokenizer_token_to_id(t, sep, (int64_t)strlen(sep));
      t->template_items[2].n_ids = 1;
      t->n_template = 3;
    }
  }
  dq_json_free(doc);
  if (!st) st = tk_finish(t);
  if (!st) st = tk_load_roles(t, dir);
  free(vocab);
  free(merges);
  free(config);
  return st;
}
