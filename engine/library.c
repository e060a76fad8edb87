/* library.c: version, build facts, threads, device queries. */
#include "internal.h"
#include "../kernels/kernels.h"

#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef DQ_VERSION_STRING
#define DQ_VERSION_STRING "0.0.0"
#endif

const char *dq_version(void) { return DQ_VERSION_STRING; }

int dq_built_with_cuda(void) {
#ifdef DQ_HAVE_CUDA
  return 1;
#else
  return 0;
#endif
}

int dq_cuda_device_count(void) {
#ifdef DQ_HAVE_CUDA
  return cuda_device_count();
#else
  return 0;
#endif
}

dq_status dq_sync(int device) {
  if (device == DQ_CPU) return DQ_OK;
  DQ_CUDA_CALL(cuda_sync(device));
}

dq_status dq_memory_info(int device, int64_t *free_bytes, int64_t *total_bytes) {
  if (!free_bytes || !total_bytes) return dq_fail(DQ_ERR_ARGUMENT, "dq_memory_info: NULL output pointer");
  if (device == DQ_CPU) {
    long page = sysconf(_SC_PAGESIZE);
    *free_bytes = (int64_t)sysconf(_SC_AVPHYS_PAGES) * page;
    *total_bytes = (int64_t)sysconf(_SC_PHYS_PAGES) * page;
    return DQ_OK;
  }
  DQ_CUDA_CALL(cuda_memory_info(device, free_bytes, total_bytes));
}

static int num_threads;

dq_status dq_set_num_threads(int n) {
  if (n < 1) return dq_fail(DQ_ERR_ARGUMENT, "dq_set_num_threads: %d threads requested; need at least 1", n);
  num_threads = n;
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
  /* OpenBLAS stays single-threaded: cpu_matmul spreads fixed tiles over the
   * OpenMP threads, which keeps results identical for any thread count. */
  return DQ_OK;
}

int dq_get_num_threads(void) {
  if (num_threads) return num_threads;
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}
