/*
 * data_hash.c: XXH64 (Yann Collet's xxHash, 64-bit variant), used to key the
 * token cache by the contents of the data and tokenizer files and to
 * checksum the cache itself. It reads gigabytes per second, so hashing a
 * large corpus on every start costs little next to tokenizing it.
 */
#include "data_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const uint64_t P1 = 11400714785074694791ULL;
static const uint64_t P2 = 14029467366897019727ULL;
static const uint64_t P3 = 1609587929392839161ULL;
static const uint64_t P4 = 9650029242287828579ULL;
static const uint64_t P5 = 2870177450012600261ULL;

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

/* Little-endian reads byte by byte: defined for any alignment and any host
 * byte order (compilers turn them into single loads). */
static uint64_t read64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static uint32_t read32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t xround(uint64_t acc, uint64_t input) {
  acc += input * P2;
  acc = rotl(acc, 31);
  return acc * P1;
}

static uint64_t merge_round(uint64_t acc, uint64_t val) {
  acc ^= xround(0, val);
  return acc * P1 + P4;
}

void dq_xxh64_init(dq_xxh64 *h, uint64_t seed) {
  memset(h, 0, sizeof *h);
  h->seed = seed;
  h->v[0] = seed + P1 + P2;
  h->v[1] = seed + P2;
  h->v[2] = seed;
  h->v[3] = seed - P1;
}

static void consume_stripe(dq_xxh64 *h, const unsigned char *p) {
  h->v[0] = xround(h->v[0], read64(p));
  h->v[1] = xround(h->v[1], read64(p + 8));
  h->v[2] = xround(h->v[2], read64(p + 16));
  h->v[3] = xround(h->v[3], read64(p + 24));
}

void dq_xxh64_update(dq_xxh64 *h, const void *data, size_t len) {
  const unsigned char *p = data, *end = p + len;
  h->total += len;
  if (h->buffered + len < 32) {
    memcpy(h->buffer + h->buffered, p, len);
    h->buffered += len;
    return;
  }
  if (h->buffered) {
    size_t fill = 32 - h->buffered;
    memcpy(h->buffer + h->buffered, p, fill);
    consume_stripe(h, h->buffer);
    p += fill;
    h->buffered = 0;
  }
  while (end - p >= 32) {
    consume_stripe(h, p);
    p += 32;
  }
  h->buffered = (size_t)(end - p);
  memcpy(h->buffer, p, h->buffered);
}

uint64_t dq_xxh64_digest(const dq_xxh64 *h) {
  uint64_t acc;
  if (h->total >= 32) {
    acc = rotl(h->v[0], 1) + rotl(h->v[1], 7) + rotl(h->v[2], 12) + rotl(h->v[3], 18);
    for (int i = 0; i < 4; i++) acc = merge_round(acc, h->v[i]);
  } else {
    acc = h->seed + P5;
  }
  acc += h->total;
  const unsigned char *p = h->buffer, *end = p + h->buffered;
  for (; end - p >= 8; p += 8) {
    acc ^= xround(0, read64(p));
    acc = rotl(acc, 27) * P1 + P4;
  }
  if (end - p >= 4) {
    acc ^= (uint64_t)read32(p) * P1;
    acc = rotl(acc, 23) * P2 + P3;
    p += 4;
  }
  for (; p < end; p++) {
    acc ^= (uint64_t)(*p) * P5;
    acc = rotl(acc, 11) * P1;
  }
  acc ^= acc >> 33;
  acc *= P2;
  acc ^= acc >> 29;
  acc *= P3;
  acc ^= acc >> 32;
  return acc;
}

uint64_t dq_data_hash(const void *data, int64_t bytes, uint64_t seed) {
  dq_xxh64 h;
  dq_xxh64_init(&h, seed);
  if (data && bytes > 0) dq_xxh64_update(&h, data, (size_t)bytes);
  return dq_xxh64_digest(&h);
}

dq_status dq_data_hash_file(const char *path, uint64_t seed, uint64_t *out) {
  if (!path || !out) return dq_fail(DQ_ERR_ARGUMENT, "dq_data_hash_file: path and out must not be NULL");
  FILE *f = fopen(path, "rb");
  if (!f) return dq_fail(DQ_ERR_IO, "dq_data_hash_file: cannot open %s: %s", path, strerror(errno));
  enum { BLOCK = 1 << 20 };
  unsigned char *block = malloc(BLOCK);
  if (!block) {
    fclose(f);
    return dq_fail(DQ_ERR_MEMORY, "dq_data_hash_file: out of memory for a %d-byte read buffer", BLOCK);
  }
  dq_xxh64 h;
  dq_xxh64_init(&h, seed);
  size_t n;
  while ((n = fread(block, 1, BLOCK, f)) > 0) dq_xxh64_update(&h, block, n);
  int failed = ferror(f);
  free(block);
  fclose(f);
  if (failed) return dq_fail(DQ_ERR_IO, "dq_data_hash_file: error reading %s", path);
  *out = dq_xxh64_digest(&h);
  return DQ_OK;
}
