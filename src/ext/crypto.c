/* OpenSSL adapters. Kept tiny so the rest of the code never includes OpenSSL headers. */
#include "ext/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
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

struct crypto_sha256_stream *crypto_sha256_new(void) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(ctx);
    ctx = NULL;
  }
  return (struct crypto_sha256_stream *)ctx;
}

void crypto_sha256_update(struct crypto_sha256_stream *st, const void *data, size_t len) {
  (void)EVP_DigestUpdate((EVP_MD_CTX *)st, data, len);
}

void crypto_sha256_final(struct crypto_sha256_stream *st, unsigned char out[CRYPTO_SHA256_LEN]) {
  unsigned int n = 0;
  (void)EVP_DigestFinal_ex((EVP_MD_CTX *)st, out, &n);
}

void crypto_sha256_free(struct crypto_sha256_stream *st) { EVP_MD_CTX_free((EVP_MD_CTX *)st); }
