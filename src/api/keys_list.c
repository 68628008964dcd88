/* GET /api/v1/keys (admin): every key, oldest first, never a secret. Read on an offload
 * thread. */
#include <stdlib.h>

#include "api/app.h"

struct list_job {
  struct store *store;
  enum store_status status;
  struct apikey_record *keys;
  size_t count;
};

static void job_free(void *p) {
  struct list_job *job = p;
  free(job->keys);
  free(job);
}

static void list_work(void *p) {
  struct list_job *job = p;
  job->status = store_key_list(job->store, &job->keys, &job->count);
}

static void on_resume(struct http_request *req) {
  struct list_job *job = http_request_state(req);
  if (job->status != STORE_OK) {
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE, NULL, NULL);
    return;
  }
  json_t *items = json_array();
  for (size_t i = 0; items && i < job->count; i++)
    if (json_array_append_new(items, api_key_render(&job->keys[i])) != 0) {
      json_decref(items);
      items = NULL;
    }
  json_t *obj = items ? json_pack("{s:o}", "data", items) : NULL;
  if (!obj) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  http_reply_json(req, 200, obj);
}

void api_keys_list(struct http_request *req) {
  if (!api_keys_manager_ok(req)) return;
  struct app *app = http_request_app(req);
  struct list_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->store = app->store;
  http_request_offload(req, list_work, on_resume, job, job_free);
}
