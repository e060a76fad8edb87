/*
 * normalize.c: the normalizer steps of tokenizer.json, one string in, one
 * out, as the `tokenizers` library applies them (offsets are not kept; only
 * the length of the part that still comes from the first original
 * character, `*lead`, which Metaspace's prepend_scheme "first" looks at).
 *
 * NFC/NFD/NFKC/NFKD go through utf8proc. Lowercase is Rust's
 * char::to_lowercase applied per character (no final-sigma context, as the
 * library does it): utf8proc's simple lowercase plus U+0130 -> "i\u0307".
 * StripAccents drops characters of category Mark. Strip removes
 * White_Space characters.
 */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static dq_status oom(const char *what) { return dq_fail(DQ_ERR_MEMORY, "tokenizer: out of memory in the %s normalizer", what); }

/* Append in[a..b) to out; the lead grows when the copied bytes come from
 * the leading part and nothing else was written before. */
static int emit(tk_buf *out, const char *p, size_t n, size_t in_start, size_t lead_in, size_t *lead_out) {
  if (lead_out && in_start < lead_in && out->len == *lead_out) *lead_out += n;
  return tk_buf_put(out, p, n);
}

static dq_status unicode_form(const char *in, size_t n, tk_buf *out, size_t *lead, int options, const char *name) {
  utf8proc_uint8_t *dst = NULL;
  utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)in, (utf8proc_ssize_t)n, &dst, options);
  if (r < 0) return dq_fail(DQ_ERR_ARGUMENT, "tokenizer: %s normalization failed: %s", name, utf8proc_errmsg(r));
  int failed = tk_buf_put(out, dst, (size_t)r);
  free(dst);
  if (failed) return oom(name);
  if (lead && *lead) {
    /* the normalized first characters: whatever the leading part becomes
     * on its own, at least the first output character */
    utf8proc_uint8_t *head = NULL;
    utf8proc_ssize_t h = utf8proc_map((const utf8proc_uint8_t *)in, (utf8proc_ssize_t)*lead, &head, options);
    size_t l = h > 0 ? (size_t)h : 0;
    free(head);
    if (out->len) {
      size_t first;
      tk_utf8_next(out->data, out->len, &first);
      if (l < first) l = first;
    }
    if (l > out->len) l = out->len;
    while (l < out->len && ((unsigned char)out->data[l] & 0xC0) == 0x80) l++;
    *lead = l;
  }
  return DQ_OK;
}

static dq_status lowercase(const char *in, size_t n, tk_buf *out, size_t *lead) {
  size_t lead_in = lead ? *lead : 0, lead_out = 0;
  for (size_t i = 0; i < n;) {
    size_t len;
    int32_t cp = tk_utf8_next(in + i, n - i, &len);
    char u[8];
    size_t k;
    if (cp == 0x130) {
      memcpy(u, "i\xCC\x87", 3);
      k = 3;
    } else {
      k = tk_utf8_encode(utf8proc_tolower(cp), u);
    }
    if (emit(out, u, k, i, lead_in, lead ? &lead_out : NULL)) return oom("Lowercase");
    i += len;
  }
  if (lead) *lead = lead_out;
  return DQ_OK;
}

static dq_status strip(const tk_norm_step *st, const char *in, size_t n, tk_buf *out, size_t *lead) {
  size_t a = 0, b = n;
  if (st->left) {
    while (a < n) {
      size_t len;
      if (!tk_is_whitespace(tk_utf8_next(in + a, n - a, &len))) break;
      a += len;
    }
  }
  if (st->right) {
    while (b > a) {
      size_t i = b - 1;
      while (i > a && ((unsigned char)in[i] & 0xC0) == 0x80) i--;
      size_t len;
      if (!tk_is_whitespace(tk_utf8_next(in + i, b - i, &len))) break;
      b = i;
    }
  }
  if (tk_buf_put(out, in + a, b - a)) return oom("Strip");
  if (lead) *lead = a < *lead ? (*lead - a < b - a ? *lead - a : b - a) : 0;
  return DQ_OK;
}

static dq_status strip_accents(const char *in, size_t n, tk_buf *out, size_t *lead) {
  size_t lead_in = lead ? *lead : 0, lead_out = 0;
  for (size_t i = 0; i < n;) {
    size_t len;
    int32_t cp = tk_utf8_next(in + i, n - i, &len);
    utf8proc_category_t c = utf8proc_category(cp);
    int mark = c == UTF8PROC_CATEGORY_MN || c == UTF8PROC_CATEGORY_MC || c == UTF8PROC_CATEGORY_ME;
    if (!mark && emit(out, in + i, len, i, lead_in, lead ? &lead_out : NULL)) return oom("StripAccents");
    i += len;
  }
  if (lead) *lead = lead_out;
  return DQ_OK;
}

static dq_status replace(const tk_norm_step *st, const char *in, size_t n, tk_buf *out, size_t *lead) {
  size_t lead_in = lead ? *lead : 0, lead_out = 0;
  size_t *lo = lead ? &lead_out : NULL;
  size_t i = 0;
  while (i < n) {
    size_t ms, me;
    int found;
    if (st->regex) {
      found = tk_regex_find(st->regex, in, n, i, &ms, &me);
    } else {
      const char *p = st->literal_len ? memmem(in + i, n - i, st->literal, st->literal_len) : NULL;
      found = p != NULL;
      if (found) {
        ms = (size_t)(p - in);
        me = ms + st->literal_len;
      }
    }
    if (!found) break;
    /* unmatched text before the match, character by character for the lead */
    for (size_t j = i; j < ms;) {
      size_t len;
      tk_utf8_next(in + j, ms - j, &len);
      if (emit(out, in + j, len, j, lead_in, lo)) return oom("Replace");
      j += len;
    }
    if (emit(out, st->content, st->content_len, ms, lead_in, lo)) return oom("Replace");
    i = me;
  }
  for (size_t j = i; j < n;) {
    size_t len;
    tk_utf8_next(in + j, n - j, &len);
    if (emit(out, in + j, len, j, lead_in, lo)) return oom("Replace");
    j += len;
  }
  if (lead) *lead = lead_out;
  return DQ_OK;
}

dq_status tk_norm_apply(const tk_norm_step *st, const char *in, size_t n, tk_buf *out, size_t *lead) {
  out->len = 0;
  switch (st->kind) {
  case TK_NORM_NFC: return unicode_form(in, n, out, lead, UTF8PROC_STABLE | UTF8PROC_COMPOSE, "NFC");
  case TK_NORM_NFD: return unicode_form(in, n, out, lead, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE, "NFD");
  case TK_NORM_NFKC:
    return unicode_form(in, n, out, lead, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT, "NFKC");
  case TK_NORM_NFKD:
    return unicode_form(in, n, out, lead, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, "NFKD");
  case TK_NORM_LOWERCASE: return lowercase(in, n, out, lead);
  case TK_NORM_STRIP: return strip(st, in, n, out, lead);
  case TK_NORM_STRIP_ACCENTS: return strip_accents(in, n, out, lead);
  case TK_NORM_REPLACE: return replace(st, in, n, out, lead);
  case TK_NORM_PREPEND:
    if (n && tk_buf_put(out, st->content, st->content_len)) return oom("Prepend");
    if (tk_buf_put(out, in, n)) return oom("Prepend");
    if (lead && n) *lead += st->content_len;
    return DQ_OK;
  case TK_NORM_PRECOMPILED: return tk_charsmap_apply(st->charsmap, in, n, out, lead);
  default: return dq_fail(DQ_ERR_INTERNAL, "tokenizer: unknown normalizer kind %d", st->kind);
  }
}

void tk_norm_step_free(tk_norm_step *st) {
  free(st->literal);
  free(st->content);
  if (st->regex) tk_regex_free(st->regex);
  if (st->charsmap) tk_charsmap_free(st->charsmap);
  memset(st, 0, sizeof *st);
}
