/* Unit tests for model/outbox: subscription validation (create and PATCH, every problem with its
 * field path), rendering, states, event types and the event envelope. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/outbox.h"

/* The problems of text as a create (create) or a PATCH of *sub; NULL when valid. */
static json_t *check(const char *text, bool create, struct subscription *sub) {
  json_error_t err;
  json_t *body = json_loads(text, JSON_REJECT_DUPLICATES, &err);
  assert_non_null(body);
  json_t *problems = subscription_from_json(body, create, sub);
  json_decref(body);
  return problems;
}

/* Asserts text is refused with exactly one problem, on field. */
static void refused(const char *text, bool create, const char *field) {
  struct subscription sub = {0};
  json_t *problems = check(text, create, &sub);
  if (!problems || json_array_size(problems) != 1) {
    char *dump = problems ? json_dumps(problems, 0) : NULL;
    fail_msg("%s: expected one problem on %s, got %s", text, field, dump ? dump : "none");
  }
  json_t *p = json_array_get(problems, 0);
  assert_string_equal(json_string_value(json_object_get(p, "field")), field);
  const char *issue = json_string_value(json_object_get(p, "issue"));
  assert_non_null(issue);
  assert_true(strlen(issue) > 0);
  json_decref(problems);
}

static void test_create_defaults(void **state) {
  (void)state;
  struct subscription sub;
  memset(&sub, 0x5a, sizeof sub);
  assert_null(check("{\"url\":\"https://example.com/hook\"}", true, &sub));
  assert_string_equal(sub.url, "https://example.com/hook");
  assert_int_equal(sub.event_types, OUTBOX_TYPES_ALL);
  assert_string_equal(sub.account_id, "");
  assert_true(sub.enabled);
  assert_false(sub.paused);
  assert_int_equal(sub.max_per_second, 0);
  assert_string_equal(sub.disabled_reason, "");
  assert_string_equal(subscription_state(&sub), "active");
}

static void test_create_every_member(void **state) {
  (void)state;
  struct subscription sub = {0};
  assert_null(
      check("{\"url\":\"http://hooks.example.com:8080/a/b?x=1\","
            "\"eventTypes\":[\"conversation.deleted\",\"conversation.created\"],"
            "\"accountId\":\"acc-1\",\"enabled\":false,\"maxPerSecond\":100000}",
            true, &sub));
  assert_string_equal(sub.url, "http://hooks.example.com:8080/a/b?x=1");
  assert_int_equal(sub.event_types, (1u << OUTBOX_CREATED) | (1u << OUTBOX_DELETED));
  assert_string_equal(sub.account_id, "acc-1");
  assert_false(sub.enabled);
  assert_int_equal(sub.max_per_second, 100000);
  assert_string_equal(subscription_state(&sub), "disabled");
  /* null means "every account" and "no limit" */
  struct subscription s2 = {0};
  assert_null(
      check("{\"url\":\"https://[2001:db8::1]:443/\",\"accountId\":null,"
            "\"maxPerSecond\":null}",
            true, &s2));
  assert_string_equal(s2.account_id, "");
  assert_int_equal(s2.max_per_second, 0);
  /* the scheme is case-insensitive (RFC 3986); the URL is kept as given */
  struct subscription s3 = {0};
  assert_null(check("{\"url\":\"HTTPS://hooks.example.com/in\"}", true, &s3));
  assert_string_equal(s3.url, "HTTPS://hooks.example.com/in");
  struct subscription s4 = {0};
  assert_null(check("{\"url\":\"Http://hooks.example.com/in\"}", true, &s4));
}

static void test_create_refusals(void **state) {
  (void)state;
  refused("{}", true, "url");
  refused("{\"url\":null}", true, "url");
  refused("{\"url\":42}", true, "url");
  refused("{\"url\":\"ftp://example.com/\"}", true, "url");
  refused("{\"url\":\"/relative/path\"}", true, "url");
  refused("{\"url\":\"example.com/hook\"}", true, "url");
  refused("{\"url\":\"https://user:pw@example.com/\"}", true, "url");
  refused("{\"url\":\"https://user@example.com/\"}", true, "url");
  refused("{\"url\":\"https://example.com/#frag\"}", true, "url");
  refused("{\"url\":\"https:///path\"}", true, "url");
  refused("{\"url\":\"https://\"}", true, "url");
  refused("{\"url\":\"https://exa mple.com/\"}", true, "url");
  refused("{\"url\":\"https://example.com/\\u00e9\"}", true, "url");
  refused("{\"url\":\"https://example.com:0/\"}", true, "url");
  refused("{\"url\":\"https://example.com:65536/\"}", true, "url");
  refused("{\"url\":\"https://example.com:/\"}", true, "url");
  refused("{\"url\":\"https://example.com:80x/\"}", true, "url");
  refused("{\"url\":\"https://[::1/\"}", true, "url");
  refused("{\"url\":\"https://[]/\"}", true, "url");
  const char *ok = "\"url\":\"https://example.com/\"";
  char buf[256];
#define REFUSED(members, field)                        \
  do {                                                 \
    snprintf(buf, sizeof buf, "{%s,%s}", ok, members); \
    refused(buf, true, field);                         \
  } while (0)
  REFUSED("\"eventTypes\":[]", "eventTypes");
  REFUSED("\"eventTypes\":\"conversation.created\"", "eventTypes");
  REFUSED("\"eventTypes\":null", "eventTypes");
  REFUSED("\"eventTypes\":[\"conversation.created\",\"conversation.eaten\"]", "eventTypes[1]");
  REFUSED("\"eventTypes\":[\"conversation.created\",\"conversation.created\"]", "eventTypes[1]");
  REFUSED("\"eventTypes\":[1]", "eventTypes[0]");
  REFUSED("\"eventTypes\":[\"Conversation.Created\"]", "eventTypes[0]");
  REFUSED("\"accountId\":\"\"", "accountId");
  REFUSED("\"accountId\":7", "accountId");
  REFUSED("\"accountId\":\"a\\nb\"", "accountId");
  REFUSED("\"enabled\":\"true\"", "enabled");
  REFUSED("\"enabled\":null", "enabled");
  REFUSED("\"maxPerSecond\":0", "maxPerSecond");
  REFUSED("\"maxPerSecond\":-1", "maxPerSecond");
  REFUSED("\"maxPerSecond\":100001", "maxPerSecond");
  REFUSED("\"maxPerSecond\":9007199254740993", "maxPerSecond");
  REFUSED("\"maxPerSecond\":1.5", "maxPerSecond");
  REFUSED("\"maxPerSecond\":\"10\"", "maxPerSecond");
  REFUSED("\"maxPerSecond\":true", "maxPerSecond");
  REFUSED("\"secret\":\"whsec_x\"", "secret");
  REFUSED("\"id\":\"sub_x\"", "id");
  /* an account id as long as any stored one, and one byte more */
  char account[MODEL_ACCOUNT_ID_MAX + 2];
  memset(account, 'a', sizeof account - 1);
  account[sizeof account - 1] = '\0';
  char big[MODEL_ACCOUNT_ID_MAX + 128];
  snprintf(big, sizeof big, "{%s,\"accountId\":\"%s\"}", ok, account);
  refused(big, true, "accountId");
  account[MODEL_ACCOUNT_ID_MAX] = '\0';
  snprintf(big, sizeof big, "{%s,\"accountId\":\"%s\"}", ok, account);
  struct subscription sub = {0};
  assert_null(check(big, true, &sub));
  /* a non-object */
  json_t *arr = json_array();
  json_t *problems = subscription_from_json(arr, true, &sub);
  assert_non_null(problems);
  assert_int_equal(json_array_size(problems), 1);
  json_decref(problems);
  json_decref(arr);
}

static void test_every_problem_at_once(void **state) {
  (void)state;
  struct subscription sub = {0};
  json_t *problems = check(
      "{\"url\":\"ftp://x\",\"eventTypes\":[\"a\",\"b\"],\"enabled\":1,"
      "\"maxPerSecond\":0,\"colour\":\"red\"}",
      true, &sub);
  assert_non_null(problems);
  const char *want[] = {"url",     "eventTypes[0]", "eventTypes[1]",
                        "enabled", "maxPerSecond",  "colour"};
  assert_int_equal(json_array_size(problems), sizeof want / sizeof want[0]);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    bool found = false;
    for (size_t j = 0; j < json_array_size(problems); j++)
      found |= strcmp(json_string_value(json_object_get(json_array_get(problems, j), "field")),
                      want[i]) == 0;
    if (!found) fail_msg("no problem on %s", want[i]);
  }
  json_decref(problems);
}

/* Many problems: the first MODEL_PROBLEMS_MAX are listed, then one entry counts the rest. */
static void test_problems_are_capped(void **state) {
  (void)state;
  json_t *body = json_pack("{s:s}", "url", "https://example.com/");
  json_t *types = json_array();
  for (int i = 0; i < 1000; i++) json_array_append_new(types, json_string("conversation.created"));
  json_object_set_new(body, "eventTypes", types);
  for (int i = 0; i < 50; i++) {
    char name[16];
    snprintf(name, sizeof name, "m%d", i);
    json_object_set_new(body, name, json_true());
  }
  struct subscription sub = {0};
  for (int create = 0; create < 2; create++) {
    json_t *problems = subscription_from_json(body, create, &sub);
    assert_non_null(problems);
    assert_int_equal(json_array_size(problems), MODEL_PROBLEMS_MAX + 1);
    json_t *last = json_array_get(problems, MODEL_PROBLEMS_MAX);
    assert_string_equal(json_string_value(json_object_get(last, "field")), "");
    /* 999 repeated types and 50 unknown members, 100 of them listed */
    assert_string_equal(json_string_value(json_object_get(last, "issue")),
                        "949 more problems not listed");
    json_decref(problems);
  }
  json_decref(body);
}

static void test_url_length(void **state) {
  (void)state;
  char *url = malloc(OUTBOX_URL_MAX + 2);
  char *body = malloc(OUTBOX_URL_MAX + 64);
  strcpy(url, "https://example.com/");
  size_t n = strlen(url);
  memset(url + n, 'a', OUTBOX_URL_MAX - n);
  url[OUTBOX_URL_MAX] = '\0';
  snprintf(body, OUTBOX_URL_MAX + 64, "{\"url\":\"%s\"}", url);
  struct subscription sub = {0};
  assert_null(check(body, true, &sub));
  assert_int_equal(strlen(sub.url), OUTBOX_URL_MAX);
  url[OUTBOX_URL_MAX] = 'a';
  url[OUTBOX_URL_MAX + 1] = '\0';
  snprintf(body, OUTBOX_URL_MAX + 64, "{\"url\":\"%s\"}", url);
  refused(body, true, "url");
  free(url);
  free(body);
}

static struct subscription stored(void) {
  struct subscription s = {0};
  snprintf(s.id, sizeof s.id, "sub_0123456789abcdef01234567");
  snprintf(s.url, sizeof s.url, "https://example.com/hook");
  snprintf(s.secret, sizeof s.secret, "whsec_c2VjcmV0");
  s.event_types = 1u << OUTBOX_CREATED;
  snprintf(s.account_id, sizeof s.account_id, "acc-1");
  s.enabled = true;
  s.max_per_second = 5;
  s.created_us = 1767225600000000; /* 2026-01-01T00:00:00Z */
  s.updated_us = 1767225601500000;
  return s;
}

static void test_patch(void **state) {
  (void)state;
  struct subscription s = stored();
  /* nothing present: nothing changes */
  assert_null(check("{}", false, &s));
  struct subscription want = stored();
  assert_memory_equal(&s, &want, sizeof s);
  /* only what is present changes */
  assert_null(check("{\"maxPerSecond\":null,\"accountId\":null}", false, &s));
  assert_int_equal(s.max_per_second, 0);
  assert_string_equal(s.account_id, "");
  assert_string_equal(s.url, "https://example.com/hook");
  assert_int_equal(s.event_types, 1u << OUTBOX_CREATED);
  assert_true(s.enabled);
  /* url is not required, but checked when present */
  refused("{\"url\":\"gopher://x/\"}", false, "url");
  refused("{\"eventTypes\":[]}", false, "eventTypes");
  refused("{\"nope\":1}", false, "nope");
  /* a refused PATCH leaves the valid members' checks to the caller: never half a change
   * reaches the store (the endpoint answers 400) */
  /* enabling a paused or disabled ("gone") subscription makes it active again */
  s = stored();
  s.paused = true;
  assert_string_equal(subscription_state(&s), "paused");
  assert_null(check("{\"enabled\":true}", false, &s));
  assert_false(s.paused);
  assert_string_equal(subscription_state(&s), "active");
  s.enabled = false;
  snprintf(s.disabled_reason, sizeof s.disabled_reason, "gone");
  assert_string_equal(subscription_state(&s), "disabled");
  assert_null(check("{\"enabled\":true}", false, &s));
  assert_string_equal(s.disabled_reason, "");
  assert_string_equal(subscription_state(&s), "active");
  /* disabling by hand keeps it disabled whatever else held */
  s.paused = true;
  assert_null(check("{\"enabled\":false}", false, &s));
  assert_string_equal(subscription_state(&s), "disabled");
}

static void test_render(void **state) {
  (void)state;
  struct subscription s = stored();
  json_t *o = subscription_render(&s, false);
  assert_non_null(o);
  char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  assert_string_equal(text,
                      "{\"accountId\":\"acc-1\",\"createdAt\":\"2026-01-01T00:00:00Z\","
                      "\"disabledReason\":null,\"enabled\":true,"
                      "\"eventTypes\":[\"conversation.created\"],"
                      "\"id\":\"sub_0123456789abcdef01234567\",\"maxPerSecond\":5,"
                      "\"state\":\"active\",\"updatedAt\":\"2026-01-01T00:00:01.500000Z\","
                      "\"url\":\"https://example.com/hook\"}");
  free(text);
  json_decref(o);
  /* the secret only when asked for (the create answer) */
  o = subscription_render(&s, true);
  assert_string_equal(json_string_value(json_object_get(o, "secret")), "whsec_c2VjcmV0");
  json_decref(o);
  /* every type in the documented order; nulls for "every account", "no limit" */
  s.event_types = OUTBOX_TYPES_ALL;
  s.account_id[0] = '\0';
  s.max_per_second = 0;
  s.enabled = false;
  snprintf(s.disabled_reason, sizeof s.disabled_reason, "gone");
  o = subscription_render(&s, false);
  text = json_dumps(json_object_get(o, "eventTypes"), JSON_COMPACT);
  assert_string_equal(text,
                      "[\"conversation.created\",\"conversation.updated\","
                      "\"conversation.audio_added\",\"conversation.failed\","
                      "\"conversation.deleted\"]");
  free(text);
  assert_true(json_is_null(json_object_get(o, "accountId")));
  assert_true(json_is_null(json_object_get(o, "maxPerSecond")));
  assert_null(json_object_get(o, "secret"));
  assert_string_equal(json_string_value(json_object_get(o, "state")), "disabled");
  assert_string_equal(json_string_value(json_object_get(o, "disabledReason")), "gone");
  json_decref(o);
}

/* What a create accepts renders back to the same members. */
static void test_round_trip(void **state) {
  (void)state;
  struct subscription s = {0};
  const char *in =
      "{\"url\":\"https://example.com/x\",\"eventTypes\":[\"conversation.failed\","
      "\"conversation.audio_added\"],\"accountId\":\"a\",\"enabled\":true,"
      "\"maxPerSecond\":7}";
  assert_null(check(in, true, &s));
  json_t *o = subscription_render(&s, false);
  json_t *types = json_object_get(o, "eventTypes");
  assert_int_equal(json_array_size(types), 2);
  assert_string_equal(json_string_value(json_array_get(types, 0)), "conversation.audio_added");
  assert_string_equal(json_string_value(json_array_get(types, 1)), "conversation.failed");
  /* and the rendered members (those a PATCH takes) are accepted back unchanged */
  json_t *patch =
      json_pack("{s:O,s:O,s:O,s:O,s:O}", "url", json_object_get(o, "url"), "eventTypes", types,
                "accountId", json_object_get(o, "accountId"), "enabled",
                json_object_get(o, "enabled"), "maxPerSecond", json_object_get(o, "maxPerSecond"));
  struct subscription again = s;
  json_t *problems = subscription_from_json(patch, false, &again);
  assert_null(problems);
  assert_memory_equal(&again, &s, sizeof s);
  json_decref(patch);
  json_decref(o);
}

static void test_types_and_outcomes(void **state) {
  (void)state;
  for (int t = 1; t <= OUTBOX_TYPE_COUNT; t++) {
    assert_non_null(outbox_type_name(t));
    assert_int_equal(outbox_type_parse(outbox_type_name(t)), t);
    assert_true(OUTBOX_TYPES_ALL & (1u << t));
  }
  assert_null(outbox_type_name(0));
  assert_null(outbox_type_name(OUTBOX_TYPE_COUNT + 1));
  assert_int_equal(outbox_type_parse("conversation."), 0);
  assert_string_equal(delivery_outcome_name(DELIVERY_DELIVERED), "delivered");
  assert_string_equal(delivery_outcome_name(DELIVERY_RETRY), "retrying");
  assert_string_equal(delivery_outcome_name(DELIVERY_DISABLED), "disabled");
  /* the schedule used up: "failed", whether it dead-lettered or paused the subscription */
  assert_string_equal(delivery_outcome_name(DELIVERY_FAILED), "failed");
  assert_string_equal(delivery_outcome_name(DELIVERY_PAUSED), "failed");
  assert_null(delivery_outcome_name(0));
  assert_null(delivery_outcome_name(6));
}

static void test_event_envelope(void **state) {
  (void)state;
  size_t len = 0;
  const char *data = "{\"conversationId\":\"c1\"}";
  char *text = outbox_event_render(OUTBOX_CREATED, "evt_00112233445566778899aabbccddeeff",
                                   1767225600000001, data, strlen(data), &len);
  assert_non_null(text);
  assert_int_equal(len, strlen(text));
  json_error_t err;
  json_t *o = json_loads(text, 0, &err);
  assert_non_null(o);
  assert_string_equal(json_string_value(json_object_get(o, "type")), "conversation.created");
  assert_string_equal(json_string_value(json_object_get(o, "timestamp")),
                      "2026-01-01T00:00:00.000001Z");
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(o, "data"), "conversationId")), "c1");
  json_decref(o);
  free(text);
  char *del = outbox_deleted_data("c1", true, &len);
  assert_string_equal(del, "{\"conversationId\":\"c1\",\"reason\":\"expired\"}");
  free(del);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create_defaults),
      cmocka_unit_test(test_create_every_member),
      cmocka_unit_test(test_create_refusals),
      cmocka_unit_test(test_every_problem_at_once),
      cmocka_unit_test(test_problems_are_capped),
      cmocka_unit_test(test_url_length),
      cmocka_unit_test(test_patch),
      cmocka_unit_test(test_render),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_types_and_outcomes),
      cmocka_unit_test(test_event_envelope),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
