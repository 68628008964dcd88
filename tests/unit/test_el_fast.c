/* Differential test of the ElevenLabs event's fast path (model/el_fast.c) against the jansson
 * path (model_elevenlabs_parse): on a corpus of valid and invalid events (the fixtures, the fuzz
 * corpus, the benchmark's ~20 KB event, events with escapes, reals, integer variables, odd
 * values, and mutations of them: truncations, byte flips, deletions, duplicate keys, numbers,
 * deep nesting), whenever the scanner accepts, the jansson path accepts with the same type, ids,
 * struct values and the derived body byte for byte; whenever the jansson path refuses, the
 * scanner did not accept. Ordinary events must take the fast path. Run from the repository
 * root (make unit), where the fixtures and fuzz/corpus/elevenlabs/ are found. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/el_fast.h"
#include "model/elevenlabs.h"

#define FIXTURES "tests/fixtures/elevenlabs/"
#define CORPUS "fuzz/corpus/elevenlabs/"

static const struct el_names NAMES = {"user_email", "account_id"};
static const struct el_names SAME_NAMES = {"user_email", "user_email"};

/* Everything the mapping reads, in forms a real event may send: escapes in messages, roles,
 * status-free reals, integer variables, nested unknown members, tool calls with JSON in
 * strings, an emoji as a surrogate pair. */
static const char RICH[] =
    "{\"type\":\"post_call_transcription\",\"event_timestamp\":1773151625.25,\"data\":{"
    "\"agent_id\":\"agent_1\",\"conversation_id\":\"conv_r/1\",\"status\":\"processing\","
    "\"transcript\":[{\"role\":\"agent\",\"message\":\"Hi \\\"Maya\\\"\\n\\u00e9\\u2019 "
    "\\ud83d\\ude00 \\/ \\u0000\\u001f\\t\",\"time_in_call_secs\":0.5,\"tool_calls\":[{"
    "\"params_as_json\":\"{\\\"a\\\":[1,2]}\"}]},{\"role\":\"us\\u0065r\",\"message\":null,"
    "\"time_in_call_secs\":-3},{\"role\":\"\",\"message\":\"x\xc3\xa9\xe2\x98\x83\","
    "\"time_in_call_secs\":\"7\"},{\"role\":\"agent\",\"message\":\"late\","
    "\"time_in_call_secs\":1e3}],"
    "\"metadata\":{\"call_duration_secs\":12.9,\"cost\":0.0012,\"nested\":{\"a\":[true,false]}},"
    "\"analysis\":{\"call_successful\":\"success\",\"score\":12345678901234567,\"x\":0.1},"
    "\"conversation_initiation_client_data\":{\"dynamic_variables\":{\"user_email\":\"m@x.io\","
    "\"account_id\":-42,\"system__time\":\"now\"}}}}";

static size_t accepted_count, declined_count;

static void assert_same_text(const char *a, const char *b) {
  if (!a || !b) {
    assert_ptr_equal(a, b);
    return;
  }
  assert_string_equal(a, b);
}

/* Runs both paths on body; asserts the invariant; returns whether the scanner accepted. */
static bool differential_names(const char *body, size_t len, const struct el_names *names) {
  struct el_event fast, old;
  bool accepted = model_elevenlabs_scan(body, len, names, &fast);
  json_t *problems = NULL;
  char message[256];
  enum model_result r =
      model_elevenlabs_parse(body, len, names, &old, &problems, message, sizeof message);
  if (accepted) {
    if (r != MODEL_OK) {
      fprintf(stderr, "fast path accepted what the jansson path refused (%zu bytes): %.*s\n", len,
              (int)(len > 400 ? 400 : len), body);
      fail();
    }
    assert_null(fast.root);
    assert_null(fast.conv.root);
    assert_int_equal(fast.type, old.type);
    assert_string_equal(fast.type_name, old.type_name);
    assert_same_text(fast.conversation_id, old.conversation_id);
    assert_int_equal(fast.derived_len, old.derived_len);
    if (old.derived) {
      if (strcmp(fast.derived, old.derived) != 0) {
        fprintf(stderr, "derived bodies differ:\nfast: %s\nold:  %s\n", fast.derived, old.derived);
        fail();
      }
      const struct conversation_input *a = &fast.conv, *b = &old.conv;
      assert_string_equal(a->conversation_id, b->conversation_id);
      assert_same_text(a->email_id, b->email_id);
      assert_same_text(a->account_id, b->account_id);
      assert_string_equal(a->status, b->status);
      assert_same_text(a->agent_id, b->agent_id);
      assert_same_text(a->failure_reason, b->failure_reason);
      assert_same_text(a->platform, b->platform);
      assert_same_text(a->outcome, b->outcome);
      assert_int_equal(a->has_start, b->has_start);
      assert_int_equal(a->start_us, b->start_us);
      assert_int_equal(a->duration, b->duration);
      assert_int_equal(a->message_count, b->message_count);
    } else {
      assert_null(fast.derived);
    }
    model_elevenlabs_free(&fast);
    assert_null(fast.owned);
    accepted_count++;
  } else {
    assert_null(fast.owned);
    assert_null(fast.derived);
    assert_null(fast.conversation_id);
    declined_count++;
  }
  if (r == MODEL_OK) model_elevenlabs_free(&old);
  json_decref(problems);
  return accepted;
}

static bool differential(const char *body, size_t len) {
  (void)differential_names(body, len, &SAME_NAMES); /* one variable for both ids */
  return differential_names(body, len, &NAMES);
}

static bool differential_text(const char *body) { return differential(body, strlen(body)); }

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s (run from the repository root)", path);
  char *buf = NULL;
  size_t cap = 0, n = 0;
  for (;;) {
    if (n + 4096 > cap) {
      cap = cap ? cap * 2 : 65536;
      buf = realloc(buf, cap + 1);
      assert_non_null(buf);
    }
    size_t got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) break;
  }
  fclose(f);
  buf[n] = '\0';
  *len = n;
  return buf;
}

/* Every truncation, deletion and byte replacement of body. */
static void mutate(const char *body, size_t len) {
  static const unsigned char bytes[] = {
      0x00, '"',  '\\', '{',  '}',  '[',  ']',  ',',  ':',  '0',  '9', '-', 'e', '.', 'u', 'n',
      ' ',  '\t', 0x1f, 0x7f, 0x80, 0xc2, 0xc3, 0xed, 0xf4, 0xff, 'a', 'Z', '+', '/', 't'};
  char *m = malloc(len + 2);
  assert_non_null(m);
  for (size_t cut = 0; cut < len; cut++) (void)differential(body, cut);
  for (size_t i = 0; i < len; i++) {
    memcpy(m, body, i);
    memcpy(m + i, body + i + 1, len - i - 1);
    (void)differential(m, len - 1);
    memcpy(m, body, i + 1); /* the byte doubled */
    memcpy(m + i + 1, body + i, len - i);
    (void)differential(m, len + 1);
    memcpy(m, body, len);
    for (size_t b = 0; b < sizeof bytes; b++) {
      if ((unsigned char)body[i] == bytes[b]) continue;
      m[i] = (char)bytes[b];
      (void)differential(m, len);
    }
  }
  free(m);
}

/* body with the first occurrence of from replaced by to. */
static char *replace(const char *body, const char *from, const char *to) {
  const char *at = strstr(body, from);
  assert_non_null(at);
  size_t head = (size_t)(at - body), flen = strlen(from), tlen = strlen(to);
  char *out = malloc(strlen(body) - flen + tlen + 1);
  assert_non_null(out);
  memcpy(out, body, head);
  memcpy(out + head, to, tlen);
  strcpy(out + head + tlen, at + flen);
  return out;
}

static bool rich_with(const char *from, const char *to) {
  char *b = replace(RICH, from, to);
  bool accepted = differential_text(b);
  free(b);
  return accepted;
}

/* The benchmark's event (bench/run.py elevenlabs_template): the success fixture compacted, its
 * turns repeated until it is about 20 KB. */
static char *bench_event(void) {
  size_t len;
  char *text = read_file(FIXTURES "post_call_transcription_success.json", &len);
  json_error_t err;
  json_t *e = json_loadb(text, len, 0, &err);
  assert_non_null(e);
  free(text);
  json_t *data = json_object_get(e, "data");
  json_t *turns = json_object_get(data, "transcript");
  size_t n = json_array_size(turns);
  for (size_t i = 0;; i++) {
    char *dump = json_dumps(e, JSON_COMPACT);
    size_t size = strlen(dump);
    if (size >= 20000) {
      json_decref(e);
      return dump;
    }
    free(dump);
    json_t *t = json_deep_copy(json_array_get(turns, i % n));
    json_object_set_new(t, "time_in_call_secs", json_integer(200 + 5 * (json_int_t)i));
    json_array_append_new(turns, t);
  }
}

/* ---- ordinary events take the fast path ---- */

static void test_fixtures_take_the_fast_path(void **state) {
  (void)state;
  static const char *const files[] = {"post_call_transcription_success.json",
                                      "call_initiation_failure_sip.json",
                                      "post_call_audio_small.json"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char path[256];
    snprintf(path, sizeof path, FIXTURES "%s", files[i]);
    size_t len;
    char *body = read_file(path, &len);
    assert_true(differential(body, len));
    free(body);
  }
}

static void test_benchmark_event_takes_the_fast_path(void **state) {
  (void)state;
  char *b = bench_event();
  assert_true(strlen(b) >= 20000);
  assert_true(differential_text(b));
  struct el_event e;
  json_t *problems = (json_t *)1;
  char message[256];
  assert_int_equal(
      model_elevenlabs_parse_fast(b, strlen(b), &NAMES, &e, &problems, message, sizeof message),
      MODEL_OK);
  assert_null(problems);
  assert_null(e.root); /* no DOM was built */
  assert_int_equal(e.type, EL_POST_CALL_TRANSCRIPTION);
  assert_string_equal(e.conversation_id, "conv_01kr3p1mcesd0xs231rhcns0y0");
  assert_non_null(e.derived);
  assert_true(e.conv.message_count > 30);
  model_elevenlabs_free(&e);
  free(b);
}

static void test_rich_event(void **state) {
  (void)state;
  assert_true(differential_text(RICH));
  struct el_event e;
  assert_true(model_elevenlabs_scan(RICH, strlen(RICH), &NAMES, &e));
  assert_string_equal(e.conv.account_id, "-42");
  assert_string_equal(e.conv.status, "processing");
  assert_string_equal(e.conv.outcome, "success");
  assert_int_equal(e.conv.duration, 12);
  assert_int_equal(e.conv.message_count, 4);
  assert_non_null(strstr(e.derived,
                         "\"content\":\"Hi \\\"Maya\\\"\\n\xc3\xa9\xe2\x80\x99 "
                         "\xf0\x9f\x98\x80 / \\u0000\\u001F\\t\""));
  model_elevenlabs_free(&e);
}

/* A declined event gets the jansson path's exact answer. */
static void test_declined_event_gets_the_same_errors(void **state) {
  (void)state;
  static const char *const bodies[] = {
      "[]",
      "{",
      "",
      "{\"type\":\"post_call_transcription\",\"data\":{}}",
      "{\"type\":\"post_call_transcription\",\"data\":{\"conversation_id\":\"c\","
      "\"transcript\":[{},{\"role\":1},7]}}",
      "{\"type\":\"call_initiation_failure\",\"data\":{\"conversation_id\":\"\"}}",
      "{\"type\":\"post_call_audio\",\"data\":{\"conversation_id\":\"a\\u0001\"}}",
      "{\"a\":1,\"a\":2}"};
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    struct el_event a, b;
    json_t *pa = NULL, *pb = NULL;
    char ma[256] = "", mb[256] = "";
    size_t len = strlen(bodies[i]);
    enum model_result ra =
        model_elevenlabs_parse_fast(bodies[i], len, &NAMES, &a, &pa, ma, sizeof ma);
    enum model_result rb = model_elevenlabs_parse(bodies[i], len, &NAMES, &b, &pb, mb, sizeof mb);
    assert_int_not_equal(ra, MODEL_OK);
    assert_int_equal(ra, rb);
    assert_string_equal(ma, mb);
    assert_true(pa ? json_equal(pa, pb) : pb == NULL);
    json_decref(pa);
    json_decref(pb);
  }
}

/* ---- the corpus ---- */

static void test_fuzz_corpus(void **state) {
  (void)state;
  DIR *d = opendir(CORPUS);
  assert_non_null(d);
  struct dirent *e;
  size_t files = 0;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[512];
    snprintf(path, sizeof path, CORPUS "%s", e->d_name);
    size_t n;
    char *buf = read_file(path, &n);
    (void)differential(buf, n);
    mutate(buf, n > 1500 ? 1500 : n);
    free(buf);
    files++;
  }
  closedir(d);
  assert_true(files >= 5);
}

static void test_mutations_of_rich(void **state) {
  (void)state;
  accepted_count = declined_count = 0;
  mutate(RICH, strlen(RICH));
  assert_true(accepted_count > 100);
  assert_true(declined_count > 1000);
}

static void test_values_the_mapping_reads(void **state) {
  (void)state;
  static const char *const values[] = {"0",
                                       "-0",
                                       "-0.0",
                                       "0.4999999",
                                       "1e2",
                                       "1E+2",
                                       "-1e2",
                                       "253402300799",
                                       "253402300800",
                                       "-62135596800",
                                       "-253402300800",
                                       "253402300799.9999999",
                                       "1.7976931348623157e308",
                                       "1e400",
                                       "2.5e-324",
                                       "123456789012345678",
                                       "1234567890123456789",
                                       "99999999999999999999",
                                       "2147483647",
                                       "2147483648.5",
                                       "\"12\"",
                                       "\"\"",
                                       "\"done\"",
                                       "\"failed\"",
                                       "\"d\\u006fne\"",
                                       "\"0123456789abcdef\"",
                                       "\"0123456789abcde\"",
                                       "\"a\\u0000b\"",
                                       "\"a\xc2\x85\"",
                                       "\"\\u00e9\"",
                                       "\"x\\\"y\"",
                                       "null",
                                       "true",
                                       "[]",
                                       "{}",
                                       "{\"call_successful\":\"failure\"}",
                                       "{\"call_successful\":\"fail\\u0075re\"}",
                                       "{\"call_successful\":1}"};
  static const char *const places[] = {"\"event_timestamp\":1773151625.25",
                                       "\"time_in_call_secs\":0.5",
                                       "\"call_duration_secs\":12.9",
                                       "\"status\":\"processing\"",
                                       "\"agent_id\":\"agent_1\"",
                                       "\"account_id\":-42",
                                       "\"user_email\":\"m@x.io\"",
                                       "\"role\":\"agent\"",
                                       "\"message\":null",
                                       "\"conversation_id\":\"conv_r/1\"",
                                       "\"type\":\"post_call_transcription\"",
                                       "\"analysis\":{\"call_successful\":\"success\","
                                       "\"score\":12345678901234567,\"x\":0.1}",
                                       "\"metadata\":{\"call_duration_secs\":12.9,"
                                       "\"cost\":0.0012,\"nested\":{\"a\":[true,false]}}",
                                       "\"dynamic_variables\":{\"user_email\":\"m@x.io\","
                                       "\"account_id\":-42,\"system__time\":\"now\"}",
                                       "\"transcript\":[",
                                       "\"data\":{"};
  char buf[512];
  for (size_t p = 0; p < sizeof places / sizeof places[0]; p++) {
    const char *colon = strchr(places[p], ':');
    for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
      int n =
          snprintf(buf, sizeof buf, "%.*s%s", (int)(colon - places[p] + 1), places[p], values[v]);
      assert_true(n > 0 && (size_t)n < sizeof buf);
      if (places[p][strlen(places[p]) - 1] == '[' || places[p][strlen(places[p]) - 1] == '{') {
        /* a container's opening: the value replaces the whole container only when it fits */
        continue;
      }
      (void)rich_with(places[p], buf);
    }
  }
  /* the three known types, another one, and none */
  static const char *const types[] = {"\"post_call_transcription\"",
                                      "\"call_initiation_failure\"",
                                      "\"post_call_audio\"",
                                      "\"other_event\"",
                                      "7",
                                      "null",
                                      "\"x\\u0001\"",
                                      "\"post_call_transcription \""};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    snprintf(buf, sizeof buf, "\"type\":%s", types[i]);
    (void)rich_with("\"type\":\"post_call_transcription\"", buf);
  }
  assert_true(rich_with("\"type\":\"post_call_transcription\"", "\"type\":\"other_event\""));
  assert_true(rich_with("\"type\":\"post_call_transcription\"",
                        "\"type\":\"call_initiation_failure\",\"x\":{\"failure_reason\":1}"));
  /* data not an object; a transcript that is not an array */
  assert_true(rich_with("\"type\":\"post_call_transcription\"", "\"type\":\"other\",\"d\":1"));
  assert_true(rich_with("\"transcript\":[", "\"transcript\":7,\"t2\":["));
  /* failure reasons, decoded and sanitized as the jansson path does */
  static const char *const reasons[] = {
      "\"busy\"",
      "\"\"",
      "\"a\\u0000b\\tc\\u007fd\\u0085e\"",
      "\"\\\"q\\\\\"",
      "null",
      "1",
      "\"\xc2\x85\xe2\x98\x83\"",
      "\"0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
      "890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567"
      "8901234567890123456789012345678901234567890123456789012345678901234567890123456789\xe2\x98"
      "\x83\xe2\x98\x83\""};
  for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
    snprintf(buf, sizeof buf,
             "\"type\":\"call_initiation_failure\",\"data\":{\"failure_reason\":%s,", reasons[i]);
    char *b = replace(RICH, "\"type\":\"post_call_transcription\"", "\"type\":\"x\"");
    char *c = replace(b, "\"type\":\"x\",\"event_timestamp\":1773151625.25,\"data\":{", buf);
    assert_true(differential_text(c));
    free(b);
    free(c);
  }
}

static void test_duplicate_keys_and_nesting(void **state) {
  (void)state;
  assert_false(rich_with("\"status\"", "\"agent_id\":\"x\",\"status\""));
  assert_false(rich_with("\"role\":\"agent\"", "\"role\":\"agent\",\"role\":\"user\""));
  assert_false(rich_with("\"cost\"", "\"x\":{\"y\":[{\"z\":1,\"z\":1}]},\"cost\""));
  assert_false(rich_with("\"system__time\"", "\"user_email\":1,\"system__time\""));
  assert_true(rich_with("\"cost\"", "\"q\":{\"q\":{\"q\":1}},\"cost\""));
  /* many dynamic variables: within the scanner's bound, then beyond it (declined) */
  char buf[4096];
  size_t n = 0;
  for (int i = 0; i < 70; i++) {
    n += (size_t)snprintf(buf + n, sizeof buf - n, "\"system__v%d\":%d,", i, i);
    if (i == 40) {
      memcpy(buf + n, "\"system__time\"", 15);
      char *b = replace(RICH, "\"system__time\"", buf);
      char *c = replace(b, "\"system__v0\"", "\"system__time\":1,\"system__v0\"");
      assert_true(differential_text(b));
      assert_false(differential_text(c));
      free(b);
      free(c);
    }
  }
  memcpy(buf + n, "\"system__time\"", 15);
  assert_false(rich_with("\"system__time\"", buf)); /* more keys than the scanner takes */
  static const int depths[] = {1, 20, 27, 28, 29, 30, 31, 32, 40, 3000};
  for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
    int d = depths[i];
    size_t cap = (size_t)d * 2 + 64;
    char *deep = malloc(cap);
    assert_non_null(deep);
    size_t k = 0;
    k += (size_t)snprintf(deep + k, cap - k, "\"deep\":");
    for (int j = 0; j < d; j++) deep[k++] = '[';
    for (int j = 0; j < d; j++) deep[k++] = ']';
    k += (size_t)snprintf(deep + k, cap - k, ",\"cost\"");
    bool accepted = rich_with("\"cost\"", deep);
    if (d <= 20) assert_true(accepted);
    free(deep);
  }
}

/* parse_fast's answer is parse's (result, message, problems), and the differential holds. */
static enum model_result same_answer(const char *body, size_t len) {
  (void)differential(body, len);
  struct el_event a, b;
  json_t *pa = NULL, *pb = NULL;
  char ma[256] = "", mb[256] = "";
  enum model_result ra = model_elevenlabs_parse_fast(body, len, &NAMES, &a, &pa, ma, sizeof ma);
  enum model_result rb = model_elevenlabs_parse(body, len, &NAMES, &b, &pb, mb, sizeof mb);
  assert_int_equal(ra, rb);
  assert_string_equal(ma, mb);
  assert_true(pa ? json_equal(pa, pb) : pb == NULL);
  json_decref(pa);
  json_decref(pb);
  if (ra == MODEL_OK) {
    model_elevenlabs_free(&a);
    model_elevenlabs_free(&b);
  }
  return ra;
}

/* RICH with from replaced by to (to may hold NUL bytes: to_len). */
static char *rich_bytes(const char *from, const char *to, size_t to_len, size_t *len) {
  const char *at = strstr(RICH, from);
  assert_non_null(at);
  size_t head = (size_t)(at - RICH), flen = strlen(from), rlen = strlen(RICH);
  char *out = malloc(rlen - flen + to_len + 1);
  assert_non_null(out);
  memcpy(out, RICH, head);
  memcpy(out + head, to, to_len);
  memcpy(out + head + to_len, at + flen, rlen - head - flen + 1);
  *len = rlen - flen + to_len;
  return out;
}

/* Second reader's hostile forms: framing, escaped spellings of the keys the mapping reads,
 * surrogate halves, invalid UTF-8 inside and outside strings, numbers beyond the scanner's
 * bounds, jansson's own depth limit, a large event with escapes in every turn. Each gets the
 * jansson path's answer; the ones the scanner must decline are declined. */
/* The rich event with its first message's value replaced by "message":<before><value><after>:
 * declined by the scanner, refused by jansson as invalid JSON. */
static void message_is_invalid_json(const char *before, const char *value, const char *after) {
  char to[64];
  size_t len;
  int n = snprintf(to, sizeof to, "\"message\":%s%s%s", before, value, after);
  assert_true(n > 0 && (size_t)n < sizeof to);
  char *c = rich_bytes("\"message\":null", to, (size_t)n, &len);
  assert_false(differential(c, len));
  assert_int_equal(same_answer(c, len), MODEL_INVALID_JSON);
  free(c);
}

static void test_hostile_forms(void **state) {
  (void)state;
  size_t rlen = strlen(RICH), len;
  char *b = malloc(rlen + 16);
  assert_non_null(b);
  /* whitespace around the event is JSON; a BOM, a second value, a NUL or a form feed is not */
  memcpy(b, " \r\n\t", 4);
  memcpy(b + 4, RICH, rlen);
  memcpy(b + 4 + rlen, "\t\n\r ", 4);
  assert_true(differential(b, rlen + 8));
  assert_int_equal(same_answer(b, rlen + 8), MODEL_OK);
  static const struct {
    const char *head, *tail;
    size_t head_len, tail_len;
  } framing[] = {{"\xef\xbb\xbf", "", 3, 0}, {"", "x", 0, 1},  {"", "{}", 0, 2},
                 {"", "\0", 0, 1},           {"", "\f", 0, 1}, {"\x0b", "", 1, 0},
                 {"", "\xe2", 0, 1},         {"", ",{}", 0, 3}};
  for (size_t i = 0; i < sizeof framing / sizeof framing[0]; i++) {
    memcpy(b, framing[i].head, framing[i].head_len);
    memcpy(b + framing[i].head_len, RICH, rlen);
    memcpy(b + framing[i].head_len + rlen, framing[i].tail, framing[i].tail_len);
    len = framing[i].head_len + rlen + framing[i].tail_len;
    assert_false(differential(b, len));
    assert_int_equal(same_answer(b, len), MODEL_INVALID_JSON);
  }
  free(b);

  /* keys the mapping reads, spelled with an escape: jansson reads them, the scanner declines */
  static const char *const keys[][2] = {
      {"\"data\":{", "\"d\\u0061ta\":{"},
      {"\"conversation_id\"", "\"conversation\\u005fid\""},
      {"\"type\"", "\"t\\u0079pe\""},
      {"\"role\":\"agent\"", "\"r\\u006fle\":\"agent\""},
      {"\"user_email\"", "\"user\\u005femail\""},
      {"\"status\":\"processing\"", "\"status\":\"processing\",\"st\\u0061tus\":\"done\""}};
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    char *c = rich_bytes(keys[i][0], keys[i][1], strlen(keys[i][1]), &len);
    assert_false(differential(c, len));
    (void)same_answer(c, len);
    free(c);
  }

  /* surrogates: a pair in either case is a character; any half alone is not JSON */
  static const char *const pairs[] = {"\"x\\uD83D\\uDE00y\"", "\"x\\ud83d\\ude00y\"",
                                      "\"\\udbff\\udfff\""};
  for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
    char to[64];
    int n = snprintf(to, sizeof to, "\"message\":%s", pairs[i]);
    char *c = rich_bytes("\"message\":null", to, (size_t)n, &len);
    assert_true(differential(c, len));
    free(c);
  }
  static const char *const halves[] = {"\"\\ud83d\"",  "\"\\ude00\"",        "\"\\ud83d\\u0041\"",
                                       "\"\\ud83dx\"", "\"\\ud83d\\ud83d\"", "\"\\ude00\\ud83d\""};
  for (size_t i = 0; i < sizeof halves / sizeof halves[0]; i++)
    message_is_invalid_json("", halves[i], "");

  /* invalid UTF-8 (overlong, an encoded surrogate, beyond U+10FFFF, cut short, stray bytes),
   * inside a string the mapping reads and between tokens */
  static const char *const bad[] = {"\xc0\x80",     "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                    "\xf0\x9f\x98", "\xe2\x98",     "\xff",
                                    "\x80",         "\xc2"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    message_is_invalid_json("\"a", bad[i], "b\"");
    message_is_invalid_json("", bad[i], "null");
  }

  /* numbers at the scanner's bounds, where the mapping reads them: 18 digits and a two-digit
   * exponent are read; 19 digits (jansson then reads every integer as a real), a three-digit
   * exponent and more than 200 integer digits are declined, and jansson answers */
  char num[400];
  memset(num, '9', 250);
  static const char *const places[] = {"\"event_timestamp\":1773151625.25",
                                       "\"time_in_call_secs\":0.5", "\"call_duration_secs\":12.9",
                                       "\"account_id\":-42"};
  for (size_t p = 0; p < sizeof places / sizeof places[0]; p++) {
    const char *colon = strchr(places[p], ':');
    static const struct {
      size_t digits;
      const char *tail;
      bool read;
    } forms[] = {{18, "", true},       {19, "", false},   {1, "e99", true},
                 {1, "e100", false},   {200, ".5", true}, {201, ".5", false},
                 {200, ".0e99", true}, {1, "e-99", true}, {1, "E+07", true}};
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
      char to[400];
      int n = snprintf(to, sizeof to, "%.*s-%.*s%s", (int)(colon - places[p] + 1), places[p],
                       (int)forms[f].digits, num, forms[f].tail);
      assert_true(n > 0 && (size_t)n < sizeof to);
      char *c = rich_bytes(places[p], to, (size_t)n, &len);
      assert_true(differential(c, len) == forms[f].read);
      assert_int_equal(same_answer(c, len), MODEL_OK);
      free(c);
    }
  }

  /* jansson's own depth limit (2048) inside data.analysis, far beyond the scanner's */
  static const int depths[] = {2046, 2047, 2048, 2049};
  for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
    size_t d = (size_t)depths[i], k = 0;
    char *to = malloc(2 * d + 32);
    assert_non_null(to);
    k += (size_t)sprintf(to, "\"x\":");
    for (size_t j = 0; j < d; j++) to[k++] = '[';
    for (size_t j = 0; j < d; j++) to[k++] = ']';
    k += (size_t)sprintf(to + k, ",\"cost\"");
    char *c = rich_bytes("\"cost\"", to, k, &len);
    assert_false(differential(c, len));
    (void)same_answer(c, len);
    free(c);
    free(to);
  }

  /* a large event: 3,000 turns, escapes and non-ASCII in every message */
  static const char turn[] =
      "{\"role\":\"r%zu\",\"message\":\"q\\\"\\\\\\n\\u00e9\\ud83d\\ude00"
      "\xc3\xa9%zu\",\"time_in_call_secs\":%zu.25},";
  size_t cap = rlen + 3000 * 128;
  char *big = malloc(cap);
  assert_non_null(big);
  const char *at = strstr(RICH, "\"transcript\":[") + strlen("\"transcript\":[");
  size_t k = (size_t)(at - RICH);
  memcpy(big, RICH, k);
  for (size_t i = 0; i < 3000; i++) k += (size_t)snprintf(big + k, cap - k, turn, i, i, i);
  memcpy(big + k, at, rlen - (size_t)(at - RICH) + 1);
  k += rlen - (size_t)(at - RICH);
  assert_true(differential(big, k));
  struct el_event e;
  assert_true(model_elevenlabs_scan(big, k, &NAMES, &e));
  assert_int_equal(e.conv.message_count, 3004);
  model_elevenlabs_free(&e);
  free(big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fixtures_take_the_fast_path),
      cmocka_unit_test(test_benchmark_event_takes_the_fast_path),
      cmocka_unit_test(test_rich_event),
      cmocka_unit_test(test_declined_event_gets_the_same_errors),
      cmocka_unit_test(test_fuzz_corpus),
      cmocka_unit_test(test_mutations_of_rich),
      cmocka_unit_test(test_values_the_mapping_reads),
      cmocka_unit_test(test_duplicate_keys_and_nesting),
      cmocka_unit_test(test_hostile_forms),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
