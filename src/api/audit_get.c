/* GET /api/v1/audit?since=&until=&key=&action=&target=&cursor=&limit= (admin): the audit log,
 * newest first, a page at a time. The cursor is the id of the last entry of the page before
 * (nextCursor, a string); the next page holds older entries. Read on an offload thread. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/timeutil.h"

#define LIMIT_MAX 1000
#define LIMIT_DEFAULT 100

struct audit_job {
  struct store *store;
  struct store_audit_filter filter; /* strings are the request's query values */
  /* result */
  enum store_status status;
  struct store_audit_page page;
  bool more; /* entries older than the page's last */
};

static void job_free(void *p) {
  struct audit_job *job = p;
  free(job->page.items);
  free(job);
}

static bool parse_time(const char *s, int64_t *out) {
  if (!s) return true;
  return time_parse_rfc3339_bound(s, strlen(s), out);
}

/* Offload thread: the page and whether anything older is left, in one query of limit + 1
 * entries (a second query for the next page's first entry could walk the rest of the log). */
static void audit_work(void *p) {
  struct audit_job *job = p;
  struct store_audit_filter f = job->filter;
  f.limit++;
  job->status = store_audit_list(job->store, &f, &job->page);
  if (job->status != STORE_OK || job->page.count <= (size_t)job->filter.limit) return;
  job->more = true;
  job->page.count = (size_t)job->filter.limit;
}

static void on_resume(struct http_request *req) {
  struct audit_job *job = http_request_state(req);
  if (job->status == STORE_CLIENT) {
    http_reply_error(req, API_ERR_INVALID_PARAMETER,
                     "A filter holds bytes the database cannot compare (it must be valid UTF-8)",
                     NULL);
    return;
  }
  if (job->status != STORE_OK) {
    if (job->status == STORE_RETRY) http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, job->status == STORE_RETRY ? API_ERR_UNAVAILABLE : API_ERR_INTERNAL, NULL,
                     NULL);
    return;
  }
  json_t *entries = json_array();
  for (size_t i = 0; entries && i < job->page.count; i++)
    if (json_array_append_new(entries, audit_entry_json(&job->page.items[i])) != 0) {
      json_decref(entries);
      entries = NULL;
    }
  char cursor[24];
  if (job->more)
    snprintf(cursor, sizeof cursor, "%" PRId64, job->page.items[job->page.count - 1].id);
  json_t *obj = entries ? json_pack("{s:b,s:{s:o,s:{s:I,s:o}}}", "success", 1, "data", "entries",
                                    entries, "pagination", "limit", (json_int_t)job->filter.limit,
                                    "nextCursor", job->more ? json_string(cursor) : json_null())
                        : NULL;
  if (!obj) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  http_reply_json(req, 200, obj);
}

void api_audit_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  struct store_audit_filter f = {
      .key_id = http_request_query(req, "key"),
      .target = http_request_query(req, "target"),
      .action = -1,
      .newest_first = true,
  };
  if (!parse_time(http_request_query(req, "since"), &f.since_us)) {
    api_bad_param(req, "since", "must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z");
    return;
  }
  if (!parse_time(http_request_query(req, "until"), &f.until_us)) {
    api_bad_param(req, "until", "must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z");
    return;
  }
  if (f.until_us <= 0 && http_request_query(req, "until"))
    f.until_us = 1; /* 0 is "unbounded" to the store; nothing is that old */
  if (http_request_query(req, "since") && http_request_query(req, "until") &&
      f.since_us > f.until_us) {
    api_bad_param(req, "until",
                  "must not be before since (entries are those at or after since and "
                  "before until)");
    return;
  }
  const char *action = http_request_query(req, "action");
  if (action && (f.action = audit_action_named(action)) < 0) {
    api_bad_param(req, "action",
                  "must be one of webhook.accepted, conversation.read, conversation.list, "
                  "conversation.audio, conversation.export, conversation.erased, key.created, "
                  "key.revoked, auth.rejected, subscription.created, subscription.updated, "
                  "subscription.deleted, subscription.replayed");
    return;
  }
  if (!api_query_int(http_request_query(req, "cursor"), 1, INT64_MAX, 0, &f.cursor)) {
    api_bad_param(req, "cursor", "must be the nextCursor of a previous page");
    return;
  }
  if (!api_query_int(http_request_query(req, "limit"), 1, LIMIT_MAX, LIMIT_DEFAULT, &f.limit)) {
    api_bad_param(req, "limit", "must be an integer from 1 to 1000");
    return;
  }
  struct audit_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->store = app->store;
  job->filter = f;
  http_request_offload(req, audit_work, on_resume, job, job_free);
}
