/* ElevenLabs post-call webhook events, mapped to the conversation domain.
 *
 * An event is {"type": ..., "event_timestamp": ..., "data": {...}}. post_call_transcription and
 * call_initiation_failure become a conversation: the mapping builds a seed-shaped
 * ConversationEndData body (emailId, accountId, conversationId, transcript, metadata, summary)
 * that is stored and rendered like any seed webhook, and a struct conversation_input over it.
 * Unknown fields anywhere are ignored (the raw event is kept byte for byte elsewhere). */
#ifndef GSR_MODEL_ELEVENLABS_H
#define GSR_MODEL_ELEVENLABS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "model/conversation.h"

#define EL_TYPE_MAX 64

enum el_type {
  EL_POST_CALL_TRANSCRIPTION,
  EL_POST_CALL_AUDIO,
  EL_CALL_INITIATION_FAILURE,
  EL_OTHER, /* any other or missing type: acknowledged and kept, nothing else changes */
};

struct el_names {
  const char *email_var;   /* dynamic variable holding emailId (ELEVENLABS_EMAIL_VARIABLE) */
  const char *account_var; /* ELEVENLABS_ACCOUNT_VARIABLE */
};

struct el_event {
  json_t *root; /* the parsed event (owned); NULL when the fast path (model/el_fast.h) read it */
  char *owned;  /* the fast path's copies of the strings below (owned), else NULL */
  enum el_type type;
  char type_name[EL_TYPE_MAX + 1]; /* the type as sent (truncated), "" when absent */
  /* data.conversation_id; NULL only for EL_OTHER events that carry none. Points into root (or
   * owned). */
  const char *conversation_id;
  /* EL_POST_CALL_TRANSCRIPTION and EL_CALL_INITIATION_FAILURE only (else derived == NULL): */
  char *derived; /* the seed-shaped ConversationEndData JSON text (owned, malloc'ed) */
  size_t derived_len;
  struct conversation_input conv; /* over derived (conv.root owned, NULL from the fast path, whose
                                   * strings are in owned); email/account may be NULL */
};

/* Parses an event. MODEL_INVALID_JSON: not JSON (message says where). MODEL_INVALID: *problems
 * (caller owns) lists {"field","issue"}: only for a missing/invalid data.conversation_id on the
 * three known types, transcript turns without a string role, or a body that is JSON but not an
 * object (field ""). Everything else a real ElevenLabs event may lack is not an error. Out of
 * memory is reported as MODEL_INVALID_JSON ("out of memory"). On MODEL_OK release *out with
 * model_elevenlabs_free. */
__attribute__((warn_unused_result)) enum model_result model_elevenlabs_parse(
    const char *body, size_t len, const struct el_names *names, struct el_event *out,
    json_t **problems, char *message, size_t message_len);
void model_elevenlabs_free(struct el_event *e);

/* A failure reason as stored: s[0..n) cut to fit out (cap bytes, MODEL_FAILURE_REASON_MAX + 1)
 * at a character boundary (invalid UTF-8 replaced), control characters (C0, DEL, C1) replaced by
 * spaces; its length. Both parse paths use it, so they store the same bytes. */
size_t model_elevenlabs_clean_reason(char *out, size_t cap, const char *s, size_t n);

#endif
