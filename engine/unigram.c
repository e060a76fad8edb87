/*
 * unigram.c: the Unigram model of `tokenizers` (models/unigram, its
 * encode_optimized): Viterbi over the pieces found in a byte trie from
 * each character position; a character that starts no single-character
 * piece gets the unknown token with score min_score - 10. Backtracking
 * fuses consecutive unknown tokens into one string, which then becomes
 * <0xNN> byte tokens (byte_fallback, when all of them exist), or unk_id.
 * A fused string that happens to be a piece gets that piece's id, as in the
 * library (it looks the string up again).
 */
#include "tokenizer_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const double UNK_PENALTY = 10.0;

dq_status tk_unigram_build_trie(dq_tokenizer *t) {
  tk_unigram *u = &t->unigram;
  size_t n = (size_t)u->n_pieces;
  const char **keys = malloc((n ? n : 1) * sizeof *keys);
  size_t *lens = malloc((n ? n : 1) * sizeof *lens);
  int32_t *values = malloc((n ? n : 1) * sizeof *values);
  if (!keys || !lens || !values) {
    free(keys);
    free(lens);
    free(values);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory building the unigram trie", t->source);
  }
  for (size_t i = 0; i < n; i++) {
    keys[i] = t->id_token[i] ? t->id_token[i] : "";
    lens[i] = t->id_token[i] ? t->id_token_len[i] : 0;
    values[i] = (int32_t)i;
  }
  dq_status st = tk_matcher_build(&u->trie, keys, lens, values, n);
  free(keys);
  free(lens);
  free(values);
  return st;
}

static int reserve_lattice(tk_work *w, size_t n) {
  if (n + 1 <= w->best_cap) return 0;
  size_t cap = w->best_cap ? w->best_cap : 64;
  while (cap < n + 1) cap *= 2;
  double *score = realloc(w->best_score, cap * sizeof *score);
  if (score) w->best_score = score;
  int32_t *start = realloc(w->best_start, cap * sizeof *start);
  if (start) w->best_start = start;
  int32_t *id = realloc(w->best_id, cap * sizeof *id);
  if (id) w->best_id = id;
  if (!score || !start || !id) return -1;
  w->best_cap = cap;
  return 0;
}

static dq_status oom(void) { return dq_fail(DQ_ERR_MEMORY, "tokenizer: out of memory in the unigram model"); }

static dq_status missing_unk(const dq_tokenizer *t, const char *piece, size_t n) {
  return dq_fail(DQ_ERR_ARGUMENT, "tokenizer %s: the unigram model has no unk_id, and the text \"%.*s\" holds characters "
                 "outside its vocabulary", t->source, (int)(n > 64 ? 64 : n), piece);
}

/* Append the ids of one token string s[a..b) of the best path; `id` is its
 * piece, or -1 for a run of unknown characters (looked up again as the
 * library does: the fused string may be a piece). */
static dq_status emit_token(const dq_tokenizer *t, const char *s, size_t a, size_t b, int32_t id, tk_ids *out) {
  const tk_unigram *u = &t->unigram;
  if (id >= 0) return tk_ids_push(out, id) ? oom() : DQ_OK;
  const int32_t *v = tk_strmap_get(&t->model_vocab, s + a, b - a);
  if (v) return tk_ids_push(out, *v) ? oom() : DQ_OK;
  if (u->byte_fallback) {
    int all = 1;
    for (size_t k = a; k < b && all; k++) all = u->byte_token_ids[(unsigned char)s[k]] >= 0;
    if (all) {
      for (size_t k = a; k < b; k++)
        if (tk_ids_push(out, u->byte_token_ids[(unsigned char)s[k]])) return oom();
      return DQ_OK;
    }
  }
  if (u->unk_id < 0) return missing_unk(t, s + a, b - a);
  return tk_ids_push(out, u->unk_id) ? oom() : DQ_OK;
}

dq_status tk_unigram_encode(const dq_tokenizer *t, tk_work *w, const char *s, size_t n, tk_ids *out) {
  const tk_unigram *u = &t->unigram;
  if (!n) return DQ_OK;
  int hit = tk_cache_lookup(w, s, n, out);
  if (hit) return hit < 0 ? oom() : DQ_OK;
  if (reserve_lattice(w, n)) return oom();
  double *best = w->best_score;
  int32_t *from = w->best_start, *node_id = w->best_id;
  for (size_t i = 0; i <= n; i++) from[i] = -1;
  best[0] = 0.0;
  const double unk_score = u->min_score - UNK_PENALTY;
  const tk_matcher *trie = &u->trie;
  for (size_t at = 0; at < n;) {
    double here = best[at];
    size_t mblen;
    tk_utf8_next(s + at, n - at, &mblen);
    int single = 0;
    uint32_t node = 0;
    for (size_t k = at; k < n; k++) {
      int64_t child = tk_trie_child(trie, node, (unsigned char)s[k]);
      if (child < 0) break;
      node = (uint32_t)child;
      int32_t id = trie->nodes[node].added;
      if (id < 0) continue;
      size_t end = k + 1;
      double cand = u->scores[id] + here;
      if (from[end] < 0 || cand > best[end]) {
        best[end] = cand;
        from[end] = (int32_t)at;
        node_id[end] = id;
      }
      if (end - at == mblen) single = 1;
    }
    if (!single) {
      size_t end = at + mblen;
      double cand = unk_score + here;
      if (from[end] < 0 || cand > best[end]) {
        if (u->unk_id < 0) return missing_unk(t, s, n);
        best[end] = cand;
        from[end] = (int32_t)at;
        node_id[end] = u->unk_id;
      }
    }
    at += mblen;
  }
  /* backtrack into (start, end, piece or -1) triples, fusing runs of unknowns */
  tk_ids *path = &w->tmp_ids;
  path->len = 0;
  size_t end = n, unk_end = 0;
  int in_unk = 0;
  while (end > 0) {
    size_t start = (size_t)from[end];
    if (u->unk_id >= 0 && node_id[end] == u->unk_id) {
      if (!in_unk) unk_end = end;
      in_unk = 1;
    } else {
      if (in_unk && (tk_ids_push(path, (int32_t)end) || tk_ids_push(path, (int32_t)unk_end) || tk_ids_push(path, -1)))
        return oom();
      in_unk = 0;
      if (tk_ids_push(path, (int32_t)start) || tk_ids_push(path, (int32_t)end) || tk_ids_push(path, node_id[end]))
        return oom();
    }
    end = start;
  }
  if (in_unk && (tk_ids_push(path, 0) || tk_ids_push(path, (int32_t)unk_end) || tk_ids_push(path, -1))) return oom();
  size_t first = out->len;
  for (size_t k = path->len; k >= 3; k -= 3) {
    const int32_t *e = path->data + k - 3;
    dq_status st = emit_token(t, s, (size_t)e[0], (size_t)e[1], e[2], out);
    if (st) return st;
  }
  tk_cache_store(w, s, n, out->data + first, out->len - first);
  return DQ_OK;
}
