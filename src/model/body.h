/* What every request-body parser of the domain shares: reading the JSON, and summing up the
 * problems found. */
#ifndef GSR_MODEL_BODY_H
#define GSR_MODEL_BODY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "model/conversation.h"

/* Parses body with jansson's flags. A raw NUL byte is refused (jansson 2.14 skips one after a
 * literal, so a stored body could not be read back by json_raw_member); an integer beyond 64
 * bits is decoded as a double (*ints_as_reals set) rather than refused. MODEL_OK: *root set
 * (caller owns). Else *message says where parsing failed (valid UTF-8), or "out of memory". */
__attribute__((warn_unused_result)) enum model_result model_body_load(const char *body, size_t len,
                                                                      size_t flags, json_t **root,
                                                                      bool *ints_as_reals,
                                                                      char *message,
                                                                      size_t message_len);

/* Ends a list of count problems (at most MODEL_PROBLEMS_MAX were added): one more entry says
 * how many were left out, and *message sums them up. */
void model_body_problems(json_t *list, size_t count, char *message, size_t message_len);

#endif
