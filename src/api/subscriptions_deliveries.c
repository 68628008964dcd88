/* GET /api/v1/subscriptions/{id}/deliveries?cursor=&page=&limit= (admin): the subscription's
 * recorded attempts, newest first, a page at a time (the cursor is the nextCursor of the page
 * before, as for the audit log; or page, counted from 1, skips the pages before it).
 * POST /api/v1/subscriptions/{id}/replay?since=RFC3339 (admin): every event since then that the
 * subscription was sent (or would have been) goes out again with its original id: 202
 * {"replayed": N}. Both run on an offload thread. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/timeutil.h"
#include "core/utf8.h"
#include "outbound/outbound.h"

#define LIMIT_MAX 1000
#define LIMIT_DEFAULT 100
/* A page number skips rows one by one: deep pages are for the cursor. */
#define PAGE_MAX 100000

struct deliveries_job {
  struct store *store;
  char id[OUTBOX_SUB_ID_MAX];
  int64_t cursor, page_no, limit; /* page_no 0: no page asked for */
  /* result */
  enum store_status status;
  struct store_attempt_page page;
  bool more;
};

static void deliveries_free(void *p) {
  struct deliveries_job *job = p;
  free(job->page.items);
  free(job);
}

/* Offload thread: 404 for no such subscription, else the page and whether more follow (one
 * query of limit + 1). */
static void deliveries_work(void *p) {
  struct deliveries_job *job = p;
  struct subscription sub;
  job->status = store_sub_get(job->store, job->id, &sub);
  memset(sub.secret, 0, sizeof sub.secret);
  if (job->status != STORE_OK) return;
  int64_t skip = job->page_no > 1 ? (job->page_no - 1) * job->limit : 0;
  job->status =
      store_attempt_list(job->store, job->id, job->cursor, skip, job->limit + 1, &job->page);
  if (job->status != STORE_OK || job->page.count <= (size_t)job->limit) return;
  job->more = true;
  job->page.count = (size_t)job->limit;
}

static json_t *attempt_json(const struct store_attempt *a) {
  char at[40];
  /* The receiver's bytes: any, cut anywhere. Invalid UTF-8 becomes U+FFFD (3 bytes each). */
  char response[3 * OUTBOX_RESPONSE_HEAD_MAX + 1];
  utf8_sanitize(response, sizeof response, a->response_head,
                strnlen(a->response_head, sizeof a->response_head));
  const char *type = outbox_type_name(a->type), *outcome = delivery_outcome_name(a->outcome);
  if (!time_format_us(a->at_us, true, at, sizeof at)) at[0] = '\0';
  return json_pack("{s:s,s:o,s:i,s:o,s:I,s:o,s:o,s:s}", "eventId", a->event_id, "type",
                   type ? json_string(type) : json_null(), "attempt", a->attempt, "statusCode",
                   a->status_code ? json_integer(a->status_code) : json_null(), "latencyMs",
                   (json_int_t)a->latency_ms, "at", at[0] ? json_string(at) : json_null(),
                   "outcome", outcome ? json_string(outcome) : json_null(), "response", response);
}

static void deliveries_resume(struct http_request *req) {
  struct deliveries_job *job = http_request_state(req);
  if (job->status != STORE_OK) {
    api_sub_reply_store(req, job->status);
    return;
  }
  json_t *items = json_array();
  for (size_t i = 0; items && i < job->page.count; i++)
    if (json_array_append_new(items, attempt_json(&job->page.items[i])) != 0) {
      json_decref(items);
      items = NULL;
    }
  char cursor[24];
  if (job->more)
    snprintf(cursor, sizeof cursor, "%" PRId64, job->page.items[job->page.count - 1].id);
  json_t *pagination = json_pack("{s:I,s:o}", "limit", (json_int_t)job->limit, "nextCursor",
                                 job->more ? json_string(cursor) : json_null());
  if (pagination && job->page_no > 0 &&
      json_object_set_new(pagination, "page", json_integer((json_int_t)job->page_no)) != 0) {
    json_decref(pagination);
    pagination = NULL;
  }
  /* json_pack takes both references, on failure too */
  json_t *obj = items && pagination
                    ? json_pack("{s:o,s:o}", "deliveries", items, "pagination", pagination)
                    : NULL;
  if (!items || !pagination) {
    json_decref(items);
    json_decref(pagination);
  }
  if (!obj) {
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  http_reply_json(req, 200, obj);
}

void api_subscriptions_deliveries_get(struct http_request *req) {
  if (!api_sub_manager_ok(req)) return;
  struct app *app = http_request_app(req);
  const char *id = http_request_path_param(req);
  int64_t cursor, page, limit;
  const char *cursor_text = http_request_query(req, "cursor");
  const char *page_text = http_request_query(req, "page");
  if (!api_query_int(cursor_text, 1, INT64_MAX, 0, &cursor)) {
    api_bad_param(req, "cursor", "must be the nextCursor of a previous page");
    return;
  }
  if (!api_query_int(page_text, 1, PAGE_MAX, 1, &page)) {
    api_bad_param(req, "page", "must be an integer from 1 to 100000");
    return;
  }
  if (cursor_text && page_text) {
    api_bad_param(req, "cursor", "cannot be combined with page (the cursor says where to go on)");
    return;
  }
  if (!api_query_int(http_request_query(req, "limit"), 1, LIMIT_MAX, LIMIT_DEFAULT, &limit)) {
    api_bad_param(req, "limit", "must be an integer from 1 to 1000");
    return;
  }
  if (!api_sub_id_valid(id)) {
    http_reply_error(req, API_ERR_NOT_FOUND, "Subscription not found", NULL);
    return;
  }
  struct deliveries_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->store = app->store;
  snprintf(job->id, sizeof job->id, "%s", id);
  job->cursor = cursor;
  job->page_no = page_text ? page : 0; /* shown in pagination when asked for */
  job->limit = limit;
  http_request_offload(req, deliveries_work, deliveries_resume, job, deliveries_free);
}

struct replay_job {
  struct store *store;
  struct outbound *outbound;
  char id[OUTBOX_SUB_ID_MAX];
  struct store_write write;
  bool unreadable; /* its sealed URL or account does not open: nothing replayed */
};

/* Offload thread. A subscription whose sealed URL or account does not open (GET shows
 * heldReason sealed_unreadable) is not replayed: its events would wait under an account it may
 * not keep (the store refuses it too, as a last line). */
static void replay_work(void *p) {
  struct replay_job *job = p;
  struct subscription sub;
  enum store_status st = store_sub_get(job->store, job->id, &sub);
  if (st == STORE_OK && sub.unreadable) {
    job->unreadable = true;
    return;
  }
  store_submit_wait(job->store, &job->write);
}

static void replay_resume(struct http_request *req) {
  struct replay_job *job = http_request_state(req);
  if (job->unreadable) {
    http_reply_error(req, API_ERR_CONFLICT,
                     "The subscription's sealed URL or account does not open: give url and "
                     "accountId together (PATCH) to replace both, then replay",
                     NULL);
    return;
  }
  if (job->write.status != STORE_OK) {
    if (job->write.status == STORE_NOT_FOUND)
      api_audit_read(req, AUDIT_SUBSCRIPTION_REPLAYED, job->id, AUDIT_NOT_FOUND);
    api_sub_reply_store(req, job->write.status);
    return;
  }
  if (job->outbound) outbound_wake(job->outbound);
  http_reply_json(req, 202, json_pack("{s:I}", "replayed", (json_int_t)job->write.erased));
}

void api_subscriptions_replay_post(struct http_request *req) {
  if (!api_sub_manager_ok(req)) return;
  struct app *app = http_request_app(req);
  const char *id = http_request_path_param(req);
  const char *since = http_request_query(req, "since");
  int64_t since_us = 0;
  /* An unencoded '+' of an offset (…T10:00:00+02:00) arrives as a space (form encoding): it
   * can only mean '+' there. */
  char since_buf[64];
  if (since && strlen(since) < sizeof since_buf) {
    memcpy(since_buf, since, strlen(since) + 1);
    for (char *p = since_buf + (strlen(since_buf) > 19 ? 19 : strlen(since_buf)); *p; p++)
      if (*p == ' ') *p = '+';
    since = since_buf;
  }
  if (!since || !time_parse_rfc3339_bound(since, strlen(since), &since_us)) {
    api_bad_param(req, "since",
                  since ? "must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z"
                        : "is required: an RFC 3339 date-time such as 2026-01-01T00:00:00Z");
    return;
  }
  if (!api_sub_id_valid(id)) {
    api_audit_read(req, AUDIT_SUBSCRIPTION_REPLAYED, id, AUDIT_NOT_FOUND);
    http_reply_error(req, API_ERR_NOT_FOUND, "Subscription not found", NULL);
    return;
  }
  struct replay_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->store = app->store;
  job->outbound = app->outbound;
  snprintf(job->id, sizeof job->id, "%s", id);
  job->write.kind = STORE_WRITE_REPLAY;
  job->write.sub_id = job->id;
  job->write.replay_since_us = since_us;
  job->write.audio_fd = -1;
  api_who(req, &job->write.who);
  http_request_offload(req, replay_work, replay_resume, job, free);
}
