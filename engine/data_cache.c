/*
 * data_cache.c: the binary cache of tokenized examples.
 *
 * Layout (little-endian): a 64-byte header
 *   0  "DQTOKC01"             magic and version
 *   8  u64 key                what the cache was built from (data, tokenizer,
 *                             settings), computed by the caller
 *   16 u64 n                  examples
 *   24 u64 source ids
 *   32 u64 target ids
 *   40 u64 payload checksum   XXH64 of everything after the header
 *   48 u64 header checksum    XXH64 of bytes 0..47
 *   56 u64 0
 * then src_offsets (i64 [n+1]), tgt_offsets (i64 [n+1]), src_ids (i32),
 * tgt_ids (i32), each in host byte order (little-endian on every machine
 * dqbart targets). A reader trusts nothing: magic, key, sizes against the
 * file length, both checksums and the offsets are all checked, so a cache
 * cut short by a crash or damaged on disk is detected and rebuilt.
 */
#include "data_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { HEADER_BYTES = 64 };
static const char MAGIC[8] = {'D', 'Q', 'T', 'O', 'K', 'C', '0', '1'};

static void put64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

typedef struct block {
  const void *data;
  size_t bytes;
} block;

static dq_status check_ids(const char *op, const char *what, const dq_tensor *t, const dq_tensor *offsets) {
  dq_status st = dq_check_defined(op, what, t);
  if (st) return st;
  if (t->device != DQ_CPU || t->dtype != DQ_I32 || t->ndim != 1)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s is %s; expected an i32 cpu vector", op, what, dq_desc(t));
  const int64_t *off = offsets->data;
  if (off[offsets->numel - 1] != t->numel)
    return dq_fail(DQ_ERR_SHAPE, "%s: the offsets end at %lld but %s has %lld ids", op,
                   (long long)off[offsets->numel - 1], what, (long long)t->numel);
  return DQ_OK;
}

static dq_status write_all(FILE *f, const char *path, const void *data, size_t bytes) {
  if (bytes && fwrite(data, 1, bytes, f) != bytes)
    return dq_fail(DQ_ERR_IO, "dq_data_cache_save: writing %s failed: %s", path, strerror(errno));
  return DQ_OK;
}

dq_status dq_data_cache_save(const char *path, uint64_t key, const dq_tensor *src_ids, const dq_tensor *src_offsets,
                             const dq_tensor *tgt_ids, const dq_tensor *tgt_offsets) {
  static const char *op = "dq_data_cache_save";
  if (!path) return dq_fail(DQ_ERR_ARGUMENT, "%s: path is NULL", op);
  dq_status st = dq_data_check_offsets(op, "src_offsets", src_offsets, -1);
  int64_t n = st ? 0 : src_offsets->numel - 1;
  if (st || (st = dq_data_check_offsets(op, "tgt_offsets", tgt_offsets, n)) ||
      (st = check_ids(op, "src_ids", src_ids, src_offsets)) || (st = check_ids(op, "tgt_ids", tgt_ids, tgt_offsets)))
    return st;

  block blocks[4] = {
      {src_offsets->data, sizeof(int64_t) * (size_t)(n + 1)},
      {tgt_offsets->data, sizeof(int64_t) * (size_t)(n + 1)},
      {src_ids->data, sizeof(int32_t) * (size_t)src_ids->numel},
      {tgt_ids->data, sizeof(int32_t) * (size_t)tgt_ids->numel},
  };
  dq_xxh64 h;
  dq_xxh64_init(&h, 0);
  for (int i = 0; i < 4; i++) dq_xxh64_update(&h, blocks[i].data, blocks[i].bytes);
  unsigned char header[HEADER_BYTES] = {0};
  memcpy(header, MAGIC, 8);
  put64(header + 8, key);
  put64(header + 16, (uint64_t)n);
  put64(header + 24, (uint64_t)src_ids->numel);
  put64(header + 32, (uint64_t)tgt_ids->numel);
  put64(header + 40, dq_xxh64_digest(&h));
  put64(header + 48, dq_data_hash(header, 48, 0));

  size_t plen = strlen(path);
  char *tmp = malloc(plen + 16);
  if (!tmp) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
  snprintf(tmp, plen + 16, "%s.tmp-XXXXXX", path);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    st = dq_fail(DQ_ERR_IO, "%s: cannot create a temporary file next to %s: %s", op, path, strerror(errno));
    free(tmp);
    return st;
  }
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    st = dq_fail(DQ_ERR_IO, "%s: fdopen on %s failed: %s", op, tmp, strerror(errno));
    close(fd);
  } else {
    st = write_all(f, path, header, sizeof header);
    for (int i = 0; i < 4 && !st; i++) st = write_all(f, path, blocks[i].data, blocks[i].bytes);
    if (!st && (fflush(f) != 0 || fsync(fileno(f)) != 0))
      st = dq_fail(DQ_ERR_IO, "%s: flushing %s failed: %s", op, tmp, strerror(errno));
    if (fclose(f) != 0 && !st) st = dq_fail(DQ_ERR_IO, "%s: closing %s failed: %s", op, tmp, strerror(errno));
  }
  /* mkstemp makes the file 0600; a cache is as readable as its data. */
  if (!st) {
    mode_t mask = umask(0);
    umask(mask);
    chmod(tmp, 0666 & ~mask);
  }
  if (!st && rename(tmp, path) != 0)
    st = dq_fail(DQ_ERR_IO, "%s: renaming %s to %s failed: %s", op, tmp, path, strerror(errno));
  if (st) unlink(tmp);
  free(tmp);
  return st;
}

static dq_status corrupt(const char *path, const char *what) {
  return dq_fail(DQ_ERR_FORMAT, "dq_data_cache_load: %s is not a usable token cache: %s", path, what);
}

static dq_status read_block(FILE *f, const char *path, void *data, size_t bytes) {
  if (bytes && fread(data, 1, bytes, f) != bytes)
    return ferror(f) ? dq_fail(DQ_ERR_IO, "dq_data_cache_load: reading %s failed: %s", path, strerror(errno))
                     : corrupt(path, "it ends early");
  return DQ_OK;
}

static dq_status load_open(FILE *f, const char *path, uint64_t key, dq_tensor *t[4]) {
  unsigned char header[HEADER_BYTES];
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0)
    return dq_fail(DQ_ERR_IO, "dq_data_cache_load: cannot stat %s: %s", path, strerror(errno));
  if (sb.st_size < HEADER_BYTES) return corrupt(path, "it is shorter than the header");
  dq_status st = read_block(f, path, header, sizeof header);
  if (st) return st;
  if (memcmp(header, MAGIC, 8) != 0) return corrupt(path, "wrong magic (expected DQTOKC01)");
  if (get64(header + 48) != dq_data_hash(header, 48, 0)) return corrupt(path, "the header checksum does not match");
  if (get64(header + 8) != key) return corrupt(path, "it was built from other data, tokenizer or settings");
  uint64_t n = get64(header + 16), ns = get64(header + 24), nt = get64(header + 32);
  const uint64_t limit = 1ULL << 40;
  if (n >= limit || ns >= limit || nt >= limit) return corrupt(path, "implausible sizes in the header");
  uint64_t expected = HEADER_BYTES + 16 * (n + 1) + 4 * (ns + nt);
  if ((uint64_t)sb.st_size != expected) {
    char what[160];
    snprintf(what, sizeof what, "it has %lld bytes but its header promises %llu", (long long)sb.st_size,
             (unsigned long long)expected);
    return corrupt(path, what);
  }
  int64_t shapes[4] = {(int64_t)n + 1, (int64_t)n + 1, (int64_t)ns, (int64_t)nt};
  int dtypes[4] = {DQ_I64, DQ_I64, DQ_I32, DQ_I32};
  dq_xxh64 h;
  dq_xxh64_init(&h, 0);
  for (int i = 0; i < 4; i++) {
    if ((st = dq_tensor_empty(t[i], 1, &shapes[i], dtypes[i], DQ_CPU))) return st;
    size_t bytes = (size_t)shapes[i] * (size_t)dq_dtype_size(dtypes[i]);
    if ((st = read_block(f, path, t[i]->data, bytes))) return st;
    dq_xxh64_update(&h, t[i]->data, bytes);
  }
  if (dq_xxh64_digest(&h) != get64(header + 40)) return corrupt(path, "the contents' checksum does not match");
  if (dq_data_check_offsets("dq_data_cache_load", "the cached source offsets", t[0], (int64_t)n) ||
      dq_data_check_offsets("dq_data_cache_load", "the cached target offsets", t[1], (int64_t)n) ||
      ((const int64_t *)t[0]->data)[n] != (int64_t)ns || ((const int64_t *)t[1]->data)[n] != (int64_t)nt)
    return corrupt(path, "its offsets are inconsistent");
  return DQ_OK;
}

dq_status dq_data_cache_load(const char *path, uint64_t key, dq_tensor *src_ids, dq_tensor *src_offsets,
                             dq_tensor *tgt_ids, dq_tensor *tgt_offsets) {
  static const char *op = "dq_data_cache_load";
  if (!path || !src_ids || !src_offsets || !tgt_ids || !tgt_offsets)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: path and the four outputs must not be NULL", op);
  dq_tensor *t[4] = {src_offsets, tgt_offsets, src_ids, tgt_ids};
  for (int i = 0; i < 4; i++)
    if (t[i]->storage) return dq_fail(DQ_ERR_ARGUMENT, "%s: output %d is already allocated; pass undefined tensors", op, i);
  FILE *f = fopen(path, "rb");
  if (!f) return dq_fail(DQ_ERR_IO, "%s: cannot open %s: %s", op, path, strerror(errno));
  dq_status st = load_open(f, path, key, t);
  fclose(f);
  if (st)
    for (int i = 0; i < 4; i++) dq_tensor_release(t[i]);
  return st;
}
