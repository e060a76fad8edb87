/*
 * dqbart_loss.h: the distillation losses of DQ-BART (DQBART.md section 4),
 * each computing its value and its gradient in one pass over the inputs.
 *
 * Common arguments:
 *  - value: a 0-d f32 tensor on the inputs' device (allocated when
 *    undefined) receiving the loss itself, not multiplied by weight. It
 *    stays on the device: nothing synchronizes. With DQ_LOSS_ADD_VALUE the
 *    loss is added to it (a sum over layers without a host round trip).
 *  - grad: NULL (value only) or a tensor shaped like the student input
 *    (logits for the cross-entropy) receiving weight * dLoss/dStudent; with
 *    DQ_LOSS_ADD_GRAD it is added (a model's injected output gradient),
 *    else written (allocated like the student when undefined). Rows a loss
 *    ignores get 0 when written and are left alone when added.
 *  - flags: DQ_LOSS_ADD_GRAD | DQ_LOSS_ADD_VALUE, or 0.
 *
 * Sums accumulate in f32 per thread and combine in a fixed order (CPU: in
 * double over fixed blocks), so every loss repeats bit for bit run to run.
 * CPU inputs are f32. On CUDA student and teacher share one float dtype
 * (f32, bf16 or f16) and grad is f32 or that dtype.
 */
#ifndef DQBART_LOSS_H
#define DQBART_LOSS_H

enum dq_loss_flags {
  DQ_LOSS_ADD_GRAD = 1,
  DQ_LOSS_ADD_VALUE = 2
};

/* Token cross-entropy: logits [..., V], labels (i32 or i64) shaped like
 * logits without the last dim. A position whose label equals ignore_index
 * (transformers uses -100) is ignored; the loss is the mean over the others
 * (0 when there are none) of
 *   lse(x) - (1 - eps) * x[label] - eps / V * sum_j x[j]
 * (torch's cross_entropy with label_smoothing = eps), and the gradient is
 * (softmax(x) - (1 - eps) * onehot(label) - eps / V) / count. A label
 * outside [0, V) that is not ignore_index is an error on the CPU; on CUDA
 * (where checking would need a host round trip) it makes the value NaN. */
DQ_API dq_status dq_loss_cross_entropy(dq_tensor *value, dq_tensor *grad, float weight, int flags,
                                       const dq_tensor *logits, const dq_tensor *labels, int64_t ignore_index,
                                       float label_smoothing);

/* Mean squared error over all elements: mean((s - t)^2); gradient
 * 2 (s - t) / numel. Logits, attention maps, hidden states. */
DQ_API dq_status dq_loss_mse(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,
                             const dq_tensor *teacher);

/* The reference's enc_hid_last: the MSE of each sample (a slice of the
 * first dim, e.g. [T, D] of [B, T, D]) summed over the samples, i.e.
 * sum((s - t)^2) / (numel / B); gradient 2 (s - t) / (numel / B). */
DQ_API dq_status dq_loss_mse_per_sample(dq_tensor *value, dq_tensor *grad, float weight, int flags,
                                        const dq_tensor *student, const dq_tensor *teacher);

/* Hinton's distillation loss (beyond the reference): with temperature T,
 * p = softmax(teacher / T), q = softmax(student / T) over the last dim,
 * the mean over counted rows of T^2 * KL(p || q) = T^2 * sum_j p_j (log p_j
 * - log q_j); gradient T * (q - p) / count. labels (may be NULL: every row
 * counts) and ignore_index select the rows as for the cross-entropy. */
DQ_API dq_status dq_loss_kl(dq_tensor *value, dq_tensor *grad, float weight, int flags, const dq_tensor *student,
                            const dq_tensor *teacher, const dq_tensor *labels, int64_t ignore_index,
                            float temperature);

#endif
