/* A one-pass JSON scanner without a DOM, for the webhook fast paths (model/conv_fast.c,
 * model/el_fast.c). It checks a body is JSON as jansson reads it with JSON_REJECT_DUPLICATES |
 * JSON_DECODE_ANY | JSON_ALLOW_NUL (and model_body_load's raw-NUL rule) and hands the caller
 * the members it asks for. It is only ever a first try: whatever it is not certain of it
 * refuses (returns false), and the caller then lets jansson answer. It refuses:
 *  - any JSON error;
 *  - a backslash in a key; a \u escape of a surrogate half that is not a well-formed
 *    high+low pair;
 *  - a number jansson might read otherwise: integers of more than 18 digits (jansson's caller
 *    then decodes every integer as a double), reals whose size it cannot bound below DBL_MAX
 *    (more than 200 integer digits, or an exponent of more than two digits);
 *  - nesting deeper than JSON_SCAN_DEPTH_MAX, an object with more than keys_max members. */
#ifndef GSR_MODEL_JSON_SCAN_H
#define GSR_MODEL_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>

#define JSON_SCAN_DEPTH_MAX 32 /* nesting of arrays and objects */
#define JSON_SCAN_KEYS_MAX 64  /* the most keys_max may be */

struct json_scan {
  const char *p;   /* next byte */
  const char *end; /* one past the last byte */
  size_t keys_max; /* members of one object (1..JSON_SCAN_KEYS_MAX) */
};

enum json_scan_kind {
  JSON_SCAN_STRING,
  JSON_SCAN_INT,
  JSON_SCAN_REAL,
  JSON_SCAN_TRUE,
  JSON_SCAN_FALSE,
  JSON_SCAN_NULL,
  JSON_SCAN_OBJECT,
  JSON_SCAN_ARRAY,
};

/* A scanned value: s[0..n) is its text; for a string, its raw bytes between the quotes. */
struct json_scan_val {
  bool seen;
  enum json_scan_kind kind;
  const char *s;
  size_t n;
  bool escaped; /* a string holding a backslash: its raw bytes are not its value */
};

/* An object's member that the caller wants: its value either scanned into *slot, or parsed
 * by fn (which starts at the value, whitespace skipped, and must consume it). */
struct json_scan_member {
  const char *name;
  struct json_scan_val *slot;
  bool (*fn)(struct json_scan *sc, int depth, void *ctx);
  void *ctx;
};

void json_scan_ws(struct json_scan *sc);
/* Any value at sc->p (whitespace before it skipped). */
bool json_scan_value(struct json_scan *sc, int depth, struct json_scan_val *v);
/* An object starting at '{': members named in want[] are captured (or handed to their fn),
 * every key is checked against the ones before it. */
bool json_scan_object(struct json_scan *sc, int depth, const struct json_scan_member *want,
                      size_t nwant);
/* An array starting at '['; each element goes to fn when given, else is scanned. *count: the
 * number of elements. */
bool json_scan_array(struct json_scan *sc, int depth, bool (*fn)(struct json_scan *, int, void *),
                     void *ctx, size_t *count);

/* A scanned string's value: raw[0..n) (what json_scan_value accepted between the quotes)
 * decoded into out (at least n bytes). Returns the decoded length (NUL bytes are kept). */
size_t json_scan_unescape(const char *raw, size_t n, char *out);

#endif
