/* Duration histogram edges (see analytics_hist.h). */
#include "model/analytics_hist.h"

#include <pthread.h>

static int64_t edges[ANALYTICS_HIST_BUCKETS];
static pthread_once_t edges_once = PTHREAD_ONCE_INIT;

static void edges_init(void) {
  for (int b = 0; b < ANALYTICS_HIST_BUCKETS; b++) {
    if (b <= 10) {
      edges[b] = b;
    } else {
      int64_t next = edges[b - 1] * 115 / 100;
      edges[b] = next > edges[b - 1] ? next : edges[b - 1] + 1;
    }
  }
}

int64_t analytics_hist_lower(int b) {
  pthread_once(&edges_once, edges_init);
  if (b <= 0) return 0;
  if (b >= ANALYTICS_HIST_BUCKETS) b = ANALYTICS_HIST_BUCKETS - 1;
  return edges[b];
}

int64_t analytics_hist_upper(int b) {
  if (b >= ANALYTICS_HIST_BUCKETS - 1) return INT64_MAX;
  return analytics_hist_lower(b + 1);
}

int analytics_hist_bucket(int64_t seconds) {
  pthread_once(&edges_once, edges_init);
  if (seconds <= 0) return 0;
  int lo = 0, hi = ANALYTICS_HIST_BUCKETS - 1; /* the last bucket whose lower edge <= seconds */
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (edges[mid] <= seconds)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}
