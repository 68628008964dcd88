/* Unit tests for model/export: RFC 4180 quoting, formula neutralisation (text cells only),
 * the header and a row with unknown values and audio, and NDJSON lines that are GET one's
 * answer on one line (a multi-line stored body included). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/export.h"
#include "model/render.h"

static char *cell(const char *in, bool neutralise) {
  static char out[256];
  struct export_buf b;
  export_buf_init(&b);
  export_csv_cell(&b, in, strlen(in), neutralise);
  assert_true(b.ok);
  snprintf(out, sizeof out, "%s", b.p ? b.p : "");
  export_buf_free(&b);
  return out;
}

static void test_quoting(void **state) {
  (void)state;
  assert_string_equal(cell("plain", true), "plain");
  assert_string_equal(cell("", true), "");
  assert_string_equal(cell("a,b", true), "\"a,b\"");
  assert_string_equal(cell("say \"hi\"", true), "\"say \"\"hi\"\"\"");
  assert_string_equal(cell("two\r\nlines", true), "\"two\r\nlines\"");
  assert_string_equal(cell("lf\nonly", true), "\"lf\nonly\"");
  assert_string_equal(cell("caf\xc3\xa9 \xe6\x97\xa5", true), "caf\xc3\xa9 \xe6\x97\xa5");
}

static void test_formulas_are_neutralised(void **state) {
  (void)state;
  assert_string_equal(cell("=1+1", true), "'=1+1");
  assert_string_equal(cell("+33 1 23", true), "'+33 1 23");
  assert_string_equal(cell("-2", true), "'-2");
  assert_string_equal(cell("@SUM(A1)", true), "'@SUM(A1)");
  assert_string_equal(cell("\tx", true), "'\tx");
  assert_string_equal(cell("\rx", true), "\"'\rx\"");
  /* inside the quotes when quoted */
  assert_string_equal(cell("=HYPERLINK(\"u\",\"x\")", true),
                      "\"'=HYPERLINK(\"\"u\"\",\"\"x\"\")\"");
  /* after leading whitespace, or after a double quote */
  assert_string_equal(cell(" =1+1", true), "' =1+1");
  assert_string_equal(cell("  \t@SUM(A1)", true), "'  \t@SUM(A1)");
  assert_string_equal(cell(" -2", true), "' -2");
  assert_string_equal(cell("\n+1", true), "\"'\n+1\"");
  assert_string_equal(cell("\"=1+1\"", true), "\"'\"\"=1+1\"\"\"");
  assert_string_equal(cell("\"@x", true), "\"'\"\"@x\"");
  /* otherwise only the start counts; numbers of ours are not touched */
  assert_string_equal(cell("a=b", true), "a=b");
  assert_string_equal(cell(" a=b", true), " a=b");
  assert_string_equal(cell("\"a\" =b", true), "\"\"\"a\"\" =b\"");
  assert_string_equal(cell("   ", true), "   ");
  assert_string_equal(cell("-2", false), "-2");
}

static void fill(struct store_conversation *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->conversation_id, sizeof c->conversation_id, "conv 1/é");
  snprintf(c->email_id, sizeof c->email_id, "u@example.com");
  snprintf(c->account_id, sizeof c->account_id, "=acc,1");
  snprintf(c->status, sizeof c->status, "completed");
  c->has_start = true;
  c->start_us = 1705314600LL * 1000000; /* 2024-01-15T10:30:00Z */
  c->duration = 300;
  c->message_count = 2;
  c->processed_us = 1705314900LL * 1000000 + 12;
  c->audio_bytes = -1;
}

static void test_header_and_rows(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c);
  struct export_buf b;
  export_buf_init(&b);
  export_csv_header(&b);
  export_csv_row(&b, &c);
  c.audio_bytes = 1234;
  c.has_start = false;
  snprintf(c.failure_reason, sizeof c.failure_reason, "boom");
  export_csv_row(&b, &c);
  assert_true(b.ok);
  assert_string_equal(
      b.p,
      "conversationId,emailId,accountId,agentId,status,failureReason,startTime,endTime,duration,"
      "messageCount,processedAt,audioBytes,audioUrl\r\n"
      "conv 1/é,u@example.com,\"'=acc,1\",,completed,,2024-01-15T10:30:00Z,"
      "2024-01-15T10:35:00Z,300,2,2024-01-15T10:35:00.000012Z,,\r\n"
      "conv 1/é,u@example.com,\"'=acc,1\",,completed,boom,,,300,2,2024-01-15T10:35:00.000012Z,"
      "1234,/api/v1/conversations/conv%201%2F%C3%A9/audio\r\n");
  export_buf_free(&b);
}

static void test_ndjson_is_get_one(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c);
  struct export_buf b;
  export_buf_init(&b);
  export_ndjson_row(&b, &c, false);
  json_t *obj = render_conversation(&c);
  char *want = json_dumps(obj, JSON_COMPACT);
  json_decref(obj);
  assert_int_equal(b.len, strlen(want) + 1);
  assert_memory_equal(b.p, want, strlen(want));
  assert_int_equal(b.p[b.len - 1], '\n');
  free(want);
  /* a stored body with line breaks between its tokens: still one line, the same JSON */
  char body[] = "{\r\n \"transcript\": [\n  {\"content\": \"a\\nb\"}\n ],\n \"metadata\": {}\n}";
  c.body = body;
  c.body_len = strlen(body);
  b.len = 0;
  export_ndjson_row(&b, &c, true);
  assert_true(b.ok);
  assert_ptr_equal(memchr(b.p, '\n', b.len), b.p + b.len - 1);
  assert_null(memchr(b.p, '\r', b.len));
  json_t *line = json_loadb(b.p, b.len, 0, NULL);
  assert_non_null(line);
  assert_string_equal(json_string_value(json_object_get(
                          json_array_get(json_object_get(line, "transcript"), 0), "content")),
                      "a\nb");
  json_decref(line);
  export_buf_free(&b);
}

/* U+2028, U+2029 and U+0085 stand raw in JSON strings, but line readers take them for line
 * ends: the line holds them as \u escapes and parses to the same text. */
static void test_ndjson_unicode_line_separators_are_escaped(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c);
  char body[] =
      "{\"transcript\": [{\"content\": \"a\xE2\x80\xA8"
      "b\xE2\x80\xA9"
      "c\xC2\x85"
      "d\xC3\xA9\xE2\x80\xA6\"}], \"metadata\": {}}";
  c.body = body;
  c.body_len = strlen(body);
  struct export_buf b;
  export_buf_init(&b);
  export_ndjson_row(&b, &c, true);
  assert_true(b.ok);
  assert_null(strstr(b.p, "\xE2\x80\xA8"));
  assert_null(strstr(b.p, "\xE2\x80\xA9"));
  assert_null(strstr(b.p, "\xC2\x85"));
  assert_non_null(strstr(b.p, "a\\u2028b\\u2029c\\u0085d\xC3\xA9\xE2\x80\xA6\""));
  json_t *line = json_loadb(b.p, b.len, 0, NULL);
  assert_non_null(line);
  assert_string_equal(json_string_value(json_object_get(
                          json_array_get(json_object_get(line, "transcript"), 0), "content")),
                      "a\xE2\x80\xA8"
                      "b\xE2\x80\xA9"
                      "c\xC2\x85"
                      "d\xC3\xA9\xE2\x80\xA6");
  json_decref(line);
  export_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quoting),
      cmocka_unit_test(test_formulas_are_neutralised),
      cmocka_unit_test(test_header_and_rows),
      cmocka_unit_test(test_ndjson_is_get_one),
      cmocka_unit_test(test_ndjson_unicode_line_separators_are_escaped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
