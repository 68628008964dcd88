/* GET /api/v1/health: the database is "connected" only when a read succeeds and a write
 * commits (the probe goes through the same writer as webhooks). */
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/timeutil.h"
#include "core/version.h"
#include "ext/redis.h"

struct probe {
  struct store_write write;
  struct http_request *req;
};

static const char *redis_state(const struct app *app) {
  if (!app->redis) return "not_configured";
  return redis_is_up(app->redis) ? "connected" : "disconnected";
}

/* unhealthy (503) without the database; degraded (200) when only Redis is away, since
 * webhooks are still accepted then. */
static void reply_health(struct http_request *req, bool db_ok) {
  const struct app *app = http_request_app(req);
  const char *redis = redis_state(app);
  bool redis_ok = strcmp(redis, "disconnected") != 0;
  char now[40];
  time_format_us(time_now_us(), true, now, sizeof now);
  json_t *body = json_pack("{s:s,s:s,s:s,s:{s:s,s:s,s:s}}", "status",
                           !db_ok     ? "unhealthy"
                           : redis_ok ? "healthy"
                                      : "degraded",
                           "timestamp", now, "version", GSR_VERSION, "dependencies", "database",
                           db_ok ? "connected" : "disconnected", "redis", redis, "elevenlabs",
                           "not_configured");
  http_reply_json(req, db_ok ? 200 : 503, body);
}

static void on_probed(struct store_write *w, void *cls) {
  (void)w;
  http_request_resume(((struct probe *)cls)->req);
}

static void on_resume(struct http_request *req) {
  struct probe *p = http_request_state(req);
  reply_health(req, p->write.status == STORE_OK);
}

void api_health_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  struct probe *p = calloc(1, sizeof *p);
  if (!p || store_ping_read(app->store) != STORE_OK) {
    free(p);
    reply_health(req, false);
    return;
  }
  p->req = req;
  p->write.kind = STORE_WRITE_PROBE;
  p->write.done = on_probed;
  p->write.done_cls = p;
  http_request_suspend(req, on_resume, p, free);
  store_submit(app->store, &p->write);
}
