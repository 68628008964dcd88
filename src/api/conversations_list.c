/* GET /api/v1/conversations?email_id=&account_id=&status=&page=&limit=. The query and the
 * rendering run on an offload thread: the database may be slow. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "model/render.h"

#define PAGE_MAX 2147483647LL
#define LIMIT_MAX 100
#define LIMIT_DEFAULT 20

struct list_job {
  struct store *store;
  struct store_filter filter; /* strings are the request's query values */
  /* result */
  enum store_status status;
  char *out; /* rendered answer (owned); NULL with STORE_OK: out of memory */
  size_t out_len;
};

static void job_free(void *p) {
  struct list_job *job = p;
  free(job->out);
  free(job);
}

/* Offload thread. */
static void list_work(void *p) {
  struct list_job *job = p;
  const struct store_filter *f = &job->filter;
  struct store_page page;
  job->status = store_list(job->store, f, &page);
  if (job->status != STORE_OK) return;
  json_t *items = json_array();
  for (size_t i = 0; i < page.count; i++)
    json_array_append_new(items, render_conversation(&page.items[i]));
  int64_t total_pages = (page.total + f->limit - 1) / f->limit;
  json_t *body = json_pack("{s:o,s:{s:I,s:I,s:I,s:I}}", "conversations", items, "pagination",
                           "page", (json_int_t)f->page, "limit", (json_int_t)f->limit, "total",
                           (json_int_t)page.total, "totalPages", (json_int_t)total_pages);
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

void api_conversations_list(struct http_request *req) {
  struct app *app = http_request_app(req);
  struct store_filter f = {
      .email_id = http_request_query(req, "email_id"),
      .account_id = http_request_query(req, "account_id"),
      .status = http_request_query(req, "status"),
  };
  if (!api_query_int(http_request_query(req, "page"), 1, PAGE_MAX, 1, &f.page)) {
    api_bad_param(req, "page", "must be an integer from 1 to 2147483647");
    return;
  }
  if (!api_query_int(http_request_query(req, "limit"), 1, LIMIT_MAX, LIMIT_DEFAULT, &f.limit)) {
    api_bad_param(req, "limit", "must be an integer from 1 to 100");
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
  job->filter = f;
  http_request_offload(req, list_work, on_resume, job, job_free);
}
