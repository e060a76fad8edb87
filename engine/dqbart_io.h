/*
 * dqbart_io.h: checkpoints in the Hugging Face layout: safetensors files
 * (single or sharded) and the config.json / generation_config.json of
 * BartForConditionalGeneration and MBartForConditionalGeneration.
 *
 * Included by dqbart.h (and read by the Lua FFI through it): plain
 * declarations only, types from dqbart.h.
 */
#ifndef DQBART_IO_H
#define DQBART_IO_H

/* ---- safetensors: reading -------------------------------------------------
 *
 * dq_safetensors_open takes
 *   - a .safetensors file,
 *   - a model.safetensors.index.json ({"weight_map": {name: shard file}}),
 *   - or a directory holding model.safetensors or, failing that,
 *     model.safetensors.index.json,
 * maps every file privately (copy-on-write), and validates every
 * header before returning: the file is at least 8 bytes, the header length
 * is at most 100,000,000 bytes and lies inside the file, the header is a
 * JSON object, each entry has a string dtype, a shape of non-negative
 * integers and data_offsets [begin, end] inside the data area, end - begin
 * equals the element count times the dtype size, no two byte ranges
 * overlap, no name repeats, and __metadata__ maps strings to strings.
 * Gaps between tensors and trailing bytes are tolerated.
 *
 * dtypes: F32, BF16, F16, I8, I32 and I64 load as the engine dtype of the
 * same name; BOOL loads as i8 (0/1, the same bytes); U8 loads as i32 (a
 * converted copy, since i8 cannot hold 128..255). Other dtypes the format
 * knows (F64, I16, U16, U32, U64, F8_*) can be listed and described but
 * dq_safetensors_tensor refuses them; a dtype the format does not know
 * fails the open.
 *
 * Tensors are zero-copy views of the mapping (a copy only for U8 and for
 * data not aligned to its element size). Writing into a view changes the
 * process's private copy, never the file. A mapping is unmapped when the
 * object is closed and every tensor viewing it has been released, in either
 * order. */

typedef struct dq_safetensors dq_safetensors;

typedef struct dq_safetensors_entry {
  int64_t shape[DQ_MAX_DIMS];
  int32_t ndim;
  int32_t dtype;          /* engine dtype dq_safetensors_tensor gives, -1 when it refuses the tensor */
  char file_dtype[16];    /* the dtype as the file names it: "BF16", "U8", ... */
  int64_t data_offset;    /* byte offset of the first element in its file */
  int64_t bytes;
  const char *path;       /* the file holding the tensor (its shard); valid until close */
} dq_safetensors_entry;

DQ_API dq_status dq_safetensors_open(dq_safetensors **out, const char *path);
/* Drops the object's hold on its mappings (tensors keep theirs). NULL is fine. */
DQ_API void dq_safetensors_close(dq_safetensors *st);
DQ_API int64_t dq_safetensors_count(const dq_safetensors *st);
/* Names sorted bytewise (as safetensors' keys()); NULL when index is out of range. */
DQ_API const char *dq_safetensors_name(const dq_safetensors *st, int64_t index);
DQ_API int dq_safetensors_contains(const dq_safetensors *st, const char *name);
/* Fails (DQ_ERR_SHAPE) for a tensor of more than DQ_MAX_DIMS dims. */
DQ_API dq_status dq_safetensors_info(const dq_safetensors *st, const char *name, dq_safetensors_entry *info);
/* With an undefined `out`: out becomes a view of the file (see above).
 * With a defined `out` of the same shape: the values are copied into it,
 * converting dtype and moving to its device (how a checkpoint is loaded
 * into a model's parameter buffer). */
DQ_API dq_status dq_safetensors_tensor(dq_safetensors *st, const char *name, dq_tensor *out);
/* __metadata__ entries in file order (for a sharded checkpoint, those of
 * every shard, the first occurrence of a key winning). */
DQ_API int64_t dq_safetensors_metadata_count(const dq_safetensors *st);
DQ_API const char *dq_safetensors_metadata_key(const dq_safetensors *st, int64_t index);
DQ_API const char *dq_safetensors_metadata_value(const dq_safetensors *st, int64_t index);
/* The value for `key`, or NULL. */
DQ_API const char *dq_safetensors_metadata_get(const dq_safetensors *st, const char *key);
DQ_API int64_t dq_safetensors_file_count(const dq_safetensors *st);

/* ---- safetensors: writing --------------------------------------------------
 *
 * dq_safetensors_save writes `count` named tensors (any device; copied to
 * the host one at a time) and optional string metadata to `path` exactly as
 * the safetensors library lays them out: tensors sorted by descending dtype
 * (I64, F32, I32, BF16, F16, I8) then by name, packed without gaps, the
 * header compact JSON with "__metadata__" first (its keys sorted), padded
 * with spaces to a multiple of 8 bytes. For the same tensors and at most
 * one metadata key the bytes equal safetensors.numpy/torch.save_file's
 * (with several keys the library's own order is random).
 *
 * The file is written to a temporary file in the same directory, flushed
 * with fsync and renamed over `path`; on any failure the temporary file is
 * removed and an existing `path` is untouched. */
DQ_API dq_status dq_safetensors_save(const char *path, int64_t count, const char *const *names,
                                     const dq_tensor *const *tensors, int64_t metadata_count,
                                     const char *const *metadata_keys, const char *const *metadata_values);

/* Save into directory `dir` (created when missing) as transformers does:
 * model.safetensors when everything fits in max_shard_bytes (or when
 * max_shard_bytes <= 0), else model-0000i-of-0000n.safetensors shards
 * (filled in the given order, a tensor larger than the limit alone in its
 * shard) plus model.safetensors.index.json. All files are written and
 * synced under temporary names first; the index is renamed last. Files of
 * an earlier save that the new layout does not use (model.safetensors,
 * the index, other model-*-of-*.safetensors) are removed afterwards. */
DQ_API dq_status dq_safetensors_save_checkpoint(const char *dir, int64_t count, const char *const *names,
                                                const dq_tensor *const *tensors, int64_t metadata_count,
                                                const char *const *metadata_keys,
                                                const char *const *metadata_values, int64_t max_shard_bytes);

/* ---- BART / mBART configuration --------------------------------------------
 *
 * dq_bart_config_load reads <dir>/config.json (dir may also be the path of
 * a config.json) the way transformers 5 does: model_type "bart" or "mbart";
 * a key that is absent takes the default of transformers' BartConfig /
 * MBartConfig; a key of the wrong type, a value out of range or heads that
 * do not divide d_model is an error naming the file and the key.
 *
 * Layout: bart is post-LN, mbart pre-LN with a final layer_norm after the
 * last encoder and decoder layer; that is what transformers builds from
 * model_type alone. Old configs carry normalize_before and
 * add_final_layer_norm: they are read, and a value that contradicts the
 * model_type is refused (transformers would ignore it and build the other
 * layout). layer_norm_eps is 1e-5, the value transformers hardcodes.
 *
 * Generation defaults follow transformers' precedence: when
 * generation_config.json exists beside config.json, it alone supplies
 * them; otherwise config.json's keys do. Anything still unset takes
 * transformers' global default (num_beams 1, length_penalty 1.0,
 * min_length 0, max_length 20, no_repeat_ngram_size 0, early_stopping
 * false; token ids null). */

enum dq_activation {
  DQ_ACT_GELU = 0, /* exact erf form */
  DQ_ACT_RELU = 1
};

enum dq_early_stopping {
  DQ_EARLY_STOPPING_FALSE = 0,
  DQ_EARLY_STOPPING_TRUE = 1,
  DQ_EARLY_STOPPING_NEVER = 2
};

/* Token ids are -1 where the file has null. */
typedef struct dq_generation_config {
  int32_t num_beams;
  int32_t min_length;
  int32_t max_length;
  int32_t no_repeat_ngram_size;
  int32_t early_stopping; /* dq_early_stopping */
  int32_t from_generation_config; /* 1 when generation_config.json supplied these */
  double length_penalty;
  int64_t bos_token_id;
  int64_t eos_token_id;
  int64_t pad_token_id;
  int64_t decoder_start_token_id;
  int64_t forced_bos_token_id;
  int64_t forced_eos_token_id;
} dq_generation_config;

typedef struct dq_bart_config {
  char model_type[16]; /* "bart" or "mbart" */
  int32_t vocab_size;
  int32_t d_model;
  int32_t encoder_layers;
  int32_t decoder_layers;
  int32_t encoder_attention_heads;
  int32_t decoder_attention_heads;
  int32_t encoder_ffn_dim;
  int32_t decoder_ffn_dim;
  int32_t max_position_embeddings;
  int32_t activation;           /* dq_activation */
  int32_t scale_embedding;      /* embeddings times sqrt(d_model) */
  int32_t normalize_before;     /* pre-LN (mbart) */
  int32_t add_final_layer_norm; /* final layer_norm in encoder and decoder (mbart) */
  int32_t tie_word_embeddings;
  int32_t use_cache;
  double dropout;
  double attention_dropout;
  double activation_dropout;
  double classifier_dropout;
  double encoder_layerdrop;
  double decoder_layerdrop;
  double init_std;
  double layer_norm_eps;
  int64_t pad_token_id;
  int64_t bos_token_id;
  int64_t eos_token_id;
  int64_t decoder_start_token_id;
  int64_t forced_eos_token_id;
  dq_generation_config generation;
} dq_bart_config;

/* The transformers defaults of model_type ("bart" or "mbart"). */
DQ_API dq_status dq_bart_config_defaults(dq_bart_config *cfg, const char *model_type);
DQ_API dq_status dq_bart_config_load(dq_bart_config *cfg, const char *dir);
/* The checks load applies; `source` names the configuration in messages. */
DQ_API dq_status dq_bart_config_validate(const dq_bart_config *cfg, const char *source);
/* Write <dir>/config.json and <dir>/generation_config.json (dir created
 * when missing) with the keys and formatting transformers 5.24
 * save_pretrained uses (sorted keys, indent 2), each file atomically.
 * generation_config.json holds the generation values that differ from the
 * global defaults and the non-null token ids. */
DQ_API dq_status dq_bart_config_save(const dq_bart_config *cfg, const char *dir);
DQ_API const char *dq_activation_name(int activation);

#endif
