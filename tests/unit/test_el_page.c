/* Unit tests for elevenlabs/page.c and the URL check of elevenlabs/client.c: what the backfill
 * reads from the ElevenLabs API's answers (shapes of the elevenlabs-python SDK models). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "elevenlabs/elevenlabs.h"

static bool parse(const char *s, struct el_page *p) { return el_page_parse(s, strlen(s), p); }

static void test_page(void **state) {
  (void)state;
  struct el_page p;
  assert_true(
      parse("{\"conversations\":[{\"agent_id\":\"agent_1\",\"conversation_id\":\"conv_1\","
            "\"start_time_unix_secs\":1773151000,\"call_duration_secs\":15,"
            "\"message_count\":3,\"status\":\"done\",\"call_successful\":\"success\","
            "\"new_field\":{}},{\"conversation_id\":\"conv_2\",\"status\":\"processing\"}],"
            "\"next_cursor\":\"abc\",\"has_more\":true,\"also_new\":1}",
            &p));
  assert_int_equal(p.count, 2);
  assert_string_equal(p.items[0].conversation_id, "conv_1");
  assert_string_equal(p.items[0].status, "done");
  assert_true(p.items[0].has_start);
  assert_int_equal(p.items[0].start_unix, 1773151000);
  assert_string_equal(p.items[1].status, "processing");
  assert_false(p.items[1].has_start);
  assert_true(p.has_more);
  assert_string_equal(p.next_cursor, "abc");
  el_page_free(&p);
}

static void test_last_page_and_odd_items(void **state) {
  (void)state;
  struct el_page p;
  assert_true(parse("{\"conversations\":[],\"next_cursor\":null,\"has_more\":false}", &p));
  assert_int_equal(p.count, 0);
  assert_false(p.has_more);
  assert_null(p.next_cursor);
  el_page_free(&p);
  /* has_more without a cursor cannot go on; a cursor without has_more is not followed */
  assert_true(parse("{\"conversations\":[],\"has_more\":true}", &p));
  assert_false(p.has_more);
  el_page_free(&p);
  assert_true(parse("{\"conversations\":[],\"has_more\":false,\"next_cursor\":\"x\"}", &p));
  assert_false(p.has_more);
  assert_null(p.next_cursor);
  el_page_free(&p);
  assert_true(
      parse("{\"conversations\":[{\"conversation_id\":\"\"},{\"conversation_id\":7},"
            "null,{\"start_time_unix_secs\":\"1\"}]}",
            &p));
  assert_int_equal(p.count, 4);
  for (size_t i = 0; i < 4; i++) {
    assert_null(p.items[i].conversation_id);
    assert_null(p.items[i].status);
    assert_false(p.items[i].has_start);
  }
  el_page_free(&p);
}

static void test_not_a_page(void **state) {
  (void)state;
  struct el_page p;
  const char *bad[] = {"", "not json", "[]", "{}", "{\"conversations\":{}}", "{\"detail\":\"x\"}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_false(parse(bad[i], &p));
    assert_null(p.root);
    assert_int_equal(p.count, 0);
  }
  assert_false(el_page_parse(NULL, 0, &p));
}

static void detail(const char *body, const char *want) {
  char out[64];
  el_api_error_detail(body, strlen(body), out, sizeof out);
  assert_string_equal(out, want);
}

static void test_error_detail(void **state) {
  (void)state;
  detail("{\"detail\":{\"status\":\"invalid_api_key\",\"message\":\"Invalid API key\"}}",
         "Invalid API key");
  detail("{\"detail\":\"Not Found\"}", "Not Found");
  detail("{\"detail\":\"a\\nb\\u00e9\\u001b[31m\"}", "a?b???[31m"); /* é is two bytes */
  detail("{\"detail\":[{\"msg\":\"x\"}]}", "");
  detail("<html>502</html>", "");
  detail("", "");
  char small[4];
  el_api_error_detail("{\"detail\":\"abcdef\"}", 19, small, sizeof small);
  assert_string_equal(small, "abc");
}

static void test_url_check(void **state) {
  (void)state;
  char err[128];
  assert_true(el_api_url_ok("https://api.elevenlabs.io", err, sizeof err));
  assert_true(el_api_url_ok("HTTP://127.0.0.1:8700/", err, sizeof err));
  assert_false(el_api_url_ok("file:///etc/passwd", err, sizeof err));
  assert_non_null(strstr(err, "ELEVENLABS_API_URL"));
  assert_false(el_api_url_ok("api.elevenlabs.io", err, sizeof err));
  assert_false(el_api_url_ok("", err, sizeof err));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_page),       cmocka_unit_test(test_last_page_and_odd_items),
      cmocka_unit_test(test_not_a_page), cmocka_unit_test(test_error_detail),
      cmocka_unit_test(test_url_check),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
