/* Unit tests for core/metrics: exact counts from several threads at once, routes sharing a
 * pattern sharing their series, bounded labels, histogram buckets at their bounds, and the
 * text format (escaping, cumulative buckets, _count equal to +Inf). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"
#include "store/write_queue.h"

static char *render(void) {
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  assert_non_null(f);
  struct metrics_gauges g = {.has_backlog = true, .outbox_backlog = 42};
  metrics_render(f, &g);
  assert_int_equal(fclose(f), 0);
  return text;
}

/* The value of the sample line that starts with prefix (name and labels), or -1. */
static double sample(const char *text, const char *prefix) {
  size_t n = strlen(prefix);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (strncmp(p, prefix, n) == 0 && p[n] == ' ') return strtod(p + n + 1, NULL);
  return -1;
}

static int setup(void **state) {
  (void)state;
  metrics_reset();
  static const char *const patterns[] = {"/a", "/b/{b_id}", "/b/{b_id}", "/q\"\\\n"};
  assert_true(metrics_http_routes(patterns, 4));
  return 0;
}

struct worker {
  int route;
  const char *method;
  unsigned status;
};

#define PER_THREAD 20000

static void *hammer(void *arg) {
  const struct worker *w = arg;
  for (int i = 0; i < PER_THREAD; i++) {
    metrics_http_request(w->route, w->method, w->status, 1000000);
    metrics_webhook_accepted(METRICS_SOURCE_CONVERSATION, i % 2 == 0);
  }
  return NULL;
}

static void test_counts_exact_across_threads(void **state) {
  (void)state;
  /* Routes 1 and 2 share a pattern: their requests are one series per method and status. */
  struct worker w[4] = {{1, "GET", 200}, {2, "GET", 200}, {2, "DELETE", 204}, {0, "POST", 200}};
  pthread_t t[4];
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&t[i], NULL, hammer, &w[i]), 0);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  char *text = render();
  assert_true(sample(text,
                     "gensendrep_http_requests_total{route=\"/b/{b_id}\",method=\"GET\","
                     "status=\"200\"}") == 2 * PER_THREAD);
  assert_true(sample(text,
                     "gensendrep_http_requests_total{route=\"/b/{b_id}\",method=\"DELETE\","
                     "status=\"204\"}") == PER_THREAD);
  assert_true(sample(text, "gensendrep_http_request_duration_seconds_count{route=\"/b/{b_id}\"}") ==
              3 * PER_THREAD);
  assert_true(sample(text, "gensendrep_webhooks_accepted_total{source=\"conversation\"}") ==
              4 * PER_THREAD);
  assert_true(sample(text, "gensendrep_webhooks_redelivered_total") == 2 * PER_THREAD);
  /* One series per pattern: the shared pattern's histogram appears once. */
  const char *first = strstr(text, "duration_seconds_count{route=\"/b/{b_id}\"}");
  assert_non_null(first);
  assert_null(strstr(first + 1, "duration_seconds_count{route=\"/b/{b_id}\"}"));
  free(text);
}

static void test_labels_bounded(void **state) {
  (void)state;
  metrics_http_request(METRICS_ROUTE_UNMATCHED, "BREW", 418, 0);
  metrics_http_request(99, NULL, 404, 0); /* an index never named: unmatched */
  metrics_http_request(0, "GET", 12345, 0);
  /* More distinct statuses than a route keeps: the rest is "other", nothing is lost. */
  for (unsigned s = 100; s < 160; s++) metrics_http_request(0, "PUT", s, 0);
  char *text = render();
  assert_true(sample(text,
                     "gensendrep_http_requests_total{route=\"unmatched\",method=\"other\","
                     "status=\"418\"}") == 1);
  assert_true(sample(text,
                     "gensendrep_http_requests_total{route=\"unmatched\",method=\"other\","
                     "status=\"404\"}") == 1);
  assert_true(sample(text,
                     "gensendrep_http_requests_total{route=\"/a\",method=\"GET\","
                     "status=\"999\"}") == 1);
  double other = sample(text,
                        "gensendrep_http_requests_total{route=\"/a\",method=\"other\","
                        "status=\"other\"}");
  assert_true(other > 0);
  double puts = other;
  for (unsigned s = 100; s < 160; s++) {
    char prefix[160];
    snprintf(prefix, sizeof prefix,
             "gensendrep_http_requests_total{route=\"/a\",method=\"PUT\",status=\"%u\"}", s);
    double v = sample(text, prefix);
    if (v > 0) puts += v;
  }
  assert_true(puts == 60);
  assert_true(sample(text, "gensendrep_http_request_duration_seconds_count{route=\"/a\"}") == 61);
  /* A pattern's quote, backslash and newline are escaped in the label. */
  metrics_http_request(3, "GET", 200, 0);
  free(text);
  text = render();
  assert_non_null(strstr(text, "route=\"/q\\\"\\\\\\n\""));
  free(text);
}

static void test_histogram_buckets(void **state) {
  (void)state;
  metrics_store_commit(1, 1000000);             /* exactly on the 0.001 bound: counted there */
  metrics_store_commit(3, 1000001);             /* just above: the next bucket */
  metrics_store_commit(5000, 9000000000000ULL); /* beyond every bound: only +Inf */
  char *text = render();
  const char *h = "gensendrep_store_commit_duration_seconds_bucket";
  char p[128];
  snprintf(p, sizeof p, "%s{le=\"0.001\"}", h);
  assert_true(sample(text, p) == 1);
  snprintf(p, sizeof p, "%s{le=\"0.0025\"}", h);
  assert_true(sample(text, p) == 2);
  snprintf(p, sizeof p, "%s{le=\"5\"}", h);
  assert_true(sample(text, p) == 2);
  snprintf(p, sizeof p, "%s{le=\"+Inf\"}", h);
  assert_true(sample(text, p) == 3);
  assert_true(sample(text, "gensendrep_store_commit_duration_seconds_count") == 3);
  assert_true(sample(text, "gensendrep_store_commit_batch_size_bucket{le=\"1\"}") == 1);
  assert_true(sample(text, "gensendrep_store_commit_batch_size_bucket{le=\"4\"}") == 2);
  assert_true(sample(text, "gensendrep_store_commit_batch_size_bucket{le=\"1024\"}") == 2);
  assert_true(sample(text, "gensendrep_store_commit_batch_size_sum") == 5004);
  assert_true(sample(text, "gensendrep_outbox_backlog") == 42);
  free(text);
}

static void test_gauges_and_counters(void **state) {
  (void)state;
  metrics_connections_add(1);
  metrics_connections_add(1);
  metrics_connections_add(-1);
  metrics_auth_failure();
  metrics_rate_limited(METRICS_LIMIT_SIGNED);
  metrics_store_error(METRICS_STORE_CLIENT);
  metrics_delivery(METRICS_DELIVERY_RETRYING);
  metrics_webhook_accepted(METRICS_SOURCE_ELEVENLABS, false);
  char *text = render();
  assert_true(sample(text, "gensendrep_connections") == 1);
  assert_true(sample(text, "gensendrep_auth_failures_total") == 1);
  assert_true(sample(text, "gensendrep_rate_limited_total{limit=\"elevenlabs\"}") == 1);
  assert_true(sample(text, "gensendrep_rate_limited_total{limit=\"api\"}") == 0);
  assert_true(sample(text, "gensendrep_store_errors_total{kind=\"client\"}") == 1);
  assert_true(sample(text, "gensendrep_deliveries_total{outcome=\"retrying\"}") == 1);
  assert_true(sample(text, "gensendrep_webhooks_accepted_total{source=\"elevenlabs\"}") == 1);
  assert_true(sample(text, "gensendrep_webhooks_redelivered_total") == 0);
  /* Every family has its HELP and TYPE lines. */
  assert_non_null(strstr(text, "# HELP gensendrep_connections "));
  assert_non_null(strstr(text, "# TYPE gensendrep_connections gauge\n"));
  assert_non_null(strstr(text, "# TYPE gensendrep_store_commit_batch_size histogram\n"));
  free(text);
}

/* A route table larger than the metrics' (or a pattern too long for it) is refused as a whole,
 * so the server refuses to start: never routes silently counted as "unmatched". */
static void test_route_table_guarded(void **state) {
  (void)state;
  static char names[METRICS_ROUTES_MAX + 1][16];
  const char *patterns[METRICS_ROUTES_MAX + 1];
  for (size_t i = 0; i <= METRICS_ROUTES_MAX; i++) {
    snprintf(names[i], sizeof names[i], "/r%zu", i);
    patterns[i] = names[i];
  }
  assert_false(metrics_http_routes(patterns, METRICS_ROUTES_MAX + 1));
  char long_pattern[METRICS_ROUTE_PATTERN_MAX + 1];
  memset(long_pattern, 'x', sizeof long_pattern - 1);
  long_pattern[0] = '/';
  long_pattern[sizeof long_pattern - 1] = '\0';
  const char *one_long[] = {"/a", long_pattern};
  assert_false(metrics_http_routes(one_long, 2));
  assert_true(metrics_http_routes(patterns, METRICS_ROUTES_MAX));
  metrics_http_request(METRICS_ROUTES_MAX - 1, "GET", 200, 1000);
  char *text = render();
  assert_true(sample(text,
                     "gensendrep_http_requests_total{route=\"/r63\",method=\"GET\","
                     "status=\"200\"}") == 1);
  free(text);
}

/* The backlog gauge says when a count stopped at the store's cap. */
static void test_backlog_capped(void **state) {
  (void)state;
  char *text = render();
  assert_true(sample(text, "gensendrep_outbox_backlog") == 42);
  assert_true(sample(text, "gensendrep_outbox_backlog_capped") == 0);
  assert_non_null(strstr(text, "# TYPE gensendrep_outbox_backlog_capped gauge\n"));
  free(text);
  char *capped = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&capped, &len);
  assert_non_null(f);
  struct metrics_gauges g = {
      .has_backlog = true, .outbox_backlog = 100000, .outbox_backlog_capped = true};
  metrics_render(f, &g);
  assert_int_equal(fclose(f), 0);
  assert_true(sample(capped, "gensendrep_outbox_backlog_capped") == 1);
  free(capped);
}

static void finished(struct store_write *w, void *cls) {
  (void)w;
  (void)cls;
}

/* Health's probe writes are not commits in the metrics: a batch of probes alone records
 * nothing, a mixed batch counts its other writes only. */
static void test_probe_writes_not_counted(void **state) {
  (void)state;
  struct write_queue q;
  write_queue_init(&q, 16);
  struct store_write probe = {.kind = STORE_WRITE_PROBE, .done = finished};
  struct store_write probe2 = {.kind = STORE_WRITE_PROBE, .done = finished};
  struct store_write event = {.kind = STORE_WRITE_EVENT, .done = finished};
  probe.next = &probe2;
  write_queue_commit_begin(&q, &probe);
  write_queue_commit_end(&q);
  char *text = render();
  assert_true(sample(text, "gensendrep_store_commit_batch_size_count") == 0);
  assert_true(sample(text, "gensendrep_store_commit_duration_seconds_count") == 0);
  free(text);
  probe.next = &event;
  event.next = &probe2;
  probe2.next = NULL;
  write_queue_commit_begin(&q, &probe);
  write_queue_commit_end(&q);
  text = render();
  assert_true(sample(text, "gensendrep_store_commit_batch_size_count") == 1);
  assert_true(sample(text, "gensendrep_store_commit_batch_size_sum") == 1);
  free(text);
  write_queue_destroy(&q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_counts_exact_across_threads, setup),
      cmocka_unit_test_setup(test_labels_bounded, setup),
      cmocka_unit_test_setup(test_histogram_buckets, setup),
      cmocka_unit_test_setup(test_gauges_and_counters, setup),
      cmocka_unit_test_setup(test_route_table_guarded, setup),
      cmocka_unit_test_setup(test_backlog_capped, setup),
      cmocka_unit_test_setup(test_probe_writes_not_counted, setup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
