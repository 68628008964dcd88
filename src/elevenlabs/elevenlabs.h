/* The ElevenLabs REST API (base URL ELEVENLABS_API_URL, key ELEVENLABS_API_KEY sent as the
 * xi-api-key header) over libcurl: a bounded GET, the background health check that feeds
 * GET /api/v1/health, and `gensendrep elevenlabs backfill`.
 *
 * Every transfer has a connect and a total timeout, follows no redirect, speaks only http and
 * https, caps the answer's size and stops within about a second when its stop flag is set.
 * The key goes only into the request header: it is never logged nor put into a message. */
#ifndef GSR_ELEVENLABS_H
#define GSR_ELEVENLABS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/config.h"
#include "store/store.h"

#define EL_API_CONNECT_TIMEOUT_MS 5000L
#define EL_API_TIMEOUT_MS 30000L            /* a whole transfer (a long transcript included) */
#define EL_API_MAX_BODY (64L * 1024 * 1024) /* larger answers are refused, not buffered */

/* libcurl's global set-up: call once in main before any thread starts, and the cleanup after
 * every thread using the API has ended. */
__attribute__((warn_unused_result)) bool el_api_global_init(void);
void el_api_global_cleanup(void);

enum el_api_result {
  EL_API_OK,          /* an HTTP answer arrived (any status: see response.status) */
  EL_API_UNREACHABLE, /* no answer: DNS, connect, TLS, timeout, a cut connection */
  EL_API_STOPPED,     /* the stop flag was set */
  EL_API_TOO_BIG,     /* the answer exceeded EL_API_MAX_BODY */
  EL_API_FAILED,      /* out of memory, a bad URL or key: not worth retrying */
};

/* A client. Fill the first fields, zero the rest; el_api_close frees what it holds. One
 * client is used by one thread at a time (it keeps the connection open between requests). */
struct el_api {
  const char *base_url;    /* cfg->elevenlabs_api_url; a trailing '/' is allowed */
  const char *key;         /* cfg->elevenlabs_api_key, not empty */
  long timeout_ms;         /* 0: EL_API_TIMEOUT_MS */
  const atomic_bool *stop; /* may be NULL */
  void *curl;              /* the client's own (a CURL easy handle) */
};

struct el_api_response {
  long status; /* HTTP status when EL_API_OK */
  char *body;  /* owned, NUL-terminated; free with el_api_response_free */
  size_t body_len;
  long retry_after; /* seconds asked by Retry-After (number or HTTP date), -1 when absent */
  char error[256];  /* why, when not EL_API_OK (never holds the key) */
};

/* GET base_url + path (path starts with '/', its query already escaped). */
__attribute__((warn_unused_result)) enum el_api_result el_api_get(struct el_api *api,
                                                                  const char *path,
                                                                  struct el_api_response *out);
void el_api_response_free(struct el_api_response *r);
void el_api_close(struct el_api *api);

/* Percent-encodes s for a path segment or a query value into a malloc'ed string (NULL when
 * out of memory). */
char *el_api_escape(const char *s);

/* ---- the API's answers (untrusted input: fuzz/fuzz_elevenlabs_page.c) ---- */

/* One conversation of a GET /v1/convai/conversations page (ConversationSummaryResponseModel). */
struct el_page_item {
  const char *conversation_id; /* NULL when missing or not a non-empty string */
  const char *status;          /* NULL when missing */
  bool has_start;
  int64_t start_unix; /* start_time_unix_secs */
};

struct el_page {
  void *root; /* the parsed answer (a json_t, owned); the strings above point into it */
  struct el_page_item *items; /* owned */
  size_t count;
  const char *next_cursor; /* NULL unless has_more: then a non-empty string */
  bool has_more;           /* has_more was true and a next_cursor came with it */
};

/* Parses a page (GetConversationsPageResponseModel); unknown fields are ignored. False (and
 * *out empty) when it is not JSON or has no "conversations" array. */
__attribute__((warn_unused_result)) bool el_page_parse(const char *body, size_t len,
                                                       struct el_page *out);
void el_page_free(struct el_page *p);
/* ElevenLabs' reason in an error answer ({"detail": "..."} or {"detail": {"message": ...}}),
 * cut to at most 200 bytes and cap - 1, printable ASCII only (others become '?'); "" when none. */
void el_api_error_detail(const char *body, size_t len, char *out, size_t cap);

/* ---- background health ---- */

struct el_health;

/* Starts the health thread when cfg->elevenlabs_api_key is set (*out NULL when it is not):
 * one check (GET /v1/convai/conversations?page_size=1) at once, then one every
 * cfg->elevenlabs_health_interval seconds. False with one line in err when the URL is not
 * http(s) or the thread cannot start. cfg must outlive the monitor. */
__attribute__((warn_unused_result)) bool el_health_start(const struct config *cfg,
                                                         struct el_health **out, char *err,
                                                         size_t errlen);
/* True when url is an http:// or https:// URL (any case), else one line in err. */
__attribute__((warn_unused_result)) bool el_api_url_ok(const char *url, char *err, size_t errlen);
/* "connected" when the last check got a 2xx (or 429: the key was accepted, only throttled),
 * "disconnected" otherwise and until the first check ends; "not_configured" for NULL. Lock-free:
 * safe on any thread, including libmicrohttpd's. */
const char *el_health_state(const struct el_health *h);
/* Stops the thread (a check in flight is abandoned within about a second) and frees h. */
void el_health_stop(struct el_health *h);

/* ---- backfill ---- */

struct el_backfill_options {
  const char *agent_id; /* NULL: every agent */
  bool has_since;
  int64_t since_unix; /* only conversations started at or after this second */
  FILE *progress;     /* a terminal to redraw a count line on, or NULL */
};

struct el_backfill_counts {
  long listed;  /* conversations the API listed */
  long stored;  /* fetched and committed now */
  long present; /* already held: not fetched */
  long skipped; /* not finished yet (initiated, in-progress, processing) or gone meanwhile */
  long failed;  /* answers that could not be stored (each reported on stderr); the run goes on */
};

enum el_backfill_result {
  EL_BACKFILL_OK,
  EL_BACKFILL_INTERRUPTED, /* the stop flag: everything stored so far is committed */
  EL_BACKFILL_FAILED,      /* err says why (also: some conversations failed, counts.failed) */
};

/* Pages through GET /v1/convai/conversations and stores each finished conversation that the
 * store does not hold as the post_call_transcription event ElevenLabs would have sent
 * (data = GET /v1/convai/conversations/{id} as received), committing each before the next.
 * 429 and 5xx answers are retried a bounded number of times, honouring Retry-After. */
__attribute__((warn_unused_result)) enum el_backfill_result el_backfill_run(
    const struct config *cfg, struct store *store, const struct el_backfill_options *opt,
    const atomic_bool *stop, struct el_backfill_counts *counts, char *err, size_t errlen);

#endif
