/* GET /api/v1/conversations/{conversation_id}[?include=transcript,events]. The read and the
 * rendering run on an offload thread: the database may be slow. */
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/timeutil.h"
#include "ext/crypto.h"
#include "model/el_split.h"
#include "model/render.h"

/* An audio event is shown byte for byte (its base64 put back) while its audio is at most this
 * large; a bigger one is shown without it (the audio is at /audio). */
#define EVENT_AUDIO_INLINE_MAX (1024 * 1024)

struct get_job {
  struct store *store;
  const char *id; /* the request's path parameter */
  bool with_transcript;
  bool with_events;
  const char *const *accounts; /* the key's account bound (into the request) */
  size_t naccounts;
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

/* include is a comma-separated list of "transcript" and "events". */
static bool parse_include(const char *include, bool *with_transcript, bool *with_events) {
  *with_transcript = false;
  *with_events = false;
  if (!include) return true;
  char buf[128];
  if (strlen(include) >= sizeof buf) return false;
  memcpy(buf, include, strlen(include) + 1);
  char *items[8];
  size_t n = config_split_list(buf, items, 8);
  for (size_t i = 0; i < n; i++) {
    if (strcmp(items[i], "transcript") == 0)
      *with_transcript = true;
    else if (strcmp(items[i], "events") == 0)
      *with_events = true;
    else
      return false;
  }
  return true;
}

/* A growing answer; ok turns false at the first allocation that fails. */
struct text {
  char *buf;
  size_t len, cap;
  bool ok;
};

static void text_add(struct text *t, const void *data, size_t len) {
  if (!t->ok) return;
  if (t->len + len + 1 > t->cap) {
    size_t cap = (t->len + len + 1) * 2;
    char *nb = realloc(t->buf, cap);
    if (!nb) {
      t->ok = false;
      return;
    }
    t->buf = nb;
    t->cap = cap;
  }
  memcpy(t->buf + t->len, data, len);
  t->len += len;
  t->buf[t->len] = '\0';
}

#define TEXT_LIT(t, s) text_add((t), (s), sizeof(s) - 1)

static void text_add_json(struct text *t, json_t *v) {
  char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
  json_decref(v);
  if (!s) {
    t->ok = false;
    return;
  }
  text_add(t, s, strlen(s));
  free(s);
}

/* The raw event of an audio event as received, when its audio can be put back and is small:
 * the base64 of the stored audio spliced in where it was cut, checked against the digest of
 * what was received (the audio may since have been replaced by a later event). */
static char *rebuild_audio_event(struct store *store, const char *id, const struct store_event *e,
                                 size_t *len) {
  if (e->audio_at < 0 || (size_t)e->audio_at > e->body_len) return NULL;
  unsigned char probe;
  size_t got;
  int64_t total;
  if (store_audio_read(store, id, 0, &probe, 0, &got, &total) != STORE_OK ||
      total > EVENT_AUDIO_INLINE_MAX)
    return NULL;
  unsigned char *audio = malloc(total ? (size_t)total : 1);
  size_t b64 = el_base64_len((size_t)total);
  char *out = malloc(e->body_len + b64 + 1);
  bool ok = audio && out &&
            store_audio_read(store, id, 0, audio, (size_t)total, &got, &total) == STORE_OK &&
            got == (size_t)total;
  if (ok) {
    size_t at = (size_t)e->audio_at;
    memcpy(out, e->body, at);
    el_base64_encode(audio, got, out + at);
    memcpy(out + at + b64, e->body + at, e->body_len - at);
    *len = e->body_len + b64;
    out[*len] = '\0';
    unsigned char digest[CRYPTO_SHA256_LEN];
    crypto_sha256(out, *len, digest);
    ok = crypto_equal(digest, e->sha256, CRYPTO_SHA256_LEN);
  }
  free(audio);
  if (!ok) {
    free(out);
    return NULL;
  }
  return out;
}

/* Appends ,"events":[...]} to an answer whose closing brace was dropped. Each event is
 * {"webhookId","type","receivedAt","event":<the JSON as received>}; an audio event whose
 * audio is not put back shows "full_audio":"" and "fullAudioOmitted":true. */
static void add_events(struct text *t, struct store *store, const char *id,
                       const struct store_events *ev) {
  TEXT_LIT(t, ",\"events\":[");
  for (size_t i = 0; i < ev->count; i++) {
    const struct store_event *e = &ev->items[i];
    char when[40];
    if (!time_format_us(e->received_us, true, when, sizeof when)) when[0] = '\0';
    if (i) TEXT_LIT(t, ",");
    TEXT_LIT(t, "{\"webhookId\":");
    text_add_json(t, json_string(e->webhook_id));
    TEXT_LIT(t, ",\"type\":");
    text_add_json(t, json_string(e->type));
    TEXT_LIT(t, ",\"receivedAt\":");
    text_add_json(t, json_string(when));
    bool audio_event = strcmp(e->type, "post_call_audio") == 0;
    size_t raw_len = 0;
    char *raw = audio_event ? rebuild_audio_event(store, id, e, &raw_len) : NULL;
    if (audio_event && !raw) TEXT_LIT(t, ",\"fullAudioOmitted\":true");
    TEXT_LIT(t, ",\"event\":");
    if (raw)
      text_add(t, raw, raw_len);
    else
      text_add(t, e->body, e->body_len);
    free(raw);
    TEXT_LIT(t, "}");
  }
  TEXT_LIT(t, "]}");
}

void api_reply_conversation_id_refused(struct http_request *req) {
  http_reply_error(
      req, API_ERR_INVALID_PARAMETER, "conversation_id holds bytes the database cannot compare",
      json_pack("[{s:s,s:s}]", "field", "conversation_id", "issue", "must be valid UTF-8 text"));
}

static void reply_store_error(struct http_request *req, enum store_status st) {
  if (st == STORE_NOT_FOUND) {
    api_audit_read(req, AUDIT_CONVERSATION_READ, http_request_path_param(req), AUDIT_NOT_FOUND);
    http_reply_error(req, API_ERR_NOT_FOUND, "Conversation not found", NULL);
  } else if (st == STORE_RETRY) {
    http_reply_error(req, API_ERR_UNAVAILABLE, NULL, NULL);
  } else if (st == STORE_CLIENT) {
    api_reply_conversation_id_refused(req);
  } else {
    http_reply_error(req, API_ERR_INTERNAL, NULL, NULL);
  }
}

/* Offload thread. */
static void get_work(void *p) {
  struct get_job *job = p;
  struct store_conversation c;
  job->status = store_get(job->store, job->id, job->with_transcript, &c);
  if (job->status != STORE_OK) return;
  if (!api_account_visible(job->accounts, job->naccounts, c.account_id)) {
    free(c.body); /* another account's: as if it did not exist */
    job->status = STORE_NOT_FOUND;
    return;
  }
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
  if (!job->out || !job->with_events) return;
  struct store_events ev = {0};
  job->status = store_events(job->store, job->id, &ev);
  if (job->status != STORE_OK) return;
  struct text t = {job->out, job->out_len - 1, job->out_len + 1, true}; /* drop the '}' */
  job->out = NULL;
  add_events(&t, job->store, job->id, &ev);
  store_events_free(&ev);
  if (!t.ok) {
    free(t.buf);
    job->out_of_memory = true;
    return;
  }
  job->out = t.buf;
  job->out_len = t.len;
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
  api_audit_read(req, AUDIT_CONVERSATION_READ, job->id, AUDIT_OK);
  http_reply_json_text(req, 200, job->out, job->out_len);
  job->out = NULL; /* the reply owns it */
}

void api_conversations_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  const char *id = http_request_path_param(req);
  bool with_transcript, with_events;
  if (!parse_include(http_request_query(req, "include"), &with_transcript, &with_events)) {
    http_reply_error(req, API_ERR_INVALID_PARAMETER,
                     "include: the supported values are \"transcript\" and \"events\"",
                     json_pack("[{s:s,s:s}]", "field", "include", "issue",
                               "must be a comma-separated list of transcript, events"));
    return;
  }
  if (!api_conversation_id_storable(id)) {
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
  job->with_events = with_events;
  job->accounts = http_request_accounts(req, &job->naccounts);
  http_request_offload(req, get_work, on_resume, job, job_free);
}
