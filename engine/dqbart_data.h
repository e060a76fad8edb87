/*
 * dqbart_data.h: the engine side of the data pipeline (lib/dqbart/data.lua
 * drives it): content hashes for cache keys, the per-epoch batch plan
 * (shuffle, length buckets, token budgets), padding a batch into the
 * model's input tensors, and the binary cache of tokenized examples.
 *
 * Tokenized examples are stored flat, one pair of tensors per side (source,
 * target): `ids` (i32 [total]) holds every sequence back to back and
 * `offsets` (i64 [n + 1], offsets[0] = 0, non-decreasing, offsets[n] =
 * total) says where each starts: example i is ids[offsets[i] .. offsets[i+1]).
 * Every tensor here lives on the CPU. Example indices are 0-based.
 */
#ifndef DQBART_DATA_H
#define DQBART_DATA_H

/* How decoder inputs come from labels. */
enum dq_data_shift {
  /* BART: [decoder_start_token_id, l1, ..., l(L-1)]. */
  DQ_DATA_SHIFT_START = 0,
  /* mBART: [lL, l1, ..., l(L-1)]: the last label (the target language code)
   * wraps around to the front, as transformers' mbart shift_tokens_right. */
  DQ_DATA_SHIFT_WRAP = 1
};

/* The value of padded label positions (ignored by the loss, as in
 * transformers). */
enum { DQ_DATA_IGNORE_INDEX = -100 };

/* ---- hashes (XXH64) ----------------------------------------------------- */

/* XXH64 of `bytes` bytes with `seed` (bit-identical to the reference xxhash). */
DQ_API uint64_t dq_data_hash(const void *data, int64_t bytes, uint64_t seed);
/* XXH64 of a file's contents, read in blocks. */
DQ_API dq_status dq_data_hash_file(const char *path, uint64_t seed, uint64_t *out);

/* ---- the batch plan of one epoch ---------------------------------------- */

/* Orders the n examples (n = src_offsets.numel - 1) into batches.
 *  - shuffle 1: the examples are shuffled with Philox keyed by (seed, epoch),
 *    and so is the order of the batches at the end.
 *  - chunk_size > 0: the (shuffled) order is cut into chunks of chunk_size
 *    examples and each chunk is sorted by length (source length descending,
 *    then target length descending, ties in chunk order) before it is cut
 *    into batches, so a batch holds examples of similar lengths.
 *    chunk_size <= 0 keeps the order as it is.
 *  - a batch takes examples in that order while it has fewer than
 *    batch_size examples (batch_size <= 0: no limit) and, when max_tokens >
 *    0, while count * max(longest source, longest target) <= max_tokens,
 *    i.e. neither padded tensor of the batch exceeds the budget.
 * tgt_offsets may be NULL (source only). Outputs: order (i64 [n], example
 * indices in batch order; allocated when undefined), batch_starts (i64
 * [n + 1]; batch k is order[batch_starts[k] .. batch_starts[k+1]),
 * batch_starts[num_batches] = n and the entries after it are 0) and *num_batches. The plan depends on
 * nothing but the arguments (single-threaded), so a resumed run and a run
 * with another thread count see the same batches. */
DQ_API dq_status dq_data_plan(dq_tensor *order, dq_tensor *batch_starts, int64_t *num_batches,
                              const dq_tensor *src_offsets, const dq_tensor *tgt_offsets,
                              int64_t batch_size, int64_t max_tokens, int shuffle,
                              int64_t chunk_size, uint64_t seed, uint64_t epoch);

/* ---- one padded batch ----------------------------------------------------- */

/* Pads the examples listed in `examples` (i64 [B], 0-based) into
 *   input_ids [B, S] (pad_id after the ids), attention_mask [B, S] (1 on ids),
 *   labels [B, T] (target ids, DQ_DATA_IGNORE_INDEX after them),
 *   decoder_input_ids [B, T]: exactly transformers' shift_tokens_right of
 *     the padded labels: the first position as `shift` says, then the
 *     labels (the last one included when the row has room), then pad_id,
 *   decoder_attention_mask [B, T] (1 where labels are real; transformers
 *     passes none and relies on the causal mask, which gives the same
 *     values at every position the loss looks at),
 * all i64 on the CPU. S and T are the longest source and target in the
 * batch rounded up to a multiple of pad_multiple (<= 1: no rounding); an
 * output that is already allocated keeps its shape [B, S'] (S' must fit the
 * batch), which pads to a fixed shape. With tgt_ids NULL only input_ids and
 * attention_mask are written (the decoder outputs may be NULL). An empty
 * target gives an all-padding row (labels all ignored). */
DQ_API dq_status dq_data_pack(dq_tensor *input_ids, dq_tensor *attention_mask,
                              dq_tensor *decoder_input_ids, dq_tensor *decoder_attention_mask,
                              dq_tensor *labels, const dq_tensor *src_ids,
                              const dq_tensor *src_offsets, const dq_tensor *tgt_ids,
                              const dq_tensor *tgt_offsets, const dq_tensor *examples,
                              int64_t pad_id, int64_t decoder_start_id, int shift,
                              int64_t pad_multiple);

/* ---- the cache file of tokenized examples ------------------------------------ */

/* Writes both sides' ids and offsets to `path` (through a temporary file in
 * the same directory and a rename, so readers never see a partial file)
 * with `key` (what the cache was built from) and a checksum of the
 * contents. */
DQ_API dq_status dq_data_cache_save(const char *path, uint64_t key, const dq_tensor *src_ids,
                                    const dq_tensor *src_offsets, const dq_tensor *tgt_ids,
                                    const dq_tensor *tgt_offsets);
/* Reads a cache written by dq_data_cache_save into four undefined tensors.
 * Fails with DQ_ERR_IO when the file cannot be opened or read, and with
 * DQ_ERR_FORMAT when it is not a cache, was built for another key, is
 * truncated or its checksum does not match (then nothing is allocated). */
DQ_API dq_status dq_data_cache_load(const char *path, uint64_t key, dq_tensor *src_ids,
                                    dq_tensor *src_offsets, dq_tensor *tgt_ids,
                                    dq_tensor *tgt_offsets);

#endif /* DQBART_DATA_H */
