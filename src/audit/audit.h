/* The audit recorder: the audit log's entries that change nothing else (reads of conversation
 * data, rejected authentications, an erasure of nothing) are collected here and handed to the
 * store's group-commit writer as one STORE_WRITE_AUDIT (store/store.h), so they cost no
 * transaction of their own when webhooks are being written, and trail the answer by well under
 * a second. Changes (webhooks, erasures, keys) do not come here: the store writes their entry
 * in the change's own transaction from the write's `who`.
 *
 * A recorded entry is handed over at once when no batch is being written, else with the next
 * batch, right after the one in flight is committed, or AUDIT_SPACING_MS after a large one began
 * (group commit: under load one batch holds what came meanwhile). Recording never waits on I/O: an
 * entry is copied into a bounded buffer under a short lock (any thread, the HTTP event threads
 * included). Past AUDIT_BUFFER_MAX waiting entries new ones are dropped, counted and logged (once
 * per batch), never waited for. A batch the store could not take (STORE_RETRY) is tried again
 * AUDIT_FLUSH_MS later, 3 times in all, then dropped (logged).
 *
 * Rejected authentications are aggregated: the rejections from one client with one outcome
 * within one second (from the first) become one entry whose count says how many; its request id
 * is the first one's, its key id and target are kept when every rejection in it shares them
 * (else null). A client is what the rate limits count (http/client.c): an IPv4 address, or an
 * IPv6 /64, recorded as the prefix ("2001:db8:1:2::/64"). The entry is handed over once its
 * second has passed (checked every AUDIT_FLUSH_MS), so a flood of bad keys writes at most one
 * entry per client, outcome and second. When AUDIT_REJECT_SOURCES_MAX clients are already
 * aggregated, a rejection from yet another one is counted in the second's overflow entry of its
 * outcome (client address, request id, key id and target null): the log itself says how many
 * rejections it does not list one client at a time; none is dropped for lack of a window.
 *
 * The recorder also logs the chain's head at info level ("audit head: id N hash H") when it
 * starts, every AUDIT_HEAD_LOG_MS and when it stops (after its last write): kept outside the
 * database, these lines are anchors for `gensendrep audit verify --expect ID:HASH`. */
#ifndef GSR_AUDIT_H
#define GSR_AUDIT_H

#include <stdint.h>

#include "model/audit.h"
#include "store/store.h"

#define AUDIT_FLUSH_MS 250 /* rejection windows are closed, failed batches retried, this often */
/* Under load (the last batch held AUDIT_SPACING_MIN entries or more), batches of reads and
 * rejections start at least AUDIT_SPACING_MS apart: one commit then holds what came in that time
 * (hundreds of entries) instead of a commit, and a sync, per few reads. Otherwise entries are
 * handed over at once (a quiet service writes a read's entry before anything else happens). */
#define AUDIT_SPACING_MS 50
#define AUDIT_SPACING_MIN 16
#define AUDIT_BUFFER_MAX 8192 /* entries waiting for the next flush */
#define AUDIT_REJECT_WINDOW_US 1000000
#define AUDIT_HEAD_LOG_MS \
  600000 /* "audit head: id N hash H" logged at start, this often, at stop */
#define AUDIT_REJECT_SOURCES_MAX 1024 /* clients aggregated at once; more: overflow entry */

struct audit_recorder;

/* Starts the recorder's thread, writing into s (which must outlive it). NULL when out of
 * memory or threads. */
__attribute__((warn_unused_result)) struct audit_recorder *audit_recorder_start(struct store *s);

/* Hands over everything still held (open rejection windows included), waits until the store
 * has committed it, and frees r. Call after the last request has completed and before the
 * store closes. NULL is ignored. */
void audit_recorder_stop(struct audit_recorder *r);

/* Records one entry at the current time: who (NULL: none), action, target (NULL or "": none),
 * outcome. Never blocks on I/O; r NULL records nothing. */
void audit_record(struct audit_recorder *r, const struct audit_who *who, enum audit_action action,
                  const char *target, enum audit_outcome outcome);

/* The same with the entry's count set (an export: the conversations it read). */
void audit_record_count(struct audit_recorder *r, const struct audit_who *who,
                        enum audit_action action, const char *target, enum audit_outcome outcome,
                        int64_t count);

/* Records a rejected authentication (outcome AUDIT_UNAUTHORIZED or AUDIT_FORBIDDEN), aggregated
 * per client (IPv4 address, IPv6 /64) as above. */
void audit_record_rejected(struct audit_recorder *r, const struct audit_who *who,
                           const char *target, enum audit_outcome outcome);

/* Counters since start, for tests and logs. */
struct audit_recorder_stats {
  int64_t recorded; /* entries handed to the store (an aggregate counts once) */
  int64_t dropped;  /* entries lost to a full buffer */
  int64_t failed;   /* entries whose STORE_WRITE_AUDIT failed */
  int64_t flushes;  /* STORE_WRITE_AUDIT writes submitted */
};
void audit_recorder_stats(struct audit_recorder *r, struct audit_recorder_stats *out);

/* Sets who from its parts (NULL or "": none), each cut to its field's size. */
void audit_who_set(struct audit_who *who, const char *request_id, const char *key_id,
                   const char *client_ip);

#endif
