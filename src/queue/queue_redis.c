/* Redis Streams publisher (hiredis): one XADD per event, the entries of a call pipelined in one
 * round trip, each reply checked in order. Connect, AUTH, SELECT and every reply are bounded by
 * the publisher's timeout. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dsn.h"
#include "queue/queue_impl.h"

struct queue_backend {
  struct dsn_redis dsn; /* holds the password: cleared when freed */
  redisContext *ctx;
};

bool queue_redis_open(struct queue *q, const char *url, char *err, size_t errlen) {
  struct queue_backend *b = calloc(1, sizeof *b);
  if (!b) {
    snprintf(err, errlen, "QUEUE_URL: out of memory");
    return false;
  }
  if (!dsn_parse_redis("QUEUE_URL", url, &b->dsn, err, errlen)) { /* never the password */
    memset(b, 0, sizeof *b);
    free(b);
    return false;
  }
  q->b = b;
  return true;
}

static bool held(const struct queue *q) { return q->b->ctx != NULL; }

static void disconnect(struct queue *q) {
  if (q->b->ctx) redisFree(q->b->ctx);
  q->b->ctx = NULL;
}

static void backend_free(struct queue *q) {
  memset(q->b, 0, sizeof *q->b);
  free(q->b);
  q->b = NULL;
}

static bool reply_ok(const redisReply *r) { return r && r->type != REDIS_REPLY_ERROR; }

/* The context's error; a read that ran out of time says so (hiredis reports EAGAIN). */
static void ctx_why(const char *what, const struct queue *q, redisContext *ctx, char *why,
                    size_t whylen) {
  if (ctx->err == REDIS_ERR_IO && strstr(ctx->errstr, "temporarily unavailable"))
    snprintf(why, whylen, "%s: no answer within %ld ms", what, q->timeout_ms);
  else
    snprintf(why, whylen, "%s: %s", what, ctx->err ? ctx->errstr : "no reply");
}

static void reply_why(const char *what, const redisReply *r, redisContext *ctx, char *why,
                      size_t whylen) {
  if (!r)
    snprintf(why, whylen, "%s: %s", what, ctx->err ? ctx->errstr : "no reply");
  else if (r->type == REDIS_REPLY_ERROR)
    snprintf(why, whylen, "%s: %.100s", what, r->str);
  else
    snprintf(why, whylen, "%s: unexpected reply type %d", what, r->type);
}

static bool connect_redis(struct queue *q, char *why, size_t whylen) {
  struct queue_backend *b = q->b;
  struct timeval tv = {q->timeout_ms / 1000, (q->timeout_ms % 1000) * 1000};
  redisContext *ctx = redisConnectWithTimeout(b->dsn.host, b->dsn.port, tv);
  if (!ctx || ctx->err) {
    snprintf(why, whylen, "connect to %.100s:%d: %s", b->dsn.host, b->dsn.port,
             ctx ? ctx->errstr : "out of memory");
    if (ctx) redisFree(ctx);
    return false;
  }
  if (redisSetTimeout(ctx, tv) != REDIS_OK) {
    snprintf(why, whylen, "cannot set the socket timeout");
    redisFree(ctx);
    return false;
  }
  b->ctx = ctx;
  if (*b->dsn.password) {
    redisReply *r =
        *b->dsn.user
            ? redisCommandArgv(ctx, 3, (const char *[]){"AUTH", b->dsn.user, b->dsn.password}, NULL)
            : redisCommandArgv(ctx, 2, (const char *[]){"AUTH", b->dsn.password}, NULL);
    bool ok = reply_ok(r);
    if (!ok) reply_why("AUTH refused", r, ctx, why, whylen);
    freeReplyObject(r);
    if (!ok) return false;
  }
  if (b->dsn.db) {
    char db[16];
    snprintf(db, sizeof db, "%d", b->dsn.db);
    redisReply *r = redisCommandArgv(ctx, 2, (const char *[]){"SELECT", db}, NULL);
    bool ok = reply_ok(r);
    if (!ok) reply_why("SELECT refused", r, ctx, why, whylen);
    freeReplyObject(r);
    if (!ok) return false;
  }
  return true;
}

static bool ping(struct queue *q, char *why, size_t whylen) {
  redisReply *r = redisCommandArgv(q->b->ctx, 1, (const char *[]){"PING"}, NULL);
  bool ok = r && r->type == REDIS_REPLY_STATUS;
  if (!r)
    ctx_why("PING", q, q->b->ctx, why, whylen);
  else if (!ok)
    reply_why("PING", r, q->b->ctx, why, whylen);
  freeReplyObject(r);
  return ok;
}

static size_t publish(struct queue *q, const struct queue_msg *msgs, size_t n, char *why,
                      size_t whylen) {
  redisContext *ctx = q->b->ctx;
  char maxlen[24];
  snprintf(maxlen, sizeof maxlen, "%ld", q->maxlen);
  for (size_t i = 0; i < n; i++) {
    const char *argv[] = {"XADD", q->stream,    "MAXLEN", "~",        maxlen,  "*",
                          "type", msgs[i].type, "id",     msgs[i].id, "event", msgs[i].json};
    size_t lens[] = {
        4, strlen(q->stream),  6, 1,          strlen(maxlen), 1, 4, strlen(msgs[i].type),
        2, strlen(msgs[i].id), 5, msgs[i].len};
    if (redisAppendCommandArgv(ctx, 12, argv, lens) != REDIS_OK) {
      snprintf(why, whylen, "XADD: %s", ctx->err ? ctx->errstr : "out of memory");
      n = i; /* what was appended is still sent and checked below */
      break;
    }
  }
  for (size_t i = 0; i < n; i++) {
    redisReply *r = NULL;
    if (redisGetReply(ctx, (void **)&r) != REDIS_OK) {
      ctx_why("XADD", q, ctx, why, whylen);
      return i;
    }
    bool ok = r && r->type == REDIS_REPLY_STRING;
    if (!ok) reply_why("XADD", r, ctx, why, whylen);
    freeReplyObject(r);
    if (!ok) return i; /* the publisher disconnects: later replies are not read */
  }
  return n;
}

const struct queue_ops queue_redis_ops = {
    .kind = "redis",
    .connect = connect_redis,
    .held = held,
    .publish = publish,
    .ping = ping,
    .disconnect = disconnect,
    .free = backend_free,
};
