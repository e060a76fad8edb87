/*
 * rouge_internal.h: what the metric files (rouge*.c, bleu*.c, porter.c,
 * sentences.c) share: a growable byte buffer, a token vocabulary that maps
 * strings to dense ids, and a hash map from n-grams of ids to counts.
 * Names start with dqm_ so they never meet other engine internals.
 */
#ifndef DQ_ROUGE_INTERNAL_H
#define DQ_ROUGE_INTERNAL_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

/* ---- growable byte buffer ------------------------------------------------ */

typedef struct dqm_buf {
  char *data;
  size_t len, cap;
} dqm_buf;

/* 0 on success, -1 when memory ran out (the buffer keeps its content). */
int dqm_buf_reserve(dqm_buf *b, size_t extra);
int dqm_buf_append(dqm_buf *b, const char *s, size_t n);
void dqm_buf_free(dqm_buf *b);

/* Copy `s` (or strlen(s) bytes if n < 0) into out/capacity as a NUL
 * terminated string, the public out/capacity/length contract. */
dq_status dqm_copy_out(const char *op, const char *s, size_t n, char *out, int64_t capacity,
                       int64_t *length);

/* ---- vocabulary: byte strings -> ids 0, 1, 2, ... -------------------------- */

typedef struct dqm_vocab {
  char *chars;
  size_t chars_len, chars_cap;
  size_t *offsets;   /* per id */
  int32_t *lengths;  /* per id */
  int32_t count, ids_cap;
  int32_t *slots;    /* id + 1, 0 = empty; open addressing */
  uint32_t mask;     /* slots - 1 */
} dqm_vocab;

/* The id of s[0..len), added when new; -1 when memory ran out. */
int32_t dqm_vocab_intern(dqm_vocab *v, const char *s, size_t len);
void dqm_vocab_free(dqm_vocab *v);

/* ---- n-gram counts --------------------------------------------------------------
 * Keys are `width` ids (shorter n-grams padded with -1); each key carries
 * three counters whose meaning is the caller's. Clearing is O(1) (slots are
 * stamped with a generation), so one map serves every pair of a corpus. */

enum { DQM_NGRAM_COUNTERS = 3 };

typedef struct dqm_ngrams {
  int width;
  uint32_t mask;       /* slots - 1 */
  int32_t *keys;       /* slots * width */
  int32_t *counts;     /* slots * DQM_NGRAM_COUNTERS */
  uint32_t *stamp;     /* a slot is live iff stamp == generation */
  uint32_t generation;
  uint32_t *live;      /* live slots in insertion order */
  uint32_t nlive;
} dqm_ngrams;

int dqm_ngrams_init(dqm_ngrams *m, int width);
void dqm_ngrams_clear(dqm_ngrams *m);
/* The counters of `key` (inserted with zeros when new); NULL on no memory. */
int32_t *dqm_ngrams_counters(dqm_ngrams *m, const int32_t *key);
void dqm_ngrams_free(dqm_ngrams *m);

/* ---- text helpers ---------------------------------------------------------------- */

/* Bytes of the Unicode whitespace code point (Python's str.isspace) that
 * starts at p, or 0. */
int dqm_space_len(const unsigned char *p, size_t remaining);
/* Bytes of a whitespace code point that ends just before p[len], or 0. */
int dqm_space_len_before(const unsigned char *p, size_t len);

/* In-place nltk Porter stem of w[0..len) (lower-case ASCII letters and
 * digits); returns the new length, never more than len. */
size_t dqm_porter_stem(char *w, size_t len);

/* Sentence ranges of text[0..len): appends pairs [start, end) to *bounds
 * (grown with realloc), sets *count. -1 when memory ran out. */
int dqm_sentences(const char *text, size_t len, size_t **bounds, size_t *cap, size_t *count);

/* The 13a tokenization of text[0..len), tokens separated by one space,
 * into out (replaced). tmp is scratch. -1 when memory ran out. */
int dqm_tokenize_13a(const char *text, size_t len, dqm_buf *out, dqm_buf *tmp);

/* ---- rouge-score tokens --------------------------------------------------------------- */

/* A tokenized text: ids into the tokenizer's vocabulary, and the start of
 * each non-empty sentence (lines, for rougeLsum) with sent[nsent] == n. */
typedef struct dqm_token_list {
  int32_t *ids;
  size_t n, cap;
  size_t *sent;
  size_t nsent, sent_cap;
} dqm_token_list;

typedef struct dqm_rouge_tokenizer {
  int stem;
  int split_sentences;
  const char *sep;     /* NULL or the sentence marker read as "\n" */
  size_t sep_len;
  dqm_vocab vocab;     /* raw and stemmed tokens share ids */
  int32_t *stem_of;    /* raw token id -> stemmed id, -1 not yet stemmed */
  size_t stem_cap;
  char *word;          /* the token being built */
  size_t word_cap;
  dqm_buf text, joined; /* normalized copies (marker replaced, sentences split) */
  size_t *bounds;
  size_t bounds_cap;
} dqm_rouge_tokenizer;

/* Tokenize like rouge-score's DefaultTokenizer into out (replaced). -1 when
 * memory ran out. */
int dqm_rouge_tokens(dqm_rouge_tokenizer *t, const char *text, dqm_token_list *out);
void dqm_rouge_tokenizer_free(dqm_rouge_tokenizer *t);
void dqm_token_list_free(dqm_token_list *l);

#endif
