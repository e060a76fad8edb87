/*
 * safetensors.c: reading safetensors files and sharded checkpoints.
 *
 * Every file is mapped whole (MAP_PRIVATE, so a write into a tensor view
 * stays in this process) and its header validated completely at open, so
 * later lookups cannot fail on file content. Tensors are views wrapping the
 * mapping with dq_tensor_wrap; the mapping is reference counted: the open
 * object holds one reference and every live tensor storage one more.
 */
#include "json.h"
#include "safetensors_util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

enum { MAX_HEADER_BYTES = 100000000 };

/* ---- dtypes ---------------------------------------------------------------------
 * Every dtype the format defines, with its size in bits (F4 and F6 pack
 * several elements per byte) and what dqbart loads it as (-1: refused). */
typedef struct st_dtype {
  const char *name;
  int bits;
  int engine;
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F32", 32, DQ_F32},     {"BF16", 16, DQ_BF16},   {"F16", 16, DQ_F16},    {"I8", 8, DQ_I8},
    {"I32", 32, DQ_I32},     {"I64", 64, DQ_I64},     {"BOOL", 8, DQ_I8},     {"U8", 8, DQ_I32},
    {"F64", 64, -1},         {"I16", 16, -1},         {"U16", 16, -1},        {"U32", 32, -1},
    {"U64", 64, -1},         {"C64", 64, -1},         {"F8_E5M2", 8, -1},     {"F8_E4M3", 8, -1},
    {"F8_E8M0", 8, -1},      {"F6_E2M3", 6, -1},      {"F6_E3M2", 6, -1},     {"F4", 4, -1},
};
enum { ST_U8 = 7, ST_NUM_DTYPES = sizeof st_dtypes / sizeof st_dtypes[0] };

static int find_dtype(const char *name) {
  for (int i = 0; i < ST_NUM_DTYPES; i++)
    if (strcmp(st_dtypes[i].name, name) == 0) return i;
  return -1;
}

/* ---- mappings -------------------------------------------------------------------- */

typedef struct st_mapping {
  int refcount; /* updated atomically */
  void *base;
  size_t size;
} st_mapping;

static void mapping_retain(st_mapping *m) { __atomic_fetch_add(&m->refcount, 1, __ATOMIC_RELAXED); }

static void mapping_release(st_mapping *m) {
  if (!m || __atomic_sub_fetch(&m->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  munmap(m->base, m->size);
  free(m);
}

/* The storage release callback of tensor views. */
static void release_view(void *ctx, void *ptr, int64_t bytes) {
  (void)ptr;
  (void)bytes;
  mapping_release(ctx);
}

static dq_status map_file(const char *path, st_mapping **out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return dq_fail(DQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat s;
  if (fstat(fd, &s) != 0) {
    int err = errno;
    close(fd);
    return dq_fail(DQ_ERR_IO, "%s: cannot stat: %s", path, strerror(err));
  }
  if (S_ISDIR(s.st_mode)) {
    close(fd);
    return dq_fail(DQ_ERR_IO, "%s: is a directory; expected a .safetensors file", path);
  }
  if (s.st_size < 8) {
    close(fd);
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: file is %lld bytes, shorter than the 8-byte header length a safetensors file starts with",
                   path, (long long)s.st_size);
  }
  void *base = mmap(NULL, (size_t)s.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  int err = errno;
  close(fd);
  if (base == MAP_FAILED) return dq_fail(DQ_ERR_IO, "%s: cannot map into memory: %s", path, strerror(err));
  st_mapping *m = calloc(1, sizeof *m);
  if (!m) {
    munmap(base, (size_t)s.st_size);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
  }
  m->base = base;
  m->size = (size_t)s.st_size;
  m->refcount = 1;
  *out = m;
  return DQ_OK;
}

/* ---- the object ---------------------------------------------------------------------- */

typedef struct st_entry {
  char *name;
  int64_t *shape; /* ndim entries */
  int32_t ndim;
  int32_t dtype;  /* index into st_dtypes */
  int64_t begin, end; /* relative to the file's data area */
  int64_t file;
} st_entry;

typedef struct st_file {
  char *path;
  st_mapping *map;
  int64_t data_start; /* 8 + header length */
} st_file;

struct dq_safetensors {
  char *source; /* what messages name: the file, index or directory opened */
  st_file *files;
  int64_t nfiles;
  st_entry *entries; /* sorted by name */
  int64_t nentries;
  char **meta_keys, **meta_values;
  int64_t nmeta;
};

static void free_entry(st_entry *e) {
  free(e->name);
  free(e->shape);
}

void dq_safetensors_close(dq_safetensors *st) {
  if (!st) return;
  for (int64_t i = 0; i < st->nentries; i++) free_entry(&st->entries[i]);
  for (int64_t i = 0; i < st->nfiles; i++) {
    free(st->files[i].path);
    mapping_release(st->files[i].map);
  }
  for (int64_t i = 0; i < st->nmeta; i++) {
    free(st->meta_keys[i]);
    free(st->meta_values[i]);
  }
  free(st->entries);
  free(st->files);
  free(st->meta_keys);
  free(st->meta_values);
  free(st->source);
  free(st);
}

/* A growable array of entries. */
typedef struct entry_list {
  st_entry *items;
  int64_t len, cap;
} entry_list;

static int entry_push(entry_list *l, const st_entry *e) {
  if (l->len == l->cap) {
    int64_t cap = l->cap ? l->cap * 2 : 64;
    st_entry *n = realloc(l->items, (size_t)cap * sizeof *n);
    if (!n) return 0;
    l->items = n;
    l->cap = cap;
  }
  l->items[l->len++] = *e;
  return 1;
}

static void entry_list_free(entry_list *l) {
  for (int64_t i = 0; i < l->len; i++) free_entry(&l->items[i]);
  free(l->items);
  memset(l, 0, sizeof *l);
}

static int compare_entry_names(const void *a, const void *b) {
  return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static int compare_entry_ranges(const void *a, const void *b) {
  const st_entry *x = *(st_entry *const *)a, *y = *(st_entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

static dq_status add_metadata(dq_safetensors *st, const char *key, const char *value) {
  for (int64_t i = 0; i < st->nmeta; i++)
    if (strcmp(st->meta_keys[i], key) == 0) return DQ_OK; /* first shard wins */
  char **k = realloc(st->meta_keys, (size_t)(st->nmeta + 1) * sizeof *k);
  if (k) st->meta_keys = k;
  char **v = realloc(st->meta_values, (size_t)(st->nmeta + 1) * sizeof *v);
  if (v) st->meta_values = v;
  char *kc = strdup(key), *vc = strdup(value);
  if (!k || !v || !kc || !vc) {
    free(kc);
    free(vc);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory reading __metadata__", st->source);
  }
  st->meta_keys[st->nmeta] = kc;
  st->meta_values[st->nmeta] = vc;
  st->nmeta++;
  return DQ_OK;
}

/* ---- header validation ----------------------------------------------------------------- */

/* A non-negative integer JSON value (12.0 counts as 12). */
static int json_uint(const dq_json *v, int64_t *out) {
  if (v->type != DQ_JSON_NUMBER) return 0;
  if (v->is_integer) {
    if (v->integer < 0) return 0;
    *out = v->integer;
    return 1;
  }
  if (v->number >= 0 && v->number < 9.007199254740992e15 && v->number == (double)(int64_t)v->number) {
    *out = (int64_t)v->number;
    return 1;
  }
  return 0;
}

static dq_status parse_metadata(dq_safetensors *st, const char *path, const dq_json *meta) {
  if (meta->type != DQ_JSON_OBJECT)
    return dq_fail(DQ_ERR_FORMAT, "%s: __metadata__ must be an object of strings to strings", path);
  for (size_t i = 0; i < meta->count; i++) {
    const dq_json *m = &meta->items[i];
    for (size_t j = 0; j < i; j++)
      if (strcmp(meta->items[j].key, m->key) == 0)
        return dq_fail(DQ_ERR_FORMAT, "%s: __metadata__ key \"%s\" appears more than once", path, m->key);
    if (m->type != DQ_JSON_STRING)
      return dq_fail(DQ_ERR_FORMAT, "%s: __metadata__ key \"%s\" is not a string (__metadata__ maps strings to strings)",
                     path, m->key);
    if (strlen(m->key) != m->key_length || strlen(m->string) != m->length)
      return dq_fail(DQ_ERR_FORMAT, "%s: __metadata__ entry \"%s\" contains a NUL character", path, m->key);
    dq_status st_ = add_metadata(st, m->key, m->string);
    if (st_) return st_;
  }
  return DQ_OK;
}

/* Parse one tensor entry of the header into *e (name not yet set). */
static dq_status parse_entry(const char *path, const dq_json *v, int64_t data_size, st_entry *e) {
  const char *name = v->key;
  if (v->type != DQ_JSON_OBJECT)
    return dq_fail(DQ_ERR_FORMAT, "%s: tensor \"%s\": expected an object with dtype, shape and data_offsets", path,
                   name);
  const dq_json *dtype = dq_json_get(v, "dtype");
  const dq_json *shape = dq_json_get(v, "shape");
  const dq_json *offsets = dq_json_get(v, "data_offsets");
  const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offsets ? "data_offsets" : NULL;
  if (missing) return dq_fail(DQ_ERR_FORMAT, "%s: tensor \"%s\": missing \"%s\"", path, name, missing);
  if (dtype->type != DQ_JSON_STRING)
    return dq_fail(DQ_ERR_FORMAT, "%s: tensor \"%s\": dtype must be a string such as \"F32\"", path, name);
  e->dtype = find_dtype(dtype->string);
  if (e->dtype < 0)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: tensor \"%s\": unknown dtype \"%s\" (safetensors dtypes: F32, F16, BF16, F64, I64, I32, I16, "
                   "I8, U64, U32, U16, U8, BOOL, C64, F8_E5M2, F8_E4M3, F8_E8M0, F6_E2M3, F6_E3M2, F4)",
                   path, name, dtype->string);
  if (shape->type != DQ_JSON_ARRAY)
    return dq_fail(DQ_ERR_FORMAT, "%s: tensor \"%s\": shape must be an array of non-negative integers", path, name);
  e->ndim = (int32_t)shape->count;
  if (shape->count > 1024)
    return dq_fail(DQ_ERR_FORMAT, "%s: tensor \"%s\": shape has %zu dims", path, name, shape->count);
  e->shape = malloc((shape->count ? shape->count : 1) * sizeof *e->shape);
  if (!e->shape) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
  /* Count bits with overflow checks: a hostile shape must not wrap around
   * into a size that matches the offsets. */
  uint64_t bits = (uint64_t)st_dtypes[e->dtype].bits;
  int overflow = 0;
  for (size_t i = 0; i < shape->count; i++) {
    if (!json_uint(&shape->items[i], &e->shape[i]))
      return dq_fail(DQ_ERR_FORMAT, "%s: tensor \"%s\": shape entry %zu is not a non-negative integer", path, name, i);
    uint64_t next;
    if (__builtin_mul_overflow(bits, (uint64_t)e->shape[i], &next)) overflow = 1;
    bits = next;
  }
  if (offsets->type != DQ_JSON_ARRAY || offsets->count != 2 || !json_uint(&offsets->items[0], &e->begin) ||
      !json_uint(&offsets->items[1], &e->end))
    return dq_fail(DQ_ERR_FORMAT, "%s: tensor \"%s\": data_offsets must be [begin, end], two non-negative integers",
                   path, name);
  if (e->end < e->begin)
    return dq_fail(DQ_ERR_FORMAT, "%s: tensor \"%s\": data_offsets [%lld, %lld] end before they begin", path, name,
                   (long long)e->begin, (long long)e->end);
  if (e->end > data_size)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: tensor \"%s\": data_offsets [%lld, %lld] lie outside the data area (%lld bytes after the header)",
                   path, name, (long long)e->begin, (long long)e->end, (long long)data_size);
  uint64_t have = (uint64_t)(e->end - e->begin);
  if (overflow || bits % 8 != 0 || bits / 8 != have)
    return dq_fail(DQ_ERR_FORMAT,
                   "%s: tensor \"%s\": data_offsets [%lld, %lld] hold %llu bytes but dtype %s and shape %s need %s%llu",
                   path, name, (long long)e->begin, (long long)e->end, (unsigned long long)have,
                   st_dtypes[e->dtype].name, e->ndim <= DQ_MAX_DIMS ? dq_shape_str(e->ndim, e->shape) : "(many dims)",
                   overflow ? "more than 2^64 bits, " : "", (unsigned long long)(bits / 8));
  return DQ_OK;
}

/* No two non-empty byte ranges of one file may overlap. */
static dq_status check_overlaps(const char *path, st_entry *entries, int64_t n) {
  if (n < 2) return DQ_OK;
  st_entry **order = malloc((size_t)n * sizeof *order);
  if (!order) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
  for (int64_t i = 0; i < n; i++) order[i] = &entries[i];
  qsort(order, (size_t)n, sizeof *order, compare_entry_ranges);
  dq_status st = DQ_OK;
  const st_entry *prev = NULL;
  for (int64_t i = 0; i < n && !st; i++) {
    const st_entry *e = order[i];
    if (e->begin == e->end) continue;
    if (prev && e->begin < prev->end)
      st = dq_fail(DQ_ERR_FORMAT, "%s: tensors \"%s\" [%lld, %lld] and \"%s\" [%lld, %lld] overlap", path, prev->name,
                   (long long)prev->begin, (long long)prev->end, e->name, (long long)e->begin, (long long)e->end);
    prev = e;
  }
  free(order);
  return st;
}

/* Map one file, validate its header and append its entries (tagged with
 * file index `fi`) to `list`. */
static dq_status load_file(dq_safetensors *st, const char *path, int64_t fi, entry_list *list) {
  st_file *f = &st->files[fi];
  f->path = strdup(path);
  if (!f->path) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
  dq_status status = map_file(path, &f->map);
  if (status) return status;
  const unsigned char *b = f->map->base;
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | b[i];
  if (n > MAX_HEADER_BYTES)
    return dq_fail(DQ_ERR_FORMAT, "%s: header length %llu is over the 100000000-byte limit safetensors allows", path,
                   (unsigned long long)n);
  if (n > f->map->size - 8)
    return dq_fail(DQ_ERR_FORMAT, "%s: header length %llu reaches beyond the end of the file (%zu bytes)", path,
                   (unsigned long long)n, f->map->size);
  f->data_start = 8 + (int64_t)n;
  int64_t data_size = (int64_t)f->map->size - f->data_start;
  size_t source_len = strlen(path) + 32;
  char *source = malloc(source_len);
  if (!source) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
  snprintf(source, source_len, "%s (safetensors header)", path);
  dq_json_doc *doc = NULL;
  status = dq_json_parse((const char *)b + 8, (size_t)n, source, &doc);
  free(source);
  if (status) return status;
  const dq_json *root = dq_json_root(doc);
  if (root->type != DQ_JSON_OBJECT) {
    dq_json_free(doc);
    return dq_fail(DQ_ERR_FORMAT, "%s: the header is not a JSON object", path);
  }
  int64_t first = list->len;
  int seen_metadata = 0;
  for (size_t i = 0; i < root->count && !status; i++) {
    const dq_json *v = &root->items[i];
    if (strlen(v->key) != v->key_length) {
      status = dq_fail(DQ_ERR_FORMAT, "%s: a tensor name contains a NUL character (\"%s\\u0000...\")", path, v->key);
    } else if (strcmp(v->key, "__metadata__") == 0) {
      status = seen_metadata++ ? dq_fail(DQ_ERR_FORMAT, "%s: __metadata__ appears more than once in the header", path)
                               : parse_metadata(st, path, v);
    } else {
      st_entry e = {.file = fi};
      status = parse_entry(path, v, data_size, &e);
      if (!status && !(e.name = strdup(v->key))) status = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
      if (!status && !entry_push(list, &e)) status = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
      if (status) free_entry(&e);
    }
  }
  dq_json_free(doc);
  if (status) return status;
  int64_t count = list->len - first;
  if (count == 0) return DQ_OK;
  st_entry *mine = list->items + first;
  qsort(mine, (size_t)count, sizeof *mine, compare_entry_names);
  for (int64_t i = 1; i < count; i++)
    if (strcmp(mine[i - 1].name, mine[i].name) == 0)
      return dq_fail(DQ_ERR_FORMAT, "%s: tensor name \"%s\" appears more than once in the header", path, mine[i].name);
  return check_overlaps(path, mine, count);
}

static dq_status new_object(dq_safetensors **out, const char *source, int64_t nfiles) {
  dq_safetensors *st = calloc(1, sizeof *st);
  if (st) st->files = calloc((size_t)(nfiles ? nfiles : 1), sizeof *st->files);
  if (st) st->source = strdup(source);
  if (!st || !st->files || !st->source) {
    dq_safetensors_close(st);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", source);
  }
  st->nfiles = nfiles;
  *out = st;
  return DQ_OK;
}

static void adopt_entries(dq_safetensors *st, entry_list *list) {
  st->entries = list->items;
  st->nentries = list->len;
  memset(list, 0, sizeof *list);
}

static dq_status open_single(dq_safetensors **out, const char *path) {
  dq_safetensors *st = NULL;
  dq_status status = new_object(&st, path, 1);
  if (status) return status;
  entry_list list = {0};
  status = load_file(st, path, 0, &list);
  if (status) {
    entry_list_free(&list);
    dq_safetensors_close(st);
    return status;
  }
  adopt_entries(st, &list);
  *out = st;
  return DQ_OK;
}

static int compare_strings(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Find `name` among the entries of file `fi` in the name-sorted run
 * [lo, hi) of a list sorted by file then name. */
static const st_entry *find_in_run(const st_entry *items, int64_t lo, int64_t hi, const char *name) {
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    int c = strcmp(items[mid].name, name);
    if (c == 0) return &items[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

static dq_status open_index(dq_safetensors **out, const char *index_path) {
  dq_json_doc *doc = NULL;
  dq_status status = dq_json_parse_file(index_path, &doc);
  if (status) return status;
  const dq_json *root = dq_json_root(doc);
  const dq_json *map = dq_json_get(root, "weight_map");
  if (root->type != DQ_JSON_OBJECT || !map || map->type != DQ_JSON_OBJECT) {
    dq_json_free(doc);
    return dq_fail(DQ_ERR_FORMAT, "%s: expected an object with \"weight_map\": {tensor name: shard file}", index_path);
  }
  /* The distinct shard files, sorted. */
  char **shards = calloc(map->count ? map->count : 1, sizeof *shards);
  size_t nshards = 0;
  if (!shards) status = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", index_path);
  for (size_t i = 0; i < map->count && !status; i++) {
    const dq_json *v = &map->items[i];
    if (v->type != DQ_JSON_STRING || v->length == 0 || strlen(v->string) != v->length)
      status = dq_fail(DQ_ERR_FORMAT, "%s: weight_map entry \"%s\" must name a shard file", index_path, v->key);
    else if (strlen(v->key) != v->key_length)
      status = dq_fail(DQ_ERR_FORMAT, "%s: a weight_map name contains a NUL character", index_path);
    else
      shards[nshards++] = (char *)v->string;
  }
  if (!status) {
    qsort(shards, nshards, sizeof *shards, compare_strings);
    size_t unique = 0;
    for (size_t i = 0; i < nshards; i++)
      if (unique == 0 || strcmp(shards[unique - 1], shards[i]) != 0) shards[unique++] = shards[i];
    nshards = unique;
  }
  dq_safetensors *st = NULL;
  entry_list all = {0}, chosen = {0};
  int64_t *run_start = NULL;
  char *dir = dq_path_dirname(index_path);
  if (!status && !dir) status = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", index_path);
  if (!status) status = new_object(&st, index_path, (int64_t)nshards);
  if (!status && !(run_start = calloc(nshards + 1, sizeof *run_start)))
    status = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", index_path);
  for (size_t i = 0; i < nshards && !status; i++) {
    char *path = dq_path_join(dir, shards[i]);
    if (!path) {
      status = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", index_path);
      break;
    }
    run_start[i] = all.len;
    status = load_file(st, path, (int64_t)i, &all);
    if (status) dq_fail_context(status, "%s: shard %s: ", index_path, shards[i]);
    free(path);
  }
  if (!status) run_start[nshards] = all.len;
  /* Keep exactly what weight_map names, taken from the shard it names. */
  for (size_t i = 0; i < map->count && !status; i++) {
    const dq_json *v = &map->items[i];
    char **hit = bsearch(&v->string, shards, nshards, sizeof *shards, compare_strings);
    size_t fi = (size_t)(hit - shards);
    const st_entry *e = find_in_run(all.items, run_start[fi], run_start[fi + 1], v->key);
    if (!e) {
      status = dq_fail(DQ_ERR_FORMAT, "%s: weight_map puts tensor \"%s\" in %s, but that shard has no such tensor",
                       index_path, v->key, v->string);
      break;
    }
    st_entry copy = *e;
    copy.name = strdup(e->name);
    copy.shape = malloc((size_t)(e->ndim ? e->ndim : 1) * sizeof *copy.shape);
    if (copy.shape) memcpy(copy.shape, e->shape, (size_t)e->ndim * sizeof *copy.shape);
    if (!copy.name || !copy.shape || !entry_push(&chosen, &copy)) {
      free_entry(&copy);
      status = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", index_path);
    }
  }
  if (!status && chosen.len > 0) {
    qsort(chosen.items, (size_t)chosen.len, sizeof *chosen.items, compare_entry_names);
    for (int64_t i = 1; i < chosen.len && !status; i++)
      if (strcmp(chosen.items[i - 1].name, chosen.items[i].name) == 0)
        status = dq_fail(DQ_ERR_FORMAT, "%s: tensor name \"%s\" appears more than once in weight_map", index_path,
                         chosen.items[i].name);
  }
  entry_list_free(&all);
  free(run_start);
  free(shards);
  free(dir);
  dq_json_free(doc);
  if (status) {
    entry_list_free(&chosen);
    dq_safetensors_close(st);
    return status;
  }
  adopt_entries(st, &chosen);
  *out = st;
  return DQ_OK;
}

dq_status dq_safetensors_open(dq_safetensors **out, const char *path) {
  if (!out || !path) return dq_fail(DQ_ERR_ARGUMENT, "dq_safetensors_open: out and path must not be NULL");
  *out = NULL;
  if (!dq_path_exists(path)) return dq_fail(DQ_ERR_IO, "%s: cannot open: %s", path, strerror(ENOENT));
  if (dq_path_is_dir(path)) {
    char *single = dq_path_join(path, "model.safetensors");
    char *index = dq_path_join(path, "model.safetensors.index.json");
    dq_status status;
    if (!single || !index) status = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", path);
    else if (dq_path_exists(single)) status = open_single(out, single);
    else if (dq_path_exists(index)) status = open_index(out, index);
    else
      status = dq_fail(DQ_ERR_IO, "%s: directory holds neither model.safetensors nor model.safetensors.index.json",
                       path);
    free(single);
    free(index);
    return status;
  }
  size_t len = strlen(path);
  if (len >= 5 && strcmp(path + len - 5, ".json") == 0) return open_index(out, path);
  return open_single(out, path);
}

/* ---- queries ------------------------------------------------------------------------------ */

int64_t dq_safetensors_count(const dq_safetensors *st) { return st ? st->nentries : 0; }
int64_t dq_safetensors_file_count(const dq_safetensors *st) { return st ? st->nfiles : 0; }

const char *dq_safetensors_name(const dq_safetensors *st, int64_t index) {
  if (!st || index < 0 || index >= st->nentries) return NULL;
  return st->entries[index].name;
}

static const st_entry *lookup(const dq_safetensors *st, const char *name) {
  if (!st || !name) return NULL;
  return find_in_run(st->entries, 0, st->nentries, name);
}

int dq_safetensors_contains(const dq_safetensors *st, const char *name) { return lookup(st, name) != NULL; }

static dq_status not_found(const dq_safetensors *st, const char *op, const char *name) {
  return dq_fail(DQ_ERR_ARGUMENT, "%s: %s: no tensor named \"%s\" (it holds %lld tensors)", op, st->source, name,
                 (long long)st->nentries);
}

static dq_status check_object(const char *op, const dq_safetensors *st, const char *name) {
  if (!st) return dq_fail(DQ_ERR_STATE, "%s: the safetensors object is NULL (closed?)", op);
  if (!name) return dq_fail(DQ_ERR_ARGUMENT, "%s: name is NULL", op);
  return DQ_OK;
}

static dq_status check_dims(const char *op, const dq_safetensors *st, const st_entry *e) {
  if (e->ndim > DQ_MAX_DIMS)
    return dq_fail(DQ_ERR_SHAPE, "%s: %s: tensor \"%s\" has %d dims; dqbart tensors have at most %d", op,
                   st->files[e->file].path, e->name, e->ndim, DQ_MAX_DIMS);
  return DQ_OK;
}

dq_status dq_safetensors_info(const dq_safetensors *st, const char *name, dq_safetensors_entry *info) {
  dq_status status = check_object("dq_safetensors_info", st, name);
  if (status) return status;
  if (!info) return dq_fail(DQ_ERR_ARGUMENT, "dq_safetensors_info: info is NULL");
  const st_entry *e = lookup(st, name);
  if (!e) return not_found(st, "dq_safetensors_info", name);
  if ((status = check_dims("dq_safetensors_info", st, e))) return status;
  memset(info, 0, sizeof *info);
  info->ndim = e->ndim;
  for (int i = 0; i < e->ndim; i++) info->shape[i] = e->shape[i];
  info->dtype = st_dtypes[e->dtype].engine;
  snprintf(info->file_dtype, sizeof info->file_dtype, "%s", st_dtypes[e->dtype].name);
  info->data_offset = st->files[e->file].data_start + e->begin;
  info->bytes = e->end - e->begin;
  info->path = st->files[e->file].path;
  return DQ_OK;
}

/* A CPU tensor holding the entry's values: a view of the mapping when the
 * bytes can be used as they are, else a converted or aligned copy. */
static dq_status read_entry(const dq_safetensors *st, const st_entry *e, dq_tensor *out) {
  const st_file *f = &st->files[e->file];
  char *ptr = (char *)f->map->base + f->data_start + e->begin;
  int64_t bytes = e->end - e->begin;
  int dtype = st_dtypes[e->dtype].engine;
  if (e->dtype == ST_U8) {
    dq_status status = dq_tensor_empty(out, e->ndim, e->shape, DQ_I32, DQ_CPU);
    if (status) return status;
    const unsigned char *src = (const unsigned char *)ptr;
    int32_t *dst = out->data;
    for (int64_t i = 0; i < bytes; i++) dst[i] = src[i];
    return DQ_OK;
  }
  if ((uintptr_t)ptr % (uintptr_t)dq_dtype_size(dtype) != 0) {
    /* Files whose header length is not a multiple of 8 misalign the data;
     * compute code may assume aligned elements, so copy. */
    dq_status status = dq_tensor_empty(out, e->ndim, e->shape, dtype, DQ_CPU);
    if (!status && bytes) memcpy(out->data, ptr, (size_t)bytes);
    return status;
  }
  mapping_retain(f->map);
  dq_status status = dq_tensor_wrap(out, ptr, bytes, e->ndim, e->shape, dtype, DQ_CPU, release_view, f->map);
  if (status) mapping_release(f->map);
  return status;
}

dq_status dq_safetensors_tensor(dq_safetensors *st, const char *name, dq_tensor *out) {
  const char *op = "dq_safetensors_tensor";
  dq_status status = check_object(op, st, name);
  if (status) return status;
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "%s: out is NULL", op);
  const st_entry *e = lookup(st, name);
  if (!e) return not_found(st, op, name);
  if ((status = check_dims(op, st, e))) return status;
  const char *path = st->files[e->file].path;
  if (st_dtypes[e->dtype].engine < 0)
    return dq_fail(DQ_ERR_DTYPE,
                   "%s: %s: tensor \"%s\" has dtype %s, which dqbart does not load (it loads F32, BF16, F16, I8, I32, "
                   "I64, BOOL as i8 and U8 as i32)",
                   op, path, name, st_dtypes[e->dtype].name);
  if (!dq_tensor_defined(out)) return read_entry(st, e, out);
  int same = out->ndim == e->ndim;
  for (int i = 0; same && i < e->ndim; i++) same = out->shape[i] == e->shape[i];
  if (!same)
    return dq_fail(DQ_ERR_SHAPE, "%s: %s: tensor \"%s\" is %s %s but the destination is %s", op, path, name,
                   dq_shape_str(e->ndim, e->shape), st_dtypes[e->dtype].name, dq_desc(out));
  dq_tensor view = {0};
  if (!(status = read_entry(st, e, &view))) status = dq_copy(out, &view);
  if (status) dq_fail_context(status, "%s: loading tensor \"%s\" of %s: ", op, name, path);
  dq_tensor_release(&view);
  return status;
}

int64_t dq_safetensors_metadata_count(const dq_safetensors *st) { return st ? st->nmeta : 0; }

const char *dq_safetensors_metadata_key(const dq_safetensors *st, int64_t index) {
  return st && index >= 0 && index < st->nmeta ? st->meta_keys[index] : NULL;
}

const char *dq_safetensors_metadata_value(const dq_safetensors *st, int64_t index) {
  return st && index >= 0 && index < st->nmeta ? st->meta_values[index] : NULL;
}

const char *dq_safetensors_metadata_get(const dq_safetensors *st, const char *key) {
  if (!st || !key) return NULL;
  for (int64_t i = 0; i < st->nmeta; i++)
    if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
  return NULL;
}
