/* The request object: set-up and freeing, what endpoints read of a request (http.h), the
 * replies they make, suspension, and queueing the one answer with the common headers. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "ext/crypto.h"
#include "http/server_internal.h"

/* ---------------- request accessors ---------------- */

void *http_request_app(const struct http_request *req) { return req->server->app; }
const char *http_request_method(const struct http_request *req) { return req->method; }

bool http_request_http10(const struct http_request *req) { return req->http10; }
const char *http_request_path_param(const struct http_request *req) { return req->param; }
const char *http_request_id(const struct http_request *req) { return req->request_id; }
const char *http_request_client_ip(const struct http_request *req) { return req->client_ip; }

const char *http_request_key_id(const struct http_request *req) {
  if (req->key_id[0]) return req->key_id;
  if (req->env_key >= 0) return auth_key_id(&req->server->auth, req->env_key);
  return NULL;
}

const char *http_request_query(const struct http_request *req, const char *name) {
  return url_query_get(&req->query, name);
}

size_t http_request_query_count(const struct http_request *req) { return req->query.count; }

const char *http_request_query_at(const struct http_request *req, size_t i, const char **value) {
  *value = req->query.params[i].value;
  return req->query.params[i].name;
}

const char *http_request_header(const struct http_request *req, const char *name) {
  return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_request_body(const struct http_request *req, size_t *len) {
  *len = req->body_len;
  return req->body ? req->body : "";
}

void *http_request_state(struct http_request *req) { return req->state_data; }
void *http_request_sink(const struct http_request *req) { return req->sink; }
const struct route *http_request_route(const struct http_request *req) { return req->route; }

void http_request_refuse(struct http_request *req, enum api_error err, const char *message,
                         json_t *details) {
  request_set_pending_detail(req, err, details, "%s", message);
}

/* ---------------- replies ---------------- */

void http_reply_header(struct http_request *req, const char *name, const char *value) {
  /* a header cut or dropped is a bug of ours (the limits fit every header we send): said
   * loudly, never silently (a cut security header would weaken it unseen) */
  size_t len = strlen(value);
  if (len >= sizeof req->extra[0].value) {
    log_msg(LOG_ERROR, "http: header %s not sent: its value passes %zu bytes", name,
            sizeof req->extra[0].value - 1);
    return;
  }
  struct extra_header *h = NULL;
  for (size_t i = 0; i < req->nextra && !h; i++) /* said again: the last value wins */
    if (strcasecmp(req->extra[i].name, name) == 0) h = &req->extra[i];
  if (!h) {
    if (req->nextra >= EXTRA_HEADERS_MAX) {
      log_msg(LOG_ERROR, "http: header %s not sent: more than %d extra headers", name,
              EXTRA_HEADERS_MAX);
      return;
    }
    h = &req->extra[req->nextra++];
    h->name = name;
  }
  memcpy(h->value, value, len + 1);
}

static void set_response(struct http_request *req, unsigned status, const char *type,
                         struct MHD_Response *r) {
  if (req->response) MHD_destroy_response(req->response); /* the last reply wins */
  req->stream = NULL; /* a streamed answer replaced is freed with its response */
  req->response = r;
  req->status = r ? status : 500;
  req->content_type = type;
}

void request_set_response(struct http_request *req, unsigned status, const char *type,
                          struct MHD_Response *r) {
  set_response(req, status, type, r);
}

void http_reply_owned(struct http_request *req, unsigned status, const char *content_type,
                      void *body, size_t len) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
  if (!r) free(body); /* only a response that exists takes the body over */
  set_response(req, status, content_type, r);
}

void http_reply_fd(struct http_request *req, unsigned status, const char *content_type, int fd,
                   size_t len) {
  struct MHD_Response *r = MHD_create_response_from_fd_at_offset64(len, fd, 0);
  if (!r) close(fd); /* only a response that exists takes the file over */
  set_response(req, status, content_type, r);
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
    /* Out of memory, or a message that is not valid UTF-8 (a bug: messages quoting client
     * bytes are sanitised): never silent. */
    log_msg(LOG_ERROR, "request %s: its %u answer could not be encoded; answered 500",
            req->request_id, status);
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
  if (info->status >= 500 && err != API_ERR_NOT_IMPLEMENTED) /* 501: what the client asked */
    log_msg(LOG_ERROR, "request %s answered %u %s", req->request_id, info->status, info->code);
  json_t *body =
      json_pack("{s:b,s:{s:s,s:s,s:o}}", "success", 0, "error", "code", info->code, "message",
                message ? message : info->message, "details", details ? details : json_array());
  http_reply_json(req, info->status, body);
}

void request_set_pending(struct http_request *req, enum api_error e, const char *message) {
  if (req->has_pending) return;
  req->has_pending = true;
  req->pending = e;
  req->pending_message = message;
}

void request_set_pending_detail(struct http_request *req, enum api_error e, json_t *details,
                                const char *fmt, ...) {
  if (req->has_pending) {
    json_decref(details);
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(req->pending_text, sizeof req->pending_text, fmt, ap);
  va_end(ap);
  request_set_pending(req, e, req->pending_text);
  req->pending_details = details;
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

enum MHD_Result request_queue_reply(struct http_request *req) {
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
  bool retry_after = false;
  for (size_t i = 0; i < req->nextra; i++) {
    MHD_add_response_header(r, req->extra[i].name, req->extra[i].value);
    retry_after = retry_after || strcasecmp(req->extra[i].name, "Retry-After") == 0;
  }
  /* every 503 says when to come back; an endpoint that knows better has said it above */
  if (req->status == 503 && !retry_after) MHD_add_response_header(r, "Retry-After", "1");
  if (atomic_load(&req->server->stopping)) MHD_add_response_header(r, "Connection", "close");
  enum MHD_Result ret = MHD_queue_response(req->conn, req->status, r);
  if (ret != MHD_YES) req->stream = NULL; /* not queued: freed right below */
  MHD_destroy_response(r);
  req->response = NULL;
  req->state = REQ_DONE;
  return ret;
}

/* ---------------- suspension ---------------- */

void http_request_suspend(struct http_request *req, void (*on_resume)(struct http_request *),
                          void *state, void (*free_state)(void *)) {
  /* A request may be suspended again from on_resume (a rate-limit decision, then the
   * endpoint's own wait): the new state replaces the old, and it is counted once. */
  if (req->free_state && req->state_data != state) req->free_state(req->state_data);
  req->on_resume = on_resume;
  req->state_data = state;
  req->free_state = free_state;
  req->state = REQ_SUSPENDED;
  if (!req->parked) {
    req->parked = true;
    atomic_fetch_add(&req->server->parked, 1);
  }
  MHD_suspend_connection(req->conn);
}

void http_request_resume(struct http_request *req) {
  req->state = REQ_RESUMED;
  MHD_resume_connection(req->conn);
}

/* ---------------- set-up and freeing ---------------- */

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

struct http_request *request_new(struct http_server *s, struct MHD_Connection *conn,
                                 const char *target) {
  struct http_request *req = calloc(1, sizeof *req);
  if (!req) return NULL;
  size_t path_len = strcspn(target, "?");
  req->path = strndup(target, path_len);
  if (target[path_len] == '?') req->query_raw = strdup(target + path_len + 1);
  if (!req->path || (target[path_len] == '?' && !req->query_raw)) {
    request_free(req);
    return NULL;
  }
  req->server = s;
  req->conn = conn;
  req->param = "";
  req->env_key = -1;
  req->start_ms = time_mono_ms();
  return req;
}

void request_identify(struct http_request *req) {
  set_request_id(req);
  client_identify(req);
}

void request_start(struct http_request *req, const char *method) {
  req->method = method;
  req->start_ms = time_mono_ms();
  request_identify(req);
  req->started = true;
  atomic_fetch_add(&req->server->inflight, 1);
}

void request_free(struct http_request *req) {
  if (req->free_state) req->free_state(req->state_data);
  if (req->sink) req->route->stream->free(req->sink);
  if (req->response) MHD_destroy_response(req->response);
  url_query_free(&req->query);
  json_decref(req->pending_details);
  free(req->body);
  free(req->key);
  free(req->param_buf);
  free(req->query_raw);
  free(req->path);
  free(req);
}
