/* GET /api/v1/conversations?email_id=&account_id=&status=&from=&to=&page=&limit=&cursor=.
 * Newest processed first. page/limit count rows to skip and give a total; cursor (an answer's
 * pagination.nextCursor, list_cursor.h) continues after the last row of the page before, on an
 * index whatever the depth, without a total; cursor= given empty is the first page, uncounted. The
 * query and the rendering run on an offload thread: the database may be slow. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "api/list_cursor.h"
#include "core/timeutil.h"
#include "model/render.h"

#define PAGE_MAX 2147483647LL
#define LIMIT_MAX 100
#define LIMIT_DEFAULT 20

struct list_job {
  struct store *store;
  struct store_filter filter; /* strings are the request's query values */
  bool cursor_mode;           /* the page was asked for by cursor: no page number nor total */
  unsigned char key[LIST_CURSOR_KEY_LEN], scope[CRYPTO_SHA256_LEN];
  struct list_cursor after; /* the cursor's position (filter.after_id points here) */
  /* result */
  enum store_status status;
  char *out; /* rendered answer (owned); NULL with STORE_OK: out of memory */
  size_t out_len;
};

static void job_free(void *p) {
  struct list_job *job = p;
  free(job->out);
  memset(job->key, 0, sizeof job->key);
  free(job);
}

/* Offload thread. A cursor page asks for one row more than it shows: that row tells whether
 * there is a next page without counting. */
static void list_work(void *p) {
  struct list_job *job = p;
  struct store_filter f = job->filter;
  if (job->cursor_mode) f.limit++;
  struct store_page page;
  job->status = store_list(job->store, &f, &page);
  if (job->status != STORE_OK) return;
  bool more = job->cursor_mode
                  ? page.count > (size_t)job->filter.limit
                  : page.count > 0 && job->filter.page * job->filter.limit < page.total;
  if (page.count > (size_t)job->filter.limit) page.count = (size_t)job->filter.limit;
  char next[LIST_CURSOR_TEXT_MAX];
  if (more) {
    struct list_cursor c = {.first_us = page.items[page.count - 1].first_processed_us};
    memcpy(c.id, page.items[page.count - 1].conversation_id, sizeof c.id);
    more = list_cursor_encode(job->key, job->scope, &c, next);
    if (!more) {
      store_page_free(&page);
      job->status = STORE_RETRY;
      return;
    }
  }
  json_t *items = json_array();
  for (size_t i = 0; i < page.count; i++)
    json_array_append_new(items, render_conversation(&page.items[i]));
  json_t *pagination;
  if (job->cursor_mode) {
    pagination = json_pack("{s:I,s:o}", "limit", (json_int_t)f.limit - 1, "nextCursor",
                           more ? json_string(next) : json_null());
  } else {
    int64_t total_pages = (page.total + f.limit - 1) / f.limit;
    pagination =
        json_pack("{s:I,s:I,s:I,s:I,s:o}", "page", (json_int_t)f.page, "limit", (json_int_t)f.limit,
                  "total", (json_int_t)page.total, "totalPages", (json_int_t)total_pages,
                  "nextCursor", more ? json_string(next) : json_null());
  }
  json_t *body = json_pack("{s:o,s:o}", "conversations", items, "pagination", pagination);
  store_page_free(&page);
  job->out = body ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  if (job->out) job->out_len = strlen(job->out);
}

static void on_resume(struct http_request *req) {
  struct list_job *job = http_request_state(req);
  if (job->status == STORE_CLIENT) {
    http_reply_error(req, API_ERR_INVALID_PARAMETER,
                     "A filter holds bytes the database cannot compare (it must be valid UTF-8)",
                     NULL);
    return;
  }
  if (job->status != STORE_OK) {
    http_reply_error(req, job->status == STORE_RETRY ? API_ERR_UNAVAILABLE : API_ERR_INTERNAL, NULL,
                     NULL);
    return;
  }
  if (!job->out) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  api_audit_read(req, AUDIT_CONVERSATION_LIST, NULL, AUDIT_OK);
  http_reply_json_text(req, 200, job->out, job->out_len);
  job->out = NULL; /* the reply owns it */
}

static int cmp_text(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The digest of what a cursor is bound to: the filters as the store applies them (times as
 * instants, so "Z" and "+00:00" are one query) and the asking key's account bound. */
static bool query_scope(const struct store_filter *f, unsigned char scope[CRYPTO_SHA256_LEN]) {
  char from[24], to[24];
  snprintf(from, sizeof from, "%lld", (long long)f->from_us);
  snprintf(to, sizeof to, "%lld", (long long)f->to_us);
  size_t n = 5 + f->naccounts;
  const char **vals = calloc(n, sizeof *vals);
  if (!vals) return false;
  vals[0] = f->email_id;
  vals[1] = f->account_id;
  vals[2] = f->status;
  vals[3] = f->has_from ? from : NULL;
  vals[4] = f->has_to ? to : NULL;
  for (size_t i = 0; i < f->naccounts; i++) vals[5 + i] = f->accounts[i];
  /* the bound is a set: two keys naming the same accounts in another order share cursors */
  qsort(vals + 5, f->naccounts, sizeof *vals, cmp_text);
  list_cursor_scope(vals, n, scope);
  free(vals);
  return true;
}

void api_conversations_list(struct http_request *req) {
  struct app *app = http_request_app(req);
  struct store_filter f = {
      .email_id = http_request_query(req, "email_id"),
      .account_id = http_request_query(req, "account_id"),
      .status = http_request_query(req, "status"),
  };
  const char *page = http_request_query(req, "page"), *cursor = http_request_query(req, "cursor");
  if (!api_query_int(page, 1, PAGE_MAX, 1, &f.page)) {
    api_bad_param(req, "page", "must be an integer from 1 to 2147483647");
    return;
  }
  if (!api_query_int(http_request_query(req, "limit"), 1, LIMIT_MAX, LIMIT_DEFAULT, &f.limit)) {
    api_bad_param(req, "limit", "must be an integer from 1 to 100");
    return;
  }
  if (!api_query_instant(http_request_query(req, "from"), &f.has_from, &f.from_us)) {
    api_bad_param(req, "from", "must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z");
    return;
  }
  if (!api_query_instant(http_request_query(req, "to"), &f.has_to, &f.to_us)) {
    api_bad_param(req, "to", "must be an RFC 3339 date-time such as 2026-02-01T00:00:00+01:00");
    return;
  }
  if (f.has_from && f.has_to && f.to_us < f.from_us) {
    api_bad_param(req, "to", "must not be before from");
    return;
  }
  if (cursor && page) {
    api_bad_param(req, "cursor", "cannot be combined with page (the cursor says where to go on)");
    return;
  }
  struct list_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->store = app->store;
  /* A key bound to accounts sees only those: an account_id outside them finds nothing. */
  f.accounts = http_request_accounts(req, &f.naccounts);
  memcpy(job->key, app->list_cursor_key, sizeof job->key);
  if (!query_scope(&f, job->scope)) {
    job_free(job);
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  if (cursor && !cursor[0]) {
    /* cursor= given empty: the first page, uncounted (a position before every row) */
    job->cursor_mode = true;
    f.after = true;
    f.after_first_us = INT64_MAX;
    f.after_id = "";
  } else if (cursor) {
    if (!list_cursor_decode(job->key, job->scope, cursor, strlen(cursor), &job->after)) {
      job_free(job);
      api_bad_param(req, "cursor",
                    "must be empty (the first page) or the nextCursor of an earlier answer to "
                    "the same query (same filters, same account bound), unchanged");
      return;
    }
    job->cursor_mode = true;
    f.after = true;
    f.after_first_us = job->after.first_us;
    f.after_id = job->after.id;
  }
  job->filter = f;
  http_request_offload(req, list_work, on_resume, job, job_free);
}
