/* Rendering. Timestamps: processedAt always carries microseconds so it sorts as text;
 * startTime/endTime show a fraction only when they have one (as the seed's examples). */
#include "model/render.h"

#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "model/json_raw.h"

static json_t *time_or_null(bool present, int64_t us, bool always_fraction) {
  char buf[40];
  if (!present || !time_format_us(us, always_fraction, buf, sizeof buf)) return json_null();
  return json_string(buf);
}

/* Percent-encodes s as one path segment (RFC 3986: all but the unreserved characters) into
 * out, which holds at least 3 * strlen(s) + 1 bytes; returns the length written. */
static size_t escape_segment(const char *s, char *out) {
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
    n += escape_segment(c->conversation_id, url + n);
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

/* Appends ,"key":<raw value> at *pos; the caller sized buf for it. */
static void append_member(char *buf, size_t *pos, const struct raw_member *m) {
  size_t klen = strlen(m->key);
  buf[(*pos)++] = ',';
  buf[(*pos)++] = '"';
  memcpy(buf + *pos, m->key, klen);
  *pos += klen;
  buf[(*pos)++] = '"';
  buf[(*pos)++] = ':';
  memcpy(buf + *pos, m->val, m->len);
  *pos += m->len;
}

char *render_conversation_detail(const struct store_conversation *c, size_t *len) {
  json_t *base = render_conversation(c);
  char *head = base ? json_dumps(base, JSON_COMPACT) : NULL;
  json_decref(base);
  if (!head) return NULL;
  /* The members are found first so the answer is written into one buffer of exactly its size:
   * a large conversation costs its answer once, not three times the stored body. */
  struct raw_member members[] = {
      {"transcript", NULL, 0}, {"metadata", NULL, 0}, {"summary", NULL, 0}};
  size_t hlen = strlen(head); /* ends with '}' */
  size_t total = hlen;        /* head without its '}', plus the closing '}' */
  for (size_t i = 0; i < sizeof members / sizeof members[0]; i++) {
    find_member(c, &members[i]);
    total += strlen(members[i].key) + 4 + members[i].len; /* ,"key": */
  }
  char *out = malloc(total + 1);
  if (!out) {
    free(head);
    return NULL;
  }
  size_t pos = hlen - 1;
  memcpy(out, head, pos);
  free(head);
  for (size_t i = 0; i < sizeof members / sizeof members[0]; i++)
    append_member(out, &pos, &members[i]);
  out[pos++] = '}';
  out[pos] = '\0';
  *len = pos;
  return out;
}

json_t *render_conversation_erased(const char *conversation_id) {
  return json_pack("{s:b,s:{s:s,s:b}}", "success", 1, "data", "conversationId", conversation_id,
                   "erased", 1);
}

json_t *render_webhook_accepted(const char *conversation_id, const char *webhook_id,
                                int64_t processed_us) {
  return json_pack("{s:b,s:s,s:{s:s,s:o,s:s,s:s}}", "success", 1, "message",
                   "Conversation data received successfully", "data", "conversationId",
                   conversation_id, "processedAt", time_or_null(true, processed_us, true), "status",
                   "processed", "webhookId", webhook_id);
}
