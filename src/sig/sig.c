/* Webhook signatures (sig.h): header parsers, keyrings and HMAC-SHA256 checks for the ElevenLabs
 * scheme and Standard Webhooks. Strict on syntax (a header we cannot read is SIG_MALFORMED,
 * never a guess), lenient only where the schemes say so (item order, unknown items, other
 * signature versions). Every MAC comparison is CRYPTO_memcmp and walks every key and every
 * signature, so timing says nothing about which one came close. */
#include "sig/sig.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base64.h"

#define SIG_MAC_LEN 32
#define SIG_ID_MAX 256          /* webhook-id bytes */
#define SIG_INT64_DIGITS_MAX 19 /* INT64_MAX has 19 digits */

/* ---- messages ---- */

const char *sig_message_elevenlabs(enum sig_result r) {
  switch (r) {
    case SIG_OK:
      return "ElevenLabs-Signature is valid";
    case SIG_MISSING:
      return "Missing ElevenLabs-Signature header";
    case SIG_MALFORMED:
      return "Malformed ElevenLabs-Signature header: expected t=<unix seconds>,v0=<hex "
             "HMAC-SHA256>";
    case SIG_STALE:
      return "ElevenLabs-Signature timestamp is too old (outside the tolerance)";
    case SIG_FUTURE:
      return "ElevenLabs-Signature timestamp is in the future";
    case SIG_MISMATCH:
      return "ElevenLabs-Signature does not match the body (wrong secret or modified body)";
  }
  return "Invalid ElevenLabs-Signature";
}

const char *sig_message_standard(enum sig_result r) {
  switch (r) {
    case SIG_OK:
      return "webhook-signature is valid";
    case SIG_MISSING:
      return "Missing Standard Webhooks headers: webhook-id, webhook-timestamp and "
             "webhook-signature are required";
    case SIG_MALFORMED:
      return "Malformed Standard Webhooks headers: expected webhook-id (non-empty), "
             "webhook-timestamp (unix seconds) and webhook-signature (space-separated "
             "v1,<base64 HMAC-SHA256>)";
    case SIG_STALE:
      return "webhook-timestamp is too old (outside the tolerance)";
    case SIG_FUTURE:
      return "webhook-timestamp is in the future (outside the tolerance)";
    case SIG_MISMATCH:
      return "webhook-signature does not match the body (wrong secret or modified body)";
  }
  return "Invalid webhook-signature";
}

/* ---- small strict decoders ---- */

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Exactly 2*n hex digits (either case) into n bytes. */
static bool hex_decode(const char *s, size_t len, unsigned char *out, size_t n) {
  if (len != 2 * n) return false;
  for (size_t i = 0; i < n; i++) {
    int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = (unsigned char)(hi << 4 | lo);
  }
  return true;
}

/* Unsigned decimal that fits int64_t; "0" or no leading zero when canonical is set. */
static bool decimal_parse(const char *s, size_t len, bool canonical, int64_t *out) {
  if (len == 0 || len > SIG_INT64_DIGITS_MAX + (canonical ? 0 : 16)) return false;
  if (canonical && len > 1 && s[0] == '0') return false;
  int64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, s[i] - '0', &v))
      return false;
  }
  *out = v;
  return true;
}

/* now - past <= t <= now + future, without overflow whatever the inputs. */
static enum sig_result check_window(int64_t t, int64_t now_s, int64_t past, int64_t future) {
  int64_t lo, hi;
  if (past < 0) past = 0;
  if (future < 0) future = 0;
  if (__builtin_sub_overflow(now_s, past, &lo)) lo = INT64_MIN;
  if (__builtin_add_overflow(now_s, future, &hi)) hi = INT64_MAX;
  if (t < lo) return SIG_STALE;
  if (t > hi) return SIG_FUTURE;
  return SIG_OK;
}

enum sig_result sig_check_time(int64_t t, int64_t now_s, long tolerance_s) {
  return check_window(t, now_s, (int64_t)tolerance_s, SIG_FUTURE_SECONDS);
}

/* ---- HMAC (OpenSSL 3 EVP_MAC; the algorithm is fetched once per process) ---- */

static EVP_MAC *hmac_alg;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void) { hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL); }

static EVP_MAC_CTX *hmac_new(const struct sig_key *key) {
  pthread_once(&hmac_once, hmac_fetch);
  if (!hmac_alg) return NULL;
  EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(hmac_alg);
  if (!ctx) return NULL;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  if (EVP_MAC_init(ctx, key->bytes, key->len, params) != 1) {
    EVP_MAC_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

static bool hmac_final(EVP_MAC_CTX *ctx, unsigned char out[SIG_MAC_LEN]) {
  size_t n = 0;
  return EVP_MAC_final(ctx, out, &n, SIG_MAC_LEN) == 1 && n == SIG_MAC_LEN;
}

/* ---- keyrings ---- */

void sig_keyring_clear(struct sig_keyring *ring) {
  if (!ring) return;
  OPENSSL_cleanse(ring, sizeof *ring);
}

enum keyring_kind { KEYRING_ELEVENLABS, KEYRING_STANDARD };

__attribute__((format(printf, 4, 5))) static bool keyring_fail(struct sig_keyring *out, char *err,
                                                               size_t errlen, const char *fmt,
                                                               ...) {
  sig_keyring_clear(out);
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return false;
}

/* One secret (already trimmed) into key; false with a message naming its position only. */
static bool keyring_add(enum keyring_kind kind, const char *s, size_t len, size_t item,
                        struct sig_keyring *out, char *err, size_t errlen) {
  if (len == 0) return keyring_fail(out, err, errlen, "secret %zu is empty", item);
  if (out->count == SIG_KEYS_MAX)
    return keyring_fail(out, err, errlen, "secret %zu is one too many (at most 8 secrets at once)",
                        item);
  struct sig_key *key = &out->keys[out->count];
  if (kind == KEYRING_ELEVENLABS) {
    if (len > SIG_KEY_BYTES_MAX)
      return keyring_fail(out, err, errlen, "secret %zu is longer than 256 bytes", item);
    memcpy(key->bytes, s, len);
    key->len = len;
  } else {
    static const char prefix[] = "whsec_";
    if (len >= sizeof prefix - 1 && memcmp(s, prefix, sizeof prefix - 1) == 0) {
      s += sizeof prefix - 1;
      len -= sizeof prefix - 1;
    }
    size_t n = 0;
    if (!base64_decode(s, len, false, key->bytes, SIG_KEY_BYTES_MAX, &n) || n > SIG_KEY_BYTES_MAX)
      return keyring_fail(out, err, errlen,
                          "secret %zu is not whsec_<base64> (strict padded base64 of at most "
                          "256 bytes after the optional whsec_ prefix)",
                          item);
    if (n == 0) return keyring_fail(out, err, errlen, "secret %zu decodes to an empty key", item);
    key->len = n;
  }
  out->count++;
  return true;
}

static bool keyring_parse(enum keyring_kind kind, const char *csv, struct sig_keyring *out,
                          char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (!csv || !*csv) return true;
  size_t item = 1;
  for (const char *p = csv;; item++) {
    const char *end = strchr(p, ',');
    if (!end) end = p + strlen(p);
    const char *a = p, *b = end;
    while (a < b && is_ows(*a)) a++;
    while (b > a && is_ows(b[-1])) b--;
    if (!keyring_add(kind, a, (size_t)(b - a), item, out, err, errlen)) return false;
    if (!*end) break;
    p = end + 1;
  }
  return true;
}

bool sig_keyring_elevenlabs(const char *csv, struct sig_keyring *out, char *err, size_t errlen) {
  return keyring_parse(KEYRING_ELEVENLABS, csv, out, err, errlen);
}

bool sig_keyring_standard(const char *csv, struct sig_keyring *out, char *err, size_t errlen) {
  return keyring_parse(KEYRING_STANDARD, csv, out, err, errlen);
}

/* ---- ElevenLabs ---- */

enum sig_result sig_elevenlabs_parse(const char *header, struct sig_elevenlabs *out) {
  memset(out, 0, sizeof *out);
  if (!header) return SIG_MISSING;
  bool have_t = false;
  for (const char *p = header;;) {
    const char *end = strchr(p, ',');
    if (!end) end = p + strlen(p);
    const char *a = p, *b = end;
    while (a < b && is_ows(*a)) a++;
    while (b > a && is_ows(b[-1])) b--;
    size_t len = (size_t)(b - a);
    if (len >= 2 && a[0] == 't' && a[1] == '=') {
      if (have_t || !decimal_parse(a + 2, len - 2, true, &out->t)) return SIG_MALFORMED;
      have_t = true;
    } else if (len >= 3 && a[0] == 'v' && a[1] == '0' && a[2] == '=') {
      if (out->count == SIG_SIGNATURES_MAX ||
          !hex_decode(a + 3, len - 3, out->v0[out->count], SIG_MAC_LEN))
        return SIG_MALFORMED;
      out->count++;
    }
    /* anything else (another scheme's item, an empty item) is ignored */
    if (!*end) break;
    p = end + 1;
  }
  return have_t && out->count > 0 ? SIG_OK : SIG_MALFORMED;
}

struct sig_stream {
  size_t count;
  bool failed; /* an OpenSSL call failed: nothing matches */
  bool done;
  EVP_MAC_CTX *ctx[SIG_KEYS_MAX];
};

struct sig_stream *sig_stream_new(const struct sig_keyring *ring, int64_t t) {
  struct sig_stream *st = calloc(1, sizeof *st);
  if (!st) return NULL;
  char prefix[32];
  int n = snprintf(prefix, sizeof prefix, "%lld.", (long long)t);
  size_t count = ring ? ring->count : 0;
  if (count > SIG_KEYS_MAX) count = SIG_KEYS_MAX;
  for (size_t i = 0; i < count; i++) {
    st->ctx[i] = hmac_new(&ring->keys[i]);
    if (!st->ctx[i]) {
      sig_stream_free(st);
      return NULL;
    }
    st->count++;
    if (EVP_MAC_update(st->ctx[i], (const unsigned char *)prefix, (size_t)n) != 1)
      st->failed = true;
  }
  return st;
}

void sig_stream_update(struct sig_stream *st, const void *data, size_t len) {
  if (!st || len == 0 || st->done) return;
  for (size_t i = 0; i < st->count; i++)
    if (EVP_MAC_update(st->ctx[i], data, len) != 1) st->failed = true;
}

/* Index of the first key whose MAC is among sigs, or -1; compares every pair. */
static int match_macs(const unsigned char (*macs)[SIG_MAC_LEN], const bool *mac_ok, size_t nkeys,
                      const unsigned char (*sigs)[SIG_MAC_LEN], size_t nsigs) {
  int found = -1;
  for (size_t k = 0; k < nkeys; k++) {
    int hit = 0;
    for (size_t s = 0; s < nsigs; s++) hit |= CRYPTO_memcmp(macs[k], sigs[s], SIG_MAC_LEN) == 0;
    if (hit && mac_ok[k] && found < 0) found = (int)k;
  }
  return found;
}

int sig_stream_match(struct sig_stream *st, const struct sig_elevenlabs *sig) {
  if (!st || !sig || st->done) return -1;
  st->done = true;
  unsigned char macs[SIG_KEYS_MAX][SIG_MAC_LEN];
  bool ok[SIG_KEYS_MAX];
  for (size_t i = 0; i < st->count; i++) ok[i] = hmac_final(st->ctx[i], macs[i]);
  size_t nsigs = sig->count > SIG_SIGNATURES_MAX ? SIG_SIGNATURES_MAX : sig->count;
  int found = st->failed ? -1 : match_macs(macs, ok, st->count, sig->v0, nsigs);
  OPENSSL_cleanse(macs, sizeof macs);
  return found;
}

void sig_stream_free(struct sig_stream *st) {
  if (!st) return;
  for (size_t i = 0; i < st->count; i++) EVP_MAC_CTX_free(st->ctx[i]);
  free(st);
}

/* ---- Standard Webhooks ---- */

/* webhook-id: 1..SIG_ID_MAX visible ASCII characters. */
static bool standard_id_ok(const char *id) {
  size_t n = strlen(id);
  if (n == 0 || n > SIG_ID_MAX) return false;
  for (size_t i = 0; i < n; i++)
    if (id[i] <= ' ' || id[i] > '~') return false;
  return true;
}

/* Space-separated "<version>,<value>" items; the v1 values (base64 of 32 bytes) into sigs. */
static enum sig_result standard_parse_signatures(const char *h, unsigned char (*sigs)[SIG_MAC_LEN],
                                                 size_t *count) {
  *count = 0;
  for (const char *p = h; *p;) {
    if (is_ows(*p)) {
      p++;
      continue;
    }
    const char *end = p;
    while (*end && !is_ows(*end)) end++;
    const char *comma = memchr(p, ',', (size_t)(end - p));
    if (!comma || comma == p) return SIG_MALFORMED;
    if (comma - p == 2 && p[0] == 'v' && p[1] == '1') {
      size_t n = 0;
      if (*count == SIG_SIGNATURES_MAX ||
          !base64_decode(comma + 1, (size_t)(end - comma - 1), false, sigs[*count], SIG_MAC_LEN,
                         &n) ||
          n != SIG_MAC_LEN)
        return SIG_MALFORMED;
      (*count)++;
    }
    /* other versions (v1a: asymmetric, v2...) are not ours to check */
    p = end;
  }
  return *count > 0 ? SIG_OK : SIG_MALFORMED;
}

enum sig_result sig_standard_verify(const struct sig_keyring *ring, const char *id,
                                    const char *timestamp, const char *signatures, const void *body,
                                    size_t len, int64_t now_s, long tolerance_s) {
  if (!id && !timestamp && !signatures) return SIG_MISSING;
  if (!id || !timestamp || !signatures) return SIG_MALFORMED;
  int64_t t;
  if (!standard_id_ok(id) || !decimal_parse(timestamp, strlen(timestamp), false, &t))
    return SIG_MALFORMED;
  unsigned char sigs[SIG_SIGNATURES_MAX][SIG_MAC_LEN];
  size_t nsigs = 0;
  enum sig_result r = standard_parse_signatures(signatures, sigs, &nsigs);
  if (r != SIG_OK) return r;
  r = check_window(t, now_s, (int64_t)tolerance_s, (int64_t)tolerance_s);
  if (r != SIG_OK) return r;

  unsigned char macs[SIG_KEYS_MAX][SIG_MAC_LEN];
  bool ok[SIG_KEYS_MAX] = {false};
  size_t nkeys = ring ? ring->count : 0;
  if (nkeys > SIG_KEYS_MAX) nkeys = SIG_KEYS_MAX;
  for (size_t k = 0; k < nkeys; k++) {
    EVP_MAC_CTX *ctx = hmac_new(&ring->keys[k]);
    /* The timestamp is signed as sent (the sender's own digits). */
    ok[k] = ctx && EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) == 1 &&
            EVP_MAC_update(ctx, (const unsigned char *)".", 1) == 1 &&
            EVP_MAC_update(ctx, (const unsigned char *)timestamp, strlen(timestamp)) == 1 &&
            EVP_MAC_update(ctx, (const unsigned char *)".", 1) == 1 &&
            (len == 0 || EVP_MAC_update(ctx, body, len) == 1) && hmac_final(ctx, macs[k]);
    if (!ok[k]) memset(macs[k], 0, SIG_MAC_LEN);
    EVP_MAC_CTX_free(ctx);
  }
  int found = match_macs(macs, ok, nkeys, sigs, nsigs);
  OPENSSL_cleanse(macs, sizeof macs);
  return found >= 0 ? SIG_OK : SIG_MISMATCH;
}
