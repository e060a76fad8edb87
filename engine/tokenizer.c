/*
 * tokenizer.c: the encode pipeline (see tokenizer_internal.h), the
 * per-thread workspaces, and the public entry points.
 */
#include "tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static dq_status oom(const char *op) { return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op); }

/* ---- workspaces ------------------------------------------------------------------- */

tk_work *tk_work_acquire(const dq_tokenizer *t) {
  dq_tokenizer *m = (dq_tokenizer *)t; /* the pool is the only mutable part */
  pthread_mutex_lock(&m->pool_lock);
  tk_work *w = m->pool;
  if (w) m->pool = w->next;
  pthread_mutex_unlock(&m->pool_lock);
  if (!w) w = calloc(1, sizeof *w);
  return w;
}

void tk_work_release(const dq_tokenizer *t, tk_work *w) {
  if (!w) return;
  dq_tokenizer *m = (dq_tokenizer *)t;
  pthread_mutex_lock(&m->pool_lock);
  w->next = m->pool;
  m->pool = w;
  pthread_mutex_unlock(&m->pool_lock);
}

void tk_work_free(tk_work *w) {
  tk_buf_free(&w->norm_a);
  tk_buf_free(&w->norm_b);
  tk_buf_free(&w->pre);
  tk_buf_free(&w->scratch);
  tk_buf_free(&w->model_buf);
  tk_ids_free(&w->tmp_ids);
  free(w->seg_raw.data);
  free(w->seg_norm.data);
  tk_ranges_free(&w->pieces);
  tk_ids_free(&w->ids);
  tk_strmap_free(&w->cache);
  tk_ids_free(&w->cache_ids);
  free(w->symbols);
  free(w->heap);
  free(w->best_score);
  free(w->best_start);
  free(w->best_id);
  free(w);
}

/* ---- pipeline ------------------------------------------------------------------------ */

static dq_status model_encode(const dq_tokenizer *t, tk_work *w, const char *s, size_t n) {
  if (!n) return DQ_OK;
  return t->model_kind == TK_MODEL_BPE ? tk_bpe_encode(t, w, s, n, &w->ids) : tk_unigram_encode(t, w, s, n, &w->ids);
}

/* Pre-tokenize one normalized segment and run the model on its pieces.
 * at_origin: the segment starts at offset 0 of the original text. */
static dq_status encode_segment(const dq_tokenizer *t, tk_work *w, const char *s, size_t n, int at_origin) {
  const tk_pretok *p = &t->pre;
  if (p->kind == TK_PRE_NONE) return model_encode(t, w, s, n);
  if (p->kind == TK_PRE_BYTE_LEVEL) {
    if (p->add_prefix_space && s[0] != ' ') {
      w->pre.len = 0;
      if (tk_buf_putc(&w->pre, ' ') || tk_buf_put(&w->pre, s, n)) return oom("tokenizer");
      s = w->pre.data;
      n = w->pre.len;
    }
    if (!p->use_regex) return model_encode(t, w, s, n);
    w->pieces.len = 0;
    if (tk_gpt2_split(s, n, &w->pieces)) return oom("tokenizer");
    for (size_t i = 0; i < w->pieces.len; i++) {
      dq_status st = model_encode(t, w, s + w->pieces.data[i].start, w->pieces.data[i].len);
      if (st) return st;
    }
    return DQ_OK;
  }
  /* Metaspace: spaces become the replacement, maybe one is prepended, and
   * the text is cut before every replacement character */
  char rep[4];
  size_t rep_len = tk_utf8_encode(p->replacement, rep);
  tk_buf *b = &w->pre;
  b->len = 0;
  for (size_t i = 0; i < n;) {
    const char *sp = memchr(s + i, ' ', n - i);
    size_t end = sp ? (size_t)(sp - s) : n;
    if (tk_buf_put(b, s + i, end - i) || (sp && tk_buf_put(b, rep, rep_len))) return oom("tokenizer");
    i = end + 1;
  }
  int starts = b->len >= rep_len && memcmp(b->data, rep, rep_len) == 0;
  int prepend = !starts && (p->prepend_scheme == TK_PREPEND_ALWAYS || (p->prepend_scheme == TK_PREPEND_FIRST && at_origin));
  if (prepend) {
    if (tk_buf_reserve(b, rep_len)) return oom("tokenizer");
    memmove(b->data + rep_len, b->data, b->len);
    memcpy(b->data, rep, rep_len);
    b->len += rep_len;
  }
  if (!p->split) return model_encode(t, w, b->data, b->len);
  size_t start = 0;
  for (size_t i = rep_len; i + rep_len <= b->len;) {
    if (memcmp(b->data + i, rep, rep_len) == 0) {
      dq_status st = model_encode(t, w, b->data + start, i - start);
      if (st) return st;
      start = i;
      i += rep_len;
    } else {
      i++;
    }
  }
  return model_encode(t, w, b->data + start, b->len - start);
}

/* Normalize s[0..n) into one of the workspace buffers. */
static dq_status normalize(const dq_tokenizer *t, tk_work *w, const char *s, size_t n, const char **out, size_t *out_len,
                           size_t *lead) {
  const char *cur = s;
  size_t cur_len = n;
  tk_buf *bufs[2] = {&w->norm_a, &w->norm_b};
  for (size_t k = 0; k < t->n_norm; k++) {
    tk_buf *dst = bufs[k & 1];
    dq_status st = tk_norm_apply(&t->norm[k], cur, cur_len, dst, lead);
    if (st) return st;
    cur = dst->data ? dst->data : "";
    cur_len = dst->len;
  }
  *out = cur;
  *out_len = cur_len;
  return DQ_OK;
}

static dq_status post_process(const dq_tokenizer *t, tk_work *w) {
  tk_ids *text = &w->tmp_ids;
  text->len = 0;
  if (tk_ids_put(text, w->ids.data, w->ids.len)) return oom("tokenizer");
  w->ids.len = 0;
  for (int k = 0; k < t->n_template; k++) {
    const tk_template_item *it = &t->template_items[k];
    int failed = it->is_sequence ? tk_ids_put(&w->ids, text->data, text->len) : tk_ids_put(&w->ids, it->ids, (size_t)it->n_ids);
    if (failed) return oom("tokenizer");
  }
  return DQ_OK;
}

dq_status tk_encode_text(const dq_tokenizer *t, tk_work *w, const char *text, size_t n, int add_special) {
  w->ids.len = 0;
  if (tk_utf8_valid_prefix(text, n) != n) {
    w->scratch.len = 0;
    if (tk_utf8_lossy(&w->scratch, text, n)) return oom("tokenizer");
    text = w->scratch.data;
    n = w->scratch.len;
  }
  w->seg_raw.len = 0;
  if (tk_split_added(t, &t->raw_matcher, text, n, &w->seg_raw)) return oom("tokenizer");
  int want_lead = t->pre.kind == TK_PRE_METASPACE && t->pre.prepend_scheme == TK_PREPEND_FIRST;
  for (size_t r = 0; r < w->seg_raw.len; r++) {
    tk_segment seg = w->seg_raw.data[r];
    if (seg.added >= 0) {
      if (tk_ids_push(&w->ids, t->added[seg.added].id)) return oom("tokenizer");
      continue;
    }
    const char *ns;
    size_t nn, lead = 0;
    if (want_lead && seg.start == 0) tk_utf8_next(text, n, &lead);
    dq_status st = normalize(t, w, text + seg.start, seg.len, &ns, &nn, want_lead ? &lead : NULL);
    if (st) return st;
    w->seg_norm.len = 0;
    if (tk_split_added(t, &t->norm_matcher, ns, nn, &w->seg_norm)) return oom("tokenizer");
    for (size_t k = 0; k < w->seg_norm.len; k++) {
      tk_segment sub = w->seg_norm.data[k];
      if (sub.added >= 0) {
        if (tk_ids_push(&w->ids, t->added[sub.added].id)) return oom("tokenizer");
        continue;
      }
      int at_origin = seg.start == 0 && sub.start == 0 && lead > 0;
      st = encode_segment(t, w, ns + sub.start, sub.len, at_origin);
      if (st) return st;
    }
  }
  if (add_special && t->n_template) return post_process(t, w);
  return DQ_OK;
}

/* ---- public API ---------------------------------------------------------------------- */

static int is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

dq_status dq_tokenizer_load(const char *path, dq_tokenizer **out) {
  if (!path || !out) return dq_fail(DQ_ERR_ARGUMENT, "dq_tokenizer_load: NULL argument");
  *out = NULL;
  dq_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return oom("dq_tokenizer_load");
  pthread_mutex_init(&t->pool_lock, NULL);
  t->pad_id = t->bos_id = t->eos_id = t->unk_id = t->mask_id = -1;
  dq_status st;
  size_t plen = strlen(path);
  char *buf = malloc(plen + 32);
  if (!buf) {
    tk_tokenizer_destroy(t);
    return oom("dq_tokenizer_load");
  }
  if (is_dir(path)) {
    snprintf(buf, plen + 32, "%s/tokenizer.json", path);
    if (is_file(buf)) {
      st = tk_load_tokenizer_json(t, buf, path);
    } else {
      snprintf(buf, plen + 32, "%s/vocab.json", path);
      if (is_file(buf)) {
        st = tk_load_vocab_merges(t, path);
      } else {
        st = dq_fail(DQ_ERR_IO, "dq_tokenizer_load: %s holds neither tokenizer.json nor vocab.json + merges.txt", path);
      }
    }
  } else if (is_file(path)) {
    /* a tokenizer.json path: its directory may hold tokenizer_config.json */
    const char *slash = strrchr(path, '/');
    if (slash) {
      memcpy(buf, path, (size_t)(slash - path));
      buf[slash - path] = '\0';
    } else {
      strcpy(buf, ".");
    }
    st = tk_load_tokenizer_json(t, path, buf);
  } else {
    st = dq_fail(DQ_ERR_IO, "dq_tokenizer_load: %s: no such file or directory", path);
  }
  free(buf);
  if (st) {
    tk_tokenizer_destroy(t);
    return st;
  }
  *out = t;
  return DQ_OK;
}

void dq_tokenizer_free(dq_tokenizer *t) {
  if (t) tk_tokenizer_destroy(t);
}

int32_t dq_tokenizer_vocab_size(const dq_tokenizer *t) { return t ? t->vocab_size : 0; }

int32_t dq_tokenizer_role_id(const dq_tokenizer *t, const char *role) {
  if (!t || !role) return -1;
  if (!strcmp(role, "pad")) return t->pad_id;
  if (!strcmp(role, "bos")) return t->bos_id;
  if (!strcmp(role, "eos")) return t->eos_id;
  if (!strcmp(role, "unk")) return t->unk_id;
  if (!strcmp(role, "mask")) return t->mask_id;
  return -1;
}

int32_t dq_tokenizer_token_to_id(const dq_tokenizer *t, const char *token, int64_t len) {
  if (!t || !token || len < 0) return -1;
  for (size_t i = 0; i < t->n_added; i++)
    if (t->added[i].len == (size_t)len && memcmp(t->added[i].content, token, (size_t)len) == 0) return t->added[i].id;
  const int32_t *v = tk_strmap_get(&t->model_vocab, token, (size_t)len);
  return v ? *v : -1;
}

const char *dq_tokenizer_id_to_token(const dq_tokenizer *t, int32_t id, int64_t *len) {
  if (!t || id < 0 || id >= t->vocab_size || !t->id_token[id]) return NULL;
  if (len) *len = t->id_token_len[id];
  return t->id_token[id];
}

int dq_tokenizer_is_special(const dq_tokenizer *t, int32_t id) {
  if (!t || id < 0 || id >= t->vocab_size || t->added_index[id] < 0) return 0;
  return t->added[t->added_index[id]].special;
}

dq_status dq_tokenizer_set_template(dq_tokenizer *t, const char *single) {
  if (!t || !single) return dq_fail(DQ_ERR_ARGUMENT, "dq_tokenizer_set_template: NULL argument");
  tk_template_item items[TK_MAX_TEMPLATE];
  memset(items, 0, sizeof items);
  int n = 0, seq = 0;
  const char *p = single;
  dq_status st = DQ_OK;
  while (*p) {
    while (*p == ' ') p++;
    if (!*p) break;
    const char *e = p;
    while (*e && *e != ' ') e++;
    size_t len = (size_t)(e - p);
    if (n == TK_MAX_TEMPLATE) {
      st = dq_fail(DQ_ERR_ARGUMENT, "dq_tokenizer_set_template: \"%s\" has more than %d items", single, TK_MAX_TEMPLATE);
      break;
    }
    tk_template_item *it = &items[n];
    memset(it, 0, sizeof *it);
    if ((len == 2 && (!memcmp(p, "$A", 2) || !memcmp(p, "$0", 2))) || (len == 1 && *p == '$')) {
      it->is_sequence = 1;
      seq++;
    } else {
      int32_t id = dq_tokenizer_token_to_id(t, p, (int64_t)len);
      if (id < 0) {
        st = dq_fail(DQ_ERR_ARGUMENT, "dq_tokenizer_set_template: \"%.*s\" in \"%s\" is not a token of the vocabulary",
                     (int)len, p, single);
        break;
      }
      it->ids = malloc(sizeof *it->ids);
      if (!it->ids) {
        st = oom("dq_tokenizer_set_template");
        break;
      }
      it->ids[0] = id;
      it->n_ids = 1;
    }
    n++;
    p = e;
  }
  if (!st && n > 0 && seq != 1)
    st = dq_fail(DQ_ERR_ARGUMENT, "dq_tokenizer_set_template: \"%s\" must hold $A exactly once (found %d)", single, seq);
  if (st) {
    for (int k = 0; k < TK_MAX_TEMPLATE; k++) free(items[k].ids);
    return st;
  }
  for (int k = 0; k < t->n_template; k++) free(t->template_items[k].ids);
  memcpy(t->template_items, items, (size_t)n * sizeof *items);
  t->n_template = n;
  return DQ_OK;
}

dq_status dq_tokenizer_encode(const dq_tokenizer *t, const char *text, int64_t len, int flags, int32_t *ids,
                              int64_t capacity, int64_t *count) {
  if (!t || (!text && len) || len < 0 || !count || (capacity > 0 && !ids))
    return dq_fail(DQ_ERR_ARGUMENT, "dq_tokenizer_encode: bad arguments (NULL pointer or negative length)");
  tk_work *w = tk_work_acquire(t);
  if (!w) return oom("dq_tokenizer_encode");
  dq_status st = tk_encode_text(t, w, text ? text : "", (size_t)len, flags & DQ_TOKENIZE_SPECIAL);
  if (!st) {
    *count = (int64_t)w->ids.len;
    size_t k = w->ids.len < (size_t)(capacity > 0 ? capacity : 0) ? w->ids.len : (size_t)(capacity > 0 ? capacity : 0);
    if (k) memcpy(ids, w->ids.data, k * sizeof *ids);
  }
  tk_work_release(t, w);
  return st;
}

dq_status dq_tokenizer_encode_batch(const dq_tokenizer *t, const char *data, const int64_t *text_offsets, int64_t n,
                                    int flags, dq_tensor *ids, dq_tensor *offsets) {
  const char *op = "dq_tokenizer_encode_batch";
  if (!t || !text_offsets || !ids || !offsets || n < 0) return dq_fail(DQ_ERR_ARGUMENT, "%s: NULL argument or n < 0", op);
  if (dq_tensor_defined(ids) || dq_tensor_defined(offsets))
    return dq_fail(DQ_ERR_ARGUMENT, "%s: the ids and offsets outputs must be undefined (they are allocated here)", op);
  for (int64_t i = 0; i < n; i++)
    if (text_offsets[i + 1] < text_offsets[i])
      return dq_fail(DQ_ERR_ARGUMENT, "%s: text_offsets[%lld] = %lld is below text_offsets[%lld] = %lld", op,
                     (long long)(i + 1), (long long)text_offsets[i + 1], (long long)i, (long long)text_offsets[i]);
  if (n > 0 && text_offsets[n] > text_offsets[0] && !data) return dq_fail(DQ_ERR_ARGUMENT, "%s: data is NULL", op);
  int nthreads = 1;
#ifdef _OPENMP
  nthreads = omp_get_max_threads();
#endif
  /* pass 1: each thread encodes a share of the texts into its own arena */
  tk_ids *arenas = calloc((size_t)nthreads, sizeof *arenas);
  int64_t *where = malloc((size_t)(n ? n : 1) * 2 * sizeof *where); /* (thread << 40 | offset, count) */
  if (!arenas || !where) {
    free(arenas);
    free(where);
    return oom(op);
  }
  dq_status first_error = DQ_OK;
  char message[1024] = "";
#pragma omp parallel num_threads(nthreads) if (n > 1)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    tk_work *w = tk_work_acquire(t);
    tk_ids *arena = &arenas[tid];
    int failed = w == NULL;
#pragma omp for schedule(dynamic, 64)
    for (int64_t i = 0; i < n; i++) {
      if (failed) continue;
      const char *s = data ? data + text_offsets[i] : "";
      dq_status st = tk_encode_text(t, w, s, (size_t)(text_offsets[i + 1] - text_offsets[i]), flags & DQ_TOKENIZE_SPECIAL);
      if (!st && tk_ids_put(arena, w->ids.data, w->ids.len)) st = oom(op);
      if (st) {
        failed = 1;
#pragma omp critical(dq_tokenizer_batch_error)
        {
          if (!first_error) {
            first_error = st;
            snprintf(message, sizeof message, "%s", dq_last_error());
          }
        }
        continue;
      }
      where[2 * i] = ((int64_t)tid << 40) | (int64_t)(arena->len - w->ids.len);
      where[2 * i + 1] = (int64_t)w->ids.len;
    }
    if (!w) {
#pragma omp critical(dq_tokenizer_batch_error)
      if (!first_error) {
        first_error = DQ_ERR_MEMORY;
        snprintf(message, sizeof message, "%s: out of memory", op);
      }
    }
    tk_work_release(t, w);
  }
  dq_status st = first_error;
  if (st) {
    dq_fail(st, "%s", message);
  } else {
    /* pass 2: offsets, then copy into one tensor */
    int64_t shape = n + 1;
    st = dq_tensor_empty(offsets, 1, &shape, DQ_I64, DQ_CPU);
    if (!st) {
      int64_t *off = offsets->data;
      off[0] = 0;
      for (int64_t i = 0; i < n; i++) off[i + 1] = off[i] + where[2 * i + 1];
      int64_t total = off[n];
      st = dq_tensor_empty(ids, 1, &total, DQ_I32, DQ_CPU);
      if (st) {
        dq_tensor_release(offsets);
      } else {
        int32_t *dst = ids->data;
#pragma omp parallel for schedule(static) if (n > 4096)
        for (int64_t i = 0; i < n; i++) {
          const tk_ids *a = &arenas[where[2 * i] >> 40];
          int64_t from = where[2 * i] & ((1ll << 40) - 1);
          memcpy(dst + off[i], a->data + from, (size_t)where[2 * i + 1] * sizeof *dst);
        }
      }
    }
  }
  for (int k = 0; k < nthreads; k++) tk_ids_free(&arenas[k]);
  free(arenas);
  free(where);
  return st;
}

dq_status dq_tokenizer_decode(const dq_tokenizer *t, const int32_t *ids, int64_t n, int skip_special, char **text,
                              int64_t *len) {
  if (!t || (!ids && n) || n < 0 || !text) return dq_fail(DQ_ERR_ARGUMENT, "dq_tokenizer_decode: NULL argument or n < 0");
  tk_buf out = {0};
  dq_status st = tk_decode(t, ids, n, skip_special, &out);
  if (!st && tk_buf_reserve(&out, 1)) st = oom("dq_tokenizer_decode");
  if (st) {
    tk_buf_free(&out);
    return st;
  }
  out.data[out.len] = '\0';
  *text = out.data;
  if (len) *len = (int64_t)out.len;
  return DQ_OK;
}

void dq_tokenizer_free_text(char *text) { free(text); }
