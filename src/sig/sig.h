/* Webhook signatures: the ElevenLabs scheme (ElevenLabs-Signature: t=<unix>,v0=<hex>, HMAC-SHA256
 * over "<t>." + raw body, secrets used whole) and Standard Webhooks (webhook-id,
 * webhook-timestamp, webhook-signature: v1,<base64> ..., HMAC-SHA256 over "<id>.<t>." + body,
 * secrets whsec_<base64>). Pure functions over bytes: no HTTP, no JSON, no database. Every MAC
 * comparison is constant-time; secrets never appear in messages. */
#ifndef GSR_SIG_H
#define GSR_SIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIG_KEYS_MAX 8 /* secrets accepted at once (a rotation) */
#define SIG_KEY_BYTES_MAX 256
#define SIG_SIGNATURES_MAX 8 /* signatures one header may carry */
#define SIG_FUTURE_SECONDS 300

struct sig_key {
  unsigned char bytes[SIG_KEY_BYTES_MAX];
  size_t len;
};

struct sig_keyring {
  size_t count;
  struct sig_key keys[SIG_KEYS_MAX];
};

enum sig_result {
  SIG_OK,
  SIG_MISSING,   /* no signature header */
  SIG_MALFORMED, /* a header that does not parse */
  SIG_STALE,     /* timestamp older than the tolerance */
  SIG_FUTURE,    /* timestamp more than SIG_FUTURE_SECONDS ahead */
  SIG_MISMATCH,  /* well-formed and fresh, but no key produces it */
};

/* The 401 message for r (never SIG_OK), naming the scheme's header(s). */
const char *sig_message_elevenlabs(enum sig_result r);
const char *sig_message_standard(enum sig_result r);

/* Comma-separated secrets. ElevenLabs: each secret's bytes used whole (any prefix included).
 * Standard: each "whsec_<base64>" (prefix optional) decoded. False with a message (never the
 * secret) on an empty item, bad base64, too many or too long secrets. An empty csv gives an
 * empty ring and true. */
__attribute__((warn_unused_result)) bool sig_keyring_elevenlabs(const char *csv,
                                                                struct sig_keyring *out, char *err,
                                                                size_t errlen);
__attribute__((warn_unused_result)) bool sig_keyring_standard(const char *csv,
                                                              struct sig_keyring *out, char *err,
                                                              size_t errlen);
/* Wipes the key bytes. */
void sig_keyring_clear(struct sig_keyring *ring);

/* ---- ElevenLabs ---- */
struct sig_elevenlabs {
  int64_t t;
  size_t count; /* v0 values found (at least 1 when parsed) */
  unsigned char v0[SIG_SIGNATURES_MAX][32];
};

/* Parses the header value: comma-separated key=value items in any order, exactly one t (decimal
 * unix seconds), one or more v0 (64 hex digits); unknown items are ignored. NULL header:
 * SIG_MISSING. */
enum sig_result sig_elevenlabs_parse(const char *header, struct sig_elevenlabs *out);

/* SIG_OK when now - tolerance <= t <= now + SIG_FUTURE_SECONDS, else SIG_STALE or SIG_FUTURE. */
enum sig_result sig_check_time(int64_t t, int64_t now_s, long tolerance_s);

/* HMAC-SHA256 of "<t>." + body under every key of a ring, fed as the body arrives. */
struct sig_stream;
/* NULL when out of memory. */
struct sig_stream *sig_stream_new(const struct sig_keyring *ring, int64_t t);
void sig_stream_update(struct sig_stream *st, const void *data, size_t len);
/* The index in the ring of a key whose MAC equals one of sig's v0 values, or -1. Every
 * comparison is made (constant time). Call once. */
int sig_stream_match(struct sig_stream *st, const struct sig_elevenlabs *sig);
void sig_stream_free(struct sig_stream *st);

/* ---- Standard Webhooks ---- */
/* id, timestamp and signatures are the three header values (any may be NULL: SIG_MISSING when
 * all three are, SIG_MALFORMED when only some are). signatures is space-separated
 * "v1,<base64>" items (other versions ignored). Checks |now - timestamp| <= tolerance_s, then
 * the MAC under every key against every v1 signature. */
enum sig_result sig_standard_verify(const struct sig_keyring *ring, const char *id,
                                    const char *timestamp, const char *signatures, const void *body,
                                    size_t len, int64_t now_s, long tolerance_s);

#endif
