/*
 * generate.c: dq_generate (dqbart_generate.h): options, the workspace, and
 * the decoding loops of greedy search, sampling and beam search around
 * the decoder step (model_decode_step.c), the step's token selection
 * (beam_backend.h: on the model's device) and the host bookkeeping
 * (beam_internal.h).
 *
 * Per step the host uploads one small packed buffer (each row's input
 * token, its parent row for the cache reordering, its beam score and its
 * no-repeat-ngram bans) and reads back the selected candidates ([B, k]
 * scores and ids): the one synchronization a step needs, since the host
 * decides the next tokens and when to stop. Sampling reads back the rows'
 * logits instead and draws on the host.
 */
#include "beam_backend.h"
#include "beam_internal.h"
#include "model_decode.h"
#include "philox.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dq_generate_workspace {
  model_decode dec;
  dq_tensor d_stage; /* i32: tokens [R], parents [R], row scores [R] (f32), ban_start [R + 1], ban tokens */
  dq_tensor d_cand;  /* i32: scratch [2, R, K] */
  dq_tensor d_out;   /* i32: [2, B, K] scores (f32) then ids */
  int32_t *h_stage;
  int64_t h_stage_cap;
  int32_t *h_out;
  int64_t h_out_cap;
  float *h_logits; /* sampling on CUDA */
  int64_t h_logits_cap;
  void *h_sort;
  int64_t h_sort_cap;
  dq_generate_stats stats;
  int timing;
};

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- options ---------------------------------------------------------------------- */

dq_status dq_generate_defaults(const dq_model *m, dq_generate_options *o) {
  if (!m || !o) return dq_fail(DQ_ERR_ARGUMENT, "dq_generate_defaults: NULL argument");
  const dq_generation_config *g = &m->cfg.generation;
  memset(o, 0, sizeof *o);
  o->num_beams = g->num_beams;
  o->max_length = g->max_length;
  o->min_length = g->min_length;
  o->no_repeat_ngram_size = g->no_repeat_ngram_size;
  o->early_stopping = g->early_stopping;
  o->length_penalty = g->length_penalty;
  o->temperature = 1.0f;
  o->top_k = 50;
  o->top_p = 1.0f;
  o->decoder_start_token_id = g->decoder_start_token_id >= 0 ? g->decoder_start_token_id : g->bos_token_id;
  o->eos_token_id = g->eos_token_id;
  o->pad_token_id = g->pad_token_id;
  o->forced_bos_token_id = g->forced_bos_token_id;
  o->forced_eos_token_id = g->forced_eos_token_id;
  return DQ_OK;
}

static dq_status check_token(const char *op, const char *what, int64_t id, int64_t V, int required) {
  if (id == -1 && !required) return DQ_OK;
  if (id < 0 || id >= V)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s is %lld; expected a token id in [0, %lld)%s", op, what, (long long)id,
                   (long long)V, required ? "" : " or -1 (none)");
  return DQ_OK;
}

static dq_status check_options(const dq_model *m, const dq_generate_options *o) {
  const char *op = "dq_generate";
  int64_t V = m->cfg.vocab_size, P = m->cfg.max_position_embeddings;
  if (o->num_beams < 1 || o->num_beams > BEAM_MAX_K / 2)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: num_beams is %d; expected 1 to %d", op, o->num_beams, BEAM_MAX_K / 2);
  if (o->do_sample && o->num_beams > 1)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: sampling with num_beams %d (beam sampling) is not supported; use num_beams 1",
                   op, o->num_beams);
  if (o->max_length < 2 || o->max_length > P + 1)
    return dq_fail(DQ_ERR_ARGUMENT,
                   "%s: max_length is %d; expected 2 to %lld (the start token plus at most max_position_embeddings = "
                   "%lld positions)",
                   op, o->max_length, (long long)(P + 1), (long long)P);
  if (o->min_length < 0 || o->no_repeat_ngram_size < 0)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: min_length %d and no_repeat_ngram_size %d must be >= 0", op, o->min_length,
                   o->no_repeat_ngram_size);
  if (o->early_stopping < DQ_EARLY_STOPPING_FALSE || o->early_stopping > DQ_EARLY_STOPPING_NEVER)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: early_stopping is %d; expected 0 (false), 1 (true) or 2 (never)", op,
                   o->early_stopping);
  if (!isfinite(o->length_penalty))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: length_penalty is %g; expected a finite number", op, o->length_penalty);
  if (o->do_sample) {
    if (!(o->temperature > 0.0f) || !isfinite(o->temperature))
      return dq_fail(DQ_ERR_ARGUMENT, "%s: temperature is %g; expected > 0", op, (double)o->temperature);
    if (o->top_k < 0) return dq_fail(DQ_ERR_ARGUMENT, "%s: top_k is %d; expected >= 0 (0: off)", op, o->top_k);
    if (!(o->top_p > 0.0f && o->top_p <= 1.0f))
      return dq_fail(DQ_ERR_ARGUMENT, "%s: top_p is %g; expected a value in (0, 1] (1: off)", op, (double)o->top_p);
  }
  MODEL_TRY(check_token(op, "decoder_start_token_id", o->decoder_start_token_id, V, 1));
  MODEL_TRY(check_token(op, "eos_token_id", o->eos_token_id, V, 0));
  MODEL_TRY(check_token(op, "pad_token_id", o->pad_token_id, V, 0));
  MODEL_TRY(check_token(op, "forced_bos_token_id", o->forced_bos_token_id, V, 0));
  MODEL_TRY(check_token(op, "forced_eos_token_id", o->forced_eos_token_id, V, 0));
  return DQ_OK;
}

/* ---- workspace ---------------------------------------------------------------------- */

dq_status dq_generate_workspace_new(dq_generate_workspace **out) {
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "dq_generate_workspace_new: out is NULL");
  *out = calloc(1, sizeof **out);
  if (!*out) return dq_fail(DQ_ERR_MEMORY, "dq_generate_workspace_new: out of host memory");
  return DQ_OK;
}

void dq_generate_workspace_free(dq_generate_workspace *ws) {
  if (!ws) return;
  model_decode_free(&ws->dec);
  dq_tensor_release(&ws->d_stage);
  dq_tensor_release(&ws->d_cand);
  dq_tensor_release(&ws->d_out);
  free(ws->h_stage);
  free(ws->h_out);
  free(ws->h_logits);
  free(ws->h_sort);
  free(ws);
}

int64_t dq_generate_workspace_bytes(const dq_generate_workspace *ws) {
  if (!ws) return 0;
  int64_t n = ws->dec.arena_bytes;
  const dq_tensor *t[3] = {&ws->d_stage, &ws->d_cand, &ws->d_out};
  for (int i = 0; i < 3; i++)
    if (dq_tensor_defined(t[i])) n += t[i]->numel * dq_dtype_size(t[i]->dtype);
  return n;
}

dq_status dq_generate_workspace_stats(const dq_generate_workspace *ws, dq_generate_stats *stats) {
  if (!ws || !stats) return dq_fail(DQ_ERR_ARGUMENT, "dq_generate_workspace_stats: NULL argument");
  *stats = ws->stats;
  return DQ_OK;
}

dq_status dq_generate_workspace_timing(dq_generate_workspace *ws, int32_t timing) {
  if (!ws) return dq_fail(DQ_ERR_ARGUMENT, "dq_generate_workspace_timing: workspace is NULL");
  ws->timing = timing != 0;
  return DQ_OK;
}

/* A device buffer of at least n elements. */
static dq_status ensure_device(dq_tensor *t, int64_t n, int dtype, int device) {
  if (dq_tensor_defined(t) && t->numel >= n && t->device == device && t->dtype == dtype) return DQ_OK;
  dq_tensor_release(t);
  int64_t s[1] = {n > 0 ? n : 1};
  return dq_tensor_empty(t, 1, s, dtype, device);
}

static dq_status ensure_host(void **p, int64_t *cap, int64_t bytes) {
  if (*cap >= bytes) return DQ_OK;
  void *q = realloc(*p, (size_t)bytes);
  if (!q) return dq_fail(DQ_ERR_MEMORY, "dq_generate: out of host memory (%lld bytes)", (long long)bytes);
  *p = q;
  *cap = bytes;
  return DQ_OK;
}

static dq_tensor head(const dq_tensor *t, int64_t n) {
  int64_t s[1] = {n};
  return model_as(t, 1, s);
}

/* ---- one step ---------------------------------------------------------------------------
 * The packed upload: tokens [R], parents [R], row scores [R], ban_start
 * [R + 1], ban tokens. The host fills h_stage, step() sends it. */

typedef struct step_plan {
  int64_t batch, beams, R, V;
  int k;
  int log_softmax;
  int has_parents, has_scores, has_bans;
  int64_t n_bans;
  int64_t ban_eos, forced;
} step_plan;

static int32_t *stage_tokens(dq_generate_workspace *ws) { return ws->h_stage; }
static int32_t *stage_parents(dq_generate_workspace *ws, int64_t R) { return ws->h_stage + R; }
static float *stage_scores(dq_generate_workspace *ws, int64_t R) { return (float *)(ws->h_stage + 2 * R); }
static int32_t *stage_ban_start(dq_generate_workspace *ws, int64_t R) { return ws->h_stage + 3 * R; }
static int32_t *stage_bans(dq_generate_workspace *ws, int64_t R) { return ws->h_stage + 4 * R + 1; }

/* The bans of every row (no-repeat-ngram), from the rows' sequences. */
static int64_t fill_bans(dq_generate_workspace *ws, int64_t R, const int64_t *seqs, int64_t stride, int64_t len,
                         int n) {
  int32_t *start = stage_ban_start(ws, R), *bans = stage_bans(ws, R);
  int64_t total = 0;
  for (int64_t r = 0; r < R; r++) {
    start[r] = (int32_t)total;
    total += beam_ngram_bans(seqs + r * stride, len, n, bans + total);
  }
  start[R] = (int32_t)total;
  return total;
}

static dq_status run_select(dq_tensor *logits, const beam_select_args *a) {
  if (dq_on_cuda(logits)) DQ_CUDA_CALL(cuda_beam_select(logits, a));
  return cpu_beam_select(logits, a);
}

/* Decoder step for the staged tokens, then (unless sampling) the token
 * selection with its results in ws->h_out ([B, k] scores as f32 bits, then
 * [B, k] ids). */
static dq_status step(dq_generate_workspace *ws, dq_model *m, const step_plan *p, int select) {
  int64_t R = p->R, words = 4 * R + 1 + p->n_bans;
  double t0 = now_seconds();
  dq_tensor stage = head(&ws->d_stage, words);
  MODEL_TRY(dq_copy_from_host(&stage, ws->h_stage, words * (int64_t)sizeof(int32_t)));
  dq_tensor tokens = head(&ws->d_stage, R);
  dq_tensor parents = model_view(&ws->d_stage, R, 1, (int64_t[1]){R});
  MODEL_TRY(model_decode_step(m, &ws->dec, &tokens, p->has_parents ? &parents : NULL));
  if (ws->timing) MODEL_TRY(dq_sync(m->device));
  double t1 = now_seconds();
  ws->stats.decoder_seconds += t1 - t0;
  if (!select) return DQ_OK;
  int32_t *base = ws->d_stage.data, *cand = ws->d_cand.data, *out = ws->d_out.data;
  int64_t BK = p->batch * p->k, RK = R * p->k;
  beam_select_args a = {
      .batch = p->batch, .beams = p->beams, .vocab = p->V, .k = p->k, .log_softmax = p->log_softmax,
      .ban_eos = p->ban_eos, .forced = p->forced,
      .row_scores = p->has_scores ? (const float *)(base + 2 * R) : NULL,
      .ban_start = p->has_bans ? base + 3 * R : NULL, .ban_tokens = p->has_bans ? base + 4 * R + 1 : NULL,
      .cand_scores = (float *)cand, .cand_index = cand + RK, .out_scores = (float *)out, .out_index = out + BK};
  dq_tensor logits = model_as2(&ws->dec.logits, R, p->V);
  MODEL_TRY(run_select(&logits, &a));
  dq_tensor result = head(&ws->d_out, 2 * BK);
  MODEL_TRY(dq_copy_to_host(&result, ws->h_out, 2 * BK * (int64_t)sizeof(int32_t)));
  ws->stats.search_seconds += now_seconds() - t1;
  return DQ_OK;
}

/* The step's processors for sequences of length cur_len. */
static void processors(step_plan *p, const dq_generate_options *o, int64_t cur_len) {
  p->ban_eos = o->eos_token_id >= 0 && o->min_length > 0 && cur_len < o->min_length ? o->eos_token_id : -1;
  p->forced = -1;
  if (o->forced_bos_token_id >= 0 && cur_len == 1) p->forced = o->forced_bos_token_id;
  if (o->forced_eos_token_id >= 0 && cur_len == o->max_length - 1) p->forced = o->forced_eos_token_id;
}

/* ---- greedy search and sampling --------------------------------------------------------- */

/* Sampling: the processors on the raw logits of each row on the host,
 * then one draw per row. */
static dq_status sample_rows(dq_generate_workspace *ws, const dq_model *m, const dq_generate_options *o,
                             const step_plan *p, int64_t step_index, int64_t *next) {
  int64_t R = p->R, V = p->V;
  float *x = ws->dec.logits.data;
  if (dq_on_cuda(&ws->dec.logits)) {
    MODEL_TRY(ensure_host((void **)&ws->h_logits, &ws->h_logits_cap, R * V * (int64_t)sizeof(float)));
    dq_tensor l = head(&ws->dec.logits, R * V);
    MODEL_TRY(dq_copy_to_host(&l, ws->h_logits, R * V * (int64_t)sizeof(float)));
    x = ws->h_logits;
  }
  MODEL_TRY(ensure_host(&ws->h_sort, &ws->h_sort_cap, V * 8));
  const int32_t *start = stage_ban_start(ws, R), *bans = stage_bans(ws, R);
  for (int64_t r = 0; r < R; r++) {
    float *row = x + r * V;
    if (p->forced >= 0) {
      for (int64_t v = 0; v < V; v++) row[v] = -INFINITY;
      row[p->forced] = 0.0f;
    } else {
      if (p->has_bans)
        for (int32_t i = start[r]; i < start[r + 1]; i++) row[bans[i]] = -INFINITY;
      if (p->ban_eos >= 0) row[p->ban_eos] = -INFINITY;
    }
    float u = dq_philox_uniform(o->seed, 0, step_index * R + r);
    next[r] = beam_sample_row(row, V, o->temperature, o->top_k, o->top_p, u, ws->h_sort);
  }
  (void)m;
  return DQ_OK;
}

static dq_status greedy(dq_generate_workspace *ws, dq_model *m, const dq_generate_options *o, int64_t B,
                        int64_t pad, int64_t *seq, int64_t *len) {
  int64_t L = o->max_length, V = m->cfg.vocab_size;
  step_plan p = {.batch = B, .beams = 1, .R = B, .V = V, .k = 1, .log_softmax = 0};
  uint8_t *open = malloc((size_t)B);
  int64_t *next = malloc((size_t)B * sizeof *next);
  if (!open || !next) {
    free(open);
    free(next);
    return dq_fail(DQ_ERR_MEMORY, "dq_generate: out of host memory");
  }
  memset(open, 1, (size_t)B);
  for (int64_t b = 0; b < B; b++) len[b] = L;
  dq_status st = DQ_OK;
  for (int64_t cur = 1; cur < L; cur++) {
    for (int64_t b = 0; b < B; b++) stage_tokens(ws)[b] = (int32_t)seq[b * L + cur - 1];
    processors(&p, o, cur);
    p.has_bans = o->no_repeat_ngram_size > 0 && cur >= o->no_repeat_ngram_size;
    p.n_bans = p.has_bans ? fill_bans(ws, B, seq, L, cur, o->no_repeat_ngram_size) : 0;
    st = step(ws, m, &p, !o->do_sample);
    if (st) break;
    if (o->do_sample) {
      double t1 = now_seconds();
      st = sample_rows(ws, m, o, &p, cur - 1, next);
      ws->stats.search_seconds += now_seconds() - t1;
      if (st) break;
    } else {
      for (int64_t b = 0; b < B; b++) next[b] = ws->h_out[B + b];
    }
    ws->stats.steps++;
    int any_open = 0;
    for (int64_t b = 0; b < B; b++) {
      int64_t tok = open[b] ? next[b] : pad;
      seq[b * L + cur] = tok;
      if (open[b] && o->eos_token_id >= 0 && tok == o->eos_token_id) {
        open[b] = 0;
        len[b] = cur + 1;
      }
      any_open |= open[b];
    }
    if (!any_open) break;
  }
  free(open);
  free(next);
  return st;
}

/* ---- beam search ---------------------------------------------------------------------- */

static dq_status beam(dq_generate_workspace *ws, dq_model *m, const dq_generate_options *o, int64_t B, int64_t fill,
                      int64_t *seq, int64_t *len, float *score) {
  int64_t n = o->num_beams, R = B * n, L = o->max_length, V = m->cfg.vocab_size;
  beam_state s;
  MODEL_TRY(beam_state_init(&s, B, n, L, o->length_penalty, o->early_stopping, o->eos_token_id,
                            o->decoder_start_token_id, fill));
  step_plan p = {.batch = B, .beams = n, .R = R, .V = V, .k = (int)s.K, .log_softmax = 1, .has_scores = 1};
  dq_status st = DQ_OK;
  for (int first = 1;; first = 0) {
    int64_t cur = s.cur_len;
    for (int64_t r = 0; r < R; r++) {
      stage_tokens(ws)[r] = (int32_t)beam_running(&s, r)[cur - 1];
      stage_parents(ws, R)[r] = s.parents[r];
      stage_scores(ws, R)[r] = s.run_score[r];
    }
    p.has_parents = !first;
    processors(&p, o, cur);
    p.has_bans = o->no_repeat_ngram_size > 0 && cur >= o->no_repeat_ngram_size;
    p.n_bans = p.has_bans ? fill_bans(ws, R, s.run, L, cur, o->no_repeat_ngram_size) : 0;
    st = step(ws, m, &p, 1);
    if (st) break;
    double t0 = now_seconds();
    int go_on = beam_state_step(&s, (const float *)ws->h_out, ws->h_out + B * s.K, V);
    ws->stats.search_seconds += now_seconds() - t0;
    ws->stats.steps++;
    if (!go_on) break;
  }
  if (!st) {
    for (int64_t b = 0; b < B; b++) {
      memcpy(seq + b * L, s.fin + b * n * L, (size_t)L * sizeof *seq);
      len[b] = s.fin_len[b * n];
      score[b] = s.fin_score[b * n];
    }
  }
  beam_state_free(&s);
  return st;
}

/* ---- dq_generate ------------------------------------------------------------------------ */

static dq_status prepare_buffers(dq_generate_workspace *ws, int device, int64_t B, int64_t R, int64_t K,
                                 int64_t L) {
  int64_t words = 4 * R + 1 + R * L; /* bans: at most L per row */
  MODEL_TRY(ensure_device(&ws->d_stage, words, DQ_I32, device));
  MODEL_TRY(ensure_device(&ws->d_cand, 2 * R * K, DQ_I32, device));
  MODEL_TRY(ensure_device(&ws->d_out, 2 * B * K, DQ_I32, device));
  MODEL_TRY(ensure_host((void **)&ws->h_stage, &ws->h_stage_cap, words * (int64_t)sizeof(int32_t)));
  return ensure_host((void **)&ws->h_out, &ws->h_out_cap, 2 * B * K * (int64_t)sizeof(int32_t));
}

static dq_status write_results(const char *op, int64_t B, int64_t L, const int64_t *seq, const int64_t *len,
                               const float *score, dq_tensor *sequences, dq_tensor *lengths, dq_tensor *scores) {
  int64_t s2[2] = {B, L}, s1[1] = {B};
  MODEL_TRY(dq_prepare_out(op, sequences, 2, s2, DQ_I64, DQ_CPU));
  MODEL_TRY(dq_prepare_out(op, lengths, 1, s1, DQ_I64, DQ_CPU));
  memcpy(sequences->data, seq, (size_t)(B * L) * sizeof *seq);
  memcpy(lengths->data, len, (size_t)B * sizeof *len);
  if (scores) {
    MODEL_TRY(dq_prepare_out(op, scores, 1, s1, DQ_F32, DQ_CPU));
    memcpy(scores->data, score, (size_t)B * sizeof *score);
  }
  return DQ_OK;
}

static dq_status generate(dq_model *m, dq_generate_workspace *ws, const dq_tensor *input_ids,
                          const dq_tensor *attention_mask, const dq_generate_options *o, int64_t *seq, int64_t *len,
                          float *score) {
  int64_t B = input_ids->shape[0], S = input_ids->shape[1], L = o->max_length;
  int64_t n = o->do_sample ? 1 : o->num_beams, R = B * n, K = n > 1 ? 2 * n : 1;
  int64_t pad = o->pad_token_id >= 0 ? o->pad_token_id : o->eos_token_id;
  MODEL_TRY(model_decode_prepare(m, &ws->dec, B, n, S, L));
  MODEL_TRY(prepare_buffers(ws, m->device, B, R, K, L));
  double t0 = now_seconds();
  MODEL_TRY(model_decode_encode(m, &ws->dec, input_ids, attention_mask));
  if (ws->timing) MODEL_TRY(dq_sync(m->device));
  ws->stats.encoder_seconds = now_seconds() - t0;
  for (int64_t i = 0; i < B * L; i++) seq[i] = pad;
  for (int64_t b = 0; b < B; b++) {
    seq[b * L] = o->decoder_start_token_id;
    score[b] = NAN;
  }
  if (n > 1) return beam(ws, m, o, B, pad, seq, len, score);
  return greedy(ws, m, o, B, pad, seq, len);
}

dq_status dq_generate(dq_model *m, dq_generate_workspace *ws, const dq_tensor *input_ids,
                      const dq_tensor *attention_mask, const dq_generate_options *opts, dq_tensor *sequences,
                      dq_tensor *lengths, dq_tensor *scores) {
  const char *op = "dq_generate";
  if (!m || !opts || !sequences || !lengths) return dq_fail(DQ_ERR_ARGUMENT, "%s: NULL argument", op);
  MODEL_TRY(dq_check_defined(op, "input_ids", input_ids));
  if (input_ids->ndim != 2 || input_ids->shape[0] < 1 || input_ids->shape[1] < 1)
    return dq_fail(DQ_ERR_SHAPE, "%s: input_ids is %s; expected [batch, length] with both at least 1", op,
                   dq_desc(input_ids));
  MODEL_TRY(check_options(m, opts));
  dq_generate_workspace *own = NULL;
  if (!ws) {
    MODEL_TRY(dq_generate_workspace_new(&own));
    ws = own;
  }
  int64_t B = input_ids->shape[0], L = opts->max_length;
  int64_t *seq = malloc((size_t)(B * L) * sizeof *seq), *len = malloc((size_t)B * sizeof *len);
  float *score = malloc((size_t)B * sizeof *score);
  dq_status st = seq && len && score ? DQ_OK : dq_fail(DQ_ERR_MEMORY, "%s: out of host memory", op);
  int training = m->training;
  memset(&ws->stats, 0, sizeof ws->stats);
  ws->stats.batch = (int32_t)B;
  ws->stats.beams = opts->do_sample ? 1 : opts->num_beams;
  if (!st) st = dq_model_set_training(m, 0);
  if (!st) st = generate(m, ws, input_ids, attention_mask, opts, seq, len, score);
  dq_status st2 = dq_model_set_training(m, training);
  if (!st) st = st2;
  if (!st) st = write_results(op, B, L, seq, len, score, sequences, lengths, scores);
  free(seq);
  free(len);
  free(score);
  dq_generate_workspace_free(own);
  return st;
}
