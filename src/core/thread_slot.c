/* Per-thread objects: a pthread key for the lookup, a list so that they can all be freed. */
#include "core/thread_slot.h"

#include <stdlib.h>

struct thread_slot_item {
  void *obj;
  struct thread_slot_item *next;
};

bool thread_slot_init(struct thread_slot *ts) {
  ts->items = NULL;
  ts->ready = false;
  if (pthread_key_create(&ts->key, NULL) != 0) return false;
  if (pthread_mutex_init(&ts->mu, NULL) != 0) {
    pthread_key_delete(ts->key);
    return false;
  }
  ts->ready = true;
  return true;
}

void *thread_slot_get(struct thread_slot *ts, void *(*make)(void *ctx), void *ctx) {
  if (!ts->ready) return NULL;
  void *obj = pthread_getspecific(ts->key);
  if (obj) return obj;
  struct thread_slot_item *item = malloc(sizeof *item);
  if (!item) return NULL;
  obj = make(ctx);
  if (!obj) {
    free(item);
    return NULL;
  }
  item->obj = obj;
  pthread_setspecific(ts->key, obj);
  pthread_mutex_lock(&ts->mu);
  item->next = ts->items;
  ts->items = item;
  pthread_mutex_unlock(&ts->mu);
  return obj;
}

void thread_slot_destroy(struct thread_slot *ts, void (*release)(void *obj)) {
  if (!ts->ready) return;
  for (struct thread_slot_item *item = ts->items, *next; item; item = next) {
    next = item->next;
    release(item->obj);
    free(item);
  }
  ts->items = NULL;
  pthread_key_delete(ts->key);
  pthread_mutex_destroy(&ts->mu);
  ts->ready = false;
}
