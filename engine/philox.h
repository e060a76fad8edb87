/*
 * philox.h: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
 * as 1, 2, 3"), shared verbatim by the CPU code and the CUDA kernels so that
 * both draw identical numbers for the same (seed, counter).
 *
 * Element i of a random tensor uses counter (offset + i / 4) and lane i % 4.
 */
#ifndef DQ_PHILOX_H
#define DQ_PHILOX_H

#include <stdint.h>

#ifdef __CUDACC__
#define DQ_HOSTDEV __host__ __device__ __forceinline__
#else
#define DQ_HOSTDEV static inline
#endif

typedef struct dq_u32x4 {
  uint32_t v[4];
} dq_u32x4;

DQ_HOSTDEV uint32_t dq_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi) {
  uint64_t p = (uint64_t)a * (uint64_t)b;
  *hi = (uint32_t)(p >> 32);
  return (uint32_t)p;
}

/* The 128-bit counter is (counter_lo, counter_hi, 0, 0); the key is the seed. */
DQ_HOSTDEV dq_u32x4 dq_philox(uint64_t seed, uint64_t counter) {
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int round = 0; round < 10; round++) {
    uint32_t hi0, hi1;
    uint32_t lo0 = dq_mulhilo32(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = dq_mulhilo32(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  dq_u32x4 r;
  r.v[0] = c0; r.v[1] = c1; r.v[2] = c2; r.v[3] = c3;
  return r;
}

/* Uniform in [0, 1) from the top 24 bits: exact in f32 on every device. */
DQ_HOSTDEV float dq_u32_to_uniform(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

DQ_HOSTDEV float dq_philox_uniform(uint64_t seed, uint64_t offset, int64_t i) {
  dq_u32x4 r = dq_philox(seed, offset + (uint64_t)(i >> 2));
  return dq_u32_to_uniform(r.v[i & 3]);
}

#endif
