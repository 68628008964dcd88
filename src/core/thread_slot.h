/* One object per calling thread (a database or Redis connection), made on first use and all
 * released together at shutdown, when no thread uses them any more. */
#ifndef GSR_THREAD_SLOT_H
#define GSR_THREAD_SLOT_H

#include <pthread.h>
#include <stdbool.h>

struct thread_slot_item;

struct thread_slot {
  pthread_key_t key;
  pthread_mutex_t mu;
  struct thread_slot_item *items;
  bool ready; /* init succeeded: destroy undoes only what init did */
};

/* False when the process has no thread-specific key left (PTHREAD_KEYS_MAX) or no memory:
 * the caller cannot work without its slots and must fail. thread_slot_destroy is safe either
 * way. */
__attribute__((warn_unused_result)) bool thread_slot_init(struct thread_slot *ts);
/* The calling thread's object; make(ctx) creates it the first time (when it returns NULL, the
 * next call tries again). */
void *thread_slot_get(struct thread_slot *ts, void *(*make)(void *ctx), void *ctx);
/* Releases every object with release(). */
void thread_slot_destroy(struct thread_slot *ts, void (*release)(void *obj));

#endif
