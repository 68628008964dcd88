/* GET /api/v1/conversations/{conversation_id}/audio: the call's MP3 as ElevenLabs sent it in
 * post_call_audio, with single-range requests (Range: bytes=...) answered 206. The read runs
 * on an offload thread. A large answer is copied, a chunk at a time, into an unlinked
 * temporary file that libmicrohttpd sends from: memory stays bounded however many clients
 * fetch a 100 MB recording at once. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/app.h"
#include "core/filewriter.h"
#include "http/range.h"

#define AUDIO_INLINE_MAX (1024 * 1024) /* answers up to this size are built in memory */
#define AUDIO_COPY_CHUNK (1024 * 1024)

struct audio_job {
  struct store *store;
  const char *id;
  const char *range;           /* the Range header, or NULL */
  const char *const *accounts; /* the key's account bound (into the request) */
  size_t naccounts;
  /* result */
  enum store_status status;
  bool partial;       /* 206 */
  bool unsatisfiable; /* 416 */
  bool out_of_memory;
  int64_t start, total;
  unsigned char *buf; /* the answer in memory, or */
  int fd;             /* -1, or a file holding it */
  size_t len;
};

static void job_free(void *p) {
  struct audio_job *job = p;
  free(job->buf);
  if (job->fd >= 0) close(job->fd);
  free(job);
}

/* An unlinked file in TMPDIR (default /tmp), as the webhook spools audio. */
static int spool_open(void) {
  const char *dir = getenv("TMPDIR");
  return filewriter_open_temp(dir && *dir ? dir : "/tmp");
}

/* Copies bytes [first, first + want) into a temporary file, a chunk at a time. The audio may
 * be replaced meanwhile: a change of length is answered 503 (retry) rather than mixed. */
static void copy_to_file(struct audio_job *job, int64_t first, size_t want) {
  unsigned char *chunk = malloc(AUDIO_COPY_CHUNK);
  job->fd = chunk ? spool_open() : -1;
  if (job->fd < 0) {
    free(chunk);
    job->out_of_memory = true;
    return;
  }
  size_t done = 0;
  while (done < want) {
    size_t cap = want - done < AUDIO_COPY_CHUNK ? want - done : AUDIO_COPY_CHUNK;
    size_t got = 0;
    int64_t total = 0;
    job->status =
        store_audio_read(job->store, job->id, first + (int64_t)done, chunk, cap, &got, &total);
    if (job->status == STORE_OK && (total != job->total || got == 0)) job->status = STORE_RETRY;
    if (job->status != STORE_OK) break;
    if (!filewriter_write_all(job->fd, chunk, got)) {
      job->out_of_memory = true;
      break;
    }
    done += got;
  }
  free(chunk);
  job->len = done;
}

/* Offload thread: the length first, then the bytes asked for. */
static void audio_work(void *p) {
  struct audio_job *job = p;
  size_t got;
  unsigned char probe;
  if (job->naccounts) { /* a key bound to accounts: only their conversations' audio */
    struct store_conversation c;
    job->status = store_get(job->store, job->id, false, &c);
    if (job->status == STORE_OK &&
        !api_account_visible(job->accounts, job->naccounts, c.account_id))
      job->status = STORE_NOT_FOUND;
    if (job->status != STORE_OK) return;
  }
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
  if (want > AUDIO_INLINE_MAX) {
    copy_to_file(job, first, want);
    return;
  }
  job->buf = malloc(want ? want : 1);
  if (!job->buf) {
    job->out_of_memory = true;
    return;
  }
  int64_t total = 0;
  job->status = store_audio_read(job->store, job->id, first, job->buf, want, &job->len, &total);
  if (job->status == STORE_OK && (total != job->total || job->len != want))
    job->status = STORE_RETRY; /* replaced between the two reads */
}

static void reply_not_found(struct http_request *req) {
  api_audit_read(req, AUDIT_CONVERSATION_AUDIO, http_request_path_param(req), AUDIT_NOT_FOUND);
  http_reply_error(req, API_ERR_NOT_FOUND, "No audio stored for this conversation", NULL);
}

static void on_resume(struct http_request *req) {
  struct audio_job *job = http_request_state(req);
  char v[96];
  if (job->status == STORE_NOT_FOUND) {
    reply_not_found(req);
    return;
  }
  if (job->status == STORE_CLIENT) { /* as GET answers it: the client's bytes, never a 500 */
    api_reply_conversation_id_refused(req);
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
  api_audit_read(req, AUDIT_CONVERSATION_AUDIO, job->id, AUDIT_OK);
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
  if (job->fd >= 0) {
    http_reply_fd(req, job->partial ? 206 : 200, "audio/mpeg", job->fd, job->len);
    job->fd = -1; /* the reply owns it */
    return;
  }
  http_reply_owned(req, job->partial ? 206 : 200, "audio/mpeg", job->buf, job->len);
  job->buf = NULL; /* the reply owns it */
}

void api_conversations_audio_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  const char *id = http_request_path_param(req);
  if (!api_conversation_id_storable(id)) {
    reply_not_found(req);
    return;
  }
  struct audio_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->store = app->store;
  job->fd = -1;
  job->id = id;
  job->accounts = http_request_accounts(req, &job->naccounts);
  job->range = http_request_header(req, "Range");
  http_request_offload(req, audio_work, on_resume, job, job_free);
}
