/* Outbox events and subscriptions (model/outbox.h). */
#include "model/outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/timeutil.h"
#include "core/utf8.h"
#include "model/body.h"

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

/* The attempt that used the schedule up failed either way; what followed (the subscription
 * paused, the event waiting for it) shows in the subscription's state. */
static const char *const outcome_names[] = {
    [DELIVERY_DELIVERED] = "delivered", [DELIVERY_RETRY] = "retrying",
    [DELIVERY_FAILED] = "failed",       [DELIVERY_PAUSED] = "failed",
    [DELIVERY_DISABLED] = "disabled",
};

const char *delivery_outcome_name(int outcome) {
  return outcome >= DELIVERY_DELIVERED && outcome <= DELIVERY_DISABLED ? outcome_names[outcome]
                                                                       : NULL;
}

/* subscription_from_json and subscription_render: see model/outbox.h (the API's part). */

/* The problems found so far: at most MODEL_PROBLEMS_MAX are listed, the rest only counted (a
 * body of 200,000 unknown members or repeated types would otherwise be answered with 30 MB). */
struct problems {
  json_t *list;
  size_t count;
};

static void problem(struct problems *problems, const char *field, const char *issue) {
  if (problems->count++ >= MODEL_PROBLEMS_MAX) return;
  json_t *p = json_pack("{s:s,s:s}", "field", field, "issue", issue);
  /* Never lose a problem: a field that cannot be packed is named by its place instead. */
  if (!p) p = json_pack("{s:s,s:s}", "field", "(member)", "issue", issue);
  json_array_append_new(problems->list, p);
}

/* Why url is not an absolute http(s) URL a subscription may name, or NULL. Only the text:
 * where it leads (SSRF) is outbound/'s to tell. */
static const char *url_problem(const char *url, size_t len) {
  size_t scheme;
  /* the scheme is case-insensitive (RFC 3986 section 3.1): HTTPS:// is https:// */
  if (strncasecmp(url, "https://", 8) == 0)
    scheme = 8;
  else if (strncasecmp(url, "http://", 7) == 0)
    scheme = 7;
  else
    return "must be an absolute http:// or https:// URL";
  if (len > OUTBOX_URL_MAX) return "must be at most 2048 bytes";
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)url[i];
    if (c <= 0x20 || c >= 0x7f)
      return "must not contain spaces, control characters or non-ASCII characters (percent-encode "
             "them)";
  }
  if (strchr(url, '#')) return "must not have a fragment (#...)";
  const char *host = url + scheme;
  size_t auth_len = strcspn(host, "/?");
  if (memchr(host, '@', auth_len)) return "must not hold credentials (user:password@)";
  if (auth_len == 0) return "must name a host";
  /* host, [IPv6] or a name, then an optional :port */
  const char *end = host + auth_len, *port = NULL;
  if (host[0] == '[') {
    const char *close = memchr(host, ']', auth_len);
    if (!close || close == host + 1) return "must name a host (an IPv6 address in [...])";
    for (const char *c = host + 1; c < close; c++)
      if (!strchr("0123456789abcdefABCDEF:.", *c)) return "holds a malformed IPv6 address";
    if (close + 1 < end) {
      if (close[1] != ':') return "must name a host";
      port = close + 2;
    }
  } else {
    const char *colon = memchr(host, ':', auth_len);
    size_t host_len = colon ? (size_t)(colon - host) : auth_len;
    if (host_len == 0) return "must name a host";
    for (size_t i = 0; i < host_len; i++) {
      char c = host[i];
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '%'))
        return "must name a host: letters, digits, '-', '.' (or an IPv6 address in [...])";
    }
    if (colon) port = colon + 1;
  }
  if (port) {
    if (port == end) return "must have a port number after ':'";
    long v = 0;
    for (const char *c = port; c < end; c++) {
      if (*c < '0' || *c > '9' || c - port >= 5) return "must have a port from 1 to 65535";
      v = v * 10 + (*c - '0');
    }
    if (v < 1 || v > 65535) return "must have a port from 1 to 65535";
  }
  return NULL;
}

static void read_url(json_t *v, struct problems *problems, struct subscription *out) {
  if (!json_is_string(v)) {
    problem(problems, "url", "must be a string: an absolute http:// or https:// URL");
    return;
  }
  const char *s = json_string_value(v);
  size_t len = json_string_length(v);
  const char *why = strlen(s) != len ? "must not contain NUL characters" : url_problem(s, len);
  if (why) {
    problem(problems, "url", why);
    return;
  }
  memcpy(out->url, s, len + 1);
}

static void read_event_types(json_t *v, struct problems *problems, struct subscription *out) {
  if (!json_is_array(v) || json_array_size(v) == 0) {
    problem(problems, "eventTypes",
            "must be a non-empty array of event types (conversation.created, "
            "conversation.updated, conversation.audio_added, conversation.failed, "
            "conversation.deleted); leave it out for every type");
    return;
  }
  unsigned types = 0;
  bool ok = true;
  size_t i;
  json_t *item;
  char field[40];
  json_array_foreach(v, i, item) {
    snprintf(field, sizeof field, "eventTypes[%zu]", i);
    int t = json_is_string(item) && strlen(json_string_value(item)) == json_string_length(item)
                ? outbox_type_parse(json_string_value(item))
                : 0;
    if (!t) {
      problem(problems, field,
              "must be one of conversation.created, conversation.updated, "
              "conversation.audio_added, conversation.failed, conversation.deleted");
      ok = false;
    } else if (types & (1u << t)) {
      problem(problems, field, "is named twice");
      ok = false;
    } else {
      types |= 1u << t;
    }
  }
  if (ok) out->event_types = types;
}

static void read_account(json_t *v, struct problems *problems, struct subscription *out) {
  if (json_is_null(v)) {
    out->account_id[0] = '\0';
    return;
  }
  const char *s = model_usable_id(v, MODEL_ACCOUNT_ID_MAX);
  if (!s) {
    problem(problems, "accountId",
            "must be an account id (1 to 256 bytes, no control characters), or null for every "
            "account");
    return;
  }
  memcpy(out->account_id, s, strlen(s) + 1);
}

static void read_max_per_second(json_t *v, struct problems *problems, struct subscription *out) {
  if (json_is_null(v)) {
    out->max_per_second = 0;
    return;
  }
  if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 100000) {
    problem(problems, "maxPerSecond", "must be an integer from 1 to 100000, or null for no limit");
    return;
  }
  out->max_per_second = json_integer_value(v);
}

json_t *subscription_from_json(json_t *body, bool create, struct subscription *out) {
  struct problems all = {json_array(), 0}, *problems = &all;
  if (!all.list) return NULL;
  if (!json_is_object(body)) {
    problem(problems, "body", "must be a JSON object");
    return all.list;
  }
  if (create) {
    out->event_types = OUTBOX_TYPES_ALL;
    out->account_id[0] = '\0';
    out->enabled = true;
    out->paused = false;
    out->max_per_second = 0;
    out->disabled_reason[0] = '\0';
    out->url[0] = '\0';
  }
  const char *key;
  json_t *v;
  json_object_foreach(body, key, v) {
    if (strcmp(key, "url") == 0) {
      read_url(v, problems, out);
    } else if (strcmp(key, "eventTypes") == 0) {
      read_event_types(v, problems, out);
    } else if (strcmp(key, "accountId") == 0) {
      read_account(v, problems, out);
    } else if (strcmp(key, "enabled") == 0) {
      if (!json_is_boolean(v)) {
        problem(problems, "enabled", "must be true or false");
      } else {
        out->enabled = json_is_true(v);
        /* Enabled by its owner: whatever the service paused or disabled it for is over. */
        if (out->enabled) {
          out->paused = false;
          out->disabled_reason[0] = '\0';
        }
      }
    } else if (strcmp(key, "maxPerSecond") == 0) {
      read_max_per_second(v, problems, out);
    } else {
      /* The member's name as the field: jansson keys are valid UTF-8; a long one is cut at a
       * character boundary (a cut inside a character would not be a JSON string, and the
       * problem would be lost). */
      char field[80] = "";
      if (all.count < MODEL_PROBLEMS_MAX) utf8_sanitize(field, sizeof field, key, strlen(key));
      problem(problems, field,
              "is not a member of a subscription (url, eventTypes, accountId, enabled, "
              "maxPerSecond)");
    }
  }
  if (create && !json_object_get(body, "url"))
    problem(problems, "url", "is required: the absolute http:// or https:// URL to deliver to");
  if (all.count == 0) {
    json_decref(all.list);
    return NULL;
  }
  char message[96];
  model_body_problems(all.list, all.count, message, sizeof message);
  return all.list;
}

static json_t *time_or_null(int64_t us) {
  char buf[40];
  return us && time_format_us(us, false, buf, sizeof buf) ? json_string(buf) : json_null();
}

json_t *subscription_render(const struct subscription *s, bool with_secret) {
  json_t *types = json_array();
  if (!types) return NULL;
  for (int t = 1; t <= OUTBOX_TYPE_COUNT; t++)
    if (s->event_types & (1u << t)) json_array_append_new(types, json_string(type_names[t]));
  json_t *o = json_pack(
      "{s:s,s:s,s:o,s:o,s:b,s:o,s:s,s:o,s:o,s:o}", "id", s->id, "url", s->url, "eventTypes", types,
      "accountId", s->account_id[0] ? json_string(s->account_id) : json_null(), "enabled",
      s->enabled, "maxPerSecond",
      s->max_per_second ? json_integer((json_int_t)s->max_per_second) : json_null(), "state",
      subscription_state(s), "disabledReason",
      s->disabled_reason[0] ? json_string(s->disabled_reason) : json_null(), "createdAt",
      time_or_null(s->created_us), "updatedAt", time_or_null(s->updated_us));
  if (o && s->hold_until_us > 0 &&
      json_object_set_new(o, "heldUntil", time_or_null(s->hold_until_us)) != 0) {
    json_decref(o);
    return NULL;
  }
  if (o && with_secret && json_object_set_new(o, "secret", json_string(s->secret)) != 0) {
    json_decref(o);
    return NULL;
  }
  return o;
}
