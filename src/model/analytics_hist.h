/* The duration histogram kept with every analytics rollup (issue 11): ANALYTICS_HIST_BUCKETS
 * buckets of conversation duration in seconds. Seconds 0..9 have a bucket each; from 10 s on,
 * each bucket is about 15% wider than the one before (integer edges, the same on every backend
 * and every build), and the last holds everything from its lower edge up. A percentile read from
 * it is exact below 10 s and within 15% above. */
#ifndef GSR_MODEL_ANALYTICS_HIST_H
#define GSR_MODEL_ANALYTICS_HIST_H

#include <stdint.h>

#define ANALYTICS_HIST_BUCKETS 80

/* The bucket of a duration (negative counts as 0): 0..ANALYTICS_HIST_BUCKETS - 1. */
int analytics_hist_bucket(int64_t seconds);

/* The smallest duration bucket b holds (b in 0..ANALYTICS_HIST_BUCKETS - 1). */
int64_t analytics_hist_lower(int b);

/* The smallest duration the next bucket holds: bucket b is [lower(b), upper(b)); INT64_MAX for
 * the last. */
int64_t analytics_hist_upper(int b);

#endif
