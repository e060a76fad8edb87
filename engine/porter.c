/*
 * porter.c: the Porter stemmer exactly as nltk's PorterStemmer (nltk 3.x,
 * nltk/stem/porter.py) runs in its default NLTK_EXTENSIONS mode, which is
 * what rouge-score stems with. A line-by-line port: the irregular-form pool,
 * the "len <= 2 is left alone" rule, and every NLTK extension (ies/ied with
 * four letters, y -> i only after a consonant, the early alli rule and its
 * re-run of step 2, fulli, logi measured with its l, the two-letter cvc).
 *
 * Words are lower-case ASCII letters and digits (all rouge-score ever
 * passes); a digit is a consonant, as in nltk. Every rule shortens the word
 * or keeps its length (bli -> ble, enci -> ence, ...), so stemming runs in
 * place.
 */
#include "rouge_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- consonants, measure ------------------------------------------------------------ */

/* nltk's _is_consonant: a, e, i, o, u are vowels; y is a consonant at the
 * start or after a vowel, a vowel after a consonant. Resolved left to right
 * (nltk's _consonant_flags, equal to walking back over a run of y's). */
static int is_vowel_letter(char c) { return c == 'a' || c == 'e' || c == 'i' || c == 'o' || c == 'u'; }

static int is_consonant(const char *w, size_t i) {
  /* the first non-y at or before i decides, flipped once per y after it */
  size_t j = i;
  int flips = 0;
  while (j > 0 && w[j] == 'y') {
    flips ^= 1;
    j--;
  }
  int cons = !is_vowel_letter(w[j]);
  return cons != flips;
}

/* m in [C](VC){m}[V]: the number of vowel -> consonant transitions. */
static int measure(const char *w, size_t n) {
  int m = 0, prev_cons = 1, started = 0;
  for (size_t i = 0; i < n; i++) {
    int cons;
    if (is_vowel_letter(w[i])) cons = 0;
    else if (w[i] == 'y') cons = i == 0 ? 1 : !prev_cons;
    else cons = 1;
    if (started && !prev_cons && cons) m++;
    prev_cons = cons;
    started = 1;
  }
  return m;
}

static int contains_vowel(const char *w, size_t n) {
  int prev_cons = 1;
  for (size_t i = 0; i < n; i++) {
    int cons;
    if (is_vowel_letter(w[i])) cons = 0;
    else if (w[i] == 'y') cons = i == 0 ? 1 : !prev_cons;
    else cons = 1;
    if (!cons) return 1;
    prev_cons = cons;
  }
  return 0;
}

/* *d: ends with a double consonant. */
static int ends_double_consonant(const char *w, size_t n) {
  return n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1);
}

/* *o: ends consonant-vowel-consonant, the last not w, x or y; NLTK also
 * accepts a two-letter vowel-consonant word (with no w/x/y exception). */
static int ends_cvc(const char *w, size_t n) {
  if (n >= 3 && is_consonant(w, n - 3) && !is_consonant(w, n - 2) && is_consonant(w, n - 1) &&
      w[n - 1] != 'w' && w[n - 1] != 'x' && w[n - 1] != 'y')
    return 1;
  return n == 2 && !is_consonant(w, 0) && is_consonant(w, 1);
}

static int ends_with(const char *w, size_t n, const char *suffix, size_t *slen) {
  size_t k = strlen(suffix);
  *slen = k;
  return n >= k && memcmp(w + n - k, suffix, k) == 0;
}

/* Replace the last `cut` bytes of w[0..n) by `repl`; returns the length. */
static size_t replace_tail(char *w, size_t n, size_t cut, const char *repl) {
  size_t k = strlen(repl);
  memcpy(w + n - cut, repl, k);
  return n - cut + k;
}

/* ---- rule lists (nltk's _apply_rule_list without the *d rule) ------------------------ */

enum condition { C_NONE, C_M_GT0, C_M_GT1, C_ION, C_LOGI };

typedef struct rule {
  const char *suffix, *repl;
  enum condition cond;
} rule;

/* The first rule whose suffix matches decides: it applies when its
 * condition holds on the stem, else the word is returned unchanged. */
static size_t apply_rules(char *w, size_t n, const rule *rules, size_t nrules) {
  for (size_t r = 0; r < nrules; r++) {
    size_t k;
    if (!ends_with(w, n, rules[r].suffix, &k)) continue;
    size_t stem = n - k;
    int ok;
    switch (rules[r].cond) {
    case C_NONE: ok = 1; break;
    case C_M_GT0: ok = measure(w, stem) > 0; break;
    case C_M_GT1: ok = measure(w, stem) > 1; break;
    case C_ION: ok = measure(w, stem) > 1 && stem > 0 && (w[stem - 1] == 's' || w[stem - 1] == 't'); break;
    case C_LOGI: ok = measure(w, n - 3) > 0; break; /* the word minus "ogi" */
    default: ok = 0;
    }
    return ok ? replace_tail(w, n, k, rules[r].repl) : n;
  }
  return n;
}

#define NRULES(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the steps ------------------------------------------------------------------------- */

static size_t step1a(char *w, size_t n) {
  size_t k;
  if (ends_with(w, n, "ies", &k) && n == 4) return replace_tail(w, n, 3, "ie");
  static const rule rules[] = {
      {"sses", "ss", C_NONE}, {"ies", "i", C_NONE}, {"ss", "ss", C_NONE}, {"s", "", C_NONE}};
  return apply_rules(w, n, rules, NRULES(rules));
}

static size_t step1b(char *w, size_t n) {
  size_t k;
  if (ends_with(w, n, "ied", &k)) return replace_tail(w, n, 3, n == 4 ? "ie" : "i");
  if (ends_with(w, n, "eed", &k)) return measure(w, n - 3) > 0 ? replace_tail(w, n, 3, "ee") : n;

  size_t stem = 0;
  int succeeded = 0;
  static const char *const suffixes[] = {"ed", "ing"};
  for (int s = 0; s < 2; s++) {
    if (ends_with(w, n, suffixes[s], &k) && contains_vowel(w, n - k)) {
      stem = n - k;
      succeeded = 1;
      break;
    }
  }
  if (!succeeded) return n;

  /* the rule list on the intermediate stem: at, bl, iz, *d, then "" */
  if (ends_with(w, stem, "at", &k)) return replace_tail(w, stem, 2, "ate");
  if (ends_with(w, stem, "bl", &k)) return replace_tail(w, stem, 2, "ble");
  if (ends_with(w, stem, "iz", &k)) return replace_tail(w, stem, 2, "ize");
  if (ends_double_consonant(w, stem)) {
    char last = w[stem - 1];
    return (last != 'l' && last != 's' && last != 'z') ? stem - 1 : stem;
  }
  if (measure(w, stem) == 1 && ends_cvc(w, stem)) {
    w[stem] = 'e';
    return stem + 1;
  }
  return stem;
}

static size_t step1c(char *w, size_t n) {
  /* (*c and not c) Y -> I: the stem longer than one letter, ending in a
   * consonant */
  if (n >= 1 && w[n - 1] == 'y') {
    size_t stem = n - 1;
    if (stem > 1 && is_consonant(w, stem - 1)) {
      w[stem] = 'i';
      return n;
    }
  }
  return n;
}

static size_t step2(char *w, size_t n) {
  size_t k;
  /* NLTK: alli -> al first, then step 2 again on the result */
  if (ends_with(w, n, "alli", &k) && measure(w, n - 4) > 0) return step2(w, replace_tail(w, n, 4, "al"));
  static const rule rules[] = {
      {"ational", "ate", C_M_GT0}, {"tional", "tion", C_M_GT0}, {"enci", "ence", C_M_GT0},
      {"anci", "ance", C_M_GT0},   {"izer", "ize", C_M_GT0},    {"bli", "ble", C_M_GT0},
      {"alli", "al", C_M_GT0},     {"entli", "ent", C_M_GT0},   {"eli", "e", C_M_GT0},
      {"ousli", "ous", C_M_GT0},   {"ization", "ize", C_M_GT0}, {"ation", "ate", C_M_GT0},
      {"ator", "ate", C_M_GT0},    {"alism", "al", C_M_GT0},    {"iveness", "ive", C_M_GT0},
      {"fulness", "ful", C_M_GT0}, {"ousness", "ous", C_M_GT0}, {"aliti", "al", C_M_GT0},
      {"iviti", "ive", C_M_GT0},   {"biliti", "ble", C_M_GT0},  {"fulli", "ful", C_M_GT0},
      {"logi", "log", C_LOGI}};
  return apply_rules(w, n, rules, NRULES(rules));
}

static size_t step3(char *w, size_t n) {
  static const rule rules[] = {
      {"icate", "ic", C_M_GT0}, {"ative", "", C_M_GT0}, {"alize", "al", C_M_GT0},
      {"iciti", "ic", C_M_GT0}, {"ical", "ic", C_M_GT0}, {"ful", "", C_M_GT0},
      {"ness", "", C_M_GT0}};
  return apply_rules(w, n, rules, NRULES(rules));
}

static size_t step4(char *w, size_t n) {
  static const rule rules[] = {
      {"al", "", C_M_GT1},   {"ance", "", C_M_GT1}, {"ence", "", C_M_GT1}, {"er", "", C_M_GT1},
      {"ic", "", C_M_GT1},   {"able", "", C_M_GT1}, {"ible", "", C_M_GT1}, {"ant", "", C_M_GT1},
      {"ement", "", C_M_GT1}, {"ment", "", C_M_GT1}, {"ent", "", C_M_GT1}, {"ion", "", C_ION},
      {"ou", "", C_M_GT1},   {"ism", "", C_M_GT1},  {"ate", "", C_M_GT1},  {"iti", "", C_M_GT1},
      {"ous", "", C_M_GT1},  {"ive", "", C_M_GT1},  {"ize", "", C_M_GT1}};
  return apply_rules(w, n, rules, NRULES(rules));
}

static size_t step5a(char *w, size_t n) {
  /* both conditions are tried (not a rule list: see nltk's comment) */
  if (n >= 1 && w[n - 1] == 'e') {
    int m = measure(w, n - 1);
    if (m > 1) return n - 1;
    if (m == 1 && !ends_cvc(w, n - 1)) return n - 1;
  }
  return n;
}

static size_t step5b(char *w, size_t n) {
  size_t k;
  if (ends_with(w, n, "ll", &k)) return measure(w, n - 1) > 1 ? n - 1 : n;
  return n;
}

/* ---- irregular forms (NLTK_EXTENSIONS pool) ------------------------------------------ */

static const char *const irregular[][2] = {
    {"sky", "sky"},         {"skies", "sky"},     {"dying", "die"},     {"lying", "lie"},
    {"tying", "tie"},       {"news", "news"},     {"innings", "inning"}, {"inning", "inning"},
    {"outings", "outing"},  {"outing", "outing"}, {"cannings", "canning"}, {"canning", "canning"},
    {"howe", "howe"},       {"proceed", "proceed"}, {"exceed", "exceed"}, {"succeed", "succeed"}};

size_t dqm_porter_stem(char *w, size_t n) {
  for (size_t i = 0; i < sizeof irregular / sizeof irregular[0]; i++) {
    size_t k = strlen(irregular[i][0]);
    if (k == n && memcmp(w, irregular[i][0], n) == 0) {
      size_t r = strlen(irregular[i][1]);
      memcpy(w, irregular[i][1], r); /* never longer than the form */
      return r;
    }
  }
  if (n <= 2) return n;
  n = step1a(w, n);
  n = step1b(w, n);
  n = step1c(w, n);
  n = step2(w, n);
  n = step3(w, n);
  n = step4(w, n);
  n = step5a(w, n);
  n = step5b(w, n);
  return n;
}

dq_status dq_porter_stem(const char *word, char *out, int64_t capacity, int64_t *length) {
  if (!word) return dq_fail(DQ_ERR_ARGUMENT, "dq_porter_stem: word is NULL");
  size_t n = strlen(word);
  char *w = malloc(n + 1);
  if (!w) return dq_fail(DQ_ERR_MEMORY, "dq_porter_stem: out of memory for a %zu-byte word", n);
  for (size_t i = 0; i < n; i++) {
    char c = word[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
      free(w);
      return dq_fail(DQ_ERR_ARGUMENT,
                     "dq_porter_stem: word '%s' has byte 0x%02x at %zu; expected ASCII letters and digits",
                     word, (unsigned char)word[i], i);
    }
    w[i] = c;
  }
  n = dqm_porter_stem(w, n);
  dq_status st = dqm_copy_out("dq_porter_stem", w, n, out, capacity, length);
  free(w);
  return st;
}
