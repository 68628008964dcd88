/* NATS JetStream publisher (libnats): the events of a call are published one after the other,
 * each waiting (at most the publisher's timeout) for JetStream's acknowledgement; the first one
 * not acknowledged ends the call. libnats 3.4's asynchronous publishing leaked a received
 * message now and then under LeakSanitizer, and one round trip per event on a local network is
 * thousands of events a second. Subject gensendrep.events.<type>, header Nats-Msg-Id =
 * the event id (JetStream drops a duplicate within its window), stream GENSENDREP created on
 * connect when missing. The library never reconnects by itself: queue.c paces reconnects. */
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dsn.h"
#include "queue/queue_impl.h"

#define NATS_STREAM "GENSENDREP"
#define NATS_SUBJECTS "gensendrep.events.>"
#define NATS_SUBJECT_PREFIX "gensendrep.events."
#define NATS_HEADER_ROOM 512 /* the Nats-Msg-Id header and the framing, within max_payload */

struct queue_backend {
  char url[300];       /* nats://host:port, never credentials */
  struct dsn_nats dsn; /* the credentials */
  natsConnection *nc;
  jsCtx *js;
};

/* The library is opened once per process by its first user and closed with the last one, so
 * its threads are gone (and its memory released) once no publisher is left. */
static pthread_mutex_t lib_mu = PTHREAD_MUTEX_INITIALIZER;
static int lib_users;

/* "what: <the library's last error>", without its "(file.c:line): " prefix. */
static void status_why(const char *what, natsStatus s, char *why, size_t whylen) {
  const char *last = nats_GetLastError(NULL);
  if (last && *last == '(') {
    const char *end = strstr(last, "): ");
    if (end) last = end + 3;
  }
  snprintf(why, whylen, "%s: %.100s", what, last && *last ? last : natsStatus_GetText(s));
}

/* nats://[user:password@|token@]host[:port] */
bool queue_nats_open(struct queue *q, const char *url, char *err, size_t errlen) {
  struct queue_backend *b = calloc(1, sizeof *b);
  if (!b) {
    snprintf(err, errlen, "QUEUE_URL: out of memory");
    return false;
  }
  if (!dsn_parse_nats(url, &b->dsn, err, errlen)) goto fail;
  snprintf(b->url, sizeof b->url, "nats://%s:%d", b->dsn.host, b->dsn.port);
  pthread_mutex_lock(&lib_mu);
  natsStatus s = lib_users == 0 ? nats_Open(-1) : NATS_OK;
  if (s == NATS_OK) lib_users++;
  pthread_mutex_unlock(&lib_mu);
  if (s != NATS_OK) {
    snprintf(err, errlen, "QUEUE_URL: the NATS library cannot start: %s", natsStatus_GetText(s));
    goto fail;
  }
  q->b = b;
  return true;
fail:
  memset(b, 0, sizeof *b);
  free(b);
  return false;
}

static bool held(const struct queue *q) {
  return q->b->js && q->b->nc && !natsConnection_IsClosed(q->b->nc);
}

static void disconnect(struct queue *q) {
  struct queue_backend *b = q->b;
  if (b->js) jsCtx_Destroy(b->js);
  b->js = NULL;
  if (b->nc) natsConnection_Destroy(b->nc);
  b->nc = NULL;
}

static void backend_free(struct queue *q) {
  struct queue_backend *b = q->b;
  pthread_mutex_lock(&lib_mu);
  /* The last user waits for the library's threads (and what they hold) to be gone. */
  if (--lib_users == 0) nats_CloseAndWait(q->timeout_ms + 1000);
  pthread_mutex_unlock(&lib_mu);
  memset(b, 0, sizeof *b);
  free(b);
  q->b = NULL;
}

static bool ensure_stream(struct queue *q, char *why, size_t whylen) {
  struct queue_backend *b = q->b;
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetStreamInfo(&si, b->js, NATS_STREAM, NULL, &jerr);
  jsStreamInfo_Destroy(si);
  if (s == NATS_OK) return true;
  if (s != NATS_NOT_FOUND) {
    status_why("JetStream stream " NATS_STREAM " unavailable", s, why, whylen);
    return false;
  }
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char *subjects[] = {NATS_SUBJECTS};
  cfg.Name = NATS_STREAM;
  cfg.Subjects = subjects;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  si = NULL;
  jerr = 0;
  s = js_AddStream(&si, b->js, &cfg, NULL, &jerr);
  jsStreamInfo_Destroy(si);
  if (s == NATS_OK || jerr == JSStreamNameExistErr) return true; /* another instance made it */
  status_why("cannot create JetStream stream " NATS_STREAM, s, why, whylen);
  return false;
}

static bool connect_nats(struct queue *q, char *why, size_t whylen) {
  struct queue_backend *b = q->b;
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetURL(o, b->url);
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, q->timeout_ms);
  if (s == NATS_OK) s = natsOptions_SetAllowReconnect(o, false);
  if (s == NATS_OK) s = natsOptions_SetName(o, "gensendrep");
  if (s == NATS_OK && (*b->dsn.user || *b->dsn.password))
    s = natsOptions_SetUserInfo(o, b->dsn.user, b->dsn.password);
  if (s == NATS_OK && *b->dsn.token) s = natsOptions_SetToken(o, b->dsn.token);
  if (s == NATS_OK) s = natsConnection_Connect(&b->nc, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK) {
    status_why("connect", s, why, whylen);
    return false;
  }
  /* the server's max_payload (1 MiB by default) counts headers too: leave them room */
  int64_t maxp = natsConnection_GetMaxPayload(b->nc);
  q->max_message = maxp > NATS_HEADER_ROOM ? (size_t)(maxp - NATS_HEADER_ROOM) : 0;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = q->timeout_ms;
  s = natsConnection_JetStream(&b->js, b->nc, &jo);
  if (s != NATS_OK) {
    status_why("JetStream context", s, why, whylen);
    return false;
  }
  return ensure_stream(q, why, whylen);
}

static bool ping(struct queue *q, char *why, size_t whylen) {
  natsStatus s = natsConnection_FlushTimeout(q->b->nc, q->timeout_ms);
  if (s != NATS_OK) status_why("PING", s, why, whylen);
  return s == NATS_OK;
}

static size_t publish(struct queue *q, const struct queue_msg *msgs, size_t n, char *why,
                      size_t whylen) {
  struct queue_backend *b = q->b;
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = q->timeout_ms;
  size_t done = 0;
  for (; done < n; done++) {
    char subject[160];
    int sl = snprintf(subject, sizeof subject, NATS_SUBJECT_PREFIX "%s", msgs[done].type);
    if (sl < 0 || (size_t)sl >= sizeof subject || msgs[done].len > INT32_MAX) {
      snprintf(why, whylen, "event %.40s cannot be sent", msgs[done].id);
      break;
    }
    natsMsg *m = NULL;
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    natsStatus s = natsMsg_Create(&m, subject, NULL, msgs[done].json, (int)msgs[done].len);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", msgs[done].id);
    if (s == NATS_OK) s = js_PublishMsg(&pa, b->js, m, &po, &jerr);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    if (s != NATS_OK) {
      status_why("publish not acknowledged", s, why, whylen);
      break;
    }
  }
  return done;
}

const struct queue_ops queue_nats_ops = {
    .kind = "nats",
    .connect = connect_nats,
    .held = held,
    .publish = publish,
    .ping = ping,
    .disconnect = disconnect,
    .free = backend_free,
};
