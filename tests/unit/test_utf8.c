/* Unit tests for core/utf8: strict validation and the sanitizer used for messages quoting
 * client bytes. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "core/utf8.h"

static bool valid(const char *s) { return utf8_valid(s, strlen(s)); }

static void test_valid(void **state) {
  (void)state;
  assert_true(valid(""));
  assert_true(valid("plain ascii"));
  assert_true(valid("\xc3\xa9"));         /* é */
  assert_true(valid("\xe2\x82\xac"));     /* € */
  assert_true(valid("\xf0\x9f\x98\x80")); /* U+1F600 */
  assert_true(valid("\xed\x9f\xbf"));     /* U+D7FF */
  assert_true(valid("\xee\x80\x80"));     /* U+E000 */
  assert_true(valid("\xf4\x8f\xbf\xbf")); /* U+10FFFF */
  assert_true(utf8_valid("a\0b", 3));     /* NUL is U+0000 */
}

static void test_invalid(void **state) {
  (void)state;
  static const char *const bad[] = {
      "\x80",             /* lone continuation */
      "\xc3",             /* truncated */
      "\xc3(",            /* bad continuation */
      "\xc0\xaf",         /* overlong '/' */
      "\xc1\xbf",         /* overlong */
      "\xe0\x80\xaf",     /* overlong */
      "\xe0\x9f\xbf",     /* overlong */
      "\xed\xa0\x80",     /* surrogate U+D800 */
      "\xed\xbf\xbf",     /* surrogate U+DFFF */
      "\xf0\x8f\xbf\xbf", /* overlong */
      "\xf4\x90\x80\x80", /* above U+10FFFF */
      "\xf5\x80\x80\x80",
      "\xff",
      "\xe2\x82", /* truncated € */
      "ok\xe2\x82",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (valid(bad[i])) fail_msg("case %zu accepted", i);
  /* the length counts, not the NUL */
  assert_false(utf8_valid("\xc3\xa9", 1));
}

static void test_sanitize(void **state) {
  (void)state;
  char out[64];
  assert_int_equal(utf8_sanitize(out, sizeof out, "ab\xc3\xa9", 4), 4);
  assert_string_equal(out, "ab\xc3\xa9");
  /* a character cut in half becomes one U+FFFD per invalid byte */
  utf8_sanitize(out, sizeof out, "x\xc3", 2);
  assert_string_equal(out, "x\xef\xbf\xbd");
  utf8_sanitize(out, sizeof out, "\xe2\x82(", 3);
  assert_string_equal(out, "\xef\xbf\xbd\xef\xbf\xbd(");
  utf8_sanitize(out, sizeof out, "\xed\xa0\x80", 3);
  assert_true(utf8_valid(out, strlen(out)));
  /* a short buffer stops at a character boundary, always terminated */
  assert_int_equal(utf8_sanitize(out, 4, "ab\xc3\xa9", 4), 2);
  assert_string_equal(out, "ab");
  assert_int_equal(utf8_sanitize(out, 5, "ab\xc3\xa9", 4), 4);
  assert_int_equal(utf8_sanitize(out, 1, "abc", 3), 0);
  assert_string_equal(out, "");
  assert_int_equal(utf8_sanitize(out, 4, "a\xff", 2), 1);
  assert_string_equal(out, "a");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid),
      cmocka_unit_test(test_invalid),
      cmocka_unit_test(test_sanitize),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
