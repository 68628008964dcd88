/* What endpoints see of HTTP: a parsed request, ways to answer it, and suspension for
 * answers that wait (on the store's writer, or on the offload threads for anything that may
 * block). No libmicrohttpd type leaks through this header. */
#ifndef GSR_HTTP_H
#define GSR_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/errors.h"

struct http_request;

enum route_auth { ROUTE_PUBLIC, ROUTE_BEARER };
enum route_limit { LIMIT_NONE, LIMIT_PER_IP, LIMIT_PER_KEY };
enum route_match { MATCH_EXACT, MATCH_PREFIX };

typedef void (*route_handler)(struct http_request *req);

struct route {
  const char *method;
  const char *path; /* MATCH_PREFIX: everything after it is the path parameter */
  enum route_match match;
  route_handler handler;
  enum route_auth auth;
  enum route_limit limit;
  bool json_body; /* requires Content-Type: application/json and a body */
};

/* The application's routes and state, defined by the api layer. */
extern const struct route api_routes[];
extern const size_t api_route_count;

/* ---- request accessors ---- */
void *http_request_app(const struct http_request *req);
const char *http_request_method(const struct http_request *req);
/* The decoded path parameter of a MATCH_PREFIX route ("" for exact routes). */
const char *http_request_path_param(const struct http_request *req);
/* A decoded query argument, or NULL when absent. */
const char *http_request_query(const struct http_request *req, const char *name);
const char *http_request_header(const struct http_request *req, const char *name);
const char *http_request_body(const struct http_request *req, size_t *len);
const char *http_request_id(const struct http_request *req);

/* ---- answering: exactly one reply per request ---- */
/* Sends obj (reference stolen) as JSON with the given status. */
void http_reply_json(struct http_request *req, unsigned status, json_t *obj);
/* Sends body (ownership taken, freed with free()) as JSON. */
void http_reply_json_text(struct http_request *req, unsigned status, char *body, size_t len);
/* Sends static bytes that outlive the server. */
void http_reply_static(struct http_request *req, unsigned status, const char *content_type,
                       const void *body, size_t len);
/* Sends malloc'ed bytes (ownership taken). */
void http_reply_owned(struct http_request *req, unsigned status, const char *content_type,
                      void *body, size_t len);
/* The one error answer: {"success":false,"error":{"code","message","details"}}.
 * message NULL uses the table's default; details (stolen) may be NULL. */
void http_reply_error(struct http_request *req, enum api_error err, const char *message,
                      json_t *details);
/* Adds a header to the reply about to be sent (call before a reply function). */
void http_reply_header(struct http_request *req, const char *name, const char *value);

/* ---- waiting on the store ---- */
/* Parks the request without holding a thread; on_resume runs (on an HTTP thread) after
 * http_request_resume and must reply. state (owned) is freed with free_state when the
 * request ends. Call only from a handler. */
void http_request_suspend(struct http_request *req, void (*on_resume)(struct http_request *),
                          void *state, void (*free_state)(void *));
void *http_request_state(struct http_request *req);
/* Safe from any thread, once per suspension. */
void http_request_resume(struct http_request *req);

/* ---- work that may wait (a database read, a Redis round trip) ---- */
/* Event threads never wait: parks the request and runs work(state) on an offload thread,
 * then on_resume (on an HTTP thread) replies. work may read the request's path parameter,
 * query, headers and body (they stay valid and unchanged while it is parked) but must not
 * reply or touch anything else of it. When the offload queue is full, work never runs and
 * the request is answered 503 (Retry-After: 1) instead of on_resume. state (owned) is freed
 * with free_state when the request ends. Call only from a handler. */
void http_request_offload(struct http_request *req, void (*work)(void *state),
                          void (*on_resume)(struct http_request *), void *state,
                          void (*free_state)(void *));

#endif
