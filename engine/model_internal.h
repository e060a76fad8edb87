/*
 * model_internal.h: what the model's C files share (model_*.c for the
 * object, its buffers, files and student surgery; bart_*.c for the blocks'
 * forward and backward). The public side is dqbart_model.h.
 *
 * Tensors inside the model are "borrowed" views: dq_tensor structs that
 * point into a buffer the model owns (parameter, working, gradient buffer,
 * activation arena) without taking a reference, so carving and passing them
 * costs nothing and they are never released. Only the buffers themselves
 * hold references. Tensors handed to callers are made proper references
 * with dq_tensor_share.
 */
#ifndef DQ_MODEL_INTERNAL_H
#define DQ_MODEL_INTERNAL_H

#include "internal.h"

#include <stdint.h>

#define MODEL_TRY(expr)          \
  do {                           \
    dq_status st_ = (expr);      \
    if (st_) return st_;         \
  } while (0)

enum { MODEL_NAME_CAP = 96 };

/* Additive mask value for padded / future keys: -2^100 is exact in f32 and
 * bf16, far below any score (exp underflows to 0) and, unlike -inf, gives a
 * uniform row where every key is masked, as transformers' finfo.min does. */
#define MODEL_MASK_VALUE (-0x1p100f)

/* ---- parameters ---------------------------------------------------------- */

typedef struct model_param {
  char name[MODEL_NAME_CAP];
  int ndim;
  int64_t shape[2];
  int64_t offset; /* elements from the start of the buffers */
  int trainable;
} model_param;

/* A linear layer y = x W^T + b, or a fused group of projections with the
 * same input whose weights (and biases) lie back to back in the buffers
 * (q, k, v of self-attention; k, v of cross-attention): one GEMM for all. */
typedef struct model_linear {
  int64_t w_off, b_off; /* element offsets of weight [out, in] and bias [out] */
  int64_t out, in;
} model_linear;

typedef struct model_norm {
  int64_t w_off, b_off, dim;
} model_norm;

typedef struct model_layer_w {
  model_linear self_qkv, self_out; /* self_qkv: [3D, D] */
  model_norm self_ln;
  model_linear cross_q, cross_kv, cross_out; /* decoder only; cross_kv: [2D, D] */
  model_norm cross_ln;
  model_linear fc1, fc2;
  model_norm final_ln;
} model_layer_w;

typedef struct model_stack_w {
  int64_t pos_off; /* embed_positions [P + 2, D] */
  model_norm ln_emb;
  model_norm ln_final; /* mBART only */
  model_layer_w *layers;
} model_stack_w;

/* ---- the quantization seam -------------------------------------------------
 * NULL by default (full precision). The quantizer installs hooks; with
 * hooks the arena holds a quantized copy of every activation below, and
 *  - every linear of the encoder and decoder layers reads its input through
 *    activation(site: MODEL_SITE_LINEAR_INPUT) and its weight from the
 *    working buffer, which weights() fills once per training forward (after
 *    the master weights were copied there);
 *  - attention quantizes the scaled query and the key before QK^T and the
 *    probabilities (after dropout) and the values before PV;
 *  - the backward hands each activation's gradient to
 *    activation_backward (the straight-through estimator) with the
 *    unquantized activation.
 * The LM head always reads the unquantized shared embedding and its input
 * unquantized. */
enum model_site_kind {
  MODEL_SITE_LINEAR_INPUT = 0,
  MODEL_SITE_ATTN_QUERY = 1, /* scaled query */
  MODEL_SITE_ATTN_KEY = 2,
  MODEL_SITE_ATTN_PROBS = 3, /* after dropout */
  MODEL_SITE_ATTN_VALUE = 4
};

enum model_linear_id {
  MODEL_LIN_SELF_QKV = 0,
  MODEL_LIN_SELF_OUT = 1,
  MODEL_LIN_CROSS_Q = 2,
  MODEL_LIN_CROSS_KV = 3,
  MODEL_LIN_CROSS_OUT = 4,
  MODEL_LIN_FC1 = 5,
  MODEL_LIN_FC2 = 6,
  MODEL_LIN_COUNT = 7
};

typedef struct model_site {
  int decoder;   /* 0 encoder, 1 decoder */
  int layer;     /* 0-based */
  int kind;      /* model_site_kind */
  int which;     /* LINEAR_INPUT: model_linear_id; ATTN_*: 0 self, 1 cross */
} model_site;

typedef struct dq_model dq_model;

typedef struct model_hooks {
  void *ctx;
  /* Write the quantized x into q (same shape, dtype and device). */
  dq_status (*activation)(void *ctx, const model_site *site, const dq_tensor *x, dq_tensor *q);
  /* grad holds dL/dq; turn it into dL/dx in place (x: the unquantized input). */
  dq_status (*activation_backward)(void *ctx, const model_site *site, dq_tensor *grad, const dq_tensor *x);
  /* Once per training forward, after the master weights were copied into
   * the working buffer: quantize the linear weights and the token embedding
   * there (model_lin_w, model_embed_weight give the views). */
  dq_status (*weights)(void *ctx, dq_model *m);
  /* The gradient of the looked-up embedding rows ([N, D], ids [N]) before
   * it is added into the shared embedding's gradient: the straight-through
   * estimator of a quantized embedding masks it here, leaving the LM head's
   * gradient of the same matrix alone. */
  dq_status (*embedding_grad)(void *ctx, int decoder, dq_tensor *grad, const dq_tensor *ids);
  /* At the end of a backward, after the gradients of the working
   * (quantized) weights were added into the gradient buffer: turn them into
   * gradients of the latent weights (the estimator masks them in place). */
  dq_status (*weights_backward)(void *ctx, dq_model *m);
} model_hooks;

/* ---- activations -------------------------------------------------------------
 * One residual sub-block (self-attention, cross-attention or feed-forward)
 * of a layer. Post-LN (BART): y = LN(x + drop(f(x))); pre-LN (mBART):
 * y = x + drop(f(LN(x))). */
typedef struct model_block_act {
  dq_tensor x;       /* the block input (the previous block's y) */
  dq_tensor f_in;    /* f's input: x (post-LN) or LN(x) (pre-LN) */
  dq_tensor norm_in; /* the LN input: x + drop(f) (post-LN) or x (pre-LN) */
  dq_tensor y;
  dq_tensor mean, rstd; /* f32 [N] */
  uint64_t off_out;     /* dropout offset of f's output */
  /* attention blocks */
  dq_tensor heads;   /* self: [3, B, H, T, Dh] (q, k, v); cross: q [B, H, T, Dh] */
  dq_tensor kv;      /* cross: [2, B, H, S, Dh] */
  dq_tensor probs;   /* [B, H, T, S] after softmax, before dropout */
  dq_tensor ctx;     /* [N, D] the out_proj input */
  uint64_t off_probs;
  /* feed-forward */
  dq_tensor f1;      /* [N, F] fc1 output (before the activation) */
  dq_tensor act;     /* [N, F] after the activation, before dropout */
  uint64_t off_act;
  /* quantized copies (with hooks) */
  dq_tensor q_in, q_in2, q_ctx, q_act; /* linear inputs: f_in (q or qkv), encoder output (kv), ctx, act */
  dq_tensor q_query, q_key, q_probs, q_value, query_scaled;
} model_block_act;

typedef struct model_layer_act {
  model_block_act self, cross, ffn;
} model_layer_act;

typedef struct model_stack_act {
  int64_t len;          /* S or T */
  dq_tensor ids;        /* [B * L] the input's i32 or i64 ids */
  dq_tensor pad;        /* [B * L] 1 keep / 0 pad (activation dtype) */
  dq_tensor mask;       /* additive: encoder [B,1,1,S]; decoder [B,1,T,T] or [1,1,T,T] */
  dq_tensor emb;        /* [B * L, D] tokens * scale + positions: the LN input */
  dq_tensor emb_mean, emb_rstd;
  dq_tensor emb_ln;     /* LN output, before dropout */
  uint64_t off_emb;
  dq_tensor *hidden;    /* [layers + 1] of [B * L, D] (shown as [B, L, D]) */
  dq_tensor final_mean, final_rstd; /* mBART final layer_norm */
  dq_tensor last_out;   /* mBART: the last layer's output (the final LN input) */
  model_layer_act *layers;
  int has_pad;
} model_stack_act;

/* Gradient of an output, injected by losses (own allocation each, since
 * they are requested after the forward that shaped the arena). */
typedef struct model_injection {
  dq_tensor buffer;  /* capacity */
  dq_tensor view;    /* shaped like the output of the last forward */
  int active;
} model_injection;

struct dq_model {
  dq_bart_config cfg;
  int is_mbart;
  int device, dtype;
  int training;
  float p_dropout, p_attention, p_activation; /* from the config unless overridden */
  uint64_t rng_seed, rng_offset;
  char *source_dir;  /* where tokenizer files come from when saving */

  /* parameters */
  model_param *params;
  int num_params;
  int64_t numel, trainable_numel;
  dq_tensor master;  /* f32 [numel] */
  dq_tensor work;    /* activation dtype [numel]: master itself in f32 mode */
  dq_tensor grads;   /* f32 [numel], undefined until first used */
  dq_tensor lm_head_work; /* bf16 mode with weight hooks: unquantized shared */
  int work_is_master;
  int work_dirty;    /* master changed since work was refreshed */
  int64_t shared_off, final_bias_off;
  model_stack_w enc_w, dec_w;

  /* activations */
  dq_tensor arena;   /* bytes */
  int64_t arena_bytes;
  int arena_mode, arena_hooks; /* what the carving was for (model_arena.c) */
  int64_t B, S, T;   /* shape of the last forward */
  int carved;
  int forward_flags;
  int have_forward;  /* outputs of a forward exist */
  int have_train_forward; /* ... from a training forward, so a backward may run */
  model_stack_act enc, dec;
  dq_tensor logits;  /* [B, T, V] */
  dq_tensor causal;  /* [T, T] additive */
  dq_tensor causal_keep; /* [T, T] 1 on and below the diagonal */
  int64_t causal_len;
  void *host_mask;   /* host staging for the causal mask */
  size_t host_mask_cap;
  /* shared scratch */
  dq_tensor s_proj;    /* [Nmax, 3D] fused projection output before the head permute */
  dq_tensor s_attn1, s_attn2; /* [max attention] */
  dq_tensor s_ctxh;    /* [Nmax, D] context in head layout */
  dq_tensor s_fout;    /* [Nmax, D] */
  dq_tensor s_actd;    /* [Nmax, F] activation after dropout */
  dq_tensor s_ste;     /* [Nmax, max(D, F)] with hooks: staged input gradients */
  /* backward scratch */
  dq_tensor g_a, g_b, g_c, g_d; /* [Nmax, D] */
  dq_tensor g_heads;   /* [Nmax, 3D] */
  dq_tensor g_proj;    /* [Nmax, 3D] */
  dq_tensor g_ff;      /* [Nmax, F] */
  dq_tensor g_enc;     /* [B * S, D] gradient of the encoder output */
  dq_tensor g_row;     /* [D] f32: the padding row's gradient, kept aside */

  /* injection buffers per output kind, model_num_outputs(kind) each */
  model_injection *inj[DQ_OUT_NUM_KINDS];

  const model_hooks *hooks;
  struct model_quant *quant; /* the plan behind the hooks (model_quant.c) */
  int weights_by_caller;     /* a backward leaves the working weights alone:
                                the caller recomputes them once per step */
};

/* ---- model.c ------------------------------------------------------------------- */

/* A model for cfg with zeroed parameters; `source` names the configuration
 * in messages. */
dq_status model_create(dq_model **out, const dq_bart_config *cfg, int device, int dtype, const char *source);
/* The parameter name nearest to `name` (for messages). */
const char *model_closest_param(const dq_model *m, const char *name);

/* ---- model_quant.c ------------------------------------------------------------- */

/* Drop the model's quantization plan and its hooks (dq_model_free). */
void model_quant_free(dq_model *m);

/* ---- model_params.c ---------------------------------------------------------- */

/* Lay out the parameters of m->cfg (names, shapes, offsets, the w structs). */
dq_status model_layout(dq_model *m);
/* Allocate master (zeros) and the working buffer for m->device / m->dtype. */
dq_status model_alloc_params(dq_model *m);
/* Copy master -> work when they differ and work is stale (or force). */
dq_status model_refresh_work(dq_model *m, int force);
dq_status model_ensure_grads(dq_model *m);
/* Install (or with NULL remove) quantization hooks; with a weights hook
 * the working buffer becomes separate from the master weights. */
dq_status model_install_hooks(dq_model *m, const model_hooks *hooks);
void model_free_params(dq_model *m);
int model_find_param(const dq_model *m, const char *name);
/* Borrowed views. */
dq_tensor model_view(const dq_tensor *buf, int64_t offset, int ndim, const int64_t *shape);
dq_tensor model_param_view(const dq_model *m, const dq_tensor *buf, int index);
/* The working (forward) weight / bias of a linear, its f32 gradients. */
dq_tensor model_lin_w(const dq_model *m, const model_linear *l);
dq_tensor model_lin_b(const dq_model *m, const model_linear *l);
dq_tensor model_lin_gw(const dq_model *m, const model_linear *l);
dq_tensor model_lin_gb(const dq_model *m, const model_linear *l);
/* The shared embedding as the token lookup reads it (working buffer) and
 * as the LM head reads it (never quantized). */
dq_tensor model_embed_weight(const dq_model *m);
dq_tensor model_lm_head_weight(const dq_model *m);

/* ---- model_forward.c ------------------------------------------------------------ */

/* Make the working weights current before a forward: copied from the master
 * weights (and quantized, with a weights hook) when they may be stale, or
 * always with force. */
dq_status model_prepare_weights(dq_model *m, int force);

/* ---- model_arena.c -------------------------------------------------------------- */

/* Make the arena fit batch (B, S, T) for the current mode, flags and hooks
 * (growing it when needed) and carve every activation view. */
dq_status model_prepare_arena(dq_model *m, int64_t B, int64_t S, int64_t T, int flags);
void model_free_arena(dq_model *m);
/* Check kind/index against the model and the last forward. */
dq_status model_check_output(const dq_model *m, int kind, int index, const char *op);
/* Output `index` of `kind` as transformers shapes it (borrowed view). */
dq_status model_output_view(dq_model *m, int kind, int index, dq_tensor *view);
/* Its injection buffer: allocated (zeroed) on first request, then zeroed by
 * each training forward. */
dq_status model_injection_get(dq_model *m, int kind, int index, dq_tensor *view);
/* At a training forward: reshape and zero every active injection buffer. */
dq_status model_injections_reset(dq_model *m);
int model_num_outputs(const dq_model *m, int kind);

/* ---- bart_linear.c: the seam every linear and attention product passes ---- */

/* y [N, out] = x [N, in] W^T + b. q_x: the arena slot for the quantized
 * input (used only with hooks). */
dq_status bart_linear(dq_model *m, const model_linear *l, const model_site *site, const dq_tensor *x,
                      dq_tensor *q_x, dq_tensor *y);
/* dx = dy W (+ dx when dx_beta is 1), gradients of W and b added; x and q_x
 * as in the forward. dx may be NULL (no input gradient). */
dq_status bart_linear_backward(dq_model *m, const model_linear *l, const model_site *site, const dq_tensor *x,
                               const dq_tensor *q_x, const dq_tensor *dy, dq_tensor *dx, float dx_beta);
/* probs = softmax(scale q k^T + mask); out = dropout(probs) v. */
dq_status bart_attention_core(dq_model *m, model_block_act *a, const model_site *site, const dq_tensor *q,
                              const dq_tensor *k, const dq_tensor *v, const dq_tensor *mask, dq_tensor *out);
/* From dout (gradient of out) and the injected gradient of probs (may be
 * NULL) to dq, dk, dv (written). */
dq_status bart_attention_core_backward(dq_model *m, model_block_act *a, const model_site *site,
                                       const dq_tensor *q, const dq_tensor *k, const dq_tensor *v,
                                       const dq_tensor *dout, const dq_tensor *dprobs_injected, dq_tensor *dq,
                                       dq_tensor *dk, dq_tensor *dv);

/* ---- bart_layers.c ----------------------------------------------------------------- */

dq_status bart_layer_forward(dq_model *m, int decoder, int layer);
/* *cur holds the gradient of the layer output ([N, D] rows); on return
 * *cur holds the gradient of its input, *other was used as scratch (the
 * two pointers swap as the blocks go). */
dq_status bart_layer_backward(dq_model *m, int decoder, int layer, dq_tensor **cur, dq_tensor **other);
/* LayerNorm forward/backward with the model's parameter plumbing. */
dq_status bart_norm(dq_model *m, const model_norm *n, const dq_tensor *x, dq_tensor *y, dq_tensor *mean,
                    dq_tensor *rstd);
dq_status bart_norm_backward(dq_model *m, const model_norm *n, const dq_tensor *dy, const dq_tensor *x,
                             const dq_tensor *mean, const dq_tensor *rstd, dq_tensor *dx);
/* Dropout in place (no-op outside training or with p = 0); the offset is
 * taken from the model's counter and stored in *offset. */
dq_status bart_dropout(dq_model *m, const dq_tensor *x, dq_tensor *out, float p, uint64_t *offset);
dq_status bart_dropout_backward(dq_model *m, const dq_tensor *dy, dq_tensor *dx, float p, uint64_t offset);
int bart_dropout_active(const dq_model *m, float p);

/* ---- bart_embed.c ---------------------------------------------------------------------- */

/* Additive attention masks from the staged keep flags and the causal mask. */
dq_status bart_build_masks(dq_model *m);
dq_status bart_embed_forward(dq_model *m, int decoder);
dq_status bart_embed_backward(dq_model *m, int decoder, dq_tensor *dh0);
dq_status bart_final_norm_forward(dq_model *m, int decoder);
dq_status bart_final_norm_backward(dq_model *m, int decoder, const dq_tensor *dy, dq_tensor *dx);
dq_status bart_lm_head_forward(dq_model *m);
/* dh (written) and the shared embedding's gradient (added) from dlogits. */
dq_status bart_lm_head_backward(dq_model *m, const dq_tensor *dlogits, dq_tensor *dh);

/* Views shaped [rows, cols] / any shape of a contiguous tensor (borrowed). */
static inline dq_tensor model_as(const dq_tensor *t, int ndim, const int64_t *shape) {
  dq_tensor v = *t;
  v.ndim = ndim;
  v.numel = 1;
  for (int i = 0; i < DQ_MAX_DIMS; i++) {
    v.shape[i] = i < ndim ? shape[i] : 0;
    if (i < ndim) v.numel *= shape[i];
  }
  return v;
}

static inline dq_tensor model_as2(const dq_tensor *t, int64_t rows, int64_t cols) {
  int64_t s[2] = {rows, cols};
  return model_as(t, 2, s);
}

/* Element `index` along dim 0 of a contiguous tensor (borrowed). */
static inline dq_tensor model_slice0(const dq_tensor *t, int64_t index) {
  dq_tensor v = *t;
  int64_t inner = t->shape[0] ? t->numel / t->shape[0] : 0;
  v.data = (char *)t->data + index * inner * dq_dtype_size(t->dtype);
  v.ndim = t->ndim - 1;
  for (int i = 0; i < DQ_MAX_DIMS; i++) v.shape[i] = i < v.ndim ? t->shape[i + 1] : 0;
  v.numel = inner;
  return v;
}

#endif
