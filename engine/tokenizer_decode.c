/*
 * tokenizer_decode.c: ids back to text, as `tokenizers`' Tokenizer.decode:
 * ids -> token strings (added tokens included as their content, special
 * ones dropped when skip_special; ids without a token dropped), then the
 * decoder steps, each turning the list of strings into a new list, then the
 * strings concatenated. Without a decoder the tokens are joined by spaces.
 */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* A list of strings in one arena. */
typedef struct tk_list {
  tk_buf text;
  tk_ranges items;
} tk_list;

static void list_clear(tk_list *l) {
  l->text.len = 0;
  l->items.len = 0;
}

static int list_add(tk_list *l, const char *s, size_t n) {
  size_t start = l->text.len;
  if (tk_buf_put(&l->text, s, n)) return -1;
  return tk_ranges_push(&l->items, start, n);
}

/* Begin an item that is then written with tk_buf_put on l->text; end it
 * with list_end. */
static size_t list_begin(const tk_list *l) { return l->text.len; }
static int list_end(tk_list *l, size_t start) { return tk_ranges_push(&l->items, start, l->text.len - start); }

static const char *item(const tk_list *l, size_t i, size_t *n) {
  *n = l->items.data[i].len;
  return l->text.data + l->items.data[i].start;
}

static int byte_level(const tk_list *in, tk_list *out) {
  tk_buf bytes = {0};
  int failed = 0;
  for (size_t i = 0; i < in->items.len && !failed; i++) {
    size_t n;
    const char *s = item(in, i, &n);
    size_t mark = bytes.len;
    int all = 1;
    for (size_t k = 0; k < n && all;) {
      size_t len;
      int b = tk_cp_to_byte(tk_utf8_next(s + k, n - k, &len));
      if (b < 0) all = 0;
      else failed |= tk_buf_putc(&bytes, (char)b);
      k += len;
    }
    if (!all) {
      /* a token with a character outside the byte table: its own bytes */
      bytes.len = mark;
      failed |= tk_buf_put(&bytes, s, n);
    }
  }
  size_t start = list_begin(out);
  if (!failed) failed = tk_utf8_lossy(&out->text, bytes.data ? bytes.data : "", bytes.len) || list_end(out, start);
  tk_buf_free(&bytes);
  return failed ? -1 : 0;
}

static int metaspace(const tk_dec_step *d, const tk_list *in, tk_list *out) {
  for (size_t i = 0; i < in->items.len; i++) {
    size_t n;
    const char *s = item(in, i, &n);
    size_t start = list_begin(out);
    for (size_t k = 0; k < n;) {
      size_t len;
      int32_t cp = tk_utf8_next(s + k, n - k, &len);
      if (cp == d->replacement) {
        if (!(i == 0 && d->prepend_scheme != TK_PREPEND_NEVER) && tk_buf_putc(&out->text, ' ')) return -1;
      } else if (tk_buf_put(&out->text, s + k, len)) {
        return -1;
      }
      k += len;
    }
    if (list_end(out, start)) return -1;
  }
  return 0;
}

static int replace(const tk_dec_step *d, const tk_list *in, tk_list *out) {
  for (size_t i = 0; i < in->items.len; i++) {
    size_t n;
    const char *s = item(in, i, &n);
    size_t start = list_begin(out), k = 0;
    while (k < n) {
      const char *p = d->pattern_len ? memmem(s + k, n - k, d->pattern, d->pattern_len) : NULL;
      if (!p) break;
      if (tk_buf_put(&out->text, s + k, (size_t)(p - (s + k))) || tk_buf_put(&out->text, d->content, d->content_len))
        return -1;
      k = (size_t)(p - s) + d->pattern_len;
    }
    if (tk_buf_put(&out->text, s + k, n - k) || list_end(out, start)) return -1;
  }
  return 0;
}

static int byte_token(const char *s, size_t n) {
  if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
  int v = 0;
  for (int k = 3; k < 5; k++) {
    char c = s[k];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

static int flush_bytes(tk_buf *pending, tk_list *out) {
  if (!pending->len) return 0;
  if (tk_utf8_valid_prefix(pending->data, pending->len) == pending->len) {
    if (list_add(out, pending->data, pending->len)) return -1;
  } else {
    /* invalid: one U+FFFD per byte, as the library's ByteFallback does */
    for (size_t k = 0; k < pending->len; k++)
      if (list_add(out, "\xEF\xBF\xBD", 3)) return -1;
  }
  pending->len = 0;
  return 0;
}

static int byte_fallback(const tk_list *in, tk_list *out) {
  tk_buf pending = {0};
  int failed = 0;
  for (size_t i = 0; i < in->items.len && !failed; i++) {
    size_t n;
    const char *s = item(in, i, &n);
    int b = byte_token(s, n);
    if (b >= 0) {
      failed = tk_buf_putc(&pending, (char)b);
    } else {
      failed = flush_bytes(&pending, out) || list_add(out, s, n);
    }
  }
  if (!failed) failed = flush_bytes(&pending, out);
  tk_buf_free(&pending);
  return failed ? -1 : 0;
}

static int fuse(const tk_list *in, tk_list *out) {
  size_t start = list_begin(out);
  for (size_t i = 0; i < in->items.len; i++) {
    size_t n;
    const char *s = item(in, i, &n);
    if (tk_buf_put(&out->text, s, n)) return -1;
  }
  return list_end(out, start);
}

static int strip(const tk_dec_step *d, const tk_list *in, tk_list *out) {
  for (size_t i = 0; i < in->items.len; i++) {
    size_t n;
    const char *s = item(in, i, &n);
    size_t a = 0, b = n;
    for (int64_t k = 0; k < d->strip_start && a < n; k++) {
      size_t len;
      if (tk_utf8_next(s + a, n - a, &len) != d->strip_cp) break;
      a += len;
    }
    for (int64_t k = 0; k < d->strip_stop && b > a; k++) {
      size_t j = b - 1;
      while (j > a && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
      size_t len;
      if (tk_utf8_next(s + j, b - j, &len) != d->strip_cp) break;
      b = j;
    }
    if (list_add(out, s + a, b - a)) return -1;
  }
  return 0;
}

dq_status tk_decode(const dq_tokenizer *t, const int32_t *ids, int64_t n, int skip_special, tk_buf *out) {
  tk_list lists[2] = {{{0}, {0}}, {{0}, {0}}};
  tk_list *cur = &lists[0], *next = &lists[1];
  int failed = 0;
  for (int64_t i = 0; i < n && !failed; i++) {
    int32_t id = ids[i];
    if (id < 0 || id >= t->vocab_size || !t->id_token[id]) continue;
    if (skip_special && t->added_index[id] >= 0 && t->added[t->added_index[id]].special) continue;
    failed = list_add(cur, t->id_token[id], t->id_token_len[id]);
  }
  if (!t->has_decoder) {
    for (size_t i = 0; i < cur->items.len && !failed; i++) {
      size_t len;
      const char *s = item(cur, i, &len);
      failed = (i && tk_buf_putc(out, ' ')) || tk_buf_put(out, s, len);
    }
  } else {
    for (size_t k = 0; k < t->n_dec && !failed; k++) {
      const tk_dec_step *d = &t->dec[k];
      list_clear(next);
      switch (d->kind) {
      case TK_DEC_BYTE_LEVEL: failed = byte_level(cur, next); break;
      case TK_DEC_METASPACE: failed = metaspace(d, cur, next); break;
      case TK_DEC_REPLACE: failed = replace(d, cur, next); break;
      case TK_DEC_BYTE_FALLBACK: failed = byte_fallback(cur, next); break;
      case TK_DEC_FUSE: failed = fuse(cur, next); break;
      case TK_DEC_STRIP: failed = strip(d, cur, next); break;
      default: failed = -1;
      }
      tk_list *tmp = cur;
      cur = next;
      next = tmp;
    }
    for (size_t i = 0; i < cur->items.len && !failed; i++) {
      size_t len;
      const char *s = item(cur, i, &len);
      failed = tk_buf_put(out, s, len);
    }
  }
  for (int k = 0; k < 2; k++) {
    tk_buf_free(&lists[k].text);
    tk_ranges_free(&lists[k].items);
  }
  return failed ? dq_fail(DQ_ERR_MEMORY, "dq_tokenizer_decode: out of memory") : DQ_OK;
}
