/* Unit tests for sig/: the ElevenLabs-Signature parser, the time window, HMAC-SHA256 vectors
 * (computed with Python's hmac module and the fixtures' sign.py, hard-coded here), key rotation,
 * streaming, Standard Webhooks verification and keyring parsing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sig/sig.h"

#define T0 1773151625LL
#define EL_SECRET "wsec_57506b15b729457580a8ec8a16cf3b594534526df7cfdef57efafbed7ad50768"
#define STD_SECRET "whsec_gDFaF0FAk7TtVWKyk+sZ5/EaGBUM0C+68pOIzQmlWhg="
#define STD_SECRET2 "whsec_c2Vjb25kIGtleSBmb3Igcm90YXRpb24=" /* "second key for rotation" */
#define BODY "{\"type\":\"post_call_transcription\",\"data\":{\"conversation_id\":\"conv_1\"}}"
/* python3 sign.py body.json --secret EL_SECRET --timestamp 1773151625 */
#define EL_MAC "ff664dc0e82441403638a30754159cae55e7c40a9453dc7fcebf6a56360f20b6"
/* the same with --secret wsec_second_secret */
#define EL_MAC2 "1985eaff05764ad76614faf5e4c6a803176dbf1536cff4579465c1e90ef27e01"
/* empty body, EL_SECRET, t=1773151625 */
#define EL_MAC_EMPTY "092587c1b6067a756b81777506b4873ca9d3f106d0d2a0499de315aef0a63785"
/* empty body, secret "k", t=0 */
#define EL_MAC_T0 "6b4a4b8b3c40f1e8f53a3d36682e5f99f7ad2ac1df1c93dfe336f329167641e7"
/* bytes (i*31+7)%251 for i in 0..10006, EL_SECRET, t=1773151625 */
#define EL_MAC_LONG "4943efe4cb5b2634557484e3ef68046b697bd0aab8d8583f1d6fefe6f8350d37"
#define LONG_LEN 10007
/* sign.py body.json --standard --secret STD_SECRET [--secret STD_SECRET2] --id msg_test_1
 * --timestamp 1773151625 */
#define STD_SIG "v1,i67D5Ni2cwG58cEFiblcZmmqR9dZzwq2FcG7sl/OgP0="
#define STD_SIG2 "v1,W0tnJ3a57Kb5Ng0viZu3u7xgO5/u1paDoJOyUGgzgSs="
#define ZERO_MAC "0000000000000000000000000000000000000000000000000000000000000000"

/* Appends s to buf (cap bytes), failing the test when it does not fit. */
static void append(char *buf, size_t cap, const char *s) {
  size_t n = strlen(buf), m = strlen(s);
  if (n + m + 1 > cap) fail_msg("test buffer too small");
  memcpy(buf + n, s, m + 1);
}

static enum sig_result parse(const char *h, struct sig_elevenlabs *out) {
  return sig_elevenlabs_parse(h, out);
}

static void hex32(const char *hex, unsigned char out[32]) {
  for (int i = 0; i < 32; i++) {
    unsigned v;
    assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
    out[i] = (unsigned char)v;
  }
}

static void assert_malformed(const char *h) {
  struct sig_elevenlabs s;
  if (parse(h, &s) != SIG_MALFORMED) fail_msg("expected \"%s\" to be malformed", h);
}

static void test_el_parse_basic(void **state) {
  (void)state;
  struct sig_elevenlabs s;
  unsigned char mac[32];
  hex32(EL_MAC, mac);
  assert_int_equal(parse("t=1773151625,v0=" EL_MAC, &s), SIG_OK);
  assert_int_equal(s.t, T0);
  assert_int_equal(s.count, 1);
  assert_memory_equal(s.v0[0], mac, 32);
  /* any order */
  assert_int_equal(parse("v0=" EL_MAC ",t=1773151625", &s), SIG_OK);
  assert_int_equal(s.t, T0);
  assert_memory_equal(s.v0[0], mac, 32);
  /* whitespace around items */
  assert_int_equal(parse("  t=1773151625 ,\tv0=" EL_MAC "  ", &s), SIG_OK);
  assert_int_equal(s.t, T0);
  assert_int_equal(s.count, 1);
  /* uppercase hex is the same MAC */
  char upper[] = "t=1773151625,v0=" EL_MAC;
  for (char *p = upper; *p; p++)
    if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 'a' + 'A');
  assert_int_equal(parse(upper, &s), SIG_OK);
  assert_memory_equal(s.v0[0], mac, 32);
  /* t=0 is a (very old) timestamp, not a syntax error */
  assert_int_equal(parse("t=0,v0=" EL_MAC, &s), SIG_OK);
  assert_int_equal(s.t, 0);
  assert_int_equal(parse("t=9223372036854775807,v0=" EL_MAC, &s), SIG_OK);
  assert_int_equal(s.t, INT64_MAX);
}

static void test_el_parse_several_and_unknown(void **state) {
  (void)state;
  struct sig_elevenlabs s;
  unsigned char a[32], b[32];
  hex32(EL_MAC, a);
  hex32(EL_MAC2, b);
  assert_int_equal(parse("v0=" EL_MAC ", t=1773151625, v0=" EL_MAC2, &s), SIG_OK);
  assert_int_equal(s.count, 2);
  assert_memory_equal(s.v0[0], a, 32);
  assert_memory_equal(s.v0[1], b, 32);
  /* unknown items (another version, free text, empty items) are ignored */
  assert_int_equal(
      parse("t=1773151625,v1=abc,v0=" EL_MAC ",x=y,novalue,,=,T=5,V0=zz, scheme=foo ,", &s),
      SIG_OK);
  assert_int_equal(s.t, T0);
  assert_int_equal(s.count, 1);
  /* as many v0 as SIG_SIGNATURES_MAX */
  char h[1024] = "t=1";
  for (int i = 0; i < SIG_SIGNATURES_MAX; i++) append(h, sizeof h, ",v0=" EL_MAC);
  assert_int_equal(parse(h, &s), SIG_OK);
  assert_int_equal(s.count, SIG_SIGNATURES_MAX);
  append(h, sizeof h, ",v0=" EL_MAC);
  assert_int_equal(parse(h, &s), SIG_MALFORMED);
}

static void test_el_parse_malformed(void **state) {
  (void)state;
  struct sig_elevenlabs s;
  assert_int_equal(parse(NULL, &s), SIG_MISSING);
  assert_malformed("");
  assert_malformed("   ");
  assert_malformed(",");
  assert_malformed("t=1773151625");                         /* no v0 */
  assert_malformed("v0=" EL_MAC);                           /* no t */
  assert_malformed("t=1,t=2,v0=" EL_MAC);                   /* duplicate t */
  assert_malformed("t=1773151625,t=1773151625,v0=" EL_MAC); /* even when equal */
  assert_malformed("t=,v0=" EL_MAC);                        /* empty t */
  assert_malformed("t=-5,v0=" EL_MAC);                      /* negative */
  assert_malformed("t=+5,v0=" EL_MAC);                      /* sign */
  assert_malformed("t=12a,v0=" EL_MAC);                     /* not decimal */
  assert_malformed("t=1.5,v0=" EL_MAC);                     /* fraction */
  assert_malformed("t=0x10,v0=" EL_MAC);                    /* hex */
  assert_malformed("t=01773151625,v0=" EL_MAC);             /* leading zero: not as signed */
  assert_malformed("t=9223372036854775808,v0=" EL_MAC);     /* INT64_MAX + 1 */
  assert_malformed("t=99999999999999999999999,v0=" EL_MAC); /* overflow */
  assert_malformed("t= 1773151625,v0=" EL_MAC);             /* space inside the item */
  assert_malformed("t=1773151625 ,v0= " EL_MAC "x");        /* space inside the value */
  assert_malformed("t=1773151625,v0=");                     /* empty v0 */
  assert_malformed("t=1773151625,v0=" EL_MAC "0");          /* 65 hex digits */
  assert_malformed(
      "t=1773151625,v0=ff664dc0e82441403638a30754159cae55e7c40a9453dc7fcebf6a56360f20b");
  assert_malformed(
      "t=1773151625,v0=gf664dc0e82441403638a30754159cae55e7c40a9453dc7fcebf6a56360f20b6");
  assert_malformed("t=1773151625,v0=" EL_MAC ",v0=xyz"); /* one bad v0 among good ones */
  assert_malformed("t=1773151625;v0=" EL_MAC);           /* wrong separator */
}

static void test_time_window(void **state) {
  (void)state;
  int64_t now = T0;
  assert_int_equal(sig_check_time(now, now, 1800), SIG_OK);
  assert_int_equal(sig_check_time(now - 1800, now, 1800), SIG_OK); /* exactly tolerance old */
  assert_int_equal(sig_check_time(now - 1801, now, 1800), SIG_STALE);
  assert_int_equal(sig_check_time(now + 300, now, 1800), SIG_OK);
  assert_int_equal(sig_check_time(now + 301, now, 1800), SIG_FUTURE);
  assert_int_equal(sig_check_time(0, now, 1800), SIG_STALE);
  assert_int_equal(sig_check_time(INT64_MAX, now, 1800), SIG_FUTURE);
  assert_int_equal(sig_check_time(INT64_MIN, now, 1800), SIG_STALE);
  assert_int_equal(sig_check_time(now - 1, now, 1), SIG_OK);
  assert_int_equal(sig_check_time(now - 2, now, 1), SIG_STALE);
}

static int stream_once(const struct sig_keyring *ring, const char *header, const void *body,
                       size_t len, size_t chunk) {
  struct sig_elevenlabs s;
  assert_int_equal(parse(header, &s), SIG_OK);
  struct sig_stream *st = sig_stream_new(ring, s.t);
  assert_non_null(st);
  const unsigned char *p = body;
  for (size_t off = 0; off < len;) {
    size_t n = chunk == 0 || len - off < chunk ? len - off : chunk;
    sig_stream_update(st, p + off, n);
    off += n;
  }
  int idx = sig_stream_match(st, &s);
  sig_stream_free(st);
  return idx;
}

static void ring_el(const char *csv, struct sig_keyring *ring) {
  char err[256];
  if (!sig_keyring_elevenlabs(csv, ring, err, sizeof err)) fail_msg("keyring: %s", err);
}

static void ring_std(const char *csv, struct sig_keyring *ring) {
  char err[256];
  if (!sig_keyring_standard(csv, ring, err, sizeof err)) fail_msg("keyring: %s", err);
}

static void test_el_vectors(void **state) {
  (void)state;
  struct sig_keyring ring;
  ring_el(EL_SECRET, &ring);
  assert_int_equal(ring.count, 1);
  assert_int_equal(ring.keys[0].len, strlen(EL_SECRET)); /* the prefix is part of the key */
  assert_int_equal(stream_once(&ring, "t=1773151625,v0=" EL_MAC, BODY, strlen(BODY), 0), 0);
  assert_int_equal(stream_once(&ring, "t=1773151625,v0=" EL_MAC_EMPTY, "", 0, 0), 0);
  /* the signed prefix is "<t>.": another t does not verify the same MAC */
  assert_int_equal(stream_once(&ring, "t=1773151626,v0=" EL_MAC, BODY, strlen(BODY), 0), -1);
  /* one flipped body byte */
  char body[] = BODY;
  body[10] ^= 1;
  assert_int_equal(stream_once(&ring, "t=1773151625,v0=" EL_MAC, body, strlen(body), 0), -1);
  /* a wrong secret */
  struct sig_keyring other;
  ring_el("wsec_second_secret", &other);
  assert_int_equal(stream_once(&other, "t=1773151625,v0=" EL_MAC, BODY, strlen(BODY), 0), -1);
  assert_int_equal(stream_once(&other, "t=1773151625,v0=" EL_MAC2, BODY, strlen(BODY), 0), 0);
  struct sig_keyring k;
  ring_el("k", &k);
  assert_int_equal(stream_once(&k, "t=0,v0=" EL_MAC_T0, "", 0, 0), 0);
  sig_keyring_clear(&ring);
  sig_keyring_clear(&other);
  sig_keyring_clear(&k);
}

static void test_el_rotation_and_several(void **state) {
  (void)state;
  struct sig_keyring ring;
  ring_el("wsec_old_one, " EL_SECRET " ", &ring); /* spaces around a secret are trimmed */
  assert_int_equal(ring.count, 2);
  assert_int_equal(stream_once(&ring, "t=1773151625,v0=" EL_MAC, BODY, strlen(BODY), 0), 1);
  /* several v0: one of them valid */
  assert_int_equal(stream_once(&ring, "t=1773151625,v0=" ZERO_MAC ",v0=" EL_MAC ",v0=" EL_MAC2,
                               BODY, strlen(BODY), 0),
                   1);
  /* both keys match: the first key in the ring wins */
  struct sig_keyring both;
  ring_el("wsec_second_secret," EL_SECRET, &both);
  assert_int_equal(
      stream_once(&both, "t=1773151625,v0=" EL_MAC ",v0=" EL_MAC2, BODY, strlen(BODY), 0), 0);
  assert_int_equal(stream_once(&both, "t=1773151625,v0=" ZERO_MAC, BODY, strlen(BODY), 0), -1);
  /* an empty ring matches nothing */
  struct sig_keyring none;
  ring_el("", &none);
  assert_int_equal(none.count, 0);
  assert_int_equal(stream_once(&none, "t=1773151625,v0=" EL_MAC, BODY, strlen(BODY), 0), -1);
  sig_keyring_clear(&ring);
  sig_keyring_clear(&both);
}

static void test_el_stream_chunks(void **state) {
  (void)state;
  unsigned char *body = malloc(LONG_LEN);
  assert_non_null(body);
  for (size_t i = 0; i < LONG_LEN; i++) body[i] = (unsigned char)((i * 31 + 7) % 251);
  struct sig_keyring ring;
  ring_el("wsec_other," EL_SECRET, &ring);
  static const size_t chunks[] = {0, 1, 2, 3, 7, 63, 64, 65, 1000, 4096, 9999, LONG_LEN};
  for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++)
    if (stream_once(&ring, "t=1773151625,v0=" EL_MAC_LONG, body, LONG_LEN, chunks[i]) != 1)
      fail_msg("chunk size %zu did not verify", chunks[i]);
  body[LONG_LEN - 1] ^= 0x80;
  assert_int_equal(stream_once(&ring, "t=1773151625,v0=" EL_MAC_LONG, body, LONG_LEN, 13), -1);
  /* match is called once: a second call answers -1 */
  struct sig_elevenlabs s;
  assert_int_equal(parse("t=1773151625,v0=" EL_MAC, &s), SIG_OK);
  struct sig_stream *st = sig_stream_new(&ring, s.t);
  assert_non_null(st);
  sig_stream_update(st, BODY, strlen(BODY));
  assert_int_equal(sig_stream_match(st, &s), 1);
  assert_int_equal(sig_stream_match(st, &s), -1);
  sig_stream_free(st);
  sig_stream_free(NULL);
  free(body);
  sig_keyring_clear(&ring);
}

static enum sig_result std(const struct sig_keyring *ring, const char *id, const char *ts,
                           const char *sigs, const char *body, int64_t now) {
  return sig_standard_verify(ring, id, ts, sigs, body, body ? strlen(body) : 0, now, 300);
}

static void test_standard_vectors(void **state) {
  (void)state;
  struct sig_keyring ring;
  ring_std(STD_SECRET, &ring);
  assert_int_equal(ring.count, 1);
  assert_int_equal(ring.keys[0].len, 32);
  assert_int_equal(std(&ring, "msg_test_1", "1773151625", STD_SIG, BODY, T0), SIG_OK);
  /* the prefix is optional */
  struct sig_keyring bare;
  ring_std("gDFaF0FAk7TtVWKyk+sZ5/EaGBUM0C+68pOIzQmlWhg=", &bare);
  assert_int_equal(std(&bare, "msg_test_1", "1773151625", STD_SIG, BODY, T0), SIG_OK);
  /* the id and the timestamp are signed */
  assert_int_equal(std(&ring, "msg_test_2", "1773151625", STD_SIG, BODY, T0), SIG_MISMATCH);
  assert_int_equal(std(&ring, "msg_test_1", "1773151626", STD_SIG, BODY, T0), SIG_MISMATCH);
  char body[] = BODY;
  body[20] ^= 1;
  assert_int_equal(std(&ring, "msg_test_1", "1773151625", STD_SIG, body, T0), SIG_MISMATCH);
  /* the second key's signature does not verify under the first */
  assert_int_equal(std(&ring, "msg_test_1", "1773151625", STD_SIG2, BODY, T0), SIG_MISMATCH);
  /* a key of the right syntax but the wrong bytes */
  struct sig_keyring wrong;
  ring_std(STD_SECRET2, &wrong);
  assert_int_equal(std(&wrong, "msg_test_1", "1773151625", STD_SIG, BODY, T0), SIG_MISMATCH);
  assert_int_equal(std(&wrong, "msg_test_1", "1773151625", STD_SIG2, BODY, T0), SIG_OK);
  sig_keyring_clear(&ring);
  sig_keyring_clear(&bare);
  sig_keyring_clear(&wrong);
}

static void test_standard_rotation_and_several(void **state) {
  (void)state;
  struct sig_keyring ring;
  ring_std(STD_SECRET2 ", " STD_SECRET, &ring);
  assert_int_equal(ring.count, 2);
  assert_int_equal(std(&ring, "msg_test_1", "1773151625", STD_SIG, BODY, T0), SIG_OK);
  assert_int_equal(std(&ring, "msg_test_1", "1773151625", STD_SIG2, BODY, T0), SIG_OK);
  /* several signatures, one valid; other versions ignored */
  assert_int_equal(
      std(&ring, "msg_test_1", "1773151625",
          "v1a,abc v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " STD_SIG " v2,x", BODY, T0),
      SIG_OK);
  assert_int_equal(
      std(&ring, "msg_test_1", "1773151625", "  " STD_SIG "   " STD_SIG2 "  ", BODY, T0), SIG_OK);
  struct sig_keyring one;
  ring_std(STD_SECRET2, &one);
  assert_int_equal(std(&one, "msg_test_1", "1773151625", STD_SIG " " STD_SIG2, BODY, T0), SIG_OK);
  assert_int_equal(std(&one, "msg_test_1", "1773151625",
                       "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= " STD_SIG, BODY, T0),
                   SIG_MISMATCH);
  sig_keyring_clear(&ring);
  sig_keyring_clear(&one);
}

static void test_standard_time(void **state) {
  (void)state;
  struct sig_keyring ring;
  ring_std(STD_SECRET, &ring);
  /* the time is checked before the MAC: a stale signature is stale even when it matches */
  assert_int_equal(std(&ring, "msg_test_1", "1773151625", STD_SIG, BODY, T0 + 300), SIG_OK);
  assert_int_equal(std(&ring, "msg_test_1", "1773151625", STD_SIG, BODY, T0 + 301), SIG_STALE);
  assert_int_equal(std(&ring, "msg_test_1", "1773151625", STD_SIG, BODY, T0 - 300), SIG_OK);
  assert_int_equal(std(&ring, "msg_test_1", "1773151625", STD_SIG, BODY, T0 - 301), SIG_FUTURE);
  assert_int_equal(std(&ring, "msg_test_1", "0", STD_SIG, BODY, T0), SIG_STALE);
  assert_int_equal(std(&ring, "msg_test_1", "9223372036854775807", STD_SIG, BODY, T0), SIG_FUTURE);
  sig_keyring_clear(&ring);
}

static void test_standard_malformed(void **state) {
  (void)state;
  struct sig_keyring ring;
  ring_std(STD_SECRET, &ring);
  const char *id = "msg_test_1", *ts = "1773151625";
  assert_int_equal(std(&ring, NULL, NULL, NULL, BODY, T0), SIG_MISSING);
  /* only some of the three headers */
  assert_int_equal(std(&ring, NULL, ts, STD_SIG, BODY, T0), SIG_MALFORMED);
  assert_int_equal(std(&ring, id, NULL, STD_SIG, BODY, T0), SIG_MALFORMED);
  assert_int_equal(std(&ring, id, ts, NULL, BODY, T0), SIG_MALFORMED);
  assert_int_equal(std(&ring, NULL, NULL, STD_SIG, BODY, T0), SIG_MALFORMED);
  /* webhook-id */
  assert_int_equal(std(&ring, "", ts, STD_SIG, BODY, T0), SIG_MALFORMED);
  assert_int_equal(std(&ring, "msg 1", ts, STD_SIG, BODY, T0), SIG_MALFORMED);
  assert_int_equal(std(&ring, "msg\x01", ts, STD_SIG, BODY, T0), SIG_MALFORMED);
  char longid[300];
  memset(longid, 'a', sizeof longid - 1);
  longid[sizeof longid - 1] = '\0';
  assert_int_equal(std(&ring, longid, ts, STD_SIG, BODY, T0), SIG_MALFORMED);
  /* webhook-timestamp */
  static const char *bad_ts[] = {"",   "-1", "+1773151625", "1773151625.0",         "17731516x5",
                                 " 1", "1 ", "0x10",        "99999999999999999999", "1e9",
                                 "\t1"};
  for (size_t i = 0; i < sizeof bad_ts / sizeof bad_ts[0]; i++)
    if (std(&ring, id, bad_ts[i], STD_SIG, BODY, T0) != SIG_MALFORMED)
      fail_msg("timestamp \"%s\" should be malformed", bad_ts[i]);
  /* webhook-signature */
  static const char *bad_sig[] = {
      "",
      "   ",
      "v1a,abc",                                      /* no v1 at all */
      "v2,abc v1a,def",                               /* no v1 at all */
      "i67D5Ni2cwG58cEFiblcZmmqR9dZzwq2FcG7sl/OgP0=", /* no version */
      ",i67D5Ni2cwG58cEFiblcZmmqR9dZzwq2FcG7sl/OgP0=",
      "v1,",
      "v1,i67D5Ni2cwG58cEFiblcZmmqR9dZzwq2FcG7sl/OgP0",   /* unpadded */
      "v1,i67D5Ni2cwG58cEFiblcZmmqR9dZzwq2FcG7sl/OgP0==", /* too long */
      "v1,i67D5Ni2cwG58cEFiblcZmmqR9dZzwq2FcG7sl_OgP0=",  /* url-safe alphabet */
      "v1,i67D5Ni2cwG58cEFiblc=mmqR9dZzwq2FcG7sl/OgP0=",  /* '=' inside */
      "v1,AAAA",                                          /* 3 bytes, not 32 */
      "v1," EL_MAC,                                       /* hex, not base64 */
      STD_SIG " v1,!!!!",                                 /* one bad v1 among good ones */
      STD_SIG ",extra",
  };
  for (size_t i = 0; i < sizeof bad_sig / sizeof bad_sig[0]; i++)
    if (std(&ring, id, ts, bad_sig[i], BODY, T0) != SIG_MALFORMED)
      fail_msg("signature \"%s\" should be malformed", bad_sig[i]);
  /* malformed wins over stale: the client learns what to fix first */
  assert_int_equal(std(&ring, id, "0", "v1,AAAA", BODY, T0), SIG_MALFORMED);
  /* at most SIG_SIGNATURES_MAX v1 signatures */
  char many[1024] = "";
  for (int i = 0; i < SIG_SIGNATURES_MAX; i++) append(many, sizeof many, STD_SIG " ");
  assert_int_equal(std(&ring, id, ts, many, BODY, T0), SIG_OK);
  append(many, sizeof many, STD_SIG);
  assert_int_equal(std(&ring, id, ts, many, BODY, T0), SIG_MALFORMED);
  /* an empty ring verifies nothing */
  struct sig_keyring none;
  ring_std("", &none);
  assert_int_equal(std(&none, id, ts, STD_SIG, BODY, T0), SIG_MISMATCH);
  sig_keyring_clear(&ring);
}

static void assert_ring_rejects(bool standard, const char *csv, const char *must_say) {
  struct sig_keyring ring;
  char err[256] = "";
  bool ok = standard ? sig_keyring_standard(csv, &ring, err, sizeof err)
                     : sig_keyring_elevenlabs(csv, &ring, err, sizeof err);
  if (ok) fail_msg("keyring \"%s\" should be rejected", csv);
  if (!strstr(err, must_say)) fail_msg("message \"%s\" should say \"%s\"", err, must_say);
  assert_int_equal(ring.count, 0); /* nothing half-loaded */
}

static void test_keyrings(void **state) {
  (void)state;
  /* bad base64 is rejected, and the message never repeats the secret */
  assert_ring_rejects(true, "whsec_!!notbase64", "secret 1");
  struct sig_keyring ring;
  char err[256];
  assert_false(sig_keyring_standard("whsec_Zm9vYmFy, whsec_s3cr3tvalue!", &ring, err, sizeof err));
  assert_non_null(strstr(err, "secret 2"));
  assert_null(strstr(err, "s3cr3t"));
  assert_null(strstr(err, "Zm9v"));
  assert_ring_rejects(true, "whsec_", "empty");
  assert_ring_rejects(true, "whsec_Zm9vYg", "secret 1"); /* unpadded */
  assert_ring_rejects(true, "whsec_Zm9v YmFy", "secret 1");
  assert_ring_rejects(true, STD_SECRET ",", "secret 2 is empty");
  assert_ring_rejects(true, "," STD_SECRET, "secret 1 is empty");
  assert_ring_rejects(false, "a,,b", "secret 2 is empty");
  assert_ring_rejects(false, "  ", "secret 1 is empty");
  char toolong[400];
  memset(toolong, 'x', sizeof toolong - 1);
  toolong[sizeof toolong - 1] = '\0';
  assert_ring_rejects(false, toolong, "longer than 256");
  assert_ring_rejects(false, "a,b,c,d,e,f,g,h,i", "at most 8");
  /* limits that fit */
  ring_el("a,b,c,d,e,f,g,h", &ring);
  assert_int_equal(ring.count, 8);
  assert_int_equal(ring.keys[7].len, 1);
  assert_int_equal(ring.keys[7].bytes[0], 'h');
  toolong[256] = '\0';
  ring_el(toolong, &ring);
  assert_int_equal(ring.keys[0].len, 256);
  ring_el(" wsec_a b ", &ring); /* inner spaces belong to the secret */
  assert_int_equal(ring.keys[0].len, 8);
  assert_memory_equal(ring.keys[0].bytes, "wsec_a b", 8);
  ring_std("Zm9vYmFy", &ring);
  assert_int_equal(ring.keys[0].len, 6);
  assert_memory_equal(ring.keys[0].bytes, "foobar", 6);
  ring_std("whsec_Zm8=", &ring);
  assert_memory_equal(ring.keys[0].bytes, "fo", 2);
  assert_int_equal(ring.keys[0].len, 2);
  ring_std(NULL, &ring);
  assert_int_equal(ring.count, 0);
  /* clear wipes the key bytes */
  ring_el("topsecret", &ring);
  sig_keyring_clear(&ring);
  assert_int_equal(ring.count, 0);
  static const unsigned char zero[SIG_KEY_BYTES_MAX];
  assert_memory_equal(ring.keys[0].bytes, zero, sizeof zero);
  sig_keyring_clear(NULL);
}

static void test_messages(void **state) {
  (void)state;
  assert_string_equal(sig_message_elevenlabs(SIG_MISSING), "Missing ElevenLabs-Signature header");
  static const enum sig_result failures[] = {SIG_MISSING, SIG_MALFORMED, SIG_STALE, SIG_FUTURE,
                                             SIG_MISMATCH};
  static const char *el_words[] = {"Missing", "Malformed", "too old", "future", "does not match"};
  static const char *std_words[] = {"Missing", "Malformed", "too old", "future", "does not match"};
  for (size_t i = 0; i < 5; i++) {
    const char *el = sig_message_elevenlabs(failures[i]);
    const char *st = sig_message_standard(failures[i]);
    assert_non_null(strstr(el, "ElevenLabs-Signature"));
    assert_non_null(strstr(el, el_words[i]));
    assert_non_null(strstr(st, "webhook-"));
    assert_non_null(strstr(st, std_words[i]));
  }
  assert_non_null(strstr(sig_message_standard(SIG_STALE), "webhook-timestamp"));
  assert_non_null(strstr(sig_message_standard(SIG_MISMATCH), "webhook-signature"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_el_parse_basic),
      cmocka_unit_test(test_el_parse_several_and_unknown),
      cmocka_unit_test(test_el_parse_malformed),
      cmocka_unit_test(test_time_window),
      cmocka_unit_test(test_el_vectors),
      cmocka_unit_test(test_el_rotation_and_several),
      cmocka_unit_test(test_el_stream_chunks),
      cmocka_unit_test(test_standard_vectors),
      cmocka_unit_test(test_standard_rotation_and_several),
      cmocka_unit_test(test_standard_time),
      cmocka_unit_test(test_standard_malformed),
      cmocka_unit_test(test_keyrings),
      cmocka_unit_test(test_messages),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
