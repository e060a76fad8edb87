/*
 * beam_search.c: beam search bookkeeping exactly as transformers 5.24's
 * vectorized GenerationMixin._beam_search does it (generation/utils.py:
 * _get_top_k_continuations, _get_running_beams_for_next_iteration,
 * _update_finished_beams, _check_early_stop_heuristic,
 * _beam_search_has_unfinished_sequences), with the same f32 arithmetic,
 * including the -1e9 penalties it adds to scores rather than masking.
 * The decoder prompt is the start token alone (decoder_prompt_len 1).
 */
#include "beam_backend.h"
#include "beam_internal.h"
#include "dqbart.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PENALTY (-1.0e9f)

dq_status beam_state_init(beam_state *s, int64_t B, int64_t n, int64_t L, double length_penalty, int early_stopping,
                          int64_t eos, int64_t start, int64_t fill) {
  memset(s, 0, sizeof *s);
  s->B = B;
  s->n = n;
  s->K = 2 * n;
  s->L = L;
  s->length_penalty = length_penalty;
  s->early_stopping = early_stopping;
  s->eos = eos;
  s->cur_len = 1;
  size_t seqs = (size_t)(B * n * L), rows = (size_t)(B * n);
  s->run = malloc(seqs * sizeof *s->run);
  s->run_next = malloc(seqs * sizeof *s->run_next);
  s->fin = malloc(seqs * sizeof *s->fin);
  s->fin_next = malloc(seqs * sizeof *s->fin_next);
  s->run_score = malloc(rows * sizeof *s->run_score);
  s->fin_score = malloc(rows * sizeof *s->fin_score);
  s->fin_score_next = malloc(rows * sizeof *s->fin_score_next);
  s->fin_len = malloc(rows * sizeof *s->fin_len);
  s->fin_len_next = malloc(rows * sizeof *s->fin_len_next);
  s->fin_done = calloc(rows, 1);
  s->fin_done_next = calloc(rows, 1);
  s->unsatisfied = malloc((size_t)B);
  s->parents = malloc(rows * sizeof *s->parents);
  if (!s->run || !s->run_next || !s->fin || !s->fin_next || !s->run_score || !s->fin_score || !s->fin_score_next ||
      !s->fin_len || !s->fin_len_next || !s->fin_done || !s->fin_done_next || !s->unsatisfied || !s->parents) {
    beam_state_free(s);
    return dq_fail(DQ_ERR_MEMORY, "generate: out of host memory for %lld x %lld beams of length %lld", (long long)B,
                   (long long)n, (long long)L);
  }
  for (size_t i = 0; i < seqs; i++) s->run[i] = s->fin[i] = fill;
  for (size_t r = 0; r < rows; r++) {
    s->run[r * (size_t)L] = s->fin[r * (size_t)L] = start;
    /* Only the first beam starts live, so the first step does not pick
     * the same token from n identical beams. */
    s->run_score[r] = r % (size_t)n == 0 ? 0.0f : PENALTY;
    s->fin_score[r] = PENALTY;
    s->fin_len[r] = 1;
    s->parents[r] = (int32_t)r;
  }
  memset(s->unsatisfied, 1, (size_t)B);
  return DQ_OK;
}

void beam_state_free(beam_state *s) {
  free(s->run);
  free(s->run_next);
  free(s->fin);
  free(s->fin_next);
  free(s->run_score);
  free(s->fin_score);
  free(s->fin_score_next);
  free(s->fin_len);
  free(s->fin_len_next);
  free(s->fin_done);
  free(s->fin_done_next);
  free(s->unsatisfied);
  free(s->parents);
  memset(s, 0, sizeof *s);
}

/* Indices of the `take` best of v[0..count) by (value desc, index asc): the
 * order torch.topk gives when no two values tie. */
static void best_of(const float *v, int count, int take, int *out) {
  for (int j = 0; j < take; j++) {
    int best = -1;
    for (int i = 0; i < count; i++) {
      int used = 0;
      for (int q = 0; q < j && !used; q++) used = out[q] == i;
      if (used) continue;
      if (best < 0 || v[i] > v[best] || (v[best] != v[best] && v[i] == v[i])) best = i;
    }
    out[j] = best;
  }
}

/* A candidate's sequence: the parent's running tokens and the new token. */
static void write_candidate(const beam_state *s, int64_t *dst, int64_t parent_row, int64_t token) {
  const int64_t *src = s->run + parent_row * s->L;
  memcpy(dst, src, (size_t)s->L * sizeof *dst);
  dst[s->cur_len] = token;
}

int beam_state_step(beam_state *s, const float *scores, const int32_t *index, int64_t V) {
  int64_t n = s->n, K = s->K, L = s->L, c = s->cur_len;
  int all_hit = 1;
  float lp_finished = (float)pow((double)c, s->length_penalty); /* tokens generated incl. this one */
  for (int64_t b = 0; b < s->B; b++) {
    const float *topk = scores + b * K;
    float trl[BEAM_MAX_K], fs[BEAM_MAX_K + BEAM_MAX_K / 2];
    int64_t parent[BEAM_MAX_K], token[BEAM_MAX_K];
    uint8_t hit[BEAM_MAX_K], did[BEAM_MAX_K];
    for (int64_t j = 0; j < K; j++) {
      parent[j] = b * n + index[b * K + j] / V;
      token[j] = index[b * K + j] % V;
      hit[j] = c + 1 >= L || (s->eos >= 0 && token[j] == s->eos);
      all_hit &= hit[j];
      trl[j] = topk[j] + (hit[j] ? PENALTY : 0.0f);
    }
    /* e. the next running beams: the best continuations that did not stop */
    int pick[BEAM_MAX_K];
    best_of(trl, (int)K, (int)n, pick);
    for (int64_t i = 0; i < n; i++) {
      int64_t r = b * n + i;
      write_candidate(s, s->run_next + r * L, parent[pick[i]], token[pick[i]]);
      s->parents[r] = (int32_t)parent[pick[i]];
    }
    /* f. finished hypotheses: the previous ones and the candidates among
     * the first n that stopped, length-penalized; the best n stay */
    int full = s->early_stopping == DQ_EARLY_STOPPING_TRUE;
    for (int64_t i = 0; i < n && full; i++) full = s->fin_done[b * n + i];
    for (int64_t i = 0; i < n; i++) fs[i] = s->fin_score[b * n + i];
    for (int64_t j = 0; j < K; j++) {
      float v = topk[j] / lp_finished;
      if (full) v += PENALTY;
      if (!s->unsatisfied[b]) v += PENALTY;
      did[j] = hit[j] && j < n;
      if (!did[j]) v += PENALTY;
      fs[n + j] = v;
    }
    int keep[BEAM_MAX_K];
    best_of(fs, (int)(n + K), (int)n, keep);
    for (int64_t i = 0; i < n; i++) {
      int64_t r = b * n + i;
      int from = keep[i];
      s->fin_score_next[r] = fs[from];
      if (from < n) {
        int64_t o = b * n + from;
        memcpy(s->fin_next + r * L, s->fin + o * L, (size_t)L * sizeof *s->fin);
        s->fin_len_next[r] = s->fin_len[o];
        s->fin_done_next[r] = s->fin_done[o];
      } else {
        int64_t j = from - n;
        write_candidate(s, s->fin_next + r * L, parent[j], token[j]);
        s->fin_len_next[r] = (int32_t)(c + 1);
        s->fin_done_next[r] = did[j];
      }
    }
    for (int64_t i = 0; i < n; i++) s->run_score[b * n + i] = trl[pick[i]];
  }
  int64_t *t;
  t = s->run, s->run = s->run_next, s->run_next = t;
  t = s->fin, s->fin = s->fin_next, s->fin_next = t;
  float *f = s->fin_score;
  s->fin_score = s->fin_score_next, s->fin_score_next = f;
  int32_t *l = s->fin_len;
  s->fin_len = s->fin_len_next, s->fin_len_next = l;
  uint8_t *u = s->fin_done;
  s->fin_done = s->fin_done_next, s->fin_done_next = u;
  s->cur_len = ++c;

  /* g. the early-stop heuristic: can the best running beam still beat
   * the worst finished one (every slot counts -1e9 until it is filled)? */
  int64_t hyp = s->early_stopping == DQ_EARLY_STOPPING_NEVER && s->length_penalty > 0.0 ? L - 1 : c - 1;
  float lp_running = (float)pow((double)hyp, s->length_penalty);
  int any_unsatisfied = 0, all_done = 1;
  for (int64_t b = 0; b < s->B; b++) {
    float best = s->run_score[b * n] / lp_running;
    float worst = INFINITY;
    for (int64_t i = 0; i < n; i++)
      if (s->fin_score[b * n + i] < worst) worst = s->fin_score[b * n + i];
    int improvable = 0;
    for (int64_t i = 0; i < n; i++) {
      float w = s->fin_done[b * n + i] ? worst : PENALTY;
      if (best > w) improvable = 1;
      all_done &= s->fin_done[b * n + i];
    }
    s->unsatisfied[b] = s->unsatisfied[b] && improvable;
    any_unsatisfied |= s->unsatisfied[b];
  }
  int open_beam = !(all_done && s->early_stopping == DQ_EARLY_STOPPING_TRUE);
  return any_unsatisfied && open_beam && !all_hit;
}
