/* NATS JetStream publisher (libnats): the events of a call are published asynchronously, each
 * with its own acknowledgement timeout, and the call waits for every acknowledgement; the
 * acknowledged prefix is what counts. Subject gensendrep.events.<type>, header Nats-Msg-Id =
 * the event id (JetStream drops a duplicate within its window), stream GENSENDREP created on
 * connect when missing. The library never reconnects by itself: queue.c paces reconnects. */
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue_impl.h"

#define NATS_STREAM "GENSENDREP"
#define NATS_SUBJECTS "gensendrep.events.>"
#define NATS_SUBJECT_PREFIX "gensendrep.events."
#define NATS_MAX_PENDING 4096
#define NATS_HEADER_ROOM 512 /* the Nats-Msg-Id header and the framing, within max_payload */

enum { ACK_WAITING, ACK_OK, ACK_FAILED };

struct queue_backend {
  char url[300]; /* nats://host:port, never credentials */
  char user[128];
  char password[256];
  char token[256];
  natsConnection *nc;
  jsCtx *js;
  /* The batch being acknowledged, shared with the library's reply thread. */
  pthread_mutex_t mu;
  const struct queue_msg *msgs; /* NULL: no batch (late acknowledgements are dropped) */
  unsigned char *state;         /* ACK_* per message */
  size_t n, hint;
  char fail[160]; /* the first failure reported */
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
  const char *p = url + 7;
  const char *at = strrchr(p, '@');
  struct queue_backend *b = calloc(1, sizeof *b);
  if (!b) {
    snprintf(err, errlen, "QUEUE_URL: out of memory");
    return false;
  }
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    size_t ulen = colon ? (size_t)(colon - p) : 0;
    size_t plen = colon ? (size_t)(at - colon - 1) : (size_t)(at - p);
    const char *pw = colon ? colon + 1 : p;
    if (ulen >= sizeof b->user || plen >= sizeof b->password || (!colon && !plen)) {
      snprintf(err, errlen, "QUEUE_URL: user, password or token too long or empty");
      goto fail;
    }
    memcpy(b->user, p, ulen);
    memcpy(colon ? b->password : b->token, pw, plen);
    p = at + 1;
  }
  size_t hlen = strcspn(p, ":/?");
  if (hlen == 0 || hlen > 253) {
    snprintf(err, errlen, "QUEUE_URL: missing or too long host");
    goto fail;
  }
  long port = 4222;
  const char *rest = p + hlen;
  if (*rest == ':') {
    char *end;
    port = strtol(rest + 1, &end, 10);
    if (end == rest + 1 || port < 1 || port > 65535) {
      snprintf(err, errlen, "QUEUE_URL: bad port");
      goto fail;
    }
    rest = end;
  }
  if (*rest && strcmp(rest, "/") != 0) {
    snprintf(err, errlen, "QUEUE_URL: must look like nats://[user:password@]host[:port]");
    goto fail;
  }
  snprintf(b->url, sizeof b->url, "nats://%.*s:%ld", (int)hlen, p, port);
  pthread_mutex_lock(&lib_mu);
  natsStatus s = lib_users == 0 ? nats_Open(-1) : NATS_OK;
  if (s == NATS_OK) lib_users++;
  pthread_mutex_unlock(&lib_mu);
  if (s != NATS_OK) {
    snprintf(err, errlen, "QUEUE_URL: the NATS library cannot start: %s", natsStatus_GetText(s));
    goto fail;
  }
  pthread_mutex_init(&b->mu, NULL);
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
  /* The last user waits for the library's threads, so no acknowledgement callback can still be
   * running on b when it is freed. */
  if (--lib_users == 0) nats_CloseAndWait(q->timeout_ms + 1000);
  pthread_mutex_unlock(&lib_mu);
  pthread_mutex_destroy(&b->mu);
  memset(b, 0, sizeof *b);
  free(b);
  q->b = NULL;
}

/* On the library's thread: marks the message acknowledged or failed. */
static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure) {
  (void)js;
  struct queue_backend *b = closure;
  const char *id = NULL;
  if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) != NATS_OK) id = NULL;
  pthread_mutex_lock(&b->mu);
  if (b->msgs && id) {
    size_t i = b->hint, seen = 0;
    for (; seen < b->n; seen++, i = (i + 1) % b->n)
      if (b->state[i] == ACK_WAITING && strcmp(b->msgs[i].id, id) == 0) break;
    if (seen < b->n) {
      b->state[i] = pa ? ACK_OK : ACK_FAILED;
      b->hint = (i + 1) % b->n;
      if (!pa && !b->fail[0])
        snprintf(
            b->fail, sizeof b->fail, "publish not acknowledged: %.100s",
            pae && pae->ErrText ? pae->ErrText : natsStatus_GetText(pae ? pae->Err : NATS_ERR));
    }
  }
  pthread_mutex_unlock(&b->mu);
  natsMsg_Destroy(msg);
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
  if (s == NATS_OK && (*b->user || *b->password))
    s = natsOptions_SetUserInfo(o, b->user, b->password);
  if (s == NATS_OK && *b->token) s = natsOptions_SetToken(o, b->token);
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
  jo.PublishAsync.AckHandler = on_ack;
  jo.PublishAsync.AckHandlerClosure = b;
  jo.PublishAsync.MaxPending = NATS_MAX_PENDING;
  jo.PublishAsync.StallWait = q->timeout_ms;
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
  unsigned char *state = calloc(n, 1);
  if (!state) {
    snprintf(why, whylen, "out of memory");
    return 0;
  }
  pthread_mutex_lock(&b->mu);
  b->msgs = msgs;
  b->state = state;
  b->n = n;
  b->hint = 0;
  b->fail[0] = '\0';
  pthread_mutex_unlock(&b->mu);

  char send_fail[160] = "";
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = q->timeout_ms;
  size_t sent = 0;
  for (; sent < n; sent++) {
    char subject[160];
    int sl = snprintf(subject, sizeof subject, NATS_SUBJECT_PREFIX "%s", msgs[sent].type);
    if (sl < 0 || (size_t)sl >= sizeof subject || msgs[sent].len > INT32_MAX) {
      snprintf(send_fail, sizeof send_fail, "event %.40s cannot be sent", msgs[sent].id);
      break;
    }
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, msgs[sent].json, (int)msgs[sent].len);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", msgs[sent].id);
    if (s == NATS_OK) s = js_PublishMsgAsync(b->js, &m, &po);
    natsMsg_Destroy(m); /* NULL when the library took it */
    if (s != NATS_OK) {
      status_why("publish", s, send_fail, sizeof send_fail);
      break;
    }
  }
  jsPubOptions wait;
  jsPubOptions_Init(&wait);
  wait.MaxWait = q->timeout_ms;
  if (js_PublishAsyncComplete(b->js, &wait) != NATS_OK) {
    /* Never acknowledged within the wait: ours again (and not counted). */
    natsMsgList pending = {0};
    if (js_PublishAsyncGetPendingList(&pending, b->js) == NATS_OK) natsMsgList_Destroy(&pending);
    if (!send_fail[0]) snprintf(send_fail, sizeof send_fail, "acknowledgement timed out");
  }

  pthread_mutex_lock(&b->mu);
  size_t done = 0;
  while (done < sent && state[done] == ACK_OK) done++;
  if (done < n) snprintf(why, whylen, "%s", b->fail[0] ? b->fail : send_fail);
  b->msgs = NULL;
  b->state = NULL;
  b->n = 0;
  pthread_mutex_unlock(&b->mu);
  free(state);
  if (done < n && !why[0]) snprintf(why, whylen, "publish failed");
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
