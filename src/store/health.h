/* Coalesced health checks of a store. A check is a read on a reader connection plus a
 * committed write through the writer (STORE_WRITE_PROBE). At most one check runs at a time,
 * its result answers every caller for STORE_HEALTH_FRESH_MS, and a caller waits at most
 * STORE_HEALTH_WAIT_MS for a check that is running: a stuck database makes health answer
 * "not ok" after that bound, never hang. Checks run on the monitor's own thread, so they
 * neither hold up nor queue behind other work. */
#ifndef GSR_STORE_HEALTH_H
#define GSR_STORE_HEALTH_H

#include <stdbool.h>

#include "store/store.h"

#define STORE_HEALTH_FRESH_MS 1000
#define STORE_HEALTH_WAIT_MS 2000

struct store_health_wait {
  /* Called exactly once, on one of the monitor's threads, with the check's result; w is not
   * touched afterwards. */
  void (*done)(struct store_health_wait *w, bool ok);
  /* the monitor's */
  double deadline_ms;
  struct store_health_wait *next;
};

struct store_health;

/* Starts the monitor's two threads (one runs checks, one keeps the waiting bound); NULL when
 * they could not be started. */
__attribute__((warn_unused_result)) struct store_health *store_health_new(struct store *s);
/* True with *ok set when a recent result (or a check stuck past the bound) answers at once,
 * without waiting. */
__attribute__((warn_unused_result)) bool store_health_recent(struct store_health *h, bool *ok);
/* Waits for the running check, starting one when none runs; w->done is called within
 * STORE_HEALTH_WAIT_MS, possibly before this returns (on the calling thread then). */
void store_health_wait(struct store_health *h, struct store_health_wait *w);
/* The outbox's backlog (issue 10): returns the numbers last read (false when none has been
 * yet, or the read failed) and asks every later check to read them too, with
 * store_outbox_stats(cursor_name) (cursor_name must outlive h; NULL: no broker). When the
 * numbers are older than STORE_HEALTH_FRESH_MS it also asks the monitor's thread for a
 * refresh that only reads them (no health check, no probe write): a later call sees it.
 * Never waits, never touches the database itself. */
bool store_health_outbox(struct store_health *h, const char *cursor_name,
                         struct store_outbox_stats *out);
/* Answers whoever still waits (not ok), waits for a running check to end (the store's own
 * timeouts bound it) and frees the monitor. Call before store_close. */
void store_health_free(struct store_health *h);

#endif
