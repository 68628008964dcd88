/* GET /api/v1/health: the database is "connected" only when a read succeeds and a write
 * commits. Checks are coalesced (store/health.c): a recent result answers at once, at most
 * one check runs, and a stuck database answers "unhealthy" after a bound, never hangs. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/timeutil.h"
#include "core/version.h"
#include "elevenlabs/elevenlabs.h"
#include "ext/redis.h"
#include "outbound/outbound.h"
#include "store/health.h"

struct health_wait {
  struct store_health_wait wait;
  struct http_request *req;
  bool ok;
};

static const char *redis_state(const struct app *app) {
  if (!app->redis) return "not_configured";
  return redis_is_up(app->redis) ? "connected" : "disconnected";
}

/* The broker (QUEUE_URL) as the publisher last saw it, a state like every other dependency's:
 * "connected" | "disconnected"; NULL when none is configured (which broker it is, the start-up
 * log says). */
static const char *queue_state(const struct app *app, bool *down) {
  if (!app->cfg->queue_url || !app->cfg->queue_url[0]) return NULL;
  struct outbound_status st;
  outbound_status(app->outbound, &st);
  *down = !st.queue_connected;
  return st.queue_connected ? "connected" : "disconnected";
}

/* How many subscriptions this instance's dispatcher holds, by why, from its memory
 * (outbound_held: no database read). Counts only: health answers without a key, and which
 * subscriptions (and whose receiver answers 429) is for an admin key (GET /api/v1/subscriptions
 * shows heldReason and heldUntil). NULL when none is held (or no memory: health still answers). */
static json_t *held_json(const struct app *app) {
  struct outbound_held h;
  outbound_held(app->outbound, time_now_us(), &h);
  if (!h.sealed_unreadable && !h.secret_unreadable && !h.retry_after) return NULL;
  return json_pack("{s:I,s:I,s:I}", "secret_unreadable", (json_int_t)h.secret_unreadable,
                   "sealed_unreadable", (json_int_t)h.sealed_unreadable, "retry_after",
                   (json_int_t)h.retry_after);
}

/* The outbox's backlog as the last health check read it (store/health.h): events not yet
 * delivered to a subscription or published to the broker, the age of the oldest of them,
 * and deliveries failed for good, with the held subscriptions (held_json). null when no check
 * has read it. */
static json_t *outbox_json(const struct app *app) {
  struct store_outbox_stats st;
  bool broker = app->cfg->queue_url && app->cfg->queue_url[0];
  if (!store_health_outbox(app->health, broker ? OUTBOUND_QUEUE_CURSOR : NULL, &st))
    return json_null();
  int64_t oldest = st.oldest_pending_us;
  if (st.oldest_queue_us && (!oldest || st.oldest_queue_us < oldest)) oldest = st.oldest_queue_us;
  int64_t age = oldest ? (time_now_us() - oldest) / 1000000 : 0;
  json_t *out =
      json_pack("{s:I,s:I,s:I}", "backlog", (json_int_t)(st.pending_deliveries + st.queue_backlog),
                "oldestAgeSeconds", (json_int_t)(age > 0 ? age : 0), "deadLetters",
                (json_int_t)st.dead_letters);
  json_t *held = out ? held_json(app) : NULL;
  if (held) (void)json_object_set_new(out, "held", held); /* without it when out of memory */
  return out;
}

/* unhealthy (503) without the database; degraded (200) when only Redis, the ElevenLabs API or
 * the broker is away, since webhooks are still accepted then (events wait in the outbox). The
 * ElevenLabs state is the background check's last answer (elevenlabs/health.c), the broker's
 * the publisher's, both read without waiting. */
static void reply_health(struct http_request *req, bool db_ok) {
  const struct app *app = http_request_app(req);
  const char *redis = redis_state(app);
  const char *elevenlabs = el_health_state(app->elevenlabs);
  bool redis_ok = strcmp(redis, "disconnected") != 0;
  bool elevenlabs_ok = strcmp(elevenlabs, "disconnected") != 0;
  bool queue_down = false;
  const char *queue = queue_state(app, &queue_down);
  char now[40];
  time_format_us(time_now_us(), true, now, sizeof now);
  json_t *body = json_pack("{s:s,s:s,s:s,s:{s:s,s:s,s:s},s:o}", "status",
                           !db_ok                                     ? "unhealthy"
                           : redis_ok && elevenlabs_ok && !queue_down ? "healthy"
                                                                      : "degraded",
                           "timestamp", now, "version", GSR_VERSION, "dependencies", "database",
                           db_ok ? "connected" : "disconnected", "redis", redis, "elevenlabs",
                           elevenlabs, "outbox", outbox_json(app));
  if (body && queue)
    (void)json_object_set_new(json_object_get(body, "dependencies"), "queue", json_string(queue));
  http_reply_json(req, db_ok ? 200 : 503, body);
}

/* A monitor thread: the check ended, or the bound passed. */
static void on_checked(struct store_health_wait *w, bool ok) {
  struct health_wait *hw = (struct health_wait *)((char *)w - offsetof(struct health_wait, wait));
  hw->ok = ok;
  http_request_resume(hw->req);
}

static void on_resume(struct http_request *req) {
  struct health_wait *hw = http_request_state(req);
  reply_health(req, hw->ok);
}

void api_health_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  bool ok;
  /* Asks the checks for the outbox's numbers from now on (the first check reads them). */
  struct store_outbox_stats unused;
  (void)store_health_outbox(
      app->health, app->cfg->queue_url && app->cfg->queue_url[0] ? OUTBOUND_QUEUE_CURSOR : NULL,
      &unused);
  if (store_health_recent(app->health, &ok)) {
    reply_health(req, ok);
    return;
  }
  struct health_wait *hw = calloc(1, sizeof *hw);
  if (!hw) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  hw->req = req;
  hw->wait.done = on_checked;
  /* Suspend first: the answer may come before store_health_wait returns. */
  http_request_suspend(req, on_resume, hw, free);
  store_health_wait(app->health, &hw->wait);
}
