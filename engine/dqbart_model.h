/*
 * dqbart_model.h: BART and mBART sequence-to-sequence models
 * (BartForConditionalGeneration / MBartForConditionalGeneration of
 * transformers) with hand-written forward and backward. The token
 * cross-entropy is dq_loss_cross_entropy (dqbart_loss.h); quantized
 * students are dqbart_model_quant.h.
 *
 * A model holds
 *  - one parameter buffer (f32 master weights) carved into tensors named as
 *    transformers names them ("model.encoder.layers.0.fc1.weight"); the
 *    tied embedding is the single tensor "model.shared.weight" (also the LM
 *    head) and "final_logits_bias" is a buffer without gradient, laid out
 *    last so that the trainable parameters are the buffer's first
 *    `trainable_numel` elements;
 *  - a gradient buffer with the same layout (allocated on first use);
 *  - in bf16 mode (CUDA) a bf16 working copy of the weights the forward
 *    reads, refreshed from the master weights before a training forward;
 *  - an activation arena sized for the largest batch seen, so a step
 *    allocates nothing once the largest batch has been through.
 *
 * Outputs of a forward (views into the arena, valid until the next forward;
 * fetch them again after each forward, their shapes follow the batch):
 *  - logits [B, T, V];
 *  - encoder hidden states 0..encoder_layers and decoder hidden states
 *    0..decoder_layers [B, S|T, D]: index 0 is the embedding output (after
 *    layernorm_embedding and dropout), index i the output of layer i; for
 *    mBART the last index is after the final layer_norm (transformers'
 *    encoder_hidden_states / decoder_hidden_states);
 *  - attention probabilities per layer (after softmax, before dropout):
 *    encoder [B, H, S, S], decoder self [B, H, T, T], cross [B, H, T, S].
 * In training mode every output exists after a forward. In eval mode the
 * forward keeps nothing for a backward; hidden states and attention maps
 * exist only when requested with the DQ_FORWARD_* flags.
 *
 * Gradients: dq_model_output_grad gives a tensor shaped like an output
 * (an "injection" buffer). In training mode each forward zeroes every
 * injection buffer handed out so far; a loss writes or adds dL/d(output)
 * into them; dq_model_backward propagates all of them at once and adds the
 * parameter gradients into the gradient buffer (dq_model_zero_grad clears
 * it: gradients accumulate across backwards, as micro-batches need).
 *
 * Dropout in training mode draws from Philox keyed by (seed, offset): each
 * dropout site of a forward uses the next offsets, and the model's offset
 * advances past them, so setting the same (seed, offset) before a forward
 * reproduces its masks exactly.
 */
#ifndef DQBART_MODEL_H
#define DQBART_MODEL_H

typedef struct dq_model dq_model;

enum dq_model_output_kind {
  DQ_OUT_LOGITS = 0,
  DQ_OUT_ENCODER_HIDDEN = 1,
  DQ_OUT_DECODER_HIDDEN = 2,
  DQ_OUT_ENCODER_ATTENTION = 3,
  DQ_OUT_DECODER_ATTENTION = 4,
  DQ_OUT_CROSS_ATTENTION = 5,
  DQ_OUT_NUM_KINDS = 6
};

/* Flags of dq_model_forward (eval mode; training mode keeps everything). */
enum dq_forward_flags {
  DQ_FORWARD_HIDDEN_STATES = 1,
  DQ_FORWARD_ATTENTIONS = 2
};

/* What a model is and how it runs (read by the bindings). */
typedef struct dq_model_info {
  int32_t is_mbart;           /* pre-LN with final layer norms */
  int32_t vocab_size;
  int32_t d_model;
  int32_t encoder_layers;
  int32_t decoder_layers;
  int32_t encoder_heads;
  int32_t decoder_heads;
  int32_t encoder_ffn_dim;
  int32_t decoder_ffn_dim;
  int32_t max_position_embeddings;
  int32_t device;
  int32_t dtype;              /* activation dtype: f32, or bf16 on CUDA */
  int32_t training;
  int32_t num_params;         /* named parameter tensors */
  int64_t numel;              /* elements of the parameter buffer */
  int64_t trainable_numel;    /* its leading trainable part */
  int64_t arena_bytes;        /* activation arena now allocated */
  int64_t batch, source_len, target_len; /* shape of the last forward (0 before) */
} dq_model_info;

/* ---- lifetime, files -------------------------------------------------------
 * dir holds config.json (model_type bart or mbart) and model.safetensors or
 * a sharded model.safetensors.index.json. Every tensor the config implies
 * must be present with the config's shape (final_logits_bias may be absent:
 * zeros); the tied copies model.encoder.embed_tokens.weight,
 * model.decoder.embed_tokens.weight and lm_head.weight of older files are
 * accepted (ignored when model.shared.weight is there, else the first of
 * them is the shared embedding); any other tensor is an error, and so is a
 * shape that disagrees with config.json. Files of a BartModel (names
 * without the "model." prefix) load too. F32, BF16 and F16 files load into
 * f32 master weights. dtype: DQ_F32, or DQ_BF16 for bf16 activations on
 * CUDA. */
DQ_API dq_status dq_model_load(dq_model **out, const char *dir, int device, int dtype);
/* A model of the configuration in dir (config.json) with every parameter
 * zero, no weights read: for random initialization and benchmarks. */
DQ_API dq_status dq_model_init(dq_model **out, const char *dir, int device, int dtype);
DQ_API void dq_model_free(dq_model *m);
/* Writes dir with config.json,
 * generation_config.json (when the config has generation values),
 * model.safetensors (f32; only model.shared.weight for the tied
 * embedding) and the tokenizer files of the directory the model came from
 * (vocab.json, merges.txt, tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json, sentencepiece.bpe.model, added_tokens.json).
 * A new directory is written under a temporary name beside it and renamed
 * when complete; in an existing directory each of these files is replaced
 * atomically and other files are left alone. */
DQ_API dq_status dq_model_save(dq_model *m, const char *dir);
/* A student: the teacher's non-layer weights and the teacher layers listed
 * (0-based, in student order) for each stack, on the teacher's device and
 * dtype, in eval mode; its config has the new layer counts. */
DQ_API dq_status dq_model_student(dq_model **out, dq_model *teacher, const int32_t *encoder_layers,
                                  int32_t num_encoder_layers, const int32_t *decoder_layers,
                                  int32_t num_decoder_layers);
DQ_API dq_status dq_model_get_info(const dq_model *m, dq_model_info *info);
/* A copy of the model's configuration (dq_bart_config of dqbart_io.h). */
DQ_API dq_status dq_model_get_config(const dq_model *m, dq_bart_config *cfg);

/* ---- parameters ------------------------------------------------------------
 * Indices run 0 .. num_params-1 in buffer order. Tensors handed out are
 * views (dq_tensor_release them when done); writes through them change the
 * model. */
DQ_API dq_status dq_model_param_name(const dq_model *m, int32_t index, const char **name);
/* Fails naming the closest valid name when `name` is not a parameter. */
DQ_API dq_status dq_model_param_index(const dq_model *m, const char *name, int32_t *index);
DQ_API dq_status dq_model_param(dq_model *m, int32_t index, dq_tensor *out);
/* 1 for weights with a gradient, 0 for final_logits_bias. */
DQ_API dq_status dq_model_param_trainable(const dq_model *m, int32_t index, int32_t *trainable);
/* The gradient of parameter `index` (allocates the gradient buffer, zeroed,
 * on first use). */
DQ_API dq_status dq_model_grad(dq_model *m, int32_t index, dq_tensor *out);
/* The whole parameter / gradient buffer, 1-d f32 (for optimizers). */
DQ_API dq_status dq_model_params(dq_model *m, dq_tensor *out);
DQ_API dq_status dq_model_grads(dq_model *m, dq_tensor *out);
DQ_API dq_status dq_model_zero_grad(dq_model *m);
/* Tell the model its master weights changed outside a training forward
 * (an optimizer step before an eval forward in bf16 mode). Training
 * forwards refresh the working copy anyway. */
DQ_API dq_status dq_model_params_changed(dq_model *m);

/* ---- running ---------------------------------------------------------------- */

DQ_API dq_status dq_model_set_training(dq_model *m, int32_t training);
/* Dropout probabilities (from config.json until set; the saved config
 * keeps its own values). */
DQ_API dq_status dq_model_set_dropout(dq_model *m, float dropout, float attention_dropout, float activation_dropout);
DQ_API dq_status dq_model_set_dropout_rng(dq_model *m, uint64_t seed, uint64_t offset);
DQ_API dq_status dq_model_get_dropout_rng(const dq_model *m, uint64_t *seed, uint64_t *offset);

/* input_ids [B, S] and decoder_input_ids [B, T] (i32 or i64, any device);
 * attention_mask [B, S] and decoder_attention_mask [B, T] (1 keep, 0 pad;
 * any dtype; NULL or undefined: no padding). Ids must lie in
 * [0, vocab_size) (checked when they are on the CPU) and S, T in
 * [1, max_position_embeddings]. */
DQ_API dq_status dq_model_forward(dq_model *m, const dq_tensor *input_ids, const dq_tensor *attention_mask,
                                  const dq_tensor *decoder_input_ids, const dq_tensor *decoder_attention_mask,
                                  int32_t flags);
/* Number of outputs of a kind (1 for logits, layers + 1 for hidden states,
 * layers for attentions). */
DQ_API dq_status dq_model_num_outputs(const dq_model *m, int32_t kind, int32_t *count);
/* Output `index` of `kind` from the last forward, as a view. */
DQ_API dq_status dq_model_output(dq_model *m, int32_t kind, int32_t index, dq_tensor *out);
/* Its injection-gradient buffer (training mode, after a forward; zeroed by
 * each forward). */
DQ_API dq_status dq_model_output_grad(dq_model *m, int32_t kind, int32_t index, dq_tensor *out);
/* Backpropagate the injected gradients of the last training forward into
 * the gradient buffer (added to what it holds). */
DQ_API dq_status dq_model_backward(dq_model *m);

#endif
