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

/* unhealthy (503) without the database; degraded (200) when only Redis or the ElevenLabs API
 * is away, since webhooks are still accepted then. The ElevenLabs state is the background
 * check's last answer (elevenlabs/health.c), read without waiting. */
static void reply_health(struct http_request *req, bool db_ok) {
  const struct app *app = http_request_app(req);
  const char *redis = redis_state(app);
  const char *elevenlabs = el_health_state(app->elevenlabs);
  bool redis_ok = strcmp(redis, "disconnected") != 0;
  bool elevenlabs_ok = strcmp(elevenlabs, "disconnected") != 0;
  char now[40];
  time_format_us(time_now_us(), true, now, sizeof now);
  json_t *body =
      json_pack("{s:s,s:s,s:s,s:{s:s,s:s,s:s}}", "status",
                !db_ok                      ? "unhealthy"
                : redis_ok && elevenlabs_ok ? "healthy"
                                            : "degraded",
                "timestamp", now, "version", GSR_VERSION, "dependencies", "database",
                db_ok ? "connected" : "disconnected", "redis", redis, "elevenlabs", elevenlabs);
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
