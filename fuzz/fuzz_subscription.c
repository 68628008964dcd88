/* The subscription validator (model/outbox.c), reached by POST and PATCH
 * /api/v1/subscriptions bodies. Properties: a body is accepted or refused with a non-empty list
 * of {"field","issue"} problems; an accepted create has an http(s) URL (its scheme in any case,
 * RFC 3986) of at most OUTBOX_URL_MAX bytes and known types only; what it accepts renders, and
 * the rendered members are accepted back as a PATCH that changes nothing; at most
 * MODEL_PROBLEMS_MAX problems are listed (one more entry counts the rest). */
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "model/outbox.h"

static void check_problems(json_t *problems) {
  FUZZ_CHECK(json_is_array(problems) && json_array_size(problems) > 0);
  FUZZ_CHECK(json_array_size(problems) <= MODEL_PROBLEMS_MAX + 1); /* the rest only counted */
  size_t i;
  json_t *p;
  json_array_foreach(problems, i, p) {
    FUZZ_CHECK(json_is_string(json_object_get(p, "field")));
    FUZZ_CHECK(json_string_length(json_object_get(p, "issue")) > 0);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  json_error_t err;
  json_t *body = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &err);
  if (!body) return 0;
  struct subscription *sub = calloc(1, sizeof *sub);
  if (!sub) {
    json_decref(body);
    return 0;
  }
  json_t *problems = subscription_from_json(body, true, sub);
  if (problems) {
    check_problems(problems);
    json_decref(problems);
  } else {
    size_t len = strlen(sub->url);
    FUZZ_CHECK(len <= OUTBOX_URL_MAX);
    FUZZ_CHECK(strncasecmp(sub->url, "http://", 7) == 0 ||
               strncasecmp(sub->url, "https://", 8) == 0);
    FUZZ_CHECK(sub->event_types != 0 && (sub->event_types & ~OUTBOX_TYPES_ALL) == 0);
    FUZZ_CHECK(sub->max_per_second >= 0 && sub->max_per_second <= 100000);
    memcpy(sub->id, "sub_0123456789abcdef01234567", 29);
    json_t *o = subscription_render(sub, false);
    FUZZ_CHECK(o != NULL);
    json_object_del(o, "id");
    json_object_del(o, "state");
    json_object_del(o, "disabledReason");
    json_object_del(o, "createdAt");
    json_object_del(o, "updatedAt");
    struct subscription *again = malloc(sizeof *again);
    if (again) {
      memcpy(again, sub, sizeof *sub);
      json_t *p2 = subscription_from_json(o, false, again);
      FUZZ_CHECK(p2 == NULL);
      FUZZ_CHECK(memcmp(again, sub, sizeof *sub) == 0);
      free(again);
    }
    json_decref(o);
  }
  /* the same body as a PATCH of what was accepted (or of nothing) */
  problems = subscription_from_json(body, false, sub);
  if (problems) {
    check_problems(problems);
    json_decref(problems);
  }
  free(sub);
  json_decref(body);
  return 0;
}
