/*
 * normalize_regex.c: the regular expressions of Replace normalizers, as far
 * as tokenizer.json files use them (" {2,}", "\A +| +\z", "\A▁", ...).
 *
 * Supported: top-level alternation `|`; literal characters; escapes \t \n
 * \r \f \v \\ and any escaped ASCII punctuation or space; the classes \s
 * and \S (White_Space); quantifiers * + ? {n} {n,} {n,m} (greedy); anchors
 * \A, \z, \Z, and ^ / $ as Oniguruma's line anchors. Matching is
 * backtracking, leftmost-first, like Oniguruma. Anything else (groups,
 * brackets, '.', other escapes, lazy or possessive quantifiers, patterns
 * that can match the empty string) is refused with a message naming the
 * pattern, so a file is never tokenized differently without notice.
 */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

enum { IT_CHAR, IT_SPACE, IT_NONSPACE, IT_BEGIN, IT_END, IT_END_NL, IT_LINE_BEGIN, IT_LINE_END };

typedef struct re_item {
  int kind;
  int32_t cp;
  int min, max; /* max -1: unbounded */
} re_item;

typedef struct re_branch {
  re_item *items;
  size_t n;
} re_branch;

struct tk_regex {
  re_branch *branches;
  size_t n;
  /* where a match can start: at 0 when a branch begins with \A, at a byte
   * in first_byte when one begins with a literal; no filter when a branch
   * begins otherwise */
  int filtered, at_begin;
  uint8_t first_byte[256];
};

void tk_regex_free(tk_regex *re) {
  if (!re) return;
  for (size_t i = 0; i < re->n; i++) free(re->branches[i].items);
  free(re->branches);
  free(re);
}

static dq_status refuse(const char *source, const char *pattern, size_t len, const char *why) {
  return dq_fail(DQ_ERR_FORMAT, "%s: Replace pattern Regex \"%.*s\" is not supported: %s (supported: literal "
                 "characters, \\s, \\S, quantifiers * + ? {n,m}, anchors \\A \\z ^ $, top-level |)",
                 source, (int)len, pattern, why);
}

static int is_anchor(int kind) { return kind >= IT_BEGIN; }

static int parse_count(const char *p, size_t n, size_t *i, int *out) {
  size_t j = *i;
  long v = 0;
  while (j < n && p[j] >= '0' && p[j] <= '9' && v < 100000) v = v * 10 + (p[j++] - '0');
  if (j == *i) return -1;
  *i = j;
  *out = (int)v;
  return 0;
}

dq_status tk_regex_compile(const char *p, size_t n, const char *source, tk_regex **out) {
  if (tk_utf8_valid_prefix(p, n) != n) return refuse(source, p, n, "it is not valid UTF-8");
  tk_regex *re = calloc(1, sizeof *re);
  re_item *items = malloc((n + 1) * sizeof *items);
  re_branch *branches = malloc((n + 1) * sizeof *branches);
  if (!re || !items || !branches) {
    free(re);
    free(items);
    free(branches);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory compiling a Replace pattern", source);
  }
  re->branches = branches;
  size_t n_items = 0, i = 0;
  dq_status st = DQ_OK;
  for (;;) {
    if (i == n || p[i] == '|') {
      int min_len = 0;
      for (size_t k = 0; k < n_items; k++)
        if (!is_anchor(items[k].kind)) min_len += items[k].min;
      if (min_len == 0) {
        st = refuse(source, p, n, "a branch can match the empty string");
        break;
      }
      re_item *copy = malloc(n_items * sizeof *copy);
      if (!copy) {
        st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory compiling a Replace pattern", source);
        break;
      }
      memcpy(copy, items, n_items * sizeof *copy);
      re->branches[re->n].items = copy;
      re->branches[re->n].n = n_items;
      re->n++;
      n_items = 0;
      if (i == n) break;
      i++;
      continue;
    }
    re_item it = {IT_CHAR, 0, 1, 1};
    char c = p[i];
    if (c == '\\') {
      if (i + 1 >= n) { st = refuse(source, p, n, "it ends with a lone backslash"); break; }
      char e = p[i + 1];
      i += 2;
      switch (e) {
      case 's': it.kind = IT_SPACE; break;
      case 'S': it.kind = IT_NONSPACE; break;
      case 'A': it.kind = IT_BEGIN; break;
      case 'z': it.kind = IT_END; break;
      case 'Z': it.kind = IT_END_NL; break;
      case 't': it.cp = '\t'; break;
      case 'n': it.cp = '\n'; break;
      case 'r': it.cp = '\r'; break;
      case 'f': it.cp = '\f'; break;
      case 'v': it.cp = '\v'; break;
      default:
        if ((unsigned char)e < 0x80 && !((e >= '0' && e <= '9') || (e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z'))) {
          it.cp = (unsigned char)e;
        } else {
          st = refuse(source, p, n, "it uses an escape other than \\s \\S \\A \\z \\Z \\t \\n \\r \\f \\v or escaped punctuation");
        }
      }
      if (st) break;
    } else if (c == '^' || c == '$') {
      it.kind = c == '^' ? IT_LINE_BEGIN : IT_LINE_END;
      i++;
    } else if (strchr(".[]()*+?{}", c)) {
      st = refuse(source, p, n, "it uses '.', a group, a bracket class or a misplaced quantifier");
      break;
    } else {
      size_t len;
      it.cp = tk_utf8_next(p + i, n - i, &len);
      i += len;
    }
    /* quantifier */
    if (i < n && strchr("*+?{", p[i])) {
      if (is_anchor(it.kind)) { st = refuse(source, p, n, "it quantifies an anchor"); break; }
      char q = p[i++];
      if (q == '*') { it.min = 0; it.max = -1; }
      else if (q == '+') { it.min = 1; it.max = -1; }
      else if (q == '?') { it.min = 0; it.max = 1; }
      else {
        if (parse_count(p, n, &i, &it.min)) { st = refuse(source, p, n, "a {n,m} quantifier without n"); break; }
        it.max = it.min;
        if (i < n && p[i] == ',') {
          i++;
          it.max = -1;
          if (i < n && p[i] != '}' && parse_count(p, n, &i, &it.max)) { st = refuse(source, p, n, "a malformed {n,m}"); break; }
        }
        if (i >= n || p[i] != '}') { st = refuse(source, p, n, "an unclosed {n,m} quantifier"); break; }
        i++;
        if (it.max >= 0 && it.max < it.min) { st = refuse(source, p, n, "a {n,m} quantifier with m < n"); break; }
      }
      if (i < n && (p[i] == '?' || p[i] == '+')) { st = refuse(source, p, n, "lazy and possessive quantifiers"); break; }
    }
    items[n_items++] = it;
  }
  free(items);
  if (st) {
    tk_regex_free(re);
    return st;
  }
  re->filtered = 1;
  for (size_t b = 0; b < re->n; b++) {
    const re_item *first = &re->branches[b].items[0];
    if (first->kind == IT_BEGIN) {
      re->at_begin = 1;
    } else if (first->kind == IT_CHAR && first->min >= 1) {
      char u[4];
      tk_utf8_encode(first->cp, u);
      re->first_byte[(unsigned char)u[0]] = 1;
    } else {
      re->filtered = 0;
    }
  }
  *out = re;
  return DQ_OK;
}

static int item_matches_char(const re_item *it, int32_t cp) {
  switch (it->kind) {
  case IT_CHAR: return cp == it->cp;
  case IT_SPACE: return tk_is_whitespace(cp);
  case IT_NONSPACE: return !tk_is_whitespace(cp);
  default: return 0;
  }
}

static int anchor_holds(int kind, const char *s, size_t n, size_t pos) {
  switch (kind) {
  case IT_BEGIN: return pos == 0;
  case IT_END: return pos == n;
  case IT_END_NL: return pos == n || (pos + 1 == n && s[pos] == '\n');
  case IT_LINE_BEGIN: return pos == 0 || s[pos - 1] == '\n';
  case IT_LINE_END: return pos == n || s[pos] == '\n';
  default: return 0;
  }
}

/* Match items[k..] at pos; returns the end, or -1. Greedy with backtracking. */
static long match_from(const re_branch *b, size_t k, const char *s, size_t n, size_t pos) {
  if (k == b->n) return (long)pos;
  const re_item *it = &b->items[k];
  if (is_anchor(it->kind)) return anchor_holds(it->kind, s, n, pos) ? match_from(b, k + 1, s, n, pos) : -1;
  /* positions after 0, 1, 2, ... repetitions (at most what the text holds) */
  size_t stack_ends[64];
  size_t *ends = stack_ends, cap = 64, count = 0;
  ends[count++] = pos;
  size_t p = pos;
  while ((it->max < 0 || (long)count - 1 < it->max) && p < n) {
    size_t len;
    int32_t cp = tk_utf8_next(s + p, n - p, &len);
    if (!item_matches_char(it, cp)) break;
    p += len;
    if (count == cap) {
      size_t *bigger = malloc(cap * 2 * sizeof *bigger);
      if (!bigger) break; /* cannot happen in practice; fewer repetitions only */
      memcpy(bigger, ends, count * sizeof *ends);
      if (ends != stack_ends) free(ends);
      ends = bigger;
      cap *= 2;
    }
    ends[count++] = p;
  }
  long result = -1;
  for (size_t r = count; r-- > 0;) {
    if ((long)r < it->min) break;
    result = match_from(b, k + 1, s, n, ends[r]);
    if (result >= 0) break;
  }
  if (ends != stack_ends) free(ends);
  return result;
}

int tk_regex_find(const tk_regex *re, const char *s, size_t n, size_t from, size_t *ms, size_t *me) {
  for (size_t start = from; start <= n;) {
    if (re->filtered && !(start == 0 && re->at_begin)) {
      /* skip to the next byte a match can start with */
      while (start < n && !re->first_byte[(unsigned char)s[start]]) start++;
      if (start >= n) return 0;
    }
    for (size_t b = 0; b < re->n; b++) {
      long end = match_from(&re->branches[b], 0, s, n, start);
      if (end >= 0) {
        *ms = start;
        *me = (size_t)end;
        return 1;
      }
    }
    if (start == n) break;
    size_t len;
    tk_utf8_next(s + start, n - start, &len);
    start += len;
  }
  return 0;
}
