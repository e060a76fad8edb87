/*
 * sentences.c: a small rule-based sentence splitter for English plain text,
 * used for rougeLsum when texts are not already one sentence per line.
 *
 * It is NOT nltk's punkt (nltk.sent_tokenize, which the Hugging Face
 * summarization examples run before rougeLsum): punkt's English model is
 * trained data this project cannot ship, so exact rougeLsum parity needs
 * texts split beforehand, one sentence per line. The rules below agree with
 * punkt on ordinary news prose:
 *
 *  - a line break always ends a sentence;
 *  - a run of '.', '!', '?' or '…', then any closing quotes or brackets,
 *    then whitespace (or the end) ends a sentence, except when
 *      * the run is only periods and the word before it is a known
 *        abbreviation (Mr, Dr, Inc, Jan, e.g, ...), a single letter (an
 *        initial: "J. Smith"), or contains another period ("U.S.", "a.m.");
 *      * the run is an ellipsis ("..." or "…") and the next word does not
 *        start with an upper-case letter or a digit;
 *      * the word before a single period is a number and the next word
 *        starts in lower case ("in 1990. and").
 *  - sentences are trimmed of surrounding whitespace; empty ones vanish.
 */
#include "rouge_internal.h"

#include <stdlib.h>
#include <string.h>

static const char *const abbreviations[] = {
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "rev", "gen", "col", "lt", "sgt",
    "capt", "cmdr", "adm", "gov", "sen", "rep", "pres", "hon", "messrs", "mme", "mlle", "vs",
    "etc", "cf", "al", "inc", "ltd", "co", "corp", "bros", "dept", "univ", "assn", "fig", "figs",
    "vol", "vols", "pp", "approx", "est", "jan", "feb", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "mon", "tue", "tues", "wed", "thu", "thur", "thurs", "fri",
    "calif", "ariz", "colo", "conn", "fla", "mich", "minn", "tenn", "ave", "blvd"};

static int is_opening(const unsigned char *p, size_t rem, int *len) {
  if (rem >= 1 && (p[0] == '(' || p[0] == '[' || p[0] == '{' || p[0] == '"' || p[0] == '\'')) {
    *len = 1;
    return 1;
  }
  /* U+201C “ and U+2018 ‘ */
  if (rem >= 3 && p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0x9C || p[2] == 0x98)) {
    *len = 3;
    return 1;
  }
  return 0;
}

static int closing_len(const unsigned char *p, size_t rem) {
  if (rem >= 1 && (p[0] == ')' || p[0] == ']' || p[0] == '}' || p[0] == '"' || p[0] == '\'')) return 1;
  /* U+201D ” and U+2019 ’ */
  if (rem >= 3 && p[0] == 0xE2 && p[1] == 0x80 && (p[2] == 0x9D || p[2] == 0x99)) return 3;
  /* U+00BB » */
  if (rem >= 2 && p[0] == 0xC2 && p[1] == 0xBB) return 2;
  return 0;
}

static int ellipsis_char(const unsigned char *p, size_t rem) { /* U+2026 … */
  return rem >= 3 && p[0] == 0xE2 && p[1] == 0x80 && p[2] == 0xA6;
}

static int is_upper_or_digit(unsigned char c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

/* Is the word text[ws..we) (the period at we excluded) an abbreviation,
 * an initial, or dotted? */
static int abbreviation_like(const unsigned char *t, size_t ws, size_t we) {
  int open;
  while (ws < we && is_opening(t + ws, we - ws, &open)) ws += (size_t)open;
  size_t n = we - ws;
  if (n == 0) return 0;
  if (n == 1 && ((t[ws] >= 'a' && t[ws] <= 'z') || (t[ws] >= 'A' && t[ws] <= 'Z'))) return 1;
  if (memchr(t + ws, '.', n)) return 1;
  if (n > 8) return 0;
  char lower[9];
  for (size_t i = 0; i < n; i++) {
    unsigned char c = t[ws + i];
    lower[i] = (char)((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
  }
  lower[n] = 0;
  for (size_t i = 0; i < sizeof abbreviations / sizeof abbreviations[0]; i++)
    if (strcmp(lower, abbreviations[i]) == 0) return 1;
  return 0;
}

static int is_number(const unsigned char *t, size_t ws, size_t we) {
  if (ws == we) return 0;
  for (size_t i = ws; i < we; i++)
    if (!((t[i] >= '0' && t[i] <= '9') || t[i] == ',')) return 0;
  return 1;
}

static int push_range(size_t **bounds, size_t *cap, size_t *count, const unsigned char *t, size_t s, size_t e) {
  while (e > s) { /* trim trailing whitespace */
    int k = dqm_space_len_before(t + s, e - s);
    if (!k) break;
    e -= (size_t)k;
  }
  if (e <= s) return 0;
  if (2 * (*count + 1) > *cap) {
    size_t c = *cap ? *cap * 2 : 64;
    size_t *b = realloc(*bounds, c * sizeof *b);
    if (!b) return -1;
    *bounds = b;
    *cap = c;
  }
  (*bounds)[2 * *count] = s;
  (*bounds)[2 * *count + 1] = e;
  (*count)++;
  return 0;
}

int dqm_sentences(const char *text, size_t len, size_t **bounds, size_t *cap, size_t *count) {
  const unsigned char *t = (const unsigned char *)text;
  *count = 0;
  size_t start = 0;
  int in_sentence = 0;
  size_t i = 0;
  while (i < len) {
    if (!in_sentence) {
      int k = dqm_space_len(t + i, len - i);
      if (k) {
        i += (size_t)k;
        continue;
      }
      start = i;
      in_sentence = 1;
    }
    if (t[i] == '\n') {
      if (push_range(bounds, cap, count, t, start, i)) return -1;
      in_sentence = 0;
      i++;
      continue;
    }
    int term = t[i] == '.' || t[i] == '!' || t[i] == '?' || ellipsis_char(t + i, len - i);
    if (!term) {
      i++;
      continue;
    }
    /* the run of terminators, then closers */
    size_t run = i, periods = 0;
    int strong = 0, ellipsis = 0;
    while (run < len) {
      if (t[run] == '.') {
        periods++;
        run++;
      } else if (t[run] == '!' || t[run] == '?') {
        strong = 1;
        run++;
      } else if (ellipsis_char(t + run, len - run)) {
        ellipsis = 1;
        run += 3;
      } else {
        break;
      }
    }
    size_t end = run;
    for (int k; (k = closing_len(t + end, len - end));) end += (size_t)k;
    if (end < len && !dqm_space_len(t + end, len - end)) { /* "3.5", "a.m.x", "?!)" glued */
      i = end > i ? end : i + 1;
      continue;
    }
    /* the next word */
    size_t next = end;
    while (next < len && t[next] != '\n') {
      int k = dqm_space_len(t + next, len - next);
      if (!k) break;
      next += (size_t)k;
    }
    int open;
    size_t first = next;
    while (first < len && is_opening(t + first, len - first, &open)) first += (size_t)open;
    int next_upper = first < len && is_upper_or_digit(t[first]);
    int next_lower = first < len && t[first] >= 'a' && t[first] <= 'z';

    size_t ws = i; /* start of the word before the run */
    while (ws > start && !dqm_space_len_before(t + start, ws - start)) ws--;

    int boundary = 1;
    if (!strong) {
      if (ellipsis || periods >= 2) boundary = next >= len || next_upper;
      else if (abbreviation_like(t, ws, i)) boundary = 0;
      else if (is_number(t, ws, i) && next_lower) boundary = 0;
    }
    if (boundary) {
      if (push_range(bounds, cap, count, t, start, end)) return -1;
      in_sentence = 0;
    }
    i = end;
  }
  if (in_sentence && push_range(bounds, cap, count, t, start, len)) return -1;
  return 0;
}

dq_status dq_split_sentences(const char *text, int64_t *bounds, int64_t capacity, int64_t *count) {
  if (!text || !count) return dq_fail(DQ_ERR_ARGUMENT, "dq_split_sentences: %s is NULL", text ? "count" : "text");
  size_t *b = NULL, cap = 0, n = 0;
  if (dqm_sentences(text, strlen(text), &b, &cap, &n)) {
    free(b);
    return dq_fail(DQ_ERR_MEMORY, "dq_split_sentences: out of memory for a %zu-byte text", strlen(text));
  }
  *count = (int64_t)n;
  if ((int64_t)n > capacity || (n && !bounds)) {
    free(b);
    return dq_fail(DQ_ERR_ARGUMENT, "dq_split_sentences: %zu sentences found, bounds holds %lld", n,
                   (long long)capacity);
  }
  for (size_t k = 0; k < 2 * n; k++) bounds[k] = (int64_t)b[k];
  free(b);
  return DQ_OK;
}
