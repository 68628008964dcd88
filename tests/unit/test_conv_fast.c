/* Differential test of the webhook body's fast path (model/conv_fast.c) against the jansson
 * path (model_conversation_parse): on a corpus of valid and invalid bodies (the fuzz corpus,
 * the seed example, the benchmark bodies, and mutations of them: truncations, byte flips,
 * deletions, duplicate keys, escapes, numbers, deep nesting, unicode), whenever the scanner
 * accepts, the jansson path accepts with the same struct values; whenever the jansson path
 * refuses, the scanner did not accept. Ordinary valid bodies must take the fast path. Run from
 * the repository root (make unit), where fuzz/corpus/conversation/ is found. */
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

#include "model/conv_fast.h"
#include "model/conversation.h"

#define CORPUS "fuzz/corpus/conversation/"

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

/* Everything optional present: escapes and unicode where they are allowed, reals and nested
 * values in unknown members, null sessionId, message metadata, a summary. */
static const char RICH[] =
    "{\"emailId\":\"u\xc3\xa9@example.com\",\"accountId\":\"acc_1\",\"conversationId\":\"c-1\","
    "\"transcript\":[{\"timestamp\":\"2024-01-15T10:30:00.123456+02:00\",\"speaker\":\"agent\","
    "\"content\":\"line\\n\\\"q\\\" \\u00e9 \\u0000 \xf0\x9f\x98\x80 \\/\",\"messageId\":\"m\\t1\","
    "\"metadata\":{\"sentiment\":-0.5e-3,\"tags\":[true,false,null,{}]}},"
    "{\"timestamp\":\"2024-01-15T08:29:59Z\",\"speaker\":\"user\",\"content\":\"\","
    "\"messageId\":\"m2\",\"metadata\":null}],"
    "\"metadata\":{\"sessionId\":null,\"agentId\":\"\",\"duration\":0,\"messageCount\":2,"
    "\"platform\":\"ios\",\"userAgent\":\"UA \\u2603\",\"custom\":{\"n\":[1,2.5,-3,1E+2]}},"
    "\"summary\":{\"text\":\"fine\",\"score\":12345678901234567}, \"extra\" : [ ] }";

static char *large_body(int messages) {
  size_t cap = (size_t)messages * 300 + 1024, n = 0;
  char *b = malloc(cap);
  assert_non_null(b);
  n += (size_t)snprintf(b + n, cap - n,
                        "{\"emailId\":\"user7@example.com\",\"accountId\":\"acc_7\","
                        "\"conversationId\":\"large_1_0_42_7\",\"transcript\":[");
  for (int i = 1; i <= messages; i++) {
    int s = 5 * i;
    n += (size_t)snprintf(
        b + n, cap - n,
        "%s{\"timestamp\":\"2024-01-15T%02d:%02d:%02dZ\",\"speaker\":\"%s\",\"content\":\"This "
        "is a realistic sentence of a voice conversation. This is a realistic sentence of a "
        "voice conversation. This is a realistic sentence of a voice conversation. "
        "\",\"messageId\":\"msg_%d\"}",
        i > 1 ? "," : "", 10 + s / 3600, (s / 60) % 60, s % 60, i % 2 ? "user" : "agent", i);
  }
  n += (size_t)snprintf(b + n, cap - n,
                        "],\"metadata\":{\"sessionId\":\"sess_7\",\"agentId\":"
                        "\"agent_01jxn7fwb2eyq8p6k4m3en4xtm\",\"duration\":300,\"messageCount\":"
                        "%d,\"platform\":\"web\",\"userAgent\":\"Mozilla/5.0 (X11; Linux "
                        "x86_64)\"}}",
                        messages);
  assert_true(n < cap);
  return b;
}

static void assert_same_text(const char *a, const char *b) {
  if (!a || !b) {
    assert_ptr_equal(a, b);
    return;
  }
  assert_string_equal(a, b);
}

static size_t accepted_count, declined_count;

/* Runs both paths on body; asserts the invariant; returns whether the scanner accepted. */
static bool differential(const char *body, size_t len) {
  struct conversation_input fast, old;
  bool accepted = model_conv_scan(body, len, &fast);
  json_t *problems = NULL;
  char message[256];
  enum model_result r =
      model_conversation_parse(body, len, &old, &problems, message, sizeof message);
  if (accepted) {
    if (r != MODEL_OK) {
      fprintf(stderr, "fast path accepted what the jansson path refused (%zu bytes): %.*s\n", len,
              (int)(len > 400 ? 400 : len), body);
      fail();
    }
    assert_null(fast.root);
    assert_string_equal(fast.conversation_id, old.conversation_id);
    assert_string_equal(fast.email_id, old.email_id);
    assert_string_equal(fast.account_id, old.account_id);
    assert_string_equal(fast.status, old.status);
    assert_same_text(fast.agent_id, old.agent_id);
    assert_same_text(fast.failure_reason, old.failure_reason);
    assert_same_text(fast.platform, old.platform);
    assert_same_text(fast.outcome, old.outcome);
    assert_int_equal(fast.has_start, old.has_start);
    if (old.has_start) assert_int_equal(fast.start_us, old.start_us);
    assert_int_equal(fast.duration, old.duration);
    assert_int_equal(fast.message_count, old.message_count);
    model_conversation_free(&fast);
    accepted_count++;
  } else {
    assert_null(fast.owned);
    assert_null(fast.conversation_id);
    declined_count++;
  }
  if (r == MODEL_OK) model_conversation_free(&old);
  json_decref(problems);
  return accepted;
}

static bool differential_text(const char *body) { return differential(body, strlen(body)); }

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

/* Asserts the invariant on SEED with from replaced by to; returns whether it was accepted. */
static bool seed_with(const char *from, const char *to) {
  char *b = replace(SEED, from, to);
  bool accepted = differential_text(b);
  free(b);
  return accepted;
}

/* ---- ordinary bodies take the fast path ---- */

static void test_seed_takes_the_fast_path(void **state) {
  (void)state;
  assert_true(differential_text(SEED));
  struct conversation_input in;
  json_t *problems = (json_t *)1;
  char message[256];
  assert_int_equal(
      model_conversation_parse_fast(SEED, strlen(SEED), &in, &problems, message, sizeof message),
      MODEL_OK);
  assert_null(problems);
  assert_null(in.root); /* no DOM was built */
  assert_string_equal(in.email_id, "user@example.com");
  assert_string_equal(in.account_id, "acc123");
  assert_string_equal(in.conversation_id, "conv_abc123");
  assert_string_equal(in.agent_id, "agent_01jxn7fwb2eyq8p6k4m3en4xtm");
  assert_string_equal(in.platform, "web");
  assert_string_equal(in.status, "completed");
  assert_true(in.has_start);
  assert_int_equal(in.start_us, 1705314600LL * 1000000);
  assert_int_equal(in.duration, 300);
  assert_int_equal(in.message_count, 10);
  model_conversation_free(&in);
  assert_null(in.owned);
}

static void test_benchmark_bodies_take_the_fast_path(void **state) {
  (void)state;
  char *b = large_body(40); /* bench/webhook_large.lua: about 8 KB */
  assert_true(strlen(b) > 7000);
  assert_true(differential_text(b));
  free(b);
  b = large_body(260); /* bench/webhook_64k.lua: about 64 KiB */
  assert_true(strlen(b) > 60000);
  assert_true(differential_text(b));
  free(b);
  assert_true(differential_text(RICH));
}

static void test_rich_body_values(void **state) {
  (void)state;
  struct conversation_input in;
  assert_true(model_conv_scan(RICH, strlen(RICH), &in));
  assert_string_equal(in.email_id, "u\xc3\xa9@example.com");
  assert_null(in.agent_id); /* "" is not a usable agent id: unknown, still accepted */
  assert_string_equal(in.platform, "ios");
  assert_int_equal(in.start_us, (1705314600LL - 2 * 3600 - 1) * 1000000); /* the earliest */
  assert_int_equal(in.duration, 0);
  model_conversation_free(&in);
}

/* A declined body gets the jansson path's exact answer. */
static void test_declined_body_gets_the_same_errors(void **state) {
  (void)state;
  static const char *const bodies[] = {
      "{\"emailId\":1}",
      "{",
      "[]",
      "{\"a\":1,\"a\":2}",
      "",
      "{\"emailId\":\"\",\"transcript\":[{}],\"metadata\":{\"duration\":-1}}"};
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    struct conversation_input a, b;
    json_t *pa = NULL, *pb = NULL;
    char ma[256] = "", mb[256] = "";
    size_t len = strlen(bodies[i]);
    enum model_result ra = model_conversation_parse_fast(bodies[i], len, &a, &pa, ma, sizeof ma);
    enum model_result rb = model_conversation_parse(bodies[i], len, &b, &pb, mb, sizeof mb);
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
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    (void)differential(buf, n);
    mutate(buf, n > 2048 ? 2048 : n);
    files++;
  }
  closedir(d);
  assert_true(files >= 5);
}

static void test_mutations_of_seed_and_rich(void **state) {
  (void)state;
  accepted_count = declined_count = 0;
  mutate(SEED, strlen(SEED));
  mutate(RICH, strlen(RICH));
  /* both outcomes are exercised: a whitespace flip keeps a body valid */
  assert_true(accepted_count > 100);
  assert_true(declined_count > 1000);
}

static void test_duplicate_keys_at_every_depth(void **state) {
  (void)state;
  assert_false(seed_with("\"accountId\"", "\"emailId\":\"x\",\"accountId\""));
  assert_false(seed_with("\"speaker\"", "\"content\":\"x\",\"speaker\""));
  assert_false(seed_with("\"duration\"", "\"platform\":\"x\",\"duration\""));
  assert_false(seed_with("\"sessionId\"",
                         "\"x\":{\"a\":1,\"b\":{\"c\":[{\"d\":1,\"d\":1}]}},"
                         "\"sessionId\""));
  assert_false(seed_with("\"emailId\"", "\"q\":1,\"q\":1,\"emailId\""));
  assert_true(seed_with("\"emailId\"", "\"q\":{\"q\":{\"q\":1}},\"emailId\""));
  /* keys equal once decoded: declined (escaped keys are left to jansson) */
  assert_false(seed_with("\"emailId\"", "\"q\":1,\"\\u0071\":1,\"emailId\""));
  (void)seed_with("\"emailId\"", "\"q\\u0000\":1,\"emailId\"");
}

static void test_escapes(void **state) {
  (void)state;
  /* escapes in values returned or compared: declined, jansson decides */
  (void)seed_with("\"acc123\"", "\"acc\\u0031\"");
  (void)seed_with("\"user\"", "\"\\u0075ser\"");
  (void)seed_with("\"web\"", "\"w\\u0000b\"");
  (void)seed_with("\"agent_01jxn7fwb2eyq8p6k4m3en4xtm\"", "\"a\\u007f\"");
  (void)seed_with("\"2024-01-15T10:30:00Z\"", "\"2024-01-15T10:30:00\\u005a\"");
  (void)seed_with("\"conv_abc123\"", "\"conv\\nabc\"");
  /* elsewhere: checked and accepted */
  assert_true(seed_with("\"Hello, I need help\"", "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u0000\""));
  assert_true(seed_with("\"msg_123\"", "\"\\uFFFF\\u00e9\""));
  /* surrogates: a well-formed pair (an emoji as Python's json.dumps writes it) is accepted where
   * the value is neither returned nor compared; a half alone, a high half followed by anything
   * but a low half, or a pair in a returned value is left to jansson */
  assert_true(seed_with("\"Hello, I need help\"", "\"hi \\ud83d\\ude00 \\uD83D\\uDE4F!\""));
  assert_true(seed_with("\"msg_123\"", "\"\\udbff\\udfff\\ud800\\udc00\""));
  assert_false(seed_with("\"acc123\"", "\"acc\\ud83d\\ude00\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\ud83d\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\ud83dx\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\ud83d\\u0041\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\ud83d\\ud83d\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\ud83d\\ude0\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\ud83d\\n\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\ude00x\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\ude00\\ud83d\""));
  /* broken escapes */
  assert_false(seed_with("\"Hello, I need help\"", "\"\\u12\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\u12g4\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\x41\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\'\""));
  assert_false(seed_with("\"Hello, I need help\"", "\"\\\""));
}

static void test_numbers(void **state) {
  (void)state;
  static const char *const extra[] = {"1e400",
                                      "-1e400",
                                      "1e308",
                                      "1e99",
                                      "1e-400",
                                      "1E+99",
                                      "0.5",
                                      "-0",
                                      "-0.0",
                                      "01",
                                      "1.",
                                      ".5",
                                      "+1",
                                      "1e",
                                      "1e+",
                                      "--1",
                                      "0x10",
                                      "NaN",
                                      "Infinity",
                                      "123456789012345678",
                                      "1234567890123456789",
                                      "99999999999999999999",
                                      "-9223372036854775808",
                                      "1.7976931348623157e308",
                                      "2.5e-324",
                                      "1.0e0000001",
                                      "1e05"};
  char buf[256];
  for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
    snprintf(buf, sizeof buf, "\"extra\":%s,\"emailId\"", extra[i]);
    (void)seed_with("\"emailId\"", buf);
  }
  assert_true(seed_with("\"emailId\"", "\"extra\":1e99,\"emailId\""));
  assert_false(seed_with("\"emailId\"", "\"extra\":1e400,\"emailId\""));
  /* integer fields */
  static const char *const counts[] = {"0",
                                       "-0",
                                       "2147483647",
                                       "2147483648",
                                       "-1",
                                       "300.0",
                                       "3e2",
                                       "\"300\"",
                                       "null",
                                       "true",
                                       "00",
                                       "1e0",
                                       "99999999999999999999",
                                       "1234567890123456789"};
  for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
    snprintf(buf, sizeof buf, "\"duration\": %s,", counts[i]);
    (void)seed_with("\"duration\": 300,", buf);
    snprintf(buf, sizeof buf, "\"messageCount\": %s,", counts[i]);
    (void)seed_with("\"messageCount\": 10,", buf);
  }
  assert_true(seed_with("\"duration\": 300,", "\"duration\": 2147483647,"));
  assert_false(seed_with("\"duration\": 300,", "\"duration\": 2147483648,"));
  /* an integer beyond 64 bits anywhere: jansson decodes all as doubles; the scanner declines */
  assert_false(seed_with("\"emailId\"", "\"big\":123456789012345678901234567890,\"emailId\""));
}

static void test_deep_nesting(void **state) {
  (void)state;
  static const int depths[] = {1, 10, 29, 30, 31, 32, 40, 2046, 2047, 2048, 2049, 5000};
  for (size_t i = 0; i < sizeof depths / sizeof depths[0]; i++) {
    int d = depths[i];
    size_t cap = (size_t)d * 2 + 64;
    char *deep = malloc(cap);
    assert_non_null(deep);
    size_t n = 0;
    n += (size_t)snprintf(deep + n, cap - n, "\"deep\":");
    for (int j = 0; j < d; j++) deep[n++] = '[';
    for (int j = 0; j < d; j++) deep[n++] = ']';
    n += (size_t)snprintf(deep + n, cap - n, ",\"emailId\"");
    bool accepted = seed_with("\"emailId\"", deep);
    if (d <= 30) assert_true(accepted);
    if (d > CONV_FAST_DEPTH_MAX) assert_false(accepted);
    free(deep);
  }
}

static void test_unicode(void **state) {
  (void)state;
  static const char *const texts[] = {"\xc3\xa9",
                                      "\xe2\x98\x83",
                                      "\xf0\x9f\x98\x80",
                                      "\xf4\x8f\xbf\xbf",
                                      "\xc0\x80",
                                      "\xc1\xbf",
                                      "\xe0\x80\x80",
                                      "\xed\xa0\x80",
                                      "\xed\xbf\xbf",
                                      "\xf0\x80\x80\x80",
                                      "\xf4\x90\x80\x80",
                                      "\xf5\x80\x80\x80",
                                      "\xc3",
                                      "\xe2\x98",
                                      "\x80",
                                      "\xff",
                                      "\xc2\x80",
                                      "\xc2\x9f",
                                      "\x7f",
                                      "\xef\xbb\xbf"};
  char buf[64];
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    snprintf(buf, sizeof buf, "\"x%sy\"", texts[i]);
    (void)seed_with("\"Hello, I need help\"", buf); /* content: any string */
    (void)seed_with("\"acc123\"", buf);             /* an identifier: printable */
    (void)seed_with("\"web\"", buf);                /* platform: usable or unknown */
    snprintf(buf, sizeof buf, "\"k%s\":1,\"emailId\"", texts[i]);
    (void)seed_with("\"emailId\"", buf); /* a key */
    snprintf(buf, sizeof buf, "%s\"emailId\"", texts[i]);
    (void)seed_with("\"emailId\"", buf); /* outside strings: never JSON */
  }
  /* a C1 control makes an identifier unusable, and platform unknown (still accepted) */
  assert_false(seed_with("\"acc123\"", "\"a\xc2\x85\""));
  struct conversation_input in;
  char *b = replace(SEED, "\"web\"", "\"w\xc2\x85\"");
  assert_true(differential_text(b));
  assert_true(model_conv_scan(b, strlen(b), &in));
  assert_null(in.platform);
  model_conversation_free(&in);
  free(b);
  /* a BOM before the body is not JSON for jansson */
  char bom[sizeof SEED + 3] = "\xef\xbb\xbf";
  strcat(bom, SEED);
  assert_false(differential_text(bom));
}

static void test_structure(void **state) {
  (void)state;
  static const char *const bodies[] = {
      "",    " ",      "{}",      "[]",       "null",       "\"x\"", "1",
      "{\"", "{\"a\"", "{\"a\":", "{\"a\":1", "{\"a\":1,}", "[1,]",  "{\"a\" 1}"};
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++)
    assert_false(differential_text(bodies[i]));
  assert_true(seed_with("{\n", " \t\r\n{\n"));
  assert_false(seed_with("}\n", "} x"));
  assert_false(seed_with("}\n", "}{}"));
  assert_false(seed_with("}\n", "}\n\f"));
  char nul[sizeof SEED + 1];
  memcpy(nul, SEED, sizeof SEED);
  nul[sizeof SEED - 1] = '\0'; /* a raw NUL after the body */
  assert_false(differential(nul, sizeof SEED));
  /* required members and their types */
  assert_false(seed_with("\"transcript\": [", "\"transcript\": null, \"t\": ["));
  assert_false(seed_with("\"metadata\": {", "\"metadata\": null, \"m\": {"));
  assert_true(seed_with("\"metadata\": {", "\"summary\": null, \"metadata\": {"));
  assert_true(seed_with("\"metadata\": {", "\"summary\": {\"a\":[]}, \"metadata\": {"));
  assert_false(seed_with("\"metadata\": {", "\"summary\": [], \"metadata\": {"));
  assert_true(seed_with("\"sessionId\": \"sess_456\"", "\"sessionId\": null"));
  assert_true(seed_with("\"sessionId\": \"sess_456\",", ""));
  assert_false(seed_with("\"sessionId\": \"sess_456\"", "\"sessionId\": 1"));
  assert_false(seed_with("\"speaker\": \"user\"", "\"speaker\": \"users\""));
  assert_false(seed_with("\"speaker\": \"user\"", "\"speaker\": \"User\""));
  assert_true(seed_with("\"speaker\": \"user\"", "\"speaker\": \"agent\""));
  assert_false(seed_with("\"timestamp\": \"2024-01-15T10:30:00Z\"",
                         "\"timestamp\": \"2024-02-30T10:30:00Z\""));
  assert_false(seed_with("\"messageId\": \"msg_123\"", "\"messageId\": 123"));
  assert_true(
      seed_with("\"messageId\": \"msg_123\"", "\"messageId\": \"msg_123\", \"metadata\":{}"));
  assert_false(
      seed_with("\"messageId\": \"msg_123\"", "\"messageId\": \"msg_123\", \"metadata\":1"));
  assert_false(seed_with("\"transcript\": [\n    {", "\"transcript\": [ 1, {"));
  assert_true(
      seed_with("\"transcript\": [\n    {\n      \"timestamp\": \"2024-01-15T10:30:00Z\",\n"
                "      \"speaker\": \"user\",\n      \"content\": \"Hello, I need help\",\n"
                "      \"messageId\": \"msg_123\"\n    }\n  ]",
                "\"transcript\": []"));
  /* the endTime rule */
  assert_false(seed_with("\"2024-01-15T10:30:00Z\"", "\"9999-12-31T23:59:00Z\""));
  assert_true(seed_with("\"2024-01-15T10:30:00Z\"", "\"9999-12-31T23:54:59Z\""));
  /* identifier limits */
  char id[400];
  for (size_t n = 255; n <= 322; n++) {
    char buf[512];
    memset(id, 'a', n);
    id[n] = '\0';
    snprintf(buf, sizeof buf, "\"%s\"", id);
    (void)seed_with("\"conv_abc123\"", buf);
    (void)seed_with("\"user@example.com\"", buf);
    (void)seed_with("\"agent_01jxn7fwb2eyq8p6k4m3en4xtm\"", buf);
  }
  assert_false(seed_with("\"conv_abc123\"", "\"\""));
  assert_false(seed_with("\"conv_abc123\"", "null"));
}

static void test_object_and_array_sizes(void **state) {
  (void)state;
  char buf[4096];
  for (int keys = 28; keys <= 40; keys++) { /* extra keys in the root object */
    size_t n = 0;
    for (int k = 0; k < keys; k++)
      n += (size_t)snprintf(buf + n, sizeof buf - n, "\"k%d\":%d,", k, k);
    snprintf(buf + n, sizeof buf - n, "\"emailId\"");
    bool accepted = seed_with("\"emailId\"", buf);
    if (keys + 5 > CONV_FAST_KEYS_MAX)
      assert_false(accepted);
    else
      assert_true(accepted);
  }
  /* a transcript of 10000 messages is accepted, 10001 refused */
  for (int count = 10000; count <= 10001; count++) {
    static const char msg[] =
        "{\"timestamp\":\"2024-01-15T10:30:00Z\",\"speaker\":\"user\",\"content\":\"c\","
        "\"messageId\":\"m\"}";
    size_t cap = (size_t)count * sizeof msg + 1024, n = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    n += (size_t)snprintf(b, cap,
                          "{\"emailId\":\"e\",\"accountId\":\"a\",\"conversationId\":\"c\","
                          "\"transcript\":[");
    for (int i = 0; i < count; i++)
      n += (size_t)snprintf(b + n, cap - n, "%s%s", i ? "," : "", msg);
    snprintf(b + n, cap - n,
             "],\"metadata\":{\"agentId\":\"x\",\"duration\":1,\"messageCount\":1,"
             "\"platform\":\"web\",\"userAgent\":\"u\"}}");
    bool accepted = differential_text(b);
    assert_int_equal(accepted, count == 10000);
    free(b);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_seed_takes_the_fast_path),
      cmocka_unit_test(test_benchmark_bodies_take_the_fast_path),
      cmocka_unit_test(test_rich_body_values),
      cmocka_unit_test(test_declined_body_gets_the_same_errors),
      cmocka_unit_test(test_fuzz_corpus),
      cmocka_unit_test(test_mutations_of_seed_and_rich),
      cmocka_unit_test(test_duplicate_keys_at_every_depth),
      cmocka_unit_test(test_escapes),
      cmocka_unit_test(test_numbers),
      cmocka_unit_test(test_deep_nesting),
      cmocka_unit_test(test_unicode),
      cmocka_unit_test(test_structure),
      cmocka_unit_test(test_object_and_array_sizes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
