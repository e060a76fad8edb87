/* test_json.c: the engine's JSON reader (an internal module, so this test
 * includes its header directly). */
#include "json.h"
#include "check.h"

#include <math.h>

static dq_json_doc *parse(const char *text) {
  dq_json_doc *doc = NULL;
  dq_status st = dq_json_parse(text, strlen(text), "test.json", &doc);
  CHECK(st == 0, "parse '%s': %s", text, dq_last_error());
  return doc;
}

static void test_values(void) {
  dq_json_doc *doc = parse("{\"a\": 1, \"b\": [true, false, null, -2.5e1, \"x\\u00e9\\n\"], \"c\": {}, "
                           "\"big\": 9007199254740993, \"a\": 2}");
  const dq_json *root = dq_json_root(doc);
  CHECK(root->type == DQ_JSON_OBJECT && root->count == 5, "root has %zu members", root->count);
  int64_t a = 0;
  CHECK_OK(dq_json_get_int(root, "a", 1, "test.json", &a));
  CHECK(a == 2, "later duplicate wins, got %lld", (long long)a);
  const dq_json *b = dq_json_get(root, "b");
  CHECK(b && b->type == DQ_JSON_ARRAY && b->count == 5, "array");
  CHECK(b->items[0].type == DQ_JSON_TRUE && b->items[2].type == DQ_JSON_NULL, "literals");
  CHECK(b->items[3].number == -25.0 && !b->items[3].is_integer, "number %g", b->items[3].number);
  CHECK(strcmp(b->items[4].string, "x\xc3\xa9\n") == 0 && b->items[4].length == 4, "string escapes");
  int64_t big = 0;
  CHECK_OK(dq_json_get_int(root, "big", 1, "test.json", &big));
  CHECK(big == 9007199254740993LL, "integers beyond 2^53 stay exact: %lld", (long long)big);
  dq_json_free(doc);
}

static void test_surrogates(void) {
  dq_json_doc *doc = parse("[\"\\ud83d\\ude00\", \"\\udc00\"]");
  const dq_json *root = dq_json_root(doc);
  CHECK(strcmp(root->items[0].string, "\xf0\x9f\x98\x80") == 0, "surrogate pair");
  CHECK(strcmp(root->items[1].string, "\xef\xbf\xbd") == 0, "lone surrogate becomes U+FFFD");
  dq_json_free(doc);
}

static void test_errors(void) {
  dq_json_doc *doc = NULL;
  const char *bad[][2] = {
      {"{\"a\": 1,}", "line 1, column 9: expected a string key"},
      {"[1 2]", "expected ',' or ']'"},
      {"{\"a\"\n  1}", "line 2, column 3: expected ':'"},
      {"\"abc", "unterminated string"},
      {"[01]", "expected ',' or ']'"},
      {"tru", "expected a JSON value"},
      {"{} x", "unexpected text after"},
      {"\"a\tb\"", "control character"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_FAILS(dq_json_parse(bad[i][0], strlen(bad[i][0]), "test.json", &doc), bad[i][1]);
    CHECK(doc == NULL, "no document on failure");
  }
  char deep[2000];
  memset(deep, '[', sizeof deep);
  CHECK_FAILS(dq_json_parse(deep, sizeof deep, "deep.json", &doc), "nesting deeper");
}

static void test_typed_getters(void) {
  dq_json_doc *doc = parse("{\"s\": \"x\", \"n\": 1.5, \"i\": 12.0, \"t\": true, \"z\": null}");
  const dq_json *root = dq_json_root(doc);
  int64_t i = -1;
  double n = 0;
  int t = 0;
  const char *s = NULL;
  CHECK_OK(dq_json_get_int(root, "i", 1, "c.json", &i));
  CHECK(i == 12, "12.0 reads as an integer");
  CHECK_FAILS(dq_json_get_int(root, "n", 1, "c.json", &i), "c.json: key \"n\" is 1.5; expected an integer");
  CHECK_FAILS(dq_json_get_int(root, "s", 1, "c.json", &i), "key \"s\" is a string; expected an integer");
  CHECK_FAILS(dq_json_get_string(root, "missing", 1, "c.json", &s), "missing required key \"missing\"");
  i = 7;
  CHECK_OK(dq_json_get_int(root, "z", 0, "c.json", &i));
  CHECK(i == 7, "null counts as absent for optional keys");
  CHECK_OK(dq_json_get_number(root, "n", 1, "c.json", &n));
  CHECK_OK(dq_json_get_bool(root, "t", 1, "c.json", &t));
  CHECK_OK(dq_json_get_string(root, "s", 1, "c.json", &s));
  CHECK(n == 1.5 && t == 1 && strcmp(s, "x") == 0, "typed values");
  dq_json_free(doc);
}

int main(void) {
  test_values();
  test_surrogates();
  test_errors();
  test_typed_getters();
  return check_summary();
}
