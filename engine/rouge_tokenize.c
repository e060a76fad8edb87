/*
 * rouge_tokenize.c: rouge-score's DefaultTokenizer (rouge_score/tokenize.py)
 * on UTF-8 bytes:
 *
 *   text.lower(); re.sub("[^a-z0-9]+", " "); split on whitespace;
 *   PorterStemmer().stem(x) if len(x) > 3; keep x matching ^[a-z0-9]+$.
 *
 * Only ASCII letters and digits survive, so the only Unicode facts needed
 * are the two code points whose Python lower() produces one: U+0130 (İ ->
 * "i" + U+0307, so the token ends after the i) and U+212A (Kelvin sign ->
 * "k"). Every other non-ASCII byte is a separator, as in rouge-score (which
 * drops accented letters, CJK and emoji entirely). Invalid UTF-8 bytes are
 * separators too.
 *
 * rougeLsum sentences are the text's "\n"-separated lines; a sentence
 * marker (options.sentence_sep) is first replaced by "\n", and with
 * split_sentences the text is re-joined from dq_split_sentences' ranges.
 */
#include "rouge_internal.h"

#include <stdlib.h>
#include <string.h>

void dqm_token_list_free(dqm_token_list *l) {
  free(l->ids);
  free(l->sent);
  memset(l, 0, sizeof *l);
}

void dqm_rouge_tokenizer_free(dqm_rouge_tokenizer *t) {
  dqm_vocab_free(&t->vocab);
  free(t->stem_of);
  free(t->word);
  dqm_buf_free(&t->text);
  dqm_buf_free(&t->joined);
  free(t->bounds);
  t->stem_of = NULL;
  t->word = NULL;
  t->bounds = NULL;
  t->stem_cap = t->word_cap = t->bounds_cap = 0;
}

static int push_id(dqm_token_list *l, int32_t id) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 256;
    int32_t *ids = realloc(l->ids, cap * sizeof *ids);
    if (!ids) return -1;
    l->ids = ids;
    l->cap = cap;
  }
  l->ids[l->n++] = id;
  return 0;
}

static int push_sent(dqm_token_list *l, size_t start) {
  if (l->nsent + 1 >= l->sent_cap) {
    size_t cap = l->sent_cap ? l->sent_cap * 2 : 64;
    size_t *sent = realloc(l->sent, cap * sizeof *sent);
    if (!sent) return -1;
    l->sent = sent;
    l->sent_cap = cap;
  }
  l->sent[l->nsent++] = start;
  return 0;
}

/* The id of the finished token word[0..len), stemmed when asked. */
static int32_t token_id(dqm_rouge_tokenizer *t, size_t len) {
  int32_t raw = dqm_vocab_intern(&t->vocab, t->word, len);
  if (raw < 0 || !t->stem || len <= 3) return raw;
  if ((size_t)raw >= t->stem_cap) {
    size_t cap = t->stem_cap ? t->stem_cap : 1024;
    while (cap <= (size_t)raw) cap *= 2;
    int32_t *stem_of = realloc(t->stem_of, cap * sizeof *stem_of);
    if (!stem_of) return -1;
    for (size_t i = t->stem_cap; i < cap; i++) stem_of[i] = -1;
    t->stem_of = stem_of;
    t->stem_cap = cap;
  }
  if (t->stem_of[raw] < 0) {
    size_t n = dqm_porter_stem(t->word, len);
    /* an empty stem would fail rouge-score's ^[a-z0-9]+$ check; the Porter
     * rules never produce one from a word longer than 3, but stay safe */
    t->stem_of[raw] = n ? dqm_vocab_intern(&t->vocab, t->word, n) : -2;
    if (t->stem_of[raw] == -1) return -1;
  }
  return t->stem_of[raw];
}

static int put_char(dqm_rouge_tokenizer *t, size_t *len, char c) {
  if (*len + 1 > t->word_cap) {
    size_t cap = t->word_cap ? t->word_cap * 2 : 64;
    char *w = realloc(t->word, cap);
    if (!w) return -1;
    t->word = w;
    t->word_cap = cap;
  }
  t->word[(*len)++] = c;
  return 0;
}

static int end_token(dqm_rouge_tokenizer *t, size_t *len, dqm_token_list *out) {
  if (*len == 0) return 0;
  int32_t id = token_id(t, *len);
  *len = 0;
  if (id == -1) return -1;
  if (id == -2) return 0; /* dropped (empty stem) */
  return push_id(out, id);
}

/* Replace the marker by "\n" and/or re-split sentences; returns the text to
 * tokenize (the input itself when nothing applies), NULL on no memory. */
static const char *normalized(dqm_rouge_tokenizer *t, const char *text) {
  const char *src = text;
  if (t->sep && t->sep_len && strstr(text, t->sep)) {
    t->text.len = 0;
    const char *p = text, *hit;
    while ((hit = strstr(p, t->sep))) {
      if (dqm_buf_append(&t->text, p, (size_t)(hit - p)) || dqm_buf_append(&t->text, "\n", 1)) return NULL;
      p = hit + t->sep_len;
    }
    if (dqm_buf_append(&t->text, p, strlen(p))) return NULL;
    src = t->text.data;
  }
  if (t->split_sentences) {
    size_t count = 0, len = strlen(src);
    if (dqm_sentences(src, len, &t->bounds, &t->bounds_cap, &count)) return NULL;
    t->joined.len = 0;
    if (dqm_buf_reserve(&t->joined, len + count)) return NULL;
    for (size_t k = 0; k < count; k++) {
      if (k && dqm_buf_append(&t->joined, "\n", 1)) return NULL;
      if (dqm_buf_append(&t->joined, src + t->bounds[2 * k], t->bounds[2 * k + 1] - t->bounds[2 * k])) return NULL;
    }
    t->joined.data[t->joined.len] = 0;
    src = t->joined.data;
  }
  return src;
}

int dqm_rouge_tokens(dqm_rouge_tokenizer *t, const char *text, dqm_token_list *out) {
  out->n = 0;
  out->nsent = 0;
  const unsigned char *p = (const unsigned char *)normalized(t, text);
  if (!p) return -1;
  if (push_sent(out, 0)) return -1;
  size_t len = 0;
  for (size_t i = 0; p[i]; i++) {
    unsigned char c = p[i];
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      if (put_char(t, &len, (char)c)) return -1;
    } else if (c >= 'A' && c <= 'Z') {
      if (put_char(t, &len, (char)(c - 'A' + 'a'))) return -1;
    } else if (c == 0xC4 && p[i + 1] == 0xB0) { /* U+0130 -> "i" U+0307 */
      if (put_char(t, &len, 'i') || end_token(t, &len, out)) return -1;
      i += 1;
    } else if (c == 0xE2 && p[i + 1] == 0x84 && p[i + 2] == 0xAA) { /* U+212A -> "k" */
      if (put_char(t, &len, 'k')) return -1;
      i += 2;
    } else {
      if (end_token(t, &len, out)) return -1;
      /* a line break starts a sentence; empty lines add none */
      if (c == '\n' && out->n > out->sent[out->nsent - 1] && push_sent(out, out->n)) return -1;
    }
  }
  if (end_token(t, &len, out)) return -1;
  if (out->n == out->sent[out->nsent - 1]) out->nsent--; /* drop a trailing empty sentence */
  if (push_sent(out, out->n)) return -1; /* sentinel */
  out->nsent--;                          /* ... not counted */
  return 0;
}

dq_status dq_rouge_tokenize(const char *text, int stem, char *out, int64_t capacity, int64_t *length) {
  if (!text) return dq_fail(DQ_ERR_ARGUMENT, "dq_rouge_tokenize: text is NULL");
  dqm_rouge_tokenizer t;
  memset(&t, 0, sizeof t);
  t.stem = stem != 0;
  dqm_token_list list;
  memset(&list, 0, sizeof list);
  dqm_buf joined = {0};
  dq_status st = DQ_OK;
  if (dqm_rouge_tokens(&t, text, &list)) {
    st = dq_fail(DQ_ERR_MEMORY, "dq_rouge_tokenize: out of memory for a %zu-byte text", strlen(text));
  } else {
    for (size_t i = 0; i < list.n && !st; i++) {
      int32_t id = list.ids[i];
      if ((i && dqm_buf_append(&joined, " ", 1)) ||
          dqm_buf_append(&joined, t.vocab.chars + t.vocab.offsets[id], (size_t)t.vocab.lengths[id]))
        st = dq_fail(DQ_ERR_MEMORY, "dq_rouge_tokenize: out of memory joining %zu tokens", list.n);
    }
    if (!st) st = dqm_copy_out("dq_rouge_tokenize", joined.data ? joined.data : "", joined.len, out, capacity, length);
  }
  dqm_buf_free(&joined);
  dqm_token_list_free(&list);
  dqm_rouge_tokenizer_free(&t);
  return st;
}
