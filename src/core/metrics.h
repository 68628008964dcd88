/* Process-wide counters and histograms for GET /metrics (Prometheus text format). Every
 * recording function is lock-free (relaxed atomics on fixed arrays, no allocation), so any
 * thread may call it on its hot path: an HTTP event thread, the store's writer, the outbound
 * dispatcher. Label values are bounded: routes are the route table's patterns (at most
 * METRICS_ROUTES_MAX, anything else is "unmatched"), methods a fixed list, statuses the few
 * codes the server answers (a route/method pair keeps METRICS_STATUS_SLOTS of them). */
#ifndef GSR_METRICS_H
#define GSR_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define METRICS_ROUTES_MAX 64
#define METRICS_ROUTE_PATTERN_MAX 96
/* The route index of a request that matched no route (404, 405, a refused target...). */
#define METRICS_ROUTE_UNMATCHED (-1)

enum metrics_source { METRICS_SOURCE_CONVERSATION, METRICS_SOURCE_ELEVENLABS, METRICS_SOURCE_N };
enum metrics_limit {
  METRICS_LIMIT_WEBHOOK,
  METRICS_LIMIT_API,
  METRICS_LIMIT_SIGNED,
  METRICS_LIMIT_N
};
/* A write the store finished without storing it, by store status. */
enum metrics_store_error {
  METRICS_STORE_RETRY,  /* transient: 503 */
  METRICS_STORE_CLIENT, /* refused data the client sent: 400 */
  METRICS_STORE_HARD,   /* a bug or corruption: 500 */
  METRICS_STORE_ERROR_N
};
/* How a delivery attempt of the outbound dispatcher ended. */
enum metrics_delivery {
  METRICS_DELIVERY_DELIVERED,
  METRICS_DELIVERY_RETRYING,
  METRICS_DELIVERY_FAILED,
  METRICS_DELIVERY_DISABLED,
  METRICS_DELIVERY_N
};

/* Names the routes (their patterns, e.g. "/api/v1/conversations/{conversation_id}") before
 * requests are counted; index i of metrics_http_request is patterns[i]. Copied. False (and
 * nothing named) when n exceeds METRICS_ROUTES_MAX or a pattern does not fit
 * METRICS_ROUTE_PATTERN_MAX: the server refuses to start rather than count such routes as
 * unmatched. Call once at start-up, before serving: the table is read-only afterwards. */
__attribute__((warn_unused_result)) bool metrics_http_routes(const char *const *patterns, size_t n);
/* One request answered (or ended) with status (0: no answer, the client left) after
 * duration_ns. route: an index given to metrics_http_routes, or METRICS_ROUTE_UNMATCHED. */
void metrics_http_request(int route, const char *method, unsigned status, uint64_t duration_ns);
/* A connection opened (+1) or closed (-1). */
void metrics_connections_add(int delta);
/* A request answered 401 or 403 (no valid key or signature, or a key without the scope). */
void metrics_auth_failure(void);
void metrics_rate_limited(enum metrics_limit limit);
/* A webhook answered 200; redelivered: it changed nothing (byte-identical redelivery). */
void metrics_webhook_accepted(enum metrics_source source, bool redelivered);
/* A group commit of n writes that took duration_ns (committed or not). */
void metrics_store_commit(size_t n, uint64_t duration_ns);
void metrics_store_error(enum metrics_store_error kind);
void metrics_delivery(enum metrics_delivery outcome);

/* Values read at scrape time from elsewhere (the outbox backlog as the last health check read
 * it): has_backlog false leaves the gauge out. */
struct metrics_gauges {
  bool has_backlog;
  int64_t outbox_backlog;
  bool outbox_backlog_capped; /* a count stopped at the store's cap: the backlog is at least */
};
/* Writes every metric in the Prometheus text exposition format (version 0.0.4) to f. */
void metrics_render(FILE *f, const struct metrics_gauges *g);

/* Clears every value and route name (tests). */
void metrics_reset(void);

#endif
