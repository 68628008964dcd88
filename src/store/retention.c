/* The retention thread (see retention.h). */
#include "store/retention.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/timeutil.h"

#define US_PER_DAY (86400LL * 1000000LL)

struct store_retention {
  struct store *store;
  int64_t keep_us; /* the retention period */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stop;
  bool batch_done; /* the batch in flight has been committed or has failed */
  struct store_write write;
};

/* Writer thread: the batch's transaction has ended. */
static void on_done(struct store_write *w, void *cls) {
  (void)w;
  struct store_retention *r = cls;
  pthread_mutex_lock(&r->mu);
  r->batch_done = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

/* Sleeps ms unless stopped; r->mu held. */
static void pause_ms(struct store_retention *r, int64_t ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (ms % 1000) * 1000000L;
  until.tv_sec += until.tv_nsec / 1000000000L;
  until.tv_nsec %= 1000000000L;
  while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0) {
  }
}

static void *retention_main(void *arg) {
  struct store_retention *r = arg;
  bool failing = false;
  int64_t erased_run = 0; /* erased since the last idle batch, logged once the run ends */
  pthread_mutex_lock(&r->mu);
  while (!r->stop) {
    memset(&r->write, 0, sizeof r->write);
    r->write.kind = STORE_WRITE_RETAIN;
    r->write.retain_before_us = time_now_us() - r->keep_us;
    r->write.retain_limit = RETENTION_BATCH;
    r->write.audio_fd = -1;
    r->write.done = on_done;
    r->write.done_cls = r;
    r->batch_done = false;
    pthread_mutex_unlock(&r->mu);
    store_submit(r->store, &r->write);
    pthread_mutex_lock(&r->mu);
    while (!r->batch_done) pthread_cond_wait(&r->cv, &r->mu); /* the store always finishes it */
    if (r->write.status != STORE_OK) {
      if (!failing)
        log_msg(LOG_WARNING, "retention: a batch failed (tried again every %d ms)",
                RETENTION_IDLE_MS);
      failing = true;
      pause_ms(r, RETENTION_IDLE_MS);
      continue;
    }
    if (failing) log_msg(LOG_INFO, "retention: batches work again");
    failing = false;
    /* audit: conversation.erased (retention; one entry per conversation once the log exists) */
    if (r->write.erased > 0) {
      erased_run += r->write.erased;
      pause_ms(r, RETENTION_BUSY_PAUSE_MS);
      continue;
    }
    if (erased_run > 0)
      log_msg(LOG_INFO,
              "retention: erased %lld conversations, events and audios older than %lld days",
              (long long)erased_run, (long long)(r->keep_us / US_PER_DAY));
    erased_run = 0;
    pause_ms(r, RETENTION_IDLE_MS);
  }
  pthread_mutex_unlock(&r->mu);
  return NULL;
}

struct store_retention *store_retention_start(struct store *s, long days) {
  struct store_retention *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->store = s;
  r->keep_us = (int64_t)days * US_PER_DAY;
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  if (pthread_create(&r->thread, NULL, retention_main, r) != 0) {
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
    return NULL;
  }
  log_msg(LOG_INFO, "retention: erasing what is older than %ld days", days);
  return r;
}

void store_retention_stop(struct store_retention *r) {
  if (!r) return;
  pthread_mutex_lock(&r->mu);
  r->stop = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  pthread_join(r->thread, NULL);
  pthread_mutex_destroy(&r->mu);
  pthread_cond_destroy(&r->cv);
  free(r);
}
