/* Unit tests for model/elevenlabs: each ElevenLabs fixture mapped field by field, what an event
 * may lack (email, account, message, times) accepted as unknown, and the few real errors (not
 * JSON, no conversation id, a turn without a role) reported with their path. Run from the repo
 * root (make unit), which is where the fixtures are found. */
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
#include "model/elevenlabs.h"
#include "model/stored.h"

#define FIXTURES "tests/fixtures/elevenlabs/"
#define CONV_ID "conv_01kr3p1mcesd0xs231rhcns0y0"
#define AGENT_ID "agent_01k9ag04z6g5cdabhxjbntyvj9"
#define START_S 1773151512LL /* metadata.start_time_unix_secs of the success fixture */

static const struct el_names DEFAULT_NAMES = {"user_email", "account_id"};

/* Owned by the running test, released by teardown even when an assertion fails. */
static struct el_event ev;
static json_t *problems;
static json_t *doc;     /* the fixture being modified */
static json_t *derived; /* ev.derived parsed */
static char *text;
static char message[512];

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s (run from the repository root)", path);
  char *buf = NULL;
  size_t cap = 0, n = 0;
  for (;;) {
    if (n == cap) {
      cap = cap ? cap * 2 : 4096;
      buf = realloc(buf, cap + 1);
      assert_non_null(buf);
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    if (got == 0) break;
    n += got;
  }
  fclose(f);
  buf[n] = '\0';
  *len = n;
  return buf;
}

static json_t *load_fixture(const char *name) {
  size_t len;
  char *raw = read_file(name, &len);
  json_t *j = json_loadb(raw, len, 0, NULL);
  free(raw);
  assert_non_null(j);
  return j;
}

static int setup(void **state) {
  (void)state;
  doc = load_fixture(FIXTURES "post_call_transcription_success.json");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  model_elevenlabs_free(&ev);
  json_decref(problems);
  problems = NULL;
  json_decref(doc);
  doc = NULL;
  json_decref(derived);
  derived = NULL;
  free(text);
  text = NULL;
  return 0;
}

static enum model_result parse_bytes_with(const char *body, size_t len,
                                          const struct el_names *names) {
  model_elevenlabs_free(&ev);
  json_decref(problems);
  problems = NULL;
  json_decref(derived);
  derived = NULL;
  memset(message, 0, sizeof message);
  enum model_result r =
      model_elevenlabs_parse(body, len, names, &ev, &problems, message, sizeof message);
  switch (r) {
    case MODEL_OK:
      assert_null(problems);
      assert_non_null(ev.root);
      if (ev.type == EL_POST_CALL_TRANSCRIPTION || ev.type == EL_CALL_INITIATION_FAILURE) {
        assert_non_null(ev.derived);
        assert_int_equal(strlen(ev.derived), ev.derived_len);
        json_error_t err;
        const size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
        derived = json_loadb(ev.derived, ev.derived_len, flags, &err);
        if (!derived && json_error_code(&err) == json_error_numeric_overflow)
          derived = json_loadb(ev.derived, ev.derived_len, flags | JSON_DECODE_INT_AS_REAL, &err);
        if (!derived) fail_msg("derived body is not JSON: %s: %s", err.text, ev.derived);
        /* The struct is over the same document as the text (unless integers had to be read
         * as reals). */
        if (json_error_code(&err) != json_error_numeric_overflow)
          assert_true(json_equal(derived, ev.conv.root));
      } else {
        assert_null(ev.derived);
        assert_null(ev.conv.root);
      }
      break;
    case MODEL_INVALID_JSON:
      assert_null(problems);
      assert_true(strlen(message) > 0);
      assert_true(utf8_valid(message, strlen(message)));
      break;
    case MODEL_INVALID:
      assert_non_null(problems);
      assert_true(json_array_size(problems) > 0);
      break;
    case MODEL_NO_MEMORY:
      fail_msg("out of memory");
  }
  return r;
}

static enum model_result parse_bytes(const char *body, size_t len) {
  return parse_bytes_with(body, len, &DEFAULT_NAMES);
}

static enum model_result parse_doc(void) {
  free(text);
  text = json_dumps(doc, JSON_COMPACT);
  assert_non_null(text);
  return parse_bytes(text, strlen(text));
}

static json_t *data(void) { return json_object_get(doc, "data"); }
static json_t *turn(size_t i) { return json_array_get(json_object_get(data(), "transcript"), i); }
static json_t *vars(void) {
  return json_object_get(json_object_get(data(), "conversation_initiation_client_data"),
                         "dynamic_variables");
}
static json_t *md(void) { return json_object_get(data(), "metadata"); }

static void set(json_t *obj, const char *key, json_t *v) {
  assert_int_equal(json_object_set_new(obj, key, v), 0);
}

static const char *dstr(const char *key) {
  return json_string_value(json_object_get(derived, key));
}
static json_t *dturn(size_t i) { return json_array_get(json_object_get(derived, "transcript"), i); }
static json_t *dmeta(const char *key) {
  return json_object_get(json_object_get(derived, "metadata"), key);
}

static void assert_one_problem(const char *field, const char *issue_part) {
  assert_int_equal(json_array_size(problems), 1);
  json_t *p = json_array_get(problems, 0);
  assert_string_equal(json_string_value(json_object_get(p, "field")), field);
  const char *issue = json_string_value(json_object_get(p, "issue"));
  if (!strstr(issue, issue_part)) fail_msg("issue '%s' lacks '%s'", issue, issue_part);
}

static void assert_time(json_t *v, int64_t us) {
  char buf[40];
  assert_true(time_format_us(us, false, buf, sizeof buf));
  assert_true(json_is_string(v));
  assert_string_equal(json_string_value(v), buf);
}

/* ---- the fixtures, field by field ---- */

static void transcription_fixture(void **state) {
  (void)state;
  size_t len;
  text = read_file(FIXTURES "post_call_transcription_success.json", &len);
  assert_int_equal(parse_bytes(text, len), MODEL_OK);
  assert_int_equal(ev.type, EL_POST_CALL_TRANSCRIPTION);
  assert_string_equal(ev.type_name, "post_call_transcription");
  assert_string_equal(ev.conversation_id, CONV_ID);

  const struct conversation_input *c = &ev.conv;
  assert_string_equal(c->conversation_id, CONV_ID);
  assert_string_equal(c->email_id, "maya.lindqvist@example.com");
  assert_string_equal(c->account_id, "acct_4821907");
  assert_string_equal(c->agent_id, AGENT_ID);
  assert_string_equal(c->status, "completed");
  assert_null(c->failure_reason);
  assert_true(c->has_start);
  assert_int_equal(c->start_us, START_S * 1000000);
  assert_int_equal(c->duration, 104);
  assert_int_equal(c->message_count, 12);

  /* The derived seed-shaped body. */
  assert_string_equal(dstr("emailId"), "maya.lindqvist@example.com");
  assert_string_equal(dstr("accountId"), "acct_4821907");
  assert_string_equal(dstr("conversationId"), CONV_ID);
  json_t *want_meta =
      json_pack("{s:s,s:i,s:i,s:s,s:s,s:s}", "agentId", AGENT_ID, "duration", 104, "messageCount",
                12, "platform", "elevenlabs", "source", "elevenlabs", "status", "done");
  assert_true(json_equal(json_object_get(derived, "metadata"), want_meta));
  json_decref(want_meta);
  assert_true(json_equal(json_object_get(derived, "summary"), json_object_get(data(), "analysis")));
  assert_int_equal(json_object_size(derived), 6);

  json_t *turns = json_object_get(data(), "transcript");
  assert_int_equal(json_array_size(json_object_get(derived, "transcript")), 12);
  for (size_t i = 0; i < 12; i++) {
    json_t *src = json_array_get(turns, i), *t = dturn(i);
    assert_int_equal(json_object_size(t), 4);
    assert_true(json_equal(json_object_get(t, "speaker"), json_object_get(src, "role")));
    assert_true(json_equal(json_object_get(t, "content"), json_object_get(src, "message")));
    int64_t off = json_integer_value(json_object_get(src, "time_in_call_secs"));
    assert_time(json_object_get(t, "timestamp"), (START_S + off) * 1000000);
    char id[96];
    snprintf(id, sizeof id, CONV_ID ":%zu", i);
    assert_string_equal(json_string_value(json_object_get(t, "messageId")), id);
  }
  /* Two spelled out, so the test does not only agree with itself. */
  assert_string_equal(json_string_value(json_object_get(dturn(0), "timestamp")),
                      "2026-03-10T14:05:12Z");
  assert_string_equal(json_string_value(json_object_get(dturn(11), "timestamp")),
                      "2026-03-10T14:06:49Z");
  assert_string_equal(json_string_value(json_object_get(dturn(11), "speaker")), "user");
  assert_string_equal(json_string_value(json_object_get(dturn(11), "content")),
                      "No, that's all. Bye.");
  assert_string_equal(json_string_value(json_object_get(dturn(11), "messageId")), CONV_ID ":11");

  /* The derived body has the seed's shape: the seed's parser reads the same conversation
   * from it, once given the one member ElevenLabs has no value for (metadata.userAgent). */
  json_t *seedish = json_deep_copy(derived);
  json_object_set_new(json_object_get(seedish, "metadata"), "userAgent", json_string("x"));
  char *seed_text = json_dumps(seedish, JSON_COMPACT);
  json_decref(seedish);
  assert_non_null(seed_text);
  struct conversation_input seed;
  json_t *seed_problems = NULL;
  char seed_message[256];
  enum model_result sr = model_conversation_parse(
      seed_text, strlen(seed_text), &seed, &seed_problems, seed_message, sizeof seed_message);
  free(seed_text);
  json_decref(seed_problems);
  assert_int_equal(sr, MODEL_OK);
  assert_string_equal(seed.conversation_id, c->conversation_id);
  assert_string_equal(seed.email_id, c->email_id);
  assert_string_equal(seed.account_id, c->account_id);
  assert_string_equal(seed.agent_id, c->agent_id);
  assert_int_equal(seed.start_us, c->start_us);
  assert_int_equal(seed.duration, c->duration);
  assert_int_equal(seed.message_count, c->message_count);
  model_conversation_free(&seed);
}

static void failure_fixture(void **state) {
  (void)state;
  size_t len;
  text = read_file(FIXTURES "call_initiation_failure_sip.json", &len);
  assert_int_equal(parse_bytes(text, len), MODEL_OK);
  assert_int_equal(ev.type, EL_CALL_INITIATION_FAILURE);
  assert_string_equal(ev.type_name, "call_initiation_failure");
  assert_string_equal(ev.conversation_id, "conv_01k2yqznddnvxy9k7hjpkxw6pv");
  const struct conversation_input *c = &ev.conv;
  assert_string_equal(c->conversation_id, "conv_01k2yqznddnvxy9k7hjpkxw6pv");
  assert_null(c->email_id);
  assert_null(c->account_id);
  assert_string_equal(c->agent_id, "agent_01kdd0j7a3vgsd4wch5ztxzv5k");
  assert_string_equal(c->status, "failed");
  assert_string_equal(c->failure_reason, "busy");
  assert_false(c->has_start);
  assert_int_equal(c->duration, 0);
  assert_int_equal(c->message_count, 0);
  json_t *want = json_pack("{s:n,s:n,s:s,s:[],s:{s:s,s:i,s:i,s:s,s:s,s:s},s:n}", "emailId",
                           "accountId", "conversationId", "conv_01k2yqznddnvxy9k7hjpkxw6pv",
                           "transcript", "metadata", "agentId", "agent_01kdd0j7a3vgsd4wch5ztxzv5k",
                           "duration", 0, "messageCount", 0, "platform", "elevenlabs", "source",
                           "elevenlabs", "failureReason", "busy", "summary");
  assert_non_null(want);
  if (!json_equal(derived, want)) fail_msg("derived: %s", ev.derived);
  json_decref(want);
}

static void audio_fixture(void **state) {
  (void)state;
  size_t len;
  text = read_file(FIXTURES "post_call_audio_small.json", &len);
  assert_int_equal(parse_bytes(text, len), MODEL_OK);
  assert_int_equal(ev.type, EL_POST_CALL_AUDIO);
  assert_string_equal(ev.type_name, "post_call_audio");
  assert_string_equal(ev.conversation_id, CONV_ID);
  assert_null(ev.derived);
  /* As the endpoint passes it: the envelope with the audio cut out. */
  static const char ENVELOPE[] =
      "{\"type\":\"post_call_audio\",\"event_timestamp\":1773151630,"
      "\"data\":{\"agent_id\":\"a\",\"conversation_id\":\"c1\","
      "\"full_audio\":\"\"}}";
  assert_int_equal(parse_bytes(ENVELOPE, strlen(ENVELOPE)), MODEL_OK);
  assert_int_equal(ev.type, EL_POST_CALL_AUDIO);
  assert_string_equal(ev.conversation_id, "c1");
}

/* ---- what an event may lack is unknown, not an error ---- */

static void missing_email_and_account_are_null(void **state) {
  (void)state;
  json_object_del(vars(), "user_email");
  json_object_del(vars(), "account_id");
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_null(ev.conv.email_id);
  assert_null(ev.conv.account_id);
  assert_true(json_is_null(json_object_get(derived, "emailId")));
  assert_true(json_is_null(json_object_get(derived, "accountId")));
  assert_string_equal(ev.conv.conversation_id, CONV_ID);

  /* No client data at all, or dynamic_variables of the wrong type. */
  json_object_del(data(), "conversation_initiation_client_data");
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_null(ev.conv.email_id);
  set(data(), "conversation_initiation_client_data", json_pack("{s:[]}", "dynamic_variables"));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_null(ev.conv.email_id);
  assert_null(ev.conv.account_id);
}

static void unusable_email_and_account_are_null(void **state) {
  (void)state;
  char long_email[MODEL_EMAIL_ID_MAX + 2];
  memset(long_email, 'e', sizeof long_email - 1);
  long_email[sizeof long_email - 1] = '\0';
  json_t *bad[] = {json_real(4.5),
                   json_true(),
                   json_null(),
                   json_string(""),
                   json_string(long_email),
                   json_stringn("a\0b", 3),
                   json_string("a\nb"),
                   json_pack("{}")};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    set(vars(), "user_email", json_incref(bad[i]));
    set(vars(), "account_id", bad[i]);
    assert_int_equal(parse_doc(), MODEL_OK);
    assert_null(ev.conv.email_id);
    assert_null(ev.conv.account_id);
    assert_int_equal(ev.conv.message_count, 12);
  }
  /* Exactly at the limit is kept. */
  long_email[MODEL_EMAIL_ID_MAX] = '\0';
  set(vars(), "user_email", json_string(long_email));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(ev.conv.email_id, long_email);
}

/* ElevenLabs dynamic variables may be numbers (an agent's account_id variable of type number
 * arrives as 12345): an integer is that id, as its decimal digits, never lost as null. */
static void integer_email_and_account_are_their_digits(void **state) {
  (void)state;
  set(vars(), "user_email", json_integer(-7));
  set(vars(), "account_id", json_integer(12345));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(ev.conv.email_id, "-7");
  assert_string_equal(ev.conv.account_id, "12345");
  assert_string_equal(dstr("emailId"), "-7");
  assert_string_equal(dstr("accountId"), "12345");
}

static void custom_variable_names(void **state) {
  (void)state;
  const struct el_names names = {"user_name", "plan"};
  free(text);
  text = json_dumps(doc, JSON_COMPACT);
  assert_int_equal(parse_bytes_with(text, strlen(text), &names), MODEL_OK);
  assert_string_equal(ev.conv.email_id, "Maya");
  assert_string_equal(ev.conv.account_id, "pro");
  assert_string_equal(dstr("emailId"), "Maya");
  assert_string_equal(dstr("accountId"), "pro");
  const struct el_names absent = {"email", "acct"};
  assert_int_equal(parse_bytes_with(text, strlen(text), &absent), MODEL_OK);
  assert_null(ev.conv.email_id);
  assert_null(ev.conv.account_id);
}

static void null_or_missing_message_is_empty(void **state) {
  (void)state;
  set(turn(1), "message", json_null());
  json_object_del(turn(2), "message");
  set(turn(3), "message", json_integer(7));
  set(turn(4), "message", json_stringn("a\0b", 3));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(json_string_value(json_object_get(dturn(1), "content")), "");
  assert_string_equal(json_string_value(json_object_get(dturn(2), "content")), "");
  assert_string_equal(json_string_value(json_object_get(dturn(3), "content")), "");
  assert_int_equal(json_string_length(json_object_get(dturn(4), "content")), 3);
  assert_int_equal(ev.conv.message_count, 12);
}

static void missing_agent_and_bad_agent_are_null(void **state) {
  (void)state;
  json_object_del(data(), "agent_id");
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_null(ev.conv.agent_id);
  assert_true(json_is_null(dmeta("agentId")));
  char long_id[MODEL_AGENT_ID_MAX + 2];
  memset(long_id, 'a', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
  set(data(), "agent_id", json_string(long_id));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_null(ev.conv.agent_id);
  set(data(), "agent_id", json_integer(1));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_null(ev.conv.agent_id);
}

/* Analytics: the outcome is data.analysis.call_successful when it is a usable string (else
 * unknown, never an error); the platform is the derived body's metadata.platform, "elevenlabs",
 * as GET shows it. */
static void outcome_and_platform(void **state) {
  (void)state;
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(ev.conv.outcome, "success");
  assert_string_equal(ev.conv.platform, "elevenlabs");
  json_t *analysis = json_object_get(data(), "analysis");
  set(analysis, "call_successful", json_string("failure"));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(ev.conv.outcome, "failure");
  json_t *unusable[] = {json_string(""), json_integer(1), json_null(), json_string("a\nb"),
                        json_true()};
  for (size_t i = 0; i < sizeof unusable / sizeof unusable[0]; i++) {
    set(analysis, "call_successful", unusable[i]);
    assert_int_equal(parse_doc(), MODEL_OK);
    assert_null(ev.conv.outcome);
    assert_string_equal(ev.conv.platform, "elevenlabs");
  }
  json_object_del(analysis, "call_successful");
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_null(ev.conv.outcome);
  set(data(), "analysis", json_string("not an object"));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_null(ev.conv.outcome);
}

static void missing_transcript_analysis_and_metadata(void **state) {
  (void)state;
  json_object_del(data(), "transcript");
  json_object_del(data(), "analysis");
  json_object_del(data(), "metadata");
  json_object_del(data(), "status");
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_int_equal(ev.conv.message_count, 0);
  assert_int_equal(ev.conv.duration, 0);
  assert_false(ev.conv.has_start);
  assert_string_equal(ev.conv.status, "completed");
  assert_true(json_is_null(json_object_get(derived, "summary")));
  assert_int_equal(json_array_size(json_object_get(derived, "transcript")), 0);
  assert_null(dmeta("status"));
  /* A transcript that is not an array has no turns. */
  set(data(), "transcript", json_null());
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_int_equal(ev.conv.message_count, 0);
  set(data(), "analysis", json_null());
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_true(json_is_null(json_object_get(derived, "summary")));
}

/* ---- times ---- */

static void start_falls_back_to_event_timestamp(void **state) {
  (void)state;
  json_object_del(md(), "start_time_unix_secs");
  assert_int_equal(parse_doc(), MODEL_OK);
  const int64_t ev_s = 1773151625; /* event_timestamp */
  assert_time(json_object_get(dturn(0), "timestamp"), ev_s * 1000000);
  assert_time(json_object_get(dturn(1), "timestamp"), (ev_s + 4) * 1000000);
  /* The start is then the earliest turn, as for the seed. */
  assert_true(ev.conv.has_start);
  assert_int_equal(ev.conv.start_us, ev_s * 1000000);

  /* Neither: turns have no timestamp (null) and the start is unknown. */
  json_object_del(doc, "event_timestamp");
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_false(ev.conv.has_start);
  for (size_t i = 0; i < 12; i++) assert_true(json_is_null(json_object_get(dturn(i), "timestamp")));
}

static void turn_times_odd_values(void **state) {
  (void)state;
  set(turn(0), "time_in_call_secs", json_real(4.5));
  set(turn(1), "time_in_call_secs", json_null());
  json_object_del(turn(2), "time_in_call_secs");
  set(turn(3), "time_in_call_secs", json_real(1e300));
  set(turn(4), "time_in_call_secs", json_string("19"));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(json_string_value(json_object_get(dturn(0), "timestamp")),
                      "2026-03-10T14:05:16.500000Z");
  for (size_t i = 1; i <= 4; i++) assert_true(json_is_null(json_object_get(dturn(i), "timestamp")));
  /* The start is the call's start, not the earliest turn. */
  assert_int_equal(ev.conv.start_us, START_S * 1000000);

  /* A start that is no representable instant is unknown. */
  static const double bad_starts[] = {-1e18, 1e18, 253402300800.0};
  for (size_t i = 0; i < sizeof bad_starts / sizeof bad_starts[0]; i++) {
    set(md(), "start_time_unix_secs", json_real(bad_starts[i]));
    assert_int_equal(parse_doc(), MODEL_OK);
  }
  set(md(), "start_time_unix_secs", json_integer(INT64_MAX));
  json_object_del(doc, "event_timestamp");
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_false(ev.conv.has_start);
  /* A start whose end (start + duration) would pass year 9999 is unknown: startTime and endTime
   * are both null, never one without the other. */
  set(md(), "start_time_unix_secs", json_integer(253402300799LL));
  set(md(), "call_duration_secs", json_integer(60));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_false(ev.conv.has_start);
  /* So is a start before year 1 whose end would be after it. */
  set(md(), "start_time_unix_secs", json_integer(-62135597000LL));
  set(md(), "call_duration_secs", json_integer(1000));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_false(ev.conv.has_start);
  /* Just below the end of year 9999, a turn past it has no timestamp. */
  set(md(), "start_time_unix_secs", json_integer(253402300799LL));
  set(md(), "call_duration_secs", json_integer(0));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_true(ev.conv.has_start);
  assert_int_equal(ev.conv.start_us, 253402300799LL * 1000000);
  assert_true(json_is_null(json_object_get(dturn(5), "timestamp")));
}

static void duration_odd_values(void **state) {
  (void)state;
  struct {
    json_t *v;
    int64_t want;
  } cases[] = {
      {json_integer(-5), 0},
      {json_real(104.7), 104},
      {json_real(-0.5), 0},
      {json_real(1e30), MODEL_COUNT_MAX},
      {json_integer(INT64_MAX), MODEL_COUNT_MAX},
      {json_integer(MODEL_COUNT_MAX), MODEL_COUNT_MAX},
      {json_string("104"), 0},
      {json_null(), 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    set(md(), "call_duration_secs", cases[i].v);
    assert_int_equal(parse_doc(), MODEL_OK);
    assert_int_equal(ev.conv.duration, cases[i].want);
    assert_int_equal(json_integer_value(dmeta("duration")), cases[i].want);
  }
}

/* An integer beyond 64 bits anywhere is valid JSON: the event is still mapped. */
static void huge_integers(void **state) {
  (void)state;
  free(text);
  text = json_dumps(doc, JSON_COMPACT);
  char *p = strstr(text, "\"call_duration_secs\":104");
  assert_non_null(p);
  size_t head = (size_t)(p - text) + strlen("\"call_duration_secs\":");
  const char *huge = "123456789012345678901234567890";
  size_t len = strlen(text) - 3 + strlen(huge);
  char *body = malloc(len + 1);
  assert_non_null(body);
  memcpy(body, text, head);
  memcpy(body + head, huge, strlen(huge));
  memcpy(body + head + strlen(huge), p + strlen("\"call_duration_secs\":104"),
         strlen(p + strlen("\"call_duration_secs\":104")) + 1);
  enum model_result r = parse_bytes(body, len);
  free(body);
  assert_int_equal(r, MODEL_OK);
  assert_int_equal(ev.conv.duration, MODEL_COUNT_MAX);
  assert_int_equal(ev.conv.start_us, START_S * 1000000);
  assert_string_equal(json_string_value(json_object_get(dturn(1), "timestamp")),
                      "2026-03-10T14:05:16Z");
}

/* ---- status ---- */

static void status_mapping(void **state) {
  (void)state;
  struct {
    json_t *v;
    const char *want;
  } cases[] = {
      {json_string("done"), "completed"},
      {json_string("failed"), "failed"},
      {json_string("processing"), "processing"},
      {json_string("in-progress"), "in-progress"},
      {json_string(""), "completed"},
      {json_string("a_status_that_is_too_long"), "completed"},
      {json_string("bad\tstatus"), "completed"},
      {json_stringn("do\0ne", 5), "completed"},
      {json_integer(1), "completed"},
      {json_null(), "completed"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    set(data(), "status", cases[i].v);
    assert_int_equal(parse_doc(), MODEL_OK);
    assert_string_equal(ev.conv.status, cases[i].want);
    assert_true(strlen(ev.conv.status) < MODEL_STATUS_MAX);
  }
}

static void failure_reason_is_bounded(void **state) {
  (void)state;
  json_decref(doc);
  doc = load_fixture(FIXTURES "call_initiation_failure_sip.json");
  /* 200 two-byte characters (400 bytes): cut at a character boundary. */
  char reason[401];
  for (size_t i = 0; i < 200; i++) memcpy(reason + 2 * i, "\xc3\xa9", 2);
  reason[400] = '\0';
  set(data(), "failure_reason", json_string(reason));
  assert_int_equal(parse_doc(), MODEL_OK);
  size_t n = strlen(ev.conv.failure_reason);
  assert_true(n <= MODEL_FAILURE_REASON_MAX && n >= MODEL_FAILURE_REASON_MAX - 1);
  assert_true(utf8_valid(ev.conv.failure_reason, n));
  assert_int_equal(n % 2, 0);

  set(data(), "failure_reason", json_stringn("no\0answer\n", 10));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(ev.conv.failure_reason, "no answer ");

  static json_t *(*const none[])(void) = {json_null, json_true};
  for (size_t i = 0; i < 2; i++) {
    set(data(), "failure_reason", none[i]());
    assert_int_equal(parse_doc(), MODEL_OK);
    assert_null(ev.conv.failure_reason);
    assert_null(dmeta("failureReason"));
    assert_string_equal(ev.conv.status, "failed");
  }
  json_object_del(data(), "failure_reason");
  set(data(), "transcript", json_pack("[{s:s}]", "role", "user")); /* ignored on a failure */
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_int_equal(ev.conv.message_count, 0);
  assert_string_equal(ev.conv.status, "failed");
}

/* ---- unknown fields and types ---- */

static void unknown_fields_everywhere_are_ignored(void **state) {
  (void)state;
  assert_int_equal(parse_doc(), MODEL_OK);
  json_t *before = json_deep_copy(derived);
  json_t *x = json_pack("{s:[i,{s:n}],s:s}", "nested", 1, "deep", "note", "new field");
  set(doc, "x_new", json_incref(x));
  set(data(), "x_new", json_incref(x));
  set(md(), "x_new", json_incref(x));
  set(vars(), "x_new", json_incref(x));
  set(json_object_get(data(), "conversation_initiation_client_data"), "x_new", json_incref(x));
  for (size_t i = 0; i < 12; i++) set(turn(i), "x_new", json_incref(x));
  set(turn(0), "tool_calls", json_pack("[{s:s,s:{}}]", "tool_name", "lookup", "params"));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_true(json_equal(derived, before));
  /* Unknown fields inside analysis are part of the summary, kept. */
  set(json_object_get(data(), "analysis"), "x_new", x);
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_non_null(json_object_get(json_object_get(derived, "summary"), "x_new"));
  json_decref(before);
}

/* The summary is data.analysis's bytes as received (re-serialising would change numbers). */
static void summary_is_kept_as_received(void **state) {
  (void)state;
  static const char BODY[] =
      "{\"type\":\"post_call_transcription\",\"data\":{\"conversation_id\":\"c\","
      "\"analysis\": {\"score\": 0.1, \"big\": 123456789012345678901234567890,"
      " \"s\": \"\\u00e9\"},\"transcript\":[]}}";
  assert_int_equal(parse_bytes(BODY, strlen(BODY)), MODEL_OK);
  assert_non_null(strstr(ev.derived,
                         "\"summary\":{\"score\": 0.1, \"big\": "
                         "123456789012345678901234567890, \"s\": \"\\u00e9\"}}"));
}

static void unknown_or_missing_type_is_other(void **state) {
  (void)state;
  set(doc, "type", json_string("post_call_something_new"));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_int_equal(ev.type, EL_OTHER);
  assert_string_equal(ev.type_name, "post_call_something_new");
  assert_string_equal(ev.conversation_id, CONV_ID);
  assert_null(ev.derived);

  json_object_del(doc, "type");
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_int_equal(ev.type, EL_OTHER);
  assert_string_equal(ev.type_name, "");

  /* No usable conversation id is fine for an unknown type. */
  set(doc, "type", json_integer(3));
  set(data(), "conversation_id", json_integer(3));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_int_equal(ev.type, EL_OTHER);
  assert_string_equal(ev.type_name, "");
  assert_null(ev.conversation_id);
  json_object_del(doc, "data");
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_null(ev.conversation_id);

  /* A known name is matched exactly: case, NUL and prefixes make it another type. */
  static const char *const near[] = {"Post_call_transcription", "post_call_transcription ",
                                     "post_call_transcriptio"};
  for (size_t i = 0; i < 3; i++) {
    set(doc, "type", json_string(near[i]));
    assert_int_equal(parse_doc(), MODEL_OK);
    assert_int_equal(ev.type, EL_OTHER);
  }
  set(doc, "type", json_stringn("post_call_audio\0x", 17));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_int_equal(ev.type, EL_OTHER);
  assert_string_equal(ev.type_name, "post_call_audio?x");

  /* A long type name is cut at a character boundary; control characters do not survive. */
  char longname[200];
  for (size_t i = 0; i < 99; i++) memcpy(longname + 2 * i, "\xc3\xa9", 2);
  longname[198] = '\0';
  set(doc, "type", json_string(longname));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_true(strlen(ev.type_name) <= EL_TYPE_MAX);
  assert_true(utf8_valid(ev.type_name, strlen(ev.type_name)));
  set(doc, "type", json_string("a\nb"));
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(ev.type_name, "a?b");
}

/* ---- the real errors ---- */

static void not_json(void **state) {
  (void)state;
  static const char *const bodies[] = {
      "", "{", "not json", "{\"type\":}", "{\"a\":1}x", "{\"type\":\"x\",\"type\":\"y\"}"};
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
    assert_int_equal(parse_bytes(bodies[i], strlen(bodies[i])), MODEL_INVALID_JSON);
  static const char NUL[] = "{\"type\":\"x\",\"data\":{}}\0";
  assert_int_equal(parse_bytes(NUL, sizeof NUL - 1), MODEL_INVALID_JSON);
  assert_non_null(strstr(message, "NUL"));
  /* Invalid UTF-8 in the body: the message quoting it stays valid UTF-8. */
  static const char BAD_UTF8[] = "{\"type\":\"\xc3\"}";
  assert_int_equal(parse_bytes(BAD_UTF8, strlen(BAD_UTF8)), MODEL_INVALID_JSON);
}

static void not_an_object(void **state) {
  (void)state;
  static const char *const bodies[] = {"[]", "1", "\"post_call_audio\"", "null"};
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    assert_int_equal(parse_bytes(bodies[i], strlen(bodies[i])), MODEL_INVALID);
    assert_one_problem("", "JSON object");
  }
}

static void conversation_id_required_for_known_types(void **state) {
  (void)state;
  static const char *const types[] = {"post_call_transcription", "post_call_audio",
                                      "call_initiation_failure"};
  char long_id[MODEL_CONVERSATION_ID_MAX + 2];
  memset(long_id, 'c', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
  for (size_t t = 0; t < 3; t++) {
    set(doc, "type", json_string(types[t]));
    json_object_del(data(), "conversation_id");
    assert_int_equal(parse_doc(), MODEL_INVALID);
    assert_one_problem("data.conversation_id", "is required");
    set(data(), "conversation_id", json_null());
    assert_int_equal(parse_doc(), MODEL_INVALID);
    assert_one_problem("data.conversation_id", "is required");
    set(data(), "conversation_id", json_integer(12));
    assert_int_equal(parse_doc(), MODEL_INVALID);
    assert_one_problem("data.conversation_id", "must be a string");
    set(data(), "conversation_id", json_string(""));
    assert_int_equal(parse_doc(), MODEL_INVALID);
    assert_one_problem("data.conversation_id", "must not be empty");
    set(data(), "conversation_id", json_string(long_id));
    assert_int_equal(parse_doc(), MODEL_INVALID);
    assert_one_problem("data.conversation_id", "at most 256 bytes");
    set(data(), "conversation_id", json_stringn("c\0d", 3));
    assert_int_equal(parse_doc(), MODEL_INVALID);
    assert_one_problem("data.conversation_id", "control characters");
    set(data(), "conversation_id", json_string("c\x7f"));
    assert_int_equal(parse_doc(), MODEL_INVALID);
    assert_one_problem("data.conversation_id", "control characters");
    /* At the limit is fine. */
    long_id[MODEL_CONVERSATION_ID_MAX] = '\0';
    set(data(), "conversation_id", json_string(long_id));
    assert_int_equal(parse_doc(), MODEL_OK);
    assert_string_equal(ev.conversation_id, long_id);
    long_id[MODEL_CONVERSATION_ID_MAX] = 'c';
    set(data(), "conversation_id", json_string(CONV_ID));
  }
  json_object_del(doc, "data");
  assert_int_equal(parse_doc(), MODEL_INVALID);
  assert_one_problem("data.conversation_id", "is required");
  set(doc, "data", json_string("x"));
  assert_int_equal(parse_doc(), MODEL_INVALID);
  assert_one_problem("data.conversation_id", "is required");
}

static void turn_without_role(void **state) {
  (void)state;
  json_object_del(turn(3), "role");
  assert_int_equal(parse_doc(), MODEL_INVALID);
  assert_one_problem("data.transcript[3].role", "is required");
  assert_string_equal(message, "Request data is invalid: 1 problem");
  set(turn(3), "role", json_null());
  assert_int_equal(parse_doc(), MODEL_INVALID);
  assert_one_problem("data.transcript[3].role", "is required");
  set(turn(3), "role", json_integer(1));
  assert_int_equal(parse_doc(), MODEL_INVALID);
  assert_one_problem("data.transcript[3].role", "must be a string");
  set(turn(3), "role", json_string("tool")); /* a role we do not know is kept as the speaker */
  assert_int_equal(parse_doc(), MODEL_OK);
  assert_string_equal(json_string_value(json_object_get(dturn(3), "speaker")), "tool");

  /* Every problem at once, with the conversation id's. */
  json_object_del(turn(0), "role");
  json_array_set_new(json_object_get(data(), "transcript"), 11, json_string("x"));
  json_object_del(data(), "conversation_id");
  assert_int_equal(parse_doc(), MODEL_INVALID);
  assert_int_equal(json_array_size(problems), 3);
  assert_string_equal(json_string_value(json_object_get(json_array_get(problems, 0), "field")),
                      "data.conversation_id");
  assert_string_equal(json_string_value(json_object_get(json_array_get(problems, 1), "field")),
                      "data.transcript[0].role");
  assert_string_equal(json_string_value(json_object_get(json_array_get(problems, 2), "field")),
                      "data.transcript[11]");
}

static void many_problems_are_capped(void **state) {
  (void)state;
  json_t *turns = json_array();
  for (int i = 0; i < 150; i++) json_array_append_new(turns, json_object());
  set(data(), "transcript", turns);
  assert_int_equal(parse_doc(), MODEL_INVALID);
  assert_int_equal(json_array_size(problems), MODEL_PROBLEMS_MAX + 1);
  assert_string_equal(message, "Request data is invalid: 150 problems");
}

int main(void) {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
  const struct CMUnitTest tests[] = {
      T(transcription_fixture),
      T(failure_fixture),
      T(audio_fixture),
      T(missing_email_and_account_are_null),
      T(unusable_email_and_account_are_null),
      T(integer_email_and_account_are_their_digits),
      T(custom_variable_names),
      T(null_or_missing_message_is_empty),
      T(missing_agent_and_bad_agent_are_null),
      T(missing_transcript_analysis_and_metadata),
      T(outcome_and_platform),
      T(start_falls_back_to_event_timestamp),
      T(turn_times_odd_values),
      T(duration_odd_values),
      T(huge_integers),
      T(status_mapping),
      T(failure_reason_is_bounded),
      T(unknown_fields_everywhere_are_ignored),
      T(summary_is_kept_as_received),
      T(unknown_or_missing_type_is_other),
      T(not_json),
      T(not_an_object),
      T(conversation_id_required_for_known_types),
      T(turn_without_role),
      T(many_problems_are_capped),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
