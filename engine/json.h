/*
 * json.h: a small strict JSON (RFC 8259) reader for the engine's own file
 * formats: safetensors headers, config.json, vocab.json, tokenizer.json.
 * The whole document is parsed into one arena; values point into it and
 * live until dq_json_free.
 */
#ifndef DQ_JSON_H
#define DQ_JSON_H

#include "internal.h"

#include <stddef.h>

typedef enum dq_json_type {
  DQ_JSON_NULL,
  DQ_JSON_FALSE,
  DQ_JSON_TRUE,
  DQ_JSON_NUMBER,
  DQ_JSON_STRING,
  DQ_JSON_ARRAY,
  DQ_JSON_OBJECT
} dq_json_type;

typedef struct dq_json dq_json;
struct dq_json {
  dq_json_type type;
  /* NUMBER: the value; `integer` is exact and `is_integer` set when the
   * literal has no fraction or exponent and fits in int64. */
  double number;
  int64_t integer;
  int is_integer;
  /* STRING: UTF-8, NUL-terminated (may also contain NULs from \u0000). */
  const char *string;
  size_t length;
  /* ARRAY and OBJECT: `count` items; object members carry their key. */
  dq_json *items;
  size_t count;
  const char *key;
  size_t key_length;
};

typedef struct dq_json_doc dq_json_doc;

/* Parse `len` bytes; `source` names the text in error messages
 * ("config.json: line 3, column 14: expected ',' or '}'"). */
dq_status dq_json_parse(const char *text, size_t len, const char *source, dq_json_doc **out);
dq_status dq_json_parse_file(const char *path, dq_json_doc **out);
const dq_json *dq_json_root(const dq_json_doc *doc);
void dq_json_free(dq_json_doc *doc);

/* Member of an object by key (NULL when absent or when obj is not an
 * object). Linear in the number of members. */
const dq_json *dq_json_get(const dq_json *obj, const char *key);
/* Typed lookups that fail with a message naming `source` and the key. A
 * missing optional key leaves *out unchanged and returns DQ_OK. */
dq_status dq_json_get_int(const dq_json *obj, const char *key, int required, const char *source, int64_t *out);
dq_status dq_json_get_number(const dq_json *obj, const char *key, int required, const char *source, double *out);
dq_status dq_json_get_bool(const dq_json *obj, const char *key, int required, const char *source, int *out);
/* The string stays owned by the document. */
dq_status dq_json_get_string(const dq_json *obj, const char *key, int required, const char *source, const char **out);

#endif
