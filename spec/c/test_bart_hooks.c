/*
 * test_bart_hooks.c: the quantization seam of the model (model_hooks in
 * engine/model_internal.h), with test hooks standing in for the quantizer:
 *  - identity hooks change nothing (outputs and gradients as without hooks)
 *    and are called at every site, forward and backward, once each;
 *  - a linear really reads the hook's copy of its input and the working
 *    weights a weights hook wrote: scaling fc2's input by 1/2 or its working
 *    weight by 1/2 both give the logits of a model whose fc2 weight was
 *    halved, and the master weights stay untouched.
 */
#include "check.h"
#include "model_internal.h"

#include <math.h>
#include <stdlib.h>

#define FIXTURE DQ_SOURCE_DIR "/spec/fixtures/bart/bart"

typedef struct counts {
  int activation, activation_backward, weights, embedding_grad;
  int sites[2][8][5]; /* [decoder][layer][kind] */
  int halve_fc2_input, halve_fc2_weight;
} counts;

static dq_status identity_activation(void *ctx, const model_site *site, const dq_tensor *x, dq_tensor *q) {
  counts *c = ctx;
  c->activation++;
  c->sites[site->decoder][site->layer][site->kind]++;
  dq_status st = dq_copy(q, x);
  if (!st && c->halve_fc2_input && !site->decoder && site->layer == 0 && site->kind == MODEL_SITE_LINEAR_INPUT &&
      site->which == MODEL_LIN_FC2)
    st = dq_scale(q, q, 0.5f);
  return st;
}

static dq_status identity_backward(void *ctx, const model_site *site, dq_tensor *grad, const dq_tensor *x) {
  counts *c = ctx;
  c->activation_backward++;
  return dq_same_shape(grad, x) ? DQ_OK : dq_fail(DQ_ERR_SHAPE, "test hook: grad %s for x %s", dq_desc(grad), dq_desc(x));
}

static dq_status weights_hook(void *ctx, dq_model *m) {
  counts *c = ctx;
  c->weights++;
  if (!c->halve_fc2_weight) return DQ_OK;
  dq_tensor w = model_lin_w(m, &m->enc_w.layers[0].fc2);
  return dq_scale(&w, &w, 0.5f);
}

static dq_status embedding_hook(void *ctx, int decoder, dq_tensor *grad, const dq_tensor *ids) {
  counts *c = ctx;
  c->embedding_grad++;
  return grad->shape[0] == ids->numel ? DQ_OK : dq_fail(DQ_ERR_SHAPE, "test hook: embedding grad rows");
}

static dq_tensor load(const char *path, const char *name) {
  dq_safetensors *st = NULL;
  dq_tensor t = {0}, out = {0};
  if (dq_safetensors_open(&st, path) || dq_safetensors_tensor(st, name, &t)) {
    fprintf(stderr, "cannot load %s from %s: %s\n", name, path, dq_last_error());
    exit(2);
  }
  int64_t n = t.numel;
  dq_tensor_empty(&out, t.ndim, t.shape, t.dtype, DQ_CPU);
  dq_copy(&out, &t);
  (void)n;
  dq_tensor_release(&t);
  dq_safetensors_close(st);
  return out;
}

typedef struct run_result {
  dq_tensor logits, grads;
} run_result;

/* Training forward (dropout off), cross-entropy, backward; copies of the
 * logits and the gradient buffer. */
static run_result run(dq_model *m, dq_tensor *in) {
  run_result r = {{0}, {0}};
  dq_tensor loss = {0}, dlogits = {0}, logits = {0}, grads = {0};
  CHECK_OK(dq_model_set_dropout(m, 0, 0, 0));
  CHECK_OK(dq_model_set_training(m, 1));
  CHECK_OK(dq_model_forward(m, &in[0], &in[1], &in[2], &in[3], 0));
  CHECK_OK(dq_model_output(m, DQ_OUT_LOGITS, 0, &logits));
  CHECK_OK(dq_model_output_grad(m, DQ_OUT_LOGITS, 0, &dlogits));
  CHECK_OK(dq_loss_cross_entropy(&loss, &dlogits, 1.0f, 0, &logits, &in[4], -100, 0.0f));
  CHECK_OK(dq_model_zero_grad(m));
  CHECK_OK(dq_model_backward(m));
  CHECK_OK(dq_model_grads(m, &grads));
  dq_tensor_empty(&r.logits, logits.ndim, logits.shape, DQ_F32, DQ_CPU);
  dq_copy(&r.logits, &logits);
  dq_tensor_empty(&r.grads, grads.ndim, grads.shape, DQ_F32, DQ_CPU);
  dq_copy(&r.grads, &grads);
  dq_tensor_release(&loss);
  dq_tensor_release(&dlogits);
  dq_tensor_release(&logits);
  dq_tensor_release(&grads);
  return r;
}

static double max_abs_diff(const dq_tensor *a, const dq_tensor *b) {
  const float *pa = a->data, *pb = b->data;
  double worst = 0;
  for (int64_t i = 0; i < a->numel; i++) {
    double d = fabs((double)pa[i] - pb[i]);
    if (d > worst || d != d) worst = d;
  }
  return worst;
}

static void release(run_result *r) {
  dq_tensor_release(&r->logits);
  dq_tensor_release(&r->grads);
}

int main(void) {
  const char *inputs = DQ_SOURCE_DIR "/spec/fixtures/bart/bart_inputs.safetensors";
  dq_tensor in[5] = {load(inputs, "input_ids"), load(inputs, "attention_mask"), load(inputs, "decoder_input_ids"),
                     load(inputs, "decoder_attention_mask"), load(inputs, "labels")};
  dq_model *m = NULL;
  CHECK_OK(dq_model_load(&m, FIXTURE, DQ_CPU, DQ_F32));
  if (!m) return check_summary();
  run_result plain = run(m, in);

  /* identity hooks: same numbers, every site seen once per pass */
  counts c;
  memset(&c, 0, sizeof c);
  model_hooks hooks = {.ctx = &c, .activation = identity_activation, .activation_backward = identity_backward,
                       .weights = weights_hook, .embedding_grad = embedding_hook};
  CHECK_OK(model_install_hooks(m, &hooks));
  run_result hooked = run(m, in);
  CHECK(max_abs_diff(&plain.logits, &hooked.logits) < 1e-5, "logits differ by %g",
        max_abs_diff(&plain.logits, &hooked.logits));
  CHECK(max_abs_diff(&plain.grads, &hooked.grads) < 1e-5, "gradients differ by %g",
        max_abs_diff(&plain.grads, &hooked.grads));
  /* bart fixture: 3 encoder layers (4 linear inputs + 4 attention
   * activations each), 2 decoder layers (7 + 2 x 4) */
  int want = 3 * (4 + 4) + 2 * (7 + 8);
  CHECK(c.activation == want, "activation hook called %d times, expected %d", c.activation, want);
  CHECK(c.activation_backward == want, "activation_backward called %d times, expected %d", c.activation_backward,
        want);
  CHECK(c.weights == 1, "weights hook called %d times", c.weights);
  CHECK(c.embedding_grad == 2, "embedding_grad hook called %d times", c.embedding_grad);
  for (int l = 0; l < 3; l++)
    CHECK(c.sites[0][l][MODEL_SITE_ATTN_QUERY] == 1 && c.sites[0][l][MODEL_SITE_ATTN_PROBS] == 1 &&
              c.sites[0][l][MODEL_SITE_LINEAR_INPUT] == 4,
          "encoder layer %d sites", l);
  for (int l = 0; l < 2; l++)
    CHECK(c.sites[1][l][MODEL_SITE_ATTN_KEY] == 2 && c.sites[1][l][MODEL_SITE_ATTN_VALUE] == 2 &&
              c.sites[1][l][MODEL_SITE_LINEAR_INPUT] == 7,
          "decoder layer %d sites", l);

  /* the reference: encoder layer 0's fc2 weight halved, no hooks */
  dq_model *halved = NULL;
  CHECK_OK(dq_model_load(&halved, FIXTURE, DQ_CPU, DQ_F32));
  int32_t idx = -1;
  CHECK_OK(dq_model_param_index(halved, "model.encoder.layers.0.fc2.weight", &idx));
  dq_tensor w = {0};
  CHECK_OK(dq_model_param(halved, idx, &w));
  CHECK_OK(dq_scale(&w, &w, 0.5f));
  run_result ref = run(halved, in);
  CHECK(max_abs_diff(&plain.logits, &ref.logits) > 1e-3, "halving fc2 should change the logits");

  c.halve_fc2_input = 1;
  run_result by_input = run(m, in);
  CHECK(max_abs_diff(&by_input.logits, &ref.logits) < 1e-5, "scaled fc2 input: logits differ by %g",
        max_abs_diff(&by_input.logits, &ref.logits));
  c.halve_fc2_input = 0;
  c.halve_fc2_weight = 1;
  run_result by_weight = run(m, in);
  CHECK(max_abs_diff(&by_weight.logits, &ref.logits) < 1e-5, "scaled working fc2 weight: logits differ by %g",
        max_abs_diff(&by_weight.logits, &ref.logits));
  dq_tensor master = {0};
  CHECK_OK(dq_model_param(m, idx, &master));
  CHECK(max_abs_diff(&master, &w) > 1e-3, "the weights hook must not touch the master weights");

  /* removing the hooks gives the plain model back */
  CHECK_OK(model_install_hooks(m, NULL));
  run_result again = run(m, in);
  CHECK(max_abs_diff(&plain.logits, &again.logits) < 1e-5, "after removing hooks: %g",
        max_abs_diff(&plain.logits, &again.logits));

  release(&plain);
  release(&hooked);
  release(&ref);
  release(&by_input);
  release(&by_weight);
  release(&again);
  dq_tensor_release(&w);
  dq_tensor_release(&master);
  for (int i = 0; i < 5; i++) dq_tensor_release(&in[i]);
  dq_model_free(halved);
  dq_model_free(m);
  return check_summary();
}
