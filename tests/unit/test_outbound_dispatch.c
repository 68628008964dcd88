/* Unit tests for the dispatcher's thread (outbound/outbound.c) against a fake store that keeps
 * deliveries in memory and a real HTTP receiver on 127.0.0.1 in this process: deliveries arrive
 * signed (checked with sig/'s Standard Webhooks verifier), answers are classified (2xx, 410,
 * 429/503 with Retry-After, 500, exhausted schedule), a timeout and the SSRF refusal on the
 * connected address are recorded as attempts, maxPerSecond throttles, and a stop releases what
 * is still in flight. The store's own rules (ordering, pause, dead letter) are the conformance
 * suite's; the black-box tests cover both together. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "core/timeutil.h"
#include "core/version.h"
#include "outbound/outbound.h"
#include "sig/sig.h"

#define SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define MAXD 32

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* ---- the threads the dispatcher starts ----
 * pthread_create is wrapped at link time (Makefile UNIT_LDFLAGS_test_outbound_dispatch): a test
 * can make one creation fail, and the threads the test's own thread started (outbound_start's;
 * the receiver's connection threads are the receiver's) are counted until their function
 * returns, so a test sees that outbound_stop, and a start that fails, leave none running. */
int __real_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);

static pthread_t main_thread;
static atomic_int easy_inits;  /* curl_easy_init calls: the easy handles the dispatcher made */
static atomic_int creates;     /* creations from the test's thread since the last reset */
static atomic_int fail_create; /* creation number (1-based) that fails with EAGAIN; 0: none */
static atomic_int alive;       /* threads the test's thread started whose function runs */

struct trampoline {
  void *(*fn)(void *);
  void *arg;
};

static void *trampoline_main(void *cls) {
  struct trampoline t = *(struct trampoline *)cls;
  free(cls);
  void *ret = t.fn(t.arg);
  atomic_fetch_sub(&alive, 1);
  return ret;
}

int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg) {
  if (!pthread_equal(pthread_self(), main_thread)) return __real_pthread_create(th, attr, fn, arg);
  if (atomic_fetch_add(&creates, 1) + 1 == atomic_load(&fail_create)) return EAGAIN;
  struct trampoline *t = malloc(sizeof *t);
  if (!t) return EAGAIN;
  t->fn = fn;
  t->arg = arg;
  atomic_fetch_add(&alive, 1);
  int rc = __real_pthread_create(th, attr, trampoline_main, t);
  if (rc != 0) {
    atomic_fetch_sub(&alive, 1);
    free(t);
  }
  return rc;
}

/* curl_easy_init is wrapped too (same Makefile line): a test sees how many easy handles the
 * deliveries took, i.e. that one handle served several deliveries in turn. */
CURL *__real_curl_easy_init(void);
CURL *__wrap_curl_easy_init(void);

CURL *__wrap_curl_easy_init(void) {
  atomic_fetch_add(&easy_inits, 1);
  return __real_curl_easy_init();
}

/* ---- the fake store: one subscription, deliveries in memory ---- */

struct delivery {
  struct store_outbox_event ev;
  bool done, failed, leased;
  int attempts;
  int64_t next_at_us;
  int64_t first_attempt_us;
  int64_t lease_token; /* the current claim's */
};

struct fake_store {
  struct store base;
  pthread_mutex_t mu;
  struct subscription sub;
  struct delivery d[MAXD];
  size_t nd;
  struct store_delivery_result results[256];
  size_t nresults;
  int64_t tokens; /* the last claim token given out */
  void (*notify)(void *);
  void *notify_cls;
  int64_t qcursor; /* the broker cursor */
  int qreads;      /* QUEUE_READs */
  bool second;     /* sub_list also returns a second active subscription (with nothing due) */
  bool secret_unreadable; /* sub_secret answers STORE_HARD (a secret that does not open) */
  bool secret_busy;       /* sub_secret answers STORE_RETRY (the database busy) */
  int64_t lease_us;       /* the last claim's lease */
  char broken[256];       /* the first expectation the dispatcher broke (fake_expect), "" */
};

/* The fake store runs on the dispatcher's thread, where a failed cmocka assertion would longjmp
 * into the test's thread (undefined: two threads on one stack). A broken expectation is kept
 * instead and fails the test on its own thread when the dispatcher stops (dispatcher_stop). */
#define fake_expect(f, cond) ((cond) ? (void)0 : fake_broke((f), #cond, __LINE__))

static void fake_broke(struct fake_store *f, const char *what, int line) {
  if (!f->broken[0]) snprintf(f->broken, sizeof f->broken, "line %d: %s", line, what);
}

/* Out of memory in the test's own helpers: no test can go on. */
static void *must(void *p) {
  if (!p) abort();
  return p;
}

static void fake_claim(struct fake_store *f, struct store_outbox_work *w) {
  w->jobs = must(calloc(MAXD, sizeof *w->jobs));
  w->count = 0;
  if (!f->sub.enabled || f->sub.paused || strcmp(w->sub_id, f->sub.id) != 0) return;
  for (size_t i = 0; i < f->nd && (int64_t)w->count < w->limit; i++) {
    struct delivery *d = &f->d[i];
    if (d->done || d->failed || d->leased || d->next_at_us > w->now_us) continue;
    d->leased = true;
    struct store_delivery_job *j = &w->jobs[w->count++];
    snprintf(j->sub_id, sizeof j->sub_id, "%s", f->sub.id);
    j->attempt = d->attempts + 1;
    j->first_attempt_us = d->first_attempt_us;
    j->lease_token = d->lease_token = ++f->tokens;
    j->event = d->ev;
    j->event.data = must(strdup(d->ev.data));
    j->event.data_len = d->ev.data_len;
  }
}

static void fake_finish(struct fake_store *f, const struct store_outbox_work *w) {
  for (size_t i = 0; i < w->nresults; i++) {
    const struct store_delivery_result *r = &w->results[i];
    fake_expect(f, f->nresults < sizeof f->results / sizeof f->results[0]);
    if (f->nresults < sizeof f->results / sizeof f->results[0]) f->results[f->nresults++] = *r;
    for (size_t k = 0; k < f->nd; k++) {
      struct delivery *d = &f->d[k];
      if (d->ev.seq != r->seq) continue;
      /* every result and release carries its claim's token back (the store's stale check) */
      fake_expect(f, r->lease_token == d->lease_token);
      d->leased = false;
      d->next_at_us = r->next_at_us;
      if (r->outcome == STORE_DELIVERY_RELEASE) continue;
      d->attempts++;
      if (!d->first_attempt_us) d->first_attempt_us = r->first_attempt_us;
      if (r->outcome == DELIVERY_DELIVERED) d->done = true;
      if (r->outcome == DELIVERY_FAILED) d->failed = true;
      if (r->outcome == DELIVERY_DISABLED) {
        f->sub.enabled = false;
        snprintf(f->sub.disabled_reason, sizeof f->sub.disabled_reason, "gone");
      }
    }
  }
}

static void fake_submit(struct store *s, struct store_write *w) {
  struct fake_store *f = (struct fake_store *)s;
  pthread_mutex_lock(&f->mu);
  fake_expect(f, w->kind == STORE_WRITE_OUTBOX);
  struct store_outbox_work *o = w->outbox;
  w->status = STORE_OK;
  switch (o->op) {
    case STORE_OUTBOX_CLAIM:
      fake_expect(f, o->lease_us > 0);
      f->lease_us = o->lease_us;
      fake_claim(f, o);
      break;
    case STORE_OUTBOX_FINISH:
      fake_finish(f, o);
      break;
    case STORE_OUTBOX_QUEUE_READ:
      f->qreads++;
      o->events = must(calloc(MAXD, sizeof *o->events));
      o->count = 0;
      for (size_t i = 0; i < f->nd && (int64_t)o->count < o->limit; i++) {
        if (f->d[i].ev.seq <= f->qcursor) continue;
        struct store_outbox_event *e = &o->events[o->count++];
        *e = f->d[i].ev;
        e->data = must(malloc(e->data_len + 1));
        memcpy(e->data, f->d[i].ev.data, e->data_len + 1);
      }
      break;
    case STORE_OUTBOX_QUEUE_ADVANCE:
      if (o->upto_seq > f->qcursor) f->qcursor = o->upto_seq;
      break;
    case STORE_OUTBOX_FANOUT:
    case STORE_OUTBOX_PRUNE:
      o->added = 0;
      break;
    default:
      w->status = STORE_HARD;
  }
  pthread_mutex_unlock(&f->mu);
  w->done(w, w->done_cls);
}

static enum store_status fake_sub_list(struct store *s, struct subscription **out, size_t *count) {
  struct fake_store *f = (struct fake_store *)s;
  pthread_mutex_lock(&f->mu);
  *out = must(calloc(2, sizeof **out));
  (*out)[0] = f->sub;
  (*out)[1] = f->sub;
  snprintf((*out)[1].id, sizeof(*out)[1].id, "sub_000000000000000000000002");
  *count = f->second ? 2 : 1;
  pthread_mutex_unlock(&f->mu);
  return STORE_OK;
}

static enum store_status fake_sub_secret(struct store *s, const char *id, char *out) {
  struct fake_store *f = (struct fake_store *)s;
  (void)id;
  pthread_mutex_lock(&f->mu);
  enum store_status st = f->secret_busy         ? STORE_RETRY
                         : f->secret_unreadable ? STORE_HARD
                                                : STORE_OK;
  snprintf(out, OUTBOX_SECRET_MAX, "%s", st == STORE_OK ? f->sub.secret : "");
  pthread_mutex_unlock(&f->mu);
  return st;
}

static void fake_set_notify(struct store *s, void (*notify)(void *), void *cls) {
  struct fake_store *f = (struct fake_store *)s;
  f->notify = notify;
  f->notify_cls = cls;
}

static const struct store_ops fake_ops = {.name = "fake",
                                          .submit = fake_submit,
                                          .sub_list = fake_sub_list,
                                          .sub_secret = fake_sub_secret,
                                          .set_outbox_notify = fake_set_notify};

static struct fake_store *fake_new(const char *url, size_t events) {
  struct fake_store *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->base.ops = &fake_ops;
  pthread_mutex_init(&f->mu, NULL);
  snprintf(f->sub.id, sizeof f->sub.id, "sub_000000000000000000000001");
  snprintf(f->sub.url, sizeof f->sub.url, "%s", url);
  snprintf(f->sub.secret, sizeof f->sub.secret, "%s", SECRET);
  f->sub.event_types = OUTBOX_TYPES_ALL;
  f->sub.enabled = true;
  int64_t now = time_now_us();
  for (size_t i = 0; i < events; i++) {
    struct delivery *d = &f->d[f->nd++];
    d->ev.seq = (int64_t)i + 1;
    snprintf(d->ev.id, sizeof d->ev.id, "evt_%032zx", i + 1);
    d->ev.type = OUTBOX_CREATED;
    snprintf(d->ev.conversation_id, sizeof d->ev.conversation_id, "conv_%zu", i + 1);
    d->ev.created_us = now;
    char data[64];
    snprintf(data, sizeof data, "{\"conversationId\":\"conv_%zu\"}", i + 1);
    d->ev.data = strdup(data);
    d->ev.data_len = strlen(data);
  }
  return f;
}

static void fake_free(struct fake_store *f) {
  for (size_t i = 0; i < f->nd; i++) free(f->d[i].ev.data);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

static size_t fake_results(struct fake_store *f, struct store_delivery_result *out, size_t cap) {
  pthread_mutex_lock(&f->mu);
  size_t n = f->nresults < cap ? f->nresults : cap;
  memcpy(out, f->results, n * sizeof *out);
  pthread_mutex_unlock(&f->mu);
  return n;
}

/* Waits (up to 10 s: a loaded machine) until at least n results are recorded. */
static size_t wait_results(struct fake_store *f, size_t n, struct store_delivery_result *out,
                           size_t cap) {
  double start = time_mono_ms();
  size_t got;
  while ((got = fake_results(f, out, cap)) < n && time_mono_ms() - start < 10000) sleep_ms(10);
  return got;
}

/* ---- the receiver ---- */

struct answer {
  int status;        /* 0: hang (never answer) */
  const char *extra; /* more header lines, each ending in \r\n */
  const char *body;
  bool hang_after; /* announce a much longer body, send body, then hang */
};

struct request {
  char id[64], timestamp[32], signature[256], user_agent[64], content_type[64];
  char authorization[128];
  char body[512];
  size_t body_len;
  double at_ms;
};

struct receiver {
  int fd;
  unsigned short port;
  pthread_t thread;
  pthread_mutex_t mu;
  struct answer script[16]; /* answer i for request i; past the end: the last one */
  size_t nscript;
  struct request got[64];
  size_t ngot;
  int conns; /* connection threads still running */
  volatile bool stop;
};

/* recv that gives up once the receiver stops (the socket has a short timeout). */
static ssize_t recv_some(struct receiver *r, int fd, char *buf, size_t cap) {
  for (;;) {
    ssize_t k = recv(fd, buf, cap, 0);
    if (k >= 0 || r->stop || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return k;
  }
}

struct conn {
  struct receiver *r;
  int fd;
};

static void header_value(const char *head, const char *name, char *out, size_t cap) {
  out[0] = '\0';
  size_t n = strlen(name);
  for (const char *p = head; p && *p; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL) {
    if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
      const char *v = p + n + 1;
      while (*v == ' ') v++;
      const char *e = strstr(v, "\r\n");
      size_t len = e ? (size_t)(e - v) : strlen(v);
      if (len >= cap) len = cap - 1;
      memcpy(out, v, len);
      out[len] = '\0';
      return;
    }
  }
}

static void *conn_main(void *cls) {
  struct conn *c = cls;
  struct receiver *r = c->r;
  char buf[8192];
  size_t len = 0;
  for (;;) {
    char *end = NULL;
    while (!(end = memmem(buf, len, "\r\n\r\n", 4))) {
      ssize_t k = recv_some(r, c->fd, buf + len, sizeof buf - len - 1);
      if (k <= 0) goto out;
      len += (size_t)k;
      buf[len] = '\0';
    }
    size_t head_len = (size_t)(end - buf) + 4;
    char cl[32];
    *end = '\0';
    header_value(buf, "Content-Length", cl, sizeof cl);
    size_t body_len = (size_t)strtoul(cl, NULL, 10);
    while (len < head_len + body_len) {
      ssize_t k = recv_some(r, c->fd, buf + len, sizeof buf - len - 1);
      if (k <= 0) goto out;
      len += (size_t)k;
    }
    pthread_mutex_lock(&r->mu);
    size_t idx = r->ngot;
    struct request *q = &r->got[r->ngot < 63 ? r->ngot++ : 63];
    header_value(buf, "webhook-id", q->id, sizeof q->id);
    header_value(buf, "webhook-timestamp", q->timestamp, sizeof q->timestamp);
    header_value(buf, "webhook-signature", q->signature, sizeof q->signature);
    header_value(buf, "User-Agent", q->user_agent, sizeof q->user_agent);
    header_value(buf, "Content-Type", q->content_type, sizeof q->content_type);
    header_value(buf, "Authorization", q->authorization, sizeof q->authorization);
    q->body_len = body_len < sizeof q->body ? body_len : sizeof q->body - 1;
    memcpy(q->body, buf + head_len, q->body_len);
    q->body[q->body_len] = '\0';
    q->at_ms = time_mono_ms();
    struct answer a = r->script[idx < r->nscript ? idx : r->nscript - 1];
    pthread_mutex_unlock(&r->mu);
    memmove(buf, buf + head_len + body_len, len - head_len - body_len);
    len -= head_len + body_len;
    if (a.status == 0) {
      while (!r->stop) sleep_ms(20); /* hang until the test ends */
      goto out;
    }
    const char *body = a.body ? a.body : "ok";
    char reply[1024];
    int n =
        snprintf(reply, sizeof reply, "HTTP/1.1 %d X\r\nContent-Length: %zu\r\n%s\r\n%s", a.status,
                 strlen(body) + (a.hang_after ? 1000000 : 0), a.extra ? a.extra : "", body);
    if (send(c->fd, reply, (size_t)n, MSG_NOSIGNAL) != n) goto out;
    if (a.hang_after) {
      while (!r->stop) sleep_ms(20);
      goto out;
    }
  }
out:
  close(c->fd);
  free(c);
  pthread_mutex_lock(&r->mu);
  r->conns--;
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

static void *receiver_main(void *cls) {
  struct receiver *r = cls;
  while (!r->stop) {
    int fd = accept(r->fd, NULL, NULL);
    if (fd < 0) continue;
    struct conn *c = must(malloc(sizeof *c)); /* the receiver's thread: no cmocka assertion */
    c->r = r;
    c->fd = fd;
    struct timeval tv = {0, 50000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    pthread_mutex_lock(&r->mu);
    r->conns++;
    pthread_mutex_unlock(&r->mu);
    pthread_t t;
    if (pthread_create(&t, NULL, conn_main, c) != 0) abort();
    pthread_detach(t);
  }
  return NULL;
}

static struct receiver *receiver_start(const struct answer *script, size_t n) {
  struct receiver *r = calloc(1, sizeof *r);
  assert_non_null(r);
  pthread_mutex_init(&r->mu, NULL);
  memcpy(r->script, script, n * sizeof *script);
  r->nscript = n;
  r->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(r->fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(r->fd, 16), 0);
  socklen_t al = sizeof a;
  getsockname(r->fd, (struct sockaddr *)&a, &al);
  r->port = ntohs(a.sin_port);
  struct timeval tv = {0, 100000}; /* accept wakes to see stop */
  setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  assert_int_equal(pthread_create(&r->thread, NULL, receiver_main, r), 0);
  return r;
}

static void receiver_stop(struct receiver *r) {
  r->stop = true;
  pthread_join(r->thread, NULL);
  close(r->fd);
  for (;;) { /* connection threads see stop and end */
    pthread_mutex_lock(&r->mu);
    int n = r->conns;
    pthread_mutex_unlock(&r->mu);
    if (n == 0) break;
    sleep_ms(10);
  }
  pthread_mutex_destroy(&r->mu);
  free(r);
}

static size_t receiver_count(struct receiver *r) {
  pthread_mutex_lock(&r->mu);
  size_t n = r->ngot;
  pthread_mutex_unlock(&r->mu);
  return n;
}

/* ---- configuration ---- */

static struct config test_config(const long *schedule, size_t n, bool allow_private, long timeout) {
  struct config cfg;
  memset(&cfg, 0, sizeof cfg);
  static char empty[] = "";
  cfg.queue_url = empty;
  cfg.queue_stream = empty;
  for (size_t i = 0; i < n; i++) cfg.delivery_retry[i] = schedule[i];
  cfg.delivery_retry_count = n;
  cfg.delivery_allow_private_networks = allow_private;
  cfg.delivery_timeout = timeout;
  cfg.delivery_concurrency = 8;
  cfg.outbox_retention_days = 7;
  return cfg;
}

static char *url_of(struct receiver *r, char *buf, size_t cap) {
  snprintf(buf, cap, "http://127.0.0.1:%u/hook", r->port);
  return buf;
}

/* ---- the dispatcher under test ---- */

/* The dispatcher a test started and has not stopped: a test that fails an assertion leaves it
 * (cmocka longjmps out of the test), and the teardown stops it, so no thread of a failed test
 * runs on into the next one. */
static struct outbound *running;

static struct outbound *dispatcher_start(const struct config *cfg, struct fake_store *f, char *err,
                                         size_t errlen) {
  running = outbound_start(cfg, &f->base, err, errlen);
  return running;
}

/* Stops it (every thread joined), then fails the test on its own thread if the dispatcher broke
 * an expectation of the fake store. */
static void dispatcher_stop(struct outbound *o, struct fake_store *f) {
  outbound_stop(o);
  if (o == running) running = NULL;
  if (f->broken[0]) fail_msg("the dispatcher broke an expectation of the store: %s", f->broken);
}

static int stop_leftover(void **state) {
  (void)state;
  outbound_stop(running);
  running = NULL;
  return 0;
}

/* ---- tests ---- */

static void test_events_arrive_signed_and_are_recorded_delivered(void **state) {
  (void)state;
  struct answer ok = {200, NULL, "thanks", false};
  struct receiver *r = receiver_start(&ok, 1);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 3);
  const long schedule[] = {0, 5};
  struct config cfg = test_config(schedule, 2, true, 5);
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  assert_non_null(f->notify);
  struct store_delivery_result res[16];
  assert_int_equal(wait_results(f, 3, res, 16), 3);
  dispatcher_stop(o, f);
  struct sig_keyring ring;
  char why[256];
  assert_true(sig_keyring_standard(SECRET, &ring, why, sizeof why));
  assert_int_equal(receiver_count(r), 3);
  for (size_t i = 0; i < 3; i++) {
    struct request *q = &r->got[i];
    assert_int_equal(strncmp(q->id, "evt_", 4), 0);
    assert_string_equal(q->user_agent, "gensendrep/" GSR_VERSION);
    assert_string_equal(q->content_type, "application/json");
    /* the body is the event envelope with the event's id */
    assert_non_null(strstr(q->body, "\"type\":\"conversation.created\""));
    assert_non_null(strstr(q->body, q->id));
    assert_non_null(strstr(q->body, "\"data\":{\"conversationId\":\"conv_"));
    int64_t ts = strtoll(q->timestamp, NULL, 10);
    assert_true(llabs(ts - time_now_us() / 1000000) < 60);
    assert_int_equal(sig_standard_verify(&ring, q->id, q->timestamp, q->signature, q->body,
                                         q->body_len, time_now_us() / 1000000, 300),
                     SIG_OK);
  }
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(res[i].outcome, DELIVERY_DELIVERED);
    assert_int_equal(res[i].status_code, 200);
    assert_int_equal(res[i].attempt, 1);
    assert_string_equal(res[i].response_head, "thanks");
    assert_true(res[i].latency_ms >= 0 && res[i].latency_ms < 10000);
    assert_true(res[i].at_us > 0 && res[i].first_attempt_us == res[i].at_us);
  }
  receiver_stop(r);
  fake_free(f);
}

static void test_retry_after_then_schedule_then_exhausted(void **state) {
  (void)state;
  /* 503 with Retry-After: 1, shorter than the schedule's 30 s: the schedule's wait holds (a
   * short Retry-After must not use the schedule up), and the whole subscription waits the
   * second; then 500 twice, which follow the schedule: the second wait is 60 s, after the
   * third attempt the schedule is exhausted */
  struct answer script[] = {{503, "Retry-After: 1\r\n", "busy", false},
                            {500, NULL, "broken", false}};
  struct receiver *r = receiver_start(script, 2);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 1);
  const long schedule[] = {0, 30, 60};
  struct config cfg = test_config(schedule, 3, true, 5);
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  struct store_delivery_result res[16];
  assert_int_equal(wait_results(f, 1, res, 16), 1);
  assert_int_equal(res[0].outcome, DELIVERY_RETRY);
  assert_int_equal(res[0].status_code, 503);
  assert_string_equal(res[0].response_head, "busy");
  int64_t wait0 = res[0].next_at_us - res[0].at_us;
  /* the schedule's 30 s (+ up to 10%), not Retry-After's 1 s */
  assert_true(wait0 >= 30000000 && wait0 <= 33000000 + 10000000);
  /* make it due now: still no claim for the subscription before its Retry-After second */
  pthread_mutex_lock(&f->mu);
  f->d[0].next_at_us = 0;
  pthread_mutex_unlock(&f->mu);
  outbound_wake(o);
  assert_int_equal(wait_results(f, 2, res, 16), 2);
  assert_int_equal(res[1].outcome, DELIVERY_RETRY);
  assert_int_equal(res[1].status_code, 500);
  assert_int_equal(res[1].attempt, 2);
  assert_int_equal(res[1].first_attempt_us, res[0].at_us);
  assert_true(r->got[1].at_ms - r->got[0].at_ms >= 900);
  int64_t wait1 = res[1].next_at_us - res[1].at_us;
  assert_true(wait1 >= 60000000 && wait1 <= 66000000 + 10000000); /* 60 s + up to 10% */
  /* make it due now: the third attempt is the last */
  pthread_mutex_lock(&f->mu);
  f->d[0].next_at_us = 0;
  pthread_mutex_unlock(&f->mu);
  outbound_wake(o);
  assert_int_equal(wait_results(f, 3, res, 16), 3);
  assert_int_equal(res[2].outcome, DELIVERY_FAILED);
  assert_int_equal(res[2].attempt, 3);
  dispatcher_stop(o, f);
  receiver_stop(r);
  fake_free(f);
}

static void test_retry_after_holds_the_whole_subscription(void **state) {
  (void)state;
  /* Two events of two conversations at 1 per second. The first gets 429 Retry-After: 3: its
   * next attempt waits the 3 s (longer than the schedule's 1 s), and the second event, which
   * the bucket would send after 1 s, waits for the subscription's 3 s too */
  struct answer script[] = {{429, "Retry-After: 3\r\n", "slow down", false},
                            {200, NULL, NULL, false}};
  struct receiver *r = receiver_start(script, 2);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 2);
  f->sub.max_per_second = 1;
  const long schedule[] = {0, 1, 60};
  struct config cfg = test_config(schedule, 3, true, 5);
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  struct store_delivery_result res[16];
  assert_int_equal(wait_results(f, 3, res, 16), 3);
  dispatcher_stop(o, f);
  assert_int_equal(res[0].outcome, DELIVERY_RETRY);
  assert_int_equal(res[0].status_code, 429);
  assert_int_equal(res[0].attempt, 1);
  int64_t wait0 = res[0].next_at_us - res[0].at_us;
  assert_true(wait0 >= 3000000 && wait0 <= 3000000 + 10000000);
  assert_int_equal(res[1].outcome, DELIVERY_DELIVERED);
  assert_int_equal(res[2].outcome, DELIVERY_DELIVERED);
  assert_true(r->got[1].at_ms - r->got[0].at_ms >= 2800);
  receiver_stop(r);
  fake_free(f);
}

static void test_a_2xx_counts_whatever_its_body_does(void **state) {
  (void)state;
  /* the status line and the first bytes arrive, then the body stalls: delivered (not a
   * timeout); a long body is not waited for once its first bytes are kept */
  struct answer script[] = {{200, NULL, "partial", true}};
  struct receiver *r = receiver_start(script, 1);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 1);
  const long schedule[] = {0, 60};
  struct config cfg = test_config(schedule, 2, true, 1);
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  struct store_delivery_result res[16];
  assert_int_equal(wait_results(f, 1, res, 16), 1);
  dispatcher_stop(o, f);
  assert_int_equal(res[0].outcome, DELIVERY_DELIVERED);
  assert_int_equal(res[0].status_code, 200);
  assert_string_equal(res[0].response_head, "partial");
  receiver_stop(r);
  fake_free(f);

  static char big[OUTBOX_RESPONSE_HEAD_MAX + 100];
  memset(big, 'x', sizeof big - 1);
  struct answer longer[] = {{200, NULL, big, true}};
  r = receiver_start(longer, 1);
  f = fake_new(url_of(r, url, sizeof url), 1);
  cfg = test_config(schedule, 2, true, 30);
  o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  double t0 = time_mono_ms();
  assert_int_equal(wait_results(f, 1, res, 16), 1);
  assert_true(time_mono_ms() - t0 < 20000); /* not the 30 s timeout */
  dispatcher_stop(o, f);
  assert_int_equal(res[0].outcome, DELIVERY_DELIVERED);
  assert_int_equal(res[0].status_code, 200);
  assert_int_equal(strlen(res[0].response_head), OUTBOX_RESPONSE_HEAD_MAX);
  receiver_stop(r);
  fake_free(f);
}

static void test_gone_disables(void **state) {
  (void)state;
  struct answer gone = {410, NULL, "gone", false};
  struct receiver *r = receiver_start(&gone, 1);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 2);
  const long schedule[] = {0, 5};
  struct config cfg = test_config(schedule, 2, true, 5);
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  struct store_delivery_result res[16];
  assert_true(wait_results(f, 1, res, 16) >= 1);
  sleep_ms(300);
  dispatcher_stop(o, f);
  size_t n = fake_results(f, res, 16);
  /* the first answer disables the subscription: nothing is sent after it is seen */
  assert_true(n >= 1 && n <= 2);
  assert_int_equal(res[0].outcome, DELIVERY_DISABLED);
  assert_int_equal(res[0].status_code, 410);
  receiver_stop(r);
  fake_free(f);
}

/* A secret that does not open holds the subscription: nothing is sent (never unsigned),
 * nothing is recorded, the events wait; once it opens (the key is back) they go out signed. */
static void test_a_secret_that_does_not_open_holds_the_subscription(void **state) {
  (void)state;
  struct answer ok = {200, NULL, "thanks", false};
  struct receiver *r = receiver_start(&ok, 1);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 2);
  f->secret_unreadable = true;
  const long schedule[] = {0, 5};
  struct config cfg = test_config(schedule, 2, true, 5);
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  double start = time_mono_ms();
  while (!outbound_sub_held(o, f->sub.id) && time_mono_ms() - start < 10000) sleep_ms(10);
  assert_true(outbound_sub_held(o, f->sub.id));
  assert_false(outbound_sub_held(o, "sub_000000000000000000000009"));
  struct outbound_held h;
  outbound_held(o, time_now_us(), &h); /* what health shows */
  assert_int_equal(h.secret_unreadable, 1);
  assert_int_equal(h.sealed_unreadable + h.retry_after, 0);
  sleep_ms(1500); /* a refresh (every second while active) still holds it */
  struct store_delivery_result res[16];
  assert_int_equal(fake_results(f, res, 16), 0);
  assert_int_equal(receiver_count(r), 0);
  /* a read of the secret that finds the database busy changes nothing: still held, heldReason
   * does not flicker */
  pthread_mutex_lock(&f->mu);
  f->secret_busy = true;
  pthread_mutex_unlock(&f->mu);
  start = time_mono_ms();
  while (time_mono_ms() - start < 2500) {
    assert_true(outbound_sub_held(o, f->sub.id));
    sleep_ms(20);
  }
  assert_int_equal(receiver_count(r), 0);
  pthread_mutex_lock(&f->mu);
  f->secret_busy = false;
  f->secret_unreadable = false;
  pthread_mutex_unlock(&f->mu);
  outbound_wake(o);
  assert_int_equal(wait_results(f, 2, res, 16), 2);
  assert_false(outbound_sub_held(o, f->sub.id));
  outbound_held(o, time_now_us(), &h);
  assert_int_equal(h.secret_unreadable + h.sealed_unreadable + h.retry_after, 0);
  dispatcher_stop(o, f);
  assert_int_equal(receiver_count(r), 2);
  struct sig_keyring ring;
  char why[256];
  assert_true(sig_keyring_standard(SECRET, &ring, why, sizeof why));
  for (size_t i = 0; i < 2; i++)
    assert_int_equal(
        sig_standard_verify(&ring, r->got[i].id, r->got[i].timestamp, r->got[i].signature,
                            r->got[i].body, r->got[i].body_len, time_now_us() / 1000000, 300),
        SIG_OK);
  receiver_stop(r);
  fake_free(f);
}

/* What health shows (outbound_held): each held subscription once, with the reason GET shows
 * (a URL or account that does not open before a secret that does not open) and its stored
 * Retry-After hold while that is still to come; none held, nothing. */
static void test_held_says_why_each_subscription_is_held(void **state) {
  (void)state;
  struct fake_store *f = fake_new("http://127.0.0.1:9/none", 1);
  f->second = true; /* two subscriptions, both read as f->sub */
  f->sub.unreadable = true;
  f->secret_unreadable = true;
  int64_t until = time_now_us() + 60000000;
  f->sub.hold_until_us = until;
  const long schedule[] = {0, 5};
  struct config cfg = test_config(schedule, 2, true, 5);
  char err[256] = "";
  struct outbound_held h;
  outbound_held(NULL, time_now_us(), &h); /* no dispatcher: nothing held */
  assert_int_equal(h.secret_unreadable + h.sealed_unreadable + h.retry_after, 0);
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  double start = time_mono_ms();
  do {
    sleep_ms(10);
    outbound_held(o, time_now_us(), &h);
  } while (h.sealed_unreadable < 2 && time_mono_ms() - start < 10000);
  assert_int_equal(h.sealed_unreadable, 2);
  assert_int_equal(h.secret_unreadable, 0); /* one reason each, as GET shows */
  assert_int_equal(h.retry_after, 2);
  /* GET asks about the secret apart (once the URL and account open, it is that reason) */
  assert_true(outbound_sub_held(o, f->sub.id));
  /* once the hold is over, it is no longer counted (the rest still is) */
  outbound_held(o, until + 1, &h);
  assert_int_equal(h.retry_after, 0);
  assert_int_equal(h.sealed_unreadable, 2);
  /* everything opens again and the hold is lifted: nothing held after the next refresh */
  pthread_mutex_lock(&f->mu);
  f->sub.unreadable = false;
  f->secret_unreadable = false;
  f->sub.hold_until_us = 0;
  pthread_mutex_unlock(&f->mu);
  outbound_wake(o);
  start = time_mono_ms();
  do {
    sleep_ms(10);
    outbound_held(o, time_now_us(), &h);
  } while (h.secret_unreadable + h.sealed_unreadable + h.retry_after > 0 &&
           time_mono_ms() - start < 10000);
  assert_int_equal(h.secret_unreadable + h.sealed_unreadable + h.retry_after, 0);
  dispatcher_stop(o, f);
  fake_free(f);
}

static void test_private_address_refused_on_connect(void **state) {
  (void)state;
  struct answer ok = {200, NULL, NULL, false};
  struct receiver *r = receiver_start(&ok, 1);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 1);
  const long schedule[] = {0, 60};
  struct config cfg = test_config(schedule, 2, false, 5);
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  struct store_delivery_result res[16];
  assert_int_equal(wait_results(f, 1, res, 16), 1);
  dispatcher_stop(o, f);
  assert_int_equal(receiver_count(r), 0);
  assert_int_equal(res[0].outcome, DELIVERY_RETRY);
  assert_int_equal(res[0].status_code, 0);
  assert_string_equal(res[0].response_head, "refused: private address 127.0.0.1");
  receiver_stop(r);
  fake_free(f);
}

static void test_timeout_is_an_attempt(void **state) {
  (void)state;
  struct answer hang = {0, NULL, NULL, false};
  struct receiver *r = receiver_start(&hang, 1);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 1);
  const long schedule[] = {0, 60};
  struct config cfg = test_config(schedule, 2, true, 1);
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  struct store_delivery_result res[16];
  assert_int_equal(wait_results(f, 1, res, 16), 1);
  dispatcher_stop(o, f);
  assert_int_equal(res[0].outcome, DELIVERY_RETRY);
  assert_int_equal(res[0].status_code, 0);
  assert_string_equal(res[0].response_head, "timeout");
  assert_true(res[0].latency_ms >= 900);
  receiver_stop(r);
  fake_free(f);
}

static void test_stop_releases_what_is_in_flight(void **state) {
  (void)state;
  struct answer hang = {0, NULL, NULL, false};
  struct receiver *r = receiver_start(&hang, 1);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 2);
  const long schedule[] = {0, 60};
  struct config cfg = test_config(schedule, 2, true, 60);
  char err[256] = "";
  int before = atomic_load(&alive);
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  double start = time_mono_ms();
  while (receiver_count(r) < 2 && time_mono_ms() - start < 10000) sleep_ms(10);
  assert_int_equal(receiver_count(r), 2);
  double t0 = time_mono_ms();
  dispatcher_stop(o, f);
  double took = time_mono_ms() - t0;
  assert_true(took >= 1900 && took < 15000);     /* the 2 s grace, then given up */
  assert_int_equal(atomic_load(&alive), before); /* the delivery thread joined */
  struct store_delivery_result res[16];
  assert_int_equal(fake_results(f, res, 16), 2);
  for (size_t i = 0; i < 2; i++) assert_int_equal(res[i].outcome, STORE_DELIVERY_RELEASE);
  receiver_stop(r);
  fake_free(f);
}

/* The dispatcher keeps no pointer to the caller's configuration: here it is scribbled over and
 * freed as soon as outbound_start returns (a test's lives on its stack, gone once the test
 * returns or fails an assertion), and deliveries still follow it: the retry schedule, the
 * lease (DELIVERY_TIMEOUT_SECONDS + 30 s). Under ASan any read of it is a use after free; every
 * claim read it, and a thread reading a dead test's stack once computed a lease from garbage
 * (UBSan: signed integer overflow). */
static void test_the_dispatcher_reads_no_configuration_after_start(void **state) {
  (void)state;
  struct answer script[] = {{500, NULL, "broken", false}, {200, NULL, "thanks", false}};
  struct receiver *r = receiver_start(script, 2);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 1);
  const long schedule[] = {0, 1, 60};
  struct config *cfg = must(malloc(sizeof *cfg));
  *cfg = test_config(schedule, 3, true, 7);
  char err[256] = "";
  struct outbound *o = dispatcher_start(cfg, f, err, sizeof err);
  assert_non_null(o);
  memset(cfg, 0xa5, sizeof *cfg);
  free(cfg);
  struct store_delivery_result res[16];
  assert_int_equal(wait_results(f, 2, res, 16), 2);
  dispatcher_stop(o, f);
  assert_int_equal(res[0].outcome, DELIVERY_RETRY);
  assert_int_equal(res[0].status_code, 500);
  /* the schedule's 1 s, up to 10% more, counted from the answer (at_us is the attempt's start;
   * latency_ms, rounded, how long the answer took: 2 ms for the rounding and the two clocks) */
  int64_t wait0 = res[0].next_at_us - res[0].at_us - res[0].latency_ms * 1000;
  assert_true(wait0 >= 1000000 - 2000 && wait0 <= 1100000 + 2000);
  assert_int_equal(res[1].outcome, DELIVERY_DELIVERED);
  assert_int_equal(res[1].attempt, 2);
  assert_int_equal(f->lease_us, (7 + 30) * 1000000LL);
  assert_int_equal(receiver_count(r), 2);
  receiver_stop(r);
  fake_free(f);
}

/* A start whose delivery or broker thread cannot be created fails with a reason, and leaves no
 * thread running (the one already started is stopped and joined). */
static void test_a_start_that_cannot_create_its_threads_leaves_none(void **state) {
  (void)state;
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(lfd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
  close(lfd); /* a broker nobody listens on */
  struct fake_store *f = fake_new("http://127.0.0.1:9/none", 1);
  const long schedule[] = {0, 5};
  struct config cfg = test_config(schedule, 2, true, 5);
  char qurl[64];
  snprintf(qurl, sizeof qurl, "redis://127.0.0.1:%u", ntohs(a.sin_port));
  cfg.queue_url = qurl;
  char stream[] = "gensendrep";
  cfg.queue_stream = stream;
  const struct {
    int fail; /* which creation fails: 1 the delivery thread, 2 the broker thread */
    const char *err;
  } cases[] = {{1, "outbound: cannot start the delivery thread"},
               {2, "outbound: cannot start the broker thread"}};
  for (size_t i = 0; i < 2; i++) {
    int before = atomic_load(&alive);
    atomic_store(&creates, 0);
    atomic_store(&fail_create, cases[i].fail);
    char err[256] = "";
    struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
    atomic_store(&fail_create, 0);
    assert_null(o);
    assert_string_equal(err, cases[i].err);
    assert_int_equal(atomic_load(&alive), before);
  }
  /* and a start after them works */
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  dispatcher_stop(o, f);
  fake_free(f);
}

static void test_max_per_second_throttles(void **state) {
  (void)state;
  struct answer ok = {200, NULL, NULL, false};
  struct receiver *r = receiver_start(&ok, 1);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 6);
  f->sub.max_per_second = 2;
  const long schedule[] = {0, 5};
  struct config cfg = test_config(schedule, 2, true, 5);
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  struct store_delivery_result res[16];
  assert_int_equal(wait_results(f, 6, res, 16), 6);
  dispatcher_stop(o, f);
  /* a bucket of 2: the first two at once, the other four at 2 per second, i.e. the sixth at
   * least about 2 s after the first (a slow machine only makes it later) */
  double span = r->got[5].at_ms - r->got[0].at_ms;
  assert_true(span >= 1500);
  receiver_stop(r);
  fake_free(f);
}

static void test_one_subscription_holds_at_most_its_share_of_slots(void **state) {
  (void)state;
  /* DELIVERY_CONCURRENCY 2 and two active subscriptions: the first, whose receiver never
   * answers, may hold one slot, not both (the other stays for the second subscription) */
  struct answer hang = {0, NULL, NULL, false};
  struct receiver *r = receiver_start(&hang, 1);
  char url[128];
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 3);
  f->second = true;
  const long schedule[] = {0, 60};
  struct config cfg = test_config(schedule, 2, true, 30);
  cfg.delivery_concurrency = 2;
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  double start = time_mono_ms();
  while (receiver_count(r) < 1 && time_mono_ms() - start < 10000) sleep_ms(10);
  assert_int_equal(receiver_count(r), 1);
  sleep_ms(1500); /* ticks and wakes: still one */
  assert_int_equal(receiver_count(r), 1);
  dispatcher_stop(o, f);
  receiver_stop(r);
  fake_free(f);
}

/* A broker that is down: the broker thread probes it (once a second) and reads nothing from the
 * outbox until it is back (it read, rendered and failed every second before). */
static void test_no_outbox_reads_while_the_broker_is_down(void **state) {
  (void)state;
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(lfd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t al = sizeof a;
  assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
  close(lfd); /* a port nobody listens on: connections are refused */
  struct fake_store *f = fake_new("http://127.0.0.1:9/none", 2);
  f->sub.enabled = false;
  const long schedule[] = {0, 5};
  struct config cfg = test_config(schedule, 2, true, 5);
  char qurl[64];
  snprintf(qurl, sizeof qurl, "redis://127.0.0.1:%u", ntohs(a.sin_port));
  cfg.queue_url = qurl;
  char stream[] = "gensendrep";
  cfg.queue_stream = stream;
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  sleep_ms(2500);
  struct outbound_status st;
  outbound_status(o, &st);
  dispatcher_stop(o, f);
  assert_false(st.queue_connected);
  assert_int_equal(f->qreads, 0);
  assert_int_equal(f->qcursor, 0);
  fake_free(f);
}

/* A broker that accepts the connection and never answers: stop still returns within about a
 * broker step's 2 s timeout (it was 5 s per step, several steps in a row). */
static void test_stop_is_bounded_with_a_silent_broker(void **state) {
  (void)state;
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(lfd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(listen(lfd, 16), 0); /* the kernel completes the handshakes; nobody speaks */
  socklen_t al = sizeof a;
  assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
  struct fake_store *f = fake_new("http://127.0.0.1:9/none", 1);
  f->sub.enabled = false;
  const long schedule[] = {0, 5};
  struct config cfg = test_config(schedule, 2, true, 5);
  char qurl[64];
  snprintf(qurl, sizeof qurl, "nats://127.0.0.1:%u", ntohs(a.sin_port));
  cfg.queue_url = qurl;
  char err[256] = "";
  int before = atomic_load(&alive);
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  assert_int_equal(atomic_load(&alive), before + 2); /* delivery and broker threads */
  sleep_ms(300);                  /* the broker thread is waiting for the server's greeting */
  assert_int_equal(f->qreads, 0); /* a broker that is down costs no outbox reads */
  double t0 = time_mono_ms();
  dispatcher_stop(o, f);
  double took = time_mono_ms() - t0;
  assert_true(took < 4500);
  assert_int_equal(atomic_load(&alive), before); /* both joined */
  close(lfd);
  fake_free(f);
}

/* Against a real nats-server -js (GSR_TEST_NATS_URL; skipped without it, run by
 * test_queue_publisher.py): an event larger than the server's max_payload goes out as a
 * stand-in with the same id and type naming the conversation, an event that cannot be rendered
 * is skipped, and the broker goes on past both (it used to stop at the big one for good). */
static void test_broker_publishes_a_stand_in_for_an_event_over_max_payload(void **state) {
  (void)state;
  const char *nats = getenv("GSR_TEST_NATS_URL");
  if (!nats || !*nats) skip();
  struct fake_store *f = fake_new("http://127.0.0.1:9/none", 4);
  f->sub.enabled = false; /* the broker only */
  /* ids of this run only: JetStream drops a Nats-Msg-Id it saw in the last 2 minutes */
  for (size_t i = 0; i < f->nd; i++)
    snprintf(f->d[i].ev.id, sizeof f->d[i].ev.id, "evt_%016llx%016zx",
             (unsigned long long)time_now_us(), i + 1);
  /* event 2: 2 MiB of data, twice the default max_payload */
  size_t big_len = 2 * 1024 * 1024;
  char *big = malloc(big_len + 1);
  assert_non_null(big);
  /* a conversation id needing JSON escapes and percent-encoding in the URL */
  snprintf(f->d[1].ev.conversation_id, sizeof f->d[1].ev.conversation_id, "conv \"2\"/\xc3\xa9");
  int head = snprintf(big, big_len, "{\"conversationId\":\"conv \\\"2\\\"/\xc3\xa9\",\"x\":\"");
  memset(big + head, 'a', big_len - (size_t)head - 2);
  memcpy(big + big_len - 2, "\"}", 3);
  free(f->d[1].ev.data);
  f->d[1].ev.data = big;
  f->d[1].ev.data_len = big_len;
  f->d[2].ev.type = 99; /* a type this version does not know */
  const long schedule[] = {0, 5};
  struct config cfg = test_config(schedule, 2, true, 5);
  char qurl[512];
  snprintf(qurl, sizeof qurl, "%s", nats);
  cfg.queue_url = qurl;
  char err[256] = "";
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  double start = time_mono_ms();
  for (;;) {
    pthread_mutex_lock(&f->mu);
    int64_t c = f->qcursor;
    pthread_mutex_unlock(&f->mu);
    if (c == 4 || time_mono_ms() - start > 20000) break;
    sleep_ms(20);
  }
  struct outbound_status st;
  outbound_status(o, &st);
  assert_true(st.queue_connected); /* never disconnected for it */
  dispatcher_stop(o, f);
  assert_int_equal(f->qcursor, 4);
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  assert_int_equal(natsConnection_ConnectTo(&nc, nats), NATS_OK);
  assert_int_equal(natsConnection_JetStream(&js, nc, NULL), NATS_OK);
  jsStreamInfo *si = NULL;
  assert_int_equal(js_GetStreamInfo(&si, js, "GENSENDREP", NULL, NULL), NATS_OK);
  uint64_t last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  const size_t want[] = {0, 1, 3}; /* events 1, 2 (the stand-in) and 4; 3 skipped */
  for (size_t i = 0; i < 3; i++) {
    natsMsg *m = NULL;
    assert_int_equal(js_GetMsg(&m, js, "GENSENDREP", last - 2 + i, NULL, NULL), NATS_OK);
    const char *id = NULL;
    assert_int_equal(natsMsgHeader_Get(m, "Nats-Msg-Id", &id), NATS_OK);
    assert_string_equal(id, f->d[want[i]].ev.id);
    assert_string_equal(natsMsg_GetSubject(m), "gensendrep.events.conversation.created");
    char *text = strndup(natsMsg_GetData(m), (size_t)natsMsg_GetDataLength(m));
    assert_non_null(text);
    assert_non_null(strstr(text, "\"type\":\"conversation.created\""));
    if (i == 1)
      assert_non_null(strstr(text,
                             "\"data\":{\"conversationId\":\"conv \\\"2\\\"/\xc3\xa9\","
                             "\"truncated\":true,"
                             "\"url\":\"/api/v1/conversations/conv%20%222%22%2F%C3%A9"
                             "?include=transcript\"}}"));
    else
      assert_null(strstr(text, "truncated"));
    free(text);
    natsMsg_Destroy(m);
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  fake_free(f);
}

/* DELIVERY_CONCURRENCY 1: one easy handle serves every delivery in turn (its spare). Whatever a
 * transfer left on it — an answer cut after its first bytes, a timeout with no answer at all, a
 * subscription whose URL (with credentials) changed to another receiver (without) — the next
 * delivery goes to its own URL with its own headers, body and signature, no credentials it does
 * not name, and is classified by its own answer (a timeout after a 200 is a timeout, not the
 * 200). */
static void test_a_reused_handle_carries_nothing_into_the_next_delivery(void **state) {
  (void)state;
  static char big[OUTBOX_RESPONSE_HEAD_MAX + 100];
  memset(big, 'x', sizeof big - 1);
  struct answer script[] = {{200, NULL, big, true}, /* cut once the kept bytes came */
                            {0, NULL, NULL, false}, /* never answers: the timeout */
                            {503, "Retry-After: 1\r\n", "busy", false},
                            {200, NULL, "thanks", false}};
  struct receiver *r = receiver_start(script, 4);
  struct answer ok = {200, NULL, "other", false};
  struct receiver *r2 = receiver_start(&ok, 1);
  char url[128];
  snprintf(url, sizeof url, "http://user:pw@127.0.0.1:%u/hook", r->port);
  struct fake_store *f = fake_new(url, 5);
  pthread_mutex_lock(&f->mu);
  f->d[4].next_at_us = INT64_MAX; /* the fifth waits for the URL to change */
  pthread_mutex_unlock(&f->mu);
  const long schedule[] = {0, 600};
  struct config cfg = test_config(schedule, 2, true, 1);
  cfg.delivery_concurrency = 1;
  char err[256] = "";
  atomic_store(&easy_inits, 0);
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  struct store_delivery_result res[16];
  assert_int_equal(wait_results(f, 4, res, 16), 4);
  /* the subscription moves to another receiver: the same handle sends there */
  pthread_mutex_lock(&f->mu);
  snprintf(f->sub.url, sizeof f->sub.url, "http://127.0.0.1:%u/other", r2->port);
  f->sub.updated_us = time_now_us();
  f->d[4].next_at_us = 0;
  pthread_mutex_unlock(&f->mu);
  outbound_wake(o);
  assert_int_equal(wait_results(f, 5, res, 16), 5);
  dispatcher_stop(o, f);
  assert_int_equal(atomic_load(&easy_inits), 1); /* one handle served the five */
  for (size_t i = 0; i < 5; i++) assert_int_equal(res[i].seq, (int64_t)i + 1);
  assert_int_equal(res[0].outcome, DELIVERY_DELIVERED);
  assert_int_equal(res[0].status_code, 200);
  assert_int_equal(strlen(res[0].response_head), OUTBOX_RESPONSE_HEAD_MAX);
  assert_int_equal(res[1].outcome, DELIVERY_RETRY);
  assert_int_equal(res[1].status_code, 0);
  assert_string_equal(res[1].response_head, "timeout");
  assert_true(res[1].latency_ms >= 900); /* its own second, not counted from an earlier start */
  assert_int_equal(res[2].outcome, DELIVERY_RETRY);
  assert_int_equal(res[2].status_code, 503);
  assert_string_equal(res[2].response_head, "busy");
  assert_int_equal(res[2].hold_us, 1000000);
  assert_int_equal(res[3].outcome, DELIVERY_DELIVERED);
  assert_int_equal(res[3].status_code, 200);
  assert_string_equal(res[3].response_head, "thanks");
  assert_int_equal(res[3].hold_us, 0);
  assert_int_equal(res[4].outcome, DELIVERY_DELIVERED);
  assert_string_equal(res[4].response_head, "other");
  /* each request is its own event's, signed */
  assert_int_equal(receiver_count(r), 4);
  assert_int_equal(receiver_count(r2), 1);
  struct sig_keyring ring;
  char why[256];
  assert_true(sig_keyring_standard(SECRET, &ring, why, sizeof why));
  for (size_t i = 0; i < 5; i++) {
    struct request *q = i < 4 ? &r->got[i] : &r2->got[0];
    assert_string_equal(q->id, f->d[i].ev.id);
    assert_string_equal(q->authorization, i < 4 ? "Basic dXNlcjpwdw==" : "");
    char conv[64];
    snprintf(conv, sizeof conv, "\"conversationId\":\"conv_%zu\"", i + 1);
    assert_non_null(strstr(q->body, conv));
    assert_int_equal(sig_standard_verify(&ring, q->id, q->timestamp, q->signature, q->body,
                                         q->body_len, time_now_us() / 1000000, 300),
                     SIG_OK);
  }
  receiver_stop(r);
  receiver_stop(r2);
  fake_free(f);
}

/* The SSRF rule holds on every connection of a reused handle: DELIVERY_CONCURRENCY 1, two
 * deliveries to a private address, both refused; and a dispatcher that allowed private networks
 * before, in this process, changes nothing for one that does not. */
static void test_a_reused_handle_still_refuses_private_addresses(void **state) {
  (void)state;
  struct answer ok = {200, NULL, NULL, false};
  struct receiver *r = receiver_start(&ok, 1);
  char url[128];
  const long schedule[] = {0, 600};
  struct store_delivery_result res[16];
  char err[256] = "";
  struct fake_store *f = fake_new(url_of(r, url, sizeof url), 2);
  struct config cfg = test_config(schedule, 2, true, 5);
  cfg.delivery_concurrency = 1;
  struct outbound *o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  assert_int_equal(wait_results(f, 2, res, 16), 2);
  dispatcher_stop(o, f);
  assert_int_equal(receiver_count(r), 2);
  for (size_t i = 0; i < 2; i++) assert_int_equal(res[i].outcome, DELIVERY_DELIVERED);
  fake_free(f);
  f = fake_new(url_of(r, url, sizeof url), 3);
  cfg = test_config(schedule, 2, false, 5);
  cfg.delivery_concurrency = 1;
  atomic_store(&easy_inits, 0);
  o = dispatcher_start(&cfg, f, err, sizeof err);
  assert_non_null(o);
  assert_int_equal(wait_results(f, 3, res, 16), 3);
  dispatcher_stop(o, f);
  assert_int_equal(atomic_load(&easy_inits), 1); /* one handle, three connections refused */
  assert_int_equal(receiver_count(r), 2);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(res[i].outcome, DELIVERY_RETRY);
    assert_int_equal(res[i].status_code, 0);
    assert_string_equal(res[i].response_head, "refused: private address 127.0.0.1");
  }
  receiver_stop(r);
  fake_free(f);
}

int main(void) {
  main_thread = pthread_self();
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (getenv("GSR_TEST_FILTER")) cmocka_set_test_filter(getenv("GSR_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_events_arrive_signed_and_are_recorded_delivered,
                                stop_leftover),
      cmocka_unit_test_teardown(test_retry_after_then_schedule_then_exhausted, stop_leftover),
      cmocka_unit_test_teardown(test_retry_after_holds_the_whole_subscription, stop_leftover),
      cmocka_unit_test_teardown(test_a_2xx_counts_whatever_its_body_does, stop_leftover),
      cmocka_unit_test_teardown(test_gone_disables, stop_leftover),
      cmocka_unit_test_teardown(test_a_secret_that_does_not_open_holds_the_subscription,
                                stop_leftover),
      cmocka_unit_test_teardown(test_held_says_why_each_subscription_is_held, stop_leftover),
      cmocka_unit_test_teardown(test_private_address_refused_on_connect, stop_leftover),
      cmocka_unit_test_teardown(test_timeout_is_an_attempt, stop_leftover),
      cmocka_unit_test_teardown(test_a_reused_handle_carries_nothing_into_the_next_delivery,
                                stop_leftover),
      cmocka_unit_test_teardown(test_a_reused_handle_still_refuses_private_addresses,
                                stop_leftover),
      cmocka_unit_test_teardown(test_stop_releases_what_is_in_flight, stop_leftover),
      cmocka_unit_test_teardown(test_the_dispatcher_reads_no_configuration_after_start,
                                stop_leftover),
      cmocka_unit_test_teardown(test_a_start_that_cannot_create_its_threads_leaves_none,
                                stop_leftover),
      cmocka_unit_test_teardown(test_max_per_second_throttles, stop_leftover),
      cmocka_unit_test_teardown(test_one_subscription_holds_at_most_its_share_of_slots,
                                stop_leftover),
      cmocka_unit_test_teardown(test_no_outbox_reads_while_the_broker_is_down, stop_leftover),
      cmocka_unit_test_teardown(test_stop_is_bounded_with_a_silent_broker, stop_leftover),
      cmocka_unit_test_teardown(test_broker_publishes_a_stand_in_for_an_event_over_max_payload,
                                stop_leftover),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
