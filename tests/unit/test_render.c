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

#include "model/json_raw.h"
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

/* The reference: the detail as it was built before (render_conversation's JSON tree dumped
 * compactly, then the three members appended raw). The direct writer must give the same bytes
 * (or refuse the same inputs). */
static char *reference_detail(const struct store_conversation *c, size_t *len) {
  json_t *base = render_conversation(c);
  char *head = base ? json_dumps(base, JSON_COMPACT) : NULL;
  json_decref(base);
  if (!head) return NULL;
  const char *keys[] = {"transcript", "metadata", "summary"};
  size_t cap = strlen(head) + c->body_len * 3 + 64;
  char *out = malloc(cap);
  size_t n = strlen(head) - 1;
  memcpy(out, head, n);
  free(head);
  for (size_t i = 0; i < 3; i++) {
    const char *val = "null";
    size_t vlen = 4;
    json_raw_member(c->body, c->body_len, keys[i], &val, &vlen);
    n += (size_t)snprintf(out + n, cap - n, ",\"%s\":", keys[i]);
    memcpy(out + n, val, vlen);
    n += vlen;
  }
  out[n++] = '}';
  out[n] = '\0';
  *len = n;
  return out;
}

/* A text of up to max bytes drawn from an alphabet with every C0 control, quotes, backslashes,
 * '/', DEL, multi-byte UTF-8 and (rarely) an invalid byte. */
static void random_text(char *dst, size_t max, unsigned *seed) {
  static const char *const pieces[] = {
      "a",    "Z",    "9",        "\"",           "\\",
      "/",    "\x7f", "\xc3\xa9", "\xe2\x80\xa8", "\xf0\x9f\x98\x80",
      " ",    "-",    "\x01",     "\x08",         "\x09",
      "\x0a", "\x0c", "\x0d",     "\x1f",         "\x1b",
      "%",    "\xff"};
  size_t n = 0, count = (size_t)(rand_r(seed) % 12);
  for (size_t i = 0; i < count; i++) {
    const char *p = pieces[rand_r(seed) % (sizeof pieces / sizeof pieces[0])];
    if (p[0] == '\xff' && rand_r(seed) % 8) continue; /* invalid UTF-8: rare */
    size_t l = strlen(p);
    if (n + l + 1 > max) break;
    memcpy(dst + n, p, l);
    n += l;
  }
  dst[n] = '\0';
}

static void test_detail_matches_the_json_tree(void **state) {
  (void)state;
  const char *bodies[] = {
      "{\"transcript\":[{\"role\":\"user\",\"content\":\"hi\"}],\"metadata\":{\"a\":1},"
      "\"summary\":\"s\"}",
      "{}", "{\"summary\":null,\"metadata\":[1,2,{\"x\":\"\\u0000\"}]}"};
  unsigned seed = 7;
  for (int i = 0; i < 5000; i++) {
    struct store_conversation c;
    memset(&c, 0, sizeof c);
    random_text(c.conversation_id, sizeof c.conversation_id, &seed);
    if (!c.conversation_id[0]) strcpy(c.conversation_id, "c");
    random_text(c.email_id, sizeof c.email_id, &seed);
    random_text(c.account_id, sizeof c.account_id, &seed);
    random_text(c.agent_id, sizeof c.agent_id, &seed);
    random_text(c.failure_reason, sizeof c.failure_reason, &seed);
    random_text(c.status, sizeof c.status, &seed);
    c.has_start = rand_r(&seed) % 2;
    c.start_us = (int64_t)(rand_r(&seed) % 2000000000) * 1000000 + rand_r(&seed) % 3 * 250000;
    c.duration = rand_r(&seed) % 5 == 0 ? 0 : rand_r(&seed) % 100000;
    c.message_count = rand_r(&seed) % 3 == 0 ? 2147483647 : rand_r(&seed) % 50;
    c.processed_us = (int64_t)(rand_r(&seed) % 2000000000) * 1000000 + rand_r(&seed) % 1000000;
    if (i % 97 == 0) c.processed_us = INT64_MAX / 2; /* beyond year 9999: null */
    c.audio_bytes = rand_r(&seed) % 3 == 0 ? (int64_t)(rand_r(&seed) % 100000) : -1;
    c.body = (char *)bodies[i % 3];
    c.body_len = strlen(c.body);
    size_t want_len = 0, got_len = 0;
    char *want = reference_detail(&c, &want_len);
    char *got = render_conversation_detail(&c, &got_len);
    if (!want) {
      assert_null(got);
      continue;
    }
    assert_non_null(got);
    assert_int_equal(got_len, want_len);
    assert_string_equal(got, want);
    free(want);
    free(got);
  }
}

/* The webhook's 200, written directly, is jansson's compact dump of the tree byte for byte:
 * random texts (quotes, backslashes, controls, UTF-8, bytes that are not UTF-8), a missing
 * conversation id (the ElevenLabs event without one: null), times out of range. */
static void test_webhook_accepted_matches_the_json_tree(void **state) {
  (void)state;
  static const char *const bad_utf8[] = {
      "\xed\xa0\x80",     /* a surrogate */
      "\xc0\x80",         /* overlong NUL */
      "\xe0\x80\x80",     /* overlong */
      "\xf0\x8f\xbf\xbf", /* overlong */
      "\xf4\x90\x80\x80", /* past U+10FFFF */
      "\xf5\x80\x80\x80",
      "\xfe",
      "\xc3",
      "\xe2\x82",
      "\xf0\x9f\x98", /* cut off */
      "\x80",         /* a lone continuation byte */
  };
  unsigned seed = 11;
  for (int i = 0; i < 5000; i++) {
    char id[MODEL_CONVERSATION_ID_MAX + 1], webhook[64];
    random_text(id, sizeof id, &seed);
    random_text(webhook, sizeof webhook, &seed);
    int64_t us = (int64_t)(rand_r(&seed) % 2000000000) * 1000000 + rand_r(&seed) % 1000000;
    if (i % 97 == 0) us = INT64_MAX / 2;
    bool null_id = i % 13 == 0;
    if (i < (int)(sizeof bad_utf8 / sizeof bad_utf8[0])) { /* fixed: bytes that are not UTF-8 */
      snprintf(id, sizeof id, "c%s", bad_utf8[i]);
      null_id = false;
    }
    json_t *tree = render_webhook_accepted(null_id ? NULL : id, webhook, us);
    char *want = tree ? json_dumps(tree, JSON_COMPACT) : NULL;
    json_decref(tree);
    size_t len = 0;
    char *got = render_webhook_accepted_text(null_id ? NULL : id, webhook, us, &len);
    if (!want) {
      assert_null(got);
      continue;
    }
    assert_non_null(got);
    assert_int_equal(len, strlen(want));
    assert_string_equal(got, want);
    free(want);
    free(got);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_detail_repeats_members_exactly),
      cmocka_unit_test(test_detail_missing_members_are_null),
      cmocka_unit_test(test_seed_conversation_shape),
      cmocka_unit_test(test_elevenlabs_fields),
      cmocka_unit_test(test_detail_buffer_is_exactly_sized),
      cmocka_unit_test(test_detail_matches_the_json_tree),
      cmocka_unit_test(test_webhook_accepted_matches_the_json_tree),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
