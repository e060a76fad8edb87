/*
 * rouge.c: rouge_scorer.RougeScorer.score from rouge-score 0.1.2, per pair.
 *
 *  rougeN:    clipped n-gram overlap; P = hits / max(#pred n-grams, 1),
 *             R = hits / max(#ref n-grams, 1).
 *  rougeL:    LCS of the whole token lists (0 when either is empty).
 *  rougeLsum: _summary_level_lcs: for each reference sentence the union of
 *             the index sets of ONE LCS with every candidate sentence, the
 *             LCS read back exactly as _backtrack_norec does (a different
 *             tie-break would pick a different LCS and change the union),
 *             then counted against per-token budgets so no token of either
 *             side is used twice.
 *  F = 2PR / (P + R), 0 when P + R is 0, in the same operation order as
 *  scoring.fmeasure so the doubles are identical.
 */
#include "rouge_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct rouge_work {
  dqm_rouge_tokenizer tok;
  dqm_token_list pred, ref;
  dqm_ngrams ngrams[DQ_ROUGE_MAX_N + 1]; /* by n, made when first asked */
  uint32_t *rows;                        /* two LCS rows */
  size_t rows_cap;
  uint32_t *table;                       /* one full LCS table (rougeLsum) */
  size_t table_cap;
  int32_t *budget_ref, *budget_pred;     /* per vocabulary id */
  size_t budget_ref_cap, budget_pred_cap;
  unsigned char *mark;                   /* union LCS over one reference sentence */
  size_t mark_cap;
} rouge_work;

static void work_free(rouge_work *w) {
  dqm_rouge_tokenizer_free(&w->tok);
  dqm_token_list_free(&w->pred);
  dqm_token_list_free(&w->ref);
  for (int n = 0; n <= DQ_ROUGE_MAX_N; n++)
    if (w->ngrams[n].keys) dqm_ngrams_free(&w->ngrams[n]);
  free(w->rows);
  free(w->table);
  free(w->budget_ref);
  free(w->budget_pred);
  free(w->mark);
}

/* p grown to hold at least n (>= 1) elements of `size` bytes, new space
 * zeroed; NULL when memory ran out (p is then untouched). */
static void *grown(void *p, size_t *cap, size_t n, size_t size) {
  if (n == 0) n = 1;
  if (n <= *cap) return p;
  size_t c = *cap ? *cap : 256;
  while (c < n) c *= 2;
  char *q = realloc(p, c * size);
  if (!q) return NULL;
  memset(q + *cap * size, 0, (c - *cap) * size);
  *cap = c;
  return q;
}

static int grow_u32(uint32_t **p, size_t *cap, size_t n) {
  void *q = grown(*p, cap, n, sizeof **p);
  if (!q) return -1;
  *p = q;
  return 0;
}

static int grow_i32(int32_t **p, size_t *cap, size_t n) {
  void *q = grown(*p, cap, n, sizeof **p);
  if (!q) return -1;
  *p = q;
  return 0;
}

static int grow_u8(unsigned char **p, size_t *cap, size_t n) {
  void *q = grown(*p, cap, n, sizeof **p);
  if (!q) return -1;
  *p = q;
  return 0;
}

static void set_score(double *out, double precision, double recall) {
  out[0] = precision;
  out[1] = recall;
  out[2] = precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0.0;
}

/* ---- rougeN ----------------------------------------------------------------------- */

static int score_ngrams(rouge_work *w, int n, double *out) {
  dqm_ngrams *m = &w->ngrams[n];
  if (!m->keys && dqm_ngrams_init(m, n)) return -1;
  dqm_ngrams_clear(m);
  const dqm_token_list *lists[2] = {&w->ref, &w->pred};
  size_t totals[2] = {0, 0};
  for (int side = 0; side < 2; side++) {
    const dqm_token_list *l = lists[side];
    if (l->n < (size_t)n) continue;
    totals[side] = l->n - (size_t)n + 1;
    for (size_t i = 0; i + (size_t)n <= l->n; i++) {
      int32_t *c = dqm_ngrams_counters(m, l->ids + i);
      if (!c) return -1;
      c[side]++;
    }
  }
  size_t hits = 0;
  for (uint32_t k = 0; k < m->nlive; k++) {
    const int32_t *c = m->counts + (size_t)m->live[k] * DQM_NGRAM_COUNTERS;
    hits += (size_t)(c[0] < c[1] ? c[0] : c[1]);
  }
  set_score(out, (double)hits / (double)(totals[1] ? totals[1] : 1),
            (double)hits / (double)(totals[0] ? totals[0] : 1));
  return 0;
}

/* ---- rougeL ------------------------------------------------------------------------ */

static size_t lcs_length(rouge_work *w, const int32_t *a, size_t na, const int32_t *b, size_t nb) {
  uint32_t *prev = w->rows, *cur = w->rows + nb + 1;
  memset(prev, 0, (nb + 1) * sizeof *prev);
  cur[0] = 0;
  for (size_t i = 1; i <= na; i++) {
    int32_t ai = a[i - 1];
    for (size_t j = 1; j <= nb; j++) {
      if (ai == b[j - 1]) cur[j] = prev[j - 1] + 1;
      else cur[j] = prev[j] > cur[j - 1] ? prev[j] : cur[j - 1];
    }
    uint32_t *t = prev;
    prev = cur;
    cur = t;
  }
  return prev[nb];
}

static int score_lcs(rouge_work *w, double *out) {
  size_t m = w->ref.n, n = w->pred.n;
  if (!m || !n) {
    set_score(out, 0, 0);
    return 0;
  }
  if (grow_u32(&w->rows, &w->rows_cap, 2 * (n + 1))) return -1;
  size_t lcs = lcs_length(w, w->ref.ids, m, w->pred.ids, n);
  set_score(out, (double)lcs / (double)n, (double)lcs / (double)m);
  return 0;
}

/* ---- rougeLsum ----------------------------------------------------------------------- */

/* Mark in w->mark the reference indices of the LCS _backtrack_norec reads
 * from the table of (ref, can). */
static int mark_lcs(rouge_work *w, const int32_t *ref, size_t nr, const int32_t *can, size_t nc) {
  size_t cols = nc + 1;
  if (grow_u32(&w->table, &w->table_cap, (nr + 1) * cols)) return -1;
  uint32_t *t = w->table;
  memset(t, 0, cols * sizeof *t);
  for (size_t i = 1; i <= nr; i++) {
    uint32_t *row = t + i * cols, *up = row - cols;
    int32_t ri = ref[i - 1];
    row[0] = 0;
    for (size_t j = 1; j <= nc; j++) {
      if (ri == can[j - 1]) row[j] = up[j - 1] + 1;
      else row[j] = up[j] > row[j - 1] ? up[j] : row[j - 1];
    }
  }
  size_t i = nr, j = nc;
  while (i > 0 && j > 0) {
    if (ref[i - 1] == can[j - 1]) {
      w->mark[i - 1] = 1;
      i--;
      j--;
    } else if (t[i * cols + j - 1] > t[(i - 1) * cols + j]) {
      j--;
    } else {
      i--;
    }
  }
  return 0;
}

static int score_lsum(rouge_work *w, double *out) {
  const dqm_token_list *R = &w->ref, *C = &w->pred;
  size_t m = R->n, n = C->n;
  if (!m || !n) {
    set_score(out, 0, 0);
    return 0;
  }
  size_t vocab = (size_t)w->tok.vocab.count;
  if (grow_i32(&w->budget_ref, &w->budget_ref_cap, vocab) ||
      grow_i32(&w->budget_pred, &w->budget_pred_cap, vocab))
    return -1;
  for (size_t i = 0; i < m; i++) w->budget_ref[R->ids[i]] = 0;
  for (size_t i = 0; i < n; i++) w->budget_pred[C->ids[i]] = 0;
  for (size_t i = 0; i < m; i++) w->budget_ref[R->ids[i]]++;
  for (size_t i = 0; i < n; i++) w->budget_pred[C->ids[i]]++;

  size_t hits = 0;
  for (size_t s = 0; s < R->nsent; s++) {
    const int32_t *ref = R->ids + R->sent[s];
    size_t nr = R->sent[s + 1] - R->sent[s];
    if (grow_u8(&w->mark, &w->mark_cap, nr)) return -1;
    memset(w->mark, 0, nr);
    for (size_t c = 0; c < C->nsent; c++) {
      size_t nc = C->sent[c + 1] - C->sent[c];
      if (nr && nc && mark_lcs(w, ref, nr, C->ids + C->sent[c], nc)) return -1;
    }
    for (size_t i = 0; i < nr; i++) {
      if (!w->mark[i]) continue;
      int32_t tok = ref[i];
      if (w->budget_pred[tok] > 0 && w->budget_ref[tok] > 0) {
        hits++;
        w->budget_pred[tok]--;
        w->budget_ref[tok]--;
      }
    }
  }
  set_score(out, (double)hits / (double)n, (double)hits / (double)m);
  return 0;
}

/* ---- the API ------------------------------------------------------------------------- */

dq_status dq_rouge(int64_t count, const char *const *predictions, const char *const *references,
                   int ntypes, const int32_t *types, const dq_rouge_options *options, double *scores) {
  if (count < 0) return dq_fail(DQ_ERR_ARGUMENT, "dq_rouge: count is %lld; expected >= 0", (long long)count);
  if (count > 0 && (!predictions || !references))
    return dq_fail(DQ_ERR_ARGUMENT, "dq_rouge: %s is NULL for %lld pairs",
                   predictions ? "references" : "predictions", (long long)count);
  if (ntypes <= 0 || !types)
    return dq_fail(DQ_ERR_ARGUMENT, "dq_rouge: %d ROUGE types given; expected at least one", ntypes);
  if (!scores) return dq_fail(DQ_ERR_ARGUMENT, "dq_rouge: scores is NULL");
  for (int k = 0; k < ntypes; k++) {
    if (types[k] < DQ_ROUGE_LSUM || types[k] > DQ_ROUGE_MAX_N)
      return dq_fail(DQ_ERR_ARGUMENT,
                     "dq_rouge: type %d at index %d is not a ROUGE type; expected 1..%d (rougeN), "
                     "%d (rougeL) or %d (rougeLsum)",
                     (int)types[k], k, DQ_ROUGE_MAX_N, DQ_ROUGE_L, DQ_ROUGE_LSUM);
  }
  for (int64_t i = 0; i < count; i++) {
    if (!predictions[i] || !references[i])
      return dq_fail(DQ_ERR_ARGUMENT, "dq_rouge: %s %lld is NULL", predictions[i] ? "reference" : "prediction",
                     (long long)i);
  }

  rouge_work w;
  memset(&w, 0, sizeof w);
  w.tok.stem = options ? options->stem != 0 : 1;
  w.tok.split_sentences = options ? options->split_sentences != 0 : 0;
  if (options && options->sentence_sep && options->sentence_sep[0]) {
    w.tok.sep = options->sentence_sep;
    w.tok.sep_len = strlen(options->sentence_sep);
  }
  dq_status st = DQ_OK;
  for (int64_t i = 0; i < count && !st; i++) {
    if (dqm_rouge_tokens(&w.tok, references[i], &w.ref) || dqm_rouge_tokens(&w.tok, predictions[i], &w.pred)) {
      st = dq_fail(DQ_ERR_MEMORY, "dq_rouge: out of memory tokenizing pair %lld", (long long)i);
      break;
    }
    for (int k = 0; k < ntypes; k++) {
      double *out = scores + ((size_t)i * (size_t)ntypes + (size_t)k) * 3;
      int rc;
      if (types[k] == DQ_ROUGE_L) rc = score_lcs(&w, out);
      else if (types[k] == DQ_ROUGE_LSUM) rc = score_lsum(&w, out);
      else rc = score_ngrams(&w, types[k], out);
      if (rc) {
        st = dq_fail(DQ_ERR_MEMORY,
                     "dq_rouge: out of memory scoring pair %lld (%zu reference and %zu prediction tokens)",
                     (long long)i, w.ref.n, w.pred.n);
        break;
      }
    }
  }
  work_free(&w);
  return st;
}
