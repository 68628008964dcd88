/* The outbox dispatcher (outbound.h): one thread delivers to webhook subscriptions through one
 * libcurl multi handle, one more publishes to the broker (QUEUE_URL).
 *
 * The subscription thread loops: it hands the store, as one batch of writes (one transaction),
 * the results of the attempts that ended (FINISH), a fan-out when events may have arrived
 * (FANOUT), a claim for each subscription that may have due deliveries and has room (CLAIM),
 * and once a minute a prune; then it starts the claimed deliveries and waits on the multi handle
 * until a transfer progresses, the store reports new events (curl_multi_wakeup), a retry falls
 * due, or a second has passed. FINISH before CLAIM in one batch keeps the per-conversation order:
 * the next event of a conversation becomes due in the same transaction its predecessor ended. */
#include <curl/curl.h>
#include <jansson.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "core/utf8.h"
#include "core/version.h"
#include "ext/crypto.h"
#include "outbound/outbound.h"
#include "queue/queue.h"

#define CLAIM_MAX 256                         /* deliveries leased by one claim */
#define INFLIGHT_BYTES_MAX (16 * 1024 * 1024) /* bodies in flight: no claim past this */
#define FANOUT_LIMIT 1000                     /* events fanned out per subscription per batch */
#define PRUNE_LIMIT 5000                      /* outbox rows erased per prune */
#define PRUNE_EVERY_MS 60000                  /* prune once a minute */
#define TICK_MS 1000       /* at least once a second: other instances' events, new subs */
#define STOP_GRACE_MS 2000 /* what deliveries in flight are given at stop */
#define LEASE_MARGIN_S 30  /* a lease outlives the longest attempt by this much */
#define QUEUE_BATCH 256
#define ANSWERED_GRACE_MS 1000 /* a 2xx's rest, once its status line came (on_progress) */
#define QUEUE_BATCH_BYTES (16 * 1024 * 1024) /* event data one broker round holds */
#define QUEUE_LEASE_US (30 * 1000000LL)
#define QUEUE_TIMEOUT_MS 2000 /* each broker step (connect, ack wait): bounds outbound_stop */
#define QUEUE_BACKOFF_MS 1000
#define QUEUE_KEEP_MS 60000          /* broker down: its cursor is kept (touched) this often */
#define STALE_LOG_EVERY_MS 3600000.0 /* a prune passing stale broker cursors: logged hourly */

/* One subscription as the dispatcher sees it: what the store holds plus the throttle. */
struct sub_slot {
  struct subscription sub;
  double tokens;        /* maxPerSecond token bucket */
  double refilled_ms;   /* when tokens was last topped up (monotonic) */
  bool maybe_due;       /* a claim could find something: cleared when one comes back short */
  double not_before_ms; /* a 429/503 Retry-After holds the whole subscription until then (the
                         * store keeps the hold too: result hold_us) */
  size_t inflight;      /* its deliveries in flight (counted at each claim round) */
  /* Its signing secret, read apart from the list (store.h sub_secret) and kept: secret_ok once
   * it opened. One that does not open (secret_bad) holds the subscription: nothing is claimed,
   * its events wait (never sent unsigned); it is tried again at each refresh and logged once. */
  bool secret_ok, secret_bad, secret_logged;
};

/* One delivery in flight. */
struct transfer {
  struct outbound *o;
  struct transfer *prev, *next;
  CURL *easy;
  bool easy_reusable; /* its options were all set: it may serve the next transfer */
  struct curl_slist *headers;
  char *body;
  size_t body_len;
  struct store_delivery_result res; /* sub_id, seq, event id, type, attempt, times filled */
  double started_ms;
  char head[OUTBOX_RESPONSE_HEAD_MAX];
  size_t head_len;
  size_t received;
  bool cut;     /* stopped reading once the answer's first OUTBOX_RESPONSE_HEAD_MAX bytes came, or
                 * ANSWERED_GRACE_MS after a 2xx status line (its rest not waited for) */
  double ok_ms; /* when a 2xx status line arrived (0: none yet) */
  char retry_after[64]; /* the final answer's Retry-After, "" when none */
  char refused[96];     /* "refused: private address ..." when the SSRF rule stopped it */
  char errbuf[CURL_ERROR_SIZE];
};

/* What the threads read of the configuration: copied at start, so they never read the caller's
 * struct config (which need not outlive outbound_start: a test's lives on its stack, and a
 * thread reading it after it is gone once computed a lease from garbage). */
struct dispatch_cfg {
  long retry[CONFIG_RETRY_MAX]; /* DELIVERY_RETRY_SCHEDULE */
  size_t retry_count;
  int64_t retry_after_cap_s; /* a Retry-After is capped at the schedule's longest wait */
  bool allow_private;        /* DELIVERY_ALLOW_PRIVATE_NETWORKS */
  long timeout_ms;           /* DELIVERY_TIMEOUT_SECONDS */
  size_t concurrency;        /* DELIVERY_CONCURRENCY */
  int64_t lease_us;          /* a claim's lease: the longest attempt plus LEASE_MARGIN_S */
  long retention_days;       /* OUTBOX_RETENTION_DAYS */
};

/* A held subscription as GET and health show it: one reason. */
struct held_reason {
  char id[OUTBOX_SUB_ID_MAX];
  bool sealed_unreadable; /* heldReason "sealed_unreadable": its URL or account does not open */
  bool secret_unreadable; /* heldReason "secret_unreadable" (never with sealed_unreadable) */
  int64_t until_us;       /* heldUntil: a receiver's Retry-After holds it until then; 0: none */
};

/* A held subscription as published by the dispatcher's thread. */
struct held_entry {
  struct held_reason shown;
  bool secret_bad; /* its secret does not open, whatever else (outbound_sub_held) */
};

struct outbound {
  struct dispatch_cfg cfg;
  struct store *store;
  CURLM *multi;
  pthread_t sub_thread, queue_thread;
  bool sub_started, queue_started;
  atomic_bool stop;
  atomic_bool notified; /* the store committed events */
  atomic_bool woken;    /* outbound_wake: subscriptions changed */
  struct outbound *live_next;
  uint64_t rng; /* xorshift state for jitter (sub thread only) */
  /* subscription thread state */
  struct sub_slot *subs;
  size_t nsubs;
  size_t rotate; /* which subscription claims first, so none starves the others of slots */
  struct transfer *inflight;
  size_t ninflight;
  CURL **spare; /* ended transfers' easy handles, up to cfg.concurrency (easy_release) */
  size_t nspare;
  size_t inflight_bytes;                 /* the bodies of the transfers in flight */
  struct store_delivery_result *results; /* ended, waiting for FINISH */
  size_t nresults, capresults;
  int64_t next_due_us;    /* earliest retry we scheduled ourselves (wall clock); 0: none */
  double finish_again_ms; /* a FINISH the store refused (busy) is tried again from then */
  bool fanout_failed;     /* the last FANOUT failed: again at the next tick */
  double stale_logged_ms; /* when a prune passing a stale broker cursor was last logged */
  /* broker */
  struct queue *queue;
  pthread_mutex_t queue_mu;
  pthread_cond_t queue_cv;
  bool queue_kick;
  /* the subscriptions held, as the last refresh found them (outbound_sub_held, outbound_held) */
  pthread_mutex_t held_mu;
  struct held_entry *held;
  size_t nheld;
};

/* ---- the store's notification: the writer thread may call it while an outbound stops, so it
 * reaches only dispatchers still registered here ---- */

static pthread_mutex_t live_mu = PTHREAD_MUTEX_INITIALIZER;
static struct outbound *live_head;

static void kick(struct outbound *o, bool subs_changed) {
  if (subs_changed) atomic_store(&o->woken, true);
  atomic_store(&o->notified, true);
  curl_multi_wakeup(o->multi);
  pthread_mutex_lock(&o->queue_mu);
  o->queue_kick = true;
  pthread_cond_signal(&o->queue_cv);
  pthread_mutex_unlock(&o->queue_mu);
}

static void on_outbox_notify(void *cls) {
  pthread_mutex_lock(&live_mu);
  for (struct outbound *p = live_head; p; p = p->live_next)
    if (p == cls) {
      kick(p, false);
      break;
    }
  pthread_mutex_unlock(&live_mu);
}

static void live_add(struct outbound *o) {
  pthread_mutex_lock(&live_mu);
  o->live_next = live_head;
  live_head = o;
  pthread_mutex_unlock(&live_mu);
}

static void live_remove(struct outbound *o) {
  pthread_mutex_lock(&live_mu);
  for (struct outbound **p = &live_head; *p; p = &(*p)->live_next)
    if (*p == o) {
      *p = o->live_next;
      break;
    }
  pthread_mutex_unlock(&live_mu);
}

void outbound_wake(struct outbound *o) {
  if (!o) return;
  kick(o, true);
}

/* ---- small helpers ---- */

static double rnd_unit(struct outbound *o) {
  uint64_t x = o->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  o->rng = x;
  return (double)(x >> 11) / 9007199254740992.0; /* [0, 1) */
}

static long schedule_max(const struct config *cfg) {
  long m = 0;
  for (size_t i = 0; i < cfg->delivery_retry_count && i < CONFIG_RETRY_MAX; i++)
    if (cfg->delivery_retry[i] > m) m = cfg->delivery_retry[i];
  return m;
}

/* The copy the threads read (struct dispatch_cfg). */
static void dispatch_cfg_copy(struct dispatch_cfg *d, const struct config *cfg) {
  memset(d, 0, sizeof *d);
  d->retry_count =
      cfg->delivery_retry_count < CONFIG_RETRY_MAX ? cfg->delivery_retry_count : CONFIG_RETRY_MAX;
  memcpy(d->retry, cfg->delivery_retry, d->retry_count * sizeof d->retry[0]);
  d->retry_after_cap_s = schedule_max(cfg);
  d->allow_private = cfg->delivery_allow_private_networks;
  d->timeout_ms = cfg->delivery_timeout * 1000L;
  d->concurrency = cfg->delivery_concurrency > 0 ? (size_t)cfg->delivery_concurrency : 1;
  d->lease_us = ((int64_t)cfg->delivery_timeout + LEASE_MARGIN_S) * 1000000;
  d->retention_days = cfg->outbox_retention_days;
}

/* A batch of store writes submitted together (the writer commits them in one transaction, in
 * order) and waited for together. */
struct batch {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  size_t pending;
  struct store_write *w;
  struct store_outbox_work *work;
  size_t n, cap;
};

static void batch_done(struct store_write *w, void *cls) {
  (void)w;
  struct batch *b = cls;
  pthread_mutex_lock(&b->mu);
  b->pending--;
  pthread_cond_signal(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

static struct store_outbox_work *batch_add(struct batch *b, enum store_outbox_op op) {
  if (b->n == b->cap) return NULL;
  struct store_outbox_work *work = &b->work[b->n];
  memset(work, 0, sizeof *work);
  work->op = op;
  work->now_us = time_now_us();
  b->n++;
  return work;
}

static void batch_free(struct batch *b) {
  free(b->w);
  free(b->work);
}

static void batch_run(struct store *s, struct batch *b) {
  pthread_mutex_init(&b->mu, NULL);
  pthread_cond_init(&b->cv, NULL);
  b->pending = b->n;
  for (size_t i = 0; i < b->n; i++) {
    memset(&b->w[i], 0, sizeof b->w[i]);
    b->w[i].kind = STORE_WRITE_OUTBOX;
    b->w[i].outbox = &b->work[i];
    b->w[i].audio_fd = -1;
    b->w[i].event_audio_at = -1;
    b->w[i].done = batch_done;
    b->w[i].done_cls = b;
  }
  for (size_t i = 0; i < b->n; i++) store_submit(s, &b->w[i]);
  pthread_mutex_lock(&b->mu);
  while (b->pending) pthread_cond_wait(&b->cv, &b->mu);
  pthread_mutex_unlock(&b->mu);
  pthread_cond_destroy(&b->cv);
  pthread_mutex_destroy(&b->mu);
}

/* ---- subscriptions ---- */

static struct sub_slot *slot_find(struct outbound *o, const char *id) {
  for (size_t i = 0; i < o->nsubs; i++)
    if (strcmp(o->subs[i].sub.id, id) == 0) return &o->subs[i];
  return NULL;
}

/* The slot's secret: the old slot's when it had opened, else read (and opened) now. */
static void slot_secret(struct outbound *o, struct sub_slot *slot, const struct sub_slot *old) {
  if (old && old->secret_ok) {
    memcpy(slot->sub.secret, old->sub.secret, sizeof slot->sub.secret);
    slot->secret_ok = true;
    return;
  }
  slot->secret_logged = old && old->secret_logged;
  enum store_status st = store_sub_secret(o->store, slot->sub.id, slot->sub.secret);
  slot->secret_ok = st == STORE_OK;
  /* else (busy, just deleted) tried again next time; busy keeps what the last read found, so
   * heldReason does not flicker while the database is busy */
  slot->secret_bad = st == STORE_HARD || (st == STORE_RETRY && old && old->secret_bad);
  if (slot->secret_ok && slot->secret_logged)
    log_msg(LOG_INFO, "outbound: the signing secret of subscription %s opens again: delivering",
            slot->sub.id);
  if (slot->secret_ok) slot->secret_logged = false;
  if (!slot->secret_bad || slot->secret_logged) return;
  slot->secret_logged = true;
  log_msg(LOG_ERROR,
          "outbound: the signing secret of subscription %s does not open (sealed with a key "
          "ENCRYPTION_KEYS does not hold, or damaged): its deliveries are held, nothing is sent "
          "unsigned; put the key back into ENCRYPTION_KEYS, or delete the subscription and "
          "create it again",
          slot->sub.id);
}

static bool slot_held(const struct sub_slot *s) {
  return s->secret_bad || s->sub.unreadable || s->sub.hold_until_us > 0;
}

/* Publishes which subscriptions are held and why (outbound_sub_held, outbound_held): one reason
 * as GET shows it (a URL or account that does not open first), and a stored Retry-After hold,
 * which the store reads only while it is still to come. */
static void held_publish(struct outbound *o) {
  size_t n = 0;
  for (size_t i = 0; i < o->nsubs; i++) n += slot_held(&o->subs[i]);
  struct held_entry *held = n ? calloc(n, sizeof *held) : NULL;
  if (n && !held) return; /* keeps the last list */
  for (size_t i = 0, k = 0; i < o->nsubs; i++) {
    const struct sub_slot *s = &o->subs[i];
    if (!slot_held(s)) continue;
    struct held_reason *h = &held[k].shown;
    memcpy(h->id, s->sub.id, sizeof h->id);
    h->sealed_unreadable = s->sub.unreadable;
    h->secret_unreadable = !s->sub.unreadable && s->secret_bad;
    h->until_us = s->sub.hold_until_us > 0 ? s->sub.hold_until_us : 0;
    held[k].secret_bad = s->secret_bad;
    k++;
  }
  pthread_mutex_lock(&o->held_mu);
  free(o->held);
  o->held = held;
  o->nheld = n;
  pthread_mutex_unlock(&o->held_mu);
}

bool outbound_sub_held(struct outbound *o, const char *id) {
  if (!o) return false;
  bool held = false;
  pthread_mutex_lock(&o->held_mu);
  /* the secret alone: GET asks only when the store read the URL and account (heldReason
   * "sealed_unreadable" comes from that read, not from this list, which can be a second old) */
  for (size_t i = 0; !held && i < o->nheld; i++)
    held = o->held[i].secret_bad && strcmp(o->held[i].shown.id, id) == 0;
  pthread_mutex_unlock(&o->held_mu);
  return held;
}

void outbound_held(struct outbound *o, int64_t now_us, struct outbound_held *out) {
  memset(out, 0, sizeof *out);
  if (!o) return;
  pthread_mutex_lock(&o->held_mu);
  for (size_t i = 0; i < o->nheld; i++) {
    struct held_reason h = o->held[i].shown;
    if (h.until_us <= now_us) h.until_us = 0; /* the hold is over */
    if (!h.sealed_unreadable && !h.secret_unreadable && !h.until_us) continue;
    out->sealed_unreadable += h.sealed_unreadable;
    out->secret_unreadable += h.secret_unreadable;
    out->retry_after += h.until_us > 0;
  }
  pthread_mutex_unlock(&o->held_mu);
}

/* Reads the subscriptions again, keeping each one's throttle state and secret. */
static void subs_refresh(struct outbound *o, double now_ms) {
  struct subscription *list = NULL;
  size_t n = 0;
  enum store_status st = store_sub_list(o->store, &list, &n);
  if (st != STORE_OK) {
    log_msg(LOG_WARNING, "outbound: reading the subscriptions failed (status %d)", (int)st);
    free(list);
    return;
  }
  struct sub_slot *slots = n ? calloc(n, sizeof *slots) : NULL;
  if (n && !slots) {
    free(list);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    struct sub_slot *old = slot_find(o, list[i].id);
    slots[i].sub = list[i];
    /* changed and the store holds it no more (PATCH enabled true lifts the hold): neither
     * does memory */
    if (old && (list[i].hold_until_us > 0 || list[i].updated_us == old->sub.updated_us))
      slots[i].not_before_ms = old->not_before_ms;
    if (old && old->sub.max_per_second == list[i].max_per_second) {
      slots[i].tokens = old->tokens;
      slots[i].refilled_ms = old->refilled_ms;
    } else {
      slots[i].tokens = list[i].max_per_second > 0 ? (double)list[i].max_per_second : 0;
      slots[i].refilled_ms = now_ms;
    }
    slots[i].maybe_due = true;
    slot_secret(o, &slots[i], old);
    /* a URL or account that does not open (store read): held, never "every account" */
    if (list[i].unreadable && !(old && old->sub.unreadable))
      log_msg(LOG_ERROR,
              "outbound: the sealed URL or account of subscription %s does not open (sealed with "
              "a key ENCRYPTION_KEYS does not hold, or damaged): its deliveries are held; put the "
              "key back into ENCRYPTION_KEYS, or replace its url and accountId together (PATCH)",
              list[i].id);
    else if (!list[i].unreadable && old && old->sub.unreadable)
      log_msg(LOG_INFO, "outbound: the URL and account of subscription %s open again: delivering",
              list[i].id);
  }
  for (size_t i = 0; i < o->nsubs; i++)
    memset(o->subs[i].sub.secret, 0, sizeof o->subs[i].sub.secret);
  free(o->subs);
  if (list) memset(list, 0, n * sizeof *list);
  free(list);
  o->subs = slots;
  o->nsubs = n;
  if (o->rotate >= n) o->rotate = 0;
  held_publish(o);
}

static bool sub_active(const struct sub_slot *s) { return s->sub.enabled && !s->sub.paused; }

/* Active, and its deliveries can be signed. */
static bool sub_claimable(const struct sub_slot *s) {
  return sub_active(s) && s->secret_ok && !s->sub.unreadable;
}

/* Deliveries one subscription may have in flight: an equal share of DELIVERY_CONCURRENCY among
 * the active subscriptions (at least 1), so a slow or blackholed receiver cannot hold every
 * slot while the others' transfers come and go. */
static size_t sub_cap(const struct outbound *o) {
  size_t active = 0;
  for (size_t i = 0; i < o->nsubs; i++)
    if (sub_claimable(&o->subs[i])) active++;
  size_t c = o->cfg.concurrency / (active ? active : 1);
  return c ? c : 1;
}

static void tokens_refill(struct sub_slot *s, double now_ms) {
  if (s->sub.max_per_second <= 0) return;
  double cap = (double)s->sub.max_per_second;
  s->tokens += (now_ms - s->refilled_ms) / 1000.0 * cap;
  if (s->tokens > cap) s->tokens = cap;
  s->refilled_ms = now_ms;
}

/* Whether an event can be rendered at all (a known type, a time that can be written): when it
 * cannot, rendering failing is not a lack of memory and trying again cannot help. */
static bool outbox_renderable(const struct store_outbox_event *ev) {
  char ts[40];
  return outbox_type_name(ev->type) && time_format_us(ev->created_us, true, ts, sizeof ts);
}

/* ---- results ---- */

/* An attempt's outcome in the metrics (a release is no attempt). */
static void count_attempt(int outcome) {
  switch (outcome) {
    case DELIVERY_DELIVERED:
      metrics_delivery(METRICS_DELIVERY_DELIVERED);
      break;
    case DELIVERY_RETRY:
      metrics_delivery(METRICS_DELIVERY_RETRYING);
      break;
    case DELIVERY_FAILED:
    case DELIVERY_PAUSED:
      metrics_delivery(METRICS_DELIVERY_FAILED);
      break;
    case DELIVERY_DISABLED:
      metrics_delivery(METRICS_DELIVERY_DISABLED);
      break;
    default:
      break;
  }
}

static void result_push(struct outbound *o, const struct store_delivery_result *r) {
  count_attempt(r->outcome);
  if (o->nresults == o->capresults) {
    size_t cap = o->capresults ? o->capresults * 2 : 64;
    struct store_delivery_result *p = realloc(o->results, cap * sizeof *p);
    if (!p) {
      /* the lease runs out instead: the delivery goes out again (at least once) */
      log_msg(LOG_ERROR, "outbound: out of memory recording a delivery result");
      return;
    }
    o->results = p;
    o->capresults = cap;
  }
  o->results[o->nresults++] = *r;
  if (r->outcome == DELIVERY_RETRY || r->outcome == STORE_DELIVERY_RELEASE)
    if (o->next_due_us == 0 || r->next_at_us < o->next_due_us) o->next_due_us = r->next_at_us;
  struct sub_slot *s = slot_find(o, r->sub_id);
  if (s) s->maybe_due = true; /* the conversation's next event may be due now */
}

/* A result that is not an attempt: the lease is dropped, due again at next_at_us. */
static void release(struct outbound *o, const struct store_delivery_job *job, int64_t next_at_us) {
  const struct store_outbox_event *ev = &job->event;
  struct store_delivery_result r;
  memset(&r, 0, sizeof r);
  snprintf(r.sub_id, sizeof r.sub_id, "%s", job->sub_id);
  r.seq = ev->seq;
  snprintf(r.event_id, sizeof r.event_id, "%s", ev->id);
  r.type = ev->type;
  r.attempt = job->attempt;
  r.lease_token = job->lease_token;
  r.at_us = time_now_us();
  r.outcome = STORE_DELIVERY_RELEASE;
  r.next_at_us = next_at_us;
  result_push(o, &r);
}

/* ---- libcurl callbacks ---- */

static size_t on_body(char *data, size_t size, size_t n, void *cls) {
  struct transfer *t = cls;
  size_t len = size * n;
  if (t->head_len < sizeof t->head) {
    size_t take = sizeof t->head - t->head_len;
    if (take > len) take = len;
    memcpy(t->head + t->head_len, data, take);
    t->head_len += take;
  }
  t->received += len;
  if (t->head_len == sizeof t->head) {
    /* all that is kept has arrived: a slow or huge body cannot turn the status already
     * received into a failure (the transfer ends here; its status counts) */
    t->cut = true;
    return 0;
  }
  return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *cls) {
  struct transfer *t = cls;
  size_t len = size * n;
  if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
    /* a new response (after a 1xx): its own headers only */
    t->retry_after[0] = '\0';
    const char *sp = memchr(data, ' ', len);
    t->ok_ms = sp && (size_t)(sp - data) + 4 <= len && sp[1] == '2' && sp[2] >= '0' &&
                       sp[2] <= '9' && sp[3] >= '0' && sp[3] <= '9'
                   ? time_mono_ms()
                   : 0;
  } else if (len > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
    size_t v = len - 12;
    while (v && (data[12 + v - 1] == '\r' || data[12 + v - 1] == '\n')) v--;
    if (v >= sizeof t->retry_after) v = sizeof t->retry_after - 1;
    memcpy(t->retry_after, data + 12, v);
    t->retry_after[v] = '\0';
  }
  return len;
}

/* A 2xx counts once its status line is in: what follows it (headers, body) is read for
 * ANSWERED_GRACE_MS at most, so a receiver that stalls after saying yes holds neither the slot
 * nor its conversation's next event for the whole timeout (the connection is then closed). */
static int on_progress(void *cls, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
  (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
  struct transfer *t = cls;
  if (t->ok_ms == 0 || time_mono_ms() - t->ok_ms < ANSWERED_GRACE_MS) return 0;
  t->cut = true;
  return 1;
}

/* The SSRF rule on the address actually connected to (after DNS, on every address tried). */
static curl_socket_t on_open_socket(void *cls, curlsocktype purpose, struct curl_sockaddr *a) {
  struct transfer *t = cls;
  if (purpose != CURLSOCKTYPE_IPCXN || outbound_addr_private(&a->addr)) {
    char text[INET6_ADDRSTRLEN] = "?";
    if (a->family == AF_INET)
      inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)&a->addr)->sin_addr, text, sizeof text);
    else if (a->family == AF_INET6)
      inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)&a->addr)->sin6_addr, text, sizeof text);
    snprintf(t->refused, sizeof t->refused, "refused: private address %s", text);
    return CURL_SOCKET_BAD;
  }
  return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* ---- transfers ---- */

/* An ended transfer's easy handle is kept for the next one (up to SPARES_MAX of them, fewer
 * when DELIVERY_CONCURRENCY is lower): a fresh handle costs a dozen allocations, its buffers
 * among them, and the options every delivery shares are set once. Every option that names a
 * transfer's own data is set again by transfer_start; the spares are not in the multi handle.
 * The cap bounds what a burst at a high DELIVERY_CONCURRENCY leaves held afterwards (each spare
 * keeps libcurl's buffers, up to ~64 KiB, and its TLS sessions). */
#define SPARES_MAX 64

static size_t spares_cap(const struct outbound *o) {
  return o->cfg.concurrency < SPARES_MAX ? o->cfg.concurrency : SPARES_MAX;
}

static void easy_release(struct outbound *o, CURL *c, bool reusable) {
  if (!c) return;
  if (reusable && o && o->spare && o->nspare < spares_cap(o))
    o->spare[o->nspare++] = c;
  else
    curl_easy_cleanup(c);
}

static void transfer_free(struct transfer *t) {
  if (!t) return;
  easy_release(t->o, t->easy, t->easy_reusable);
  curl_slist_free_all(t->headers);
  free(t->body);
  free(t);
}

/* Appends "name: value" (or the line name alone when value is NULL). */
static bool add_header(struct curl_slist **list, const char *name, const char *value) {
  char line[256];
  if (value)
    snprintf(line, sizeof line, "%s: %s", name, value);
  else
    snprintf(line, sizeof line, "%s", name);
  struct curl_slist *l = curl_slist_append(*list, line);
  if (!l) return false;
  *list = l;
  return true;
}

/* An easy handle with the options every delivery shares: a spare or a new one; NULL when
 * libcurl refuses. */
static CURL *easy_get(struct outbound *o) {
  if (o->nspare) return o->spare[--o->nspare];
  const struct dispatch_cfg *cfg = &o->cfg;
  CURL *c = curl_easy_init();
  bool ok = c && curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_PROXY, "") == CURLE_OK && /* environment proxies ignored */
            curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, cfg->timeout_ms) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_USERAGENT, "gensendrep/" GSR_VERSION) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_POST, 1L) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress) == CURLE_OK &&
            curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) == CURLE_OK;
  if (ok && !cfg->allow_private)
    ok = curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, on_open_socket) == CURLE_OK;
  if (!ok && c) {
    curl_easy_cleanup(c);
    c = NULL;
  }
  return c;
}

/* Starts delivering job to slot's subscription; false (nothing started, the job released) when
 * it cannot be sent now. */
static bool transfer_start(struct outbound *o, struct sub_slot *slot,
                           struct store_delivery_job *job) {
  const struct dispatch_cfg *cfg = &o->cfg;
  const struct store_outbox_event *ev = &job->event;
  int64_t now_us = time_now_us();
  /* the schedule's first wait counts from the event's creation */
  if (job->attempt <= 1 && cfg->retry_count && cfg->retry[0] > 0) {
    int64_t base = ev->created_us + (int64_t)cfg->retry[0] * 1000000;
    if (now_us < base) {
      int64_t d = outbound_retry_delay_us(cfg->retry, cfg->retry_count, 0, rnd_unit(o));
      release(o, job, ev->created_us + d);
      return false;
    }
  }
  struct transfer *t = calloc(1, sizeof *t);
  if (!t) {
    release(o, job, now_us + 1000000);
    return false;
  }
  t->o = o;
  snprintf(t->res.sub_id, sizeof t->res.sub_id, "%s", job->sub_id);
  t->res.seq = ev->seq;
  snprintf(t->res.event_id, sizeof t->res.event_id, "%s", ev->id);
  t->res.type = ev->type;
  t->res.attempt = job->attempt;
  t->res.lease_token = job->lease_token;
  t->res.at_us = now_us;
  t->res.first_attempt_us = job->first_attempt_us ? job->first_attempt_us : now_us;
  t->body = outbox_event_render(ev->type, ev->id, ev->created_us, ev->data ? ev->data : "null",
                                ev->data ? ev->data_len : 4, &t->body_len);
  /* the body holds it now: the event's data need not wait for the whole claim */
  free(job->event.data);
  job->event.data = NULL;
  job->event.data_len = 0;
  char sig[128], ts[32];
  snprintf(ts, sizeof ts, "%lld", (long long)(now_us / 1000000));
  bool signed_ok = t->body && outbound_sign(slot->sub.secret, ev->id, now_us / 1000000, t->body,
                                            t->body_len, sig, sizeof sig);
  if (!t->body || !signed_ok) {
    /* a secret that does not decode is not the receiver's fault, but nothing can be sent:
     * recorded as a failed attempt so it shows, retried on the schedule */
    struct store_delivery_result r = t->res;
    snprintf(r.response_head, sizeof r.response_head, "%s",
             t->body                 ? "not sent: the subscription's secret is malformed"
             : outbox_renderable(ev) ? "not sent: no memory"
                                     : "not sent: the event cannot be rendered (unknown type)");
    int64_t d = outbound_retry_delay_us(cfg->retry, cfg->retry_count, job->attempt, rnd_unit(o));
    r.outcome = d < 0 ? DELIVERY_FAILED : DELIVERY_RETRY;
    r.next_at_us = now_us + (d < 0 ? 0 : d);
    result_push(o, &r);
    transfer_free(t);
    return false;
  }
  bool ok = add_header(&t->headers, "Content-Type", "application/json") &&
            add_header(&t->headers, "webhook-id", ev->id) &&
            add_header(&t->headers, "webhook-timestamp", ts) &&
            add_header(&t->headers, "webhook-signature", sig) &&
            add_header(&t->headers, "Expect:", NULL) && (t->easy = easy_get(o)) != NULL;
  CURL *c = t->easy;
  /* every option that names this transfer's own data, set again on a reused handle */
  ok = ok && curl_easy_setopt(c, CURLOPT_URL, slot->sub.url) == CURLE_OK &&
       curl_easy_setopt(c, CURLOPT_HTTPHEADER, t->headers) == CURLE_OK &&
       curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->body_len) == CURLE_OK &&
       curl_easy_setopt(c, CURLOPT_POSTFIELDS, t->body) == CURLE_OK &&
       curl_easy_setopt(c, CURLOPT_WRITEDATA, t) == CURLE_OK &&
       curl_easy_setopt(c, CURLOPT_HEADERDATA, t) == CURLE_OK &&
       curl_easy_setopt(c, CURLOPT_XFERINFODATA, t) == CURLE_OK &&
       curl_easy_setopt(c, CURLOPT_ERRORBUFFER, t->errbuf) == CURLE_OK &&
       curl_easy_setopt(c, CURLOPT_PRIVATE, t) == CURLE_OK &&
       curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, t) == CURLE_OK;
  t->easy_reusable = ok;
  if (!ok || curl_multi_add_handle(o->multi, c) != CURLM_OK) {
    t->easy_reusable = false; /* whatever libcurl disliked is not handed to the next one */
    log_msg(LOG_ERROR, "outbound: libcurl refused a delivery (subscription %s)", job->sub_id);
    release(o, job, now_us + 1000000);
    transfer_free(t);
    return false;
  }
  t->started_ms = time_mono_ms();
  t->next = o->inflight;
  if (o->inflight) o->inflight->prev = t;
  o->inflight = t;
  o->ninflight++;
  o->inflight_bytes += t->body_len;
  return true;
}

static void transfer_unlink(struct outbound *o, struct transfer *t) {
  if (t->prev)
    t->prev->next = t->next;
  else
    o->inflight = t->next;
  if (t->next) t->next->prev = t->prev;
  o->ninflight--;
  o->inflight_bytes -= t->body_len;
  curl_multi_remove_handle(o->multi, t->easy);
}

/* The answer's first bytes as text a database can hold: valid UTF-8, no NUL. */
static void head_text(const struct transfer *t, char *out, size_t cap) {
  char raw[OUTBOX_RESPONSE_HEAD_MAX];
  for (size_t i = 0; i < t->head_len; i++) raw[i] = t->head[i] ? t->head[i] : ' ';
  utf8_sanitize(out, cap, raw, t->head_len);
}

/* Classifies an ended transfer into its result. */
static void transfer_done(struct outbound *o, struct transfer *t, CURLcode rc) {
  const struct dispatch_cfg *cfg = &o->cfg;
  struct store_delivery_result r = t->res;
  int64_t now_us = time_now_us();
  r.latency_ms = (int64_t)(time_mono_ms() - t->started_ms + 0.5);
  long code = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &code);
  /* a 2xx whose status line arrived is a success whatever its body does afterwards (slow,
   * cut, reset) */
  bool answered =
      code >= 200 && code <= 599 &&
      (rc == CURLE_OK || ((rc == CURLE_WRITE_ERROR || rc == CURLE_ABORTED_BY_CALLBACK) && t->cut) ||
       (code <= 299 && (rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_PARTIAL_FILE ||
                        rc == CURLE_RECV_ERROR || rc == CURLE_GOT_NOTHING)));
  if (answered) {
    r.status_code = (int)code;
    head_text(t, r.response_head, sizeof r.response_head);
  } else if (*t->refused) {
    snprintf(r.response_head, sizeof r.response_head, "%s", t->refused);
  } else if (rc == CURLE_OPERATION_TIMEDOUT) {
    snprintf(r.response_head, sizeof r.response_head, "timeout");
  } else if (rc == CURLE_OK) { /* an answer whose status is no HTTP status */
    snprintf(r.response_head, sizeof r.response_head,
             "answered status %ld: not a final HTTP answer (200-599)", code);
  } else {
    const char *prefix = rc == CURLE_COULDNT_CONNECT        ? "refused: "
                         : rc == CURLE_COULDNT_RESOLVE_HOST ? "dns: "
                                                            : "";
    const char *why = *t->errbuf ? t->errbuf : curl_easy_strerror(rc);
    char msg[OUTBOX_RESPONSE_HEAD_MAX + 1];
    size_t pl = strlen(prefix), wl = strnlen(why, sizeof msg - 1 - pl);
    memcpy(msg, prefix, pl);
    memcpy(msg + pl, why, wl);
    utf8_sanitize(r.response_head, sizeof r.response_head, msg, pl + wl);
  }
  if (answered && code >= 200 && code <= 299) {
    r.outcome = DELIVERY_DELIVERED;
    r.next_at_us = now_us;
  } else if (answered && code == 410) {
    r.outcome = DELIVERY_DISABLED; /* the store disables the subscription; the event waits */
    r.next_at_us = now_us;
  } else {
    int64_t d = outbound_retry_delay_us(cfg->retry, cfg->retry_count, r.attempt, rnd_unit(o));
    int64_t ra = -1;
    if (answered && (code == 429 || code == 503) && *t->retry_after)
      ra = outbound_retry_after(t->retry_after, now_us / 1000000, cfg->retry_after_cap_s);
    if (ra > 0) {
      /* the receiver asked for a pause: none of the subscription's deliveries before then, on
       * any instance, after a restart too (the store keeps it with the subscription); the
       * slot's copy spares this instance the claims that would come back empty */
      r.hold_us = ra * 1000000;
      struct sub_slot *s = slot_find(o, r.sub_id);
      if (s) {
        double until = time_mono_ms() + (double)ra * 1000.0;
        if (until > s->not_before_ms) s->not_before_ms = until;
      }
    }
    if (d < 0) {
      /* exhausted: the store dead-letters it or pauses the subscription */
      r.outcome = DELIVERY_FAILED;
      r.next_at_us = now_us;
    } else {
      /* Retry-After only ever lengthens the schedule's wait (a short one must not use the
       * schedule up in seconds); it is capped at the schedule's longest wait */
      if (ra >= 0 && ra * 1000000 > d) d = ra * 1000000;
      r.outcome = DELIVERY_RETRY;
      r.next_at_us = now_us + d;
    }
  }
  if (r.outcome != DELIVERY_DELIVERED)
    log_msg(LOG_DEBUG, "outbound: %s to %s attempt %d: %d %s", r.event_id, r.sub_id, r.attempt,
            r.status_code, delivery_outcome_name(r.outcome));
  result_push(o, &r);
}

static void transfers_collect(struct outbound *o) {
  int running = 0, left = 0;
  curl_multi_perform(o->multi, &running);
  CURLMsg *m;
  while ((m = curl_multi_info_read(o->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    char *priv = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
    struct transfer *t = (struct transfer *)(void *)priv;
    CURLcode rc = m->data.result;
    if (!t) continue;
    transfer_unlink(o, t); /* m is invalid from here */
    transfer_done(o, t, rc);
    transfer_free(t);
  }
}

/* Stop: whatever is still in flight is given up and released (sent again after a start). */
static void transfers_abandon(struct outbound *o) {
  while (o->inflight) {
    struct transfer *t = o->inflight;
    transfer_unlink(o, t);
    struct store_delivery_result r = t->res;
    r.outcome = STORE_DELIVERY_RELEASE;
    r.next_at_us = time_now_us();
    result_push(o, &r);
    transfer_free(t);
  }
}

/* Counts each subscription's deliveries in flight. */
static void inflight_count(struct outbound *o) {
  for (size_t i = 0; i < o->nsubs; i++) o->subs[i].inflight = 0;
  for (struct transfer *t = o->inflight; t; t = t->next) {
    struct sub_slot *s = slot_find(o, t->res.sub_id);
    if (s) s->inflight++;
  }
}

/* ---- one round with the store ---- */

struct round {
  bool fanout, prune, claim;
};

/* FINISH what ended, then FANOUT, CLAIM and PRUNE as asked, all in one batch. Returns whether
 * a fan-out filled its limit (more may be waiting). */
static bool store_round(struct outbound *o, const struct round *want, double now_ms,
                        bool *prune_more) {
  const struct dispatch_cfg *cfg = &o->cfg;
  struct batch b;
  memset(&b, 0, sizeof b);
  b.cap = 3 + o->nsubs;
  b.w = calloc(b.cap, sizeof *b.w);
  b.work = calloc(b.cap, sizeof *b.work);
  struct sub_slot **claim_slot = calloc(o->nsubs + 1, sizeof *claim_slot);
  size_t *claim_work = calloc(o->nsubs + 1, sizeof *claim_work);
  if (!b.w || !b.work || !claim_slot || !claim_work) {
    free(claim_slot);
    free(claim_work);
    batch_free(&b);
    return false;
  }
  struct store_outbox_work *finish = NULL, *fanout = NULL, *prune = NULL;
  if (o->nresults) {
    finish = batch_add(&b, STORE_OUTBOX_FINISH);
    finish->results = o->results;
    finish->nresults = o->nresults;
  }
  if (want->fanout) {
    fanout = batch_add(&b, STORE_OUTBOX_FANOUT);
    fanout->limit = FANOUT_LIMIT;
  }
  if (want->prune) {
    prune = batch_add(&b, STORE_OUTBOX_PRUNE);
    prune->limit = PRUNE_LIMIT;
    prune->before_us = time_now_us() - (int64_t)cfg->retention_days * 86400 * 1000000;
    /* a broker cursor no instance has read, advanced or kept for as long (QUEUE_URL removed
     * from every instance) no longer holds back every later event */
    prune->stale_before_us = prune->before_us;
  }
  /* claims: subscriptions in turn from o->rotate, each within its bucket and the free slots */
  size_t nclaims = 0, k = 0;
  size_t free_slots = cfg->concurrency > o->ninflight ? cfg->concurrency - o->ninflight : 0;
  /* memory: while the bodies in flight hold INFLIGHT_BYTES_MAX, nothing more is claimed (each
   * claim itself reads at most ~16 MiB of event data: the store bounds it) */
  if (o->inflight_bytes >= INFLIGHT_BYTES_MAX) free_slots = 0;
  size_t cap = sub_cap(o);
  inflight_count(o);
  for (; want->claim && k < o->nsubs && free_slots > 0; k++) {
    struct sub_slot *s = &o->subs[(o->rotate + k) % o->nsubs];
    if (!sub_claimable(s) || !(s->maybe_due || want->fanout)) continue;
    if (now_ms < s->not_before_ms || s->inflight >= cap) continue;
    tokens_refill(s, now_ms);
    int64_t limit = (int64_t)free_slots;
    if (limit > (int64_t)(cap - s->inflight)) limit = (int64_t)(cap - s->inflight);
    if (limit > CLAIM_MAX) limit = CLAIM_MAX;
    if (s->sub.max_per_second > 0 && (int64_t)s->tokens < limit) limit = (int64_t)s->tokens;
    if (limit <= 0) continue;
    struct store_outbox_work *w = batch_add(&b, STORE_OUTBOX_CLAIM);
    if (!w) break;
    w->sub_id = s->sub.id;
    w->limit = limit;
    w->lease_us = cfg->lease_us;
    claim_slot[nclaims] = s;
    claim_work[nclaims] = b.n - 1;
    nclaims++;
    free_slots -= (size_t)limit;
  }
  if (o->nsubs) o->rotate = (o->rotate + (k ? k : 1)) % o->nsubs;
  if (b.n == 0) {
    free(claim_slot);
    free(claim_work);
    batch_free(&b);
    return false;
  }
  batch_run(o->store, &b);
  bool more = false;
  if (finish) {
    if (b.w[0].status == STORE_OK) {
      o->nresults = 0;
    } else if (b.w[0].status != STORE_RETRY) {
      /* never accepted: the leases run out and the deliveries go out again */
      log_msg(LOG_ERROR, "outbound: recording %zu delivery results failed (status %d)", o->nresults,
              (int)b.w[0].status);
      o->nresults = 0;
    } else {
      log_msg(LOG_WARNING, "outbound: recording delivery results failed; trying again");
      o->finish_again_ms = time_mono_ms() + 200;
    }
  }
  for (size_t i = 0; i < b.n; i++) {
    struct store_outbox_work *w = &b.work[i];
    enum store_status st = b.w[i].status;
    if (w == fanout) {
      if (st == STORE_OK && w->added > 0)
        for (size_t j = 0; j < o->nsubs; j++) o->subs[j].maybe_due = true;
      if (st == STORE_OK && w->added >= FANOUT_LIMIT) more = true;
      o->fanout_failed = st != STORE_OK; /* tried again at the next tick */
      if (st != STORE_OK) log_msg(LOG_WARNING, "outbound: fan-out failed (status %d)", (int)st);
    } else if (w == prune) {
      *prune_more = st == STORE_OK && w->added >= PRUNE_LIMIT;
      if (st != STORE_OK) log_msg(LOG_WARNING, "outbound: prune failed (status %d)", (int)st);
      /* once an hour at most: prune runs every minute while the cursor stays behind */
      if (st == STORE_OK && w->stale > 0 &&
          (o->stale_logged_ms == 0 || now_ms - o->stale_logged_ms >= STALE_LOG_EVERY_MS)) {
        o->stale_logged_ms = now_ms;
        log_msg(LOG_WARNING,
                "outbound: %lld broker cursor(s) untouched for OUTBOX_RETENTION_DAYS (%lld days: "
                "QUEUE_URL removed from every instance) no longer hold back "
                "prune: events older than that are erased before such a broker got them",
                (long long)w->stale, (long long)cfg->retention_days);
      }
    }
  }
  for (size_t i = 0; i < nclaims; i++) {
    struct sub_slot *s = claim_slot[i];
    size_t idx = claim_work[i];
    struct store_outbox_work *w = &b.work[idx];
    if (b.w[idx].status != STORE_OK) {
      log_msg(LOG_WARNING, "outbound: claiming deliveries for %s failed (status %d)", s->sub.id,
              (int)b.w[idx].status);
      s->maybe_due = false; /* the next tick tries again, not a tight loop */
      continue;
    }
    if ((int64_t)w->count < w->limit) s->maybe_due = false;
    if (s->sub.max_per_second > 0) s->tokens -= (double)w->count;
    for (size_t j = 0; j < w->count; j++)
      if (!transfer_start(o, s, &w->jobs[j]) && s->sub.max_per_second > 0) s->tokens += 1;
    store_jobs_free(w);
  }
  free(claim_slot);
  free(claim_work);
  batch_free(&b);
  return more;
}

/* How long the loop may sleep (ms) before something is due. */
static long sleep_ms(struct outbound *o, double now_ms, double next_tick_ms, bool busy) {
  if (busy || (o->nresults && now_ms >= o->finish_again_ms)) return 0;
  double wait = next_tick_ms - now_ms;
  if (o->nresults && o->finish_again_ms - now_ms < wait) wait = o->finish_again_ms - now_ms;
  if (o->next_due_us) {
    double due = (double)(o->next_due_us - time_now_us()) / 1000.0;
    if (due < wait) wait = due;
  }
  bool room = o->cfg.concurrency > o->ninflight && o->inflight_bytes < INFLIGHT_BYTES_MAX;
  size_t cap = sub_cap(o);
  inflight_count(o);
  for (size_t i = 0; room && i < o->nsubs; i++) {
    struct sub_slot *s = &o->subs[i];
    if (!sub_claimable(s) || !s->maybe_due || s->inflight >= cap) continue;
    if (s->not_before_ms > now_ms) {
      if (s->not_before_ms - now_ms < wait) wait = s->not_before_ms - now_ms;
      continue;
    }
    if (s->sub.max_per_second <= 0) return 0;
    tokens_refill(s, now_ms);
    double need = s->tokens >= 1 ? 0 : (1 - s->tokens) * 1000.0 / (double)s->sub.max_per_second;
    if (need < wait) wait = need;
  }
  if (wait < 0) wait = 0;
  if (wait > TICK_MS) wait = TICK_MS;
  return (long)wait + (wait > (double)(long)wait ? 1 : 0);
}

static bool any_active(const struct outbound *o) {
  for (size_t i = 0; i < o->nsubs; i++)
    if (sub_active(&o->subs[i])) return true;
  return false;
}

/* An idle service without active subscriptions sends the database nothing: a database restart
 * while idle then costs nothing (no failed read, no reconnect pause for the requests that
 * follow). Subscriptions are read again when this instance changed one (outbound_wake), when
 * events were committed here (the database is up then), and every second while one is active
 * (deliveries due, changes by other instances). */
static void *sub_main(void *cls) {
  struct outbound *o = cls;
  double next_tick = 0, next_prune = time_mono_ms() + PRUNE_EVERY_MS, stop_deadline = 0;
  bool fanout_more = false, prune_more = false, first = true, activity = true;
  for (;;) {
    double now = time_mono_ms();
    bool stopping = atomic_load(&o->stop);
    if (stopping) {
      if (stop_deadline == 0) stop_deadline = now + STOP_GRACE_MS;
      if (now >= stop_deadline) transfers_abandon(o);
      if (!o->inflight) {
        struct round none = {false, false, false};
        bool ignored = false;
        for (int tries = 0; o->nresults && tries < 3; tries++) store_round(o, &none, now, &ignored);
        break;
      }
    }
    struct round want = {false, false, !stopping};
    if (!stopping) {
      bool tick = now >= next_tick;
      if (tick) next_tick = now + TICK_MS;
      bool woken = atomic_exchange(&o->woken, false);
      bool notified = atomic_exchange(&o->notified, false);
      bool active = any_active(o);
      if (notified) activity = true;
      if (first || woken || (notified && !active) || (tick && active)) {
        subs_refresh(o, now);
        active = any_active(o);
      }
      want.fanout = o->nsubs > 0 && (first || woken || notified || fanout_more ||
                                     (tick && (active || o->fanout_failed)));
      first = false;
      if (o->next_due_us && time_now_us() >= o->next_due_us) {
        o->next_due_us = 0;
        for (size_t i = 0; i < o->nsubs; i++) o->subs[i].maybe_due = true;
      }
      /* housekeeping only after something happened since the last one */
      if ((now >= next_prune && activity) || prune_more) {
        want.prune = true;
        next_prune = now + PRUNE_EVERY_MS;
        activity = o->inflight != NULL || o->nresults > 0;
      }
    }
    bool pm = false;
    if (o->nresults) activity = true;
    fanout_more = store_round(o, &want, now, &pm);
    prune_more = pm;
    transfers_collect(o);
    now = time_mono_ms();
    long ms = stopping ? 50 : sleep_ms(o, now, next_tick, fanout_more || prune_more);
    if (ms > 0) {
      curl_multi_poll(o->multi, NULL, 0, (int)ms, NULL);
      transfers_collect(o);
    }
  }
  return NULL;
}

/* ---- the broker ---- */

/* Sleeps up to ms, or until stopped; wake_on_kick: also when the store reports events. */
static void queue_sleep(struct outbound *o, long ms, bool wake_on_kick) {
  struct timespec until; /* queue_cv waits on CLOCK_MONOTONIC: a clock step changes nothing */
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&o->queue_mu);
  while (!atomic_load(&o->stop) && !(wake_on_kick && o->queue_kick))
    if (pthread_cond_timedwait(&o->queue_cv, &o->queue_mu, &until) != 0) break;
  if (wake_on_kick) o->queue_kick = false;
  pthread_mutex_unlock(&o->queue_mu);
}

static enum store_status queue_work(struct store *s, struct store_outbox_work *w) {
  struct store_write wr;
  memset(&wr, 0, sizeof wr);
  wr.kind = STORE_WRITE_OUTBOX;
  wr.outbox = w;
  wr.audio_fd = -1;
  wr.event_audio_at = -1;
  w->now_us = time_now_us();
  store_submit_wait(s, &wr);
  return wr.status;
}

/* The stand-in published for an event larger than the broker takes (NATS max_payload): the
 * same id and type, and data naming the conversation and where to read what the event held (its
 * id escaped as one path segment, as the audio URL is; with the transcript, as the event's data
 * has it). */
static char *oversize_stand_in(const struct store_outbox_event *ev, size_t *len) {
  static const char hex[] = "0123456789ABCDEF", query[] = "?include=transcript";
  char url[sizeof "/api/v1/conversations/" + 3 * sizeof ev->conversation_id + sizeof query];
  size_t n = (size_t)snprintf(url, sizeof url, "/api/v1/conversations/");
  for (const unsigned char *p = (const unsigned char *)ev->conversation_id; *p; p++) {
    if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
        *p == '-' || *p == '.' || *p == '_' || *p == '~') {
      url[n++] = (char)*p;
    } else {
      url[n++] = '%';
      url[n++] = hex[*p >> 4];
      url[n++] = hex[*p & 15];
    }
  }
  memcpy(url + n, query, sizeof query);
  json_t *o =
      json_pack("{s:s,s:b,s:s}", "conversationId", ev->conversation_id, "truncated", 1, "url", url);
  char *data = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!data) return NULL;
  char *text = outbox_event_render(ev->type, ev->id, ev->created_us, data, strlen(data), len);
  free(data);
  return text;
}

static void *queue_main(void *cls) {
  struct outbound *o = cls;
  bool down_logged = false;
  double kept_ms = 0;
  while (!atomic_load(&o->stop)) {
    /* While the broker is down, a probe (at most one connection attempt a second) comes before
     * reading the outbox: an outage costs no reads, and is logged once (queue.c). Once a minute
     * the cursor is kept (touched, not moved; created when the broker was never reached): a
     * broker this instance is configured with holds its events back from prune however long it
     * is down. */
    if (!queue_connected(o->queue)) {
      (void)queue_publish(o->queue, NULL, 0);
      if (!queue_connected(o->queue)) {
        double now = time_mono_ms();
        if (kept_ms == 0 || now - kept_ms >= QUEUE_KEEP_MS) {
          struct store_outbox_work keep;
          memset(&keep, 0, sizeof keep);
          keep.op = STORE_OUTBOX_QUEUE_ADVANCE;
          keep.cursor_name = OUTBOUND_QUEUE_CURSOR;
          keep.upto_seq = 0;
          if (queue_work(o->store, &keep) == STORE_OK) kept_ms = now;
        }
        queue_sleep(o, QUEUE_BACKOFF_MS, false);
        continue;
      }
    }
    struct store_outbox_work rd;
    memset(&rd, 0, sizeof rd);
    rd.op = STORE_OUTBOX_QUEUE_READ;
    rd.cursor_name = OUTBOUND_QUEUE_CURSOR;
    rd.limit = QUEUE_BATCH;
    rd.lease_us = QUEUE_LEASE_US;
    enum store_status st = queue_work(o->store, &rd);
    if (st != STORE_OK || rd.busy) {
      if (st != STORE_OK)
        log_msg(LOG_WARNING, "outbound: reading the outbox for the broker failed (status %d)",
                (int)st);
      store_jobs_free(&rd);
      if (st == STORE_OK) (void)queue_publish(o->queue, NULL, 0); /* health: a probe */
      queue_sleep(o, QUEUE_BACKOFF_MS, false);
      continue;
    }
    if (rd.count == 0) {
      store_jobs_free(&rd);
      /* Nothing to publish: a probe, so health shows the broker as it is (connected once
       * reachable, disconnected when it went away), not as the last publish left it. */
      (void)queue_publish(o->queue, NULL, 0);
      queue_sleep(o, TICK_MS, true);
      continue;
    }
    size_t n = rd.count;
    struct queue_msg *msgs = calloc(n, sizeof *msgs);
    char **texts = calloc(n, sizeof *texts);
    size_t *at = calloc(n, sizeof *at); /* msgs[k] is rd.events[at[k]] */
    size_t nmsgs = 0, taken = 0, bytes = 0;
    size_t max = queue_max_message(o->queue);
    bool oom = !msgs || !texts || !at;
    /* Renders in order up to ~QUEUE_BATCH_BYTES (at least one event); each event's data is
     * freed once rendered. An event that cannot be rendered (a type this version does not
     * know) is skipped with an error and the cursor moves past it. */
    for (; !oom && taken < n; taken++) {
      struct store_outbox_event *ev = &rd.events[taken];
      if (nmsgs && bytes + ev->data_len > QUEUE_BATCH_BYTES) break;
      size_t len = 0;
      char *text =
          outbox_event_render(ev->type, ev->id, ev->created_us, ev->data ? ev->data : "null",
                              ev->data ? ev->data_len : 4, &len);
      if (!text && outbox_renderable(ev)) {
        oom = true;
        break;
      }
      if (!text) {
        log_msg(LOG_ERROR,
                "outbound: event %s (type %d) cannot be rendered; not published to the broker",
                ev->id, ev->type);
      } else if (max && len > max) {
        size_t full = len;
        char *stand_in = oversize_stand_in(ev, &len);
        if (!stand_in) {
          free(text);
          oom = true;
          break;
        }
        log_msg(LOG_WARNING,
                "outbound: event %s (%zu bytes) is larger than the broker takes (%zu); "
                "published truncated, with the conversation's URL",
                ev->id, full, max);
        free(text);
        text = stand_in;
      }
      bytes += ev->data_len;
      free(ev->data);
      ev->data = NULL;
      ev->data_len = 0;
      if (!text) continue;
      texts[nmsgs] = text;
      at[nmsgs] = taken;
      msgs[nmsgs].id = ev->id;
      msgs[nmsgs].type = outbox_type_name(ev->type);
      msgs[nmsgs].json = text;
      msgs[nmsgs].len = len;
      nmsgs++;
    }
    size_t acked = nmsgs ? queue_publish(o->queue, msgs, nmsgs) : 0;
    /* the cursor moves past every event before the first one not acknowledged (skipped ones
     * included) */
    size_t upto = acked == nmsgs ? taken : at[acked];
    if (upto > 0) {
      struct store_outbox_work adv;
      memset(&adv, 0, sizeof adv);
      adv.op = STORE_OUTBOX_QUEUE_ADVANCE;
      adv.cursor_name = OUTBOUND_QUEUE_CURSOR;
      adv.upto_seq = rd.events[upto - 1].seq;
      st = queue_work(o->store, &adv);
      if (st != STORE_OK)
        log_msg(LOG_WARNING, "outbound: moving the broker cursor failed (status %d)", (int)st);
    }
    for (size_t i = 0; i < nmsgs; i++) free(texts[i]);
    free(texts);
    free(msgs);
    free(at);
    store_jobs_free(&rd);
    if (oom) log_msg(LOG_ERROR, "outbound: out of memory rendering events for the broker");
    if (acked < nmsgs || oom) {
      char why[160];
      queue_last_error(o->queue, why, sizeof why);
      /* once per outage at WARNING; repeats (one a second at most) at DEBUG */
      log_msg(down_logged ? LOG_DEBUG : LOG_WARNING,
              "outbound: the broker took %zu of %zu events (%s); again in 1 s", acked, nmsgs,
              *why ? why : "no reason given");
      down_logged = true;
      queue_sleep(o, QUEUE_BACKOFF_MS, false);
    } else {
      down_logged = false;
    }
  }
  return NULL;
}

/* ---- start, stop, status ---- */

static void outbound_free(struct outbound *o) {
  if (!o) return;
  while (o->inflight) {
    struct transfer *t = o->inflight;
    transfer_unlink(o, t);
    transfer_free(t);
  }
  while (o->nspare) curl_easy_cleanup(o->spare[--o->nspare]);
  free(o->spare);
  if (o->queue) queue_close(o->queue);
  if (o->multi) curl_multi_cleanup(o->multi);
  for (size_t i = 0; i < o->nsubs; i++)
    memset(o->subs[i].sub.secret, 0, sizeof o->subs[i].sub.secret);
  free(o->subs);
  free(o->results);
  free(o->held);
  pthread_mutex_destroy(&o->held_mu);
  pthread_cond_destroy(&o->queue_cv);
  pthread_mutex_destroy(&o->queue_mu);
  free(o);
}

struct outbound *outbound_start(const struct config *cfg, struct store *s, char *err,
                                size_t errlen) {
  struct outbound *o = calloc(1, sizeof *o);
  if (!o) {
    snprintf(err, errlen, "outbound: out of memory");
    return NULL;
  }
  dispatch_cfg_copy(&o->cfg, cfg); /* the threads read only this copy */
  o->store = s;
  pthread_mutex_init(&o->queue_mu, NULL);
  pthread_mutex_init(&o->held_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&o->queue_cv, &ca);
  pthread_condattr_destroy(&ca);
  if (!crypto_random((unsigned char *)&o->rng, sizeof o->rng) || o->rng == 0)
    o->rng = (uint64_t)time_now_us() | 1;
  o->multi = curl_multi_init();
  o->spare = calloc(spares_cap(o), sizeof *o->spare);
  if (!o->multi || !o->spare) {
    snprintf(err, errlen, "outbound: libcurl could not make a multi handle");
    outbound_free(o);
    return NULL;
  }
  curl_multi_setopt(o->multi, CURLMOPT_MAXCONNECTS, cfg->delivery_concurrency);
  if (*cfg->queue_url) {
    char qerr[256] = "";
    o->queue = queue_open(cfg->queue_url, cfg->queue_stream, cfg->queue_maxlen, QUEUE_TIMEOUT_MS,
                          qerr, sizeof qerr);
    if (!o->queue) {
      /* queue_open names the variable itself (QUEUE_URL or QUEUE_STREAM) */
      snprintf(err, errlen, "%s", *qerr ? qerr : "QUEUE_URL: cannot be used");
      outbound_free(o);
      return NULL;
    }
  }
  live_add(o);
  if (s->ops->set_outbox_notify) s->ops->set_outbox_notify(s, on_outbox_notify, o);
  if (pthread_create(&o->sub_thread, NULL, sub_main, o) != 0) {
    snprintf(err, errlen, "outbound: cannot start the delivery thread");
    outbound_stop(o);
    return NULL;
  }
  pthread_setname_np(o->sub_thread, "gsr-deliver");
  o->sub_started = true;
  if (o->queue) {
    if (pthread_create(&o->queue_thread, NULL, queue_main, o) != 0) {
      snprintf(err, errlen, "outbound: cannot start the broker thread");
      outbound_stop(o);
      return NULL;
    }
    pthread_setname_np(o->queue_thread, "gsr-publish");
    o->queue_started = true;
  }
  log_msg(LOG_INFO, "outbound: delivering the outbox (concurrency %ld, timeout %ld s%s%s)",
          cfg->delivery_concurrency, cfg->delivery_timeout, o->queue ? ", broker " : "",
          o->queue ? queue_kind(o->queue) : "");
  return o;
}

void outbound_stop(struct outbound *o) {
  if (!o) return;
  live_remove(o); /* the store's writer may notify until store_close: it reaches nothing now */
  atomic_store(&o->stop, true);
  curl_multi_wakeup(o->multi);
  pthread_mutex_lock(&o->queue_mu);
  pthread_cond_broadcast(&o->queue_cv);
  pthread_mutex_unlock(&o->queue_mu);
  if (o->sub_started) pthread_join(o->sub_thread, NULL);
  if (o->queue_started) pthread_join(o->queue_thread, NULL);
  outbound_free(o);
}

void outbound_status(const struct outbound *o, struct outbound_status *out) {
  memset(out, 0, sizeof *out);
  if (!o) return;
  out->queue_configured = o->queue != NULL;
  if (!o->queue) return;
  out->queue_connected = queue_connected(o->queue);
  out->queue_kind = queue_kind(o->queue);
  queue_last_error(o->queue, out->queue_error, sizeof out->queue_error);
}
