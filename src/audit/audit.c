/* The audit recorder (audit/audit.h): callers fill a bounded buffer under a short lock; one
 * thread hands it to the store's writer as one STORE_WRITE_AUDIT and waits for its commit
 * while the callers fill the other buffer, then hands over what came meanwhile: group commit,
 * as the store's writer does for webhooks. */
#include "audit/audit.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/timeutil.h"

#define BATCH_MAX (AUDIT_BUFFER_MAX + AUDIT_REJECT_SOURCES_MAX + AUDIT_OUTCOME_COUNT)
#define SLOTS (2 * AUDIT_REJECT_SOURCES_MAX) /* open addressing, at most half full */
#define RETRY_TRIES 3                        /* a batch the store could not take, tries */

/* Rejections from one address with one outcome, within one second of the first. */
struct source {
  struct audit_entry entry; /* count grows; at_us is the window's start */
  uint32_t hash;
};

struct buffer {
  struct audit_entry *items; /* BATCH_MAX */
  size_t count;
};

struct audit_recorder {
  struct store *store;
  pthread_t thread;
  pthread_mutex_t mu; /* guards everything below but batch and write */
  pthread_cond_t cv;  /* the flusher's wake-ups */
  bool stop;
  struct buffer pending;
  struct source sources[AUDIT_REJECT_SOURCES_MAX];
  size_t nsources;
  /* per outcome: the rejections of one second that found the sources full (count 0: none) */
  struct audit_entry overflow[AUDIT_OUTCOME_COUNT];
  uint16_t slots[SLOTS]; /* index into sources + 1; 0: empty */
  int64_t dropped_unlogged;
  struct audit_recorder_stats stats;
  /* the flusher's own */
  struct buffer batch;
  struct store_write write;
  pthread_mutex_t done_mu;
  pthread_cond_t done_cv;
  bool done;
};

static void copy_text(char *dst, size_t cap, const char *src) {
  size_t n = src ? strnlen(src, cap - 1) : 0;
  if (n) memcpy(dst, src, n);
  dst[n] = '\0';
}

void audit_who_set(struct audit_who *who, const char *request_id, const char *key_id,
                   const char *client_ip) {
  copy_text(who->request_id, sizeof who->request_id, request_id);
  copy_text(who->key_id, sizeof who->key_id, key_id);
  copy_text(who->client_ip, sizeof who->client_ip, client_ip);
}

static void fill_entry(struct audit_entry *e, const struct audit_who *who, enum audit_action action,
                       const char *target, enum audit_outcome outcome, int64_t at_us) {
  memset(e, 0, sizeof *e);
  e->at_us = at_us;
  if (who) e->who = *who;
  e->action = action;
  copy_text(e->target, sizeof e->target, target);
  e->outcome = outcome;
  e->count = 1;
}

/* mu held. */
static void note_dropped(struct audit_recorder *r) {
  r->stats.dropped++;
  r->dropped_unlogged++;
}

/* mu held: room for one more entry in pending. The first one wakes the flusher: it waits while
 * pending is empty (while it writes, and for AUDIT_SPACING_MS after a large batch, entries
 * gather for its next one). */
static struct audit_entry *pending_slot(struct audit_recorder *r) {
  if (r->pending.count >= AUDIT_BUFFER_MAX) {
    note_dropped(r);
    return NULL;
  }
  if (r->pending.count == 0) pthread_cond_signal(&r->cv);
  return &r->pending.items[r->pending.count++];
}

void audit_record(struct audit_recorder *r, const struct audit_who *who, enum audit_action action,
                  const char *target, enum audit_outcome outcome) {
  audit_record_count(r, who, action, target, outcome, 1);
}

void audit_record_count(struct audit_recorder *r, const struct audit_who *who,
                        enum audit_action action, const char *target, enum audit_outcome outcome,
                        int64_t count) {
  if (!r) return;
  struct audit_entry e;
  fill_entry(&e, who, action, target, outcome, time_now_us()); /* outside the lock */
  e.count = count;
  pthread_mutex_lock(&r->mu);
  struct audit_entry *slot = pending_slot(r);
  if (slot) *slot = e;
  pthread_mutex_unlock(&r->mu);
}

static uint32_t source_hash(const char *ip, enum audit_outcome outcome) {
  uint32_t h = 2166136261u ^ (uint32_t)outcome; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)ip; *p; p++) h = (h ^ *p) * 16777619u;
  return h;
}

/* mu held: the open window of (ip, outcome), or where a new one goes. */
static uint16_t *source_slot(struct audit_recorder *r, uint32_t h, const char *ip,
                             enum audit_outcome outcome) {
  for (size_t i = h % SLOTS;; i = (i + 1) % SLOTS) {
    uint16_t *slot = &r->slots[i];
    if (*slot == 0) return slot;
    const struct source *s = &r->sources[*slot - 1];
    if (s->hash == h && s->entry.outcome == outcome && strcmp(s->entry.who.client_ip, ip) == 0)
      return slot;
  }
}

/* The rate limiter's client key (http/client.c): an IPv4 address as it is, an IPv6 address as
 * its /64 ("2001:db8:1:2::/64"; an IPv4-mapped one as its IPv4 address). One party usually
 * holds a whole /64, so aggregating per address would let it write one entry per address. */
static void source_of(char ip[AUDIT_CLIENT_IP_MAX + 1]) {
  unsigned char a6[16];
  if (inet_pton(AF_INET6, ip, a6) != 1) return;
  static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char net[INET6_ADDRSTRLEN];
  if (memcmp(a6, v4mapped, sizeof v4mapped) == 0) {
    if (inet_ntop(AF_INET, a6 + 12, net, sizeof net)) copy_text(ip, AUDIT_CLIENT_IP_MAX + 1, net);
    return;
  }
  memset(a6 + 8, 0, 8);
  if (!inet_ntop(AF_INET6, a6, net, sizeof net)) return;
  size_t n = strlen(net);
  if (n + 3 > AUDIT_CLIENT_IP_MAX) return; /* cannot happen: a /64's text is at most 22 + 3 */
  memcpy(net + n, "/64", 4);
  copy_text(ip, AUDIT_CLIENT_IP_MAX + 1, net);
}

/* mu held: e joins the window of every rejection with its outcome that found no room (client
 * address, request id, key id and target null: the entry says how many were not listed). */
static void add_overflow(struct audit_recorder *r, const struct audit_entry *e) {
  struct audit_entry *o = &r->overflow[e->outcome];
  if (o->count && (e->at_us - o->at_us >= AUDIT_REJECT_WINDOW_US || e->at_us < o->at_us)) {
    struct audit_entry *out = pending_slot(r);
    if (out) *out = *o;
    o->count = 0;
  }
  if (o->count == 0) {
    fill_entry(o, NULL, AUDIT_AUTH_REJECTED, NULL, e->outcome, e->at_us);
    o->count = 0;
  }
  o->count++;
}

void audit_record_rejected(struct audit_recorder *r, const struct audit_who *who,
                           const char *target, enum audit_outcome outcome) {
  if (!r) return;
  if ((unsigned)outcome >= AUDIT_OUTCOME_COUNT) return;
  struct audit_entry e;
  fill_entry(&e, who, AUDIT_AUTH_REJECTED, target, outcome, time_now_us());
  source_of(e.who.client_ip);
  uint32_t h = source_hash(e.who.client_ip, outcome);
  pthread_mutex_lock(&r->mu);
  uint16_t *slot = source_slot(r, h, e.who.client_ip, outcome);
  struct audit_entry *agg = *slot ? &r->sources[*slot - 1].entry : NULL;
  if (agg && (e.at_us - agg->at_us >= AUDIT_REJECT_WINDOW_US || e.at_us < agg->at_us)) {
    /* Its second is over but the flusher has not taken it yet: it goes now, and this
     * rejection opens the address's next window in its place (same address, same slot). */
    struct audit_entry *out = pending_slot(r);
    if (out) *out = *agg;
    *agg = e;
  } else if (agg) {
    agg->count++;
    if (strcmp(agg->who.key_id, e.who.key_id) != 0) agg->who.key_id[0] = '\0';
    if (strcmp(agg->target, e.target) != 0) agg->target[0] = '\0';
  } else if (r->nsources < AUDIT_REJECT_SOURCES_MAX) {
    struct source *s = &r->sources[r->nsources++];
    s->entry = e;
    s->hash = h;
    *slot = (uint16_t)r->nsources;
  } else {
    add_overflow(r, &e);
  }
  pthread_mutex_unlock(&r->mu);
}

/* mu held: moves pending and the windows closed at now_us (every window with all) into batch
 * (empty, room for BATCH_MAX). */
static void take(struct audit_recorder *r, int64_t now_us, bool all) {
  struct buffer tmp = r->batch;
  r->batch = r->pending;
  r->pending = tmp;
  r->pending.count = 0;
  for (size_t i = 0; i < AUDIT_OUTCOME_COUNT; i++) {
    struct audit_entry *o = &r->overflow[i];
    if (o->count && (all || now_us - o->at_us >= AUDIT_REJECT_WINDOW_US || now_us < o->at_us)) {
      r->batch.items[r->batch.count++] = *o;
      o->count = 0;
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < r->nsources; i++) {
    struct source *s = &r->sources[i];
    if (all || now_us - s->entry.at_us >= AUDIT_REJECT_WINDOW_US || now_us < s->entry.at_us)
      r->batch.items[r->batch.count++] = s->entry;
    else
      r->sources[kept++] = *s;
  }
  if (kept == r->nsources) return;
  r->nsources = kept;
  memset(r->slots, 0, sizeof r->slots);
  for (size_t i = 0; i < kept; i++) {
    const struct source *s = &r->sources[i];
    *source_slot(r, s->hash, s->entry.who.client_ip, s->entry.outcome) = (uint16_t)(i + 1);
  }
}

/* Logs the chain's head (info): an operator who keeps these lines outside the database (a log
 * collector) holds anchors that `gensendrep audit verify --expect ID:HASH` checks, which a
 * rewrite of the whole log with recomputed hashes does not pass. */
static void log_head(struct audit_recorder *r) {
  int64_t id;
  unsigned char hash[AUDIT_HASH_LEN];
  if (store_audit_head(r->store, &id, hash) != STORE_OK) {
    log_msg(LOG_WARNING, "audit head: cannot be read now");
    return;
  }
  char hex[2 * AUDIT_HASH_LEN + 1];
  audit_hash_hex(hash, hex);
  log_msg(LOG_INFO, "audit head: id %lld hash %s", (long long)id, hex);
}

/* Writer thread. */
static void on_written(struct store_write *w, void *cls) {
  (void)w;
  struct audit_recorder *r = cls;
  pthread_mutex_lock(&r->done_mu);
  r->done = true;
  pthread_cond_signal(&r->done_cv);
  pthread_mutex_unlock(&r->done_mu);
}

/* The flusher, mu not held: writes batch and waits for its commit. */
static enum store_status write_batch(struct audit_recorder *r) {
  memset(&r->write, 0, sizeof r->write);
  r->write.kind = STORE_WRITE_AUDIT;
  r->write.audit_entries = r->batch.items;
  r->write.audit_count = r->batch.count;
  r->write.audio_fd = -1;
  r->write.done = on_written;
  r->write.done_cls = r;
  r->done = false;
  store_submit(r->store, &r->write);
  pthread_mutex_lock(&r->done_mu);
  while (!r->done) pthread_cond_wait(&r->done_cv, &r->done_mu); /* the store always finishes */
  pthread_mutex_unlock(&r->done_mu);
  return r->write.status;
}

static void deadline_in(struct timespec *t, int64_t ms) {
  clock_gettime(CLOCK_MONOTONIC, t);
  t->tv_sec += ms / 1000;
  t->tv_nsec += (ms % 1000) * 1000000L;
  t->tv_sec += t->tv_nsec / 1000000000L;
  t->tv_nsec %= 1000000000L;
}

static void *flusher_main(void *arg) {
  struct audit_recorder *r = arg;
  int tries = 0;
  bool failing = false;
  double last_write_ms = 0; /* when the last batch was handed to the store (monotonic) */
  size_t last_write_n = 0;  /* and how many entries it held */
  log_head(r);
  int64_t head_due = time_now_us() + (int64_t)AUDIT_HEAD_LOG_MS * 1000;
  pthread_mutex_lock(&r->mu);
  for (;;) {
    /* Nothing to write: wait for an entry, or for a rejection window to close (a tick). After
     * a failed write, wait a tick before trying again. */
    bool retry = r->batch.count > 0;
    if (!r->stop && (retry || r->pending.count == 0)) {
      struct timespec until;
      deadline_in(&until, AUDIT_FLUSH_MS);
      while (!r->stop && (retry || r->pending.count == 0) &&
             pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0) {
      }
    }
    /* Entries waiting right after a large batch: gather more until AUDIT_SPACING_MS after it
     * began (audit.h). */
    double wait_ms = last_write_ms + AUDIT_SPACING_MS - time_mono_ms();
    if (!r->stop && r->batch.count == 0 && r->pending.count > 0 &&
        last_write_n >= AUDIT_SPACING_MIN && wait_ms > 0) {
      struct timespec until;
      deadline_in(&until, (int64_t)wait_ms + 1);
      while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0) {
      }
    }
    bool stopping = r->stop;
    if (r->batch.count == 0) take(r, time_now_us(), stopping);
    int64_t dropped = r->dropped_unlogged;
    r->dropped_unlogged = 0;
    size_t n = r->batch.count;
    pthread_mutex_unlock(&r->mu);
    if (dropped)
      log_msg(LOG_WARNING, "audit: %lld entries dropped (more than %d waiting to be written)",
              (long long)dropped, AUDIT_BUFFER_MAX);
    if (n) {
      last_write_ms = time_mono_ms();
      last_write_n = n;
    }
    enum store_status st = n ? write_batch(r) : STORE_OK;
    bool lost = st != STORE_OK && (++tries >= RETRY_TRIES || st != STORE_RETRY);
    if (st == STORE_OK && n && failing) log_msg(LOG_INFO, "audit: entries are written again");
    if (lost)
      log_msg(LOG_ERROR, "audit: %zu read or rejection entries could not be written (lost)", n);
    if (st == STORE_OK || lost) {
      failing = lost;
      tries = 0;
    }
    pthread_mutex_lock(&r->mu);
    if (n) r->stats.flushes++;
    if (st == STORE_OK) r->stats.recorded += (int64_t)n;
    if (lost) r->stats.failed += (int64_t)n;
    if (st == STORE_OK || lost) r->batch.count = 0;
    /* else: the same batch is tried again a tick later */
    bool overflowing = false;
    for (size_t i = 0; i < AUDIT_OUTCOME_COUNT; i++) overflowing |= r->overflow[i].count > 0;
    if (stopping && r->batch.count == 0 && r->pending.count == 0 && r->nsources == 0 &&
        !overflowing)
      break;
    int64_t now = time_now_us();
    if (now >= head_due) {
      head_due = now + (int64_t)AUDIT_HEAD_LOG_MS * 1000;
      pthread_mutex_unlock(&r->mu);
      log_head(r);
      pthread_mutex_lock(&r->mu);
    }
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

/* Releases what audit_recorder_start made (the flusher not running). */
static void recorder_free(struct audit_recorder *r) {
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->done_mu);
  pthread_cond_destroy(&r->done_cv);
  free(r->pending.items);
  free(r->batch.items);
  free(r);
}

struct audit_recorder *audit_recorder_start(struct store *s) {
  struct audit_recorder *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->store = s;
  r->pending.items = calloc(BATCH_MAX, sizeof *r->pending.items);
  r->batch.items = calloc(BATCH_MAX, sizeof *r->batch.items);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&r->done_mu, NULL);
  pthread_cond_init(&r->done_cv, NULL);
  if (!r->pending.items || !r->batch.items ||
      pthread_create(&r->thread, NULL, flusher_main, r) != 0) {
    recorder_free(r);
    return NULL;
  }
  pthread_setname_np(r->thread, "gsr-audit");
  return r;
}

void audit_recorder_stop(struct audit_recorder *r) {
  if (!r) return;
  pthread_mutex_lock(&r->mu);
  r->stop = true;
  pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
  pthread_join(r->thread, NULL);
  log_head(r); /* everything is committed: the head a later verify must find */
  if (r->stats.dropped || r->stats.failed)
    log_msg(LOG_WARNING, "audit: %lld entries dropped, %lld not written since start",
            (long long)r->stats.dropped, (long long)r->stats.failed);
  recorder_free(r);
}

void audit_recorder_stats(struct audit_recorder *r, struct audit_recorder_stats *out) {
  pthread_mutex_lock(&r->mu);
  *out = r->stats;
  pthread_mutex_unlock(&r->mu);
}
