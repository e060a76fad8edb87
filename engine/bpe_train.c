/*
 * bpe_train.c: byte-level BPE training, merge for merge the algorithm of
 * `tokenizers`' BpeTrainer (models/bpe/trainer.rs) as ByteLevelBPETokenizer
 * runs it, so the same corpus and settings give the same vocab.json and
 * merges.txt:
 *  - sequences (file lines with their newline, or whole texts) are split
 *    with the GPT-2 pattern; each distinct word is counted;
 *  - vocabulary: the special tokens, then the 256 byte characters sorted by
 *    code point, then one token per merge;
 *  - a max-heap of pairs ordered by count, ties to the smaller (left id,
 *    right id); each heap entry carries the set of words it was counted in
 *    (where_to_update), and a popped entry whose count is stale is pushed
 *    back with the current count. Merging a pair in a word reports the
 *    pair-count changes around it exactly as Word::merge does; pairs that
 *    gained occurrences get a new heap entry with the words that gained.
 *  - training stops at vocab_size tokens, or when the best count is below
 *    min_frequency (or below 1).
 * A merge whose token already exists (the same string from another pair)
 * keeps the existing id; a pair merged twice keeps its later rank, as the
 * library's HashMap of merges does.
 */
#include "tokenizer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static const char *OP = "dq_bpe_train";

static dq_status oom(void) { return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", OP); }

/* ---- word counting ------------------------------------------------------------------ */

typedef struct counter {
  tk_strmap words; /* word bytes -> index into counts */
  int64_t *counts;
  size_t cap;
} counter;

static int count_word(counter *c, const char *w, size_t n) {
  int32_t *v = tk_strmap_get(&c->words, w, n);
  if (v) {
    c->counts[*v]++;
    return 0;
  }
  size_t idx = c->words.count;
  if (idx == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 1024;
    int64_t *p = realloc(c->counts, cap * sizeof *p);
    if (!p) return -1;
    c->counts = p;
    c->cap = cap;
  }
  c->counts[idx] = 1;
  return tk_strmap_set(&c->words, w, n, (int32_t)idx);
}

static int count_sequence(counter *c, tk_ranges *pieces, const char *s, size_t n) {
  pieces->len = 0;
  if (tk_gpt2_split(s, n, pieces)) return -1;
  for (size_t i = 0; i < pieces->len; i++)
    if (count_word(c, s + pieces->data[i].start, pieces->data[i].len)) return -1;
  return 0;
}

/* Count the words of sequences [seq_start[i], seq_start[i+1]) of one
 * buffer, on all cores, into `total`. */
static dq_status count_all(const char *data, const int64_t *starts, int64_t n, counter *total) {
  int nthreads = 1;
#ifdef _OPENMP
  nthreads = omp_get_max_threads();
#endif
  counter *parts = calloc((size_t)nthreads, sizeof *parts);
  if (!parts) return oom();
  int failed = 0;
#pragma omp parallel num_threads(nthreads) if (n > 1024)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    tk_ranges pieces = {0};
    tk_buf lossy = {0};
#pragma omp for schedule(dynamic, 4096)
    for (int64_t i = 0; i < n; i++) {
      if (failed) continue;
      const char *s = data + starts[i];
      size_t len = (size_t)(starts[i + 1] - starts[i]);
      if (tk_utf8_valid_prefix(s, len) != len) {
        lossy.len = 0;
        if (tk_utf8_lossy(&lossy, s, len)) failed = 1;
        s = lossy.data;
        len = lossy.len;
      }
      if (!failed && count_sequence(&parts[tid], &pieces, s, len)) failed = 1;
    }
    tk_ranges_free(&pieces);
    tk_buf_free(&lossy);
  }
  for (int k = 0; k < nthreads; k++) {
    counter *p = &parts[k];
    for (size_t i = 0; i < p->words.count && !failed; i++) {
      size_t len;
      const char *w = tk_strmap_key(&p->words, i, &len);
      int32_t *v = tk_strmap_get(&total->words, w, len);
      if (v) {
        total->counts[*v] += p->counts[i];
      } else {
        if (count_word(total, w, len)) failed = 1;
        else total->counts[total->words.count - 1] = p->counts[i];
      }
    }
    tk_strmap_free(&p->words);
    free(p->counts);
  }
  free(parts);
  return failed ? oom() : DQ_OK;
}

static dq_status read_whole(const char *path, tk_buf *out) {
  FILE *f = fopen(path, "rb");
  if (!f) return dq_fail(DQ_ERR_IO, "%s: cannot open %s: %s", OP, path, strerror(errno));
  char chunk[1 << 16];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    if (tk_buf_put(out, chunk, n)) {
      fclose(f);
      return oom();
    }
  }
  int err = ferror(f);
  fclose(f);
  return err ? dq_fail(DQ_ERR_IO, "%s: error reading %s", OP, path) : DQ_OK;
}

/* ---- the merge loop -------------------------------------------------------------------- */

typedef struct poslist {
  int32_t *data;
  size_t len, cap;
} poslist;

typedef struct heap_entry {
  int64_t count;
  uint64_t pair;
  int32_t pos; /* index into the pool of position lists */
} heap_entry;

typedef struct trainer {
  /* vocabulary */
  tk_strmap vocab;
  tk_buf *tokens; /* id -> string */
  size_t n_tokens, tokens_cap;
  /* words: symbols of word w are syms[off[w] .. off[w] + len[w]) */
  int32_t *syms;
  int64_t *off;
  int32_t *len;
  int64_t *counts;
  size_t n_words;
  /* pairs */
  tk_u64map pair_counts; /* pair -> int64 count */
  heap_entry *heap;
  size_t heap_n, heap_cap;
  poslist *lists;
  size_t n_lists, lists_cap;
  int32_t *free_lists;
  size_t n_free, free_cap;
  /* merges in order: pair, new id */
  uint64_t *merge_pairs;
  size_t n_merges, merges_cap;
} trainer;

static int heap_better(const heap_entry *a, const heap_entry *b) {
  return a->count > b->count || (a->count == b->count && a->pair < b->pair);
}

static int heap_push(trainer *tr, heap_entry e) {
  if (tr->heap_n == tr->heap_cap) {
    size_t cap = tr->heap_cap ? tr->heap_cap * 2 : 1024;
    heap_entry *p = realloc(tr->heap, cap * sizeof *p);
    if (!p) return -1;
    tr->heap = p;
    tr->heap_cap = cap;
  }
  size_t i = tr->heap_n++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!heap_better(&e, &tr->heap[parent])) break;
    tr->heap[i] = tr->heap[parent];
    i = parent;
  }
  tr->heap[i] = e;
  return 0;
}

static heap_entry heap_pop(trainer *tr) {
  heap_entry *h = tr->heap, top = h[0], last = h[--tr->heap_n];
  size_t i = 0, n = tr->heap_n;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && heap_better(&h[c + 1], &h[c])) c++;
    if (!heap_better(&h[c], &last)) break;
    h[i] = h[c];
    i = c;
  }
  if (n) h[i] = last;
  return top;
}

static int32_t new_list(trainer *tr) {
  if (tr->n_free) return tr->free_lists[--tr->n_free];
  if (tr->n_lists == tr->lists_cap) {
    size_t cap = tr->lists_cap ? tr->lists_cap * 2 : 1024;
    poslist *p = realloc(tr->lists, cap * sizeof *p);
    if (!p) return -1;
    tr->lists = p;
    tr->lists_cap = cap;
  }
  memset(&tr->lists[tr->n_lists], 0, sizeof *tr->lists);
  return (int32_t)tr->n_lists++;
}

static int release_list(trainer *tr, int32_t idx) {
  tr->lists[idx].len = 0;
  if (tr->n_free == tr->free_cap) {
    size_t cap = tr->free_cap ? tr->free_cap * 2 : 1024;
    int32_t *p = realloc(tr->free_lists, cap * sizeof *p);
    if (!p) return -1;
    tr->free_lists = p;
    tr->free_cap = cap;
  }
  tr->free_lists[tr->n_free++] = idx;
  return 0;
}

/* Add word w to a list unless it is its last entry (changes of one word
 * arrive together, so this is the HashSet's deduplication). */
static int list_add(poslist *l, int32_t w) {
  if (l->len && l->data[l->len - 1] == w) return 0;
  if (l->len == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 4;
    int32_t *p = realloc(l->data, cap * sizeof *p);
    if (!p) return -1;
    l->data = p;
    l->cap = cap;
  }
  l->data[l->len++] = w;
  return 0;
}

static int add_token(trainer *tr, const char *s, size_t n, int32_t *id) {
  const int32_t *v = tk_strmap_get(&tr->vocab, s, n);
  if (v) {
    *id = *v;
    return 0;
  }
  if (tr->n_tokens == tr->tokens_cap) {
    size_t cap = tr->tokens_cap ? tr->tokens_cap * 2 : 1024;
    tk_buf *p = realloc(tr->tokens, cap * sizeof *p);
    if (!p) return -1;
    tr->tokens = p;
    tr->tokens_cap = cap;
  }
  tk_buf *b = &tr->tokens[tr->n_tokens];
  memset(b, 0, sizeof *b);
  if (tk_buf_put(b, s, n) || tk_buf_reserve(b, 1)) return -1;
  b->data[n] = '\0';
  *id = (int32_t)tr->n_tokens++;
  return tk_strmap_set(&tr->vocab, s, n, *id);
}

static inline int64_t *pair_count(trainer *tr, uint64_t pair) {
  return (int64_t *)tk_u64map_get(&tr->pair_counts, pair);
}

static int pair_add(trainer *tr, uint64_t pair, int64_t delta) {
  int64_t *c = pair_count(tr, pair);
  if (c) {
    *c += delta;
    return 0;
  }
  return tk_u64map_set(&tr->pair_counts, pair, (uint64_t)delta);
}

static inline uint64_t pair_of(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

/* One change reported by merging in a word. */
typedef struct change {
  uint64_t pair;
  int32_t delta;
  int32_t word;
} change;

typedef struct changes {
  change *data;
  size_t len, cap;
} changes;

static int change_push(changes *c, uint64_t pair, int32_t delta, int32_t word) {
  if (c->len == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 256;
    change *p = realloc(c->data, cap * sizeof *p);
    if (!p) return -1;
    c->data = p;
    c->cap = cap;
  }
  c->data[c->len].pair = pair;
  c->data[c->len].delta = delta;
  c->data[c->len].word = word;
  c->len++;
  return 0;
}

/* Word::merge: replace every (a, b) in word w by id, left to right. */
static int merge_word(trainer *tr, int32_t w, int32_t a, int32_t b, int32_t id, changes *out) {
  int32_t *s = tr->syms + tr->off[w];
  int32_t n = tr->len[w], wr = 0;
  for (int32_t r = 0; r < n;) {
    if (s[r] == a && r + 1 < n && s[r + 1] == b) {
      if (wr > 0) {
        int32_t prev = s[wr - 1];
        if (change_push(out, pair_of(prev, a), -1, w) || change_push(out, pair_of(prev, id), 1, w)) return -1;
      }
      s[wr++] = id;
      r += 2;
      if (r < n) {
        int32_t next = s[r];
        if (change_push(out, pair_of(b, next), -1, w) || change_push(out, pair_of(id, next), 1, w)) return -1;
      }
    } else {
      s[wr++] = s[r++];
    }
  }
  tr->len[w] = wr;
  return 0;
}

static dq_status merge_loop(trainer *tr, int64_t vocab_size, int64_t min_frequency) {
  int nthreads = 1;
#ifdef _OPENMP
  nthreads = omp_get_max_threads();
#endif
  changes *parts = calloc((size_t)nthreads, sizeof *parts);
  tk_u64map touched = {0}; /* pair -> list index, for one merge */
  uint64_t *touched_pairs = NULL;
  size_t n_touched = 0, touched_cap = 0;
  if (!parts) return oom();
  dq_status st = DQ_OK;
  while ((int64_t)tr->n_tokens < vocab_size && tr->heap_n) {
    heap_entry top = heap_pop(tr);
    int64_t current = *pair_count(tr, top.pair);
    if (top.count != current) {
      top.count = current;
      if (heap_push(tr, top)) { st = oom(); break; }
      continue;
    }
    if (top.count < 1 || min_frequency > top.count) {
      if (release_list(tr, top.pos)) st = oom();
      break;
    }
    int32_t a = (int32_t)(top.pair >> 32), b = (int32_t)(uint32_t)top.pair;
    tk_buf joined = {0};
    int32_t id;
    if (tk_buf_put(&joined, tr->tokens[a].data, tr->tokens[a].len) || tk_buf_put(&joined, tr->tokens[b].data, tr->tokens[b].len) ||
        add_token(tr, joined.data, joined.len, &id)) {
      tk_buf_free(&joined);
      st = oom();
      break;
    }
    tk_buf_free(&joined);
    if (tr->n_merges == tr->merges_cap) {
      size_t cap = tr->merges_cap ? tr->merges_cap * 2 : 1024;
      uint64_t *p = realloc(tr->merge_pairs, cap * 2 * sizeof *p);
      if (!p) { st = oom(); break; }
      tr->merge_pairs = p;
      tr->merges_cap = cap;
    }
    tr->merge_pairs[2 * tr->n_merges] = top.pair;
    tr->merge_pairs[2 * tr->n_merges + 1] = (uint64_t)id;
    tr->n_merges++;
    /* merge in the entry's words, in parallel when there are many */
    poslist *words = &tr->lists[top.pos];
    int64_t nw = (int64_t)words->len;
    int failed = 0;
    for (int k = 0; k < nthreads; k++) parts[k].len = 0;
#pragma omp parallel num_threads(nthreads) if (nw > 2048)
    {
      int tid = 0, nt = 1;
#ifdef _OPENMP
      tid = omp_get_thread_num();
      nt = omp_get_num_threads();
#endif
      /* contiguous chunks, so each word's changes stay together and the
       * parts concatenate in list order */
      int64_t lo = nw * tid / nt, hi = nw * (tid + 1) / nt;
      for (int64_t i = lo; i < hi; i++)
        if (merge_word(tr, words->data[i], a, b, id, &parts[tid])) failed = 1;
    }
    if (failed) { st = oom(); break; }
    n_touched = 0;
    for (int k = 0; k < nthreads && !failed; k++) {
      for (size_t i = 0; i < parts[k].len && !failed; i++) {
        const change *c = &parts[k].data[i];
        if (pair_add(tr, c->pair, (int64_t)c->delta * tr->counts[c->word])) failed = 1;
        if (c->delta <= 0 || failed) continue;
        uint64_t *slot = tk_u64map_get(&touched, c->pair);
        int32_t list;
        if (slot) {
          list = (int32_t)*slot;
        } else {
          list = new_list(tr);
          if (list < 0 || tk_u64map_set(&touched, c->pair, (uint64_t)list)) { failed = 1; break; }
          if (n_touched == touched_cap) {
            size_t cap = touched_cap ? touched_cap * 2 : 256;
            uint64_t *p = realloc(touched_pairs, cap * sizeof *p);
            if (!p) { failed = 1; break; }
            touched_pairs = p;
            touched_cap = cap;
          }
          touched_pairs[n_touched++] = c->pair;
        }
        if (list_add(&tr->lists[list], c->word)) failed = 1;
      }
    }
    /* the entry's list is done; new pairs with a positive count enter the heap */
    for (size_t i = 0; i < n_touched && !failed; i++) {
      int32_t list = (int32_t)*tk_u64map_get(&touched, touched_pairs[i]);
      int64_t count = *pair_count(tr, touched_pairs[i]);
      if (count > 0) {
        heap_entry e = {count, touched_pairs[i], list};
        if (heap_push(tr, e)) failed = 1;
      } else if (release_list(tr, list)) {
        failed = 1;
      }
    }
    if (!failed && release_list(tr, top.pos)) failed = 1;
    /* forget this merge's pairs (the map is small: clear by re-setting) */
    tk_u64map_free(&touched);
    if (failed) { st = oom(); break; }
  }
  for (int k = 0; k < nthreads; k++) free(parts[k].data);
  free(parts);
  free(touched_pairs);
  tk_u64map_free(&touched);
  return st;
}

/* ---- writing ------------------------------------------------------------------------------ */

static int json_string(tk_buf *b, const char *s, size_t n) {
  if (tk_buf_putc(b, '"')) return -1;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    const char *esc = NULL;
    char u[8];
    switch (c) {
    case '"': esc = "\\\""; break;
    case '\\': esc = "\\\\"; break;
    case '\n': esc = "\\n"; break;
    case '\r': esc = "\\r"; break;
    case '\t': esc = "\\t"; break;
    case '\b': esc = "\\b"; break;
    case '\f': esc = "\\f"; break;
    default:
      if (c < 0x20) {
        snprintf(u, sizeof u, "\\u%04x", c);
        esc = u;
      }
    }
    if (esc ? tk_buf_put(b, esc, strlen(esc)) : tk_buf_putc(b, (char)c)) return -1;
  }
  return tk_buf_putc(b, '"');
}

static dq_status write_atomic(const char *dir, const char *name, const tk_buf *content) {
  size_t n = strlen(dir) + strlen(name) + 32;
  char *path = malloc(n), *tmp = malloc(n);
  if (!path || !tmp) {
    free(path);
    free(tmp);
    return oom();
  }
  snprintf(path, n, "%s/%s", dir, name);
  snprintf(tmp, n, "%s/.%s.tmp%ld", dir, name, (long)getpid());
  dq_status st = DQ_OK;
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    st = dq_fail(DQ_ERR_IO, "%s: cannot create %s: %s", OP, tmp, strerror(errno));
  } else {
    size_t w = content->len ? fwrite(content->data, 1, content->len, f) : 0;
    int bad = w != content->len;
    if (fclose(f) || bad) st = dq_fail(DQ_ERR_IO, "%s: error writing %s", OP, tmp);
    if (!st && rename(tmp, path)) st = dq_fail(DQ_ERR_IO, "%s: cannot rename %s to %s: %s", OP, tmp, path, strerror(errno));
    if (st) remove(tmp);
  }
  free(path);
  free(tmp);
  return st;
}

static dq_status make_dirs(const char *dir) {
  size_t n = strlen(dir);
  char *p = tk_strndup(dir, n);
  if (!p) return oom();
  for (size_t i = 1; i <= n; i++) {
    if (p[i] != '/' && p[i] != '\0') continue;
    char c = p[i];
    p[i] = '\0';
    if (mkdir(p, 0777) && errno != EEXIST) {
      dq_status st = dq_fail(DQ_ERR_IO, "%s: cannot create directory %s: %s", OP, p, strerror(errno));
      free(p);
      return st;
    }
    p[i] = c;
  }
  free(p);
  return DQ_OK;
}

static int is_special(const dq_bpe_train_config *cfg, const char *s) {
  for (int32_t i = 0; i < cfg->n_special_tokens; i++)
    if (!strcmp(cfg->special_tokens[i], s)) return 1;
  return 0;
}

/* tokenizer_config.json for transformers: the special tokens' flags (so
 * loading vocab.json + merges.txt alone keeps <mask>'s lstrip) and roles. */
static int config_json(const trainer *tr, const dq_bpe_train_config *cfg, tk_buf *b) {
  static const char *const roles[7][2] = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"},
                                          {"pad_token", "<pad>"}, {"mask_token", "<mask>"}, {"cls_token", "<s>"},
                                          {"sep_token", "</s>"}};
  const char *head = "{\n \"add_prefix_space\": false,\n \"errors\": \"replace\",\n"
                     " \"clean_up_tokenization_spaces\": false,\n \"added_tokens_decoder\": {";
  int failed = tk_buf_put(b, head, strlen(head));
  int first = 1, bart = 1;
  for (int32_t i = 0; i < cfg->n_special_tokens && !failed; i++) {
    const char *s = cfg->special_tokens[i];
    const int32_t *id = *s ? tk_strmap_get(&tr->vocab, s, strlen(s)) : NULL;
    int dup = 0;
    for (int32_t k = 0; k < i; k++) dup |= !strcmp(cfg->special_tokens[k], s);
    if (!id || dup) continue;
    char key[64];
    snprintf(key, sizeof key, "%s\n  \"%d\": {\"content\": ", first ? "" : ",", *id);
    first = 0;
    failed |= tk_buf_put(b, key, strlen(key)) || json_string(b, s, strlen(s));
    const char *flags = !strcmp(s, "<mask>") ? ", \"lstrip\": true, \"normalized\": false, \"rstrip\": false, "
                                               "\"single_word\": false, \"special\": true}"
                                             : ", \"lstrip\": false, \"normalized\": false, \"rstrip\": false, "
                                               "\"single_word\": false, \"special\": true}";
    failed |= tk_buf_put(b, flags, strlen(flags));
  }
  failed |= tk_buf_put(b, "\n }", strlen("\n }"));
  for (int r = 0; r < 7 && !failed; r++) {
    if (!is_special(cfg, roles[r][1])) {
      bart = 0;
      continue;
    }
    char line[64];
    snprintf(line, sizeof line, ",\n \"%s\": \"%s\"", roles[r][0], roles[r][1]);
    failed |= tk_buf_put(b, line, strlen(line));
  }
  if (bart && !failed) {
    const char *cls = ",\n \"tokenizer_class\": \"BartTokenizer\"";
    failed |= tk_buf_put(b, cls, strlen(cls));
  }
  return failed || tk_buf_put(b, "\n}\n", strlen("\n}\n"));
}

static dq_status write_outputs(const trainer *tr, const dq_bpe_train_config *cfg, const char *dir) {
  /* merges: a pair merged twice keeps its last rank */
  tk_u64map last = {0};
  int failed = 0;
  for (size_t i = 0; i < tr->n_merges && !failed; i++) failed = tk_u64map_set(&last, tr->merge_pairs[2 * i], i);
  tk_buf vocab = {0}, merges = {0}, full = {0};
  failed |= tk_buf_putc(&vocab, '{');
  for (size_t i = 0; i < tr->n_tokens && !failed; i++) {
    char num[32];
    snprintf(num, sizeof num, ":%zu", i);
    failed |= (i && tk_buf_putc(&vocab, ',')) || json_string(&vocab, tr->tokens[i].data, tr->tokens[i].len) ||
              tk_buf_put(&vocab, num, strlen(num));
  }
  failed |= tk_buf_put(&vocab, "}", 1);
  failed |= tk_buf_put(&merges, "#version: 0.2\n", strlen("#version: 0.2\n"));
  /* tokenizer.json: the same model with its pipeline */
  const char *head = "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,\"added_tokens\":[";
  failed |= tk_buf_put(&full, head, strlen(head));
  int first = 1;
  for (int32_t i = 0; i < cfg->n_special_tokens && !failed; i++) {
    const char *s = cfg->special_tokens[i];
    const int32_t *id = tk_strmap_get(&tr->vocab, s, strlen(s));
    int dup = 0;
    for (int32_t k = 0; k < i; k++) dup |= !strcmp(cfg->special_tokens[k], s);
    if (!id || dup || !*s) continue;
    char item[48];
    snprintf(item, sizeof item, "%s{\"id\":%d,\"content\":", first ? "" : ",", *id);
    first = 0;
    failed |= tk_buf_put(&full, item, strlen(item)) || json_string(&full, s, strlen(s));
    const char *flags = !strcmp(s, "<mask>")
                          ? ",\"single_word\":false,\"lstrip\":true,\"rstrip\":false,\"normalized\":false,\"special\":true}"
                          : ",\"single_word\":false,\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"special\":true}";
    failed |= tk_buf_put(&full, flags, strlen(flags));
  }
  const char *mid = "],\"normalizer\":null,"
                    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true},";
  failed |= tk_buf_put(&full, mid, strlen(mid));
  const int32_t *bos = tk_strmap_get(&tr->vocab, "<s>", 3), *eos = tk_strmap_get(&tr->vocab, "</s>", 4);
  if (bos && eos && is_special(cfg, "<s>") && is_special(cfg, "</s>")) {
    char post[200];
    snprintf(post, sizeof post,
             "\"post_processor\":{\"type\":\"RobertaProcessing\",\"sep\":[\"</s>\",%d],\"cls\":[\"<s>\",%d],"
             "\"trim_offsets\":true,\"add_prefix_space\":false},", *eos, *bos);
    failed |= tk_buf_put(&full, post, strlen(post));
  } else {
    failed |= tk_buf_put(&full, "\"post_processor\":null,", strlen("\"post_processor\":null,"));
  }
  const char *model = "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"trim_offsets\":true,\"use_regex\":true},"
                      "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":null,"
                      "\"end_of_word_suffix\":null,\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,\"vocab\":";
  failed |= tk_buf_put(&full, model, strlen(model)) || tk_buf_put(&full, vocab.data, vocab.len) ||
            tk_buf_put(&full, ",\"merges\":[", strlen(",\"merges\":["));
  first = 1;
  for (size_t i = 0; i < tr->n_merges && !failed; i++) {
    uint64_t pair = tr->merge_pairs[2 * i];
    if (*tk_u64map_get(&last, pair) != i) continue;
    const tk_buf *ta = &tr->tokens[pair >> 32], *tb = &tr->tokens[(uint32_t)pair];
    failed |= tk_buf_put(&merges, ta->data, ta->len) || tk_buf_putc(&merges, ' ') || tk_buf_put(&merges, tb->data, tb->len) ||
              tk_buf_putc(&merges, '\n');
    failed |= (!first && tk_buf_putc(&full, ',')) || tk_buf_putc(&full, '[') || json_string(&full, ta->data, ta->len) ||
              tk_buf_putc(&full, ',') || json_string(&full, tb->data, tb->len) || tk_buf_putc(&full, ']');
    first = 0;
  }
  failed |= tk_buf_put(&full, "]}}\n", strlen("]}}\n"));
  tk_u64map_free(&last);
  dq_status st = failed ? oom() : make_dirs(dir);
  if (!st) st = write_atomic(dir, "vocab.json", &vocab);
  if (!st) st = write_atomic(dir, "merges.txt", &merges);
  if (!st) st = write_atomic(dir, "tokenizer.json", &full);
  if (!st) {
    tk_buf config = {0};
    st = config_json(tr, cfg, &config) ? oom() : write_atomic(dir, "tokenizer_config.json", &config);
    tk_buf_free(&config);
  }
  tk_buf_free(&vocab);
  tk_buf_free(&merges);
  tk_buf_free(&full);
  return st;
}

/* ---- entry point ------------------------------------------------------------------------ */

static void trainer_free(trainer *tr) {
  tk_strmap_free(&tr->vocab);
  for (size_t i = 0; i < tr->n_tokens; i++) tk_buf_free(&tr->tokens[i]);
  free(tr->tokens);
  free(tr->syms);
  free(tr->off);
  free(tr->len);
  free(tr->counts);
  tk_u64map_free(&tr->pair_counts);
  free(tr->heap);
  for (size_t i = 0; i < tr->n_lists; i++) free(tr->lists[i].data);
  free(tr->lists);
  free(tr->free_lists);
  free(tr->merge_pairs);
}

/* Vocabulary, words as symbols, pair counts and the first heap. */
static dq_status setup(trainer *tr, const dq_bpe_train_config *cfg, const counter *words) {
  for (int32_t i = 0; i < cfg->n_special_tokens; i++) {
    const char *s = cfg->special_tokens[i];
    int32_t id;
    if (!s) return dq_fail(DQ_ERR_ARGUMENT, "%s: special_tokens[%d] is NULL", OP, i);
    if (*s && add_token(tr, s, strlen(s), &id)) return oom();
  }
  /* the 256 byte characters in code point order */
  const int32_t *table = tk_byte_table();
  int order[256];
  for (int i = 0; i < 256; i++) order[i] = i;
  for (int i = 1; i < 256; i++) {
    int v = order[i], j = i;
    while (j > 0 && table[order[j - 1]] > table[v]) {
      order[j] = order[j - 1];
      j--;
    }
    order[j] = v;
  }
  int32_t byte_id[256];
  for (int i = 0; i < 256; i++) {
    char u[4];
    size_t n = tk_utf8_encode(table[order[i]], u);
    if (add_token(tr, u, n, &byte_id[order[i]])) return oom();
  }
  /* words */
  tr->n_words = words->words.count;
  size_t total = 0;
  for (size_t w = 0; w < tr->n_words; w++) total += words->words.entries[w].key_len;
  tr->syms = malloc((total ? total : 1) * sizeof *tr->syms);
  tr->off = malloc((tr->n_words ? tr->n_words : 1) * sizeof *tr->off);
  tr->len = malloc((tr->n_words ? tr->n_words : 1) * sizeof *tr->len);
  tr->counts = malloc((tr->n_words ? tr->n_words : 1) * sizeof *tr->counts);
  if (!tr->syms || !tr->off || !tr->len || !tr->counts) return oom();
  size_t at = 0;
  for (size_t w = 0; w < tr->n_words; w++) {
    size_t n;
    const char *s = tk_strmap_key(&words->words, w, &n);
    tr->off[w] = (int64_t)at;
    tr->len[w] = (int32_t)n;
    tr->counts[w] = words->counts[w];
    for (size_t i = 0; i < n; i++) tr->syms[at++] = byte_id[(unsigned char)s[i]];
  }
  /* pair counts and where each pair occurs */
  tk_u64map where = {0};
  int failed = 0;
  for (size_t w = 0; w < tr->n_words && !failed; w++) {
    const int32_t *s = tr->syms + tr->off[w];
    for (int32_t i = 0; i + 1 < tr->len[w] && !failed; i++) {
      uint64_t pair = pair_of(s[i], s[i + 1]);
      failed |= pair_add(tr, pair, tr->counts[w]);
      uint64_t *slot = tk_u64map_get(&where, pair);
      int32_t list;
      if (slot) {
        list = (int32_t)*slot;
      } else {
        list = new_list(tr);
        failed |= list < 0 || tk_u64map_set(&where, pair, (uint64_t)list);
        if (failed) break;
      }
      failed |= list_add(&tr->lists[list], (int32_t)w);
    }
  }
  for (size_t i = 0; i < where.nslots && !failed; i++) {
    if (where.keys[i] == UINT64_MAX) continue;
    heap_entry e = {*pair_count(tr, where.keys[i]), where.keys[i], (int32_t)where.values[i]};
    failed |= heap_push(tr, e);
  }
  tk_u64map_free(&where);
  return failed ? oom() : DQ_OK;
}

dq_status dq_bpe_train(const dq_bpe_train_config *cfg, const char *const *files, int32_t n_files, const char *data,
                       const int64_t *text_offsets, int64_t n_texts, const char *out_dir) {
  if (!cfg || !out_dir || (n_files > 0 && !files) || n_files < 0 || n_texts < 0 || (n_texts > 0 && !text_offsets) ||
      (cfg->n_special_tokens > 0 && !cfg->special_tokens))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: NULL argument or negative count", OP);
  if (cfg->vocab_size < 1) return dq_fail(DQ_ERR_ARGUMENT, "%s: vocab_size %lld must be at least 1", OP, (long long)cfg->vocab_size);
  if (cfg->min_frequency < 0)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: min_frequency %lld must be >= 0", OP, (long long)cfg->min_frequency);
  if (n_files == 0 && n_texts == 0) return dq_fail(DQ_ERR_ARGUMENT, "%s: nothing to train on (no files and no texts)", OP);
  counter words = {0};
  dq_status st = DQ_OK;
  /* files: one sequence per line, newline included */
  for (int32_t f = 0; f < n_files && !st; f++) {
    tk_buf text = {0};
    int64_t *starts = NULL;
    size_t n_lines = 0, cap = 0;
    st = read_whole(files[f], &text);
    /* starts: every line start, then the end of the data */
    for (size_t i = 0; !st && i <= text.len; i++) {
      int boundary = i == 0 || i == text.len || text.data[i - 1] == '\n';
      if (!boundary) continue;
      if (n_lines == cap) {
        cap = cap ? cap * 2 : 4096;
        int64_t *p = realloc(starts, cap * sizeof *p);
        if (!p) { st = oom(); break; }
        starts = p;
      }
      starts[n_lines++] = (int64_t)i;
    }
    /* starts holds every line start plus the end of the data */
    if (!st && n_lines >= 1) st = count_all(text.data ? text.data : "", starts, (int64_t)n_lines - 1, &words);
    free(starts);
    tk_buf_free(&text);
  }
  if (!st && n_texts > 0) st = count_all(data ? data : "", text_offsets, n_texts, &words);
  trainer tr;
  memset(&tr, 0, sizeof tr);
  if (!st) st = setup(&tr, cfg, &words);
  tk_strmap_free(&words.words);
  free(words.counts);
  if (!st) st = merge_loop(&tr, cfg->vocab_size, cfg->min_frequency);
  if (!st) st = write_outputs(&tr, cfg, out_dir);
  trainer_free(&tr);
  return st;
}
