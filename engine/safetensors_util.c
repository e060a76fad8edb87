/*
 * safetensors_util.c: text buffers, JSON formatting that reproduces other
 * writers byte for byte, atomic file replacement and path helpers for the
 * checkpoint readers and writers.
 */
#include "safetensors_util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- text buffer ---------------------------------------------------------------- */

static int text_reserve(dq_text *t, size_t extra) {
  if (t->failed) return 0;
  if (t->cap - t->len > extra) return 1;
  size_t cap = t->cap ? t->cap : 256;
  while (cap - t->len <= extra) {
    if (cap > SIZE_MAX / 2) {
      t->failed = 1;
      return 0;
    }
    cap *= 2;
  }
  char *d = realloc(t->data, cap);
  if (!d) {
    t->failed = 1;
    return 0;
  }
  t->data = d;
  t->cap = cap;
  return 1;
}

void dq_text_append(dq_text *t, const char *s, size_t n) {
  if (!text_reserve(t, n)) return;
  memcpy(t->data + t->len, s, n);
  t->len += n;
  t->data[t->len] = '\0';
}

void dq_text_puts(dq_text *t, const char *s) { dq_text_append(t, s, strlen(s)); }

void dq_text_printf(dq_text *t, const char *fmt, ...) {
  char small[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) {
    t->failed = 1;
    return;
  }
  if ((size_t)n < sizeof small) {
    dq_text_append(t, small, (size_t)n);
    return;
  }
  if (!text_reserve(t, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(t->data + t->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  t->len += (size_t)n;
}

void dq_text_free(dq_text *t) {
  free(t->data);
  memset(t, 0, sizeof *t);
}

/* ---- JSON strings ------------------------------------------------------------------ */

/* Decode one UTF-8 sequence at s (n bytes left); invalid bytes decode as
 * themselves (one byte, code point = the byte) so nothing is lost. */
static unsigned utf8_decode(const unsigned char *s, size_t n, size_t *used) {
  unsigned c = s[0];
  int extra = c >= 0xF0 && c < 0xF8 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
  if (c < 0x80 || extra == 0 || (size_t)extra >= n) {
    *used = 1;
    return c;
  }
  unsigned cp = c & (0x3F >> extra);
  for (int i = 1; i <= extra; i++) {
    if ((s[i] & 0xC0) != 0x80) {
      *used = 1;
      return c;
    }
    cp = (cp << 6) | (s[i] & 0x3F);
  }
  *used = (size_t)extra + 1;
  return cp;
}

void dq_text_json_string(dq_text *t, const char *s, size_t n, int escape) {
  static const char hex[] = "0123456789abcdef";
  dq_text_append(t, "\"", 1);
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    unsigned char c = u[i];
    char buf[16];
    const char *rep = NULL;
    switch (c) {
    case '"': rep = "\\\""; break;
    case '\\': rep = "\\\\"; break;
    case '\b': rep = "\\b"; break;
    case '\f': rep = "\\f"; break;
    case '\n': rep = "\\n"; break;
    case '\r': rep = "\\r"; break;
    case '\t': rep = "\\t"; break;
    default: break;
    }
    if (rep) {
      dq_text_puts(t, rep);
      i++;
      continue;
    }
    if (c < 0x20 || (c == 0x7F && escape == DQ_ESCAPE_PYTHON_ASCII)) {
      snprintf(buf, sizeof buf, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
      dq_text_puts(t, buf);
      i++;
      continue;
    }
    if (c < 0x80 || escape == DQ_ESCAPE_SERDE) {
      dq_text_append(t, (const char *)u + i, 1);
      i++;
      continue;
    }
    size_t used;
    unsigned cp = utf8_decode(u + i, n - i, &used);
    i += used;
    if (cp >= 0x10000) {
      unsigned v = cp - 0x10000;
      snprintf(buf, sizeof buf, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
    } else {
      snprintf(buf, sizeof buf, "\\u%04x", cp);
    }
    dq_text_puts(t, buf);
  }
  dq_text_append(t, "\"", 1);
}

/* ---- Python float repr --------------------------------------------------------------
 * repr() prints the shortest digits that read back as the same double, in
 * fixed notation when the decimal exponent is in [-4, 16), else as
 * d.ddde+XX; a whole number in fixed notation gets ".0". */
void dq_text_python_float(dq_text *t, double v) {
  if (isnan(v)) {
    dq_text_puts(t, "NaN");
    return;
  }
  if (isinf(v)) {
    dq_text_puts(t, v < 0 ? "-Infinity" : "Infinity");
    return;
  }
  if (v == 0) {
    dq_text_puts(t, signbit(v) ? "-0.0" : "0.0");
    return;
  }
  char sci[64];
  for (int p = 1; p <= 17; p++) {
    snprintf(sci, sizeof sci, "%.*e", p - 1, v);
    if (strtod(sci, NULL) == v) break;
  }
  /* sci is [-]d[.ddd]e[+-]xx: collect the digits and the exponent. */
  const char *c = sci;
  int negative = *c == '-';
  if (negative) c++;
  char digits[32];
  int nd = 0;
  for (; *c && *c != 'e'; c++)
    if (*c != '.') digits[nd++] = *c;
  while (nd > 1 && digits[nd - 1] == '0') nd--;
  digits[nd] = '\0';
  int exp10 = atoi(c + 1);
  if (negative) dq_text_puts(t, "-");
  if (exp10 < -4 || exp10 >= 16) {
    dq_text_append(t, digits, 1);
    if (nd > 1) {
      dq_text_puts(t, ".");
      dq_text_append(t, digits + 1, (size_t)nd - 1);
    }
    dq_text_printf(t, "e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
  } else if (exp10 < 0) {
    dq_text_puts(t, "0.");
    for (int i = 0; i < -exp10 - 1; i++) dq_text_puts(t, "0");
    dq_text_append(t, digits, (size_t)nd);
  } else {
    int int_digits = exp10 + 1;
    for (int i = 0; i < int_digits; i++) dq_text_append(t, i < nd ? digits + i : "0", 1);
    dq_text_puts(t, ".");
    if (nd > int_digits)
      dq_text_append(t, digits + int_digits, (size_t)(nd - int_digits));
    else
      dq_text_puts(t, "0");
  }
}

/* ---- paths ------------------------------------------------------------------------------ */

char *dq_path_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  int slash = a > 0 && dir[a - 1] != '/';
  char *p = malloc(a + b + 2);
  if (!p) return NULL;
  memcpy(p, dir, a);
  if (slash) p[a] = '/';
  memcpy(p + a + slash, name, b + 1);
  return p;
}

char *dq_path_dirname(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return strdup(".");
  if (slash == path) return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

int dq_path_is_dir(const char *path) {
  struct stat s;
  return stat(path, &s) == 0 && S_ISDIR(s.st_mode);
}

int dq_path_exists(const char *path) {
  struct stat s;
  return stat(path, &s) == 0;
}

dq_status dq_make_dirs(const char *dir, const char *op) {
  if (dq_path_is_dir(dir)) return DQ_OK;
  char *p = strdup(dir);
  if (!p) return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
  dq_status st = DQ_OK;
  size_t n = strlen(p);
  for (size_t i = 1; i <= n && !st; i++) {
    if (p[i] != '/' && p[i] != '\0') continue;
    char saved = p[i];
    p[i] = '\0';
    if (mkdir(p, 0777) != 0 && !(errno == EEXIST && dq_path_is_dir(p)))
      st = dq_fail(DQ_ERR_IO, "%s: cannot create directory %s: %s", op, p, strerror(errno));
    p[i] = saved;
  }
  free(p);
  return st;
}

/* ---- atomic files ---------------------------------------------------------------------- */

static _Atomic unsigned long temp_counter;

dq_status dq_atomic_begin(dq_atomic_file *f, const char *path, const char *op) {
  memset(f, 0, sizeof *f);
  f->fd = -1;
  f->op = op;
  if (dq_path_is_dir(path))
    return dq_fail(DQ_ERR_IO, "%s: %s is a directory; expected a file path", op, path);
  char *dir = dq_path_dirname(path);
  f->path = strdup(path);
  if (!dir || !f->path) {
    free(dir);
    dq_atomic_abort(f);
    return dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
  }
  const char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  /* A hidden name in the same directory: rename stays on one file system
   * and a reader globbing *.safetensors never sees a half-written file. */
  for (int attempt = 0; attempt < 100; attempt++) {
    size_t need = strlen(dir) + strlen(base) + 64;
    free(f->temp_path);
    f->temp_path = malloc(need);
    if (!f->temp_path) break;
    snprintf(f->temp_path, need, "%s/.%s.tmp-%ld-%lu", dir, base, (long)getpid(),
             atomic_fetch_add(&temp_counter, 1));
    f->fd = open(f->temp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (f->fd >= 0 || errno != EEXIST) break;
  }
  if (f->fd < 0) {
    int err = errno;
    dq_status st = f->temp_path
                       ? dq_fail(DQ_ERR_IO, "%s: cannot create a temporary file in %s to write %s: %s", op, dir, path,
                                 strerror(err))
                       : dq_fail(DQ_ERR_MEMORY, "%s: out of memory", op);
    free(f->temp_path);
    f->temp_path = NULL; /* nothing was created, so nothing to remove */
    free(dir);
    dq_atomic_abort(f);
    return st;
  }
  free(dir);
  return DQ_OK;
}

dq_status dq_atomic_write(dq_atomic_file *f, const void *data, size_t n) {
  const char *p = data;
  while (n > 0) {
    size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
    ssize_t w = write(f->fd, p, chunk);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0)
      return dq_fail(DQ_ERR_IO, "%s: writing %s failed: %s", f->op, f->path, w < 0 ? strerror(errno) : "no progress");
    p += w;
    n -= (size_t)w;
  }
  return DQ_OK;
}

dq_status dq_atomic_finish(dq_atomic_file *f) {
  if (fsync(f->fd) != 0) return dq_fail(DQ_ERR_IO, "%s: flushing %s to disk failed: %s", f->op, f->path, strerror(errno));
  int rc = close(f->fd);
  f->fd = -1;
  if (rc != 0) return dq_fail(DQ_ERR_IO, "%s: closing %s failed: %s", f->op, f->path, strerror(errno));
  return DQ_OK;
}

static void sync_directory_of(const char *path) {
  char *dir = dq_path_dirname(path);
  if (!dir) return;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd); /* best effort: some file systems refuse fsync on directories */
    close(fd);
  }
  free(dir);
}

dq_status dq_atomic_publish(dq_atomic_file *f) {
  if (rename(f->temp_path, f->path) != 0)
    return dq_fail(DQ_ERR_IO, "%s: cannot move the finished file into place at %s: %s", f->op, f->path,
                   strerror(errno));
  free(f->temp_path);
  f->temp_path = NULL;
  sync_directory_of(f->path);
  free(f->path);
  f->path = NULL;
  return DQ_OK;
}

dq_status dq_atomic_commit(dq_atomic_file *f) {
  dq_status st = dq_atomic_finish(f);
  if (!st) st = dq_atomic_publish(f);
  if (st) dq_atomic_abort(f);
  return st;
}

void dq_atomic_abort(dq_atomic_file *f) {
  if (f->fd >= 0) close(f->fd);
  f->fd = -1;
  if (f->temp_path) unlink(f->temp_path);
  free(f->temp_path);
  free(f->path);
  f->temp_path = NULL;
  f->path = NULL;
}

dq_status dq_atomic_write_file(const char *path, const void *data, size_t n, const char *op) {
  dq_atomic_file f;
  dq_status st = dq_atomic_begin(&f, path, op);
  if (st) return st;
  if ((st = dq_atomic_write(&f, data, n))) {
    dq_atomic_abort(&f);
    return st;
  }
  return dq_atomic_commit(&f);
}
