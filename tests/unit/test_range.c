/* The Range header: the forms RFC 9110 defines for one byte range, and what is ignored. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "http/range.h"

static enum http_range parse(const char *h, int64_t total, int64_t *a, int64_t *b) {
  *a = *b = -1;
  return http_range_parse(h, total, a, b);
}

static void test_forms(void **state) {
  (void)state;
  int64_t a, b;
  assert_int_equal(parse("bytes=0-99", 1000, &a, &b), HTTP_RANGE_OK);
  assert_int_equal(a, 0);
  assert_int_equal(b, 99);
  assert_int_equal(parse("bytes=990-", 1000, &a, &b), HTTP_RANGE_OK);
  assert_int_equal(a, 990);
  assert_int_equal(b, 999);
  assert_int_equal(parse("bytes=-10", 1000, &a, &b), HTTP_RANGE_OK);
  assert_int_equal(a, 990);
  assert_int_equal(b, 999);
  assert_int_equal(parse("bytes=-5000", 1000, &a, &b), HTTP_RANGE_OK); /* whole file */
  assert_int_equal(a, 0);
  assert_int_equal(parse("bytes=500-5000", 1000, &a, &b), HTTP_RANGE_OK); /* clipped */
  assert_int_equal(b, 999);
  assert_int_equal(parse("bytes=999-999", 1000, &a, &b), HTTP_RANGE_OK);
}

static void test_unsatisfiable(void **state) {
  (void)state;
  int64_t a, b;
  assert_int_equal(parse("bytes=1000-", 1000, &a, &b), HTTP_RANGE_UNSATISFIABLE);
  assert_int_equal(parse("bytes=1000-2000", 1000, &a, &b), HTTP_RANGE_UNSATISFIABLE);
  assert_int_equal(parse("bytes=-0", 1000, &a, &b), HTTP_RANGE_UNSATISFIABLE);
  assert_int_equal(parse("bytes=0-", 0, &a, &b), HTTP_RANGE_UNSATISFIABLE);
}

static void test_ignored(void **state) {
  (void)state;
  int64_t a, b;
  const char *ignored[] = {
      NULL,        "",          "bytes=",  "items=0-1",  "bytes=0-1,5-9",
      "bytes=5-1", "bytes=a-b", "bytes=-", "bytes=1-2x", "bytes=99999999999999999999-",
      "bytes= -"};
  for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
    assert_int_equal(parse(ignored[i], 1000, &a, &b), HTTP_RANGE_NONE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forms),
      cmocka_unit_test(test_unsatisfiable),
      cmocka_unit_test(test_ignored),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
