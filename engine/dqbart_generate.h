/*
 * dqbart_generate.h: sequence generation with a BART / mBART model, as
 * transformers' generate (5.x) does it: greedy search, beam search and
 * sampling, with the logits processors summarization and translation use.
 *
 * How it runs: the encoder runs once per batch (the model's own forward in
 * eval mode); the decoder then runs one token per step with the
 * self-attention keys and values of earlier positions cached per layer and
 * the cross-attention keys and values computed once per source. Every
 * linear layer and attention product of a step goes through the same code
 * as the model's forward, so a quantized model decodes with quantized
 * weights and activations (statistics of a per-tensor quantizer are taken
 * over the whole step's batch, as transformers with a cache would).
 *
 * Semantics (transformers 5.24, GenerationMixin):
 *  - max_length counts the decoder start token; generation stops when
 *    every sequence has ended or the length reaches max_length;
 *  - min_length: EOS is banned while the sequence (with its start token)
 *    is shorter than min_length;
 *  - no_repeat_ngram_size n > 0: a token that would complete an n-gram
 *    already present in the sequence (start token included) is banned;
 *  - forced_bos_token_id: the only allowed token at the first step;
 *    forced_eos_token_id: the only allowed token when the length is
 *    max_length - 1;
 *  - greedy (num_beams 1): argmax of the processed logits; a sequence that
 *    produced EOS continues with pad_token_id (not part of the result);
 *  - beam search (num_beams > 1): scores are sums of log-softmax values;
 *    at each step the 2 * num_beams best continuations over all beams of a
 *    source are kept; those ending in EOS (or reaching max_length) among
 *    the first num_beams become finished hypotheses scored
 *    sum / (generated tokens ** length_penalty); the stopping rules of
 *    early_stopping true / false / never are transformers' vectorized
 *    _beam_search (heuristic "best running score over the current length
 *    cannot beat the worst finished one", max_length for "never" with a
 *    positive length penalty). The result is the best finished hypothesis;
 *  - sampling (do_sample, num_beams 1): processors, then temperature, top-k
 *    (0: off), top-p (1: off), then one draw from the softmax by inverse
 *    CDF with a Philox uniform keyed by (seed, step * rows + row), so the
 *    same seed and batch give the same sequences on every run and device.
 *    Beam sampling is not supported.
 *
 * Ties between exactly equal scores are broken towards the lower token id
 * (torch.topk leaves their order unspecified).
 */
#ifndef DQBART_GENERATE_H
#define DQBART_GENERATE_H

/* Token ids are -1 for "none". */
typedef struct dq_generate_options {
  int32_t num_beams;            /* 1: greedy or sampling */
  int32_t do_sample;
  int32_t max_length;           /* >= 2, counting the decoder start token; at most max_position_embeddings + 1 */
  int32_t min_length;
  int32_t no_repeat_ngram_size; /* 0: off */
  int32_t early_stopping;       /* dq_early_stopping (dqbart_io.h) */
  double length_penalty;
  float temperature;            /* sampling: > 0 */
  int32_t top_k;                /* sampling: 0 = off */
  float top_p;                  /* sampling: (0, 1]; 1 = off */
  uint64_t seed;                /* sampling */
  int64_t decoder_start_token_id; /* required */
  int64_t eos_token_id;
  int64_t pad_token_id;         /* -1: eos_token_id */
  int64_t forced_bos_token_id;
  int64_t forced_eos_token_id;
} dq_generate_options;

/* A reusable workspace (the decoder's caches and scratch, grown to the
 * largest batch seen) so that successive batches allocate nothing. */
typedef struct dq_generate_workspace dq_generate_workspace;

/* The model's defaults, as transformers takes them: the generation values
 * of its configuration (generation_config.json when present, else
 * config.json; dqbart_io.h), decoder_start_token_id falling back to
 * bos_token_id, and transformers' sampling defaults (temperature 1,
 * top_k 50, top_p 1, seed 0, do_sample 0). */
DQ_API dq_status dq_generate_defaults(const dq_model *m, dq_generate_options *opts);

DQ_API dq_status dq_generate_workspace_new(dq_generate_workspace **out);
/* Frees the workspace (NULL is fine). Independent of any model. */
DQ_API void dq_generate_workspace_free(dq_generate_workspace *ws);
/* Bytes the workspace holds on its device now. */
DQ_API int64_t dq_generate_workspace_bytes(const dq_generate_workspace *ws);

/* Generate for input_ids [B, S] (i32 or i64, any device) with
 * attention_mask [B, S] (1 keep / 0 pad, any dtype; NULL or undefined: no
 * padding). ws may be NULL (a temporary workspace). Results, on the CPU:
 *  - sequences [B, max_length] i64: the decoder start token, then the
 *    generated tokens (EOS included when it ended the sequence), then
 *    pad_token_id up to max_length (undefined: allocated; defined: checked);
 *  - lengths [B] i64: the number of meaningful tokens of each row;
 *  - scores [B] f32 (NULL to skip): beam search's length-penalized score
 *    of each result; NaN for greedy search and sampling.
 * The model runs in eval mode (its training flag is restored afterwards);
 * its last forward's outputs are overwritten by the encoder's run. */
DQ_API dq_status dq_generate(dq_model *m, dq_generate_workspace *ws, const dq_tensor *input_ids,
                             const dq_tensor *attention_mask, const dq_generate_options *opts,
                             dq_tensor *sequences, dq_tensor *lengths, dq_tensor *scores);

/* Counters of the last dq_generate with this workspace: decoder steps run,
 * and seconds spent in the encoder, in the decoder steps (model) and in
 * the search (selection and bookkeeping). Timings synchronize the device
 * only when timing is 1 (set with dq_generate_workspace_timing). */
typedef struct dq_generate_stats {
  int32_t steps;
  int32_t batch;
  int32_t beams;
  double encoder_seconds;
  double decoder_seconds;
  double search_seconds;
} dq_generate_stats;

DQ_API dq_status dq_generate_workspace_stats(const dq_generate_workspace *ws, dq_generate_stats *stats);
DQ_API dq_status dq_generate_workspace_timing(dq_generate_workspace *ws, int32_t timing);

#endif
