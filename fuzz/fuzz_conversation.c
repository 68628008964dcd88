/* The webhook body validator (model/conversation.c), fed any bytes as a client could send.
 * Differential: whenever the fast path (model/conv_fast.c) accepts a body, the jansson path
 * accepts it too, with the same struct values (the fast path's invariant).
 * Properties: an accepted body is valid UTF-8 with identifiers inside their limits; every
 * message and problem list can be turned into our JSON error envelope (valid UTF-8, so
 * jansson can encode it); an accepted body renders (render_conversation_detail) into valid
 * JSON whose transcript, metadata and summary equal what was received. */
#include <jansson.h>
#include <string.h>

#include "core/utf8.h"
#include "fuzz.h"
#include "model/conv_fast.h"
#include "model/conversation.h"
#include "model/render.h"

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

static void check_rendered(const char *body, size_t len, const struct conversation_input *in) {
  struct store_conversation c;
  memset(&c, 0, sizeof c);
  snprintf(c.conversation_id, sizeof c.conversation_id, "%s", in->conversation_id);
  snprintf(c.email_id, sizeof c.email_id, "%s", in->email_id);
  snprintf(c.account_id, sizeof c.account_id, "%s", in->account_id);
  snprintf(c.status, sizeof c.status, "processed");
  c.has_start = in->has_start;
  c.start_us = in->start_us;
  c.duration = in->duration;
  c.message_count = in->message_count;
  c.processed_us = 1700000000000000;
  c.body = (char *)body;
  c.body_len = len;
  size_t out_len = 0;
  char *out = render_conversation_detail(&c, &out_len);
  FUZZ_CHECK(out != NULL);
  json_error_t err;
  json_t *doc = json_loadb(out, out_len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);
  FUZZ_CHECK(doc != NULL);
  json_t *orig = json_loadb(body, len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);
  FUZZ_CHECK(orig != NULL);
  static const char *const members[] = {"transcript", "metadata", "summary"};
  for (size_t i = 0; i < 3; i++) {
    json_t *want = json_object_get(orig, members[i]);
    json_t *got = json_object_get(doc, members[i]);
    FUZZ_CHECK(got != NULL);
    FUZZ_CHECK(want ? json_equal(want, got) : json_is_null(got));
  }
  /* startTime and endTime are both present or both null: never an end without a start. */
  FUZZ_CHECK(json_is_null(json_object_get(doc, "startTime")) ==
             json_is_null(json_object_get(doc, "endTime")));
  FUZZ_CHECK(json_is_null(json_object_get(doc, "startTime")) == !in->has_start);
  json_decref(orig);
  json_decref(doc);
  free(out);
}

static bool same_text(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The fast path's answer against the jansson path's (old: MODEL_OK). */
static void check_same(const struct conversation_input *fast,
                       const struct conversation_input *old) {
  FUZZ_CHECK(fast->root == NULL);
  FUZZ_CHECK(same_text(fast->conversation_id, old->conversation_id));
  FUZZ_CHECK(same_text(fast->email_id, old->email_id));
  FUZZ_CHECK(same_text(fast->account_id, old->account_id));
  FUZZ_CHECK(same_text(fast->status, old->status));
  FUZZ_CHECK(same_text(fast->agent_id, old->agent_id));
  FUZZ_CHECK(same_text(fast->failure_reason, old->failure_reason));
  FUZZ_CHECK(same_text(fast->platform, old->platform));
  FUZZ_CHECK(same_text(fast->outcome, old->outcome));
  FUZZ_CHECK(fast->has_start == old->has_start);
  FUZZ_CHECK(!old->has_start || fast->start_us == old->start_us);
  FUZZ_CHECK(fast->duration == old->duration);
  FUZZ_CHECK(fast->message_count == old->message_count);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *body = (const char *)data;
  struct conversation_input in, fast;
  json_t *problems = NULL;
  char message[256];
  bool fast_ok = model_conv_scan(body, size, &fast);
  enum model_result r =
      model_conversation_parse(body, size, &in, &problems, message, sizeof message);
  FUZZ_CHECK(!fast_ok || r == MODEL_OK);
  if (fast_ok) {
    check_same(&fast, &in);
    model_conversation_free(&fast);
  } else {
    FUZZ_CHECK(fast.owned == NULL && fast.conversation_id == NULL);
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
      FUZZ_CHECK(utf8_valid(body, size));
      FUZZ_CHECK(memchr(body, '\0', size) == NULL); /* raw NUL is never JSON */
      FUZZ_CHECK(in.conversation_id && in.email_id && in.account_id);
      FUZZ_CHECK(strlen(in.conversation_id) >= 1 &&
                 strlen(in.conversation_id) <= MODEL_CONVERSATION_ID_MAX);
      FUZZ_CHECK(strlen(in.email_id) >= 1 && strlen(in.email_id) <= MODEL_EMAIL_ID_MAX);
      FUZZ_CHECK(strlen(in.account_id) >= 1 && strlen(in.account_id) <= MODEL_ACCOUNT_ID_MAX);
      FUZZ_CHECK(model_is_printable(in.conversation_id, strlen(in.conversation_id)));
      FUZZ_CHECK(in.duration >= 0 && in.duration <= MODEL_COUNT_MAX);
      FUZZ_CHECK(in.message_count >= 0 && in.message_count <= MODEL_COUNT_MAX);
      check_rendered(body, size, &in);
      model_conversation_free(&in);
      break;
  }
  return 0;
}
