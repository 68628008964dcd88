/* Reading a request body as JSON, and the problems summary. */
#include "model/body.h"

#include <stdio.h>
#include <string.h>

#include "core/utf8.h"

enum model_result model_body_load(const char *body, size_t len, size_t flags, json_t **root,
                                  bool *ints_as_reals, char *message, size_t message_len) {
  *root = NULL;
  *ints_as_reals = false;
  /* A raw NUL is never JSON (control characters must be escaped, even in strings), but
   * jansson 2.14 skips one that follows a literal or a number ("[1,null<NUL>,2]"): refuse it
   * here, so a stored body is always JSON that json_raw_member can read. */
  const char *nul = memchr(body, '\0', len);
  if (nul) {
    snprintf(message, message_len,
             "Request body is not valid JSON: raw NUL byte at offset %zu (escape it as \\u0000)",
             (size_t)(nul - body));
    return MODEL_INVALID_JSON;
  }
  json_error_t jerr;
  *root = json_loadb(body, len, flags, &jerr);
  if (!*root && json_error_code(&jerr) == json_error_numeric_overflow) {
    /* An integer beyond 64 bits (say, an external id in an unknown field) is valid JSON and
     * harmless: decode integers as doubles rather than refuse the body. */
    *ints_as_reals = true;
    *root = json_loadb(body, len, flags | JSON_DECODE_INT_AS_REAL, &jerr);
  }
  if (*root) return MODEL_OK;
  if (json_error_code(&jerr) == json_error_out_of_memory) {
    snprintf(message, message_len, "out of memory");
    return MODEL_NO_MEMORY;
  }
  /* jansson's text may quote the client's bytes cut in the middle of a character (defect 11:
   * '{"a":"\u0\xc3\xa9"}'); the answer must stay valid UTF-8 to be encoded at all. */
  char raw[sizeof jerr.text + 64];
  snprintf(raw, sizeof raw, "Request body is not valid JSON: %s (line %d, column %d)", jerr.text,
           jerr.line, jerr.column);
  (void)utf8_sanitize(message, message_len, raw, strlen(raw));
  return MODEL_INVALID_JSON;
}

void model_body_problems(json_t *list, size_t count, char *message, size_t message_len) {
  if (count > MODEL_PROBLEMS_MAX) {
    char more[64];
    snprintf(more, sizeof more, "%zu more problems not listed", count - MODEL_PROBLEMS_MAX);
    json_array_append_new(list, json_pack("{s:s,s:s}", "field", "", "issue", more));
  }
  snprintf(message, message_len, "Request data is invalid: %zu problem%s", count,
           count == 1 ? "" : "s");
}
