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
  c->audio_bytes = -1; /* no audio stored */
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

static char *render_text(const struct store_conversation *c) {
  json_t *o = render_conversation(c);
  assert_non_null(o);
  char *text = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  assert_non_null(text);
  return text;
}

/* A seed conversation: agentId always present, nothing of ElevenLabs' optional fields. */
static void test_seed_conversation_shape(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c, "{}");
  snprintf(c.agent_id, sizeof c.agent_id, "agent_1");
  char *text = render_text(&c);
  assert_string_equal(text,
                      "{\"conversationId\":\"conv-1\",\"emailId\":\"u@example.com\","
                      "\"accountId\":\"acc\",\"agentId\":\"agent_1\",\"status\":\"processed\","
                      "\"startTime\":\"2024-01-15T10:30:00Z\",\"endTime\":\"2024-01-15T10:35:00Z\","
                      "\"duration\":300,\"messageCount\":1,"
                      "\"processedAt\":\"2024-01-15T10:30:00.000001Z\"}");
  free(text);
}

/* Unknown email, account and agent are null; a failure reason and stored audio appear. */
static void test_elevenlabs_fields(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c, "{\"transcript\":[]}");
  c.email_id[0] = c.account_id[0] = '\0';
  snprintf(c.status, sizeof c.status, "failed");
  snprintf(c.failure_reason, sizeof c.failure_reason, "busy");
  snprintf(c.conversation_id, sizeof c.conversation_id, "a/b c%%\xc3\xa9");
  c.audio_bytes = 12345;
  char *text = render_text(&c);
  assert_string_equal(text,
                      "{\"conversationId\":\"a/b c%\u00e9\",\"emailId\":null,\"accountId\":null,"
                      "\"agentId\":null,\"status\":\"failed\",\"failureReason\":\"busy\","
                      "\"startTime\":\"2024-01-15T10:30:00Z\",\"endTime\":\"2024-01-15T10:35:00Z\","
                      "\"duration\":300,\"messageCount\":1,"
                      "\"processedAt\":\"2024-01-15T10:30:00.000001Z\","
                      "\"audio\":{\"bytes\":12345,"
                      "\"url\":\"/api/v1/conversations/a%2Fb%20c%25%C3%A9/audio\"}}");
  free(text);
  /* The detail answer carries the same head. */
  size_t len = 0;
  char *out = render_conversation_detail(&c, &len);
  assert_non_null(out);
  assert_int_equal(len, strlen(out));
  assert_non_null(strstr(out, "\"emailId\":null,"));
  assert_non_null(strstr(out, "/audio\"},\"transcript\":[],\"metadata\":null,\"summary\":null}"));
  free(out);
  /* Empty audio is audio: 0 bytes. */
  c.audio_bytes = 0;
  text = render_text(&c);
  assert_non_null(strstr(text, "\"audio\":{\"bytes\":0,"));
  free(text);
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
      cmocka_unit_test(test_seed_conversation_shape),
      cmocka_unit_test(test_elevenlabs_fields),
      cmocka_unit_test(test_detail_buffer_is_exactly_sized),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
