/* The ElevenLabs event's fast path: one pass over the bytes (model/json_scan.h), no DOM, the
 * derived seed-shaped body written straight from the scanned values. It accepts only what it is
 * certain of; anything else (any problem, any unusual form) it declines, and
 * model_elevenlabs_parse, the jansson path, gives its exact answer. Invariant
 * (tests/unit/test_el_fast.c, fuzz/fuzz_elevenlabs.c): whenever model_elevenlabs_scan accepts,
 * model_elevenlabs_parse accepts with the same type, ids, struct values and derived body, byte
 * for byte. */
#ifndef GSR_MODEL_EL_FAST_H
#define GSR_MODEL_EL_FAST_H

#include <stdbool.h>
#include <stddef.h>

#include "model/elevenlabs.h"

/* Members of one object beyond which the scanner declines (dynamic variables can be many). */
#define EL_FAST_KEYS_MAX 64

/* True when body is an event the scanner proves valid: *out is filled as
 * model_elevenlabs_parse would fill it, except that root and conv.root are NULL and the
 * strings live in out->owned (release with model_elevenlabs_free). False: declined (also when
 * out of memory); *out is zeroed. */
__attribute__((warn_unused_result)) bool model_elevenlabs_scan(const char *body, size_t len,
                                                               const struct el_names *names,
                                                               struct el_event *out);

/* model_elevenlabs_scan, and model_elevenlabs_parse when it declines: the same answers, errors
 * and values as model_elevenlabs_parse, without its DOM for ordinary events. */
__attribute__((warn_unused_result)) enum model_result model_elevenlabs_parse_fast(
    const char *body, size_t len, const struct el_names *names, struct el_event *out,
    json_t **problems, char *message, size_t message_len);

#endif
