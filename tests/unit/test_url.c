/* Unit tests for http/url: strict percent- and form-decoding, raw-path route matching, query
 * splitting. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/url.h"

static enum url_status decode(const char *s, bool form, char *out, size_t *n) {
  return url_decode(s, strlen(s), form, out, n);
}

static void assert_decodes(const char *s, bool form, const char *expected, size_t expected_len) {
  char out[256];
  size_t n = 999;
  enum url_status st = decode(s, form, out, &n);
  if (st != URL_OK) fail_msg("\"%s\": expected to decode, got %d", s, (int)st);
  assert_int_equal(n, expected_len);
  assert_memory_equal(out, expected, expected_len);
  assert_int_equal(out[n], '\0');
}

static void assert_decode_fails(const char *s, enum url_status expected) {
  char out[256];
  size_t n;
  enum url_status st = decode(s, true, out, &n);
  if (st != expected) fail_msg("\"%s\": expected %d, got %d", s, (int)expected, (int)st);
}

static void test_decode(void **state) {
  (void)state;
  assert_decodes("", false, "", 0);
  assert_decodes("abc", false, "abc", 3);
  assert_decodes("a%2Fb", false, "a/b", 3);
  assert_decodes("a%2fb", false, "a/b", 3);
  assert_decodes("a+b", false, "a+b", 3);
  assert_decodes("a+b", true, "a b", 3);
  assert_decodes("a%2Bb", true, "a+b", 3);
  assert_decodes("u%40e.com", true, "u@e.com", 7);
  assert_decodes("%C3%BC", false, "\xC3\xBC", 2);
  assert_decodes("\xC3\xBC", false, "\xC3\xBC", 2); /* raw UTF-8 is fine */
  assert_decodes("%F0%9F%98%80", false, "\xF0\x9F\x98\x80", 4);
  assert_decodes("%EF%BF%BF", false, "\xEF\xBF\xBF", 3);        /* U+FFFF */
  assert_decodes("%F4%8F%BF%BF", false, "\xF4\x8F\xBF\xBF", 4); /* U+10FFFF */
  assert_decodes("%25", false, "%", 1);
  assert_decodes("%2525", false, "%25", 3); /* decoded once only */
}

static void test_decode_errors(void **state) {
  (void)state;
  assert_decode_fails("abc%00xyz", URL_NUL);
  assert_decode_fails("%00", URL_NUL);
  assert_decode_fails("%", URL_BAD_ESCAPE);
  assert_decode_fails("%4", URL_BAD_ESCAPE);
  assert_decode_fails("ab%zz", URL_BAD_ESCAPE);
  assert_decode_fails("%G0", URL_BAD_ESCAPE);
  assert_decode_fails("%+1", URL_BAD_ESCAPE);
  assert_decode_fails("ab%FFcd", URL_BAD_UTF8);
  assert_decode_fails("%FE", URL_BAD_UTF8);
  assert_decode_fails("%80", URL_BAD_UTF8);          /* lone continuation */
  assert_decode_fails("%C0%AF", URL_BAD_UTF8);       /* overlong '/' */
  assert_decode_fails("%E0%80%AF", URL_BAD_UTF8);    /* overlong, 3 bytes */
  assert_decode_fails("%ED%A0%80", URL_BAD_UTF8);    /* surrogate */
  assert_decode_fails("%F4%90%80%80", URL_BAD_UTF8); /* above U+10FFFF */
  assert_decode_fails("%E2%82", URL_BAD_UTF8);       /* cut short */
  assert_decode_fails("%E2%82x", URL_BAD_UTF8);
  assert_decode_fails("\xFF", URL_BAD_UTF8);
  char raw_nul[] = {'a', '\0', 'b'};
  char out[8];
  size_t n;
  assert_int_equal(url_decode(raw_nul, 3, false, out, &n), URL_NUL);
}

static void test_match_prefix(void **state) {
  (void)state;
  const char *p = "/api/v1/conversations/";
  assert_int_equal(url_match_prefix("/api/v1/conversations/x", 23, p), 22);
  assert_int_equal(url_match_prefix("/api/v1/conversations%2Fx", 25, p), 0);
  assert_int_equal(url_match_prefix("/api/v1/conversations%2fx", 25, p), 0);
  assert_int_equal(url_match_prefix("/api/v1/conv%65rsations/x", 25, p), 24);
  assert_int_equal(url_match_prefix("/api/v1/conversations", 21, p), 0);
  assert_int_equal(url_match_prefix("/api/v1/health", 14, "/api/v1/health"), 14);
  assert_int_equal(url_match_prefix("/api/v1/h%65alth", 16, "/api/v1/health"), 16);
  assert_int_equal(url_match_prefix("/api/v1/h%6", 11, "/api/v1/health"), 0);
  assert_int_equal(url_match_prefix("/api/v1/health", 5, "/api/v1/health"), 0); /* length */
  assert_int_equal(url_match_prefix("", 0, "/"), 0);
}

static void test_query(void **state) {
  (void)state;
  const char *raw = "email_id=u%40e.com&&page=2&flag&q=a+b%2Bc&empty=";
  struct url_query q;
  assert_int_equal(url_query_parse(raw, strlen(raw), &q), URL_OK);
  assert_int_equal(q.count, 5);
  assert_string_equal(url_query_get(&q, "email_id"), "u@e.com");
  assert_string_equal(url_query_get(&q, "page"), "2");
  assert_null(url_query_get(&q, "flag"));
  assert_string_equal(url_query_get(&q, "q"), "a b+c");
  assert_string_equal(url_query_get(&q, "empty"), "");
  assert_null(url_query_get(&q, "absent"));
  url_query_free(&q);

  assert_int_equal(url_query_parse("", 0, &q), URL_OK);
  assert_int_equal(q.count, 0);
  assert_null(url_query_get(&q, "x"));
  url_query_free(&q);

  assert_int_equal(url_query_parse("&&&", 3, &q), URL_OK);
  assert_int_equal(q.count, 0);
  url_query_free(&q);
}

static enum url_status parse_fails(const char *raw, const char *bad_name) {
  struct url_query q;
  enum url_status st = url_query_parse(raw, strlen(raw), &q);
  if (bad_name)
    assert_string_equal(q.bad_name, bad_name);
  else
    assert_null(q.bad_name);
  url_query_free(&q);
  return st;
}

static void test_query_errors(void **state) {
  (void)state;
  assert_int_equal(parse_fails("email_id=u%40e.com%00zzz", "email_id"), URL_NUL);
  assert_int_equal(parse_fails("page=1%00", "page"), URL_NUL);
  assert_int_equal(parse_fails("a=1&email_id=%FF", "email_id"), URL_BAD_UTF8);
  assert_int_equal(parse_fails("x=%zz", "x"), URL_BAD_ESCAPE);
  assert_int_equal(parse_fails("%FF=1", NULL), URL_BAD_UTF8);
  assert_int_equal(parse_fails("a%00=1", NULL), URL_NUL);
  assert_int_equal(parse_fails("page=1&page=2", "page"), URL_DUPLICATE);
  assert_int_equal(parse_fails("page=1&page", "page"), URL_DUPLICATE);
  assert_int_equal(parse_fails("a+b=1&a%20b=2", "a b"), URL_DUPLICATE);
}

static void test_query_limit(void **state) {
  (void)state;
  char raw[URL_QUERY_PARAMS_MAX * 8 + 16];
  size_t len = 0;
  for (int i = 0; i < URL_QUERY_PARAMS_MAX; i++)
    len += (size_t)snprintf(raw + len, sizeof raw - len, "%sp%d=v", i ? "&" : "", i);
  struct url_query q;
  assert_int_equal(url_query_parse(raw, len, &q), URL_OK);
  assert_int_equal(q.count, URL_QUERY_PARAMS_MAX);
  assert_string_equal(url_query_get(&q, "p99"), "v");
  url_query_free(&q);
  len += (size_t)snprintf(raw + len, sizeof raw - len, "&x");
  assert_int_equal(url_query_parse(raw, len, &q), URL_TOO_MANY);
  url_query_free(&q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decode),       cmocka_unit_test(test_decode_errors),
      cmocka_unit_test(test_match_prefix), cmocka_unit_test(test_query),
      cmocka_unit_test(test_query_errors), cmocka_unit_test(test_query_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
