/* GET /api/v1/conversations/{conversation_id}/report: the conversation as a printable HTML
 * page (model/report.c). Read and rendered on an offload thread, like GET one. Errors are the
 * JSON envelope GET one answers; a key bound to accounts gets 404 for another account's
 * conversation. The page carries a Content-Security-Policy that allows no script, no plugin,
 * no frame and no fetch of anything: only its own inline style and data: images. */
#include <stdlib.h>

#include "api/app.h"
#include "model/report.h"

/* Everything but inline style is refused; the page must not be framed nor post anywhere. */
#define REPORT_CSP                                                                  \
  "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; " \
  "form-action 'none'; frame-ancestors 'none'"
/* http_reply_header keeps values up to 127 bytes (http/server_internal.h). */
_Static_assert(sizeof REPORT_CSP <= 128, "the CSP must fit an extra header's value");

struct report_job {
  struct store *store;
  const char *id;              /* the request's path parameter */
  const char *const *accounts; /* the key's account bound (into the request) */
  size_t naccounts;
  enum store_status status;
  char *out; /* the page (owned) */
  size_t out_len;
};

static void job_free(void *p) {
  struct report_job *job = p;
  free(job->out);
  free(job);
}

/* Offload thread. */
static void report_work(void *p) {
  struct report_job *job = p;
  struct store_conversation c;
  job->status = store_get(job->store, job->id, true, &c);
  if (job->status != STORE_OK) return;
  if (!api_account_visible(job->accounts, job->naccounts, c.account_id)) {
    free(c.body); /* another account's: as if it did not exist */
    job->status = STORE_NOT_FOUND;
    return;
  }
  job->out = report_render_html(&c, REPORT_PAGE_MAX, &job->out_len);
  free(c.body);
}

static void reply_not_found(struct http_request *req) {
  api_audit_read(req, AUDIT_CONVERSATION_READ, http_request_path_param(req), AUDIT_NOT_FOUND);
  http_reply_error(req, API_ERR_NOT_FOUND, "Conversation not found", NULL);
}

static void on_resume(struct http_request *req) {
  struct report_job *job = http_request_state(req);
  switch (job->status) {
    case STORE_OK:
      break;
    case STORE_NOT_FOUND:
      reply_not_found(req);
      return;
    case STORE_CLIENT:
      api_reply_conversation_id_refused(req);
      return;
    case STORE_RETRY:
      http_reply_error(req, API_ERR_UNAVAILABLE, NULL, NULL);
      return;
    default:
      http_reply_error(req, API_ERR_INTERNAL, NULL, NULL);
      return;
  }
  if (!job->out) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  api_audit_read(req, AUDIT_CONVERSATION_READ, job->id, AUDIT_OK);
  http_reply_header(req, "Content-Security-Policy", REPORT_CSP);
  http_reply_header(req, "Referrer-Policy", "no-referrer");
  http_reply_header(req, "X-Frame-Options", "DENY");
  http_reply_owned(req, 200, "text/html; charset=utf-8", job->out, job->out_len);
  job->out = NULL; /* the reply owns it */
}

void api_conversations_report_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  const char *id = http_request_path_param(req);
  if (!api_conversation_id_storable(id)) {
    reply_not_found(req);
    return;
  }
  struct report_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->store = app->store;
  job->id = id;
  job->accounts = http_request_accounts(req, &job->naccounts);
  http_request_offload(req, report_work, on_resume, job, job_free);
}
