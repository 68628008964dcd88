/* API keys kept as data (gsr_<id>_<secret>, core/apikey.h): verification with a bounded
 * in-memory cache, so the hot path stays off the database.
 *
 * An entry read from the database at most KEY_FRESH_MS ago is trusted as it is; an older or
 * missing one is read again on an offload thread (never on an event thread: the headers call
 * leaves the decision deferred, and the final call makes it before anything else runs, as
 * for a rate-limit decision only Redis can make). Revocation and expiry therefore take effect
 * on every instance within a second. Unknown ids are cached too (negative entries), and a key
 * not verified yet is rate-limited per client address, so made-up ids cannot make us read the
 * database per request without bound. The secret's SHA-256 is compared in constant time.
 *
 * Keys from API_SECRET_KEY are checked first, in memory (auth.c), exactly as before: they never
 * reach this file. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "ext/crypto.h"
#include "http/server_internal.h"

#define KEY_FRESH_MS 1000.0
#define KEY_TOUCH_MS 60000.0 /* last use recorded at most once a minute per key */
#define KEYCACHE_SLOTS 1024  /* bounded: a colliding id replaces the slot's entry */

struct keycache_entry {
  bool found; /* false: a negative entry (no such key) */
  struct apikey_record rec;
  double fetched_ms;
  double touched_ms; /* last use recorded (0: not by this instance yet) */
};

struct keycache {
  pthread_mutex_t mu;
  uint64_t seed;
  struct keycache_entry *slot[KEYCACHE_SLOTS]; /* owned; NULL: empty */
};

struct keycache *keycache_new(void) {
  struct keycache *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  if (!crypto_random((unsigned char *)&c->seed, sizeof c->seed)) {
    free(c);
    return NULL;
  }
  pthread_mutex_init(&c->mu, NULL);
  return c;
}

void keycache_free(struct keycache *c) {
  if (!c) return;
  for (size_t i = 0; i < KEYCACHE_SLOTS; i++) free(c->slot[i]);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

/* The slot of an id, keyed by a per-process seed so ids cannot be chosen to collide. */
static size_t slot_of(const struct keycache *c, const char *id) {
  uint64_t h = 1469598103934665603ull ^ c->seed;
  for (const char *p = id; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
  return (size_t)(h % KEYCACHE_SLOTS);
}

/* Copies id's entry into out when it is at most KEY_FRESH_MS old. */
static bool cache_get_fresh(struct keycache *c, const char *id, double now,
                            struct keycache_entry *out) {
  bool hit = false;
  pthread_mutex_lock(&c->mu);
  const struct keycache_entry *e = c->slot[slot_of(c, id)];
  if (e && strcmp(e->rec.id, id) == 0 && now - e->fetched_ms <= KEY_FRESH_MS) {
    *out = *e;
    hit = true;
  }
  pthread_mutex_unlock(&c->mu);
  return hit;
}

static void cache_put(struct keycache *c, const struct keycache_entry *in) {
  pthread_mutex_lock(&c->mu);
  struct keycache_entry **e = &c->slot[slot_of(c, in->rec.id)];
  double touched = *e && strcmp((*e)->rec.id, in->rec.id) == 0 ? (*e)->touched_ms : 0;
  if (!*e) *e = malloc(sizeof **e);
  if (*e) {
    **e = *in;
    (*e)->touched_ms = touched;
  }
  pthread_mutex_unlock(&c->mu);
}

/* True (once per KEY_TOUCH_MS per key) when this use is to be recorded. */
static bool cache_should_touch(struct keycache *c, const char *id, double now) {
  bool touch = false;
  pthread_mutex_lock(&c->mu);
  struct keycache_entry *e = c->slot[slot_of(c, id)];
  if (e && strcmp(e->rec.id, id) == 0 &&
      (e->touched_ms == 0 || now - e->touched_ms >= KEY_TOUCH_MS)) {
    e->touched_ms = now;
    touch = true;
  }
  pthread_mutex_unlock(&c->mu);
  return touch;
}

/* ---- per request ---- */

bool keys_parse_header(struct http_request *req) {
  const char *token, *secret;
  size_t len;
  if (!auth_bearer_token(http_request_header(req, "Authorization"), &token, &len) ||
      !apikey_parse(token, len, req->key_id, &secret))
    return false;
  crypto_sha256(secret, APIKEY_SECRET_LEN, req->key_sha);
  return true;
}

bool keys_lookup_fresh(struct http_request *req) {
  struct keycache_entry e;
  if (!cache_get_fresh(req->server->keys, req->key_id, time_mono_ms(), &e)) return false;
  req->key = malloc(sizeof *req->key);
  if (!req->key) {
    req->key_outcome = KEY_OUT_UNAVAILABLE;
    return true;
  }
  *req->key = e;
  return true;
}

enum key_outcome keys_decide(struct http_request *req, unsigned need) {
  const struct keycache_entry *e = req->key;
  if (req->key_outcome == KEY_OUT_UNAVAILABLE || !e) return KEY_OUT_UNAVAILABLE;
  /* The comparison runs whether or not the id was found (a negative entry's digest is 0s). */
  bool eq = crypto_equal(req->key_sha, e->rec.secret_sha256, sizeof req->key_sha);
  int64_t now = time_now_us();
  if (!e->found || !eq || e->rec.revoked_us || (e->rec.expires_us && now >= e->rec.expires_us))
    return KEY_OUT_INVALID;
  for (size_t i = 0; i < e->rec.naccounts; i++) req->key_accounts[i] = e->rec.accounts[i];
  if (cache_should_touch(req->server->keys, e->rec.id, time_mono_ms()))
    api_key_touch(req->server->app, e->rec.id, now);
  unsigned scopes = apikey_effective_scopes(e->rec.scopes, e->rec.naccounts);
  return apikey_scopes_allow(scopes, need) ? KEY_OUT_OK : KEY_OUT_FORBIDDEN;
}

/* Offload thread: reads the key and refreshes the cache. */
static void lookup_work(void *state) {
  struct http_request *req = state;
  struct keycache_entry *e = calloc(1, sizeof *e);
  if (!e) {
    req->key_outcome = KEY_OUT_UNAVAILABLE;
    return;
  }
  int rc = api_key_lookup(req->server->app, req->key_id, &e->rec);
  if (rc < 0) {
    free(e);
    req->key_outcome = KEY_OUT_UNAVAILABLE;
    return;
  }
  if (rc == 0) memset(&e->rec, 0, sizeof e->rec);
  snprintf(e->rec.id, sizeof e->rec.id, "%s", req->key_id);
  e->found = rc == 1;
  e->fetched_ms = time_mono_ms();
  cache_put(req->server->keys, e);
  req->key = e;
}

void keys_start_lookup(struct http_request *req, void (*on_done)(struct http_request *)) {
  req->key_deferred = false;
  free(req->key);
  req->key = NULL;
  http_request_offload(req, lookup_work, on_done, req, NULL);
}

void keys_apply(struct http_request *req, enum key_outcome out) {
  req->key_outcome = out;
  switch (out) {
    case KEY_OUT_OK:
      return;
    case KEY_OUT_FORBIDDEN:
      request_set_pending(req, API_ERR_FORBIDDEN, NULL);
      return;
    case KEY_OUT_INVALID:
      http_reply_header(req, "WWW-Authenticate", "Bearer");
      request_set_pending(req, API_ERR_UNAUTHORIZED, NULL);
      return;
    case KEY_OUT_UNAVAILABLE:
    case KEY_OUT_NONE:
      http_reply_header(req, "Retry-After", "1");
      request_set_pending(req, API_ERR_UNAVAILABLE, "Cannot check the API key now; retry");
      return;
  }
}

/* ---- what endpoints see ---- */

const char *const *http_request_accounts(const struct http_request *req, size_t *n) {
  *n = 0;
  if (req->key_outcome != KEY_OUT_OK || !req->key || req->key->rec.naccounts == 0) return NULL;
  *n = req->key->rec.naccounts;
  return req->key_accounts;
}

bool http_request_key_unverified(const struct http_request *req) { return req->key_deferred; }
