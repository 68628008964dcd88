/* The audit log's entries: who did what to which conversation or key, and how it ended. The
 * store keeps them hash-chained (store/audit_chain.h); this is the entry itself, its
 * canonical bytes (what the chain hashes) and its JSON form. */
#ifndef GSR_MODEL_AUDIT_H
#define GSR_MODEL_AUDIT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/conversation.h"

#define AUDIT_REQUEST_ID_MAX 128 /* bytes, as the HTTP layer's request ids */
#define AUDIT_KEY_ID_MAX 40      /* a data key's id (16 hex) or an API_SECRET_KEY key's name */
#define AUDIT_CLIENT_IP_MAX 46   /* INET6_ADDRSTRLEN */
#define AUDIT_TARGET_MAX MODEL_CONVERSATION_ID_MAX
#define AUDIT_HASH_LEN 32

enum audit_action {
  AUDIT_WEBHOOK_ACCEPTED,
  AUDIT_CONVERSATION_READ,
  AUDIT_CONVERSATION_LIST,
  AUDIT_CONVERSATION_AUDIO,
  AUDIT_CONVERSATION_EXPORT,
  AUDIT_CONVERSATION_ERASED,
  AUDIT_KEY_CREATED,
  AUDIT_KEY_REVOKED,
  AUDIT_AUTH_REJECTED,
  /* issue 10: target the subscription id; written in the change's own transaction */
  AUDIT_SUBSCRIPTION_CREATED,
  AUDIT_SUBSCRIPTION_UPDATED,
  AUDIT_SUBSCRIPTION_DELETED,
  AUDIT_SUBSCRIPTION_REPLAYED,
  AUDIT_ACTION_COUNT
};

enum audit_outcome {
  AUDIT_OK,           /* "ok": done (for auth.rejected: never) */
  AUDIT_NOT_FOUND,    /* "not_found": nothing of that id (or not visible to the key) */
  AUDIT_UNAUTHORIZED, /* "unauthorized": no valid key or signature (401) */
  AUDIT_FORBIDDEN,    /* "forbidden": a valid key without the scope (403) */
  AUDIT_EXPIRED,      /* "expired": erased by RETENTION_DAYS */
  AUDIT_INCOMPLETE,   /* "incomplete": a streamed answer cut short (export) */
  AUDIT_OUTCOME_COUNT
};

/* Who asked: copied from the request into every entry it causes. "" is null. */
struct audit_who {
  char request_id[AUDIT_REQUEST_ID_MAX + 1];
  char key_id[AUDIT_KEY_ID_MAX + 1];
  char client_ip[AUDIT_CLIENT_IP_MAX + 1];
};

struct audit_entry {
  int64_t id; /* position in the chain, from 1; set by the store */
  int64_t at_us;
  struct audit_who who;
  enum audit_action action;
  char target[AUDIT_TARGET_MAX + 1]; /* conversation or key id; "" is null */
  enum audit_outcome outcome;
  int64_t count; /* 1, or how many rejections from one address one entry stands for */
  unsigned char hash[AUDIT_HASH_LEN]; /* SHA-256(previous entry's hash || content); set by the
                                       * store */
  bool damaged; /* set by a store's reader: the stored row holds what no entry can (a text
                 * longer than its field, a NUL inside a text, a hash not AUDIT_HASH_LEN bytes),
                 * so the fields above are not what was hashed: changed by hand */
};

/* "webhook.accepted", ...; NULL out of range. */
const char *audit_action_name(enum audit_action a);
/* The action named name, or -1. */
int audit_action_named(const char *name);
const char *audit_outcome_name(enum audit_outcome o);
int audit_outcome_named(const char *name);

/* An entry's hash as 64 lowercase hex digits and NUL (the form the service logs the chain's
 * head in: "audit head: id N hash H"), and back: false unless hex is exactly 64 hex digits. */
void audit_hash_hex(const unsigned char hash[AUDIT_HASH_LEN], char out[2 * AUDIT_HASH_LEN + 1]);
bool audit_hash_parse(const char *hex, unsigned char out[AUDIT_HASH_LEN]);

/* Largest canonical content: 3 integers and 6 length-prefixed texts. */
#define AUDIT_CONTENT_MAX                                                               \
  (3 * 8 + 6 * 4 + AUDIT_REQUEST_ID_MAX + AUDIT_KEY_ID_MAX + AUDIT_CLIENT_IP_MAX + 32 + \
   AUDIT_TARGET_MAX + 16)
/* The entry's canonical bytes, what the chain hashes (PostgreSQL builds the same bytes in SQL,
 * see store/migrations/pg/0006_audit.sql): id, at_us, count as 8-byte big-endian integers, then
 * request id, key id, client ip, action name, target, outcome name, each as a 4-byte big-endian
 * length and its bytes (null is length 0). Returns the length written (<= AUDIT_CONTENT_MAX). */
size_t audit_entry_content(const struct audit_entry *e, unsigned char out[AUDIT_CONTENT_MAX]);

/* {"id", "at", "requestId", "keyId", "clientIp", "action", "target", "outcome", "count"} (""
 * as null; "at" RFC 3339 UTC with microseconds); new reference, NULL when out of memory. */
json_t *audit_entry_json(const struct audit_entry *e);

#endif
