/* A conversation as read back from storage. The type belongs to the domain (model/), which
 * renders it; store/ fills it. So store.h includes model/ and model/ never includes store/.
 * The struct keeps the name store_conversation so the backends that fill it read unchanged. */
#ifndef GSR_MODEL_STORED_H
#define GSR_MODEL_STORED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/conversation.h"

/* "webhook_" + 32 hex digits + NUL fits. */
#define MODEL_WEBHOOK_ID_MAX 48
#define MODEL_STATUS_MAX 16

#define MODEL_AGENT_ID_MAX 256
#define MODEL_FAILURE_REASON_MAX 256

struct store_conversation {
  char conversation_id[MODEL_CONVERSATION_ID_MAX + 1];
  char email_id[MODEL_EMAIL_ID_MAX + 1];     /* "": unknown, rendered null */
  char account_id[MODEL_ACCOUNT_ID_MAX + 1]; /* "": unknown, rendered null */
  char status[MODEL_STATUS_MAX];
  char agent_id[MODEL_AGENT_ID_MAX + 1];             /* "": unknown, rendered null */
  char failure_reason[MODEL_FAILURE_REASON_MAX + 1]; /* "": none, not rendered */
  int64_t audio_bytes;                               /* -1: no audio stored */
  bool has_start;
  int64_t start_us;
  int64_t duration;
  int64_t message_count;
  int64_t processed_us;       /* the latest processing (processedAt) */
  int64_t first_processed_us; /* when first stored: the list's order key, never changed */
  char webhook_id[MODEL_WEBHOOK_ID_MAX];
  char *body; /* raw webhook body when asked for, else NULL; owned, free with free() */
  size_t body_len;
};

#endif
