/* GET /api/v1/conversations/{conversation_id}/audio: the call's MP3 as ElevenLabs sent it in
 * post_call_audio, with single-range requests (Range: bytes=...) answered 206. The read runs
 * on an offload thread. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "http/range.h"

struct audio_job {
  struct store *store;
  const char *id;
  const char *range; /* the Range header, or NULL */
  /* result */
  enum store_status status;
  bool partial;       /* 206 */
  bool unsatisfiable; /* 416 */
  bool out_of_memory;
  int64_t start, total;
  unsigned char *buf;
  size_t len;
};

static void job_free(void *p) {
  struct audio_job *job = p;
  free(job->buf);
  free(job);
}

/* Offload thread: the length first, then the bytes asked for. */
static void audio_work(void *p) {
  struct audio_job *job = p;
  size_t got;
  unsigned char probe;
  job->status = store_audio_read(job->store, job->id, 0, &probe, 0, &got, &job->total);
  if (job->status != STORE_OK) return;
  int64_t first = 0, last = job->total - 1;
  switch (http_range_parse(job->range, job->total, &first, &last)) {
    case HTTP_RANGE_UNSATISFIABLE:
      job->unsatisfiable = true;
      return;
    case HTTP_RANGE_OK:
      job->partial = true;
      break;
    case HTTP_RANGE_NONE:
      break;
  }
  job->start = first;
  size_t want = job->total > 0 ? (size_t)(last - first + 1) : 0;
  job->buf = malloc(want ? want : 1);
  if (!job->buf) {
    job->out_of_memory = true;
    return;
  }
  job->status =
      store_audio_read(job->store, job->id, first, job->buf, want, &job->len, &job->total);
}

static void on_resume(struct http_request *req) {
  struct audio_job *job = http_request_state(req);
  char v[96];
  if (job->status == STORE_NOT_FOUND) {
    http_reply_error(req, API_ERR_NOT_FOUND, "No audio stored for this conversation", NULL);
    return;
  }
  if (job->status != STORE_OK) {
    http_reply_error(req, job->status == STORE_RETRY ? API_ERR_UNAVAILABLE : API_ERR_INTERNAL, NULL,
                     NULL);
    return;
  }
  if (job->out_of_memory) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  http_reply_header(req, "Accept-Ranges", "bytes");
  if (job->unsatisfiable) {
    snprintf(v, sizeof v, "bytes */%" PRId64, job->total);
    http_reply_header(req, "Content-Range", v);
    http_reply_error(req, API_ERR_RANGE_NOT_SATISFIABLE, NULL, NULL);
    return;
  }
  if (job->partial) {
    snprintf(v, sizeof v, "bytes %" PRId64 "-%" PRId64 "/%" PRId64, job->start,
             job->start + (int64_t)job->len - 1, job->total);
    http_reply_header(req, "Content-Range", v);
  }
  http_reply_owned(req, job->partial ? 206 : 200, "audio/mpeg", job->buf, job->len);
  job->buf = NULL; /* the reply owns it */
}

void api_conversations_audio_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  const char *id = http_request_path_param(req);
  size_t len = strlen(id);
  if (len == 0 || len > MODEL_CONVERSATION_ID_MAX || !model_is_printable(id, len)) {
    http_reply_error(req, API_ERR_NOT_FOUND, "No audio stored for this conversation", NULL);
    return;
  }
  struct audio_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->store = app->store;
  job->id = id;
  job->range = http_request_header(req, "Range");
  http_request_offload(req, audio_work, on_resume, job, job_free);
}
