/* ElevenLabs post-call events mapped to the conversation domain. The mapping is lenient on
 * purpose: ElevenLabs does not retry a 4xx, so anything an event may lack or send oddly (email,
 * account, agent, times, durations, messages) degrades to "unknown" instead of refusing the
 * event. Only what identifies the conversation (data.conversation_id) and what makes a turn a
 * turn (its role) are required. */
#include "model/elevenlabs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "core/utf8.h"
#include "model/body.h"
#include "model/json_raw.h"
#include "model/stored.h"

static bool is_exactly(json_t *v, const char *s) {
  size_t n = strlen(s);
  return json_is_string(v) && json_string_length(v) == n && memcmp(json_string_value(v), s, n) == 0;
}

/* A dynamic variable used as an identifier (emailId, accountId): a usable string, or an
 * integer as its decimal digits (ElevenLabs dynamic variables may be numbers: an account id
 * variable of type number arrives as 12345). A new reference, or NULL when unusable. */
static json_t *variable_id(json_t *v, size_t max) {
  const char *s = model_usable_id(v, max);
  if (s) return json_string(s);
  if (!json_is_integer(v)) return NULL;
  char digits[24];
  int n = snprintf(digits, sizeof digits, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
  return n > 0 && (size_t)n <= max ? json_string(digits) : NULL;
}

/* v as whole microseconds (a number of seconds, integer or not), false when it is not a
 * number or not within +-limit_s seconds. */
static bool seconds_to_us(json_t *v, double limit_s, int64_t *out) {
  if (json_is_integer(v)) {
    json_int_t i = json_integer_value(v);
    if (i < -(json_int_t)limit_s || i > (json_int_t)limit_s) return false;
    *out = (int64_t)i * 1000000;
    return true;
  }
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (!isfinite(d) || d < -limit_s || d > limit_s) return false;
    double us = d * 1e6; /* rounded to the nearest microsecond, without libm */
    *out = (int64_t)(us < 0 ? us - 0.5 : us + 0.5);
    return true;
  }
  return false;
}

/* metadata.call_duration_secs: whole seconds, clamped to 0..MODEL_COUNT_MAX (fractions are
 * dropped, a negative or non-numeric value is 0). */
static int64_t duration_secs(json_t *v) {
  double d;
  if (json_is_integer(v))
    d = (double)json_integer_value(v);
  else if (json_is_real(v))
    d = json_real_value(v);
  else
    return 0;
  if (!(d > 0)) return 0; /* also NaN */
  if (d >= (double)MODEL_COUNT_MAX) return MODEL_COUNT_MAX;
  return (int64_t)d;
}

/* The mapped conversation status: ElevenLabs' "done" is our "completed"; other statuses
 * ("failed", "processing", new ones) are kept when they fit the store, else "completed". */
static const char *map_status(json_t *v) {
  if (is_exactly(v, "done")) return "completed";
  if (is_exactly(v, "failed")) return "failed";
  const char *s = model_usable_id(v, MODEL_STATUS_MAX - 1);
  return s ? s : "completed";
}

/* data.failure_reason cut to MODEL_FAILURE_REASON_MAX bytes at a character boundary, control
 * characters replaced by spaces; NULL when absent or empty. */
static json_t *failure_reason(json_t *v) {
  if (!json_is_string(v) || json_string_length(v) == 0) return NULL;
  char buf[MODEL_FAILURE_REASON_MAX + 1];
  size_t n =
      model_elevenlabs_clean_reason(buf, sizeof buf, json_string_value(v), json_string_length(v));
  return json_stringn(buf, n);
}

size_t model_elevenlabs_clean_reason(char *out, size_t cap, const char *s, size_t n) {
  size_t len = utf8_sanitize(out, cap, s, n);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)out[i];
    if (c < 0x20 || c == 0x7f) out[i] = ' ';
    if (c == 0xc2 && i + 1 < len && (unsigned char)out[i + 1] >= 0x80 &&
        (unsigned char)out[i + 1] <= 0x9f) {
      out[i] = ' ';
      out[i + 1] = ' ';
    }
  }
  return len;
}

struct mapping {
  json_t *problems;
  size_t count;
};

static void problem(struct mapping *m, const char *field, const char *issue) {
  m->count++;
  if (m->count > MODEL_PROBLEMS_MAX) return;
  json_array_append_new(m->problems, json_pack("{s:s,s:s}", "field", field, "issue", issue));
}

static void check_conversation_id(struct mapping *m, json_t *data) {
  json_t *v = json_object_get(data, "conversation_id");
  if (!v || json_is_null(v)) {
    problem(m, "data.conversation_id", "is required");
    return;
  }
  if (!json_is_string(v)) {
    problem(m, "data.conversation_id", "must be a string");
    return;
  }
  size_t len = json_string_length(v);
  if (len == 0) {
    problem(m, "data.conversation_id", "must not be empty");
  } else if (len > MODEL_CONVERSATION_ID_MAX) {
    char issue[96];
    snprintf(issue, sizeof issue, "must be at most %d bytes (got %zu)", MODEL_CONVERSATION_ID_MAX,
             len);
    problem(m, "data.conversation_id", issue);
  } else if (!model_usable_id(v, MODEL_CONVERSATION_ID_MAX)) {
    problem(m, "data.conversation_id", "must not contain control characters");
  }
}

/* Checks every turn has a string role (all of them, so one answer lists every problem). */
static void check_turns(struct mapping *m, json_t *turns) {
  size_t i;
  json_t *t;
  char path[80];
  json_array_foreach(turns, i, t) {
    if (!json_is_object(t)) {
      snprintf(path, sizeof path, "data.transcript[%zu]", i);
      problem(m, path, "must be an object");
      continue;
    }
    json_t *role = json_object_get(t, "role");
    snprintf(path, sizeof path, "data.transcript[%zu].role", i);
    if (!role || json_is_null(role))
      problem(m, path, "is required");
    else if (!json_is_string(role))
      problem(m, path, "must be a string");
  }
}

static void copy_type_name(struct el_event *e, json_t *type) {
  if (!json_is_string(type)) return;
  size_t n = utf8_sanitize(e->type_name, sizeof e->type_name, json_string_value(type),
                           json_string_length(type));
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)e->type_name[i] < 0x20 || e->type_name[i] == 0x7f) e->type_name[i] = '?';
}

/* The raw text of data.<key> in body (valid JSON without duplicate keys), so the summary is
 * kept as received: re-serialising would change numbers (0.1, or integers beyond 64 bits). */
static bool raw_data_member(const char *body, size_t len, const char *key, const char **val,
                            size_t *val_len) {
  const char *data;
  size_t data_len;
  return json_raw_member(body, len, "data", &data, &data_len) &&
         json_raw_member(data, data_len, key, val, val_len);
}

/* Builds the derived body and e->conv for a transcription or a failed call. Returns false
 * only when out of memory. */
static bool derive(struct el_event *e, const struct el_names *names, const char *body,
                   size_t body_len) {
  json_t *data = json_object_get(e->root, "data");
  json_t *md = json_object_get(data, "metadata");
  json_t *vars = json_object_get(json_object_get(data, "conversation_initiation_client_data"),
                                 "dynamic_variables");
  bool failure = e->type == EL_CALL_INITIATION_FAILURE;
  const char *agent = model_usable_id(json_object_get(data, "agent_id"), MODEL_AGENT_ID_MAX);
  json_t *el_status = json_object_get(data, "status");

  /* Turn times are offsets from the call's start; without one, from the event's time. */
  const double limit_s = (double)(TIME_MAX_US / 1000000);
  int64_t base_us = 0;
  bool has_start = seconds_to_us(json_object_get(md, "start_time_unix_secs"), limit_s, &base_us);
  bool has_base =
      has_start || seconds_to_us(json_object_get(e->root, "event_timestamp"), limit_s, &base_us);
  int64_t start_us = base_us;
  bool start_from_turns = !has_start;

  /* Everything built hangs off out at once, so out is the one thing to release on failure. */
  json_t *out = json_object();
  json_t *transcript = json_array();
  json_t *meta = json_object();
  if (!out || json_object_set_new(out, "emailId", json_null()) ||
      json_object_set_new(out, "accountId", json_null()) ||
      json_object_set_new(out, "conversationId", json_string(e->conversation_id)) ||
      json_object_set_new(out, "transcript", transcript) ||
      json_object_set_new(out, "metadata", meta)) {
    json_decref(out);
    return false;
  }
  json_t *email = variable_id(json_object_get(vars, names->email_var), MODEL_EMAIL_ID_MAX);
  if (email && json_object_set_new(out, "emailId", email)) goto oom;
  json_t *account = variable_id(json_object_get(vars, names->account_var), MODEL_ACCOUNT_ID_MAX);
  if (account && json_object_set_new(out, "accountId", account)) goto oom;
  json_t *turns = failure ? NULL : json_object_get(data, "transcript");
  size_t i;
  json_t *t;
  json_array_foreach(turns, i, t) {
    json_t *msg = json_object_get(t, "message");
    json_t *ts = json_null();
    int64_t off_us;
    if (has_base && seconds_to_us(json_object_get(t, "time_in_call_secs"), limit_s, &off_us)) {
      int64_t us = base_us + off_us;
      char buf[40];
      if (time_format_us(us, false, buf, sizeof buf)) {
        ts = json_string(buf);
        if (start_from_turns && (!has_start || us < start_us)) {
          has_start = true;
          start_us = us;
        }
      }
    }
    char id[MODEL_CONVERSATION_ID_MAX + 32];
    snprintf(id, sizeof id, "%s:%zu", e->conversation_id, i);
    json_t *role = json_object_get(t, "role");
    json_t *turn = json_pack("{s:o,s:s%,s:o,s:s}", "timestamp", ts, "speaker",
                             json_string_value(role), json_string_length(role), "content",
                             json_is_string(msg)
                                 ? json_stringn(json_string_value(msg), json_string_length(msg))
                                 : json_string(""),
                             "messageId", id);
    if (!turn || json_array_append_new(transcript, turn) != 0) goto oom;
  }
  int64_t duration = duration_secs(json_object_get(md, "call_duration_secs"));
  int64_t count = (int64_t)json_array_size(transcript);
  const char *status = failure ? "failed" : map_status(el_status);

  if (json_object_set_new(meta, "agentId", agent ? json_string(agent) : json_null()) ||
      json_object_set_new(meta, "duration", json_integer(duration)) ||
      json_object_set_new(meta, "messageCount", json_integer(count)) ||
      json_object_set_new(meta, "platform", json_string("elevenlabs")) ||
      json_object_set_new(meta, "source", json_string("elevenlabs")))
    goto oom;
  if (json_is_string(el_status) && json_object_set_new(meta, "status",
                                                       json_stringn(json_string_value(el_status),
                                                                    json_string_length(el_status))))
    goto oom;
  json_t *reason = failure ? failure_reason(json_object_get(data, "failure_reason")) : NULL;
  if (reason && json_object_set_new(meta, "failureReason", reason)) goto oom;

  /* The text: out without its '}', then "summary" as data.analysis's raw bytes. */
  char *head = json_dumps(out, JSON_COMPACT);
  if (!head) goto oom;
  const char *raw = "null";
  size_t raw_len = 4;
  json_t *analysis = json_object_get(data, "analysis");
  if (!failure && analysis && !raw_data_member(body, body_len, "analysis", &raw, &raw_len)) {
    raw = "null"; /* cannot happen for a body jansson accepted */
    raw_len = 4;
  }
  size_t hlen = strlen(head);
  static const char key[] = ",\"summary\":";
  size_t total = hlen - 1 + sizeof key - 1 + raw_len + 1;
  char *text = malloc(total + 1);
  if (!text) {
    free(head);
    goto oom;
  }
  memcpy(text, head, hlen - 1);
  memcpy(text + hlen - 1, key, sizeof key - 1);
  memcpy(text + hlen - 1 + sizeof key - 1, raw, raw_len);
  text[total - 1] = '}';
  text[total] = '\0';
  free(head);
  if (json_object_set(out, "summary", !failure && analysis ? analysis : json_null())) {
    free(text);
    goto oom;
  }

  e->derived = text;
  e->derived_len = total;
  struct conversation_input *c = &e->conv;
  c->root = out;
  c->conversation_id = json_string_value(json_object_get(out, "conversationId"));
  c->email_id = json_string_value(json_object_get(out, "emailId"));
  c->account_id = json_string_value(json_object_get(out, "accountId"));
  c->agent_id = json_string_value(json_object_get(meta, "agentId"));
  c->status = status;
  c->failure_reason = json_string_value(json_object_get(meta, "failureReason"));
  /* Analytics: the platform is the derived body's metadata.platform ("elevenlabs"), as GET
   * shows it; the outcome is data.analysis.call_successful when it is a usable string (points
   * into e->root, which outlives conv). */
  c->platform = json_string_value(json_object_get(meta, "platform"));
  c->outcome =
      failure ? NULL
              : model_usable_id(json_object_get(analysis, "call_successful"), MODEL_AGENT_ID_MAX);
  /* startTime and endTime (start + duration) must be instants we can render: a start before
   * year 1, or so late that the end would pass year 9999, is treated as unknown (both null), never
   * a 400 (the seed endpoint refuses such a body; an ElevenLabs event is kept whatever its clock
   * says). */
  if (has_start && (start_us < TIME_MIN_US || start_us > TIME_MAX_US - duration * 1000000))
    has_start = false;
  c->has_start = has_start;
  c->start_us = has_start ? start_us : 0;
  c->duration = duration;
  c->message_count = count;
  return true;

oom:
  json_decref(out);
  return false;
}

enum model_result model_elevenlabs_parse(const char *body, size_t len, const struct el_names *names,
                                         struct el_event *out, json_t **problems, char *message,
                                         size_t message_len) {
  memset(out, 0, sizeof *out);
  *problems = NULL;
  /* The same rules as the seed endpoint (model_conversation_parse): no raw NUL, no duplicate
   * keys (a raw event read one way here and another way later must not exist), and integers
   * beyond 64 bits decoded as doubles rather than refused. */
  const size_t flags = JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL;
  json_t *root;
  bool ints_as_reals;
  enum model_result loaded =
      model_body_load(body, len, flags, &root, &ints_as_reals, message, message_len);
  if (loaded != MODEL_OK) return loaded;
  struct mapping m = {json_array(), 0};
  if (!m.problems) {
    json_decref(root);
    snprintf(message, message_len, "out of memory");
    return MODEL_NO_MEMORY;
  }
  if (!json_is_object(root)) {
    problem(&m, "", "request body must be a JSON object");
    goto invalid;
  }
  out->root = root;
  json_t *type = json_object_get(root, "type");
  json_t *data = json_object_get(root, "data");
  copy_type_name(out, type);
  if (is_exactly(type, "post_call_transcription"))
    out->type = EL_POST_CALL_TRANSCRIPTION;
  else if (is_exactly(type, "post_call_audio"))
    out->type = EL_POST_CALL_AUDIO;
  else if (is_exactly(type, "call_initiation_failure"))
    out->type = EL_CALL_INITIATION_FAILURE;
  else
    out->type = EL_OTHER;

  if (out->type == EL_OTHER) {
    out->conversation_id =
        model_usable_id(json_object_get(data, "conversation_id"), MODEL_CONVERSATION_ID_MAX);
    json_decref(m.problems);
    return MODEL_OK;
  }
  check_conversation_id(&m, data);
  if (out->type == EL_POST_CALL_TRANSCRIPTION) check_turns(&m, json_object_get(data, "transcript"));
  if (m.count) goto invalid;
  out->conversation_id = json_string_value(json_object_get(data, "conversation_id"));
  json_decref(m.problems);
  if (out->type == EL_POST_CALL_AUDIO) return MODEL_OK;
  if (!derive(out, names, body, len)) {
    model_elevenlabs_free(out);
    snprintf(message, message_len, "out of memory");
    return MODEL_NO_MEMORY;
  }
  return MODEL_OK;

invalid:
  model_body_problems(m.problems, m.count, message, message_len);
  json_decref(root);
  memset(out, 0, sizeof *out);
  *problems = m.problems;
  return MODEL_INVALID;
}

void model_elevenlabs_free(struct el_event *e) {
  json_decref(e->root);
  free(e->owned);
  free(e->derived);
  json_decref(e->conv.root);
  memset(e, 0, sizeof *e);
}
