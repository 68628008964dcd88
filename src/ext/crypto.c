/* OpenSSL adapters. Kept tiny so the rest of the code never includes OpenSSL headers. */
#include "ext/crypto.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

bool crypto_random(unsigned char *buf, size_t n) { return RAND_bytes(buf, (int)n) == 1; }

bool crypto_random_hex(char *out, size_t cap, size_t n) {
  static const char hex[] = "0123456789abcdef";
  unsigned char raw[64];
  if (n > sizeof raw || cap < 2 * n + 1 || !crypto_random(raw, n)) return false;
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[raw[i] >> 4];
    out[2 * i + 1] = hex[raw[i] & 15];
  }
  out[2 * n] = '\0';
  return true;
}

void crypto_sha1_hex(const void *data, size_t len, char out[41]) {
  static const char hex[] = "0123456789abcdef";
  unsigned char d[SHA_DIGEST_LENGTH];
  SHA1(data, len, d);
  for (size_t i = 0; i < SHA_DIGEST_LENGTH; i++) {
    out[2 * i] = hex[d[i] >> 4];
    out[2 * i + 1] = hex[d[i] & 15];
  }
  out[40] = '\0';
}

void crypto_sha256(const void *data, size_t len, unsigned char out[CRYPTO_SHA256_LEN]) {
  SHA256(data, len, out);
}

bool crypto_equal(const void *a, const void *b, size_t len) {
  return CRYPTO_memcmp(a, b, len) == 0;
}
