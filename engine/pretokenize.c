/*
 * pretokenize.c: GPT-2's pre-tokenization pattern and byte table.
 *
 * The pattern (as the `tokenizers` ByteLevel pre-tokenizer compiles it with
 * Oniguruma):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * implemented as a scanner: at each position the alternatives are tried in
 * order, each greedy, exactly as the regex engine does. Character classes:
 * \p{L} = general categories Lu Ll Lt Lm Lo, \p{N} = Nd Nl No (utf8proc),
 * \s = the White_Space code points (tk_is_whitespace), which is what
 * Oniguruma's \s matches on UTF-8 text (TAB..CR, space, U+0085, U+00A0,
 * U+1680, U+2000..U+200A, U+2028, U+2029, U+202F, U+205F, U+3000; not the
 * zero-width space U+200B nor U+180E, which are format characters).
 * spec/fixtures/tokenizers/gpt2_classes.txt holds the class of every code
 * point as the library sees it; they agree except on code points assigned
 * after utf8proc's Unicode version (utf8proc calls them unassigned, Cn,
 * and they class as "other" here).
 */
#include "tokenizer_internal.h"

#include <utf8proc.h>

enum { CLS_SPACE, CLS_LETTER, CLS_NUMBER, CLS_OTHER };

static unsigned char ascii_class[128];
static pthread_once_t ascii_once = PTHREAD_ONCE_INIT;

static int class_of_cp(int32_t cp) {
  if (tk_is_whitespace(cp)) return CLS_SPACE;
  switch (utf8proc_category(cp)) {
  case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
  case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
    return CLS_LETTER;
  case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
    return CLS_NUMBER;
  default:
    return CLS_OTHER;
  }
}

static void init_ascii(void) {
  for (int c = 0; c < 128; c++) ascii_class[c] = (unsigned char)class_of_cp(c);
}

int dq_gpt2_char_class(int32_t cp) {
  if (cp < 0 || cp > 0x10FFFF) return CLS_OTHER;
  return class_of_cp(cp);
}

/* Class of the code point at s[i..n) and its byte length. */
static inline int class_at(const char *s, size_t n, size_t i, size_t *len) {
  unsigned char c = (unsigned char)s[i];
  if (c < 0x80) {
    *len = 1;
    return ascii_class[c];
  }
  return class_of_cp(tk_utf8_next(s + i, n - i, len));
}

/* End of the run of class `cls` starting at i. */
static size_t run_end(const char *s, size_t n, size_t i, int cls) {
  while (i < n) {
    size_t len;
    if (class_at(s, n, i, &len) != cls) break;
    i += len;
  }
  return i;
}

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at s[i] == '\'', or 0. */
static size_t contraction(const char *s, size_t n, size_t i) {
  if (i + 1 >= n) return 0;
  char a = s[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= n) return 0;
  char b = s[i + 2];
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

int tk_gpt2_split(const char *s, size_t n, tk_ranges *out) {
  pthread_once(&ascii_once, init_ascii);
  size_t i = 0;
  while (i < n) {
    if (s[i] == '\'') {
      size_t k = contraction(s, n, i);
      if (k) {
        if (tk_ranges_push(out, i, k)) return -1;
        i += k;
        continue;
      }
    }
    size_t len;
    int cls = class_at(s, n, i, &len);
    /* " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": a space glued to the run after it */
    if (s[i] == ' ' && i + 1 < n) {
      size_t len2;
      int cls2 = class_at(s, n, i + 1, &len2);
      if (cls2 != CLS_SPACE) {
        size_t end = run_end(s, n, i + 1 + len2, cls2);
        if (tk_ranges_push(out, i, end - i)) return -1;
        i = end;
        continue;
      }
    }
    if (cls != CLS_SPACE) {
      size_t end = run_end(s, n, i + len, cls);
      if (tk_ranges_push(out, i, end - i)) return -1;
      i = end;
      continue;
    }
    /* "\s+(?!\S)" then "\s+": a run of whitespace followed by text keeps its
     * last character for the next token (where a final space joins the word) */
    size_t last = i, end = i;
    while (end < n) {
      size_t l;
      if (class_at(s, n, end, &l) != CLS_SPACE) break;
      last = end;
      end += l;
    }
    if (end < n && last > i) end = last;
    if (tk_ranges_push(out, i, end - i)) return -1;
    i = end;
  }
  return 0;
}

/* bytes_to_unicode() of GPT-2: printable bytes map to themselves, the 68
 * others, in byte order, to U+0100 upwards. */
#define PRINTABLE(b) (((b) >= 0x21 && (b) <= 0x7E) || ((b) >= 0xA1 && (b) <= 0xAC) || ((b) >= 0xAE && (b) <= 0xFF))
static int32_t table[256];
static int16_t inverse[0x144];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void init_table(void) {
  int next = 0x100;
  for (int b = 0; b < 256; b++) table[b] = PRINTABLE(b) ? b : next++;
  for (int c = 0; c < 0x144; c++) inverse[c] = -1;
  for (int b = 0; b < 256; b++) inverse[table[b]] = (int16_t)b;
}

const int32_t *tk_byte_table(void) {
  pthread_once(&table_once, init_table);
  return table;
}

int tk_cp_to_byte(int32_t cp) {
  pthread_once(&table_once, init_table);
  if (cp < 0 || cp >= 0x144) return -1;
  return inverse[cp];
}
