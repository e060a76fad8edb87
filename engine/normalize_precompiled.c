/*
 * normalize_precompiled.c: SentencePiece's precompiled normalization rules
 * (the "Precompiled" normalizer of tokenizer.json, e.g. nmt_nfkc).
 *
 * Blob layout: u32 little-endian T (bytes of the trie), T/4 u32 units of a
 * darts-clone double array over UTF-8 bytes, then the replacement strings,
 * each ended by a NUL. A unit: bits 0-7 label (bit 31 too, for leaves),
 * bit 8 has-leaf, offset = (unit >> 10) << ((unit & (1 << 9)) >> 6); a leaf
 * unit's low 31 bits are the byte index of the replacement string.
 *
 * Applied as the `tokenizers` library does (spm_precompiled): per extended
 * grapheme cluster (utf8proc's grapheme breaks), a cluster shorter than 6
 * bytes is looked up whole first; otherwise, or when it has no rule, each
 * of its characters is looked up alone. A lookup takes the *shortest*
 * prefix of the chunk that has a rule (the first result of darts-clone's
 * common-prefix search) and replaces the whole chunk with it; that quirk is
 * kept on purpose, it is what the library outputs.
 */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

struct tk_charsmap {
  uint32_t *units;
  size_t n_units;
  char *normalized;
  size_t n_normalized;
  uint8_t ascii_rule[128]; /* 1 where a single ASCII byte has a rule */
};

static const char *transform(const tk_charsmap *m, const char *s, size_t n, size_t *len);

static inline uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static inline int unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static inline uint32_t unit_label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
static inline uint32_t unit_value(uint32_t u) { return u & ((1u << 31) - 1); }

dq_status tk_charsmap_new(const unsigned char *blob, size_t n, const char *source, tk_charsmap **out) {
  if (n < 4) return dq_fail(DQ_ERR_FORMAT, "%s: precompiled_charsmap has %zu bytes; it needs at least the 4-byte trie size", source, n);
  uint32_t trie_bytes = (uint32_t)blob[0] | (uint32_t)blob[1] << 8 | (uint32_t)blob[2] << 16 | (uint32_t)blob[3] << 24;
  size_t n_units = trie_bytes / 4;
  if (4 + n_units * 4 > n)
    return dq_fail(DQ_ERR_FORMAT, "%s: precompiled_charsmap announces a %u-byte trie but holds only %zu bytes after the size",
                   source, trie_bytes, n - 4);
  tk_charsmap *m = calloc(1, sizeof *m);
  if (!m) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory loading precompiled_charsmap", source);
  m->n_units = n_units;
  m->units = malloc((n_units ? n_units : 1) * sizeof *m->units);
  size_t rest = n - 4 - n_units * 4;
  m->normalized = tk_strndup((const char *)blob + 4 + n_units * 4, rest);
  m->n_normalized = rest;
  if (!m->units || !m->normalized) {
    tk_charsmap_free(m);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory loading precompiled_charsmap", source);
  }
  for (size_t i = 0; i < n_units; i++) {
    const unsigned char *p = blob + 4 + 4 * i;
    m->units[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
  }
  if (tk_utf8_valid_prefix(m->normalized, rest) != rest) {
    tk_charsmap_free(m);
    return dq_fail(DQ_ERR_FORMAT, "%s: the replacement strings of precompiled_charsmap are not valid UTF-8", source);
  }
  for (int b = 0; b < 128; b++) {
    char c = (char)b;
    size_t len;
    m->ascii_rule[b] = transform(m, &c, 1, &len) != NULL;
  }
  *out = m;
  return DQ_OK;
}

void tk_charsmap_free(tk_charsmap *m) {
  if (!m) return;
  free(m->units);
  free(m->normalized);
  free(m);
}

/* The replacement of the shortest prefix of s[0..n) with a rule, or NULL. */
static const char *transform(const tk_charsmap *m, const char *s, size_t n, size_t *len) {
  if (!m->n_units) return NULL;
  size_t pos = unit_offset(m->units[0]);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == 0) break;
    pos ^= c;
    if (pos >= m->n_units) return NULL;
    uint32_t u = m->units[pos];
    if (unit_label(u) != c) return NULL;
    pos ^= unit_offset(u);
    if (unit_has_leaf(u)) {
      if (pos >= m->n_units) return NULL;
      size_t start = unit_value(m->units[pos]);
      if (start > m->n_normalized) return NULL;
      const char *r = m->normalized + start;
      *len = strnlen(r, m->n_normalized - start);
      return r;
    }
  }
  return NULL;
}

/* Unassigned code points that are Default_Ignorable have the grapheme
 * break property Control (UAX #29), which utf8proc's tables leave out:
 * they break on both sides, as in the library's unicode-segmentation. */
static int unassigned_control(int32_t cp) {
  return cp == 0x2065 || (cp >= 0xFFF0 && cp <= 0xFFF8) || cp == 0xE0000 || (cp >= 0xE0002 && cp <= 0xE001F) ||
         (cp >= 0xE0080 && cp <= 0xE00FF) || (cp >= 0xE01F0 && cp <= 0xE0FFF);
}

static int grapheme_break(int32_t c1, int32_t c2, utf8proc_int32_t *state) {
  if (unassigned_control(c1) || unassigned_control(c2)) {
    *state = 0;
    return 1;
  }
  return utf8proc_grapheme_break_stateful(c1, c2, state);
}

static int emit(tk_buf *out, const char *p, size_t n, size_t in_start, size_t lead_in, size_t *lead_out) {
  if (lead_out && in_start < lead_in && out->len == *lead_out) *lead_out += n;
  return tk_buf_put(out, p, n);
}

dq_status tk_charsmap_apply(const tk_charsmap *m, const char *in, size_t n, tk_buf *out, size_t *lead) {
  size_t lead_in = lead ? *lead : 0, lead_out = 0;
  size_t *lo = lead ? &lead_out : NULL;
  utf8proc_int32_t state = 0;
  size_t i = 0;
  while (i < n) {
    /* fast path: a run of ASCII characters without rules, each its own
     * grapheme (the next character is ASCII too and not CR LF); the break
     * state after one is what a fresh start gives */
    size_t run = i;
    while (run < n && run >= lead_in) {
      unsigned char c = (unsigned char)in[run];
      if (c >= 0x80 || m->ascii_rule[c]) break;
      if (run + 1 < n && ((unsigned char)in[run + 1] >= 0x80 || (c == '\r' && in[run + 1] == '\n'))) break;
      run++;
    }
    if (run > i) {
      if (tk_buf_put(out, in + i, run - i)) goto oom;
      i = run;
      state = 0;
      continue;
    }
    size_t len;
    int32_t c1 = tk_utf8_next(in + i, n - i, &len);
    size_t j = i + len;
    while (j < n) {
      size_t l2;
      int32_t c2 = tk_utf8_next(in + j, n - j, &l2);
      if (grapheme_break(c1, c2, &state)) break;
      c1 = c2;
      j += l2;
    }
    size_t rlen;
    const char *r = j - i < 6 ? transform(m, in + i, j - i, &rlen) : NULL;
    if (r) {
      if (emit(out, r, rlen, i, lead_in, lo)) goto oom;
    } else {
      for (size_t k = i; k < j;) {
        size_t cl;
        tk_utf8_next(in + k, j - k, &cl);
        const char *rc = transform(m, in + k, cl, &rlen);
        if (rc ? emit(out, rc, rlen, k, lead_in, lo) : emit(out, in + k, cl, k, lead_in, lo)) goto oom;
        k += cl;
      }
    }
    i = j;
  }
  if (lead) *lead = lead_out;
  return DQ_OK;
oom:
  return dq_fail(DQ_ERR_MEMORY, "tokenizer: out of memory in the Precompiled normalizer");
}
