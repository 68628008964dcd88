/* POST /api/v1/webhook/conversation: verify a Standard Webhooks signature when WEBHOOK_SECRET is
 * set, validate, hand the write to the store, and answer only once the store says it is
 * committed. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "api/app.h"
#include "core/log.h"
#include "core/metrics.h"
#include "ext/crypto.h"
#include "model/conv_fast.h"
#include "model/render.h"

struct webhook_job {
  struct store_write write;
  struct conversation_input conv;
  struct http_request *req;
};

static void job_free(void *p) {
  struct webhook_job *job = p;
  model_conversation_free(&job->conv);
  free(job);
}

/* Writer thread: the transaction holding this write has ended. */
static void on_stored(struct store_write *w, void *cls) {
  (void)w;
  struct webhook_job *job = cls;
  http_request_resume(job->req);
}

void api_reply_webhook_accepted(struct http_request *req, const char *conversation_id,
                                const char *webhook_id, int64_t processed_us) {
  size_t len;
  char *text = render_webhook_accepted_text(conversation_id, webhook_id, processed_us, &len);
  if (text) {
    http_reply_json_text(req, 200, text, len);
    return;
  }
  /* out of memory or not UTF-8: the tree's path answers as it always did */
  http_reply_json(req, 200, render_webhook_accepted(conversation_id, webhook_id, processed_us));
}

static void on_resume(struct http_request *req) {
  struct webhook_job *job = http_request_state(req);
  switch (job->write.status) {
    case STORE_OK:
      metrics_webhook_accepted(METRICS_SOURCE_CONVERSATION, job->write.duplicate);
      api_reply_webhook_accepted(req, job->conv.conversation_id, job->write.webhook_id,
                                 job->write.processed_us);
      return;
    case STORE_RETRY:
    case STORE_NOT_FOUND:
      http_reply_header(req, "Retry-After", "1");
      http_reply_error(req, API_ERR_UNAVAILABLE, "The conversation could not be stored; retry",
                       NULL);
      return;
    case STORE_CLIENT:
      http_reply_error(req, API_ERR_VALIDATION, "The database refused a value of this conversation",
                       NULL);
      return;
    case STORE_HARD:
      http_reply_error(req, API_ERR_INTERNAL, NULL, NULL);
      return;
  }
}

#define STANDARD_TOLERANCE_S 300

/* Standard Webhooks over the raw body, before it is parsed. Off (and free) without
 * WEBHOOK_SECRET; with it, a request carrying any of the three headers must carry a valid
 * signature, and WEBHOOK_SIGNATURE_REQUIRED makes one mandatory. False: replied 401. */
static bool signature_ok(struct http_request *req, const struct app *app, const char *body,
                         size_t len) {
  if (app->webhook_keys.count == 0) return true;
  static const char *const names[] = {"webhook-id", "webhook-timestamp", "webhook-signature"};
  const char *v[3];
  for (int i = 0; i < 3; i++) v[i] = http_request_header(req, names[i]);
  if (!v[0] && !v[1] && !v[2] && !app->cfg->webhook_signature_required) return true;
  enum sig_result r = sig_standard_verify(&app->webhook_keys, v[0], v[1], v[2], body, len,
                                          (int64_t)time(NULL), STANDARD_TOLERANCE_S);
  if (r == SIG_OK) return true;
  char message[200];
  const char *text = sig_message_standard(r);
  if (r == SIG_MALFORMED)
    for (int i = 0; i < 3; i++)
      if (!v[i]) { /* say which one is missing rather than "malformed" */
        snprintf(message, sizeof message,
                 "Missing %s header: Standard Webhooks needs webhook-id, webhook-timestamp and "
                 "webhook-signature",
                 names[i]);
        text = message;
        break;
      }
  /* the client's fault: info, and only our own words (never a header value) */
  log_msg(LOG_INFO, "request %s: Standard Webhooks signature refused: %s", http_request_id(req),
          text);
  http_reply_error(req, API_ERR_UNAUTHORIZED, text, NULL);
  return false;
}

void api_webhook_conversation_post(struct http_request *req) {
  struct app *app = http_request_app(req);
  size_t len;
  const char *body = http_request_body(req, &len);
  if (!signature_ok(req, app, body, len)) return;
  struct webhook_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  json_t *problems;
  char message[256];
  switch (
      model_conversation_parse_fast(body, len, &job->conv, &problems, message, sizeof message)) {
    case MODEL_INVALID_JSON:
      free(job);
      http_reply_error(req, API_ERR_INVALID_JSON, message, NULL);
      return;
    case MODEL_NO_MEMORY:
      free(job);
      http_reply_header(req, "Retry-After", "1");
      http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory; retry", NULL);
      return;
    case MODEL_INVALID:
      free(job);
      http_reply_error(req, API_ERR_VALIDATION, message, problems);
      return;
    case MODEL_OK:
      break;
  }
  job->req = req;
  job->write.kind = STORE_WRITE_CONVERSATION;
  job->write.conv = &job->conv;
  job->write.body = body;
  job->write.body_len = len;
  crypto_sha256(body, len, job->write.body_sha256);
  api_who(req, &job->write.who);
  job->write.done = on_stored;
  job->write.done_cls = job;
  /* Suspend first: the store may finish before store_submit returns. */
  http_request_suspend(req, on_resume, job, job_free);
  store_submit(app->store, &job->write);
}
