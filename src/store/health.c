/* The health monitor: a checker thread runs one check at a time on demand; a timer thread
 * answers waiting callers whose bound has passed while a check is still running (the checker
 * cannot: it may itself be stuck in the database); a counter thread reads the outbox's backlog
 * (after each check, and when a stale count is asked for), so that counting a large backlog
 * never holds up a check. */
#include "store/health.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/timeutil.h"

struct store_health {
  struct store *store;
  pthread_mutex_t mu;
  pthread_cond_t check_cv; /* checker: a check is wanted, or stop */
  pthread_cond_t timer_cv; /* timer (monotonic clock): a new waiter, or stop */
  pthread_cond_t write_cv; /* checker: the probe write is done */
  bool stopping;
  /* the last finished check */
  bool have_result, last_ok;
  double last_done_ms;
  /* the running check */
  bool wanted, running;
  double started_ms;
  struct store_write write;
  bool write_done;
  struct store_health_wait *waiters;
  /* the outbox's backlog, read by the counter thread (count_wanted) after each check once
   * asked for, and between checks when store_health_outbox finds the count stale */
  bool outbox_wanted, have_outbox, count_wanted;
  pthread_cond_t count_cv; /* counter: a count is wanted, or stop */
  double outbox_read_ms;   /* when the last refresh or check read it (0: never) */
  const char *outbox_cursor;
  struct store_outbox_stats outbox;
  pthread_t checker, timer, counter;
  bool checker_started, timer_started, counter_started;
};

/* What a caller can be told now, without waiting. Locked. */
static bool answer_now(const struct store_health *h, double now, bool *ok) {
  if (h->have_result && now - h->last_done_ms < STORE_HEALTH_FRESH_MS) {
    *ok = h->last_ok;
    return true;
  }
  if (h->running && now - h->started_ms >= STORE_HEALTH_WAIT_MS) {
    *ok = false; /* stuck: not ok until it ends */
    return true;
  }
  return false;
}

/* Takes the waiters matching expired (or all) off the list. Locked. */
static struct store_health_wait *take_waiters(struct store_health *h, bool all, double now) {
  struct store_health_wait *out = NULL, **pp = &h->waiters;
  while (*pp) {
    struct store_health_wait *w = *pp;
    if (all || w->deadline_ms <= now) {
      *pp = w->next;
      w->next = out;
      out = w;
    } else {
      pp = &w->next;
    }
  }
  return out;
}

static void answer(struct store_health_wait *list, bool ok) {
  while (list) {
    struct store_health_wait *next = list->next;
    list->done(list, ok);
    list = next;
  }
}

static void on_written(struct store_write *w, void *cls) {
  (void)w;
  struct store_health *h = cls;
  pthread_mutex_lock(&h->mu);
  h->write_done = true;
  pthread_cond_signal(&h->write_cv);
  pthread_mutex_unlock(&h->mu);
}

/* The backlog numbers, when asked for; unlocked. */
static void read_outbox(struct store_health *h) {
  pthread_mutex_lock(&h->mu);
  bool wanted = h->outbox_wanted;
  const char *cursor = h->outbox_cursor;
  pthread_mutex_unlock(&h->mu);
  if (!wanted || !h->store->ops->outbox_stats) return;
  struct store_outbox_stats st = {0};
  bool ok = store_outbox_stats(h->store, cursor, &st) == STORE_OK;
  pthread_mutex_lock(&h->mu);
  h->have_outbox = ok;
  h->outbox = st;
  h->outbox_read_ms = time_mono_ms();
  pthread_mutex_unlock(&h->mu);
}

/* One check, unlocked: the read, then the committed write. */
static bool run_check(struct store_health *h) {
  if (store_ping_read(h->store) != STORE_OK) return false;
  h->write = (struct store_write){.kind = STORE_WRITE_PROBE, .done = on_written, .done_cls = h};
  h->write_done = false;
  store_submit(h->store, &h->write);
  pthread_mutex_lock(&h->mu);
  while (!h->write_done) pthread_cond_wait(&h->write_cv, &h->mu);
  pthread_mutex_unlock(&h->mu);
  return h->write.status == STORE_OK;
}

static void *checker_main(void *arg) {
  struct store_health *h = arg;
  pthread_mutex_lock(&h->mu);
  for (;;) {
    while (!h->wanted && !h->stopping) pthread_cond_wait(&h->check_cv, &h->mu);
    if (h->stopping) break;
    h->wanted = false;
    h->running = true;
    h->started_ms = time_mono_ms();
    pthread_mutex_unlock(&h->mu);
    bool ok = run_check(h);
    pthread_mutex_lock(&h->mu);
    h->running = false;
    h->have_result = true;
    h->last_ok = ok;
    h->last_done_ms = time_mono_ms();
    struct store_health_wait *list = take_waiters(h, true, 0);
    pthread_mutex_unlock(&h->mu);
    answer(list, ok);
    pthread_mutex_lock(&h->mu);
    /* The backlog numbers after the answer, on the counter's thread: counting a large backlog
     * must never make a health request time out (the numbers shown are the previous ones). */
    if (ok) {
      h->count_wanted = true;
      pthread_cond_signal(&h->count_cv);
    }
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static void *counter_main(void *arg) {
  struct store_health *h = arg;
  pthread_mutex_lock(&h->mu);
  for (;;) {
    while (!h->count_wanted && !h->stopping) pthread_cond_wait(&h->count_cv, &h->mu);
    if (h->stopping) break;
    h->count_wanted = false;
    pthread_mutex_unlock(&h->mu);
    read_outbox(h);
    pthread_mutex_lock(&h->mu);
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static struct timespec mono_deadline(double ms) {
  struct timespec ts = {.tv_sec = (time_t)(ms / 1000.0)};
  ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000.0) * 1e6);
  if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
  if (ts.tv_nsec < 0) ts.tv_nsec = 0;
  return ts;
}

static void *timer_main(void *arg) {
  struct store_health *h = arg;
  pthread_mutex_lock(&h->mu);
  while (!h->stopping) {
    double next = 0;
    for (struct store_health_wait *w = h->waiters; w; w = w->next)
      if (next == 0 || w->deadline_ms < next) next = w->deadline_ms;
    if (next == 0) {
      pthread_cond_wait(&h->timer_cv, &h->mu);
      continue;
    }
    if (time_mono_ms() < next) {
      struct timespec ts = mono_deadline(next);
      pthread_cond_timedwait(&h->timer_cv, &h->mu, &ts);
    }
    struct store_health_wait *list = take_waiters(h, false, time_mono_ms());
    if (!list) continue;
    pthread_mutex_unlock(&h->mu);
    answer(list, false);
    pthread_mutex_lock(&h->mu);
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

bool store_health_recent(struct store_health *h, bool *ok) {
  pthread_mutex_lock(&h->mu);
  bool now = answer_now(h, time_mono_ms(), ok);
  pthread_mutex_unlock(&h->mu);
  return now;
}

void store_health_wait(struct store_health *h, struct store_health_wait *w) {
  bool ok;
  pthread_mutex_lock(&h->mu);
  double now = time_mono_ms();
  if (h->stopping || answer_now(h, now, &ok)) {
    if (h->stopping) ok = false;
    pthread_mutex_unlock(&h->mu);
    w->done(w, ok);
    return;
  }
  /* Answered when the check ends, or by the bound counted from the check's start. */
  w->deadline_ms = (h->running ? h->started_ms : now) + STORE_HEALTH_WAIT_MS;
  w->next = h->waiters;
  h->waiters = w;
  if (!h->running) {
    h->wanted = true;
    pthread_cond_signal(&h->check_cv);
  }
  pthread_cond_signal(&h->timer_cv);
  pthread_mutex_unlock(&h->mu);
}

bool store_health_outbox(struct store_health *h, const char *cursor_name,
                         struct store_outbox_stats *out) {
  pthread_mutex_lock(&h->mu);
  h->outbox_wanted = true;
  h->outbox_cursor = cursor_name;
  /* A stale count asks the counter's thread for a read-only refresh: the caller never waits
   * for it. */
  if (!h->stopping && !h->count_wanted &&
      (h->outbox_read_ms == 0 || time_mono_ms() - h->outbox_read_ms >= STORE_HEALTH_FRESH_MS)) {
    h->count_wanted = true;
    pthread_cond_signal(&h->count_cv);
  }
  bool have = h->have_outbox;
  if (have) *out = h->outbox;
  pthread_mutex_unlock(&h->mu);
  return have;
}

struct store_health *store_health_new(struct store *s) {
  struct store_health *h = calloc(1, sizeof *h);
  if (!h) return NULL;
  h->store = s;
  pthread_mutex_init(&h->mu, NULL);
  pthread_cond_init(&h->check_cv, NULL);
  pthread_cond_init(&h->write_cv, NULL);
  pthread_cond_init(&h->count_cv, NULL);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&h->timer_cv, &attr);
  pthread_condattr_destroy(&attr);
  h->checker_started = pthread_create(&h->checker, NULL, checker_main, h) == 0;
  h->timer_started = h->checker_started && pthread_create(&h->timer, NULL, timer_main, h) == 0;
  h->counter_started = h->timer_started && pthread_create(&h->counter, NULL, counter_main, h) == 0;
  if (!h->counter_started) {
    store_health_free(h);
    return NULL;
  }
  return h;
}

void store_health_free(struct store_health *h) {
  if (!h) return;
  pthread_mutex_lock(&h->mu);
  h->stopping = true;
  struct store_health_wait *list = take_waiters(h, true, 0);
  pthread_cond_broadcast(&h->check_cv);
  pthread_cond_broadcast(&h->timer_cv);
  pthread_cond_broadcast(&h->count_cv);
  pthread_mutex_unlock(&h->mu);
  answer(list, false);
  if (h->timer_started) pthread_join(h->timer, NULL);
  if (h->checker_started) pthread_join(h->checker, NULL);
  if (h->counter_started) pthread_join(h->counter, NULL);
  pthread_cond_destroy(&h->count_cv);
  pthread_cond_destroy(&h->check_cv);
  pthread_cond_destroy(&h->timer_cv);
  pthread_cond_destroy(&h->write_cv);
  pthread_mutex_destroy(&h->mu);
  free(h);
}
