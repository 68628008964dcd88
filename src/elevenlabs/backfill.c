/* `gensendrep elevenlabs backfill`: what ElevenLabs failed to deliver, fetched from its API.
 *
 * Pages through GET /v1/convai/conversations (newest first, 100 a page) and, for every finished
 * conversation the store does not hold, fetches GET /v1/convai/conversations/{id} and stores it
 * exactly as the post_call_transcription webhook would have been: the event
 * {"type":"post_call_transcription","event_timestamp":<now>,"data":<the answer as received>} is
 * kept byte for byte and the conversation derived from it. Each conversation is committed
 * before the next is fetched, so an interrupted run loses nothing and a second run fetches only
 * what is still missing. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "elevenlabs/elevenlabs.h"
#include "ext/crypto.h"
#include "model/elevenlabs.h"

#define BACKFILL_PAGE_SIZE 100
#define BACKFILL_RETRIES 5        /* per request, for 429, 408 and 5xx answers */
#define BACKFILL_MAX_WAIT_S 60    /* the longest Retry-After obeyed (the SDK's cap too) */
#define BACKFILL_STORE_RETRIES 20 /* a busy database (the server writes beside us) */
#define BACKFILL_PATH "/v1/convai/conversations"

struct backfill {
  const struct config *cfg;
  struct store *store;
  const struct el_backfill_options *opt;
  const atomic_bool *stop;
  struct el_backfill_counts *n;
  char *err;
  size_t errlen;
  struct el_api api;
  /* the write in flight */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool written;
};

enum fetch { FETCH_OK, FETCH_NOT_FOUND, FETCH_STOPPED, FETCH_FAILED };

static bool stopped(const struct backfill *b) { return b->stop && atomic_load(b->stop); }

/* Sleeps ms, waking early when the stop flag is set; false when stopped. */
static bool pause_ms(const struct backfill *b, long ms) {
  while (ms > 0 && !stopped(b)) {
    long step = ms < 100 ? ms : 100;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = step * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stopped(b)) {
    }
    ms -= step;
  }
  return !stopped(b);
}

static void clear_progress(struct backfill *b) {
  if (b->opt->progress) {
    fprintf(b->opt->progress, "\r\033[K");
    fflush(b->opt->progress);
  }
}

static void show_progress(struct backfill *b) {
  if (!b->opt->progress) return;
  fprintf(b->opt->progress, "\rbackfill: %ld listed, %ld stored, %ld already present", b->n->listed,
          b->n->stored, b->n->present);
  fflush(b->opt->progress);
}

/* One GET, retried on 429/408/5xx as the API asks. FETCH_OK leaves a 2xx answer in *r. */
static enum fetch fetch(struct backfill *b, const char *path, struct el_api_response *r) {
  for (int attempt = 0;; attempt++) {
    enum el_api_result res = el_api_get(&b->api, path, r);
    if (res == EL_API_STOPPED) return FETCH_STOPPED;
    if (res != EL_API_OK) {
      snprintf(b->err, b->errlen, "cannot reach the ElevenLabs API at %s: %s",
               b->cfg->elevenlabs_api_url, r->error);
      return FETCH_FAILED;
    }
    if (r->status >= 200 && r->status < 300) return FETCH_OK;
    char detail[256];
    el_api_error_detail(r->body, r->body_len, detail, sizeof detail);
    long status = r->status, retry_after = r->retry_after;
    el_api_response_free(r);
    if (status == 401 || status == 403) {
      snprintf(b->err, b->errlen, "ELEVENLABS_API_KEY was refused by the ElevenLabs API (%ld)%s%s",
               status, *detail ? ": " : "", detail);
      return FETCH_FAILED;
    }
    if (status == 404) return FETCH_NOT_FOUND;
    if (status == 429 || status == 408 || status >= 500) {
      if (attempt >= BACKFILL_RETRIES) {
        snprintf(b->err, b->errlen,
                 "the ElevenLabs API still answered %ld after %d retries%s%s; run the backfill "
                 "again later (what is stored stays stored)",
                 status, BACKFILL_RETRIES, *detail ? ": " : "", detail);
        return FETCH_FAILED;
      }
      long wait_ms =
          retry_after > 0
              ? (retry_after > BACKFILL_MAX_WAIT_S ? BACKFILL_MAX_WAIT_S : retry_after) * 1000L
              : 1000L << attempt;
      clear_progress(b);
      fprintf(stderr, "backfill: the ElevenLabs API answered %ld; retrying in %ld s (%d of %d)\n",
              status, (wait_ms + 999) / 1000, attempt + 1, BACKFILL_RETRIES);
      if (!pause_ms(b, wait_ms)) return FETCH_STOPPED;
      continue;
    }
    snprintf(b->err, b->errlen, "the ElevenLabs API answered HTTP %ld to GET %.*s%s%s", status,
             (int)strcspn(path, "?"), path, *detail ? ": " : "", detail);
    return FETCH_FAILED;
  }
}

static void on_written(struct store_write *w, void *cls) {
  (void)w;
  struct backfill *b = cls;
  pthread_mutex_lock(&b->mu);
  b->written = true;
  pthread_cond_signal(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

/* Submits w and waits for the writer's answer. */
static enum store_status write_and_wait(struct backfill *b, struct store_write *w) {
  w->done = on_written;
  w->done_cls = b;
  b->written = false;
  store_submit(b->store, w);
  pthread_mutex_lock(&b->mu);
  while (!b->written) pthread_cond_wait(&b->cv, &b->mu);
  pthread_mutex_unlock(&b->mu);
  return w->status;
}

/* Stores one conversation's detail answer as its post_call_transcription event. false only on
 * a store failure that ends the run; a bad answer is counted in b->n->failed and reported. */
static bool store_detail(struct backfill *b, const char *id, const char *detail, size_t len) {
  char head[96];
  int hl =
      snprintf(head, sizeof head,
               "{\"type\":\"post_call_transcription\",\"event_timestamp\":%" PRId64 ",\"data\":",
               (int64_t)time(NULL));
  size_t total = (size_t)hl + len + 1;
  char *event = malloc(total + 1);
  if (!event) {
    snprintf(b->err, b->errlen, "out of memory");
    return false;
  }
  memcpy(event, head, (size_t)hl);
  memcpy(event + hl, detail, len);
  event[total - 1] = '}';
  event[total] = '\0';

  struct el_names names = {.email_var = b->cfg->elevenlabs_email_variable,
                           .account_var = b->cfg->elevenlabs_account_variable};
  struct el_event ev;
  json_t *problems = NULL;
  char message[256] = "";
  enum model_result mr =
      model_elevenlabs_parse(event, total, &names, &ev, &problems, message, sizeof message);
  if (mr != MODEL_OK || ev.type != EL_POST_CALL_TRANSCRIPTION || !ev.derived) {
    char *why = problems ? json_dumps(problems, JSON_COMPACT) : NULL;
    clear_progress(b);
    fprintf(stderr, "backfill: conversation %s: the API's answer cannot be stored: %s\n", id,
            mr == MODEL_INVALID_JSON || mr == MODEL_NO_MEMORY ? message
            : why                                             ? why
                                                              : "not a conversation");
    free(why);
    json_decref(problems);
    if (mr == MODEL_OK) model_elevenlabs_free(&ev);
    free(event);
    b->n->failed++;
    return true;
  }
  bool ok = false;
  for (int attempt = 0;; attempt++) {
    struct store_write w = {
        .kind = STORE_WRITE_EVENT,
        .conv = &ev.conv,
        .body = ev.derived,
        .body_len = ev.derived_len,
        .event_type = "post_call_transcription",
        .event_conversation_id = ev.conversation_id,
        .event_body = event,
        .event_body_len = total,
        .event_audio_at = -1,
        .audio_fd = -1,
    };
    crypto_sha256(ev.derived, ev.derived_len, w.body_sha256);
    crypto_sha256(event, total, w.event_sha256);
    enum store_status st = write_and_wait(b, &w);
    if (st == STORE_OK) {
      if (w.duplicate)
        b->n->present++;
      else
        b->n->stored++;
      ok = true;
      break;
    }
    if (st == STORE_CLIENT) { /* the database refused these bytes: this one only */
      clear_progress(b);
      fprintf(stderr, "backfill: conversation %s: the database refused its data\n", id);
      b->n->failed++;
      ok = true;
      break;
    }
    if (st == STORE_RETRY && attempt < BACKFILL_STORE_RETRIES && pause_ms(b, 250)) continue;
    snprintf(b->err, b->errlen, "the database could not store conversation %s%s", id,
             st == STORE_RETRY ? " (busy or unavailable; run the backfill again)" : "");
    break;
  }
  model_elevenlabs_free(&ev);
  free(event);
  return ok;
}

/* The store's answer to "do we hold id?", a busy database retried. */
static enum store_status held(struct backfill *b, const char *id) {
  for (int attempt = 0;; attempt++) {
    struct store_conversation c;
    enum store_status st = store_get(b->store, id, false, &c);
    if (st == STORE_OK) free(c.body);
    if (st != STORE_RETRY || attempt >= BACKFILL_STORE_RETRIES || !pause_ms(b, 250)) return st;
  }
}

/* One listed conversation. */
static enum el_backfill_result one(struct backfill *b, const struct el_page_item *item) {
  const char *id = item->conversation_id, *status = item->status;
  b->n->listed++;
  if (!id) {
    clear_progress(b);
    fprintf(stderr, "backfill: a listed conversation has no conversation_id\n");
    b->n->failed++;
    return EL_BACKFILL_OK;
  }
  /* Unfinished calls are left to the webhook ElevenLabs sends when they end; the API's own
   * filter is trusted for --since, and checked again. */
  if (!status || (strcmp(status, "done") != 0 && strcmp(status, "failed") != 0) ||
      (b->opt->has_since && item->has_start && item->start_unix < b->opt->since_unix)) {
    b->n->skipped++;
    return EL_BACKFILL_OK;
  }
  switch (held(b, id)) {
    case STORE_OK:
      b->n->present++;
      return EL_BACKFILL_OK;
    case STORE_NOT_FOUND:
      break;
    case STORE_CLIENT: /* an id the database cannot hold: the parse reports it below */
      break;
    case STORE_RETRY:
    case STORE_HARD:
      snprintf(b->err, b->errlen, "the database could not be read (conversation %s)", id);
      return EL_BACKFILL_FAILED;
  }
  char *esc = el_api_escape(id);
  size_t plen = strlen(BACKFILL_PATH) + 2 + (esc ? strlen(esc) : 0);
  char *path = esc ? malloc(plen) : NULL;
  if (!path) {
    free(esc);
    snprintf(b->err, b->errlen, "out of memory");
    return EL_BACKFILL_FAILED;
  }
  snprintf(path, plen, "%s/%s", BACKFILL_PATH, esc);
  free(esc);
  struct el_api_response r;
  enum fetch f = fetch(b, path, &r);
  free(path);
  enum el_backfill_result res = EL_BACKFILL_OK;
  switch (f) {
    case FETCH_OK:
      if (!store_detail(b, id, r.body, r.body_len)) res = EL_BACKFILL_FAILED;
      el_api_response_free(&r);
      break;
    case FETCH_NOT_FOUND: /* deleted since it was listed */
      b->n->skipped++;
      break;
    case FETCH_STOPPED:
      res = EL_BACKFILL_INTERRUPTED;
      break;
    case FETCH_FAILED:
      res = EL_BACKFILL_FAILED;
      break;
  }
  return res;
}

/* The list request for the page after cursor (NULL: the first). */
static char *list_path(const struct backfill *b, const char *cursor) {
  char *agent = b->opt->agent_id ? el_api_escape(b->opt->agent_id) : NULL;
  char *cur = cursor ? el_api_escape(cursor) : NULL;
  size_t cap = strlen(BACKFILL_PATH) + 128 + (agent ? strlen(agent) : 0) + (cur ? strlen(cur) : 0);
  char *p = malloc(cap);
  if (p && (!b->opt->agent_id || agent) && (!cursor || cur)) {
    int n = snprintf(p, cap, "%s?page_size=%d", BACKFILL_PATH, BACKFILL_PAGE_SIZE);
    if (agent) n += snprintf(p + n, cap - (size_t)n, "&agent_id=%s", agent);
    if (b->opt->has_since)
      n += snprintf(p + n, cap - (size_t)n, "&call_start_after_unix=%" PRId64, b->opt->since_unix);
    if (cur) snprintf(p + n, cap - (size_t)n, "&cursor=%s", cur);
  } else {
    free(p);
    p = NULL;
  }
  free(agent);
  free(cur);
  return p;
}

static enum el_backfill_result run(struct backfill *b) {
  char *cursor = NULL;
  enum el_backfill_result res = EL_BACKFILL_OK;
  for (;;) {
    if (stopped(b)) {
      res = EL_BACKFILL_INTERRUPTED;
      break;
    }
    char *path = list_path(b, cursor);
    if (!path) {
      snprintf(b->err, b->errlen, "out of memory");
      res = EL_BACKFILL_FAILED;
      break;
    }
    struct el_api_response r;
    enum fetch f = fetch(b, path, &r);
    free(path);
    if (f != FETCH_OK) {
      if (f == FETCH_NOT_FOUND)
        snprintf(b->err, b->errlen,
                 "the ElevenLabs API at %s has no %s (is ELEVENLABS_API_URL right?)",
                 b->cfg->elevenlabs_api_url, BACKFILL_PATH);
      res = f == FETCH_STOPPED ? EL_BACKFILL_INTERRUPTED : EL_BACKFILL_FAILED;
      break;
    }
    struct el_page page;
    bool parsed = el_page_parse(r.body, r.body_len, &page);
    el_api_response_free(&r);
    if (!parsed) {
      snprintf(b->err, b->errlen, "the ElevenLabs API answered %s with no conversations list",
               BACKFILL_PATH);
      res = EL_BACKFILL_FAILED;
      break;
    }
    for (size_t i = 0; i < page.count && res == EL_BACKFILL_OK; i++) {
      res = one(b, &page.items[i]);
      show_progress(b);
      if (res == EL_BACKFILL_OK && stopped(b)) res = EL_BACKFILL_INTERRUPTED;
    }
    /* A cursor that does not move would loop forever: the listing is done then. */
    bool more = page.has_more && !(cursor && strcmp(cursor, page.next_cursor) == 0);
    free(cursor);
    cursor = more && res == EL_BACKFILL_OK ? strdup(page.next_cursor) : NULL;
    el_page_free(&page);
    if (res != EL_BACKFILL_OK || !more) break;
    if (!cursor) {
      snprintf(b->err, b->errlen, "out of memory");
      res = EL_BACKFILL_FAILED;
      break;
    }
  }
  free(cursor);
  return res;
}

enum el_backfill_result el_backfill_run(const struct config *cfg, struct store *store,
                                        const struct el_backfill_options *opt,
                                        const atomic_bool *stop, struct el_backfill_counts *counts,
                                        char *err, size_t errlen) {
  *counts = (struct el_backfill_counts){0};
  struct backfill b = {
      .cfg = cfg,
      .store = store,
      .opt = opt,
      .stop = stop,
      .n = counts,
      .err = err,
      .errlen = errlen,
      .api = {.base_url = cfg->elevenlabs_api_url, .key = cfg->elevenlabs_api_key, .stop = stop}};
  pthread_mutex_init(&b.mu, NULL);
  pthread_cond_init(&b.cv, NULL);
  enum el_backfill_result res = run(&b);
  clear_progress(&b);
  el_api_close(&b.api);
  pthread_cond_destroy(&b.cv);
  pthread_mutex_destroy(&b.mu);
  if (res == EL_BACKFILL_OK && counts->failed > 0) {
    snprintf(err, errlen, "%ld conversation%s could not be stored (see above)", counts->failed,
             counts->failed == 1 ? "" : "s");
    res = EL_BACKFILL_FAILED;
  }
  return res;
}
