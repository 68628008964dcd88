/* Group-commit queue. */
#include "store/write_queue.h"

#include <stdio.h>

#include "core/metrics.h"
#include "core/timeutil.h"
#include "ext/crypto.h"

void write_queue_init(struct write_queue *q, size_t batch_max) {
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  q->head = q->tail = NULL;
  q->batch_max = batch_max;
  q->stopping = false;
  q->last_processed_us = 0;
}

void write_queue_destroy(struct write_queue *q) {
  write_queue_finish(q->head, STORE_RETRY);
  q->head = q->tail = NULL;
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->cv);
}

void write_queue_push(struct write_queue *q, struct store_write *w) {
  w->next = NULL;
  pthread_mutex_lock(&q->mu);
  bool refused = q->stopping;
  if (!refused) {
    if (q->tail)
      q->tail->next = w;
    else
      q->head = w;
    q->tail = w;
    pthread_cond_signal(&q->cv);
  }
  pthread_mutex_unlock(&q->mu);
  if (refused) write_queue_finish(w, STORE_RETRY);
}

struct store_write *write_queue_take(struct write_queue *q) {
  pthread_mutex_lock(&q->mu);
  while (!q->head && !q->stopping) pthread_cond_wait(&q->cv, &q->mu);
  struct store_write *batch = q->head, *last = q->head;
  for (size_t n = 1; last && last->next && n < q->batch_max; n++) last = last->next;
  if (last) {
    q->head = last->next;
    if (!q->head) q->tail = NULL;
    last->next = NULL;
  }
  pthread_mutex_unlock(&q->mu);
  return batch;
}

void write_queue_stop(struct write_queue *q) {
  pthread_mutex_lock(&q->mu);
  q->stopping = true;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

static void count_error(enum store_status status) {
  switch (status) {
    case STORE_RETRY:
      metrics_store_error(METRICS_STORE_RETRY);
      break;
    case STORE_CLIENT:
      metrics_store_error(METRICS_STORE_CLIENT);
      break;
    case STORE_HARD:
      metrics_store_error(METRICS_STORE_HARD);
      break;
    case STORE_OK:
    case STORE_NOT_FOUND:
      break;
  }
}

void write_queue_commit_begin(struct write_queue *q, const struct store_write *batch) {
  /* Health's probe writes are left out: a health check (or a monitor polling it) must not
   * show as commits, and a batch of probes alone is not counted at all. */
  size_t n = 0;
  for (; batch; batch = batch->next)
    if (batch->kind != STORE_WRITE_PROBE) n++;
  q->batch_n = n;
  q->batch_start_ms = time_mono_ms();
}

void write_queue_commit_end(struct write_queue *q) {
  if (!q->batch_n) return;
  double ms = time_mono_ms() - q->batch_start_ms;
  metrics_store_commit(q->batch_n, ms > 0 ? (uint64_t)(ms * 1e6) : 0);
}

void write_queue_finish(struct store_write *batch, enum store_status status) {
  while (batch) {
    count_error(status);
    struct store_write *next = batch->next; /* done() may free batch */
    batch->next = NULL;
    batch->status = status;
    if (status != STORE_OK) batch->duplicate = false;
    batch->done(batch, batch->done_cls);
    batch = next;
  }
}

void write_queue_finish_one(struct store_write **head, struct store_write *w,
                            enum store_status status) {
  for (struct store_write **p = head; *p; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      w->next = NULL;
      write_queue_finish(w, status);
      return;
    }
  }
}

bool write_queue_stamp(struct write_queue *q, struct store_write *w) {
  char hex[33];
  if (!crypto_random_hex(hex, sizeof hex, 16)) return false;
  snprintf(w->webhook_id, sizeof w->webhook_id, "webhook_%s", hex);
  int64_t now = time_now_us();
  if (now <= q->last_processed_us) now = q->last_processed_us + 1;
  q->last_processed_us = w->processed_us = now;
  return true;
}
