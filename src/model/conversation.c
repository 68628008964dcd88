/* Validation of ConversationEndData, TranscriptMessage and ConversationMetadata. Every rule
 * adds a problem with the JSON path of the offending field instead of stopping at the first,
 * so a client fixes its payload in one round trip. Unknown fields are ignored here (the raw
 * body is stored whole). */
#include "model/conversation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "core/utf8.h"
#include "model/body.h"
#include "model/json_raw.h"
#include "model/stored.h"

struct problems {
  json_t *list;
  size_t count;
  /* Set when the body held an integer too big for 64 bits somewhere: it was then decoded with
   * every integer as a double, and integer fields are checked against their raw text. */
  bool ints_as_reals;
  const char *raw;
  size_t raw_len;
};

static void problem(struct problems *p, const char *field, const char *issue) {
  p->count++;
  if (p->count > MODEL_PROBLEMS_MAX) return;
  json_array_append_new(p->list, json_pack("{s:s,s:s}", "field", field, "issue", issue));
}

bool model_is_printable(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < len; i++) {
    if (u[i] < 0x20 || u[i] == 0x7f) return false;
    /* C1 controls U+0080..U+009F are encoded as C2 80..C2 9F. */
    if (u[i] == 0xc2 && i + 1 < len && u[i + 1] >= 0x80 && u[i + 1] <= 0x9f) return false;
  }
  return true;
}

/* Compares a JSON string with s, length included (strings may hold NUL bytes). */
static bool is_exactly(json_t *v, const char *s) {
  size_t n = strlen(s);
  return json_string_length(v) == n && memcmp(json_string_value(v), s, n) == 0;
}

/* Looks up a required member; reports it when absent or null. */
static json_t *required(struct problems *p, json_t *obj, const char *key, const char *path) {
  json_t *v = json_object_get(obj, key);
  if (!v || json_is_null(v)) {
    problem(p, path, "is required");
    return NULL;
  }
  return v;
}

static const char *check_string(struct problems *p, json_t *obj, const char *key,
                                const char *path) {
  json_t *v = required(p, obj, key, path);
  if (!v) return NULL;
  if (!json_is_string(v)) {
    problem(p, path, "must be a string");
    return NULL;
  }
  return json_string_value(v);
}

static const char *check_identifier(struct problems *p, json_t *obj, const char *key, size_t max) {
  const char *s = check_string(p, obj, key, key);
  if (!s) return NULL;
  size_t len = json_string_length(json_object_get(obj, key));
  char issue[96];
  if (len == 0) {
    problem(p, key, "must not be empty");
    return NULL;
  }
  if (len > max) {
    snprintf(issue, sizeof issue, "must be at most %zu bytes (got %zu)", max, len);
    problem(p, key, issue);
    return NULL;
  }
  if (strlen(s) != len || !model_is_printable(s, len)) {
    problem(p, key, "must not contain control characters");
    return NULL;
  }
  return s;
}

/* True when metadata.<key> is written as a plain integer literal in the raw body. */
static bool raw_metadata_is_integer(const struct problems *p, const char *key) {
  const char *md, *v;
  size_t md_len, v_len;
  if (!json_raw_member(p->raw, p->raw_len, "metadata", &md, &md_len) ||
      !json_raw_member(md, md_len, key, &v, &v_len) || v_len == 0)
    return false;
  for (size_t i = v[0] == '-' ? 1 : 0; i < v_len; i++)
    if (v[i] < '0' || v[i] > '9') return false;
  return true;
}

/* The value of an integer field, whichever way the body was decoded. */
static bool integer_value(const struct problems *p, json_t *v, const char *key, double *out) {
  if (json_is_integer(v)) {
    *out = (double)json_integer_value(v);
    return true;
  }
  if (p->ints_as_reals && json_is_real(v) && raw_metadata_is_integer(p, key)) {
    *out = json_real_value(v);
    return true;
  }
  return false;
}

static bool check_count(struct problems *p, json_t *obj, const char *key, const char *path,
                        int64_t *out) {
  json_t *v = required(p, obj, key, path);
  if (!v) return false;
  double d;
  if (!integer_value(p, v, key, &d) || d < 0 || d > MODEL_COUNT_MAX) {
    problem(p, path, "must be an integer from 0 to 2147483647");
    return false;
  }
  *out = (int64_t)d;
  return true;
}

/* Optional member that, when present and not null, must be an object. */
static void check_optional_object(struct problems *p, json_t *obj, const char *key,
                                  const char *path) {
  json_t *v = json_object_get(obj, key);
  if (v && !json_is_null(v) && !json_is_object(v)) problem(p, path, "must be an object or null");
}

static void check_message(struct problems *p, json_t *m, size_t idx,
                          struct conversation_input *out) {
  char path[96], base[48];
  snprintf(base, sizeof base, "transcript[%zu]", idx);
  if (!json_is_object(m)) {
    problem(p, base, "must be an object");
    return;
  }
  snprintf(path, sizeof path, "%s.timestamp", base);
  const char *ts = check_string(p, m, "timestamp", path);
  int64_t us;
  if (ts) {
    size_t len = json_string_length(json_object_get(m, "timestamp"));
    if (!time_parse_rfc3339(ts, len, &us)) {
      problem(p, path, "must be an RFC 3339 date-time such as 2024-01-15T10:30:00Z");
    } else if (!out->has_start || us < out->start_us) {
      out->has_start = true;
      out->start_us = us;
    }
  }
  snprintf(path, sizeof path, "%s.speaker", base);
  const char *speaker = check_string(p, m, "speaker", path);
  if (speaker && !is_exactly(json_object_get(m, "speaker"), "user") &&
      !is_exactly(json_object_get(m, "speaker"), "agent"))
    problem(p, path, "must be \"user\" or \"agent\"");
  snprintf(path, sizeof path, "%s.content", base);
  (void)check_string(p, m, "content", path);
  snprintf(path, sizeof path, "%s.messageId", base);
  (void)check_string(p, m, "messageId", path);
  snprintf(path, sizeof path, "%s.metadata", base);
  check_optional_object(p, m, "metadata", path);
}

static void check_transcript(struct problems *p, json_t *root, struct conversation_input *out) {
  json_t *t = required(p, root, "transcript", "transcript");
  if (!t) return;
  if (!json_is_array(t)) {
    problem(p, "transcript", "must be an array");
    return;
  }
  if (json_array_size(t) > MODEL_TRANSCRIPT_MAX) {
    problem(p, "transcript", "must have at most 10000 messages");
    return;
  }
  size_t i;
  json_t *m;
  json_array_foreach(t, i, m) check_message(p, m, i, out);
}

static void check_metadata(struct problems *p, json_t *root, struct conversation_input *out) {
  json_t *md = required(p, root, "metadata", "metadata");
  if (!md) return;
  if (!json_is_object(md)) {
    problem(p, "metadata", "must be an object");
    return;
  }
  json_t *sid = json_object_get(md, "sessionId");
  if (sid && !json_is_null(sid) && !json_is_string(sid))
    problem(p, "metadata.sessionId", "must be a string or null");
  (void)check_string(p, md, "agentId", "metadata.agentId");
  (void)check_count(p, md, "duration", "metadata.duration", &out->duration);
  (void)check_count(p, md, "messageCount", "metadata.messageCount", &out->message_count);
  (void)check_string(p, md, "platform", "metadata.platform");
  (void)check_string(p, md, "userAgent", "metadata.userAgent");
}

/* Every rule here is also checked by the fast path (model/conv_fast.c, which must never accept
 * what this refuses): a rule added or tightened here must be added there too, and
 * tests/unit/test_conv_fast.c given a body that meets it. */
static void validate(struct problems *p, json_t *root, struct conversation_input *out) {
  if (!json_is_object(root)) {
    problem(p, "", "request body must be a JSON object");
    return;
  }
  out->email_id = check_identifier(p, root, "emailId", MODEL_EMAIL_ID_MAX);
  out->account_id = check_identifier(p, root, "accountId", MODEL_ACCOUNT_ID_MAX);
  out->conversation_id = check_identifier(p, root, "conversationId", MODEL_CONVERSATION_ID_MAX);
  check_transcript(p, root, out);
  size_t before = p->count;
  check_metadata(p, root, out);
  /* endTime is startTime + duration: an instant we must be able to render, like startTime. */
  if (out->has_start && p->count == before && out->start_us > TIME_MAX_US - out->duration * 1000000)
    problem(p, "metadata.duration",
            "puts endTime (earliest transcript timestamp + duration) after year 9999");
  check_optional_object(p, root, "summary", "summary");
}

const char *model_usable_id(json_t *v, size_t max) {
  if (!json_is_string(v)) return NULL;
  const char *s = json_string_value(v);
  size_t len = json_string_length(v);
  if (len == 0 || len > max || strlen(s) != len || !model_is_printable(s, len)) return NULL;
  return s;
}

enum model_result model_conversation_parse(const char *body, size_t len,
                                           struct conversation_input *out, json_t **problems,
                                           char *message, size_t message_len) {
  memset(out, 0, sizeof *out);
  *problems = NULL;
  const size_t flags = JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL;
  struct problems p = {NULL, 0, false, body, len};
  json_t *root;
  enum model_result loaded =
      model_body_load(body, len, flags, &root, &p.ints_as_reals, message, message_len);
  if (loaded != MODEL_OK) return loaded;
  p.list = json_array();
  validate(&p, root, out);
  if (p.count == 0) {
    json_decref(p.list);
    out->root = root;
    out->status = "completed";
    /* metadata.agentId as stored: only a value the store can hold. Anything else reads back
     * as unknown rather than refusing a payload that was always accepted. */
    out->agent_id = model_usable_id(json_object_get(json_object_get(root, "metadata"), "agentId"),
                                    MODEL_AGENT_ID_MAX);
    out->failure_reason = NULL;
    /* metadata.platform likewise (analytics' platform dimension); a seed webhook has no
     * outcome. */
    out->platform = model_usable_id(json_object_get(json_object_get(root, "metadata"), "platform"),
                                    MODEL_AGENT_ID_MAX);
    out->outcome = NULL;
    return MODEL_OK;
  }
  model_body_problems(p.list, p.count, message, message_len);
  json_decref(root);
  memset(out, 0, sizeof *out);
  *problems = p.list;
  return MODEL_INVALID;
}

void model_conversation_free(struct conversation_input *in) {
  json_decref(in->root);
  free(in->owned);
  memset(in, 0, sizeof *in);
}
