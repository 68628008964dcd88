/* The list endpoint's cursor (list_cursor.h). */
#include "api/list_cursor.h"

#include <string.h>

#include "core/base64.h"

bool list_cursor_key(const unsigned char *secret, size_t len,
                     unsigned char key[LIST_CURSOR_KEY_LEN]) {
  static const char label[] = "gensendrep list cursor v2";
  return crypto_hmac_sha256(secret, len, label, sizeof label - 1, key);
}

void list_cursor_scope(const char *const *values, size_t n,
                       unsigned char scope[CRYPTO_SHA256_LEN]) {
  struct crypto_sha256_stream *st = crypto_sha256_new();
  if (!st) {
    /* No memory for a digest: a scope no cursor was made for, so every cursor is refused. */
    memset(scope, 0xff, CRYPTO_SHA256_LEN);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char head[9] = {values[i] != NULL};
    uint64_t len = values[i] ? strlen(values[i]) : 0;
    for (int b = 0; b < 8; b++) head[1 + b] = (unsigned char)(len >> (56 - 8 * b));
    crypto_sha256_update(st, head, sizeof head);
    if (len) crypto_sha256_update(st, values[i], (size_t)len);
  }
  crypto_sha256_final(st, scope);
  crypto_sha256_free(st);
}

/* The tag of raw[0..len) for scope. */
static bool tag_of(const unsigned char key[LIST_CURSOR_KEY_LEN],
                   const unsigned char scope[CRYPTO_SHA256_LEN], const unsigned char *raw,
                   size_t len, unsigned char tag[CRYPTO_SHA256_LEN]) {
  unsigned char msg[LIST_CURSOR_RAW_MAX + CRYPTO_SHA256_LEN];
  memcpy(msg, raw, len);
  memcpy(msg + len, scope, CRYPTO_SHA256_LEN);
  return crypto_hmac_sha256(key, LIST_CURSOR_KEY_LEN, msg, len + CRYPTO_SHA256_LEN, tag);
}

bool list_cursor_encode(const unsigned char key[LIST_CURSOR_KEY_LEN],
                        const unsigned char scope[CRYPTO_SHA256_LEN], const struct list_cursor *c,
                        char out[LIST_CURSOR_TEXT_MAX]) {
  size_t idlen = strnlen(c->id, sizeof c->id);
  if (idlen == 0 || idlen > MODEL_CONVERSATION_ID_MAX) return false;
  unsigned char raw[LIST_CURSOR_RAW_MAX], tag[CRYPTO_SHA256_LEN];
  size_t n = 0;
  raw[n++] = LIST_CURSOR_VERSION;
  uint64_t p = (uint64_t)c->first_us;
  for (int b = 0; b < 8; b++) raw[n++] = (unsigned char)(p >> (56 - 8 * b));
  raw[n++] = (unsigned char)(idlen - 1);
  memcpy(raw + n, c->id, idlen);
  n += idlen;
  if (!tag_of(key, scope, raw, n, tag)) return false;
  memcpy(raw + n, tag, LIST_CURSOR_TAG_LEN);
  n += LIST_CURSOR_TAG_LEN;
  base64url_encode(raw, n, out);
  return true;
}

bool list_cursor_decode(const unsigned char key[LIST_CURSOR_KEY_LEN],
                        const unsigned char scope[CRYPTO_SHA256_LEN], const char *text, size_t len,
                        struct list_cursor *out) {
  unsigned char raw[LIST_CURSOR_RAW_MAX], tag[CRYPTO_SHA256_LEN];
  if (len >= LIST_CURSOR_TEXT_MAX) return false;
  long n = base64url_decode(text, len, raw, sizeof raw);
  if (n < 1 + 8 + 1 + 1 + LIST_CURSOR_TAG_LEN || raw[0] != LIST_CURSOR_VERSION) return false;
  size_t idlen = (size_t)raw[9] + 1;
  if ((size_t)n != 1 + 8 + 1 + idlen + LIST_CURSOR_TAG_LEN) return false;
  size_t body = (size_t)n - LIST_CURSOR_TAG_LEN;
  if (!tag_of(key, scope, raw, body, tag) || !crypto_equal(tag, raw + body, LIST_CURSOR_TAG_LEN))
    return false;
  uint64_t p = 0;
  for (int b = 0; b < 8; b++) p = p << 8 | raw[1 + b];
  /* Tagged, so written by list_cursor_encode: still, never hand the store a NUL-cut id. */
  if (memchr(raw + 10, '\0', idlen)) return false;
  out->first_us = (int64_t)p;
  memcpy(out->id, raw + 10, idlen);
  out->id[idlen] = '\0';
  return true;
}
