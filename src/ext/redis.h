/* Adapter to Redis (hiredis) for shared rate limiting. Each calling thread has its own
 * connection; a failed call marks Redis down (logged once) and callers fall back to local
 * decisions until redis_probe() finds it back. */
#ifndef GSR_REDIS_H
#define GSR_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REDIS_RL_SLOTS 60

/* One update of a shared sliding window: add deltas to per-second buckets, optionally ask for
 * one more hit (granted only while the window holds fewer than limit), and read the window. */
struct redis_rl_call {
  const char *key; /* full Redis key */
  int64_t now_s;
  long limit;
  bool want;
  size_t ndeltas;
  int64_t delta_secs[REDIS_RL_SLOTS];
  uint32_t deltas[REDIS_RL_SLOTS];
  /* reply */
  bool ok; /* Redis applied this call and answered it */
  bool allowed;
  size_t nbuckets;
  int64_t bucket_secs[REDIS_RL_SLOTS + 1];
  int64_t bucket_counts[REDIS_RL_SLOTS + 1];
};

struct redis_client;

/* Parses redis://[[user]:password@]host[:port][/db]; does not connect yet. */
__attribute__((warn_unused_result)) struct redis_client *redis_client_new(const char *url,
                                                                          char *err, size_t errlen);
void redis_client_free(struct redis_client *c);

/* Runs n calls in one pipelined round trip on the calling thread's connection; each call's
 * ok says whether Redis applied it. False unless all were applied; a broken connection also
 * marks Redis down. */
__attribute__((warn_unused_result)) bool redis_rl_run(struct redis_client *c,
                                                      struct redis_rl_call *calls, size_t n);

/* PINGs Redis (reconnecting if needed) and updates the up/down state. */
bool redis_probe(struct redis_client *c);
bool redis_is_up(const struct redis_client *c);

#endif
