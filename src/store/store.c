/* Backend selection from DATABASE_URL, and helpers shared by every backend. */
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/dsn.h"
#include "store/write_queue.h"

struct store *store_open(const char *url, char *err, size_t errlen) {
  return store_open_wait(url, 0, err, errlen);
}

struct store *store_open_wait(const char *url, int wait_seconds, char *err, size_t errlen) {
  const char *path = dsn_sqlite_path(url);
  if (path) {
    if (!*path) {
      snprintf(err, errlen, "DATABASE_URL: sqlite URL has no file path");
      return NULL;
    }
    return store_sqlite_open(path, err, errlen);
  }
  if (dsn_is_postgres(url)) return store_pg_open(url, wait_seconds, err, errlen);
  snprintf(err, errlen, "DATABASE_URL: unsupported scheme");
  return NULL;
}

void store_close(struct store *s) {
  if (s) s->ops->close(s);
}

struct submit_wait {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
};

static void wait_done(struct store_write *w, void *cls) {
  (void)w;
  struct submit_wait *sw = cls;
  pthread_mutex_lock(&sw->lock);
  sw->done = true;
  pthread_cond_signal(&sw->cond);
  pthread_mutex_unlock(&sw->lock);
}

void store_submit_wait(struct store *s, struct store_write *w) {
  struct submit_wait sw = {.done = false};
  pthread_mutex_init(&sw.lock, NULL);
  pthread_cond_init(&sw.cond, NULL);
  w->done = wait_done;
  w->done_cls = &sw;
  store_submit(s, w);
  pthread_mutex_lock(&sw.lock);
  while (!sw.done) pthread_cond_wait(&sw.cond, &sw.lock);
  pthread_mutex_unlock(&sw.lock);
  pthread_cond_destroy(&sw.cond);
  pthread_mutex_destroy(&sw.lock);
}

void store_outbox_events_free(struct store_outbox_event *ev, size_t count) {
  for (size_t i = 0; ev && i < count; i++) free(ev[i].data);
  free(ev);
}

void store_jobs_free(struct store_outbox_work *w) {
  for (size_t i = 0; w->jobs && i < w->count; i++) free(w->jobs[i].event.data);
  free(w->jobs);
  w->jobs = NULL;
  store_outbox_events_free(w->events, w->count);
  w->events = NULL;
  w->count = 0;
}

void store_page_free(struct store_page *p) {
  for (size_t i = 0; i < p->count; i++) free(p->items[i].body);
  free(p->items);
  memset(p, 0, sizeof *p);
}

void store_events_free(struct store_events *e) {
  for (size_t i = 0; i < e->count; i++) free(e->items[i].body);
  free(e->items);
  memset(e, 0, sizeof *e);
}

char *store_accounts_json(const char *const *accounts, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++)
    if (json_array_append_new(a, json_string(accounts[i])) != 0) {
      json_decref(a);
      return NULL;
    }
  char *text = a ? json_dumps(a, JSON_COMPACT) : NULL;
  json_decref(a);
  return text;
}

const char *store_write_conversation_id(const struct store_write *w) {
  if (w->kind == STORE_WRITE_CONVERSATION) return w->conv->conversation_id;
  if (w->kind == STORE_WRITE_EVENT) return w->event_conversation_id;
  if (w->kind == STORE_WRITE_ERASE) return w->erase_conversation_id;
  return NULL;
}

bool store_write_is_key(const struct store_write *w) {
  return w->kind == STORE_WRITE_KEY_CREATE || w->kind == STORE_WRITE_KEY_REVOKE ||
         w->kind == STORE_WRITE_KEY_TOUCH;
}

/* Callers calloc their writes, so audio_fd is 0 in every write but an event's: only an event
 * write's audio_fd means anything. */
bool store_write_has_audio(const struct store_write *w) {
  return w->kind == STORE_WRITE_EVENT && w->audio_fd >= 0 && w->audio_len >= 0;
}

int store_audio_pread(const struct store_write *w, int64_t off, void *buf, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(w->audio_fd, (char *)buf + done, len - done, (off_t)(off + (int64_t)done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno ? errno : EIO;
    if (n == 0) return EIO; /* shorter than announced */
    done += (size_t)n;
  }
  return 0;
}

bool store_audio_piece(int64_t offset, int64_t end, int64_t slice_start, const void *data,
                       size_t len, unsigned char *buf, size_t *got) {
  int64_t from = offset > slice_start ? offset : slice_start;
  int64_t to = slice_start + (int64_t)len;
  if (to > end) to = end;
  if (from != offset + (int64_t)*got || to < from) return false; /* a gap or an overlap */
  if (to > from)
    memcpy(buf + (from - offset), (const unsigned char *)data + (from - slice_start),
           (size_t)(to - from));
  *got = (size_t)(to - offset);
  return true;
}
