/* Unit tests for model/json_raw: byte-exact lookup of top-level members. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "model/json_raw.h"

/* Asserts that doc has member key whose raw text is exactly expected. */
static void assert_member(const char *doc, const char *key, const char *expected) {
  const char *val = NULL;
  size_t len = 0;
  if (!json_raw_member(doc, strlen(doc), key, &val, &len))
    fail_msg("member \"%s\" not found in %s", key, doc);
  assert_true(val >= doc && val + len <= doc + strlen(doc));
  if (len != strlen(expected) || memcmp(val, expected, len) != 0)
    fail_msg("member \"%s\": expected [%s], got [%.*s]", key, expected, (int)len, val);
}

static void assert_no_member(const char *doc, const char *key) {
  const char *val = NULL;
  size_t len = 0;
  if (json_raw_member(doc, strlen(doc), key, &val, &len))
    fail_msg("member \"%s\" unexpectedly found in %s", key, doc);
}

static void test_compact(void **state) {
  (void)state;
  const char *doc =
      "{\"a\":1,\"b\":\"two\",\"c\":[1,2,3],\"d\":{\"e\":null},\"f\":true,\"g\":false}";
  assert_member(doc, "a", "1");
  assert_member(doc, "b", "\"two\"");
  assert_member(doc, "c", "[1,2,3]");
  assert_member(doc, "d", "{\"e\":null}");
  assert_member(doc, "f", "true");
  assert_member(doc, "g", "false");
  assert_member("{\"only\":null}", "only", "null");
}

static void test_pretty(void **state) {
  (void)state;
  const char *doc =
      "\n  {\r\n"
      "    \"transcript\" :\t[\n"
      "      { \"speaker\": \"user\" }\n"
      "    ] ,\n"
      "    \"metadata\"  :  {\n"
      "      \"duration\": 300\n"
      "    }\n"
      "    ,\"n\" : -12.5e3 \n"
      "  }\n";
  assert_member(doc, "transcript", "[\n      { \"speaker\": \"user\" }\n    ]");
  assert_member(doc, "metadata", "{\n      \"duration\": 300\n    }");
  assert_member(doc, "n", "-12.5e3");
}

static void test_strings_with_structure_characters(void **state) {
  (void)state;
  const char *doc =
      "{\"x\":\"}]{[,:\",\"y\":{\"s\":\"a \\\"quoted}\\\" b\",\"t\":[\"]\",\"\\\\\"]},"
      "\"z\":\"ends with backslash \\\\\",\"w\":[{\"k\":\"{\"},[\"[\"]],\"last\":0}";
  assert_member(doc, "x", "\"}]{[,:\"");
  assert_member(doc, "y", "{\"s\":\"a \\\"quoted}\\\" b\",\"t\":[\"]\",\"\\\\\"]}");
  assert_member(doc, "z", "\"ends with backslash \\\\\"");
  assert_member(doc, "w", "[{\"k\":\"{\"},[\"[\"]]");
  assert_member(doc, "last", "0");
}

static void test_numbers_kept_verbatim(void **state) {
  (void)state;
  const char *doc = "{\"a\":0.1,\"b\":1e400,\"c\":-0,\"d\":12345678901234567890123,\"e\":1.0E-7}";
  assert_member(doc, "a", "0.1");
  assert_member(doc, "b", "1e400");
  assert_member(doc, "c", "-0");
  assert_member(doc, "d", "12345678901234567890123");
  assert_member(doc, "e", "1.0E-7");
}

static void test_unicode_and_escapes_kept_verbatim(void **state) {
  (void)state;
  const char *doc = "{\"s\":\"caf\\u00e9 \xc3\xa9 \\ud83d\\ude00 \xf0\x9f\x98\x80\\n\"}";
  assert_member(doc, "s", "\"caf\\u00e9 \xc3\xa9 \\ud83d\\ude00 \xf0\x9f\x98\x80\\n\"");
}

static void test_escaped_key_names(void **state) {
  (void)state;
  const char *doc = "{\"transcr\\u0069pt\":[1],\"a\\\"b\":2,\"c\\/d\":3,\"\\u00e9\":4}";
  assert_member(doc, "transcript", "[1]");
  assert_member(doc, "a\"b", "2");
  assert_member(doc, "c/d", "3");
  assert_member(doc, "\xc3\xa9", "4");
  /* the escaped spelling is not the key's name */
  assert_no_member(doc, "transcr\\u0069pt");
}

static void test_top_level_only(void **state) {
  (void)state;
  /* A nested member with the same name comes first but is not the answer. */
  const char *doc = "{\"outer\":{\"summary\":\"inner\"},\"list\":[{\"summary\":1}],\"summary\":{}}";
  assert_member(doc, "summary", "{}");
  assert_no_member("{\"outer\":{\"summary\":\"inner\"}}", "summary");
  /* A string value equal to the key is not a key. */
  assert_no_member("{\"a\":\"summary\"}", "summary");
}

static void test_key_matching_is_exact(void **state) {
  (void)state;
  const char *doc = "{\"meta\":1,\"metadata2\":2,\"Metadata\":3}";
  assert_no_member(doc, "metadata");
  assert_member(doc, "meta", "1");
  assert_member(doc, "Metadata", "3");
  assert_member("{\"\":5}", "", "5");
}

static void test_missing_and_non_objects(void **state) {
  (void)state;
  assert_no_member("{}", "a");
  assert_no_member("  { }  ", "a");
  assert_no_member("{\"a\":1}", "b");
  assert_no_member("[{\"a\":1}]", "a");
  assert_no_member("\"a\"", "a");
  assert_no_member("42", "a");
  assert_no_member("null", "a");
  assert_no_member("", "a");
}

static void test_length_bounds_the_scan(void **state) {
  (void)state;
  const char *doc = "{\"a\":1,\"b\":2}";
  const char *val;
  size_t len;
  /* only the first 7 bytes "{\"a\":1," are visible: b is out of reach */
  assert_false(json_raw_member(doc, 7, "b", &val, &len));
  assert_true(json_raw_member(doc, strlen(doc), "b", &val, &len));
  assert_int_equal(len, 1);
  assert_int_equal(val[0], '2');
}

/* Steps through doc with json_raw_next and writes "key=value;" (or "value;" in an array). */
static void walk(const char *doc, char *out, size_t cap) {
  size_t pos = 0, w = 0;
  const char *k, *v;
  size_t kn, vn;
  out[0] = '\0';
  while (json_raw_next(doc, strlen(doc), &pos, &k, &kn, &v, &vn)) {
    assert_true(v >= doc && v + vn <= doc + strlen(doc));
    int n = k ? snprintf(out + w, cap - w, "%.*s=%.*s;", (int)kn, k, (int)vn, v)
              : snprintf(out + w, cap - w, "%.*s;", (int)vn, v);
    assert_true(n > 0 && (size_t)n < cap - w);
    w += (size_t)n;
  }
  /* once at the end it stays there */
  assert_false(json_raw_next(doc, strlen(doc), &pos, &k, &kn, &v, &vn));
}

static void test_next_steps_through_members_and_elements(void **state) {
  (void)state;
  char out[256];
  walk("{\"a\":1,\"b\\\"\":{\"x\":[1,2]},\"c\":\"s,}\"}", out, sizeof out);
  assert_string_equal(out, "\"a\"=1;\"b\\\"\"={\"x\":[1,2]};\"c\"=\"s,}\";");
  walk(" [ 123456789012345678901 , 0.30000000000000004,\n\"x\" , [ ] , {} ,null ] ", out,
       sizeof out);
  assert_string_equal(out, "123456789012345678901;0.30000000000000004;\"x\";[ ];{};null;");
  walk("{ }", out, sizeof out);
  assert_string_equal(out, "");
  walk("[]", out, sizeof out);
  assert_string_equal(out, "");
  walk("\"a\"", out, sizeof out);
  assert_string_equal(out, "");
  walk("42", out, sizeof out);
  assert_string_equal(out, "");
  walk("", out, sizeof out);
  assert_string_equal(out, "");
  /* value ends: a string, a container, a number */
  const char *doc = "\"a\\\"b\" [1,[2]] -1.5e3,";
  assert_int_equal(json_raw_value_end(doc, strlen(doc), 0), 6);
  assert_int_equal(json_raw_value_end(doc, strlen(doc), 7), 14);
  assert_int_equal(json_raw_value_end(doc, strlen(doc), 15), 21);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_compact),
      cmocka_unit_test(test_pretty),
      cmocka_unit_test(test_strings_with_structure_characters),
      cmocka_unit_test(test_numbers_kept_verbatim),
      cmocka_unit_test(test_unicode_and_escapes_kept_verbatim),
      cmocka_unit_test(test_escaped_key_names),
      cmocka_unit_test(test_top_level_only),
      cmocka_unit_test(test_key_matching_is_exact),
      cmocka_unit_test(test_missing_and_non_objects),
      cmocka_unit_test(test_length_bounds_the_scan),
      cmocka_unit_test(test_next_steps_through_members_and_elements),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
