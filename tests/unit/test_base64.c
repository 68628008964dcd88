/* Unit tests for core/base64: padded standard base64 and unpadded, strict base64url. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "core/base64.h"

static void test_url_known_answers(void **state) {
  (void)state;
  /* RFC 4648 section 10 vectors, padding dropped; 0xfb 0xff shows the url alphabet. */
  static const struct {
    const char *in, *out;
  } v[] = {{"", ""},           {"f", "Zg"},          {"fo", "Zm8"},          {"foo", "Zm9v"},
           {"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"}, {"\xfb\xff", "-_8"}};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    char text[16];
    size_t n = base64url_encode((const unsigned char *)v[i].in, strlen(v[i].in), text);
    assert_int_equal(n, strlen(v[i].out));
    assert_string_equal(text, v[i].out);
    unsigned char raw[16];
    long got = base64url_decode(text, n, raw, sizeof raw);
    assert_int_equal(got, (long)strlen(v[i].in));
    assert_memory_equal(raw, v[i].in, (size_t)got);
  }
}

static void test_url_round_trip_every_length(void **state) {
  (void)state;
  unsigned char data[64], back[64];
  for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i * 37 + 11);
  for (size_t len = 0; len <= sizeof data; len++) {
    char text[100];
    size_t n = base64url_encode(data, len, text);
    assert_int_equal(n, (4 * len + 2) / 3);
    assert_null(strchr(text, '='));
    assert_int_equal(base64url_decode(text, n, back, sizeof back), (long)len);
    assert_memory_equal(back, data, len);
  }
}

static void test_url_rejects(void **state) {
  (void)state;
  unsigned char raw[16];
  static const char *const bad[] = {
      "Zg==",  /* padding */
      "Zm+v",  /* standard alphabet */
      "Zm/v",  /* standard alphabet */
      "Z",     /* a length no byte string has */
      "Zh",    /* unused low bits set: a second text for "f" */
      "Zm9 v", /* space */
      "Zm9\0v",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(base64url_decode(bad[i], strlen(bad[i]) + (i == 6 ? 2 : 0), raw, sizeof raw),
                     -1);
  /* More than cap bytes. */
  assert_int_equal(base64url_decode("Zm9vYmFy", 8, raw, 5), -1);
  assert_int_equal(base64url_decode("Zm9vYmFy", 8, raw, 6), 6);
}

static void test_standard_still_padded(void **state) {
  (void)state;
  char text[16];
  assert_int_equal(base64_encode((const unsigned char *)"f", 1, text), 4);
  assert_string_equal(text, "Zg==");
  assert_int_equal(base64_encode((const unsigned char *)"\xfb\xff", 2, text), 4);
  assert_string_equal(text, "+/8=");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url_known_answers),
      cmocka_unit_test(test_url_round_trip_every_length),
      cmocka_unit_test(test_url_rejects),
      cmocka_unit_test(test_standard_still_padded),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
