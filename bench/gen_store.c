/* The store generator of `make bench`'s export and analytics scenarios: fills the store named by
 * a DATABASE_URL with COUNT conversations spread over the year GEN_YEAR (UTC), through the
 * server's own write path without HTTP: each webhook body is built as a client would send it,
 * parsed by the server's parsers (model_conversation_parse, model_elevenlabs_parse), hashed, and
 * handed to store_submit exactly as the webhook endpoints do (same store_write fields), so every
 * row (conversation, stored body, ElevenLabs event, audit entry, outbox event, and whatever the
 * store keeps inside a write's transaction, rollups included) is what the server itself would
 * store. Only the transport is skipped: no HTTP parsing, no wrk, no sockets. Rows are written in
 * the order of their calls' start times, as webhooks arrive in service.
 *
 * The mix (deterministic: row n's draws come from a generator seeded with SEED and n):
 *   - 72% seed-shaped webhooks (POST /api/v1/webhook/conversation): status completed, platform
 *     web / phone / ios / android / whatsapp, 2 to 4 transcript turns, metadata.messageCount
 *     and metadata.duration as a client reports them;
 *   - 27.5% ElevenLabs post_call_transcription events (POST /api/v1/webhook/elevenlabs): status
 *     done (completed) or failed, analysis.call_successful success / failure / unknown, one turn
 *     per message (the stored messageCount is the turns), the account and email in the dynamic
 *     variables (2% without an account);
 *   - 0.5% ElevenLabs call_initiation_failure events (status failed, a failure reason; they carry
 *     no start time, so their event time is when they were stored, i.e. when this ran).
 * 50 accounts of Zipf-like sizes, each with 1 to 4 agents; call times weighted by weekday and by
 * the hour of day (a business day in New York), the volume growing by 60% over the year;
 * durations log-normal (median 150 s, 3 s to 1 h); about one message per 12 s of call.
 *
 * Usage: gen_store DATABASE_URL COUNT [SEED]: progress on stderr; exit 0 once every write is
 * committed, 1 on any failure. GEN_THREADS (default 2) threads build and parse. gen_store --body N
 * [SEED] prints row N's endpoint and body (bench/run.py posts a few over HTTP to a fresh server
 * and checks that GET shows the same as for the generated rows). */
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "core/log.h"
#include "ext/crypto.h"
#include "model/conversation.h"
#include "model/elevenlabs.h"
#include "store/store.h"

#define GEN_YEAR_START 1735689600LL /* 2025-01-01T00:00:00Z */
#define GEN_DAYS 365
#define WINDOW 4096 /* writes in flight (the writer takes up to its batch size at once) */
#define ACCOUNTS 50
#define BODY_MAX 16384

struct slot {
  struct store_write write;
  struct conversation_input conv; /* seed webhooks */
  struct el_event event;          /* ElevenLabs events */
  bool is_event;
  char body[BODY_MAX];
  size_t body_len;
  struct slot *next_free;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static struct slot *free_slots;
static int64_t failed, duplicates, done_count;
static int producers_done;

static void release(struct slot *s) {
  if (s->is_event)
    model_elevenlabs_free(&s->event);
  else
    model_conversation_free(&s->conv);
}

static void on_done(struct store_write *w, void *cls) {
  struct slot *s = cls;
  pthread_mutex_lock(&mu);
  if (w->status != STORE_OK) failed++;
  if (w->duplicate) duplicates++;
  done_count++;
  s->next_free = free_slots;
  free_slots = s;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
}

/* ---- deterministic randomness: splitmix64 over (seed, row, draw) ---- */
struct rng {
  uint64_t state;
};

static uint64_t next_u64(struct rng *r) {
  uint64_t z = (r->state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static double uniform(struct rng *r) { return (double)(next_u64(r) >> 11) / 9007199254740992.0; }

static int below(struct rng *r, int n) { return (int)(uniform(r) * n); }

static double normal(struct rng *r) {
  double u1 = uniform(r), u2 = uniform(r);
  if (u1 < 1e-12) u1 = 1e-12;
  return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

/* Draws an index from cumulative weights cum[0..n) (cum[n-1] the total). */
static int pick(struct rng *r, const double *cum, int n) {
  double x = uniform(r) * cum[n - 1];
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (cum[mid] > x)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

static double account_cum[ACCOUNTS];
static double hour_cum[24];

static void init_tables(void) {
  double t = 0;
  for (int i = 0; i < ACCOUNTS; i++) account_cum[i] = t += 1.0 / pow(i + 1, 1.1);
  /* Calls per hour of the New York day (UTC-5 in these weights: close enough for a shape). */
  static const double ny[24] = {0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1.2, 2.5, 3.5, 3.8, 3.6,
                                3.2, 3.4, 3.6, 3.4, 3.0, 2.4, 1.8, 1.4, 1.1, 0.8, 0.5, 0.3};
  t = 0;
  for (int h = 0; h < 24; h++) hour_cum[h] = t += ny[(h + 19) % 24]; /* UTC hour h = NY h-5 */
}

/* A call's start, UTC seconds: a day of the year (weekends at 45%, growing volume), an hour. */
static int64_t draw_start(struct rng *r) {
  for (;;) {
    int day = below(r, GEN_DAYS);
    int weekday = (day + 3) % 7; /* 2025-01-01 was a Wednesday; 0 = Monday */
    double keep = (0.625 + 0.375 * day / GEN_DAYS) * (weekday >= 5 ? 0.45 : 1.0);
    if (uniform(r) >= keep) continue;
    int hour = pick(r, hour_cum, 24);
    return GEN_YEAR_START + (int64_t)day * 86400 + hour * 3600 + below(r, 3600);
  }
}

static void iso(int64_t secs, char *buf, size_t cap) {
  time_t t = (time_t)secs;
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *const sentences[] = {
    "Hi, thanks for calling. How can I help you today?",
    "I was charged twice for my subscription this month.",
    "Let me look into that for you, one moment please.",
    "Could you confirm the email address on the account?",
    "Sure, it is the one I signed up with last year.",
    "Thanks, I can see the duplicate payment now.",
    "I have opened a refund, it takes three to five days.",
    "Is there anything else I can help you with?",
    "No, that was all. Thank you very much.",
    "You are welcome, have a great day!",
};
#define NSENTENCES (sizeof sentences / sizeof sentences[0])

#define APPEND(...)                                                      \
  do {                                                                   \
    int n_ = snprintf(s->body + len, sizeof s->body - len, __VA_ARGS__); \
    if (n_ < 0 || (size_t)n_ >= sizeof s->body - len) return false;      \
    len += (size_t)n_;                                                   \
  } while (0)

static const char *const platforms[] = {"web", "phone", "ios", "android", "whatsapp"};
static const double platform_cum[] = {45, 75, 85, 95, 100};
static const char *const reasons[] = {"busy", "no-answer", "unknown"};

/* Builds row n's webhook body into s->body; *is_event: an ElevenLabs event. */
static struct rng row_rng(int64_t n, uint64_t seed) {
  return (struct rng){seed * 0x100000001B3ULL ^ (uint64_t)n * 0x9E3779B97F4A7C15ULL};
}

static bool build(struct slot *s, int64_t n, uint64_t seed) {
  struct rng r = row_rng(n, seed);
  size_t len = 0;
  int account = pick(&r, account_cum, ACCOUNTS);
  int agent = below(&r, 1 + account % 4);
  int user = below(&r, 200000);
  int64_t start = draw_start(&r);
  double d = exp(log(150.0) + 0.8 * normal(&r));
  int64_t duration = d < 3 ? 3 : d > 3600 ? 3600 : (int64_t)d;
  int64_t messages = duration / 12 + 1 + below(&r, 4);
  double kind = uniform(&r);
  char ts[32];
  if (kind < 0.72) { /* a seed-shaped webhook */
    s->is_event = false;
    const char *platform = platforms[pick(&r, platform_cum, 5)];
    int turns = messages < 4 ? (int)messages : 2 + below(&r, 3);
    APPEND(
        "{\"emailId\":\"user%d@example.com\",\"accountId\":\"acc_%02d\",\"conversationId\":"
        "\"gen_%07" PRId64 "\",\"transcript\":[",
        user, account, n);
    for (int i = 0; i < turns; i++) {
      iso(start + duration * i / (turns > 1 ? turns : 1), ts, sizeof ts);
      APPEND(
          "%s{\"timestamp\":\"%s\",\"speaker\":\"%s\",\"content\":\"%s\",\"messageId\":"
          "\"msg_%d\"}",
          i ? "," : "", ts, i % 2 ? "user" : "agent", sentences[(n + i) % NSENTENCES], i + 1);
    }
    APPEND("],\"metadata\":{\"sessionId\":\"sess_%07" PRId64
           "\",\"agentId\":\"agent_%02d_%d\",\"duration\":%" PRId64 ",\"messageCount\":%" PRId64
           ",\"platform\":\"%s\",\"userAgent\":\"Mozilla/5.0 (X11; Linux x86_64)\"}}",
           n, account, agent, duration, messages, platform);
  } else if (kind < 0.995) { /* an ElevenLabs post_call_transcription */
    s->is_event = true;
    bool call_failed = uniform(&r) < 0.08;
    double o = uniform(&r);
    const char *outcome = call_failed ? "failure"
                          : o < 0.78  ? "success"
                          : o < 0.93  ? "failure"
                                      : "unknown";
    if (messages > 60) messages = 60;
    APPEND("{\"type\":\"post_call_transcription\",\"event_timestamp\":%" PRId64
           ",\"data\":{\"agent_id\":\"agent_%02d_%d\",\"conversation_id\":\"gen_%07" PRId64
           "\",\"status\":\"%s\",\"transcript\":[",
           start + duration + 2, account, agent, n, call_failed ? "failed" : "done");
    for (int64_t i = 0; i < messages; i++)
      APPEND("%s{\"role\":\"%s\",\"message\":\"%s\",\"time_in_call_secs\":%" PRId64 "}",
             i ? "," : "", i % 2 ? "user" : "agent", sentences[(n + i) % NSENTENCES],
             duration * i / messages);
    APPEND("],\"metadata\":{\"start_time_unix_secs\":%" PRId64 ",\"call_duration_secs\":%" PRId64
           ",\"termination_reason\":\"%s\"},\"analysis\":{\"call_successful\":\"%s\","
           "\"transcript_summary\":\"The caller asked about a duplicate charge.\"},"
           "\"conversation_initiation_client_data\":{\"dynamic_variables\":{\"user_email\":"
           "\"user%d@example.com\"",
           start, duration, call_failed ? "error" : "end_call tool was called", outcome, user);
    if (uniform(&r) >= 0.02) APPEND(",\"account_id\":\"acc_%02d\"", account);
    APPEND("}}}}");
  } else { /* an ElevenLabs call_initiation_failure */
    s->is_event = true;
    APPEND("{\"type\":\"call_initiation_failure\",\"event_timestamp\":%" PRId64
           ",\"data\":{\"agent_id\":\"agent_%02d_%d\",\"conversation_id\":\"gen_%07" PRId64
           "\",\"failure_reason\":\"%s\",\"metadata\":{\"type\":\"sip\",\"body\":"
           "{\"sip_status_code\":486,\"sip_status\":\"Busy Here\"}}}}",
           start, account, agent, n, reasons[below(&r, 3)]);
  }
  s->body_len = len;
  return true;
}

static bool submit(struct store *store, struct slot *s, int64_t n) {
  json_t *problems = NULL;
  char message[256];
  struct store_write *w = &s->write;
  memset(w, 0, sizeof *w);
  w->audio_fd = -1;
  w->event_audio_at = -1;
  if (s->is_event) {
    struct el_names names = {"user_email", "account_id"};
    if (model_elevenlabs_parse(s->body, s->body_len, &names, &s->event, &problems, message,
                               sizeof message) != MODEL_OK ||
        !s->event.derived) {
      fprintf(stderr, "gen_store: row %" PRId64 " refused: %s\n", n, message);
      json_decref(problems);
      return false;
    }
    w->kind = STORE_WRITE_EVENT;
    w->event_type = s->event.type_name;
    w->event_conversation_id = s->event.conversation_id;
    w->event_body = s->body;
    w->event_body_len = s->body_len;
    crypto_sha256(s->body, s->body_len, w->event_sha256);
    w->conv = &s->event.conv;
    w->body = s->event.derived;
    w->body_len = s->event.derived_len;
  } else {
    if (model_conversation_parse(s->body, s->body_len, &s->conv, &problems, message,
                                 sizeof message) != MODEL_OK) {
      char *why = problems ? json_dumps(problems, JSON_COMPACT) : NULL;
      fprintf(stderr, "gen_store: row %" PRId64 " refused: %s %s\n", n, message, why ? why : "");
      free(why);
      json_decref(problems);
      return false;
    }
    w->kind = STORE_WRITE_CONVERSATION;
    w->conv = &s->conv;
    w->body = s->body;
    w->body_len = s->body_len;
  }
  crypto_sha256(w->body, w->body_len, w->body_sha256);
  char request_id[32];
  snprintf(request_id, sizeof request_id, "gen-%" PRId64, n);
  audit_who_set(&w->who, request_id, "bench-gen", "127.0.0.1");
  w->done = on_done;
  w->done_cls = s;
  store_submit(store, w);
  return true;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#define WRITERS_MAX 4

/* Row n's call start, as build draws it (the same first draws). */
static int64_t row_start(int64_t n, uint64_t seed) {
  struct rng r = row_rng(n, seed);
  (void)pick(&r, account_cum, ACCOUNTS);
  (void)below(&r, 1);
  (void)below(&r, 200000);
  return draw_start(&r);
}

struct timed_row {
  int64_t start, n;
};

static int by_start(const void *a, const void *b) {
  const struct timed_row *x = a, *y = b;
  if (x->start != y->start) return x->start < y->start ? -1 : 1;
  return (x->n > y->n) - (x->n < y->n);
}

/* Rows are written in the order their calls started, as live traffic arrives (a webhook comes
 * when its call ends): a store's rollup rows are then written hour after hour, as in service,
 * not in a random order of the year. */
static int64_t *write_order;

struct producer {
  struct store **stores;
  int nstores;
  int64_t first, count, step;
  uint64_t seed;
  bool ok;
};

/* Builds, parses and submits rows first, first + step, ... (several run at once: parsing costs
 * about as much CPU as the writer's work). */
static void *produce(void *p) {
  struct producer *pr = p;
  pr->ok = true;
  for (int64_t k = pr->first; k <= pr->count; k += pr->step) {
    int64_t n = write_order[k - 1];
    pthread_mutex_lock(&mu);
    while (!free_slots) pthread_cond_wait(&cv, &mu);
    struct slot *s = free_slots;
    free_slots = s->next_free;
    int64_t bad = failed;
    pthread_mutex_unlock(&mu);
    if (s->write.done) release(s);
    memset(&s->conv, 0, sizeof s->conv);
    memset(&s->event, 0, sizeof s->event);
    s->write.done = NULL;
    if (bad) {
      fprintf(stderr, "gen_store: the store refused a write\n");
      pr->ok = false;
      break;
    }
    if (!build(s, n, pr->seed) || !submit(pr->stores[n % pr->nstores], s, n)) {
      pr->ok = false;
      break;
    }
  }
  pthread_mutex_lock(&mu);
  producers_done++;
  pthread_mutex_unlock(&mu);
  return NULL;
}

static double cpu_s(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s DATABASE_URL COUNT [SEED]\n       %s --body N [SEED]\n", argv[0],
            argv[0]);
    return 2;
  }
  init_tables();
  if (strcmp(argv[1], "--body") == 0) { /* row N's webhook as a client would post it */
    static struct slot one;
    int64_t n = strtoll(argv[2], NULL, 10);
    if (!build(&one, n, argc > 3 ? strtoull(argv[3], NULL, 10) : 1)) return 1;
    printf("%s\n%.*s\n",
           one.is_event ? "/api/v1/webhook/elevenlabs" : "/api/v1/webhook/conversation",
           (int)one.body_len, one.body);
    return 0;
  }
  enum log_level level;
  if (getenv("LOG_LEVEL") && log_parse_level(getenv("LOG_LEVEL"), &level)) log_set_level(level);
  int64_t count = strtoll(argv[2], NULL, 10);
  uint64_t seed = argc > 3 ? strtoull(argv[3], NULL, 10) : 1;
  int nthreads = getenv("GEN_THREADS") ? atoi(getenv("GEN_THREADS")) : 2;
  if (nthreads < 1 || nthreads > 16) nthreads = 2;
  /* PostgreSQL takes writes from several connections at once (each store has one writer);
   * SQLite has one writer whatever we do. */
  bool pg = strncmp(argv[1], "postgres", 8) == 0;
  int nstores = getenv("GEN_WRITERS") ? atoi(getenv("GEN_WRITERS")) : pg ? 2 : 1;
  if (nstores < 1 || nstores > WRITERS_MAX || !pg) nstores = 1;
  struct store *stores[WRITERS_MAX];
  for (int i = 0; i < nstores; i++) {
    char err[512] = "";
    stores[i] = store_open(argv[1], err, sizeof err);
    if (!stores[i]) {
      fprintf(stderr, "gen_store: %s\n", err);
      return 1;
    }
  }
  struct timed_row *rows = malloc((size_t)(count > 0 ? count : 1) * sizeof *rows);
  write_order = malloc((size_t)(count > 0 ? count : 1) * sizeof *write_order);
  if (!rows || !write_order) return 1;
  for (int64_t n = 1; n <= count; n++) rows[n - 1] = (struct timed_row){row_start(n, seed), n};
  qsort(rows, (size_t)(count > 0 ? count : 0), sizeof *rows, by_start);
  for (int64_t k = 0; k < count; k++) write_order[k] = rows[k].n;
  free(rows);
  struct slot *slots = calloc(WINDOW, sizeof *slots);
  if (!slots) return 1;
  for (int i = 0; i < WINDOW; i++) {
    slots[i].next_free = free_slots;
    free_slots = &slots[i];
  }
  double t0 = now_s();
  struct producer pr[16];
  pthread_t th[16];
  for (int i = 0; i < nthreads; i++) {
    pr[i] = (struct producer){stores, nstores, 1 + i, count, nthreads, seed, false};
    if (pthread_create(&th[i], NULL, produce, &pr[i]) != 0) return 1;
  }
  for (;;) { /* progress */
    struct timespec nap = {1, 0};
    nanosleep(&nap, NULL);
    pthread_mutex_lock(&mu);
    int64_t d = done_count;
    bool producing = producers_done < nthreads;
    pthread_mutex_unlock(&mu);
    if (!producing) break;
    static double last;
    double t = now_s();
    if (t - last >= 5) {
      last = t;
      fprintf(stderr, "gen_store: %" PRId64 " of %" PRId64 " stored (%.0f/s)\n", d, count,
              d / (t - t0));
    }
  }
  bool ok = true;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(th[i], NULL);
    ok &= pr[i].ok;
  }
  for (int i = 0; i < nstores; i++) store_close(stores[i]); /* drains every write in flight */
  double t = now_s() - t0;
  double all_cpu = cpu_s(CLOCK_PROCESS_CPUTIME_ID);
  for (int i = 0; i < WINDOW; i++)
    if (slots[i].write.done) release(&slots[i]);
  free(slots);
  fprintf(stderr,
          "gen_store: %" PRId64 " writes in %.1f s (%.0f/s), %" PRId64 " failed, %" PRId64
          " duplicates; CPU %.1f s (every thread: building, parsing, the store)\n",
          done_count, t, done_count / t, failed, duplicates, all_cpu);
  return ok && !failed && done_count == count ? 0 : 1;
}
