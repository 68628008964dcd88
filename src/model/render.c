/* Rendering. Timestamps: processedAt always carries microseconds so it sorts as text;
 * startTime/endTime show a fraction only when they have one (as the seed's examples). */
#include "model/render.h"

#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "core/utf8.h"
#include "model/json_raw.h"

static json_t *time_or_null(bool present, int64_t us, bool always_fraction) {
  char buf[40];
  if (!present || !time_format_us(us, always_fraction, buf, sizeof buf)) return json_null();
  return json_string(buf);
}

size_t render_path_segment(const char *s, char *out) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
        *p == '-' || *p == '.' || *p == '_' || *p == '~') {
      out[n++] = (char)*p;
    } else {
      out[n++] = '%';
      out[n++] = hex[*p >> 4];
      out[n++] = hex[*p & 15];
    }
  }
  out[n] = '\0';
  return n;
}

/* "" is how the store says unknown: rendered null. */
static json_t *string_or_null(const char *s) { return *s ? json_string(s) : json_null(); }

json_t *render_conversation(const struct store_conversation *c) {
  int64_t end_us = c->start_us + c->duration * 1000000;
  json_t *o = json_pack("{s:s,s:o,s:o,s:o,s:s}", "conversationId", c->conversation_id, "emailId",
                        string_or_null(c->email_id), "accountId", string_or_null(c->account_id),
                        "agentId", string_or_null(c->agent_id), "status", c->status);
  if (!o) return NULL;
  bool ok = !*c->failure_reason ||
            json_object_set_new(o, "failureReason", json_string(c->failure_reason)) == 0;
  ok = ok &&
       json_object_set_new(o, "startTime", time_or_null(c->has_start, c->start_us, false)) == 0 &&
       json_object_set_new(o, "endTime", time_or_null(c->has_start, end_us, false)) == 0 &&
       json_object_set_new(o, "duration", json_integer((json_int_t)c->duration)) == 0 &&
       json_object_set_new(o, "messageCount", json_integer((json_int_t)c->message_count)) == 0 &&
       json_object_set_new(o, "processedAt", time_or_null(true, c->processed_us, true)) == 0;
  if (ok && c->audio_bytes >= 0) {
    /* Present only when audio is stored: its size and where to fetch it. */
    static const char prefix[] = "/api/v1/conversations/";
    char url[sizeof prefix + sizeof c->conversation_id * 3 + sizeof "/audio"];
    memcpy(url, prefix, sizeof prefix - 1);
    size_t n = sizeof prefix - 1;
    n += render_path_segment(c->conversation_id, url + n);
    memcpy(url + n, "/audio", sizeof "/audio");
    ok = json_object_set_new(
             o, "audio", json_pack("{s:I,s:s}", "bytes", (json_int_t)c->audio_bytes, "url", url)) ==
         0;
  }
  if (!ok) {
    json_decref(o);
    return NULL;
  }
  return o;
}

/* One member of the detail answer: its key and its raw value from the stored body. */
struct raw_member {
  const char *key;
  const char *val;
  size_t len;
};

static void find_member(const struct store_conversation *c, struct raw_member *m) {
  if (!json_raw_member(c->body, c->body_len, m->key, &m->val, &m->len)) {
    m->val = "null";
    m->len = 4;
  }
}

/* ---- The detail answer, written directly (no JSON tree): it is rendered for every read of
 * one conversation and for every outbox event, so it is written the way jansson's compact
 * dump of render_conversation would write it, byte for byte (tests/unit/test_render.c holds
 * the two side by side), straight into one buffer of the right size. ---- */

struct out {
  char *p;
  size_t n;
};

static void put(struct out *o, const char *s, size_t len) {
  if (o->p) memcpy(o->p + o->n, s, len);
  o->n += len;
}

static void put_str(struct out *o, const char *s) { put(o, s, strlen(s)); }

/* A JSON string as jansson dumps it: '"', '\\' and the C0 controls escaped (the short forms
 * where JSON has them, else \u00XX with upper-case digits), everything else (UTF-8, '/', DEL)
 * as is. */
static void put_quoted(struct out *o, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  put(o, "\"", 1);
  const char *run = s;
  for (const unsigned char *p = (const unsigned char *)s;; p++) {
    if (*p >= 0x20 && *p != '"' && *p != '\\') continue;
    put(o, run, (size_t)((const char *)p - run));
    if (!*p) break;
    char esc[6] = {'\\', 0, 0, 0, 0, 0};
    size_t n = 2;
    switch (*p) {
      case '"':
        esc[1] = '"';
        break;
      case '\\':
        esc[1] = '\\';
        break;
      case '\b':
        esc[1] = 'b';
        break;
      case '\f':
        esc[1] = 'f';
        break;
      case '\n':
        esc[1] = 'n';
        break;
      case '\r':
        esc[1] = 'r';
        break;
      case '\t':
        esc[1] = 't';
        break;
      default:
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = hex[*p >> 4];
        esc[5] = hex[*p & 15];
        n = 6;
    }
    put(o, esc, n);
    run = (const char *)p + 1;
  }
  put(o, "\"", 1);
}

static void put_str_or_null(struct out *o, const char *s) {
  if (*s)
    put_quoted(o, s);
  else
    put(o, "null", 4);
}

static void put_time(struct out *o, bool present, int64_t us, bool always_fraction) {
  char buf[40];
  if (!present || !time_format_us(us, always_fraction, buf, sizeof buf)) {
    put(o, "null", 4);
    return;
  }
  put(o, "\"", 1);
  put_str(o, buf);
  put(o, "\"", 1);
}

static void put_int(struct out *o, int64_t v) {
  char buf[24];
  size_t n = sizeof buf;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do {
    buf[--n] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) buf[--n] = '-';
  put(o, buf + n, sizeof buf - n);
}

static void put_member(struct out *o, const struct raw_member *m) {
  put(o, ",\"", 2);
  put_str(o, m->key);
  put(o, "\":", 2);
  put(o, m->val, m->len);
}

static void put_detail(struct out *o, const struct store_conversation *c,
                       const struct raw_member *members, size_t nmembers) {
  put_str(o, "{\"conversationId\":");
  put_quoted(o, c->conversation_id);
  put_str(o, ",\"emailId\":");
  put_str_or_null(o, c->email_id);
  put_str(o, ",\"accountId\":");
  put_str_or_null(o, c->account_id);
  put_str(o, ",\"agentId\":");
  put_str_or_null(o, c->agent_id);
  put_str(o, ",\"status\":");
  put_quoted(o, c->status);
  if (*c->failure_reason) {
    put_str(o, ",\"failureReason\":");
    put_quoted(o, c->failure_reason);
  }
  put_str(o, ",\"startTime\":");
  put_time(o, c->has_start, c->start_us, false);
  put_str(o, ",\"endTime\":");
  put_time(o, c->has_start, c->start_us + c->duration * 1000000, false);
  put_str(o, ",\"duration\":");
  put_int(o, c->duration);
  put_str(o, ",\"messageCount\":");
  put_int(o, c->message_count);
  put_str(o, ",\"processedAt\":");
  put_time(o, true, c->processed_us, true);
  if (c->audio_bytes >= 0) {
    static const char prefix[] = "/api/v1/conversations/";
    char url[sizeof prefix + sizeof c->conversation_id * 3 + sizeof "/audio"];
    memcpy(url, prefix, sizeof prefix - 1);
    size_t n = sizeof prefix - 1;
    n += render_path_segment(c->conversation_id, url + n);
    memcpy(url + n, "/audio", sizeof "/audio");
    put_str(o, ",\"audio\":{\"bytes\":");
    put_int(o, c->audio_bytes);
    put_str(o, ",\"url\":\"");
    put_str(o, url); /* percent-encoded: nothing to escape */
    put(o, "\"}", 2);
  }
  for (size_t i = 0; i < nmembers; i++) put_member(o, &members[i]);
  put(o, "}", 1);
}

char *render_conversation_detail(const struct store_conversation *c, size_t *len) {
  /* Texts that are not UTF-8 cannot be JSON strings: no answer, as jansson refuses them. */
  const char *texts[] = {c->conversation_id, c->email_id, c->account_id,
                         c->status,          c->agent_id, c->failure_reason};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
    if (!utf8_valid(texts[i], strlen(texts[i]))) return NULL;
  struct raw_member members[] = {
      {"transcript", NULL, 0}, {"metadata", NULL, 0}, {"summary", NULL, 0}};
  size_t nmembers = sizeof members / sizeof members[0];
  for (size_t i = 0; i < nmembers; i++) find_member(c, &members[i]);
  struct out size = {NULL, 0};
  put_detail(&size, c, members, nmembers); /* first pass: the length */
  struct out o = {malloc(size.n + 1), 0};
  if (!o.p) return NULL;
  put_detail(&o, c, members, nmembers);
  o.p[o.n] = '\0';
  *len = o.n;
  return o.p;
}

json_t *render_conversation_erased(const char *conversation_id) {
  return json_pack("{s:b,s:{s:s,s:b}}", "success", 1, "data", "conversationId", conversation_id,
                   "erased", 1);
}

static void put_accepted(struct out *o, const char *conversation_id, const char *webhook_id,
                         int64_t processed_us) {
  put_str(o,
          "{\"success\":true,\"message\":\"Conversation data received successfully\","
          "\"data\":{\"conversationId\":");
  if (conversation_id)
    put_quoted(o, conversation_id);
  else
    put(o, "null", 4);
  put_str(o, ",\"processedAt\":");
  put_time(o, true, processed_us, true);
  put_str(o, ",\"status\":\"processed\",\"webhookId\":");
  put_quoted(o, webhook_id);
  put_str(o, "}}");
}

char *render_webhook_accepted_text(const char *conversation_id, const char *webhook_id,
                                   int64_t processed_us, size_t *len) {
  if ((conversation_id && !utf8_valid(conversation_id, strlen(conversation_id))) ||
      !utf8_valid(webhook_id, strlen(webhook_id)))
    return NULL;
  struct out size = {NULL, 0};
  put_accepted(&size, conversation_id, webhook_id, processed_us);
  struct out o = {malloc(size.n + 1), 0};
  if (!o.p) return NULL;
  put_accepted(&o, conversation_id, webhook_id, processed_us);
  o.p[o.n] = '\0';
  *len = o.n;
  return o.p;
}

json_t *render_webhook_accepted(const char *conversation_id, const char *webhook_id,
                                int64_t processed_us) {
  return json_pack("{s:b,s:s,s:{s:o,s:o,s:s,s:s}}", "success", 1, "message",
                   "Conversation data received successfully", "data", "conversationId",
                   conversation_id ? json_string(conversation_id) : json_null(), "processedAt",
                   time_or_null(true, processed_us, true), "status", "processed", "webhookId",
                   webhook_id);
}
