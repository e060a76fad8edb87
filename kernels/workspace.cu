/*
 * workspace.cu: the persistent per-device workspace of workspace.cuh and
 * the cached device shape.
 */
#include "workspace.cuh"

#include <mutex>

namespace {

enum { MAX_DEVICES = 64 };
const size_t MIN_WORKSPACE = (size_t)1 << 20;

struct workspace_state {
  std::mutex lock;
  void *ptr = nullptr;
  size_t bytes = 0;
  int sms = 0;
  size_t l2 = 0;
};

workspace_state states[MAX_DEVICES];

} // namespace

dq_status dq_cuda_workspace(const char *op, int device, size_t bytes, void **ptr) {
  if (device < 0 || device >= MAX_DEVICES)
    return dq_fail(DQ_ERR_DEVICE, "%s: cuda:%d is not a valid device", op, device);
  workspace_state &st = states[device];
  std::lock_guard<std::mutex> guard(st.lock);
  if (bytes > st.bytes) {
    size_t want = st.bytes * 2 > bytes ? st.bytes * 2 : bytes;
    if (want < MIN_WORKSPACE) want = MIN_WORKSPACE;
    void *fresh = nullptr;
    DQ_TRY(dq_cuda_scratch(op, device, want, &fresh));
    /* Stream-ordered: the old block returns to the pool after the work
     * queued so far (which may still use it). */
    if (st.ptr) dq_cuda_scratch_free(device, st.ptr);
    st.ptr = fresh;
    st.bytes = want;
  }
  *ptr = st.ptr;
  return DQ_OK;
}

dq_status dq_cuda_device_shape(const char *op, int device, int *sms, size_t *l2_bytes) {
  if (device < 0 || device >= MAX_DEVICES)
    return dq_fail(DQ_ERR_DEVICE, "%s: cuda:%d is not a valid device", op, device);
  workspace_state &st = states[device];
  std::lock_guard<std::mutex> guard(st.lock);
  if (!st.sms) {
    int count = 0, l2 = 0;
    DQ_CUDA_TRY(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    DQ_CUDA_TRY(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
    st.sms = count > 0 ? count : 1;
    st.l2 = l2 > 0 ? (size_t)l2 : ((size_t)4 << 20);
  }
  *sms = st.sms;
  *l2_bytes = st.l2;
  return DQ_OK;
}
