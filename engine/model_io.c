/*
 * model_io.c: loading a model from a transformers checkpoint directory and
 * saving one that transformers loads back.
 *
 * Loading matches every tensor of the file to a parameter by name: names
 * of a BartModel (without the "model." prefix) are accepted too, the tied
 * copies of the shared embedding that older files hold are ignored when
 * model.shared.weight is present (else the first of them fills it), a
 * missing final_logits_bias is zeros (transformers does the same), and any
 * other difference (a missing or unknown tensor, a shape that disagrees
 * with config.json, a non-float dtype) fails naming the tensor.
 */
#include "model_internal.h"
#include "safetensors_util.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const tied_copies[3] = {"model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight",
                                           "lm_head.weight"};

static int is_tied_copy(const char *name) {
  for (int i = 0; i < 3; i++)
    if (strcmp(name, tied_copies[i]) == 0) return 1;
  return 0;
}

/* The canonical (ForConditionalGeneration) name of a file tensor, written
 * into buf; "" when it is neither a parameter nor a tied copy. */
static const char *canonical_name(const dq_model *m, const char *name, char *buf, size_t cap) {
  if (model_find_param(m, name) >= 0 || is_tied_copy(name)) return name;
  if (strncmp(name, "model.", 6) != 0) {
    snprintf(buf, cap, "model.%s", name);
    if (model_find_param(m, buf) >= 0 || is_tied_copy(buf)) return buf;
  }
  return "";
}

static dq_status load_tensor(dq_model *m, dq_safetensors *st, const char *file_name, int index, const char *dir) {
  const model_param *p = &m->params[index];
  dq_safetensors_entry e;
  MODEL_TRY(dq_safetensors_info(st, file_name, &e));
  if (e.dtype != DQ_F32 && e.dtype != DQ_BF16 && e.dtype != DQ_F16)
    return dq_fail(DQ_ERR_FORMAT, "dq_model_load: %s: tensor \"%s\" has dtype %s; model weights must be F32, BF16 or F16",
                   e.path, file_name, e.file_dtype);
  int same = e.ndim == p->ndim;
  for (int i = 0; same && i < p->ndim; i++) same = e.shape[i] == p->shape[i];
  if (!same)
    return dq_fail(DQ_ERR_SHAPE,
                   "dq_model_load: %s: tensor \"%s\" has shape %s but %s/config.json implies %s for %s (vocab_size %d, "
                   "d_model %d, ffn %d/%d, max_position_embeddings %d)",
                   e.path, file_name, dq_shape_str(e.ndim, e.shape), dir, dq_shape_str(p->ndim, p->shape), p->name,
                   m->cfg.vocab_size, m->cfg.d_model, m->cfg.encoder_ffn_dim, m->cfg.decoder_ffn_dim,
                   m->cfg.max_position_embeddings);
  dq_tensor view = model_param_view(m, &m->master, index);
  return dq_safetensors_tensor(st, file_name, &view);
}

static dq_status load_weights(dq_model *m, dq_safetensors *st, const char *dir) {
  int64_t count = dq_safetensors_count(st);
  char *loaded = calloc((size_t)m->num_params, 1);
  if (!loaded) return dq_fail(DQ_ERR_MEMORY, "dq_model_load: out of host memory");
  dq_status status = DQ_OK;
  char buf[MODEL_NAME_CAP + 8];
  const char *shared_source = NULL; /* a tied copy standing in for model.shared.weight */
  int shared = model_find_param(m, "model.shared.weight");
  for (int64_t i = 0; !status && i < count; i++) {
    const char *name = dq_safetensors_name(st, i);
    const char *canon = canonical_name(m, name, buf, sizeof buf);
    if (!*canon) {
      status = dq_fail(DQ_ERR_FORMAT,
                       "dq_model_load: %s holds tensor \"%s\", which a %s model with this config.json does not have "
                       "(closest parameter: \"%s\")",
                       dir, name, m->cfg.model_type, model_closest_param(m, name));
      break;
    }
    if (is_tied_copy(canon)) {
      if (!shared_source) shared_source = name;
      continue;
    }
    int idx = model_find_param(m, canon);
    if (loaded[idx]) {
      status = dq_fail(DQ_ERR_FORMAT, "dq_model_load: %s holds parameter %s twice (as \"%s\" and another name)", dir,
                       canon, name);
      break;
    }
    status = load_tensor(m, st, name, idx, dir);
    loaded[idx] = 1;
  }
  if (!status && !loaded[shared] && shared_source) {
    status = load_tensor(m, st, shared_source, shared, dir);
    loaded[shared] = 1;
  }
  for (int i = 0; !status && i < m->num_params; i++) {
    if (loaded[i] || strcmp(m->params[i].name, "final_logits_bias") == 0) continue;
    int missing = 0;
    for (int j = i; j < m->num_params; j++) missing += !loaded[j] && strcmp(m->params[j].name, "final_logits_bias");
    status = dq_fail(DQ_ERR_FORMAT,
                     "dq_model_load: %s lacks tensor \"%s\"%s (%d of the %d tensors config.json implies are missing; "
                     "encoder_layers %d, decoder_layers %d)",
                     dir, m->params[i].name, missing > 1 ? " and others" : "", missing, m->num_params - 1,
                     m->cfg.encoder_layers, m->cfg.decoder_layers);
  }
  free(loaded);
  return status;
}

dq_status dq_model_load(dq_model **out, const char *dir, int device, int dtype) {
  const char *op = "dq_model_load";
  if (!out || !dir) return dq_fail(DQ_ERR_ARGUMENT, "%s: out or dir is NULL", op);
  *out = NULL;
  dq_bart_config cfg;
  MODEL_TRY(dq_bart_config_load(&cfg, dir));
  dq_model *m = NULL;
  MODEL_TRY(model_create(&m, &cfg, device, dtype, dir));
  dq_safetensors *st = NULL;
  dq_status status = dq_safetensors_open(&st, dir);
  if (!status) status = load_weights(m, st, dir);
  dq_safetensors_close(st);
  if (!status && !(m->source_dir = strdup(dir))) status = dq_fail(DQ_ERR_MEMORY, "%s: out of host memory", op);
  if (status) {
    dq_model_free(m);
    return status;
  }
  *out = m;
  return DQ_OK;
}

dq_status dq_model_init(dq_model **out, const char *dir, int device, int dtype) {
  if (!out || !dir) return dq_fail(DQ_ERR_ARGUMENT, "dq_model_init: out or dir is NULL");
  *out = NULL;
  dq_bart_config cfg;
  MODEL_TRY(dq_bart_config_load(&cfg, dir));
  return model_create(out, &cfg, device, dtype, dir);
}

/* ---- saving -------------------------------------------------------------------------- */

static const char *const tokenizer_files[] = {"vocab.json",          "merges.txt",  "tokenizer.json",
                                              "tokenizer_config.json", "special_tokens_map.json",
                                              "sentencepiece.bpe.model", "added_tokens.json"};

static dq_status read_whole(const char *path, char **data, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return dq_fail(DQ_ERR_IO, "dq_model_save: cannot open %s: %s", path, strerror(errno));
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (n < cap) break;
    char *bigger = realloc(buf, cap * 2);
    if (!bigger) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = bigger;
    cap *= 2;
  }
  int err = ferror(f);
  fclose(f);
  if (!buf) return dq_fail(DQ_ERR_MEMORY, "dq_model_save: out of host memory reading %s", path);
  if (err) {
    free(buf);
    return dq_fail(DQ_ERR_IO, "dq_model_save: error reading %s", path);
  }
  *data = buf;
  *size = n;
  return DQ_OK;
}

static int same_directory(const char *a, const char *b) {
  char ra[PATH_MAX], rb[PATH_MAX];
  if (!realpath(a, ra) || !realpath(b, rb)) return 0;
  return strcmp(ra, rb) == 0;
}

static dq_status copy_tokenizer_files(const dq_model *m, const char *dir) {
  if (!m->source_dir || same_directory(m->source_dir, dir)) return DQ_OK;
  for (size_t i = 0; i < sizeof tokenizer_files / sizeof tokenizer_files[0]; i++) {
    char *src = dq_path_join(m->source_dir, tokenizer_files[i]);
    char *dst = dq_path_join(dir, tokenizer_files[i]);
    dq_status st = src && dst ? DQ_OK : dq_fail(DQ_ERR_MEMORY, "dq_model_save: out of host memory");
    if (!st && dq_path_exists(src)) {
      char *data = NULL;
      size_t size = 0;
      st = read_whole(src, &data, &size);
      if (!st) st = dq_atomic_write_file(dst, data, size, "dq_model_save");
      free(data);
    }
    free(src);
    free(dst);
    if (st) return st;
  }
  return DQ_OK;
}

/* Everything a saved directory holds, written into `dir`; each file is
 * replaced atomically. */
static dq_status write_checkpoint(dq_model *m, const char *dir) {
  MODEL_TRY(dq_bart_config_save(&m->cfg, dir));
  const char **names = malloc(sizeof *names * (size_t)m->num_params);
  const dq_tensor **tensors = malloc(sizeof *tensors * (size_t)m->num_params);
  dq_tensor *views = malloc(sizeof *views * (size_t)m->num_params);
  dq_status st = DQ_OK;
  if (!names || !tensors || !views) st = dq_fail(DQ_ERR_MEMORY, "dq_model_save: out of host memory");
  for (int i = 0; !st && i < m->num_params; i++) {
    views[i] = model_param_view(m, &m->master, i);
    names[i] = m->params[i].name;
    tensors[i] = &views[i];
  }
  static const char *const meta_keys[1] = {"format"}, *const meta_values[1] = {"pt"};
  if (!st)
    st = dq_safetensors_save_checkpoint(dir, m->num_params, names, (const dq_tensor *const *)tensors, 1, meta_keys,
                                        meta_values, 0);
  free(names);
  free(tensors);
  free(views);
  if (!st) st = copy_tokenizer_files(m, dir);
  return st;
}

static void remove_tree_files(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *ent;
  while ((ent = readdir(d))) {
    if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
    char *p = dq_path_join(dir, ent->d_name);
    if (p) unlink(p);
    free(p);
  }
  closedir(d);
  rmdir(dir);
}

dq_status dq_model_save(dq_model *m, const char *dir) {
  const char *op = "dq_model_save";
  if (!m || !dir || !*dir) return dq_fail(DQ_ERR_ARGUMENT, "%s: model or dir is NULL or empty", op);
  if (dq_path_exists(dir)) {
    /* An existing directory may hold other files (logs, optimizer states):
     * replace ours one by one, each atomically, and leave the rest. */
    if (!dq_path_is_dir(dir)) return dq_fail(DQ_ERR_IO, "%s: %s exists and is not a directory", op, dir);
    return write_checkpoint(m, dir);
  }
  /* A new directory appears whole: written under a temporary name beside
   * it, then renamed. */
  static int counter;
  size_t len = strlen(dir) + 64;
  char *tmp = malloc(len);
  if (!tmp) return dq_fail(DQ_ERR_MEMORY, "%s: out of host memory", op);
  char *trimmed = strdup(dir);
  if (!trimmed) {
    free(tmp);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of host memory", op);
  }
  for (size_t n = strlen(trimmed); n > 1 && trimmed[n - 1] == '/'; n--) trimmed[n - 1] = '\0';
  snprintf(tmp, len, "%s.tmp-%d-%d", trimmed, (int)getpid(), __atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED));
  dq_status st = dq_make_dirs(tmp, op);
  if (!st) st = write_checkpoint(m, tmp);
  if (!st && rename(tmp, trimmed) != 0)
    st = dq_fail(DQ_ERR_IO, "%s: cannot rename %s to %s: %s", op, tmp, trimmed, strerror(errno));
  if (st) remove_tree_files(tmp);
  free(tmp);
  free(trimmed);
  return st;
}
