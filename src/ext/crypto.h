/* Adapters to OpenSSL libcrypto: randomness, digests, constant-time comparison. */
#ifndef GSR_CRYPTO_H
#define GSR_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#define CRYPTO_SHA256_LEN 32

/* Fills buf with n random bytes from the CSPRNG; false if it failed. */
__attribute__((warn_unused_result)) bool crypto_random(unsigned char *buf, size_t n);
/* Writes 2*n lowercase hex digits of n random bytes plus NUL into out (cap >= 2n+1). */
__attribute__((warn_unused_result)) bool crypto_random_hex(char *out, size_t cap, size_t n);
/* Writes the 40 lowercase hex digits of SHA-1(data) plus NUL (for Redis script ids). */
void crypto_sha1_hex(const void *data, size_t len, char out[41]);
void crypto_sha256(const void *data, size_t len, unsigned char out[CRYPTO_SHA256_LEN]);
/* SHA-256 fed piece by piece (bodies that stream in). NULL when out of memory. */
struct crypto_sha256_stream;
struct crypto_sha256_stream *crypto_sha256_new(void);
void crypto_sha256_update(struct crypto_sha256_stream *st, const void *data, size_t len);
void crypto_sha256_final(struct crypto_sha256_stream *st, unsigned char out[CRYPTO_SHA256_LEN]);
void crypto_sha256_free(struct crypto_sha256_stream *st);
/* HMAC-SHA256 of data under key into out; false when OpenSSL failed (out then unusable). */
__attribute__((warn_unused_result)) bool crypto_hmac_sha256(const void *key, size_t key_len,
                                                            const void *data, size_t len,
                                                            unsigned char out[CRYPTO_SHA256_LEN]);
/* Compares two equal-length buffers in time independent of their contents. */
bool crypto_equal(const void *a, const void *b, size_t len);

#endif
