/* What the pieces of the HTTP server share (server.c, request.c, route.c, client.c, body.c):
 * the server and request objects and the functions one piece calls in another. Not for
 * endpoints: they see only http.h. The request lifecycle and the shutdown protocol are written
 * down at the top of server.c. */
#ifndef GSR_SERVER_INTERNAL_H
#define GSR_SERVER_INTERNAL_H

#include <arpa/inet.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/apikey.h"
#include "core/config.h"
#include "core/errors.h"
#include "http/auth.h"
#include "http/cors.h"
#include "http/http.h"
#include "core/workpool.h"
#include "http/ratelimit.h"
#include "http/url.h"

#define HEADER_BYTES_MAX (32 * 1024) /* request line + headers must fit */
#define REQUEST_ID_MAX 128
#define EXTRA_HEADERS_MAX 8
#define TRUSTED_MAX 32
#define RATELIMIT_KEYS_MAX 50000
#define BODY_PREALLOC_MAX (64 * 1024)

struct redis_client;
struct conn_guard;
struct keycache;
struct keycache_entry;
struct stream;

/* What a data key (gsr_...) decided (keys.c). */
enum key_outcome {
  KEY_OUT_NONE,        /* no data key, or not decided yet */
  KEY_OUT_OK,          /* valid and holds the route's scope */
  KEY_OUT_FORBIDDEN,   /* valid, without the route's scope: 403 */
  KEY_OUT_INVALID,     /* unknown, wrong secret, revoked or expired: 401 */
  KEY_OUT_UNAVAILABLE, /* could not be read (database down, out of memory): 503 */
};

struct http_server {
  struct MHD_Daemon *daemon;
  struct conn_guard *guard; /* header timeout, half-closed and full-table policy */
  const struct config *cfg;
  void *app;
  struct auth auth;
  struct cors cors;
  struct ratelimit *rl_webhook;
  struct ratelimit *rl_api;
  struct ratelimit *rl_signed; /* validly signed requests of ROUTE_SIGNED routes, per secret */
  struct redis_client *redis;  /* not owned; NULL without REDIS_URL */
  pthread_t sync_thread;
  bool sync_started;
  atomic_bool sync_stop;
  char *trusted_buf;
  char *trusted[TRUSTED_MAX];
  size_t ntrusted;
  unsigned port;
  struct workpool *pool;  /* offload threads (offload.c) */
  struct keycache *keys;  /* data keys read from the database (keys.c) */
  char too_large_msg[96]; /* the 413 message, naming the configured limit */
  /* The shutdown protocol (server.c) rests on these four counters and flags. */
  atomic_int inflight;    /* requests begun and not completed */
  atomic_int dispatching; /* handlers running right now */
  atomic_int parked;      /* requests suspended on the store and not yet completed */
  atomic_bool stopping;   /* answers say Connection: close */
  atomic_bool closed;     /* no handler may start any more */
};

/* Where a request is in its lifecycle (see server.c). */
enum req_state { REQ_NEW, REQ_BODY, REQ_SUSPENDED, REQ_RESUMED, REQ_DONE };

struct extra_header {
  const char *name;
  char value[256]; /* the longest we send is a Content-Security-Policy */
};

struct http_request {
  struct http_server *server;
  struct MHD_Connection *conn;
  enum req_state state;
  const struct route *route;
  const struct route *path_route; /* metrics: the route of a known path asked with another
                                   * method (405, OPTIONS); NULL otherwise */
  bool started;        /* request_start ran: counted in server->inflight, logged when completed */
  bool target_has_nul; /* a raw NUL byte inside the request target (on_uri) */
  const char *method;
  bool http10;            /* the request line says HTTP/1.0 */
  char *path;             /* raw (undecoded) path, owned: routing and the log line use it */
  char *query_raw;        /* raw text after '?', owned; NULL without one */
  char *param_buf;        /* the decoded path parameter, owned */
  const char *param;      /* param_buf or "" */
  struct url_query query; /* decoded query parameters */
  char request_id[REQUEST_ID_MAX + 1];
  char client_ip[INET6_ADDRSTRLEN];
  double start_ms;
  /* body */
  size_t body_max;       /* the largest body this request's route accepts */
  void *sink;            /* a stream route's sink (route->stream) */
  bool limit_by_handler; /* ROUTE_SIGNED with its signature header: the endpoint limits */
  void (*limit_then)(struct http_request *); /* http_request_limit's continuation */
  char *body;
  size_t body_len, body_cap;
  size_t received; /* body bytes seen, kept or not */
  bool keep_body;
  bool body_done; /* the final call was seen once: dispatch on the next (server.c) */
  /* an answer decided from the headers, sent after the body is drained */
  bool has_pending;
  enum api_error pending;
  const char *pending_message;
  json_t *pending_details; /* owned until sent */
  char pending_text[192];  /* room for a pending message built for this request */
  /* reply */
  struct MHD_Response *response;
  unsigned status;
  const char *content_type;
  struct extra_header extra[EXTRA_HEADERS_MAX];
  size_t nextra;
  bool has_limit;
  struct ratelimit_result limit;
  /* a rate-limit decision only Redis can make, taken off the event thread (offload.c) */
  bool limit_deferred;
  struct ratelimit *limit_rl; /* the limit last applied (the metrics name a 429 by it) */
  char limit_key[RATELIMIT_KEY_MAX];
  /* a data key (keys.c): parsed from the headers, decided from the cache or after a lookup */
  bool key_deferred; /* the lookup is left to the final call (an offload thread) */
  enum key_outcome key_outcome;
  char key_id[APIKEY_ID_LEN + 1];
  unsigned char key_sha[32];  /* SHA-256 of the secret sent */
  int env_key;                /* the API_SECRET_KEY key presented (auth.h index), or -1 */
  struct keycache_entry *key; /* owned: what the key's record says */
  const char *key_accounts[APIKEY_ACCOUNTS_MAX]; /* into key */
  /* suspension */
  bool parked; /* counted in server->parked until completed */
  void (*on_resume)(struct http_request *);
  void *state_data;
  void (*free_state)(void *);
  /* a streamed answer (stream.c): set until it is queued and completes, or is replaced */
  struct stream *stream;
  /* offloaded work (offload.c) */
  struct workpool_job job;
  void (*work)(void *state);
};

/* ---- request.c: the request object, replies and queueing ---- */
/* A new request context holding a copy of the raw request target (path and query, as the
 * client wrote them), made before the headers arrive; NULL when out of memory. */
struct http_request *request_new(struct http_server *s, struct MHD_Connection *conn,
                                 const char *target);
/* Sets the request id (the client's X-Request-Id when sane, else a new one) and the client
 * address from what the headers hold so far. */
void request_identify(struct http_request *req);
/* The first call, headers received: request id, client address, counted in inflight. */
void request_start(struct http_request *req, const char *method);
/* Frees the request and everything it owns (not the inflight count: on_completed does). */
void request_free(struct http_request *req);
/* Records the answer the headers decided, sent once the body has been drained; the first
 * decision wins. message NULL uses the table's default. */
void request_set_pending(struct http_request *req, enum api_error e, const char *message);
/* The same with details (stolen; NULL for none) and a message formatted into the request. */
void request_set_pending_detail(struct http_request *req, enum api_error e, json_t *details,
                                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Sets r (owned) as the reply (stream.c's streamed answers). */
void request_set_response(struct http_request *req, unsigned status, const char *type,
                          struct MHD_Response *r);
/* Queues the reply set by a http_reply_* call (a 500 when none was set) with the common
 * headers; the request is then REQ_DONE. */
enum MHD_Result request_queue_reply(struct http_request *req);

/* ---- route.c: routing on the path ---- */
/* Finds the route for the raw (undecoded) path; *param_at is where a MATCH_PREFIX route's
 * parameter starts in it. When the path is known but the method is not, *path_known is true
 * and allow lists the methods the path supports. */
const struct route *route_find(const char *raw_path, const char *method, size_t *param_at,
                               char *allow, size_t cap, bool *path_known);
/* The first route whose path matches the raw path, whatever its method (NULL: none). */
const struct route *route_of_path(const char *raw_path);
/* The route's path pattern with its parameter named, e.g.
 * "/api/v1/conversations/{conversation_id}" (the metrics' route label). */
void route_pattern(const struct route *r, char *out, size_t cap);
/* CORS preflight or a plain OPTIONS: 204 with what the path allows. */
void route_reply_options(struct http_request *req, const char *allow);

/* ---- client.c: who the client is, and what it may do ---- */
/* Sets req->client_ip: the peer, or what trusted proxies say in X-Forwarded-For. */
void client_identify(struct http_request *req);
/* Rate limiting and authentication for req->route; decides a pending 401/429 if needed. */
void client_check_access(struct http_request *req);
/* Counts the request against the per-IP webhook limit now; over it, a 429 replaces any
 * answer already decided. */
void client_limit_ip(struct http_request *req);
/* The rate-limit key of the client's address. */
void client_ip_key(const struct http_request *req, char *key, size_t cap);

/* ---- body.c: request bodies, their limits and draining ---- */
/* Checks Content-Type and the declared size. Returns false when the declared body is too
 * large even to drain (answer at once, unread). */
bool body_check_headers(struct http_request *req);
/* True when a declared Content-Length is beyond what any request may send (more than the
 * drain limit): whatever the route, the answer cannot wait for that body. */
bool body_declared_beyond_drain(struct http_request *req);
/* Whether the client waits for "100 Continue" before sending its body. */
bool body_expects_continue(const struct http_request *req);
/* One body chunk. Returns 0 to go on, or the status to log for a connection to cut. */
unsigned body_on_chunk(struct http_request *req, const char *data, size_t size);

/* ---- offload.c: work that may wait, off the event threads ---- */
/* Headers call: leaves the rate-limit hit on key for Redis to decide in the final call. */
void offload_limit_defer(struct http_request *req, struct ratelimit *rl, const char *key);
/* Final call: parks the request while Redis decides; on_decided then runs on the event thread
 * (or the request is answered 503 when the offload queue is full). */
void offload_limit_start(struct http_request *req, void (*on_decided)(struct http_request *));
/* The Retry-After header of a denial (req->limit). */
void offload_limit_retry_after(struct http_request *req);
/* In on_decided: records the decision (a denial replaces any answer pending). */
void offload_limit_apply(struct http_request *req);

/* ---- keys.c: data keys (gsr_...) ---- */
struct keycache *keycache_new(void);
void keycache_free(struct keycache *c);
/* Headers call: true when Authorization holds a well-formed data key (req->key_id and
 * req->key_sha set). */
bool keys_parse_header(struct http_request *req);
/* Takes the key's cache entry when fresh enough to trust (req->key set): false when it must
 * be read again (keys_start_lookup, off the event thread). */
bool keys_lookup_fresh(struct http_request *req);
/* The decision for req->key against the scope a route needs (records the key's use). */
enum key_outcome keys_decide(struct http_request *req, unsigned need);
/* Records the decision: a 401, 403 or 503 pending unless OK. */
void keys_apply(struct http_request *req, enum key_outcome out);
/* Final call: reads the key on an offload thread, then on_done on an HTTP thread. */
void keys_start_lookup(struct http_request *req, void (*on_done)(struct http_request *));

/* ---- stream.c ---- */
/* on_completed of a request answered by http_reply_stream: tells the answer's ended. */
void stream_ended(struct stream *st, enum MHD_RequestTerminationCode toe);

/* ---- server.c ---- */
/* Runs fn (which may suspend the request) unless shutdown has closed the gate. */
void server_run_gated(struct http_request *req, void (*fn)(struct http_request *));

#endif
