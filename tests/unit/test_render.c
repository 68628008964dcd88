/* Unit tests for model/render: the detail answer repeats the stored members byte for byte,
 * and is written into one buffer of exactly its size (defect 7). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/render.h"

static void fill(struct store_conversation *c, const char *body) {
  memset(c, 0, sizeof *c);
  snprintf(c->conversation_id, sizeof c->conversation_id, "conv-1");
  snprintf(c->email_id, sizeof c->email_id, "u@example.com");
  snprintf(c->account_id, sizeof c->account_id, "acc");
  snprintf(c->status, sizeof c->status, "processed");
  c->has_start = true;
  c->start_us = 1705314600LL * 1000000;
  c->duration = 300;
  c->message_count = 1;
  c->processed_us = 1705314600LL * 1000000 + 1;
  c->body = (char *)body;
  c->body_len = strlen(body);
}

static void test_detail_repeats_members_exactly(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c,
       "{\"transcript\" : [ {\"n\":1.50} ],\"x\":1,\"metadata\":{\"duration\":300},"
       "\"summary\":\"\\u00e9\"}");
  size_t len = 0;
  char *out = render_conversation_detail(&c, &len);
  assert_non_null(out);
  assert_int_equal(len, strlen(out));
  assert_non_null(strstr(out,
                         ",\"transcript\":[ {\"n\":1.50} ],\"metadata\":{\"duration\":300},"
                         "\"summary\":\"\\u00e9\"}"));
  json_t *doc = json_loadb(out, len, 0, NULL);
  assert_non_null(doc);
  assert_string_equal(json_string_value(json_object_get(doc, "startTime")), "2024-01-15T10:30:00Z");
  assert_string_equal(json_string_value(json_object_get(doc, "endTime")), "2024-01-15T10:35:00Z");
  assert_null(json_object_get(doc, "x"));
  json_decref(doc);
  free(out);
}

static void test_detail_missing_members_are_null(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c, "{\"transcript\":[]}");
  size_t len = 0;
  char *out = render_conversation_detail(&c, &len);
  assert_non_null(out);
  assert_non_null(strstr(out, ",\"transcript\":[],\"metadata\":null,\"summary\":null}"));
  assert_int_equal(len, strlen(out));
  free(out);
}

/* Defect 7: a large conversation used to take three times its body for the answer. */
static void test_detail_buffer_is_exactly_sized(void **state) {
  (void)state;
  size_t n = 4 << 20;
  char *body = malloc(n + 64);
  assert_non_null(body);
  int k = snprintf(body, n + 64, "{\"transcript\":[\"");
  memset(body + k, 'a', n);
  snprintf(body + k + n, 64, "\"],\"metadata\":{},\"summary\":null}");
  struct store_conversation c;
  fill(&c, body);
  size_t len = 0;
  char *out = render_conversation_detail(&c, &len);
  assert_non_null(out);
  assert_true(len > n);
  /* one buffer: the answer and its NUL, nothing more */
  assert_int_equal(malloc_usable_size(out), len + 1);
  assert_int_equal(out[len - 1], '}');
  free(out);
  free(body);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_detail_repeats_members_exactly),
      cmocka_unit_test(test_detail_missing_members_are_null),
      cmocka_unit_test(test_detail_buffer_is_exactly_sized),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
