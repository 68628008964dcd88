/* The ElevenLabs event mapping (model/elevenlabs.c), fed any bytes as a client could send.
 * Properties: every message and problem list can be turned into our JSON error envelope; an
 * accepted event of a known type names a storable conversation id; the derived seed-shaped body
 * is valid JSON (and UTF-8) agreeing with the struct over it: identifiers within the store's
 * limits, a short printable status, as many turns as messageCount, each turn's messageId
 * "<id>:<index>"; and it renders (render_conversation_detail) with startTime/endTime both set
 * or both null. Differential: whenever the fast path (model/el_fast.c) accepts an event, the
 * jansson path accepts it too, with the same type, ids, struct values and derived body, byte for
 * byte (the fast path's invariant). */
#include <jansson.h>
#include <string.h>

#include "core/utf8.h"
#include "fuzz.h"
#include "model/el_fast.h"
#include "model/elevenlabs.h"
#include "model/render.h"
#include "model/stored.h"

static void check_envelope(const char *message, json_t *details) {
  FUZZ_CHECK(utf8_valid(message, strlen(message)));
  json_t *body = json_pack("{s:b,s:{s:s,s:s,s:O}}", "success", 0, "error", "code", "X", "message",
                           message, "details", details ? details : json_null());
  FUZZ_CHECK(body != NULL);
  char *text = json_dumps(body, JSON_COMPACT);
  FUZZ_CHECK(text != NULL);
  free(text);
  json_decref(body);
}

static void check_optional_id(const char *s, size_t max) {
  if (!s) return;
  size_t n = strlen(s);
  FUZZ_CHECK(n >= 1 && n <= max && model_is_printable(s, n));
}

static json_t *load(const char *text, size_t len) {
  const size_t flags = JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL;
  json_error_t err;
  json_t *j = json_loadb(text, len, flags, &err);
  if (!j && json_error_code(&err) == json_error_numeric_overflow)
    j = json_loadb(text, len, flags | JSON_DECODE_INT_AS_REAL, &err);
  return j;
}

static void check_derived(const struct el_event *e) {
  const struct conversation_input *c = &e->conv;
  FUZZ_CHECK(e->derived != NULL && c->root != NULL);
  FUZZ_CHECK(strlen(e->derived) == e->derived_len);
  FUZZ_CHECK(utf8_valid(e->derived, e->derived_len));
  json_t *d = load(e->derived, e->derived_len);
  FUZZ_CHECK(d != NULL && json_is_object(d));
  FUZZ_CHECK(c->conversation_id && strcmp(c->conversation_id, e->conversation_id) == 0);
  check_optional_id(c->email_id, MODEL_EMAIL_ID_MAX);
  check_optional_id(c->account_id, MODEL_ACCOUNT_ID_MAX);
  check_optional_id(c->agent_id, MODEL_AGENT_ID_MAX);
  FUZZ_CHECK(c->status && strlen(c->status) >= 1 && strlen(c->status) < MODEL_STATUS_MAX);
  FUZZ_CHECK(model_is_printable(c->status, strlen(c->status)));
  if (c->failure_reason) {
    size_t n = strlen(c->failure_reason);
    FUZZ_CHECK(n >= 1 && n <= MODEL_FAILURE_REASON_MAX && utf8_valid(c->failure_reason, n));
    FUZZ_CHECK(e->type == EL_CALL_INITIATION_FAILURE);
  }
  if (e->type == EL_CALL_INITIATION_FAILURE) FUZZ_CHECK(strcmp(c->status, "failed") == 0);
  FUZZ_CHECK(c->duration >= 0 && c->duration <= MODEL_COUNT_MAX);
  json_t *turns = json_object_get(d, "transcript");
  FUZZ_CHECK(json_is_array(turns));
  FUZZ_CHECK((int64_t)json_array_size(turns) == c->message_count);
  size_t i;
  json_t *t;
  char id[MODEL_CONVERSATION_ID_MAX + 32];
  json_array_foreach(turns, i, t) {
    snprintf(id, sizeof id, "%s:%zu", c->conversation_id, i);
    FUZZ_CHECK(strcmp(json_string_value(json_object_get(t, "messageId")), id) == 0);
    FUZZ_CHECK(json_is_string(json_object_get(t, "speaker")));
    FUZZ_CHECK(json_is_string(json_object_get(t, "content")));
    json_t *ts = json_object_get(t, "timestamp");
    FUZZ_CHECK(json_is_null(ts) || json_is_string(ts));
  }
  json_t *email = json_object_get(d, "emailId");
  FUZZ_CHECK(c->email_id ? strcmp(json_string_value(email), c->email_id) == 0
                         : json_is_null(email));

  struct store_conversation sc;
  memset(&sc, 0, sizeof sc);
  snprintf(sc.conversation_id, sizeof sc.conversation_id, "%s", c->conversation_id);
  snprintf(sc.status, sizeof sc.status, "%s", c->status);
  sc.has_start = c->has_start;
  sc.start_us = c->start_us;
  sc.duration = c->duration;
  sc.message_count = c->message_count;
  sc.processed_us = 1700000000000000;
  sc.body = e->derived;
  sc.body_len = e->derived_len;
  size_t out_len = 0;
  char *out = render_conversation_detail(&sc, &out_len);
  FUZZ_CHECK(out != NULL);
  json_t *doc = load(out, out_len);
  FUZZ_CHECK(doc != NULL);
  FUZZ_CHECK(json_is_null(json_object_get(doc, "startTime")) ==
             json_is_null(json_object_get(doc, "endTime")));
  FUZZ_CHECK(json_equal(json_object_get(doc, "transcript"), turns));
  json_decref(doc);
  free(out);
  json_decref(d);
}

static bool same_text(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The fast path's answer against the jansson path's (old: MODEL_OK). */
static void check_same(const struct el_event *fast, const struct el_event *old) {
  FUZZ_CHECK(fast->root == NULL && fast->conv.root == NULL);
  FUZZ_CHECK(fast->type == old->type);
  FUZZ_CHECK(strcmp(fast->type_name, old->type_name) == 0);
  FUZZ_CHECK(same_text(fast->conversation_id, old->conversation_id));
  FUZZ_CHECK(fast->derived_len == old->derived_len);
  FUZZ_CHECK(same_text(fast->derived, old->derived));
  if (!old->derived) return;
  const struct conversation_input *a = &fast->conv, *b = &old->conv;
  FUZZ_CHECK(same_text(a->conversation_id, b->conversation_id));
  FUZZ_CHECK(same_text(a->email_id, b->email_id));
  FUZZ_CHECK(same_text(a->account_id, b->account_id));
  FUZZ_CHECK(same_text(a->status, b->status));
  FUZZ_CHECK(same_text(a->agent_id, b->agent_id));
  FUZZ_CHECK(same_text(a->failure_reason, b->failure_reason));
  FUZZ_CHECK(same_text(a->platform, b->platform));
  FUZZ_CHECK(same_text(a->outcome, b->outcome));
  FUZZ_CHECK(a->has_start == b->has_start && a->start_us == b->start_us);
  FUZZ_CHECK(a->duration == b->duration && a->message_count == b->message_count);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const struct el_names names = {"user_email", "account_id"};
  struct el_event e, fast;
  json_t *problems = NULL;
  char message[256];
  bool fast_ok = model_elevenlabs_scan((const char *)data, size, &names, &fast);
  enum model_result r = model_elevenlabs_parse((const char *)data, size, &names, &e, &problems,
                                               message, sizeof message);
  FUZZ_CHECK(!fast_ok || r == MODEL_OK);
  if (fast_ok) {
    check_same(&fast, &e);
    model_elevenlabs_free(&fast);
  } else {
    FUZZ_CHECK(fast.owned == NULL && fast.derived == NULL && fast.conversation_id == NULL);
  }
  switch (r) {
    case MODEL_INVALID_JSON:
      FUZZ_CHECK(problems == NULL);
      check_envelope(message, NULL);
      break;
    case MODEL_NO_MEMORY: /* libFuzzer's malloc limit */
      FUZZ_CHECK(problems == NULL);
      break;
    case MODEL_INVALID:
      FUZZ_CHECK(problems != NULL && json_array_size(problems) > 0);
      FUZZ_CHECK(json_array_size(problems) <= MODEL_PROBLEMS_MAX + 1);
      check_envelope(message, problems);
      json_decref(problems);
      break;
    case MODEL_OK:
      FUZZ_CHECK(problems == NULL && e.root != NULL);
      FUZZ_CHECK(utf8_valid((const char *)data, size));
      FUZZ_CHECK(strlen(e.type_name) <= EL_TYPE_MAX);
      FUZZ_CHECK(utf8_valid(e.type_name, strlen(e.type_name)));
      if (e.type != EL_OTHER) FUZZ_CHECK(e.conversation_id != NULL);
      check_optional_id(e.conversation_id, MODEL_CONVERSATION_ID_MAX);
      if (e.type == EL_POST_CALL_TRANSCRIPTION || e.type == EL_CALL_INITIATION_FAILURE)
        check_derived(&e);
      else
        FUZZ_CHECK(e.derived == NULL && e.conv.root == NULL);
      model_elevenlabs_free(&e);
      break;
  }
  return 0;
}
