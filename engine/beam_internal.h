/*
 * beam_internal.h: the host side of generation's search (generate.c
 * drives it): beam search bookkeeping with transformers 5's vectorized
 * _beam_search semantics (beam_search.c), no-repeat-ngram bans
 * (beam_ngram.c) and the sampling of one token from processed logits
 * (beam_sample.c).
 */
#ifndef DQ_BEAM_INTERNAL_H
#define DQ_BEAM_INTERNAL_H

#include "internal.h"

#include <stdint.h>

/* ---- beam search (beam_search.c) --------------------------------------------
 * Per source b and beam i: the running hypotheses (sequences of cur_len
 * tokens with their summed log-probabilities) and the finished ones
 * (num_beams slots, each a sequence with its length, length-penalized
 * score and whether it really finished: transformers fills empty slots
 * with -1e9 scores). Sequences are rows of L tokens; run and fin are
 * double-buffered since a step's parents overlap. */
typedef struct beam_state {
  int64_t B, n, K, L; /* sources, beams, candidates kept (2n), max_length */
  double length_penalty;
  int early_stopping; /* dq_early_stopping */
  int64_t eos;        /* -1: none */
  int64_t cur_len;
  int64_t *run, *run_next; /* [B * n * L] */
  int64_t *fin, *fin_next; /* [B * n * L] */
  float *run_score;        /* [B * n] */
  float *fin_score, *fin_score_next;
  int32_t *fin_len, *fin_len_next;
  uint8_t *fin_done, *fin_done_next;
  uint8_t *unsatisfied;    /* [B]: the early-stop heuristic still allows improvement */
  int32_t *parents;        /* [B * n] the row each new running beam continues */
} beam_state;

dq_status beam_state_init(beam_state *s, int64_t B, int64_t n, int64_t L, double length_penalty, int early_stopping,
                          int64_t eos, int64_t start, int64_t fill);
void beam_state_free(beam_state *s);
/* The running sequence of row r (b * n + i), cur_len tokens valid. */
static inline const int64_t *beam_running(const beam_state *s, int64_t r) { return s->run + r * s->L; }
/* Apply one step's candidates (scores / index [B, K] from the selection,
 * index = beam * V + token); returns 1 while the search goes on. */
int beam_state_step(beam_state *s, const float *scores, const int32_t *index, int64_t V);

/* ---- no-repeat-ngram (beam_ngram.c) ------------------------------------------
 * Tokens banned after seq[0..len) (NoRepeatNGramLogitsProcessor): for each
 * complete n-gram seq[i..i+n) whose first n - 1 tokens equal the last
 * n - 1 tokens of seq, its last token. Writes them (repeats possible, at
 * most len - n + 1) to out and returns how many. */
int64_t beam_ngram_bans(const int64_t *seq, int64_t len, int n, int32_t *out);

/* ---- sampling (beam_sample.c) --------------------------------------------------
 * One token from row x[0..V) of processed logits (processors already
 * applied): temperature, top-k (0: off), top-p (>= 1: off) as
 * transformers' warpers (min_tokens_to_keep 1), then the inverse CDF of
 * the softmax at uniform u in [0, 1). x is changed; work holds 2 * V
 * entries of scratch. */
int64_t beam_sample_row(float *x, int64_t V, float temperature, int top_k, float top_p, float u, void *work);

#endif
