/* The subscriber for `make bench`'s delivery scenario: libmicrohttpd (thread pool, epoll)
 * answering every POST 200 at once, recording for each the delivery lag = arrival time minus
 * the event's "timestamp" (when gensendrep stored it; both on this machine's clock). No
 * signature check: it stands for a receiver that is never the bottleneck.
 * GET /stats answers {"count":N,"p50_ms":..,"p99_ms":..,"max_ms":..}. */
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_LAGS (8u * 1024 * 1024)
#define HEAD 256 /* the event's first bytes: "timestamp" is among its first members */

static int64_t *lags; /* microseconds */
static atomic_uint nlags;
static atomic_ulong bad; /* bodies without a readable timestamp */

struct conn {
  char head[HEAD + 1];
  size_t len;
};

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* "2026-11-29T17:44:01.123456Z" -> microseconds since the epoch, or -1. */
static int64_t parse_ts(const char *s) {
  struct tm tm = {0};
  int us = 0;
  if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
             &tm.tm_min, &tm.tm_sec, &us) != 7)
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return (int64_t)timegm(&tm) * 1000000 + us;
}

static void record(const struct conn *c, int64_t at) {
  const char *p = strstr(c->head, "\"timestamp\":\"");
  int64_t ts = p ? parse_ts(p + 13) : -1;
  if (ts < 0) {
    atomic_fetch_add(&bad, 1);
    return;
  }
  unsigned i = atomic_fetch_add(&nlags, 1);
  if (i < MAX_LAGS) lags[i] = at - ts;
}

static int cmp(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static char *stats(void) {
  unsigned n = atomic_load(&nlags);
  if (n > MAX_LAGS) n = MAX_LAGS;
  int64_t *copy = malloc((n ? n : 1) * sizeof *copy);
  char *out = malloc(256);
  if (!copy || !out) {
    free(copy);
    free(out);
    return NULL;
  }
  memcpy(copy, lags, n * sizeof *copy);
  qsort(copy, n, sizeof *copy, cmp);
  double p50 = n ? copy[n / 2] / 1000.0 : 0, p99 = n ? copy[(size_t)(n * 0.99)] / 1000.0 : 0,
         max = n ? copy[n - 1] / 1000.0 : 0;
  snprintf(out, 256, "{\"count\":%u,\"bad\":%lu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}",
           n, atomic_load(&bad), p50, p99, max);
  free(copy);
  return out;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *data,
                                 size_t *size, void **state) {
  (void)cls, (void)url, (void)version;
  int post = strcmp(method, "POST") == 0;
  if (!*state) {
    struct conn *c = post ? calloc(1, sizeof *c) : NULL;
    *state = c ? (void *)c : (void *)conn;
    return MHD_YES;
  }
  if (*size) {
    struct conn *c = *state;
    if (!post || *state == (void *)conn) { /* a GET's body, or out of memory: ignored */
      *size = 0;
      return MHD_YES;
    }
    size_t take = *size < HEAD - c->len ? *size : HEAD - c->len;
    memcpy(c->head + c->len, data, take);
    c->len += take;
    c->head[c->len] = '\0';
    *size = 0;
    return MHD_YES;
  }
  struct MHD_Response *r;
  if (post) {
    if (*state != (void *)conn) record(*state, now_us());
    static const char ok[] = "ok";
    r = MHD_create_response_from_buffer(2, (void *)ok, MHD_RESPMEM_PERSISTENT);
  } else {
    char *s = stats();
    if (!s) return MHD_NO;
    r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
  }
  enum MHD_Result ret = MHD_queue_response(conn, 200, r);
  MHD_destroy_response(r);
  return ret;
}

static void on_done(void *cls, struct MHD_Connection *conn, void **state,
                    enum MHD_RequestTerminationCode code) {
  (void)cls, (void)code;
  if (*state && *state != (void *)conn) free(*state);
  *state = NULL;
}

int main(int argc, char **argv) {
  unsigned port = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 8098;
  lags = malloc(MAX_LAGS * sizeof *lags);
  if (!lags) return 1;
  struct MHD_Daemon *d = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, (uint16_t)port, NULL, NULL, on_access, NULL,
      MHD_OPTION_THREAD_POOL_SIZE, 2u, MHD_OPTION_CONNECTION_LIMIT, 4096u,
      MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_END);
  if (!d) {
    fprintf(stderr, "delivery_receiver: cannot listen on %u\n", port);
    return 1;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  int sig;
  sigwait(&set, &sig);
  MHD_stop_daemon(d);
  free(lags);
  return 0;
}
