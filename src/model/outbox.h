/* Onward delivery, the domain side: the events the outbox holds, the subscriptions that receive
 * them, and how both look on the wire. No database, no network: store/ keeps these, outbound/
 * and queue/ send them, api/ shows them. */
#ifndef GSR_MODEL_OUTBOX_H
#define GSR_MODEL_OUTBOX_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/conversation.h"

/* Event types; the numbers are stored (never renumber). */
enum outbox_type {
  OUTBOX_CREATED = 1,     /* conversation.created: a conversation stored for the first time */
  OUTBOX_UPDATED = 2,     /* conversation.updated: a redelivery with a different body */
  OUTBOX_AUDIO_ADDED = 3, /* conversation.audio_added: ElevenLabs audio stored */
  OUTBOX_FAILED = 4,      /* conversation.failed: a call initiation failure stored */
  OUTBOX_DELETED = 5,     /* conversation.deleted: erased (DELETE) or expired (retention) */
};
#define OUTBOX_TYPE_COUNT 5
/* Every type, as a subscription's event_types bit set (bit 1 << type). */
#define OUTBOX_TYPES_ALL 0x3Eu

/* "conversation.created" ...; NULL for an unknown number. */
const char *outbox_type_name(int type);
/* The type named name (exactly), or 0. */
int outbox_type_parse(const char *name);

/* "evt_" + 32 lowercase hex digits (16 random bytes) + NUL. */
#define OUTBOX_EVENT_ID_MAX 40
/* "sub_" + 24 lowercase hex digits (12 random bytes) + NUL. */
#define OUTBOX_SUB_ID_MAX 32
/* "whsec_" + base64 of 32 random bytes (44 characters) + NUL. */
#define OUTBOX_SECRET_MAX 56
#define OUTBOX_URL_MAX 2048
/* The first bytes of a receiver's answer kept with each attempt. */
#define OUTBOX_RESPONSE_HEAD_MAX 256

/* Ids and secrets are random (ext/crypto): event ids are made by the store, subscription ids
 * and secrets by the API. */

/* One event as delivered, byte for byte the same to every subscriber and broker:
 * {"type":"conversation.created","id":"evt_...","timestamp":"<RFC 3339, microseconds>",
 *  "data":<data>}. data is the event's data JSON as stored (for created, updated, audio_added
 * and failed: the conversation as GET /api/v1/conversations/{id} shows its "data" then; for
 * deleted: {"conversationId":...,"reason":"erased"|"expired"}). Returns a malloc'ed text and its
 * length, or NULL when out of memory. */
char *outbox_event_render(int type, const char *id, int64_t created_us, const char *data,
                          size_t data_len, size_t *len);

/* The data of a conversation.deleted event (malloc'ed, *len set), or NULL. */
char *outbox_deleted_data(const char *conversation_id, bool expired, size_t *len);

/* A webhook subscription. */
struct subscription {
  char id[OUTBOX_SUB_ID_MAX];
  char url[OUTBOX_URL_MAX + 1];
  char secret[OUTBOX_SECRET_MAX]; /* signs deliveries; shown once, when created */
  unsigned event_types;           /* bit set (1u << enum outbox_type); OUTBOX_TYPES_ALL: all */
  char account_id[MODEL_ACCOUNT_ID_MAX + 1]; /* "": every account */
  bool enabled;                              /* false: deliveries wait (state "disabled") */
  bool paused;              /* kept failing: deliveries wait until re-enabled (state "paused") */
  int64_t max_per_second;   /* 0: no limit */
  char disabled_reason[64]; /* "", or why it was disabled by the service ("gone": HTTP 410) */
  int64_t created_us;
  int64_t updated_us;
  int64_t last_success_us; /* 0: never */
  /* A receiver's Retry-After holds it until then (read: only a hold still in the future, else
   * 0); PATCH enabled true lifts it. */
  int64_t hold_until_us;
  /* Its sealed URL or account did not open when read (damaged, or sealed with a key
   * ENCRYPTION_KEYS lacks): url and account_id are "" and nothing may be delivered for it. */
  bool unreadable;
};

/* "active" | "paused" | "disabled". */
const char *subscription_state(const struct subscription *s);

/* Validates a create (create true: url required, defaults applied to *out first: every type,
 * every account, enabled, no limit) or a PATCH (create false: only the members present change
 * *out, which holds the subscription as stored). Members: url (absolute http:// or https://,
 * at most OUTBOX_URL_MAX bytes, no credentials, no fragment), eventTypes (non-empty array of
 * known type names, no duplicates), accountId (a usable id, or null for every account),
 * enabled (boolean), maxPerSecond (integer 1..100000, or null for no limit). Unknown members
 * are refused. Returns NULL when valid, else a new array of {"field","issue"} problems (at most
 * MODEL_PROBLEMS_MAX, then one {"field": "", "issue": "N more problems not listed"}). The
 * network check of the URL (SSRF: its resolved addresses) is outbound/'s, at delivery time and
 * at creation. */
json_t *subscription_from_json(json_t *body, bool create, struct subscription *out);

/* The subscription as the API shows it: {"id","url","eventTypes","accountId","enabled",
 * "maxPerSecond","state","disabledReason","createdAt","updatedAt"}; with_secret adds
 * "secret" (only the create answer). New reference, or NULL. */
json_t *subscription_render(const struct subscription *s, bool with_secret);

/* How an attempt ended, as stored (numbers) and shown (names). */
enum delivery_outcome {
  DELIVERY_DELIVERED = 1, /* 2xx */
  DELIVERY_RETRY = 2,     /* failed; another attempt is scheduled */
  DELIVERY_FAILED = 3,    /* failed and the schedule is exhausted: dead letter */
  DELIVERY_PAUSED = 4,    /* failed, schedule exhausted, no success since its first attempt:
                           * the subscription is paused, the event waits */
  DELIVERY_DISABLED = 5,  /* 410 Gone: the subscription is disabled, the event waits */
};
/* "delivered" | "retrying" | "failed" (FAILED and PAUSED alike) | "disabled"; NULL for an
 * unknown number. */
const char *delivery_outcome_name(int outcome);

#endif
