/* Unit tests for model/conversation: every validation rule of the webhook body, good and bad,
 * with the exact field path of each reported problem. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "core/utf8.h"
#include "model/conversation.h"

/* The request body of the seed's POST /api/v1/webhook/conversation example, verbatim. */
static const char SEED[] =
    "{\n"
    "  \"emailId\": \"user@example.com\",\n"
    "  \"accountId\": \"acc123\",\n"
    "  \"conversationId\": \"conv_abc123\",\n"
    "  \"transcript\": [\n"
    "    {\n"
    "      \"timestamp\": \"2024-01-15T10:30:00Z\",\n"
    "      \"speaker\": \"user\",\n"
    "      \"content\": \"Hello, I need help\",\n"
    "      \"messageId\": \"msg_123\"\n"
    "    }\n"
    "  ],\n"
    "  \"metadata\": {\n"
    "    \"sessionId\": \"sess_456\",\n"
    "    \"agentId\": \"agent_01jxn7fwb2eyq8p6k4m3en4xtm\",\n"
    "    \"duration\": 300,\n"
    "    \"messageCount\": 10,\n"
    "    \"platform\": \"web\",\n"
    "    \"userAgent\": \"Mozilla/5.0...\"\n"
    "  }\n"
    "}\n";

#define T_20240115_1030_US (1705314600LL * 1000000)

/* Owned by the running test, released by teardown even when an assertion fails. */
static struct conversation_input in;
static json_t *problems;
static json_t *doc;
static char *text;
static char message[512];

static int setup(void **state) {
  (void)state;
  doc = json_loads(SEED, 0, NULL);
  assert_non_null(doc);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  model_conversation_free(&in);
  json_decref(problems);
  problems = NULL;
  json_decref(doc);
  doc = NULL;
  free(text);
  text = NULL;
  return 0;
}

static enum model_result parse_bytes(const char *body, size_t len) {
  model_conversation_free(&in);
  json_decref(problems);
  problems = NULL;
  memset(message, 0, sizeof message);
  enum model_result r =
      model_conversation_parse(body, len, &in, &problems, message, sizeof message);
  switch (r) {
    case MODEL_OK:
      assert_null(problems);
      assert_non_null(in.root);
      break;
    case MODEL_INVALID_JSON:
      assert_null(problems);
      assert_null(in.root);
      assert_true(strlen(message) > 0);
      break;
    case MODEL_INVALID:
      assert_non_null(problems);
      assert_true(json_is_array(problems));
      assert_null(in.root);
      assert_true(strlen(message) > 0);
      break;
    case MODEL_NO_MEMORY:
      fail_msg("out of memory");
  }
  return r;
}

static enum model_result parse_text(const char *body) { return parse_bytes(body, strlen(body)); }

/* Parses the (mutated) document doc. */
static enum model_result parse_doc(void) {
  free(text);
  text = json_dumps(doc, JSON_COMPACT);
  assert_non_null(text);
  return parse_bytes(text, strlen(text));
}

static json_t *member(json_t *obj, const char *key) {
  json_t *v = json_object_get(obj, key);
  assert_non_null(v);
  return v;
}
static json_t *metadata(void) { return member(doc, "metadata"); }
static json_t *transcript(void) { return member(doc, "transcript"); }
static json_t *message0(void) { return json_array_get(transcript(), 0); }

static json_t *seed_message(const char *ts, const char *speaker, const char *id) {
  return json_pack("{s:s,s:s,s:s,s:s}", "timestamp", ts, "speaker", speaker, "content", "hi",
                   "messageId", id);
}

static void dump_problems(void) {
  char *s = json_dumps(problems, JSON_INDENT(2));
  print_error("problems: %s\n", s ? s : "(none)");
  free(s);
}

/* Asserts that the problems' fields are exactly fields[0..n), in order, each with an issue. */
static void assert_fields(const char *const *fields, size_t n) {
  if (!problems) fail_msg("expected MODEL_INVALID with %zu problem(s), got none", n);
  if (json_array_size(problems) != n) {
    dump_problems();
    fail_msg("expected %zu problem(s), got %zu", n, json_array_size(problems));
  }
  for (size_t i = 0; i < n; i++) {
    json_t *p = json_array_get(problems, i);
    const char *field = json_string_value(json_object_get(p, "field"));
    const char *issue = json_string_value(json_object_get(p, "issue"));
    if (!field || !issue || strlen(issue) == 0 || strcmp(field, fields[i]) != 0) {
      dump_problems();
      fail_msg("problem %zu: expected field \"%s\", got \"%s\"", i, fields[i],
               field ? field : "(missing)");
    }
  }
}

#define ASSERT_FIELDS(...)                         \
  do {                                             \
    static const char *const f_[] = {__VA_ARGS__}; \
    assert_fields(f_, sizeof f_ / sizeof f_[0]);   \
  } while (0)

/* The mutated doc is invalid with exactly one problem at field, whose issue contains word. */
static void assert_one_problem(const char *field, const char *word) {
  enum model_result r = parse_doc();
  if (r != MODEL_INVALID) fail_msg("expected MODEL_INVALID at %s, got %d for %s", field, r, text);
  assert_fields(&field, 1);
  const char *issue = json_string_value(json_object_get(json_array_get(problems, 0), "issue"));
  if (word && !strstr(issue, word)) fail_msg("issue for %s lacks \"%s\": %s", field, word, issue);
}

/* The mutated doc is refused: as invalid JSON, or as invalid data at exactly field. Used for
 * bodies holding "\u0000", which the parser may refuse outright (see
 * test_content_with_escaped_nul). */
static void assert_doc_refused_at(const char *field) {
  enum model_result r = parse_doc();
  if (r == MODEL_OK) fail_msg("expected %s to be refused in %s", field, text);
  if (r == MODEL_INVALID) assert_fields(&field, 1);
}

static void assert_doc_ok(void) {
  if (parse_doc() != MODEL_OK) {
    dump_problems();
    fail_msg("expected MODEL_OK for %s (%s)", text, message);
  }
}

/* Replaces obj[key] with v (NULL: removes it) on a fresh seed document. */
static void reset_doc(void) {
  json_decref(doc);
  doc = json_loads(SEED, 0, NULL);
  assert_non_null(doc);
}

static void set(json_t *obj, const char *key, json_t *v) {
  if (v)
    assert_int_equal(json_object_set_new(obj, key, v), 0);
  else
    assert_int_equal(json_object_del(obj, key), 0);
}

/* ---- the seed ---- */

static void test_seed_example(void **state) {
  (void)state;
  assert_int_equal(parse_text(SEED), MODEL_OK);
  assert_string_equal(in.email_id, "user@example.com");
  assert_string_equal(in.account_id, "acc123");
  assert_string_equal(in.conversation_id, "conv_abc123");
  assert_true(in.has_start);
  assert_int_equal(in.start_us, T_20240115_1030_US);
  assert_int_equal(in.duration, 300);
  assert_int_equal(in.message_count, 10);
  /* the strings live in root, which keeps everything received */
  assert_ptr_equal(in.email_id, json_string_value(json_object_get(in.root, "emailId")));
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(in.root, "metadata"), "userAgent")),
      "Mozilla/5.0...");
}

static void test_unknown_fields_kept(void **state) {
  (void)state;
  set(doc, "extra", json_pack("{s:[i,s]}", "nested", 1, "x"));
  set(metadata(), "customField", json_string("kept"));
  set(message0(), "sentiment", json_real(0.5));
  set(doc, "summary", json_pack("{s:s,s:[]}", "text", "fine", "topics"));
  assert_doc_ok();
  assert_non_null(json_object_get(in.root, "extra"));
  assert_string_equal(
      json_string_value(json_object_get(json_object_get(in.root, "metadata"), "customField")),
      "kept");
}

/* ---- required members ---- */

static void test_required_top_level(void **state) {
  (void)state;
  static const char *const keys[] = {"emailId", "accountId", "conversationId", "transcript",
                                     "metadata"};
  for (size_t i = 0; i < 5; i++) {
    reset_doc();
    set(doc, keys[i], NULL);
    assert_one_problem(keys[i], "required");
    reset_doc();
    set(doc, keys[i], json_null());
    assert_one_problem(keys[i], "required");
  }
}

static void test_required_message_fields(void **state) {
  (void)state;
  static const char *const keys[] = {"timestamp", "speaker", "content", "messageId"};
  for (size_t i = 0; i < 4; i++) {
    char path[64];
    snprintf(path, sizeof path, "transcript[0].%s", keys[i]);
    reset_doc();
    set(message0(), keys[i], NULL);
    assert_one_problem(path, "required");
    reset_doc();
    set(message0(), keys[i], json_null());
    assert_one_problem(path, "required");
  }
}

static void test_required_metadata_fields(void **state) {
  (void)state;
  static const char *const keys[] = {"agentId", "duration", "messageCount", "platform",
                                     "userAgent"};
  for (size_t i = 0; i < 5; i++) {
    char path[64];
    snprintf(path, sizeof path, "metadata.%s", keys[i]);
    reset_doc();
    set(metadata(), keys[i], NULL);
    assert_one_problem(path, "required");
    reset_doc();
    set(metadata(), keys[i], json_null());
    assert_one_problem(path, "required");
  }
}

/* ---- types ---- */

static json_t *wrong_value(size_t k) {
  switch (k) {
    case 0:
      return json_integer(1);
    case 1:
      return json_real(1.5);
    case 2:
      return json_true();
    case 3:
      return json_false();
    case 4:
      return json_array();
    default:
      return json_object();
  }
}

static void test_wrong_types_strings(void **state) {
  (void)state;
  static const char *const top[] = {"emailId", "accountId", "conversationId"};
  static const char *const msg[] = {"timestamp", "speaker", "content", "messageId"};
  static const char *const md[] = {"agentId", "platform", "userAgent"};
  for (size_t k = 0; k < 6; k++) {
    char path[64];
    for (size_t i = 0; i < 3; i++) {
      reset_doc();
      set(doc, top[i], wrong_value(k));
      assert_one_problem(top[i], "string");
    }
    for (size_t i = 0; i < 4; i++) {
      reset_doc();
      set(message0(), msg[i], wrong_value(k));
      snprintf(path, sizeof path, "transcript[0].%s", msg[i]);
      assert_one_problem(path, "string");
    }
    for (size_t i = 0; i < 3; i++) {
      reset_doc();
      set(metadata(), md[i], wrong_value(k));
      snprintf(path, sizeof path, "metadata.%s", md[i]);
      assert_one_problem(path, "string");
    }
  }
}

static void test_wrong_types_containers(void **state) {
  (void)state;
  set(doc, "transcript", json_object());
  assert_one_problem("transcript", "array");
  reset_doc();
  set(doc, "transcript", json_string("[]"));
  assert_one_problem("transcript", "array");
  reset_doc();
  set(doc, "metadata", json_array());
  assert_one_problem("metadata", "object");
  reset_doc();
  set(doc, "metadata", json_string("{}"));
  assert_one_problem("metadata", "object");
  reset_doc();
  assert_int_equal(json_array_append_new(transcript(), json_string("a message")), 0);
  assert_one_problem("transcript[1]", "object");
  reset_doc();
  assert_int_equal(json_array_append_new(transcript(), json_null()), 0);
  assert_one_problem("transcript[1]", "object");
  reset_doc();
  assert_int_equal(json_array_append_new(transcript(), json_array()), 0);
  assert_one_problem("transcript[1]", "object");
}

/* ---- identifiers ---- */

static json_t *repeat(const char *unit, size_t times, const char *tail) {
  size_t ul = strlen(unit), tl = strlen(tail);
  char *s = malloc(ul * times + tl + 1);
  assert_non_null(s);
  for (size_t i = 0; i < times; i++) memcpy(s + i * ul, unit, ul);
  memcpy(s + ul * times, tail, tl + 1);
  json_t *v = json_string(s);
  free(s);
  assert_non_null(v);
  return v;
}

static void test_identifier_lengths_in_bytes(void **state) {
  (void)state;
  /* emailId: 320 bytes is fine, 321 is not, whatever the characters */
  set(doc, "emailId", repeat("a", 320, ""));
  assert_doc_ok();
  assert_int_equal(strlen(in.email_id), 320);
  set(doc, "emailId", repeat("a", 321, ""));
  assert_one_problem("emailId", "320");
  set(doc, "emailId", repeat("\xc3\xa9", 160, "")); /* é: 160 characters, 320 bytes */
  assert_doc_ok();
  set(doc, "emailId", repeat("\xc3\xa9", 160, "a")); /* 161 characters, 321 bytes */
  assert_one_problem("emailId", "320");
  set(doc, "emailId", repeat("\xc3\xa9", 161, "")); /* 161 characters, 322 bytes */
  assert_one_problem("emailId", "320");
  set(doc, "emailId", repeat("\xf0\x9f\x98\x80", 80, "")); /* 80 emoji, 320 bytes */
  assert_doc_ok();
  set(doc, "emailId", repeat("\xf0\x9f\x98\x80", 80, "a"));
  assert_one_problem("emailId", "320");
  reset_doc();

  static const char *const ids[] = {"accountId", "conversationId"};
  for (size_t i = 0; i < 2; i++) {
    reset_doc();
    set(doc, ids[i], repeat("x", 256, ""));
    assert_doc_ok();
    set(doc, ids[i], repeat("x", 257, ""));
    assert_one_problem(ids[i], "256");
    set(doc, ids[i], repeat("\xe2\x82\xac", 85, "x")); /* €: 85 * 3 + 1 = 256 bytes */
    assert_doc_ok();
    set(doc, ids[i], repeat("\xe2\x82\xac", 85, "xy")); /* 257 bytes */
    assert_one_problem(ids[i], "256");
    set(doc, ids[i], repeat("x", 100000, ""));
    assert_one_problem(ids[i], "256");
  }
}

static void test_identifiers_empty(void **state) {
  (void)state;
  static const char *const ids[] = {"emailId", "accountId", "conversationId"};
  for (size_t i = 0; i < 3; i++) {
    reset_doc();
    set(doc, ids[i], json_string(""));
    assert_one_problem(ids[i], "empty");
  }
  reset_doc();
  set(doc, "emailId", json_string(""));
  set(doc, "accountId", json_string(""));
  set(doc, "conversationId", json_string(""));
  assert_int_equal(parse_doc(), MODEL_INVALID);
  ASSERT_FIELDS("emailId", "accountId", "conversationId");
}

static void test_identifiers_control_characters(void **state) {
  (void)state;
  /* JSON escapes, so each body is exactly what a client would send */
  static const char *const bad[] = {
      "a\\u0001b",  "tab\\there", "new\\nline", "cr\\r",     "\\u001f",
      "del\\u007f", "c1\\u0080",  "nel\\u0085", "c1\\u009f", "esc\\u001b[0m",
  };
  static const char *const ids[] = {"emailId", "accountId", "conversationId"};
  for (size_t i = 0; i < 3; i++) {
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
      reset_doc();
      char value[64];
      snprintf(value, sizeof value, "\"%s\"", bad[k]);
      json_t *v = json_loads(value, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
      assert_non_null(v);
      set(doc, ids[i], v);
      assert_one_problem(ids[i], "control");
    }
    /* NUL is a control character too (and must not truncate the id) */
    reset_doc();
    set(doc, ids[i], json_stringn("\0", 1));
    assert_doc_refused_at(ids[i]);
    reset_doc();
    set(doc, ids[i], json_stringn("id\0suffix", 9));
    assert_doc_refused_at(ids[i]);
  }
}

static void test_identifiers_printable_accepted(void **state) {
  (void)state;
  static const char *const good[] = {
      "with spaces",
      " leading and trailing ",
      "a#b?c&d=e/f%20g",
      "\xf0\x9f\x98\x80 emoji",
      "\xe4\xbc\x9a\xe8\xa9\xb1",  /* CJK */
      "nbsp\xc2\xa0here",          /* U+00A0 is not a control character */
      "\xc2\xbfqu\xc3\xa9?",       /* U+00BF, U+00E9 */
      "line\xe2\x80\xa8separator", /* U+2028 is a separator, not a control */
      "quote\"back\\slash",
      "<script>alert(1)</script>",
      "..",
      "x",
  };
  static const char *const ids[] = {"emailId", "accountId", "conversationId"};
  for (size_t i = 0; i < 3; i++) {
    for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
      reset_doc();
      set(doc, ids[i], json_string(good[k]));
      assert_doc_ok();
    }
  }
  reset_doc();
  set(doc, "conversationId", json_string("a#b?c&d"));
  assert_doc_ok();
  assert_string_equal(in.conversation_id, "a#b?c&d");
}

static void test_is_printable(void **state) {
  (void)state;
  assert_true(model_is_printable("", 0));
  assert_true(model_is_printable("abc ~", 5));
  assert_true(model_is_printable("\xc2\xa0", 2));
  assert_true(model_is_printable("\xc3\x85", 2));     /* Å: 0x85 as a continuation byte is fine */
  assert_true(model_is_printable("\xe2\x80\x85", 3)); /* U+2005 */
  assert_false(model_is_printable("\x01", 1));
  assert_false(model_is_printable("a\x1f", 2));
  assert_false(model_is_printable("\x7f", 1));
  assert_false(model_is_printable("\xc2\x80", 2));
  assert_false(model_is_printable("\xc2\x9f", 2));
  assert_false(model_is_printable("ab\0cd", 5));
  /* only len bytes are looked at */
  assert_true(model_is_printable("ab\x01", 2));
}

/* ---- messages ---- */

static void test_speaker(void **state) {
  (void)state;
  set(message0(), "speaker", json_string("agent"));
  assert_doc_ok();
  set(message0(), "speaker", json_string("user"));
  assert_doc_ok();
  static const char *const bad[] = {"User", "AGENT", "system", "", "user ", " agent", "bot"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    set(message0(), "speaker", json_string(bad[k]));
    assert_one_problem("transcript[0].speaker", "agent");
  }
}

/* A speaker is exactly "user" or "agent": an embedded NUL does not make "user\0x" a user. */
static void test_speaker_with_embedded_nul(void **state) {
  (void)state;
  set(message0(), "speaker", json_stringn("user\0x", 6));
  assert_doc_refused_at("transcript[0].speaker");
  set(message0(), "speaker", json_stringn("agent\0", 6));
  assert_doc_refused_at("transcript[0].speaker");
}

static void test_timestamps(void **state) {
  (void)state;
  static const char *const good[] = {"2024-01-15T10:30:00Z", "2024-01-15T10:30:00.123456Z",
                                     "2024-01-15t10:30:00z", "2024-01-15T12:30:00+02:00",
                                     "2024-02-29T00:00:00Z", "2016-12-31T23:59:60Z"};
  for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
    set(message0(), "timestamp", json_string(good[k]));
    assert_doc_ok();
  }
  static const char *const bad[] = {"",
                                    "yesterday",
                                    "2024-01-15",
                                    "2024-01-15 10:30:00Z",
                                    "2024-01-15T10:30:00",
                                    "2023-02-29T00:00:00Z",
                                    "2024-13-01T00:00:00Z",
                                    "2024-01-15T10:30:00Z ",
                                    "1705314600"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    set(message0(), "timestamp", json_string(bad[k]));
    assert_one_problem("transcript[0].timestamp", "RFC 3339");
  }
  set(message0(), "timestamp", json_stringn("2024-01-15T10:30:00Z\0", 21));
  assert_doc_refused_at("transcript[0].timestamp");
  set(message0(), "timestamp", json_integer(1705314600));
  assert_one_problem("transcript[0].timestamp", "string");
}

/* Defect 9: a timestamp outside years 0001..9999 in UTC, or a leap second anywhere but
 * 23:59:60 UTC on a month's last day, is refused; so is a duration putting endTime past
 * 9999, so startTime and endTime are always both rendered or both null. */
static void test_timestamp_edges(void **state) {
  (void)state;
  static const char *const bad[] = {"2024-01-15T10:30:60Z", "0000-01-01T00:30:00+01:00",
                                    "0000-06-01T00:00:00Z", "9999-12-31T23:30:00-01:00"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    set(message0(), "timestamp", json_string(bad[k]));
    assert_one_problem("transcript[0].timestamp", "RFC 3339");
  }
  set(message0(), "timestamp", json_string("9999-12-31T23:55:00Z"));
  set(metadata(), "duration", json_integer(300));
  assert_one_problem("metadata.duration", "9999");
  set(metadata(), "duration", json_integer(299));
  assert_doc_ok();
  assert_int_equal(in.start_us + in.duration * 1000000, TIME_MAX_US - 999999);
  set(message0(), "timestamp", json_string("9999-01-01T00:00:00Z"));
  set(metadata(), "duration", json_integer(2147483647));
  assert_one_problem("metadata.duration", "9999");
  /* with no timestamp there is no endTime to overflow */
  set(doc, "transcript", json_array());
  assert_doc_ok();
}

static void test_content_and_message_id(void **state) {
  (void)state;
  /* content is free text: empty and control characters are kept */
  set(message0(), "content", json_string(""));
  assert_doc_ok();
  set(message0(), "content", json_string("line\nbreak\ttab\x01\x7f \xc2\x85 \xf0\x9f\x98\x80"));
  assert_doc_ok();
  set(message0(), "messageId", json_string(""));
  assert_doc_ok();
  set(message0(), "messageId", json_string("id with \x01 control"));
  assert_doc_ok();
}

/* "\u0000" is valid JSON (RFC 8259 section 7) and content is free text: a transcript that
 * quotes a NUL is valid data, not "not valid JSON". */
static void test_content_with_escaped_nul(void **state) {
  (void)state;
  assert_int_equal(parse_text("{\"emailId\":\"e\",\"accountId\":\"a\",\"conversationId\":\"c\","
                              "\"transcript\":[{\"timestamp\":\"2024-01-15T10:30:00Z\","
                              "\"speaker\":\"user\",\"content\":\"nul:\\u0000.\","
                              "\"messageId\":\"m\"}],\"metadata\":{\"agentId\":\"x\","
                              "\"duration\":1,\"messageCount\":1,\"platform\":\"web\","
                              "\"userAgent\":\"ua\"}}"),
                   MODEL_OK);
}

static void test_message_metadata(void **state) {
  (void)state;
  set(message0(), "metadata", json_null());
  assert_doc_ok();
  set(message0(), "metadata", json_object());
  assert_doc_ok();
  set(message0(), "metadata", json_pack("{s:{s:[i]}}", "deep", "x", 1));
  assert_doc_ok();
  set(message0(), "metadata", json_array());
  assert_one_problem("transcript[0].metadata", "object");
  set(message0(), "metadata", json_string("{}"));
  assert_one_problem("transcript[0].metadata", "object");
  set(message0(), "metadata", json_integer(0));
  assert_one_problem("transcript[0].metadata", "object");
  set(message0(), "metadata", json_false());
  assert_one_problem("transcript[0].metadata", "object");
}

/* ---- transcript ---- */

static void test_transcript_empty(void **state) {
  (void)state;
  set(doc, "transcript", json_array());
  assert_doc_ok();
  assert_false(in.has_start);
  assert_int_equal(in.duration, 300);
}

static void fill_transcript(size_t n) {
  json_t *t = json_array();
  for (size_t i = 0; i < n; i++)
    assert_int_equal(json_array_append_new(t, seed_message("2024-01-15T10:30:00Z", "user", "m")),
                     0);
  set(doc, "transcript", t);
}

static void test_transcript_size_limit(void **state) {
  (void)state;
  fill_transcript(MODEL_TRANSCRIPT_MAX);
  assert_doc_ok();
  fill_transcript(MODEL_TRANSCRIPT_MAX + 1);
  assert_one_problem("transcript", "10000");
}

static void test_earliest_timestamp(void **state) {
  (void)state;
  json_t *t = json_array();
  json_array_append_new(t, seed_message("2024-01-15T10:30:00Z", "user", "a"));
  json_array_append_new(t, seed_message("2024-01-15T12:00:00+02:00", "agent", "b")); /* 10:00Z */
  json_array_append_new(t, seed_message("2024-01-15T10:15:00Z", "user", "c"));
  json_array_append_new(t, seed_message("2024-01-15T05:10:00.5-05:00", "agent", "d")); /* 10:10Z */
  set(doc, "transcript", t);
  assert_doc_ok();
  assert_true(in.has_start);
  assert_int_equal(in.start_us, 1705312800LL * 1000000); /* 2024-01-15T10:00:00Z */

  /* the earliest may be last, and may differ only in the fraction */
  t = json_array();
  json_array_append_new(t, seed_message("2024-01-15T10:30:00.000002Z", "user", "a"));
  json_array_append_new(t, seed_message("2024-01-15T10:30:00.000001Z", "user", "b"));
  set(doc, "transcript", t);
  assert_doc_ok();
  assert_int_equal(in.start_us, T_20240115_1030_US + 1);

  /* before the epoch */
  t = json_array();
  json_array_append_new(t, seed_message("1969-12-31T23:59:59Z", "user", "a"));
  set(doc, "transcript", t);
  assert_doc_ok();
  assert_true(in.has_start);
  assert_int_equal(in.start_us, -1000000);
}

/* ---- metadata ---- */

static void test_counts(void **state) {
  (void)state;
  static const char *const keys[] = {"duration", "messageCount"};
  for (size_t i = 0; i < 2; i++) {
    char path[64];
    snprintf(path, sizeof path, "metadata.%s", keys[i]);
    reset_doc();
    set(metadata(), keys[i], json_integer(0));
    assert_doc_ok();
    assert_int_equal(i == 0 ? in.duration : in.message_count, 0);
    set(metadata(), keys[i], json_integer(2147483647));
    assert_doc_ok();
    assert_int_equal(i == 0 ? in.duration : in.message_count, 2147483647);

    set(metadata(), keys[i], json_integer(-1));
    assert_one_problem(path, "integer");
    set(metadata(), keys[i], json_integer(2147483648LL));
    assert_one_problem(path, "integer");
    set(metadata(), keys[i], json_integer(INT64_MIN));
    assert_one_problem(path, "integer");
    set(metadata(), keys[i], json_real(1.5));
    assert_one_problem(path, "integer");
    set(metadata(), keys[i], json_string("3"));
    assert_one_problem(path, "integer");
    set(metadata(), keys[i], json_true());
    assert_one_problem(path, "integer");
    set(metadata(), keys[i], json_array());
    assert_one_problem(path, "integer");
  }
  /* as text, too: exponents and fractions are not integers */
  static const char *const bad_text[] = {"1e2", "1.5", "-1", "2147483648", "\"300\""};
  for (size_t k = 0; k < sizeof bad_text / sizeof bad_text[0]; k++) {
    char body[600];
    snprintf(body, sizeof body,
             "{\"emailId\":\"e\",\"accountId\":\"a\",\"conversationId\":\"c\",\"transcript\":[],"
             "\"metadata\":{\"agentId\":\"x\",\"duration\":%s,\"messageCount\":1,"
             "\"platform\":\"web\",\"userAgent\":\"ua\"}}",
             bad_text[k]);
    assert_int_equal(parse_text(body), MODEL_INVALID);
    ASSERT_FIELDS("metadata.duration");
  }
}

static void test_session_id(void **state) {
  (void)state;
  set(metadata(), "sessionId", json_null());
  assert_doc_ok();
  set(metadata(), "sessionId", NULL);
  assert_doc_ok();
  set(metadata(), "sessionId", json_string(""));
  assert_doc_ok();
  set(metadata(), "sessionId", json_integer(456));
  assert_one_problem("metadata.sessionId", "string");
  set(metadata(), "sessionId", json_object());
  assert_one_problem("metadata.sessionId", "string");
  set(metadata(), "sessionId", json_true());
  assert_one_problem("metadata.sessionId", "string");
}

static void test_summary(void **state) {
  (void)state;
  assert_doc_ok(); /* absent */
  set(doc, "summary", json_null());
  assert_doc_ok();
  set(doc, "summary", json_object());
  assert_doc_ok();
  set(doc, "summary", json_pack("{s:s,s:i}", "text", "resolved", "score", 5));
  assert_doc_ok();
  set(doc, "summary", json_string("a summary"));
  assert_one_problem("summary", "object");
  set(doc, "summary", json_array());
  assert_one_problem("summary", "object");
  set(doc, "summary", json_integer(1));
  assert_one_problem("summary", "object");
}

/* ---- many problems ---- */

static void test_all_problems_listed_with_paths(void **state) {
  (void)state;
  set(doc, "emailId", json_integer(5));
  set(doc, "accountId", NULL);
  json_array_append_new(transcript(), seed_message("2024-01-15T10:31:00Z", "robot", "m2"));
  json_array_append_new(transcript(), json_pack("{s:s,s:s,s:i}", "timestamp", "nope", "speaker",
                                                "agent", "content", 7));
  set(metadata(), "duration", json_integer(-5));
  set(metadata(), "sessionId", json_integer(1));
  set(metadata(), "platform", NULL);
  set(doc, "summary", json_string("s"));
  assert_int_equal(parse_doc(), MODEL_INVALID);
  ASSERT_FIELDS("emailId", "accountId", "transcript[1].speaker", "transcript[2].timestamp",
                "transcript[2].content", "transcript[2].messageId", "metadata.sessionId",
                "metadata.duration", "metadata.platform", "summary");
  assert_non_null(strstr(message, "10"));
}

static void test_problems_capped(void **state) {
  (void)state;
  /* 150 messages with 2 problems each, plus 1 at the top: 301 problems */
  json_t *t = json_array();
  for (int i = 0; i < 150; i++)
    json_array_append_new(t, json_pack("{s:s,s:s,s:s}", "timestamp", "2024-01-15T10:30:00Z",
                                       "speaker", "nobody", "messageId", "m"));
  set(doc, "transcript", t);
  set(doc, "conversationId", json_string(""));
  assert_int_equal(parse_doc(), MODEL_INVALID);
  assert_int_equal(json_array_size(problems), MODEL_PROBLEMS_MAX + 1);
  json_t *p = json_array_get(problems, 0);
  assert_string_equal(json_string_value(json_object_get(p, "field")), "conversationId");
  p = json_array_get(problems, 1);
  assert_string_equal(json_string_value(json_object_get(p, "field")), "transcript[0].speaker");
  p = json_array_get(problems, 2);
  assert_string_equal(json_string_value(json_object_get(p, "field")), "transcript[0].content");
  p = json_array_get(problems, MODEL_PROBLEMS_MAX - 1);
  assert_string_equal(json_string_value(json_object_get(p, "field")), "transcript[49].speaker");
  p = json_array_get(problems, MODEL_PROBLEMS_MAX);
  assert_string_equal(json_string_value(json_object_get(p, "field")), "");
  const char *issue = json_string_value(json_object_get(p, "issue"));
  assert_non_null(issue);
  assert_non_null(strstr(issue, "201 more problems"));
  assert_non_null(strstr(message, "301 problems"));

  /* exactly the maximum: no extra entry */
  reset_doc();
  t = json_array();
  for (int i = 0; i < 50; i++)
    json_array_append_new(t, json_pack("{s:s,s:s,s:s}", "timestamp", "2024-01-15T10:30:00Z",
                                       "speaker", "nobody", "messageId", "m"));
  set(doc, "transcript", t);
  assert_int_equal(parse_doc(), MODEL_INVALID);
  assert_int_equal(json_array_size(problems), MODEL_PROBLEMS_MAX);
  p = json_array_get(problems, MODEL_PROBLEMS_MAX - 1);
  assert_string_equal(json_string_value(json_object_get(p, "field")), "transcript[49].content");

  /* one more than the maximum: "1 more" */
  set(doc, "emailId", json_string(""));
  assert_int_equal(parse_doc(), MODEL_INVALID);
  assert_int_equal(json_array_size(problems), MODEL_PROBLEMS_MAX + 1);
  p = json_array_get(problems, MODEL_PROBLEMS_MAX);
  assert_string_equal(json_string_value(json_object_get(p, "field")), "");
  assert_non_null(strstr(json_string_value(json_object_get(p, "issue")), "1 more problem"));
}

/* ---- not JSON, or not an object ---- */

static void test_invalid_json(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "   ",
      "{",
      "{\"emailId\":}",
      "{'emailId':'x'}",
      "{\"a\":1,}",
      "nul",
      "{\"a\":\"\\x\"}",
      "{\"a\":\"\\ud800\"}", /* lone surrogate */
      "{\"a\":1} x",         /* trailing garbage */
      "{\"a\":1}{\"a\":1}",  /* two documents */
      "{\"a\":1}\n]",
      "{\"a\":1,\"a\":1}", /* duplicate keys */
      "{\"a\":{\"b\":1,\"b\":2}}",
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    if (parse_text(bad[k]) != MODEL_INVALID_JSON)
      fail_msg("expected MODEL_INVALID_JSON for %s", bad[k]);
  }
  /* invalid UTF-8 inside a string */
  assert_int_equal(parse_text("{\"emailId\":\"\xff\"}"), MODEL_INVALID_JSON);
  assert_int_equal(parse_text("{\"emailId\":\"\xc3\"}"), MODEL_INVALID_JSON);
  /* a NUL byte in the body is not the end of it */
  const char nul[] = "{\"a\":1}\0";
  assert_int_equal(parse_bytes(nul, sizeof nul - 1), MODEL_INVALID_JSON);

  /* the seed with one duplicated member, and with trailing junk */
  static const char dup[] =
      "{\"emailId\":\"a\",\"emailId\":\"b\",\"accountId\":\"acc\",\"conversationId\":\"c\","
      "\"transcript\":[],\"metadata\":{\"agentId\":\"x\",\"duration\":1,\"messageCount\":1,"
      "\"platform\":\"web\",\"userAgent\":\"ua\"}}";
  assert_int_equal(parse_text(dup), MODEL_INVALID_JSON);
  char seed_junk[sizeof SEED + 8];
  snprintf(seed_junk, sizeof seed_junk, "%sjunk", SEED);
  assert_int_equal(parse_text(seed_junk), MODEL_INVALID_JSON);
  /* trailing whitespace is fine */
  char seed_ws[sizeof SEED + 8];
  snprintf(seed_ws, sizeof seed_ws, "%s \r\n\t", SEED);
  assert_int_equal(parse_text(seed_ws), MODEL_OK);
  /* and the length given is what counts, not the NUL */
  assert_int_equal(parse_bytes(SEED, strlen(SEED) - 3), MODEL_INVALID_JSON);
}

/* Defect 11: jansson's error text quotes the bytes around the error and may cut a character
 * in half; the message must stay valid UTF-8, or the error answer cannot be encoded (and the
 * client got a 500 "Out of memory" instead of 400 INVALID_JSON). */
static void test_invalid_json_message_is_utf8(void **state) {
  (void)state;
  static const char *const bad[] = {
      "{\"a\":\"\\u0\xc3\xa9\"}",                /* short \u escape, then é */
      "{\"a\":\"\\\xc3\xa9\"}",                  /* backslash, then é */
      "{\"a\":\"\\u12\xe2\x82\xac\"}",           /* short \u, then a 3-byte € */
      "{\"a\":\"\\\xf0\x9f\x98\x80\"}",          /* backslash, then a 4-byte emoji */
      "{\"a\":\"x\xff\"}",                       /* invalid byte */
      "{\"\xc3\xa9\xc3\xa9\xc3\xa9\":\xc3\xa9}", /* bare é as a value */
  };
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    if (parse_text(bad[k]) != MODEL_INVALID_JSON)
      fail_msg("expected MODEL_INVALID_JSON for %s", bad[k]);
    if (!utf8_valid(message, strlen(message))) fail_msg("message not UTF-8: %s", message);
    assert_non_null(strstr(message, "not valid JSON"));
    /* what the server does with it: our error envelope */
    json_t *env = json_pack("{s:s}", "message", message);
    assert_non_null(env);
    json_decref(env);
  }
}

/* Found by fuzzing: jansson 2.14 skips a raw NUL byte right after a literal or a number, so
 * '{"a":null<NUL>,...}' decoded as if the NUL were not there; the stored body was then not
 * JSON, and the byte-exact members of include=transcript could not be found in it. */
static void test_raw_nul_after_value_is_invalid_json(void **state) {
  (void)state;
  static const char *const after[] = {"\"sessionId\": \"sess_456\"", "\"duration\": 300",
                                      "\"speaker\": \"user\""};
  for (size_t k = 0; k < sizeof after / sizeof after[0]; k++) {
    char body[sizeof SEED + 1];
    const char *at = strstr(SEED, after[k]);
    assert_non_null(at);
    size_t cut = (size_t)(at - SEED) + strlen(after[k]);
    memcpy(body, SEED, cut);
    body[cut] = '\0';
    memcpy(body + cut + 1, SEED + cut, sizeof SEED - cut);
    if (parse_bytes(body, sizeof SEED) != MODEL_INVALID_JSON)
      fail_msg("raw NUL after %s accepted", after[k]);
  }
  static const char nul_in_array[] = "{\"x\":[1,null\0,2]}";
  assert_int_equal(parse_bytes(nul_in_array, sizeof nul_in_array - 1), MODEL_INVALID_JSON);
}

static void test_not_an_object(void **state) {
  (void)state;
  static const char *const bodies[] = {"[]",  "[{\"emailId\":\"x\"}]", "\"text\"", "42", "null",
                                       "true"};
  for (size_t k = 0; k < sizeof bodies / sizeof bodies[0]; k++) {
    if (parse_text(bodies[k]) != MODEL_INVALID)
      fail_msg("expected MODEL_INVALID for %s", bodies[k]);
    ASSERT_FIELDS("");
  }
  /* an empty object lists every required member */
  assert_int_equal(parse_text("{}"), MODEL_INVALID);
  ASSERT_FIELDS("emailId", "accountId", "conversationId", "transcript", "metadata");
  assert_non_null(strstr(message, "5 problems"));
}

/* A seed webhook is "completed"; its metadata.agentId is kept when the store can hold it, and
 * anything else (too long, control characters, empty) is unknown, never a new error. */
static void test_status_and_agent_id(void **state) {
  (void)state;
  assert_int_equal(parse_text(SEED), MODEL_OK);
  assert_string_equal(in.status, "completed");
  assert_string_equal(in.agent_id, "agent_01jxn7fwb2eyq8p6k4m3en4xtm");
  assert_null(in.failure_reason);
  char long_id[258];
  memset(long_id, 'a', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
  json_t *unusable[] = {json_string(""), json_string(long_id), json_string("a\tb"),
                        json_stringn("a\0b", 3)};
  for (size_t i = 0; i < sizeof unusable / sizeof unusable[0]; i++) {
    json_object_set_new(metadata(), "agentId", unusable[i]);
    assert_int_equal(parse_doc(), MODEL_OK);
    assert_null(in.agent_id);
    assert_string_equal(in.status, "completed");
  }
  long_id[256] = '\0'; /* MODEL_AGENT_ID_MAX */
  json_object_set_new(metadata(), "agentId", json_string(long_id));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(in.agent_id, long_id);
}

/* Analytics: metadata.platform is the platform when it is a usable id (else unknown, never a new
 * error); a seed webhook has no outcome. */
static void test_platform_and_outcome(void **state) {
  (void)state;
  assert_int_equal(parse_text(SEED), MODEL_OK);
  assert_string_equal(in.platform, "web");
  assert_null(in.outcome);
  char long_id[258];
  memset(long_id, 'p', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
  json_t *unusable[] = {json_string(""), json_string(long_id), json_string("a\tb"),
                        json_stringn("a\0b", 3)};
  for (size_t i = 0; i < sizeof unusable / sizeof unusable[0]; i++) {
    json_object_set_new(metadata(), "platform", unusable[i]);
    assert_int_equal(parse_doc(), MODEL_OK);
    assert_null(in.platform);
    assert_null(in.outcome);
  }
  json_object_set_new(metadata(), "platform", json_string("phone"));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(in.platform, "phone");
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(test_status_and_agent_id),
      T(test_platform_and_outcome),
      T(test_seed_example),
      T(test_unknown_fields_kept),
      T(test_required_top_level),
      T(test_required_message_fields),
      T(test_required_metadata_fields),
      T(test_wrong_types_strings),
      T(test_wrong_types_containers),
      T(test_identifier_lengths_in_bytes),
      T(test_identifiers_empty),
      T(test_identifiers_control_characters),
      T(test_identifiers_printable_accepted),
      T(test_is_printable),
      T(test_speaker),
      T(test_speaker_with_embedded_nul),
      T(test_timestamps),
      T(test_timestamp_edges),
      T(test_content_and_message_id),
      T(test_content_with_escaped_nul),
      T(test_message_metadata),
      T(test_transcript_empty),
      T(test_transcript_size_limit),
      T(test_earliest_timestamp),
      T(test_counts),
      T(test_session_id),
      T(test_summary),
      T(test_all_problems_listed_with_paths),
      T(test_problems_capped),
      T(test_invalid_json),
      T(test_invalid_json_message_is_utf8),
      T(test_raw_nul_after_value_is_invalid_json),
      T(test_not_an_object),
  };
#undef T
  return cmocka_run_group_tests(tests, NULL, NULL);
}
