/* Encryption at rest (seal/seal.c). The input's first line is an ENCRYPTION_KEYS value, the
 * rest arbitrary bytes (a value read from a database someone may have edited). Properties:
 * - parsing: a ring has 1..SEAL_KEYS_MAX keys with valid, distinct ids, and every id is found
 *   by seal_ring_has; a refusal is one line naming ENCRYPTION_KEYS;
 * - opening the bytes under a fixed ring and the parsed one never reads or writes out of bounds
 *   (ASan), and succeeds only with exactly seal_plain_len bytes out, under a key the ring has;
 * - the bytes sealed under the parsed ring open again to themselves, and not with other
 *   associated data nor after any one byte (header included) is changed. */
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "seal/seal.h"

#define FIXED                                           \
  "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,k2:" \
  "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="

static struct seal_ring *fixed;

static void open_any(const struct seal_ring *r, const uint8_t *data, size_t len) {
  unsigned char *out = malloc(len ? len : 1);
  if (!out) abort();
  size_t n = 99;
  bool ok = seal_open(r, "aad", 3, data, len, out, &n);
  if (ok) {
    FUZZ_CHECK(seal_is_sealed(data, len));
    FUZZ_CHECK(n == seal_plain_len(data, len));
  } else {
    FUZZ_CHECK(n == 0);
  }
  char id[SEAL_KEY_ID_MAX + 1];
  if (seal_key_of(data, len, id)) {
    FUZZ_CHECK(seal_is_sealed(data, len));
    FUZZ_CHECK(strlen(id) >= 1 && strlen(id) <= SEAL_KEY_ID_MAX);
    if (ok) FUZZ_CHECK(seal_ring_has(r, id));
  } else {
    FUZZ_CHECK(!seal_is_sealed(data, len) && !ok && seal_plain_len(data, len) == 0);
  }
  free(out);
}

static void round_trip(const struct seal_ring *r, const uint8_t *data, size_t len) {
  size_t slen = seal_sealed_len(r, len);
  FUZZ_CHECK(slen > len);
  unsigned char *s = malloc(slen);
  unsigned char *out = malloc(len ? len : 1);
  if (!s || !out) abort();
  FUZZ_CHECK(seal_seal(r, "round", 5, data, len, s));
  FUZZ_CHECK(seal_is_sealed(s, slen) && seal_plain_len(s, slen) == len);
  size_t n = 0;
  FUZZ_CHECK(seal_open(r, "round", 5, s, slen, out, &n));
  FUZZ_CHECK(n == len && (len == 0 || memcmp(out, data, len) == 0));
  FUZZ_CHECK(!seal_open(r, "other", 5, s, slen, out, &n));
  size_t at = len ? data[0] % slen : slen - 1;
  s[at] ^= 0x20;
  FUZZ_CHECK(!seal_open(r, "round", 5, s, slen, out, &n));
  free(s);
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  if (!fixed) {
    fixed = seal_ring_parse(FIXED, err, sizeof err);
    FUZZ_CHECK(fixed != NULL);
  }
  const uint8_t *nl = memchr(data, '\n', size);
  size_t tlen = nl ? (size_t)(nl - data) : size;
  char *text = malloc(tlen + 1);
  if (!text) abort();
  memcpy(text, data, tlen);
  text[tlen] = '\0';
  const uint8_t *rest = nl ? nl + 1 : data + size;
  size_t rlen = (size_t)(data + size - rest);

  struct seal_ring *r = seal_ring_parse(text, err, sizeof err);
  if (r) {
    size_t count = seal_ring_count(r);
    FUZZ_CHECK(count >= 1 && count <= SEAL_KEYS_MAX);
    for (size_t i = 0; i < count; i++) {
      const char *id = seal_ring_key_id(r, i);
      FUZZ_CHECK(id && strlen(id) >= 1 && strlen(id) <= SEAL_KEY_ID_MAX);
      FUZZ_CHECK(strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") ==
                 strlen(id));
      FUZZ_CHECK(seal_ring_has(r, id));
      for (size_t j = 0; j < i; j++) FUZZ_CHECK(strcmp(id, seal_ring_key_id(r, j)) != 0);
    }
    FUZZ_CHECK(seal_ring_key_id(r, count) == NULL);
    open_any(r, rest, rlen);
    round_trip(r, rest, rlen);
    seal_ring_free(r);
  } else if (tlen > 0 && strlen(text) == tlen) {
    FUZZ_CHECK(strncmp(err, "ENCRYPTION_KEYS", 15) == 0 && !strchr(err, '\n'));
  }
  open_any(fixed, rest, rlen);
  free(text);
  return 0;
}
