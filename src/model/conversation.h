/* The conversation domain: parse and validate a webhook body (JSON in, struct out, every
 * problem reported with its field path). */
#ifndef GSR_MODEL_CONVERSATION_H
#define GSR_MODEL_CONVERSATION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MODEL_EMAIL_ID_MAX 320
#define MODEL_ACCOUNT_ID_MAX 256
#define MODEL_CONVERSATION_ID_MAX 256
#define MODEL_TRANSCRIPT_MAX 10000
#define MODEL_COUNT_MAX 2147483647
/* An error answer lists at most this many problems, then says how many more there were. */
#define MODEL_PROBLEMS_MAX 100

/* A validated webhook. String pointers point into root, which the struct owns, or, when the
 * fast path (model/conv_fast.h) parsed it, root is NULL and they point into owned. */
struct conversation_input {
  json_t *root;
  char *owned;
  const char *conversation_id;
  const char *email_id;       /* NULL: unknown (ElevenLabs events may lack it), stored as NULL */
  const char *account_id;     /* NULL: unknown */
  const char *status;         /* "completed" (seed webhooks), or as mapped from ElevenLabs */
  const char *agent_id;       /* metadata.agentId (seed) or data.agent_id; NULL: unknown */
  const char *failure_reason; /* ElevenLabs call_initiation_failure; NULL otherwise */
  /* Analytics dimensions (issue 11), NULL: unknown. platform: metadata.platform (seed); outcome:
   * ElevenLabs analysis.call_successful ("success", "failure", "unknown"). */
  const char *platform;
  const char *outcome;
  bool has_start;   /* false when the transcript is empty */
  int64_t start_us; /* earliest transcript timestamp, UTC microseconds */
  int64_t duration;
  int64_t message_count;
};

/* MODEL_NO_MEMORY: out of memory, the client is not at fault (answer 503, never 400). */
enum model_result { MODEL_OK, MODEL_INVALID_JSON, MODEL_INVALID, MODEL_NO_MEMORY };

/* Parses and validates body. MODEL_OK: *out is filled; release it with model_conversation_free.
 * MODEL_INVALID_JSON: *message says where parsing failed. MODEL_INVALID: *problems (caller owns)
 * is an array of {"field","issue"}. */
__attribute__((warn_unused_result)) enum model_result model_conversation_parse(
    const char *body, size_t len, struct conversation_input *out, json_t **problems, char *message,
    size_t message_len);
void model_conversation_free(struct conversation_input *in);

/* True when s (valid UTF-8, len bytes) holds no control character (C0, DEL or C1). */
bool model_is_printable(const char *s, size_t len);

/* v's text when it is a usable identifier: a string of 1..max bytes, no NUL, no control
 * character; else NULL. */
const char *model_usable_id(json_t *v, size_t max);

#endif
