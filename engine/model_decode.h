/*
 * model_decode.h: incremental decoding of a BART / mBART model, one token
 * per step for every row of a batch (the rows are sources times beams), as
 * generation needs it (generate.c drives it; dqbart_generate.h is the API).
 *
 *  - model_decode_prepare sizes the decoder arena for (B sources, `beams`
 *    rows each, S source positions, L = max_length);
 *  - model_decode_encode runs the model's own encoder forward (eval mode)
 *    on the B sources and computes, per decoder layer, the cross-attention
 *    keys and values once ([2, B, H, S, Dh], shared by a source's beams)
 *    and the additive source padding mask;
 *  - model_decode_step feeds one token per row at position d->t and leaves
 *    the f32 logits [rows, V] of the next token in d->logits. Before the
 *    new keys and values are appended, the cached ones are gathered by the
 *    row index `reorder` (beam search's choice of parent beams; NULL keeps
 *    every row), so the caches always hold each row's own history.
 *
 * The step calls the model's seams (bart_linear, bart_attention_core) with
 * the same sites as the full forward, so quantization hooks see every
 * linear input and attention operand; the quantized copies live in this
 * arena. Self-attention of a step is the last query against the t + 1
 * cached keys; cross-attention treats a source's beams as the query
 * positions of one [B, H, beams, S] attention (one batched product against
 * the shared keys, no copies per beam).
 *
 * Caches: per layer a keys and a values buffer [rows, H, t, Dh] (the
 * contiguous layout the attention products take), in a pool of 2 * layers
 * + 1 buffers of capacity [rows, H, L, Dh]: a step writes a layer's
 * gathered-and-appended keys into the spare buffer, which then becomes the
 * layer's, and the old one the spare.
 */
#ifndef DQ_MODEL_DECODE_H
#define DQ_MODEL_DECODE_H

#include "model_internal.h"

typedef struct model_decode {
  /* shape of the current batch */
  int64_t B, beams, rows, S, L;
  int64_t t; /* positions cached so far (the next step's position) */
  int device, dtype, layers;
  int hooks; /* quantized activation copies carved */

  dq_tensor arena; /* bytes */
  int64_t arena_bytes;
  int carved;
  int64_t c_B, c_beams, c_S, c_L; /* what the carving was for */
  int c_hooks, c_layers, c_device, c_dtype;
  int64_t c_D, c_F, c_V, c_H;

  /* caches */
  dq_tensor *pool;   /* [2 * layers + 1] of [rows * H * L * Dh] */
  int *self_k, *self_v; /* pool index per layer */
  int spare;
  dq_tensor *cross_kv; /* [layers] of [2, B, H, S, Dh] */
  dq_tensor enc_mask;  /* [B, 1, 1, S] additive */
  int has_mask;

  /* step scratch ([rows, ...] unless said) */
  dq_tensor x0, x1;       /* [rows, D] hidden state, alternating */
  dq_tensor f_in;         /* [rows, D] LN(x) (pre-LN) */
  dq_tensor norm_in;      /* [rows, D] x + f (post-LN) */
  dq_tensor proj;         /* [rows, 3D] fused projection */
  dq_tensor heads;        /* [3, rows, D] q, k, v */
  dq_tensor qh;           /* [rows, D] cross query in [B, H, beams, Dh] */
  dq_tensor ctxh;         /* [rows, D] attention output in head layout */
  dq_tensor ctx;          /* [rows, D] */
  dq_tensor fout;         /* [rows, D] */
  dq_tensor f1, act;      /* [rows, F] */
  dq_tensor probs;        /* attention capacity: max(rows * H * L, rows * H * S) */
  dq_tensor attn1, attn2; /* the same, standing in for the model's scratch */
  dq_tensor emb;          /* [rows, D] */
  dq_tensor logits;       /* [rows, V] f32 */
  dq_tensor kvproj;       /* [B * S, 2D] cross keys / values before the head permute */
  /* quantized copies (hooks) */
  dq_tensor q_in, q_ctx, q_act, q_in2;
  dq_tensor query_scaled, q_query, q_key, q_value, q_probs;
} model_decode;

/* Carve (growing the arena when needed) for the batch shape and the
 * model's current hooks; clears the caches (t = 0). */
dq_status model_decode_prepare(dq_model *m, model_decode *d, int64_t B, int64_t beams, int64_t S, int64_t L);
/* Encoder forward, cross keys / values and the source mask for the
 * prepared shape. input_ids [B, S], attention_mask [B, S] or NULL. */
dq_status model_decode_encode(dq_model *m, model_decode *d, const dq_tensor *input_ids,
                              const dq_tensor *attention_mask);
/* One step: tokens [rows] (i32, on the model's device), reorder [rows]
 * (i32 row indices, on the model's device) or NULL. */
dq_status model_decode_step(dq_model *m, model_decode *d, const dq_tensor *tokens, const dq_tensor *reorder);
void model_decode_free(model_decode *d);

/* out [rows, H, t + 1, Dh] = (cache [rows, H, t, Dh] gathered by rows
 * `index` (NULL: identity)) with fresh [rows, H, Dh] appended at position
 * t. Same dtype and device for all; index i32 on that device. */
dq_status decode_kv_append(dq_tensor *out, const dq_tensor *cache, const dq_tensor *fresh, const dq_tensor *index,
                           int64_t rows, int64_t heads, int64_t t, int64_t head_dim);

#endif
