/* POST /api/v1/webhook/elevenlabs: ElevenLabs post-call webhooks, as ElevenLabs sends them.
 *
 * The body streams in (route_stream): each chunk feeds the signature MACs, the body's SHA-256
 * and the splitter (model/el_split.h), which keeps the small envelope in memory and decodes a
 * post_call_audio event's base64 audio into an unlinked temporary file. Once the body is
 * complete: the signature (or, without ELEVENLABS_WEBHOOK_SECRET, the Bearer key), then the
 * rate limit (per secret when validly signed, per IP otherwise), then the event is mapped
 * (model/elevenlabs.h) and handed to the store as one STORE_WRITE_EVENT, answered 200 only
 * once committed. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/filewriter.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"
#include "ext/crypto.h"
#include "model/el_fast.h"
#include "model/el_split.h"
#include "model/elevenlabs.h"
#include "model/render.h"
#include "sig/sig.h"

#define SIGNATURE_HEADER "ElevenLabs-Signature"

/* What requests whose signature is not checked yet may hold, all together: anyone can send a
 * fresh t= with any v0, and the MAC is known only at the end of the body. Past either bound
 * such a request is answered 503 (Retry-After: 1), which ElevenLabs retries. */
#define UNVERIFIED_MEMORY_MIN (64u * 1024 * 1024) /* envelopes; at least 2 x MAX_BODY_BYTES */
#define UNVERIFIED_SPOOL_EVENTS 8                 /* x ELEVENLABS_AUDIO_MAX_BYTES of audio */
static atomic_size_t unverified_memory;
static atomic_size_t unverified_spool;

/* Everything one request holds, from its headers to its answer. */
struct el_request {
  struct app *app;
  struct http_request *req;
  /* while the body arrives */
  struct sig_elevenlabs sig;
  struct sig_stream *mac; /* NULL without ELEVENLABS_WEBHOOK_SECRET */
  struct crypto_sha256_stream *sha;
  struct el_split *split;
  enum el_split_status split_status;
  struct filewriter_file *audio; /* the decoded audio (NULL until its first bytes, and when
                                  * audio is not kept), written by app->spool's thread */
  size_t spooled;                /* audio bytes handed to it */
  bool body_checked;             /* the split is finished and the audio flushed */
  size_t held_memory;            /* counted in unverified_memory */
  size_t held_spool;             /* counted in unverified_spool */
  bool unverified_key;           /* a Bearer data key not read yet: counted like a MAC */
  /* once complete */
  struct el_event event;
  bool has_event;
  struct store_write write;
};

static size_t max_bytes(void *app) {
  return (size_t)((struct app *)app)->cfg->elevenlabs_audio_max_bytes;
}

/* The request no longer counts as unverified (its signature is good, or it ended). */
static void release_unverified(struct el_request *r) {
  atomic_fetch_sub(&unverified_memory, r->held_memory);
  atomic_fetch_sub(&unverified_spool, r->held_spool);
  r->held_memory = r->held_spool = 0;
}

/* Counts what the request holds now; false when that passes a bound. */
static bool hold_unverified(struct el_request *r) {
  const struct config *cfg = r->app->cfg;
  size_t env_len;
  (void)el_split_envelope(r->split, &env_len);
  size_t mem_max = (size_t)cfg->max_body_bytes * 2;
  if (mem_max < UNVERIFIED_MEMORY_MIN) mem_max = UNVERIFIED_MEMORY_MIN;
  size_t spool_max = (size_t)cfg->elevenlabs_audio_max_bytes * UNVERIFIED_SPOOL_EVENTS;
  size_t mem =
      atomic_fetch_add(&unverified_memory, env_len - r->held_memory) + (env_len - r->held_memory);
  size_t spool = atomic_fetch_add(&unverified_spool, r->spooled - r->held_spool) +
                 (r->spooled - r->held_spool);
  r->held_memory = env_len;
  r->held_spool = r->spooled;
  return mem <= mem_max && spool <= spool_max;
}

static void sink_free(void *p) {
  struct el_request *r = p;
  release_unverified(r);
  sig_stream_free(r->mac);
  crypto_sha256_free(r->sha);
  el_split_free(r->split);
  filewriter_file_release(r->audio);
  if (r->has_event) model_elevenlabs_free(&r->event);
  free(r);
}

/* The splitter's audio sink: the decoded bytes go to an unlinked temporary file in TMPDIR
 * (default /tmp), written by the file writer's thread, never this one; the store's writer
 * then copies the file into the database. */
static bool audio_sink(void *cls, const unsigned char *bytes, size_t len) {
  struct el_request *r = cls;
  if (!r->app->cfg->elevenlabs_store_audio) return true; /* acknowledged, not kept */
  if (!r->audio) {
    const char *dir = getenv("TMPDIR");
    r->audio = filewriter_file_new(r->app->spool, dir && *dir ? dir : "/tmp", -1);
    if (!r->audio) return false;
  }
  if (!filewriter_append(r->audio, bytes, len)) {
    log_msg(LOG_WARNING,
            "request %s: its audio could not be queued for its temporary file (more than the "
            "file writer's bound waiting, or an earlier write failed): answered 503",
            http_request_id(r->req));
    return false;
  }
  r->spooled += len;
  return true;
}

static void *stream_open(struct http_request *req) {
  struct app *app = http_request_app(req);
  struct el_request *r = calloc(1, sizeof *r);
  if (!r) {
    http_request_refuse(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return NULL;
  }
  r->app = app;
  r->req = req;
  if (app->elevenlabs_keys.count > 0) {
    enum sig_result sr = sig_elevenlabs_parse(http_request_header(req, SIGNATURE_HEADER), &r->sig);
    if (sr == SIG_OK)
      sr =
          sig_check_time(r->sig.t, time_now_us() / 1000000, app->cfg->elevenlabs_webhook_tolerance);
    if (sr != SIG_OK) {
      http_request_refuse(req, API_ERR_UNAUTHORIZED, sig_message_elevenlabs(sr), NULL);
      free(r);
      return NULL;
    }
    r->mac = sig_stream_new(&app->elevenlabs_keys, r->sig.t);
  } else if (!http_request_bearer_ok(req)) {
    /* Never open: without a signing secret the endpoint takes our API key instead. */
    http_reply_header(req, "WWW-Authenticate", "Bearer");
    http_request_refuse(req, API_ERR_UNAUTHORIZED,
                        "Missing or invalid API key (ELEVENLABS_WEBHOOK_SECRET is not set, so "
                        "this endpoint requires 'Authorization: Bearer <key>')",
                        NULL);
    free(r);
    return NULL;
  }
  /* A made-up gsr_ key is refused only once the body is complete (its lookup waits for the
   * final call): until then the upload is bounded with the unsigned ones. */
  r->unverified_key = !r->mac && http_request_key_unverified(req);
  r->sha = crypto_sha256_new();
  r->split = el_split_new((size_t)app->cfg->max_body_bytes, audio_sink, r);
  if ((app->elevenlabs_keys.count > 0 && !r->mac) || !r->sha || !r->split) {
    http_request_refuse(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    sink_free(r);
    return NULL;
  }
  return r;
}

/* Every byte feeds the MAC and the digest; the split stops at its first problem, which is
 * answered only after the signature is known to be good (a stranger learns nothing). */
static bool stream_write(struct http_request *req, void *sink, const char *data, size_t len) {
  struct el_request *r = sink;
  if (r->mac) sig_stream_update(r->mac, data, len);
  crypto_sha256_update(r->sha, data, len);
  if (r->split_status == EL_SPLIT_OK) r->split_status = el_split_feed(r->split, data, len);
  if ((r->mac || r->unverified_key) && !hold_unverified(r)) {
    release_unverified(r);
    http_reply_header(req, "Retry-After", "1");
    http_request_refuse(req, API_ERR_UNAVAILABLE, "Too many unverified uploads in progress; retry",
                        NULL);
    return false;
  }
  return true;
}

const struct route_stream api_elevenlabs_stream = {
    .max_bytes = max_bytes,
    .open = stream_open,
    .write = stream_write,
    .free = sink_free,
};

/* ---------------- once the body is complete ---------------- */

static void reply_bad_signature(struct http_request *req) {
  http_reply_error(req, API_ERR_UNAUTHORIZED, sig_message_elevenlabs(SIG_MISMATCH), NULL);
}

/* Writer thread: the transaction holding this write has ended. */
static void on_stored(struct store_write *w, void *cls) {
  (void)w;
  struct el_request *r = cls;
  http_request_resume(r->req);
}

static void on_resume(struct http_request *req) {
  struct el_request *r = http_request_sink(req);
  switch (r->write.status) {
    case STORE_OK: {
      metrics_webhook_accepted(METRICS_SOURCE_ELEVENLABS, r->write.duplicate);
      api_reply_webhook_accepted(req, r->event.conversation_id, r->write.webhook_id,
                                 r->write.processed_us);
      return;
    }
    case STORE_RETRY:
    case STORE_NOT_FOUND:
      http_reply_header(req, "Retry-After", "1");
      http_reply_error(req, API_ERR_UNAVAILABLE, "The event could not be stored; retry", NULL);
      return;
    case STORE_CLIENT:
      http_reply_error(req, API_ERR_VALIDATION, "The database refused a value of this event", NULL);
      return;
    case STORE_HARD:
      http_reply_error(req, API_ERR_INTERNAL, NULL, NULL);
      return;
  }
}

/* Type names are client data: only printable ASCII reaches the log. */
static void log_other(const struct el_request *r) {
  char clean[EL_TYPE_MAX + 1];
  size_t n = 0;
  for (const char *p = r->event.type_name; *p && n < EL_TYPE_MAX; p++)
    clean[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
  clean[n] = '\0';
  log_msg(LOG_INFO, "request %s: ElevenLabs event of type \"%s\" kept in the history only",
          http_request_id(r->req), n ? clean : "(none)");
}

static bool check_split(struct http_request *req, struct el_request *r) {
  enum el_split_status st = r->split_status;
  if (st == EL_SPLIT_OK) st = el_split_finish(r->split);
  switch (st) {
    case EL_SPLIT_OK:
      return true;
    case EL_SPLIT_TOO_LARGE:
      http_reply_error(req, API_ERR_PAYLOAD_TOO_LARGE,
                       "The event without its audio is larger than MAX_BODY_BYTES", NULL);
      return false;
    case EL_SPLIT_BAD_AUDIO:
      http_reply_error(req, API_ERR_VALIDATION, "data.full_audio is not valid base64",
                       json_pack("[{s:s,s:s}]", "field", "data.full_audio", "issue",
                                 "must be one base64 string (standard alphabet, padded)"));
      return false;
    case EL_SPLIT_SINK_FAILED:
    case EL_SPLIT_NO_MEMORY:
      http_reply_header(req, "Retry-After", "1");
      http_reply_error(req, API_ERR_UNAVAILABLE, "The audio could not be kept; retry", NULL);
      return false;
  }
  return false;
}

/* File writer's thread: the audio is all in its file. */
static void on_audio_flushed(void *cls) { http_request_resume(cls); }

static void accept_event(struct http_request *req) {
  struct el_request *r = http_request_sink(req);
  struct app *app = r->app;
  if (!r->body_checked) {
    r->body_checked = true;
    if (!check_split(req, r)) return; /* finishing the split may hand over the last audio */
    if (r->audio) {
      /* Wait (parked, no thread held) until the writer has put it all in the file. */
      http_request_suspend(req, accept_event, NULL, NULL);
      if (!filewriter_flush(r->audio, on_audio_flushed, req)) http_request_resume(req);
      return;
    }
  }
  if (r->audio && !filewriter_ok(r->audio)) {
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE, "The audio could not be kept; retry", NULL);
    return;
  }
  size_t len;
  const char *envelope = el_split_envelope(r->split, &len);
  struct el_names names = {app->cfg->elevenlabs_email_variable,
                           app->cfg->elevenlabs_account_variable};
  json_t *problems;
  char message[256];
  switch (model_elevenlabs_parse_fast(envelope, len, &names, &r->event, &problems, message,
                                      sizeof message)) {
    case MODEL_INVALID_JSON:
      http_reply_error(req, API_ERR_INVALID_JSON, message, NULL);
      return;
    case MODEL_NO_MEMORY:
      /* Never a 400: ElevenLabs does not retry those, and the conversation would be lost. */
      http_reply_header(req, "Retry-After", "1");
      http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory; retry", NULL);
      return;
    case MODEL_INVALID:
      http_reply_error(req, API_ERR_VALIDATION, message, problems);
      return;
    case MODEL_OK:
      break;
  }
  r->has_event = true;
  if (r->event.type == EL_OTHER) log_other(r);
  struct store_write *w = &r->write;
  w->kind = STORE_WRITE_EVENT;
  w->event_type = r->event.type_name;
  w->event_conversation_id = r->event.conversation_id ? r->event.conversation_id : "";
  w->event_body = envelope;
  w->event_body_len = len;
  crypto_sha256_final(r->sha, w->event_sha256);
  bool audio_kept = r->audio && filewriter_fd(r->audio) >= 0 && r->event.type == EL_POST_CALL_AUDIO;
  w->audio_fd = audio_kept ? filewriter_fd(r->audio) : -1;
  w->audio_len = audio_kept ? el_split_audio_len(r->split) : 0;
  /* The raw event can be rebuilt byte for byte only from kept, canonical audio. */
  w->event_audio_at = audio_kept && el_split_canonical(r->split) ? el_split_audio_at(r->split) : -1;
  if (r->event.derived) {
    w->conv = &r->event.conv;
    w->body = r->event.derived;
    w->body_len = r->event.derived_len;
    crypto_sha256(w->body, w->body_len, w->body_sha256);
  }
  api_who(req, &w->who);
  w->done = on_stored;
  w->done_cls = r;
  /* The sink lives until the request is freed; suspend first: the store may finish before
   * store_submit returns. */
  http_request_suspend(req, on_resume, NULL, NULL);
  store_submit(app->store, w);
}

void api_webhook_elevenlabs_post(struct http_request *req) {
  struct el_request *r = http_request_sink(req);
  release_unverified(r); /* a Bearer data key was read and accepted before this runs */
  if (r->mac) {
    int key = sig_stream_match(r->mac, &r->sig);
    if (key < 0) {
      http_request_limit(req, HTTP_LIMIT_WEBHOOK, NULL, reply_bad_signature);
      return;
    }
    /* Limited per secret: ElevenLabs delivers from a few addresses, a busy workspace from
     * all of them. The window is named by a digest of the secret, so instances whose lists
     * differ in order share it, and the name reveals nothing. */
    const struct sig_key *k = &r->app->elevenlabs_keys.keys[key];
    unsigned char digest[CRYPTO_SHA256_LEN];
    crypto_sha256(k->bytes, k->len, digest);
    char limit_key[48] = "el:";
    for (size_t i = 0; i < 16; i++)
      snprintf(limit_key + 3 + 2 * i, sizeof limit_key - 3 - 2 * i, "%02x", digest[i]);
    http_request_limit(req, HTTP_LIMIT_SIGNED, limit_key, accept_event);
    return;
  }
  /* Bearer: limited per IP, from the headers unless a signature header made us wait. */
  if (http_request_header(req, SIGNATURE_HEADER))
    http_request_limit(req, HTTP_LIMIT_WEBHOOK, NULL, accept_event);
  else
    accept_event(req);
}
