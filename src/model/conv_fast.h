/* The webhook body's fast path: one pass over the bytes, no DOM, no allocation but one copy of
 * the few strings the struct returns. It accepts only what it is certain of; anything else
 * (any problem, any unusual form) it declines, and model_conversation_parse, the jansson path,
 * gives its exact answer. Invariant (tests/unit/test_conv_fast.c, fuzz/fuzz_conversation.c):
 * whenever model_conv_scan accepts, model_conversation_parse accepts with the same fields. */
#ifndef GSR_MODEL_CONV_FAST_H
#define GSR_MODEL_CONV_FAST_H

#include <stdbool.h>
#include <stddef.h>

#include "model/conversation.h"
#include "model/json_scan.h"

/* Limits beyond which the scanner declines (the jansson path decides). */
#define CONV_FAST_DEPTH_MAX JSON_SCAN_DEPTH_MAX /* nesting of arrays and objects */
#define CONV_FAST_KEYS_MAX 32 /* members of one object (duplicates are checked pairwise) */

/* True when body is a seed webhook the scanner proves valid: *out is filled as
 * model_conversation_parse would fill it, except that root is NULL and the strings live in
 * out->owned (release with model_conversation_free). False: declined (also when out of
 * memory); *out is zeroed. */
__attribute__((warn_unused_result)) bool model_conv_scan(const char *body, size_t len,
                                                         struct conversation_input *out);

/* model_conv_scan, and model_conversation_parse when it declines: the same answers, errors and
 * struct values as model_conversation_parse, without its DOM for ordinary valid bodies. */
__attribute__((warn_unused_result)) enum model_result model_conversation_parse_fast(
    const char *body, size_t len, struct conversation_input *out, json_t **problems, char *message,
    size_t message_len);

#endif
