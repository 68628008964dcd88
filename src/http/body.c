/* Request bodies: Content-Type and declared-size checks, accumulation in a bounded buffer,
 * and draining (reading and discarding) a body whose answer is already known, so that the
 * client gets that answer rather than a reset connection. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/timeutil.h"
#include "http/server_internal.h"

#define STREAM_CREDIT_BYTES (256.0 * 1024.0)

static bool is_json_type(const char *ct) {
  if (!ct) return false;
  while (*ct == ' ') ct++;
  size_t n = strcspn(ct, "; ");
  return n == strlen("application/json") && strncasecmp(ct, "application/json", n) == 0;
}

/* A body over the limit is still read and discarded, up to this many bytes, so the client
 * gets its 413 instead of a reset connection; beyond it the connection is closed at once. */
static size_t drain_limit(const struct http_request *req) {
  return req->body_max + (size_t)req->server->cfg->max_body_bytes * 3 + 1024 * 1024;
}

/* The 413 message, naming the route's own limit when it is not MAX_BODY_BYTES. */
static void refuse_too_large(struct http_request *req) {
  if (req->body_max == (size_t)req->server->cfg->max_body_bytes)
    request_set_pending(req, API_ERR_PAYLOAD_TOO_LARGE, req->server->too_large_msg);
  else
    request_set_pending_detail(req, API_ERR_PAYLOAD_TOO_LARGE, NULL,
                               "Request body is larger than %zu bytes", req->body_max);
}

bool body_expects_continue(const struct http_request *req) {
  const char *e = http_request_header(req, "Expect");
  return e && strcasecmp(e, "100-continue") == 0;
}

bool body_declared_beyond_drain(struct http_request *req) {
  const char *cl = http_request_header(req, "Content-Length");
  if (!cl) return false;
  char *end;
  unsigned long long n = strtoull(cl, &end, 10);
  return *end == '\0' && n > drain_limit(req);
}

bool body_check_headers(struct http_request *req) {
  const char *cl = http_request_header(req, "Content-Length");
  if (!is_json_type(http_request_header(req, "Content-Type")))
    request_set_pending(req, API_ERR_UNSUPPORTED_MEDIA_TYPE, NULL);
  if (cl) {
    char *end;
    unsigned long long n = strtoull(cl, &end, 10);
    if (*end == '\0' && n > (unsigned long long)req->body_max) {
      if (body_expects_continue(req) || n > drain_limit(req)) return false;
      refuse_too_large(req);
    } else if (*end == '\0' && n > 0 && !req->route->stream) {
      /* Trust a declared length only so far: memory follows the bytes that really arrive. */
      req->body_cap = (size_t)(n < BODY_PREALLOC_MAX ? n + 1 : BODY_PREALLOC_MAX);
    }
  }
  req->keep_body = !req->has_pending;
  return true;
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

/* libmicrohttpd cannot deliver an answer while a request body is still arriving, so a client
 * that is too slow, or sends far more than the limit, is disconnected. */
unsigned body_on_chunk(struct http_request *req, const char *data, size_t size) {
  struct http_server *s = req->server;
  req->received += size;
  /* A streamed body may be large: each STREAM_CREDIT_BYTES received buys one more second, so
   * a client sending at least that fast is never cut, and a trickle still is. */
  double allowed_ms = (double)s->cfg->request_timeout * 1000.0;
  if (req->sink) allowed_ms += (double)req->received * 1000.0 / STREAM_CREDIT_BYTES;
  if (time_mono_ms() - req->start_ms > allowed_ms)
    return api_error_get(API_ERR_REQUEST_TIMEOUT)->status;
  if (req->received > drain_limit(req)) return api_error_get(API_ERR_PAYLOAD_TOO_LARGE)->status;
  if (!req->keep_body) return 0;
  if (req->received > req->body_max) {
    refuse_too_large(req);
    req->keep_body = false;
  } else if (req->sink) {
    if (!req->route->stream->write(req, req->sink, data, size)) req->keep_body = false;
  } else if (!body_append(req, data, size)) {
    request_set_pending(req, API_ERR_UNAVAILABLE, "Out of memory");
    req->keep_body = false;
  }
  return 0;
}
