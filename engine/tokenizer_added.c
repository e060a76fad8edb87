/*
 * tokenizer_added.c: byte tries, and cutting added tokens out of text the
 * way `tokenizers`' AddedVocabulary does: leftmost-longest matches
 * (Aho-Corasick MatchKind::LeftmostLongest), single_word checks, lstrip /
 * rstrip absorbing the whitespace beside a match into the token.
 */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

typedef struct build_ctx {
  tk_matcher *m;
  const char *const *keys;
  const size_t *lens;
  const int32_t *values;
  size_t *order;
  size_t nodes_cap, edges_cap;
} build_ctx;

static int cmp_keys(const void *a, const void *b, void *arg) {
  const build_ctx *c = arg;
  size_t i = *(const size_t *)a, j = *(const size_t *)b;
  size_t n = c->lens[i] < c->lens[j] ? c->lens[i] : c->lens[j];
  int r = memcmp(c->keys[i], c->keys[j], n);
  if (r) return r;
  if (c->lens[i] != c->lens[j]) return c->lens[i] < c->lens[j] ? -1 : 1;
  return i < j ? -1 : i > j; /* equal keys: the later one wins below */
}

static int64_t new_node(build_ctx *c) {
  tk_matcher *m = c->m;
  if (m->n_nodes == c->nodes_cap) {
    size_t cap = c->nodes_cap ? c->nodes_cap * 2 : 64;
    tk_trie_node *p = realloc(m->nodes, cap * sizeof *p);
    if (!p) return -1;
    m->nodes = p;
    c->nodes_cap = cap;
  }
  tk_trie_node *nd = &m->nodes[m->n_nodes];
  nd->first_child = 0;
  nd->n_children = 0;
  nd->added = -1;
  return (int64_t)m->n_nodes++;
}

/* Keys order[lo..hi) share their first `depth` bytes; build their subtree
 * under `node`. */
static int build(build_ctx *c, uint32_t node, size_t lo, size_t hi, size_t depth) {
  tk_matcher *m = c->m;
  size_t i = lo;
  while (i < hi && c->lens[c->order[i]] == depth) {
    m->nodes[node].added = c->values[c->order[i]];
    i++;
  }
  size_t groups = 0;
  for (size_t j = i; j < hi;) {
    unsigned char b = (unsigned char)c->keys[c->order[j]][depth];
    while (j < hi && (unsigned char)c->keys[c->order[j]][depth] == b) j++;
    groups++;
  }
  if (!groups) return 0;
  if (m->n_edges + groups > c->edges_cap) {
    size_t cap = c->edges_cap ? c->edges_cap : 64;
    while (cap < m->n_edges + groups) cap *= 2;
    tk_trie_edge *p = realloc(m->edges, cap * sizeof *p);
    if (!p) return -1;
    m->edges = p;
    c->edges_cap = cap;
  }
  uint32_t first = (uint32_t)m->n_edges;
  m->n_edges += groups;
  m->nodes[node].first_child = first;
  m->nodes[node].n_children = (uint16_t)groups;
  size_t g = 0;
  for (size_t j = i; j < hi; g++) {
    unsigned char b = (unsigned char)c->keys[c->order[j]][depth];
    size_t k = j;
    while (k < hi && (unsigned char)c->keys[c->order[k]][depth] == b) k++;
    int64_t child = new_node(c);
    if (child < 0) return -1;
    m->edges[first + g].byte = b;
    m->edges[first + g].child = (uint32_t)child;
    if (build(c, (uint32_t)child, j, k, depth + 1)) return -1;
    j = k;
  }
  return 0;
}

dq_status tk_matcher_build(tk_matcher *m, const char *const *keys, const size_t *lens, const int32_t *values, size_t n) {
  memset(m, 0, sizeof *m);
  build_ctx c = {m, keys, lens, values, NULL, 0, 0};
  c.order = malloc((n ? n : 1) * sizeof *c.order);
  if (!c.order) return dq_fail(DQ_ERR_MEMORY, "tokenizer: out of memory building a trie of %zu keys", n);
  size_t kept = 0;
  for (size_t i = 0; i < n; i++)
    if (lens[i]) c.order[kept++] = i;
  qsort_r(c.order, kept, sizeof *c.order, cmp_keys, &c);
  int failed = new_node(&c) < 0 || build(&c, 0, 0, kept, 0);
  for (size_t i = 0; i < kept && !failed; i++) {
    const unsigned char *k = (const unsigned char *)keys[c.order[i]];
    m->first_byte[k[0]] = 1;
    if (lens[c.order[i]] == 1) m->short_key[k[0]] = 1;
    else m->pair_bits[(k[0] * 256 + k[1]) >> 3] |= (uint8_t)(1u << (k[1] & 7));
  }
  free(c.order);
  if (failed) {
    tk_matcher_free(m);
    return dq_fail(DQ_ERR_MEMORY, "tokenizer: out of memory building a trie of %zu keys", n);
  }
  return DQ_OK;
}

void tk_matcher_free(tk_matcher *m) {
  free(m->nodes);
  free(m->edges);
  memset(m, 0, sizeof *m);
}

int32_t tk_matcher_longest(const tk_matcher *m, const char *s, size_t n, size_t *len) {
  int32_t best = -1;
  uint32_t node = 0;
  for (size_t i = 0; i < n; i++) {
    int64_t child = tk_trie_child(m, node, (unsigned char)s[i]);
    if (child < 0) break;
    node = (uint32_t)child;
    if (m->nodes[node].added >= 0) {
      best = m->nodes[node].added;
      *len = i + 1;
    }
  }
  return best;
}

/* ---- splitting ----------------------------------------------------------------- */

static int push_segment(tk_segments *out, size_t start, size_t len, int32_t added) {
  if (out->len == out->cap) {
    size_t cap = out->cap ? out->cap * 2 : 16;
    tk_segment *p = realloc(out->data, cap * sizeof *p);
    if (!p) return -1;
    out->data = p;
    out->cap = cap;
  }
  out->data[out->len].start = start;
  out->data[out->len].len = len;
  out->data[out->len].added = added;
  out->len++;
  return 0;
}

/* Rust regex's \w: Alphabetic, marks, decimal digits, connector
 * punctuation, joiners. Alphabetic is approximated by the letter and
 * letter-number categories (Other_Alphabetic is not in utf8proc). */
static int is_word_cp(int32_t cp) {
  if (cp == 0x200C || cp == 0x200D) return 1;
  switch (utf8proc_category(cp)) {
  case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
  case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC:
  case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_PC:
    return 1;
  default:
    return 0;
  }
}

/* The code point ending at s[end) (end > 0). */
static int32_t cp_before(const char *s, size_t end, size_t *start) {
  size_t i = end - 1;
  while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
  size_t len;
  *start = i;
  return tk_utf8_next(s + i, end - i, &len);
}

int tk_split_added(const dq_tokenizer *t, const tk_matcher *m, const char *s, size_t n, tk_segments *out) {
  size_t start_offset = 0, i = 0;
  if (m->n_nodes > 1) {
    while (i < n) {
      unsigned char b0 = (unsigned char)s[i];
      if (!m->first_byte[b0]) {
        i++;
        continue;
      }
      /* most bytes start no token: look at the next byte before the trie */
      if (!m->short_key[b0]) {
        unsigned char b1 = i + 1 < n ? (unsigned char)s[i + 1] : 0;
        if (i + 1 >= n || !(m->pair_bits[(b0 * 256 + b1) >> 3] & (1u << (b1 & 7)))) {
          i++;
          continue;
        }
      }
      size_t len = 0;
      int32_t idx = tk_matcher_longest(m, s + i, n - i, &len);
      if (idx < 0) {
        i++;
        continue;
      }
      size_t start = i, stop = i + len;
      i = stop; /* matches never overlap, whatever happens to this one */
      const tk_added *a = &t->added[idx];
      if (a->single_word) {
        size_t p, l;
        int start_space = start == 0 || !is_word_cp(cp_before(s, start, &p));
        int stop_space = stop == n || !is_word_cp(tk_utf8_next(s + stop, n - stop, &l));
        if (!start_space || !stop_space) continue;
      }
      if (a->lstrip) {
        size_t newstart = start;
        while (newstart > 0) {
          size_t p;
          if (!tk_is_whitespace(cp_before(s, newstart, &p))) break;
          newstart = p;
        }
        start = newstart > start_offset ? newstart : start_offset;
      }
      if (a->rstrip) {
        while (stop < n) {
          size_t l;
          if (!tk_is_whitespace(tk_utf8_next(s + stop, n - stop, &l))) break;
          stop += l;
        }
      }
      if (start_offset < start && push_segment(out, start_offset, start - start_offset, -1)) return -1;
      if (push_segment(out, start, stop - start, idx)) return -1;
      start_offset = stop;
    }
  }
  if (start_offset < n && push_segment(out, start_offset, n - start_offset, -1)) return -1;
  return 0;
}
