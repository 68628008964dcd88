/* Outbox events and subscriptions (model/outbox.h). */
#include "model/outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"

static const char *const type_names[OUTBOX_TYPE_COUNT + 1] = {
    [OUTBOX_CREATED] = "conversation.created",         [OUTBOX_UPDATED] = "conversation.updated",
    [OUTBOX_AUDIO_ADDED] = "conversation.audio_added", [OUTBOX_FAILED] = "conversation.failed",
    [OUTBOX_DELETED] = "conversation.deleted",
};

const char *outbox_type_name(int type) {
  return type >= 1 && type <= OUTBOX_TYPE_COUNT ? type_names[type] : NULL;
}

int outbox_type_parse(const char *name) {
  for (int t = 1; t <= OUTBOX_TYPE_COUNT; t++)
    if (strcmp(type_names[t], name) == 0) return t;
  return 0;
}

char *outbox_event_render(int type, const char *id, int64_t created_us, const char *data,
                          size_t data_len, size_t *len) {
  const char *name = outbox_type_name(type);
  char ts[40];
  if (!name || !time_format_us(created_us, true, ts, sizeof ts)) return NULL;
  /* The names, the id and the time need no escaping: fixed alphabets. */
  static const char fmt[] = "{\"type\":\"%s\",\"id\":\"%s\",\"timestamp\":\"%s\",\"data\":";
  int head = snprintf(NULL, 0, fmt, name, id, ts);
  if (head < 0) return NULL;
  char *out = malloc((size_t)head + data_len + 2);
  if (!out) return NULL;
  snprintf(out, (size_t)head + 1, fmt, name, id, ts);
  memcpy(out + head, data, data_len);
  out[(size_t)head + data_len] = '}';
  out[(size_t)head + data_len + 1] = '\0';
  *len = (size_t)head + data_len + 1;
  return out;
}

char *outbox_deleted_data(const char *conversation_id, bool expired, size_t *len) {
  json_t *o = json_pack("{s:s,s:s}", "conversationId", conversation_id, "reason",
                        expired ? "expired" : "erased");
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (text) *len = strlen(text);
  return text;
}

const char *subscription_state(const struct subscription *s) {
  if (!s->enabled) return "disabled";
  return s->paused ? "paused" : "active";
}

static const char *const outcome_names[] = {
    [DELIVERY_DELIVERED] = "delivered", [DELIVERY_RETRY] = "retrying",
    [DELIVERY_FAILED] = "failed",       [DELIVERY_PAUSED] = "paused",
    [DELIVERY_DISABLED] = "disabled",
};

const char *delivery_outcome_name(int outcome) {
  return outcome >= DELIVERY_DELIVERED && outcome <= DELIVERY_DISABLED ? outcome_names[outcome]
                                                                       : NULL;
}

/* subscription_from_json and subscription_render: see model/outbox.h (the API's part). */
