/*
 * tokenizer_load.c: reading tokenizer.json (the `tokenizers` library's
 * serialization) into a dq_tokenizer. Every component type the engine does
 * not implement is refused with a message naming it (see
 * dqbart_tokenizer.h for the supported list); truncation and padding
 * settings are ignored (the data loader truncates and pads).
 */
#include "json.h"
#include "tokenizer_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SRC (t->source)

static dq_status bad(const dq_tokenizer *t, const char *where, const char *what) {
  return dq_fail(DQ_ERR_FORMAT, "%s: %s: %s", t->source, where, what);
}

static dq_status unsupported(const dq_tokenizer *t, const char *part, const char *type) {
  return dq_fail(DQ_ERR_FORMAT, "%s: %s type \"%s\" is not supported by dqbart's tokenizer (see dqbart_tokenizer.h for "
                 "the supported components)", t->source, part, type);
}

static const char *type_of(const dq_json *v) {
  const dq_json *ty = dq_json_get(v, "type");
  return ty && ty->type == DQ_JSON_STRING ? ty->string : NULL;
}

static int get_bool(const dq_json *obj, const char *key, int dflt) {
  const dq_json *v = dq_json_get(obj, key);
  if (!v) return dflt;
  if (v->type == DQ_JSON_TRUE) return 1;
  if (v->type == DQ_JSON_FALSE) return 0;
  return dflt;
}

/* A string member (NULL when absent or null); fails on another type. */
static dq_status get_string(const dq_tokenizer *t, const dq_json *obj, const char *key, const char *where, const dq_json **out) {
  const dq_json *v = dq_json_get(obj, key);
  *out = NULL;
  if (!v || v->type == DQ_JSON_NULL) return DQ_OK;
  if (v->type != DQ_JSON_STRING) return dq_fail(DQ_ERR_FORMAT, "%s: %s.%s must be a string", t->source, where, key);
  *out = v;
  return DQ_OK;
}

/* A one-character string (Metaspace replacement, Strip content). */
static dq_status get_char(const dq_tokenizer *t, const dq_json *obj, const char *key, const char *where, int32_t dflt,
                          int32_t *out) {
  const dq_json *v;
  dq_status st = get_string(t, obj, key, where, &v);
  if (st) return st;
  if (!v) {
    *out = dflt;
    return DQ_OK;
  }
  size_t len = 0;
  int32_t cp = v->length ? tk_utf8_next(v->string, v->length, &len) : 0;
  if (!v->length || len != v->length)
    return dq_fail(DQ_ERR_FORMAT, "%s: %s.%s must be exactly one character, got \"%s\"", t->source, where, key, v->string);
  *out = cp;
  return DQ_OK;
}

/* ---- model ------------------------------------------------------------------------- */

/* "a b" or ["a", "b"] */
static dq_status merge_parts(const dq_tokenizer *t, const dq_json *m, size_t index, const char **a, size_t *alen,
                             const char **b, size_t *blen) {
  if (m->type == DQ_JSON_STRING) {
    const char *sp = memchr(m->string, ' ', m->length);
    if (!sp) return dq_fail(DQ_ERR_FORMAT, "%s: model.merges[%zu] \"%s\" is not two tokens separated by a space", SRC, index, m->string);
    *a = m->string;
    *alen = (size_t)(sp - m->string);
    *b = sp + 1;
    *blen = m->length - *alen - 1;
    return DQ_OK;
  }
  if (m->type == DQ_JSON_ARRAY && m->count == 2 && m->items[0].type == DQ_JSON_STRING && m->items[1].type == DQ_JSON_STRING) {
    *a = m->items[0].string;
    *alen = m->items[0].length;
    *b = m->items[1].string;
    *blen = m->items[1].length;
    return DQ_OK;
  }
  return dq_fail(DQ_ERR_FORMAT, "%s: model.merges[%zu] must be \"a b\" or [\"a\", \"b\"]", SRC, index);
}

static dq_status add_merge(dq_tokenizer *t, const char *a, size_t alen, const char *b, size_t blen, uint32_t rank,
                           const char *where) {
  const int32_t *ia = tk_strmap_get(&t->model_vocab, a, alen), *ib = tk_strmap_get(&t->model_vocab, b, blen);
  char *joined = malloc(alen + blen + 1);
  if (!joined) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
  memcpy(joined, a, alen);
  memcpy(joined + alen, b, blen);
  const int32_t *inew = tk_strmap_get(&t->model_vocab, joined, alen + blen);
  free(joined);
  if (!ia || !ib || !inew)
    return dq_fail(DQ_ERR_FORMAT, "%s: %s: merge \"%.*s %.*s\" uses a token missing from the vocabulary (\"%.*s\")", SRC,
                   where, (int)alen, a, (int)blen, b, (int)(!ia ? alen : !ib ? blen : 0), !ia ? a : !ib ? b : "");
  uint64_t key = (uint64_t)(uint32_t)*ia << 32 | (uint32_t)*ib;
  /* a pair listed twice keeps its first rank, as the library's map does */
  if (tk_u64map_get(&t->bpe.merges, key)) return DQ_OK;
  if (tk_u64map_set(&t->bpe.merges, key, (uint64_t)rank << 32 | (uint32_t)*inew)) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
  return DQ_OK;
}

static dq_status load_bpe(dq_tokenizer *t, const dq_json *model) {
  t->model_kind = TK_MODEL_BPE;
  tk_bpe *m = &t->bpe;
  m->unk_id = -1;
  const dq_json *vocab = dq_json_get(model, "vocab");
  if (!vocab || vocab->type != DQ_JSON_OBJECT) return bad(t, "model.vocab", "a BPE model needs an object {token: id}");
  for (size_t i = 0; i < vocab->count; i++) {
    const dq_json *v = &vocab->items[i];
    if (v->type != DQ_JSON_NUMBER || !v->is_integer || v->integer < 0 || v->integer > INT32_MAX)
      return dq_fail(DQ_ERR_FORMAT, "%s: model.vocab[\"%s\"] must be a non-negative integer id", SRC, v->key);
    if (tk_strmap_set(&t->model_vocab, v->key, v->key_length, (int32_t)v->integer)) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
    dq_status st = tk_set_id_token(t, (int32_t)v->integer, v->key, v->key_length);
    if (st) return st;
  }
  const dq_json *merges = dq_json_get(model, "merges");
  if (merges && merges->type != DQ_JSON_ARRAY) return bad(t, "model.merges", "must be an array");
  for (size_t i = 0; merges && i < merges->count; i++) {
    const char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    dq_status st = merge_parts(t, &merges->items[i], i, &a, &alen, &b, &blen);
    if (!st) st = add_merge(t, a, alen, b, blen, (uint32_t)i, "model.merges");
    if (st) return st;
  }
  const dq_json *dropout = dq_json_get(model, "dropout");
  if (dropout && dropout->type == DQ_JSON_NUMBER && dropout->number > 0)
    return bad(t, "model.dropout", "BPE dropout (random merges at encode time) is not supported; set it to null");
  const dq_json *unk, *prefix, *suffix;
  dq_status st = get_string(t, model, "unk_token", "model", &unk);
  if (!st) st = get_string(t, model, "continuing_subword_prefix", "model", &prefix);
  if (!st) st = get_string(t, model, "end_of_word_suffix", "model", &suffix);
  if (st) return st;
  if (unk) {
    const int32_t *v = tk_strmap_get(&t->model_vocab, unk->string, unk->length);
    if (!v) return dq_fail(DQ_ERR_FORMAT, "%s: model.unk_token \"%s\" is not in model.vocab", SRC, unk->string);
    m->unk_id = *v;
  }
  if (prefix && prefix->length && !(m->continuing_subword_prefix = tk_strndup(prefix->string, prefix->length)))
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
  if (suffix && suffix->length && !(m->end_of_word_suffix = tk_strndup(suffix->string, suffix->length)))
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
  m->fuse_unk = get_bool(model, "fuse_unk", 0);
  m->byte_fallback = get_bool(model, "byte_fallback", 0);
  m->ignore_merges = get_bool(model, "ignore_merges", 0);
  return DQ_OK;
}

static dq_status load_unigram(dq_tokenizer *t, const dq_json *model) {
  t->model_kind = TK_MODEL_UNIGRAM;
  tk_unigram *u = &t->unigram;
  const dq_json *vocab = dq_json_get(model, "vocab");
  if (!vocab || vocab->type != DQ_JSON_ARRAY) return bad(t, "model.vocab", "a Unigram model needs an array of [piece, score]");
  u->n_pieces = (int32_t)vocab->count;
  u->scores = malloc((vocab->count ? vocab->count : 1) * sizeof *u->scores);
  if (!u->scores) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
  u->min_score = INFINITY;
  for (size_t i = 0; i < vocab->count; i++) {
    const dq_json *e = &vocab->items[i];
    if (e->type != DQ_JSON_ARRAY || e->count != 2 || e->items[0].type != DQ_JSON_STRING || e->items[1].type != DQ_JSON_NUMBER)
      return dq_fail(DQ_ERR_FORMAT, "%s: model.vocab[%zu] must be [piece, score]", SRC, i);
    const dq_json *piece = &e->items[0];
    /* a piece listed twice maps to its last id, as the library's map does */
    if (tk_strmap_set(&t->model_vocab, piece->string, piece->length, (int32_t)i))
      return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
    dq_status st = tk_set_id_token(t, (int32_t)i, piece->string, piece->length);
    if (st) return st;
    u->scores[i] = e->items[1].number;
    if (u->scores[i] < u->min_score) u->min_score = u->scores[i];
  }
  u->unk_id = -1;
  const dq_json *unk = dq_json_get(model, "unk_id");
  if (unk && unk->type != DQ_JSON_NULL) {
    if (unk->type != DQ_JSON_NUMBER || !unk->is_integer || unk->integer < 0 || unk->integer >= (int64_t)vocab->count)
      return dq_fail(DQ_ERR_FORMAT, "%s: model.unk_id must be an index into model.vocab (0..%zu)", SRC, vocab->count - 1);
    u->unk_id = (int32_t)unk->integer;
  }
  u->byte_fallback = get_bool(model, "byte_fallback", 0);
  return DQ_OK;
}

static dq_status load_model(dq_tokenizer *t, const dq_json *model) {
  if (!model || model->type != DQ_JSON_OBJECT) return bad(t, "model", "missing or not an object");
  const char *type = type_of(model);
  if (!type) {
    /* files from before the "type" tag: tell the model by its fields */
    const dq_json *vocab = dq_json_get(model, "vocab");
    type = dq_json_get(model, "merges") ? "BPE" : (vocab && vocab->type == DQ_JSON_ARRAY) ? "Unigram" : "?";
  }
  if (!strcmp(type, "BPE")) return load_bpe(t, model);
  if (!strcmp(type, "Unigram")) return load_unigram(t, model);
  return unsupported(t, "model", type);
}

/* ---- normalizer ----------------------------------------------------------------------- */

static dq_status push_norm(dq_tokenizer *t, tk_norm_step *step) {
  tk_norm_step *p = realloc(t->norm, (t->n_norm + 1) * sizeof *p);
  if (!p) {
    tk_norm_step_free(step);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
  }
  t->norm = p;
  p[t->n_norm++] = *step;
  return DQ_OK;
}

static dq_status load_normalizer(dq_tokenizer *t, const dq_json *n, int depth) {
  if (!n || n->type == DQ_JSON_NULL) return DQ_OK;
  const char *type = type_of(n);
  if (!type || depth > 8) return bad(t, "normalizer", "an object with a \"type\" is expected");
  tk_norm_step step;
  memset(&step, 0, sizeof step);
  if (!strcmp(type, "Sequence")) {
    const dq_json *list = dq_json_get(n, "normalizers");
    if (!list || list->type != DQ_JSON_ARRAY) return bad(t, "normalizer", "Sequence needs a \"normalizers\" array");
    for (size_t i = 0; i < list->count; i++) {
      dq_status st = load_normalizer(t, &list->items[i], depth + 1);
      if (st) return st;
    }
    return DQ_OK;
  }
  if (!strcmp(type, "NFC")) step.kind = TK_NORM_NFC;
  else if (!strcmp(type, "NFD")) step.kind = TK_NORM_NFD;
  else if (!strcmp(type, "NFKC")) step.kind = TK_NORM_NFKC;
  else if (!strcmp(type, "NFKD")) step.kind = TK_NORM_NFKD;
  else if (!strcmp(type, "Lowercase")) step.kind = TK_NORM_LOWERCASE;
  else if (!strcmp(type, "StripAccents")) step.kind = TK_NORM_STRIP_ACCENTS;
  else if (!strcmp(type, "Strip")) {
    step.kind = TK_NORM_STRIP;
    step.left = get_bool(n, "strip_left", 1);
    step.right = get_bool(n, "strip_right", 1);
  } else if (!strcmp(type, "Prepend")) {
    const dq_json *v;
    dq_status st = get_string(t, n, "prepend", "normalizer Prepend", &v);
    if (st) return st;
    if (!v) return bad(t, "normalizer Prepend", "needs a \"prepend\" string");
    step.kind = TK_NORM_PREPEND;
    step.content = tk_strndup(v->string, v->length);
    step.content_len = v->length;
    if (!step.content) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
  } else if (!strcmp(type, "Replace")) {
    const dq_json *pattern = dq_json_get(n, "pattern"), *content;
    dq_status st = get_string(t, n, "content", "normalizer Replace", &content);
    if (st) return st;
    if (!content || !pattern || pattern->type != DQ_JSON_OBJECT)
      return bad(t, "normalizer Replace", "needs \"pattern\": {\"String\"|\"Regex\": ...} and a \"content\" string");
    step.kind = TK_NORM_REPLACE;
    step.content = tk_strndup(content->string, content->length);
    step.content_len = content->length;
    if (!step.content) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
    const dq_json *lit = dq_json_get(pattern, "String"), *re = dq_json_get(pattern, "Regex");
    if (lit && lit->type == DQ_JSON_STRING) {
      step.literal = tk_strndup(lit->string, lit->length);
      step.literal_len = lit->length;
      if (!step.literal) {
        tk_norm_step_free(&step);
        return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
      }
    } else if (re && re->type == DQ_JSON_STRING) {
      st = tk_regex_compile(re->string, re->length, SRC, &step.regex);
      if (st) {
        tk_norm_step_free(&step);
        return st;
      }
    } else {
      tk_norm_step_free(&step);
      return bad(t, "normalizer Replace", "pattern must be {\"String\": ...} or {\"Regex\": ...}");
    }
  } else if (!strcmp(type, "Precompiled")) {
    const dq_json *v = dq_json_get(n, "precompiled_charsmap");
    if (!v || v->type == DQ_JSON_NULL || (v->type == DQ_JSON_STRING && v->length == 0)) return DQ_OK; /* identity */
    if (v->type != DQ_JSON_STRING) return bad(t, "normalizer Precompiled", "precompiled_charsmap must be a base64 string");
    unsigned char *blob;
    size_t len;
    dq_status st = tk_base64_decode(v->string, v->length, SRC, &blob, &len);
    if (st) return st;
    step.kind = TK_NORM_PRECOMPILED;
    st = tk_charsmap_new(blob, len, SRC, &step.charsmap);
    free(blob);
    if (st) return st;
  } else {
    return unsupported(t, "normalizer", type);
  }
  return push_norm(t, &step);
}

/* ---- pre-tokenizer ------------------------------------------------------------------------ */

static dq_status prepend_scheme(const dq_tokenizer *t, const dq_json *obj, const char *where, int *out) {
  const dq_json *scheme;
  dq_status st = get_string(t, obj, "prepend_scheme", where, &scheme);
  if (st) return st;
  if (!scheme) {
    /* before prepend_scheme existed: add_prefix_space */
    *out = get_bool(obj, "add_prefix_space", 1) ? TK_PREPEND_ALWAYS : TK_PREPEND_NEVER;
  } else if (!strcmp(scheme->string, "always")) {
    *out = TK_PREPEND_ALWAYS;
  } else if (!strcmp(scheme->string, "first")) {
    *out = TK_PREPEND_FIRST;
  } else if (!strcmp(scheme->string, "never")) {
    *out = TK_PREPEND_NEVER;
  } else {
    return dq_fail(DQ_ERR_FORMAT, "%s: %s.prepend_scheme \"%s\" is not always, first or never", SRC, where, scheme->string);
  }
  return DQ_OK;
}

static dq_status load_pre_tokenizer(dq_tokenizer *t, const dq_json *p) {
  if (!p || p->type == DQ_JSON_NULL) return DQ_OK;
  const char *type = type_of(p);
  if (!type) return bad(t, "pre_tokenizer", "an object with a \"type\" is expected");
  if (!strcmp(type, "Sequence")) {
    const dq_json *list = dq_json_get(p, "pretokenizers");
    if (!list || list->type != DQ_JSON_ARRAY) return bad(t, "pre_tokenizer", "Sequence needs a \"pretokenizers\" array");
    if (list->count > 1)
      return bad(t, "pre_tokenizer", "a Sequence of several pre-tokenizers is not supported (only one ByteLevel or Metaspace)");
    return list->count ? load_pre_tokenizer(t, &list->items[0]) : DQ_OK;
  }
  if (!strcmp(type, "ByteLevel")) {
    t->pre.kind = TK_PRE_BYTE_LEVEL;
    t->pre.add_prefix_space = get_bool(p, "add_prefix_space", 1);
    t->pre.use_regex = get_bool(p, "use_regex", 1);
    return DQ_OK;
  }
  if (!strcmp(type, "Metaspace")) {
    t->pre.kind = TK_PRE_METASPACE;
    t->pre.split = get_bool(p, "split", 1);
    dq_status st = get_char(t, p, "replacement", "pre_tokenizer Metaspace", 0x2581, &t->pre.replacement);
    if (!st) st = prepend_scheme(t, p, "pre_tokenizer Metaspace", &t->pre.prepend_scheme);
    return st;
  }
  return unsupported(t, "pre_tokenizer", type);
}

/* ---- post-processor ------------------------------------------------------------------------ */

/* Compose a processor's single template with the current one ($A of the
 * new template stands for the current items). */
static dq_status compose(dq_tokenizer *t, const tk_template_item *items, int n) {
  tk_template_item cur[TK_MAX_TEMPLATE];
  int n_cur = t->n_template;
  memcpy(cur, t->template_items, (size_t)n_cur * sizeof *cur);
  if (!n_cur) {
    cur[0].is_sequence = 1;
    cur[0].ids = NULL;
    cur[0].n_ids = 0;
    n_cur = 1;
  }
  tk_template_item out[TK_MAX_TEMPLATE];
  int n_out = 0, n_seq = 0;
  for (int i = 0; i < n; i++) n_seq += items[i].is_sequence;
  if (n_seq != 1) return bad(t, "post_processor", "the single template must hold the sequence ($A) exactly once");
  for (int i = 0; i < n; i++) {
    if (items[i].is_sequence) {
      for (int k = 0; k < n_cur; k++) {
        if (n_out == TK_MAX_TEMPLATE) return bad(t, "post_processor", "the template has too many items");
        out[n_out++] = cur[k];
      }
    } else {
      if (n_out == TK_MAX_TEMPLATE) return bad(t, "post_processor", "the template has too many items");
      out[n_out++] = items[i];
    }
  }
  memcpy(t->template_items, out, (size_t)n_out * sizeof *out);
  t->n_template = n_out;
  return DQ_OK;
}

static dq_status special_item(dq_tokenizer *t, const dq_json *pair, const char *where, tk_template_item *it) {
  /* ["</s>", 2] */
  if (!pair || pair->type != DQ_JSON_ARRAY || pair->count != 2 || pair->items[1].type != DQ_JSON_NUMBER ||
      !pair->items[1].is_integer)
    return dq_fail(DQ_ERR_FORMAT, "%s: post_processor %s must be [token, id]", SRC, where);
  it->is_sequence = 0;
  it->n_ids = 1;
  it->ids = malloc(sizeof *it->ids);
  if (!it->ids) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
  it->ids[0] = (int32_t)pair->items[1].integer;
  return DQ_OK;
}

static dq_status template_items(dq_tokenizer *t, const dq_json *p, tk_template_item *items, int *n) {
  const dq_json *single = dq_json_get(p, "single"), *specials = dq_json_get(p, "special_tokens");
  if (!single || single->type != DQ_JSON_ARRAY) return bad(t, "post_processor", "TemplateProcessing needs a \"single\" array");
  if (single->count > TK_MAX_TEMPLATE) return bad(t, "post_processor", "the template has too many items");
  *n = 0;
  for (size_t i = 0; i < single->count; i++) {
    const dq_json *e = &single->items[i];
    tk_template_item *it = &items[(*n)++];
    memset(it, 0, sizeof *it);
    const dq_json *seq = dq_json_get(e, "Sequence"), *sp = dq_json_get(e, "SpecialToken");
    if (seq) {
      it->is_sequence = 1;
      continue;
    }
    const dq_json *name = sp ? dq_json_get(sp, "id") : NULL;
    if (!name || name->type != DQ_JSON_STRING) return bad(t, "post_processor", "template items must be Sequence or SpecialToken");
    const dq_json *def = specials ? dq_json_get(specials, name->string) : NULL;
    const dq_json *ids = def ? dq_json_get(def, "ids") : NULL;
    if (!ids || ids->type != DQ_JSON_ARRAY || !ids->count)
      return dq_fail(DQ_ERR_FORMAT, "%s: post_processor: special token \"%s\" of the template has no ids in special_tokens", SRC, name->string);
    it->ids = malloc(ids->count * sizeof *it->ids);
    if (!it->ids) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
    it->n_ids = (int32_t)ids->count;
    for (size_t k = 0; k < ids->count; k++) {
      if (ids->items[k].type != DQ_JSON_NUMBER || !ids->items[k].is_integer)
        return dq_fail(DQ_ERR_FORMAT, "%s: post_processor: ids of \"%s\" must be integers", SRC, name->string);
      it->ids[k] = (int32_t)ids->items[k].integer;
    }
  }
  return DQ_OK;
}

static dq_status load_post_processor(dq_tokenizer *t, const dq_json *p, int depth) {
  if (!p || p->type == DQ_JSON_NULL) return DQ_OK;
  const char *type = type_of(p);
  if (!type || depth > 8) return bad(t, "post_processor", "an object with a \"type\" is expected");
  if (!strcmp(type, "Sequence")) {
    const dq_json *list = dq_json_get(p, "processors");
    if (!list || list->type != DQ_JSON_ARRAY) return bad(t, "post_processor", "Sequence needs a \"processors\" array");
    for (size_t i = 0; i < list->count; i++) {
      dq_status st = load_post_processor(t, &list->items[i], depth + 1);
      if (st) return st;
    }
    return DQ_OK;
  }
  if (!strcmp(type, "ByteLevel")) return DQ_OK; /* offsets only */
  tk_template_item items[TK_MAX_TEMPLATE];
  memset(items, 0, sizeof items);
  int n = 0;
  dq_status st;
  if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
    st = special_item(t, dq_json_get(p, "cls"), "cls", &items[0]);
    items[1].is_sequence = 1;
    if (!st) st = special_item(t, dq_json_get(p, "sep"), "sep", &items[2]);
    n = 3;
  } else if (!strcmp(type, "TemplateProcessing")) {
    st = template_items(t, p, items, &n);
  } else {
    return unsupported(t, "post_processor", type);
  }
  if (!st) {
    /* the old template's special items are reused by compose; free only the new ones that get dropped */
    st = compose(t, items, n);
    if (!st) return DQ_OK;
  }
  for (int i = 0; i < TK_MAX_TEMPLATE; i++) free(items[i].ids);
  return st;
}

/* ---- decoder ------------------------------------------------------------------------------ */

static dq_status push_dec(dq_tokenizer *t, const tk_dec_step *d) {
  tk_dec_step *p = realloc(t->dec, (t->n_dec + 1) * sizeof *p);
  if (!p) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
  t->dec = p;
  p[t->n_dec++] = *d;
  return DQ_OK;
}

static dq_status load_decoder(dq_tokenizer *t, const dq_json *d, int depth) {
  if (!d || d->type == DQ_JSON_NULL) return DQ_OK;
  const char *type = type_of(d);
  if (!type || depth > 8) return bad(t, "decoder", "an object with a \"type\" is expected");
  t->has_decoder = 1;
  tk_dec_step step;
  memset(&step, 0, sizeof step);
  if (!strcmp(type, "Sequence")) {
    const dq_json *list = dq_json_get(d, "decoders");
    if (!list || list->type != DQ_JSON_ARRAY) return bad(t, "decoder", "Sequence needs a \"decoders\" array");
    for (size_t i = 0; i < list->count; i++) {
      dq_status st = load_decoder(t, &list->items[i], depth + 1);
      if (st) return st;
    }
    return DQ_OK;
  }
  dq_status st = DQ_OK;
  if (!strcmp(type, "ByteLevel")) {
    step.kind = TK_DEC_BYTE_LEVEL;
  } else if (!strcmp(type, "Metaspace")) {
    step.kind = TK_DEC_METASPACE;
    st = get_char(t, d, "replacement", "decoder Metaspace", 0x2581, &step.replacement);
    if (!st) st = prepend_scheme(t, d, "decoder Metaspace", &step.prepend_scheme);
  } else if (!strcmp(type, "ByteFallback")) {
    step.kind = TK_DEC_BYTE_FALLBACK;
  } else if (!strcmp(type, "Fuse")) {
    step.kind = TK_DEC_FUSE;
  } else if (!strcmp(type, "Strip")) {
    step.kind = TK_DEC_STRIP;
    st = get_char(t, d, "content", "decoder Strip", ' ', &step.strip_cp);
    int64_t start = 0, stop = 0;
    if (!st) st = dq_json_get_int(d, "start", 0, SRC, &start);
    if (!st) st = dq_json_get_int(d, "stop", 0, SRC, &stop);
    step.strip_start = start;
    step.strip_stop = stop;
  } else if (!strcmp(type, "Replace")) {
    const dq_json *pattern = dq_json_get(d, "pattern"), *content, *lit = pattern ? dq_json_get(pattern, "String") : NULL;
    st = get_string(t, d, "content", "decoder Replace", &content);
    if (st) return st;
    if (!lit || lit->type != DQ_JSON_STRING || !content)
      return bad(t, "decoder Replace", "only {\"String\": ...} patterns with a \"content\" string are supported");
    step.kind = TK_DEC_REPLACE;
    step.pattern = tk_strndup(lit->string, lit->length);
    step.pattern_len = lit->length;
    step.content = tk_strndup(content->string, content->length);
    step.content_len = content->length;
    if (!step.pattern || !step.content) st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", SRC);
  } else {
    return unsupported(t, "decoder", type);
  }
  if (!st) st = push_dec(t, &step);
  if (st) {
    free(step.pattern);
    free(step.content);
  }
  return st;
}

/* ---- added tokens ------------------------------------------------------------------------------ */

static dq_status load_added_tokens(dq_tokenizer *t, const dq_json *list) {
  if (!list || list->type == DQ_JSON_NULL) return DQ_OK;
  if (list->type != DQ_JSON_ARRAY) return bad(t, "added_tokens", "must be an array");
  for (size_t i = 0; i < list->count; i++) {
    const dq_json *e = &list->items[i];
    const dq_json *content = dq_json_get(e, "content"), *id = dq_json_get(e, "id");
    if (!content || content->type != DQ_JSON_STRING || !id || id->type != DQ_JSON_NUMBER || !id->is_integer || id->integer < 0 ||
        id->integer > INT32_MAX)
      return dq_fail(DQ_ERR_FORMAT, "%s: added_tokens[%zu] needs a \"content\" string and a non-negative integer \"id\"", SRC, i);
    if (!content->length) continue; /* the library ignores empty tokens */
    tk_added a = {(char *)content->string, content->length, (int32_t)id->integer,
                  get_bool(e, "special", 0), get_bool(e, "lstrip", 0), get_bool(e, "rstrip", 0),
                  get_bool(e, "single_word", 0), get_bool(e, "normalized", 1)};
    dq_status st = tk_add_added_token(t, &a);
    if (st) return st;
  }
  return DQ_OK;
}

dq_status tk_load_tokenizer_json(dq_tokenizer *t, const char *path, const char *dir) {
  t->source = tk_strndup(path, strlen(path));
  if (!t->source) return dq_fail(DQ_ERR_MEMORY, "dq_tokenizer_load: out of memory");
  dq_json_doc *doc;
  dq_status st = dq_json_parse_file(path, &doc);
  if (st) return st;
  const dq_json *root = dq_json_root(doc);
  if (root->type != DQ_JSON_OBJECT) {
    dq_json_free(doc);
    return bad(t, "top level", "not a JSON object");
  }
  st = load_model(t, dq_json_get(root, "model"));
  if (!st) st = load_normalizer(t, dq_json_get(root, "normalizer"), 0);
  if (!st) st = load_pre_tokenizer(t, dq_json_get(root, "pre_tokenizer"));
  if (!st) st = load_post_processor(t, dq_json_get(root, "post_processor"), 0);
  if (!st) st = load_decoder(t, dq_json_get(root, "decoder"), 0);
  if (!st) st = load_added_tokens(t, dq_json_get(root, "added_tokens"));
  dq_json_free(doc);
  if (!st && t->pre.kind == TK_PRE_BYTE_LEVEL && t->model_kind != TK_MODEL_BPE)
    st = bad(t, "pre_tokenizer", "ByteLevel pre-tokenization with a Unigram model is not supported");
  if (!st) st = tk_finish(t);
  if (!st) st = tk_load_roles(t, dir);
  return st;
}
