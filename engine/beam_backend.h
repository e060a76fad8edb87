/*
 * beam_backend.h: the per-device halves of a generation step's work
 * (engine/beam_select.c and engine/model_decode_cache.c on the CPU,
 * kernels/beam_select.cu and kernels/beam_cache.cu on CUDA). generate.c
 * and model_decode_step.c check shapes before calling; pointers in the
 * arguments are device pointers on CUDA.
 */
#ifndef DQ_BEAM_BACKEND_H
#define DQ_BEAM_BACKEND_H

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Candidates kept per source at most (2 * num_beams). */
enum { BEAM_MAX_K = 128 };

/* One step's token selection over logits [rows, V] f32 (rows = batch *
 * beams; changed in place). Per row, in transformers' order:
 *   score = log_softmax(logits) when log_softmax, else the raw logits;
 *   banned tokens (the row's no-repeat-ngram bans, ban_eos) -> -inf;
 *   when forced >= 0 every token but `forced` -> -inf and forced -> 0;
 *   plus row_scores[row] (when not NULL).
 * Then per source the k best (score, beam * V + token) over its beams'
 * V * beams candidates, sorted by score (descending), ties to the lower
 * index, into out_scores / out_index [batch, k]. */
typedef struct beam_select_args {
  int64_t batch, beams, vocab;
  int32_t k;             /* 1 .. BEAM_MAX_K, at most beams * vocab */
  int32_t log_softmax;
  int64_t ban_eos;       /* -1: none */
  int64_t forced;        /* -1: none */
  const float *row_scores;   /* [rows] or NULL */
  const int32_t *ban_start;  /* [rows + 1] offsets into ban_tokens, or NULL (no bans) */
  const int32_t *ban_tokens;
  float *cand_scores;    /* scratch [rows, k] */
  int32_t *cand_index;   /* scratch [rows, k] */
  float *out_scores;     /* [batch, k] */
  int32_t *out_index;    /* [batch, k] */
} beam_select_args;

#define DQ_BEAM_BACKEND_DECLS(P)                                                                           \
  dq_status P##beam_select(dq_tensor *logits, const beam_select_args *a);                                  \
  /* out [rows, H, t + 1, Dh] = cache [rows, H, t, Dh] gathered by index (NULL: identity) with fresh       \
   * [rows, H, Dh] at position t */                                                                        \
  dq_status P##kv_append(dq_tensor *out, const dq_tensor *cache, const dq_tensor *fresh, const int32_t *index, \
                         int64_t rows, int64_t heads, int64_t t, int64_t head_dim);

DQ_BEAM_BACKEND_DECLS(cpu_)
DQ_BEAM_BACKEND_DECLS(cuda_)

#ifdef __cplusplus
}
#endif
#endif
