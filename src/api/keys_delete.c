/* DELETE /api/v1/keys/{id} (admin): revokes the key, once committed: 204, or 404 when there is
 * no such key (recorded in the audit log as key.revoked not_found). Revoking a revoked key changes
 * nothing (204). Every instance refuses the key within a second (http/keys.c). */
#include <stdio.h>
#include <stdlib.h>

#include "api/app.h"
#include "core/timeutil.h"

struct revoke_job {
  struct store_write write;
  struct http_request *req;
};

static void on_stored(struct store_write *w, void *cls) {
  (void)w;
  struct revoke_job *job = cls;
  http_request_resume(job->req);
}

static void on_resume(struct http_request *req) {
  struct revoke_job *job = http_request_state(req);
  if (job->write.status != STORE_OK) {
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE, "The key could not be revoked; retry", NULL);
    return;
  }
  if (job->write.duplicate) { /* no such key: recorded like an erasure of nothing */
    api_audit_read(req, AUDIT_KEY_REVOKED, job->write.key_id, AUDIT_NOT_FOUND);
    http_reply_error(req, API_ERR_NOT_FOUND, "API key not found", NULL);
    return;
  }
  http_reply_static(req, 204, "application/json", "", 0);
}

void api_keys_delete(struct http_request *req) {
  if (!api_keys_manager_ok(req)) return;
  struct app *app = http_request_app(req);
  const char *id = http_request_path_param(req);
  if (!apikey_id_valid(id)) {
    api_audit_read(req, AUDIT_KEY_REVOKED, id, AUDIT_NOT_FOUND);
    http_reply_error(req, API_ERR_NOT_FOUND, "API key not found", NULL);
    return;
  }
  struct revoke_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->req = req;
  job->write.kind = STORE_WRITE_KEY_REVOKE;
  snprintf(job->write.key_id, sizeof job->write.key_id, "%s", id);
  job->write.key_at_us = time_now_us();
  api_who(req, &job->write.who);
  job->write.audio_fd = -1;
  job->write.done = on_stored;
  job->write.done_cls = job;
  http_request_suspend(req, on_resume, job, free);
  store_submit(app->store, &job->write);
}
