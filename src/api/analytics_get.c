/* GET /api/v1/analytics?from=&to=&account_id=&agent_id=&platform=&status=&interval=&tz=: totals,
 * breakdowns and a series of the conversations whose event time (start time, else processed
 * time) is in [from, to), answered from the store's rollups (store.h analytics_scan) and shaped by
 * model/analytics.h. Defaults: to now, from 30 days before to, interval day, tz UTC. A key bound
 * to accounts sees only those (an account_id outside them counts nothing, as the list finds
 * nothing). Loading the zone, the cuts and the scan run on an offload thread: the zone is a file
 * and the database may be slow. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/timeutil.h"
#include "core/tz.h"
#include "core/utf8.h"
#include "model/analytics.h"

#define DEFAULT_RANGE_US (30LL * 86400 * 1000000)

enum job_outcome {
  JOB_OK,
  JOB_BAD_TZ,
  JOB_TOO_MANY_POINTS,
  JOB_FROM_OUT_OF_RANGE,
  JOB_TO_OUT_OF_RANGE,
  JOB_NO_MEMORY,
  JOB_STORE
};

/* Jobs running or queued: at most a quarter of OFFLOAD_QUEUE (exports may hold half), so a burst
 * of analytics requests cannot take the queue from everything else. */
static atomic_long analytics_running;

/* Longer than any zone name (IANA's longest is 32 bytes). */
#define TZ_PARAM_MAX 127

struct analytics_job {
  struct store *store;
  char tz_name[TZ_PARAM_MAX + 1];
  enum tz_interval iv;
  struct store_analytics_query q; /* strings are the request's query values */
  /* result */
  enum job_outcome outcome;
  enum store_status status; /* JOB_STORE */
  char *out;                /* rendered answer (owned) */
  size_t out_len;
};

static void job_free(void *p) {
  struct analytics_job *job = p;
  atomic_fetch_sub(&analytics_running, 1);
  free(job->out);
  free(job);
}

struct scan_ctx {
  struct analytics *a;
  bool no_memory;
  struct store *store;
  enum store_status status; /* of a failed account name */
};

static void on_cell(void *cls, const struct store_cell *cell) {
  struct scan_ctx *ctx = cls;
  if (ctx->no_memory) return;
  struct analytics_cell c = {
      .at_us = cell->at_us,
      .conversations = cell->conversations,
      .messages = cell->messages,
      .duration_sum = cell->duration_sum,
      .hist = cell->has_hist ? cell->hist : NULL,
  };
  switch (cell->kind) {
    case STORE_CELL_FULL:
      c.kind = ANALYTICS_CELL_FULL;
      break;
    case STORE_CELL_TOTAL:
      c.kind = ANALYTICS_CELL_TOTAL;
      break;
    case STORE_CELL_DIM:
      c.kind = ANALYTICS_CELL_DIM;
      break;
  }
  switch (cell->dim) {
    case STORE_DIM_ACCOUNT:
      c.dim = ANALYTICS_DIM_ACCOUNT;
      break;
    case STORE_DIM_AGENT:
      c.dim = ANALYTICS_DIM_AGENT;
      break;
    case STORE_DIM_PLATFORM:
      c.dim = ANALYTICS_DIM_PLATFORM;
      break;
    case STORE_DIM_STATUS:
      c.dim = ANALYTICS_DIM_STATUS;
      break;
    case STORE_DIM_OUTCOME:
      c.dim = ANALYTICS_DIM_OUTCOME;
      break;
    case STORE_DIM_COUNT:
      c.dim = ANALYTICS_DIM_COUNT;
      break;
  }
  c.value[ANALYTICS_DIM_ACCOUNT] = cell->value[STORE_DIM_ACCOUNT];
  c.value[ANALYTICS_DIM_AGENT] = cell->value[STORE_DIM_AGENT];
  c.value[ANALYTICS_DIM_PLATFORM] = cell->value[STORE_DIM_PLATFORM];
  c.value[ANALYTICS_DIM_STATUS] = cell->value[STORE_DIM_STATUS];
  c.value[ANALYTICS_DIM_OUTCOME] = cell->value[STORE_DIM_OUTCOME];
  if (!analytics_add(ctx->a, &c)) ctx->no_memory = true;
}

#define NAME_STORE_ERROR 2

static int name_accounts(void *cls, const char *const *stored, size_t n, char **names) {
  struct scan_ctx *ctx = cls;
  enum store_status st = ctx->store->ops->analytics_account_names(ctx->store, stored, n, names);
  if (st == STORE_OK) return 0;
  ctx->status = st;
  return NAME_STORE_ERROR;
}

/* Offload thread. */
static void analytics_work(void *p) {
  struct analytics_job *job = p;
  struct tz *z = tz_load(job->tz_name);
  if (!z) {
    job->outcome = JOB_BAD_TZ;
    return;
  }
  struct scan_ctx ctx = {.store = job->store};
  enum analytics_result made =
      analytics_new(z, job->iv, job->q.from_us, job->q.to_us, ANALYTICS_POINTS_MAX, &ctx.a);
  switch (made) {
    case ANALYTICS_OK:
      break;
    case ANALYTICS_TOO_MANY_POINTS:
      job->outcome = JOB_TOO_MANY_POINTS;
      tz_free(z);
      return;
    case ANALYTICS_NO_MEMORY:
      job->outcome = JOB_NO_MEMORY;
      tz_free(z);
      return;
    case ANALYTICS_FROM_OUT_OF_RANGE:
    case ANALYTICS_TO_OUT_OF_RANGE:
      job->outcome =
          made == ANALYTICS_FROM_OUT_OF_RANGE ? JOB_FROM_OUT_OF_RANGE : JOB_TO_OUT_OF_RANGE;
      tz_free(z);
      return;
  }
  job->q.cuts = analytics_cuts(ctx.a, &job->q.ncuts);
  job->status = job->store->ops->analytics_scan(job->store, &job->q, on_cell, &ctx);
  if (job->status != STORE_OK) {
    job->outcome = JOB_STORE;
  } else if (ctx.no_memory) {
    job->outcome = JOB_NO_MEMORY;
  } else {
    int rc = analytics_render(ctx.a, job->tz_name, name_accounts, &ctx, &job->out, &job->out_len);
    if (rc == NAME_STORE_ERROR) {
      job->outcome = JOB_STORE;
      job->status = ctx.status;
    } else if (rc != 0) {
      job->outcome = JOB_NO_MEMORY;
    }
  }
  analytics_free(ctx.a);
  tz_free(z);
}

static void on_resume(struct http_request *req) {
  struct analytics_job *job = http_request_state(req);
  switch (job->outcome) {
    case JOB_OK:
      http_reply_json_text(req, 200, job->out, job->out_len);
      job->out = NULL; /* the reply owns it */
      return;
    case JOB_BAD_TZ:
      api_bad_param(req, "tz", "must be an IANA time zone name such as UTC or Europe/Berlin");
      return;
    case JOB_TOO_MANY_POINTS:
      api_bad_param(req, "interval",
                    "makes more than 10000 series points from from to to: choose a longer "
                    "interval or a shorter range");
      return;
    case JOB_FROM_OUT_OF_RANGE:
      api_bad_param(req, "from",
                    "makes the first interval start before 0001-01-01 in the time zone tz");
      return;
    case JOB_TO_OUT_OF_RANGE:
      api_bad_param(req, "to",
                    "makes the last interval start after 9999-12-31 in the time zone tz");
      return;
    case JOB_NO_MEMORY:
      http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
      return;
    case JOB_STORE:
      break;
  }
  if (job->status == STORE_CLIENT) {
    http_reply_error(req, API_ERR_INVALID_PARAMETER,
                     "A filter holds bytes the database cannot compare (it must be valid UTF-8)",
                     NULL);
    return;
  }
  http_reply_error(req, job->status == STORE_RETRY ? API_ERR_UNAVAILABLE : API_ERR_INTERNAL, NULL,
                   NULL);
}

/* An optional filter: valid UTF-8 without NUL (any bytes but those may be compared). */
static bool filter_ok(struct http_request *req, const char *name, const char **out) {
  *out = http_request_query(req, name);
  if (*out && !utf8_valid(*out, strlen(*out))) {
    api_bad_param(req, name, "must be valid UTF-8");
    return false;
  }
  return true;
}

static const char *const known_params[] = {"from",       "to",       "interval", "tz",
                                           "account_id", "agent_id", "platform", "status"};

/* Every parameter is one of known_params, given with a value: a misspelt filter (accountId=)
 * would otherwise answer company-wide numbers that look filtered. */
static bool params_known(struct http_request *req) {
  for (size_t i = 0; i < http_request_query_count(req); i++) {
    const char *value;
    const char *name = http_request_query_at(req, i, &value);
    bool known = false;
    for (size_t k = 0; k < sizeof known_params / sizeof *known_params; k++)
      known = known || strcmp(name, known_params[k]) == 0;
    if (known && value) continue;
    /* named in the answer: valid UTF-8, at most 64 bytes */
    char field[64 + 1];
    size_t len = strlen(name);
    utf8_sanitize(field, sizeof field, name, len < 64 ? len : 64);
    if (known)
      api_bad_param(req, field, "needs a value (name=value)");
    else if (!*name)
      http_reply_error(req, API_ERR_INVALID_PARAMETER, "A query parameter has an empty name",
                       json_pack("[{s:s,s:s}]", "field", "", "issue", "has an empty name"));
    else
      api_bad_param(req, field,
                    "is not a parameter of this endpoint (from, to, interval, tz, account_id, "
                    "agent_id, platform, status)");
    return false;
  }
  return true;
}

void api_analytics_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  struct store_analytics_query q = {0};
  if (!params_known(req)) return;
  if (!filter_ok(req, "account_id", &q.account_id) || !filter_ok(req, "agent_id", &q.agent_id) ||
      !filter_ok(req, "platform", &q.platform) || !filter_ok(req, "status", &q.status))
    return;
  bool has_from, has_to;
  if (!api_query_instant(http_request_query(req, "from"), &has_from, &q.from_us)) {
    api_bad_param(req, "from", "must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z");
    return;
  }
  if (!api_query_instant(http_request_query(req, "to"), &has_to, &q.to_us)) {
    api_bad_param(req, "to", "must be an RFC 3339 date-time such as 2026-02-01T00:00:00+01:00");
    return;
  }
  if (!has_to) q.to_us = time_now_us();
  if (!has_from)
    q.from_us = q.to_us - DEFAULT_RANGE_US > TIME_MIN_US ? q.to_us - DEFAULT_RANGE_US : TIME_MIN_US;
  if (q.from_us >= q.to_us) {
    api_bad_param(req, "from", "must be before to (to defaults to now)");
    return;
  }
  const char *interval = http_request_query(req, "interval");
  enum tz_interval iv = TZ_DAY;
  if (interval && strcmp(interval, "hour") == 0) {
    iv = TZ_HOUR;
  } else if (interval && strcmp(interval, "week") == 0) {
    iv = TZ_WEEK;
  } else if (interval && strcmp(interval, "day") != 0) {
    api_bad_param(req, "interval", "must be hour, day or week");
    return;
  }
  const char *tz_name = http_request_query(req, "tz");
  if (!tz_name) tz_name = "UTC";
  if (strlen(tz_name) > TZ_PARAM_MAX) {
    api_bad_param(req, "tz", "must be an IANA time zone name such as UTC or Europe/Berlin");
    return;
  }
  long most = app->cfg->offload_queue / 4 > 0 ? app->cfg->offload_queue / 4 : 1;
  if (atomic_fetch_add(&analytics_running, 1) >= most) {
    atomic_fetch_sub(&analytics_running, 1);
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE,
                     "Too many analytics requests are running (at most a quarter of "
                     "OFFLOAD_QUEUE at once); retry",
                     NULL);
    return;
  }
  struct analytics_job *job = calloc(1, sizeof *job);
  if (!job) {
    atomic_fetch_sub(&analytics_running, 1);
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->store = app->store;
  /* An unencoded '+' (Etc/GMT+5) arrives as a space (form encoding); no zone name has one. */
  for (size_t i = 0; tz_name[i]; i++) job->tz_name[i] = tz_name[i] == ' ' ? '+' : tz_name[i];
  job->iv = iv;
  /* A key bound to accounts sees only those: an account_id outside them counts nothing. */
  q.accounts = http_request_accounts(req, &q.naccounts);
  job->q = q;
  http_request_offload(req, analytics_work, on_resume, job, job_free);
}
