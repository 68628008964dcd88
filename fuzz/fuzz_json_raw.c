/* Raw member access (model/json_raw.c), which finds a member's exact bytes in a stored body.
 * Its contract is valid JSON input, so for every object jansson accepts, each top-level member
 * must be found and its bytes must decode to the member's value. Any other input must still
 * be scanned without reading out of bounds, and a value found lies inside the document.
 * json_raw_next steps forward and stays inside the document on any input; on a valid object
 * or array it yields each member or element once, in order, with bytes that decode to it. */
#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "model/json_raw.h"

static const char *const probes[] = {"transcript", "metadata", "summary", "a", "", "duration"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A private copy of exactly size bytes, so ASan sees any read past the end. */
  char *doc = malloc(size ? size : 1);
  if (!doc) return 0;
  memcpy(doc, data, size);
  const char *val;
  size_t val_len;
  for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
    if (json_raw_member(doc, size, probes[i], &val, &val_len))
      FUZZ_CHECK(val >= doc && val + val_len <= doc + size);
  }
  json_t *root =
      json_loadb(doc, size, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
  /* Valid JSON never holds a raw NUL, though jansson 2.14 skips one after a literal; the
   * validator refuses such bodies, so they are never stored. */
  if (json_is_object(root) && !memchr(doc, '\0', size)) {
    const char *key;
    json_t *want;
    json_object_foreach(root, key, want) {
      FUZZ_CHECK(json_raw_member(doc, size, key, &val, &val_len));
      FUZZ_CHECK(val >= doc && val + val_len <= doc + size);
      json_t *got = json_loadb(val, val_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
      FUZZ_CHECK(got != NULL && json_equal(got, want));
      json_decref(got);
    }
  }
  size_t pos = 0, steps = 0;
  const char *key_tok;
  size_t key_len;
  bool valid = (json_is_object(root) || json_is_array(root)) && !memchr(doc, '\0', size);
  while (json_raw_next(doc, size, &pos, &key_tok, &key_len, &val, &val_len)) {
    FUZZ_CHECK(val >= doc && val + val_len <= doc + size && pos <= size);
    FUZZ_CHECK(!key_tok || (key_tok >= doc && key_tok + key_len <= doc + size));
    if (valid) {
      json_t *want = NULL;
      if (json_is_array(root)) {
        FUZZ_CHECK(key_tok == NULL);
        want = json_array_get(root, steps);
      } else {
        FUZZ_CHECK(key_tok != NULL);
        json_t *k = json_loadb(key_tok, key_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        FUZZ_CHECK(json_is_string(k));
        if (strlen(json_string_value(k)) == json_string_length(k))
          want = json_object_get(root, json_string_value(k));
        else
          want = NULL; /* a key holding NUL: not looked up */
        json_decref(k);
      }
      json_t *got = json_loadb(val, val_len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
      FUZZ_CHECK(got != NULL && (!want || json_equal(got, want)));
      json_decref(got);
    }
    FUZZ_CHECK(++steps <= size);
  }
  if (valid)
    FUZZ_CHECK(steps == (json_is_array(root) ? json_array_size(root) : json_object_size(root)));
  json_decref(root);
  free(doc);
  return 0;
}
