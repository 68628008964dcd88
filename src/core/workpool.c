/* The worker pool: a mutex-protected FIFO and threads that take jobs from it. */
#include "core/workpool.h"

#include <pthread.h>
#include <stdlib.h>

struct workpool {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct workpool_job *head, *tail;
  size_t queued, queue_max;
  bool stopping;
  size_t nthreads;
  pthread_t threads[];
};

static void *worker_main(void *arg) {
  struct workpool *p = arg;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->head && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
    struct workpool_job *job = p->head;
    if (!job) break; /* stopping and drained */
    p->head = job->next;
    if (!p->head) p->tail = NULL;
    p->queued--;
    pthread_mutex_unlock(&p->mu);
    job->run(job);
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static void stop_and_join(struct workpool *p) {
  pthread_mutex_lock(&p->mu);
  p->stopping = true;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
}

struct workpool *workpool_new(size_t threads, size_t queue_max) {
  if (threads == 0 || queue_max == 0) return NULL;
  struct workpool *p = calloc(1, sizeof *p + threads * sizeof p->threads[0]);
  if (!p) return NULL;
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->queue_max = queue_max;
  for (; p->nthreads < threads; p->nthreads++) {
    if (pthread_create(&p->threads[p->nthreads], NULL, worker_main, p) != 0) {
      workpool_free(p);
      return NULL;
    }
    pthread_setname_np(p->threads[p->nthreads], "gsr-work");
  }
  return p;
}

static bool submit(struct workpool *p, struct workpool_job *job, bool admitted) {
  pthread_mutex_lock(&p->mu);
  bool ok = !p->stopping && (admitted || p->queued < p->queue_max);
  if (ok) {
    job->next = NULL;
    if (p->tail)
      p->tail->next = job;
    else
      p->head = job;
    p->tail = job;
    p->queued++;
    pthread_cond_signal(&p->cv);
  }
  pthread_mutex_unlock(&p->mu);
  return ok;
}

bool workpool_submit(struct workpool *p, struct workpool_job *job) { return submit(p, job, false); }

bool workpool_submit_admitted(struct workpool *p, struct workpool_job *job) {
  return submit(p, job, true);
}

void workpool_free(struct workpool *p) {
  if (!p) return;
  stop_and_join(p);
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  free(p);
}
