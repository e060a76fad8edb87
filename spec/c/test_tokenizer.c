/* test_tokenizer.c: the C contract of engine/dqbart_tokenizer.h that the
 * data loader relies on (capacity handling of dq_tokenizer_encode, the
 * flat layout of dq_tokenizer_encode_batch, decode, templates, training
 * from texts) and its refusals. Parity with the tokenizers library is
 * checked by spec/tokenizer_spec.lua on the same fixtures. */
#include "check.h"
#include "dqbart.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX DQ_SOURCE_DIR "/spec/fixtures/tokenizers/"

static int same(const int32_t *a, const int32_t *b, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (a[i] != b[i]) return 0;
  return 1;
}

static void test_encode(dq_tokenizer *tok) {
  static const int32_t hello[] = {0, 44, 544, 322, 309, 272, 80, 72, 2}; /* tokenizers: "Hello world" */
  int32_t ids[16];
  int64_t count = -1;
  CHECK_OK(dq_tokenizer_encode(tok, "Hello world", 11, DQ_TOKENIZE_SPECIAL, ids, 2, &count));
  CHECK(count == 9, "count %lld", (long long)count);
  CHECK(ids[0] == 0 && ids[1] == 44, "the first ids are written even when the buffer is short");
  CHECK_OK(dq_tokenizer_encode(tok, "Hello world", 11, DQ_TOKENIZE_SPECIAL, ids, 16, &count));
  CHECK(count == 9 && same(ids, hello, 9), "Hello world");
  CHECK_OK(dq_tokenizer_encode(tok, "Hello world", 11, 0, ids, 16, &count));
  CHECK(count == 7 && same(ids, hello + 1, 7), "without special tokens");
  CHECK_OK(dq_tokenizer_encode(tok, NULL, 0, DQ_TOKENIZE_SPECIAL, ids, 16, &count));
  CHECK(count == 2 && ids[0] == 0 && ids[1] == 2, "the empty text is <s> </s>");
  CHECK(dq_tokenizer_role_id(tok, "mask") == 4 && dq_tokenizer_role_id(tok, "nope") == -1, "roles");
  CHECK(dq_tokenizer_token_to_id(tok, "<mask>", 6) == 4 && dq_tokenizer_is_special(tok, 4) && !dq_tokenizer_is_special(tok, 44),
        "token_to_id and is_special");
  int64_t len = 0;
  const char *s = dq_tokenizer_id_to_token(tok, 4, &len);
  CHECK(s && len == 6 && memcmp(s, "<mask>", 6) == 0, "id_to_token");
  CHECK(dq_tokenizer_id_to_token(tok, 99999, &len) == NULL, "id_to_token of an unknown id");
}

static void test_batch(dq_tokenizer *tok) {
  /* texts inside a larger buffer: offsets need not start at 0 */
  const char *data = "XXHello worlda <mask>";
  const int64_t text_offsets[] = {2, 13, 13, 21};
  dq_tensor ids = {0}, offsets = {0};
  CHECK_OK(dq_tokenizer_encode_batch(tok, data, text_offsets, 3, DQ_TOKENIZE_SPECIAL, &ids, &offsets));
  CHECK(ids.dtype == DQ_I32 && offsets.dtype == DQ_I64 && offsets.numel == 4, "output types");
  const int64_t *off = offsets.data;
  const int32_t *p = ids.data;
  static const int32_t want[] = {0, 44, 544, 322, 309, 272, 80, 72, 2, 0, 2, 0, 69, 4, 2};
  CHECK(off[0] == 0 && off[1] == 9 && off[2] == 11 && off[3] == 15 && ids.numel == 15, "offsets %lld %lld %lld %lld",
        (long long)off[0], (long long)off[1], (long long)off[2], (long long)off[3]);
  CHECK(ids.numel == 15 && same(p, want, 15), "batch ids");
  CHECK_FAILS(dq_tokenizer_encode_batch(tok, data, text_offsets, 3, 0, &ids, &offsets), "must be undefined");
  dq_tensor_release(&ids);
  dq_tensor_release(&offsets);
  const int64_t bad[] = {0, 5, 3};
  CHECK_FAILS(dq_tokenizer_encode_batch(tok, data, bad, 2, 0, &ids, &offsets), "text_offsets[2] = 3 is below");
  /* many texts on all threads agree with one at a time */
  enum { N = 2000 };
  char *buf = malloc(N * 32);
  int64_t *to = malloc((N + 1) * sizeof *to);
  int64_t at = 0;
  for (int i = 0; i < N; i++) {
    to[i] = at;
    at += sprintf(buf + at, "text %d,  <mask> é%c", i * 7919, 'a' + i % 26);
  }
  to[N] = at;
  CHECK_OK(dq_tokenizer_encode_batch(tok, buf, to, N, DQ_TOKENIZE_SPECIAL, &ids, &offsets));
  int agree = 1;
  for (int i = 0; i < N && agree; i++) {
    int32_t one[64];
    int64_t count;
    dq_tokenizer_encode(tok, buf + to[i], to[i + 1] - to[i], DQ_TOKENIZE_SPECIAL, one, 64, &count);
    const int64_t *o = offsets.data;
    agree = count == o[i + 1] - o[i] && same(one, (const int32_t *)ids.data + o[i], count);
  }
  CHECK(agree, "batch and single encodes agree");
  dq_tensor_release(&ids);
  dq_tensor_release(&offsets);
  free(buf);
  free(to);
}

static void test_decode(dq_tokenizer *tok) {
  static const int32_t ids[] = {0, 44, 544, 322, 4, 309, 272, 80, 72, 2, 123456};
  char *text = NULL;
  int64_t len = -1;
  CHECK_OK(dq_tokenizer_decode(tok, ids, 11, 0, &text, &len));
  CHECK(text && len == 24 && strcmp(text, "<s>Hello<mask> world</s>") == 0, "decode: '%s'", text ? text : "");
  dq_tokenizer_free_text(text);
  CHECK_OK(dq_tokenizer_decode(tok, ids, 11, 1, &text, &len));
  CHECK(strcmp(text, "Hello world") == 0, "decode skip_special: '%s'", text);
  dq_tokenizer_free_text(text);
  static const int32_t broken[] = {163}; /* one byte of a multi-byte character */
  CHECK_OK(dq_tokenizer_decode(tok, broken, 1, 0, &text, &len));
  CHECK(strcmp(text, "\xEF\xBF\xBD") == 0, "invalid UTF-8 decodes to U+FFFD");
  dq_tokenizer_free_text(text);
}

static void test_mbart(void) {
  dq_tokenizer *tok = NULL;
  CHECK_OK(dq_tokenizer_load(FIX "mbart_unigram", &tok));
  if (!tok) return;
  int32_t ids[32];
  int64_t count;
  int32_t en = dq_tokenizer_token_to_id(tok, "en_XX", 5), ro = dq_tokenizer_token_to_id(tok, "ro_RO", 5);
  CHECK_OK(dq_tokenizer_encode(tok, "Hello world", 11, DQ_TOKENIZE_SPECIAL, ids, 32, &count));
  CHECK(count == 12 && ids[10] == 2 && ids[11] == en, "X </s> en_XX");
  CHECK_OK(dq_tokenizer_set_template(tok, "$A </s> ro_RO"));
  CHECK_OK(dq_tokenizer_encode(tok, "Hello world", 11, DQ_TOKENIZE_SPECIAL, ids, 32, &count));
  CHECK(count == 12 && ids[11] == ro, "X </s> ro_RO");
  CHECK_FAILS(dq_tokenizer_set_template(tok, "</s> ro_RO"), "must hold $A exactly once");
  CHECK_FAILS(dq_tokenizer_set_template(tok, "$A nope"), "\"nope\" in \"$A nope\" is not a token");
  dq_tokenizer_free(tok);
}

static void test_train(void) {
  char dir[] = "/tmp/dq_tokenizer_test_XXXXXX";
  CHECK(mkdtemp(dir) != NULL, "mkdtemp");
  const char *texts = "low lower lowest\nnewer newest wider\n";
  const int64_t offsets[] = {0, 17, 36};
  const char *specials[] = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"};
  dq_bpe_train_config cfg = {300, 1, specials, 5, 0};
  char out[128];
  snprintf(out, sizeof out, "%s/tok", dir);
  CHECK_OK(dq_bpe_train(&cfg, NULL, 0, texts, offsets, 2, out));
  dq_tokenizer *tok = NULL;
  CHECK_OK(dq_tokenizer_load(out, &tok));
  if (tok) {
    int32_t ids[8];
    int64_t count;
    CHECK_OK(dq_tokenizer_encode(tok, "low", 3, DQ_TOKENIZE_SPECIAL, ids, 8, &count));
    CHECK(count == 3 && ids[0] == 0 && ids[2] == 2, "a trained word is one token between <s> and </s> (%lld ids)",
          (long long)count);
    CHECK(dq_tokenizer_vocab_size(tok) <= 300, "vocab_size");
    dq_tokenizer_free(tok);
  }
  cfg.vocab_size = 0;
  CHECK_FAILS(dq_bpe_train(&cfg, NULL, 0, texts, offsets, 2, out), "vocab_size 0 must be at least 1");
  cfg.vocab_size = 300;
  const char *missing[] = {"/nonexistent/corpus.txt"};
  CHECK_FAILS(dq_bpe_train(&cfg, missing, 1, NULL, NULL, 0, out), "cannot open /nonexistent/corpus.txt");
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0, "cleanup");
}

int main(void) {
  dq_tokenizer *tok = NULL;
  CHECK_OK(dq_tokenizer_load(FIX "bart_bpe", &tok));
  if (tok) {
    test_encode(tok);
    test_batch(tok);
    test_decode(tok);
    dq_tokenizer_free(tok);
  }
  test_mbart();
  test_train();
  CHECK_FAILS(dq_tokenizer_load("/nonexistent/dir", &tok), "/nonexistent/dir: no such file or directory");
  CHECK_FAILS(dq_tokenizer_load(FIX, &tok), "holds neither tokenizer.json nor vocab.json + merges.txt");
  return check_summary();
}
