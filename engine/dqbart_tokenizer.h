/*
 * dqbart_tokenizer.h: text to token ids and back, with the results of
 * Hugging Face's `tokenizers` library (the backend of transformers' fast
 * tokenizers), and a byte-level BPE trainer.
 *
 * Supported files (a directory, or a tokenizer.json path):
 *  - tokenizer.json with model "BPE" or "Unigram"; normalizers NFC, NFD,
 *    NFKC, NFKD, Lowercase, Strip, StripAccents, Replace (String patterns,
 *    and Regex patterns made of literal characters, \s, quantifiers, \A, \z
 *    and top-level |), Prepend, Precompiled (SentencePiece charsmaps) and
 *    Sequence of these; pre-tokenizers ByteLevel, Metaspace and Sequence
 *    of one of them; post-processors RobertaProcessing, BertProcessing,
 *    TemplateProcessing, ByteLevel and Sequence; decoders ByteLevel,
 *    Metaspace, Replace (String), ByteFallback, Fuse, Strip and Sequence.
 *    Anything else is refused at load time with a message naming it.
 *  - vocab.json + merges.txt (GPT-2 / RoBERTa / BART): byte-level BPE with
 *    BART's special tokens (<s> <pad> </s> <unk> <mask>, <mask> stripping
 *    the space on its left), flags from tokenizer_config.json when present,
 *    `<s> X </s>` wrapping.
 * tokenizer_config.json / special_tokens_map.json, when present beside the
 * files, name the roles (bos, eos, pad, unk, mask); else the names above.
 *
 * Text is UTF-8. Invalid UTF-8 in a text is read as U+FFFD for each
 * maximal invalid sequence (as Python's errors="replace" would).
 * A tokenizer is immutable after loading (except dq_tokenizer_set_template)
 * and may be used from several threads at once.
 *
 * Known differences from the library (spec/tokenizer_spec.lua checks the
 * rest on spec/fixtures/tokenizers/):
 *  - Unicode data is utf8proc's (Unicode 15.0 for Debian 12's 2.8): code
 *    points assigned later (about 5000 in Unicode 15.1/16.0, e.g. U+1C89,
 *    U+A7CB) are "other" to the GPT-2 pattern and have no normalization or
 *    grapheme rules here, where the library's newer tables may know them.
 *  - single_word added tokens approximate Rust's \w by letters, marks,
 *    digits, connector punctuation and joiners (Other_Alphabetic symbols
 *    such as circled letters are not words here).
 *  - Metaspace prepend_scheme "first" needs to know whether the text's
 *    first character survived normalization; that is tracked exactly
 *    through Strip, Replace, Precompiled, Prepend, Lowercase and
 *    StripAccents, approximately through NFC/NFD/NFKC/NFKD.
 *  - truncation and padding in tokenizer.json are ignored; decode does not
 *    apply transformers' clean_up_tokenization_spaces (off for BART/mBART
 *    in transformers 5).
 *  - bare vocab.json + merges.txt (no tokenizer_config.json) give <mask>
 *    lstrip, as BART's hub files and transformers 4 do; transformers 5
 *    alone would not strip.
 */
#ifndef DQBART_TOKENIZER_H
#define DQBART_TOKENIZER_H

typedef struct dq_tokenizer dq_tokenizer;

/* Flags of the encode functions. */
enum dq_tokenize_flags {
  /* Add the post-processor's special tokens (BART: <s> X </s>; mBART:
   * X </s> lang_code). */
  DQ_TOKENIZE_SPECIAL = 1
};

/* Load from a directory holding tokenizer.json (preferred) or vocab.json +
 * merges.txt, or from a tokenizer.json path. */
DQ_API dq_status dq_tokenizer_load(const char *path, dq_tokenizer **out);
DQ_API void dq_tokenizer_free(dq_tokenizer *tok);

/* 1 + the largest id of the vocabulary (added tokens included). */
DQ_API int32_t dq_tokenizer_vocab_size(const dq_tokenizer *tok);
/* The id of a role: "pad", "bos", "eos", "unk", "mask"; -1 when absent. */
DQ_API int32_t dq_tokenizer_role_id(const dq_tokenizer *tok, const char *role);
/* The id of a token string (added tokens first, then the model's vocab),
 * -1 when absent. */
DQ_API int32_t dq_tokenizer_token_to_id(const dq_tokenizer *tok, const char *token, int64_t len);
/* The token string of an id (not NUL-terminated; *len gets its length), or
 * NULL when the id has none. The string lives as long as the tokenizer. */
DQ_API const char *dq_tokenizer_id_to_token(const dq_tokenizer *tok, int32_t id, int64_t *len);
/* 1 when the id is a special added token (skipped by decode with
 * skip_special), else 0. */
DQ_API int dq_tokenizer_is_special(const dq_tokenizer *tok, int32_t id);

/* Replace the post-processing template for single texts: items separated
 * by spaces, "$A" (or "$0", "$") for the text, anything else a token of the
 * vocabulary, e.g. "$A </s> ro_RO" (mBART target side) or "<s> $A </s>".
 * An empty string turns post-processing off. Not thread safe: call it
 * before sharing the tokenizer. */
DQ_API dq_status dq_tokenizer_set_template(dq_tokenizer *tok, const char *single);

/* Encode one text of `len` bytes. *ids is the caller's buffer of `capacity`
 * entries; *count gets the number of ids. When capacity is too small
 * nothing fails: *count says how many are needed and only `capacity` ids
 * are written, so call again with a larger buffer. */
DQ_API dq_status dq_tokenizer_encode(const dq_tokenizer *tok, const char *text, int64_t len, int flags,
                                     int32_t *ids, int64_t capacity, int64_t *count);

/* Encode n texts at once on all cores (OpenMP). The texts lie back to back
 * in `data`: text i is data[text_offsets[i] .. text_offsets[i+1]) (n + 1
 * non-decreasing offsets, text_offsets[0] may be > 0). Results, in the
 * layout of dqbart_data.h (every sequence back to back):
 *   ids     i32 [total] on the CPU
 *   offsets i64 [n + 1]: sequence i is ids[offsets[i] .. offsets[i+1])
 * Both outputs must be undefined (they are allocated here). This is the
 * entry point for data loaders: one call per chunk of lines, no per-line
 * FFI cost. */
DQ_API dq_status dq_tokenizer_encode_batch(const dq_tokenizer *tok, const char *data, const int64_t *text_offsets,
                                           int64_t n, int flags, dq_tensor *ids, dq_tensor *offsets);

/* Decode ids to text as `tokenizers`' decode does (skip_special 1: drop
 * special added tokens first). Ids without a token are dropped, as the
 * library does. *text is a new NUL-terminated string of *len bytes; free it
 * with dq_tokenizer_free_text. */
DQ_API dq_status dq_tokenizer_decode(const dq_tokenizer *tok, const int32_t *ids, int64_t n, int skip_special,
                                     char **text, int64_t *len);
DQ_API void dq_tokenizer_free_text(char *text);

/* The class of a code point in GPT-2's pre-tokenization pattern: 0 \s
 * (White_Space), 1 \p{L}, 2 \p{N}, 3 anything else (utf8proc's Unicode
 * data). For tests and tools. */
DQ_API int dq_gpt2_char_class(int32_t cp);

/* ---- byte-level BPE training -------------------------------------------- */

/* The settings of `tokenizers`' BpeTrainer as ByteLevelBPETokenizer uses it:
 * ByteLevel pre-tokenization (no prefix space), the 256 byte characters as
 * the initial alphabet, special tokens first in the vocabulary. The merge
 * list is the library's, merge for merge (same tie-breaking). */
typedef struct dq_bpe_train_config {
  int64_t vocab_size;    /* stop when the vocabulary has this many tokens */
  int64_t min_frequency; /* stop when the best pair occurs fewer times */
  const char *const *special_tokens;
  int32_t n_special_tokens;
  int32_t reserved;
} dq_bpe_train_config;

/* Train on files (read as `tokenizers` does: line by line, each line with
 * its newline) and/or on texts given like dq_tokenizer_encode_batch's
 * (n_texts may be 0, data NULL). Writes vocab.json, merges.txt and
 * tokenizer.json (RobertaProcessing when <s> and </s> are special tokens,
 * <mask> with lstrip) into out_dir, which is created if missing; each file is
 * written to a temporary name and renamed. */
DQ_API dq_status dq_bpe_train(const dq_bpe_train_config *config, const char *const *files, int32_t n_files,
                              const char *data, const int64_t *text_offsets, int64_t n_texts,
                              const char *out_dir);

#endif
