/*
 * tokenizer_internal.h: what the tokenizer's C files share (never seen by
 * the bindings): growable buffers, hash maps, UTF-8 helpers, and the parts
 * of a loaded tokenizer (normalizer steps, pre-tokenizer, BPE or unigram
 * model, added tokens, post-processing template, decoder steps).
 *
 * The pipeline is the one of Hugging Face's `tokenizers` library, applied
 * per text:
 *   1. added tokens with normalized = false are cut out of the raw text;
 *   2. every other segment is normalized, then added tokens with
 *      normalized = true are cut out of it;
 *   3. every remaining non-empty segment is pre-tokenized into pieces and
 *      each piece goes through the model (BPE merges or unigram Viterbi);
 *   4. the post-processor wraps the ids with special tokens.
 * Nothing needs offsets, so segments are plain byte strings.
 */
#ifndef DQ_TOKENIZER_INTERNAL_H
#define DQ_TOKENIZER_INTERNAL_H

#include "internal.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* ---- growable buffers ------------------------------------------------------ */

typedef struct tk_buf {
  char *data;
  size_t len, cap;
} tk_buf;

/* All return 0 on success, -1 when memory runs out. */
int tk_buf_reserve(tk_buf *b, size_t extra);
int tk_buf_put(tk_buf *b, const void *p, size_t n);
int tk_buf_putc(tk_buf *b, char c);
/* Append the UTF-8 encoding of a code point. */
int tk_buf_put_cp(tk_buf *b, int32_t cp);
void tk_buf_free(tk_buf *b);

typedef struct tk_ids {
  int32_t *data;
  size_t len, cap;
} tk_ids;

int tk_ids_push(tk_ids *v, int32_t id);
int tk_ids_put(tk_ids *v, const int32_t *p, size_t n);
void tk_ids_free(tk_ids *v);

/* A list of byte ranges into some buffer. */
typedef struct tk_range {
  size_t start, len;
} tk_range;

typedef struct tk_ranges {
  tk_range *data;
  size_t len, cap;
} tk_ranges;

int tk_ranges_push(tk_ranges *v, size_t start, size_t len);
void tk_ranges_free(tk_ranges *v);

/* ---- hashing and maps ---------------------------------------------------------- */

uint64_t tk_hash_bytes(const void *p, size_t n);

/* Byte string -> int32. Keys are copied into the map. */
typedef struct tk_strmap_entry {
  uint64_t hash;
  size_t key_off;
  uint32_t key_len;
  int32_t value;
} tk_strmap_entry;

typedef struct tk_strmap {
  uint32_t *slots; /* entry index + 1; 0 = empty */
  size_t nslots;   /* a power of two */
  tk_strmap_entry *entries;
  size_t count, cap;
  tk_buf keys;
} tk_strmap;

/* The value stored for a key, or NULL when absent. */
int32_t *tk_strmap_get(const tk_strmap *m, const char *key, size_t len);
/* Insert or overwrite. Returns 0, or -1 when memory runs out. */
int tk_strmap_set(tk_strmap *m, const char *key, size_t len, int32_t value);
/* The key of entry i (0 <= i < count), in insertion order. */
static inline const char *tk_strmap_key(const tk_strmap *m, size_t i, size_t *len) {
  *len = m->entries[i].key_len;
  return m->keys.data + m->entries[i].key_off;
}
void tk_strmap_clear(tk_strmap *m);
void tk_strmap_free(tk_strmap *m);

/* uint64 key -> uint64 value (key UINT64_MAX is reserved). */
typedef struct tk_u64map {
  uint64_t *keys;
  uint64_t *values;
  size_t nslots, count;
} tk_u64map;

uint64_t *tk_u64map_get(const tk_u64map *m, uint64_t key);
int tk_u64map_set(tk_u64map *m, uint64_t key, uint64_t value);
void tk_u64map_free(tk_u64map *m);

/* ---- UTF-8 ------------------------------------------------------------------- */

/* Decode the code point at s[0..n) (n >= 1) of valid UTF-8; *len gets its
 * byte length. */
static inline int32_t tk_utf8_next(const char *s, size_t n, size_t *len) {
  const unsigned char *u = (const unsigned char *)s;
  unsigned char c = u[0];
  if (c < 0x80) { *len = 1; return c; }
  if (c < 0xE0 && n >= 2) { *len = 2; return ((int32_t)(c & 0x1F) << 6) | (u[1] & 0x3F); }
  if (c < 0xF0 && n >= 3) { *len = 3; return ((int32_t)(c & 0x0F) << 12) | ((int32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F); }
  if (n >= 4) {
    *len = 4;
    return ((int32_t)(c & 0x07) << 18) | ((int32_t)(u[1] & 0x3F) << 12) | ((int32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
  }
  *len = 1;
  return 0xFFFD;
}

/* Write the UTF-8 encoding of cp to out (4 bytes of room); returns its length. */
static inline size_t tk_utf8_encode(int32_t cp, char *out) {
  if (cp < 0x80) { out[0] = (char)cp; return 1; }
  if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12)); out[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18)); out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

static inline size_t tk_utf8_len(int32_t cp) {
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

/* Length of the longest valid UTF-8 prefix of s[0..n). */
size_t tk_utf8_valid_prefix(const char *s, size_t n);
/* Append s[0..n) to out with every maximal invalid subsequence replaced by
 * U+FFFD (Rust's String::from_utf8_lossy, the W3C/Unicode practice). */
int tk_utf8_lossy(tk_buf *out, const char *s, size_t n);

/* White_Space (Rust char::is_whitespace, Oniguruma's \s). */
int tk_is_whitespace(int32_t cp);

/* ---- added tokens ------------------------------------------------------------- */

typedef struct tk_added {
  char *content;
  size_t len;
  int32_t id;
  int special, lstrip, rstrip, single_word, normalized;
} tk_added;

/* Leftmost-longest matcher over a set of added tokens (a byte trie). */
typedef struct tk_trie_node {
  uint32_t first_child; /* index of the first edge in `edges` */
  uint16_t n_children;
  int32_t added; /* index into tok->added, -1 when no token ends here */
} tk_trie_node;

typedef struct tk_trie_edge {
  unsigned char byte;
  uint32_t child;
} tk_trie_edge;

typedef struct tk_matcher {
  tk_trie_node *nodes;
  size_t n_nodes;
  tk_trie_edge *edges;
  size_t n_edges;
  uint8_t first_byte[256]; /* 1 where some token starts with that byte */
  uint8_t short_key[256];  /* 1 where a one-byte token is that byte */
  uint8_t pair_bits[8192]; /* bit b0 * 256 + b1: a token starts with b0 b1 */
} tk_matcher;

/* The child of `node` along byte b, or -1 (edges are sorted by byte). */
static inline int64_t tk_trie_child(const tk_matcher *m, uint32_t node, unsigned char b) {
  const tk_trie_node *nd = &m->nodes[node];
  const tk_trie_edge *e = m->edges + nd->first_child;
  size_t lo = 0, hi = nd->n_children;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (e[mid].byte < b) lo = mid + 1;
    else hi = mid;
  }
  return (lo < nd->n_children && e[lo].byte == b) ? (int64_t)e[lo].child : -1;
}

/* ---- normalizers -------------------------------------------------------------------- */

typedef struct tk_charsmap tk_charsmap; /* normalize_precompiled.c */
typedef struct tk_regex tk_regex;       /* normalize_regex.c */

enum tk_norm_kind {
  TK_NORM_NFC,
  TK_NORM_NFD,
  TK_NORM_NFKC,
  TK_NORM_NFKD,
  TK_NORM_LOWERCASE,
  TK_NORM_STRIP,
  TK_NORM_STRIP_ACCENTS,
  TK_NORM_REPLACE,
  TK_NORM_PREPEND,
  TK_NORM_PRECOMPILED
};

typedef struct tk_norm_step {
  int kind;
  int left, right;          /* STRIP */
  char *literal;            /* REPLACE with a String pattern */
  size_t literal_len;
  tk_regex *regex;          /* REPLACE with a Regex pattern */
  char *content;            /* REPLACE replacement, PREPEND text */
  size_t content_len;
  tk_charsmap *charsmap;    /* PRECOMPILED */
} tk_norm_step;

/* One normalization step from `in` into `out` (cleared first). *lead is
 * the number of leading bytes of the text that come from the first
 * character of the original text (the `tokenizers` library's alignment of
 * offset 0); each step updates it. Metaspace's prepend_scheme "first"
 * needs it. */
dq_status tk_norm_apply(const tk_norm_step *step, const char *in, size_t n, tk_buf *out, size_t *lead);
void tk_norm_step_free(tk_norm_step *step);

/* Precompiled charsmap (SentencePiece): parse the decoded blob. */
dq_status tk_charsmap_new(const unsigned char *blob, size_t n, const char *source, tk_charsmap **out);
void tk_charsmap_free(tk_charsmap *m);
dq_status tk_charsmap_apply(const tk_charsmap *m, const char *in, size_t n, tk_buf *out, size_t *lead);

/* The regex subset of Replace patterns (see normalize_regex.c). */
dq_status tk_regex_compile(const char *pattern, size_t len, const char *source, tk_regex **out);
void tk_regex_free(tk_regex *re);
/* The first match at or after `from`: returns 1 and sets [*ms, *me), else 0. */
int tk_regex_find(const tk_regex *re, const char *s, size_t n, size_t from, size_t *ms, size_t *me);

/* ---- pre-tokenizers ------------------------------------------------------------------ */

enum tk_pre_kind { TK_PRE_NONE, TK_PRE_BYTE_LEVEL, TK_PRE_METASPACE };
enum tk_prepend { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER };

typedef struct tk_pretok {
  int kind;
  int add_prefix_space, use_regex; /* BYTE_LEVEL */
  int32_t replacement;             /* METASPACE */
  int prepend_scheme, split;       /* METASPACE */
} tk_pretok;

/* Split s[0..n) with the GPT-2 pattern; ranges are appended to `out`. */
int tk_gpt2_split(const char *s, size_t n, tk_ranges *out);

/* GPT-2's byte <-> printable character table: the character of each byte. */
const int32_t *tk_byte_table(void);
/* The byte of a table character, or -1. */
int tk_cp_to_byte(int32_t cp);

/* ---- models ---------------------------------------------------------------------------- */

enum tk_model_kind { TK_MODEL_BPE, TK_MODEL_UNIGRAM };

typedef struct tk_bpe {
  tk_u64map merges; /* (left id << 32 | right id) -> (rank << 32 | new id) */
  int byte_level;   /* pieces are raw bytes mapped through tk_byte_to_cp */
  int32_t byte_ids[256]; /* BYTE_LEVEL: the id of each byte's character, -1 if absent */
  int32_t unk_id;        /* -1 when none */
  int fuse_unk, byte_fallback, ignore_merges;
  char *continuing_subword_prefix, *end_of_word_suffix;
  int32_t byte_token_ids[256]; /* byte_fallback: <0xNN> ids, -1 if absent */
} tk_bpe;

typedef struct tk_unigram {
  double *scores; /* per model id */
  int32_t n_pieces;
  int32_t unk_id; /* -1 when none */
  int byte_fallback;
  double min_score;
  int32_t byte_token_ids[256];
  /* byte trie over the pieces (same layout as tk_matcher, `added` = id) */
  tk_matcher trie;
} tk_unigram;

/* ---- decoders ----------------------------------------------------------------------------- */

enum tk_dec_kind {
  TK_DEC_BYTE_LEVEL,
  TK_DEC_METASPACE,
  TK_DEC_REPLACE,
  TK_DEC_BYTE_FALLBACK,
  TK_DEC_FUSE,
  TK_DEC_STRIP
};

typedef struct tk_dec_step {
  int kind;
  int32_t replacement; /* METASPACE */
  int prepend_scheme;  /* METASPACE */
  char *pattern, *content; /* REPLACE (literal) */
  size_t pattern_len, content_len;
  int32_t strip_cp;        /* STRIP */
  int64_t strip_start, strip_stop;
} tk_dec_step;

/* ---- the tokenizer ------------------------------------------------------------------------ */

/* Per-thread scratch space, including the cache of encoded pieces. */
typedef struct tk_work tk_work;

enum { TK_MAX_TEMPLATE = 16 };

typedef struct tk_template_item {
  int is_sequence;
  int32_t n_ids;
  int32_t *ids;
} tk_template_item;

struct dq_tokenizer {
  char *source; /* the file it came from, for messages */
  /* vocabulary: id -> token (model vocab and added tokens) */
  int32_t vocab_size; /* 1 + the largest id */
  int32_t id_token_cap;
  char **id_token;    /* NULL where an id has no token */
  uint32_t *id_token_len;
  tk_strmap model_vocab; /* token -> id of the model */
  int model_kind;
  tk_bpe bpe;
  tk_unigram unigram;
  /* added tokens */
  tk_added *added;
  size_t n_added;
  int32_t *added_index; /* per id: index into added, or -1 */
  tk_matcher raw_matcher, norm_matcher;
  /* pipeline */
  tk_norm_step *norm;
  size_t n_norm;
  tk_pretok pre;
  tk_template_item template_items[TK_MAX_TEMPLATE];
  int n_template; /* 0: no post-processing */
  tk_dec_step *dec;
  size_t n_dec;
  int has_decoder;
  /* roles */
  int32_t pad_id, bos_id, eos_id, unk_id, mask_id;
  /* scratch pool */
  pthread_mutex_t pool_lock;
  tk_work *pool;
};

/* Loading (tokenizer_load.c, tokenizer_legacy.c). */
dq_status tk_load_tokenizer_json(dq_tokenizer *t, const char *path, const char *dir);
dq_status tk_load_vocab_merges(dq_tokenizer *t, const char *dir);
/* Shared by both loaders: roles from tokenizer_config.json /
 * special_tokens_map.json in dir (may be NULL), defaults by name. */
dq_status tk_load_roles(dq_tokenizer *t, const char *dir);
/* Build the matchers and per-id tables once vocab and added tokens are set. */
dq_status tk_finish(dq_tokenizer *t);
/* Register an id -> token string (copies it). */
dq_status tk_set_id_token(dq_tokenizer *t, int32_t id, const char *s, size_t n);
dq_status tk_add_added_token(dq_tokenizer *t, const tk_added *a);
void tk_tokenizer_destroy(dq_tokenizer *t);

/* Matchers (tokenizer_added.c). */
dq_status tk_matcher_build(tk_matcher *m, const char *const *keys, const size_t *lens, const int32_t *values, size_t n);
void tk_matcher_free(tk_matcher *m);
/* Longest key starting at s[0..n): returns its value and length, or -1. */
int32_t tk_matcher_longest(const tk_matcher *m, const char *s, size_t n, size_t *len);
/* Split a segment on the added tokens of one matcher: appends (start, len,
 * added index or -1) triples, dropping empty text segments. */
typedef struct tk_segment {
  size_t start, len;
  int32_t added; /* index into tok->added, -1 for text */
} tk_segment;
typedef struct tk_segments {
  tk_segment *data;
  size_t len, cap;
} tk_segments;
int tk_split_added(const dq_tokenizer *t, const tk_matcher *m, const char *s, size_t n, tk_segments *out);

/* Models (bpe.c, unigram.c): encode one pre-tokenized piece, appending ids. */
dq_status tk_bpe_encode(const dq_tokenizer *t, tk_work *w, const char *piece, size_t n, tk_ids *out);
dq_status tk_unigram_encode(const dq_tokenizer *t, tk_work *w, const char *piece, size_t n, tk_ids *out);
dq_status tk_unigram_build_trie(dq_tokenizer *t);

/* Scratch of the models, held in tk_work. */
typedef struct tk_bpe_symbol {
  int32_t id;
  int32_t prev, next; /* -1 at the ends */
  int32_t len;        /* 0 once merged into its left neighbour */
} tk_bpe_symbol;

typedef struct tk_bpe_heap_item {
  uint32_t rank;
  int32_t pos;
  int32_t new_id;
} tk_bpe_heap_item;

struct tk_work {
  tk_buf norm_a, norm_b, pre, scratch, model_buf;
  tk_ids tmp_ids;
  tk_segments seg_raw, seg_norm;
  tk_ranges pieces;
  tk_ids ids;
  /* cache: piece bytes -> offset into cache_ids ([count, ids...]) */
  tk_strmap cache;
  tk_ids cache_ids;
  /* BPE */
  tk_bpe_symbol *symbols;
  size_t symbols_cap;
  tk_bpe_heap_item *heap;
  size_t heap_cap;
  /* unigram */
  double *best_score;
  int32_t *best_start, *best_id;
  size_t best_cap;
  tk_work *next;
};

/* The per-thread cache of encoded pieces (bpe.c): lookup returns 1 on a
 * hit (ids appended), 0 on a miss, -1 when memory runs out. */
int tk_cache_lookup(tk_work *w, const char *piece, size_t n, tk_ids *out);
void tk_cache_store(tk_work *w, const char *piece, size_t n, const int32_t *ids, size_t count);

tk_work *tk_work_acquire(const dq_tokenizer *t);
void tk_work_release(const dq_tokenizer *t, tk_work *w);
void tk_work_free(tk_work *w);

/* Encode one text into w->ids (cleared first). */
dq_status tk_encode_text(const dq_tokenizer *t, tk_work *w, const char *text, size_t n, int add_special);

/* Decoding (tokenizer_decode.c). */
dq_status tk_decode(const dq_tokenizer *t, const int32_t *ids, int64_t n, int skip_special, tk_buf *out);

/* Small helpers shared by the loaders. */
char *tk_strndup(const char *s, size_t n);
/* Base64 (standard alphabet, with padding) into a new buffer. */
dq_status tk_base64_decode(const char *s, size_t n, const char *source, unsigned char **out, size_t *out_len);

#endif
