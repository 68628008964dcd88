/* The publisher both brokers share: opening by URL scheme, connecting lazily and at most once a
 * second, the acknowledged prefix, and the state health reads from any thread. */
#include "queue/queue.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "queue/queue_impl.h"

enum { LOGGED_NONE, LOGGED_UP, LOGGED_DOWN };

void queue_set_down(struct queue *q, const char *why) {
  pthread_mutex_lock(&q->err_mu);
  snprintf(q->err, sizeof q->err, "%s", why && *why ? why : "unknown failure");
  pthread_mutex_unlock(&q->err_mu);
  atomic_store(&q->connected, false);
  if (atomic_exchange(&q->logged, LOGGED_DOWN) != LOGGED_DOWN)
    log_msg(LOG_WARNING, "queue (%s) unreachable: %s; events wait in the outbox", q->ops->kind,
            why && *why ? why : "unknown failure");
}

void queue_set_up(struct queue *q) {
  pthread_mutex_lock(&q->err_mu);
  q->err[0] = '\0';
  pthread_mutex_unlock(&q->err_mu);
  atomic_store(&q->connected, true);
  if (atomic_exchange(&q->logged, LOGGED_UP) != LOGGED_UP)
    log_msg(LOG_INFO, "queue (%s) connected", q->ops->kind);
}

struct queue *queue_open(const char *url, const char *stream, long maxlen, long timeout_ms,
                         char *err, size_t errlen) {
  const struct queue_ops *ops = NULL;
  if (url && strncmp(url, "redis://", 8) == 0)
    ops = &queue_redis_ops;
  else if (url && strncmp(url, "nats://", 7) == 0)
    ops = &queue_nats_ops;
  if (!ops) {
    snprintf(err, errlen, "QUEUE_URL: must start with redis:// or nats://");
    return NULL;
  }
  struct queue *q = calloc(1, sizeof *q);
  if (!q) {
    snprintf(err, errlen, "QUEUE_URL: out of memory");
    return NULL;
  }
  q->ops = ops;
  q->maxlen = maxlen > 0 ? maxlen : 1;
  q->timeout_ms = timeout_ms > 0 ? timeout_ms : 5000;
  int sn = snprintf(q->stream, sizeof q->stream, "%s", stream && *stream ? stream : "");
  if (ops == &queue_redis_ops && (sn <= 0 || (size_t)sn >= sizeof q->stream)) {
    snprintf(err, errlen, "QUEUE_STREAM: must hold 1 to %zu bytes", sizeof q->stream - 1);
    free(q);
    return NULL;
  }
  pthread_mutex_init(&q->err_mu, NULL);
  atomic_init(&q->connected, false);
  atomic_init(&q->logged, LOGGED_NONE);
  bool ok = ops == &queue_redis_ops ? queue_redis_open(q, url, err, errlen)
                                    : queue_nats_open(q, url, err, errlen);
  if (!ok) {
    pthread_mutex_destroy(&q->err_mu);
    free(q);
    return NULL;
  }
  return q;
}

static void sleep_ms(double ms) {
  if (ms <= 0) return;
  struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (double)(long)(ms / 1000) * 1000) * 1e6)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Connects when no connection is held. A publish waits for the next allowed attempt (so a
 * caller retrying in a loop never spins); a probe (n 0) does not wait. */
static bool ensure_connected(struct queue *q, bool wait) {
  if (q->ops->held(q)) return true;
  if (atomic_load(&q->connected)) queue_set_down(q, "the broker closed the connection");
  if (q->tried) {
    double left = q->last_connect_ms + QUEUE_RECONNECT_MS - time_mono_ms();
    if (left > 0) {
      if (!wait) return false;
      sleep_ms(left);
    }
  }
  q->ops->disconnect(q); /* a connection the broker closed meanwhile */
  q->tried = true;
  q->last_connect_ms = time_mono_ms();
  char why[160] = "";
  if (!q->ops->connect(q, why, sizeof why)) {
    q->ops->disconnect(q);
    queue_set_down(q, why);
    return false;
  }
  return true;
}

size_t queue_publish(struct queue *q, const struct queue_msg *msgs, size_t n) {
  if (!ensure_connected(q, n > 0)) return 0;
  char why[160] = "";
  if (n == 0) {
    if (!q->ops->ping(q, why, sizeof why)) {
      q->ops->disconnect(q);
      queue_set_down(q, why);
      return 0;
    }
    queue_set_up(q);
    return 0;
  }
  size_t done = q->ops->publish(q, msgs, n, why, sizeof why);
  if (done < n) {
    q->ops->disconnect(q);
    queue_set_down(q, why);
  } else {
    queue_set_up(q);
  }
  return done;
}

size_t queue_max_message(const struct queue *q) { return q->max_message; }

bool queue_connected(const struct queue *q) { return atomic_load(&q->connected); }

const char *queue_kind(const struct queue *q) { return q->ops->kind; }

void queue_last_error(const struct queue *q, char *out, size_t len) {
  if (!len) return;
  struct queue *m = (struct queue *)q; /* the mutex is the only thing changed */
  pthread_mutex_lock(&m->err_mu);
  snprintf(out, len, "%s", q->err);
  pthread_mutex_unlock(&m->err_mu);
}

void queue_close(struct queue *q) {
  if (!q) return;
  q->ops->disconnect(q);
  q->ops->free(q);
  pthread_mutex_destroy(&q->err_mu);
  free(q);
}
