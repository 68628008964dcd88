/* GET /metrics: every metric (core/metrics.h) in the Prometheus text exposition format, for a
 * Prometheus server to scrape. Open unless METRICS_TOKEN is set; then it takes that token as a
 * Bearer token, compared in constant time. Nothing here waits or touches the database: the
 * counters are read from memory, and the outbox backlog is what the health monitor last read
 * (a stale count asks the monitor's thread for a read-only refresh, seen by a later scrape;
 * never a health check, whose probe is a committed write). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/metrics.h"
#include "ext/crypto.h"
#include "http/auth.h"
#include "outbound/outbound.h"
#include "store/health.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* The Bearer token read as API keys are (http/auth.h: the scheme in any case, the spaces
 * around the token dropped: trailing whitespace is no part of a header's value). Digests make
 * both sides the same length, so the comparison's time says nothing of the token, not even its
 * length. */
static bool token_ok(const char *token, const char *authorization) {
  const char *given;
  size_t len;
  if (!auth_bearer_token(authorization, &given, &len)) return false;
  unsigned char want[CRYPTO_SHA256_LEN], got[CRYPTO_SHA256_LEN];
  crypto_sha256(token, strlen(token), want);
  crypto_sha256(given, len, got);
  return crypto_equal(want, got, sizeof want);
}

/* The backlog as the health monitor last read it (store_health_outbox asks its thread for a
 * read-only refresh when that is stale; this never waits for it). */
static bool outbox_backlog(struct app *app, struct metrics_gauges *g) {
  if (!app->health) return false;
  const char *cursor = app->cfg->queue_url && app->cfg->queue_url[0] ? OUTBOUND_QUEUE_CURSOR : NULL;
  struct store_outbox_stats st;
  if (!store_health_outbox(app->health, cursor, &st)) return false;
  g->outbox_backlog = st.pending_deliveries + st.queue_backlog;
  g->outbox_backlog_capped = st.count_cap > 0 && (st.pending_deliveries >= st.count_cap ||
                                                  st.queue_backlog >= st.count_cap);
  return true;
}

void api_metrics_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  const char *token = app->cfg->metrics_token;
  if (token && token[0] && !token_ok(token, http_request_header(req, "Authorization"))) {
    http_reply_header(req, "WWW-Authenticate", "Bearer");
    http_reply_error(req, API_ERR_UNAUTHORIZED, "GET /metrics requires the METRICS_TOKEN token",
                     NULL);
    return;
  }
  struct metrics_gauges g = {0};
  g.has_backlog = outbox_backlog(app, &g);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  if (!f) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  metrics_render(f, &g);
  if (fclose(f) != 0 || !text) {
    free(text);
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  http_reply_owned(req, 200, CONTENT_TYPE, text, len);
}
