/* Audit entries: names, canonical bytes and JSON (model/audit.h). */
#include "model/audit.h"

#include <string.h>

#include "core/timeutil.h"

static const char *const action_names[AUDIT_ACTION_COUNT] = {
    [AUDIT_WEBHOOK_ACCEPTED] = "webhook.accepted",
    [AUDIT_CONVERSATION_READ] = "conversation.read",
    [AUDIT_CONVERSATION_LIST] = "conversation.list",
    [AUDIT_CONVERSATION_AUDIO] = "conversation.audio",
    [AUDIT_CONVERSATION_EXPORT] = "conversation.export",
    [AUDIT_CONVERSATION_ERASED] = "conversation.erased",
    [AUDIT_KEY_CREATED] = "key.created",
    [AUDIT_KEY_REVOKED] = "key.revoked",
    [AUDIT_AUTH_REJECTED] = "auth.rejected",
    [AUDIT_SUBSCRIPTION_CREATED] = "subscription.created",
    [AUDIT_SUBSCRIPTION_UPDATED] = "subscription.updated",
    [AUDIT_SUBSCRIPTION_DELETED] = "subscription.deleted",
    [AUDIT_SUBSCRIPTION_REPLAYED] = "subscription.replayed",
};

static const char *const outcome_names[AUDIT_OUTCOME_COUNT] = {
    [AUDIT_OK] = "ok",
    [AUDIT_NOT_FOUND] = "not_found",
    [AUDIT_UNAUTHORIZED] = "unauthorized",
    [AUDIT_FORBIDDEN] = "forbidden",
    [AUDIT_EXPIRED] = "expired",
    [AUDIT_INCOMPLETE] = "incomplete",
};

void audit_hash_hex(const unsigned char hash[AUDIT_HASH_LEN], char out[2 * AUDIT_HASH_LEN + 1]) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < AUDIT_HASH_LEN; i++) {
    out[2 * i] = digits[hash[i] >> 4];
    out[2 * i + 1] = digits[hash[i] & 15];
  }
  out[2 * AUDIT_HASH_LEN] = '\0';
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool audit_hash_parse(const char *hex, unsigned char out[AUDIT_HASH_LEN]) {
  if (strlen(hex) != 2 * AUDIT_HASH_LEN) return false;
  for (size_t i = 0; i < AUDIT_HASH_LEN; i++) {
    int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = (unsigned char)(hi << 4 | lo);
  }
  return true;
}

const char *audit_action_name(enum audit_action a) {
  return (unsigned)a < AUDIT_ACTION_COUNT ? action_names[a] : NULL;
}

int audit_action_named(const char *name) {
  for (int i = 0; i < AUDIT_ACTION_COUNT; i++)
    if (strcmp(action_names[i], name) == 0) return i;
  return -1;
}

const char *audit_outcome_name(enum audit_outcome o) {
  return (unsigned)o < AUDIT_OUTCOME_COUNT ? outcome_names[o] : NULL;
}

int audit_outcome_named(const char *name) {
  for (int i = 0; i < AUDIT_OUTCOME_COUNT; i++)
    if (strcmp(outcome_names[i], name) == 0) return i;
  return -1;
}

static size_t put_u64(unsigned char *out, uint64_t v) {
  for (int i = 0; i < 8; i++) out[i] = (unsigned char)(v >> (56 - 8 * i));
  return 8;
}

/* A length-prefixed text of at most max bytes (longer ones are cut: the fields are bounded
 * where they are filled, so this never happens to a stored entry). */
static size_t put_text(unsigned char *out, const char *s, size_t max) {
  size_t n = s ? strnlen(s, max) : 0;
  out[0] = (unsigned char)(n >> 24);
  out[1] = (unsigned char)(n >> 16);
  out[2] = (unsigned char)(n >> 8);
  out[3] = (unsigned char)n;
  if (n) memcpy(out + 4, s, n);
  return 4 + n;
}

size_t audit_entry_content(const struct audit_entry *e, unsigned char out[AUDIT_CONTENT_MAX]) {
  const char *action = audit_action_name(e->action);
  const char *outcome = audit_outcome_name(e->outcome);
  size_t n = 0;
  n += put_u64(out + n, (uint64_t)e->id);
  n += put_u64(out + n, (uint64_t)e->at_us);
  n += put_u64(out + n, (uint64_t)e->count);
  n += put_text(out + n, e->who.request_id, AUDIT_REQUEST_ID_MAX);
  n += put_text(out + n, e->who.key_id, AUDIT_KEY_ID_MAX);
  n += put_text(out + n, e->who.client_ip, AUDIT_CLIENT_IP_MAX);
  n += put_text(out + n, action ? action : "", 32);
  n += put_text(out + n, e->target, AUDIT_TARGET_MAX);
  n += put_text(out + n, outcome ? outcome : "", 16);
  return n;
}

static int set_text(json_t *o, const char *key, const char *v) {
  return json_object_set_new(o, key, v && *v ? json_string(v) : json_null());
}

json_t *audit_entry_json(const struct audit_entry *e) {
  char at[40];
  json_t *o = json_object();
  if (!o) return NULL;
  bool ok = time_format_us(e->at_us, true, at, sizeof at);
  int rc = json_object_set_new(o, "id", json_integer(e->id));
  rc |= json_object_set_new(o, "at", ok ? json_string(at) : json_null());
  rc |= set_text(o, "requestId", e->who.request_id);
  rc |= set_text(o, "keyId", e->who.key_id);
  rc |= set_text(o, "clientIp", e->who.client_ip);
  rc |= set_text(o, "action", audit_action_name(e->action));
  rc |= set_text(o, "target", e->target);
  rc |= set_text(o, "outcome", audit_outcome_name(e->outcome));
  rc |= json_object_set_new(o, "count", json_integer(e->count));
  if (rc) {
    json_decref(o);
    return NULL;
  }
  return o;
}
