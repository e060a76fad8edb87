/*
 * bleu_tokenize.c: sacreBLEU 2.6.0's '13a' tokenizer (tokenizer_13a.py and
 * tokenizer_re.py), applied as BLEU._preprocess_segment does: rstrip()
 * first, then
 *
 *   replace '<skipped>' -> '', '-\n' -> '', '\n' -> ' ',
 *   '&quot;' -> '"', '&amp;' -> '&', '&lt;' -> '<', '&gt;' -> '>'
 *       (one after the other, so "&amp;lt;" ends as "<");
 *   line = ' ' + line + ' ';
 *   ([\{-\~\[-\` -\&\(-\+\:-\@\/])  -> ' \1 '
 *   ([^0-9])([\.,])                  -> '\1 \2 '
 *   ([\.,])([^0-9])                  -> ' \1 \2'
 *   ([0-9])(-)                       -> '\1 \2 '
 *   ' '.join(line.split())
 *
 * Each regex is re.sub's left-to-right scan of non-overlapping matches. The
 * scans run on UTF-8 bytes: every class member is ASCII and [^0-9] spans a
 * whole code point in Python, which on bytes matches the code point's last
 * byte before '.'/',' or its first byte after them, giving the same output
 * bytes. split() and rstrip() use Python's Unicode whitespace.
 */
#include "rouge_internal.h"

#include <string.h>

/* out = in with every `pat` replaced by `rep` (str.replace), jumping from
 * one occurrence of pat's first byte to the next. */
static int replace_all(const char *in, size_t n, const char *pat, const char *rep, dqm_buf *out) {
  size_t pl = strlen(pat), rl = strlen(rep);
  out->len = 0;
  if (dqm_buf_reserve(out, n)) return -1;
  size_t i = 0;
  while (i < n) {
    const char *hit = memchr(in + i, pat[0], n - i);
    size_t j = hit ? (size_t)(hit - in) : n;
    if (dqm_buf_append(out, in + i, j - i)) return -1;
    if (j == n) break;
    if (j + pl <= n && memcmp(in + j, pat, pl) == 0) {
      if (dqm_buf_append(out, rep, rl)) return -1;
      i = j + pl;
    } else {
      if (dqm_buf_append(out, in + j, 1)) return -1;
      i = j + 1;
    }
  }
  out->data[out->len] = 0;
  return 0;
}

static void swap(dqm_buf *a, dqm_buf *b) {
  dqm_buf t = *a;
  *a = *b;
  *b = t;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* [\{-\~\[-\` -\&\(-\+\:-\@\/] */
static int is_13a_symbol(unsigned char c) {
  return (c >= 0x7B && c <= 0x7E) || (c >= 0x5B && c <= 0x60) || (c >= 0x20 && c <= 0x26) ||
         (c >= 0x28 && c <= 0x2B) || (c >= 0x3A && c <= 0x40) || c == '/';
}

int dqm_tokenize_13a(const char *text, size_t len, dqm_buf *out, dqm_buf *tmp) {
  /* rstrip */
  while (len > 0) {
    int k = dqm_space_len_before((const unsigned char *)text, len);
    if (!k) break;
    len -= (size_t)k;
  }
  if (replace_all(text, len, "<skipped>", "", tmp)) return -1;
  if (replace_all(tmp->data, tmp->len, "-\n", "", out)) return -1;
  if (replace_all(out->data, out->len, "\n", " ", tmp)) return -1;
  if (memchr(tmp->data, '&', tmp->len)) {
    static const char *const entities[4][2] = {{"&quot;", "\""}, {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}};
    for (int e = 0; e < 4; e++) {
      if (replace_all(tmp->data, tmp->len, entities[e][0], entities[e][1], out)) return -1;
      swap(tmp, out);
    }
  }

  /* ' ' + line + ' ', with the symbol class spaced out */
  out->len = 0;
  if (dqm_buf_reserve(out, 3 * tmp->len + 2)) return -1;
  out->data[out->len++] = ' ';
  for (size_t i = 0; i < tmp->len; i++) {
    unsigned char c = (unsigned char)tmp->data[i];
    if (is_13a_symbol(c)) {
      out->data[out->len++] = ' ';
      out->data[out->len++] = (char)c;
      out->data[out->len++] = ' ';
    } else {
      out->data[out->len++] = (char)c;
    }
  }
  out->data[out->len++] = ' ';
  swap(tmp, out);

  /* ([^0-9])([\.,]) -> '\1 \2 ' */
  out->len = 0;
  if (dqm_buf_reserve(out, 2 * tmp->len)) return -1;
  for (size_t i = 0; i < tmp->len;) {
    unsigned char c = (unsigned char)tmp->data[i];
    if (i + 1 < tmp->len && !is_digit(c) && (tmp->data[i + 1] == '.' || tmp->data[i + 1] == ',')) {
      out->data[out->len++] = (char)c;
      out->data[out->len++] = ' ';
      out->data[out->len++] = tmp->data[i + 1];
      out->data[out->len++] = ' ';
      i += 2;
    } else {
      out->data[out->len++] = (char)c;
      i++;
    }
  }
  swap(tmp, out);

  /* ([\.,])([^0-9]) -> ' \1 \2' */
  out->len = 0;
  if (dqm_buf_reserve(out, 2 * tmp->len)) return -1;
  for (size_t i = 0; i < tmp->len;) {
    unsigned char c = (unsigned char)tmp->data[i];
    if (i + 1 < tmp->len && (c == '.' || c == ',') && !is_digit((unsigned char)tmp->data[i + 1])) {
      out->data[out->len++] = ' ';
      out->data[out->len++] = (char)c;
      out->data[out->len++] = ' ';
      out->data[out->len++] = tmp->data[i + 1];
      i += 2;
    } else {
      out->data[out->len++] = (char)c;
      i++;
    }
  }
  swap(tmp, out);

  /* ([0-9])(-) -> '\1 \2 ' */
  out->len = 0;
  if (dqm_buf_reserve(out, 2 * tmp->len)) return -1;
  for (size_t i = 0; i < tmp->len;) {
    unsigned char c = (unsigned char)tmp->data[i];
    if (i + 1 < tmp->len && is_digit(c) && tmp->data[i + 1] == '-') {
      out->data[out->len++] = (char)c;
      out->data[out->len++] = ' ';
      out->data[out->len++] = '-';
      out->data[out->len++] = ' ';
      i += 2;
    } else {
      out->data[out->len++] = (char)c;
      i++;
    }
  }
  swap(tmp, out);

  /* ' '.join(line.split()) */
  out->len = 0;
  if (dqm_buf_reserve(out, tmp->len)) return -1;
  const unsigned char *p = (const unsigned char *)tmp->data;
  size_t n = tmp->len, i = 0;
  while (i < n) {
    int k = dqm_space_len(p + i, n - i);
    if (k) {
      i += (size_t)k;
      continue;
    }
    if (out->len) out->data[out->len++] = ' ';
    while (i < n && !dqm_space_len(p + i, n - i)) out->data[out->len++] = (char)p[i++];
  }
  out->data[out->len] = 0;
  return 0;
}

dq_status dq_bleu_tokenize(const char *text, char *out, int64_t capacity, int64_t *length) {
  if (!text) return dq_fail(DQ_ERR_ARGUMENT, "dq_bleu_tokenize: text is NULL");
  dqm_buf tokens = {0}, tmp = {0};
  dq_status st;
  if (dqm_tokenize_13a(text, strlen(text), &tokens, &tmp))
    st = dq_fail(DQ_ERR_MEMORY, "dq_bleu_tokenize: out of memory for a %zu-byte text", strlen(text));
  else
    st = dqm_copy_out("dq_bleu_tokenize", tokens.data, tokens.len, out, capacity, length);
  dqm_buf_free(&tokens);
  dqm_buf_free(&tmp);
  return st;
}
