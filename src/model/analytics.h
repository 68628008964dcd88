/* The answer of GET /api/v1/analytics, without a database (issue 11 part 1): the series' interval
 * cuts in the asker's time zone (core/tz.h), then the store's cells accumulated into totals,
 * breakdowns and the series, then rendered as JSON with byte-exact numbers.
 *
 * Numbers (README "Analytics"): counts and duration sums are integers; an avg is the mean rounded
 * half up to 3 decimals, null when nothing is counted; p50/p90/p99 are nearest-rank percentiles
 * read from the duration histogram (model/analytics_hist.h), reported as the lower edge of the
 * bucket that holds the rank: exact below 10 s, at most 15% below the true value above (the last
 * bucket reports its lower edge), null when nothing is counted. A breakdown lists at most
 * ANALYTICS_TOP entries by conversations (ties: the key's bytes ascending, null last), the rest
 * summed under "key": "other" with "rest": true (a real value "other" has no "rest"); an unknown
 * value (stored NULL) is "key": null. Accounts are named (every distinct stored value) before
 * they are merged, ranked and cut. */
#ifndef GSR_MODEL_ANALYTICS_H
#define GSR_MODEL_ANALYTICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tz.h"
#include "model/analytics_hist.h"

#define ANALYTICS_TOP 20
/* Series points (intervals from from to to) an answer may have at most. */
#define ANALYTICS_POINTS_MAX 10000

/* The breakdowns, in the order of store.h's enum store_dim. */
enum analytics_dim {
  ANALYTICS_DIM_ACCOUNT,
  ANALYTICS_DIM_AGENT,
  ANALYTICS_DIM_PLATFORM,
  ANALYTICS_DIM_STATUS,
  ANALYTICS_DIM_OUTCOME,
  ANALYTICS_DIM_COUNT
};

/* As store.h's enum store_cell_kind: FULL counts everywhere, TOTAL in totals and the series,
 * DIM in breakdown dim only. */
enum analytics_cell_kind { ANALYTICS_CELL_FULL, ANALYTICS_CELL_TOTAL, ANALYTICS_CELL_DIM };

struct analytics_cell {
  enum analytics_cell_kind kind;
  enum analytics_dim dim;                 /* ANALYTICS_CELL_DIM */
  int64_t at_us;                          /* an instant of the cell (its series interval) */
  const char *value[ANALYTICS_DIM_COUNT]; /* NULL: unknown; copied when needed */
  int64_t conversations, messages, duration_sum;
  /* ANALYTICS_HIST_BUCKETS counts, NULL: none. Whatever its kind, a cell's hist counts in the
   * percentiles: the cells given must hold each conversation in exactly one hist. */
  const uint32_t *hist;
};

enum analytics_result {
  ANALYTICS_OK,
  ANALYTICS_TOO_MANY_POINTS,
  ANALYTICS_NO_MEMORY,
  /* the first interval's start, in local time, is before 0001-01-01 (from's fault) or the last
   * one's after 9999-12-31 (to's fault): a start label could not be written */
  ANALYTICS_FROM_OUT_OF_RANGE,
  ANALYTICS_TO_OUT_OF_RANGE
};

struct analytics;

/* An accumulator for the event-time range [from_us, to_us) (from_us < to_us) cut into the
 * intervals iv of zone z (which must outlive it): the first interval is the one holding from_us
 * (it may start before from_us), the last the one holding to_us - 1. ANALYTICS_TOO_MANY_POINTS
 * when that makes more than max_points intervals; ANALYTICS_FROM/TO_OUT_OF_RANGE when the first
 * or last interval starts, in local time, outside 0001-01-01T00:00:00..9999-12-31T23:59:59. */
enum analytics_result analytics_new(const struct tz *z, enum tz_interval iv, int64_t from_us,
                                    int64_t to_us, size_t max_points, struct analytics **out);
void analytics_free(struct analytics *a);

/* The interval boundaries strictly inside (from_us, to_us), ascending, in microseconds (the
 * store query's cuts; valid while a lives). */
const int64_t *analytics_cuts(const struct analytics *a, size_t *n);
/* Series points (ncuts + 1). */
size_t analytics_points(const struct analytics *a);

/* Counts one cell. False when out of memory (the answer is then unusable). */
bool analytics_add(struct analytics *a, const struct analytics_cell *cell);

/* The account ids n distinct stored account values stand for (store.h analytics_account_names):
 * names[i] (NULL on entry) set to an owned copy (malloc) of the id stored[i] stands for, left NULL
 * when there is none (counted under "other"). Returns 0, or an error analytics_render returns as
 * is. The caller frees every name set, whatever the result. Called with at most
 * ANALYTICS_NAME_BATCH values at a time. */
typedef int (*analytics_names_fn)(void *cls, const char *const *stored, size_t n, char **names);
#define ANALYTICS_NAME_BATCH 500

/* Renders the answer as compact JSON (*out owned, free(); *len its length), once (it sorts the
 * accumulator's breakdowns in place). Every distinct account value is named through name (NULL:
 * shown as stored) before the ranking; values that name the same account are one entry (an
 * account stored in plaintext before ENCRYPTION_KEYS was set and as a blind index after, or
 * under two keys before reencrypt). "query" echoes from and to
 * (UTC), the interval and tz_name. Returns 0, -1 when out of memory, or name's error. */
int analytics_render(struct analytics *a, const char *tz_name, analytics_names_fn name, void *cls,
                     char **out, size_t *len);

/* The mean of sum over n rounded half up to 3 decimals, as thousandths (n > 0, sum >= 0). */
int64_t analytics_avg_milli(int64_t sum, int64_t n);
/* The nearest-rank percentile p (1..100) of the histogram's n counts (n > 0): the lower edge of
 * the bucket holding rank ceil(p * n / 100). */
int64_t analytics_percentile(const uint64_t hist[ANALYTICS_HIST_BUCKETS], int64_t n, int p);

#endif
