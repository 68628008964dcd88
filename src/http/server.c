/* The HTTP server: the libmicrohttpd daemon, the callbacks that drive each request through
 * its lifecycle, start-up, and the shutdown protocol. The pieces a request passes through live
 * beside it: request.c (the request object, replies, queueing), route.c (routing), client.c
 * (client address, rate limits, auth), body.c (body reading, limits, draining).
 *
 * REQUEST LIFECYCLE. libmicrohttpd calls on_access several times per request, always on the
 * event thread that owns the connection; req->state says where the request is.
 *   request line on_uri (before the headers arrive): request_new keeps the raw target. A
 *                request whose headers never reach on_access ends here, in on_completed,
 *                logged only if libmicrohttpd answered it itself (a bad Content-Length...)
 *                or the connection guard cut it (log_unstarted).
 *   first call   request_start: request id, client address, inflight + 1.
 *                on_headers decides everything the headers can decide (path and query
 *                decoding, route, method, rate limit, auth, content type, declared size) and
 *                records the answer as pending
 *                rather than queueing it: answers are queued in a later call than the first,
 *                which MHD serves much faster. Only a body too large even to drain is answered
 *                at once. State REQ_BODY.
 *   body calls   body_on_chunk appends to a bounded buffer, or discards once the answer is
 *                known; a client too slow or far over the limit is cut (MHD_NO).
 *   final call   MHD makes it twice: the first returns without a reply (see on_access);
 *                the second dispatches: a rate-limit decision the headers call left to Redis
 *                comes first (it may wait, so it is offloaded: offload.c; dispatch runs again
 *                once it is made); then the pending answer or the OPTIONS reply, else the
 *                route's handler, once. The handler either replies (queued at once, REQ_DONE)
 *                or suspends the request (http_request_suspend: REQ_SUSPENDED, parked + 1 the
 *                first time, the connection suspended in MHD): on the store's writer, on the
 *                health monitor, or on an offload thread (http_request_offload) for anything
 *                that may wait. Event threads never wait on a database or Redis.
 *   resumed call another thread (the store's writer, an offload thread, the health monitor)
 *                calls http_request_resume (REQ_RESUMED, MHD_resume_connection); MHD then
 *                calls on_access again on the event thread, which runs on_resume; it replies
 *                and the answer is queued, or it suspends the request again.
 *   completed    on_completed, exactly once for every request that got a context: one log
 *                line, free everything, parked - 1 if it was parked, inflight - 1.
 * conn_guard.c follows each connection through these steps (headers done, request done,
 * request ended) to bound slow headers and to pick whom to drop when the table is full.
 * THE RULE: once a handler has suspended the request, only on_resume may touch it. The
 * resuming thread may write req->state at any moment after the suspension, and the request
 * may be answered and freed soon after; so after dispatch the event thread reads nothing but
 * req->on_resume (which this same thread wrote, in the handler, before suspending), the
 * handler returns without touching req, and the store thread only calls http_request_resume.
 * An offload thread (offload.c) runs the work on its own state, which may read the request's
 * path parameter, query, headers and body (not written while it is parked; the rate-limit
 * decision also writes req->limit), and then calls http_request_resume as its last touch.
 *
 * SHUTDOWN PROTOCOL (http_server_stop), resting on these atomics in struct http_server:
 *   inflight     requests begun and not completed (request_start .. on_completed);
 *   dispatching  handlers running right now (around the handler call in dispatch);
 *   parked       requests suspended (on the store, the health monitor or the offload pool)
 *                and not yet completed;
 *   stopping     set first: every answer from then on says Connection: close;
 *   closed       set after the grace period: no handler may start any more.
 *   1. stopping = true; quiesce the daemon and shut the listening socket down (new clients
 *      are refused); its descriptor is closed only after MHD_stop_daemon.
 *   2. Wait up to grace_ms for inflight to reach 0 (requests in flight get their answers).
 *   3. closed = true. dispatch increments dispatching *before* it reads closed, and stop sets
 *      closed *before* it reads dispatching (sequentially consistent atomics): so once stop
 *      sees dispatching == 0 after setting closed, no handler is running and none can start,
 *      hence no new request can become parked. Late requests get a 503 "shutting down".
 *   4. Wait (up to STORE_WAIT_MS) until dispatching == 0 and parked == 0: every request parked
 *      on the store is resumed, answered and completed. An acknowledged write must get its
 *      answer, and MHD_stop_daemon must never run with a suspended connection.
 *   5. If requests are still parked, give up: return false, nothing freed (the caller exits).
 *      Otherwise stop the daemon, then free the server. */
#include "http/server.h"

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "ext/redis.h"
#include "http/conn_guard.h"
#include "http/framing.h"
#include "http/server_internal.h"
#include "http/tls.h"

/* ---------------- the request target ---------------- */

/* The length of the request target as the client sent it. MHD hands it over as a C string,
 * which a raw NUL byte would cut short. In 0.9.75, by the time the target is handed over, MHD
 * has checked that the request line ends in " HTTP/1.d" and overwritten that space and the
 * line end with NULs; so the target runs up to the first "\0HTTP/1.d\0", and the scan never
 * leaves the request line. With another version only what strlen sees is known. */
static size_t target_length(const char *uri) {
  size_t n = strlen(uri);
  if (strcmp(MHD_get_version(), "0.9.75") != 0) return n;
  for (;; n++) {
    const char *p = uri + n;
    if (p[0] == '\0' && strncmp(p + 1, "HTTP/1.", 7) == 0 && p[8] >= '0' && p[8] <= '9' &&
        p[9] == '\0')
      return n;
  }
}

/* libmicrohttpd hands over the raw request target here, before it splits the query into
 * arguments. We keep a copy and decode it ourselves (url.c), strictly: MHD's own decoding
 * lets "%2F" split path segments and "%00" cut values short. And we cut the query off MHD's
 * copy so that MHD parses no arguments at all: in 0.9.75 each argument takes a record from the
 * connection's memory pool (MHD_OPTION_CONNECTION_MEMORY_LIMIT), and when a few hundred of
 * them exhaust it MHD queues its 431 page but the caller of parse_initial_message_line then
 * overwrites the connection state, so the client gets nothing and waits for the idle timeout.
 * The buffer is MHD's own writable request line (const only in the callback's type), and the
 * cut must stay right after the '?', where MHD looks for the arguments once we return. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn) {
  if (!uri) return NULL; /* no target: MHD refuses such a line before calling us */
  size_t len = target_length(uri);
  struct http_request *req = request_new(cls, conn, uri);
  if (req) req->target_has_nul = len != strlen(uri);
  char *query = memchr(uri, '?', len);
  if (query) query[1] = '\0';
  return req;
}

/* Whether a raw NUL inside the target escaped target_length: a NUL followed by "HTTP/1.1" and
 * another NUL looks like the real end of the target there. MHD's own version string, which
 * on_access gets, begins right after the real end (0.9.75), so the copy request_new made up
 * to the first NUL must reach it: path, '?' and query. (on_uri cannot cut the query off MHD's
 * copy past such a NUL: with hundreds of parameters there, MHD answers nothing and the header
 * timeout ends the connection.) */
static bool target_cut_short(const struct http_request *req, const char *url, const char *version) {
  if (strcmp(MHD_get_version(), "0.9.75") != 0 || version <= url) return false;
  size_t copied = strlen(req->path) + (req->query_raw ? 1 + strlen(req->query_raw) : 0);
  return (size_t)(version - url) != copied + 1;
}

/* The path reaches on_access as the client wrote it: nothing is decoded before routing. */
static size_t keep_escaped(void *cls, struct MHD_Connection *conn, char *s) {
  (void)cls;
  (void)conn;
  return strlen(s);
}

/* A 400 naming the part of the target at fault; 503 when out of memory. */
static void reject_target(struct http_request *req, enum url_status st, const char *field,
                          const char *what) {
  if (st == URL_NO_MEMORY) {
    request_set_pending(req, API_ERR_UNAVAILABLE, "Out of memory");
    return;
  }
  const char *issue = url_status_text(st);
  request_set_pending_detail(req, API_ERR_INVALID_PARAMETER,
                             json_pack("[{s:s,s:s}]", "field", field, "issue", issue), "%s %s",
                             what, issue);
}

/* The whole path must decode, whatever the route: "/api/v1/health%00x" is not health. */
static bool check_path(struct http_request *req) {
  size_t len = strlen(req->path), n;
  char *decoded = malloc(len + 1);
  enum url_status st = decoded ? url_decode(req->path, len, false, decoded, &n) : URL_NO_MEMORY;
  free(decoded);
  if (st == URL_OK) return true;
  reject_target(req, st, "path", "The request path");
  return false;
}

static void decode_param(struct http_request *req, size_t param_at) {
  const char *raw = req->path + param_at;
  size_t len = strlen(raw), n;
  if (req->route->match == MATCH_PARAM_SUFFIX) len -= strlen(req->route->suffix);
  req->param_buf = malloc(len + 1);
  enum url_status st =
      req->param_buf ? url_decode(raw, len, false, req->param_buf, &n) : URL_NO_MEMORY;
  if (st == URL_OK)
    req->param = req->param_buf;
  else
    reject_target(req, st, "path", "The request path");
}

static void decode_query(struct http_request *req) {
  if (!req->query_raw) return;
  enum url_status st = url_query_parse(req->query_raw, strlen(req->query_raw), &req->query);
  if (st == URL_OK) return;
  const char *name = req->query.bad_name;
  char what[96];
  if (name && strlen(name) <= 64)
    snprintf(what, sizeof what, "Query parameter \"%s\"", name);
  else
    snprintf(what, sizeof what, "The query");
  reject_target(req, st, name && strlen(name) <= 64 ? name : "query", what);
}

/* ---------------- the request lifecycle ---------------- */

/* Sends the answer decided earlier (request_set_pending). */
static void reply_pending(struct http_request *req) {
  json_t *details = req->pending_details;
  req->pending_details = NULL;
  http_reply_error(req, req->pending, req->pending_message, details);
}

/* First call: decide what the headers can decide. Returns true when an answer was queued. */
static bool on_headers(struct http_request *req) {
  char allow[128];
  bool known = false;
  size_t param_at = 0;
  struct http_server *s = req->server;
  req->state = REQ_BODY;
  req->body_max = (size_t)s->cfg->max_body_bytes;
  if (req->target_has_nul) {
    request_set_pending_detail(
        req, API_ERR_INVALID_PARAMETER,
        json_pack("[{s:s,s:s}]", "field", "path", "issue", "contains a raw NUL byte"),
        "The request target contains a raw NUL byte");
  } else if (check_path(req)) {
    req->route = route_find(req->path, req->method, &param_at, allow, sizeof allow, &known);
  }
  const struct route_stream *stream = req->route ? req->route->stream : NULL;
  if (stream) req->body_max = stream->max_bytes(s->app);
  /* A body too large even to drain could never be read to its end to answer after it: on a
   * route that takes no body (a GET, a 404) too, the client gets its 413 now, not a cut
   * connection after 4x the limit or a wait for bytes it will not send. */
  if (body_declared_beyond_drain(req)) {
    http_reply_header(req, "Connection", "close");
    http_reply_error(req, API_ERR_PAYLOAD_TOO_LARGE, req->server->too_large_msg, NULL);
    return true;
  }
  if (req->has_pending) return false;
  if (!req->route) {
    if (known) req->path_route = route_of_path(req->path);
    if (known && strcmp(req->method, "OPTIONS") == 0) {
      route_reply_options(req, allow);
    } else if (known) {
      http_reply_header(req, "Allow", allow);
      request_set_pending(req, API_ERR_METHOD_NOT_ALLOWED, NULL);
    } else {
      request_set_pending(req, API_ERR_NOT_FOUND, "No such endpoint");
    }
    return false;
  }
  /* While a request is being received, a silent client is cut off after the request timeout
   * (the idle timeout applies again once the request is answered). */
  const struct config *cfg = s->cfg;
  if (cfg->request_timeout < cfg->connection_timeout)
    MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)cfg->request_timeout);
  client_check_access(req);
  if (req->route->match != MATCH_EXACT) decode_param(req, param_at);
  decode_query(req);
  if (req->route->json_body && !body_check_headers(req)) {
    http_reply_header(req, "Connection", "close");
    http_reply_error(req, API_ERR_PAYLOAD_TOO_LARGE, req->server->too_large_msg, NULL);
    return true;
  }
  if (stream && req->keep_body) {
    req->sink = stream->open(req);
    if (!req->sink) req->keep_body = false; /* counted per IP in dispatch */
  }
  /* A stream route takes bodies far larger than MAX_BODY_BYTES: a client waiting for "100
   * Continue" whose request is refused already (no or a stale signature...) gets its answer
   * now rather than after uploading it all, unless only Redis can decide its rate limit. */
  if (stream && req->has_pending && body_expects_continue(req)) {
    if (req->limit_by_handler && !req->has_limit) client_limit_ip(req);
    if (!req->limit_deferred) {
      http_reply_header(req, "Connection", "close");
      reply_pending(req);
      return true;
    }
  }
  return false;
}

/* Runs fn, which may suspend the request, unless shutdown has closed the gate: shutdown
 * closes it, then waits for running handlers, so none can suspend a request after the final
 * wait has begun (step 3 of the protocol above). */
void server_run_gated(struct http_request *req, void (*fn)(struct http_request *)) {
  struct http_server *s = req->server;
  atomic_fetch_add(&s->dispatching, 1);
  if (atomic_load(&s->closed)) {
    http_reply_header(req, "Connection", "close");
    http_reply_error(req, API_ERR_UNAVAILABLE, "The service is shutting down; retry", NULL);
  } else {
    fn(req);
  }
  atomic_fetch_sub(&s->dispatching, 1);
}

/* A request whose body cannot be framed safely (framing.c) is answered in the first call:
 * MHD then discards whatever follows and closes the connection. */
static bool refuse_framing(struct http_request *req, const char *url, const char *version) {
  struct framing_problem p;
  if (framing_check(req->conn, req->method, url, version, &p)) return false;
  http_reply_header(req, "Connection", "close");
  http_reply_error(req, p.error, p.message, NULL);
  return true;
}

static void dispatch(struct http_request *req);

static void on_limit_decided(struct http_request *req) {
  offload_limit_apply(req);
  dispatch(req);
}

static void start_limit_decision(struct http_request *req) {
  offload_limit_start(req, on_limit_decided);
}

static void on_key_decided(struct http_request *req) {
  keys_apply(req, keys_decide(req, req->route->scope));
  dispatch(req);
}

static void start_key_lookup(struct http_request *req) { keys_start_lookup(req, on_key_decided); }

/* Final call: a rate-limit decision left to Redis first (on an offload thread; this runs
 * again once it is made), then what the headers decided, or the endpoint. */
static void dispatch(struct http_request *req) {
  if (req->limit_deferred) {
    server_run_gated(req, start_limit_decision);
    return;
  }
  /* Then a data key not in the cache (keys.c), unless the request is refused already (over
   * its rate limit, say): a refused request never costs a database read. */
  if (req->key_deferred && !(req->has_pending && !req->response)) {
    server_run_gated(req, start_key_lookup);
    return;
  }
  if (!req->response && req->has_pending) {
    /* Refused before the endpoint could check a signature (a stream's open, Content-Type, a
     * body over the limit): it counts as unsigned, like the same request without the header. */
    if (req->limit_by_handler && !req->has_limit) {
      client_limit_ip(req);
      if (req->limit_deferred) {
        server_run_gated(req, start_limit_decision);
        return;
      }
    }
    reply_pending(req);
    return;
  }
  if (req->response) return; /* OPTIONS */
  server_run_gated(req, req->route->handler);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
  (void)cls;
  struct http_request *req = *con_cls;
  if (!req) return MHD_NO; /* on_uri ran out of memory */
  if (!req->started) {
    request_start(req, method);
    req->http10 = version && strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
    if (target_cut_short(req, url, version)) req->target_has_nul = true;
    conn_guard_headers_done(conn);
    if (refuse_framing(req, url, version) || on_headers(req)) {
      conn_guard_request_done(conn);
      return request_queue_reply(req);
    }
    return MHD_YES;
  }
  switch (req->state) {
    case REQ_BODY:
      if (*upload_data_size) {
        unsigned cut = body_on_chunk(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        if (!cut) return MHD_YES;
        req->status = cut;
        req->state = REQ_DONE; /* for the log line */
        return MHD_NO;
      }
      if (!req->body_done) {
        /* Dispatch on the next call, not this one. A handler that suspends in the call where
         * MHD finished reading the request leaves MHD's poll state at "read" (0.9.75 does not
         * update it for a suspended connection), so on resume MHD reads again, and a client
         * that half-closed after sending its request (a pending FIN) is then cut off without
         * its answer. Returning without a reply first lets MHD settle the connection to "no
         * I/O" and call again at once (a zero-timeout poll). */
        req->body_done = true;
        conn_guard_request_done(conn);
        return MHD_YES;
      }
      dispatch(req);
      /* Suspended: the store may already have resumed it (state is then written by another
       * thread), so only this thread's own on_resume field is consulted here. */
      return req->on_resume ? MHD_YES : request_queue_reply(req);
    case REQ_RESUMED: {
      /* on_resume may suspend the request again (after a rate-limit decision, the endpoint
       * itself may wait): then it is not answered yet. */
      void (*resumed)(struct http_request *) = req->on_resume;
      req->on_resume = NULL;
      resumed(req);
      return req->on_resume ? MHD_YES : request_queue_reply(req);
    }
    case REQ_SUSPENDED: /* MHD does not call a suspended connection; be safe */
      return MHD_YES;
    default:
      *upload_data_size = 0; /* already answered: drop whatever else arrives */
      return MHD_YES;
  }
}

/* The status to log for a request that got no answer of ours: 408 or 503 when the guard cut
 * it (logged, not sent), the status of libmicrohttpd's own answer (a bad Content-Length, a
 * malformed chunk...), 408 for MHD's idle timeout, else 0 (no answer: the client left). */
static unsigned unanswered_status(struct MHD_Connection *conn,
                                  enum MHD_RequestTerminationCode toe) {
  switch (conn_guard_cut_reason(conn)) {
    case CONN_GUARD_HEADER_TIMEOUT:
      return api_error_get(API_ERR_REQUEST_TIMEOUT)->status;
    case CONN_GUARD_EVICTED:
    case CONN_GUARD_REFUSED:
      return api_error_get(API_ERR_UNAVAILABLE)->status;
    default:
      break;
  }
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);
  if (ci && ci->http_status) return ci->http_status;
  if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
    return api_error_get(API_ERR_REQUEST_TIMEOUT)->status;
  return 0;
}

static uint64_t duration_ns(double ms) { return ms > 0 ? (uint64_t)(ms * 1e6) : 0; }

/* A request that ended before its headers reached the application is logged when it got an
 * answer anyway (libmicrohttpd's own, e.g. for a bad Content-Length) or the guard cut it; a
 * client that merely went away mid-headers is not. */
static void log_unstarted(struct http_request *req, unsigned status) {
  if (!status) return;
  request_identify(req);
  struct log_request line = {
      .request_id = req->request_id,
      .method = NULL, /* MHD does not tell it before the first access-handler call */
      .path = req->path,
      .status = status,
      .duration_ms = time_mono_ms() - req->start_ms,
      .client_ip = req->client_ip,
  };
  log_request_line(&line);
  /* The method stays "other": libmicrohttpd 0.9.75 hands the application only the target
   * (on_uri) before it refuses a request itself (a 431 for headers too large, say); the path
   * still names its route. */
  const struct route *r = req->target_has_nul ? NULL : route_of_path(req->path);
  metrics_http_request(r ? (int)(r - api_routes) : METRICS_ROUTE_UNMATCHED, NULL, status,
                       duration_ns(line.duration_ms));
}

/* What the request counts as in the metrics (core/metrics.h), by route pattern. */
static void count_request(const struct http_request *req, unsigned status, double duration_ms) {
  const struct http_server *s = req->server;
  /* A known path asked with a method it does not take (405, OPTIONS) counts under its route:
   * "unmatched" is for paths no route knows. */
  const struct route *r = req->route ? req->route : req->path_route;
  int route = r ? (int)(r - api_routes) : METRICS_ROUTE_UNMATCHED;
  metrics_http_request(route, req->method, status, duration_ns(duration_ms));
  if (status == 401 || status == 403) metrics_auth_failure();
  if (status == 429 && req->has_limit && !req->limit.allowed)
    metrics_rate_limited(req->limit_rl == s->rl_api      ? METRICS_LIMIT_API
                         : req->limit_rl == s->rl_signed ? METRICS_LIMIT_SIGNED
                                                         : METRICS_LIMIT_WEBHOOK);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  struct http_server *s = cls;
  struct http_request *req = *con_cls;
  if (!req) return;
  *con_cls = NULL;
  if (!req->started) { /* the headers never reached us: nothing was counted or decided */
    log_unstarted(req, unanswered_status(conn, toe));
    request_free(req);
    return;
  }
  struct log_request line = {
      .request_id = req->request_id,
      .method = req->method,
      .path = req->path,
      .status = req->state == REQ_DONE ? req->status : unanswered_status(conn, toe),
      .duration_ms = time_mono_ms() - req->start_ms,
      .client_ip = req->client_ip,
  };
  log_request_line(&line);
  count_request(req, line.status, line.duration_ms);
  if (line.status == 401 || line.status == 403) api_auth_rejected(s->app, req, line.status);
  conn_guard_request_ended(conn);
  if (s->cfg->request_timeout < s->cfg->connection_timeout)
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)s->cfg->connection_timeout);
  if (req->stream) stream_ended(req->stream, toe);
  bool parked = req->parked;
  request_free(req);
  if (parked) atomic_fetch_sub(&s->parked, 1);
  atomic_fetch_sub(&s->inflight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  /* Its own error answers (HTTP version, request line, header and framing errors) are sent
   * before, or outside, any application code: this line is the only trace of some of them. */
  bool answered = strncmp(msg, "Error processing request", 24) == 0;
  char *page = answered ? strstr(msg, " ('") : NULL; /* the HTML page it sent: not useful */
  if (page) snprintf(page, sizeof msg - (size_t)(page - msg), ")");
  log_msg(answered ? LOG_INFO : LOG_DEBUG, "libmicrohttpd: %s", msg);
}

/* ---------------- start and stop ---------------- */

static bool resolve_host(const char *host, unsigned port, struct sockaddr_storage *ss, bool *ipv6) {
  struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICHOST, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  char service[8];
  snprintf(service, sizeof service, "%u", port);
  if (getaddrinfo(host, service, &hints, &res) != 0 || !res) return false;
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *ipv6 = res->ai_family == AF_INET6;
  freeaddrinfo(res);
  return true;
}

/* TLS 1.2 and 1.3 only, GnuTLS's NORMAL choice of ciphers within them. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define SYNC_INTERVAL_US 5000
#define PROBE_EVERY_MS 1000.0
#define SIGNED_KEYS_MAX 64    /* one key per signing secret */
#define STORE_WAIT_MS 60000.0 /* the stores' own timeouts are far shorter */

/* Shares local rate-limit hits with Redis every few milliseconds and checks Redis's health
 * once a second (reconnecting after an outage). */
static void *sync_main(void *arg) {
  struct http_server *s = arg;
  double next_probe = 0;
  while (!atomic_load(&s->sync_stop)) {
    double now = time_mono_ms();
    if (now >= next_probe) {
      (void)redis_probe(s->redis);
      next_probe = now + PROBE_EVERY_MS;
    }
    int64_t wall_ms = time_now_us() / 1000;
    ratelimit_sync(s->rl_webhook, wall_ms);
    ratelimit_sync(s->rl_api, wall_ms);
    ratelimit_sync(s->rl_signed, wall_ms);
    usleep(SYNC_INTERVAL_US);
  }
  return NULL;
}

static bool start_sharing(struct http_server *s) {
  ratelimit_share(s->rl_webhook, s->redis, "gensendrep:rl:webhook:");
  ratelimit_share(s->rl_api, s->redis, "gensendrep:rl:api:");
  ratelimit_share(s->rl_signed, s->redis, "gensendrep:rl:signed:");
  (void)redis_probe(s->redis); /* know the state before the first request */
  s->sync_started = pthread_create(&s->sync_thread, NULL, sync_main, s) == 0;
  return s->sync_started;
}

static void server_free(struct http_server *s) {
  if (s->sync_started) {
    atomic_store(&s->sync_stop, true);
    pthread_join(s->sync_thread, NULL);
  }
  conn_guard_free(s->guard); /* after MHD_stop_daemon: MHD notifies it of every close */
  workpool_free(s->pool);
  keycache_free(s->keys);
  ratelimit_free(s->rl_webhook);
  ratelimit_free(s->rl_api);
  ratelimit_free(s->rl_signed);
  cors_free(&s->cors);
  free(s->trusted_buf);
  free(s);
}

/* The metrics count requests by route pattern: a label per route, never per path. False when
 * the route table outgrew the metrics' (METRICS_ROUTES_MAX routes, patterns shorter than
 * METRICS_ROUTE_PATTERN_MAX): the server does not start, rather than count routes as
 * unmatched. */
static bool name_routes(char *err, size_t errlen) {
  char names[METRICS_ROUTES_MAX][METRICS_ROUTE_PATTERN_MAX + 1];
  const char *patterns[METRICS_ROUTES_MAX];
  if (api_route_count > METRICS_ROUTES_MAX) {
    snprintf(err, errlen, "%zu routes: the metrics count at most %d (METRICS_ROUTES_MAX)",
             api_route_count, METRICS_ROUTES_MAX);
    return false;
  }
  for (size_t i = 0; i < api_route_count; i++) {
    route_pattern(&api_routes[i], names[i], sizeof names[i]);
    patterns[i] = names[i];
  }
  if (!metrics_http_routes(patterns, api_route_count)) {
    snprintf(err, errlen,
             "a route pattern is longer than the metrics take "
             "(METRICS_ROUTE_PATTERN_MAX)");
    return false;
  }
  return true;
}

struct http_server *http_server_start(const struct config *cfg, void *app,
                                      struct redis_client *redis, char *err, size_t errlen) {
  struct http_server *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  s->cfg = cfg;
  s->app = app;
  snprintf(s->too_large_msg, sizeof s->too_large_msg, "Request body is larger than %ld bytes",
           cfg->max_body_bytes);
  /* No key would answer every request 401: never start like that. */
  if (!auth_init(&s->auth, cfg->api_secret_key, err, errlen)) {
    free(s);
    return NULL;
  }
  cors_init(&s->cors, cfg->cors_origins);
  s->trusted_buf = strdup(cfg->trusted_proxies);
  if (s->trusted_buf) s->ntrusted = config_split_list(s->trusted_buf, s->trusted, TRUSTED_MAX);
  s->rl_webhook = ratelimit_new(cfg->rate_limit_webhook, RATELIMIT_KEYS_MAX);
  s->rl_api = ratelimit_new(cfg->rate_limit_api, RATELIMIT_KEYS_MAX);
  s->rl_signed = ratelimit_new(cfg->rate_limit_elevenlabs, SIGNED_KEYS_MAX);
  s->guard = conn_guard_new(cfg->max_connections, cfg->header_timeout);
  struct sockaddr_storage ss = {0};
  bool ipv6 = false;
  s->redis = redis;
  /* More threads than cores only add hand-offs: a read is ~40 µs of CPU (one per CPU measured
   * ~30% faster get-one than eight on two cores); raise it for a distant PostgreSQL. */
  long offload = cfg->offload_threads ? cfg->offload_threads : sysconf(_SC_NPROCESSORS_ONLN);
  if (offload < 1) offload = 1;
  s->pool = workpool_new((size_t)offload, (size_t)cfg->offload_queue);
  s->keys = keycache_new();
  if (!s->keys || !s->rl_webhook || !s->rl_api || !s->rl_signed || !s->trusted_buf || !s->guard ||
      !s->pool || (redis && !start_sharing(s))) {
    snprintf(err, errlen, "out of memory");
    server_free(s);
    return NULL;
  }
  if (!resolve_host(cfg->host, (unsigned)cfg->port, &ss, &ipv6)) {
    snprintf(err, errlen, "HOST: not a numeric IPv4 or IPv6 address: %.64s", cfg->host);
    server_free(s);
    return NULL;
  }
  if (!name_routes(err, errlen)) { /* before any request can be counted */
    server_free(s);
    return NULL;
  }
  long threads = cfg->threads ? cfg->threads : sysconf(_SC_NPROCESSORS_ONLN);
  if (threads < 1) threads = 1;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                   MHD_USE_ITC | MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0);
  /* HTTPS when tls.c holds a certificate: TLS 1.2 and 1.3 only, the certificate handed over
   * per handshake by tls.c's callback (so that SIGHUP can replace it). Without one the array
   * is empty and nothing of this costs anything. */
  struct MHD_OptionItem tls_opts[] = {
      {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES},
      {MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)http_tls_retrieve},
      {MHD_OPTION_END, 0, NULL},
  };
  bool tls = http_tls_enabled();
  if (tls) flags |= MHD_USE_TLS;
  /* The logger comes first: MHD reports problems with later options (THREADS=1 makes it
   * warn that a pool of one is no pool) through the logger set so far, else as plain text on
   * stderr, in the middle of the JSON log. */
  s->daemon = MHD_start_daemon(
      flags, (uint16_t)cfg->port, NULL, NULL, on_access, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
      NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_SOCK_ADDR,
      (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
      MHD_OPTION_CONNECTION_LIMIT, conn_guard_mhd_limit(s->guard), MHD_OPTION_NOTIFY_CONNECTION,
      conn_guard_notify, s->guard, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      (unsigned)cfg->max_connections_per_ip, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)cfg->connection_timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)HEADER_BYTES_MAX, MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
      MHD_OPTION_UNESCAPE_CALLBACK, keep_escaped, NULL, MHD_OPTION_ARRAY,
      tls ? tls_opts : tls_opts + 2, MHD_OPTION_END);
  if (!s->daemon) {
    if (tls && !MHD_is_feature_supported(MHD_FEATURE_HTTPS_CERT_CALLBACK))
      snprintf(err, errlen, "TLS_CERT_FILE: this libmicrohttpd cannot serve HTTPS (no GnuTLS)");
    else
      snprintf(err, errlen, "PORT: cannot listen on %s port %ld (in use, or not permitted)",
               cfg->host, cfg->port);
    server_free(s);
    return NULL;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  s->port = di ? di->port : (unsigned)cfg->port;
  return s;
}

unsigned http_server_port(const struct http_server *s) { return s->port; }

bool http_server_stop(struct http_server *s, unsigned grace_ms) {
  atomic_store(&s->stopping, true);
  /* Quiescing hands the listening socket back to us. Stop listening at once, so that new
   * clients are refused instead of waiting in the backlog during the drain, but close the
   * descriptor only after MHD_stop_daemon: until then MHD's threads may still use its
   * number, which a closed descriptor lets the next socket or file take. */
  MHD_socket ls = MHD_quiesce_daemon(s->daemon);
  if (ls != MHD_INVALID_SOCKET) shutdown(ls, SHUT_RDWR);
  double deadline = time_mono_ms() + grace_ms;
  while (atomic_load(&s->inflight) > 0 && time_mono_ms() < deadline) usleep(2000);
  if (atomic_load(&s->inflight) > 0)
    log_msg(LOG_WARNING, "stopping with %d requests still in flight", atomic_load(&s->inflight));
  /* Requests parked on the store are always finished, their answers sent: stopping MHD with
   * a suspended connection is not allowed, and an acknowledged write must get its answer. */
  atomic_store(&s->closed, true);
  double hard_deadline = time_mono_ms() + STORE_WAIT_MS;
  while ((atomic_load(&s->dispatching) > 0 || atomic_load(&s->parked) > 0) &&
         time_mono_ms() < hard_deadline)
    usleep(2000);
  if (atomic_load(&s->dispatching) > 0 || atomic_load(&s->parked) > 0) {
    log_msg(LOG_ERROR, "the store did not answer %d parked requests: giving up",
            atomic_load(&s->parked));
    return false; /* MHD cannot be stopped with parked connections */
  }
  MHD_stop_daemon(s->daemon);
  if (ls != MHD_INVALID_SOCKET) close(ls);
  server_free(s);
  return true;
}
