/*
 * data_pack.c: one batch of tokenized examples as the model's input
 * tensors, padded to the batch's longest sequence (transformers'
 * DataCollatorForSeq2Seq plus the model's shift_tokens_right, in one pass).
 */
#include "data_internal.h"

#include <string.h>

typedef struct side {
  const int32_t *ids;
  const int64_t *offsets;
  int64_t n;     /* examples */
  int64_t total; /* ids */
} side;

static dq_status get_side(const char *op, const char *name, const dq_tensor *ids, const dq_tensor *offsets, side *out) {
  dq_status st = dq_check_defined(op, name, ids);
  if (st || (st = dq_check_defined(op, name, offsets))) return st;
  if (ids->device != DQ_CPU || ids->dtype != DQ_I32 || ids->ndim != 1)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s ids are %s; expected an i32 cpu vector", op, name, dq_desc(ids));
  if (offsets->device != DQ_CPU || offsets->dtype != DQ_I64 || offsets->ndim != 1 || offsets->numel < 1)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s offsets are %s; expected an i64 cpu vector of n + 1 entries", op, name,
                   dq_desc(offsets));
  *out = (side){ids->data, offsets->data, offsets->numel - 1, ids->numel};
  return DQ_OK;
}

/* The ids of example e, checked against the side's bounds (only the
 * examples of this batch are looked at, so a step costs O(batch)). */
static dq_status span(const char *op, const char *name, const side *s, int64_t e, int64_t *first, int64_t *len) {
  if (e < 0 || e >= s->n)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: example %lld is out of range (the %s has %lld examples)", op, (long long)e,
                   name, (long long)s->n);
  int64_t a = s->offsets[e], b = s->offsets[e + 1];
  if (a < 0 || b < a || b > s->total)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: %s offsets of example %lld are [%lld, %lld) outside the %lld ids", op, name,
                   (long long)e, (long long)a, (long long)b, (long long)s->total);
  *first = a;
  *len = b - a;
  return DQ_OK;
}

static int64_t round_up(int64_t v, int64_t multiple) {
  return multiple > 1 ? (v + multiple - 1) / multiple * multiple : v;
}

/* `lead` decides the width: an allocated lead keeps its own (which must
 * hold `need`), an empty one gets `need`. `others` must then match it. */
static dq_status prepare_pair(const char *op, const char *lead_name, dq_tensor *lead, dq_tensor **others, int n_others,
                              int64_t rows, int64_t need) {
  int64_t shape[2] = {rows, need};
  if (!lead) return dq_fail(DQ_ERR_ARGUMENT, "%s: %s is NULL", op, lead_name);
  if (lead->storage) {
    if (lead->dtype != DQ_I64 || lead->device != DQ_CPU || lead->ndim != 2 || lead->shape[0] != rows ||
        lead->shape[1] < need)
      return dq_fail(DQ_ERR_SHAPE, "%s: %s is %s but the batch needs i64 cpu [%lld, >= %lld]", op, lead_name,
                     dq_desc(lead), (long long)rows, (long long)need);
    shape[1] = lead->shape[1];
  } else {
    dq_status st = dq_tensor_empty(lead, 2, shape, DQ_I64, DQ_CPU);
    if (st) return st;
  }
  for (int i = 0; i < n_others; i++) {
    dq_status st = dq_prepare_out(op, others[i], 2, shape, DQ_I64, DQ_CPU);
    if (st) return st;
  }
  return DQ_OK;
}

dq_status dq_data_pack(dq_tensor *input_ids, dq_tensor *attention_mask, dq_tensor *decoder_input_ids,
                       dq_tensor *decoder_attention_mask, dq_tensor *labels, const dq_tensor *src_ids,
                       const dq_tensor *src_offsets, const dq_tensor *tgt_ids, const dq_tensor *tgt_offsets,
                       const dq_tensor *examples, int64_t pad_id, int64_t decoder_start_id, int shift,
                       int64_t pad_multiple) {
  static const char *op = "dq_data_pack";
  side src, tgt = {0};
  bool with_target = tgt_ids != NULL;
  dq_status st = get_side(op, "source", src_ids, src_offsets, &src);
  if (st) return st;
  if (with_target) {
    if ((st = get_side(op, "target", tgt_ids, tgt_offsets, &tgt))) return st;
    if (tgt.n != src.n)
      return dq_fail(DQ_ERR_SHAPE, "%s: the source has %lld examples but the target %lld", op, (long long)src.n,
                     (long long)tgt.n);
    if (shift != DQ_DATA_SHIFT_START && shift != DQ_DATA_SHIFT_WRAP)
      return dq_fail(DQ_ERR_ARGUMENT, "%s: shift is %d; expected DQ_DATA_SHIFT_START (0) or DQ_DATA_SHIFT_WRAP (1)",
                     op, shift);
    if (!decoder_input_ids || !decoder_attention_mask)
      return dq_fail(DQ_ERR_ARGUMENT, "%s: decoder_input_ids and decoder_attention_mask are needed with a target", op);
  }
  if ((st = dq_check_defined(op, "examples", examples))) return st;
  if (examples->device != DQ_CPU || examples->dtype != DQ_I64 || examples->ndim != 1 || examples->numel < 1)
    return dq_fail(DQ_ERR_ARGUMENT, "%s: examples is %s; expected a non-empty i64 cpu vector", op, dq_desc(examples));
  const int64_t *ex = examples->data;
  int64_t rows = examples->numel, longest_src = 0, longest_tgt = 0, first, len;
  for (int64_t b = 0; b < rows; b++) {
    if ((st = span(op, "source", &src, ex[b], &first, &len))) return st;
    if (len > longest_src) longest_src = len;
    if (with_target) {
      if ((st = span(op, "target", &tgt, ex[b], &first, &len))) return st;
      if (len > longest_tgt) longest_tgt = len;
    }
  }

  dq_tensor *src_others[1] = {attention_mask};
  if (!attention_mask) return dq_fail(DQ_ERR_ARGUMENT, "%s: attention_mask is NULL", op);
  if ((st = prepare_pair(op, "input_ids", input_ids, src_others, 1, rows, round_up(longest_src, pad_multiple))))
    return st;
  int64_t width = input_ids->shape[1];
  int64_t *ids_out = input_ids->data, *mask_out = attention_mask->data;
  for (int64_t b = 0; b < rows; b++) {
    span(op, "source", &src, ex[b], &first, &len);
    int64_t *row = ids_out + b * width, *mrow = mask_out + b * width;
    for (int64_t j = 0; j < len; j++) row[j] = src.ids[first + j];
    for (int64_t j = len; j < width; j++) row[j] = pad_id;
    for (int64_t j = 0; j < width; j++) mrow[j] = j < len;
  }
  if (!with_target) return DQ_OK;

  dq_tensor *tgt_others[2] = {decoder_input_ids, decoder_attention_mask};
  if ((st = prepare_pair(op, "labels", labels, tgt_others, 2, rows, round_up(longest_tgt, pad_multiple)))) return st;
  width = labels->shape[1];
  int64_t *lab = labels->data, *dec = decoder_input_ids->data, *dmask = decoder_attention_mask->data;
  for (int64_t b = 0; b < rows; b++) {
    span(op, "target", &tgt, ex[b], &first, &len);
    const int32_t *t = tgt.ids + first;
    int64_t *lrow = lab + b * width, *drow = dec + b * width, *mrow = dmask + b * width;
    for (int64_t j = 0; j < width; j++) {
      lrow[j] = j < len ? t[j] : DQ_DATA_IGNORE_INDEX;
      mrow[j] = j < len;
      drow[j] = pad_id;
    }
    if (len == 0) continue;
    /* transformers shifts the padded labels: position L (when the row
     * has room) gets the last label, the positions after it padding. */
    drow[0] = shift == DQ_DATA_SHIFT_WRAP ? t[len - 1] : decoder_start_id;
    for (int64_t j = 1; j <= len && j < width; j++) drow[j] = t[j - 1];
  }
  return DQ_OK;
}
