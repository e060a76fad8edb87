/*
 * json.c: strict JSON reader. Values are parsed into an arena of large
 * blocks; array and object items are gathered on a scratch stack and copied
 * into the arena once their count is known, so every container's items are
 * one contiguous array.
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ARENA_BLOCK = 1 << 20, MAX_DEPTH = 512 };

typedef struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  _Alignas(16) char data[];
} arena_block;

struct dq_json_doc {
  arena_block *blocks;
  dq_json root;
};

typedef struct parser {
  const char *text, *end, *pos;
  const char *source;
  dq_json_doc *doc;
  dq_json *stack; /* scratch for items of open containers */
  size_t stack_len, stack_cap;
  int depth;
} parser;

static void *arena_alloc(dq_json_doc *doc, size_t bytes) {
  bytes = (bytes + 15) & ~(size_t)15;
  arena_block *b = doc->blocks;
  if (!b || b->cap - b->used < bytes) {
    size_t cap = bytes > ARENA_BLOCK ? bytes : ARENA_BLOCK;
    b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = doc->blocks;
    b->used = 0;
    b->cap = cap;
    doc->blocks = b;
  }
  void *p = b->data + b->used;
  b->used += bytes;
  return p;
}

static dq_status parse_error(parser *p, const char *what) {
  int line = 1, col = 1;
  for (const char *c = p->text; c < p->pos && c < p->end; c++) {
    if (*c == '\n') {
      line++;
      col = 1;
    } else {
      col++;
    }
  }
  return dq_fail(DQ_ERR_FORMAT, "%s: line %d, column %d: %s", p->source, line, col, what);
}

static dq_status out_of_memory(parser *p) { return dq_fail(DQ_ERR_MEMORY, "%s: out of memory while parsing JSON", p->source); }

static void skip_space(parser *p) {
  while (p->pos < p->end && (*p->pos == ' ' || *p->pos == '\t' || *p->pos == '\n' || *p->pos == '\r')) p->pos++;
}

static dq_status push_item(parser *p, const dq_json *v) {
  if (p->stack_len == p->stack_cap) {
    size_t cap = p->stack_cap ? p->stack_cap * 2 : 256;
    dq_json *s = realloc(p->stack, cap * sizeof *s);
    if (!s) return out_of_memory(p);
    p->stack = s;
    p->stack_cap = cap;
  }
  p->stack[p->stack_len++] = *v;
  return DQ_OK;
}

/* Move the items pushed since `mark` into the arena as v's item array. */
static dq_status pop_items(parser *p, size_t mark, dq_json *v) {
  v->count = p->stack_len - mark;
  if (v->count) {
    v->items = arena_alloc(p->doc, v->count * sizeof(dq_json));
    if (!v->items) return out_of_memory(p);
    memcpy(v->items, p->stack + mark, v->count * sizeof(dq_json));
  }
  p->stack_len = mark;
  return DQ_OK;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_hex4(parser *p, unsigned *out) {
  if (p->end - p->pos < 4) return -1;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hex_value(p->pos[i]);
    if (h < 0) return -1;
    v = v * 16 + (unsigned)h;
  }
  p->pos += 4;
  *out = v;
  return 0;
}

static size_t utf8_encode(unsigned cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* p->pos is just past the opening quote. Decoded text never grows, so the
 * raw length bounds the arena space. */
static dq_status parse_string(parser *p, const char **out, size_t *out_len) {
  const char *start = p->pos;
  const char *close = start;
  while (close < p->end && *close != '"') close += (*close == '\\' && close + 1 < p->end) ? 2 : 1;
  if (close >= p->end) return parse_error(p, "unterminated string");
  char *dst = arena_alloc(p->doc, (size_t)(close - start) + 1);
  if (!dst) return out_of_memory(p);
  size_t n = 0;
  while (p->pos < close) {
    unsigned char c = (unsigned char)*p->pos;
    if (c < 0x20) return parse_error(p, "control character inside a string (must be escaped)");
    if (c != '\\') {
      dst[n++] = (char)c;
      p->pos++;
      continue;
    }
    p->pos++;
    char e = *p->pos++;
    switch (e) {
    case '"': dst[n++] = '"'; break;
    case '\\': dst[n++] = '\\'; break;
    case '/': dst[n++] = '/'; break;
    case 'b': dst[n++] = '\b'; break;
    case 'f': dst[n++] = '\f'; break;
    case 'n': dst[n++] = '\n'; break;
    case 'r': dst[n++] = '\r'; break;
    case 't': dst[n++] = '\t'; break;
    case 'u': {
      unsigned cp;
      if (read_hex4(p, &cp)) return parse_error(p, "bad \\u escape (expected 4 hex digits)");
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (p->end - p->pos >= 6 && p->pos[0] == '\\' && p->pos[1] == 'u') {
          p->pos += 2;
          if (read_hex4(p, &lo)) return parse_error(p, "bad \\u escape (expected 4 hex digits)");
          if (lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else {
            n += utf8_encode(0xFFFD, dst + n); /* lone high surrogate */
            cp = lo;
          }
        } else {
          cp = 0xFFFD;
        }
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        cp = 0xFFFD; /* lone low surrogate */
      }
      n += utf8_encode(cp, dst + n);
      break;
    }
    default: p->pos--; return parse_error(p, "unknown escape sequence in string");
    }
  }
  dst[n] = '\0';
  p->pos = close + 1;
  *out = dst;
  *out_len = n;
  return DQ_OK;
}

static dq_status parse_number(parser *p, dq_json *v) {
  const char *s = p->pos;
  const char *c = s;
  if (c < p->end && *c == '-') c++;
  if (c >= p->end || !(*c >= '0' && *c <= '9')) return parse_error(p, "invalid number");
  if (*c == '0') c++;
  else
    while (c < p->end && *c >= '0' && *c <= '9') c++;
  int integral = 1;
  if (c < p->end && *c == '.') {
    integral = 0;
    c++;
    if (c >= p->end || !(*c >= '0' && *c <= '9')) return parse_error(p, "invalid number (digit expected after '.')");
    while (c < p->end && *c >= '0' && *c <= '9') c++;
  }
  if (c < p->end && (*c == 'e' || *c == 'E')) {
    integral = 0;
    c++;
    if (c < p->end && (*c == '+' || *c == '-')) c++;
    if (c >= p->end || !(*c >= '0' && *c <= '9')) return parse_error(p, "invalid number (digit expected in exponent)");
    while (c < p->end && *c >= '0' && *c <= '9') c++;
  }
  char buf[64];
  size_t len = (size_t)(c - s);
  char *heap = NULL, *text = buf;
  if (len >= sizeof buf) {
    heap = malloc(len + 1);
    if (!heap) return out_of_memory(p);
    text = heap;
  }
  memcpy(text, s, len);
  text[len] = '\0';
  v->type = DQ_JSON_NUMBER;
  v->number = strtod(text, NULL);
  if (integral) {
    errno = 0;
    long long i = strtoll(text, NULL, 10);
    if (errno == 0) {
      v->integer = i;
      v->is_integer = 1;
    }
  }
  free(heap);
  p->pos = c;
  return DQ_OK;
}

static dq_status parse_value(parser *p, dq_json *v);

static dq_status parse_container(parser *p, dq_json *v, int is_object) {
  if (++p->depth > MAX_DEPTH) return parse_error(p, "nesting deeper than 512 levels");
  char close = is_object ? '}' : ']';
  v->type = is_object ? DQ_JSON_OBJECT : DQ_JSON_ARRAY;
  p->pos++;
  size_t mark = p->stack_len;
  skip_space(p);
  if (p->pos < p->end && *p->pos == close) {
    p->pos++;
    p->depth--;
    return pop_items(p, mark, v);
  }
  for (;;) {
    dq_json item = {0};
    dq_status st;
    skip_space(p);
    if (is_object) {
      if (p->pos >= p->end || *p->pos != '"') return parse_error(p, "expected a string key");
      p->pos++;
      if ((st = parse_string(p, &item.key, &item.key_length))) return st;
      skip_space(p);
      if (p->pos >= p->end || *p->pos != ':') return parse_error(p, "expected ':' after the key");
      p->pos++;
      skip_space(p);
    }
    const char *key = item.key;
    size_t key_length = item.key_length;
    if ((st = parse_value(p, &item))) return st;
    item.key = key;
    item.key_length = key_length;
    if ((st = push_item(p, &item))) return st;
    skip_space(p);
    if (p->pos < p->end && *p->pos == ',') {
      p->pos++;
      continue;
    }
    if (p->pos < p->end && *p->pos == close) {
      p->pos++;
      break;
    }
    return parse_error(p, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
  }
  p->depth--;
  return pop_items(p, mark, v);
}

static int match_literal(parser *p, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(p->end - p->pos) < n || memcmp(p->pos, lit, n) != 0) return 0;
  p->pos += n;
  return 1;
}

static dq_status parse_value(parser *p, dq_json *v) {
  skip_space(p);
  if (p->pos >= p->end) return parse_error(p, "unexpected end of input");
  switch (*p->pos) {
  case '{': return parse_container(p, v, 1);
  case '[': return parse_container(p, v, 0);
  case '"':
    p->pos++;
    v->type = DQ_JSON_STRING;
    return parse_string(p, &v->string, &v->length);
  case 't':
    if (match_literal(p, "true")) { v->type = DQ_JSON_TRUE; return DQ_OK; }
    break;
  case 'f':
    if (match_literal(p, "false")) { v->type = DQ_JSON_FALSE; return DQ_OK; }
    break;
  case 'n':
    if (match_literal(p, "null")) { v->type = DQ_JSON_NULL; return DQ_OK; }
    break;
  default:
    if (*p->pos == '-' || (*p->pos >= '0' && *p->pos <= '9')) return parse_number(p, v);
  }
  /* NaN and Infinity are not JSON, but Python's json writes them. */
  if (match_literal(p, "NaN")) { v->type = DQ_JSON_NUMBER; v->number = NAN; return DQ_OK; }
  if (match_literal(p, "Infinity")) { v->type = DQ_JSON_NUMBER; v->number = INFINITY; return DQ_OK; }
  if (match_literal(p, "-Infinity")) { v->type = DQ_JSON_NUMBER; v->number = -INFINITY; return DQ_OK; }
  return parse_error(p, "unexpected character (expected a JSON value)");
}

dq_status dq_json_parse(const char *text, size_t len, const char *source, dq_json_doc **out) {
  if (!out) return dq_fail(DQ_ERR_ARGUMENT, "dq_json_parse: out is NULL");
  *out = NULL;
  dq_json_doc *doc = calloc(1, sizeof *doc);
  if (!doc) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory while parsing JSON", source ? source : "JSON");
  parser p = {.text = text, .end = text + len, .pos = text, .source = source ? source : "JSON", .doc = doc};
  /* A UTF-8 byte order mark is tolerated. */
  if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) p.pos += 3;
  dq_status st = parse_value(&p, &doc->root);
  if (!st) {
    skip_space(&p);
    if (p.pos != p.end) st = parse_error(&p, "unexpected text after the JSON value");
  }
  free(p.stack);
  if (st) {
    dq_json_free(doc);
    return st;
  }
  *out = doc;
  return DQ_OK;
}

dq_status dq_json_parse_file(const char *path, dq_json_doc **out) {
  FILE *f = fopen(path, "rb");
  if (!f) return dq_fail(DQ_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (cap - len < 65536) {
      cap = cap ? cap * 2 : 1 << 16;
      char *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        return dq_fail(DQ_ERR_MEMORY, "%s: out of memory reading the file", path);
      }
      buf = nb;
    }
    size_t got = fread(buf + len, 1, cap - len, f);
    len += got;
    if (got == 0) break;
  }
  int failed = ferror(f);
  fclose(f);
  if (failed) {
    free(buf);
    return dq_fail(DQ_ERR_IO, "%s: read error", path);
  }
  dq_status st = dq_json_parse(buf, len, path, out);
  free(buf);
  return st;
}

const dq_json *dq_json_root(const dq_json_doc *doc) { return doc ? &doc->root : NULL; }

void dq_json_free(dq_json_doc *doc) {
  if (!doc) return;
  for (arena_block *b = doc->blocks, *next; b; b = next) {
    next = b->next;
    free(b);
  }
  free(doc);
}

const dq_json *dq_json_get(const dq_json *obj, const char *key) {
  if (!obj || obj->type != DQ_JSON_OBJECT) return NULL;
  size_t n = strlen(key);
  /* Later duplicates win, as in Python's json. */
  for (size_t i = obj->count; i-- > 0;)
    if (obj->items[i].key_length == n && memcmp(obj->items[i].key, key, n) == 0) return &obj->items[i];
  return NULL;
}

static const char *type_name(dq_json_type t) {
  static const char *names[] = {"null", "false", "true", "a number", "a string", "an array", "an object"};
  return names[t];
}

/* Shared shape of the typed getters: find the key, accept null as absent. */
static dq_status lookup(const dq_json *obj, const char *key, int required, const char *source, const dq_json **v) {
  *v = dq_json_get(obj, key);
  if (*v && (*v)->type == DQ_JSON_NULL) *v = NULL;
  if (!*v && required) return dq_fail(DQ_ERR_FORMAT, "%s: missing required key \"%s\"", source, key);
  return DQ_OK;
}

static dq_status wrong_type(const char *source, const char *key, const char *expected, const dq_json *v) {
  return dq_fail(DQ_ERR_FORMAT, "%s: key \"%s\" is %s; expected %s", source, key, type_name(v->type), expected);
}

dq_status dq_json_get_int(const dq_json *obj, const char *key, int required, const char *source, int64_t *out) {
  const dq_json *v;
  dq_status st = lookup(obj, key, required, source, &v);
  if (st || !v) return st;
  if (v->type != DQ_JSON_NUMBER) return wrong_type(source, key, "an integer", v);
  if (v->is_integer) {
    *out = v->integer;
  } else if (v->number == floor(v->number) && fabs(v->number) < 9.007199254740992e15) {
    *out = (int64_t)v->number; /* 12.0 is accepted as 12 */
  } else {
    return dq_fail(DQ_ERR_FORMAT, "%s: key \"%s\" is %g; expected an integer", source, key, v->number);
  }
  return DQ_OK;
}

dq_status dq_json_get_number(const dq_json *obj, const char *key, int required, const char *source, double *out) {
  const dq_json *v;
  dq_status st = lookup(obj, key, required, source, &v);
  if (st || !v) return st;
  if (v->type != DQ_JSON_NUMBER) return wrong_type(source, key, "a number", v);
  *out = v->number;
  return DQ_OK;
}

dq_status dq_json_get_bool(const dq_json *obj, const char *key, int required, const char *source, int *out) {
  const dq_json *v;
  dq_status st = lookup(obj, key, required, source, &v);
  if (st || !v) return st;
  if (v->type != DQ_JSON_TRUE && v->type != DQ_JSON_FALSE) return wrong_type(source, key, "true or false", v);
  *out = v->type == DQ_JSON_TRUE;
  return DQ_OK;
}

dq_status dq_json_get_string(const dq_json *obj, const char *key, int required, const char *source, const char **out) {
  const dq_json *v;
  dq_status st = lookup(obj, key, required, source, &v);
  if (st || !v) return st;
  if (v->type != DQ_JSON_STRING) return wrong_type(source, key, "a string", v);
  *out = v->string;
  return DQ_OK;
}
