/* The queue between request threads and a backend's writer thread (group commit): writers
 * take everything waiting, commit it in one transaction and finish each write. Shared by
 * every backend so batching behaves the same on all of them. */
#ifndef GSR_WRITE_QUEUE_H
#define GSR_WRITE_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

struct write_queue {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct store_write *head, *tail;
  size_t batch_max;
  bool stopping;
  int64_t last_processed_us; /* writer thread only */
  size_t batch_n;            /* writer thread only: the batch being committed */
  double batch_start_ms;
};

void write_queue_init(struct write_queue *q, size_t batch_max);
/* Fails any writes still queued (STORE_RETRY) and releases the queue. */
void write_queue_destroy(struct write_queue *q);
/* Appends w; after write_queue_stop, finishes it at once with STORE_RETRY. */
void write_queue_push(struct write_queue *q, struct store_write *w);
/* Waits for writes and takes up to batch_max of them, linked through ->next; NULL once
 * stopped and drained. */
struct store_write *write_queue_take(struct write_queue *q);
/* Wakes the writer; it drains what is queued, then write_queue_take returns NULL. */
void write_queue_stop(struct write_queue *q);
/* Writer thread: gives a new version of a conversation its webhook id and processedAt, which
 * strictly increases so lists order exactly. False when the random source failed. */
__attribute__((warn_unused_result)) bool write_queue_stamp(struct write_queue *q,
                                                           struct store_write *w);
/* Audio is stored in chunks of this size (see notes/store.md): a write reads one chunk of the
 * file at a time, a ranged read fetches only the chunks it needs. Each stored audio records its
 * chunk size, so changing this does not break audio stored before. */
#define STORE_AUDIO_CHUNK_BYTES (256 * 1024)

/* The conversation id a write locks and names (the event's for STORE_WRITE_EVENT); NULL for a
 * probe and a retention batch. */
const char *store_write_conversation_id(const struct store_write *w);
/* True for the API key writes (STORE_WRITE_KEY_*). */
bool store_write_is_key(const struct store_write *w);
/* True when w replaces its conversation's audio (only an event write can). */
bool store_write_has_audio(const struct store_write *w);
/* Reads exactly len bytes of an event's audio at off (pread, so a batch sent again reads it
 * again from the start). 0, or an errno (EIO for a file shorter than announced). */
int store_audio_pread(const struct store_write *w, int64_t off, void *buf, size_t len);
/* Copies what a stored slice of audio (len bytes starting at slice_start in the audio) holds
 * of [offset, end) to buf, which starts at offset; *got is what the slices before filled. False
 * when this slice does not continue exactly where those ended (a gap or an overlap). */
bool store_audio_piece(int64_t offset, int64_t end, int64_t slice_start, const void *data,
                       size_t len, unsigned char *buf, size_t *got);

/* A JSON array of the n account ids (malloc'ed; NULL when out of memory): how a list's
 * account bound is handed to the database as one parameter. */
char *store_accounts_json(const char *const *accounts, size_t n);

/* Writer thread, around the commit of the batch write_queue_take returned: the batch's size
 * and the time it took go to the metrics (core/metrics.h). Health's probes (STORE_WRITE_PROBE)
 * are not counted: a batch of probes alone is not recorded at all. */
void write_queue_commit_begin(struct write_queue *q, const struct store_write *batch);
void write_queue_commit_end(struct write_queue *q);
/* Sets every write's status (OK keeps what the backend filled in) and calls its done(); a
 * write not stored (retry, client, hard) is counted in the metrics. */
void write_queue_finish(struct store_write *batch, enum store_status status);
/* Takes w out of the batch at *head and finishes it alone with status. */
void write_queue_finish_one(struct store_write **head, struct store_write *w,
                            enum store_status status);

#endif
