/*
 * device.cu: the CUDA device runtime behind tensor.c and every kernel file:
 * device discovery, one engine stream per device, stream-ordered allocation
 * from the device's default memory pool, host/device transfers, the
 * cuBLASLt handle and workspace, and the error helpers of common.cuh.
 *
 * Everything per device is created on first use and lives until the
 * process ends (the driver reclaims it then).
 */
#include "common.cuh"

#include <atomic>
#include <mutex>

#include <stdlib.h>
#include <string.h>

/* ---- errors ------------------------------------------------------------------ */

dq_status dq_cuda_fail(const char *op, const char *call, cudaError_t err) {
  /* Clear a non-sticky error so the next call starts clean. */
  cudaGetLastError();
  return dq_fail(DQ_ERR_CUDA, "%s: %s failed: %s", op, call, cudaGetErrorString(err));
}

dq_status dq_cublas_fail(const char *op, const char *call, cublasStatus_t st) {
  return dq_fail(DQ_ERR_CUDA, "%s: %s failed: %s (%s)", op, call, cublasLtGetStatusString(st),
                 cublasLtGetStatusName(st));
}

/* ---- per-device state ---------------------------------------------------------- */

namespace {

enum {
  MAX_DEVICES = 64,
  /* Host-to-device copies go through a ring of pinned staging slots, so the
   * caller's pageable buffer may be freed as soon as cuda_memcpy returns
   * while the copy itself stays asynchronous. */
  STAGE_SLOTS = 4,
  STAGE_BYTES = 4 << 20,
};

const size_t LT_WORKSPACE_BYTES = (size_t)32 << 20;

struct device_state {
  std::mutex lock; /* guards creation of everything below */
  std::atomic<cudaStream_t> stream{nullptr};
  cudaMemPool_t pool = nullptr;

  std::atomic<bool> lt_ready{false};
  cublasLtHandle_t lt = nullptr;
  void *lt_workspace = nullptr;

  std::mutex stage_lock;
  unsigned char *stage = nullptr;
  cudaEvent_t stage_done[STAGE_SLOTS] = {};
  int stage_next = 0;
};

device_state devices[MAX_DEVICES];

/* Created under the device's lock: the stream, and the pool set to keep
 * freed memory cached for reuse (release threshold = unlimited) instead of
 * returning it to the driver at every synchronization. */
dq_status init_device(const char *op, int device, device_state &st) {
  int pools = 0;
  DQ_CUDA_TRY(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device));
  if (!pools)
    return dq_fail(DQ_ERR_CUDA, "%s: cuda:%d does not support stream-ordered memory pools (cudaMallocAsync), "
                   "which dqbart needs", op, device);
  cudaMemPool_t pool;
  DQ_CUDA_TRY(cudaDeviceGetDefaultMemPool(&pool, device));
  uint64_t threshold = UINT64_MAX;
  DQ_CUDA_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
  cudaStream_t stream;
  DQ_CUDA_TRY(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  st.pool = pool;
  st.stream.store(stream, std::memory_order_release);
  return DQ_OK;
}

std::atomic<int> cached_device_count{-1};

} // namespace

dq_status dq_cuda_begin(const char *op, int device, cudaStream_t *stream) {
  if (device < 0 || device >= MAX_DEVICES)
    return dq_fail(DQ_ERR_DEVICE, "%s: cuda:%d is not a valid device (0 to %d)", op, device, MAX_DEVICES - 1);
  DQ_CUDA_TRY(cudaSetDevice(device));
  device_state &st = devices[device];
  cudaStream_t s = st.stream.load(std::memory_order_acquire);
  if (!s) {
    std::lock_guard<std::mutex> guard(st.lock);
    s = st.stream.load(std::memory_order_acquire);
    if (!s) {
      DQ_TRY(init_device(op, device, st));
      s = st.stream.load(std::memory_order_acquire);
    }
  }
  *stream = s;
  return DQ_OK;
}

dq_status dq_cuda_cublaslt(const char *op, int device, cublasLtHandle_t *handle, void **workspace,
                           size_t *workspace_bytes) {
  device_state &st = devices[device]; /* dq_cuda_begin validated the ordinal */
  if (!st.lt_ready.load(std::memory_order_acquire)) {
    std::lock_guard<std::mutex> guard(st.lock);
    if (!st.lt_ready.load(std::memory_order_acquire)) {
      if (!st.lt) DQ_CUBLAS_TRY(cublasLtCreate(&st.lt));
      /* Plain cudaMalloc: the workspace lives as long as the process. */
      if (!st.lt_workspace) DQ_CUDA_TRY(cudaMalloc(&st.lt_workspace, LT_WORKSPACE_BYTES));
      st.lt_ready.store(true, std::memory_order_release);
    }
  }
  *handle = st.lt;
  *workspace = st.lt_workspace;
  *workspace_bytes = LT_WORKSPACE_BYTES;
  return DQ_OK;
}

/* ---- discovery ------------------------------------------------------------------ */

int cuda_device_count(void) {
  int n = cached_device_count.load(std::memory_order_relaxed);
  if (n >= 0) return n;
  /* No driver, an old driver or no GPU all mean "no CUDA device here"
   * (cudaErrorNoDevice, cudaErrorInsufficientDriver, ...): 0, not an error.
   * Device visibility cannot change while the process runs, so cache it. */
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    n = 0;
  }
  if (n > MAX_DEVICES) n = MAX_DEVICES;
  cached_device_count.store(n, std::memory_order_relaxed);
  return n;
}

/* ---- memory ----------------------------------------------------------------------- */

/* An allocation from the device's pool, ordered on its engine stream. */
static dq_status pool_alloc(const char *op, int device, int64_t bytes, void **ptr) {
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  device_state &st = devices[device];
  cudaError_t err = cudaMallocFromPoolAsync(ptr, (size_t)bytes, st.pool, stream);
  if (err == cudaErrorMemoryAllocation) {
    /* The pool may hold memory freed on other streams or not yet reusable:
     * wait for everything, give cached memory back and try once more. This
     * is the only synchronization on the allocation path, and only when
     * memory has run out. */
    cudaGetLastError();
    cudaDeviceSynchronize();
    cudaMemPoolTrimTo(st.pool, 0);
    cudaGetLastError();
    err = cudaMallocFromPoolAsync(ptr, (size_t)bytes, st.pool, stream);
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    return dq_fail(DQ_ERR_MEMORY,
                   "%s: out of GPU memory allocating %lld bytes on cuda:%d (%lld bytes held by dqbart tensors, "
                   "%lld of %lld bytes free on the device)",
                   op, (long long)bytes, device, (long long)dq_memory_allocated(device), (long long)free_b,
                   (long long)total_b);
  }
  if (err != cudaSuccess) return dq_cuda_fail(op, "cudaMallocFromPoolAsync", err);
  return DQ_OK;
}

dq_status cuda_alloc(int device, int64_t bytes, void **ptr) {
  return pool_alloc("dq_tensor_empty", device, bytes, ptr);
}

void cuda_free(int device, void *ptr) {
  if (!ptr || device < 0 || device >= MAX_DEVICES) return;
  cudaStream_t stream = devices[device].stream.load(std::memory_order_acquire);
  /* Stream-ordered: the memory returns to the pool once the work queued
   * before this point (which may still use it) has finished. Errors (for
   * example at process teardown) cannot be reported from here. */
  if (cudaSetDevice(device) != cudaSuccess || cudaFreeAsync(ptr, stream) != cudaSuccess) cudaGetLastError();
}

dq_status dq_cuda_scratch(const char *op, int device, size_t bytes, void **ptr) {
  return pool_alloc(op, device, (int64_t)(bytes ? bytes : 1), ptr);
}

void dq_cuda_scratch_free(int device, void *ptr) { cuda_free(device, ptr); }

dq_status cuda_memory_info(int device, int64_t *free_bytes, int64_t *total_bytes) {
  const char *op = "dq_memory_info";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  size_t free_b = 0, total_b = 0;
  DQ_CUDA_TRY(cudaMemGetInfo(&free_b, &total_b));
  /* Memory the pool keeps cached after frees is free for dqbart's next
   * allocations, so it counts as free here. */
  uint64_t reserved = 0, used = 0;
  DQ_CUDA_TRY(cudaMemPoolGetAttribute(devices[device].pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  DQ_CUDA_TRY(cudaMemPoolGetAttribute(devices[device].pool, cudaMemPoolAttrUsedMemCurrent, &used));
  *free_bytes = (int64_t)free_b + (reserved > used ? (int64_t)(reserved - used) : 0);
  *total_bytes = (int64_t)total_b;
  return DQ_OK;
}

dq_status cuda_sync(int device) {
  const char *op = "dq_sync";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  /* The whole device, not just the engine stream: "every queued operation"
   * includes work other streams (communication) put there. */
  DQ_CUDA_TRY(cudaDeviceSynchronize());
  return DQ_OK;
}

/* ---- transfers ------------------------------------------------------------------------ */

/* Host (pageable) to device through the pinned staging ring: each chunk is
 * copied into a slot whose previous transfer has finished, then queued. */
static dq_status copy_host_to_device(void *dst, int device, const void *src, size_t bytes) {
  const char *op = "dq_copy (host to cuda)";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  device_state &st = devices[device];
  std::lock_guard<std::mutex> guard(st.stage_lock);
  if (!st.stage) {
    void *p;
    DQ_CUDA_TRY(cudaHostAlloc(&p, (size_t)STAGE_SLOTS * STAGE_BYTES, cudaHostAllocPortable));
    for (int i = 0; i < STAGE_SLOTS; i++) {
      cudaError_t err = cudaEventCreateWithFlags(&st.stage_done[i], cudaEventDisableTiming);
      if (err != cudaSuccess) {
        for (int j = 0; j < i; j++) cudaEventDestroy(st.stage_done[j]);
        cudaFreeHost(p);
        return dq_cuda_fail(op, "cudaEventCreateWithFlags", err);
      }
    }
    st.stage = (unsigned char *)p;
  }
  const unsigned char *from = (const unsigned char *)src;
  unsigned char *to = (unsigned char *)dst;
  while (bytes > 0) {
    int slot = st.stage_next;
    st.stage_next = (slot + 1) % STAGE_SLOTS;
    size_t n = bytes < (size_t)STAGE_BYTES ? bytes : (size_t)STAGE_BYTES;
    unsigned char *buf = st.stage + (size_t)slot * STAGE_BYTES;
    /* A never-recorded event counts as complete. */
    DQ_CUDA_TRY(cudaEventSynchronize(st.stage_done[slot]));
    memcpy(buf, from, n);
    DQ_CUDA_TRY(cudaMemcpyAsync(to, buf, n, cudaMemcpyHostToDevice, stream));
    DQ_CUDA_TRY(cudaEventRecord(st.stage_done[slot], stream));
    from += n;
    to += n;
    bytes -= n;
  }
  return DQ_OK;
}

static dq_status copy_device_to_host(void *dst, const void *src, int device, size_t bytes) {
  const char *op = "dq_copy (cuda to host)";
  cudaStream_t stream;
  DQ_TRY(dq_cuda_begin(op, device, &stream));
  DQ_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream));
  DQ_CUDA_TRY(cudaStreamSynchronize(stream));
  return DQ_OK;
}

/* Between two devices: the copy runs on the destination's stream after the
 * source's queued work (which produces src), and the source's later work
 * (which may overwrite or free src) waits for the copy. */
static dq_status copy_peer(void *dst, int dst_device, const void *src, int src_device, size_t bytes) {
  const char *op = "dq_copy (between devices)";
  cudaStream_t src_stream, dst_stream;
  DQ_TRY(dq_cuda_begin(op, src_device, &src_stream));
  cudaEvent_t produced, copied;
  DQ_CUDA_TRY(cudaEventCreateWithFlags(&produced, cudaEventDisableTiming));
  cudaError_t err = cudaEventRecord(produced, src_stream);
  dq_status status = DQ_OK;
  if (err != cudaSuccess) status = dq_cuda_fail(op, "cudaEventRecord", err);
  if (!status) status = dq_cuda_begin(op, dst_device, &dst_stream);
  if (!status && (err = cudaStreamWaitEvent(dst_stream, produced, 0)) != cudaSuccess)
    status = dq_cuda_fail(op, "cudaStreamWaitEvent", err);
  if (!status && (err = cudaMemcpyPeerAsync(dst, dst_device, src, src_device, bytes, dst_stream)) != cudaSuccess)
    status = dq_cuda_fail(op, "cudaMemcpyPeerAsync", err);
  cudaEventDestroy(produced); /* released once it completes */
  if (status) return status;
  DQ_CUDA_TRY(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
  if ((err = cudaEventRecord(copied, dst_stream)) != cudaSuccess) status = dq_cuda_fail(op, "cudaEventRecord", err);
  if (!status && (err = cudaSetDevice(src_device)) != cudaSuccess) status = dq_cuda_fail(op, "cudaSetDevice", err);
  if (!status && (err = cudaStreamWaitEvent(src_stream, copied, 0)) != cudaSuccess)
    status = dq_cuda_fail(op, "cudaStreamWaitEvent", err);
  cudaEventDestroy(copied);
  return status;
}

dq_status cuda_memcpy(void *dst, int dst_device, const void *src, int src_device, int64_t bytes) {
  if (bytes <= 0) return DQ_OK;
  size_t n = (size_t)bytes;
  if (dst_device == DQ_CPU && src_device == DQ_CPU) {
    memmove(dst, src, n);
    return DQ_OK;
  }
  if (src_device == DQ_CPU) return copy_host_to_device(dst, dst_device, src, n);
  if (dst_device == DQ_CPU) return copy_device_to_host(dst, src, src_device, n);
  if (src_device == dst_device) {
    const char *op = "dq_copy (on cuda)";
    cudaStream_t stream;
    DQ_TRY(dq_cuda_begin(op, src_device, &stream));
    DQ_CUDA_TRY(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream));
    return DQ_OK;
  }
  return copy_peer(dst, dst_device, src, src_device, n);
}
