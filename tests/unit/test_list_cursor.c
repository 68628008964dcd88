/* The list endpoint's cursor: what it holds comes back, and nothing else passes for one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "api/list_cursor.h"
#include "core/base64.h"

static unsigned char key[LIST_CURSOR_KEY_LEN], scope[CRYPTO_SHA256_LEN];

static int setup(void **state) {
  (void)state;
  if (!list_cursor_key((const unsigned char *)"database secret", 15, key)) return -1;
  const char *q[] = {"user@example.com", NULL, "completed"};
  list_cursor_scope(q, 3, scope);
  return 0;
}

static void test_round_trip(void **state) {
  (void)state;
  const struct {
    int64_t us;
    const char *id;
  } cases[] = {{0, "a"},
               {-1, "conv_1"},
               {INT64_MAX, "x y/\xc3\xa9"},
               {INT64_MIN, "z"},
               {1764000000123456, "conv_abc123"}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct list_cursor in = {.first_us = cases[i].us}, out;
    snprintf(in.id, sizeof in.id, "%s", cases[i].id);
    char text[LIST_CURSOR_TEXT_MAX];
    assert_true(list_cursor_encode(key, scope, &in, text));
    for (const char *p = text; *p; p++) /* URL-safe as it is */
      assert_non_null(
          strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *p));
    assert_true(list_cursor_decode(key, scope, text, strlen(text), &out));
    assert_true(out.first_us == in.first_us);
    assert_string_equal(out.id, in.id);
  }
  /* the longest id fits the text bound */
  struct list_cursor big = {.first_us = 1}, out;
  memset(big.id, 'i', MODEL_CONVERSATION_ID_MAX);
  char text[LIST_CURSOR_TEXT_MAX];
  assert_true(list_cursor_encode(key, scope, &big, text));
  assert_int_equal(strlen(text), LIST_CURSOR_TEXT_MAX - 1);
  assert_true(list_cursor_decode(key, scope, text, strlen(text), &out));
  assert_string_equal(out.id, big.id);
  struct list_cursor empty = {.first_us = 1};
  assert_false(list_cursor_encode(key, scope, &empty, text));
}

static void test_other_scope_key_or_bytes_refused(void **state) {
  (void)state;
  struct list_cursor in = {.first_us = 1764000000123456}, out;
  snprintf(in.id, sizeof in.id, "conv_abc123");
  char text[LIST_CURSOR_TEXT_MAX];
  assert_true(list_cursor_encode(key, scope, &in, text));
  size_t len = strlen(text);
  /* another query: a filter more, a filter less, an absent value against an empty one */
  const char *q1[] = {"user@example.com", NULL, "completed", NULL};
  const char *q2[] = {"user@example.com", NULL};
  const char *q3[] = {"user@example.com", "", "completed"};
  const char *const *qs[] = {q1, q2, q3};
  const size_t ns[] = {4, 2, 3};
  for (size_t i = 0; i < 3; i++) {
    unsigned char other[CRYPTO_SHA256_LEN];
    list_cursor_scope(qs[i], ns[i], other);
    assert_false(list_cursor_decode(key, other, text, len, &out));
  }
  /* another deployment */
  unsigned char key2[LIST_CURSOR_KEY_LEN];
  assert_true(list_cursor_key((const unsigned char *)"other database", 14, key2));
  assert_false(list_cursor_decode(key2, scope, text, len, &out));
  /* any character changed, cut, lengthened */
  for (size_t i = 0; i < len; i++) {
    char t[LIST_CURSOR_TEXT_MAX];
    memcpy(t, text, len + 1);
    t[i] = t[i] == 'A' ? 'B' : 'A';
    assert_false(list_cursor_decode(key, scope, t, len, &out));
    assert_false(list_cursor_decode(key, scope, text, i, &out));
  }
  char longer[LIST_CURSOR_TEXT_MAX + 2];
  snprintf(longer, sizeof longer, "%sA", text);
  assert_false(list_cursor_decode(key, scope, longer, len + 1, &out));
  const char *junk[] = {"", "A", "AA", "====", "a+b/", "\xff\xfe", "AQAAAAAAAAAAAGFh"};
  for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
    assert_false(list_cursor_decode(key, scope, junk[i], strlen(junk[i]), &out));
}

/* A cursor of version 1 (its position was the latest processed time, the order before migration
 * 0016), even one correctly tagged, is refused rather than read as a position of today's order. */
static void test_version_1_refused(void **state) {
  (void)state;
  struct list_cursor in = {.first_us = 1764000000123456}, out;
  snprintf(in.id, sizeof in.id, "conv_abc123");
  char text[LIST_CURSOR_TEXT_MAX];
  assert_true(list_cursor_encode(key, scope, &in, text));
  unsigned char raw[LIST_CURSOR_RAW_MAX + CRYPTO_SHA256_LEN], tag[CRYPTO_SHA256_LEN];
  long n = base64url_decode(text, strlen(text), raw, LIST_CURSOR_RAW_MAX);
  assert_true(n > LIST_CURSOR_TAG_LEN);
  assert_int_equal(raw[0], LIST_CURSOR_VERSION);
  size_t body = (size_t)n - LIST_CURSOR_TAG_LEN;
  raw[0] = 1; /* tagged again as version 1 was: HMAC over the bytes, then the scope */
  memcpy(raw + body, scope, CRYPTO_SHA256_LEN);
  assert_true(crypto_hmac_sha256(key, LIST_CURSOR_KEY_LEN, raw, body + CRYPTO_SHA256_LEN, tag));
  memcpy(raw + body, tag, LIST_CURSOR_TAG_LEN);
  char old[LIST_CURSOR_TEXT_MAX];
  base64url_encode(raw, (size_t)n, old);
  assert_false(list_cursor_decode(key, scope, old, strlen(old), &out));
  /* the same bytes as version 2 pass: only the version refused it */
  raw[0] = LIST_CURSOR_VERSION;
  memcpy(raw + body, scope, CRYPTO_SHA256_LEN);
  assert_true(crypto_hmac_sha256(key, LIST_CURSOR_KEY_LEN, raw, body + CRYPTO_SHA256_LEN, tag));
  memcpy(raw + body, tag, LIST_CURSOR_TAG_LEN);
  base64url_encode(raw, (size_t)n, old);
  assert_true(list_cursor_decode(key, scope, old, strlen(old), &out));
  assert_true(out.first_us == in.first_us);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_other_scope_key_or_bytes_refused),
      cmocka_unit_test(test_version_1_refused),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
