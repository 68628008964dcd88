/* The fast path for seed webhooks: the one-pass scanner (model/json_scan.h) checks the body is
 * JSON as jansson reads it with JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL (and
 * model_body_load's raw-NUL rule), and checks validate()'s rules (model/conversation.c), in one
 * pass, without a DOM. It declines whatever it is not certain of, so that the jansson path
 * answers, with its own errors, every body the scanner does not accept:
 *  - any JSON error, any failed rule (it never builds an error itself);
 *  - a backslash in a key, or in a value it returns or compares (identifiers, timestamp,
 *    speaker, agentId, platform); a \u escape of a surrogate half that is not a well-formed
 *    high+low pair;
 *  - a number jansson might read otherwise: integers of more than 18 digits (the jansson path
 *    then decodes every integer as a double), reals whose size it cannot bound below
 *    DBL_MAX (more than 200 integer digits, or an exponent of more than two digits); an
 *    integer field written as anything but plain digits;
 *  - nesting deeper than CONV_FAST_DEPTH_MAX, an object with more than CONV_FAST_KEYS_MAX
 *    members (duplicates are found by comparing keys pairwise). */
#include "model/conv_fast.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "core/utf8.h"
#include "model/json_scan.h"
#include "model/stored.h"

/* ---- the seed webhook's rules (validate() in model/conversation.c) ---- */

static bool is_text(const struct json_scan_val *v) {
  return v->seen && v->kind == JSON_SCAN_STRING;
}

/* A string value whose raw bytes are its value (no escape). */
static bool is_plain_text(const struct json_scan_val *v) { return is_text(v) && !v->escaped; }

static bool is_object_or_absent(const struct json_scan_val *v) {
  return !v->seen || v->kind == JSON_SCAN_NULL || v->kind == JSON_SCAN_OBJECT;
}

static bool equals(const struct json_scan_val *v, const char *s) {
  return v->n == strlen(s) && memcmp(v->s, s, v->n) == 0;
}

/* check_identifier's rules, on a value without escapes. */
static bool identifier(const struct json_scan_val *v, size_t max) {
  return is_plain_text(v) && v->n >= 1 && v->n <= max && model_is_printable(v->s, v->n);
}

/* check_count's rules: plain digits, 0..MODEL_COUNT_MAX. */
static bool count(const struct json_scan_val *v, int64_t *out) {
  if (!v->seen || v->kind != JSON_SCAN_INT || v->s[0] == '-') return false;
  int64_t x = 0;
  for (size_t i = 0; i < v->n; i++) x = x * 10 + (v->s[i] - '0'); /* at most 18 digits */
  if (x > MODEL_COUNT_MAX) return false;
  *out = x;
  return true;
}

struct fields {
  struct json_scan_val email, account, conversation, summary, agent, platform;
  bool transcript_seen, metadata_seen;
  struct conversation_input *out;
};

static bool message(struct json_scan *sc, int depth, void *ctx) {
  struct conversation_input *out = ctx;
  if (*sc->p != '{') return false;
  struct json_scan_val ts = {0}, speaker = {0}, content = {0}, id = {0}, md = {0};
  const struct json_scan_member want[] = {{"timestamp", &ts, NULL, NULL},
                                          {"speaker", &speaker, NULL, NULL},
                                          {"content", &content, NULL, NULL},
                                          {"messageId", &id, NULL, NULL},
                                          {"metadata", &md, NULL, NULL}};
  if (!json_scan_object(sc, depth, want, sizeof want / sizeof want[0])) return false;
  int64_t us;
  if (!is_plain_text(&ts) || !time_parse_rfc3339(ts.s, ts.n, &us)) return false;
  if (!out->has_start || us < out->start_us) {
    out->has_start = true;
    out->start_us = us;
  }
  return is_plain_text(&speaker) && (equals(&speaker, "user") || equals(&speaker, "agent")) &&
         is_text(&content) && is_text(&id) && is_object_or_absent(&md);
}

static bool transcript(struct json_scan *sc, int depth, void *ctx) {
  struct fields *f = ctx;
  size_t n;
  if (*sc->p != '[' || !json_scan_array(sc, depth, message, f->out, &n)) return false;
  f->transcript_seen = true;
  return n <= MODEL_TRANSCRIPT_MAX;
}

static bool metadata(struct json_scan *sc, int depth, void *ctx) {
  struct fields *f = ctx;
  if (*sc->p != '{') return false;
  struct json_scan_val session = {0}, duration = {0}, messages = {0}, agent_text = {0};
  const struct json_scan_member want[] = {
      {"sessionId", &session, NULL, NULL},    {"agentId", &f->agent, NULL, NULL},
      {"duration", &duration, NULL, NULL},    {"messageCount", &messages, NULL, NULL},
      {"platform", &f->platform, NULL, NULL}, {"userAgent", &agent_text, NULL, NULL}};
  if (!json_scan_object(sc, depth, want, sizeof want / sizeof want[0])) return false;
  f->metadata_seen = true;
  return (!session.seen || session.kind == JSON_SCAN_NULL || session.kind == JSON_SCAN_STRING) &&
         is_plain_text(&f->agent) && count(&duration, &f->out->duration) &&
         count(&messages, &f->out->message_count) && is_plain_text(&f->platform) &&
         is_text(&agent_text);
}

/* model_usable_id on a value without escapes: its length, or 0 when unusable. */
static size_t usable(const struct json_scan_val *v, size_t max) {
  return v->n >= 1 && v->n <= max && model_is_printable(v->s, v->n) ? v->n : 0;
}

/* Copies the returned strings into one allocation the struct owns. */
static bool copy_out(struct fields *f) {
  struct conversation_input *out = f->out;
  size_t agent_n = usable(&f->agent, MODEL_AGENT_ID_MAX);
  size_t platform_n = usable(&f->platform, MODEL_AGENT_ID_MAX);
  const struct json_scan_val *src[5] = {&f->conversation, &f->email, &f->account, &f->agent,
                                        &f->platform};
  size_t n[5] = {f->conversation.n, f->email.n, f->account.n, agent_n, platform_n};
  const char **dst[5] = {&out->conversation_id, &out->email_id, &out->account_id, &out->agent_id,
                         &out->platform};
  size_t total = 0;
  for (int i = 0; i < 5; i++) total += n[i] + 1;
  char *mem = malloc(total);
  if (!mem) return false;
  out->owned = mem;
  for (int i = 0; i < 5; i++) {
    if (i >= 3 && n[i] == 0) { /* agentId, platform: unusable reads as unknown */
      *dst[i] = NULL;
      continue;
    }
    memcpy(mem, src[i]->s, n[i]);
    mem[n[i]] = '\0';
    *dst[i] = mem;
    mem += n[i] + 1;
  }
  return true;
}

bool model_conv_scan(const char *body, size_t len, struct conversation_input *out) {
  memset(out, 0, sizeof *out);
  struct json_scan sc = {body, body + len, CONV_FAST_KEYS_MAX};
  struct fields f;
  memset(&f, 0, sizeof f);
  f.out = out;
  const struct json_scan_member want[] = {{"emailId", &f.email, NULL, NULL},
                                          {"accountId", &f.account, NULL, NULL},
                                          {"conversationId", &f.conversation, NULL, NULL},
                                          {"transcript", NULL, transcript, &f},
                                          {"metadata", NULL, metadata, &f},
                                          {"summary", &f.summary, NULL, NULL}};
  json_scan_ws(&sc);
  bool ok =
      sc.p < sc.end && *sc.p == '{' && json_scan_object(&sc, 1, want, sizeof want / sizeof want[0]);
  if (ok) {
    json_scan_ws(&sc);
    ok = sc.p == sc.end;
  }
  ok = ok && identifier(&f.email, MODEL_EMAIL_ID_MAX) &&
       identifier(&f.account, MODEL_ACCOUNT_ID_MAX) &&
       identifier(&f.conversation, MODEL_CONVERSATION_ID_MAX) && f.transcript_seen &&
       f.metadata_seen && is_object_or_absent(&f.summary);
  /* endTime (earliest timestamp + duration) must be renderable, as in validate(). */
  ok = ok && !(out->has_start && out->start_us > TIME_MAX_US - out->duration * 1000000);
  ok = ok && copy_out(&f);
  if (!ok) {
    free(out->owned);
    memset(out, 0, sizeof *out);
    return false;
  }
  out->status = "completed";
  return true;
}

enum model_result model_conversation_parse_fast(const char *body, size_t len,
                                                struct conversation_input *out, json_t **problems,
                                                char *message, size_t message_len) {
  if (model_conv_scan(body, len, out)) {
    *problems = NULL;
    return MODEL_OK;
  }
  return model_conversation_parse(body, len, out, problems, message, message_len);
}
