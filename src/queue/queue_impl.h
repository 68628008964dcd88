/* What the two publishers share with queue.c: the state every thread may read (connected, the
 * last error) and the reconnect pacing. Only queue/ includes this. */
#ifndef GSR_QUEUE_IMPL_H
#define GSR_QUEUE_IMPL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "queue/queue.h"

/* One connection attempt per second at most. */
#define QUEUE_RECONNECT_MS 1000.0

struct queue_backend;

struct queue_ops {
  const char *kind;
  /* Connects (*b holds no connection yet); false with a reason in why. */
  bool (*connect)(struct queue *q, char *why, size_t whylen);
  /* True when a connection is held (it may still turn out broken). */
  bool (*held)(const struct queue *q);
  /* Publishes on the held connection; the acknowledged prefix, why set when short. */
  size_t (*publish)(struct queue *q, const struct queue_msg *msgs, size_t n, char *why,
                    size_t whylen);
  /* Checks the held connection (a round trip); false with why when it is broken. */
  bool (*ping)(struct queue *q, char *why, size_t whylen);
  /* Drops the held connection, if any. */
  void (*disconnect)(struct queue *q);
  /* Frees the backend's own state (after disconnect). */
  void (*free)(struct queue *q);
};

struct queue {
  const struct queue_ops *ops;
  struct queue_backend *b;
  char stream[CONFIG_QUEUE_STREAM_MAX + 1];
  long maxlen;
  long timeout_ms;
  double last_connect_ms; /* time_mono_ms() of the last attempt; publisher thread only */
  bool tried;             /* an attempt was made */
  size_t max_message;     /* queue_max_message; set by connect */
  atomic_bool connected;
  atomic_int logged; /* 0 nothing yet, 1 up, 2 down: each change is logged once */
  pthread_mutex_t err_mu;
  char err[160];
};

/* Records why the publisher is disconnected (thread-safe) and logs the change once. */
void queue_set_down(struct queue *q, const char *why);
/* Records a working connection and logs the change once. */
void queue_set_up(struct queue *q);

/* The backends: open parses url into q->b (false with one line in err, never the password). */
extern const struct queue_ops queue_redis_ops;
extern const struct queue_ops queue_nats_ops;
bool queue_redis_open(struct queue *q, const char *url, char *err, size_t errlen);
bool queue_nats_open(struct queue *q, const char *url, char *err, size_t errlen);

#endif
