/*
 * dqbart_model_quant.h: a BART / mBART model (dqbart_model.h) run as a
 * DQ-BART student under a quantization plan (DQBART.md section 2).
 *
 * A plan has three roles, each a quantizer of dqbart_quant.h or off:
 *  - weight: the linear weights of the encoder and decoder layers (q, k, v
 *    and out projections of self- and cross-attention, fc1, fc2), each
 *    weight tensor on its own (q, k and v have their own statistics even
 *    though the model stores them as one [3D, D] block);
 *  - embedding: the shared token embedding as the encoder and decoder
 *    inputs read it (per row by default);
 *  - activation: the input of every quantized linear, and in attention the
 *    scaled query and the key (before QK^T), the probabilities after dropout
 *    and the values (before PV).
 * Never quantized: positional embeddings, LayerNorms, biases,
 * final_logits_bias, and the LM head, which reads the latent (full
 * precision) shared embedding and an unquantized input.
 *
 * The reference (W-E-A bits, clip 2.5): weights TWN at 2 bits else Sym(W),
 * per tensor; embedding TWN at 2 bits else Sym(E), per row; activations
 * Sym(A) per tensor. dq_model_quant_plan_init fills exactly that.
 *
 * Latent and quantized weights. The parameter buffer (dq_model_param,
 * dq_model_params) keeps the full-precision latent weights the optimizer
 * updates; the forward reads a working copy in which the planned weights are
 * replaced by their quantized values (bf16 on CUDA). That copy is computed
 * once, from the latent weights, and reused by every forward until the
 * latent weights may have changed:
 *  - dq_model_quantize_weights(m) computes it now. A training loop calls it
 *    once per step (after the optimizer step, or before the step's first
 *    forward); once it has been called under the current plan, the caller
 *    owns that schedule, so the micro-batches of one step share one
 *    quantization;
 *  - otherwise (and in addition) a forward recomputes it when the latent
 *    weights may have changed since: after dq_model_set_quant,
 *    dq_model_params_changed, parameter views handed out (dq_model_param,
 *    dq_model_params), a mode switch (dq_model_set_training), and, until
 *    the caller took over the schedule as above, after every
 *    dq_model_backward (an optimizer step is expected after a backward).
 * Nothing else ever requantizes a weight: no quantization per use.
 *
 * Gradients (dq_model_backward) are gradients of the latent weights, by
 * the straight-through estimator with clipping: the gradient of a quantized
 * weight passes where -clip < w < clip (w the latent value) and is 0
 * elsewhere; likewise an activation's gradient passes where -clip < x <
 * clip. The embedding's two lookups (encoder and decoder input) read one
 * quantized table and their gradient reaches the latent embedding through
 * that estimator, while the LM head's gradient reaches it unmasked. The
 * mask applies to the whole accumulated gradient of a quantized weight, so
 * micro-batches accumulate correctly as long as the latent weights do not
 * change between them.
 */
#ifndef DQBART_MODEL_QUANT_H
#define DQBART_MODEL_QUANT_H

/* One role's quantizer. bits 32: the role stays in full precision (method,
 * granularity and clip are then ignored). Otherwise bits as the method
 * allows (dqbart_quant.h: SYM 2..16, TWN 2, BWN 1, ASYM 1..16, AUTO 1..16
 * choosing BWN / TWN / SYM), granularity per tensor or per row (a weight's
 * output channels, the embedding's tokens, an activation's last dim), clip
 * > 0 (INFINITY: no clipping). */
typedef struct dq_quant_role {
  int32_t bits;
  int32_t method;      /* enum dq_quant_method */
  int32_t granularity; /* DQ_QUANT_PER_TENSOR or DQ_QUANT_PER_ROW */
  float clip;
} dq_quant_role;

/* What a layer quantizes, as flags. A linear flag quantizes that linear's
 * weight (when the weight role is on) and its input (when the activation
 * role is on); an attention flag quantizes that operand (activation role).
 * q, k and v of self-attention read one input through one GEMM, and so do k
 * and v of cross-attention: with the activation role on, the flags of such
 * a group must agree. Encoder layers take no cross-attention flags. */
enum dq_quant_layer_flags {
  DQ_QL_SELF_Q = 1,
  DQ_QL_SELF_K = 2,
  DQ_QL_SELF_V = 4,
  DQ_QL_SELF_OUT = 8,
  DQ_QL_CROSS_Q = 16,
  DQ_QL_CROSS_K = 32,
  DQ_QL_CROSS_V = 64,
  DQ_QL_CROSS_OUT = 128,
  DQ_QL_FC1 = 256,
  DQ_QL_FC2 = 512,
  DQ_QL_SELF_QUERY = 1024,   /* scaled query, before QK^T */
  DQ_QL_SELF_KEY = 2048,
  DQ_QL_SELF_PROBS = 4096,   /* after dropout, before PV */
  DQ_QL_SELF_VALUE = 8192,
  DQ_QL_CROSS_QUERY = 16384,
  DQ_QL_CROSS_KEY = 32768,
  DQ_QL_CROSS_PROBS = 65536,
  DQ_QL_CROSS_VALUE = 131072,
  DQ_QL_ENCODER_ALL = 16143, /* every flag an encoder layer has */
  DQ_QL_DECODER_ALL = 262143 /* every flag */
};

typedef struct dq_model_quant_plan {
  dq_quant_role weight;
  dq_quant_role embedding;
  dq_quant_role activation;
  /* Flags per layer (num_*_layers entries, which must equal the model's
   * layer counts), or NULL: every layer of the stack quantizes everything
   * (DQ_QL_ENCODER_ALL / DQ_QL_DECODER_ALL). */
  const int32_t *encoder_layers;
  const int32_t *decoder_layers;
  int32_t num_encoder_layers;
  int32_t num_decoder_layers;
} dq_model_quant_plan;

/* The reference plan for W-E-A bits (each 1..16, or 32 for off) and clip
 * (2.5 in the reference): weight and embedding AUTO (TWN at 2 bits, SYM
 * above), weight per tensor, embedding per row, activation SYM per tensor,
 * every layer flag on. */
DQ_API dq_status dq_model_quant_plan_init(dq_model_quant_plan *plan, int32_t weight_bits, int32_t embedding_bits,
                                          int32_t activation_bits, float clip);

/* Put the model under `plan` (copied; NULL, or a plan that quantizes
 * nothing, returns the model to full precision exactly). The quantized
 * weights are recomputed at the next forward. Fails, naming the role, layer
 * or flag, on an invalid plan, leaving the previous plan in place. */
DQ_API dq_status dq_model_set_quant(dq_model *m, const dq_model_quant_plan *plan);

/* Compute the quantized working weights from the latent weights now (see
 * the header comment: once per training step). A no-op without a plan. */
DQ_API dq_status dq_model_quantize_weights(dq_model *m);

typedef struct dq_model_quant_info {
  int32_t active;                 /* a plan quantizes something */
  int32_t caller_schedules;       /* dq_model_quantize_weights was called under this plan */
  dq_quant_role weight, embedding, activation; /* as set (bits 32: off) */
  int32_t quantized_weights;      /* weight tensors quantized (q, k, v counted apiece) */
  int64_t quantized_weight_numel; /* their elements */
  int64_t quantized_embedding_numel; /* vocab_size * d_model, or 0 */
  int32_t quantized_activations;  /* activation sites quantized per forward */
  int64_t weight_updates;         /* times the quantized weights were computed */
} dq_model_quant_info;

DQ_API dq_status dq_model_get_quant(const dq_model *m, dq_model_quant_info *info);

/* Parameter `index` as the forward reads it (a view of the working copy,
 * f32 or bf16): for a planned weight or the shared embedding, its quantized
 * values as of the last computation; otherwise the parameter itself. Read
 * only: writes do not reach the latent weights. */
DQ_API dq_status dq_model_working_param(dq_model *m, int32_t index, dq_tensor *out);

#endif
