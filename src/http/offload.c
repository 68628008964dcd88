/* Work that may wait (database reads, Redis round trips) runs on the offload pool, never on
 * libmicrohttpd's event threads: the request is suspended, a pool thread runs the work and
 * resumes it, and the endpoint's on_resume replies on the event thread as after any
 * suspension. A full queue answers 503 at once rather than letting waiting work pile up.
 *
 * The rate limiter decides on the event thread whenever it can (no Redis, Redis down, or a
 * client far from its limit with fresh counts: the webhook's hot path). When only Redis can
 * decide, the headers call leaves the decision deferred and the final call offloads it here,
 * before anything else is answered: the limit comes first, as if decided from the headers. */
#include <stdio.h>

#include "core/timeutil.h"
#include "core/workpool.h"
#include "http/server_internal.h"

static void run_job(struct workpool_job *job) {
  struct http_request *req =
      (struct http_request *)((char *)job - offsetof(struct http_request, job));
  req->work(req->state_data);
  http_request_resume(req); /* the last touch: req may be answered and freed at once */
}

static void reply_busy(struct http_request *req) {
  http_reply_header(req, "Retry-After", "1");
  http_reply_error(req, API_ERR_UNAVAILABLE, "The server is busy; retry", NULL);
}

void http_request_offload(struct http_request *req, void (*work)(void *state),
                          void (*on_resume)(struct http_request *), void *state,
                          void (*free_state)(void *)) {
  req->work = work;
  req->job.run = run_job;
  /* Suspend first: a pool thread may finish the work before workpool_submit returns. */
  http_request_suspend(req, on_resume, state, free_state);
  if (!workpool_submit(req->server->pool, &req->job)) {
    /* No other thread has the request: this one may still write it. */
    req->on_resume = reply_busy;
    http_request_resume(req);
  }
}

/* ---- rate-limit decisions only Redis can make ---- */

void offload_limit_defer(struct http_request *req, struct ratelimit *rl, const char *key) {
  req->limit_deferred = true;
  req->limit_rl = rl;
  snprintf(req->limit_key, sizeof req->limit_key, "%s", key);
}

static void decide_limit(void *state) {
  struct http_request *req = state;
  /* Wall-clock time: with Redis, every instance's windows must agree on the seconds. */
  ratelimit_hit(req->limit_rl, req->limit_key, time_now_us() / 1000, &req->limit);
}

void offload_limit_start(struct http_request *req, void (*on_decided)(struct http_request *)) {
  req->limit_deferred = false;
  http_request_offload(req, decide_limit, on_decided, req, NULL);
}

void offload_limit_retry_after(struct http_request *req) {
  char v[24];
  snprintf(v, sizeof v, "%ld", req->limit.retry_after_s);
  http_reply_header(req, "Retry-After", v);
}

void offload_limit_apply(struct http_request *req) {
  req->has_limit = true;
  if (req->limit.allowed) return;
  offload_limit_retry_after(req);
  /* Decided from the headers, the 429 would have been the first answer recorded. */
  req->has_pending = false;
  json_decref(req->pending_details);
  req->pending_details = NULL;
  request_set_pending(req, API_ERR_RATE_LIMITED, NULL);
}

/* ---- limits the endpoint decides (ROUTE_SIGNED) ---- */

static void limit_decided(struct http_request *req) {
  req->has_limit = true;
  if (!req->limit.allowed) {
    offload_limit_retry_after(req);
    http_reply_error(req, API_ERR_RATE_LIMITED, NULL, NULL);
    return;
  }
  req->limit_then(req);
}

static void limit_resumed(struct http_request *req) { server_run_gated(req, limit_decided); }

void http_request_limit(struct http_request *req, enum http_limiter limiter, const char *key,
                        void (*then)(struct http_request *)) {
  struct ratelimit *rl =
      limiter == HTTP_LIMIT_SIGNED ? req->server->rl_signed : req->server->rl_webhook;
  char k[RATELIMIT_KEY_MAX];
  if (key)
    snprintf(k, sizeof k, "%s", key);
  else
    client_ip_key(req, k, sizeof k);
  req->limit_then = then;
  req->limit_rl = rl;
  if (ratelimit_try_local(rl, k, time_now_us() / 1000, &req->limit)) {
    limit_decided(req);
    return;
  }
  offload_limit_defer(req, rl, k); /* only Redis can decide: off the event thread */
  offload_limit_start(req, limit_resumed);
}
