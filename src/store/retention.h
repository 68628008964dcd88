/* RETENTION_DAYS: a background thread that erases what is older than the retention period, in
 * small batches through the store's writer (STORE_WRITE_RETAIN), so ingest shares the writer
 * with it and never waits behind one large delete. While a batch finds something to erase the
 * next follows RETENTION_BUSY_PAUSE_MS later; once a batch finds nothing, the thread checks
 * again every RETENTION_IDLE_MS. On PostgreSQL several instances may run it at once: a batch
 * skips rows another transaction holds. */
#ifndef GSR_STORE_RETENTION_H
#define GSR_STORE_RETENTION_H

#include "store/store.h"

#define RETENTION_BATCH 100 /* conversations (and orphan events, audios) per transaction */
#define RETENTION_BUSY_PAUSE_MS 100
#define RETENTION_IDLE_MS 5000

struct store_retention;

/* Starts erasing, in the background, conversations whose processedAt is more than days days
 * old (whole: row, deliveries, events, audio) and events and audio of no conversation received
 * more than days days ago. NULL when the thread could not be started. */
__attribute__((warn_unused_result)) struct store_retention *store_retention_start(struct store *s,
                                                                                  long days);
/* Waits for the batch in flight, stops the thread and frees r (NULL: nothing). Call before
 * store_close. */
void store_retention_stop(struct store_retention *r);

#endif
