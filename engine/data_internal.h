/*
 * data_internal.h: what the data pipeline's C files (data_*.c) share:
 * streaming XXH64 (the public one-shot forms are in dqbart_data.h) and the
 * check of an offsets vector.
 */
#ifndef DQ_DATA_INTERNAL_H
#define DQ_DATA_INTERNAL_H

#include "internal.h"

#include <stddef.h>
#include <stdint.h>

typedef struct dq_xxh64 {
  uint64_t v[4];
  uint64_t total;
  uint64_t seed;
  unsigned char buffer[32];
  size_t buffered;
} dq_xxh64;

void dq_xxh64_init(dq_xxh64 *h, uint64_t seed);
void dq_xxh64_update(dq_xxh64 *h, const void *data, size_t len);
uint64_t dq_xxh64_digest(const dq_xxh64 *h);

/* Fail (naming op and what) unless t is a CPU i64 vector of offsets:
 * t[0] = 0, non-decreasing, with n_expected + 1 entries (any count when
 * n_expected < 0). */
dq_status dq_data_check_offsets(const char *op, const char *what, const dq_tensor *t, int64_t n_expected);

#endif
