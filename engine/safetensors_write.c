/*
 * safetensors_write.c: writing safetensors files byte-identical to the
 * safetensors library's serialize (same tensor order, header text and
 * padding), and Hugging Face checkpoints sharded as huggingface_hub's
 * split_state_dict_into_shards does. Every file goes through a temporary
 * file, fsync and rename (safetensors_util.c).
 */
#include "safetensors_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* safetensors sorts by its Dtype enum, descending; the enum lists dtypes
 * in increasing alignment: ... I8, ..., F16, BF16, I32, U32, F32, F64, I64. */
static int dtype_rank(int dtype) {
  switch (dtype) {
  case DQ_I64: return 5;
  case DQ_F32: return 4;
  case DQ_I32: return 3;
  case DQ_BF16: return 2;
  case DQ_F16: return 1;
  default: return 0; /* DQ_I8 */
  }
}

static const char *file_dtype_name(int dtype) {
  static const char *names[DQ_NUM_DTYPES] = {[DQ_F32] = "F32", [DQ_BF16] = "BF16", [DQ_F16] = "F16",
                                             [DQ_I8] = "I8",   [DQ_I32] = "I32",   [DQ_I64] = "I64"};
  return names[dtype];
}

typedef struct item {
  const char *name;
  const dq_tensor *tensor;
  int64_t bytes;
} item;

typedef struct meta_pair {
  const char *key, *value;
} meta_pair;

static int compare_items(const void *a, const void *b) {
  const item *x = a, *y = b;
  int rx = dtype_rank(x->tensor->dtype), ry = dtype_rank(y->tensor->dtype);
  if (rx != ry) return ry - rx;
  return strcmp(x->name, y->name);
}

static int compare_item_names(const void *a, const void *b) {
  return strcmp(((const item *)a)->name, ((const item *)b)->name);
}

static int compare_meta(const void *a, const void *b) {
  return strcmp(((const meta_pair *)a)->key, ((const meta_pair *)b)->key);
}

/* ---- argument checks ---------------------------------------------------------------- */

/* Validate the inputs and gather them (in the caller's order) into
 * freshly allocated arrays. */
static dq_status gather(const char *op, int64_t count, const char *const *names, const dq_tensor *const *tensors,
                        int64_t mcount, const char *const *keys, const char *const *values, item **items_out,
                        meta_pair **meta_out) {
  *items_out = NULL;
  *meta_out = NULL;
  if (count < 0 || mcount < 0) return dq_fail(DQ_ERR_ARGUMENT, "%s: negative tensor or metadata count", op);
  if (count > 0 && (!names || !tensors)) return dq_fail(DQ_ERR_ARGUMENT, "%s: names or tensors is NULL", op);
  if (mcount > 0 && (!keys || !values)) return dq_fail(DQ_ERR_ARGUMENT, "%s: metadata keys or values is NULL", op);
  item *items = calloc((size_t)(count ? count : 1), sizeof *items);
  meta_pair *meta = calloc((size_t)(mcount ? mcount : 1), sizeof *meta);
  item *sorted = calloc((size_t)(count ? count : 1), sizeof *sorted);
  dq_status st = DQ_OK;
  if (!items || !meta || !sorted) st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
  for (int64_t i = 0; i < count && !st; i++) {
    const dq_tensor *t = tensors[i];
    if (!names[i]) st = dq_fail(DQ_ERR_ARGUMENT, "%s: name %lld is NULL", op, (long long)i);
    else if (strcmp(names[i], "__metadata__") == 0)
      st = dq_fail(DQ_ERR_ARGUMENT, "%s: \"__metadata__\" is reserved and cannot name a tensor", op);
    else if (!dq_tensor_defined(t))
      st = dq_fail(DQ_ERR_ARGUMENT, "%s: tensor \"%s\" is %s; nothing to write", op, names[i], dq_desc(t));
    else if (t->dtype < 0 || t->dtype >= DQ_NUM_DTYPES)
      st = dq_fail(DQ_ERR_DTYPE, "%s: tensor \"%s\" has an invalid dtype %d", op, names[i], t->dtype);
    else
      items[i] = sorted[i] = (item){names[i], t, t->numel * dq_dtype_size(t->dtype)};
  }
  if (!st) {
    qsort(sorted, (size_t)count, sizeof *sorted, compare_item_names);
    for (int64_t i = 1; i < count && !st; i++)
      if (strcmp(sorted[i - 1].name, sorted[i].name) == 0)
        st = dq_fail(DQ_ERR_ARGUMENT, "%s: tensor name \"%s\" is given more than once", op, sorted[i].name);
  }
  for (int64_t i = 0; i < mcount && !st; i++) {
    if (!keys[i] || !values[i]) st = dq_fail(DQ_ERR_ARGUMENT, "%s: metadata entry %lld is NULL", op, (long long)i);
    else meta[i] = (meta_pair){keys[i], values[i]};
  }
  if (!st) {
    qsort(meta, (size_t)mcount, sizeof *meta, compare_meta);
    for (int64_t i = 1; i < mcount && !st; i++)
      if (strcmp(meta[i - 1].key, meta[i].key) == 0)
        st = dq_fail(DQ_ERR_ARGUMENT, "%s: metadata key \"%s\" is given more than once", op, meta[i].key);
  }
  free(sorted);
  if (st) {
    free(items);
    free(meta);
    return st;
  }
  *items_out = items;
  *meta_out = meta;
  return DQ_OK;
}

/* ---- one file ------------------------------------------------------------------------ */

/* The header text of serialize(): compact JSON, __metadata__ first, then
 * the tensors in file order, padded with spaces to a multiple of 8. */
static void build_header(dq_text *h, const item *items, int64_t n, const meta_pair *meta, int64_t mcount) {
  dq_text_puts(h, "{");
  int first = 1;
  if (mcount > 0) {
    dq_text_puts(h, "\"__metadata__\":{");
    for (int64_t i = 0; i < mcount; i++) {
      if (i) dq_text_puts(h, ",");
      dq_text_json_string(h, meta[i].key, strlen(meta[i].key), DQ_ESCAPE_SERDE);
      dq_text_puts(h, ":");
      dq_text_json_string(h, meta[i].value, strlen(meta[i].value), DQ_ESCAPE_SERDE);
    }
    dq_text_puts(h, "}");
    first = 0;
  }
  int64_t offset = 0;
  for (int64_t i = 0; i < n; i++) {
    const dq_tensor *t = items[i].tensor;
    if (!first) dq_text_puts(h, ",");
    first = 0;
    dq_text_json_string(h, items[i].name, strlen(items[i].name), DQ_ESCAPE_SERDE);
    dq_text_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", file_dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++) dq_text_printf(h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    dq_text_printf(h, "],\"data_offsets\":[%lld,%lld]}", (long long)offset, (long long)(offset + items[i].bytes));
    offset += items[i].bytes;
  }
  dq_text_puts(h, "}");
  while (h->len % 8) dq_text_puts(h, " ");
}

static dq_status write_tensor(dq_atomic_file *f, const item *it, const char *op) {
  const dq_tensor *t = it->tensor;
  if (it->bytes == 0) return DQ_OK;
  if (t->device == DQ_CPU) return dq_atomic_write(f, t->data, (size_t)it->bytes);
  void *host = malloc((size_t)it->bytes);
  if (!host)
    return dq_fail(DQ_ERR_MEMORY, "%s: out of host memory copying tensor \"%s\" (%lld bytes) from %s", op, it->name,
                   (long long)it->bytes, dq_device_name(t->device));
  dq_status st = dq_copy_to_host(t, host, it->bytes);
  if (st) dq_fail_context(st, "%s: reading tensor \"%s\" for %s: ", op, it->name, f->path);
  else st = dq_atomic_write(f, host, (size_t)it->bytes);
  free(host);
  return st;
}

/* Write one safetensors file to a temporary file and leave it finished
 * (synced, closed) but not yet renamed into place; `items` is reordered. */
static dq_status write_file(dq_atomic_file *f, const char *path, item *items, int64_t n, const meta_pair *meta,
                            int64_t mcount, const char *op) {
  qsort(items, (size_t)n, sizeof *items, compare_items);
  dq_text header = {0};
  build_header(&header, items, n, meta, mcount);
  if (header.failed) {
    dq_text_free(&header);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory building the header of %s", op, path);
  }
  unsigned char prefix[8];
  for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)(((uint64_t)header.len >> (8 * i)) & 0xFF);
  dq_status st = dq_atomic_begin(f, path, op);
  if (st) {
    dq_text_free(&header);
    return st;
  }
  st = dq_atomic_write(f, prefix, sizeof prefix);
  if (!st) st = dq_atomic_write(f, header.data, header.len);
  dq_text_free(&header);
  for (int64_t i = 0; i < n && !st; i++) st = write_tensor(f, &items[i], op);
  if (!st) st = dq_atomic_finish(f);
  if (st) dq_atomic_abort(f);
  return st;
}

dq_status dq_safetensors_save(const char *path, int64_t count, const char *const *names,
                              const dq_tensor *const *tensors, int64_t metadata_count,
                              const char *const *metadata_keys, const char *const *metadata_values) {
  const char *op = "dq_safetensors_save";
  if (!path) return dq_fail(DQ_ERR_ARGUMENT, "%s: path is NULL", op);
  item *items;
  meta_pair *meta;
  dq_status st = gather(op, count, names, tensors, metadata_count, metadata_keys, metadata_values, &items, &meta);
  if (st) return st;
  dq_atomic_file f;
  st = write_file(&f, path, items, count, meta, metadata_count, op);
  if (!st) {
    st = dq_atomic_publish(&f);
    if (st) dq_atomic_abort(&f);
  }
  free(items);
  free(meta);
  return st;
}

/* ---- checkpoints ----------------------------------------------------------------------- */

enum { SHARD_NAME_CAP = 64 };

/* shard_of[i] for every item, following huggingface_hub: fill shards in
 * order; a tensor over the limit gets a shard of its own at once; one that
 * would tip the open shard over the limit closes it first. Shards are
 * numbered in the order they are closed, as that code appends them. */
static int64_t plan_shards(const item *items, int64_t n, int64_t max_bytes, int64_t *shard_of) {
  int64_t nshards = 0, open_bytes = 0, open_first = -1;
  enum { OPEN = -1 };
  for (int64_t i = 0; i < n; i++) {
    int64_t size = items[i].bytes;
    if (max_bytes > 0 && size > max_bytes) {
      shard_of[i] = nshards++;
      continue;
    }
    if (open_first >= 0 && max_bytes > 0 && open_bytes + size > max_bytes) {
      for (int64_t j = open_first; j < i; j++)
        if (shard_of[j] == OPEN) shard_of[j] = nshards;
      nshards++;
      open_first = -1;
      open_bytes = 0;
    }
    if (open_first < 0) open_first = i;
    shard_of[i] = OPEN;
    open_bytes += size;
  }
  if (open_first >= 0) {
    for (int64_t j = open_first; j < n; j++)
      if (shard_of[j] == OPEN) shard_of[j] = nshards;
    nshards++;
  }
  return nshards ? nshards : 1;
}

static void shard_name(char *buf, int64_t index, int64_t count) {
  if (count == 1) snprintf(buf, SHARD_NAME_CAP, "model.safetensors");
  else snprintf(buf, SHARD_NAME_CAP, "model-%05lld-of-%05lld.safetensors", (long long)index + 1, (long long)count);
}

/* Is `name` an HF shard file name (model-NNNNN-of-NNNNN.safetensors)? */
static int is_shard_name(const char *name) {
  unsigned a, b;
  char tail[32];
  int used = 0;
  if (strlen(name) != strlen("model-00001-of-00001.safetensors")) return 0;
  if (sscanf(name, "model-%5u-of-%5u%n", &a, &b, &used) != 2 || used != 20) return 0;
  snprintf(tail, sizeof tail, "%s", name + used);
  return strcmp(tail, ".safetensors") == 0;
}

/* Remove what an earlier save left that the new layout does not use, so
 * loaders that look for model.safetensors first never find a stale one. */
static void remove_stale(const char *dir, int64_t nshards) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *name = e->d_name;
    int stale;
    if (strcmp(name, "model.safetensors") == 0 || strcmp(name, "model.safetensors.index.json") == 0) {
      stale = (nshards > 1) == (strcmp(name, "model.safetensors") == 0);
    } else if (is_shard_name(name)) {
      unsigned index, count;
      sscanf(name, "model-%5u-of-%5u", &index, &count);
      stale = nshards == 1 || (int64_t)count != nshards || index < 1 || (int64_t)index > nshards;
    } else {
      continue;
    }
    if (!stale) continue;
    char *path = dq_path_join(dir, name);
    if (path) unlink(path);
    free(path);
  }
  closedir(d);
}

/* items sorted by name, shard_of matching them */
static void build_index(dq_text *t, const item *items, int64_t n, const int64_t *shard_of, int64_t nshards) {
  int64_t total_size = 0, total_parameters = 0;
  for (int64_t i = 0; i < n; i++) {
    total_size += items[i].bytes;
    total_parameters += items[i].tensor->numel;
  }
  /* json.dumps(index, indent=2, sort_keys=True) + "\n" */
  dq_text_printf(t, "{\n  \"metadata\": {\n    \"total_parameters\": %lld,\n    \"total_size\": %lld\n  },\n",
                 (long long)total_parameters, (long long)total_size);
  dq_text_puts(t, "  \"weight_map\": {");
  for (int64_t i = 0; i < n; i++) {
    char shard[SHARD_NAME_CAP];
    shard_name(shard, shard_of[i], nshards);
    dq_text_puts(t, i ? ",\n    " : "\n    ");
    dq_text_json_string(t, items[i].name, strlen(items[i].name), DQ_ESCAPE_PYTHON_ASCII);
    dq_text_puts(t, ": ");
    dq_text_json_string(t, shard, strlen(shard), DQ_ESCAPE_PYTHON_ASCII);
  }
  dq_text_puts(t, n ? "\n  }\n}\n" : "}\n}\n");
}

typedef struct named_shard {
  item item;
  int64_t shard;
} named_shard;

static int compare_named_shards(const void *a, const void *b) {
  return strcmp(((const named_shard *)a)->item.name, ((const named_shard *)b)->item.name);
}

dq_status dq_safetensors_save_checkpoint(const char *dir, int64_t count, const char *const *names,
                                         const dq_tensor *const *tensors, int64_t metadata_count,
                                         const char *const *metadata_keys, const char *const *metadata_values,
                                         int64_t max_shard_bytes) {
  const char *op = "dq_safetensors_save_checkpoint";
  if (!dir) return dq_fail(DQ_ERR_ARGUMENT, "%s: dir is NULL", op);
  item *items;
  meta_pair *meta;
  dq_status st = gather(op, count, names, tensors, metadata_count, metadata_keys, metadata_values, &items, &meta);
  if (st) return st;
  if ((st = dq_make_dirs(dir, op))) {
    free(items);
    free(meta);
    return st;
  }
  int64_t *shard_of = malloc((size_t)(count ? count : 1) * sizeof *shard_of);
  named_shard *by_name = malloc((size_t)(count ? count : 1) * sizeof *by_name);
  item *group = malloc((size_t)(count ? count : 1) * sizeof *group);
  int64_t nshards = 1;
  dq_atomic_file *files = NULL;
  if (!shard_of || !by_name || !group) st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
  if (!st) {
    nshards = plan_shards(items, count, max_shard_bytes, shard_of);
    files = calloc((size_t)nshards + 1, sizeof *files);
    if (!files) st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
    for (int64_t s = 0; files && s <= nshards; s++) files[s].fd = -1;
  }
  /* Write every shard (and the index) under temporary names first. */
  for (int64_t s = 0; s < nshards && !st; s++) {
    int64_t n = 0;
    for (int64_t i = 0; i < count; i++)
      if (shard_of[i] == s) group[n++] = items[i];
    char name[SHARD_NAME_CAP];
    shard_name(name, s, nshards);
    char *path = dq_path_join(dir, name);
    if (!path) st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
    else st = write_file(&files[s], path, group, n, meta, metadata_count, op);
    free(path);
  }
  char *index_path = NULL;
  if (!st && nshards > 1) {
    for (int64_t i = 0; i < count; i++) by_name[i] = (named_shard){items[i], shard_of[i]};
    qsort(by_name, (size_t)count, sizeof *by_name, compare_named_shards);
    for (int64_t i = 0; i < count; i++) {
      group[i] = by_name[i].item;
      shard_of[i] = by_name[i].shard;
    }
    dq_text index = {0};
    build_index(&index, group, count, shard_of, nshards);
    index_path = dq_path_join(dir, "model.safetensors.index.json");
    if (index.failed || !index_path) st = dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
    if (!st) st = dq_atomic_begin(&files[nshards], index_path, op);
    if (!st) st = dq_atomic_write(&files[nshards], index.data, index.len);
    if (!st) st = dq_atomic_finish(&files[nshards]);
    dq_text_free(&index);
  }
  /* Publish: shards first, the index (the file loaders start from) last. */
  int64_t nfiles = nshards + (nshards > 1);
  for (int64_t s = 0; s < nfiles && !st; s++) st = dq_atomic_publish(&files[s]);
  for (int64_t s = 0; files && s <= nshards; s++) dq_atomic_abort(&files[s]);
  if (!st) remove_stale(dir, nshards);
  free(index_path);
  free(files);
  free(group);
  free(by_name);
  free(shard_of);
  free(items);
  free(meta);
  return st;
}
