/* DELETE /api/v1/conversations/{conversation_id}: erases everything kept of one conversation
 * (its row, every delivery, its ElevenLabs events, its audio) in one transaction through the
 * store's writer, and answers once that transaction is committed, as a webhook does. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/log.h"
#include "model/render.h"

struct erase_job {
  struct store_write write;
  struct http_request *req;
  /* a key bound to accounts: the erasure waits on an offload thread after a read */
  struct store *store;
  const char *const *accounts;
  size_t naccounts;
  bool hidden; /* no conversation of the key's accounts: as if nothing existed */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
};

static void job_free(void *p) {
  struct erase_job *job = p;
  if (job->naccounts) {
    pthread_mutex_destroy(&job->mu);
    pthread_cond_destroy(&job->cv);
  }
  free(job);
}

/* Writer thread: the transaction holding this erasure has ended. */
static void on_erased(struct store_write *w, void *cls) {
  (void)w;
  struct erase_job *job = cls;
  if (!job->naccounts) {
    http_request_resume(job->req);
    return;
  }
  pthread_mutex_lock(&job->mu);
  job->done = true;
  pthread_cond_signal(&job->cv);
  pthread_mutex_unlock(&job->mu);
}

/* Offload thread, for a key bound to accounts: only a conversation of one of its accounts is
 * erased (audio or events without a conversation row belong to no account it can see). The
 * read and the erasure are two steps: a new version posted between them under another
 * account is erased too. */
static void erase_bound_work(void *p) {
  struct erase_job *job = p;
  struct store_conversation c;
  enum store_status st = store_get(job->store, job->write.erase_conversation_id, false, &c);
  if (st != STORE_OK || !api_account_visible(job->accounts, job->naccounts, c.account_id)) {
    job->write.status = st;
    job->hidden = st == STORE_OK || st == STORE_NOT_FOUND;
    return;
  }
  store_submit(job->store, &job->write);
  pthread_mutex_lock(&job->mu);
  while (!job->done) pthread_cond_wait(&job->cv, &job->mu);
  pthread_mutex_unlock(&job->mu);
}

/* Nothing of it was erased: the store wrote no entry, so the recorder does. */
static void reply_not_found(struct http_request *req) {
  api_audit_read(req, AUDIT_CONVERSATION_ERASED, http_request_path_param(req), AUDIT_NOT_FOUND);
  http_reply_error(req, API_ERR_NOT_FOUND, "Conversation not found", NULL);
}

static void on_resume(struct http_request *req) {
  struct erase_job *job = http_request_state(req);
  if (job->hidden) {
    reply_not_found(req);
    return;
  }
  switch (job->write.status) {
    case STORE_OK:
      if (job->write.erased == 0) {
        reply_not_found(req);
        return;
      }
      log_msg(LOG_INFO, "request %s: conversation erased (%lld rows)", http_request_id(req),
              (long long)job->write.erased);
      http_reply_json(req, 200, render_conversation_erased(job->write.erase_conversation_id));
      return;
    case STORE_NOT_FOUND:
    case STORE_RETRY:
      http_reply_header(req, "Retry-After", "1");
      http_reply_error(req, API_ERR_UNAVAILABLE, "The conversation could not be erased; retry",
                       NULL);
      return;
    case STORE_CLIENT:
      api_reply_conversation_id_refused(req);
      return;
    case STORE_HARD:
      http_reply_error(req, API_ERR_INTERNAL, NULL, NULL);
      return;
  }
}

void api_conversations_delete(struct http_request *req) {
  struct app *app = http_request_app(req);
  const char *id = http_request_path_param(req);
  /* No such id can be stored (webhooks refuse it): nothing to erase. */
  if (!api_conversation_id_storable(id)) {
    reply_not_found(req);
    return;
  }
  struct erase_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->req = req;
  job->write.kind = STORE_WRITE_ERASE;
  job->write.erase_conversation_id = id; /* the request's, alive until it is answered */
  job->write.audio_fd = -1;
  api_who(req, &job->write.who);
  job->write.done = on_erased;
  job->write.done_cls = job;
  job->accounts = http_request_accounts(req, &job->naccounts);
  if (job->naccounts) {
    job->store = app->store;
    pthread_mutex_init(&job->mu, NULL);
    pthread_cond_init(&job->cv, NULL);
    http_request_offload(req, erase_bound_work, on_resume, job, job_free);
    return;
  }
  /* Suspend first: the store may finish before store_submit returns. */
  http_request_suspend(req, on_resume, job, job_free);
  store_submit(app->store, &job->write);
}
