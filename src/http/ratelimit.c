/* Sliding window of 60 one-second buckets per key in a chained hash table. */
#include "http/ratelimit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define SLOTS RATELIMIT_WINDOW_S
#define TABLE_SIZE 4096

struct entry {
  char key[RATELIMIT_KEY_MAX];
  int64_t last_s; /* the second of the newest bucket that was brought up to date */
  long total;
  uint32_t counts[SLOTS];
  struct entry *next;
};

struct ratelimit {
  long limit;
  size_t max_keys;
  size_t nkeys;
  bool warned_full;
  pthread_mutex_t mu;
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
    e->total = 0;
  } else {
    for (int64_t s = e->last_s + 1; s <= now_s; s++) {
      e->total -= e->counts[s % SLOTS];
      e->counts[s % SLOTS] = 0;
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

static struct entry *find_or_add(struct ratelimit *rl, const char *key, int64_t now_s) {
  size_t h = hash(key);
  for (struct entry *e = rl->table[h]; e; e = e->next)
    if (strncmp(e->key, key, RATELIMIT_KEY_MAX - 1) == 0) return e;
  if (rl->nkeys >= rl->max_keys) sweep_stale(rl, now_s);
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

void ratelimit_hit(struct ratelimit *rl, const char *key, int64_t now_ms,
                   struct ratelimit_result *out) {
  int64_t now_s = now_ms / 1000;
  memset(out, 0, sizeof *out);
  out->limit = rl->limit;
  pthread_mutex_lock(&rl->mu);
  struct entry *e = find_or_add(rl, key, now_s);
  if (!e) {
    pthread_mutex_unlock(&rl->mu);
    out->allowed = true;
    out->remaining = rl->limit;
    return;
  }
  advance(e, now_s);
  if (e->total >= rl->limit) {
    out->allowed = false;
    out->retry_after_s = ceil_seconds(ms_until_oldest_expires(e, now_ms));
    if (out->retry_after_s < 1) out->retry_after_s = 1;
    out->reset_s = out->retry_after_s;
  } else {
    out->allowed = true;
    e->counts[now_s % SLOTS]++;
    e->total++;
    out->remaining = rl->limit - e->total;
    out->reset_s = ceil_seconds(ms_until_oldest_expires(e, now_ms));
  }
  pthread_mutex_unlock(&rl->mu);
}
