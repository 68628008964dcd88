/* GET /api/v1/conversations/{conversation_id}[?include=transcript]. The read and the
 * rendering run on an offload thread: the database may be slow. */
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "model/render.h"

struct get_job {
  struct store *store;
  const char *id; /* the request's path parameter */
  bool with_transcript;
  /* result */
  enum store_status status;
  bool out_of_memory; /* while rendering */
  char *out;          /* rendered answer (owned) */
  size_t out_len;
};

static void job_free(void *p) {
  struct get_job *job = p;
  free(job->out);
  free(job);
}

/* include is a comma-separated list; "transcript" is the only member today. */
static bool parse_include(const char *include, bool *with_transcript) {
  *with_transcript = false;
  if (!include) return true;
  char buf[128];
  if (strlen(include) >= sizeof buf) return false;
  memcpy(buf, include, strlen(include) + 1);
  char *items[8];
  size_t n = config_split_list(buf, items, 8);
  for (size_t i = 0; i < n; i++) {
    if (strcmp(items[i], "transcript") != 0) return false;
    *with_transcript = true;
  }
  return true;
}

static void reply_store_error(struct http_request *req, enum store_status st) {
  if (st == STORE_NOT_FOUND)
    http_reply_error(req, API_ERR_NOT_FOUND, "Conversation not found", NULL);
  else if (st == STORE_RETRY)
    http_reply_error(req, API_ERR_UNAVAILABLE, NULL, NULL);
  else if (st == STORE_CLIENT)
    http_reply_error(
        req, API_ERR_INVALID_PARAMETER, "conversation_id holds bytes the database cannot compare",
        json_pack("[{s:s,s:s}]", "field", "conversation_id", "issue", "must be valid UTF-8 text"));
  else
    http_reply_error(req, API_ERR_INTERNAL, NULL, NULL);
}

/* Offload thread. */
static void get_work(void *p) {
  struct get_job *job = p;
  struct store_conversation c;
  job->status = store_get(job->store, job->id, job->with_transcript, &c);
  if (job->status != STORE_OK) return;
  if (job->with_transcript) {
    job->out = render_conversation_detail(&c, &job->out_len);
    free(c.body);
  } else {
    json_t *obj = render_conversation(&c);
    job->out = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (job->out) job->out_len = strlen(job->out);
  }
  job->out_of_memory = !job->out;
}

static void on_resume(struct http_request *req) {
  struct get_job *job = http_request_state(req);
  if (job->status != STORE_OK) {
    reply_store_error(req, job->status);
    return;
  }
  if (job->out_of_memory) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  http_reply_json_text(req, 200, job->out, job->out_len);
  job->out = NULL; /* the reply owns it */
}

void api_conversations_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  const char *id = http_request_path_param(req);
  bool with_transcript;
  if (!parse_include(http_request_query(req, "include"), &with_transcript)) {
    http_reply_error(
        req, API_ERR_INVALID_PARAMETER, "include: the only supported value is \"transcript\"",
        json_pack("[{s:s,s:s}]", "field", "include", "issue", "must be \"transcript\""));
    return;
  }
  size_t len = strlen(id);
  if (len == 0 || len > MODEL_CONVERSATION_ID_MAX || !model_is_printable(id, len)) {
    reply_store_error(req, STORE_NOT_FOUND);
    return;
  }
  struct get_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->store = app->store;
  job->id = id;
  job->with_transcript = with_transcript;
  http_request_offload(req, get_work, on_resume, job, job_free);
}
