/*
 * bpe.c: the BPE model of `tokenizers` (models/bpe): a piece becomes one
 * symbol per character (byte-level: per byte, through GPT-2's byte table),
 * then the adjacent pair of lowest merge rank is merged, leftmost first,
 * until no pair has a merge. Unknown characters become <0xNN> tokens when
 * byte_fallback is set, else unk (consecutive ones fused when fuse_unk),
 * else they are dropped, as the library does.
 *
 * Results are cached per piece in the thread's workspace (tk_work), so the
 * cache needs no lock.
 */
#include "tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

/* Per-thread cache bounds (a full cache starts over): a few MB per thread. */
enum { CACHE_MAX_KEY = 256, CACHE_MAX_ENTRIES = 1 << 16, CACHE_MAX_IDS = 1 << 20, CACHE_MAX_KEY_BYTES = 1 << 22 };

static int heap_less(const tk_bpe_heap_item *a, const tk_bpe_heap_item *b) {
  return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static int heap_push(tk_work *w, size_t *n, tk_bpe_heap_item it) {
  if (*n == w->heap_cap) {
    size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
    tk_bpe_heap_item *p = realloc(w->heap, cap * sizeof *p);
    if (!p) return -1;
    w->heap = p;
    w->heap_cap = cap;
  }
  tk_bpe_heap_item *h = w->heap;
  size_t i = (*n)++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!heap_less(&it, &h[parent])) break;
    h[i] = h[parent];
    i = parent;
  }
  h[i] = it;
  return 0;
}

static tk_bpe_heap_item heap_pop(tk_work *w, size_t *n) {
  tk_bpe_heap_item *h = w->heap;
  tk_bpe_heap_item top = h[0], last = h[--(*n)];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
    if (!heap_less(&h[c], &last)) break;
    h[i] = h[c];
    i = c;
  }
  if (*n) h[i] = last;
  return top;
}

static int add_symbol(tk_work *w, size_t *count, int32_t id, int32_t len) {
  if (*count == w->symbols_cap) {
    size_t cap = w->symbols_cap ? w->symbols_cap * 2 : 64;
    tk_bpe_symbol *p = realloc(w->symbols, cap * sizeof *p);
    if (!p) return -1;
    w->symbols = p;
    w->symbols_cap = cap;
  }
  tk_bpe_symbol *s = &w->symbols[*count];
  s->id = id;
  s->len = len;
  s->prev = (int32_t)*count - 1;
  s->next = -1;
  if (*count) w->symbols[*count - 1].next = (int32_t)*count;
  (*count)++;
  return 0;
}

static inline const uint64_t *merge_of(const tk_bpe *m, int32_t a, int32_t b) {
  return tk_u64map_get(&m->merges, (uint64_t)(uint32_t)a << 32 | (uint32_t)b);
}

static int push_pair(const tk_bpe *m, tk_work *w, size_t *heap_n, int32_t pos) {
  const tk_bpe_symbol *s = w->symbols;
  const uint64_t *v = merge_of(m, s[pos].id, s[s[pos].next].id);
  if (!v) return 0;
  tk_bpe_heap_item it = {(uint32_t)(*v >> 32), pos, (int32_t)(uint32_t)*v};
  return heap_push(w, heap_n, it);
}

/* Symbols of a piece, before merging (models/bpe/model.rs merge_word). */
static dq_status initial_symbols(const dq_tokenizer *t, tk_work *w, const char *piece, size_t n, size_t *count) {
  const tk_bpe *m = &t->bpe;
  int32_t unk_pending = -1, unk_len = 0;
  tk_buf *key = &w->model_buf;
  for (size_t i = 0; i < n;) {
    size_t len;
    int32_t id = -1;
    if (m->byte_level) {
      len = 1;
      id = m->byte_ids[(unsigned char)piece[i]];
      if (id < 0) {
        /* the character's UTF-8 form, for the fallbacks below */
        key->len = 0;
        if (tk_buf_put_cp(key, tk_byte_table()[(unsigned char)piece[i]])) goto oom;
      }
    } else {
      tk_utf8_next(piece + i, n - i, &len);
      key->len = 0;
      if (i > 0 && m->continuing_subword_prefix &&
          tk_buf_put(key, m->continuing_subword_prefix, strlen(m->continuing_subword_prefix)))
        goto oom;
      if (tk_buf_put(key, piece + i, len)) goto oom;
      if (i + len == n && m->end_of_word_suffix && tk_buf_put(key, m->end_of_word_suffix, strlen(m->end_of_word_suffix)))
        goto oom;
      const int32_t *v = tk_strmap_get(&t->model_vocab, key->data, key->len);
      if (v) id = *v;
    }
    if (id >= 0) {
      if (unk_pending >= 0) {
        if (add_symbol(w, count, unk_pending, unk_len)) goto oom;
        unk_pending = -1;
      }
      if (add_symbol(w, count, id, (int32_t)len)) goto oom;
    } else {
      int handled = 0;
      if (m->byte_fallback) {
        int all = 1;
        for (size_t k = 0; k < key->len && all; k++) all = m->byte_token_ids[(unsigned char)key->data[k]] >= 0;
        if (all) {
          for (size_t k = 0; k < key->len; k++)
            if (add_symbol(w, count, m->byte_token_ids[(unsigned char)key->data[k]], 1)) goto oom;
          handled = 1;
        }
      }
      if (!handled && m->unk_id >= 0) {
        if (unk_pending >= 0 && m->fuse_unk) {
          unk_len += (int32_t)len;
        } else {
          if (unk_pending >= 0 && add_symbol(w, count, unk_pending, unk_len)) goto oom;
          unk_pending = m->unk_id;
          unk_len = (int32_t)len;
        }
      }
    }
    i += len;
  }
  if (unk_pending >= 0 && add_symbol(w, count, unk_pending, unk_len)) goto oom;
  return DQ_OK;
oom:
  return dq_fail(DQ_ERR_MEMORY, "tokenizer: out of memory in the BPE model");
}

static dq_status merge_and_emit(const tk_bpe *m, tk_work *w, size_t count, tk_ids *out) {
  size_t heap_n = 0;
  for (size_t i = 0; i + 1 < count; i++)
    if (push_pair(m, w, &heap_n, (int32_t)i)) goto oom;
  tk_bpe_symbol *s = w->symbols;
  while (heap_n) {
    tk_bpe_heap_item top = heap_pop(w, &heap_n);
    int32_t pos = top.pos;
    if (s[pos].len == 0 || s[pos].next < 0) continue;
    int32_t next = s[pos].next;
    const uint64_t *v = merge_of(m, s[pos].id, s[next].id);
    if (!v || (int32_t)(uint32_t)*v != top.new_id) continue; /* an expired entry */
    s[pos].id = top.new_id;
    s[pos].len += s[next].len;
    s[pos].next = s[next].next;
    s[next].len = 0;
    if (s[pos].next >= 0) s[s[pos].next].prev = pos;
    if (s[pos].prev >= 0 && push_pair(m, w, &heap_n, s[pos].prev)) goto oom;
    if (s[pos].next >= 0 && push_pair(m, w, &heap_n, pos)) goto oom;
  }
  for (int32_t i = count ? 0 : -1; i >= 0; i = s[i].next)
    if (tk_ids_push(out, s[i].id)) goto oom;
  return DQ_OK;
oom:
  return dq_fail(DQ_ERR_MEMORY, "tokenizer: out of memory in the BPE model");
}

/* Shared by the models: look a piece up in the workspace cache. */
int tk_cache_lookup(tk_work *w, const char *piece, size_t n, tk_ids *out) {
  if (n > CACHE_MAX_KEY) return 0;
  const int32_t *v = tk_strmap_get(&w->cache, piece, n);
  if (!v) return 0;
  const int32_t *p = w->cache_ids.data + *v;
  return tk_ids_put(out, p + 1, (size_t)p[0]) ? -1 : 1;
}

void tk_cache_store(tk_work *w, const char *piece, size_t n, const int32_t *ids, size_t count) {
  if (n > CACHE_MAX_KEY) return;
  if (w->cache.count >= CACHE_MAX_ENTRIES || w->cache_ids.len + count + 1 > CACHE_MAX_IDS ||
      w->cache.keys.len + n > CACHE_MAX_KEY_BYTES) {
    tk_strmap_clear(&w->cache);
    w->cache_ids.len = 0;
  }
  size_t off = w->cache_ids.len;
  if (tk_ids_push(&w->cache_ids, (int32_t)count) || tk_ids_put(&w->cache_ids, ids, count) ||
      tk_strmap_set(&w->cache, piece, n, (int32_t)off)) {
    /* a full cache only costs speed: start over */
    tk_strmap_clear(&w->cache);
    w->cache_ids.len = 0;
  }
}

dq_status tk_bpe_encode(const dq_tokenizer *t, tk_work *w, const char *piece, size_t n, tk_ids *out) {
  const tk_bpe *m = &t->bpe;
  int hit = tk_cache_lookup(w, piece, n, out);
  if (hit) return hit < 0 ? dq_fail(DQ_ERR_MEMORY, "tokenizer: out of memory in the BPE model") : DQ_OK;
  size_t first = out->len;
  if (m->ignore_merges) {
    const char *key = piece;
    size_t key_len = n;
    if (m->byte_level) {
      w->model_buf.len = 0;
      for (size_t i = 0; i < n; i++)
        if (tk_buf_put_cp(&w->model_buf, tk_byte_table()[(unsigned char)piece[i]]))
          return dq_fail(DQ_ERR_MEMORY, "tokenizer: out of memory in the BPE model");
      key = w->model_buf.data;
      key_len = w->model_buf.len;
    }
    const int32_t *v = tk_strmap_get(&t->model_vocab, key, key_len);
    if (v) {
      if (tk_ids_push(out, *v)) return dq_fail(DQ_ERR_MEMORY, "tokenizer: out of memory in the BPE model");
      return DQ_OK;
    }
  }
  size_t count = 0;
  dq_status st = initial_symbols(t, w, piece, n, &count);
  if (!st) st = merge_and_emit(m, w, count, out);
  if (!st) tk_cache_store(w, piece, n, out->data + first, out->len - first);
  return st;
}
