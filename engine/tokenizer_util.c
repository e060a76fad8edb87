/* tokenizer_util.c: buffers, hash maps, UTF-8 and base64 helpers of the
 * tokenizer files. */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- buffers ------------------------------------------------------------------ */

static int grow(void **data, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : 16;
  while (c < need) c *= 2;
  void *p = realloc(*data, c * elem);
  if (!p) return -1;
  *data = p;
  *cap = c;
  return 0;
}

int tk_buf_reserve(tk_buf *b, size_t extra) {
  /* one spare byte so callers can NUL-terminate */
  return grow((void **)&b->data, &b->cap, b->len + extra + 1, 1);
}

int tk_buf_put(tk_buf *b, const void *p, size_t n) {
  if (tk_buf_reserve(b, n)) return -1;
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int tk_buf_putc(tk_buf *b, char c) {
  if (b->len + 1 >= b->cap && tk_buf_reserve(b, 1)) return -1;
  b->data[b->len++] = c;
  return 0;
}

int tk_buf_put_cp(tk_buf *b, int32_t cp) {
  char u[4];
  return tk_buf_put(b, u, tk_utf8_encode(cp, u));
}

void tk_buf_free(tk_buf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

int tk_ids_push(tk_ids *v, int32_t id) {
  if (grow((void **)&v->data, &v->cap, v->len + 1, sizeof *v->data)) return -1;
  v->data[v->len++] = id;
  return 0;
}

int tk_ids_put(tk_ids *v, const int32_t *p, size_t n) {
  if (grow((void **)&v->data, &v->cap, v->len + n, sizeof *v->data)) return -1;
  if (n) memcpy(v->data + v->len, p, n * sizeof *p);
  v->len += n;
  return 0;
}

void tk_ids_free(tk_ids *v) {
  free(v->data);
  memset(v, 0, sizeof *v);
}

int tk_ranges_push(tk_ranges *v, size_t start, size_t len) {
  if (grow((void **)&v->data, &v->cap, v->len + 1, sizeof *v->data)) return -1;
  v->data[v->len].start = start;
  v->data[v->len].len = len;
  v->len++;
  return 0;
}

void tk_ranges_free(tk_ranges *v) {
  free(v->data);
  memset(v, 0, sizeof *v);
}

char *tk_strndup(const char *s, size_t n) {
  char *p = malloc(n + 1);
  if (!p) return NULL;
  if (n) memcpy(p, s, n);
  p[n] = '\0';
  return p;
}

/* ---- hashing ---------------------------------------------------------------- */

/* 64-bit multiply-mix over 8-byte words: fast on short keys (words, pieces). */
uint64_t tk_hash_bytes(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, s, 8);
    h = (h ^ (w * 0x87C37B91114253D5ull)) * 0x4CF5AD432745937Full;
    h ^= h >> 29;
    s += 8;
    n -= 8;
  }
  uint64_t w = 0;
  for (size_t i = 0; i < n; i++) w |= (uint64_t)s[i] << (8 * i);
  h = (h ^ (w * 0x87C37B91114253D5ull)) * 0x4CF5AD432745937Full;
  h ^= h >> 32;
  h *= 0xD6E8FEB86659FD93ull;
  h ^= h >> 32;
  return h;
}

/* ---- string map ---------------------------------------------------------------- */

static int strmap_rehash(tk_strmap *m, size_t nslots) {
  uint32_t *slots = calloc(nslots, sizeof *slots);
  if (!slots) return -1;
  for (size_t i = 0; i < m->count; i++) {
    size_t j = m->entries[i].hash & (nslots - 1);
    while (slots[j]) j = (j + 1) & (nslots - 1);
    slots[j] = (uint32_t)(i + 1);
  }
  free(m->slots);
  m->slots = slots;
  m->nslots = nslots;
  return 0;
}

int32_t *tk_strmap_get(const tk_strmap *m, const char *key, size_t len) {
  if (!m->nslots) return NULL;
  uint64_t h = tk_hash_bytes(key, len);
  size_t j = h & (m->nslots - 1);
  for (;;) {
    uint32_t e = m->slots[j];
    if (!e) return NULL;
    tk_strmap_entry *ent = &m->entries[e - 1];
    if (ent->hash == h && ent->key_len == len && memcmp(m->keys.data + ent->key_off, key, len) == 0)
      return &ent->value;
    j = (j + 1) & (m->nslots - 1);
  }
}

int tk_strmap_set(tk_strmap *m, const char *key, size_t len, int32_t value) {
  int32_t *v = tk_strmap_get(m, key, len);
  if (v) {
    *v = value;
    return 0;
  }
  if ((m->count + 1) * 4 > m->nslots * 3 && strmap_rehash(m, m->nslots ? m->nslots * 2 : 64)) return -1;
  if (grow((void **)&m->entries, &m->cap, m->count + 1, sizeof *m->entries)) return -1;
  size_t off = m->keys.len;
  if (tk_buf_put(&m->keys, key, len)) return -1;
  uint64_t h = tk_hash_bytes(key, len);
  tk_strmap_entry *ent = &m->entries[m->count];
  ent->hash = h;
  ent->key_off = off;
  ent->key_len = (uint32_t)len;
  ent->value = value;
  size_t j = h & (m->nslots - 1);
  while (m->slots[j]) j = (j + 1) & (m->nslots - 1);
  m->slots[j] = (uint32_t)(++m->count);
  return 0;
}

void tk_strmap_clear(tk_strmap *m) {
  if (m->slots) memset(m->slots, 0, m->nslots * sizeof *m->slots);
  m->count = 0;
  m->keys.len = 0;
}

void tk_strmap_free(tk_strmap *m) {
  free(m->slots);
  free(m->entries);
  tk_buf_free(&m->keys);
  memset(m, 0, sizeof *m);
}

/* ---- u64 map --------------------------------------------------------------------- */

/* murmur3's 64-bit finalizer: every key bit reaches the low bits (pair keys
 * differ mostly in their high or low half). */
static inline size_t u64_slot(uint64_t key, size_t nslots) {
  uint64_t h = key;
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 33;
  return (size_t)h & (nslots - 1);
}

uint64_t *tk_u64map_get(const tk_u64map *m, uint64_t key) {
  if (!m->nslots) return NULL;
  size_t j = u64_slot(key, m->nslots);
  for (;;) {
    if (m->keys[j] == key) return &m->values[j];
    if (m->keys[j] == UINT64_MAX) return NULL;
    j = (j + 1) & (m->nslots - 1);
  }
}

static int u64map_rehash(tk_u64map *m, size_t nslots) {
  uint64_t *keys = malloc(nslots * sizeof *keys), *values = malloc(nslots * sizeof *values);
  if (!keys || !values) {
    free(keys);
    free(values);
    return -1;
  }
  memset(keys, 0xFF, nslots * sizeof *keys);
  for (size_t i = 0; i < m->nslots; i++) {
    if (m->keys[i] == UINT64_MAX) continue;
    size_t j = u64_slot(m->keys[i], nslots);
    while (keys[j] != UINT64_MAX) j = (j + 1) & (nslots - 1);
    keys[j] = m->keys[i];
    values[j] = m->values[i];
  }
  free(m->keys);
  free(m->values);
  m->keys = keys;
  m->values = values;
  m->nslots = nslots;
  return 0;
}

int tk_u64map_set(tk_u64map *m, uint64_t key, uint64_t value) {
  uint64_t *v = tk_u64map_get(m, key);
  if (v) {
    *v = value;
    return 0;
  }
  if ((m->count + 1) * 2 > m->nslots && u64map_rehash(m, m->nslots ? m->nslots * 2 : 64)) return -1;
  size_t j = u64_slot(key, m->nslots);
  while (m->keys[j] != UINT64_MAX) j = (j + 1) & (m->nslots - 1);
  m->keys[j] = key;
  m->values[j] = value;
  m->count++;
  return 0;
}

void tk_u64map_free(tk_u64map *m) {
  free(m->keys);
  free(m->values);
  memset(m, 0, sizeof *m);
}

/* ---- UTF-8 ------------------------------------------------------------------------ */

/* Length of the valid sequence at s (0 when invalid), following the
 * Unicode table of well-formed byte sequences. *prefix gets how many bytes
 * of a truncated or broken sequence are a valid prefix (the "maximal
 * subpart" that one U+FFFD replaces). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *prefix) {
  unsigned char c = s[0];
  *prefix = 1;
  if (c < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) need = 2;
  else if (c == 0xE0) { need = 3; lo = 0xA0; }
  else if (c >= 0xE1 && c <= 0xEC) need = 3;
  else if (c == 0xED) { need = 3; hi = 0x9F; }
  else if (c >= 0xEE && c <= 0xEF) need = 3;
  else if (c == 0xF0) { need = 4; lo = 0x90; }
  else if (c >= 0xF1 && c <= 0xF3) need = 4;
  else if (c == 0xF4) { need = 4; hi = 0x8F; }
  else return 0;
  for (size_t i = 1; i < need; i++) {
    if (i >= n) return 0;
    unsigned char b = s[i];
    if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) return 0;
    *prefix = i + 1;
  }
  return need;
}

size_t tk_utf8_valid_prefix(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    if (u[i] < 0x80) {
      i++;
      continue;
    }
    size_t prefix, k = utf8_seq(u + i, n - i, &prefix);
    if (!k) return i;
    i += k;
  }
  return n;
}

int tk_utf8_lossy(tk_buf *out, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    size_t run = tk_utf8_valid_prefix(s + i, n - i);
    if (tk_buf_put(out, s + i, run)) return -1;
    i += run;
    if (i >= n) break;
    size_t prefix;
    utf8_seq(u + i, n - i, &prefix);
    if (tk_buf_put(out, "\xEF\xBF\xBD", 3)) return -1;
    i += prefix;
  }
  return 0;
}

int tk_is_whitespace(int32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
  if (cp < 0x85) return 0;
  switch (cp) {
  case 0x85: case 0xA0: case 0x1680: case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000:
    return 1;
  default:
    return cp >= 0x2000 && cp <= 0x200A;
  }
}

/* ---- base64 ---------------------------------------------------------------------------- */

static int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

dq_status tk_base64_decode(const char *s, size_t n, const char *source, unsigned char **out, size_t *out_len) {
  while (n && s[n - 1] == '=') n--;
  unsigned char *buf = malloc(n * 3 / 4 + 3);
  if (!buf) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory decoding base64", source);
  size_t len = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64_value((unsigned char)s[i]);
    if (v < 0) {
      free(buf);
      return dq_fail(DQ_ERR_FORMAT, "%s: invalid base64 character 0x%02x at position %zu", source,
                     (unsigned char)s[i], i);
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      buf[len++] = (unsigned char)(acc >> bits);
    }
  }
  *out = buf;
  *out_len = len;
  return DQ_OK;
}
