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
 * summed under "key": "other"; an unknown value (stored NULL) is "key": null. */
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
  const uint32_t *hist; /* ANALYTICS_HIST_BUCKETS counts; NULL: none (DIM cells need none) */
};

enum analytics_result { ANALYTICS_OK, ANALYTICS_TOO_MANY_POINTS, ANALYTICS_NO_MEMORY };

struct analytics;

/* An accumulator for the event-time range [from_us, to_us) (from_us < to_us) cut into the
 * intervals iv of zone z (which must outlive it): the first interval is the one holding from_us
 * (it may start before from_us), the last the one holding to_us - 1. ANALYTICS_TOO_MANY_POINTS
 * when that makes more than max_points intervals. */
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

/* The account id a stored account value stands for (store.h analytics_account_name): 0 found
 * (written to out), 1 no such account (counted under "other"), any other value an error that
 * analytics_render returns as is. */
typedef int (*analytics_name_fn)(void *cls, const char *stored, char *out, size_t outlen);

/* Renders the answer as compact JSON (*out owned, free(); *len its length), once (it sorts the
 * accumulator's breakdowns in place). The top account entries are named through name (NULL:
 * shown as stored); two that name the same account are one entry. "query" echoes from and to
 * (UTC), the interval and tz_name. Returns 0, -1 when out of memory, or name's error. */
int analytics_render(struct analytics *a, const char *tz_name, analytics_name_fn name, void *cls,
                     char **out, size_t *len);

/* The mean of sum over n rounded half up to 3 decimals, as thousandths (n > 0, sum >= 0). */
int64_t analytics_avg_milli(int64_t sum, int64_t n);
/* The nearest-rank percentile p (1..100) of the histogram's n counts (n > 0): the lower edge of
 * the bucket holding rank ceil(p * n / 100). */
int64_t analytics_percentile(const uint64_t hist[ANALYTICS_HIST_BUCKETS], int64_t n, int p);

#endif
