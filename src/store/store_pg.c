/* PostgreSQL backend (libpq). Like SQLite: one writer thread commits queued writes in batches
 * (one COMMIT, synchronous_commit=on, per batch); each HTTP worker thread reads through its
 * own connection. Connections that break are dropped and made again on next use, so the
 * service answers 503 while PostgreSQL is away and recovers by itself when it is back.
 *
 * Several instances may write at once: each batch first takes transaction-scoped advisory
 * locks on its conversation ids (in sorted order, so batches never deadlock), so the
 * "same body, same webhookId" decision is made on the latest committed version. */
#include <endian.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/thread_slot.h"
#include "core/timeutil.h"
#include "ext/crypto.h"
#include "store/store.h"
#include "store/write_queue.h"

#define BATCH_MAX 256 /* one pipeline; its answers must fit the socket buffers */
#define LIST_VARIANTS 8
#define MIGRATION_LOCK_KEY 7261001 /* advisory lock serialising migrations */
#define RECONNECT_PAUSE_MS 1000
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25

struct pg_reader {
  PGconn *conn;
  unsigned prepared_lists; /* bit m: list<m> is prepared */
};

struct pg_store {
  struct store base;
  char *url;
  PGconn *writer_conn;
  pthread_t writer;
  bool writer_started;
  struct write_queue queue;
  struct thread_slot readers;     /* one struct pg_reader per calling thread */
  atomic_bool reported_down;      /* log "unreachable" once per outage, not per request */
  _Atomic int64_t retry_after_ms; /* no new connection attempt before this (monotonic ms) */
};

/* ---------- connections ---------- */

static void report_down(struct pg_store *s, PGconn *c) {
  if (!atomic_exchange(&s->reported_down, true))
    log_msg(LOG_ERROR, "postgresql unreachable: %s", c ? PQerrorMessage(c) : "out of memory");
}

static void report_up(struct pg_store *s) {
  if (atomic_exchange(&s->reported_down, false)) log_msg(LOG_INFO, "postgresql reachable again");
}

/* A new connection, or NULL (why, when given, says why). */
static PGconn *pg_connect(struct pg_store *s, char *why, size_t whylen) {
  /* After a failed attempt, requests answer 503 at once for a second instead of each spending
   * up to connect_timeout on a server that is away. */
  if ((int64_t)time_mono_ms() < atomic_load(&s->retry_after_ms)) {
    if (why) snprintf(why, whylen, "PostgreSQL was unreachable a moment ago");
    return NULL;
  }
  /* connect_timeout comes first so that one in DATABASE_URL wins. */
  /* Keepalives and a TCP user timeout notice a vanished server within seconds. */
  const char *keys[] = {"connect_timeout",  "keepalives_idle",  "keepalives_interval",
                        "keepalives_count", "tcp_user_timeout", "options",
                        "application_name", "dbname",           NULL};
  const char *vals[] = {"5",          "5",    "2", "3", "10000", "-c statement_timeout=15000",
                        "gensendrep", s->url, NULL};
  PGconn *c = PQconnectdbParams(keys, vals, 1);
  if (!c || PQstatus(c) != CONNECTION_OK) {
    if (why) snprintf(why, whylen, "%s", c ? PQerrorMessage(c) : "out of memory");
    report_down(s, c);
    PQfinish(c);
    atomic_store(&s->retry_after_ms, (int64_t)time_mono_ms() + RECONNECT_PAUSE_MS);
    return NULL;
  }
  report_up(s);
  return c;
}

static bool command_ok(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) log_msg(LOG_ERROR, "postgresql: %s", PQerrorMessage(c));
  PQclear(r);
  return ok;
}

static bool prepare(PGconn *c, const char *name, const char *sql, int nparams, const Oid *types) {
  PGresult *r = PQprepare(c, name, sql, nparams, types);
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) log_msg(LOG_ERROR, "postgresql prepare %s: %s", name, PQerrorMessage(c));
  PQclear(r);
  return ok;
}

/* A failed statement: transient (connection, resources, shutdown, lock) or a real fault. */
static enum store_status status_of(PGconn *c, const PGresult *r) {
  if (PQstatus(c) != CONNECTION_OK) return STORE_RETRY;
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (!state) return STORE_RETRY;
  static const char *const transient[] = {"08", "40", "53", "55", "57", "58"};
  for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
    if (strncmp(state, transient[i], 2) == 0) return STORE_RETRY;
  return STORE_HARD;
}

/* ---------- binary result helpers ---------- */

static int64_t get_i64(const PGresult *r, int row, int col) {
  uint64_t v;
  memcpy(&v, PQgetvalue(r, row, col), sizeof v);
  return (int64_t)be64toh(v);
}

static void get_text(const PGresult *r, int row, int col, char *dst, size_t cap) {
  size_t n = (size_t)PQgetlength(r, row, col);
  if (n >= cap) n = cap - 1;
  memcpy(dst, PQgetvalue(r, row, col), n);
  dst[n] = '\0';
}

/* ---------- migrations ---------- */

static bool record_migration(PGconn *c, const struct store_migration *m) {
  char version[16], at[24];
  snprintf(version, sizeof version, "%d", m->version);
  snprintf(at, sizeof at, "%lld", (long long)time_now_us());
  const char *vals[] = {version, m->name, at};
  PGresult *r = PQexecParams(c,
                             "INSERT INTO schema_migrations (version, name, applied_at_us) "
                             "VALUES ($1, $2, $3)",
                             3, NULL, vals, NULL, NULL, 0);
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  return ok;
}

static bool migrate(PGconn *c, char *err, size_t errlen) {
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%d)", MIGRATION_LOCK_KEY);
  if (!command_ok(c, sql)) {
    snprintf(err, errlen, "DATABASE_URL: postgresql: %s", PQerrorMessage(c));
    return false;
  }
  bool ok = command_ok(c,
                       "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                       "name TEXT NOT NULL, applied_at_us BIGINT NOT NULL)");
  PGresult *r = ok ? PQexec(c, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations") : NULL;
  long have =
      r && PQresultStatus(r) == PGRES_TUPLES_OK ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : -1;
  PQclear(r);
  ok = ok && have >= 0;
  for (size_t i = 0; ok && i < store_migrations_pg_count; i++) {
    const struct store_migration *m = &store_migrations_pg[i];
    if (m->version <= have) continue;
    ok = command_ok(c, "BEGIN") && command_ok(c, m->sql) && record_migration(c, m) &&
         command_ok(c, "COMMIT");
    if (ok) log_msg(LOG_INFO, "applied migration %04d_%s", m->version, m->name);
  }
  if (!ok) {
    snprintf(err, errlen, "DATABASE_URL: postgresql migration failed: %s", PQerrorMessage(c));
    (void)command_ok(c, "ROLLBACK");
  }
  snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%d)", MIGRATION_LOCK_KEY);
  (void)command_ok(c, sql);
  return ok;
}

/* ---------- the writer ---------- */

static const char upsert_sql[] =
    "WITH cur AS ("
    "  SELECT webhook_id, body_sha256, processed_at_us FROM conversations"
    "  WHERE conversation_id = $1"
    "), ins AS ("
    "  INSERT INTO deliveries (webhook_id, conversation_id, received_at_us, body_sha256, body)"
    "  SELECT $7, $1, $8, $9, $10 WHERE NOT EXISTS (SELECT 1 FROM cur WHERE body_sha256 = $9)"
    "  RETURNING id"
    "), up AS ("
    "  INSERT INTO conversations (conversation_id, email_id, account_id, status, start_time_us,"
    "    duration, message_count, processed_at_us, webhook_id, body_sha256, delivery_id)"
    "  SELECT $1, $2, $3, 'completed', $4, $5, $6, $8, $7, $9, id FROM ins"
    "  ON CONFLICT (conversation_id) DO UPDATE SET email_id = EXCLUDED.email_id,"
    "    account_id = EXCLUDED.account_id, status = EXCLUDED.status,"
    "    start_time_us = EXCLUDED.start_time_us, duration = EXCLUDED.duration,"
    "    message_count = EXCLUDED.message_count, processed_at_us = EXCLUDED.processed_at_us,"
    "    webhook_id = EXCLUDED.webhook_id, body_sha256 = EXCLUDED.body_sha256,"
    "    delivery_id = EXCLUDED.delivery_id"
    ") "
    "SELECT webhook_id, processed_at_us, true FROM cur WHERE body_sha256 = $9 "
    "UNION ALL SELECT $7, $8, false FROM ins";

static bool prepare_writer(PGconn *c) {
  static const Oid upsert_types[] = {OID_TEXT, OID_TEXT, OID_TEXT, OID_INT8,  OID_INT8,
                                     OID_INT8, OID_TEXT, OID_INT8, OID_BYTEA, OID_BYTEA};
  static const Oid lock_types[] = {0};
  static const Oid probe_types[] = {OID_INT8};
  return command_ok(c, "SET synchronous_commit = on") &&
         prepare(c, "upsert", upsert_sql, 10, upsert_types) &&
         prepare(c, "lock",
                 "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k", 1,
                 lock_types) &&
         prepare(c, "probe",
                 "INSERT INTO health_probe (id, checked_us) VALUES (1, $1) "
                 "ON CONFLICT (id) DO UPDATE SET checked_us = EXCLUDED.checked_us",
                 1, probe_types);
}

static bool writer_ready(struct pg_store *s) {
  if (s->writer_conn && PQstatus(s->writer_conn) == CONNECTION_OK) return true;
  PQfinish(s->writer_conn);
  s->writer_conn = pg_connect(s, NULL, 0);
  if (s->writer_conn && !prepare_writer(s->writer_conn)) {
    PQfinish(s->writer_conn);
    s->writer_conn = NULL;
  }
  return s->writer_conn != NULL;
}

/* The batch goes to PostgreSQL as one pipeline — BEGIN, the id locks, every write, COMMIT —
 * and one round trip brings all the answers back. */
enum step_kind { STEP_BEGIN, STEP_LOCK, STEP_WRITE, STEP_COMMIT };

struct step {
  enum step_kind kind;
  struct store_write *w;
};

static bool send_plain(PGconn *c, const char *sql) {
  return PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
}

/* The advisory-lock keys of the batch's conversation ids, as a bigint[] literal; NULL when
 * the batch has none (or out of memory, *oom set). */
static char *lock_keys(struct store_write *batch, bool *oom) {
  size_t n = 0;
  for (struct store_write *w = batch; w; w = w->next) n += w->kind == STORE_WRITE_CONVERSATION;
  *oom = false;
  if (n == 0) return NULL;
  size_t cap = n * 22 + 3, pos = 1;
  char *arr = malloc(cap);
  if (!arr) {
    *oom = true;
    return NULL;
  }
  arr[0] = '{';
  for (struct store_write *w = batch; w; w = w->next) {
    if (w->kind != STORE_WRITE_CONVERSATION) continue;
    unsigned char d[CRYPTO_SHA256_LEN];
    const char *id = w->conv->conversation_id;
    crypto_sha256(id, strlen(id), d);
    int64_t k;
    memcpy(&k, d, sizeof k);
    pos += (size_t)snprintf(arr + pos, cap - pos, "%s%lld", pos == 1 ? "" : ",", (long long)k);
  }
  snprintf(arr + pos, cap - pos, "}");
  return arr;
}

static bool send_probe(PGconn *c) {
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)time_now_us());
  const char *vals[] = {now};
  return PQsendQueryPrepared(c, "probe", 1, vals, NULL, NULL, 0) == 1;
}

static bool send_conversation(struct pg_store *s, struct store_write *w) {
  const struct conversation_input *c = w->conv;
  char start[24], duration[24], count[24], processed[24];
  if (!write_queue_stamp(&s->queue, w)) return false;
  snprintf(start, sizeof start, "%lld", (long long)c->start_us);
  snprintf(duration, sizeof duration, "%lld", (long long)c->duration);
  snprintf(count, sizeof count, "%lld", (long long)c->message_count);
  snprintf(processed, sizeof processed, "%lld", (long long)w->processed_us);
  const char *vals[10] = {c->conversation_id,
                          c->email_id,
                          c->account_id,
                          c->has_start ? start : NULL,
                          duration,
                          count,
                          w->webhook_id,
                          processed,
                          (const char *)w->body_sha256,
                          w->body};
  int lens[10] = {0, 0, 0, 0, 0, 0, 0, 0, CRYPTO_SHA256_LEN, (int)w->body_len};
  int formats[10] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
  return PQsendQueryPrepared(s->writer_conn, "upsert", 10, vals, lens, formats, 1) == 1;
}

/* Queues the whole batch; returns the number of steps sent, or 0 on failure. */
static size_t send_batch(struct pg_store *s, struct store_write *batch, struct step *steps) {
  PGconn *c = s->writer_conn;
  size_t k = 0;
  bool oom, ok = send_plain(c, "BEGIN");
  steps[k++] = (struct step){STEP_BEGIN, NULL};
  char *keys = lock_keys(batch, &oom);
  if (keys) {
    const char *vals[] = {keys};
    ok = ok && PQsendQueryPrepared(c, "lock", 1, vals, NULL, NULL, 0) == 1;
    steps[k++] = (struct step){STEP_LOCK, NULL};
    free(keys);
  }
  for (struct store_write *w = batch; ok && w; w = w->next) {
    ok = w->kind == STORE_WRITE_PROBE ? send_probe(c) : send_conversation(s, w);
    steps[k++] = (struct step){STEP_WRITE, w};
  }
  ok = ok && !oom && send_plain(c, "COMMIT") && PQpipelineSync(c) == 1;
  steps[k++] = (struct step){STEP_COMMIT, NULL};
  return ok ? k : 0;
}

/* Checks one step's result; fills in what a conversation write learned. */
static enum store_status read_step(PGconn *c, const struct step *step, const PGresult *r) {
  ExecStatusType t = PQresultStatus(r);
  bool rows = step->kind == STEP_LOCK ||
              (step->kind == STEP_WRITE && step->w->kind == STORE_WRITE_CONVERSATION);
  if (t != (rows ? PGRES_TUPLES_OK : PGRES_COMMAND_OK)) return status_of(c, r);
  if (step->kind != STEP_WRITE || step->w->kind != STORE_WRITE_CONVERSATION) return STORE_OK;
  if (PQntuples(r) != 1) return STORE_HARD;
  struct store_write *w = step->w;
  get_text(r, 0, 0, w->webhook_id, sizeof w->webhook_id);
  w->processed_us = get_i64(r, 0, 1);
  w->duplicate = *PQgetvalue(r, 0, 2) != 0;
  return STORE_OK;
}

/* Reads every result up to the pipeline's sync point; the first failure wins. */
static enum store_status read_batch(PGconn *c, const struct step *steps, size_t k) {
  enum store_status st = STORE_OK;
  size_t i = 0;
  bool after_end = false;
  for (;;) {
    PGresult *r = PQgetResult(c);
    if (!r) { /* end of one step's results; two in a row: nothing more will come */
      if (PQstatus(c) != CONNECTION_OK || after_end || i > k) return STORE_RETRY;
      after_end = true;
      i++;
      continue;
    }
    after_end = false;
    bool sync = PQresultStatus(r) == PGRES_PIPELINE_SYNC;
    if (!sync && st == STORE_OK) st = i < k ? read_step(c, &steps[i], r) : STORE_HARD;
    PQclear(r);
    if (sync) return i == k ? st : (st == STORE_OK ? STORE_HARD : st);
  }
}

static enum store_status commit_batch(struct pg_store *s, struct store_write *batch) {
  if (!writer_ready(s)) return STORE_RETRY;
  PGconn *c = s->writer_conn;
  size_t n = 0;
  for (struct store_write *w = batch; w; w = w->next) n++;
  struct step *steps = malloc((n + 3) * sizeof *steps);
  enum store_status st = STORE_RETRY;
  if (steps && PQenterPipelineMode(c) == 1) {
    size_t k = send_batch(s, batch, steps);
    st = k ? read_batch(c, steps, k) : STORE_RETRY;
    if (PQexitPipelineMode(c) != 1) st = st == STORE_OK ? STORE_RETRY : st;
  }
  free(steps);
  if (st == STORE_OK) return STORE_OK;
  log_msg(LOG_ERROR, "postgresql batch failed, nothing of it stored: %s", PQerrorMessage(c));
  /* A failed pipeline leaves the connection in an unknown state: start afresh. If COMMIT's
   * answer was lost, the batch may be stored after all; its clients got 503 and their retries
   * are recognised as redeliveries. */
  if (PQstatus(c) != CONNECTION_OK) report_down(s, c);
  PQfinish(c);
  s->writer_conn = NULL;
  return st;
}

static void *writer_main(void *arg) {
  struct pg_store *s = arg;
  struct store_write *batch;
  while ((batch = write_queue_take(&s->queue)) != NULL)
    write_queue_finish(batch, commit_batch(s, batch));
  return NULL;
}

static void pg_submit(struct store *base, struct store_write *w) {
  write_queue_push(&((struct pg_store *)base)->queue, w);
}

/* ---------- readers ---------- */

#define SELECT_COLUMNS                                                              \
  "SELECT c.conversation_id, c.email_id, c.account_id, c.status, c.start_time_us, " \
  "c.duration, c.message_count, c.processed_at_us, "

static bool prepare_reader(PGconn *c) {
  static const Oid get_types[] = {OID_TEXT, OID_BOOL};
  return prepare(c, "get",
                 SELECT_COLUMNS
                 "c.webhook_id, CASE WHEN $2 THEN (SELECT body FROM deliveries "
                 "WHERE id = c.delivery_id) END FROM conversations c "
                 "WHERE c.conversation_id = $1",
                 2, get_types) &&
         prepare(c, "ping", "SELECT 1", 0, NULL);
}

static void reader_drop(struct pg_reader *r) {
  PQfinish(r->conn);
  r->conn = NULL;
  r->prepared_lists = 0;
}

static void *reader_make(void *unused) {
  (void)unused;
  return calloc(1, sizeof(struct pg_reader));
}

static void reader_release(void *r) {
  reader_drop(r);
  free(r);
}

/* The calling thread's connection, (re)made when missing or broken; NULL when unreachable. */
static struct pg_reader *reader_get(struct pg_store *s) {
  struct pg_reader *r = thread_slot_get(&s->readers, reader_make, NULL);
  if (!r) return NULL;
  if (r->conn && PQstatus(r->conn) != CONNECTION_OK) reader_drop(r);
  if (!r->conn) {
    r->conn = pg_connect(s, NULL, 0);
    if (r->conn && !prepare_reader(r->conn)) reader_drop(r);
  }
  return r->conn ? r : NULL;
}

/* Runs a prepared read; drops the connection when it broke. */
static PGresult *reader_exec(struct pg_store *s, struct pg_reader *r, const char *name, int n,
                             const char *const *vals, enum store_status *st) {
  PGresult *res = PQexecPrepared(r->conn, name, n, vals, NULL, NULL, 1);
  *st = PQresultStatus(res) == PGRES_TUPLES_OK ? STORE_OK : status_of(r->conn, res);
  if (*st != STORE_OK) {
    log_msg(LOG_ERROR, "postgresql read failed: %s", PQerrorMessage(r->conn));
    if (PQstatus(r->conn) != CONNECTION_OK) {
      report_down(s, r->conn);
      reader_drop(r);
    }
  }
  return res;
}

/* Reads a conversation whose columns start at column first. */
static enum store_status read_row(const PGresult *res, int row, int first,
                                  struct store_conversation *out) {
  memset(out, 0, sizeof *out);
  get_text(res, row, first, out->conversation_id, sizeof out->conversation_id);
  get_text(res, row, first + 1, out->email_id, sizeof out->email_id);
  get_text(res, row, first + 2, out->account_id, sizeof out->account_id);
  get_text(res, row, first + 3, out->status, sizeof out->status);
  out->has_start = !PQgetisnull(res, row, first + 4);
  if (out->has_start) out->start_us = get_i64(res, row, first + 4);
  out->duration = get_i64(res, row, first + 5);
  out->message_count = get_i64(res, row, first + 6);
  out->processed_us = get_i64(res, row, first + 7);
  if (PQgetisnull(res, row, first + 8)) return STORE_OK;
  get_text(res, row, first + 8, out->webhook_id, sizeof out->webhook_id);
  if (PQgetisnull(res, row, first + 9)) return STORE_OK;
  size_t len = (size_t)PQgetlength(res, row, first + 9);
  out->body = malloc(len + 1);
  if (!out->body) return STORE_RETRY;
  memcpy(out->body, PQgetvalue(res, row, first + 9), len);
  out->body[len] = '\0';
  out->body_len = len;
  return STORE_OK;
}

static enum store_status pg_get(struct store *base, const char *id, bool with_body,
                                struct store_conversation *out) {
  struct pg_store *s = (struct pg_store *)base;
  struct pg_reader *r = reader_get(s);
  if (!r) return STORE_RETRY;
  const char *vals[] = {id, with_body ? "t" : "f"};
  enum store_status st;
  PGresult *res = reader_exec(s, r, "get", 2, vals, &st);
  if (st == STORE_OK) st = PQntuples(res) == 0 ? STORE_NOT_FOUND : read_row(res, 0, 0, out);
  PQclear(res);
  return st;
}

/* Prepares list<mask> on first use on this connection. One statement gives the total and the
 * page from one snapshot: the count comes first, the page (chosen on an index alone, then
 * only its rows read) is joined to it, so an empty page still brings the total. */
static bool prepare_list(struct pg_reader *r, unsigned mask) {
  if (r->prepared_lists & (1u << mask)) return true;
  static const char *const filters[3] = {"c.email_id", "c.account_id", "c.status"};
  char where[160] = "", sql[1024], name[16];
  size_t pos = 0;
  int n = 0;
  for (unsigned i = 0; i < 3; i++) {
    if (!(mask & (1u << i))) continue;
    pos += (size_t)snprintf(where + pos, sizeof where - pos, "%s%s = $%d", n ? " AND " : " WHERE ",
                            filters[i], n + 1);
    n++;
  }
  snprintf(sql, sizeof sql,
           "SELECT t.total, p.* FROM (SELECT COUNT(*) AS total FROM conversations c%s) t "
           "LEFT JOIN LATERAL (" SELECT_COLUMNS
           "NULL::text AS w, NULL::bytea AS b FROM conversations c WHERE c.conversation_id IN ("
           "SELECT c.conversation_id FROM conversations c%s ORDER BY "
           "c.processed_at_us DESC, c.conversation_id ASC LIMIT $%d OFFSET $%d)) p ON true "
           "ORDER BY p.processed_at_us DESC, p.conversation_id ASC",
           where, where, n + 1, n + 2);
  snprintf(name, sizeof name, "list%u", mask);
  if (!prepare(r->conn, name, sql, 0, NULL)) return false;
  r->prepared_lists |= 1u << mask;
  return true;
}

static enum store_status pg_list(struct store *base, const struct store_filter *f,
                                 struct store_page *out) {
  struct pg_store *s = (struct pg_store *)base;
  memset(out, 0, sizeof *out);
  struct pg_reader *r = reader_get(s);
  if (!r) return STORE_RETRY;
  unsigned mask = (f->email_id ? 1u : 0) | (f->account_id ? 2u : 0) | (f->status ? 4u : 0);
  if (!prepare_list(r, mask)) return status_of(r->conn, NULL);
  const char *vals[5];
  int n = 0;
  if (f->email_id) vals[n++] = f->email_id;
  if (f->account_id) vals[n++] = f->account_id;
  if (f->status) vals[n++] = f->status;
  char name[16], limit[24], offset[24];
  snprintf(limit, sizeof limit, "%lld", (long long)f->limit);
  snprintf(offset, sizeof offset, "%lld", (long long)((f->page - 1) * f->limit));
  vals[n] = limit;
  vals[n + 1] = offset;
  snprintf(name, sizeof name, "list%u", mask);
  enum store_status st;
  PGresult *res = reader_exec(s, r, name, n + 2, vals, &st);
  int rows = st == STORE_OK ? PQntuples(res) : 0;
  if (st == STORE_OK && rows < 1) st = STORE_HARD;
  if (st == STORE_OK) out->total = get_i64(res, 0, 0);
  if (st == STORE_OK && !PQgetisnull(res, 0, 1)) {
    out->items = calloc((size_t)rows, sizeof *out->items);
    if (!out->items) st = STORE_RETRY;
    for (int i = 0; st == STORE_OK && i < rows; i++)
      st = read_row(res, i, 1, &out->items[out->count++]);
  }
  PQclear(res);
  if (st != STORE_OK) store_page_free(out);
  return st;
}

static enum store_status pg_ping_read(struct store *base) {
  struct pg_store *s = (struct pg_store *)base;
  struct pg_reader *r = reader_get(s);
  if (!r) return STORE_RETRY;
  enum store_status st;
  PQclear(reader_exec(s, r, "ping", 0, NULL, &st));
  return st;
}

/* ---------- lifecycle ---------- */

static void pg_close(struct store *base) {
  struct pg_store *s = (struct pg_store *)base;
  write_queue_stop(&s->queue);
  if (s->writer_started) pthread_join(s->writer, NULL);
  write_queue_destroy(&s->queue);
  thread_slot_destroy(&s->readers, reader_release);
  PQfinish(s->writer_conn);
  free(s->url);
  free(s);
}

static const struct store_ops pg_ops = {
    .name = "postgresql",
    .submit = pg_submit,
    .get = pg_get,
    .list = pg_list,
    .ping_read = pg_ping_read,
    .close = pg_close,
};

struct store *store_pg_open(const char *url, char *err, size_t errlen) {
  struct pg_store *s = calloc(1, sizeof *s);
  if (!s || !(s->url = strdup(url))) {
    free(s);
    snprintf(err, errlen, "DATABASE_URL: out of memory");
    return NULL;
  }
  if (!thread_slot_init(&s->readers)) {
    free(s->url);
    free(s);
    snprintf(err, errlen, "DATABASE_URL: cannot create a per-thread connection slot");
    return NULL;
  }
  s->base.ops = &pg_ops;
  write_queue_init(&s->queue, BATCH_MAX);
  /* Start-up needs the database once, for migrations; afterwards outages are survived. */
  char why[256];
  PGconn *c = pg_connect(s, why, sizeof why);
  if (!c) {
    why[strcspn(why, "\n")] = '\0';
    snprintf(err, errlen, "DATABASE_URL: cannot connect to PostgreSQL: %s", why);
    pg_close(&s->base);
    return NULL;
  }
  bool migrated = migrate(c, err, errlen);
  PQfinish(c);
  if (!migrated) {
    pg_close(&s->base);
    return NULL;
  }
  if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
    snprintf(err, errlen, "cannot start the database writer thread");
    pg_close(&s->base);
    return NULL;
  }
  s->writer_started = true;
  return &s->base;
}
