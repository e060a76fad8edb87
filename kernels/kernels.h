/*
 * kernels.h: host entry points of the CUDA backend. The op entry points have
 * exactly the signatures of the CPU backend (engine/backend.h); ops.c has
 * already validated their arguments. The device runtime below serves
 * tensor.c (allocation, transfers, synchronization).
 */
#ifndef DQ_KERNELS_H
#define DQ_KERNELS_H

#include "../engine/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

DQ_BACKEND_DECLS(cuda_)

/* Number of visible devices; 0 (not an error) when the driver finds none. */
int cuda_device_count(void);
/* Stream-ordered allocation on the device's engine stream (memory pool). */
dq_status cuda_alloc(int device, int64_t bytes, void **ptr);
void cuda_free(int device, void *ptr);
/* Copy bytes between host (DQ_CPU) and devices in any direction. Copies that
 * end on the host synchronize; others are queued on the engine stream. */
dq_status cuda_memcpy(void *dst, int dst_device, const void *src, int src_device, int64_t bytes);
dq_status cuda_sync(int device);
dq_status cuda_memory_info(int device, int64_t *free_bytes, int64_t *total_bytes);

#ifdef __cplusplus
}
#endif
#endif
