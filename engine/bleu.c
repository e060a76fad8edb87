/*
 * bleu.c: sacreBLEU 2.6.0's corpus BLEU with its defaults (BLEU() with no
 * arguments): 13a tokens, n-grams of orders 1..4, per segment the
 * reference n-gram counts are the maximum over its references and the
 * reference length is the closest to the hypothesis length (ties to the
 * shorter); statistics are summed over the corpus, then compute_bleu with
 * smooth_method='exp' and effective_order=False, in the same floating point
 * operation order as sacreBLEU.
 */
#include "rouge_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SACREBLEU_VERSION "2.6.0"

typedef struct bleu_work {
  dqm_vocab vocab;
  dqm_ngrams ngrams; /* counters: [0] max over refs, [1] this ref, [2] hypothesis */
  dqm_buf tokens, tmp;
  int32_t *ids;
  size_t nids, ids_cap;
} bleu_work;

/* Tokenize and intern one segment into w->ids. */
static int segment_ids(bleu_work *w, const char *text) {
  if (dqm_tokenize_13a(text, strlen(text), &w->tokens, &w->tmp)) return -1;
  w->nids = 0;
  const char *p = w->tokens.data, *end = p + w->tokens.len;
  while (p < end) {
    const char *q = memchr(p, ' ', (size_t)(end - p));
    if (!q) q = end;
    int32_t id = dqm_vocab_intern(&w->vocab, p, (size_t)(q - p));
    if (id < 0) return -1;
    if (w->nids == w->ids_cap) {
      size_t cap = w->ids_cap ? w->ids_cap * 2 : 256;
      int32_t *ids = realloc(w->ids, cap * sizeof *ids);
      if (!ids) return -1;
      w->ids = ids;
      w->ids_cap = cap;
    }
    w->ids[w->nids++] = id;
    p = q + 1;
  }
  return 0;
}

/* Add every n-gram (n = 1..4) of w->ids to counter `which`. */
static int count_ngrams(bleu_work *w, int which) {
  int32_t key[DQ_BLEU_MAX_ORDER];
  for (int n = 1; n <= DQ_BLEU_MAX_ORDER; n++) {
    for (size_t i = 0; i + (size_t)n <= w->nids; i++) {
      for (int k = 0; k < DQ_BLEU_MAX_ORDER; k++) key[k] = k < n ? w->ids[i + (size_t)k] : -1;
      int32_t *c = dqm_ngrams_counters(&w->ngrams, key);
      if (!c) return -1;
      c[which]++;
    }
  }
  return 0;
}

static int key_order(const int32_t *key) {
  int n = 0;
  while (n < DQ_BLEU_MAX_ORDER && key[n] >= 0) n++;
  return n;
}

/* One segment's statistics (BLEU._compute_segment_statistics). Returns -1
 * on no memory, -2 when the segment has no reference. */
static int segment_stats(bleu_work *w, const char *hyp, const char *const *refs, int nrefs, int64_t count,
                         int64_t seg, int64_t *stats, int *present) {
  dqm_ngrams_clear(&w->ngrams);
  int64_t closest_len = -1, closest_diff = -1, hyp_len;
  size_t ref_lens_n = 0;
  int64_t ref_lens[64];
  int64_t *lens = nrefs <= 64 ? ref_lens : malloc((size_t)nrefs * sizeof *lens);
  if (!lens) return -1;
  *present = 0;
  for (int k = 0; k < nrefs; k++) {
    const char *ref = refs[(int64_t)k * count + seg];
    if (!ref) continue;
    (*present)++;
    if (segment_ids(w, ref) || count_ngrams(w, 1)) {
      if (lens != ref_lens) free(lens);
      return -1;
    }
    lens[ref_lens_n++] = (int64_t)w->nids;
    for (uint32_t s = 0; s < w->ngrams.nlive; s++) {
      int32_t *c = w->ngrams.counts + (size_t)w->ngrams.live[s] * DQM_NGRAM_COUNTERS;
      if (c[1] > c[0]) c[0] = c[1];
      c[1] = 0;
    }
  }
  if (*present == 0) {
    if (lens != ref_lens) free(lens);
    return -2;
  }
  if (segment_ids(w, hyp) || count_ngrams(w, 2)) {
    if (lens != ref_lens) free(lens);
    return -1;
  }
  hyp_len = (int64_t)w->nids;
  for (size_t k = 0; k < ref_lens_n; k++) { /* _get_closest_ref_len */
    int64_t diff = hyp_len > lens[k] ? hyp_len - lens[k] : lens[k] - hyp_len;
    if (closest_diff == -1 || diff < closest_diff) {
      closest_diff = diff;
      closest_len = lens[k];
    } else if (diff == closest_diff && lens[k] < closest_len) {
      closest_len = lens[k];
    }
  }
  if (lens != ref_lens) free(lens);
  memset(stats, 0, DQ_BLEU_STATS * sizeof *stats);
  stats[0] = hyp_len;
  stats[1] = closest_len;
  for (uint32_t s = 0; s < w->ngrams.nlive; s++) {
    uint32_t slot = w->ngrams.live[s];
    const int32_t *c = w->ngrams.counts + (size_t)slot * DQM_NGRAM_COUNTERS;
    if (!c[2]) continue;
    int n = key_order(w->ngrams.keys + (size_t)slot * DQ_BLEU_MAX_ORDER);
    stats[2 + DQ_BLEU_MAX_ORDER + n - 1] += c[2];
    stats[2 + n - 1] += c[2] < c[0] ? c[2] : c[0];
  }
  return 0;
}

/* sacreBLEU's my_log: log, floored at -9999999999 for 0. */
static double my_log(double x) { return x == 0.0 ? -9999999999.0 : log(x); }

dq_status dq_bleu_from_stats(const int64_t *stats, dq_bleu_score *out) {
  if (!stats || !out) return dq_fail(DQ_ERR_ARGUMENT, "dq_bleu_from_stats: %s is NULL", stats ? "out" : "stats");
  for (int k = 0; k < DQ_BLEU_STATS; k++)
    if (stats[k] < 0)
      return dq_fail(DQ_ERR_ARGUMENT, "dq_bleu_from_stats: statistic %d is %lld; expected >= 0", k,
                     (long long)stats[k]);
  memset(out, 0, sizeof *out);
  int64_t sys_len = stats[0], ref_len = stats[1];
  const int64_t *correct = stats + 2, *total = stats + 2 + DQ_BLEU_MAX_ORDER;
  out->sys_len = sys_len;
  out->ref_len = ref_len;
  for (int n = 0; n < DQ_BLEU_MAX_ORDER; n++) {
    out->correct[n] = correct[n];
    out->total[n] = total[n];
  }
  out->ratio = ref_len ? (double)sys_len / (double)ref_len : 0.0;
  out->bp = 1.0;
  if (sys_len < ref_len) out->bp = sys_len > 0 ? exp(1.0 - (double)ref_len / (double)sys_len) : 0.0;

  int any = 0;
  for (int n = 0; n < DQ_BLEU_MAX_ORDER; n++) any |= correct[n] != 0;
  if (!any) return DQ_OK; /* score 0, precisions 0 (sacreBLEU #141) */

  double smooth_mteval = 1.0;
  for (int n = 0; n < DQ_BLEU_MAX_ORDER; n++) {
    if (total[n] == 0) break;
    if (correct[n] == 0) {
      smooth_mteval *= 2;
      out->precisions[n] = 100.0 / (smooth_mteval * (double)total[n]);
    } else {
      out->precisions[n] = 100.0 * (double)correct[n] / (double)total[n];
    }
  }
  double sum = 0.0;
  for (int n = 0; n < DQ_BLEU_MAX_ORDER; n++) sum += my_log(out->precisions[n]);
  out->score = out->bp * exp(sum / DQ_BLEU_MAX_ORDER);
  return DQ_OK;
}

dq_status dq_bleu(int64_t count, const char *const *hypotheses, int nrefs, const char *const *references,
                  int64_t *segment_stats_out, dq_bleu_score *corpus, int *signature_nrefs) {
  const char *op = "dq_bleu";
  if (count <= 0) return dq_fail(DQ_ERR_ARGUMENT, "%s: %lld hypotheses; expected at least one", op, (long long)count);
  if (nrefs <= 0) return dq_fail(DQ_ERR_ARGUMENT, "%s: %d reference streams; expected at least one", op, nrefs);
  if (!hypotheses || !references || !corpus)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s is NULL", op, !hypotheses ? "hypotheses" : !references ? "references" : "corpus");
  for (int64_t i = 0; i < count; i++)
    if (!hypotheses[i]) return dq_fail(DQ_ERR_ARGUMENT, "%s: hypothesis %lld is NULL", op, (long long)i);

  bleu_work w;
  memset(&w, 0, sizeof w);
  dq_status st = DQ_OK;
  if (dqm_ngrams_init(&w.ngrams, DQ_BLEU_MAX_ORDER)) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
  int64_t sum[DQ_BLEU_STATS] = {0};
  int first_present = -1, varies = 0;
  for (int64_t i = 0; i < count; i++) {
    int64_t stats[DQ_BLEU_STATS];
    int present = 0;
    int rc = segment_stats(&w, hypotheses[i], references, nrefs, count, i, stats, &present);
    if (rc == -2) {
      st = dq_fail(DQ_ERR_ARGUMENT, "%s: segment %lld has no reference (all %d streams are NULL there)", op,
                   (long long)i, nrefs);
      break;
    }
    if (rc) {
      st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory at segment %lld", op, (long long)i);
      break;
    }
    if (first_present < 0) first_present = present;
    else if (present != first_present) varies = 1;
    for (int k = 0; k < DQ_BLEU_STATS; k++) sum[k] += stats[k];
    if (segment_stats_out) memcpy(segment_stats_out + i * DQ_BLEU_STATS, stats, sizeof stats);
  }
  if (!st) st = dq_bleu_from_stats(sum, corpus);
  if (!st && signature_nrefs) *signature_nrefs = varies ? -1 : first_present;
  dqm_vocab_free(&w.vocab);
  dqm_ngrams_free(&w.ngrams);
  dqm_buf_free(&w.tokens);
  dqm_buf_free(&w.tmp);
  free(w.ids);
  return st;
}

dq_status dq_bleu_signature(int nrefs, char *out, int64_t capacity) {
  if (nrefs == 0 || nrefs < -1)
    return dq_fail(DQ_ERR_ARGUMENT, "dq_bleu_signature: nrefs is %d; expected >= 1 or -1 (variable)", nrefs);
  char sig[128], n[16];
  if (nrefs == -1) snprintf(n, sizeof n, "var");
  else snprintf(n, sizeof n, "%d", nrefs);
  int len = snprintf(sig, sizeof sig, "nrefs:%s|case:mixed|eff:no|tok:13a|smooth:exp|version:%s", n,
                     SACREBLEU_VERSION);
  return dqm_copy_out("dq_bleu_signature", sig, (size_t)len, out, capacity, NULL);
}
