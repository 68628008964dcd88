/* Sliding window of 60 one-second buckets per key in a chained hash table.
 *
 * Shared mode (Redis): each entry's buckets hold this instance's best knowledge of the
 * global window — Redis's counts as of the last sync plus local hits not yet sent. While a
 * key is far from its limit and its counts are fresh, hits are decided locally and sent to
 * Redis in the background every few milliseconds, one pipelined round trip for all busy
 * keys. Near the limit (or with stale counts) each hit asks Redis, which decides atomically,
 * so the shared limit is exact there. */
#include "http/ratelimit.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "ext/redis.h"

#define SLOTS RATELIMIT_WINDOW_S
#define TABLE_SIZE 4096
#define FRESH_MS 25   /* counts synced this recently may be trusted for local decisions */
#define MARGIN_MIN 64 /* ... while at least this many hits (or a quarter of the limit) remain */
#define SYNC_BATCH 64 /* keys per pipelined round trip */

struct entry {
  char key[RATELIMIT_KEY_MAX];
  int64_t last_s; /* the second of the newest bucket that was brought up to date */
  long total;
  uint32_t counts[SLOTS];
  /* shared mode */
  uint32_t pending[SLOTS]; /* local hits not yet sent to Redis */
  bool dirty;
  int64_t synced_ms; /* when counts last came from Redis; 0: never */
  struct entry *next;
};

struct ratelimit {
  long limit;
  size_t max_keys;
  size_t nkeys;
  bool warned_full;
  int64_t last_sweep_s;
  pthread_mutex_t mu;
  struct redis_client *redis; /* NULL: local only */
  char prefix[64];
  struct entry *table[TABLE_SIZE];
};

struct ratelimit *ratelimit_new(long limit, size_t max_keys) {
  struct ratelimit *rl = calloc(1, sizeof *rl);
  if (!rl) return NULL;
  rl->limit = limit;
  rl->max_keys = max_keys;
  pthread_mutex_init(&rl->mu, NULL);
  return rl;
}

void ratelimit_free(struct ratelimit *rl) {
  if (!rl) return;
  for (size_t i = 0; i < TABLE_SIZE; i++) {
    for (struct entry *e = rl->table[i], *n; e; e = n) {
      n = e->next;
      free(e);
    }
  }
  pthread_mutex_destroy(&rl->mu);
  free(rl);
}

static size_t hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a over the stored prefix */
  for (size_t i = 0; *s && i < RATELIMIT_KEY_MAX - 1; s++, i++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return (size_t)(h % TABLE_SIZE);
}

/* Drops buckets that have left the window at second now_s. */
static void advance(struct entry *e, int64_t now_s) {
  if (now_s <= e->last_s) return;
  if (now_s - e->last_s >= SLOTS) {
    memset(e->counts, 0, sizeof e->counts);
    memset(e->pending, 0, sizeof e->pending);
    e->total = 0;
  } else {
    for (int64_t s = e->last_s + 1; s <= now_s; s++) {
      e->total -= e->counts[s % SLOTS];
      e->counts[s % SLOTS] = 0;
      e->pending[s % SLOTS] = 0;
    }
  }
  e->last_s = now_s;
}

/* Milliseconds until the oldest counted hit leaves the window. */
static int64_t ms_until_oldest_expires(const struct entry *e, int64_t now_ms) {
  int64_t now_s = now_ms / 1000;
  for (int64_t s = now_s - SLOTS + 1; s <= now_s; s++) {
    if (s >= 0 && e->counts[s % SLOTS]) return (s + SLOTS) * 1000 - now_ms;
  }
  return 0;
}

static long ceil_seconds(int64_t ms) { return (long)((ms + 999) / 1000); }

static void sweep_stale(struct ratelimit *rl, int64_t now_s) {
  for (size_t i = 0; i < TABLE_SIZE; i++) {
    struct entry **pp = &rl->table[i];
    while (*pp) {
      struct entry *e = *pp;
      if (now_s - e->last_s >= SLOTS) {
        *pp = e->next;
        free(e);
        rl->nkeys--;
      } else {
        pp = &e->next;
      }
    }
  }
}

static struct entry *find(struct ratelimit *rl, const char *key) {
  for (struct entry *e = rl->table[hash(key)]; e; e = e->next)
    if (strncmp(e->key, key, RATELIMIT_KEY_MAX - 1) == 0) return e;
  return NULL;
}

static struct entry *find_or_add(struct ratelimit *rl, const char *key, int64_t now_s) {
  struct entry *found = find(rl, key);
  if (found) return found;
  size_t h = hash(key);
  /* A full table is swept at most once a second, so a flood of new clients cannot make every
   * request walk the whole table. */
  if (rl->nkeys >= rl->max_keys && now_s != rl->last_sweep_s) {
    rl->last_sweep_s = now_s;
    sweep_stale(rl, now_s);
  }
  if (rl->nkeys >= rl->max_keys) {
    if (!rl->warned_full) log_msg(LOG_WARNING, "rate limiter full: new clients are not limited");
    rl->warned_full = true;
    return NULL;
  }
  struct entry *e = calloc(1, sizeof *e);
  if (!e) return NULL;
  strncpy(e->key, key, sizeof e->key - 1);
  e->last_s = now_s;
  e->next = rl->table[h];
  rl->table[h] = e;
  rl->nkeys++;
  return e;
}

static void fill_result(const struct ratelimit *rl, const struct entry *e, bool allowed,
                        int64_t now_ms, struct ratelimit_result *out) {
  out->allowed = allowed;
  out->limit = rl->limit;
  if (allowed) {
    out->remaining = rl->limit > e->total ? rl->limit - e->total : 0;
    out->reset_s = ceil_seconds(ms_until_oldest_expires(e, now_ms));
  } else {
    out->remaining = 0;
    out->retry_after_s = ceil_seconds(ms_until_oldest_expires(e, now_ms));
    if (out->retry_after_s < 1) out->retry_after_s = 1;
    out->reset_s = out->retry_after_s;
  }
}

/* Counts a hit locally when there is room. */
static bool local_hit(struct ratelimit *rl, struct entry *e, int64_t now_s, bool record) {
  if (e->total >= rl->limit) return false;
  e->counts[now_s % SLOTS]++;
  e->total++;
  if (record) {
    e->pending[now_s % SLOTS]++;
    e->dirty = true;
  }
  return true;
}

/* Moves an entry's pending hits into a Redis call. */
static void take_pending(struct ratelimit *rl, struct entry *e, int64_t now_s, bool want,
                         struct redis_rl_call *call, char *keybuf, size_t keycap) {
  snprintf(keybuf, keycap, "%s%s", rl->prefix, e->key);
  memset(call, 0, sizeof *call);
  call->key = keybuf;
  call->now_s = now_s;
  call->limit = rl->limit;
  call->want = want;
  for (int64_t s = now_s - SLOTS + 1; s <= now_s; s++) {
    if (s < 0 || !e->pending[s % SLOTS]) continue;
    call->delta_secs[call->ndeltas] = s;
    call->deltas[call->ndeltas++] = e->pending[s % SLOTS];
    e->pending[s % SLOTS] = 0;
  }
  e->dirty = false;
}

/* A call failed: its hits go back to pending, to be sent later. */
static void restore_pending(struct entry *e, const struct redis_rl_call *call) {
  for (size_t i = 0; i < call->ndeltas; i++) {
    if (call->delta_secs[i] + SLOTS <= e->last_s) continue;
    e->pending[call->delta_secs[i] % SLOTS] += call->deltas[i];
    e->dirty = true;
  }
}

/* Replaces the counts with Redis's window plus hits made since the call was built. */
static void apply_reply(struct entry *e, const struct redis_rl_call *call, int64_t now_ms) {
  int64_t now_s = call->now_s > e->last_s ? call->now_s : e->last_s;
  advance(e, now_s);
  memset(e->counts, 0, sizeof e->counts);
  e->total = 0;
  for (size_t i = 0; i < call->nbuckets; i++) {
    int64_t s = call->bucket_secs[i];
    if (s <= now_s - SLOTS || s > now_s || call->bucket_counts[i] < 0) continue;
    e->counts[s % SLOTS] += (uint32_t)call->bucket_counts[i];
    e->total += (long)call->bucket_counts[i];
  }
  for (int i = 0; i < SLOTS; i++) {
    e->counts[i] += e->pending[i];
    e->total += e->pending[i];
  }
  e->synced_ms = now_ms;
}

/* Asks Redis for one hit; false when Redis could not answer. Called and returns locked; *ep is
 * the entry again (looked up anew, the lock having been dropped), or NULL if it went away. */
static bool shared_hit(struct ratelimit *rl, struct entry **ep, int64_t now_ms, bool *allowed) {
  struct entry *e = *ep;
  struct redis_rl_call call;
  char keybuf[RATELIMIT_KEY_MAX + 64];
  take_pending(rl, e, now_ms / 1000, true, &call, keybuf, sizeof keybuf);
  char key[RATELIMIT_KEY_MAX];
  memcpy(key, e->key, sizeof key);
  pthread_mutex_unlock(&rl->mu);
  bool ok = redis_rl_run(rl->redis, &call, 1);
  pthread_mutex_lock(&rl->mu);
  e = *ep = find(rl, key);
  if (!e) return false;
  if (!ok || !call.ok) {
    restore_pending(e, &call);
    return false;
  }
  apply_reply(e, &call, now_ms);
  *allowed = call.allowed;
  return true;
}

/* Whether this instance may decide a shared key's hit alone: its counts are fresh and the key
 * is far from its limit. Locked. */
static bool local_enough(const struct ratelimit *rl, const struct entry *e, int64_t now_ms) {
  long margin = rl->limit / 4 > MARGIN_MIN ? rl->limit / 4 : MARGIN_MIN;
  bool fresh = e->synced_ms && now_ms >= e->synced_ms && now_ms - e->synced_ms <= FRESH_MS;
  return fresh && e->total + margin < rl->limit;
}

/* A client the full table cannot track is let through (see README Design decisions). */
static void untracked(const struct ratelimit *rl, struct ratelimit_result *out) {
  out->allowed = true;
  out->remaining = rl->limit;
}

/* Locks the limiter and returns the client's entry, advanced to now_s; or NULL, unlocked and
 * *out filled as untracked, when the table cannot hold the client. */
static struct entry *lock_entry(struct ratelimit *rl, const char *key, int64_t now_s,
                                struct ratelimit_result *out) {
  memset(out, 0, sizeof *out);
  out->limit = rl->limit;
  pthread_mutex_lock(&rl->mu);
  struct entry *e = find_or_add(rl, key, now_s);
  if (!e) {
    pthread_mutex_unlock(&rl->mu);
    untracked(rl, out);
    return NULL;
  }
  advance(e, now_s);
  return e;
}

bool ratelimit_try_local(struct ratelimit *rl, const char *key, int64_t now_ms,
                         struct ratelimit_result *out) {
  int64_t now_s = now_ms / 1000;
  struct entry *e = lock_entry(rl, key, now_s, out);
  if (!e) return true;
  bool shared = rl->redis && redis_is_up(rl->redis);
  if (shared && !local_enough(rl, e, now_ms)) {
    pthread_mutex_unlock(&rl->mu);
    return false;
  }
  fill_result(rl, e, local_hit(rl, e, now_s, shared), now_ms, out);
  pthread_mutex_unlock(&rl->mu);
  return true;
}

void ratelimit_hit(struct ratelimit *rl, const char *key, int64_t now_ms,
                   struct ratelimit_result *out) {
  int64_t now_s = now_ms / 1000;
  struct entry *e = lock_entry(rl, key, now_s, out);
  if (!e) return;
  bool shared = rl->redis && redis_is_up(rl->redis);
  bool allowed;
  if (shared && local_enough(rl, e, now_ms)) {
    allowed = local_hit(rl, e, now_s, true);
  } else if (!(shared && shared_hit(rl, &e, now_ms, &allowed))) {
    e = find_or_add(rl, key, now_s); /* Redis failed: this instance decides alone */
    if (!e) {
      pthread_mutex_unlock(&rl->mu);
      untracked(rl, out);
      return;
    }
    allowed = local_hit(rl, e, now_s, false);
  }
  fill_result(rl, e, allowed, now_ms, out);
  pthread_mutex_unlock(&rl->mu);
}

void ratelimit_share(struct ratelimit *rl, struct redis_client *redis, const char *prefix) {
  rl->redis = redis;
  snprintf(rl->prefix, sizeof rl->prefix, "%s", prefix);
}

/* Collects up to max entries with pending hits into calls. */
static size_t collect_dirty(struct ratelimit *rl, int64_t now_s, struct redis_rl_call *calls,
                            char (*keys)[RATELIMIT_KEY_MAX + 64], size_t *cursor, size_t max) {
  size_t n = 0;
  for (; *cursor < TABLE_SIZE && n < max; (*cursor)++) {
    for (struct entry *e = rl->table[*cursor]; e && n < max; e = e->next) {
      if (!e->dirty) continue;
      advance(e, now_s);
      take_pending(rl, e, now_s, false, &calls[n], keys[n], sizeof keys[n]);
      n++;
    }
  }
  return n;
}

void ratelimit_sync(struct ratelimit *rl, int64_t now_ms) {
  if (!rl->redis || !redis_is_up(rl->redis)) return;
  static _Thread_local struct redis_rl_call calls[SYNC_BATCH];
  static _Thread_local char keys[SYNC_BATCH][RATELIMIT_KEY_MAX + 64];
  size_t cursor = 0;
  while (cursor < TABLE_SIZE) {
    pthread_mutex_lock(&rl->mu);
    size_t n = collect_dirty(rl, now_ms / 1000, calls, keys, &cursor, SYNC_BATCH);
    pthread_mutex_unlock(&rl->mu);
    if (n == 0) continue;
    bool ok = redis_rl_run(rl->redis, calls, n);
    pthread_mutex_lock(&rl->mu);
    for (size_t i = 0; i < n; i++) {
      struct entry *e = find(rl, keys[i] + strlen(rl->prefix));
      if (!e) continue;
      if (calls[i].ok) /* only calls Redis did not apply go back to pending */
        apply_reply(e, &calls[i], now_ms);
      else
        restore_pending(e, &calls[i]);
    }
    pthread_mutex_unlock(&rl->mu);
    if (!ok) return;
  }
}
