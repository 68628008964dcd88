/* Webhook signature headers (sig/sig.c). The input is split at '\n' into the
 * ElevenLabs-Signature value, webhook-id, webhook-timestamp and webhook-signature (a field
 * that is not there is an absent header); the rest is the body. Properties:
 * - ElevenLabs: a parsed header has a non-negative t and 1..SIG_SIGNATURES_MAX v0 values, and
 *   its canonical form ("t=<t>,v0=<hex>,...") parses to the same values; streaming the body in
 *   two chunks matches exactly like one chunk; a v0 computed here (OpenSSL HMAC()) for the
 *   parsed t always verifies under the second key of the ring, and never under an empty ring.
 * - Standard Webhooks: SIG_OK never comes from an empty ring nor without a "v1," item; a
 *   signature computed here verifies whenever the id and timestamp are well-formed (a
 *   MALFORMED answer to the computed signature implies MALFORMED for the fuzzed one too). */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "sig/sig.h"

#define EL_KEYS "wsec_first,wsec_57506b15b729457580a8ec8a16cf3b594534526df7cfdef57efafbed7ad50768"
#define STD_KEYS \
  "whsec_c2Vjb25kIGtleSBmb3Igcm90YXRpb24=,whsec_gDFaF0FAk7TtVWKyk+sZ5/EaGBUM0C+68pOIzQmlWhg="
#define NOW 1773151625LL

static struct sig_keyring el_ring, std_ring, empty_ring;

static void rings_init(void) {
  static int done;
  if (done) return;
  char err[256];
  FUZZ_CHECK(sig_keyring_elevenlabs(EL_KEYS, &el_ring, err, sizeof err));
  FUZZ_CHECK(sig_keyring_standard(STD_KEYS, &std_ring, err, sizeof err));
  FUZZ_CHECK(sig_keyring_standard("", &empty_ring, err, sizeof err));
  done = 1;
}

/* A NUL-terminated copy of exactly len bytes (ASan sees any read past it). */
static char *dup_field(const uint8_t *p, size_t len) {
  char *s = malloc(len + 1);
  if (!s) abort();
  memcpy(s, p, len);
  s[len] = '\0';
  return s;
}

static int stream_match(const struct sig_keyring *ring, const struct sig_elevenlabs *sig,
                        const uint8_t *body, size_t len, size_t split) {
  struct sig_stream *st = sig_stream_new(ring, sig->t);
  FUZZ_CHECK(st != NULL);
  sig_stream_update(st, body, split);
  sig_stream_update(st, body + split, len - split);
  int idx = sig_stream_match(st, sig);
  sig_stream_free(st);
  return idx;
}

static void mac(const struct sig_key *key, const char *prefix, const uint8_t *body, size_t len,
                unsigned char out[32]) {
  size_t plen = strlen(prefix);
  unsigned char *msg = malloc(plen + len + 1);
  if (!msg) abort();
  memcpy(msg, prefix, plen);
  if (len) memcpy(msg + plen, body, len);
  unsigned int n = 0;
  FUZZ_CHECK(HMAC(EVP_sha256(), key->bytes, (int)key->len, msg, plen + len, out, &n) != NULL);
  FUZZ_CHECK(n == 32);
  free(msg);
}

static void check_elevenlabs(const char *header, const uint8_t *body, size_t len) {
  struct sig_elevenlabs sig;
  enum sig_result r = sig_elevenlabs_parse(header, &sig);
  if (!header) FUZZ_CHECK(r == SIG_MISSING);
  if (r != SIG_OK) {
    FUZZ_CHECK(r == SIG_MISSING || r == SIG_MALFORMED);
    return;
  }
  FUZZ_CHECK(sig.t >= 0);
  FUZZ_CHECK(sig.count >= 1 && sig.count <= SIG_SIGNATURES_MAX);
  FUZZ_CHECK(strstr(header, "t=") && strstr(header, "v0="));
  /* canonical form round-trips */
  char canon[32 + SIG_SIGNATURES_MAX * 70];
  int n = snprintf(canon, sizeof canon, "t=%lld", (long long)sig.t);
  for (size_t i = 0; i < sig.count; i++) {
    n += snprintf(canon + n, sizeof canon - (size_t)n, ",v0=");
    for (size_t k = 0; k < 32; k++)
      n += snprintf(canon + n, sizeof canon - (size_t)n, "%02x", sig.v0[i][k]);
  }
  struct sig_elevenlabs again;
  FUZZ_CHECK(sig_elevenlabs_parse(canon, &again) == SIG_OK);
  FUZZ_CHECK(again.t == sig.t && again.count == sig.count);
  FUZZ_CHECK(memcmp(again.v0, sig.v0, sizeof sig.v0) == 0);

  size_t split = len ? (size_t)body[0] % (len + 1) : 0;
  int one = stream_match(&el_ring, &sig, body, len, len);
  FUZZ_CHECK(one >= -1 && one < (int)el_ring.count);
  FUZZ_CHECK(stream_match(&el_ring, &sig, body, len, split) == one);
  FUZZ_CHECK(stream_match(&empty_ring, &sig, body, len, split) == -1);

  /* a genuine signature from the second key, appended where there is room */
  char prefix[32];
  snprintf(prefix, sizeof prefix, "%lld.", (long long)sig.t);
  struct sig_elevenlabs good = sig;
  if (good.count == SIG_SIGNATURES_MAX) good.count--;
  mac(&el_ring.keys[1], prefix, body, len, good.v0[good.count++]);
  int idx = stream_match(&el_ring, &good, body, len, split);
  FUZZ_CHECK(idx == 0 || idx == 1);
}

static void check_standard(const char *id, const char *ts, const char *sigs, const uint8_t *body,
                           size_t len) {
  enum sig_result r = sig_standard_verify(&std_ring, id, ts, sigs, body, len, NOW, 300);
  FUZZ_CHECK(r >= SIG_OK && r <= SIG_MISMATCH);
  if (!id && !ts && !sigs) FUZZ_CHECK(r == SIG_MISSING);
  if (r == SIG_OK) FUZZ_CHECK(strstr(sigs, "v1,") != NULL);
  if (r == SIG_MISSING) FUZZ_CHECK(!id && !ts && !sigs);
  FUZZ_CHECK(sig_standard_verify(&empty_ring, id, ts, sigs, body, len, NOW, 300) != SIG_OK);
  if (!id || !ts) return;

  /* now = the timestamp itself when it reads as a plain number, so the window is never in the
   * way of the computed signature */
  int64_t now = NOW;
  size_t tlen = strlen(ts);
  bool plain = tlen > 0 && tlen <= 18 && strspn(ts, "0123456789") == tlen;
  if (plain) now = strtoll(ts, NULL, 10);
  size_t idlen = strlen(id);
  char *prefix = malloc(idlen + tlen + 3);
  if (!prefix) abort();
  snprintf(prefix, idlen + tlen + 3, "%s.%s.", id, ts);
  unsigned char m[32];
  mac(&std_ring.keys[1], prefix, body, len, m);
  free(prefix);
  char good[3 + 45];
  memcpy(good, "v1,", 3);
  FUZZ_CHECK(EVP_EncodeBlock((unsigned char *)good + 3, m, 32) == 44);
  enum sig_result r2 = sig_standard_verify(&std_ring, id, ts, good, body, len, now, 300);
  FUZZ_CHECK(r2 != SIG_MISMATCH && r2 != SIG_MISSING);
  if (plain) FUZZ_CHECK(r2 == SIG_OK || r2 == SIG_MALFORMED);
  if (plain && r2 == SIG_MALFORMED) /* the id is bad: whatever the signature, malformed */
    FUZZ_CHECK(sig_standard_verify(&std_ring, id, ts, sigs, body, len, now, 300) == SIG_MALFORMED);
  if (plain && strspn(id, "abcdefghijklmnopqrstuvwxyz_0123456789") == idlen && idlen > 0 &&
      idlen <= 64)
    FUZZ_CHECK(r2 == SIG_OK);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  rings_init();
  char *field[4] = {NULL, NULL, NULL, NULL};
  size_t off = 0;
  for (int i = 0; i < 4 && off <= size; i++) {
    const uint8_t *nl = memchr(data + off, '\n', size - off);
    if (!nl) break;
    field[i] = dup_field(data + off, (size_t)(nl - (data + off)));
    off = (size_t)(nl - data) + 1;
  }
  /* "-" stands for an absent header, so absent and empty values are both reachable */
  for (int i = 0; i < 4; i++)
    if (field[i] && strcmp(field[i], "-") == 0) {
      free(field[i]);
      field[i] = NULL;
    }
  size_t blen = size - off;
  uint8_t *body = malloc(blen ? blen : 1);
  if (!body) abort();
  if (blen) memcpy(body, data + off, blen);
  check_elevenlabs(field[0], body, blen);
  check_standard(field[1], field[2], field[3], body, blen);
  free(body);
  for (int i = 0; i < 4; i++) free(field[i]);
  return 0;
}
