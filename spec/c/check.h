/* check.h: the few macros C tests share. CHECK counts failures and goes
 * on; check_summary() prints "N passed, M failed" and gives the exit code. */
#ifndef DQ_SPEC_CHECK_H
#define DQ_SPEC_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                              \
  do {                                                                \
    if (cond) {                                                       \
      check_passed++;                                                 \
    } else {                                                          \
      check_failed++;                                                 \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                   \
      fprintf(stderr, "\n");                                          \
    }                                                                 \
  } while (0)

/* The call must fail and dq_last_error() must contain `needle`. */
#define CHECK_FAILS(call, needle)                                                       \
  do {                                                                                  \
    dq_status st_ = (call);                                                             \
    CHECK(st_ != 0 && strstr(dq_last_error(), needle) != NULL, "status %d, message '%s'", \
          st_, dq_last_error());                                                       \
  } while (0)

#define CHECK_OK(call) \
  do {                 \
    dq_status st_ = (call); \
    CHECK(st_ == 0, "status %d: %s", st_, dq_last_error()); \
  } while (0)

static inline int check_summary(void) {
  printf("%d passed, %d failed\n", check_passed, check_failed);
  return check_failed ? 1 : 0;
}

#endif
