/* JSON answers about conversations, built in one place so every endpoint renders alike. */
#ifndef GSR_RENDER_H
#define GSR_RENDER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "model/stored.h"

/* Percent-encodes s as one URL path segment (RFC 3986: all but the unreserved characters) into
 * out, which holds at least 3 * strlen(s) + 1 bytes; returns the length written. Every URL
 * naming a conversation (audioUrl, the export's audio column, the report's links) uses it. */
size_t render_path_segment(const char *s, char *out);
#define RENDER_SEGMENT_MAX (3 * MODEL_CONVERSATION_ID_MAX + 1)

/* The seed's Conversation fields; new reference. */
json_t *render_conversation(const struct store_conversation *c);
/* The Conversation fields plus transcript, metadata and summary exactly as received (c->body
 * must be set). Returns a malloc'ed JSON text and its length, or NULL. */
char *render_conversation_detail(const struct store_conversation *c, size_t *len);
/* {"success":true,"data":{"conversationId":..,"erased":true}}: the answer to an erasure. */
json_t *render_conversation_erased(const char *conversation_id);
/* The webhook's success answer; conversation_id NULL (an ElevenLabs event without one) gives
 * null. */
json_t *render_webhook_accepted(const char *conversation_id, const char *webhook_id,
                                int64_t processed_us);
/* The same answer as jansson's compact dump of render_webhook_accepted writes it, byte for
 * byte, written directly (every webhook answers it); conversation_id NULL writes null. A
 * malloc'ed text and its length, or NULL (out of memory, or a text that is not UTF-8). */
char *render_webhook_accepted_text(const char *conversation_id, const char *webhook_id,
                                   int64_t processed_us, size_t *len);

#endif
