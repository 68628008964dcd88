/* libmicrohttpd glue. The request lifecycle follows MHD's contract:
 *   first call     set up the request context and decide everything the headers can decide
 *                  (route, method, rate limit, auth, content type, declared size);
 *   body calls     append to a bounded buffer (or discard it when the answer is known);
 *   final call     dispatch once to the endpoint, which replies or suspends on the store;
 *   resumed call   the endpoint's on_resume replies;
 *   completed      one log line, free everything.
 * Answers are queued in a later call than the first, which MHD serves much faster. */
#include "http/server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "ext/crypto.h"
#include "http/auth.h"
#include "http/cors.h"
#include "http/http.h"
#include "http/ratelimit.h"
#include "ext/redis.h"

#define HEADER_BYTES_MAX (32 * 1024) /* request line + headers must fit */
#define REQUEST_ID_MAX 128
#define EXTRA_HEADERS_MAX 6
#define TRUSTED_MAX 32
#define RATELIMIT_KEYS_MAX 50000
#define BODY_PREALLOC_MAX (64 * 1024)

struct http_server {
  struct MHD_Daemon *daemon;
  const struct config *cfg;
  void *app;
  struct auth auth;
  struct cors cors;
  struct ratelimit *rl_webhook;
  struct ratelimit *rl_api;
  struct redis_client *redis; /* not owned; NULL without REDIS_URL */
  pthread_t sync_thread;
  bool sync_started;
  atomic_bool sync_stop;
  char *trusted_buf;
  char *trusted[TRUSTED_MAX];
  size_t ntrusted;
  unsigned port;
  char too_large_msg[96]; /* the 413 message, naming the configured limit */
  atomic_int inflight;    /* requests begun and not completed */
  atomic_int dispatching; /* handlers running right now */
  atomic_int parked;      /* requests suspended on the store and not yet completed */
  atomic_bool stopping;   /* answers say Connection: close */
  atomic_bool closed;     /* no handler may start any more */
};

enum req_state { REQ_NEW, REQ_BODY, REQ_SUSPENDED, REQ_RESUMED, REQ_DONE };

struct extra_header {
  const char *name;
  char value[128];
};

struct http_request {
  struct http_server *server;
  struct MHD_Connection *conn;
  enum req_state state;
  const struct route *route;
  const char *method;
  char *path;        /* decoded, owned */
  const char *param; /* into path */
  char request_id[REQUEST_ID_MAX + 1];
  char client_ip[INET6_ADDRSTRLEN];
  double start_ms;
  /* body */
  char *body;
  size_t body_len, body_cap;
  size_t received; /* body bytes seen, kept or not */
  bool keep_body;
  /* an answer decided from the headers, sent after the body is drained */
  bool has_pending;
  enum api_error pending;
  const char *pending_message;
  /* reply */
  struct MHD_Response *response;
  unsigned status;
  const char *content_type;
  struct extra_header extra[EXTRA_HEADERS_MAX];
  size_t nextra;
  bool has_limit;
  struct ratelimit_result limit;
  /* suspension */
  bool parked; /* counted in server->parked until completed */
  void (*on_resume)(struct http_request *);
  void *state_data;
  void (*free_state)(void *);
};

/* ---------------- request accessors ---------------- */

void *http_request_app(const struct http_request *req) { return req->server->app; }
const char *http_request_method(const struct http_request *req) { return req->method; }
const char *http_request_path_param(const struct http_request *req) { return req->param; }
const char *http_request_id(const struct http_request *req) { return req->request_id; }

const char *http_request_query(const struct http_request *req, const char *name) {
  return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_request_header(const struct http_request *req, const char *name) {
  return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_request_body(const struct http_request *req, size_t *len) {
  *len = req->body_len;
  return req->body ? req->body : "";
}

void *http_request_state(struct http_request *req) { return req->state_data; }

/* ---------------- replies ---------------- */

void http_reply_header(struct http_request *req, const char *name, const char *value) {
  if (req->nextra >= EXTRA_HEADERS_MAX) return;
  struct extra_header *h = &req->extra[req->nextra++];
  h->name = name;
  snprintf(h->value, sizeof h->value, "%s", value);
}

static void set_response(struct http_request *req, unsigned status, const char *type,
                         struct MHD_Response *r) {
  if (req->response) MHD_destroy_response(req->response); /* the last reply wins */
  req->response = r;
  req->status = r ? status : 500;
  req->content_type = type;
}

void http_reply_owned(struct http_request *req, unsigned status, const char *content_type,
                      void *body, size_t len) {
  set_response(req, status, content_type,
               MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE));
}

void http_reply_static(struct http_request *req, unsigned status, const char *content_type,
                       const void *body, size_t len) {
  set_response(req, status, content_type,
               MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_PERSISTENT));
}

void http_reply_json_text(struct http_request *req, unsigned status, char *body, size_t len) {
  http_reply_owned(req, status, "application/json", body, len);
}

void http_reply_json(struct http_request *req, unsigned status, json_t *obj) {
  char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
  json_decref(obj);
  if (!text) {
    static const char oom[] =
        "{\"success\":false,\"error\":{\"code\":\"INTERNAL_ERROR\",\"message\":\"Out of "
        "memory\",\"details\":[]}}";
    http_reply_static(req, 500, "application/json", oom, sizeof oom - 1);
    return;
  }
  http_reply_json_text(req, status, text, strlen(text));
}

void http_reply_error(struct http_request *req, enum api_error err, const char *message,
                      json_t *details) {
  const struct api_error_info *info = api_error_get(err);
  if (info->status >= 500)
    log_msg(LOG_ERROR, "request %s answered %u %s", req->request_id, info->status, info->code);
  json_t *body =
      json_pack("{s:b,s:{s:s,s:s,s:o}}", "success", 0, "error", "code", info->code, "message",
                message ? message : info->message, "details", details ? details : json_array());
  http_reply_json(req, info->status, body);
}

/* ---------------- common headers and queueing ---------------- */

static void add_limit_headers(struct http_request *req, struct MHD_Response *r) {
  char v[32];
  snprintf(v, sizeof v, "%ld", req->limit.limit);
  MHD_add_response_header(r, "RateLimit-Limit", v);
  snprintf(v, sizeof v, "%ld", req->limit.remaining);
  MHD_add_response_header(r, "RateLimit-Remaining", v);
  snprintf(v, sizeof v, "%ld", req->limit.reset_s);
  MHD_add_response_header(r, "RateLimit-Reset", v);
}

static void add_cors_headers(struct http_request *req, struct MHD_Response *r) {
  const char *origin = http_request_header(req, "Origin");
  if (!cors_allowed(&req->server->cors, origin)) return;
  MHD_add_response_header(r, "Access-Control-Allow-Origin", origin);
  MHD_add_response_header(r, "Vary", "Origin");
  MHD_add_response_header(r, "Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS);
}

static enum MHD_Result queue_reply(struct http_request *req) {
  struct MHD_Response *r = req->response;
  if (!r) {
    http_reply_error(req, API_ERR_INTERNAL, NULL, NULL);
    r = req->response;
    if (!r) return MHD_NO;
  }
  if (req->content_type) MHD_add_response_header(r, "Content-Type", req->content_type);
  MHD_add_response_header(r, "X-Request-Id", req->request_id);
  MHD_add_response_header(r, "Cache-Control", "no-store");
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  add_cors_headers(req, r);
  if (req->has_limit) add_limit_headers(req, r);
  for (size_t i = 0; i < req->nextra; i++)
    MHD_add_response_header(r, req->extra[i].name, req->extra[i].value);
  if (atomic_load(&req->server->stopping)) MHD_add_response_header(r, "Connection", "close");
  enum MHD_Result ret = MHD_queue_response(req->conn, req->status, r);
  MHD_destroy_response(r);
  req->response = NULL;
  req->state = REQ_DONE;
  return ret;
}

/* ---------------- suspension ---------------- */

void http_request_suspend(struct http_request *req, void (*on_resume)(struct http_request *),
                          void *state, void (*free_state)(void *)) {
  req->on_resume = on_resume;
  req->state_data = state;
  req->free_state = free_state;
  req->state = REQ_SUSPENDED;
  req->parked = true;
  atomic_fetch_add(&req->server->parked, 1);
  MHD_suspend_connection(req->conn);
}

void http_request_resume(struct http_request *req) {
  req->state = REQ_RESUMED;
  MHD_resume_connection(req->conn);
}

/* ---------------- request set-up ---------------- */

static bool sane_request_id(const char *id) {
  size_t n = id ? strlen(id) : 0;
  if (n == 0 || n > REQUEST_ID_MAX) return false;
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

static void set_request_id(struct http_request *req) {
  const char *given = http_request_header(req, "X-Request-Id");
  if (sane_request_id(given)) {
    snprintf(req->request_id, sizeof req->request_id, "%s", given);
    return;
  }
  if (!crypto_random_hex(req->request_id, sizeof req->request_id, 16))
    snprintf(req->request_id, sizeof req->request_id, "unknown");
}

static void peer_ip(struct MHD_Connection *conn, char *out, size_t cap) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  snprintf(out, cap, "unknown");
  if (!ci || !ci->client_addr) return;
  const struct sockaddr *sa = ci->client_addr;
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
  } else if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6))
      inet_ntop(AF_INET, &a6->s6_addr[12], out, (socklen_t)cap);
    else
      inet_ntop(AF_INET6, a6, out, (socklen_t)cap);
  }
}

static bool is_trusted(const struct http_server *s, const char *ip) {
  for (size_t i = 0; i < s->ntrusted; i++)
    if (strcmp(s->trusted[i], ip) == 0) return true;
  return false;
}

static bool is_ip_literal(const char *s) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

struct last_header {
  const char *name;
  const char *value;
};

static enum MHD_Result keep_last(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value) {
  (void)kind;
  struct last_header *h = cls;
  if (strcasecmp(key, h->name) == 0) h->value = value;
  return MHD_YES;
}

/* The client is the TCP peer, unless the peer is a trusted proxy: then it is the rightmost
 * X-Forwarded-For address that is not itself a trusted proxy. The value is read from its end
 * (what the proxies appended), whole, so no amount of client-written text in front can push
 * the real address out; with several header lines, the last one counts. */
static void set_client_ip(struct http_request *req) {
  peer_ip(req->conn, req->client_ip, sizeof req->client_ip);
  if (!is_trusted(req->server, req->client_ip)) return;
  struct last_header h = {"X-Forwarded-For", NULL};
  MHD_get_connection_values(req->conn, MHD_HEADER_KIND, keep_last, &h);
  if (!h.value) return;
  size_t end = strlen(h.value);
  while (end > 0) {
    size_t start = end;
    while (start > 0 && h.value[start - 1] != ',') start--;
    size_t a = start, b = end;
    while (a < b && (h.value[a] == ' ' || h.value[a] == '\t')) a++;
    while (b > a && (h.value[b - 1] == ' ' || h.value[b - 1] == '\t')) b--;
    char item[INET6_ADDRSTRLEN];
    if (b - a == 0 || b - a >= sizeof item) return;
    memcpy(item, h.value + a, b - a);
    item[b - a] = '\0';
    if (!is_ip_literal(item)) return;
    if (!is_trusted(req->server, item)) {
      snprintf(req->client_ip, sizeof req->client_ip, "%s", item);
      return;
    }
    end = start > 0 ? start - 1 : 0;
  }
}

static struct http_request *request_new(struct http_server *s, struct MHD_Connection *conn,
                                        const char *url, const char *method) {
  struct http_request *req = calloc(1, sizeof *req);
  if (!req || !(req->path = strdup(url))) {
    free(req);
    return NULL;
  }
  req->server = s;
  req->conn = conn;
  req->method = method;
  req->param = "";
  req->start_ms = time_mono_ms();
  set_request_id(req);
  set_client_ip(req);
  atomic_fetch_add(&s->inflight, 1);
  return req;
}

static void request_free(struct http_request *req) {
  if (req->free_state) req->free_state(req->state_data);
  if (req->response) MHD_destroy_response(req->response);
  free(req->body);
  free(req->path);
  free(req);
}

/* ---------------- routing ---------------- */

static bool path_matches(const struct route *r, const char *path) {
  if (r->match == MATCH_EXACT) return strcmp(r->path, path) == 0;
  return strncmp(r->path, path, strlen(r->path)) == 0;
}

static bool method_matches(const char *route_method, const char *method) {
  return strcmp(route_method, method) == 0 ||
         (strcmp(route_method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

/* Finds the route; *allow lists the methods the path supports when the method does not. */
static const struct route *route_find(const char *path, const char *method, char *allow, size_t cap,
                                      bool *path_known) {
  *path_known = false;
  allow[0] = '\0';
  size_t pos = 0;
  for (size_t i = 0; i < api_route_count; i++) {
    const struct route *r = &api_routes[i];
    if (!path_matches(r, path)) continue;
    *path_known = true;
    if (method_matches(r->method, method)) return r;
    pos += (size_t)snprintf(allow + pos, cap - pos, "%s%s", r->method,
                            strcmp(r->method, "GET") == 0 ? ", HEAD, " : ", ");
  }
  if (*path_known) snprintf(allow + pos, cap - pos, "OPTIONS");
  return NULL;
}

static void set_pending(struct http_request *req, enum api_error e, const char *message) {
  if (req->has_pending) return;
  req->has_pending = true;
  req->pending = e;
  req->pending_message = message;
}

/* CORS preflight or a plain OPTIONS: 204 with what the path allows. */
static void reply_options(struct http_request *req, const char *allow) {
  const char *origin = http_request_header(req, "Origin");
  http_reply_header(req, "Allow", allow);
  if (cors_allowed(&req->server->cors, origin) &&
      http_request_header(req, "Access-Control-Request-Method")) {
    http_reply_header(req, "Access-Control-Allow-Methods", allow);
    http_reply_header(req, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
    http_reply_header(req, "Access-Control-Max-Age", CORS_MAX_AGE);
  }
  http_reply_static(req, 204, NULL, "", 0);
}

static void apply_limit(struct http_request *req, struct ratelimit *rl, const char *key) {
  /* Wall-clock time: with Redis, every instance's windows must agree on the seconds. */
  ratelimit_hit(rl, key, time_now_us() / 1000, &req->limit);
  req->has_limit = true;
  if (req->limit.allowed) return;
  char v[24];
  snprintf(v, sizeof v, "%ld", req->limit.retry_after_s);
  http_reply_header(req, "Retry-After", v);
  set_pending(req, API_ERR_RATE_LIMITED, NULL);
}

/* The rate-limit key of a client address: IPv4 as is; IPv6 by its /64, the block one
 * customer usually holds, so that walking through its addresses does not buy new budgets. */
static void client_key(const char *ip, char *key, size_t cap) {
  unsigned char a6[16];
  char net[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET6, ip, a6) == 1) {
    memset(a6 + 8, 0, 8);
    inet_ntop(AF_INET6, a6, net, sizeof net);
    snprintf(key, cap, "ip:%s/64", net);
  } else {
    snprintf(key, cap, "ip:%s", ip);
  }
}

/* Rate limiting and authentication. The webhook is limited per client IP before the key is
 * checked, so key guessing is limited too; other endpoints are limited per key (per IP for
 * requests whose key is wrong). */
static void check_access(struct http_request *req) {
  struct http_server *s = req->server;
  const struct route *r = req->route;
  char key[RATELIMIT_KEY_MAX];
  client_key(req->client_ip, key, sizeof key);
  if (r->limit == LIMIT_PER_IP) apply_limit(req, s->rl_webhook, key);
  if (r->auth != ROUTE_BEARER) return;
  int who = auth_check(&s->auth, http_request_header(req, "Authorization"));
  if (r->limit == LIMIT_PER_KEY) {
    if (who >= 0) snprintf(key, sizeof key, "key:%d", who);
    apply_limit(req, s->rl_api, key);
  }
  if (who < 0) {
    http_reply_header(req, "WWW-Authenticate", "Bearer");
    set_pending(req, API_ERR_UNAUTHORIZED, NULL);
  }
}

static bool is_json_type(const char *ct) {
  if (!ct) return false;
  while (*ct == ' ') ct++;
  size_t n = strcspn(ct, "; ");
  return n == strlen("application/json") && strncasecmp(ct, "application/json", n) == 0;
}

/* A body over the limit is still read and discarded, up to this many bytes, so the client
 * gets its 413 instead of a reset connection; beyond it the connection is closed at once. */
static size_t drain_limit(const struct http_server *s) {
  return (size_t)s->cfg->max_body_bytes * 4 + 1024 * 1024;
}

static bool expects_continue(const struct http_request *req) {
  const char *e = http_request_header(req, "Expect");
  return e && strcasecmp(e, "100-continue") == 0;
}

/* Returns false when the declared body is too large to drain (answer at once, unread). */
static bool check_body_headers(struct http_request *req) {
  const char *cl = http_request_header(req, "Content-Length");
  if (!is_json_type(http_request_header(req, "Content-Type")))
    set_pending(req, API_ERR_UNSUPPORTED_MEDIA_TYPE, NULL);
  if (cl) {
    char *end;
    unsigned long long n = strtoull(cl, &end, 10);
    if (*end == '\0' && n > (unsigned long long)req->server->cfg->max_body_bytes) {
      if (expects_continue(req) || n > drain_limit(req->server)) return false;
      set_pending(req, API_ERR_PAYLOAD_TOO_LARGE, req->server->too_large_msg);
    } else if (*end == '\0' && n > 0) {
      /* Trust a declared length only so far: memory follows the bytes that really arrive. */
      req->body_cap = (size_t)(n < BODY_PREALLOC_MAX ? n + 1 : BODY_PREALLOC_MAX);
    }
  }
  req->keep_body = !req->has_pending;
  return true;
}

/* First call: decide what the headers can decide. Returns true when an answer was queued. */
static bool on_headers(struct http_request *req) {
  char allow[128];
  bool known;
  req->route = route_find(req->path, req->method, allow, sizeof allow, &known);
  req->state = REQ_BODY;
  if (!req->route) {
    if (known && strcmp(req->method, "OPTIONS") == 0) {
      reply_options(req, allow);
    } else if (known) {
      http_reply_header(req, "Allow", allow);
      set_pending(req, API_ERR_METHOD_NOT_ALLOWED, NULL);
    } else {
      set_pending(req, API_ERR_NOT_FOUND, "No such endpoint");
    }
    return false;
  }
  if (req->route->match == MATCH_PREFIX) req->param = req->path + strlen(req->route->path);
  /* While a request is being received, a silent client is cut off after the request timeout
   * (the idle timeout applies again once the request is answered). */
  const struct config *cfg = req->server->cfg;
  if (cfg->request_timeout < cfg->connection_timeout)
    MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)cfg->request_timeout);
  check_access(req);
  if (req->route->json_body && !check_body_headers(req)) {
    http_reply_header(req, "Connection", "close");
    http_reply_error(req, API_ERR_PAYLOAD_TOO_LARGE, req->server->too_large_msg, NULL);
    return true;
  }
  return false;
}

/* Appends to the bounded body buffer; false when out of memory. */
static bool body_append(struct http_request *req, const char *data, size_t size) {
  if (req->body_len + size + 1 > req->body_cap || !req->body) {
    size_t need = req->body_len + size + 1;
    size_t cap = req->body_cap >= need ? req->body_cap : need * 2;
    size_t max = (size_t)req->server->cfg->max_body_bytes + 1;
    char *nb = realloc(req->body, cap > max ? max : cap);
    if (!nb) return false;
    req->body = nb;
    req->body_cap = cap > max ? max : cap;
  }
  memcpy(req->body + req->body_len, data, size);
  req->body_len += size;
  req->body[req->body_len] = '\0';
  return true;
}

/* Body calls. Returns 0 to go on, or the status to log for a connection that must be cut:
 * libmicrohttpd cannot deliver an answer while a request body is still arriving, so a client
 * that is too slow, or sends far more than the limit, is disconnected. */
static unsigned on_body(struct http_request *req, const char *data, size_t size) {
  struct http_server *s = req->server;
  req->received += size;
  if (time_mono_ms() - req->start_ms > (double)s->cfg->request_timeout * 1000.0)
    return api_error_get(API_ERR_REQUEST_TIMEOUT)->status;
  if (req->received > drain_limit(s)) return api_error_get(API_ERR_PAYLOAD_TOO_LARGE)->status;
  if (!req->keep_body) return 0;
  if (req->received > (size_t)s->cfg->max_body_bytes) {
    set_pending(req, API_ERR_PAYLOAD_TOO_LARGE, req->server->too_large_msg);
    req->keep_body = false;
  } else if (!body_append(req, data, size)) {
    set_pending(req, API_ERR_UNAVAILABLE, "Out of memory");
    req->keep_body = false;
  }
  return 0;
}

/* Final call: send what the headers decided, or dispatch to the endpoint. */
static void dispatch(struct http_request *req) {
  if (!req->response && req->has_pending) {
    http_reply_error(req, req->pending, req->pending_message, NULL);
    return;
  }
  if (req->response) return; /* OPTIONS */
  /* Shutdown closes the gate, then waits for running handlers, so none can suspend a request
   * after the final wait has begun. */
  struct http_server *s = req->server;
  atomic_fetch_add(&s->dispatching, 1);
  if (atomic_load(&s->closed)) {
    http_reply_header(req, "Connection", "close");
    http_reply_error(req, API_ERR_UNAVAILABLE, "The service is shutting down; retry", NULL);
  } else {
    req->route->handler(req);
  }
  atomic_fetch_sub(&s->dispatching, 1);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls) {
  (void)version;
  struct http_request *req = *con_cls;
  if (!req) {
    req = request_new(cls, conn, url, method);
    if (!req) return MHD_NO;
    *con_cls = req;
    return on_headers(req) ? queue_reply(req) : MHD_YES;
  }
  switch (req->state) {
    case REQ_BODY:
      if (*upload_data_size) {
        unsigned cut = on_body(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
        if (!cut) return MHD_YES;
        req->status = cut;
        req->state = REQ_DONE; /* for the log line */
        return MHD_NO;
      }
      dispatch(req);
      /* Suspended: the store may already have resumed it (state is then written by another
       * thread), so only this thread's own on_resume field is consulted here. */
      return req->on_resume ? MHD_YES : queue_reply(req);
    case REQ_RESUMED:
      req->on_resume(req);
      return queue_reply(req);
    case REQ_SUSPENDED: /* MHD does not call a suspended connection; be safe */
      return MHD_YES;
    default:
      *upload_data_size = 0; /* already answered: drop whatever else arrives */
      return MHD_YES;
  }
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)toe;
  struct http_server *s = cls;
  struct http_request *req = *con_cls;
  if (!req) return;
  struct log_request line = {
      .request_id = req->request_id,
      .method = req->method,
      .path = req->path,
      .status = req->state == REQ_DONE ? req->status : 0,
      .duration_ms = time_mono_ms() - req->start_ms,
      .client_ip = req->client_ip,
  };
  log_request_line(&line);
  if (s->cfg->request_timeout < s->cfg->connection_timeout)
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT,
                              (unsigned)s->cfg->connection_timeout);
  bool parked = req->parked;
  request_free(req);
  *con_cls = NULL;
  if (parked) atomic_fetch_sub(&s->parked, 1);
  atomic_fetch_sub(&s->inflight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  log_msg(LOG_DEBUG, "libmicrohttpd: %s", msg);
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

#define SYNC_INTERVAL_US 5000
#define PROBE_EVERY_MS 1000.0
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
    usleep(SYNC_INTERVAL_US);
  }
  return NULL;
}

static bool start_sharing(struct http_server *s) {
  ratelimit_share(s->rl_webhook, s->redis, "gensendrep:rl:webhook:");
  ratelimit_share(s->rl_api, s->redis, "gensendrep:rl:api:");
  (void)redis_probe(s->redis); /* know the state before the first request */
  s->sync_started = pthread_create(&s->sync_thread, NULL, sync_main, s) == 0;
  return s->sync_started;
}

static void server_free(struct http_server *s) {
  if (s->sync_started) {
    atomic_store(&s->sync_stop, true);
    pthread_join(s->sync_thread, NULL);
  }
  ratelimit_free(s->rl_webhook);
  ratelimit_free(s->rl_api);
  cors_free(&s->cors);
  free(s->trusted_buf);
  free(s);
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
  auth_init(&s->auth, cfg->api_secret_key);
  cors_init(&s->cors, cfg->cors_origins);
  s->trusted_buf = strdup(cfg->trusted_proxies);
  if (s->trusted_buf) s->ntrusted = config_split_list(s->trusted_buf, s->trusted, TRUSTED_MAX);
  s->rl_webhook = ratelimit_new(cfg->rate_limit_webhook, RATELIMIT_KEYS_MAX);
  s->rl_api = ratelimit_new(cfg->rate_limit_api, RATELIMIT_KEYS_MAX);
  struct sockaddr_storage ss = {0};
  bool ipv6 = false;
  s->redis = redis;
  if (!s->rl_webhook || !s->rl_api || !s->trusted_buf || (redis && !start_sharing(s))) {
    snprintf(err, errlen, "out of memory");
    server_free(s);
    return NULL;
  }
  if (!resolve_host(cfg->host, (unsigned)cfg->port, &ss, &ipv6)) {
    snprintf(err, errlen, "HOST: not a numeric IPv4 or IPv6 address: %.64s", cfg->host);
    server_free(s);
    return NULL;
  }
  long threads = cfg->threads ? cfg->threads : sysconf(_SC_NPROCESSORS_ONLN);
  if (threads < 1) threads = 1;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                   MHD_USE_ITC | MHD_USE_ERROR_LOG | (ipv6 ? MHD_USE_IPv6 : 0);
  s->daemon = MHD_start_daemon(
      flags, (uint16_t)cfg->port, NULL, NULL, on_access, s, MHD_OPTION_NOTIFY_COMPLETED,
      on_completed, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_THREAD_POOL_SIZE,
      (unsigned)threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
      MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections_per_ip,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->connection_timeout,
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HEADER_BYTES_MAX, MHD_OPTION_EXTERNAL_LOGGER,
      on_mhd_log, NULL, MHD_OPTION_END);
  if (!s->daemon) {
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
  MHD_socket ls = MHD_quiesce_daemon(s->daemon);
  if (ls != MHD_INVALID_SOCKET) close(ls);
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
  server_free(s);
  return true;
}
