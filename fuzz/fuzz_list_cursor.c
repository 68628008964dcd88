/* The list endpoint's cursor (api/list_cursor.c list_cursor_decode), as a client sends it back
 * in ?cursor=. The first byte picks one of two scopes. Properties: a cursor that decodes is the
 * one text the encoder makes for what it holds (so it decodes under its own scope only, and
 * not with any byte changed); a cursor made from the fuzzed bytes decodes back to them. */
#include <string.h>

#include "api/list_cursor.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const unsigned char key[LIST_CURSOR_KEY_LEN] = {1, 2, 3};
  unsigned char scopes[2][CRYPTO_SHA256_LEN];
  const char *q0[] = {"a@example.com", NULL}, *q1[] = {NULL, "acc"};
  list_cursor_scope(q0, 2, scopes[0]);
  list_cursor_scope(q1, 2, scopes[1]);
  const unsigned char *scope = scopes[data[0] & 1], *other = scopes[!(data[0] & 1)];
  size_t n = size - 1;
  char *s = malloc(n + 1); /* exact size: ASan sees any read past the end */
  if (!s) return 0;
  memcpy(s, data + 1, n);
  s[n] = '\0';
  struct list_cursor c;
  if (list_cursor_decode(key, scope, s, n, &c)) {
    char again[LIST_CURSOR_TEXT_MAX];
    FUZZ_CHECK(list_cursor_encode(key, scope, &c, again));
    FUZZ_CHECK(strlen(again) == n && memcmp(again, s, n) == 0);
    FUZZ_CHECK(!list_cursor_decode(key, other, s, n, &c));
  }
  /* the bytes as a position: 8 for the time, the rest (NUL-free) as the id */
  if (n >= 9 && n - 8 <= MODEL_CONVERSATION_ID_MAX && !memchr(data + 9, '\0', n - 8)) {
    struct list_cursor in = {0}, out;
    memcpy(&in.first_us, data + 1, 8);
    memcpy(in.id, data + 9, n - 8);
    char text[LIST_CURSOR_TEXT_MAX];
    FUZZ_CHECK(list_cursor_encode(key, scope, &in, text));
    size_t len = strlen(text);
    FUZZ_CHECK(len < LIST_CURSOR_TEXT_MAX);
    FUZZ_CHECK(list_cursor_decode(key, scope, text, len, &out));
    FUZZ_CHECK(out.first_us == in.first_us && strcmp(out.id, in.id) == 0);
    FUZZ_CHECK(!list_cursor_decode(key, other, text, len, &out));
    size_t at = (size_t)data[0] % len;
    text[at] = text[at] == 'A' ? 'B' : 'A';
    FUZZ_CHECK(!list_cursor_decode(key, scope, text, len, &out));
  }
  free(s);
  return 0;
}
