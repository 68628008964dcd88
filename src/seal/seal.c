/* Encryption at rest (seal.h): AES-256-GCM envelopes and the HMAC-SHA256 blind index, both keyed
 * by keys derived from the master keys in ENCRYPTION_KEYS. The master keys themselves are kept
 * only while deriving; the derived keys live in the ring and are wiped when it is freed. (A
 * thread's cipher context keeps the AES key schedule of the last key it used until that thread
 * seals or opens again, or exits.)
 *
 * Cheap on the ingest path: the cipher and digest are fetched from OpenSSL once per ring, each
 * thread reuses one cipher context and one digest context (made on first use), and the HMAC of
 * the blind index starts from the key's inner and outer states computed once at parse time
 * (OpenSSL 3 still allocates once per operation inside EVP_*Init_ex2 / EVP_MD_CTX_copy_ex). */
#include "seal/seal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base64.h"
#include "ext/crypto.h"

#define SEAL_MASTER_LEN 32

/* Fixed labels: changing one makes every sealed value unreadable. */
static const char LABEL_ENC[] = "gensendrep seal v1: AES-256-GCM key";
static const char LABEL_INDEX[] = "gensendrep seal v1: blind index key";

struct seal_key {
  char id[SEAL_KEY_ID_MAX + 1];
  size_t id_len;
  unsigned char enc[32];
  EVP_MD_CTX *inner; /* SHA-256 having absorbed the index key ^ ipad */
  EVP_MD_CTX *outer; /* ... ^ opad */
};

struct seal_ring {
  uint64_t serial; /* unique per parsed ring: a thread's cached key schedule names it */
  size_t count;
  EVP_CIPHER *gcm;
  EVP_MD *sha256;
  struct seal_key keys[SEAL_KEYS_MAX];
};

/* ---- per-thread contexts ---- */

/* The cipher context keeps the key schedule of the last key it was given; a call with the same
 * ring, key and direction only sets a new nonce (most of the cost of a short value otherwise). */
struct seal_tls {
  EVP_CIPHER_CTX *cipher;
  EVP_MD_CTX *md;
  uint64_t serial; /* ring serial of the key loaded; 0: none */
  size_t key;
  int encrypting;
};

static atomic_uint_fast64_t ring_serials;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;
static bool tls_ready;

static void tls_release(void *p) {
  struct seal_tls *t = p;
  if (!t) return;
  EVP_CIPHER_CTX_free(t->cipher);
  EVP_MD_CTX_free(t->md);
  free(t);
}

static void tls_init(void) { tls_ready = pthread_key_create(&tls_key, tls_release) == 0; }

/* The calling thread's contexts; NULL when out of memory (the caller then fails the call). */
static struct seal_tls *tls_get(void) {
  pthread_once(&tls_once, tls_init);
  if (!tls_ready) return NULL;
  struct seal_tls *t = pthread_getspecific(tls_key);
  if (t) return t;
  t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->cipher = EVP_CIPHER_CTX_new();
  t->md = EVP_MD_CTX_new();
  if (!t->cipher || !t->md || pthread_setspecific(tls_key, t) != 0) {
    tls_release(t);
    return NULL;
  }
  return t;
}

/* ---- parsing ---- */

static bool key_id_valid(const char *s, size_t len) {
  if (len == 0 || len > SEAL_KEY_ID_MAX) return false;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
          c == '-'))
      return false;
  }
  return true;
}

static bool hmac256(const unsigned char *key, size_t klen, const void *msg, size_t len,
                    unsigned char out[32]) {
  unsigned int n = 0;
  return HMAC(EVP_sha256(), key, (int)klen, msg, len, out, &n) != NULL && n == 32;
}

/* Derives key k's two keys from master and sets up the index key's HMAC states. */
static bool key_derive(struct seal_ring *r, struct seal_key *k,
                       const unsigned char master[SEAL_MASTER_LEN]) {
  unsigned char idx[32], pad[64];
  bool ok = hmac256(master, SEAL_MASTER_LEN, LABEL_ENC, sizeof LABEL_ENC - 1, k->enc) &&
            hmac256(master, SEAL_MASTER_LEN, LABEL_INDEX, sizeof LABEL_INDEX - 1, idx);
  k->inner = EVP_MD_CTX_new();
  k->outer = EVP_MD_CTX_new();
  ok = ok && k->inner && k->outer;
  if (ok) {
    memset(pad, 0x36, sizeof pad);
    for (size_t i = 0; i < sizeof idx; i++) pad[i] ^= idx[i];
    ok = EVP_DigestInit_ex(k->inner, r->sha256, NULL) == 1 &&
         EVP_DigestUpdate(k->inner, pad, sizeof pad) == 1;
    memset(pad, 0x5c, sizeof pad);
    for (size_t i = 0; i < sizeof idx; i++) pad[i] ^= idx[i];
    ok = ok && EVP_DigestInit_ex(k->outer, r->sha256, NULL) == 1 &&
         EVP_DigestUpdate(k->outer, pad, sizeof pad) == 1;
  }
  OPENSSL_cleanse(idx, sizeof idx);
  OPENSSL_cleanse(pad, sizeof pad);
  return ok;
}

/* Parses one "<id>:<base64>" item (item[0..len)), number nth (1-based) for messages. */
static bool parse_item(struct seal_ring *r, const char *item, size_t len, size_t nth, char *err,
                       size_t errlen) {
  const char *colon = memchr(item, ':', len);
  if (!colon) {
    snprintf(err, errlen, "ENCRYPTION_KEYS: item %zu is not <key id>:<base64 of 32 bytes> (no ':')",
             nth);
    return false;
  }
  size_t id_len = (size_t)(colon - item);
  if (!key_id_valid(item, id_len)) {
    snprintf(err, errlen,
             "ENCRYPTION_KEYS: item %zu has a bad key id (1 to %d characters of A-Z a-z 0-9 _ -)",
             nth, SEAL_KEY_ID_MAX);
    return false;
  }
  struct seal_key *k = &r->keys[r->count];
  memcpy(k->id, item, id_len);
  k->id[id_len] = '\0';
  k->id_len = id_len;
  for (size_t i = 0; i < r->count; i++)
    if (strcmp(r->keys[i].id, k->id) == 0) {
      snprintf(err, errlen, "ENCRYPTION_KEYS: key id '%s' is given twice", k->id);
      return false;
    }
  unsigned char master[SEAL_MASTER_LEN + 3];
  size_t n = 0;
  bool ok = len - id_len - 1 > 0 &&
            base64_decode(colon + 1, len - id_len - 1, true, master, sizeof master, &n);
  if (!ok) {
    snprintf(err, errlen,
             "ENCRYPTION_KEYS: key '%s' is not valid base64 (standard alphabet, padded; "
             "`gensendrep genkey --encryption` makes one)",
             k->id);
    ok = false;
  } else if (n != SEAL_MASTER_LEN) {
    snprintf(err, errlen, "ENCRYPTION_KEYS: key '%s' is %zu bytes, not %d (base64 of 32 bytes)",
             k->id, n, SEAL_MASTER_LEN);
    ok = false;
  } else if (!key_derive(r, k, master)) {
    snprintf(err, errlen, "ENCRYPTION_KEYS: could not derive key '%s' (OpenSSL failed)", k->id);
    ok = false;
  } else {
    /* The same bytes under two ids would make a rotation that changes nothing look done. */
    for (size_t i = 0; i < r->count; i++)
      if (CRYPTO_memcmp(r->keys[i].enc, k->enc, sizeof k->enc) == 0) {
        snprintf(err, errlen, "ENCRYPTION_KEYS: keys '%s' and '%s' are the same key", r->keys[i].id,
                 k->id);
        ok = false;
        break;
      }
  }
  OPENSSL_cleanse(master, sizeof master);
  r->count++; /* counted even when broken, so seal_ring_free releases what was made */
  return ok;
}

struct seal_ring *seal_ring_parse(const char *text, char *err, size_t errlen) {
  if (errlen) err[0] = '\0';
  if (!text || !*text) return NULL;
  struct seal_ring *r = calloc(1, sizeof *r);
  if (!r) {
    snprintf(err, errlen, "ENCRYPTION_KEYS: out of memory");
    return NULL;
  }
  r->serial = atomic_fetch_add(&ring_serials, 1) + 1;
  r->gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
  r->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  if (!r->gcm || !r->sha256) {
    snprintf(err, errlen, "ENCRYPTION_KEYS: OpenSSL has no AES-256-GCM or SHA-256");
    seal_ring_free(r);
    return NULL;
  }
  const char *p = text;
  size_t nth = 0;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    nth++;
    if (r->count == SEAL_KEYS_MAX) {
      snprintf(err, errlen, "ENCRYPTION_KEYS: more than %d keys", SEAL_KEYS_MAX);
      seal_ring_free(r);
      return NULL;
    }
    if (len == 0) {
      snprintf(err, errlen, "ENCRYPTION_KEYS: item %zu is empty (a stray ',')", nth);
      seal_ring_free(r);
      return NULL;
    }
    if (!parse_item(r, p, len, nth, err, errlen)) {
      seal_ring_free(r);
      return NULL;
    }
    if (!comma) break;
    p = comma + 1;
  }
  return r;
}

void seal_ring_free(struct seal_ring *r) {
  if (!r) return;
  for (size_t i = 0; i < r->count; i++) {
    EVP_MD_CTX_free(r->keys[i].inner);
    EVP_MD_CTX_free(r->keys[i].outer);
  }
  OPENSSL_cleanse(r->keys, sizeof r->keys);
  EVP_CIPHER_free(r->gcm);
  EVP_MD_free(r->sha256);
  free(r);
}

size_t seal_ring_count(const struct seal_ring *r) { return r ? r->count : 0; }

const char *seal_ring_key_id(const struct seal_ring *r, size_t i) {
  return r && i < r->count ? r->keys[i].id : NULL;
}

static const struct seal_key *ring_find(const struct seal_ring *r, const char *id, size_t id_len) {
  if (!r) return NULL;
  for (size_t i = 0; i < r->count; i++)
    if (r->keys[i].id_len == id_len && memcmp(r->keys[i].id, id, id_len) == 0) return &r->keys[i];
  return NULL;
}

bool seal_ring_has(const struct seal_ring *r, const char *key_id) {
  return key_id && ring_find(r, key_id, strlen(key_id)) != NULL;
}

/* ---- the envelope ---- */

size_t seal_sealed_len(const struct seal_ring *r, size_t plain_len) {
  if (!r || r->count == 0 || plain_len > SIZE_MAX - 64) return 0;
  return 2 + r->keys[0].id_len + SEAL_NONCE_LEN + plain_len + SEAL_TAG_LEN;
}

/* GCM takes int lengths: longer values are split into pieces fed one after another. */
#define SEAL_STEP ((size_t)1 << 30)

/* Readies t's cipher context for key k of r in one direction with nonce. */
static bool cipher_init(struct seal_tls *t, const struct seal_ring *r, size_t k, int enc,
                        const unsigned char *nonce) {
  if (t->serial == r->serial && t->key == k && t->encrypting == enc)
    return EVP_CipherInit_ex2(t->cipher, NULL, NULL, nonce, enc, NULL) == 1;
  t->serial = 0;
  if (EVP_CipherInit_ex2(t->cipher, r->gcm, r->keys[k].enc, nonce, enc, NULL) != 1) return false;
  t->serial = r->serial;
  t->key = k;
  t->encrypting = enc;
  return true;
}

/* Feeds the header (magic and key id: authenticated too, so a value relabelled to another id
 * fails) and the associated data, then in[0..len) into out, through t's initialised context. */
static bool gcm_update(struct seal_tls *t, const unsigned char *head, size_t head_len,
                       const void *aad, size_t aad_len, const unsigned char *in, size_t len,
                       unsigned char *out) {
  int n = 0;
  if (EVP_CipherUpdate(t->cipher, NULL, &n, head, (int)head_len) != 1) return false;
  const unsigned char *a = aad;
  for (size_t off = 0; off < aad_len;) {
    size_t step = aad_len - off < SEAL_STEP ? aad_len - off : SEAL_STEP;
    if (EVP_CipherUpdate(t->cipher, NULL, &n, a + off, (int)step) != 1) return false;
    off += step;
  }
  for (size_t off = 0; off < len;) {
    size_t step = len - off < SEAL_STEP ? len - off : SEAL_STEP;
    if (EVP_CipherUpdate(t->cipher, out + off, &n, in + off, (int)step) != 1 || (size_t)n != step)
      return false;
    off += step;
  }
  return true;
}

bool seal_seal(const struct seal_ring *r, const void *aad, size_t aad_len, const void *plain,
               size_t len, unsigned char *out) {
  if (!r || r->count == 0) return false;
  const struct seal_key *k = &r->keys[0];
  struct seal_tls *t = tls_get();
  if (!t) return false;
  unsigned char *p = out;
  *p++ = SEAL_MAGIC;
  *p++ = (unsigned char)k->id_len;
  memcpy(p, k->id, k->id_len);
  p += k->id_len;
  unsigned char *nonce = p, *body = p + SEAL_NONCE_LEN;
  int n = 0;
  bool ok = crypto_random(nonce, SEAL_NONCE_LEN) && cipher_init(t, r, 0, 1, nonce) &&
            gcm_update(t, out, 2 + k->id_len, aad, aad_len, plain, len, body) &&
            EVP_CipherFinal_ex(t->cipher, body + len, &n) == 1 && n == 0 &&
            EVP_CIPHER_CTX_ctrl(t->cipher, EVP_CTRL_GCM_GET_TAG, SEAL_TAG_LEN, body + len) == 1;
  if (!ok) t->serial = 0; /* a context left half-way is set up from scratch next time */
  return ok;
}

/* The key id's bytes and length in a sealed value; false when data is not framed as one. */
static bool frame(const void *data, size_t len, const char **id, size_t *id_len) {
  const unsigned char *d = data;
  if (!d || len < 2 || d[0] != SEAL_MAGIC) return false;
  size_t il = d[1];
  if (il == 0 || il > SEAL_KEY_ID_MAX || len < 2 + il + SEAL_NONCE_LEN + SEAL_TAG_LEN) return false;
  if (!key_id_valid((const char *)d + 2, il)) return false;
  *id = (const char *)d + 2;
  *id_len = il;
  return true;
}

bool seal_is_sealed(const void *data, size_t len) {
  const char *id;
  size_t il;
  return frame(data, len, &id, &il);
}

bool seal_key_of(const void *sealed, size_t len, char id[SEAL_KEY_ID_MAX + 1]) {
  const char *p;
  size_t il;
  if (!frame(sealed, len, &p, &il)) return false;
  memcpy(id, p, il);
  id[il] = '\0';
  return true;
}

size_t seal_plain_len(const void *sealed, size_t len) {
  const char *id;
  size_t il;
  if (!frame(sealed, len, &id, &il)) return 0;
  return len - 2 - il - SEAL_NONCE_LEN - SEAL_TAG_LEN;
}

bool seal_open(const struct seal_ring *r, const void *aad, size_t aad_len, const void *sealed,
               size_t len, unsigned char *out, size_t *out_len) {
  *out_len = 0;
  const char *id;
  size_t il;
  if (!frame(sealed, len, &id, &il)) return false;
  const struct seal_key *k = ring_find(r, id, il);
  if (!k) return false;
  struct seal_tls *t = tls_get();
  if (!t) return false;
  const unsigned char *nonce = (const unsigned char *)sealed + 2 + il;
  const unsigned char *in = nonce + SEAL_NONCE_LEN;
  size_t clen = len - 2 - il - SEAL_NONCE_LEN - SEAL_TAG_LEN;
  unsigned char tag[SEAL_TAG_LEN];
  memcpy(tag, in + clen, SEAL_TAG_LEN);
  int n = 0;
  bool ok = cipher_init(t, r, (size_t)(k - r->keys), 0, nonce) &&
            gcm_update(t, sealed, 2 + il, aad, aad_len, in, clen, out) &&
            EVP_CIPHER_CTX_ctrl(t->cipher, EVP_CTRL_GCM_SET_TAG, SEAL_TAG_LEN, tag) == 1 &&
            EVP_CipherFinal_ex(t->cipher, out + clen, &n) == 1;
  if (!ok) {
    t->serial = 0;
    if (clen) OPENSSL_cleanse(out, clen); /* never hand out unauthenticated plaintext */
    return false;
  }
  *out_len = clen;
  return true;
}

/* ---- the blind index ---- */

bool seal_index(const struct seal_ring *r, size_t i, const void *value, size_t len,
                unsigned char out[SEAL_INDEX_LEN]) {
  unsigned char mac[32];
  unsigned int n = 0;
  struct seal_tls *t = tls_get();
  bool ok = r && i < r->count && t;
  if (ok) {
    const struct seal_key *k = &r->keys[i];
    ok = EVP_MD_CTX_copy_ex(t->md, k->inner) == 1 && EVP_DigestUpdate(t->md, value, len) == 1 &&
         EVP_DigestFinal_ex(t->md, mac, &n) == 1 && n == 32 &&
         EVP_MD_CTX_copy_ex(t->md, k->outer) == 1 && EVP_DigestUpdate(t->md, mac, 32) == 1 &&
         EVP_DigestFinal_ex(t->md, mac, &n) == 1 && n == 32;
  }
  if (ok) memcpy(out, mac, SEAL_INDEX_LEN);
  OPENSSL_cleanse(mac, sizeof mac);
  return ok;
}

/* ---- new keys ---- */

bool seal_generate(char *out, size_t cap) {
  unsigned char key[SEAL_MASTER_LEN];
  char b64[48];
  time_t now = time(NULL);
  struct tm tm;
  if (cap < 100 || !gmtime_r(&now, &tm) || !crypto_random(key, sizeof key)) return false;
  int n = EVP_EncodeBlock((unsigned char *)b64, key, sizeof key);
  OPENSSL_cleanse(key, sizeof key);
  if (n != 44) return false;
  snprintf(out, cap, "k%04d%02d%02d%02d%02d%02d:%s", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, b64);
  OPENSSL_cleanse(b64, sizeof b64);
  return true;
}
