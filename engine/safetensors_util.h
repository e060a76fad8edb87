/*
 * safetensors_util.h: what the checkpoint writers (safetensors_write.c,
 * config_write.c) and readers share and the API does not show: a growable
 * text buffer, JSON string and number formatting that matches the writers
 * whose bytes we reproduce (Rust's serde_json for safetensors headers,
 * Python's json.dumps for config files), files replaced atomically, paths.
 */
#ifndef DQ_SAFETENSORS_UTIL_H
#define DQ_SAFETENSORS_UTIL_H

#include "internal.h"

#include <stddef.h>

/* ---- text buffer -----------------------------------------------------------
 * Appends never fail visibly: an allocation failure sets `failed` and later
 * appends do nothing, so a writer checks once at the end. */
typedef struct dq_text {
  char *data;
  size_t len, cap;
  int failed;
} dq_text;

void dq_text_append(dq_text *t, const char *s, size_t n);
void dq_text_puts(dq_text *t, const char *s);
void dq_text_printf(dq_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dq_text_free(dq_text *t);

enum dq_json_escape {
  DQ_ESCAPE_SERDE,      /* serde_json: \" \\ \b \f \n \r \t, other controls \u00xx, the rest raw UTF-8 */
  DQ_ESCAPE_PYTHON_ASCII /* json.dumps(ensure_ascii=True): also \u00xx for 0x7f and \uxxxx for non-ASCII */
};
/* Append s (n bytes) as a quoted JSON string. */
void dq_text_json_string(dq_text *t, const char *s, size_t n, int escape);
/* Append a double as Python's repr writes it (0.1, 2.0, 1e-05, 1e+16). */
void dq_text_python_float(dq_text *t, double v);

/* ---- atomic files -------------------------------------------------------------
 * begin creates a hidden temporary file beside `path`; write appends;
 * finish fsyncs and closes it; publish renames it over `path` and fsyncs
 * the directory; abort (safe in any state, idempotent) closes and removes
 * the temporary file. commit = finish + publish, aborting on failure. */
typedef struct dq_atomic_file {
  int fd;
  char *path;
  char *temp_path;
  const char *op; /* names the operation in messages */
} dq_atomic_file;

dq_status dq_atomic_begin(dq_atomic_file *f, const char *path, const char *op);
dq_status dq_atomic_write(dq_atomic_file *f, const void *data, size_t n);
dq_status dq_atomic_finish(dq_atomic_file *f);
dq_status dq_atomic_publish(dq_atomic_file *f);
dq_status dq_atomic_commit(dq_atomic_file *f);
void dq_atomic_abort(dq_atomic_file *f);
/* Write a whole small file atomically. */
dq_status dq_atomic_write_file(const char *path, const void *data, size_t n, const char *op);

/* ---- paths ---------------------------------------------------------------------- */

/* "dir" + "/" + "name" (malloc'ed; NULL when out of memory). */
char *dq_path_join(const char *dir, const char *name);
/* The directory part of a path ("." when none), malloc'ed. */
char *dq_path_dirname(const char *path);
int dq_path_is_dir(const char *path);
int dq_path_exists(const char *path);
/* mkdir -p */
dq_status dq_make_dirs(const char *dir, const char *op);

#endif
