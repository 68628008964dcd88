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

json_t *render_conversation(const struct store_conversation *c) {
  int64_t end_us = c->start_us + c->duration * 1000000;
  return json_pack("{s:s,s:s,s:s,s:s,s:o,s:o,s:I,s:I,s:o}", "conversationId", c->conversation_id,
                   "emailId", c->email_id, "accountId", c->account_id, "status", c->status,
                   "startTime", time_or_null(c->has_start, c->start_us, false), "endTime",
                   time_or_null(c->has_start, end_us, false), "duration", (json_int_t)c->duration,
                   "messageCount", (json_int_t)c->message_count, "processedAt",
                   time_or_null(true, c->processed_us, true));
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

json_t *render_webhook_accepted(const char *conversation_id, const char *webhook_id,
                                int64_t processed_us) {
  return json_pack("{s:b,s:s,s:{s:s,s:o,s:s,s:s}}", "success", 1, "message",
                   "Conversation data received successfully", "data", "conversationId",
                   conversation_id, "processedAt", time_or_null(true, processed_us, true), "status",
                   "processed", "webhookId", webhook_id);
}
