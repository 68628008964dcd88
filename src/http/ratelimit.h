/* In-process rate limiter: at most `limit` hits per key per minute. Each key keeps 60
 * one-second counters, so memory per key is fixed; a hit is forgotten when its second is
 * 60 seconds old (59 to 60 s after it was counted). So Retry-After and RateLimit-Reset never
 * exceed 60 and are honest: waiting that long is enough. Denied hits are not counted. */
#ifndef GSR_RATELIMIT_H
#define GSR_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RATELIMIT_WINDOW_S 60
#define RATELIMIT_KEY_MAX 64

struct ratelimit_result {
  bool allowed;
  long limit;
  long remaining;     /* after this hit */
  long reset_s;       /* seconds until the oldest counted hit leaves the window */
  long retry_after_s; /* when denied: seconds until a hit would be allowed */
};

struct ratelimit;

/* max_keys bounds memory; when that many keys are active, new keys are not limited. */
__attribute__((warn_unused_result)) struct ratelimit *ratelimit_new(long limit, size_t max_keys);
void ratelimit_free(struct ratelimit *rl);

/* Counts one hit for key at now_ms (keys are told apart by their first RATELIMIT_KEY_MAX-1
 * bytes) (any monotonic millisecond clock) unless over the limit. In shared mode it may wait
 * on Redis (up to its timeout): never call it on an event thread. */
void ratelimit_hit(struct ratelimit *rl, const char *key, int64_t now_ms,
                   struct ratelimit_result *out);
/* The same without ever waiting: true with *out set when this instance can decide alone
 * (not shared, Redis down, or far from the limit with fresh counts); false, nothing counted,
 * when only Redis can decide, and ratelimit_hit must then run off the event threads. */
__attribute__((warn_unused_result)) bool ratelimit_try_local(struct ratelimit *rl, const char *key,
                                                             int64_t now_ms,
                                                             struct ratelimit_result *out);

struct redis_client;

/* Shares the limit across instances through Redis (keys prefix + key). While Redis is down,
 * each instance limits on its own counts. */
void ratelimit_share(struct ratelimit *rl, struct redis_client *redis, const char *prefix);
/* Sends pending local hits to Redis and refreshes busy keys; one background thread calls it
 * every few milliseconds. */
void ratelimit_sync(struct ratelimit *rl, int64_t now_ms);

#endif
