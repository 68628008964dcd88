/* OpenSSL adapters. Kept tiny so the rest of the code never includes OpenSSL headers. */
#include "ext/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Randomness comes from OpenSSL's DRBG, which costs about a microsecond a call however few bytes
 * it gives, and a webhook takes several small values (its request id, its event id, ...). So each
 * thread draws a pool at once and hands it out: a byte handed out is wiped from the pool at once,
 * so the pool never holds a value in use. A fork's child (none happens today) starts afresh. */
#define RANDOM_POOL_BYTES 1024
static _Thread_local struct {
  unsigned char b[RANDOM_POOL_BYTES];
  size_t at; /* the bytes before it are handed out (wiped) */
  bool filled;
} pool;
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void pool_forget(void) { OPENSSL_cleanse(&pool, sizeof pool); }

static void pool_init(void) { (void)pthread_atfork(NULL, NULL, pool_forget); }

bool crypto_random(unsigned char *buf, size_t n) {
  if (n > RANDOM_POOL_BYTES / 8) return RAND_bytes(buf, (int)n) == 1;
  if (!pool.filled || RANDOM_POOL_BYTES - pool.at < n) {
    pthread_once(&pool_once, pool_init);
    if (RAND_bytes(pool.b, RANDOM_POOL_BYTES) != 1) {
      pool_forget();
      return false;
    }
    pool.at = 0;
    pool.filled = true;
  }
  memcpy(buf, pool.b + pool.at, n);
  OPENSSL_cleanse(pool.b + pool.at, n);
  pool.at += n;
  return true;
}

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

/* SHA-256 runs for every webhook (its body, its audit entry): OpenSSL 3's one-shot SHA256()
 * looks the algorithm up on every call (about 0.8 us), so the algorithm is fetched once and
 * each thread keeps one digest context (freed when the thread exits). Anything failing falls
 * back to the one-shot call. */
static EVP_MD *sha256_md;
static pthread_key_t sha256_key;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static bool sha256_ready;

static void sha256_ctx_free(void *ctx) { EVP_MD_CTX_free(ctx); }

static void sha256_init(void) {
  sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
  sha256_ready = sha256_md && pthread_key_create(&sha256_key, sha256_ctx_free) == 0;
}

static EVP_MD_CTX *sha256_ctx(void) {
  if (pthread_once(&sha256_once, sha256_init) != 0 || !sha256_ready) return NULL;
  EVP_MD_CTX *ctx = pthread_getspecific(sha256_key);
  if (ctx) return ctx;
  ctx = EVP_MD_CTX_new();
  if (ctx && pthread_setspecific(sha256_key, ctx) != 0) {
    EVP_MD_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

void crypto_sha256(const void *data, size_t len, unsigned char out[CRYPTO_SHA256_LEN]) {
  EVP_MD_CTX *ctx = sha256_ctx();
  unsigned n = 0;
  if (ctx && EVP_DigestInit_ex2(ctx, sha256_md, NULL) == 1 &&
      EVP_DigestUpdate(ctx, data, len) == 1 && EVP_DigestFinal_ex(ctx, out, &n) == 1 &&
      n == CRYPTO_SHA256_LEN)
    return;
  SHA256(data, len, out);
}

bool crypto_equal(const void *a, const void *b, size_t len) {
  return CRYPTO_memcmp(a, b, len) == 0;
}

struct crypto_sha256_stream *crypto_sha256_new(void) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  bool fetched = pthread_once(&sha256_once, sha256_init) == 0 && sha256_ready;
  if (ctx && EVP_DigestInit_ex2(ctx, fetched ? sha256_md : EVP_sha256(), NULL) != 1) {
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

bool crypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                        unsigned char out[CRYPTO_SHA256_LEN]) {
  unsigned n = 0;
  if (key_len > (1u << 20)) return false;
  return HMAC(EVP_sha256(), key, (int)key_len, data, len, out, &n) != NULL &&
         n == CRYPTO_SHA256_LEN;
}
