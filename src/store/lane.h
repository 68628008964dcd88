/* The SQLite store's fast lane (issue 10, part 5): an active subscription's new events go from
 * the outbox straight to the dispatcher, without a sub_deliveries row each. What is in flight
 * is kept here, in memory, on the writer thread only: one process owns a SQLite file, and
 * after a restart the subscription's cursor (persisted, never past an event in flight) sends
 * them again (at least once). A delivery that does not simply succeed (a retry, a release, a
 * lease that ran out, a replay, a later event of the same conversation) becomes a row again
 * and takes the ordinary path.
 *
 * The writer changes the lane inside a batch's transaction: lanes_touch keeps a copy before
 * the batch's first change, and lanes_rollback restores it when the batch is rolled back, so
 * the lane never claims what the database forgot. */
#ifndef GSR_STORE_LANE_H
#define GSR_STORE_LANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/conversation.h"
#include "model/outbox.h"

/* One event sent straight from the outbox, not yet finished. */
struct lane_entry {
  char sub_id[OUTBOX_SUB_ID_MAX];
  char conversation_id[MODEL_CONVERSATION_ID_MAX + 1];
  int64_t seq;
  int64_t token;    /* the claim's lease token */
  int64_t until_us; /* its lease */
};

/* How far a subscription's lane has read the outbox, and how far FANOUT has counted its events
 * (so each is counted once). */
struct lane_head {
  char sub_id[OUTBOX_SUB_ID_MAX];
  int64_t seq;
  int64_t counted;
};

struct lanes {
  struct lane_entry *e;
  size_t n, cap;
  struct lane_head *h;
  size_t nh, caph;
};

struct lane_set {
  struct lanes cur, saved;
  bool saving; /* saved holds cur as the batch found it */
};

/* A batch begins: nothing saved yet. */
void lanes_begin(struct lane_set *l);
/* Before a batch's first change: saves the lane (false: no memory, change nothing). */
__attribute__((warn_unused_result)) bool lanes_touch(struct lane_set *l);
/* The batch was rolled back: the lane as it found it. */
void lanes_rollback(struct lane_set *l);
void lanes_free(struct lane_set *l);

/* The subscription's head; false when its lane has not read yet. */
bool lanes_head(const struct lanes *l, const char *sub_id, int64_t *seq);
__attribute__((warn_unused_result)) bool lanes_set_head(struct lanes *l, const char *sub_id,
                                                        int64_t seq);
/* How far FANOUT counted the subscription's events (0: not yet). */
int64_t lanes_counted(const struct lanes *l, const char *sub_id);
/* FANOUT counted up to seq (a head made for it starts at base). */
__attribute__((warn_unused_result)) bool lanes_set_counted(struct lanes *l, const char *sub_id,
                                                           int64_t base, int64_t seq);
__attribute__((warn_unused_result)) bool lanes_add(struct lanes *l, const struct lane_entry *e);
/* Index of the entry, or -1. token < 0: any token. */
long lanes_find(const struct lanes *l, const char *sub_id, int64_t seq, int64_t token);
/* Index of the subscription's entry for conversation_id, or -1. */
long lanes_find_conversation(const struct lanes *l, const char *sub_id,
                             const char *conversation_id);
/* Index of an entry of sub_id (NULL: any) whose lease ended at or before now_us, or -1. */
long lanes_find_expired(const struct lanes *l, const char *sub_id, int64_t now_us);
/* Index of any entry of sub_id, or -1. */
long lanes_find_sub(const struct lanes *l, const char *sub_id);
void lanes_remove(struct lanes *l, size_t i);
/* Where the subscription's persisted cursor may be: before its oldest entry, else its head
 * (false when its lane has not read yet). */
bool lanes_cursor(const struct lanes *l, const char *sub_id, int64_t *seq);
/* The subscription is gone: its entries and head too. */
void lanes_forget_sub(struct lanes *l, const char *sub_id);
/* The conversation was erased: its entries go (an answer for one then changes nothing). */
void lanes_forget_conversation(struct lanes *l, const char *conversation_id);

#endif
