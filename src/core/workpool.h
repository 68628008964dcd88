/* A fixed set of threads for work that may wait on the network or a lock (database reads,
 * Redis round trips), so that libmicrohttpd's event threads never do. The queue is bounded:
 * a full queue refuses a job (its request answers 503) instead of growing. */
#ifndef GSR_WORKPOOL_H
#define GSR_WORKPOOL_H

#include <stdbool.h>
#include <stddef.h>

struct workpool_job {
  /* Runs on a pool thread. The pool does not touch the job once run has been called, so run
   * may end by handing the job's memory to another thread. */
  void (*run)(struct workpool_job *job);
  struct workpool_job *next; /* the pool's queue link */
};

struct workpool;

/* Starts threads threads; at most queue_max jobs wait for one. NULL when a thread or memory
 * could not be had. */
__attribute__((warn_unused_result)) struct workpool *workpool_new(size_t threads, size_t queue_max);
/* Queues job (not owned). False, job untouched, when the queue is full or the pool stops. */
__attribute__((warn_unused_result)) bool workpool_submit(struct workpool *p,
                                                         struct workpool_job *job);
/* Queues job (not owned) past queue_max: for the next step of work already admitted (a
 * streamed answer's next piece), which the queue's limit must not cut short. The caller keeps
 * it bounded (at most one such job per open stream). False only when the pool stops. */
__attribute__((warn_unused_result)) bool workpool_submit_admitted(struct workpool *p,
                                                                  struct workpool_job *job);
/* Runs what is queued, stops the threads, frees the pool. */
void workpool_free(struct workpool *p);

#endif
