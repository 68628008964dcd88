/* hiredis adapter. The sliding window lives in one Redis hash per key (field: second,
 * value: hits in that second) and is updated by a Lua script, so every instance sees one
 * window and a "may I have one more?" is decided atomically. */
#include "ext/redis.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dsn.h"
#include "core/log.h"
#include "core/thread_slot.h"
#include "ext/crypto.h"

#define TIMEOUT_MS 250

/* ARGV: now, limit, want, then (second, delta) pairs. Returns {allowed, {sec, count, ...}}. */
static const char script[] =
    "local now = tonumber(ARGV[1]) local limit = tonumber(ARGV[2]) "
    "for i = 4, #ARGV, 2 do "
    "  if tonumber(ARGV[i]) > now - 60 then "
    "    redis.call('HINCRBY', KEYS[1], ARGV[i], tonumber(ARGV[i + 1])) end end "
    "local h = redis.call('HGETALL', KEYS[1]) local total = 0 local out = {} "
    "for i = 1, #h, 2 do "
    "  local s = tonumber(h[i]) "
    "  if s <= now - 60 then redis.call('HDEL', KEYS[1], h[i]) elseif s <= now + 2 then "
    "    total = total + tonumber(h[i + 1]) out[#out + 1] = s out[#out + 1] = tonumber(h[i + 1]) "
    "  end end "
    "local allowed = 0 "
    "if ARGV[3] == '1' and total < limit then "
    "  redis.call('HINCRBY', KEYS[1], now, 1) allowed = 1 out[#out + 1] = now out[#out + 1] = 1 "
    "end "
    "redis.call('EXPIRE', KEYS[1], 61) "
    "return {allowed, out}";

struct conn {
  redisContext *ctx;
  bool script_loaded;
  unsigned epoch; /* the client's epoch when this connection was made */
};

struct redis_client {
  char host[256];
  int port;
  char user[128];
  char password[256];
  int db;
  char sha[41]; /* SHA-1 of the script, fixed at start */
  atomic_int state;
  atomic_uint epoch;        /* bumped at each recovery: connections from before are stale */
  struct thread_slot conns; /* one struct conn per calling thread */
};

/* ---------- state ---------- */

enum { STATE_UNKNOWN, STATE_UP, STATE_DOWN };

/* Each change of state is logged once, never once per request. */
static void mark_down(struct redis_client *c, const char *why) {
  if (atomic_exchange(&c->state, STATE_DOWN) != STATE_DOWN)
    log_msg(LOG_WARNING,
            "redis unreachable (%s): rate limits fall back to this instance's own counts", why);
}

static void mark_up(struct redis_client *c) {
  if (atomic_exchange(&c->state, STATE_UP) != STATE_UP) {
    atomic_fetch_add(&c->epoch, 1);
    log_msg(LOG_INFO, "redis connected: rate limits are shared");
  }
}

bool redis_is_up(const struct redis_client *c) { return atomic_load(&c->state) == STATE_UP; }

/* ---------- connections ---------- */

static redisReply *command(redisContext *ctx, int argc, const char **argv) {
  return redisCommandArgv(ctx, argc, argv, NULL);
}

static bool reply_ok(redisReply *r) { return r && r->type != REDIS_REPLY_ERROR; }

static redisContext *connect_ctx(struct redis_client *c, char *why, size_t whylen) {
  struct timeval tv = {0, TIMEOUT_MS * 1000};
  redisContext *ctx = redisConnectWithTimeout(c->host, c->port, tv);
  if (!ctx || ctx->err) {
    snprintf(why, whylen, "%s", ctx ? ctx->errstr : "out of memory");
    redisFree(ctx);
    return NULL;
  }
  redisSetTimeout(ctx, tv);
  bool ok = true;
  if (*c->password) {
    const char *auth[] = {"AUTH", c->user, c->password};
    if (!*c->user) auth[1] = "AUTH";
    redisReply *r = *c->user ? command(ctx, 3, auth) : command(ctx, 2, auth + 1);
    ok = reply_ok(r);
    freeReplyObject(r);
  }
  if (ok && c->db) {
    char db[16];
    snprintf(db, sizeof db, "%d", c->db);
    redisReply *r = command(ctx, 2, (const char *[]){"SELECT", db});
    ok = reply_ok(r);
    freeReplyObject(r);
  }
  if (!ok) {
    snprintf(why, whylen, "AUTH or SELECT refused");
    redisFree(ctx);
    return NULL;
  }
  return ctx;
}

static bool load_script(struct redis_client *c, struct conn *k) {
  redisReply *r = command(k->ctx, 3, (const char *[]){"SCRIPT", "LOAD", script});
  k->script_loaded = r && r->type == REDIS_REPLY_STRING && strcmp(r->str, c->sha) == 0;
  freeReplyObject(r);
  return k->script_loaded;
}

static void *conn_make(void *unused) {
  (void)unused;
  return calloc(1, sizeof(struct conn));
}

static void conn_release(void *k) {
  redisFree(((struct conn *)k)->ctx);
  free(k);
}

/* The calling thread's connection, made on first use. */
static struct conn *conn_get(struct redis_client *c) {
  struct conn *k = thread_slot_get(&c->conns, conn_make, NULL);
  if (!k) return NULL;
  if (k->ctx && k->epoch != atomic_load(&c->epoch)) { /* made before the last outage */
    redisFree(k->ctx);
    k->ctx = NULL;
  }
  if (!k->ctx) {
    char why[128];
    k->ctx = connect_ctx(c, why, sizeof why);
    if (!k->ctx) {
      mark_down(c, why);
      return NULL;
    }
    k->script_loaded = false;
    k->epoch = atomic_load(&c->epoch);
  }
  if (!k->script_loaded && !load_script(c, k)) {
    redisFree(k->ctx);
    k->ctx = NULL;
    mark_down(c, "SCRIPT LOAD failed");
    return NULL;
  }
  return k;
}

static void conn_drop(struct redis_client *c, struct conn *k, const char *why) {
  char copy[128]; /* why may point into the context */
  snprintf(copy, sizeof copy, "%s", why);
  redisFree(k->ctx);
  k->ctx = NULL;
  mark_down(c, copy);
}

/* ---------- the limiter call ---------- */

static void append_call(struct redis_client *c, struct conn *k, const struct redis_rl_call *call) {
  char nums[3 + 2 * REDIS_RL_SLOTS][24];
  const char *argv[7 + 2 * REDIS_RL_SLOTS];
  int argc = 0;
  argv[argc++] = "EVALSHA";
  argv[argc++] = c->sha;
  argv[argc++] = "1";
  argv[argc++] = call->key;
  int n = 0;
  snprintf(nums[n], sizeof nums[n], "%lld", (long long)call->now_s);
  argv[argc++] = nums[n++];
  snprintf(nums[n], sizeof nums[n], "%ld", call->limit);
  argv[argc++] = nums[n++];
  argv[argc++] = call->want ? "1" : "0";
  for (size_t i = 0; i < call->ndeltas && i < REDIS_RL_SLOTS; i++) {
    snprintf(nums[n], sizeof nums[n], "%lld", (long long)call->delta_secs[i]);
    argv[argc++] = nums[n++];
    snprintf(nums[n], sizeof nums[n], "%u", call->deltas[i]);
    argv[argc++] = nums[n++];
  }
  redisAppendCommandArgv(k->ctx, argc, argv, NULL);
}

static bool read_call(redisReply *r, struct redis_rl_call *call) {
  if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
      r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_ARRAY)
    return false;
  call->allowed = r->element[0]->integer == 1;
  redisReply *b = r->element[1];
  call->nbuckets = 0;
  for (size_t i = 0; i + 1 < b->elements && call->nbuckets <= REDIS_RL_SLOTS; i += 2) {
    if (b->element[i]->type != REDIS_REPLY_INTEGER ||
        b->element[i + 1]->type != REDIS_REPLY_INTEGER)
      return false;
    call->bucket_secs[call->nbuckets] = b->element[i]->integer;
    call->bucket_counts[call->nbuckets] = b->element[i + 1]->integer;
    call->nbuckets++;
  }
  return true;
}

/* Sends the calls not yet ok in one pipeline and reads their replies. False when the
 * connection failed; *noscript when Redis had forgotten the script. */
static bool run_pending(struct redis_client *c, struct conn *k, struct redis_rl_call *calls,
                        size_t n, bool *noscript) {
  *noscript = false;
  for (size_t i = 0; i < n; i++)
    if (!calls[i].ok) append_call(c, k, &calls[i]);
  for (size_t i = 0; i < n; i++) {
    if (calls[i].ok) continue;
    redisReply *r = NULL;
    if (redisGetReply(k->ctx, (void **)&r) != REDIS_OK) {
      conn_drop(c, k, k->ctx->errstr);
      return false;
    }
    if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)
      *noscript = true;
    else if (r && r->type == REDIS_REPLY_ERROR)
      log_msg(LOG_ERROR, "redis refused the rate-limit script: %.200s", r->str);
    calls[i].ok = read_call(r, &calls[i]);
    freeReplyObject(r);
  }
  return true;
}

bool redis_rl_run(struct redis_client *c, struct redis_rl_call *calls, size_t n) {
  for (size_t i = 0; i < n; i++) calls[i].ok = false;
  if (!redis_is_up(c)) return false;
  struct conn *k = conn_get(c);
  if (!k) return false;
  bool noscript;
  if (!run_pending(c, k, calls, n, &noscript)) return false;
  if (noscript) { /* Redis restarted and forgot the script: load it, try once more */
    k->script_loaded = false;
    if (!load_script(c, k) || !run_pending(c, k, calls, n, &noscript)) return false;
  }
  for (size_t i = 0; i < n; i++)
    if (!calls[i].ok) return false;
  return true;
}

bool redis_probe(struct redis_client *c) {
  struct conn *k = conn_get(c);
  if (!k) return false;
  redisReply *r = command(k->ctx, 1, (const char *[]){"PING"});
  bool ok = r && r->type == REDIS_REPLY_STATUS;
  freeReplyObject(r);
  if (ok)
    mark_up(c);
  else
    conn_drop(c, k, "PING failed");
  return ok;
}

/* ---------- lifecycle ---------- */

struct redis_client *redis_client_new(const char *url, char *err, size_t errlen) {
  struct redis_client *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errlen, "REDIS_URL: out of memory");
    return NULL;
  }
  struct dsn_redis u;
  if (!dsn_parse_redis("REDIS_URL", url, &u, err, errlen)) {
    memset(&u, 0, sizeof u);
    free(c);
    return NULL;
  }
  memcpy(c->host, u.host, sizeof c->host);
  c->port = u.port;
  memcpy(c->user, u.user, sizeof c->user);
  memcpy(c->password, u.password, sizeof c->password);
  c->db = u.db;
  memset(&u, 0, sizeof u);
  crypto_sha1_hex(script, strlen(script), c->sha);
  if (!thread_slot_init(&c->conns)) {
    snprintf(err, errlen, "REDIS_URL: cannot create a per-thread connection slot");
    memset(c->password, 0, sizeof c->password);
    free(c);
    return NULL;
  }
  return c;
}

void redis_client_free(struct redis_client *c) {
  if (!c) return;
  thread_slot_destroy(&c->conns, conn_release);
  memset(c->password, 0, sizeof c->password);
  free(c);
}
