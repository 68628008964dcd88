/* The outbox dispatcher: delivers what the store's outbox holds (store/store.h "The outbox").
 *   - subscriptions: a thread fans events out (STORE_OUTBOX_FANOUT), leases due deliveries
 *     (STORE_OUTBOX_CLAIM) per subscription within its maxPerSecond, sends each with libcurl
 *     (one multi handle: connections reused, HTTP/1.1 and HTTP/2, DELIVERY_TIMEOUT_SECONDS,
 *     redirects not followed, every connected address checked against the SSRF rule) signed
 *     with Standard Webhooks headers (webhook-id = the event id, webhook-timestamp,
 *     webhook-signature v1,<base64 HMAC-SHA256 of "id.timestamp.body" under the whsec_ secret>),
 *     and records each result (STORE_OUTBOX_FINISH): 2xx delivered; 410 disables the
 *     subscription; 429 and 503 wait for Retry-After (capped at the schedule's longest wait);
 *     anything else retries on DELIVERY_RETRY_SCHEDULE with jitter, then fails (dead letter) or
 *     pauses the subscription (store.h).
 *   - the broker (QUEUE_URL): a second thread reads the outbox in order through the cursor
 *     "queue" (STORE_OUTBOX_QUEUE_READ), publishes (queue/queue.h) and moves the cursor past
 *     what the broker acknowledged (QUEUE_ADVANCE); a broker outage delays, never loses.
 *   - old events are pruned (STORE_OUTBOX_PRUNE) after OUTBOX_RETENTION_DAYS.
 * The threads wake when a commit wrote events (store set_outbox_notify), when a retry falls
 * due, and at least once a second (other instances' events on PostgreSQL). */
#ifndef GSR_OUTBOUND_H
#define GSR_OUTBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "store/store.h"

/* The broker cursor's name in the store. */
#define OUTBOUND_QUEUE_CURSOR "queue"

struct outbound;

/* Starts the dispatcher threads for store s (and the broker publisher when cfg->queue_url is
 * set) and registers the store's outbox notification. NULL with one line in err, and then no
 * thread left running. cfg is read during the call only: what the threads need is copied, so it
 * need not outlive the dispatcher. */
__attribute__((warn_unused_result)) struct outbound *outbound_start(const struct config *cfg,
                                                                    struct store *s, char *err,
                                                                    size_t errlen);
/* Wakes the dispatcher now (a subscription was changed or replayed). Any thread; never
 * blocks. */
void outbound_wake(struct outbound *o);
/* Stops the threads and joins every one it started: deliveries in flight are given up to 2 s,
 * then released (they go out again after a start: at least once). Before store_close. */
void outbound_stop(struct outbound *o);

struct outbound_status {
  bool queue_configured;
  bool queue_connected;
  const char *queue_kind; /* "redis" | "nats" | NULL */
  char queue_error[160];  /* "" when none */
};
/* Any thread; never blocks. o may be NULL (nothing configured). */
void outbound_status(const struct outbound *o, struct outbound_status *out);

/* Whether this instance's dispatcher holds subscription id's deliveries because its signing
 * secret does not open (sealed with a key ENCRYPTION_KEYS does not hold, or damaged): its
 * events wait, none is sent unsigned. Any thread; never blocks long. o may be NULL. */
bool outbound_sub_held(struct outbound *o, const char *id);

/* How many subscriptions this instance's dispatcher holds, as its last read of them found
 * (every second while one is active, and whenever one is changed here), by why, as GET shows
 * each (heldReason; heldUntil). Health shows these counts; which subscriptions, the API reads
 * from the store (GET, the list) and outbound_sub_held. */
struct outbound_held {
  size_t sealed_unreadable, secret_unreadable, retry_after;
};
/* Fills out (all zero when o is NULL or nothing is held); a Retry-After hold over by now_us
 * (wall clock) is not counted. Any thread; never blocks long; reads no database. */
void outbound_held(struct outbound *o, int64_t now_us, struct outbound_held *out);

/* The SSRF rule for a subscription URL: resolves its host (blocking; offload threads only)
 * and refuses (false, a reason for the client in why) a URL that is not http(s), or any of
 * whose addresses is loopback, private (RFC 1918, unique local fc00::/7), link-local,
 * unspecified, multicast, broadcast, CGNAT 100.64/10, or IPv4-mapped/NAT64 forms of them,
 * unless allow_private. Deliveries check the address actually connected to as well. */
bool outbound_url_allowed(const char *url, bool allow_private, char *why, size_t whylen);

/* Whether addr (struct sockaddr_in or _in6) is one the SSRF rule refuses. */
struct sockaddr;
bool outbound_addr_private(const struct sockaddr *addr);

/* Standard Webhooks: writes "v1,<base64 signature>" for id, timestamp and body under secret
 * ("whsec_<base64>") into out (at least 128 bytes). False when secret is malformed. */
bool outbound_sign(const char *secret, const char *id, int64_t timestamp, const char *body,
                   size_t len, char *out, size_t outlen);

/* The wait before attempt number attempt+1 after a failed attempt number attempt (1-based), in
 * microseconds, with jitter from rnd in [0, 1): schedule[attempt] seconds plus up to 10%; -1
 * when the schedule is exhausted (attempt >= count). */
int64_t outbound_retry_delay_us(const long *schedule, size_t count, int attempt, double rnd);
/* A Retry-After value (seconds or an HTTP date) as seconds from now_s, clamped to [0, cap];
 * -1 when it is neither. */
int64_t outbound_retry_after(const char *value, int64_t now_s, int64_t cap);

#endif
