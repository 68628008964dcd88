/* What endpoints see of HTTP: a parsed request, ways to answer it, and suspension for
 * answers that wait (on the store's writer, or on the offload threads for anything that may
 * block). No libmicrohttpd type leaks through this header. */
#ifndef GSR_HTTP_H
#define GSR_HTTP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/apikey.h"
#include "core/errors.h"

struct http_request;

/* ROUTE_SIGNED: the endpoint authenticates the request itself, from a signature over its
 * body (or with http_request_bearer_ok). When the request carries the route's
 * signature_header, no rate limit is applied from the headers: the endpoint must call
 * http_request_limit once it knows whether the signature is valid (and if the stream's open
 * refuses such a request, it is counted against the per-IP webhook limit). Without that header
 * the route's limit applies from the headers as usual. */
enum route_auth { ROUTE_PUBLIC, ROUTE_BEARER, ROUTE_SIGNED };
enum route_limit { LIMIT_NONE, LIMIT_PER_IP, LIMIT_PER_KEY };
/* MATCH_PARAM_SUFFIX: path, then a parameter holding no raw '/', then suffix. */
enum route_match { MATCH_EXACT, MATCH_PREFIX, MATCH_PARAM_SUFFIX };

typedef void (*route_handler)(struct http_request *req);

/* A body too large to hold in memory is handed to the endpoint as it arrives. */
struct route_stream {
  /* The largest body the route accepts (bytes), read once per request. */
  size_t (*max_bytes)(void *app);
  /* Headers received and nothing refused yet: returns the request's sink, or NULL after
   * http_request_refuse (the body is then drained and that answer sent). */
  void *(*open)(struct http_request *req);
  /* The next body bytes, in order. false: stop, after http_request_refuse. */
  bool (*write)(struct http_request *req, void *sink, const char *data, size_t len);
  void (*free)(void *sink);
};

struct route {
  const char *method;
  const char *path; /* MATCH_PREFIX: everything after it is the path parameter */
  enum route_match match;
  route_handler handler; /* called once the whole body has arrived */
  enum route_auth auth;
  enum route_limit limit;
  bool json_body;                    /* requires Content-Type: application/json and a body */
  const char *suffix;                /* MATCH_PARAM_SUFFIX */
  const char *signature_header;      /* ROUTE_SIGNED */
  const struct route_stream *stream; /* NULL: the body is collected (at most MAX_BODY_BYTES) */
  /* The scope (APIKEY_SCOPE_*) a data key needs here (ROUTE_BEARER, and ROUTE_SIGNED's Bearer
   * fallback); 0: admin only. API_SECRET_KEY keys hold every scope. */
  unsigned scope;
};

/* The application's routes and state, defined by the api layer. */
extern const struct route api_routes[];
extern const size_t api_route_count;

/* Provided by the application, like api_routes: reads the data key id (core/apikey.h) into out.
 * May block: called on offload threads only. 1: found, 0: no such key, -1: cannot tell now. */
int api_key_lookup(void *app, const char *id, struct apikey_record *out);
/* Records that key id was used at now_us (at most once a minute per key). Must not block. */
void api_key_touch(void *app, const char *id, int64_t now_us);
/* Provided by the application: req was answered 401 (no valid key or signature) or 403 (a
 * valid key without the route's scope), whoever decided it (the HTTP layer or the endpoint).
 * Called once per such request as it completes, on an HTTP thread: must not block. */
void api_auth_rejected(void *app, const struct http_request *req, unsigned status);

/* ---- request accessors ---- */
void *http_request_app(const struct http_request *req);
const char *http_request_method(const struct http_request *req);
/* Whether the request line says HTTP/1.0 (no chunked answers: a body of unknown length then
 * just ends when the connection closes, so a cut one looks complete). */
bool http_request_http10(const struct http_request *req);
/* The decoded path parameter of a MATCH_PREFIX route ("" for exact routes). */
const char *http_request_path_param(const struct http_request *req);
/* A decoded query argument, or NULL when absent. */
const char *http_request_query(const struct http_request *req, const char *name);
/* The query's parameters in order (an endpoint that refuses names it does not know): how many,
 * and the i-th's decoded name, its value into *value (NULL when given without '='). */
size_t http_request_query_count(const struct http_request *req);
const char *http_request_query_at(const struct http_request *req, size_t i, const char **value);
const char *http_request_header(const struct http_request *req, const char *name);
const char *http_request_body(const struct http_request *req, size_t *len);
const char *http_request_id(const struct http_request *req);
/* The client's address (the peer, or what a trusted proxy says). */
const char *http_request_client_ip(const struct http_request *req);
/* The public id of the key the request presented: a data key's id (gsr_<id>_...) once it is
 * well formed, valid or not, or an API_SECRET_KEY key's name (auth_key_id) when it is one of
 * them; NULL for none (no Bearer key, or a signature). Never the key. */
const char *http_request_key_id(const struct http_request *req);
/* The route the request's path and method matched (an entry of api_routes), or NULL. */
const struct route *http_request_route(const struct http_request *req);
/* The sink a stream route's open returned (NULL for other routes). */
void *http_request_sink(const struct http_request *req);
/* Whether the request's Authorization header holds one of our API keys (constant time): an
 * API_SECRET_KEY key, or a data key with the route's scope (one not read yet counts: it is
 * decided before the handler runs). */
bool http_request_bearer_ok(const struct http_request *req);
/* Whether the request's data key is still to be read (it is, before the handler runs): a
 * streamed body arrives before that, so what it holds meanwhile is unverified. */
bool http_request_key_unverified(const struct http_request *req);
/* The accounts the request's key is bound to (*n of them), or NULL when it sees every account
 * (an API_SECRET_KEY key, or a data key bound to none). */
const char *const *http_request_accounts(const struct http_request *req, size_t *n);

/* ---- streamed bodies ---- */
/* From a route_stream's open or write: the answer (message copied, details stolen) to send
 * once the rest of the body has been drained. The first refusal wins. */
void http_request_refuse(struct http_request *req, enum api_error err, const char *message,
                         json_t *details);

/* ---- rate limits decided by the endpoint (ROUTE_SIGNED) ---- */
enum http_limiter {
  HTTP_LIMIT_WEBHOOK, /* RATE_LIMIT_WEBHOOK_PER_MINUTE */
  HTTP_LIMIT_SIGNED,  /* RATE_LIMIT_ELEVENLABS_PER_MINUTE: validly signed requests */
};
/* Counts the request against limiter under key (NULL: the client's address), then calls
 * then(req) (on an HTTP thread, possibly later: Redis may have to decide off the event
 * thread). Over the limit, the request is answered 429 instead and then is not called. Call
 * once, from a handler, before suspending for anything else. */
void http_request_limit(struct http_request *req, enum http_limiter limiter, const char *key,
                        void (*then)(struct http_request *));

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
/* Sends the first len bytes of the file fd (ownership taken: closed with the reply). MHD
 * reads it as the client takes it, so a large file is never held in memory. */
void http_reply_fd(struct http_request *req, unsigned status, const char *content_type, int fd,
                   size_t len);
/* A body of unknown length made a piece at a time (http/stream.c): sent chunked (HTTP/1.0:
 * until the connection closes). fill(state, &data, &len) runs on an offload thread each time
 * the piece before has been sent (first right after the headers): it points data at its next
 * bytes (state's, valid until the next fill or free_state) and answers MORE, END (these are
 * the last bytes) or FAILED (the answer is cut short: the client sees it incomplete). Headers
 * and status go first, so anything that can be refused must be found out before (offload a
 * first piece). state (owned) is freed with free_state when the answer ends, on an HTTP
 * thread; free_state may be NULL when state is the request's own (http_request_state): the
 * request is freed only after the answer's last fill.
 * ended (may be NULL) runs on an HTTP thread when the answer ends, before state is freed:
 * complete is true when every byte was sent, the end included (libmicrohttpd reported the
 * request completed; for HEAD, the headers); handed is true when the bytes of the last fill
 * were all handed to libmicrohttpd (those of every fill before it were, before it ran). Not
 * called when the answer could not be queued. */
enum http_stream_fill { HTTP_STREAM_MORE, HTTP_STREAM_END, HTTP_STREAM_FAILED };
void http_reply_stream(struct http_request *req, unsigned status, const char *content_type,
                       enum http_stream_fill (*fill)(void *state, const char **data, size_t *len),
                       void (*ended)(void *state, bool complete, bool handed), void *state,
                       void (*free_state)(void *));
/* The one error answer: {"success":false,"error":{"code","message","details"}}.
 * message NULL uses the table's default; details (stolen) may be NULL. */
void http_reply_error(struct http_request *req, enum api_error err, const char *message,
                      json_t *details);
/* Adds a header to the reply about to be sent (call before a reply function): at most 8 per
 * reply, each value at most 255 bytes (past either, the header is not sent and an error is
 * logged: a bug of the caller's, never cut silently). A name said again (any case) replaces
 * the earlier value: one Retry-After, the last decision's. name must outlive the reply. */
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
