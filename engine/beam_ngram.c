/*
 * beam_ngram.c: the bans of transformers' NoRepeatNGramLogitsProcessor:
 * an n-gram may occur once in a sequence (its decoder start token
 * included), so a token that would complete a repeat is banned.
 */
#include "beam_internal.h"

int64_t beam_ngram_bans(const int64_t *seq, int64_t len, int n, int32_t *out) {
  if (n <= 0 || len < n) return 0;
  const int64_t *prefix = seq + len - (n - 1); /* the last n - 1 tokens */
  int64_t count = 0;
  /* Windows seq[i..i+n) lie wholly inside the sequence; the window that
   * starts at the prefix itself would need the next token, so the prefix
   * never bans its own successor. */
  for (int64_t i = 0; i + n <= len; i++) {
    int match = 1;
    for (int k = 0; k < n - 1 && match; k++) match = seq[i + k] == prefix[k];
    if (match) out[count++] = (int32_t)seq[i + n - 1];
  }
  return count;
}
