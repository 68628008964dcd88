/* The metrics behind GET /metrics: fixed arrays of relaxed atomics (no lock, no allocation
 * when recording) and their rendering in the Prometheus text format. A histogram keeps
 * per-bucket counts in integer units (nanoseconds, writes) and turns them into cumulative
 * buckets in seconds when rendered, so _count always equals the +Inf bucket. */
#include "core/metrics.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_STATUS_SLOTS 32
#define BUCKETS_MAX 16
#define NS 1000000ULL /* one millisecond in nanoseconds */

/* Upper bounds, in the histogram's integer unit; scale turns them into the rendered unit. */
struct buckets {
  const uint64_t *le;
  size_t n;
  double scale;
};

struct histogram {
  _Atomic uint64_t count[BUCKETS_MAX + 1]; /* per bucket (not cumulative), last: +Inf */
  _Atomic uint64_t sum;
};

/* A (method, status) pair of one route: key 0 is a free slot. */
struct status_slot {
  _Atomic uint32_t key;
  _Atomic uint64_t count;
};

/* Aligned so that two routes counted by two threads do not share a cache line. */
struct route_metrics {
  struct status_slot slots[METRICS_STATUS_SLOTS];
  _Atomic uint64_t overflow; /* pairs past the slots: rendered as method and status "other" */
  struct histogram duration;
} __attribute__((aligned(64)));

static const char *const methods[] = {"GET",   "HEAD",   "POST",    "PUT",
                                      "PATCH", "DELETE", "OPTIONS", "other"};
#define METHODS_N (sizeof methods / sizeof methods[0])

static const char *const source_names[METRICS_SOURCE_N] = {"conversation", "elevenlabs"};
static const char *const limit_names[METRICS_LIMIT_N] = {"webhook", "api", "elevenlabs"};
static const char *const store_error_names[METRICS_STORE_ERROR_N] = {"retry", "client", "hard"};
static const char *const delivery_names[METRICS_DELIVERY_N] = {"delivered", "retrying", "failed",
                                                               "disabled"};

/* Seconds, from a millisecond to ten seconds: a webhook's answer waits for a group commit. */
static const uint64_t http_le[] = {1 * NS,    2500000,   5 * NS,    10 * NS,  25 * NS,
                                   50 * NS,   100 * NS,  250 * NS,  500 * NS, 1000 * NS,
                                   2500 * NS, 5000 * NS, 10000 * NS};
static const uint64_t commit_le[] = {100000,   250000,   500000,    1 * NS,   2500000,
                                     5 * NS,   10 * NS,  25 * NS,   50 * NS,  100 * NS,
                                     250 * NS, 500 * NS, 1000 * NS, 5000 * NS};
static const uint64_t batch_le[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
static const struct buckets http_buckets = {http_le, sizeof http_le / sizeof http_le[0], 1e-9};
static const struct buckets commit_buckets = {commit_le, sizeof commit_le / sizeof commit_le[0],
                                              1e-9};
static const struct buckets batch_buckets = {batch_le, sizeof batch_le / sizeof batch_le[0], 1};

/* False sharing: every request reads the route table, and counters below are written from
 * many threads. The table is written only at start-up (metrics_http_routes) and sits on cache
 * lines of its own; each group of counters written together starts a line of its own (HOT),
 * so a write to one never invalidates the line another thread reads or writes. */
#define HOT __attribute__((aligned(64)))

static struct route_metrics routes[METRICS_ROUTES_MAX + 1]; /* the last: unmatched */
static struct HOT {
  char names[METRICS_ROUTES_MAX][METRICS_ROUTE_PATTERN_MAX];
  size_t slot[METRICS_ROUTES_MAX]; /* a route's pattern */
  size_t count;                    /* distinct patterns */
  size_t given;                    /* routes named */
} table;

static struct HOT {
  _Atomic int64_t connections HOT;
  _Atomic uint64_t auth_failures HOT;
  _Atomic uint64_t rate_limited[METRICS_LIMIT_N] HOT;
  _Atomic uint64_t accepted[METRICS_SOURCE_N] HOT;
  _Atomic uint64_t redelivered;
  _Atomic uint64_t store_errors[METRICS_STORE_ERROR_N] HOT;
  _Atomic uint64_t deliveries[METRICS_DELIVERY_N] HOT;
  struct histogram commit_size HOT, commit_duration; /* the writer threads only */
} hot;
_Static_assert(sizeof table % 64 == 0 && sizeof hot % 64 == 0,
               "the route table and the counters fill whole cache lines");

static void add(_Atomic uint64_t *c, uint64_t n) {
  atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t get(_Atomic uint64_t *c) { return atomic_load_explicit(c, memory_order_relaxed); }

static void observe(struct histogram *h, const struct buckets *b, uint64_t v) {
  size_t i = 0;
  while (i < b->n && v > b->le[i]) i++;
  add(&h->count[i], 1);
  add(&h->sum, v);
}

/* ---------------- recording ---------------- */

/* Routes that share a pattern (GET, PATCH and DELETE of one path) share its metrics: one
 * series per label set. */
bool metrics_http_routes(const char *const *patterns, size_t n) {
  table.count = table.given = 0;
  if (n > METRICS_ROUTES_MAX) return false;
  for (size_t i = 0; i < n; i++)
    if (strlen(patterns[i]) >= METRICS_ROUTE_PATTERN_MAX) return false;
  for (size_t i = 0; i < n; i++) {
    size_t j = 0;
    while (j < table.count && strcmp(table.names[j], patterns[i]) != 0) j++;
    if (j == table.count)
      snprintf(table.names[table.count++], sizeof table.names[0], "%s", patterns[i]);
    table.slot[i] = j;
  }
  table.given = n;
  return true;
}

static size_t method_index(const char *m) {
  if (m)
    for (size_t i = 0; i + 1 < METHODS_N; i++)
      if (strcmp(m, methods[i]) == 0) return i;
  return METHODS_N - 1;
}

void metrics_http_request(int route, const char *method, unsigned status, uint64_t duration_ns) {
  struct route_metrics *r =
      &routes[route >= 0 && (size_t)route < table.given ? table.slot[route] : METRICS_ROUTES_MAX];
  if (status > 999) status = 999;
  uint32_t key = (uint32_t)(method_index(method) + 1) << 16 | status;
  /* Open addressing: a slot's key is written once (0 to key) and never changes again. */
  size_t h = (key * 2654435761u) % METRICS_STATUS_SLOTS;
  bool counted = false;
  for (size_t probe = 0; probe < METRICS_STATUS_SLOTS && !counted; probe++) {
    struct status_slot *s = &r->slots[(h + probe) % METRICS_STATUS_SLOTS];
    uint32_t k = atomic_load_explicit(&s->key, memory_order_acquire);
    if (k == 0) {
      uint32_t expected = 0;
      if (atomic_compare_exchange_strong_explicit(&s->key, &expected, key, memory_order_acq_rel,
                                                  memory_order_acquire))
        k = key;
      else
        k = expected;
    }
    if (k == key) {
      add(&s->count, 1);
      counted = true;
    }
  }
  if (!counted) add(&r->overflow, 1);
  observe(&r->duration, &http_buckets, duration_ns);
}

void metrics_connections_add(int delta) {
  atomic_fetch_add_explicit(&hot.connections, delta, memory_order_relaxed);
}

void metrics_auth_failure(void) { add(&hot.auth_failures, 1); }

void metrics_rate_limited(enum metrics_limit limit) {
  if (limit < METRICS_LIMIT_N) add(&hot.rate_limited[limit], 1);
}

void metrics_webhook_accepted(enum metrics_source source, bool redelivery) {
  if (source < METRICS_SOURCE_N) add(&hot.accepted[source], 1);
  if (redelivery) add(&hot.redelivered, 1);
}

void metrics_store_commit(size_t n, uint64_t duration_ns) {
  observe(&hot.commit_size, &batch_buckets, n);
  observe(&hot.commit_duration, &commit_buckets, duration_ns);
}

void metrics_store_error(enum metrics_store_error kind) {
  if (kind < METRICS_STORE_ERROR_N) add(&hot.store_errors[kind], 1);
}

void metrics_delivery(enum metrics_delivery outcome) {
  if (outcome < METRICS_DELIVERY_N) add(&hot.deliveries[outcome], 1);
}

static void clear_histogram(struct histogram *h) {
  for (size_t i = 0; i <= BUCKETS_MAX; i++) atomic_store(&h->count[i], 0);
  atomic_store(&h->sum, 0);
}

void metrics_reset(void) {
  for (size_t r = 0; r <= METRICS_ROUTES_MAX; r++) {
    for (size_t i = 0; i < METRICS_STATUS_SLOTS; i++) {
      atomic_store(&routes[r].slots[i].key, 0);
      atomic_store(&routes[r].slots[i].count, 0);
    }
    atomic_store(&routes[r].overflow, 0);
    clear_histogram(&routes[r].duration);
  }
  table.count = table.given = 0;
  atomic_store(&hot.connections, 0);
  atomic_store(&hot.auth_failures, 0);
  atomic_store(&hot.redelivered, 0);
  for (size_t i = 0; i < METRICS_LIMIT_N; i++) atomic_store(&hot.rate_limited[i], 0);
  for (size_t i = 0; i < METRICS_SOURCE_N; i++) atomic_store(&hot.accepted[i], 0);
  for (size_t i = 0; i < METRICS_STORE_ERROR_N; i++) atomic_store(&hot.store_errors[i], 0);
  for (size_t i = 0; i < METRICS_DELIVERY_N; i++) atomic_store(&hot.deliveries[i], 0);
  clear_histogram(&hot.commit_size);
  clear_histogram(&hot.commit_duration);
}

/* ---------------- rendering ---------------- */

static void head(FILE *f, const char *name, const char *type, const char *help) {
  fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the text format wants it: backslash, quote and newline escaped. */
static void label_value(FILE *f, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      fprintf(f, "\\%c", *v);
    else if (*v == '\n')
      fputs("\\n", f);
    else
      fputc(*v, f);
  }
}

static const char *route_label(size_t r) {
  return r < METRICS_ROUTES_MAX ? table.names[r] : "unmatched";
}

/* A number in the text format: integers exactly, other values with enough digits. */
static void number(FILE *f, double v) {
  if (v < 1e15 && v > -1e15 && v == (double)(int64_t)v)
    fprintf(f, "%" PRId64, (int64_t)v);
  else
    fprintf(f, "%.9g", v);
}

/* name_bucket{labels,le=...}, name_sum and name_count; labels "" or `route="..."` without
 * the braces (already escaped). */
static void histogram(FILE *f, const char *name, const char *labels, struct histogram *h,
                      const struct buckets *b) {
  uint64_t cum = 0;
  const char *sep = *labels ? "," : "";
  for (size_t i = 0; i <= b->n; i++) {
    cum += get(&h->count[i]);
    fprintf(f, "%s_bucket{%s%sle=\"", name, labels, sep);
    if (i < b->n)
      number(f, (double)b->le[i] * b->scale);
    else
      fputs("+Inf", f);
    fprintf(f, "\"} %" PRIu64 "\n", cum);
  }
  fprintf(f, "%s_sum%s%s%s ", name, *labels ? "{" : "", labels, *labels ? "}" : "");
  number(f, (double)get(&h->sum) * b->scale);
  fprintf(f, "\n%s_count%s%s%s %" PRIu64 "\n", name, *labels ? "{" : "", labels, *labels ? "}" : "",
          cum);
}

static void counter_family(FILE *f, const char *name, const char *help, const char *label,
                           const char *const *names, _Atomic uint64_t *values, size_t n) {
  head(f, name, "counter", help);
  for (size_t i = 0; i < n; i++)
    fprintf(f, "%s{%s=\"%s\"} %" PRIu64 "\n", name, label, names[i], get(&values[i]));
}

static bool route_used(size_t r) {
  if (get(&routes[r].overflow)) return true;
  for (size_t i = 0; i < METRICS_STATUS_SLOTS; i++)
    if (atomic_load_explicit(&routes[r].slots[i].key, memory_order_acquire)) return true;
  return false;
}

static void render_http(FILE *f) {
  size_t order[METRICS_ROUTES_MAX + 1], n = 0;
  for (size_t r = 0; r < table.count; r++) order[n++] = r;
  order[n++] = METRICS_ROUTES_MAX;
  head(f, "gensendrep_http_requests_total", "counter",
       "HTTP requests by route pattern, method and status (0: ended without an answer). A "
       "known path asked with a method it does not take (405, OPTIONS) counts under its "
       "route; a request refused before its headers reached the application (e.g. 431) has "
       "method \"other\": libmicrohttpd does not tell the method then.");
  for (size_t i = 0; i < n; i++) {
    struct route_metrics *r = &routes[order[i]];
    for (size_t j = 0; j < METRICS_STATUS_SLOTS; j++) {
      uint32_t key = atomic_load_explicit(&r->slots[j].key, memory_order_acquire);
      if (!key) continue;
      fputs("gensendrep_http_requests_total{route=\"", f);
      label_value(f, route_label(order[i]));
      fprintf(f, "\",method=\"%s\",status=\"%u\"} %" PRIu64 "\n", methods[(key >> 16) - 1],
              key & 0xffff, get(&r->slots[j].count));
    }
    uint64_t over = get(&r->overflow);
    if (over) {
      fputs("gensendrep_http_requests_total{route=\"", f);
      label_value(f, route_label(order[i]));
      fprintf(f, "\",method=\"other\",status=\"other\"} %" PRIu64 "\n", over);
    }
  }
  head(f, "gensendrep_http_request_duration_seconds", "histogram",
       "Time from the request's headers to its end, by route pattern.");
  for (size_t i = 0; i < n; i++) {
    if (!route_used(order[i])) continue;
    char *labels = NULL;
    size_t len = 0;
    FILE *l = open_memstream(&labels, &len);
    if (!l) continue;
    fputs("route=\"", l);
    label_value(l, route_label(order[i]));
    fputc('"', l);
    if (fclose(l) == 0 && labels)
      histogram(f, "gensendrep_http_request_duration_seconds", labels, &routes[order[i]].duration,
                &http_buckets);
    free(labels);
  }
}

void metrics_render(FILE *f, const struct metrics_gauges *g) {
  render_http(f);
  head(f, "gensendrep_connections", "gauge", "Client connections open now.");
  fprintf(f, "gensendrep_connections %" PRId64 "\n",
          atomic_load_explicit(&hot.connections, memory_order_relaxed));
  head(f, "gensendrep_auth_failures_total", "counter",
       "Requests answered 401 or 403 (no valid key or signature, or a key without the scope).");
  fprintf(f, "gensendrep_auth_failures_total %" PRIu64 "\n", get(&hot.auth_failures));
  counter_family(f, "gensendrep_rate_limited_total",
                 "Requests refused 429, by limit (webhook: per client address; api: per API key, "
                 "or per client address for a request without a valid key; elevenlabs: "
                 "validly signed ElevenLabs webhooks per secret).",
                 "limit", limit_names, hot.rate_limited, METRICS_LIMIT_N);
  counter_family(f, "gensendrep_webhooks_accepted_total",
                 "Webhooks answered 200 (stored, or a redelivery already stored), by source.",
                 "source", source_names, hot.accepted, METRICS_SOURCE_N);
  head(f, "gensendrep_webhooks_redelivered_total", "counter",
       "Accepted webhooks that changed nothing: byte-identical redeliveries.");
  fprintf(f, "gensendrep_webhooks_redelivered_total %" PRIu64 "\n", get(&hot.redelivered));
  head(f, "gensendrep_store_commit_batch_size", "histogram",
       "Writes per group commit of the store's writer (health's probe writes left out).");
  histogram(f, "gensendrep_store_commit_batch_size", "", &hot.commit_size, &batch_buckets);
  head(f, "gensendrep_store_commit_duration_seconds", "histogram",
       "Time the store's writer took per group commit (the transaction and its commit). "
       "PostgreSQL's outbox writer (subscriptions and delivery state) is timed too, a "
       "commit of one write each; health's probe writes are not counted.");
  histogram(f, "gensendrep_store_commit_duration_seconds", "", &hot.commit_duration,
            &commit_buckets);
  counter_family(f, "gensendrep_store_errors_total",
                 "Writes the store did not store, by kind (retry: transient, answered 503; "
                 "client: data the database refused, 400; hard: a bug or corruption, 500).",
                 "kind", store_error_names, hot.store_errors, METRICS_STORE_ERROR_N);
  counter_family(f, "gensendrep_deliveries_total",
                 "Webhook delivery attempts to subscriptions, by outcome.", "outcome",
                 delivery_names, hot.deliveries, METRICS_DELIVERY_N);
  if (g && g->has_backlog) {
    head(f, "gensendrep_outbox_backlog", "gauge",
         "Outbox events not yet delivered or published, as last read (a read-only count "
         "refreshed off the scrape path at most once a second: it lags a scrape). Each count "
         "stops at the store's cap (SQLite 100000, PostgreSQL 1000000): see "
         "gensendrep_outbox_backlog_capped.");
    fprintf(f, "gensendrep_outbox_backlog %" PRId64 "\n", g->outbox_backlog);
    head(f, "gensendrep_outbox_backlog_capped", "gauge",
         "1 when a count behind gensendrep_outbox_backlog reached the store's cap: the backlog "
         "is at least that value.");
    fprintf(f, "gensendrep_outbox_backlog_capped %d\n", g->outbox_backlog_capped ? 1 : 0);
  }
}
