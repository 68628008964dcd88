/* The list endpoint's opaque cursor: a position of the list's order (first processed time
 * newest first, then conversation id) that only this service's own answers hand out.
 *
 * Text: base64url without padding of
 *   version (1 byte, 2) | first processed time in microseconds (8 bytes, big-endian) |
 *   id length (1 byte; the id's bytes are 1..MODEL_CONVERSATION_ID_MAX, so stored as len - 1) |
 *   conversation id | tag (16 bytes)
 * where tag is the first 16 bytes of HMAC-SHA256, under a key derived from the database's secret,
 * over everything before it followed by the digest of the query it belongs to (its filters and
 * the asking key's account bound; see list_cursor_scope). The filters are never in the cursor:
 * nothing a sealed store keeps sealed can be read from one, and a cursor replayed with other
 * filters, edited, or made by another deployment fails its tag. Version 1 held the (latest)
 * processed time, the order before migration 0016: such a cursor is refused, never misread. */
#ifndef GSR_LIST_CURSOR_H
#define GSR_LIST_CURSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ext/crypto.h"
#include "model/conversation.h"

#define LIST_CURSOR_KEY_LEN CRYPTO_SHA256_LEN
#define LIST_CURSOR_TAG_LEN 16
#define LIST_CURSOR_RAW_MAX (1 + 8 + 1 + MODEL_CONVERSATION_ID_MAX + LIST_CURSOR_TAG_LEN)
/* base64url of LIST_CURSOR_RAW_MAX bytes, plus NUL */
#define LIST_CURSOR_TEXT_MAX ((LIST_CURSOR_RAW_MAX * 4 + 2) / 3 + 1)

#define LIST_CURSOR_VERSION 2

struct list_cursor {
  int64_t first_us; /* store_conversation.first_processed_us of the page's last row */
  char id[MODEL_CONVERSATION_ID_MAX + 1];
};

/* The key cursors are tagged under: HMAC-SHA256 keyed with the secret given (the database's own
 * random secret, store_secret "list_cursor": every instance on the database accepts the others'
 * cursors, and a restart or a change of API_SECRET_KEY / ENCRYPTION_KEYS keeps them valid) over
 * a fixed label. false when OpenSSL failed. */
__attribute__((warn_unused_result)) bool list_cursor_key(const unsigned char *secret, size_t len,
                                                         unsigned char key[LIST_CURSOR_KEY_LEN]);

/* The digest of a query: the values in order, each marked present or absent (NULL) and
 * length-prefixed, so no two queries share one. */
void list_cursor_scope(const char *const *values, size_t n, unsigned char scope[CRYPTO_SHA256_LEN]);

/* Writes the cursor's text into out (LIST_CURSOR_TEXT_MAX bytes). false when the id is empty
 * or too long, or OpenSSL failed. */
__attribute__((warn_unused_result)) bool list_cursor_encode(
    const unsigned char key[LIST_CURSOR_KEY_LEN], const unsigned char scope[CRYPTO_SHA256_LEN],
    const struct list_cursor *c, char out[LIST_CURSOR_TEXT_MAX]);

/* Reads a cursor's text (len bytes, untrusted). false for anything that is not a cursor this
 * key made for this scope. */
__attribute__((warn_unused_result)) bool list_cursor_decode(
    const unsigned char key[LIST_CURSOR_KEY_LEN], const unsigned char scope[CRYPTO_SHA256_LEN],
    const char *text, size_t len, struct list_cursor *out);

#endif
