/* Broker publishers: every outbox event also goes to a message broker, counted as published
 * only once the broker acknowledged it.
 *   redis://  XADD <QUEUE_STREAM> MAXLEN ~ <QUEUE_MAXLEN> * type <type> id <id> event <json>
 *             (hiredis; the entries of one call pipelined, each reply checked)
 *   nats://   JetStream publish with acknowledgement to gensendrep.events.<type> in stream
 *             GENSENDREP (created when missing, subjects gensendrep.events.>), header
 *             Nats-Msg-Id = the event id so JetStream drops duplicates (libnats)
 * One publisher is used by one thread (the dispatcher's broker thread); calls block, bounded by
 * a timeout. It connects lazily and reconnects after a failure, never more than once a second. */
#ifndef GSR_QUEUE_H
#define GSR_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct queue_msg {
  const char *id;   /* the event id ("evt_...") */
  const char *type; /* "conversation.created" ... */
  const char *json; /* the event as delivered (model/outbox.h outbox_event_render) */
  size_t len;
};

struct queue;

/* A publisher for url (redis://[:password@]host:port[/db] or nats://[user:pass@]host:port).
 * Nothing is connected yet. NULL with one line in err (never the password) when url cannot be
 * used. stream and maxlen: the Redis Stream's key and approximate length (Redis only). */
__attribute__((warn_unused_result)) struct queue *queue_open(const char *url, const char *stream,
                                                             long maxlen, long timeout_ms,
                                                             char *err, size_t errlen);
/* Publishes msgs[0..n) in order and returns how many of them, from the first, the broker
 * acknowledged (n: all; fewer: it failed at the next one, which must be published again later;
 * the publisher is then disconnected). Connects first when needed; when the last attempt was
 * less than a second ago it first waits out that second (a caller retrying in a loop never
 * spins). n 0 is a probe: connects when allowed without waiting, or checks the held connection
 * with a round trip, so queue_connected stays true without traffic. */
size_t queue_publish(struct queue *q, const struct queue_msg *msgs, size_t n);
/* The largest message (the event's JSON) the broker takes, as the connected broker told it:
 * NATS max_payload less room for the headers; 0 when there is no such limit (Redis: 512 MB)
 * or nothing has been connected yet. Publisher thread. */
size_t queue_max_message(const struct queue *q);
/* Whether the last connection attempt or publish succeeded (health: "connected"). Any thread. */
bool queue_connected(const struct queue *q);
/* "redis" or "nats". */
const char *queue_kind(const struct queue *q);
/* A one-line reason for the last failure ("" when none); never a password. Any thread. */
void queue_last_error(const struct queue *q, char *out, size_t len);
void queue_close(struct queue *q);

#endif
