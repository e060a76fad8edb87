/*
 * rouge_vocab.c: the containers the metrics share (see rouge_internal.h):
 * byte buffers, the token vocabulary, the n-gram count map, and the
 * Unicode whitespace test that Python's str.split() uses.
 */
#include "rouge_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- byte buffer ---------------------------------------------------------------- */

int dqm_buf_reserve(dqm_buf *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) return -1;
  b->data = p;
  b->cap = cap;
  return 0;
}

int dqm_buf_append(dqm_buf *b, const char *s, size_t n) {
  if (dqm_buf_reserve(b, n)) return -1;
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = 0;
  return 0;
}

void dqm_buf_free(dqm_buf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

dq_status dqm_copy_out(const char *op, const char *s, size_t n, char *out, int64_t capacity,
                       int64_t *length) {
  if (length) *length = (int64_t)n;
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "%s: out is NULL", op);
  if (capacity < (int64_t)n + 1)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: the result needs %lld bytes with its NUL, out holds %lld",
                   op, (long long)n + 1, (long long)capacity);
  memcpy(out, s, n);
  out[n] = 0;
  return DQ_OK;
}

/* ---- hashing ---------------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a: tokens are short */
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}

static uint64_t hash_ids(const int32_t *k, int width) {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < width; i++) {
    h ^= (uint32_t)k[i];
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  return h;
}

/* ---- vocabulary ------------------------------------------------------------------- */

static int vocab_rehash(dqm_vocab *v, uint32_t nslots) {
  int32_t *slots = calloc(nslots, sizeof *slots);
  if (!slots) return -1;
  uint32_t mask = nslots - 1;
  for (int32_t id = 0; id < v->count; id++) {
    uint32_t i = (uint32_t)hash_bytes(v->chars + v->offsets[id], (size_t)v->lengths[id]) & mask;
    while (slots[i]) i = (i + 1) & mask;
    slots[i] = id + 1;
  }
  free(v->slots);
  v->slots = slots;
  v->mask = mask;
  return 0;
}

int32_t dqm_vocab_intern(dqm_vocab *v, const char *s, size_t len) {
  if (len > INT32_MAX) return -1;
  if (!v->slots && vocab_rehash(v, 1024)) return -1;
  uint32_t i = (uint32_t)hash_bytes(s, len) & v->mask;
  for (;;) {
    int32_t id = v->slots[i] - 1;
    if (id < 0) break;
    if ((size_t)v->lengths[id] == len && memcmp(v->chars + v->offsets[id], s, len) == 0) return id;
    i = (i + 1) & v->mask;
  }
  if (v->count == INT32_MAX - 1) return -1;
  if (v->count == v->ids_cap) {
    int32_t cap = v->ids_cap ? v->ids_cap * 2 : 1024;
    size_t *offsets = realloc(v->offsets, (size_t)cap * sizeof *offsets);
    if (!offsets) return -1;
    v->offsets = offsets;
    int32_t *lengths = realloc(v->lengths, (size_t)cap * sizeof *lengths);
    if (!lengths) return -1;
    v->lengths = lengths;
    v->ids_cap = cap;
  }
  if (v->chars_len + len > v->chars_cap) {
    size_t cap = v->chars_cap ? v->chars_cap : 8192;
    while (cap < v->chars_len + len) cap *= 2;
    char *chars = realloc(v->chars, cap);
    if (!chars) return -1;
    v->chars = chars;
    v->chars_cap = cap;
  }
  int32_t id = v->count++;
  memcpy(v->chars + v->chars_len, s, len);
  v->offsets[id] = v->chars_len;
  v->lengths[id] = (int32_t)len;
  v->chars_len += len;
  v->slots[i] = id + 1;
  /* keep the table at most half full */
  if ((uint64_t)v->count * 2 > (uint64_t)v->mask + 1 && vocab_rehash(v, (v->mask + 1) * 2)) return -1;
  return id;
}

void dqm_vocab_free(dqm_vocab *v) {
  free(v->chars);
  free(v->offsets);
  free(v->lengths);
  free(v->slots);
  memset(v, 0, sizeof *v);
}

/* ---- n-gram map ----------------------------------------------------------------- */

static int ngrams_alloc(dqm_ngrams *m, uint32_t nslots) {
  m->keys = malloc((size_t)nslots * (size_t)m->width * sizeof *m->keys);
  m->counts = malloc((size_t)nslots * DQM_NGRAM_COUNTERS * sizeof *m->counts);
  m->stamp = calloc(nslots, sizeof *m->stamp);
  m->live = malloc((size_t)nslots / 2 * sizeof *m->live + sizeof *m->live);
  if (!m->keys || !m->counts || !m->stamp || !m->live) return -1;
  m->mask = nslots - 1;
  return 0;
}

int dqm_ngrams_init(dqm_ngrams *m, int width) {
  memset(m, 0, sizeof *m);
  m->width = width;
  m->generation = 1;
  if (ngrams_alloc(m, 256)) {
    dqm_ngrams_free(m);
    return -1;
  }
  return 0;
}

void dqm_ngrams_clear(dqm_ngrams *m) {
  m->nlive = 0;
  if (++m->generation == 0) { /* wrapped: old stamps could look live again */
    memset(m->stamp, 0, ((size_t)m->mask + 1) * sizeof *m->stamp);
    m->generation = 1;
  }
}

static uint32_t ngrams_find(const dqm_ngrams *m, const int32_t *key, int *found) {
  uint32_t i = (uint32_t)hash_ids(key, m->width) & m->mask;
  size_t w = (size_t)m->width;
  while (m->stamp[i] == m->generation) {
    if (memcmp(m->keys + i * w, key, w * sizeof *key) == 0) {
      *found = 1;
      return i;
    }
    i = (i + 1) & m->mask;
  }
  *found = 0;
  return i;
}

static int ngrams_grow(dqm_ngrams *m) {
  dqm_ngrams old = *m;
  if (ngrams_alloc(m, (old.mask + 1) * 2)) {
    free(m->keys);
    free(m->counts);
    free(m->stamp);
    free(m->live);
    *m = old;
    return -1;
  }
  m->generation = 1;
  m->nlive = 0;
  size_t w = (size_t)m->width;
  for (uint32_t k = 0; k < old.nlive; k++) {
    uint32_t s = old.live[k];
    int found;
    uint32_t i = ngrams_find(m, old.keys + s * w, &found);
    memcpy(m->keys + i * w, old.keys + s * w, w * sizeof *m->keys);
    memcpy(m->counts + i * DQM_NGRAM_COUNTERS, old.counts + s * DQM_NGRAM_COUNTERS,
           DQM_NGRAM_COUNTERS * sizeof *m->counts);
    m->stamp[i] = m->generation;
    m->live[m->nlive++] = i;
  }
  free(old.keys);
  free(old.counts);
  free(old.stamp);
  free(old.live);
  return 0;
}

int32_t *dqm_ngrams_counters(dqm_ngrams *m, const int32_t *key) {
  int found;
  uint32_t i = ngrams_find(m, key, &found);
  if (!found) {
    if ((uint64_t)(m->nlive + 1) * 2 > (uint64_t)m->mask + 1) {
      if (ngrams_grow(m)) return NULL;
      i = ngrams_find(m, key, &found);
    }
    size_t w = (size_t)m->width;
    memcpy(m->keys + i * w, key, w * sizeof *key);
    memset(m->counts + (size_t)i * DQM_NGRAM_COUNTERS, 0, DQM_NGRAM_COUNTERS * sizeof *m->counts);
    m->stamp[i] = m->generation;
    m->live[m->nlive++] = i;
  }
  return m->counts + (size_t)i * DQM_NGRAM_COUNTERS;
}

void dqm_ngrams_free(dqm_ngrams *m) {
  free(m->keys);
  free(m->counts);
  free(m->stamp);
  free(m->live);
  memset(m, 0, sizeof *m);
}

/* ---- whitespace as Python's str.isspace ---------------------------------------------
 * U+0009..U+000D, U+001C..U+001F, U+0020, U+0085, U+00A0, U+1680,
 * U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000. */

static int is_space_cp(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

int dqm_space_len(const unsigned char *p, size_t remaining) {
  if (remaining == 0) return 0;
  unsigned char c = p[0];
  if (c < 0x80) return is_space_cp(c) ? 1 : 0;
  if (c == 0xC2 && remaining >= 2) return (p[1] == 0x85 || p[1] == 0xA0) ? 2 : 0;
  if ((c == 0xE1 || c == 0xE2 || c == 0xE3) && remaining >= 3 && (p[1] & 0xC0) == 0x80 &&
      (p[2] & 0xC0) == 0x80) {
    uint32_t cp = ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(p[1] & 0x3F) << 6) | (p[2] & 0x3F);
    return is_space_cp(cp) ? 3 : 0;
  }
  return 0;
}

int dqm_space_len_before(const unsigned char *p, size_t len) {
  if (len >= 1 && p[len - 1] < 0x80) return is_space_cp(p[len - 1]) ? 1 : 0;
  if (len >= 2 && dqm_space_len(p + len - 2, 2) == 2) return 2;
  if (len >= 3 && dqm_space_len(p + len - 3, 3) == 3) return 3;
  return 0;
}
