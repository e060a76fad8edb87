/*
 * data_plan.c: which examples go into which batch, epoch by epoch.
 *
 * Training wants three things at once: a fresh random order every epoch,
 * little padding (so a batch holds examples of similar length), and a
 * bounded batch size in tokens. The plan shuffles the examples, sorts them
 * by length only inside large chunks (so batches stay random in content),
 * cuts each chunk into batches and finally shuffles the order of the
 * batches, so long and short batches alternate. All randomness is Philox
 * keyed by (seed, epoch): the plan of an epoch is a pure function of its
 * arguments, which is what makes resuming exact.
 */
#include "data_internal.h"
#include "philox.h"

#include <stdlib.h>
#include <string.h>

/* Two streams per epoch, one per shuffle, so the batch shuffle does not
 * depend on how many draws the example shuffle made. The counter packs the
 * epoch (bits 40..63), the stream (bit 39) and the draw number / 2 (two
 * 64-bit draws per Philox call). */
enum { STREAM_EXAMPLES = 0, STREAM_BATCHES = 1 };

static uint64_t draw_u64(uint64_t seed, uint64_t epoch, int stream, uint64_t i) {
  uint64_t counter = (epoch << 40) ^ ((uint64_t)stream << 39) ^ (i >> 1);
  dq_u32x4 r = dq_philox(seed, counter);
  int lane = (int)(i & 1) * 2;
  return (uint64_t)r.v[lane] << 32 | r.v[lane + 1];
}

/* Fisher-Yates; the modulo bias of a 64-bit draw is below 2^-24 for any
 * realistic n. */
static void shuffle(int64_t *items, int64_t n, uint64_t seed, uint64_t epoch, int stream) {
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)(draw_u64(seed, epoch, stream, (uint64_t)i) % (uint64_t)(i + 1));
    int64_t t = items[i];
    items[i] = items[j];
    items[j] = t;
  }
}

typedef struct sort_item {
  int64_t example, src_len, tgt_len, position;
} sort_item;

/* Longest source first, then longest target, then the shuffled position:
 * a total order, so qsort (not stable) still gives one answer. */
static int by_length_desc(const void *pa, const void *pb) {
  const sort_item *a = pa, *b = pb;
  if (a->src_len != b->src_len) return a->src_len > b->src_len ? -1 : 1;
  if (a->tgt_len != b->tgt_len) return a->tgt_len > b->tgt_len ? -1 : 1;
  return (a->position > b->position) - (a->position < b->position);
}

dq_status dq_data_check_offsets(const char *op, const char *what, const dq_tensor *t, int64_t n_expected) {
  dq_status st = dq_check_defined(op, what, t);
  if (st) return st;
  if (t->device != DQ_CPU || t->dtype != DQ_I64 || t->ndim != 1 || t->numel < 1)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s is %s; expected an i64 cpu vector of n + 1 offsets", op, what, dq_desc(t));
  if (n_expected >= 0 && t->numel != n_expected + 1)
    return dq_fail(DQ_ERR_SHAPE, "%s: %s has %lld entries; expected %lld (one per example plus one)", op, what,
                   (long long)t->numel, (long long)(n_expected + 1));
  const int64_t *off = t->data;
  if (off[0] != 0) return dq_fail(DQ_ERR_ARGUMENT, "%s: %s[0] is %lld; expected 0", op, what, (long long)off[0]);
  for (int64_t i = 0; i + 1 < t->numel; i++)
    if (off[i + 1] < off[i])
      return dq_fail(DQ_ERR_ARGUMENT, "%s: %s decreases at example %lld (%lld then %lld)", op, what, (long long)i,
                     (long long)off[i], (long long)off[i + 1]);
  return DQ_OK;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

dq_status dq_data_plan(dq_tensor *order, dq_tensor *batch_starts, int64_t *num_batches,
                       const dq_tensor *src_offsets, const dq_tensor *tgt_offsets, int64_t batch_size,
                       int64_t max_tokens, int shuffle_examples, int64_t chunk_size, uint64_t seed,
                       uint64_t epoch) {
  static const char *op = "dq_data_plan";
  if (!num_batches) return dq_fail(DQ_ERR_ARGUMENT, "%s: num_batches is NULL", op);
  dq_status st = dq_data_check_offsets(op, "src_offsets", src_offsets, -1);
  if (st) return st;
  int64_t n = src_offsets->numel - 1;
  if (tgt_offsets && (st = dq_data_check_offsets(op, "tgt_offsets", tgt_offsets, n))) return st;
  if (batch_size <= 0 && max_tokens <= 0)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: give batch_size > 0 or max_tokens > 0 (got %lld and %lld)", op,
                   (long long)batch_size, (long long)max_tokens);
  if (epoch >= (1ULL << 24)) return dq_fail(DQ_ERR_ARGUMENT, "%s: epoch %llu is too large (max 2^24 - 1)", op,
                                            (unsigned long long)epoch);
  const int64_t *src = src_offsets->data, *tgt = tgt_offsets ? tgt_offsets->data : NULL;

  int64_t shape_n[1] = {n}, shape_starts[1] = {n + 1};
  if ((st = dq_prepare_out(op, order, 1, shape_n, DQ_I64, DQ_CPU))) return st;
  if ((st = dq_prepare_out(op, batch_starts, 1, shape_starts, DQ_I64, DQ_CPU))) return st;
  int64_t *out_order = order->data, *starts = batch_starts->data;
  memset(starts, 0, sizeof(int64_t) * (size_t)(n + 1));
  *num_batches = 0;
  if (n == 0) return DQ_OK;

  int64_t *seq = malloc(sizeof(int64_t) * (size_t)n);
  sort_item *items = malloc(sizeof(sort_item) * (size_t)n);
  if (!seq || !items) {
    free(seq);
    free(items);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory planning %lld examples", op, (long long)n);
  }
  for (int64_t i = 0; i < n; i++) seq[i] = i;
  if (shuffle_examples) shuffle(seq, n, seed, epoch, STREAM_EXAMPLES);
  for (int64_t i = 0; i < n; i++) {
    int64_t e = seq[i];
    items[i] = (sort_item){e, src[e + 1] - src[e], tgt ? tgt[e + 1] - tgt[e] : 0, i};
    if (max_tokens > 0 && max64(items[i].src_len, items[i].tgt_len) > max_tokens) {
      int64_t s = items[i].src_len, t = items[i].tgt_len;
      free(seq);
      free(items);
      return dq_fail(DQ_ERR_ARGUMENT,
                     "%s: example %lld has %lld source and %lld target tokens, more than max_tokens %lld allows "
                     "in one batch; raise max_tokens or lower the maximum lengths",
                     op, (long long)e, (long long)s, (long long)t, (long long)max_tokens);
    }
  }
  int64_t chunk = chunk_size > 0 ? chunk_size : n;
  if (chunk_size > 0)
    for (int64_t c = 0; c < n; c += chunk)
      qsort(items + c, (size_t)(c + chunk < n ? chunk : n - c), sizeof(sort_item), by_length_desc);

  /* Cut into batches; starts[k] is the first position of batch k. */
  int64_t nb = 0, count = 0, longest = 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t len = max64(items[i].src_len, items[i].tgt_len);
    int64_t grown = max64(longest, len);
    bool chunk_start = i % chunk == 0;
    bool full = (batch_size > 0 && count >= batch_size) || (max_tokens > 0 && (count + 1) * grown > max_tokens);
    if (count == 0 || chunk_start || full) {
      starts[nb++] = i;
      count = 0;
      grown = len;
    }
    count++;
    longest = grown;
  }

  /* Batch order: shuffled, then the examples are laid out batch by batch. */
  int64_t *batch_ids = seq; /* reuse: nb <= n */
  for (int64_t k = 0; k < nb; k++) batch_ids[k] = k;
  if (shuffle_examples) shuffle(batch_ids, nb, seed, epoch, STREAM_BATCHES);
  int64_t *first = malloc(sizeof(int64_t) * (size_t)(nb + 1));
  if (!first) {
    free(seq);
    free(items);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory planning %lld batches", op, (long long)nb);
  }
  memcpy(first, starts, sizeof(int64_t) * (size_t)nb);
  first[nb] = n;
  int64_t pos = 0;
  for (int64_t k = 0; k < nb; k++) {
    int64_t b = batch_ids[k];
    starts[k] = pos;
    for (int64_t i = first[b]; i < first[b + 1]; i++) out_order[pos++] = items[i].example;
  }
  starts[nb] = n;
  *num_batches = nb;
  free(first);
  free(seq);
  free(items);
  return DQ_OK;
}
