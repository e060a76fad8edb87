/*
 * tensor.c: tensor lifetime (reference-counted storage), views, contiguous
 * copies, filling, random numbers and transfers between host and devices.
 */
#include "backend.h"
#include "../kernels/kernels.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---- dtypes ------------------------------------------------------------- */

static const struct {
  const char *name;
  int64_t size;
} dtype_info[DQ_NUM_DTYPES] = {
    [DQ_F32] = {"f32", 4}, [DQ_BF16] = {"bf16", 2}, [DQ_F16] = {"f16", 2},
    [DQ_I8] = {"i8", 1},   [DQ_I32] = {"i32", 4},   [DQ_I64] = {"i64", 8},
};

static bool valid_dtype(int dtype) { return dtype >= 0 && dtype < DQ_NUM_DTYPES; }

const char *dq_dtype_name(int dtype) { return valid_dtype(dtype) ? dtype_info[dtype].name : "?"; }
int64_t dq_dtype_size(int dtype) { return valid_dtype(dtype) ? dtype_info[dtype].size : 0; }

int dq_dtype_from_name(const char *name) {
  static const struct {
    const char *alias;
    int dtype;
  } aliases[] = {
      {"f32", DQ_F32},      {"float32", DQ_F32}, {"float", DQ_F32},   {"bf16", DQ_BF16},
      {"bfloat16", DQ_BF16}, {"f16", DQ_F16},    {"float16", DQ_F16}, {"half", DQ_F16},
      {"i8", DQ_I8},        {"int8", DQ_I8},     {"i32", DQ_I32},     {"int32", DQ_I32},
      {"int", DQ_I32},      {"i64", DQ_I64},     {"int64", DQ_I64},   {"long", DQ_I64},
  };
  if (!name) return -1;
  for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
    if (strcmp(name, aliases[i].alias) == 0) return aliases[i].dtype;
  return -1;
}

/* ---- storage ------------------------------------------------------------ */

static _Atomic int64_t bytes_allocated_cpu;
static _Atomic int64_t bytes_allocated_cuda[64];
/* High-water marks of the counters above, since start or the last reset. */
static _Atomic int64_t bytes_peak_cpu;
static _Atomic int64_t bytes_peak_cuda[64];

static _Atomic int64_t *allocation_counter(int device) {
  if (device == DQ_CPU) return &bytes_allocated_cpu;
  return &bytes_allocated_cuda[device & 63];
}

static _Atomic int64_t *peak_counter(int device) {
  if (device == DQ_CPU) return &bytes_peak_cpu;
  return &bytes_peak_cuda[device & 63];
}

/* Count an allocation and raise the peak if it now stands higher (a CAS
   loop: another thread may raise it at the same time). */
static void count_allocation(int device, int64_t bytes) {
  int64_t now = atomic_fetch_add(allocation_counter(device), bytes) + bytes;
  _Atomic int64_t *peak = peak_counter(device);
  int64_t seen = atomic_load(peak);
  while (now > seen && !atomic_compare_exchange_weak(peak, &seen, now)) {
  }
}

int64_t dq_memory_allocated(int device) { return atomic_load(allocation_counter(device)); }

int64_t dq_memory_peak(int device) { return atomic_load(peak_counter(device)); }

void dq_memory_reset_peak(int device) { atomic_store(peak_counter(device), dq_memory_allocated(device)); }

static dq_status check_device(const char *op, int device) {
  if (device == DQ_CPU) return DQ_OK;
  if (device < 0) return dq_fail(DQ_ERR_DEVICE, "%s: device %d is not valid (cpu is -1, cuda:N is N)", op, device);
#ifdef DQ_HAVE_CUDA
  int n = cuda_device_count();
  if (device >= n)
    return dq_fail(DQ_ERR_DEVICE, "%s: cuda:%d requested but %d CUDA device%s visible", op, device, n,
                   n == 1 ? " is" : "s are");
  return DQ_OK;
#else
  return dq_no_cuda(op);
#endif
}

static dq_status storage_new(dq_storage **out, int64_t bytes, int device) {
  dq_storage *s = calloc(1, sizeof *s);
  if (!s) return dq_fail(DQ_ERR_MEMORY, "out of host memory allocating a storage header");
  /* Never allocate 0 bytes: a defined tensor always has a non-NULL pointer. */
  int64_t padded = bytes > 0 ? bytes : 1;
  if (device == DQ_CPU) {
    /* 64-byte alignment suits AVX-512 loads and cache lines. */
    size_t rounded = ((size_t)padded + 63) & ~(size_t)63;
    s->ptr = aligned_alloc(64, rounded);
    if (!s->ptr) {
      free(s);
      return dq_fail(DQ_ERR_MEMORY, "out of host memory allocating %lld bytes", (long long)bytes);
    }
  } else {
#ifdef DQ_HAVE_CUDA
    dq_status st = cuda_alloc(device, padded, &s->ptr);
    if (st) {
      free(s);
      return st;
    }
#else
    free(s);
    return dq_no_cuda("dq_tensor_empty");
#endif
  }
  s->bytes = bytes;
  s->device = device;
  s->refcount = 1;
  count_allocation(device, bytes);
  *out = s;
  return DQ_OK;
}

static void storage_retain(dq_storage *s) { __atomic_fetch_add(&s->refcount, 1, __ATOMIC_RELAXED); }

static void storage_release(dq_storage *s) {
  if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) != 0) return;
  if (s->release) {
    s->release(s->release_ctx, s->ptr, s->bytes);
  } else {
    atomic_fetch_sub(allocation_counter(s->device), s->bytes);
    if (s->device == DQ_CPU) free(s->ptr);
#ifdef DQ_HAVE_CUDA
    else cuda_free(s->device, s->ptr);
#endif
  }
  free(s);
}

/* ---- shapes --------------------------------------------------------------- */

int64_t dq_shape_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

static dq_status check_shape(const char *op, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > DQ_MAX_DIMS)
    return dq_fail(DQ_ERR_SHAPE, "%s: %d dims requested; tensors have 0 to %d", op, ndim, DQ_MAX_DIMS);
  if (ndim > 0 && !shape) return dq_fail(DQ_ERR_ARGUMENT, "%s: shape is NULL", op);
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0)
      return dq_fail(DQ_ERR_SHAPE, "%s: shape %s has a negative size at dim %d", op, dq_shape_str(ndim, shape), i);
    if (shape[i] && n > INT64_MAX / 16 / shape[i])
      return dq_fail(DQ_ERR_SHAPE, "%s: shape %s is too large", op, dq_shape_str(ndim, shape));
    n *= shape[i];
  }
  return DQ_OK;
}

static void set_geometry(dq_tensor *t, int ndim, const int64_t *shape) {
  t->ndim = ndim;
  for (int i = 0; i < DQ_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 0;
  t->numel = dq_shape_numel(ndim, shape);
}

static int64_t view_byte_offset(const dq_tensor *t) { return (char *)t->data - (char *)t->storage->ptr; }

int64_t dq_tensor_storage_span(const dq_tensor *t) {
  if (!t || !t->storage) return 0;
  return (t->storage->bytes - view_byte_offset(t)) / dq_dtype_size(t->dtype);
}

/* ---- lifetime ------------------------------------------------------------- */

dq_status dq_tensor_empty(dq_tensor *out, int ndim, const int64_t *shape, int dtype, int device) {
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "dq_tensor_empty: out is NULL");
  dq_status st = check_shape("dq_tensor_empty", ndim, shape);
  if (st) return st;
  if (!valid_dtype(dtype))
    return dq_fail(DQ_ERR_DTYPE, "dq_tensor_empty: dtype %d is not one of f32, bf16, f16, i8, i32, i64", dtype);
  if ((st = check_device("dq_tensor_empty", device))) return st;
  dq_storage *s = NULL;
  int64_t numel = dq_shape_numel(ndim, shape);
  if ((st = storage_new(&s, numel * dtype_info[dtype].size, device))) return st;
  dq_tensor_release(out);
  out->storage = s;
  out->data = s->ptr;
  out->dtype = dtype;
  out->device = device;
  set_geometry(out, ndim, shape);
  return DQ_OK;
}

dq_status dq_tensor_wrap(dq_tensor *out, void *ptr, int64_t bytes, int ndim, const int64_t *shape, int dtype,
                         int device, dq_release_fn release, void *release_ctx) {
  dq_status st = check_shape("dq_tensor_wrap", ndim, shape);
  if (st) return st;
  if (dq_shape_numel(ndim, shape) * dq_dtype_size(dtype) > bytes)
    return dq_fail(DQ_ERR_SHAPE, "dq_tensor_wrap: %s %s needs more than the %lld bytes given",
                   dq_shape_str(ndim, shape), dq_dtype_name(dtype), (long long)bytes);
  dq_storage *s = calloc(1, sizeof *s);
  if (!s) return dq_fail(DQ_ERR_MEMORY, "out of host memory allocating a storage header");
  s->ptr = ptr;
  s->bytes = bytes;
  s->device = device;
  s->refcount = 1;
  s->release = release;
  s->release_ctx = release_ctx;
  dq_tensor_release(out);
  out->storage = s;
  out->data = ptr;
  out->dtype = dtype;
  out->device = device;
  set_geometry(out, ndim, shape);
  return DQ_OK;
}

void dq_tensor_release(dq_tensor *t) {
  if (!t) return;
  if (t->storage) storage_release(t->storage);
  memset(t, 0, sizeof *t);
}

int dq_tensor_defined(const dq_tensor *t) { return t && t->storage ? 1 : 0; }

int dq_tensor_same_storage(const dq_tensor *a, const dq_tensor *b) {
  return a && b && a->storage && a->storage == b->storage;
}

/* out becomes a view of src's storage at byte offset `byte_offset` from
 * src->data with the given geometry. Retains before releasing so that
 * out == src works. */
static void make_view(dq_tensor *out, const dq_tensor *src, int64_t byte_offset, int ndim, const int64_t *shape) {
  dq_tensor v = *src;
  storage_retain(v.storage);
  v.data = (char *)src->data + byte_offset;
  set_geometry(&v, ndim, shape);
  dq_tensor_release(out);
  *out = v;
}

dq_status dq_tensor_share(dq_tensor *out, const dq_tensor *src) {
  dq_status st = dq_check_defined("dq_tensor_share", "src", src);
  if (st) return st;
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "dq_tensor_share: out is NULL");
  make_view(out, src, 0, src->ndim, src->shape);
  return DQ_OK;
}

/* ---- views ------------------------------------------------------------- */

dq_status dq_view(dq_tensor *out, const dq_tensor *src, int64_t offset, int ndim, const int64_t *shape) {
  dq_status st = dq_check_defined("dq_view", "src", src);
  if (st || (st = check_shape("dq_view", ndim, shape))) return st;
  int64_t numel = dq_shape_numel(ndim, shape);
  int64_t span = dq_tensor_storage_span(src);
  int64_t first = view_byte_offset(src) / dq_dtype_size(src->dtype) + offset;
  if (offset < 0 && first < 0)
    return dq_fail(DQ_ERR_SHAPE, "dq_view: offset %lld points before the start of the storage", (long long)offset);
  if (offset > span || numel > span - offset)
    return dq_fail(DQ_ERR_SHAPE, "dq_view: %s at offset %lld needs %lld elements but the storage of %s has %lld from its start",
                   dq_shape_str(ndim, shape), (long long)offset, (long long)(offset + numel), dq_desc(src),
                   (long long)span);
  make_view(out, src, offset * dq_dtype_size(src->dtype), ndim, shape);
  return DQ_OK;
}

dq_status dq_reshape(dq_tensor *out, const dq_tensor *src, int ndim, const int64_t *shape) {
  dq_status st = dq_check_defined("dq_reshape", "src", src);
  if (st) return st;
  if (ndim < 0 || ndim > DQ_MAX_DIMS)
    return dq_fail(DQ_ERR_SHAPE, "dq_reshape: %d dims requested; tensors have 0 to %d", ndim, DQ_MAX_DIMS);
  int64_t resolved[DQ_MAX_DIMS];
  int inferred = -1;
  int64_t known = 1;
  for (int i = 0; i < ndim; i++) {
    resolved[i] = shape[i];
    if (shape[i] == -1) {
      if (inferred >= 0)
        return dq_fail(DQ_ERR_SHAPE, "dq_reshape: shape %s has more than one -1", dq_shape_str(ndim, shape));
      inferred = i;
    } else if (shape[i] < 0) {
      return dq_fail(DQ_ERR_SHAPE, "dq_reshape: shape %s has a negative size", dq_shape_str(ndim, shape));
    } else {
      known *= shape[i];
    }
  }
  if (inferred >= 0) {
    if (known == 0 || src->numel % known != 0)
      return dq_fail(DQ_ERR_SHAPE, "dq_reshape: cannot reshape %s (%lld elements) to %s", dq_desc(src),
                     (long long)src->numel, dq_shape_str(ndim, shape));
    resolved[inferred] = src->numel / known;
  }
  if (dq_shape_numel(ndim, resolved) != src->numel)
    return dq_fail(DQ_ERR_SHAPE, "dq_reshape: cannot reshape %s (%lld elements) to %s (%lld elements)", dq_desc(src),
                   (long long)src->numel, dq_shape_str(ndim, resolved), (long long)dq_shape_numel(ndim, resolved));
  make_view(out, src, 0, ndim, resolved);
  return DQ_OK;
}

static dq_status check_dim(const char *op, const dq_tensor *src, int dim) {
  if (dim < 0 || dim >= src->ndim)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: dim %d (0-based) is out of range for %s (0 to %d)", op, dim, dq_desc(src),
                   src->ndim - 1);
  return DQ_OK;
}

static dq_status check_range(const char *op, const dq_tensor *src, int dim, int64_t start, int64_t length) {
  dq_status st = check_dim(op, src, dim);
  if (st) return st;
  if (start < 0 || length < 0 || start > src->shape[dim] || length > src->shape[dim] - start)
    return dq_fail(DQ_ERR_SHAPE, "%s: range [%lld, %lld) (0-based) is outside dim %d of %s (size %lld)", op, (long long)start,
                   (long long)(start + length), dim, dq_desc(src), (long long)src->shape[dim]);
  return DQ_OK;
}

/* A slice along dim is contiguous when every dim before it has size 1
 * (or the slice covers a single index of dims that follow whole). */
static bool slice_is_contiguous(const dq_tensor *src, int dim, int64_t length) {
  int64_t outer = 1;
  for (int i = 0; i < dim; i++) outer *= src->shape[i];
  return outer == 1 || length == src->shape[dim] || length == 0;
}

static int64_t inner_size(const dq_tensor *t, int dim) {
  int64_t n = 1;
  for (int i = dim + 1; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

dq_status dq_narrow(dq_tensor *out, const dq_tensor *src, int dim, int64_t start, int64_t length) {
  dq_status st = dq_check_defined("dq_narrow", "src", src);
  if (st || (st = check_range("dq_narrow", src, dim, start, length))) return st;
  if (!slice_is_contiguous(src, dim, length))
    return dq_fail(DQ_ERR_SHAPE,
                   "dq_narrow: entries [%lld, %lld) of dim %d (0-based) of %s are not contiguous in memory, so they cannot be a view; "
                   "use narrow_copy (dq_narrow_copy) for a copy",
                   (long long)start, (long long)(start + length), dim, dq_desc(src));
  int64_t shape[DQ_MAX_DIMS];
  memcpy(shape, src->shape, sizeof shape);
  shape[dim] = length;
  make_view(out, src, start * inner_size(src, dim) * dq_dtype_size(src->dtype), src->ndim, shape);
  return DQ_OK;
}

dq_status dq_select(dq_tensor *out, const dq_tensor *src, int dim, int64_t index) {
  dq_status st = dq_check_defined("dq_select", "src", src);
  if (st || (st = check_dim("dq_select", src, dim))) return st;
  if (index < 0 || index >= src->shape[dim])
    return dq_fail(DQ_ERR_SHAPE, "dq_select: index %lld (0-based) is outside dim %d of %s (size %lld)", (long long)index, dim,
                   dq_desc(src), (long long)src->shape[dim]);
  if (!slice_is_contiguous(src, dim, 1) && src->shape[dim] != 1)
    return dq_fail(DQ_ERR_SHAPE,
                   "dq_select: index %lld of dim %d (0-based) of %s is not contiguous in memory, so it cannot be a view; "
                   "use narrow_copy for a copy",
                   (long long)index, dim, dq_desc(src));
  int64_t shape[DQ_MAX_DIMS];
  int n = 0;
  for (int i = 0; i < src->ndim; i++)
    if (i != dim) shape[n++] = src->shape[i];
  make_view(out, src, index * inner_size(src, dim) * dq_dtype_size(src->dtype), n, shape);
  return DQ_OK;
}

static void contiguous_strides(const dq_tensor *t, int64_t *strides) {
  int64_t s = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    strides[i] = s;
    s *= t->shape[i];
  }
}

static dq_status run_gather(const char *op, dq_tensor *out, const dq_tensor *src, const dq_gather_plan *plan) {
  dq_status st = dq_prepare_out(op, out, plan->ndim, plan->shape, src->dtype, src->device);
  if (st) return st;
  if (out->numel == 0) return DQ_OK;
  if (dq_on_cuda(src)) DQ_CUDA_CALL(cuda_gather(out, src, plan));
  return cpu_gather(out, src, plan);
}

dq_status dq_narrow_copy(dq_tensor *out, const dq_tensor *src, int dim, int64_t start, int64_t length) {
  dq_status st = dq_check_defined("dq_narrow_copy", "src", src);
  if (st || (st = check_range("dq_narrow_copy", src, dim, start, length))) return st;
  dq_gather_plan plan = {.ndim = src->ndim};
  contiguous_strides(src, plan.src_strides);
  memcpy(plan.shape, src->shape, sizeof plan.shape);
  plan.shape[dim] = length;
  plan.src_offset = start * plan.src_strides[dim];
  return run_gather("dq_narrow_copy", out, src, &plan);
}

dq_status dq_permute(dq_tensor *out, const dq_tensor *src, const int *perm) {
  dq_status st = dq_check_defined("dq_permute", "src", src);
  if (st) return st;
  if (!perm && src->ndim) return dq_fail(DQ_ERR_ARGUMENT, "dq_permute: perm is NULL");
  int64_t strides[DQ_MAX_DIMS];
  contiguous_strides(src, strides);
  dq_gather_plan plan = {.ndim = src->ndim};
  bool seen[DQ_MAX_DIMS] = {false};
  for (int i = 0; i < src->ndim; i++) {
    if (perm[i] < 0 || perm[i] >= src->ndim || seen[perm[i]])
      return dq_fail(DQ_ERR_ARGUMENT, "dq_permute: perm is not a permutation of 0..%d for %s (entry %d is %d)",
                     src->ndim - 1, dq_desc(src), i, perm[i]);
    seen[perm[i]] = true;
    plan.shape[i] = src->shape[perm[i]];
    plan.src_strides[i] = strides[perm[i]];
  }
  return run_gather("dq_permute", out, src, &plan);
}

dq_status dq_transpose(dq_tensor *out, const dq_tensor *src, int dim0, int dim1) {
  dq_status st = dq_check_defined("dq_transpose", "src", src);
  if (st || (st = check_dim("dq_transpose", src, dim0)) || (st = check_dim("dq_transpose", src, dim1))) return st;
  int perm[DQ_MAX_DIMS];
  for (int i = 0; i < src->ndim; i++) perm[i] = i;
  perm[dim0] = dim1;
  perm[dim1] = dim0;
  return dq_permute(out, src, perm);
}

/* ---- filling and random numbers -------------------------------------------- */

dq_status dq_fill(dq_tensor *t, double value) {
  dq_status st = dq_check_defined("dq_fill", "t", t);
  if (st) return st;
  if (t->numel == 0) return DQ_OK;
  if (dq_on_cuda(t)) DQ_CUDA_CALL(cuda_fill(t, value));
  return cpu_fill(t, value);
}

dq_status dq_arange(dq_tensor *t, double start, double step) {
  dq_status st = dq_check_defined("dq_arange", "t", t);
  if (st) return st;
  if (t->numel == 0) return DQ_OK;
  if (dq_on_cuda(t)) DQ_CUDA_CALL(cuda_arange(t, start, step));
  return cpu_arange(t, start, step);
}

uint64_t dq_rng_span(int64_t numel) { return numel <= 0 ? 0 : (uint64_t)((numel + 3) / 4); }

static dq_status random_fill(const char *op, dq_tensor *t, uint64_t seed, uint64_t offset, int normal) {
  dq_status st = dq_check_defined(op, "t", t);
  if (st || (st = dq_check_float(op, "t", t))) return st;
  if (t->numel == 0) return DQ_OK;
  if (dq_on_cuda(t)) DQ_CUDA_CALL(cuda_rand(t, seed, offset, normal));
  return cpu_rand(t, seed, offset, normal);
}

dq_status dq_rand(dq_tensor *t, uint64_t seed, uint64_t offset) { return random_fill("dq_rand", t, seed, offset, 0); }
dq_status dq_randn(dq_tensor *t, uint64_t seed, uint64_t offset) { return random_fill("dq_randn", t, seed, offset, 1); }

/* ---- copies ----------------------------------------------------------------- */

#ifdef DQ_HAVE_CUDA
/* Across devices with a dtype change: move the bytes first (in src's dtype),
 * then convert on the destination device. */
static dq_status copy_across_devices(dq_tensor *dst, const dq_tensor *src) {
  int64_t bytes = src->numel * dq_dtype_size(src->dtype);
  if (src->dtype == dst->dtype) return cuda_memcpy(dst->data, dst->device, src->data, src->device, bytes);
  dq_tensor staging = {0};
  dq_status st = dq_tensor_empty(&staging, src->ndim, src->shape, src->dtype, dst->device);
  if (st) return st;
  st = cuda_memcpy(staging.data, staging.device, src->data, src->device, bytes);
  if (!st) st = dq_on_cuda(dst) ? cuda_convert(dst, &staging) : cpu_convert(dst, &staging);
  dq_tensor_release(&staging);
  return st;
}
#endif

dq_status dq_copy(dq_tensor *dst, const dq_tensor *src) {
  dq_status st = dq_check_defined("dq_copy", "dst", dst);
  if (st || (st = dq_check_defined("dq_copy", "src", src))) return st;
  if (dst->numel != src->numel)
    return dq_fail(DQ_ERR_SHAPE, "dq_copy: dst %s and src %s have different numbers of elements", dq_desc(dst),
                   dq_desc(src));
  if (dst->numel == 0) return DQ_OK;
  if (dst->data == src->data && dst->device == src->device && dst->dtype == src->dtype) return DQ_OK;
  if (dst->device == src->device) {
    if (dq_on_cuda(dst)) DQ_CUDA_CALL(cuda_convert(dst, src));
    return cpu_convert(dst, src);
  }
#ifdef DQ_HAVE_CUDA
  return copy_across_devices(dst, src);
#else
  return dq_no_cuda("dq_copy");
#endif
}

static dq_status check_host_bytes(const char *op, const dq_tensor *t, const void *host, int64_t bytes) {
  dq_status st = dq_check_defined(op, "tensor", t);
  if (st) return st;
  if (!host && bytes) return dq_fail(DQ_ERR_ARGUMENT, "%s: host pointer is NULL", op);
  int64_t want = t->numel * dq_dtype_size(t->dtype);
  if (bytes != want)
    return dq_fail(DQ_ERR_SHAPE, "%s: %lld bytes given for %s, which holds %lld", op, (long long)bytes, dq_desc(t),
                   (long long)want);
  return DQ_OK;
}

dq_status dq_copy_from_host(dq_tensor *dst, const void *src, int64_t bytes) {
  dq_status st = check_host_bytes("dq_copy_from_host", dst, src, bytes);
  if (st || bytes == 0) return st;
  if (dq_on_cuda(dst)) DQ_CUDA_CALL(cuda_memcpy(dst->data, dst->device, src, DQ_CPU, bytes));
  memmove(dst->data, src, (size_t)bytes);
  return DQ_OK;
}

dq_status dq_copy_to_host(const dq_tensor *src, void *dst, int64_t bytes) {
  dq_status st = check_host_bytes("dq_copy_to_host", src, dst, bytes);
  if (st || bytes == 0) return st;
  if (dq_on_cuda(src)) DQ_CUDA_CALL(cuda_memcpy(dst, DQ_CPU, src->data, src->device, bytes));
  memmove(dst, src->data, (size_t)bytes);
  return DQ_OK;
}

dq_status dq_get_item(const dq_tensor *t, int64_t index, double *value) {
  dq_status st = dq_check_defined("dq_get_item", "t", t);
  if (st) return st;
  if (!value) return dq_fail(DQ_ERR_ARGUMENT, "dq_get_item: value is NULL");
  if (index < 0 || index >= t->numel)
    return dq_fail(DQ_ERR_SHAPE, "dq_get_item: index %lld is outside %s (%lld elements)", (long long)index,
                   dq_desc(t), (long long)t->numel);
  /* Read one element through a one-element f32/i64 view converted on the host. */
  dq_tensor one = {0}, host = {0};
  int64_t shape1[1] = {1};
  if ((st = dq_view(&one, t, index, 1, shape1))) return st;
  int host_dtype = dq_is_float(t->dtype) ? DQ_F32 : DQ_I64;
  if (!(st = dq_tensor_empty(&host, 1, shape1, host_dtype, DQ_CPU))) st = dq_copy(&host, &one);
  if (!st) *value = host_dtype == DQ_F32 ? (double)*(float *)host.data : (double)*(int64_t *)host.data;
  dq_tensor_release(&one);
  dq_tensor_release(&host);
  return st;
}
