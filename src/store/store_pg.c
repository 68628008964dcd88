/* PostgreSQL backend (libpq). Like SQLite: one writer thread commits queued writes in batches
 * (one COMMIT, synchronous_commit=on, per batch); each HTTP worker thread reads through its
 * own connection. Connections that break are dropped and made again on next use, so the
 * service answers 503 while PostgreSQL is away and recovers by itself when it is back.
 *
 * Several instances may write at once: each batch first takes transaction-scoped advisory
 * locks on its conversation ids (in sorted order, so batches never deadlock), so the
 * "same body, same webhookId" decision is made on the latest committed version. */
#include <endian.h>
#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/thread_slot.h"
#include "core/timeutil.h"
#include "core/utf8.h"
#include "ext/crypto.h"
#include "model/render.h"
#include "seal/seal.h"
#include "store/rollup.h"
#include "store/sealing.h"
#include "store/store.h"
#include "store/write_queue.h"

#define BATCH_MAX 256 /* one pipeline; its answers must fit the socket buffers */
#define LIST_VARIANTS 16
#define KEY_COLUMNS \
  "id, name, scopes, accounts, secret_sha256, created_us, expires_us, revoked_us, last_used_us"
/* ... and, read, the sealed accounts (column 9; NULL: accounts is plaintext) */
#define KEY_READ_COLUMNS KEY_COLUMNS ", accounts_sealed"
#define MIGRATION_LOCK_KEY 7261001 /* advisory lock serialising migrations */
/* The seal_keys advisory lock (two-key space, apart from the conversation and migration locks):
 * shared by every sealing transaction (each records its key), exclusive for set_ring's checks
 * and for reencrypt's final check and retirement, so a key is never retired while a
 * transaction sealing with it is in flight, nor checked while one records it. */
#define SEAL_LOCK "7261002, 7"
#define RECONNECT_PAUSE_MS 1000
/* How long the writer waits for the ROLLBACK of a batch the server failed before it gives
 * the connection up instead. */
#define ROLLBACK_WAIT_MS 5000
#define START_RETRY_MS 1000 /* between connection attempts while waiting at start-up */
#define MSG_MAX 512
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT4 23
#define OID_TEXT 25

struct pg_reader {
  PGconn *conn;
  uint64_t prepared_lists[4]; /* bit m: list<m> is prepared */
  uint32_t prepared_scans;    /* bit src: scan<src> (an unfiltered scan's statement) is prepared */
  unsigned char *opened;      /* a sealed audio chunk, opened (kept across connections) */
  size_t opened_cap;
};

/* A growing buffer, kept between batches so a batch allocates nothing once warm. */
struct text_buf {
  char *p;
  size_t n, cap;
};

/* The audit append of a batch: one array per parameter of gensendrep_audit_append (migration
 * 0006), see send_audit. */
enum { AUDIT_COLUMNS = 11 };

struct pg_store {
  struct store base;
  struct store_unopened unopened; /* the outbox thread's: fan-out */
  char *url;
  PGconn *writer_conn;
  pthread_t writer;
  bool writer_started;
  struct write_queue queue;
  unsigned char *audio_buf; /* writer: one chunk of audio on its way to the database */
  struct text_buf audit_cols[AUDIT_COLUMNS]; /* writer: the batch's audit entries */
  /* writer: audio events of this batch found committed before it (redeliveries answered
   * without their audio, but still audited in the batch) */
  struct store_write *known[BATCH_MAX];
  size_t nknown;
  /* Encryption at rest (set_ring): NULL, nothing is sealed. The writer seals a write's values
   * into arena (grown on demand, given back after a batch that needed much) just before
   * handing them to libpq, which copies them: one arena serves every write in turn. */
  const struct seal_ring *ring;
  /* the first key's check value (seal_keys), recorded by every batch that may seal */
  unsigned char key0_check[SEAL_KEY_ID_MAX + 64 + sizeof STORE_SEAL_CHECK];
  int key0_check_len;
  struct store_seal_buf arena;
  struct thread_slot readers; /* one struct pg_reader per calling thread */
  /* Onward delivery (issue 10): the outbox events the writer's last batch wrote, and two
   * buffers for their sealed data; the subscription and dispatcher writes (SUB_PUT,
   * SUB_DELETE, REPLAY, OUTBOX) run one at a time on a thread and connection of their own
   * (see "the outbox's own writes"), off the ingest pipeline; leases name owner (random per
   * open). */
  int64_t batch_outbox;
  struct store_seal_buf outbox_buf[2];
  void (*notify)(void *cls);
  void *notify_cls;
  struct write_queue ob_queue;
  pthread_t ob_thread;
  bool ob_started;
  PGconn *ob_conn;
  _Atomic int64_t ob_pause_ms;
  char owner[40];
  int64_t fanned_since_analyze; /* outbox thread: see ob_run */
  bool ob_conflict;          /* outbox thread: the last failed statement lost a race (see ob_run) */
  int64_t lease_seq;         /* outbox thread: the last claim token given out (lease_owner is
                              * "owner:token", see claim) */
  atomic_bool reported_down; /* log "unreachable" once per outage, not per request */
  /* no new connection attempt before these (monotonic ms); see pg_connect */
  _Atomic int64_t writer_pause_ms;
  _Atomic int64_t readers_pause_ms;
};

/* ---------- connections ---------- */

/* libpq's messages end in a newline and may span lines ("...: Connection refused\n\tIs the
 * server running...?\n"): one line without the newline, for the log and for err. */
static const char *one_line(const char *m, char *buf, size_t cap) {
  size_t n = 0;
  bool space = false;
  for (const char *p = m ? m : ""; *p && n + 1 < cap; p++) {
    if (*p == '\n' || *p == '\r' || *p == '\t') {
      space = n > 0;
      continue;
    }
    if (space && n + 2 < cap) buf[n++] = ' ';
    space = false;
    buf[n++] = *p;
  }
  buf[n] = '\0';
  return buf;
}

#define PG_MSG(c) one_line(PQerrorMessage(c), (char[MSG_MAX]){0}, MSG_MAX)

/* PostgreSQL's notices ("relation ... already exists, skipping", or the goodbye an idle
 * connection receives when the server shuts down) become log lines like any other, instead
 * of libpq's plain text on stderr in the middle of the JSON log. */
static void on_notice(void *unused, const PGresult *res) {
  (void)unused;
  const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  const char *text = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  if (!sev) sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
  if (!sev) sev = "NOTICE";
  enum log_level level = LOG_WARNING; /* WARNING, and ERROR/FATAL received while idle */
  if (strcmp(sev, "NOTICE") == 0 || strcmp(sev, "INFO") == 0)
    level = LOG_INFO;
  else if (strcmp(sev, "DEBUG") == 0 || strcmp(sev, "LOG") == 0)
    level = LOG_DEBUG;
  char buf[MSG_MAX];
  log_msg(level, "postgresql %s: %s", sev,
          one_line(text ? text : PQresultErrorMessage(res), buf, sizeof buf));
}

static void report_down(struct pg_store *s, const char *why) {
  if (!atomic_exchange(&s->reported_down, true))
    log_msg(LOG_ERROR, "postgresql unreachable: %s", why);
}

static void report_up(struct pg_store *s) {
  if (atomic_exchange(&s->reported_down, false)) log_msg(LOG_INFO, "postgresql reachable again");
}

/* One connection attempt; on failure NULL and why (one line). */
static PGconn *pg_connect_once(struct pg_store *s, char *why, size_t whylen) {
  /* connect_timeout comes first so that one in DATABASE_URL wins. */
  /* Keepalives and a TCP user timeout notice a vanished server within seconds. */
  const char *keys[] = {"connect_timeout",  "keepalives_idle",  "keepalives_interval",
                        "keepalives_count", "tcp_user_timeout", "options",
                        "application_name", "dbname",           NULL};
  const char *vals[] = {"5",          "5",    "2", "3", "10000", "-c statement_timeout=15000",
                        "gensendrep", s->url, NULL};
  PGconn *c = PQconnectdbParams(keys, vals, 1);
  if (c && PQstatus(c) == CONNECTION_OK) {
    PQsetNoticeReceiver(c, on_notice, NULL);
    return c;
  }
  one_line(c ? PQerrorMessage(c) : "out of memory", why, whylen);
  PQfinish(c);
  return NULL;
}

/* A new connection, or NULL. After a failed attempt, the callers sharing *pause get NULL at
 * once for a second instead of each spending up to connect_timeout on a server that is away.
 * The writer and the readers pause separately: a reader that failed a moment before the
 * server came back must not keep the writer from reconnecting. */
static PGconn *pg_connect(struct pg_store *s, _Atomic int64_t *pause) {
  if ((int64_t)time_mono_ms() < atomic_load(pause)) return NULL;
  char why[MSG_MAX];
  PGconn *c = pg_connect_once(s, why, sizeof why);
  if (!c) {
    report_down(s, why);
    atomic_store(pause, (int64_t)time_mono_ms() + RECONNECT_PAUSE_MS);
    return NULL;
  }
  report_up(s);
  return c;
}

/* An idle connection whose server went away (a restart, an idle-session kill) still reads
 * CONNECTION_OK until libpq reads the server's goodbye. Reading what is waiting first (the
 * goodbye is logged as a notice) lets a restart while idle cost no failed request. */
static bool conn_usable(PGconn *c) {
  for (int i = 0; c && i < 4 && PQstatus(c) == CONNECTION_OK; i++) {
    struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
    if (poll(&p, 1, 0) <= 0 || !PQconsumeInput(c)) break;
    (void)PQisBusy(c); /* parses what came */
  }
  return c && PQstatus(c) == CONNECTION_OK;
}

static bool command_ok(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok) log_msg(LOG_ERROR, "postgresql: %s", PG_MSG(c));
  PQclear(r);
  return ok;
}

static bool prepare(PGconn *c, const char *name, const char *sql, int nparams, const Oid *types) {
  PGresult *r = PQprepare(c, name, sql, nparams, types);
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) log_msg(LOG_ERROR, "postgresql prepare %s: %s", name, PG_MSG(c));
  PQclear(r);
  return ok;
}

/* A failed statement: the connection or a transient condition (connection, resources,
 * shutdown, lock), the client's data (class 22, data exception: e.g. 22021, bytes that are
 * not UTF-8), or a real fault. */
static enum store_status status_of(PGconn *c, const PGresult *r) {
  if (PQstatus(c) != CONNECTION_OK) return STORE_RETRY;
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (!state) return STORE_RETRY;
  if (strncmp(state, "22", 2) == 0) return STORE_CLIENT;
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

/* ---------- sealing (encryption at rest, seal/seal.h; the shape: store/sealing.h) ---------- */

/* The text sealed under each key in seal_keys.check_value. */
static const char check_text[] = STORE_SEAL_CHECK;
/* The writer keeps this much of its sealing buffer between batches. */
#define ARENA_KEEP (4u << 20)

/* A row's identity as associated data (store/sealing.h): the column, the row's key and, for a
 * body or event, its conversation's id, for an audio chunk its number (pk2; NULL: none). */
static size_t row_aad(char aad[STORE_AAD_MAX], const char *column, const char *id,
                      const char *pk2) {
  return store_seal_aad(aad, column, id, pk2);
}

/* value's blind index under key as stored; false (logged) when it could not be computed. */
static bool index_text(const struct seal_ring *r, size_t key, const char *value,
                       char out[STORE_INDEX_TEXT_LEN + 1]) {
  if (store_index_text(r, key, value, out)) return true;
  log_msg(LOG_ERROR, "cannot compute a blind index (OpenSSL failed)");
  return false;
}

/* The values an equality filter on email_id or account_id looks for, as a text[] literal: the
 * value as it is (rows written before encryption) and, with a ring (r may be NULL), its blind
 * index under every key of it (rows sealed with any of them). A value that would pass for a
 * blind index is not looked for as it is, with a ring or without (no id a user gave starts so,
 * and a stored one that does is a sealed row's index: matching it would find rows of another
 * account; SQLite binds NULL for it alike). A literal, not JSON: bytes that are not UTF-8
 * cannot be JSON, and PostgreSQL refuses them from a literal as the client's (as without a
 * ring). NULL when out of memory or an index could not be computed. */
static char *filter_values(const struct seal_ring *r, const char *value) {
  size_t keys = r ? seal_ring_count(r) : 0;
  char(*ix)[STORE_INDEX_TEXT_LEN + 1] = calloc(keys ? keys : 1, sizeof *ix);
  char *out = ix ? malloc(2 * strlen(value) + keys * (STORE_INDEX_TEXT_LEN + 3) + 6) : NULL;
  bool ok = out != NULL;
  for (size_t k = 0; ok && k < keys; k++) ok = index_text(r, k, value, ix[k]);
  if (ok) {
    size_t pos = 0;
    out[pos++] = '{';
    if (store_id_sealable(value)) { /* else it would pass for an index: as it is, no match */
      out[pos++] = '"';
      for (const char *p = value; *p; p++) {
        if (*p == '"' || *p == '\\') out[pos++] = '\\';
        out[pos++] = *p;
      }
      out[pos++] = '"';
    }
    for (size_t k = 0; k < keys; k++)
      pos += (size_t)sprintf(out + pos, "%s\"%s\"", pos > 1 ? "," : "", ix[k]);
    out[pos++] = '}';
    out[pos] = '\0';
  } else {
    free(out);
    out = NULL;
  }
  free(ix);
  return out;
}

/* Opens a row's sealed value into out (at most cap bytes); false, logged, when the ring cannot
 * (no ring, the key it names is not in it, or it was changed or moved). */
static bool open_value(const struct seal_ring *r, const char *column, const char *id,
                       const char *pk2, const void *data, size_t len, unsigned char *out,
                       size_t cap, size_t *out_len) {
  char aad[STORE_AAD_MAX], key[SEAL_KEY_ID_MAX + 1] = "?";
  size_t aad_len = row_aad(aad, column, id, pk2);
  if (r && seal_plain_len(data, len) <= cap && seal_open(r, aad, aad_len, data, len, out, out_len))
    return true;
  (void)seal_key_of(data, len, key);
  log_msg(LOG_ERROR, "a sealed %s (key %s) cannot be opened%s", column, key,
          r ? " with ENCRYPTION_KEYS: wrong key or altered data" : ": ENCRYPTION_KEYS is not set");
  return false;
}

/* A sealed email, account (store_open_id) or failure reason (store_open_text) column (NULL: "")
 * into dst; false, logged, when it does not open or is not an id. */
static bool open_text(const struct seal_ring *r, const char *column, const char *id,
                      const PGresult *res, int row, int col, char *dst, size_t cap) {
  dst[0] = '\0';
  if (PQgetisnull(res, row, col)) return true;
  char aad[STORE_AAD_MAX], key[SEAL_KEY_ID_MAX + 1] = "?";
  size_t aad_len = row_aad(aad, column, id, NULL), len = (size_t)PQgetlength(res, row, col);
  const char *data = PQgetvalue(res, row, col);
  if (strcmp(column, "conversations.failure_reason") == 0 ||
              strcmp(column, "api_keys.accounts") == 0
          ? store_open_text(r, aad, aad_len, data, len, dst, cap)
          : store_open_id(r, aad, aad_len, data, len, dst, cap))
    return true;
  (void)seal_key_of(data, len, key);
  log_msg(LOG_ERROR, "a sealed %s (key %s) cannot be opened%s", column, key,
          r ? " with ENCRYPTION_KEYS: wrong key or altered data" : ": ENCRYPTION_KEYS is not set");
  dst[0] = '\0';
  return false;
}

/* A sealed bytea column into a new NUL-terminated buffer (*out, *out_len). */
static enum store_status open_alloc(const struct seal_ring *r, const char *column, const char *id,
                                    const char *pk2, const PGresult *res, int row, int col,
                                    char **out, size_t *out_len) {
  const char *data = PQgetvalue(res, row, col);
  size_t len = (size_t)PQgetlength(res, row, col), plain = seal_plain_len(data, len);
  if (!(*out = malloc(plain + 1))) return STORE_RETRY;
  if (!open_value(r, column, id, pk2, data, len, (unsigned char *)*out, plain, out_len)) {
    free(*out);
    *out = NULL;
    return STORE_HARD;
  }
  (*out)[*out_len] = '\0';
  return STORE_OK;
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
  /* Another instance may hold the lock for as long as its migrations take (they run without
   * the statement timeout): wait for it as long, then back to the connection's timeout. */
  snprintf(sql, sizeof sql,
           "SET statement_timeout = 0; SELECT pg_advisory_lock(%d); RESET statement_timeout",
           MIGRATION_LOCK_KEY);
  if (!command_ok(c, sql)) {
    snprintf(err, errlen, "DATABASE_URL: postgresql: %s", PG_MSG(c));
    return false;
  }
  bool ok = command_ok(c,
                       "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                       "name TEXT NOT NULL, applied_at_us BIGINT NOT NULL)");
  /* Every migration not recorded yet, not only those above the highest: two branches' numbers
   * may land out of order (0007 before 0006), and a database migrated in between still gets
   * the one that landed second. */
  PGresult *r = ok ? PQexec(c, "SELECT version FROM schema_migrations") : NULL;
  ok = ok && PQresultStatus(r) == PGRES_TUPLES_OK;
  for (size_t i = 0; ok && i < store_migrations_pg_count; i++) {
    const struct store_migration *m = &store_migrations_pg[i];
    bool have = false;
    for (int row = 0; !have && row < PQntuples(r); row++)
      have = strtol(PQgetvalue(r, row, 0), NULL, 10) == m->version;
    if (have) continue;
    /* The connection's statement timeout would cut an index build on a large table short (a
     * failed start, the migration rolled back, every start failing the same way); waiting for
     * a lock stays bounded: another instance's long transaction fails this start, not the
     * traffic queued behind the migration's lock. */
    ok = command_ok(c, "BEGIN") &&
         command_ok(c, "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = 15000") &&
         command_ok(c, m->sql) && record_migration(c, m) && command_ok(c, "COMMIT");
    if (ok) log_msg(LOG_INFO, "applied migration %04d_%s", m->version, m->name);
  }
  PQclear(r);
  if (!ok) {
    snprintf(err, errlen, "DATABASE_URL: postgresql migration failed: %s", PG_MSG(c));
    (void)command_ok(c, "ROLLBACK");
  }
  snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%d)", MIGRATION_LOCK_KEY);
  (void)command_ok(c, sql);
  return ok;
}

/* ---------- the writer ---------- */

#define CONVERSATION_UPDATE                                                                   \
  "email_id = EXCLUDED.email_id, account_id = EXCLUDED.account_id, status = EXCLUDED.status," \
  " start_time_us = EXCLUDED.start_time_us, duration = EXCLUDED.duration,"                    \
  " message_count = EXCLUDED.message_count, processed_at_us = EXCLUDED.processed_at_us,"      \
  " webhook_id = EXCLUDED.webhook_id, body_sha256 = EXCLUDED.body_sha256,"                    \
  " delivery_id = EXCLUDED.delivery_id, agent_id = EXCLUDED.agent_id,"                        \
  " failure_reason = EXCLUDED.failure_reason, sealed_with = EXCLUDED.sealed_with,"            \
  " email_sealed = EXCLUDED.email_sealed, account_sealed = EXCLUDED.account_sealed,"          \
  " failure_sealed = EXCLUDED.failure_sealed, platform = EXCLUDED.platform,"                  \
  " outcome = EXCLUDED.outcome"

/* A change's outbox events are staged in this session's temporary table (ON COMMIT DELETE ROWS)
 * by its own statement, and moved into outbox_events by the batch's last statement (see
 * outbox_flush_sql): the move happens while the batch holds the audit head's row lock, so seq
 * follows commit order. Columns: ord (the write's place in the batch), k (its order within
 * the write), event id, type, conversation, account (index or plaintext) and sealed account,
 * created, data, audio bytes, key, copy (an audio event of an existing conversation: data is
 * its latest conversation event's, found when moved; the data given is the fallback). */
#define OUTBOX_STAGE_INTO                                                                      \
  "  INSERT INTO pg_temp.outbox_pending (ord, k, event_id, type, conversation_id, account_id," \
  "    account_sealed, created_us, data, audio_bytes, sealed_with, copy"
#define OUTBOX_STAGE OUTBOX_STAGE_INTO ")"

/* With a ring ($16 the sealing key's id), $2/$3 are the blind indexes, $14/$15 the sealed email
 * and account, $10 the sealed body; without, $14..$16 are NULL. $18..$20: the outbox event's
 * ord, id and data (sealed with a ring). */
static const char upsert_sql[] =
    "WITH cur AS ("
    "  SELECT webhook_id, body_sha256, processed_at_us FROM conversations"
    "  WHERE conversation_id = $1"
    "), ins AS ("
    "  INSERT INTO deliveries (webhook_id, conversation_id, received_at_us, body_sha256, body,"
    "    sealed_with)"
    "  SELECT $7, $1, $8, $9, $10, $16"
    "  WHERE NOT EXISTS (SELECT 1 FROM cur WHERE body_sha256 = $9)"
    "  RETURNING id"
    "), up AS ("
    "  INSERT INTO conversations (conversation_id, email_id, account_id, status, start_time_us,"
    "    duration, message_count, processed_at_us, webhook_id, body_sha256, delivery_id,"
    "    agent_id, failure_reason, sealed_with, email_sealed, account_sealed, failure_sealed,"
    "    platform, outcome, first_processed_at_us)"
    "  SELECT $1, $2, $3, $11, $4, $5, $6, $8, $7, $9, id, $12, $13, $16, $14, $15, $17, $21, $22,"
    "    $8"
    "  FROM ins"
    "  ON CONFLICT (conversation_id) DO UPDATE SET " CONVERSATION_UPDATE "), ob AS (" OUTBOX_STAGE
    "  SELECT $18, 0, $19, CASE WHEN EXISTS (SELECT 1 FROM cur) THEN 2 ELSE 1 END, $1, $3, $15,"
    "    $8, $20, (SELECT a.bytes FROM audio_meta a WHERE a.conversation_id = $1), $16, false"
    "  FROM ins"
    ") "
    "SELECT webhook_id, processed_at_us, true FROM cur WHERE body_sha256 = $9 "
    "UNION ALL SELECT $7, $8, false FROM ins";

/* With a ring: the seal_keys lock (shared) and the first key recorded unless it is (a finished
 * reencrypt elsewhere may have retired it), in the batch's transaction. */
static const char record_key_sql[] =
    "WITH l AS (SELECT pg_advisory_xact_lock_shared(" SEAL_LOCK
    ")) "
    "INSERT INTO seal_keys (key_id, check_value, added_us) SELECT $1, $2, $3 FROM l "
    "ON CONFLICT (key_id) DO NOTHING";

/* An ElevenLabs event: kept unless its conversation already has one with the same bytes (then
 * that one's webhook id and time answer); when it carries a conversation ($8), that
 * conversation's new version is stored exactly as a seed write's, under the event's webhook id
 * (the event's redelivery check stands for the seed's same-body check). With a ring ($20), $6 and
 * $19 are sealed, $10/$11 blind indexes and $21/$22 the sealed email and account. Outbox: $24
 * ord, $25 the conversation event's id, $26 its data, $27 the audio event's id, $28 failed,
 * $29 the audio's bytes (-1: none), $30 the audio event's data when it has no conversation, $31
 * (NULL: none) its data when the conversation was stored before the batch (read then, see
 * send_event): kept, with the conversation row's account, should the conversation have no
 * event to copy (stored before the outbox, or its events pruned). */
static const char event_sql[] =
    "WITH dup AS ("
    "  SELECT webhook_id, received_at_us FROM events"
    "  WHERE conversation_id = $1 AND body_sha256 = $2 ORDER BY id LIMIT 1"
    "), ev AS ("
    "  INSERT INTO events (webhook_id, conversation_id, type, received_at_us, body_sha256, body,"
    "    audio_at, sealed_with)"
    "  SELECT $3, $1, $5, $4, $2, $6, $7, $20 WHERE NOT EXISTS (SELECT 1 FROM dup)"
    "  RETURNING id"
    "), ins AS ("
    "  INSERT INTO deliveries (webhook_id, conversation_id, received_at_us, body_sha256, body,"
    "    sealed_with)"
    "  SELECT $3, $9, $4, $18, $19, $20 FROM ev WHERE $8"
    "  RETURNING id"
    "), up AS ("
    "  INSERT INTO conversations (conversation_id, email_id, account_id, status, start_time_us,"
    "    duration, message_count, processed_at_us, webhook_id, body_sha256, delivery_id,"
    "    agent_id, failure_reason, sealed_with, email_sealed, account_sealed, failure_sealed,"
    "    platform, outcome, first_processed_at_us)"
    "  SELECT $9, $10, $11, $12, $13, $14, $15, $4, $3, $18, id, $16, $17, $20, $21, $22, $23,"
    "    $32, $33, $4"
    "  FROM ins"
    "  ON CONFLICT (conversation_id) DO UPDATE SET " CONVERSATION_UPDATE "), obc AS (" OUTBOX_STAGE
    "  SELECT $24, 0, $25, CASE WHEN $28 THEN 4 WHEN EXISTS (SELECT 1 FROM conversations x"
    "    WHERE x.conversation_id = $9) THEN 2 ELSE 1 END, $9, $11, $22, $4, $26,"
    "    CASE WHEN $29 >= 0 THEN $29 ELSE (SELECT a.bytes FROM audio_meta a"
    "    WHERE a.conversation_id = $9) END, $20, false FROM ins"
    "), oba AS (" OUTBOX_STAGE_INTO
    ", whole)"
    "  SELECT $24, 1, $27, 3, $1, CASE WHEN $8 THEN $11 WHEN x.w THEN x.account_id END,"
    "    CASE WHEN $8 THEN $22 WHEN x.w THEN x.account_sealed END, $4,"
    "    CASE WHEN $8 THEN $26 WHEN x.w THEN $31 ELSE $30 END, CASE WHEN $8 OR x.e THEN $29 END,"
    "    $20, NOT $8 AND x.e, x.w"
    "  FROM ev, (SELECT EXISTS (SELECT 1 FROM conversations y WHERE y.conversation_id = $1) AS e,"
    "    $31::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM conversations y"
    "      WHERE y.conversation_id = $1) AS w,"
    "    (SELECT CASE WHEN y.account_sealed IS NULL OR y.sealed_with = $20 THEN y.account_id END"
    "     FROM conversations y WHERE y.conversation_id = $1) AS account_id,"
    "    (SELECT CASE WHEN y.sealed_with = $20 THEN y.account_sealed END"
    "     FROM conversations y WHERE y.conversation_id = $1) AS account_sealed) x"
    "  WHERE $29 >= 0"
    ") "
    "SELECT webhook_id, received_at_us, true FROM dup UNION ALL SELECT $3, $4, false FROM ev";

/* The event's audio replaces the conversation's, but only when the event was just kept by this
 * transaction (its new webhook id is there): a redelivery's audio changes nothing. */
static const char audio_meta_sql[] =
    "WITH ok AS ("
    "  SELECT 1 FROM events WHERE conversation_id = $1 AND body_sha256 = $2 AND webhook_id = $3"
    "), gone AS ("
    "  DELETE FROM audio_chunks WHERE conversation_id = $1 AND EXISTS (SELECT 1 FROM ok)"
    ") "
    "INSERT INTO audio_meta (conversation_id, bytes, chunk_bytes, webhook_id, received_at_us) "
    "SELECT $1, $4, $5, $3, $6 FROM ok ON CONFLICT (conversation_id) DO UPDATE SET "
    "bytes = EXCLUDED.bytes, chunk_bytes = EXCLUDED.chunk_bytes, "
    "webhook_id = EXCLUDED.webhook_id, received_at_us = EXCLUDED.received_at_us";

static const char audio_chunk_sql[] =
    "INSERT INTO audio_chunks (conversation_id, seq, data, sealed_with) SELECT $1, $3, $4, $5 "
    "WHERE EXISTS (SELECT 1 FROM audio_meta WHERE conversation_id = $1 AND webhook_id = $2)";

/* An audit entry decided by the statement that records it ($N: the write's place in the batch):
 * the batch's audit append (send_audit) turns the row into the entry (migration 0006). */
#define PG_AUDIT_PENDING(ord, target) \
  "INSERT INTO pg_temp.audit_pending (ord, target) SELECT " ord ", " target

/* Erasure: every row of the conversation, in one statement (the conversation takes its current
 * delivery with it through a trigger, migration 0005; the older versions are the superseded
 * deliveries); the answer is the number of rows removed, that delivery included. Its audit
 * entry only when it removed something. */
#define OUTBOX_DELETED_DATA(id, reason)                                                        \
  "convert_to('{\"conversationId\":' || to_json(" id "::text)::text || ',\"reason\":\"" reason \
  "\"}', 'UTF8')"
/* Erasure and retention take the conversation's outbox events and their deliveries with them
 * (those of this batch still staged too; an earlier erasure's conversation.deleted stays, staged
 * or stored: it holds nothing of the conversation) and the attempts recorded for those events
 * (their answers' heads may echo the data), and stage conversation.deleted ($3 its id, $4 its
 * time), whose data (outbox_deleted_data's text, never sealed: it holds only the id) goes
 * with the conversation's account as stored. The deliveries go by the foreign key's cascade
 * (migration 0009: also those a concurrent fan-out or replay made), after sl has locked those it
 * sees in (sub_id, seq) order, the order FINISH locks them in: the two never wait for each other in
 * a circle (ox runs only once sl has, through its count). */
#define OUTBOX_ERASE(ids)                                                             \
  " sl AS (SELECT 1 FROM sub_deliveries WHERE seq IN (SELECT seq FROM outbox_events"  \
  "   WHERE conversation_id IN (" ids                                                 \
  ") AND type <> 5) ORDER BY sub_id, seq FOR UPDATE),"                                \
  " ox AS (DELETE FROM outbox_events WHERE conversation_id IN (" ids                  \
  ") AND type <> 5"                                                                   \
  "   AND (SELECT count(*) FROM sl) >= 0 RETURNING seq),"                             \
  " da AS (DELETE FROM delivery_attempts WHERE seq IN (SELECT seq FROM outbox_events" \
  "   WHERE conversation_id IN (" ids                                                 \
  ") AND type <> 5)),"                                                                \
  " op AS (DELETE FROM pg_temp.outbox_pending WHERE conversation_id IN (" ids ") AND type <> 5),"
static const char erase_sql[] =
    "WITH c AS (DELETE FROM conversations WHERE conversation_id = $1"
    "   RETURNING account_id, account_sealed, sealed_with),"
    " d AS (DELETE FROM deliveries WHERE conversation_id = $1 AND superseded RETURNING 1),"
    " e AS (DELETE FROM events WHERE conversation_id = $1 RETURNING 1),"
    " k AS (DELETE FROM audio_chunks WHERE conversation_id = $1 RETURNING 1),"
    " m AS (DELETE FROM audio_meta WHERE conversation_id = $1 RETURNING 1),"
    " n AS (SELECT 2 * (SELECT count(*) FROM c) + (SELECT count(*) FROM d)"
    "   + (SELECT count(*) FROM e) + (SELECT count(*) FROM k) + (SELECT count(*) FROM m) AS n),"
    " a AS (" PG_AUDIT_PENDING("$2", "$1") " FROM n WHERE n.n > 0)," OUTBOX_ERASE("$1")
    " ob AS (" OUTBOX_STAGE " SELECT $2, 2, $3, 5, $1, c.account_id, c.account_sealed, $4,"
    "   " OUTBOX_DELETED_DATA("$1", "erased") ", NULL,"
    "   CASE WHEN c.account_sealed IS NOT NULL THEN c.sealed_with END, false"
    "   FROM n LEFT JOIN c ON true WHERE n.n > 0) "
    "SELECT n FROM n";

/* Retention: at most $2 conversations processed before $1, whole (found on conversations_recent
 * from its old end: first stored before $1, and a conversation processed again since is passed
 * over, as first <= processed), and at most $2 events and
 * audios of no conversation received before $1 (an audio's audio_added events go with it, and
 * conversation.deleted is written for it as for a conversation: $4 holds 2 * $2 event ids). Rows
 * another transaction holds (another instance's retention, a webhook rewriting that conversation)
 * are skipped, so instances running it at once never wait for each other nor erase a conversation
 * twice. The answer: conversations + events + audios erased; an audit entry per conversation
 * erased. */
#define PG_NO_CONVERSATION(t) \
  "NOT EXISTS (SELECT 1 FROM conversations y WHERE y.conversation_id = " t ".conversation_id)"
static const char retain_sql[] =
    "WITH v AS (SELECT conversation_id FROM conversations WHERE first_processed_at_us < $1"
    "   AND processed_at_us < $1 ORDER BY first_processed_at_us LIMIT $2"
    "   FOR UPDATE SKIP LOCKED),"
    " c AS (DELETE FROM conversations WHERE conversation_id IN (SELECT conversation_id FROM v)"
    "   RETURNING conversation_id, account_id, account_sealed, sealed_with),"
    " d AS (DELETE FROM deliveries WHERE superseded AND"
    "   conversation_id IN (SELECT conversation_id FROM c)),"
    " e AS (DELETE FROM events WHERE conversation_id IN (SELECT conversation_id FROM c)),"
    " k AS (DELETE FROM audio_chunks WHERE conversation_id IN (SELECT conversation_id FROM c)),"
    " m AS (DELETE FROM audio_meta WHERE conversation_id IN (SELECT conversation_id FROM c)),"
    " oe AS (DELETE FROM events WHERE id IN (SELECT x.id FROM events x"
    "   WHERE x.received_at_us < $1 AND " PG_NO_CONVERSATION("x")
    "   LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING 1),"
    " om AS (DELETE FROM audio_meta WHERE conversation_id IN (SELECT x.conversation_id"
    "   FROM audio_meta x WHERE x.received_at_us < $1 AND " PG_NO_CONVERSATION("x")
    "   LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING conversation_id),"
    " ok AS (DELETE FROM audio_chunks WHERE conversation_id IN (SELECT conversation_id FROM om)),"
    " a AS (" PG_AUDIT_PENDING("$3", "conversation_id") " FROM c),"
    OUTBOX_ERASE("SELECT conversation_id FROM c UNION ALL SELECT conversation_id FROM om")
    " ob AS (" OUTBOX_STAGE " SELECT $3, 2, ($4::text[])[x.rn], 5, x.conversation_id,"
    "   x.account_id, x.account_sealed, $5, " OUTBOX_DELETED_DATA("x.conversation_id", "expired")
    "   , NULL, CASE WHEN x.account_sealed IS NOT NULL THEN x.sealed_with END, false"
    "   FROM (SELECT c.conversation_id, c.account_id, c.account_sealed, c.sealed_with,"
    "     row_number() OVER (ORDER BY c.conversation_id) AS rn FROM c"
    "   UNION ALL SELECT om.conversation_id, NULL, NULL, NULL,"
    "     $2 + row_number() OVER (ORDER BY om.conversation_id) FROM om) x) "
    "SELECT (SELECT count(*) FROM c) + (SELECT count(*) FROM oe) + (SELECT count(*) FROM om)";

/* The batch's staged outbox events moved into outbox_events in order (see OUTBOX_STAGE), after
 * the audit append took the head's row lock (taken here again, for a batch that appended
 * nothing): an audio event that copies takes its conversation's latest created, updated or
 * failed event's data, account and key (this batch's first, else the stored ones), or keeps
 * its fallback when there is none: the conversation as read before the batch (whole, audio put
 * back when read), else the audio alone (without audio_bytes: its data holds the audio). Answers
 * how many were written. */
static const char outbox_flush_sql[] =
    "WITH h AS (SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE),"
    " ins AS (INSERT INTO outbox_events (event_id, type, conversation_id, account_id,"
    "   account_sealed, created_us, data, audio_bytes, sealed_with)"
    "  SELECT q.event_id, q.type, q.conversation_id,"
    "   CASE WHEN src.data IS NULL THEN q.account_id ELSE src.account_id END,"
    "   CASE WHEN src.data IS NULL THEN q.account_sealed ELSE src.account_sealed END,"
    "   q.created_us, COALESCE(src.data, q.data),"
    "   CASE WHEN q.copy AND src.data IS NULL AND NOT q.whole THEN NULL ELSE q.audio_bytes END,"
    "   CASE WHEN src.data IS NULL THEN q.sealed_with ELSE src.sealed_with END"
    "  FROM (SELECT p.* FROM pg_temp.outbox_pending p, h ORDER BY p.ord, p.k, p.conversation_id) q"
    "  LEFT JOIN LATERAL (SELECT x.data, x.account_id, x.account_sealed, x.sealed_with FROM ("
    "    SELECT p2.data, p2.account_id, p2.account_sealed, p2.sealed_with, 1 AS pri,"
    "      p2.ord::bigint * 4 + p2.k AS o FROM pg_temp.outbox_pending p2"
    "    WHERE q.copy AND p2.conversation_id = q.conversation_id AND p2.type IN (1, 2, 4)"
    "      AND (p2.ord, p2.k) < (q.ord, q.k)"
    "    UNION ALL SELECT e.data, e.account_id, e.account_sealed, e.sealed_with, 0, e.seq"
    "    FROM outbox_events e WHERE q.copy AND e.conversation_id = q.conversation_id"
    "      AND e.type IN (1, 2, 4)) x ORDER BY x.pri DESC, x.o DESC LIMIT 1) src ON true"
    "  RETURNING 1) "
    "SELECT count(*) FROM ins";

/* ---- Analytics rollups (store/rollup.h; migration 0011) ----
 * A trigger stages each change's contributions (-1 for the row before, +1 after) in
 * pg_temp.analytics_pending; the batch's last statement before COMMIT sums them per rollup key
 * and upserts each key once, in key order (two instances' batches lock rows in the same order:
 * no deadlock between them), and the next deletes the rows left at zero conversations. A rebuild
 * sums the conversations themselves the same way. ANALYTICS_SUM(g): g's rows are (hour_us,
 * account_id, agent_id, platform, status, outcome, bucket, n, m, d). */
#define PG_FLOOR(t, unit) "(" t " - (((" t " % " unit ") + " unit ") % " unit "))"
#define PG_HOUR "3600000000"
#define PG_DAY "86400000000"
#define PG_BLOCK "1382400000000" /* ROLLUP_BLOCK_US */
#define PG_TOTAL4 "14400000000"  /* ROLLUP_TOTAL4_US */
#define ANALYTICS_ADD_COUNTS                                   \
  " conversations = r.conversations + EXCLUDED.conversations," \
  " messages = r.messages + EXCLUDED.messages,"                \
  " duration_sum = r.duration_sum + EXCLUDED.duration_sum"
#define ANALYTICS_ADD ANALYTICS_ADD_COUNTS ", hist = gensendrep_hist_add(r.hist, EXCLUDED.hist)"
/* Only the status rows of analytics_dim (dims 3 and 11) keep a hist (rollup_keeps_hist). */
#define PG_DIM_KEEPS_HIST(d) d " IN (3, 11)"
_Static_assert(STORE_DIM_STATUS == 3 && ROLLUP_DIM_BLOCK == 8, "PG_DIM_KEEPS_HIST, pg_scan_sql");
#define ANALYTICS_SUM(g) \
  "WITH g AS (" g "),"                                                                          \
  " fh AS (INSERT INTO analytics_hour AS r SELECT hour_us, account_id, agent_id, platform,"     \
  "   status, outcome, sum(n), sum(m), sum(d), gensendrep_hist_of(array_agg(bucket),"          \
  "   array_agg(n)) FROM g GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"                  \
  "   ON CONFLICT (hour_us, account_id, agent_id, platform, status, outcome) DO UPDATE SET"     \
  ANALYTICS_ADD "),"                                                                            \
  " fb AS (INSERT INTO analytics_block AS r SELECT " PG_FLOOR("hour_us", PG_BLOCK) ","          \
  "   account_id, agent_id, platform, status, outcome, sum(n), sum(m), sum(d),"                 \
  "   gensendrep_hist_of(array_agg(bucket), array_agg(n)) FROM g GROUP BY 1, 2, 3, 4, 5, 6"    \
  "   ORDER BY 1, 2, 3, 4, 5, 6"                                                                \
  "   ON CONFLICT (block_us, account_id, agent_id, platform, status, outcome) DO UPDATE SET"    \
  ANALYTICS_ADD "),"                                                                            \
  " ft AS (INSERT INTO analytics_total AS r SELECT hour_us, sum(n), sum(m), sum(d),"           \
  "   '{}'::int[] FROM g GROUP BY 1 ORDER BY 1"                                                 \
  "   ON CONFLICT (hour_us) DO UPDATE SET" ANALYTICS_ADD_COUNTS "),"                            \
  " fd AS (INSERT INTO analytics_dim AS r (dim, day_us, value, conversations, messages,"     \
  "   duration_sum, hist) SELECT dim, day_us, value, sum(n), sum(m), sum(d),"                    \
  "   CASE WHEN " PG_DIM_KEEPS_HIST("dim") " THEN gensendrep_hist_of(array_agg(bucket),"       \
  "   array_agg(n)) ELSE '{}'::int[] END FROM (SELECT v.dim, v.at AS day_us, v.value,"          \
  "   CASE WHEN " PG_DIM_KEEPS_HIST("v.dim") " THEN bucket ELSE 0 END AS bucket,"               \
  "   sum(n)::bigint AS n, sum(m)::bigint AS m, sum(d)::bigint AS d"                            \
  "   FROM (SELECT g.*, " PG_FLOOR("g.hour_us", PG_DAY) " AS day, "                              \
  PG_FLOOR("g.hour_us", PG_BLOCK) " AS block, " PG_FLOOR("g.hour_us", PG_TOTAL4)                \
  " AS block4 FROM g) g CROSS JOIN LATERAL (VALUES"                                             \
  "   (0, g.day, g.account_id), (1, g.day, g.agent_id), (2, g.day, g.platform),"                \
  "   (3, g.day, g.status), (4, g.day, g.outcome), (5, g.day, ''), (6, g.block4, ''),"          \
  "   (8, g.block, g.account_id), (9, g.block, g.agent_id), (10, g.block, g.platform),"         \
  "   (11, g.block, g.status), (12, g.block, g.outcome))"                                       \
  "   AS v (dim, at, value) GROUP BY 1, 2, 3, 4) x GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"            \
  "   ON CONFLICT (dim, day_us, value) DO UPDATE SET" ANALYTICS_ADD_COUNTS ", hist = CASE WHEN"  \
  "   " PG_DIM_KEEPS_HIST("r.dim") " THEN gensendrep_hist_add(r.hist, EXCLUDED.hist)"           \
  "   ELSE r.hist END) "                                                                          \
  "SELECT 1"

static const char analytics_flush_sql[] = ANALYTICS_SUM(
    "SELECT hour_us, account_id, agent_id, platform, status, outcome, bucket, sum(n)::bigint AS n,"
    " sum(n * messages)::bigint AS m, sum(n * duration)::bigint AS d"
    " FROM pg_temp.analytics_pending GROUP BY 1, 2, 3, 4, 5, 6, 7");

/* The rows the batch's contributions left at zero: only keys a contribution of the batch took
 * something from (n < 0) can be at zero, so a batch that only added deletes nothing and reads
 * nothing but its pending rows, and one that took away looks at those exact keys only (not every
 * rollup row of the hours and days it touched). */
static const char analytics_zero_sql[] =
    "WITH p AS (SELECT DISTINCT hour_us, account_id, agent_id, platform, status, outcome"
    "   FROM pg_temp.analytics_pending WHERE n < 0),"
    " a AS (DELETE FROM analytics_hour r USING p WHERE r.hour_us = p.hour_us"
    "   AND r.account_id = p.account_id AND r.agent_id = p.agent_id AND r.platform = p.platform"
    "   AND r.status = p.status AND r.outcome = p.outcome AND r.conversations = 0),"
    " e AS (DELETE FROM analytics_block r USING (SELECT DISTINCT " PG_FLOOR("p.hour_us", PG_BLOCK)
    " AS block_us, account_id, agent_id, platform, status, outcome FROM p) q"
    "   WHERE r.block_us = q.block_us AND r.account_id = q.account_id"
    "   AND r.agent_id = q.agent_id AND r.platform = q.platform AND r.status = q.status"
    "   AND r.outcome = q.outcome AND r.conversations = 0),"
    " b AS (DELETE FROM analytics_total r WHERE r.conversations = 0"
    "   AND r.hour_us IN (SELECT DISTINCT hour_us FROM p)),"
    " z AS (SELECT DISTINCT v.dim, v.at, v.value FROM (SELECT p.*, " PG_FLOOR("p.hour_us", PG_DAY)
    " AS day, " PG_FLOOR("p.hour_us", PG_BLOCK) " AS block, " PG_FLOOR("p.hour_us", PG_TOTAL4)
    " AS block4 FROM p) g CROSS JOIN LATERAL (VALUES"
    "   (0, g.day, g.account_id), (1, g.day, g.agent_id), (2, g.day, g.platform),"
    "   (3, g.day, g.status), (4, g.day, g.outcome), (5, g.day, ''), (6, g.block4, ''),"
    "   (8, g.block, g.account_id), (9, g.block, g.agent_id), (10, g.block, g.platform),"
    "   (11, g.block, g.status), (12, g.block, g.outcome)) AS v (dim, at, value)),"
    " c AS (DELETE FROM analytics_dim r USING z WHERE r.dim = z.dim AND r.day_us = z.at"
    "   AND r.value = z.value AND r.conversations = 0) "
    "SELECT 1";

/* A rebuild: every conversation counted again (after the rollups were emptied). */
#define PG_EVENT_TIME "COALESCE(start_time_us, processed_at_us)"
static const char analytics_rebuild_sql[] = ANALYTICS_SUM("SELECT " PG_FLOOR(
    PG_EVENT_TIME,
    PG_HOUR) " AS hour_us, COALESCE(account_id, '') AS"
             " account_id, COALESCE(agent_id, '') AS agent_id, COALESCE(platform, '') AS platform,"
             " COALESCE(status, '') AS status, COALESCE(outcome, '') AS outcome,"
             " gensendrep_hist_bucket(duration) AS bucket, count(*)::bigint AS n,"
             " sum(message_count)::bigint AS m, sum(duration)::bigint AS d"
             " FROM conversations GROUP BY 1, 2, 3, 4, 5, 6, 7");

static bool prepare_writer(PGconn *c) {
  static const Oid upsert_types[] = {OID_TEXT, OID_TEXT,  OID_TEXT,  OID_INT8,  OID_INT8,  OID_INT8,
                                     OID_TEXT, OID_INT8,  OID_BYTEA, OID_BYTEA, OID_TEXT,  OID_TEXT,
                                     OID_TEXT, OID_BYTEA, OID_BYTEA, OID_TEXT,  OID_BYTEA, OID_INT4,
                                     OID_TEXT, OID_BYTEA, OID_TEXT,  OID_TEXT};
  static const Oid event_types[] = {
      OID_TEXT,  OID_BYTEA, OID_TEXT,  OID_INT8,  OID_TEXT,  OID_BYTEA, OID_INT8,
      OID_BOOL,  OID_TEXT,  OID_TEXT,  OID_TEXT,  OID_TEXT,  OID_INT8,  OID_INT8,
      OID_INT8,  OID_TEXT,  OID_TEXT,  OID_BYTEA, OID_BYTEA, OID_TEXT,  OID_BYTEA,
      OID_BYTEA, OID_BYTEA, OID_INT4,  OID_TEXT,  OID_BYTEA, OID_TEXT,  OID_BOOL,
      OID_INT8,  OID_BYTEA, OID_BYTEA, OID_TEXT,  OID_TEXT};
  static const Oid meta_types[] = {OID_TEXT, OID_BYTEA, OID_TEXT, OID_INT8, OID_INT8, OID_INT8};
  static const Oid seal_key_types[] = {OID_TEXT, OID_BYTEA, OID_INT8};
  static const Oid chunk_types[] = {OID_TEXT, OID_TEXT, OID_INT8, OID_BYTEA, OID_TEXT};
  static const Oid find_types[] = {OID_TEXT, OID_BYTEA};
  static const Oid lock_types[] = {0};
  static const Oid probe_types[] = {OID_INT8};
  static const Oid key_types[] = {OID_TEXT, OID_TEXT, OID_TEXT,  OID_TEXT, OID_BYTEA,
                                  OID_INT8, OID_INT8, OID_BYTEA, OID_TEXT};
  static const Oid key_at_types[] = {OID_TEXT, OID_INT8};
  static const Oid key_revoke_types[] = {OID_TEXT, OID_INT8, OID_INT4};
  static const Oid erase_types[] = {OID_TEXT, OID_INT4, OID_TEXT, OID_INT8};
  static const Oid retain_types[] = {OID_INT8, OID_INT8, OID_INT4, OID_TEXT, OID_INT8};
  return command_ok(c, "SET synchronous_commit = on") &&
         /* This session's audit entries decided inside a batch (PG_AUDIT_PENDING). */
         command_ok(c,
                    "CREATE TEMPORARY TABLE IF NOT EXISTS audit_pending "
                    "(ord INT NOT NULL, target TEXT COLLATE \"C\")") &&
         command_ok(c,
                    "CREATE TEMPORARY TABLE IF NOT EXISTS outbox_pending (ord INT NOT NULL, "
                    "k INT NOT NULL, event_id TEXT COLLATE \"C\" NOT NULL, type INT NOT NULL, "
                    "conversation_id TEXT COLLATE \"C\" NOT NULL, account_id TEXT COLLATE \"C\", "
                    "account_sealed BYTEA, created_us BIGINT NOT NULL, data BYTEA NOT NULL, "
                    "audio_bytes BIGINT, sealed_with TEXT COLLATE \"C\", copy BOOLEAN NOT NULL, "
                    "whole BOOLEAN NOT NULL DEFAULT false) "
                    "ON COMMIT DELETE ROWS") &&
         prepare(c, "outbox_flush", outbox_flush_sql, 0, NULL) &&
         command_ok(c,
                    "CREATE TEMPORARY TABLE IF NOT EXISTS analytics_pending (hour_us BIGINT NOT "
                    "NULL, account_id TEXT COLLATE \"C\" NOT NULL, agent_id TEXT COLLATE \"C\" "
                    "NOT NULL, platform TEXT COLLATE \"C\" NOT NULL, status TEXT COLLATE \"C\" "
                    "NOT NULL, outcome TEXT COLLATE \"C\" NOT NULL, n INT NOT NULL, messages "
                    "BIGINT NOT NULL, duration BIGINT NOT NULL, bucket INT NOT NULL) "
                    "ON COMMIT DELETE ROWS") &&
         prepare(c, "analytics_flush", analytics_flush_sql, 0, NULL) &&
         prepare(c, "analytics_zero", analytics_zero_sql, 0, NULL) &&
         prepare(c, "audit_append",
                 "SELECT ord, id, hash FROM gensendrep_audit_append($1, $2, $3, $4, $5, $6, $7, "
                 "$8, $9, $10, $11)",
                 0, NULL) &&
         prepare(c, "key_create",
                 "INSERT INTO api_keys (" KEY_COLUMNS
                 ", accounts_sealed, sealed_with) "
                 "VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, NULL, $8, $9) RETURNING id",
                 9, key_types) &&
         prepare(c, "key_revoke",
                 "WITH u AS (UPDATE api_keys SET revoked_us = COALESCE(revoked_us, $2) "
                 "WHERE id = $1 RETURNING id), a AS (" PG_AUDIT_PENDING("$3", "id") " FROM u) "
                 "SELECT id FROM u",
                 3, key_revoke_types) &&
         prepare(c, "key_touch",
                 "UPDATE api_keys SET last_used_us = $2 WHERE id = $1 "
                 "AND (last_used_us IS NULL OR last_used_us < $2) RETURNING id",
                 2, key_at_types) &&
         prepare(c, "upsert", upsert_sql, 22, upsert_types) &&
         prepare(c, "record_key", record_key_sql, 3, seal_key_types) &&
         prepare(c, "event", event_sql, 33, event_types) &&
         prepare(c, "erase", erase_sql, 4, erase_types) &&
         prepare(c, "retain", retain_sql, 5, retain_types) &&
         prepare(c, "audio_meta", audio_meta_sql, 6, meta_types) &&
         prepare(c, "audio_chunk", audio_chunk_sql, 5, chunk_types) &&
         prepare(c, "event_find",
                 "SELECT webhook_id, received_at_us FROM events "
                 "WHERE conversation_id = $1 AND body_sha256 = $2 ORDER BY id LIMIT 1",
                 2, find_types) &&
         prepare(c, "lock",
                 "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k ORDER BY k", 1,
                 lock_types) &&
         prepare(c, "probe",
                 "INSERT INTO health_probe (id, checked_us) VALUES (1, $1) "
                 "ON CONFLICT (id) DO UPDATE SET checked_us = EXCLUDED.checked_us",
                 1, probe_types);
}

static bool prepare_reseal(PGconn *c);

/* The writer's connection, checked (see conn_usable) or made again; false when unreachable. */
static bool writer_ready(struct pg_store *s) {
  if (conn_usable(s->writer_conn)) return true;
  PQfinish(s->writer_conn);
  s->writer_conn = pg_connect(s, &s->writer_pause_ms);
  if (s->writer_conn &&
      (!prepare_writer(s->writer_conn) || (s->ring && !prepare_reseal(s->writer_conn)))) {
    /* A server that takes connections but refuses to set one up (its tablespace full, say) is
     * tried again in a second, not once per batch: each attempt is a new backend and new
     * temporary tables, churn that a full disk makes worse. (A connection lost during the
     * set-up is tried again at once, as a lost one is.) */
    if (PQstatus(s->writer_conn) == CONNECTION_OK)
      atomic_store(&s->writer_pause_ms, (int64_t)time_mono_ms() + RECONNECT_PAUSE_MS);
    PQfinish(s->writer_conn);
    s->writer_conn = NULL;
  }
  return s->writer_conn != NULL;
}

static void writer_drop(struct pg_store *s) {
  PQfinish(s->writer_conn);
  s->writer_conn = NULL;
}

/* The batch goes to PostgreSQL as one pipeline — BEGIN, the id locks, every write, the audit
 * entries, COMMIT, a sync point — and one round trip brings all the answers back. Each step records
 * what was sent and the result a success gives; the answers are read step by step in that order
 * (every statement gives one result then NULL, the sync point PGRES_PIPELINE_SYNC), so one
 * more statement cannot shift answers onto the wrong step: anything out of step fails the
 * batch. */
enum step_kind {
  STEP_BEGIN,
  STEP_KEY,
  STEP_LOCK,
  STEP_WRITE,
  STEP_AUDIO,
  STEP_AUDIT,
  STEP_OUTBOX,
  STEP_ANALYTICS,
  STEP_COMMIT,
  STEP_SYNC
};

struct step {
  enum step_kind kind;
  struct store_write *w; /* STEP_WRITE: the write it sends */
  ExecStatusType expect; /* what success returns */
};

#define BATCH_EXTRA_STEPS 9 /* BEGIN, KEY, LOCK, AUDIT, OUTBOX, 2 ANALYTICS, COMMIT, SYNC */

struct batch {
  struct store_write *head; /* the writes, in the order their audit entries are tagged */
  struct step *steps;
  size_t n;         /* steps handed to libpq */
  bool commit_sent; /* COMMIT handed to libpq: from then on the batch may be committed */
  /* the outcome */
  enum store_status status;
  bool committed;                 /* COMMIT's own answer came back */
  bool aborted;                   /* the server failed a step before COMMIT succeeded: none of it
                                   * is stored, so it may be sent again as it is */
  struct store_write *culprit;    /* STORE_CLIENT: the write whose data was refused */
  struct store_write *unreadable; /* an event whose audio file could not be read */
  int64_t outbox_written;         /* outbox events the batch wrote */
  bool conflict; /* rolled back as a deadlock's victim or for a serialization failure (40P01,
                  * 40001): sent again as it is */
  bool synced;   /* every answer came in step, the sync point's last */
  bool reusable; /* and the connection is out of the pipeline, idle: it may stay */
  bool stale;    /* a server error that may outlive the transaction: the connection goes */
};

static void add_step(struct batch *b, enum step_kind kind, struct store_write *w,
                     ExecStatusType expect) {
  b->steps[b->n++] = (struct step){kind, w, expect};
}

static bool send_plain(PGconn *c, const char *sql) {
  return PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0) == 1;
}

/* A conversation's advisory-lock key: the first 8 bytes of the SHA-256 of its id. */
static int64_t lock_key(const char *conversation_id) {
  unsigned char d[CRYPTO_SHA256_LEN];
  crypto_sha256(conversation_id, strlen(conversation_id), d);
  int64_t k;
  memcpy(&k, d, sizeof k);
  return k;
}

/* The advisory-lock keys of the batch's conversation ids, as a bigint[] literal; NULL when
 * the batch has none (or out of memory, *oom set). */
static char *lock_keys(struct store_write *batch, bool *oom) {
  size_t n = 0;
  for (struct store_write *w = batch; w; w = w->next) n += store_write_conversation_id(w) != NULL;
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
    const char *id = store_write_conversation_id(w);
    if (!id) continue;
    pos += (size_t)snprintf(arr + pos, cap - pos, "%s%lld", pos == 1 ? "" : ",",
                            (long long)lock_key(id));
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

/* The sealed values of one write (in the writer's arena until the next write's). */
struct sealed {
  char email_ix[STORE_INDEX_TEXT_LEN + 1], account_ix[STORE_INDEX_TEXT_LEN + 1];
  const char *email_id, *account_id; /* what email_id/account_id hold: an index, or NULL */
  const char *email, *account, *body, *event_body; /* sealed; NULL when there is none */
  const char *failure_reason;                      /* what failure_reason holds: NULL with a ring */
  const char *failure; /* sealed failure reason; NULL when there is none */
  int email_len, account_len, body_len, event_body_len, failure_len;
};

static bool arena_reserve(struct pg_store *s, size_t n) {
  return store_seal_buf_reserve(&s->arena, n);
}

static void arena_trim(struct pg_store *s) {
  if (s->arena.cap > ARENA_KEEP) store_seal_buf_free(&s->arena);
  for (int i = 0; i < 2; i++)
    if (s->outbox_buf[i].cap > ARENA_KEEP) store_seal_buf_free(&s->outbox_buf[i]);
}

/* Seals plain into the arena at *at (reserved beforehand) for the row column/id/pk2. */
static const char *seal_at(struct pg_store *s, size_t *at, const char *column, const char *id,
                           const char *pk2, const void *plain, size_t len, int *out_len) {
  char aad[STORE_AAD_MAX];
  size_t aad_len = row_aad(aad, column, id, pk2), n = seal_sealed_len(s->ring, len);
  unsigned char *out = s->arena.data + *at;
  if (!seal_seal(s->ring, aad, aad_len, plain, len, out)) {
    log_msg(LOG_ERROR, "cannot seal a %s (random source or OpenSSL failed)", column);
    return NULL;
  }
  *at += n;
  *out_len = (int)n;
  return (const char *)out;
}

static size_t sealed_len_of(const struct seal_ring *r, const char *text) {
  return text ? seal_sealed_len(r, strlen(text)) : 0;
}

static bool seal_identity(struct pg_store *s, const struct conversation_input *c, size_t *at,
                          struct sealed *out);

/* What seal_identity needs in the arena. */
static size_t identity_sealed_len(const struct seal_ring *r, const struct conversation_input *c) {
  return sealed_len_of(r, c->email_id) + sealed_len_of(r, c->account_id) +
         sealed_len_of(r, c->failure_reason);
}

/* Seals what a write keeps of a conversation c (NULL: none): its email and account (with their
 * blind indexes) and body, kept as the delivery webhook_id; and event_body (NULL: none), kept as
 * the event webhook_id. False when out of memory or sealing failed. */
static bool seal_write(struct pg_store *s, const struct conversation_input *c,
                       const char *webhook_id, const char *body, size_t body_len,
                       const char *event_conversation_id, const char *event_body,
                       size_t event_body_len, struct sealed *out) {
  const struct seal_ring *r = s->ring;
  memset(out, 0, sizeof *out);
  size_t need = (event_body ? seal_sealed_len(r, event_body_len) : 0), at = 0;
  if (c) need += identity_sealed_len(r, c) + seal_sealed_len(r, body_len);
  if (!arena_reserve(s, need)) return false;
  /* A body's associated data names its conversation: pointing a conversation at another one's
   * delivery, or moving an event to another conversation, by hand does not open. */
  if (event_body &&
      !(out->event_body = seal_at(s, &at, "events.body", webhook_id, event_conversation_id,
                                  event_body, event_body_len, &out->event_body_len)))
    return false;
  if (!c) return true;
  return seal_identity(s, c, &at, out) &&
         (out->body = seal_at(s, &at, "deliveries.body", webhook_id, c->conversation_id, body,
                              body_len, &out->body_len)) != NULL;
}

/* Seals c's email, account and failure reason into the arena at *at (reserved beforehand
 * identity_sealed_len), with the blind indexes of email and account under the first key. */
static bool seal_identity(struct pg_store *s, const struct conversation_input *c, size_t *at,
                          struct sealed *out) {
  const struct seal_ring *r = s->ring;
  if (c->email_id) {
    out->email_id = out->email_ix;
    if (!index_text(r, 0, c->email_id, out->email_ix) ||
        !(out->email = seal_at(s, at, "conversations.email_id", c->conversation_id, NULL,
                               c->email_id, strlen(c->email_id), &out->email_len)))
      return false;
  }
  if (c->account_id) {
    out->account_id = out->account_ix;
    if (!index_text(r, 0, c->account_id, out->account_ix) ||
        !(out->account = seal_at(s, at, "conversations.account_id", c->conversation_id, NULL,
                                 c->account_id, strlen(c->account_id), &out->account_len)))
      return false;
  }
  out->failure_reason = NULL;
  if (c->failure_reason &&
      !(out->failure = seal_at(s, at, "conversations.failure_reason", c->conversation_id, NULL,
                               c->failure_reason, strlen(c->failure_reason), &out->failure_len)))
    return false;
  return true;
}

/* ---------- outbox events (store.h "The outbox") ---------- */

static bool new_event_id(char id[OUTBOX_EVENT_ID_MAX]) {
  char hex[33];
  if (!crypto_random_hex(hex, sizeof hex, 16)) {
    log_msg(LOG_ERROR, "cannot make an outbox event id (random source failed)");
    return false;
  }
  snprintf(id, OUTBOX_EVENT_ID_MAX, "evt_%s", hex);
  return true;
}

/* An event's data as stored: sealed into b with a ring (associated data: the column and the
 * conversation, so an audio event may copy its conversation's data), else as it is. */
static const char *outbox_seal(struct pg_store *s, struct store_seal_buf *b,
                               const char *conversation_id, const char *plain, size_t len,
                               int *out_len) {
  if (!s->ring) {
    *out_len = (int)len;
    return plain;
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = row_aad(aad, "outbox_events.data", conversation_id, NULL), n = 0;
  const unsigned char *out = store_seal_into(b, s->ring, aad, aad_len, plain, len, &n);
  if (!out) {
    log_msg(LOG_ERROR, "cannot seal an outbox event (random source or OpenSSL failed)");
    return NULL;
  }
  *out_len = (int)n;
  return (const char *)out;
}

/* The data of w's conversation event: c as GET shows it once w is committed, without its audio
 * (put back when read, see migration 0008). malloc'ed, or NULL. */
static char *outbox_conversation_data(const struct store_write *w,
                                      const struct conversation_input *c, size_t *len) {
  struct store_conversation *v = calloc(1, sizeof *v);
  if (!v) return NULL;
  snprintf(v->conversation_id, sizeof v->conversation_id, "%s", c->conversation_id);
  snprintf(v->email_id, sizeof v->email_id, "%s", c->email_id ? c->email_id : "");
  snprintf(v->account_id, sizeof v->account_id, "%s", c->account_id ? c->account_id : "");
  snprintf(v->status, sizeof v->status, "%s", c->status ? c->status : "completed");
  snprintf(v->agent_id, sizeof v->agent_id, "%s", c->agent_id ? c->agent_id : "");
  snprintf(v->failure_reason, sizeof v->failure_reason, "%s",
           c->failure_reason ? c->failure_reason : "");
  v->audio_bytes = -1;
  v->has_start = c->has_start;
  v->start_us = c->start_us;
  v->duration = c->duration;
  v->message_count = c->message_count;
  v->processed_us = w->processed_us;
  snprintf(v->webhook_id, sizeof v->webhook_id, "%s", w->webhook_id);
  v->body = (char *)w->body;
  v->body_len = w->body_len;
  char *out = render_conversation_detail(v, len);
  free(v);
  /* Texts that are not UTF-8 cannot be rendered, nor stored: the statement carries a stand-in
   * and PostgreSQL refuses the write as the client's, alone (see commit_batch). */
  const char *texts[] = {c->conversation_id, c->email_id, c->account_id,
                         c->status,          c->agent_id, c->failure_reason};
  for (size_t i = 0; !out && i < sizeof texts / sizeof texts[0]; i++)
    if (texts[i] && !utf8_valid(texts[i], strlen(texts[i]))) {
      out = strdup("null");
      *len = 4;
    }
  return out;
}

/* The "audio" member GET shows for bytes of audio of conversation_id (new reference). */
static json_t *outbox_audio_member(const char *conversation_id, int64_t bytes) {
  struct store_conversation *v = calloc(1, sizeof *v);
  if (!v) return NULL;
  snprintf(v->conversation_id, sizeof v->conversation_id, "%s", conversation_id);
  snprintf(v->status, sizeof v->status, "completed");
  v->audio_bytes = bytes;
  json_t *o = render_conversation(v), *a = o ? json_incref(json_object_get(o, "audio")) : NULL;
  json_decref(o);
  free(v);
  return a;
}

/* An audio event's data when its conversation is not stored: {"conversationId":..,"audio":..}
 * (malloc'ed, or NULL). */
static char *outbox_audio_only_data(const char *conversation_id, int64_t bytes, size_t *len) {
  json_t *a = outbox_audio_member(conversation_id, bytes);
  json_t *o = a ? json_pack("{s:s,s:o}", "conversationId", conversation_id, "audio", a) : NULL;
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!text && !utf8_valid(conversation_id, strlen(conversation_id)))
    text = strdup("null"); /* refused by PostgreSQL, as above */
  if (text) *len = strlen(text);
  return text;
}

/* The data as delivered: the stored data with the "audio" member put back where GET has it
 * (before "transcript") when audio_bytes >= 0. Takes *data (malloc'ed, NUL-terminated);
 * false when out of memory or the data is not a conversation's. */
static bool outbox_with_audio(const char *conversation_id, int64_t audio_bytes, char **data,
                              size_t *len) {
  if (audio_bytes < 0) return true;
  static const char at[] = ",\"transcript\":";
  const char *p = memmem(*data, *len, at, sizeof at - 1);
  json_t *a = outbox_audio_member(conversation_id, audio_bytes);
  char *member = a ? json_dumps(a, JSON_COMPACT) : NULL;
  json_decref(a);
  if (!p || !member) {
    free(member);
    return false;
  }
  size_t head = (size_t)(p - *data), mlen = strlen(member), extra = sizeof ",\"audio\":" - 1 + mlen;
  char *out = malloc(*len + extra + 1);
  if (out) {
    memcpy(out, *data, head);
    memcpy(out + head, ",\"audio\":", sizeof ",\"audio\":" - 1);
    memcpy(out + head + sizeof ",\"audio\":" - 1, member, mlen);
    memcpy(out + head + extra, *data + head, *len - head + 1);
    free(*data);
    *data = out;
    *len += extra;
  }
  free(member);
  return out != NULL;
}

static bool send_conversation(struct pg_store *s, struct store_write *w, const char *ord) {
  const struct conversation_input *c = w->conv;
  char start[24], duration[24], count[24], processed[24];
  if (!write_queue_stamp(&s->queue, w)) return false;
  snprintf(start, sizeof start, "%lld", (long long)c->start_us);
  snprintf(duration, sizeof duration, "%lld", (long long)c->duration);
  snprintf(count, sizeof count, "%lld", (long long)c->message_count);
  snprintf(processed, sizeof processed, "%lld", (long long)w->processed_us);
  struct sealed v = {.email_id = c->email_id,
                     .account_id = c->account_id,
                     .failure_reason = c->failure_reason,
                     .body = w->body,
                     .body_len = (int)w->body_len};
  if (s->ring && !seal_write(s, c, w->webhook_id, w->body, w->body_len, NULL, NULL, 0, &v))
    return false;
  char evt[OUTBOX_EVENT_ID_MAX];
  size_t plain_len = 0;
  int data_len = 0;
  char *plain = new_event_id(evt) ? outbox_conversation_data(w, c, &plain_len) : NULL;
  const char *data =
      plain ? outbox_seal(s, &s->outbox_buf[0], c->conversation_id, plain, plain_len, &data_len)
            : NULL;
  if (!data) {
    free(plain);
    return false;
  }
  const char *vals[22] = {c->conversation_id,
                          v.email_id,
                          v.account_id,
                          c->has_start ? start : NULL,
                          duration,
                          count,
                          w->webhook_id,
                          processed,
                          (const char *)w->body_sha256,
                          v.body,
                          c->status ? c->status : "completed",
                          c->agent_id,
                          v.failure_reason,
                          v.email,
                          v.account,
                          s->ring ? seal_ring_key_id(s->ring, 0) : NULL,
                          v.failure,
                          ord,
                          evt,
                          data,
                          c->platform,
                          c->outcome};
  int lens[22] = {0,
                  0,
                  0,
                  0,
                  0,
                  0,
                  0,
                  0,
                  CRYPTO_SHA256_LEN,
                  v.body_len,
                  0,
                  0,
                  0,
                  v.email_len,
                  v.account_len,
                  0,
                  v.failure_len,
                  0,
                  0,
                  data_len,
                  0,
                  0};
  int formats[22] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0, 0};
  bool ok = PQsendQueryPrepared(s->writer_conn, "upsert", 22, vals, lens, formats, 1) == 1;
  free(plain);
  return ok;
}

/* The API key writes (store.h); each answers the rows it changed. A revocation records its
 * audit entry (ord: its place in the batch) only when the key exists. */
static bool send_key(struct pg_store *s, struct store_write *w, const char *ord) {
  char at[24];
  if (w->kind != STORE_WRITE_KEY_CREATE) {
    snprintf(at, sizeof at, "%lld", (long long)w->key_at_us);
    const char *vals[3] = {w->key_id, at, ord};
    bool revoke = w->kind == STORE_WRITE_KEY_REVOKE;
    return PQsendQueryPrepared(s->writer_conn, revoke ? "key_revoke" : "key_touch", revoke ? 3 : 2,
                               vals, NULL, NULL, 0) == 1;
  }
  const struct apikey_record *k = w->key;
  char scopes[APIKEY_SCOPES_TEXT_MAX], accounts[APIKEY_ACCOUNTS_TEXT_MAX], created[24], expires[24];
  apikey_scopes_text(k->scopes, scopes);
  apikey_accounts_join(k, accounts);
  snprintf(created, sizeof created, "%lld", (long long)k->created_us);
  snprintf(expires, sizeof expires, "%lld", (long long)k->expires_us);
  const char *sealed = NULL;
  int sealed_len = 0;
  size_t pos = 0;
  if (s->ring && (!arena_reserve(s, seal_sealed_len(s->ring, strlen(accounts))) ||
                  !(sealed = seal_at(s, &pos, "api_keys.accounts", k->id, NULL, accounts,
                                     strlen(accounts), &sealed_len))))
    return false;
  const char *vals[9] = {k->id,
                         k->name,
                         scopes,
                         s->ring ? "" : accounts,
                         (const char *)k->secret_sha256,
                         created,
                         k->expires_us ? expires : NULL,
                         sealed,
                         s->ring ? seal_ring_key_id(s->ring, 0) : NULL};
  int lens[9] = {0, 0, 0, 0, 32, 0, 0, sealed_len, 0};
  int formats[9] = {0, 0, 0, 0, 1, 0, 0, 1, 0};
  return PQsendQueryPrepared(s->writer_conn, "key_create", 9, vals, lens, formats, 0) == 1;
}

/* The event statement (see event_sql). */
static enum store_status pg_get(struct store *base, const char *id, bool with_body,
                                struct store_conversation *out);

static bool send_event(struct pg_store *s, struct store_write *w, const char *ord) {
  const struct conversation_input *c = w->conv;
  char received[24], audio_at[24], start[24], duration[24], count[24];
  if (!write_queue_stamp(&s->queue, w)) return false;
  snprintf(received, sizeof received, "%lld", (long long)w->processed_us);
  snprintf(audio_at, sizeof audio_at, "%lld", (long long)w->event_audio_at);
  if (c) {
    snprintf(start, sizeof start, "%lld", (long long)c->start_us);
    snprintf(duration, sizeof duration, "%lld", (long long)c->duration);
    snprintf(count, sizeof count, "%lld", (long long)c->message_count);
  }
  const char *event_body = w->event_body ? w->event_body : "";
  struct sealed v = {.email_id = c ? c->email_id : NULL,
                     .account_id = c ? c->account_id : NULL,
                     .failure_reason = c ? c->failure_reason : NULL,
                     .body = c ? w->body : NULL,
                     .body_len = c ? (int)w->body_len : 0,
                     .event_body = event_body,
                     .event_body_len = (int)w->event_body_len};
  if (s->ring && !seal_write(s, c, w->webhook_id, w->body, w->body_len, w->event_conversation_id,
                             event_body, w->event_body_len, &v))
    return false;
  /* the outbox: the conversation's event (c), the audio's (with its own data when there is no
   * c: the conversation's if it is stored, copied when the batch's events are moved, else
   * the audio alone) */
  bool audio = store_write_has_audio(w);
  char conv_evt[OUTBOX_EVENT_ID_MAX] = "", audio_evt[OUTBOX_EVENT_ID_MAX] = "", bytes[24];
  char *plain[2] = {NULL, NULL};
  size_t plain_len[2] = {0, 0};
  const char *data[2] = {NULL, NULL};
  int data_len[2] = {0, 0};
  bool ok = true;
  snprintf(bytes, sizeof bytes, "%lld", (long long)(audio ? w->audio_len : -1));
  if (c)
    ok = new_event_id(conv_evt) && (plain[0] = outbox_conversation_data(w, c, &plain_len[0])) &&
         (data[0] = outbox_seal(s, &s->outbox_buf[0], c->conversation_id, plain[0], plain_len[0],
                                &data_len[0]));
  if (ok && audio) ok = new_event_id(audio_evt);
  if (ok && audio && !c)
    ok = (plain[1] =
              outbox_audio_only_data(w->event_conversation_id, w->audio_len, &plain_len[1])) &&
         (data[1] = outbox_seal(s, &s->outbox_buf[1], w->event_conversation_id, plain[1],
                                plain_len[1], &data_len[1]));
  /* The conversation as stored now, for an audio event that has none of its own: its data
   * when the conversation has no earlier event to copy (see event_sql), as GET shows it. */
  if (ok && audio && !c) {
    struct store_conversation *stored = calloc(1, sizeof *stored);
    if (stored && pg_get(&s->base, w->event_conversation_id, true, stored) == STORE_OK) {
      stored->audio_bytes = -1; /* put back when read */
      if ((plain[0] = render_conversation_detail(stored, &plain_len[0])) != NULL)
        data[0] = outbox_seal(s, &s->outbox_buf[0], w->event_conversation_id, plain[0],
                              plain_len[0], &data_len[0]);
    }
    if (stored) free(stored->body);
    free(stored);
  }
  if (!ok) {
    free(plain[0]);
    free(plain[1]);
    return false;
  }
  const bool failed = c && c->status && strcmp(c->status, "failed") == 0;
  const char *vals[33] = {w->event_conversation_id,
                          (const char *)w->event_sha256,
                          w->webhook_id,
                          received,
                          w->event_type,
                          v.event_body,
                          w->event_audio_at >= 0 ? audio_at : NULL,
                          c ? "t" : "f",
                          c ? c->conversation_id : NULL,
                          v.email_id,
                          v.account_id,
                          c ? (c->status ? c->status : "completed") : NULL,
                          c && c->has_start ? start : NULL,
                          c ? duration : NULL,
                          c ? count : NULL,
                          c ? c->agent_id : NULL,
                          v.failure_reason,
                          c ? (const char *)w->body_sha256 : NULL,
                          v.body,
                          s->ring ? seal_ring_key_id(s->ring, 0) : NULL,
                          v.email,
                          v.account,
                          v.failure,
                          ord,
                          c ? conv_evt : NULL,
                          data[0],
                          audio ? audio_evt : NULL,
                          failed ? "t" : "f",
                          bytes,
                          data[1],
                          c ? NULL : data[0],
                          c ? c->platform : NULL,
                          c ? c->outcome : NULL};
  int lens[33] = {0};
  int formats[33] = {0};
  lens[30] = c ? 0 : data_len[0];
  formats[30] = 1;
  lens[25] = data_len[0];
  lens[29] = data_len[1];
  formats[25] = formats[29] = 1;
  lens[1] = CRYPTO_SHA256_LEN;
  lens[5] = v.event_body_len;
  lens[17] = c ? CRYPTO_SHA256_LEN : 0;
  lens[18] = v.body_len;
  lens[20] = v.email_len;
  lens[21] = v.account_len;
  lens[22] = v.failure_len;
  formats[1] = formats[5] = formats[17] = formats[18] = formats[20] = formats[21] = formats[22] = 1;
  ok = PQsendQueryPrepared(s->writer_conn, "event", 33, vals, lens, formats, 1) == 1;
  free(plain[0]);
  free(plain[1]);
  return ok;
}

/* ord: the write's place in the batch, which its audit entries (one if it erased something;
 * retention: one per conversation) are recorded under. */
/* Retention erases at most this many conversations per write (each needs an event id made
 * beforehand). */
#define RETAIN_LIMIT_MAX 1000

static bool send_erase(PGconn *c, const struct store_write *w, const char *ord) {
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)time_now_us());
  if (w->kind == STORE_WRITE_ERASE) {
    char evt[OUTBOX_EVENT_ID_MAX];
    if (!new_event_id(evt)) return false;
    const char *vals[] = {w->erase_conversation_id, ord, evt, now};
    return PQsendQueryPrepared(c, "erase", 4, vals, NULL, NULL, 1) == 1;
  }
  char before[24], limit[24];
  int64_t n = w->retain_limit < 1                  ? 1
              : w->retain_limit > RETAIN_LIMIT_MAX ? RETAIN_LIMIT_MAX
                                                   : w->retain_limit;
  snprintf(before, sizeof before, "%lld", (long long)w->retain_before_us);
  snprintf(limit, sizeof limit, "%lld", (long long)n);
  char *ids = malloc((size_t)(2 * n) * OUTBOX_EVENT_ID_MAX + 3);
  if (!ids) return false;
  size_t pos = 0;
  ids[pos++] = '{';
  for (int64_t i = 0; i < 2 * n; i++) { /* conversations, then audios of none (retain_sql) */
    if (i) ids[pos++] = ',';
    if (!new_event_id(ids + pos)) {
      free(ids);
      return false;
    }
    pos += strlen(ids + pos);
  }
  ids[pos++] = '}';
  ids[pos] = '\0';
  const char *vals[] = {before, limit, ord, ids, now};
  bool ok = PQsendQueryPrepared(c, "retain", 5, vals, NULL, NULL, 1) == 1;
  free(ids);
  return ok;
}

/* ---------- the audit entries of a batch ---------- */

static bool buf_put(struct text_buf *b, const void *p, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + n) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) return false;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
  return true;
}

static bool buf_put_u32(struct text_buf *b, uint32_t v) {
  v = htobe32(v);
  return buf_put(b, &v, sizeof v);
}

/* The columns of gensendrep_audit_append, each sent as a one-dimensional array in PostgreSQL's
 * binary format (no text to quote, escape or parse): a header (dimensions 1, flags, element
 * type, length patched in at the end, lower bound 1), then each element as its length (-1:
 * NULL) and bytes. */
enum audit_col {
  COL_ORD,
  COL_AT,
  COL_REQUEST_ID,
  COL_KEY_ID,
  COL_CLIENT_IP,
  COL_ACTION,
  COL_TARGET,
  COL_OUTCOME,
  COL_COUNT,
  COL_PENDING,
  COL_REST,
};
static const Oid audit_col_types[AUDIT_COLUMNS] = {OID_INT4, OID_INT8, OID_TEXT, OID_TEXT,
                                                   OID_TEXT, OID_TEXT, OID_TEXT, OID_TEXT,
                                                   OID_INT8, OID_BOOL, OID_BYTEA};
#define ARRAY_LENGTH_AT 12

static bool elem(struct text_buf *b, const void *p, size_t n) {
  return buf_put_u32(b, (uint32_t)n) && buf_put(b, p, n);
}

static bool elem_null(struct text_buf *b) { return buf_put_u32(b, UINT32_MAX); }

static bool elem_i64(struct text_buf *b, int64_t v) {
  uint64_t be = htobe64((uint64_t)v);
  return elem(b, &be, sizeof be);
}

/* "" is NULL (stored NULL, hashed as length 0). */
static bool elem_text(struct text_buf *b, const char *s, size_t max) {
  size_t n = s ? strnlen(s, max) : 0;
  return n ? elem(b, s, n) : elem_null(b);
}

/* One entry; pending: one per audit_pending row of ord (see migration 0006), its content built
 * there; else its content after the id (model/audit.c's bytes) goes along. */
static bool put_entry(struct text_buf *cols, int64_t ord, const struct audit_entry *e,
                      bool pending) {
  uint32_t o = htobe32((uint32_t)ord);
  unsigned char flag = pending, content[AUDIT_CONTENT_MAX];
  const char *action = audit_action_name(e->action), *outcome = audit_outcome_name(e->outcome);
  size_t n = pending ? 0 : audit_entry_content(e, content);
  return elem(&cols[COL_ORD], &o, sizeof o) && elem_i64(&cols[COL_AT], e->at_us) &&
         elem_text(&cols[COL_REQUEST_ID], e->who.request_id, AUDIT_REQUEST_ID_MAX) &&
         elem_text(&cols[COL_KEY_ID], e->who.key_id, AUDIT_KEY_ID_MAX) &&
         elem_text(&cols[COL_CLIENT_IP], e->who.client_ip, AUDIT_CLIENT_IP_MAX) &&
         elem(&cols[COL_ACTION], action ? action : "", action ? strlen(action) : 0) &&
         elem_text(&cols[COL_TARGET], e->target, AUDIT_TARGET_MAX) &&
         elem(&cols[COL_OUTCOME], outcome ? outcome : "", outcome ? strlen(outcome) : 0) &&
         elem_i64(&cols[COL_COUNT], e->count) && elem(&cols[COL_PENDING], &flag, 1) &&
         (pending ? elem_null(&cols[COL_REST]) : elem(&cols[COL_REST], content + 8, n - 8));
}

/* A change's entry (store.h's `who` comment). */
static bool put_change(struct text_buf *cols, int64_t ord, const struct store_write *w,
                       int64_t at_us, enum audit_action action, const char *target,
                       enum audit_outcome outcome, bool pending) {
  struct audit_entry e = {.at_us = at_us, .action = action, .outcome = outcome, .count = 1};
  e.who = w->who;
  if (target) snprintf(e.target, sizeof e.target, "%s", target);
  return put_entry(cols, ord, &e, pending);
}

/* True for an audio event of this batch answered as a redelivery before it was sent
 * (skip_known_audio_redeliveries): nothing of it is sent but its audit entry. */
static bool is_known(const struct pg_store *s, const struct store_write *w) {
  for (size_t i = 0; i < s->nknown; i++)
    if (s->known[i] == w) return true;
  return false;
}

/* The entries w makes (store.h's `who` comment), tagged ord; *n counts them (pending ones as
 * one). A webhook's entry is at its version's processedAt, except a redelivery known before the
 * batch (its processedAt is the first delivery's): at now_us, as every other change. */
static bool put_write_entries(const struct pg_store *s, struct text_buf *cols, int64_t ord,
                              int64_t now_us, const struct store_write *w, size_t *n) {
  switch (w->kind) {
    case STORE_WRITE_CONVERSATION:
      (*n)++;
      return put_change(cols, ord, w, w->processed_us, AUDIT_WEBHOOK_ACCEPTED,
                        w->conv->conversation_id, AUDIT_OK, false);
    case STORE_WRITE_EVENT:
      (*n)++;
      return put_change(cols, ord, w, is_known(s, w) ? now_us : w->processed_us,
                        AUDIT_WEBHOOK_ACCEPTED, w->event_conversation_id, AUDIT_OK, false);
    case STORE_WRITE_ERASE:
    case STORE_WRITE_RETAIN:
      (*n)++;
      return put_change(cols, ord, w, now_us, AUDIT_CONVERSATION_ERASED, NULL,
                        w->kind == STORE_WRITE_ERASE ? AUDIT_OK : AUDIT_EXPIRED, true);
    case STORE_WRITE_KEY_CREATE:
      (*n)++;
      return put_change(cols, ord, w, now_us, AUDIT_KEY_CREATED, w->key->id, AUDIT_OK, false);
    case STORE_WRITE_KEY_REVOKE:
      (*n)++;
      return put_change(cols, ord, w, now_us, AUDIT_KEY_REVOKED, NULL, AUDIT_OK, true);
    case STORE_WRITE_AUDIT:
      for (size_t i = 0; i < w->audit_count; i++) {
        (*n)++;
        if (!put_entry(cols, ord, &w->audit_entries[i], false)) return false;
      }
      return true;
    case STORE_WRITE_PROBE:
    case STORE_WRITE_KEY_TOUCH:
    case STORE_WRITE_RESEAL:
    case STORE_WRITE_ANALYTICS_REBUILD:
    case STORE_WRITE_SUB_PUT: /* issue 10: to do */
    case STORE_WRITE_SUB_DELETE:
    case STORE_WRITE_REPLAY:
    case STORE_WRITE_OUTBOX:
      return true;
  }
  return true;
}

/* The batch's audit entries, appended by one statement sent after every other write of the
 * batch: it takes the chain head's row lock, so that lock is the last one the transaction
 * takes. A transaction holding the head then never waits for another lock (an id lock, a key
 * row) that a transaction waiting for the head might hold, so instances appending at once
 * cannot deadlock; they only queue for the head, each for the rest of its transaction. No
 * statement is sent (and no lock taken) when the batch makes no entry. */
static bool send_audit(struct pg_store *s, struct store_write *head, struct batch *b) {
  struct text_buf *cols = s->audit_cols;
  for (int i = 0; i < AUDIT_COLUMNS; i++) {
    cols[i].n = 0;
    if (!buf_put_u32(&cols[i], 1) || !buf_put_u32(&cols[i], 1) ||
        !buf_put_u32(&cols[i], audit_col_types[i]) || !buf_put_u32(&cols[i], 0) ||
        !buf_put_u32(&cols[i], 1))
      return false;
  }
  int64_t now_us = time_now_us();
  size_t n = 0, ord = 0;
  for (struct store_write *w = head; w; w = w->next, ord++)
    if (!put_write_entries(s, cols, (int64_t)ord, now_us, w, &n)) return false;
  if (n == 0) return true;
  const char *vals[AUDIT_COLUMNS];
  int lens[AUDIT_COLUMNS], formats[AUDIT_COLUMNS];
  for (int i = 0; i < AUDIT_COLUMNS; i++) {
    uint32_t be = htobe32((uint32_t)n);
    memcpy(cols[i].p + ARRAY_LENGTH_AT, &be, sizeof be);
    vals[i] = cols[i].p;
    lens[i] = (int)cols[i].n;
    formats[i] = 1;
  }
  if (PQsendQueryPrepared(s->writer_conn, "audit_append", AUDIT_COLUMNS, vals, lens, formats, 1) !=
      1)
    return false;
  add_step(b, STEP_AUDIT, NULL, PGRES_TUPLES_OK);
  return true;
}

/* The appended entries' ids and hashes (ord, id, hash per row, in chain order), given back to
 * the STORE_WRITE_AUDIT writes whose entries they are. */
static enum store_status read_audit(struct store_write *head, const PGresult *r) {
  if (PQnfields(r) != 3) return STORE_HARD;
  struct store_write *w = head;
  int64_t wi = 0;
  size_t k = 0;
  for (int row = 0; row < PQntuples(r); row++) {
    if (PQgetlength(r, row, 0) != 4 || PQgetlength(r, row, 1) != 8 ||
        PQgetlength(r, row, 2) != AUDIT_HASH_LEN)
      return STORE_HARD;
    uint32_t o;
    memcpy(&o, PQgetvalue(r, row, 0), sizeof o);
    int64_t ord = (int64_t)be32toh(o);
    if (ord < wi) return STORE_HARD; /* out of order */
    for (; w && wi < ord; wi++, w = w->next) {
      if (w->kind == STORE_WRITE_AUDIT && k != w->audit_count) return STORE_HARD;
      k = 0;
    }
    if (!w) return STORE_HARD;
    if (w->kind != STORE_WRITE_AUDIT) continue;
    if (k >= w->audit_count) return STORE_HARD;
    struct audit_entry *e = &w->audit_entries[k++];
    e->id = get_i64(r, row, 1);
    memcpy(e->hash, PQgetvalue(r, row, 2), AUDIT_HASH_LEN);
  }
  for (; w; w = w->next, k = 0)
    if (w->kind == STORE_WRITE_AUDIT && k != w->audit_count) return STORE_HARD;
  return STORE_OK;
}

static size_t audio_chunks(const struct store_write *w) {
  if (!store_write_has_audio(w)) return 0;
  return (size_t)((w->audio_len + STORE_AUDIO_CHUNK_BYTES - 1) / STORE_AUDIO_CHUNK_BYTES);
}

/* The steps a write takes: its statement, and for audio the metadata and each chunk. */
static size_t write_steps(const struct store_write *w) {
  return 1 + (store_write_has_audio(w) ? 1 + audio_chunks(w) : 0);
}

/* The audio's statements, a chunk at a time: each is read from the file into one buffer and
 * flushed to the server before the next is read, so memory holds one chunk whatever the
 * audio's size. False when the file could not be read (b->unreadable set) or libpq failed. */
static bool send_audio(struct pg_store *s, struct store_write *w, struct batch *b) {
  PGconn *c = s->writer_conn;
  char bytes[24], chunk_bytes[24], received[24], seq[24];
  snprintf(bytes, sizeof bytes, "%lld", (long long)w->audio_len);
  snprintf(chunk_bytes, sizeof chunk_bytes, "%d", STORE_AUDIO_CHUNK_BYTES);
  snprintf(received, sizeof received, "%lld", (long long)w->processed_us);
  const char *meta[6] = {w->event_conversation_id,
                         (const char *)w->event_sha256,
                         w->webhook_id,
                         bytes,
                         chunk_bytes,
                         received};
  int meta_lens[6] = {0, CRYPTO_SHA256_LEN, 0, 0, 0, 0};
  int meta_formats[6] = {0, 1, 0, 0, 0, 0};
  if (PQsendQueryPrepared(c, "audio_meta", 6, meta, meta_lens, meta_formats, 0) != 1) return false;
  add_step(b, STEP_AUDIO, w, PGRES_COMMAND_OK);
  for (int64_t off = 0, n_seq = 0; off < w->audio_len; n_seq++) {
    size_t n = w->audio_len - off < STORE_AUDIO_CHUNK_BYTES ? (size_t)(w->audio_len - off)
                                                            : STORE_AUDIO_CHUNK_BYTES;
    int err = store_audio_pread(w, off, s->audio_buf, n);
    if (err) {
      log_msg(LOG_ERROR, "cannot read an event's audio (%lld of %lld bytes read): %s",
              (long long)off, (long long)w->audio_len, strerror(err));
      b->unreadable = w;
      return false;
    }
    snprintf(seq, sizeof seq, "%lld", (long long)n_seq);
    const char *data = (const char *)s->audio_buf;
    int data_len = (int)n;
    size_t at = 0;
    if (s->ring && (!arena_reserve(s, seal_sealed_len(s->ring, n)) ||
                    !(data = seal_at(s, &at, "audio_chunks.data", w->event_conversation_id, seq,
                                     s->audio_buf, n, &data_len))))
      return false;
    const char *vals[5] = {w->event_conversation_id, w->webhook_id, seq, data,
                           s->ring ? seal_ring_key_id(s->ring, 0) : NULL};
    int lens[5] = {0, 0, 0, data_len, 0};
    int formats[5] = {0, 0, 0, 1, 0};
    if (PQsendQueryPrepared(c, "audio_chunk", 5, vals, lens, formats, 0) != 1 || PQflush(c) != 0)
      return false;
    add_step(b, STEP_AUDIO, w, PGRES_COMMAND_OK);
    off += (int64_t)n;
  }
  return true;
}

/* Hands the whole batch to libpq, recording each step as it goes; false when a step could
 * not be handed over (b->n then counts those that were). */
static void record_key_params(struct pg_store *s, char now[24], const char *vals[3], int lens[3],
                              int formats[3]) {
  snprintf(now, 24, "%lld", (long long)time_now_us());
  vals[0] = seal_ring_key_id(s->ring, 0);
  vals[1] = (const char *)s->key0_check;
  vals[2] = now;
  lens[0] = lens[2] = 0;
  lens[1] = s->key0_check_len;
  formats[0] = formats[2] = 0;
  formats[1] = 1;
}

static bool send_record_key(struct pg_store *s) {
  char now[24];
  const char *vals[3];
  int lens[3], formats[3];
  record_key_params(s, now, vals, lens, formats);
  return PQsendQueryPrepared(s->writer_conn, "record_key", 3, vals, lens, formats, 0) == 1;
}

static bool send_batch(struct pg_store *s, struct store_write *head, struct batch *b) {
  PGconn *c = s->writer_conn;
  bool oom;
  char *keys = lock_keys(head, &oom);
  if (oom) return false;
  bool ok = send_plain(c, "BEGIN");
  if (ok) add_step(b, STEP_BEGIN, NULL, PGRES_COMMAND_OK);
  if (ok && s->ring) { /* first: the seal_keys lock comes before the conversations' */
    ok = send_record_key(s);
    if (ok) add_step(b, STEP_KEY, NULL, PGRES_COMMAND_OK);
  }
  if (ok && keys) {
    const char *vals[] = {keys};
    ok = PQsendQueryPrepared(c, "lock", 1, vals, NULL, NULL, 0) == 1;
    if (ok) add_step(b, STEP_LOCK, NULL, PGRES_TUPLES_OK);
  }
  free(keys);
  b->head = head;
  unsigned n_ord = 0;
  bool staged = false; /* a write that may stage outbox events was sent */
  for (struct store_write *w = head; ok && w; w = w->next, n_ord++) {
    /* audit entries alone: sent with the batch's other entries (send_audit) */
    if (w->kind == STORE_WRITE_AUDIT || is_known(s, w)) continue;
    if (w->kind == STORE_WRITE_RESEAL) continue; /* never here: run apart (take_apart) */
    char ord[16];
    snprintf(ord, sizeof ord, "%u", n_ord);
    bool probe = w->kind == STORE_WRITE_PROBE;
    bool erase = w->kind == STORE_WRITE_ERASE || w->kind == STORE_WRITE_RETAIN;
    staged = staged || (!probe && !store_write_is_key(w));
    ok = probe                          ? send_probe(c)
         : store_write_is_key(w)        ? send_key(s, w, ord)
         : erase                        ? send_erase(c, w, ord)
         : w->kind == STORE_WRITE_EVENT ? send_event(s, w, ord)
                                        : send_conversation(s, w, ord);
    if (ok) add_step(b, STEP_WRITE, w, probe ? PGRES_COMMAND_OK : PGRES_TUPLES_OK);
    if (ok && store_write_has_audio(w)) ok = send_audio(s, w, b);
  }
  /* last before COMMIT: see send_audit */
  ok = ok && send_audit(s, head, b);
  /* after the audit append: see outbox_flush_sql */
  if (ok && staged) {
    ok = PQsendQueryPrepared(c, "outbox_flush", 0, NULL, NULL, NULL, 1) == 1;
    if (ok) add_step(b, STEP_OUTBOX, NULL, PGRES_TUPLES_OK);
  }
  /* the rollups: after every change of the batch (a conversation write, an erasure) */
  if (ok && staged) {
    ok = PQsendQueryPrepared(c, "analytics_flush", 0, NULL, NULL, NULL, 0) == 1;
    if (ok) add_step(b, STEP_ANALYTICS, NULL, PGRES_TUPLES_OK);
    ok = ok && PQsendQueryPrepared(c, "analytics_zero", 0, NULL, NULL, NULL, 0) == 1;
    if (ok) add_step(b, STEP_ANALYTICS, NULL, PGRES_TUPLES_OK);
  }
  if (ok) {
    b->commit_sent = true;
    ok = send_plain(c, "COMMIT");
    if (ok) add_step(b, STEP_COMMIT, NULL, PGRES_COMMAND_OK);
  }
  ok = ok && PQpipelineSync(c) == 1;
  if (ok) add_step(b, STEP_SYNC, NULL, PGRES_PIPELINE_SYNC);
  return ok;
}

/* What a conversation write's one row says: its version's webhook id and processedAt, and
 * whether it was a byte-identical redelivery. */
static enum store_status read_write(struct store_write *w, const PGresult *r) {
  if (w->kind == STORE_WRITE_PROBE) return STORE_OK;
  if (store_write_is_key(w)) {
    w->duplicate = PQntuples(r) == 0; /* KEY_REVOKE: no such key */
    return STORE_OK;
  }
  if (w->kind == STORE_WRITE_ERASE || w->kind == STORE_WRITE_RETAIN) {
    if (PQntuples(r) != 1 || PQnfields(r) != 1 || PQgetlength(r, 0, 0) != 8) return STORE_HARD;
    w->erased = get_i64(r, 0, 0);
    return STORE_OK;
  }
  if (PQntuples(r) != 1 || PQnfields(r) != 3) return STORE_HARD;
  get_text(r, 0, 0, w->webhook_id, sizeof w->webhook_id);
  w->processed_us = get_i64(r, 0, 1);
  w->duplicate = *PQgetvalue(r, 0, 2) != 0;
  return STORE_OK;
}

/* Whether a server error leaves the session as it was once rolled back: a full disk or
 * another resource (53), a value refused (22, 23), a conflict (40), a statement timeout. Others
 * may stay with the session (a prepared plan whose result type changed under it, 0A000; a
 * statement gone, 26000): a new connection prepares everything afresh. */
static bool error_leaves_session(const char *state) {
  static const char *const classes[] = {"53", "22", "23", "40"};
  for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++)
    if (strncmp(state, classes[i], 2) == 0) return true;
  return strcmp(state, "57014") == 0;
}

/* ROLLBACK of the failed transaction a batch left, within ms; false if it did not end so
 * (the connection is then not idle, and goes). */
static bool rollback_within(PGconn *c, int64_t ms) {
  if (PQsendQuery(c, "ROLLBACK") != 1) return false;
  int64_t deadline = (int64_t)time_mono_ms() + ms;
  while (PQisBusy(c)) {
    int64_t left = deadline - (int64_t)time_mono_ms();
    if (left <= 0) return false;
    struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
    if (poll(&p, 1, (int)left) < 0 && errno != EINTR) return false;
    if (!PQconsumeInput(c)) return false;
  }
  bool ok = true;
  for (PGresult *r; (r = PQgetResult(c)) != NULL; PQclear(r))
    if (PQresultStatus(r) != PGRES_COMMAND_OK) ok = false;
  return ok;
}

/* Checks one step's result. */
static enum store_status read_step(PGconn *c, const struct step *step, const PGresult *r,
                                   struct batch *b) {
  ExecStatusType t = PQresultStatus(r);
  if (t != step->expect) {
    /* An error the server itself reported (it has a SQLSTATE; libpq's own, such as a lost
     * connection, have none) before COMMIT succeeded means the transaction is rolled back;
     * so does a step the server skipped for an earlier error. */
    const char *state = t == PGRES_FATAL_ERROR ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!b->committed && (t == PGRES_PIPELINE_ABORTED || state)) b->aborted = true;
    if (!b->committed && state && (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0))
      b->conflict = true;
    if (state && !error_leaves_session(state)) b->stale = true;
    /* the append fails for the log itself (its head removed by hand, say): say why, as no
     * write is to blame (its texts were checked before, see refuse_bad_audit_entries) */
    if (step->kind == STEP_AUDIT && t == PGRES_FATAL_ERROR)
      log_msg(LOG_ERROR, "postgresql audit append failed: %s",
              one_line(PQresultErrorMessage(r), (char[MSG_MAX]){0}, MSG_MAX));
    return t == PGRES_PIPELINE_ABORTED ? STORE_RETRY : status_of(c, r);
  }
  switch (step->kind) {
    case STEP_WRITE:
      return read_write(step->w, r);
    case STEP_AUDIT:
      return read_audit(b->head, r);
    case STEP_OUTBOX:
      if (PQntuples(r) != 1 || PQgetlength(r, 0, 0) != 8) return STORE_HARD;
      b->outbox_written = get_i64(r, 0, 0);
      return STORE_OK;
    case STEP_COMMIT:
      /* COMMIT of a transaction that failed answers ROLLBACK */
      if (strcmp(PQcmdStatus((PGresult *)r), "COMMIT") != 0) return STORE_HARD;
      b->committed = true;
      return STORE_OK;
    case STEP_BEGIN:
    case STEP_KEY:
    case STEP_LOCK:
    case STEP_AUDIO:
    case STEP_ANALYTICS:
    case STEP_SYNC:
      return STORE_OK;
  }
  return STORE_HARD;
}

static void batch_fail(struct batch *b, enum store_status st, const struct step *step) {
  if (b->status != STORE_OK) return; /* the first failure says why */
  b->status = st;
  if (st == STORE_CLIENT) b->culprit = step && step->kind == STEP_WRITE ? step->w : NULL;
}

/* Reads the answers, step by step, up to the sync point. */
static void read_batch(PGconn *c, struct batch *b) {
  for (size_t i = 0; i < b->n; i++) {
    const struct step *step = &b->steps[i];
    PGresult *r = PQgetResult(c);
    if (!r) { /* no answer where one is due: out of step */
      batch_fail(b, PQstatus(c) == CONNECTION_OK ? STORE_HARD : STORE_RETRY, step);
      return;
    }
    enum store_status st = read_step(c, step, r, b);
    PQclear(r);
    if (st != STORE_OK) batch_fail(b, st, step);
    if (step->kind == STEP_SYNC) { /* a sync point has no NULL after it */
      b->synced = i + 1 == b->n && st == STORE_OK;
      continue;
    }
    if ((r = PQgetResult(c)) != NULL) { /* a second result for one statement */
      PQclear(r);
      batch_fail(b, PQstatus(c) == CONNECTION_OK ? STORE_HARD : STORE_RETRY, step);
      return;
    }
  }
  if (PQstatus(c) != CONNECTION_OK) batch_fail(b, STORE_RETRY, NULL);
}

/* One attempt at the batch on the writer's connection. */
static void run_batch(struct pg_store *s, struct store_write *head, struct batch *b) {
  PGconn *c = s->writer_conn;
  b->status = STORE_OK;
  if (PQenterPipelineMode(c) != 1) {
    b->status = STORE_RETRY;
    b->aborted = true;
    return;
  }
  if (send_batch(s, head, b)) {
    read_batch(c, b);
  } else {
    batch_fail(b, STORE_RETRY, NULL);
    b->aborted = !b->commit_sent;
  }
  /* Once COMMIT has answered, the batch is stored, whatever happens to the sync point. */
  if (b->committed) b->status = STORE_OK;
  bool out = PQexitPipelineMode(c) == 1;
  if (!out && b->status == STORE_OK && !b->committed) b->status = STORE_RETRY;
  /* A step the server failed leaves the transaction open and failed (the steps after it, COMMIT
   * too, were skipped; the sync point does not end a transaction BEGIN opened). */
  if (out && b->synced && !b->stale && PQtransactionStatus(c) == PQTRANS_INERROR &&
      !rollback_within(c, ROLLBACK_WAIT_MS))
    log_msg(LOG_WARNING,
            "postgresql: ROLLBACK of a failed batch did not end in time; reconnecting");
  b->reusable = out && b->synced && !b->stale && PQstatus(c) == CONNECTION_OK &&
                PQtransactionStatus(c) == PQTRANS_IDLE;
}

/* A redelivered audio event need not send its megabytes again to be recognised: kept events
 * never change, so one found committed before the batch is a redelivery for certain; it stays
 * in the batch for its audit entry alone (s->known). (Events not found are checked again inside
 * the batch's transaction.) */
static void skip_known_audio_redeliveries(struct pg_store *s, struct store_write **head) {
  s->nknown = 0;
  struct store_write *w = *head;
  while (w) {
    struct store_write *next = w->next;
    if (store_write_has_audio(w) && w->audio_len > 0 && s->nknown < BATCH_MAX) {
      const char *vals[2] = {w->event_conversation_id, (const char *)w->event_sha256};
      int lens[2] = {0, CRYPTO_SHA256_LEN}, formats[2] = {0, 1};
      PGresult *r = PQexecPrepared(s->writer_conn, "event_find", 2, vals, lens, formats, 1);
      if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        get_text(r, 0, 0, w->webhook_id, sizeof w->webhook_id);
        w->processed_us = get_i64(r, 0, 1);
        w->duplicate = true;
        PQclear(r);
        s->known[s->nknown++] = w;
      } else {
        PQclear(r);
      }
    }
    w = next;
  }
}

static bool who_ok(const struct audit_who *who) {
  return utf8_valid(who->request_id, strnlen(who->request_id, AUDIT_REQUEST_ID_MAX)) &&
         utf8_valid(who->key_id, strnlen(who->key_id, AUDIT_KEY_ID_MAX)) &&
         utf8_valid(who->client_ip, strnlen(who->client_ip, AUDIT_CLIENT_IP_MAX));
}

/* The batch's audit entries go in one statement: an entry PostgreSQL refuses would fail the
 * whole batch with no write to blame, so a write with one fails alone beforehand: a text that
 * is not UTF-8 as the client's fault (as its own data would), an entry of an action or outcome
 * out of range (a caller's bug) as ours. */
static void refuse_bad_audit_entries(struct store_write **head) {
  struct store_write *w = *head;
  while (w) {
    struct store_write *next = w->next;
    bool ok = who_ok(&w->who), named = true;
    for (size_t i = 0; ok && named && w->kind == STORE_WRITE_AUDIT && i < w->audit_count; i++) {
      const struct audit_entry *e = &w->audit_entries[i];
      ok = who_ok(&e->who) && utf8_valid(e->target, strnlen(e->target, AUDIT_TARGET_MAX));
      named = audit_action_name(e->action) && audit_outcome_name(e->outcome);
    }
    if (!named) {
      log_msg(LOG_ERROR, "an audit entry has no action or outcome name; its write is refused");
      write_queue_finish_one(head, w, STORE_HARD);
    } else if (!ok) {
      log_msg(LOG_INFO, "an audit entry's text is not UTF-8; its write is refused");
      write_queue_finish_one(head, w, STORE_CLIENT);
    }
    w = next;
  }
}

/* ---------- reencrypt (STORE_WRITE_RESEAL) ---------- */

/* The tables reencrypt walks, each in its primary key's order. reseal_pos is
 * "<tag>:<number>:<text>", the last key passed: a number (deliveries, events, an audio chunk's
 * seq) and a text (a conversation id). Each table's statements: scan (the next rows not sealed
 * with the ring's first key: their keys and conversation ids, no lock), rows (those rows again,
 * locked, once their conversations' advisory locks are held) and update. */
struct reseal_table {
  char tag;
  const char *scan, *rows, *update;
};

static const struct reseal_table reseal_tables[] = {
    {'c', "rs_scan_c", "rs_rows_c", "rs_update_c"}, {'d', "rs_scan_d", "rs_rows_d", "rs_update_d"},
    {'e', "rs_scan_e", "rs_rows_e", "rs_update_e"}, {'a', "rs_scan_a", "rs_rows_a", "rs_update_a"},
    {'k', "rs_scan_k", "rs_rows_k", "rs_update_k"}, {'o', "rs_scan_o", "rs_rows_o", "rs_update_o"},
    {'s', "rs_scan_s", "rs_rows_s", "rs_update_s"},
};
#define RESEAL_TABLES (sizeof reseal_tables / sizeof reseal_tables[0])
#define RESEAL_TEXT_MAX (MODEL_CONVERSATION_ID_MAX + 1)
/* A reencrypt write stops after this many bytes of values, whatever its row limit: the CLI's 500
 * rows of 256 KiB audio chunks would hold the writer (and every webhook behind it) for long. */
#define RESEAL_BYTES_MAX (4 * 1024 * 1024)

/* The scans: $1 text and $2 number after which to start, $3 the key, $4 how many; each row's
 * key, conversation id and size (read from the value's header: nothing is fetched). The rows:
 * after $1/$2 up to $3/$4 (the scan's last), not sealed with $5. Rows another transaction holds
 * are skipped (only retention's can be: every other writer of a conversation's rows holds its
 * advisory lock first, as reencrypt does), so reencrypt never waits while holding rows. */
/* An outbox row holding something to seal: a conversation.deleted event's data is never sealed
 * (it holds only the conversation's id), so one without an account has nothing. */
#define OUTBOX_SEALABLE "(type <> 5 OR account_id IS NOT NULL)"

/* A subscription row reencrypt has to rewrite ($n the first key): its secret not sealed with it,
 * or its URL or account not sealed at all (rows from before they were sealed; an update seals
 * what it changes and the secret again with the first key, naming it in sealed_with). */
#define SUB_RESEAL_DUE(n)                        \
  "(sealed_with IS DISTINCT FROM " n             \
  " OR url_sealed IS NULL OR (account_id <> '' " \
  "AND account_sealed IS NULL))"

static bool prepare_reseal(PGconn *c) {
  static const Oid scan_types[] = {OID_TEXT, OID_INT8, OID_TEXT, OID_INT8};
  static const Oid rows_types[] = {OID_TEXT, OID_INT8, OID_TEXT, OID_INT8, OID_TEXT};
  static const Oid up_c_types[] = {OID_TEXT,  OID_TEXT, OID_TEXT, OID_BYTEA,
                                   OID_BYTEA, OID_TEXT, OID_TEXT, OID_BYTEA};
  static const Oid up_types[] = {OID_INT8, OID_BYTEA, OID_TEXT};
  static const Oid up_a_types[] = {OID_TEXT, OID_INT8, OID_BYTEA, OID_TEXT};
  static const Oid up_k_types[] = {OID_TEXT, OID_TEXT, OID_BYTEA, OID_TEXT};
  static const Oid up_o_types[] = {OID_INT8, OID_BYTEA, OID_TEXT, OID_BYTEA, OID_TEXT};
  static const Oid up_s_types[] = {OID_TEXT, OID_BYTEA, OID_TEXT, OID_BYTEA, OID_TEXT, OID_BYTEA};
  static const Oid key_type[] = {OID_TEXT};
  /* the lock before the check (a statement of its own: the check's snapshot must come after
   * the lock is granted) */
  return prepare(c, "rs_lock", "SELECT pg_advisory_xact_lock(" SEAL_LOCK ")", 0, NULL) &&
         prepare(
             c, "rs_left",
             "SELECT (EXISTS (SELECT 1 FROM conversations WHERE sealed_with IS DISTINCT FROM $1) "
             "OR EXISTS (SELECT 1 FROM deliveries WHERE sealed_with IS DISTINCT FROM $1) "
             "OR EXISTS (SELECT 1 FROM events WHERE sealed_with IS DISTINCT FROM $1) "
             "OR EXISTS (SELECT 1 FROM audio_chunks WHERE sealed_with IS DISTINCT FROM $1) "
             "OR EXISTS (SELECT 1 FROM api_keys WHERE sealed_with IS DISTINCT FROM $1) "
             "OR EXISTS (SELECT 1 FROM outbox_events WHERE sealed_with IS DISTINCT FROM $1 "
             "AND " OUTBOX_SEALABLE
             ") "
             "OR EXISTS (SELECT 1 FROM subscriptions WHERE " SUB_RESEAL_DUE("$1") "))",
             1, key_type) &&
         prepare(c, "rs_retire", "DELETE FROM seal_keys WHERE key_id <> $1", 1, key_type) &&
         prepare(c, "rs_scan_c",
                 "SELECT 0::bigint, conversation_id, conversation_id, 0::bigint FROM conversations "
                 "WHERE conversation_id > $1 AND sealed_with IS DISTINCT FROM $3 "
                 "ORDER BY conversation_id LIMIT $4",
                 4, scan_types) &&
         prepare(c, "rs_rows_c",
                 "SELECT conversation_id, email_id, account_id, sealed_with, email_sealed, "
                 "account_sealed, failure_reason, failure_sealed FROM conversations "
                 "WHERE conversation_id > $1 AND "
                 "conversation_id <= $3 AND sealed_with IS DISTINCT FROM $5 "
                 "ORDER BY conversation_id FOR NO KEY UPDATE SKIP LOCKED",
                 5, rows_types) &&
         prepare(c, "rs_update_c",
                 "UPDATE conversations SET email_id = $2, account_id = $3, email_sealed = $4, "
                 "account_sealed = $5, sealed_with = $6, failure_reason = $7, "
                 "failure_sealed = $8 WHERE conversation_id = $1",
                 8, up_c_types) &&
         prepare(c, "rs_scan_d",
                 "SELECT id, ''::text, conversation_id, octet_length(body)::bigint FROM deliveries "
                 "WHERE id > $2 AND "
                 "sealed_with IS DISTINCT FROM $3 ORDER BY id LIMIT $4",
                 4, scan_types) &&
         prepare(c, "rs_rows_d",
                 "SELECT id, webhook_id, sealed_with, body, conversation_id FROM deliveries "
                 "WHERE id > $2 AND "
                 "id <= $4 AND sealed_with IS DISTINCT FROM $5 "
                 "ORDER BY id FOR NO KEY UPDATE SKIP LOCKED",
                 5, rows_types) &&
         prepare(c, "rs_update_d",
                 "UPDATE deliveries SET body = $2, sealed_with = $3 WHERE id = $1", 3, up_types) &&
         prepare(c, "rs_scan_e",
                 "SELECT id, ''::text, conversation_id, octet_length(body)::bigint FROM events "
                 "WHERE id > $2 AND "
                 "sealed_with IS DISTINCT FROM $3 ORDER BY id LIMIT $4",
                 4, scan_types) &&
         prepare(c, "rs_rows_e",
                 "SELECT id, webhook_id, sealed_with, body, conversation_id FROM events "
                 "WHERE id > $2 AND "
                 "id <= $4 AND sealed_with IS DISTINCT FROM $5 "
                 "ORDER BY id FOR NO KEY UPDATE SKIP LOCKED",
                 5, rows_types) &&
         prepare(c, "rs_update_e", "UPDATE events SET body = $2, sealed_with = $3 WHERE id = $1", 3,
                 up_types) &&
         prepare(c, "rs_scan_a",
                 "SELECT seq, conversation_id, conversation_id, octet_length(data)::bigint "
                 "FROM audio_chunks "
                 "WHERE (conversation_id, seq) > ($1, $2) AND sealed_with IS DISTINCT FROM $3 "
                 "ORDER BY conversation_id, seq LIMIT $4",
                 4, scan_types) &&
         prepare(c, "rs_rows_a",
                 "SELECT seq, conversation_id, sealed_with, data FROM audio_chunks "
                 "WHERE (conversation_id, seq) > ($1, $2) AND (conversation_id, seq) <= ($3, $4) "
                 "AND sealed_with IS DISTINCT FROM $5 "
                 "ORDER BY conversation_id, seq FOR NO KEY UPDATE SKIP LOCKED",
                 5, rows_types) &&
         prepare(c, "rs_scan_k",
                 "SELECT 0::bigint, id, id, 0::bigint FROM api_keys "
                 "WHERE id > $1 AND sealed_with IS DISTINCT FROM $3 ORDER BY id LIMIT $4",
                 4, scan_types) &&
         prepare(c, "rs_rows_k",
                 "SELECT id, accounts, sealed_with, accounts_sealed FROM api_keys "
                 "WHERE id > $1 AND id <= $3 AND sealed_with IS DISTINCT FROM $5 "
                 "ORDER BY id FOR NO KEY UPDATE SKIP LOCKED",
                 5, rows_types) &&
         prepare(c, "rs_update_k",
                 "UPDATE api_keys SET accounts = $2, accounts_sealed = $3, sealed_with = $4 "
                 "WHERE id = $1",
                 4, up_k_types) &&
         prepare(c, "rs_scan_o",
                 "SELECT seq, ''::text, conversation_id, octet_length(data)::bigint "
                 "FROM outbox_events WHERE seq > $2 AND sealed_with IS DISTINCT FROM $3 "
                 "AND " OUTBOX_SEALABLE " ORDER BY seq LIMIT $4",
                 4, scan_types) &&
         prepare(c, "rs_rows_o",
                 "SELECT seq, conversation_id, sealed_with, data, type, account_id, "
                 "account_sealed FROM outbox_events WHERE seq > $2 AND seq <= $4 "
                 "AND sealed_with IS DISTINCT FROM $5 AND " OUTBOX_SEALABLE
                 " ORDER BY seq FOR NO KEY UPDATE SKIP LOCKED",
                 5, rows_types) &&
         prepare(c, "rs_update_o",
                 "UPDATE outbox_events SET data = $2, account_id = $3, account_sealed = $4, "
                 "sealed_with = $5 WHERE seq = $1",
                 5, up_o_types) &&
         prepare(c, "rs_scan_s",
                 "SELECT 0::bigint, id, id, 0::bigint FROM subscriptions "
                 "WHERE id > $1 AND " SUB_RESEAL_DUE("$3") " ORDER BY id LIMIT $4",
                 4, scan_types) &&
         prepare(c, "rs_rows_s",
                 "SELECT id, secret, sealed_with, secret_sealed, url, url_sealed, account_id, "
                 "account_sealed FROM subscriptions "
                 "WHERE id > $1 AND id <= $3 AND " SUB_RESEAL_DUE("$5") " "
                 "ORDER BY id FOR NO KEY UPDATE SKIP LOCKED",
                 5, rows_types) &&
         prepare(c, "rs_update_s",
                 "UPDATE subscriptions SET secret = '', secret_sealed = $2, sealed_with = $3, "
                 "url = '', url_sealed = $4, account_id = $5, account_sealed = $6 WHERE id = $1",
                 6, up_s_types) &&
         prepare(c, "rs_update_a",
                 "UPDATE audio_chunks SET data = $3, sealed_with = $4 "
                 "WHERE conversation_id = $1 AND seq = $2",
                 4, up_a_types);
}

/* Runs a statement on the writer's connection (outside a pipeline); NULL result on failure,
 * logged, with *st set. */
static PGresult *writer_exec(struct pg_store *s, const char *name, int n, const char *const *vals,
                             const int *lens, const int *formats, ExecStatusType want,
                             enum store_status *st) {
  PGresult *r = name ? PQexecPrepared(s->writer_conn, name, n, vals, lens, formats, 1)
                     : PQexec(s->writer_conn, vals[0]);
  if (PQresultStatus(r) == want) return r;
  *st = status_of(s->writer_conn, r);
  if (*st == STORE_CLIENT) *st = STORE_HARD;
  log_msg(LOG_ERROR, "postgresql reencrypt: %s", PG_MSG(s->writer_conn));
  PQclear(r);
  return NULL;
}

static bool writer_command(struct pg_store *s, const char *sql, enum store_status *st) {
  const char *vals[] = {sql};
  PGresult *r = writer_exec(s, NULL, 0, vals, NULL, NULL, PGRES_COMMAND_OK, st);
  PQclear(r);
  return r != NULL;
}

/* A row's value at col as plaintext, in a new buffer: opened when sealed, else copied. */
static enum store_status reseal_open(struct pg_store *s, const char *column, bool audio,
                                     const char *id, const char *pk2, const PGresult *res, int row,
                                     int col, bool sealed, unsigned char **out, size_t *len) {
  const char *data = PQgetvalue(res, row, col);
  size_t n = (size_t)PQgetlength(res, row, col), plain = sealed ? seal_plain_len(data, n) : n;
  /* a body sealed yet not marked so is refused (audio may start like a sealed value) */
  if (!sealed && pk2 && !audio && seal_is_sealed(data, n)) {
    log_msg(LOG_ERROR, "a %s is sealed but its row says plaintext: altered data", column);
    return STORE_HARD;
  }
  if (!(*out = malloc(plain + 1))) return STORE_RETRY;
  if (!sealed) {
    memcpy(*out, data, n);
    *len = n;
    return STORE_OK;
  }
  if (open_value(s->ring, column, id, pk2, data, n, *out, plain, len)) return STORE_OK;
  free(*out);
  *out = NULL;
  return STORE_HARD;
}

/* Rewrites one conversations row: email and account sealed with the first key, their indexes. */
static enum store_status reseal_conversation(struct pg_store *s, const PGresult *res, int i,
                                             enum store_status *st) {
  const char *id = PQgetvalue(res, i, 0);
  bool sealed = !PQgetisnull(res, i, 3);
  char plain[2][MODEL_EMAIL_ID_MAX + 1];
  const char *value[2];
  for (int k = 0; k < 2; k++) {
    const char *column = k == 0 ? "conversations.email_id" : "conversations.account_id";
    if (sealed && !open_text(s->ring, column, id, res, i, 4 + k, plain[k], sizeof plain[k]))
      return STORE_HARD;
    value[k] = sealed ? (PQgetisnull(res, i, 4 + k) ? NULL : plain[k])
                      : (PQgetisnull(res, i, 1 + k) ? NULL : PQgetvalue(res, i, 1 + k));
  }
  char failure[MODEL_FAILURE_REASON_MAX + 1];
  const char *f = NULL;
  if (!PQgetisnull(res, i, 7)) {
    if (!open_text(s->ring, "conversations.failure_reason", id, res, i, 7, failure, sizeof failure))
      return STORE_HARD;
    f = failure;
  } else if (!PQgetisnull(res, i, 6)) {
    f = PQgetvalue(res, i, 6);
    if (seal_is_sealed(f, (size_t)PQgetlength(res, i, 6))) return STORE_HARD;
  }
  struct conversation_input c = {
      .conversation_id = id, .email_id = value[0], .account_id = value[1], .failure_reason = f};
  struct sealed v = {0};
  size_t at = 0;
  if (!arena_reserve(s, identity_sealed_len(s->ring, &c)) || !seal_identity(s, &c, &at, &v))
    return STORE_RETRY;
  const char *vals[8] = {id,      v.email_id, v.account_id,
                         v.email, v.account,  seal_ring_key_id(s->ring, 0),
                         NULL,    v.failure};
  int lens[8] = {0, 0, 0, v.email_len, v.account_len, 0, 0, v.failure_len};
  int formats[8] = {0, 0, 0, 1, 1, 0, 0, 1};
  PGresult *r = writer_exec(s, "rs_update_c", 8, vals, lens, formats, PGRES_COMMAND_OK, st);
  PQclear(r);
  return r ? STORE_OK : *st;
}

/* Rewrites one API key's accounts sealed with the first key (row: id, accounts, sealed_with,
 * accounts_sealed). */
static enum store_status reseal_apikey(struct pg_store *s, const PGresult *res, int i,
                                       enum store_status *st) {
  const char *id = PQgetvalue(res, i, 0);
  char accounts[APIKEY_ACCOUNTS_TEXT_MAX];
  if (!PQgetisnull(res, i, 3)) {
    if (!open_text(s->ring, "api_keys.accounts", id, res, i, 3, accounts, sizeof accounts))
      return STORE_HARD;
  } else {
    size_t len = (size_t)PQgetlength(res, i, 1);
    if (len >= sizeof accounts || seal_is_sealed(PQgetvalue(res, i, 1), len)) return STORE_HARD;
    memcpy(accounts, PQgetvalue(res, i, 1), len);
    accounts[len] = '\0';
  }
  int sealed_len = 0;
  size_t at = 0;
  const char *sealed =
      arena_reserve(s, seal_sealed_len(s->ring, strlen(accounts)))
          ? seal_at(s, &at, "api_keys.accounts", id, NULL, accounts, strlen(accounts), &sealed_len)
          : NULL;
  if (!sealed) return STORE_RETRY;
  const char *vals[4] = {id, "", sealed, seal_ring_key_id(s->ring, 0)};
  int lens[4] = {0, 0, sealed_len, 0};
  int formats[4] = {0, 0, 1, 0};
  PGresult *r = writer_exec(s, "rs_update_k", 4, vals, lens, formats, PGRES_COMMAND_OK, st);
  PQclear(r);
  return r ? STORE_OK : *st;
}

/* Rewrites one outbox event (seq, conversation_id, sealed_with, data, type, account_id,
 * account_sealed): its data (but a conversation.deleted event's) and its account sealed with the
 * first key, the account's index under it. */
static enum store_status reseal_outbox(struct pg_store *s, const PGresult *res, int i,
                                       enum store_status *st) {
  char seq[24], conv[MODEL_CONVERSATION_ID_MAX + 1];
  snprintf(seq, sizeof seq, "%lld", (long long)get_i64(res, i, 0));
  get_text(res, i, 1, conv, sizeof conv);
  bool sealed = !PQgetisnull(res, i, 2);
  uint32_t t;
  memcpy(&t, PQgetvalue(res, i, 4), sizeof t);
  bool deleted = be32toh(t) == OUTBOX_DELETED;
  unsigned char *plain = NULL;
  size_t len = (size_t)PQgetlength(res, i, 3);
  if (!deleted) {
    enum store_status o =
        reseal_open(s, "outbox_events.data", false, conv, NULL, res, i, 3, sealed, &plain, &len);
    if (o != STORE_OK) return o;
  }
  char account[MODEL_ACCOUNT_ID_MAX + 1] = "";
  bool has_account = !PQgetisnull(res, i, 5) || !PQgetisnull(res, i, 6);
  if (!PQgetisnull(res, i, 6)) {
    if (!open_text(s->ring, "conversations.account_id", conv, res, i, 6, account, sizeof account)) {
      free(plain);
      return STORE_HARD;
    }
  } else if (has_account) {
    get_text(res, i, 5, account, sizeof account);
    if (!store_id_sealable(account)) { /* an index without its value */
      free(plain);
      return STORE_HARD;
    }
  }
  char ix[STORE_INDEX_TEXT_LEN + 1];
  size_t at = 0;
  int data_len = (int)len, account_len = 0;
  const char *data = deleted ? PQgetvalue(res, i, 3) : NULL, *acc = NULL;
  bool ok =
      arena_reserve(s, (deleted ? 0 : seal_sealed_len(s->ring, len)) +
                           seal_sealed_len(s->ring, strlen(account))) &&
      (deleted ||
       (data = seal_at(s, &at, "outbox_events.data", conv, NULL, plain, len, &data_len)) != NULL) &&
      (!has_account || (index_text(s->ring, 0, account, ix) &&
                        (acc = seal_at(s, &at, "conversations.account_id", conv, NULL, account,
                                       strlen(account), &account_len)) != NULL));
  free(plain);
  if (!ok) return STORE_RETRY;
  const char *vals[5] = {seq, data, has_account ? ix : NULL, acc, seal_ring_key_id(s->ring, 0)};
  int lens[5] = {0, data_len, 0, account_len, 0};
  int formats[5] = {0, 1, 0, 1, 0};
  PGresult *r = writer_exec(s, "rs_update_o", 5, vals, lens, formats, PGRES_COMMAND_OK, st);
  PQclear(r);
  return r ? STORE_OK : *st;
}

/* A subscription's URL and account as a write stores them: as they are without a ring; with
 * one, the URL sealed ('' in url) and the account sealed with its blind index in account_id
 * ("" stays "": every account), and (secret given) the secret sealed again. */
struct sub_sealing {
  struct store_seal_buf buf;
  const char *url, *url_sealed, *account, *account_sealed, *secret_sealed;
  int url_len, account_len, secret_len;
  struct store_sealed_id account_id;
};

static bool sub_seal(struct pg_store *s, const struct subscription *sub, const char *secret,
                     struct sub_sealing *out);
static bool sub_url_get(const struct seal_ring *ring, const PGresult *r, int row, int col,
                        int sealed_col, const char *id, char *out, size_t cap);
static bool sub_account_get(const struct seal_ring *ring, const PGresult *r, int row, int col,
                            int sealed_col, const char *id, char *out, size_t cap);

/* Rewrites one subscription sealed with the first key: its secret, URL and account (row: id,
 * secret, sealed_with, secret_sealed, url, url_sealed, account_id, account_sealed). */
static enum store_status reseal_subscription(struct pg_store *s, const PGresult *res, int i,
                                             enum store_status *st) {
  struct subscription sub;
  memset(&sub, 0, sizeof sub);
  get_text(res, i, 0, sub.id, sizeof sub.id);
  char secret[OUTBOX_SECRET_MAX];
  if (!PQgetisnull(res, i, 3)) {
    char aad[STORE_AAD_MAX];
    size_t aad_len = row_aad(aad, "subscriptions.secret", sub.id, NULL);
    if (!store_open_text(s->ring, aad, aad_len, PQgetvalue(res, i, 3),
                         (size_t)PQgetlength(res, i, 3), secret, sizeof secret)) {
      log_msg(LOG_ERROR, "subscription %s: its sealed secret cannot be opened", sub.id);
      return STORE_HARD;
    }
  } else {
    get_text(res, i, 1, secret, sizeof secret);
  }
  if (!sub_url_get(s->ring, res, i, 4, 5, sub.id, sub.url, sizeof sub.url) ||
      !sub_account_get(s->ring, res, i, 6, 7, sub.id, sub.account_id, sizeof sub.account_id)) {
    log_msg(LOG_ERROR, "subscription %s: its sealed URL or account cannot be opened", sub.id);
    return STORE_HARD;
  }
  struct sub_sealing sealed;
  bool ok = sub_seal(s, &sub, secret, &sealed);
  memset(secret, 0, sizeof secret);
  if (!ok) {
    store_seal_buf_free(&sealed.buf);
    return STORE_RETRY;
  }
  const char *vals[6] = {
      sub.id,         sealed.secret_sealed, seal_ring_key_id(s->ring, 0), sealed.url_sealed,
      sealed.account, sealed.account_sealed};
  int lens[6] = {0, sealed.secret_len, 0, sealed.url_len, 0, sealed.account_len};
  int formats[6] = {0, 1, 0, 1, 0, 1};
  PGresult *r = writer_exec(s, "rs_update_s", 6, vals, lens, formats, PGRES_COMMAND_OK, st);
  PQclear(r);
  store_seal_buf_free(&sealed.buf);
  return r ? STORE_OK : *st;
}

/* Rewrites one body or chunk sealed with the first key. */
static enum store_status reseal_value(struct pg_store *s, const struct reseal_table *t,
                                      const PGresult *res, int i, enum store_status *st) {
  bool audio = t->tag == 'a';
  const char *column = audio           ? "audio_chunks.data"
                       : t->tag == 'd' ? "deliveries.body"
                                       : "events.body";
  int64_t num = get_i64(res, i, 0);
  const char *id = PQgetvalue(res, i, 1); /* webhook id, or the chunk's conversation id */
  char n[24];
  snprintf(n, sizeof n, "%lld", (long long)num);
  /* the chunk's number, or the body's conversation (the row's own column: a row moved by hand
   * does not open) */
  const char *pk2 = audio ? n : PQgetvalue(res, i, 4);
  unsigned char *plain;
  size_t len, at = 0;
  enum store_status o =
      reseal_open(s, column, audio, id, pk2, res, i, 3, !PQgetisnull(res, i, 2), &plain, &len);
  if (o != STORE_OK) return o;
  int sealed_len = 0;
  const char *sealed = arena_reserve(s, seal_sealed_len(s->ring, len))
                           ? seal_at(s, &at, column, id, pk2, plain, len, &sealed_len)
                           : NULL;
  free(plain);
  if (!sealed) return STORE_RETRY;
  const char *key = seal_ring_key_id(s->ring, 0);
  const char *vals[4] = {audio ? id : n, audio ? n : sealed, audio ? sealed : key, key};
  int lens[4] = {0, audio ? 0 : sealed_len, audio ? sealed_len : 0, 0};
  int formats[4] = {0, audio ? 0 : 1, audio ? 1 : 0, 0};
  PGresult *r = writer_exec(s, t->update, audio ? 4 : 3, vals, lens, formats, PGRES_COMMAND_OK, st);
  PQclear(r);
  return r ? STORE_OK : *st;
}

/* One transaction: up to limit rows of t after (*num, text) not sealed with the first key, and
 * no more than *budget bytes of them (but at least one row), are rewritten; (*num, text) moves to
 * the last row taken, *scanned says how many, *more whether t may hold more after it. */
static enum store_status reseal_segment(struct pg_store *s, const struct reseal_table *t,
                                        int64_t *num, char text[RESEAL_TEXT_MAX], int64_t limit,
                                        int64_t *budget, int64_t *scanned, bool *more,
                                        int64_t *rewritten) {
  enum store_status st = STORE_OK;
  char lo[24], lim[24], hi[24];
  snprintf(lo, sizeof lo, "%lld", (long long)*num);
  snprintf(lim, sizeof lim, "%lld", (long long)limit);
  const char *key = seal_ring_key_id(s->ring, 0);
  if (!writer_command(s, "BEGIN", &st)) return st;
  {
    char now[24];
    const char *kv[3];
    int kl[3], kf[3];
    record_key_params(s, now, kv, kl, kf);
    PGresult *kr = writer_exec(s, "record_key", 3, kv, kl, kf, PGRES_COMMAND_OK, &st);
    PQclear(kr);
    if (!kr) {
      enum store_status ignored;
      (void)writer_command(s, "ROLLBACK", &ignored);
      return st;
    }
  }
  const char *scan_vals[4] = {text, lo, key, lim};
  PGresult *scan = writer_exec(s, t->scan, 4, scan_vals, NULL, NULL, PGRES_TUPLES_OK, &st);
  PGresult *rows = NULL;
  char *locks = NULL;
  int n = scan ? PQntuples(scan) : 0;
  *more = n == limit;
  for (int i = 0; i < n; i++) { /* the rows the byte budget allows */
    int64_t size = get_i64(scan, i, 3);
    if (i > 0 && size > *budget) {
      n = i;
      *more = true;
      *budget = 0; /* spent: this write stops here */
      break;
    }
    *budget -= size;
  }
  if (scan && n > 0) {
    /* the advisory locks of the rows' conversations, as a batch takes them (sorted) */
    size_t cap = (size_t)n * 22 + 3, pos = 1;
    if ((locks = malloc(cap)) != NULL) {
      locks[0] = '{';
      for (int i = 0; i < n; i++)
        pos += (size_t)snprintf(locks + pos, cap - pos, "%s%lld", i ? "," : "",
                                (long long)lock_key(PQgetvalue(scan, i, 2)));
      snprintf(locks + pos, cap - pos, "}");
      const char *lock_vals[1] = {locks};
      PQclear(writer_exec(s, "lock", 1, lock_vals, NULL, NULL, PGRES_TUPLES_OK, &st));
    } else {
      st = STORE_RETRY;
    }
    snprintf(hi, sizeof hi, "%lld", (long long)get_i64(scan, n - 1, 0));
    const char *rows_vals[5] = {text, lo, PQgetvalue(scan, n - 1, 1), hi, key};
    if (st == STORE_OK)
      rows = writer_exec(s, t->rows, 5, rows_vals, NULL, NULL, PGRES_TUPLES_OK, &st);
  }
  int64_t done = 0;
  for (int i = 0; rows && st == STORE_OK && i < PQntuples(rows); i++, done++)
    st = t->tag == 'c'   ? reseal_conversation(s, rows, i, &st)
         : t->tag == 'k' ? reseal_apikey(s, rows, i, &st)
         : t->tag == 'o' ? reseal_outbox(s, rows, i, &st)
         : t->tag == 's' ? reseal_subscription(s, rows, i, &st)
                         : reseal_value(s, t, rows, i, &st);
  /* conversations resealed: their triggers staged the rollups' moves to the new blind indexes in
   * pg_temp.analytics_pending, which COMMIT empties: applied here as a batch applies them (else
   * the rollups kept the old stored accounts, plaintext ones included) */
  if (scan && st == STORE_OK && t->tag == 'c' && done > 0) {
    PQclear(writer_exec(s, "analytics_flush", 0, NULL, NULL, NULL, PGRES_TUPLES_OK, &st));
    if (st == STORE_OK)
      PQclear(writer_exec(s, "analytics_zero", 0, NULL, NULL, NULL, PGRES_TUPLES_OK, &st));
  }
  if (scan && st == STORE_OK && writer_command(s, "COMMIT", &st)) {
    *scanned = n;
    *rewritten = done;
    if (n > 0) {
      *num = get_i64(scan, n - 1, 0);
      snprintf(text, RESEAL_TEXT_MAX, "%s", PQgetvalue(scan, n - 1, 1));
    }
  } else if (PQstatus(s->writer_conn) == CONNECTION_OK) {
    enum store_status ignored;
    (void)writer_command(s, "ROLLBACK", &ignored);
  }
  PQclear(rows);
  PQclear(scan);
  free(locks);
  if (st == STORE_OK && !scan) st = STORE_HARD;
  return st;
}

/* Every table walked: checked again under the seal_keys lock (exclusive: every transaction
 * sealing with some key has committed or waits). No row left off the first key: every other
 * key is retired (an instance still sealing with one records it again in its next batch, and
 * the next start without it is refused). */
static enum store_status reseal_finish(struct pg_store *s, struct store_write *w) {
  enum store_status st = STORE_OK;
  const char *key = seal_ring_key_id(s->ring, 0);
  const char *vals[1] = {key};
  if (!writer_command(s, "BEGIN", &st)) return st;
  PGresult *r = writer_exec(s, "rs_lock", 0, NULL, NULL, NULL, PGRES_TUPLES_OK, &st);
  if (r) {
    PQclear(r);
    r = writer_exec(s, "rs_left", 1, vals, NULL, NULL, PGRES_TUPLES_OK, &st);
  }
  bool ok = r && PQntuples(r) == 1;
  w->reseal_left = ok && *PQgetvalue(r, 0, 0) != 0;
  PQclear(r);
  if (ok && !w->reseal_left) {
    r = writer_exec(s, "rs_retire", 1, vals, NULL, NULL, PGRES_COMMAND_OK, &st);
    ok = r != NULL;
    if (ok && atoi(PQcmdTuples(r)) > 0)
      log_msg(LOG_INFO, "reencrypt: every row is sealed with key %s: %s other key(s) retired", key,
              PQcmdTuples(r));
    PQclear(r);
  }
  if (ok && writer_command(s, "COMMIT", &st)) return STORE_OK;
  if (st == STORE_OK) st = STORE_HARD;
  if (PQstatus(s->writer_conn) == CONNECTION_OK) {
    enum store_status ignored;
    (void)writer_command(s, "ROLLBACK", &ignored);
  }
  return st;
}

/* STORE_WRITE_RESEAL (store.h): a transaction per table visited. */
static enum store_status reseal(struct pg_store *s, struct store_write *w) {
  w->erased = 0;
  w->reseal_left = 0;
  if (!s->ring) {
    log_msg(LOG_ERROR, "reencrypt needs ENCRYPTION_KEYS");
    return STORE_HARD;
  }
  size_t t = 0;
  int64_t num = -1;
  char text[RESEAL_TEXT_MAX] = "";
  if (w->reseal_pos[0]) {
    char *end = NULL;
    while (t < RESEAL_TABLES && reseal_tables[t].tag != w->reseal_pos[0]) t++;
    if (w->reseal_pos[1] == ':') num = strtoll(w->reseal_pos + 2, &end, 10);
    if (t == RESEAL_TABLES || !end || *end != ':' || strlen(end + 1) >= sizeof text) {
      log_msg(LOG_ERROR, "reencrypt: not a position this store gave");
      return STORE_HARD;
    }
    snprintf(text, sizeof text, "%s", end + 1);
  }
  int64_t left = w->reseal_limit > 0 ? w->reseal_limit : 1, budget = RESEAL_BYTES_MAX;
  while (left > 0 && budget > 0 && t < RESEAL_TABLES) {
    int64_t scanned = 0, rewritten = 0;
    bool more = false;
    enum store_status st = reseal_segment(s, &reseal_tables[t], &num, text, left, &budget, &scanned,
                                          &more, &rewritten);
    if (st != STORE_OK) {
      if (PQstatus(s->writer_conn) != CONNECTION_OK) writer_drop(s);
      return st;
    }
    w->erased += rewritten;
    if (!more) {
      t++;
      num = -1;
      text[0] = '\0';
    }
    left -= scanned;
    if (t == RESEAL_TABLES) {
      w->reseal_pos[0] = '\0';
      enum store_status fin = reseal_finish(s, w);
      if (fin != STORE_OK) {
        if (PQstatus(s->writer_conn) != CONNECTION_OK) writer_drop(s);
        return fin;
      }
    } else
      snprintf(w->reseal_pos, sizeof w->reseal_pos, "%c:%lld:%s", reseal_tables[t].tag,
               (long long)num, text);
  }
  return STORE_OK;
}

/* STORE_WRITE_ANALYTICS_REBUILD, on connection c (the writer's, or the start-up one): one
 * REPEATABLE READ transaction that locks the rollups first (a batch of another instance waits
 * before its flush, then adds its changes to what this one counted), empties them, and sums
 * every conversation again. *counted: the conversations counted. */
static enum store_status analytics_rebuild_on(PGconn *c, int64_t *counted) {
  static const char *const steps[] = {
      "BEGIN ISOLATION LEVEL REPEATABLE READ",
      /* a recount of millions of conversations takes longer than any one webhook may */
      "SET LOCAL statement_timeout = 0",
      "LOCK TABLE analytics_hour, analytics_total, analytics_dim, analytics_block, analytics_state "
      "IN EXCLUSIVE MODE",
      "DELETE FROM analytics_hour", "DELETE FROM analytics_total", "DELETE FROM analytics_dim",
      "DELETE FROM analytics_block", analytics_rebuild_sql,
      "UPDATE analytics_state SET rebuild = false", "SELECT count(*)::text FROM conversations",
      "COMMIT"};
  enum { STEP_COUNT = sizeof steps / sizeof steps[0] - 2 }; /* the count's, then COMMIT */
  enum store_status st = STORE_OK;
  *counted = 0;
  for (size_t i = 0; st == STORE_OK && i < sizeof steps / sizeof steps[0]; i++) {
    PGresult *r = PQexec(c, steps[i]);
    ExecStatusType t = PQresultStatus(r);
    if (t != PGRES_COMMAND_OK && t != PGRES_TUPLES_OK) {
      st = status_of(c, r);
      if (st == STORE_OK || st == STORE_CLIENT) st = STORE_HARD;
      log_msg(LOG_ERROR, "postgresql analytics rebuild: %s", PG_MSG(c));
    } else if (t == PGRES_TUPLES_OK && PQntuples(r) == 1 && i == STEP_COUNT) {
      *counted = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    } else if (i == STEP_COUNT + 1 && strcmp(PQcmdStatus(r), "COMMIT") != 0) {
      st = STORE_HARD;
    }
    PQclear(r);
  }
  if (st != STORE_OK && PQstatus(c) == CONNECTION_OK) PQclear(PQexec(c, "ROLLBACK"));
  return st;
}

/* At start-up: a store older than migration 0011 gets its rollups once. */
static bool analytics_rebuild_if_due(PGconn *c, char *err, size_t errlen) {
  PGresult *r = PQexec(c, "SELECT rebuild FROM analytics_state WHERE id = 1");
  bool due = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
             strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  if (!due) return true;
  /* Before HTTP is up: say why start-up takes a while (one statement: no progress to show), and
   * that stopping it only makes the next start do it again. */
  r = PQexec(c, "SELECT count(*)::text FROM conversations");
  long long total = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                        ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                        : -1;
  PQclear(r);
  log_msg(
      LOG_INFO,
      "computing analytics rollups for %lld conversations, once (store older than migration "
      "0011, 0012 or 0018); this may take minutes on millions of conversations; HTTP starts when "
      "it is done (stopping the process now makes the next start begin again)",
      total);
  int64_t started = time_now_us(), counted;
  if (analytics_rebuild_on(c, &counted) != STORE_OK) {
    snprintf(err, errlen, "DATABASE_URL: postgresql: cannot compute the analytics rollups: %s",
             PG_MSG(c));
    return false;
  }
  log_msg(LOG_INFO, "analytics rollups computed from %lld conversations in %.1f s",
          (long long)counted, (double)(time_now_us() - started) / 1e6);
  return true;
}

/* Writes that do not go in the batch's pipeline: a reencrypt step (it reads rows before it
 * rewrites them), and, with a ring, a conversation whose email or account could be mistaken for
 * a blind index (refused as the client's: the model never lets one through). */
static void take_apart(struct pg_store *s, struct store_write **head) {
  struct store_write *w = *head;
  while (w) {
    struct store_write *next = w->next;
    const struct conversation_input *c =
        w->kind == STORE_WRITE_CONVERSATION || w->kind == STORE_WRITE_EVENT ? w->conv : NULL;
    if (w->kind == STORE_WRITE_RESEAL)
      write_queue_finish_one(head, w, writer_ready(s) ? reseal(s, w) : STORE_RETRY);
    else if (w->kind == STORE_WRITE_ANALYTICS_REBUILD)
      write_queue_finish_one(
          head, w,
          writer_ready(s) ? analytics_rebuild_on(s->writer_conn, &w->erased) : STORE_RETRY);
    else if (c && (!store_id_sealable(c->email_id) || !store_id_sealable(c->account_id)))
      write_queue_finish_one(head, w, STORE_CLIENT);
    w = next;
  }
}

/* Commits the batch in *head and returns the status of what is left there. A write whose data
 * the database refuses is finished alone as the client's fault and the rest sent again. When
 * the connection is lost, the batch is sent once more on a fresh connection, but only if the
 * server said it rolled the transaction back: the write is not idempotent once committed (a
 * replay appends a second history row, and would put back a version another instance has
 * replaced since), so a batch whose COMMIT may have landed answers 503 and its clients'
 * retries are recognised as redeliveries. */
static enum store_status commit_batch(struct pg_store *s, struct store_write **head) {
  refuse_bad_audit_entries(head);
  s->nknown = 0;
  take_apart(s, head);
  if (*head && writer_ready(s)) skip_known_audio_redeliveries(s, head);
  size_t n = 0;
  for (struct store_write *w = *head; w; w = w->next) n += write_steps(w);
  struct step *steps = malloc((n + BATCH_EXTRA_STEPS) * sizeof *steps);
  if (!steps) return STORE_RETRY;
  bool retried = false;
  enum store_status st = STORE_OK;
  while (*head) {
    if (!writer_ready(s)) {
      st = STORE_RETRY;
      break;
    }
    struct batch b = {.steps = steps};
    run_batch(s, *head, &b);
    st = b.status;
    s->batch_outbox = b.committed ? b.outbox_written : 0;
    if (st == STORE_OK && PQstatus(s->writer_conn) == CONNECTION_OK) break;
    bool lost = PQstatus(s->writer_conn) != CONNECTION_OK;
    if (lost) report_down(s, PG_MSG(s->writer_conn));
    /* A pipeline that failed out of step leaves the connection in an unknown state: start
     * afresh. One the server failed cleanly (a full disk, a constraint) answered every step
     * and rolled back: the connection stays, so that a full disk does not turn every batch
     * into a new backend. */
    if (!b.reusable) writer_drop(s);
    if (st == STORE_OK) break; /* committed; only the connection was lost afterwards */
    if (b.unreadable) {        /* nothing was committed: that write fails, the rest goes again */
      write_queue_finish_one(head, b.unreadable, STORE_HARD);
      continue;
    }
    if (st == STORE_CLIENT && b.culprit) {
      log_msg(LOG_INFO,
              "postgresql refused a conversation's data; the rest of its batch is "
              "sent again");
      write_queue_finish_one(head, b.culprit, STORE_CLIENT);
      continue;
    }
    if (st == STORE_CLIENT) st = STORE_HARD; /* refused, but not data a client sent */
    if (lost && b.aborted && !retried) {
      retried = true;
      log_msg(LOG_WARNING,
              "postgresql connection lost, batch rolled back; sending it again on "
              "a new connection");
      continue;
    }
    /* A deadlock's victim (an erasure against a FINISH or a replay, say) stored nothing: once
     * more rather than answering 503 to every webhook of the batch. */
    if (b.conflict && b.aborted && !retried) {
      retried = true;
      log_msg(LOG_WARNING,
              "postgresql batch rolled back (deadlock or serialization); sending it "
              "again");
      continue;
    }
    log_msg(LOG_ERROR, "postgresql batch failed, %s",
            b.aborted ? "nothing of it stored" : "its COMMIT may have landed");
    break;
  }
  free(steps);
  return st;
}

static void *writer_main(void *arg) {
  struct pg_store *s = arg;
  struct store_write *batch;
  while ((batch = write_queue_take(&s->queue)) != NULL) {
    s->batch_outbox = 0;
    write_queue_commit_begin(&s->queue, batch);
    enum store_status st = commit_batch(s, &batch);
    write_queue_commit_end(&s->queue);
    if (s->batch_outbox > 0 && s->notify) s->notify(s->notify_cls);
    write_queue_finish(batch, st);
    arena_trim(s);
  }
  return NULL;
}

static void pg_submit(struct store *base, struct store_write *w) {
  struct pg_store *s = (struct pg_store *)base;
  bool own = w->kind == STORE_WRITE_SUB_PUT || w->kind == STORE_WRITE_SUB_DELETE ||
             w->kind == STORE_WRITE_REPLAY || w->kind == STORE_WRITE_OUTBOX;
  write_queue_push(own ? &s->ob_queue : &s->queue, w);
}

/* ---------- readers ---------- */

/* Audio lives apart from conversations (it may come first): a primary-key lookup per row
 * read, nothing on the write path. Then the sealing (key, sealed email and account), the first
 * processed time (the list's order); each statement adds the webhook id, the body and the body's
 * sealing key (see read_row). */
#define SELECT_COLUMNS                                                                        \
  "SELECT c.conversation_id, c.email_id, c.account_id, c.status, c.start_time_us, "           \
  "c.duration, c.message_count, c.processed_at_us, c.agent_id, c.failure_reason, "            \
  "(SELECT a.bytes FROM audio_meta a WHERE a.conversation_id = c.conversation_id) AS audio, " \
  "c.sealed_with, c.email_sealed, c.account_sealed, c.failure_sealed, "                       \
  "c.first_processed_at_us AS f, "

/* The part of [$2, $3) that each chunk holds (where it starts, its bytes), and the audio's
 * length; one row with no chunk when the range is empty, none when there is no audio. $2 is
 * below the length and the end. A sealed chunk comes whole (only the whole opens), from its
 * start, with its key and number: the reader opens it and takes the part. */
#define CHUNK_START "c.seq * m.chunk_bytes"
#define FROM_IN_CHUNK "GREATEST($2 - " CHUNK_START ", 0)"
static const char audio_read_sql[] =
    "SELECT m.bytes, " CHUNK_START " + CASE WHEN c.sealed_with IS NULL THEN " FROM_IN_CHUNK
    " ELSE 0 END, "
    "CASE WHEN c.sealed_with IS NULL THEN substring(c.data FROM (" FROM_IN_CHUNK
    " + 1)::int FOR "
    "(LEAST(LEAST($3, m.bytes) - " CHUNK_START ", m.chunk_bytes) - " FROM_IN_CHUNK
    ")::int) ELSE c.data END, c.sealed_with, c.seq "
    "FROM audio_meta m LEFT JOIN audio_chunks c ON c.conversation_id = m.conversation_id "
    "AND $2 < LEAST($3, m.bytes) AND c.seq >= $2 / m.chunk_bytes "
    "AND " CHUNK_START
    " < LEAST($3, m.bytes) "
    "WHERE m.conversation_id = $1 ORDER BY c.seq";

/* Never the secret (store.h sub_secret): NULLs in its two places. */
#define READ_SUB_COLUMNS                                                                        \
  "id, url, NULL::text, NULL::bytea, event_types, account_id, enabled, paused, max_per_second," \
  " disabled_reason, created_us, updated_us, last_success_us, url_sealed, account_sealed,"      \
  " CASE WHEN hold_until_us > (extract(epoch FROM statement_timestamp()) * 1000000)::bigint"    \
  " THEN hold_until_us ELSE 0 END"

/* Health's numbers ($1 the broker cursor, $2 whether there is one), read on every check, so
 * each count stops at STATS_CAP rows (health says "at least" that many then) and dead letters
 * are found through their own index (migration 0009): the oldest pending delivery is found as
 * the lowest seq pending, the queue's oldest as the first after the cursor (seq follows
 * creation closely enough). Pending: rows waiting, and every subscription's events after its
 * cursor that it wants (types, and its account by the stored value), not fanned out yet or
 * passed by because the subscription is held (its URL or account does not open: its cursor
 * stays), as SQLite's OR_PENDING counts them. */
#define STATS_CAP "1000000"
static const char outbox_stats_sql[] =
    "WITH q AS (SELECT COALESCE((SELECT seq FROM outbox_cursors WHERE name = $1), 0) AS c) "
    "SELECT LEAST(" STATS_CAP
    ", (SELECT count(*) FROM (SELECT 1 FROM sub_deliveries"
    "   WHERE state = 0 LIMIT " STATS_CAP
    ") x) + (SELECT count(*) FROM (SELECT 1 FROM subscriptions s JOIN outbox_events e"
    "   ON e.seq > s.cursor_seq AND ((s.event_types >> e.type) & 1) = 1"
    "   AND (s.account_id = '' OR e.account_id = s.account_id) LIMIT " STATS_CAP
    ") y)),"
    " (SELECT e.created_us FROM outbox_events e WHERE e.seq = (SELECT min(x) FROM ("
    "   SELECT min(seq) AS x FROM sub_deliveries WHERE state = 0 UNION ALL"
    "   SELECT (SELECT e.seq FROM outbox_events e WHERE e.seq > s.cursor_seq"
    "     AND ((s.event_types >> e.type) & 1) = 1"
    "     AND (s.account_id = '' OR e.account_id = s.account_id) ORDER BY e.seq LIMIT 1)"
    "   FROM subscriptions s) m)),"
    " (SELECT count(*) FROM (SELECT 1 FROM outbox_events, q WHERE $2::bool AND seq > q.c"
    "   LIMIT " STATS_CAP
    ") x),"
    " (SELECT created_us FROM outbox_events, q WHERE $2::bool AND seq > q.c ORDER BY seq"
    "   LIMIT 1),"
    " (SELECT count(*) FROM (SELECT 1 FROM sub_deliveries WHERE state = 1"
    "   LIMIT " STATS_CAP ") x)";

static bool prepare_reader(PGconn *c) {
  static const Oid get_types[] = {OID_TEXT, OID_BOOL};
  static const Oid events_types[] = {OID_TEXT};
  static const Oid audio_types[] = {OID_TEXT, OID_INT8, OID_INT8};
  return prepare(c, "key_get", "SELECT " KEY_READ_COLUMNS " FROM api_keys WHERE id = $1", 1,
                 events_types) &&
         prepare(c, "key_list", "SELECT " KEY_READ_COLUMNS " FROM api_keys ORDER BY created_us, id",
                 0, NULL) &&
         prepare(c, "get",
                 SELECT_COLUMNS
                 "c.webhook_id, d.body, d.sealed_with FROM conversations c "
                 "LEFT JOIN LATERAL (SELECT body, sealed_with FROM deliveries "
                 "WHERE $2 AND id = c.delivery_id) d ON true WHERE c.conversation_id = $1",
                 2, get_types) &&
         prepare(c, "ping", "SELECT 1", 0, NULL) &&
         prepare(c, "audit_head", "SELECT last_id, last_hash FROM audit_head WHERE id = 1", 0,
                 NULL) &&
         prepare(c, "events",
                 "SELECT webhook_id, type, received_at_us, body, audio_at, body_sha256, "
                 "sealed_with FROM events WHERE conversation_id = $1 ORDER BY id",
                 1, events_types) &&
         prepare(c, "audio", audio_read_sql, 3, audio_types) &&
         prepare(c, "sub_get", "SELECT " READ_SUB_COLUMNS " FROM subscriptions WHERE id = $1", 0,
                 NULL) &&
         prepare(c, "sub_secret", "SELECT secret, secret_sealed FROM subscriptions WHERE id = $1",
                 0, NULL) &&
         prepare(c, "sub_list",
                 "SELECT " READ_SUB_COLUMNS " FROM subscriptions ORDER BY created_us, id", 0,
                 NULL) &&
         prepare(c, "attempt_list",
                 "SELECT id, event_id, type, attempt, status_code, latency_ms, at_us, outcome, "
                 "response_head FROM delivery_attempts WHERE sub_id = $1 AND id < $2::bigint "
                 "ORDER BY id DESC LIMIT $3::bigint OFFSET $4::bigint",
                 0, NULL) &&
         prepare(c, "outbox_stats", outbox_stats_sql, 0, NULL);
}

static void reader_drop(struct pg_reader *r) {
  PQfinish(r->conn);
  r->conn = NULL;
  memset(r->prepared_lists, 0, sizeof r->prepared_lists);
  r->prepared_scans = 0;
}

static void *reader_make(void *unused) {
  (void)unused;
  return calloc(1, sizeof(struct pg_reader));
}

static void reader_release(void *r) {
  reader_drop(r);
  free(((struct pg_reader *)r)->opened);
  free(r);
}

/* The calling thread's connection, checked (see conn_usable) or made again; NULL when
 * unreachable. */
static struct pg_reader *reader_get(struct pg_store *s) {
  struct pg_reader *r = thread_slot_get(&s->readers, reader_make, NULL);
  if (!r) return NULL;
  if (r->conn && !conn_usable(r->conn)) reader_drop(r);
  if (!r->conn) {
    r->conn = pg_connect(s, &s->readers_pause_ms);
    if (r->conn && !prepare_reader(r->conn)) reader_drop(r);
  }
  return r->conn ? r : NULL;
}

/* After a failed statement: drops the connection when it broke (true then). */
static bool reader_check_lost(struct pg_store *s, struct pg_reader *r) {
  if (PQstatus(r->conn) == CONNECTION_OK) return false;
  report_down(s, PG_MSG(r->conn));
  reader_drop(r);
  return true;
}

/* Runs a prepared read; drops the connection when it broke. */
static PGresult *reader_checked(struct pg_store *s, struct pg_reader *r, PGresult *res,
                                enum store_status *st) {
  *st = PQresultStatus(res) == PGRES_TUPLES_OK ? STORE_OK : status_of(r->conn, res);
  if (*st == STORE_CLIENT) {
    /* the client's fault: its bytes stay out of the log, the SQLSTATE says enough */
    log_msg(LOG_INFO, "postgresql refused a value a client sent (SQLSTATE %s)",
            PQresultErrorField(res, PG_DIAG_SQLSTATE));
  } else if (*st != STORE_OK) {
    log_msg(LOG_ERROR, "postgresql read failed: %s", PG_MSG(r->conn));
    (void)reader_check_lost(s, r);
  }
  return res;
}

static PGresult *reader_exec(struct pg_store *s, struct pg_reader *r, const char *name, int n,
                             const char *const *vals, enum store_status *st) {
  return reader_checked(s, r, PQexecPrepared(r->conn, name, n, vals, NULL, NULL, 1), st);
}

/* Reads are idempotent: one that failed because its connection broke (the server restarted
 * while this thread's connection sat idle, say) is tried once more on a new connection. */
#define READ_ATTEMPTS 2

/* Reads a conversation whose columns start at column first (SELECT_COLUMNS, then the webhook
 * id, the body and its key), opening what is sealed. */
static enum store_status read_row(const struct seal_ring *ring, const PGresult *res, int row,
                                  int first, struct store_conversation *out) {
  memset(out, 0, sizeof *out);
  out->audio_bytes = -1;
  get_text(res, row, first, out->conversation_id, sizeof out->conversation_id);
  get_text(res, row, first + 1, out->email_id, sizeof out->email_id);
  get_text(res, row, first + 2, out->account_id, sizeof out->account_id);
  get_text(res, row, first + 3, out->status, sizeof out->status);
  out->has_start = !PQgetisnull(res, row, first + 4);
  if (out->has_start) out->start_us = get_i64(res, row, first + 4);
  out->duration = get_i64(res, row, first + 5);
  out->message_count = get_i64(res, row, first + 6);
  out->processed_us = get_i64(res, row, first + 7);
  get_text(res, row, first + 8, out->agent_id, sizeof out->agent_id);
  get_text(res, row, first + 9, out->failure_reason, sizeof out->failure_reason);
  if (!PQgetisnull(res, row, first + 10)) out->audio_bytes = get_i64(res, row, first + 10);
  if (!PQgetisnull(res, row, first + 11) &&
      (!open_text(ring, "conversations.email_id", out->conversation_id, res, row, first + 12,
                  out->email_id, sizeof out->email_id) ||
       !open_text(ring, "conversations.account_id", out->conversation_id, res, row, first + 13,
                  out->account_id, sizeof out->account_id)))
    return STORE_HARD;
  /* plaintext (or not marked sealed): an id that passes for a blind index has lost its value */
  if (PQgetisnull(res, row, first + 11) &&
      ((out->email_id[0] && !store_id_sealable(out->email_id)) ||
       (out->account_id[0] && !store_id_sealable(out->account_id)))) {
    log_msg(LOG_ERROR, "conversation %s: a blind index without its sealed value: altered data",
            out->conversation_id);
    return STORE_HARD;
  }
  if (!PQgetisnull(res, row, first + 14)) {
    if (!open_text(ring, "conversations.failure_reason", out->conversation_id, res, row, first + 14,
                   out->failure_reason, sizeof out->failure_reason))
      return STORE_HARD;
  } else if (!PQgetisnull(res, row, first + 9) &&
             seal_is_sealed(PQgetvalue(res, row, first + 9),
                            (size_t)PQgetlength(res, row, first + 9))) {
    return STORE_HARD;
  }
  out->first_processed_us = get_i64(res, row, first + 15);
  if (PQgetisnull(res, row, first + 16)) return STORE_OK;
  get_text(res, row, first + 16, out->webhook_id, sizeof out->webhook_id);
  if (PQgetisnull(res, row, first + 17)) return STORE_OK;
  /* The body's associated data names this conversation: a delivery of another one (delivery_id
   * and webhook_id edited by hand) does not open here. */
  if (!PQgetisnull(res, row, first + 18))
    return open_alloc(ring, "deliveries.body", out->webhook_id, out->conversation_id, res, row,
                      first + 17, &out->body, &out->body_len);
  size_t len = (size_t)PQgetlength(res, row, first + 17);
  if (seal_is_sealed(PQgetvalue(res, row, first + 17), len)) {
    log_msg(LOG_ERROR, "conversation %s: a sealed body its row says is plaintext: altered data",
            out->conversation_id);
    return STORE_HARD;
  }
  out->body = malloc(len + 1);
  if (!out->body) return STORE_RETRY;
  memcpy(out->body, PQgetvalue(res, row, first + 17), len);
  out->body[len] = '\0';
  out->body_len = len;
  return STORE_OK;
}

static enum store_status pg_get(struct store *base, const char *id, bool with_body,
                                struct store_conversation *out) {
  struct pg_store *s = (struct pg_store *)base;
  const char *vals[] = {id, with_body ? "t" : "f"};
  enum store_status st = STORE_RETRY;
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_exec(s, r, "get", 2, vals, &st);
    if (st == STORE_OK)
      st = PQntuples(res) == 0 ? STORE_NOT_FOUND : read_row(s->ring, res, 0, 0, out);
    PQclear(res);
    if (r->conn) break; /* not lost: the answer stands */
  }
  return st;
}

/* Prepares list<mask> on first use on this connection. One statement gives the total and the
 * page from one snapshot: the count comes first, the page (chosen on an index alone, then
 * only its rows read) is joined to it, so an empty page still brings the total. With
 * LIST_SEALED, the email and account filters take an array of the values to look for (see
 * filter_values), still one index scan. */
#define LIST_SEALED 16u
#define LIST_WINDOW 32u /* from/to: the start time, or the processed time without one */
#define LIST_AFTER 64u  /* a keyset page: the rows after a position, not counted */
#define LIST_BODY 128u  /* each row's webhook id and raw body too (store_filter.with_body) */
static bool prepare_list(struct pg_reader *r, unsigned mask) {
  uint64_t bit = UINT64_C(1) << (mask % 64);
  if (r->prepared_lists[mask / 64] & bit) return true;
  static const char *const filters[4] = {"c.email_id = $", "c.account_id = $", "c.status = $",
                                         "c.account_id IN (SELECT json_array_elements_text($"};
  static const char *const any[2] = {"c.email_id = ANY($", "c.account_id = ANY($"};
  char where[768] = "", sql[3072], name[16], cond[256];
  size_t pos = 0;
  int n = 0;
  for (unsigned i = 0; i < 4; i++) {
    if (!(mask & (1u << i))) continue;
    if (i < 2 && (mask & LIST_SEALED))
      snprintf(cond, sizeof cond, "%s%d::text[])", any[i], n + 1);
    else
      snprintf(cond, sizeof cond, "%s%d%s", filters[i], n + 1, i == 3 ? "::json))" : "");
    pos += (size_t)snprintf(where + pos, sizeof where - pos, "%s%s", n ? " AND " : " WHERE ", cond);
    n++;
  }
  if (mask & LIST_WINDOW) {
    snprintf(cond, sizeof cond,
             "coalesce(c.start_time_us, c.processed_at_us) >= $%d::bigint AND "
             "coalesce(c.start_time_us, c.processed_at_us) < $%d::bigint",
             n + 1, n + 2);
    pos += (size_t)snprintf(where + pos, sizeof where - pos, "%s%s", n ? " AND " : " WHERE ", cond);
    n += 2;
  }
  /* The rows after a position of the list's order: a range of conversations_recent (or of the
   * email/account index under an equality filter), whatever the page's depth. */
  if (mask & LIST_AFTER) {
    snprintf(cond, sizeof cond,
             "c.first_processed_at_us <= $%d::bigint AND "
             "(c.first_processed_at_us < $%d::bigint OR c.conversation_id > $%d::text)",
             n + 1, n + 1, n + 2);
    pos += (size_t)snprintf(where + pos, sizeof where - pos, "%s%s", n ? " AND " : " WHERE ", cond);
    n += 2;
  }
  char count[900];
  if (mask & LIST_AFTER)
    snprintf(count, sizeof count, "SELECT 0::bigint AS total");
  else
    snprintf(count, sizeof count, "SELECT COUNT(*) AS total FROM conversations c%s", where);
  snprintf(sql, sizeof sql,
           "SELECT t.total, p.* FROM (%s) t "
           "LEFT JOIN LATERAL (" SELECT_COLUMNS
           "%s FROM conversations c%s "
           "WHERE c.conversation_id IN ("
           "SELECT c.conversation_id FROM conversations c%s ORDER BY "
           "c.first_processed_at_us DESC, c.conversation_id ASC LIMIT $%d OFFSET $%d)) p ON true "
           "ORDER BY p.f DESC, p.conversation_id ASC",
           count,
           mask & LIST_BODY ? "c.webhook_id AS w, d.body AS b, d.sealed_with AS k"
                            : "NULL::text AS w, NULL::bytea AS b, NULL::text AS k",
           mask & LIST_BODY ? " LEFT JOIN deliveries d ON d.id = c.delivery_id" : "", where, n + 1,
           n + 2);
  snprintf(name, sizeof name, "list%u", mask);
  if (!prepare(r->conn, name, sql, 0, NULL)) return false;
  r->prepared_lists[mask / 64] |= bit;
  return true;
}

static enum store_status list_once(struct pg_store *s, struct pg_reader *r,
                                   const struct store_filter *f, struct store_page *out) {
  memset(out, 0, sizeof *out);
  /* With a ring, each email/account value is looked for as it is and as its blind index under
   * every key (rows written before encryption, and rows sealed with any key). */
  const struct seal_ring *ring = s->ring;
  char *aj = NULL, *ej = NULL, *cj = NULL;
  bool oom = false;
  if (f->naccounts) oom = !(aj = store_accounts_json_ring(ring, f->accounts, f->naccounts));
  /* without a ring too when a value would pass for a blind index (it then matches nothing) */
  bool arrays = ring || (f->email_id && !store_id_sealable(f->email_id)) ||
                (f->account_id && !store_id_sealable(f->account_id));
  if (arrays && f->email_id) oom = oom || !(ej = filter_values(ring, f->email_id));
  if (arrays && f->account_id) oom = oom || !(cj = filter_values(ring, f->account_id));
  unsigned mask = (f->email_id ? 1u : 0) | (f->account_id ? 2u : 0) | (f->status ? 4u : 0) |
                  (aj ? 8u : 0) | (ej || cj ? LIST_SEALED : 0) |
                  (f->has_from || f->has_to ? LIST_WINDOW : 0) | (f->after ? LIST_AFTER : 0) |
                  (f->with_body ? LIST_BODY : 0);
  if (oom || !prepare_list(r, mask)) {
    free(aj);
    free(ej);
    free(cj);
    if (!oom) (void)reader_check_lost(s, r);
    return STORE_RETRY;
  }
  const char *vals[10];
  int n = 0;
  if (f->email_id) vals[n++] = ej ? ej : f->email_id;
  if (f->account_id) vals[n++] = cj ? cj : f->account_id;
  if (f->status) vals[n++] = f->status;
  if (aj) vals[n++] = aj;
  char name[16], limit[24], offset[24], from[24], to[24], after[24];
  if (mask & LIST_WINDOW) {
    snprintf(from, sizeof from, "%lld", (long long)(f->has_from ? f->from_us : INT64_MIN));
    snprintf(to, sizeof to, "%lld", (long long)(f->has_to ? f->to_us : INT64_MAX));
    vals[n++] = from;
    vals[n++] = to;
  }
  if (f->after) {
    snprintf(after, sizeof after, "%lld", (long long)f->after_first_us);
    vals[n++] = after;
    vals[n++] = f->after_id;
  }
  snprintf(limit, sizeof limit, "%lld", (long long)f->limit);
  snprintf(offset, sizeof offset, "%lld", (long long)(f->after ? 0 : (f->page - 1) * f->limit));
  vals[n] = limit;
  vals[n + 1] = offset;
  snprintf(name, sizeof name, "list%u", mask);
  enum store_status st;
  PGresult *res = reader_exec(s, r, name, n + 2, vals, &st);
  free(aj);
  free(ej);
  free(cj);
  int rows = st == STORE_OK ? PQntuples(res) : 0;
  if (st == STORE_OK && rows < 1) st = STORE_HARD;
  if (st == STORE_OK) out->total = get_i64(res, 0, 0);
  if (st == STORE_OK && !PQgetisnull(res, 0, 1)) {
    out->items = calloc((size_t)rows, sizeof *out->items);
    if (!out->items) st = STORE_RETRY;
    for (int i = 0; st == STORE_OK && i < rows; i++)
      st = read_row(s->ring, res, i, 1, &out->items[out->count++]);
  }
  PQclear(res);
  if (st != STORE_OK) store_page_free(out);
  return st;
}

static enum store_status pg_list(struct store *base, const struct store_filter *f,
                                 struct store_page *out) {
  struct pg_store *s = (struct pg_store *)base;
  enum store_status st = STORE_RETRY;
  memset(out, 0, sizeof *out);
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    st = list_once(s, r, f, out);
    if (r->conn) break;
  }
  return st;
}

/* ---------- analytics (store/rollup.h) ---------- */

/* Each reads the rows of its source in one range [r.a, r.b) (scan filters from $3 on), run for
 * every range of $1/$2 (pg_scan_read: an index scan per range, LATERAL). */
/* A full-key row of one conversation comes without its hist: that is one count in the bucket of
 * its duration, which duration_sum is (rollup_cell_single). PostgreSQL's binary form of an
 * int4[] costs it about 4 µs a row, the larger part of a year's edge hours (1,422 rows, two in
 * three of one conversation, for New York's days). */
#define PG_SINGLE_HIST "CASE WHEN x.conversations <> 1 THEN x.hist END"
#define PG_DIM_ROWS(hist)                                                               \
  "SELECT x.day_us, x.dim, x.value, x.conversations, x.messages, x.duration_sum, " hist \
  " FROM analytics_dim x WHERE x.day_us >= r.a AND x.day_us < r.b AND "
static const char *const pg_scan_sql[ROLLUP_SRC_COUNT] = {
    "SELECT COALESCE(c.start_time_us, c.processed_at_us), c.account_id, c.agent_id, c.platform, "
    "c.status, c.outcome, c.duration, c.message_count FROM conversations c "
    "WHERE COALESCE(c.start_time_us, c.processed_at_us) >= r.a "
    "AND COALESCE(c.start_time_us, c.processed_at_us) < r.b",
    /* a row of one conversation without its hist (pg_scan_row: PG_SINGLE_HIST) */
    "SELECT x.hour_us, x.account_id, x.agent_id, x.platform, x.status, x.outcome, "
    "x.conversations, x.messages, x.duration_sum, " PG_SINGLE_HIST
    " FROM analytics_hour x "
    "WHERE x.hour_us >= r.a AND x.hour_us < r.b",
    "SELECT x.hour_us, x.conversations, x.messages, x.duration_sum, NULL::int[] "
    "FROM analytics_total x WHERE x.hour_us >= r.a AND x.hour_us < r.b",
    PG_DIM_ROWS("NULL::int[]") "x.dim = 5", PG_DIM_ROWS("NULL::int[]") "x.dim = 6",
    /* the status rows' hists: the totals' percentiles (rollup.h) */
    PG_DIM_ROWS("CASE WHEN x.dim = 3 THEN x.hist END") "x.dim = ANY('{0,1,2,3,4}'::int[])",
    "SELECT x.day_us, x.dim - 8, x.value, x.conversations, x.messages, x.duration_sum, "
    "CASE WHEN x.dim = 11 THEN x.hist END "
    "FROM analytics_dim x WHERE x.day_us >= r.a AND x.day_us < r.b "
    "AND x.dim = ANY('{8,9,10,11,12}'::int[])",
    /* filtered (pg_scan_read adds the filter) */
    "SELECT x.hour_us, x.account_id, x.agent_id, x.platform, x.status, x.outcome, "
    "x.conversations, x.messages, x.duration_sum, NULL::int[] FROM analytics_hour x "
    "WHERE x.hour_us >= r.a AND x.hour_us < r.b",
    "SELECT x.day_us, x.dim, x.value, x.conversations, x.messages, x.duration_sum, NULL::int[] "
    "FROM analytics_dim x WHERE x.day_us >= r.a AND x.day_us < r.b",
    "SELECT x.block_us, x.account_id, x.agent_id, x.platform, x.status, x.outcome, "
    "x.conversations, x.messages, x.duration_sum, " PG_SINGLE_HIST
    " FROM analytics_block x "
    "WHERE x.block_us >= r.a AND x.block_us < r.b"};

/* One scan: its filters as SQL ($3 on) and their values. */
struct pg_scan {
  struct pg_store *s;
  struct pg_reader *r;
  char where[512];
  /* the same filter on analytics_dim's rows of the one dimension filtered (rollup_query_one_dim;
   * "" when there is none): dim = d, the value in place of the dimension's column, the same
   * values */
  char dim_where[512];
  const char *vals[8];
  int nvals;
  char *cj, *aj; /* owned */
};

/* The filter's SQL into out from pos on ($3 on); cols[d]: the column of dimension d (store_dim
 * order). */
static void pg_scan_filter_sql(const struct pg_scan *x, const struct store_analytics_query *q,
                               const char *const cols[4], char *out, size_t len, size_t pos) {
  int n = 2;
  if (q->account_id)
    pos += (size_t)snprintf(out + pos, len - pos,
                            x->cj ? " AND %s = ANY($%d::text[])" : " AND %s = $%d",
                            cols[STORE_DIM_ACCOUNT], ++n);
  const char *const v[3] = {q->agent_id, q->platform, q->status};
  for (int i = 0; i < 3; i++)
    if (v[i]) pos += (size_t)snprintf(out + pos, len - pos, " AND %s = $%d", cols[1 + i], ++n);
  if (q->naccounts)
    pos += (size_t)snprintf(out + pos, len - pos,
                            " AND %s IN (SELECT json_array_elements_text($%d::json))",
                            cols[STORE_DIM_ACCOUNT], ++n);
}

static bool pg_scan_filters(struct pg_scan *x, const struct store_analytics_query *q) {
  const struct seal_ring *ring = x->s->ring;
  if (q->account_id) {
    /* without a ring too when it would pass for a blind index (it then matches nothing) */
    bool array = ring || !store_id_sealable(q->account_id);
    if (array && !(x->cj = filter_values(ring, q->account_id))) return false;
    x->vals[x->nvals++] = x->cj ? x->cj : q->account_id;
  }
  const char *const v[3] = {q->agent_id, q->platform, q->status};
  for (int i = 0; i < 3; i++)
    if (v[i]) x->vals[x->nvals++] = v[i];
  if (q->naccounts) {
    if (!(x->aj = store_accounts_json_ring(ring, q->accounts, q->naccounts))) return false;
    x->vals[x->nvals++] = x->aj;
  }
  static const char *const cols[4] = {"account_id", "agent_id", "platform", "status"};
  _Static_assert(STORE_DIM_ACCOUNT == 0 && STORE_DIM_AGENT == 1 && STORE_DIM_PLATFORM == 2 &&
                     STORE_DIM_STATUS == 3,
                 "pg_scan_filter_sql's columns");
  pg_scan_filter_sql(x, q, cols, x->where, sizeof x->where, 0);
  int dim = rollup_query_one_dim(q);
  if (dim >= 0) {
    static const char *const value[4] = {"x.value", "x.value", "x.value", "x.value"};
    int pos = snprintf(x->dim_where, sizeof x->dim_where, " AND x.dim = %d", dim);
    pg_scan_filter_sql(x, q, value, x->dim_where, sizeof x->dim_where, (size_t)pos);
  }
  return true;
}

static uint32_t be32_at(const char *p) {
  uint32_t v;
  memcpy(&v, p, sizeof v);
  return be32toh(v);
}

/* c's histogram from a binary int4[] of ANALYTICS_HIST_BUCKETS elements, no NULLs (anything
 * else: none). */
static void pg_hist(const PGresult *res, int row, int col, struct store_cell *c) {
  const char *p = PQgetvalue(res, row, col);
  int len = PQgetlength(res, row, col);
  if (len != 20 + 8 * ANALYTICS_HIST_BUCKETS || be32_at(p) != 1 ||
      be32_at(p + 12) != ANALYTICS_HIST_BUCKETS)
    return;
  p += 20;
  c->has_hist = true;
  for (int b = 0; b < ANALYTICS_HIST_BUCKETS; b++, p += 8)
    c->hist[b] = be32_at(p) == 4 ? be32_at(p + 4) : 0;
}

static const char *pg_text_or_null(const PGresult *res, int row, int col) {
  return PQgetisnull(res, row, col) ? NULL : PQgetvalue(res, row, col);
}

static void pg_scan_row(struct rollup_sink *k, const PGresult *res, int i) {
  struct store_cell c;
  const char *dims[STORE_DIM_COUNT];
  int at = 0;
  switch (k->src) {
    case ROLLUP_SRC_RAW:
      for (int d = 0; d < STORE_DIM_COUNT; d++) dims[d] = pg_text_or_null(res, i, 1 + d);
      rollup_cell_raw(&c, get_i64(res, i, 0), dims, get_i64(res, i, 6), get_i64(res, i, 7));
      rollup_sink_cell(k, &c);
      return;
    case ROLLUP_SRC_FULL:
    case ROLLUP_SRC_FULL_TOTAL:
    case ROLLUP_SRC_FULL_BLOCK:
      rollup_cell_init(&c, STORE_CELL_FULL, get_i64(res, i, 0));
      for (int d = 0; d < STORE_DIM_COUNT; d++)
        c.value[d] = rollup_value(PQgetvalue(res, i, 1 + d));
      at = 6;
      break;
    case ROLLUP_SRC_TOTAL:
      rollup_cell_init(&c, STORE_CELL_TOTAL, get_i64(res, i, 0));
      at = 1;
      break;
    case ROLLUP_SRC_DAY_TOTAL:
    case ROLLUP_SRC_TOTAL4:
    case ROLLUP_SRC_DIM_VALUE:
      rollup_cell_init(&c, STORE_CELL_TOTAL, get_i64(res, i, 0));
      at = 3;
      break;
    case ROLLUP_SRC_DIM:
    case ROLLUP_SRC_BLOCK: {
      rollup_cell_init(&c, STORE_CELL_DIM, get_i64(res, i, 0));
      int d = (int)be32_at(PQgetvalue(res, i, 1));
      if (d < 0 || d >= STORE_DIM_COUNT) return;
      c.dim = (enum store_dim)d;
      c.value[d] = rollup_value(PQgetvalue(res, i, 2));
      at = 3;
      break;
    }
    case ROLLUP_SRC_COUNT:
      return;
  }
  c.conversations = get_i64(res, i, at);
  c.messages = get_i64(res, i, at + 1);
  c.duration_sum = get_i64(res, i, at + 2);
  if (!PQgetisnull(res, i, at + 3))
    pg_hist(res, i, at + 3, &c);
  else if (c.kind == STORE_CELL_FULL)
    rollup_cell_single(&c); /* PG_SINGLE_HIST */
  rollup_sink_cell(k, &c);
}

/* ranges[0..n) as two bigint[] literals (from, to); NULL when out of memory. */
static char *pg_bounds(const int64_t (*ranges)[2], size_t n, int which) {
  size_t cap = n * 22 + 3, pos = 1;
  char *out = malloc(cap);
  if (!out) return NULL;
  out[0] = '{';
  for (size_t i = 0; i < n; i++)
    pos +=
        (size_t)snprintf(out + pos, cap - pos, "%s%lld", i ? "," : "", (long long)ranges[i][which]);
  snprintf(out + pos, cap - pos, "}");
  return out;
}

static enum store_status pg_scan_read(void *cls, struct rollup_sink *k, const int64_t (*ranges)[2],
                                      size_t n) {
  struct pg_scan *x = cls;
  bool filtered = rollup_source_filtered(k->src) && x->nvals;
  /* Without a filter, prepared once per connection: planned once, not at every request. With
   * one, planned for its values (a generic plan would not know how selective they are). */
  char name[16];
  snprintf(name, sizeof name, "scan%d", (int)k->src);
  _Static_assert(ROLLUP_SRC_COUNT <= 32, "pg_reader.prepared_scans: a bit per source");
  uint32_t bit = UINT32_C(1) << k->src;
  char sql[1536] = "";
  if (filtered || !(x->r->prepared_scans & bit))
    snprintf(sql, sizeof sql,
             "SELECT y.* FROM unnest($1::bigint[], $2::bigint[]) AS r (a, b), LATERAL (%s%s "
             "OFFSET 0) y", /* OFFSET 0: not flattened into a join (a scan of the table) */
             pg_scan_sql[k->src],
             k->src == ROLLUP_SRC_DIM_VALUE ? x->dim_where
             : filtered                     ? x->where
                                            : "");
  if (!filtered && !(x->r->prepared_scans & bit)) {
    if (!prepare(x->r->conn, name, sql, 0, NULL)) {
      (void)reader_check_lost(x->s, x->r);
      return STORE_RETRY;
    }
    x->r->prepared_scans |= bit;
  }
  char *a = pg_bounds(ranges, n, 0), *b = pg_bounds(ranges, n, 1);
  enum store_status st = STORE_RETRY;
  if (a && b) {
    const char *vals[10] = {a, b};
    int nv = 2;
    for (int i = 0; filtered && i < x->nvals; i++) vals[nv++] = x->vals[i];
    PGresult *res =
        filtered ? reader_checked(x->s, x->r,
                                  PQexecParams(x->r->conn, sql, nv, NULL, vals, NULL, NULL, 1), &st)
                 : reader_exec(x->s, x->r, name, nv, vals, &st);
    int rows = st == STORE_OK ? PQntuples(res) : 0;
    for (int i = 0; i < rows; i++) pg_scan_row(k, res, i);
    PQclear(res);
  }
  free(a);
  free(b);
  return st;
}

static enum store_status pg_scan_once(struct pg_scan *x, const struct store_analytics_query *q,
                                      store_cell_cb cell, void *cls) {
  PGresult *r = PQexec(x->r->conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  bool begun = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  if (!begun) {
    (void)reader_check_lost(x->s, x->r);
    return STORE_RETRY;
  }
  enum store_status st = rollup_scan(q, pg_scan_read, x, cell, cls);
  if (x->r->conn) PQclear(PQexec(x->r->conn, st == STORE_OK ? "COMMIT" : "ROLLBACK"));
  return st;
}

static enum store_status pg_analytics_scan(struct store *base,
                                           const struct store_analytics_query *q,
                                           store_cell_cb cell, void *cls) {
  struct pg_store *s = (struct pg_store *)base;
  struct pg_scan x = {.s = s};
  enum store_status st = STORE_RETRY;
  if (pg_scan_filters(&x, q)) {
    /* not tried again on a new connection: cells may have been handed out already */
    if ((x.r = reader_get(s)) != NULL) st = pg_scan_once(&x, q, cell, cls);
  }
  free(x.cj);
  free(x.aj);
  return st;
}

static enum store_status pg_analytics_account_name(struct store *base, const char *stored,
                                                   char *out, size_t outlen) {
  struct pg_store *s = (struct pg_store *)base;
  enum store_status st = STORE_RETRY;
  const char *vals[1] = {stored};
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_checked(
        s, r,
        PQexecParams(r->conn,
                     "SELECT conversation_id, account_id, account_sealed FROM conversations "
                     "WHERE account_id = $1 LIMIT 1",
                     1, NULL, vals, NULL, NULL, 1),
        &st);
    if (st == STORE_OK && PQntuples(res) == 0) st = STORE_NOT_FOUND;
    if (st == STORE_OK) {
      char id[MODEL_CONVERSATION_ID_MAX + 1];
      get_text(res, 0, 0, id, sizeof id);
      if (PQgetisnull(res, 0, 2))
        get_text(res, 0, 1, out, outlen);
      else if (!open_text(s->ring, "conversations.account_id", id, res, 0, 2, out, outlen))
        st = STORE_HARD;
    }
    PQclear(res);
    if (r->conn) break;
  }
  return st;
}

static enum store_status pg_analytics_account_names(struct store *base, const char *const *stored,
                                                    size_t n, char **names) {
  struct pg_store *s = (struct pg_store *)base;
  if (n == 0) return STORE_OK;
  char *json = store_accounts_json(stored, n);
  if (!json) return STORE_RETRY;
  const char *vals[1] = {json};
  enum store_status st = STORE_RETRY;
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) break;
    /* one probe of conversations_account per value */
    PGresult *res = reader_checked(
        s, r,
        PQexecParams(r->conn,
                     "SELECT v.i - 1, c.conversation_id, c.account_id, c.account_sealed "
                     "FROM json_array_elements_text($1::json) WITH ORDINALITY AS v(a, i) "
                     "CROSS JOIN LATERAL (SELECT conversation_id, account_id, account_sealed "
                     "FROM conversations WHERE account_id = v.a LIMIT 1) c",
                     1, NULL, vals, NULL, NULL, 1),
        &st);
    int rows = st == STORE_OK ? PQntuples(res) : 0;
    for (int row = 0; row < rows && st == STORE_OK; row++) {
      int64_t i = get_i64(res, row, 0);
      if (i < 0 || (size_t)i >= n || names[i]) continue;
      char id[MODEL_CONVERSATION_ID_MAX + 1], name[MODEL_ACCOUNT_ID_MAX + 64];
      get_text(res, row, 1, id, sizeof id);
      if (PQgetisnull(res, row, 3))
        get_text(res, row, 2, name, sizeof name);
      else if (!open_text(s->ring, "conversations.account_id", id, res, row, 3, name, sizeof name))
        st = STORE_HARD;
      if (st == STORE_OK && !(names[i] = strdup(name))) st = STORE_RETRY;
    }
    PQclear(res);
    if (r->conn) break;
  }
  free(json);
  return st;
}

/* ---------- API keys ---------- */

static int64_t time_or_zero(const PGresult *res, int row, int col) {
  return PQgetisnull(res, row, col) ? 0 : get_i64(res, row, col);
}

static enum store_status read_key(const struct seal_ring *ring, const PGresult *res, int row,
                                  struct apikey_record *k) {
  char scopes[APIKEY_SCOPES_TEXT_MAX], accounts[APIKEY_ACCOUNTS_TEXT_MAX];
  memset(k, 0, sizeof *k);
  get_text(res, row, 0, k->id, sizeof k->id);
  get_text(res, row, 1, k->name, sizeof k->name);
  get_text(res, row, 2, scopes, sizeof scopes);
  if (!PQgetisnull(res, row, 9)) {
    if (!open_text(ring, "api_keys.accounts", k->id, res, row, 9, accounts, sizeof accounts))
      return STORE_HARD;
  } else if (seal_is_sealed(PQgetvalue(res, row, 3), (size_t)PQgetlength(res, row, 3)) ||
             (size_t)PQgetlength(res, row, 3) >= sizeof accounts) {
    return STORE_HARD; /* sealed, yet not marked so; or cut */
  } else {
    get_text(res, row, 3, accounts, sizeof accounts);
  }
  if (!apikey_scopes_parse(scopes, &k->scopes) || !apikey_accounts_split(k, accounts) ||
      PQgetlength(res, row, 4) != 32)
    return STORE_HARD;
  memcpy(k->secret_sha256, PQgetvalue(res, row, 4), 32);
  k->created_us = get_i64(res, row, 5);
  k->expires_us = time_or_zero(res, row, 6);
  k->revoked_us = time_or_zero(res, row, 7);
  k->last_used_us = time_or_zero(res, row, 8);
  return STORE_OK;
}

static enum store_status pg_key_get(struct store *base, const char *id, struct apikey_record *out) {
  struct pg_store *s = (struct pg_store *)base;
  const char *vals[] = {id};
  enum store_status st = STORE_RETRY;
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_exec(s, r, "key_get", 1, vals, &st);
    if (st == STORE_OK) st = PQntuples(res) == 0 ? STORE_NOT_FOUND : read_key(s->ring, res, 0, out);
    PQclear(res);
    if (r->conn) break;
  }
  return st;
}

/* Reads one row of a list into item (an element of the list's array). */
typedef enum store_status (*row_reader)(const struct seal_ring *ring, const PGresult *res, int row,
                                        void *item);

/* Every row of the prepared statement stmt (no parameters), each read by read into an array of
 * size-byte elements (*out owned, free(); NULL and 0 when it fails). */
static enum store_status read_list(struct pg_store *s, const char *stmt, size_t size,
                                   row_reader read, void **out, size_t *count) {
  enum store_status st = STORE_RETRY;
  *out = NULL;
  *count = 0;
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_exec(s, r, stmt, 0, NULL, &st);
    int rows = st == STORE_OK ? PQntuples(res) : 0;
    char *items = NULL;
    if (st == STORE_OK && rows > 0 && !(items = calloc((size_t)rows, size))) st = STORE_RETRY;
    for (int i = 0; st == STORE_OK && i < rows; i++) st = read(s->ring, res, i, items + i * size);
    PQclear(res);
    if (st == STORE_OK) {
      *out = items;
      *count = (size_t)rows;
    } else {
      free(items);
    }
    if (r->conn) break;
  }
  return st;
}

static enum store_status read_key_row(const struct seal_ring *ring, const PGresult *res, int row,
                                      void *item) {
  return read_key(ring, res, row, item);
}

static enum store_status pg_key_list(struct store *base, struct apikey_record **out,
                                     size_t *count) {
  void *items;
  enum store_status st =
      read_list((struct pg_store *)base, "key_list", sizeof **out, read_key_row, &items, count);
  *out = items;
  return st;
}

static enum store_status pg_ping_read(struct store *base) {
  struct pg_store *s = (struct pg_store *)base;
  enum store_status st = STORE_RETRY;
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PQclear(reader_exec(s, r, "ping", 0, NULL, &st));
    if (r->conn) break;
  }
  return st;
}

/* The events of conversation_id: an event row moved to it from another conversation by hand
 * does not open (its associated data names the other one). */
static enum store_status read_events(const struct seal_ring *ring, const PGresult *res,
                                     const char *conversation_id, struct store_events *out) {
  int rows = PQntuples(res);
  if (rows == 0) return STORE_OK;
  out->items = calloc((size_t)rows, sizeof *out->items);
  if (!out->items) return STORE_RETRY;
  for (int i = 0; i < rows; i++) {
    struct store_event *e = &out->items[out->count++];
    get_text(res, i, 0, e->webhook_id, sizeof e->webhook_id);
    get_text(res, i, 1, e->type, sizeof e->type);
    e->received_us = get_i64(res, i, 2);
    if (!PQgetisnull(res, i, 6)) {
      enum store_status st = open_alloc(ring, "events.body", e->webhook_id, conversation_id, res, i,
                                        3, &e->body, &e->body_len);
      if (st != STORE_OK) return st;
    } else {
      size_t len = (size_t)PQgetlength(res, i, 3);
      if (seal_is_sealed(PQgetvalue(res, i, 3), len)) return STORE_HARD; /* not marked sealed */
      e->body = malloc(len + 1);
      if (!e->body) return STORE_RETRY;
      memcpy(e->body, PQgetvalue(res, i, 3), len);
      e->body[len] = '\0';
      e->body_len = len;
    }
    e->audio_at = PQgetisnull(res, i, 4) ? -1 : get_i64(res, i, 4);
    if (PQgetlength(res, i, 5) != CRYPTO_SHA256_LEN) return STORE_HARD;
    memcpy(e->sha256, PQgetvalue(res, i, 5), CRYPTO_SHA256_LEN);
  }
  return STORE_OK;
}

static enum store_status pg_events(struct store *base, const char *conversation_id,
                                   struct store_events *out) {
  struct pg_store *s = (struct pg_store *)base;
  const char *vals[] = {conversation_id};
  enum store_status st = STORE_RETRY;
  memset(out, 0, sizeof *out);
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_exec(s, r, "events", 1, vals, &st);
    if (st == STORE_OK) st = read_events(s->ring, res, conversation_id, out);
    PQclear(res);
    if (st != STORE_OK) store_events_free(out);
    if (r->conn) break;
  }
  return st;
}

/* Opens a sealed chunk (row i of an audio read) into the reader's buffer. */
static bool open_chunk(const struct seal_ring *ring, struct pg_reader *r, const char *id,
                       const PGresult *res, int i, size_t *len) {
  const char *data = PQgetvalue(res, i, 2);
  size_t n = (size_t)PQgetlength(res, i, 2), plain = seal_plain_len(data, n);
  if (plain > r->opened_cap) {
    unsigned char *p = realloc(r->opened, plain);
    if (!p) return false;
    r->opened = p;
    r->opened_cap = plain;
  }
  char seq[24];
  snprintf(seq, sizeof seq, "%lld", (long long)get_i64(res, i, 4));
  return open_value(ring, "audio_chunks.data", id, seq, data, n, r->opened, r->opened_cap, len);
}

static enum store_status read_audio(const struct seal_ring *ring, struct pg_reader *r,
                                    const char *id, const PGresult *res, int64_t offset,
                                    int64_t end, void *buf, size_t *got, int64_t *total) {
  int rows = PQntuples(res);
  if (rows == 0) return STORE_NOT_FOUND;
  *total = get_i64(res, 0, 0);
  if (end > *total) end = *total;
  for (int i = 0; i < rows; i++) {
    if (PQgetisnull(res, i, 1)) continue; /* the empty range's row */
    const void *data = PQgetvalue(res, i, 2);
    size_t len = (size_t)PQgetlength(res, i, 2);
    if (!PQgetisnull(res, i, 3)) {
      if (!open_chunk(ring, r, id, res, i, &len)) return STORE_HARD;
      data = r->opened;
    }
    if (!store_audio_piece(offset, end, get_i64(res, i, 1), data, len, buf, got)) return STORE_HARD;
  }
  /* a chunk missing */
  return (int64_t)*got == (offset < end ? end - offset : 0) ? STORE_OK : STORE_HARD;
}

static enum store_status pg_audio_read(struct store *base, const char *conversation_id,
                                       int64_t offset, void *buf, size_t cap, size_t *got,
                                       int64_t *total) {
  struct pg_store *s = (struct pg_store *)base;
  if (offset < 0) offset = 0;
  int64_t end = cap > (size_t)(INT64_MAX - offset) ? INT64_MAX : offset + (int64_t)cap;
  char from[24], to[24];
  snprintf(from, sizeof from, "%lld", (long long)offset);
  snprintf(to, sizeof to, "%lld", (long long)end);
  const char *vals[] = {conversation_id, from, to};
  enum store_status st = STORE_RETRY;
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    *got = 0;
    *total = 0;
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_exec(s, r, "audio", 3, vals, &st);
    if (st == STORE_OK)
      st = read_audio(s->ring, r, conversation_id, res, offset, end, buf, got, total);
    PQclear(res);
    if (r->conn) break;
  }
  if (st != STORE_OK) *got = 0;
  return st;
}

/* ---------- the audit log ---------- */

/* The audit list's filters, in parameter order after the cursor ($1); bit 5 is the order. */
enum {
  AUDIT_SINCE = 1u << 0,
  AUDIT_UNTIL = 1u << 1,
  AUDIT_KEY = 1u << 2,
  AUDIT_ACTION = 1u << 3,
  AUDIT_TARGET = 1u << 4,
  AUDIT_NEWEST = 1u << 5,
};

/* The query for these filters. Not a prepared statement, on purpose: planned for the values at
 * hand, PostgreSQL takes the key's or target's index for a key or conversation with few entries
 * and walks the log in id order for a common one, and uses the time index for a short window;
 * a generic plan (what a prepared statement settles on after five runs) cannot tell them apart
 * and walks the whole log for every page of a rare key. Planning costs a fraction of a
 * millisecond; this is an administrator's query, never on the ingest path. */
static void audit_sql(unsigned mask, char *sql, size_t cap) {
  static const char *const filters[5] = {"at_us >= $", "at_us < $", "key_id = $", "action = $",
                                         "target = $"};
  bool newest = mask & AUDIT_NEWEST;
  size_t pos = (size_t)snprintf(sql, cap,
                                "SELECT id, at_us, request_id, key_id, client_ip, action, target, "
                                "outcome, count, hash FROM audit_log WHERE id %s $1",
                                newest ? "<" : ">");
  int n = 1;
  for (unsigned i = 0; i < 5; i++)
    if (mask & (1u << i))
      pos += (size_t)snprintf(sql + pos, cap - pos, " AND %s%d", filters[i], ++n);
  snprintf(sql + pos, cap - pos, " ORDER BY id %s LIMIT $%d", newest ? "DESC" : "ASC", n + 1);
}

/* get_text for an audit entry: a text longer than its field (or holding a NUL) marks the
 * entry damaged instead of being cut silently (a cut would hide an append from the hash). */
static const char *audit_text(const PGresult *res, int row, int col, char *dst, size_t cap,
                              struct audit_entry *e) {
  size_t n = (size_t)PQgetlength(res, row, col);
  if (n >= cap || (n && memchr(PQgetvalue(res, row, col), 0, n))) e->damaged = true;
  get_text(res, row, col, dst, cap);
  return dst;
}

/* A stored entry as it is: a name edited by hand to one no action or outcome has reads as out
 * of range (its content then hashes differently, and `audit verify` says so); a text longer
 * than its field or a hash not 32 bytes long marks it damaged (verify reports it). */
static void read_audit_entry(const PGresult *res, int row, struct audit_entry *e) {
  char name[40];
  memset(e, 0, sizeof *e);
  e->id = get_i64(res, row, 0);
  e->at_us = get_i64(res, row, 1);
  audit_text(res, row, 2, e->who.request_id, sizeof e->who.request_id, e);
  audit_text(res, row, 3, e->who.key_id, sizeof e->who.key_id, e);
  audit_text(res, row, 4, e->who.client_ip, sizeof e->who.client_ip, e);
  int a = audit_action_named(audit_text(res, row, 5, name, sizeof name, e));
  e->action = a < 0 ? AUDIT_ACTION_COUNT : (enum audit_action)a;
  audit_text(res, row, 6, e->target, sizeof e->target, e);
  int o = audit_outcome_named(audit_text(res, row, 7, name, sizeof name, e));
  e->outcome = o < 0 ? AUDIT_OUTCOME_COUNT : (enum audit_outcome)o;
  e->count = get_i64(res, row, 8);
  size_t n = (size_t)PQgetlength(res, row, 9);
  if (n != AUDIT_HASH_LEN) e->damaged = true;
  memcpy(e->hash, PQgetvalue(res, row, 9), n < AUDIT_HASH_LEN ? n : AUDIT_HASH_LEN);
}

static enum store_status audit_list_once(struct pg_store *s, struct pg_reader *r,
                                         const struct store_audit_filter *f,
                                         struct store_audit_page *out) {
  const char *action = f->action >= 0 ? audit_action_name((enum audit_action)f->action) : NULL;
  if (f->action >= 0 && !action) return STORE_OK; /* no entry has an action out of range */
  unsigned mask = (f->since_us ? AUDIT_SINCE : 0u) | (f->until_us ? AUDIT_UNTIL : 0u) |
                  (f->key_id ? AUDIT_KEY : 0u) | (action ? AUDIT_ACTION : 0u) |
                  (f->target ? AUDIT_TARGET : 0u) | (f->newest_first ? AUDIT_NEWEST : 0u);
  char cursor[24], since[24], until[24], limit[24], sql[640];
  snprintf(cursor, sizeof cursor, "%lld",
           (long long)(f->cursor > 0     ? f->cursor
                       : f->newest_first ? INT64_MAX
                                         : 0));
  snprintf(since, sizeof since, "%lld", (long long)f->since_us);
  snprintf(until, sizeof until, "%lld", (long long)f->until_us);
  snprintf(limit, sizeof limit, "%lld",
           (long long)(f->limit < 1      ? 1
                       : f->limit > 1001 ? 1001
                                         : f->limit));
  const char *vals[7] = {cursor};
  int n = 1;
  if (mask & AUDIT_SINCE) vals[n++] = since;
  if (mask & AUDIT_UNTIL) vals[n++] = until;
  if (mask & AUDIT_KEY) vals[n++] = f->key_id;
  if (mask & AUDIT_ACTION) vals[n++] = action;
  if (mask & AUDIT_TARGET) vals[n++] = f->target;
  vals[n++] = limit;
  audit_sql(mask, sql, sizeof sql);
  enum store_status st;
  PGresult *res =
      reader_checked(s, r, PQexecParams(r->conn, sql, n, NULL, vals, NULL, NULL, 1), &st);
  int rows = st == STORE_OK ? PQntuples(res) : 0;
  if (st == STORE_OK && PQnfields(res) != 10) st = STORE_HARD;
  if (st == STORE_OK && rows > 0 && !(out->items = calloc((size_t)rows, sizeof *out->items)))
    st = STORE_RETRY;
  for (int i = 0; st == STORE_OK && i < rows; i++)
    read_audit_entry(res, i, &out->items[out->count++]);
  PQclear(res);
  if (st != STORE_OK) {
    free(out->items);
    out->items = NULL;
    out->count = 0;
  }
  return st;
}

static enum store_status pg_audit_list(struct store *base, const struct store_audit_filter *f,
                                       struct store_audit_page *out) {
  struct pg_store *s = (struct pg_store *)base;
  enum store_status st = STORE_RETRY;
  out->items = NULL;
  out->count = 0;
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    st = audit_list_once(s, r, f, out);
    if (r->conn) break;
  }
  return st;
}

static enum store_status pg_audit_head(struct store *base, int64_t *last_id,
                                       unsigned char hash[AUDIT_HASH_LEN]) {
  struct pg_store *s = (struct pg_store *)base;
  enum store_status st = STORE_RETRY;
  *last_id = 0;
  memset(hash, 0, AUDIT_HASH_LEN);
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_exec(s, r, "audit_head", 0, NULL, &st);
    if (st == STORE_OK) {
      /* no row: the head was removed by hand; as an empty head, `audit verify` says so */
      if (PQntuples(res) == 1) {
        *last_id = get_i64(res, 0, 0);
        size_t n = (size_t)PQgetlength(res, 0, 1);
        memcpy(hash, PQgetvalue(res, 0, 1), n < AUDIT_HASH_LEN ? n : AUDIT_HASH_LEN);
      }
    }
    PQclear(res);
    if (r->conn) break;
  }
  return st;
}

static enum store_status pg_secret(struct store *base, const char *name,
                                   unsigned char out[STORE_SECRET_LEN]) {
  struct pg_store *s = (struct pg_store *)base;
  enum store_status st = STORE_RETRY;
  const char *vals[1] = {name};
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res =
        reader_checked(s, r,
                       PQexecParams(r->conn, "SELECT value FROM service_secrets WHERE name = $1", 1,
                                    NULL, vals, NULL, NULL, 1),
                       &st);
    if (st == STORE_OK) {
      if (PQntuples(res) == 1 && PQgetlength(res, 0, 0) == STORE_SECRET_LEN)
        memcpy(out, PQgetvalue(res, 0, 0), STORE_SECRET_LEN);
      else
        st = STORE_NOT_FOUND;
    }
    PQclear(res);
    if (r->conn) break;
  }
  return st;
}

/* ---------- the outbox's own writes (SUB_PUT, SUB_DELETE, REPLAY, OUTBOX) ----------
 * One at a time, each in its own transaction, on a thread and connection of their own: the
 * dispatcher's claims and results never wait behind an ingest batch nor hold one up. Several
 * instances share the work: a subscription's row is locked (fan-out: skipped when another
 * holds it) before its deliveries' rows, everywhere, so they never deadlock; claims lock the
 * deliveries they lease FOR UPDATE SKIP LOCKED and the lease (owner, until) keeps them out of
 * every other claim until it runs out. */

/* The database server's clock in microseconds. Leases, Retry-After holds and broker cursors'
 * touch times are written and compared with it alone, so instances whose clocks disagree
 * neither take each other's live leases nor wait too long (statement_timestamp(): the start of
 * the statement, not of its transaction, so each statement of a batch sees time move; one value
 * for every row of a statement, evaluated once, where clock_timestamp() was evaluated per row;
 * every use is one comparison or write within a single statement). */
#define DB_NOW_US "(extract(epoch FROM statement_timestamp()) * 1000000)::bigint"

#define EVENT_COLUMNS                                                                   \
  "e.seq, e.event_id, e.type, e.conversation_id, e.created_us, e.data, e.audio_bytes, " \
  "e.sealed_with"

/* What one CLAIM or QUEUE_READ reads at most, in event data (at least one event, however large):
 * each event carries a whole conversation, up to MAX_BODY_BYTES. */
#define OUTBOX_READ_BYTES "16777216"

/* The claim: the due deliveries in order, but none whose event is sealed with a key this
 * instance lacks ($6, the ring's key ids; an instance with it claims it), and only as many as
 * OUTBOX_READ_BYTES of data hold (b: the running sum before each row); none while a receiver's
 * Retry-After holds the subscription. Leases ($4 their length) and next_at_us run on the
 * database's clock (next_at_us is written from it: fan-out, replay, FINISH). */
static const char claim_sql[] =
    "WITH c AS (SELECT d.sub_id, d.seq, d.next_at_us FROM sub_deliveries d"
    "  WHERE d.sub_id = $1 AND d.state = 0 AND d.next_at_us <= " DB_NOW_US
    "    AND (d.lease_until_us IS NULL OR d.lease_until_us <= " DB_NOW_US
    ")"
    "    AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = $1 AND s.enabled AND NOT s.paused"
    "      AND s.hold_until_us <= " DB_NOW_US
    ")"
    "    AND d.seq = (SELECT min(o.seq) FROM sub_deliveries o WHERE o.sub_id = d.sub_id"
    "      AND o.conversation_id = d.conversation_id AND o.state = 0)"
    "    AND NOT EXISTS (SELECT 1 FROM outbox_events k WHERE k.seq = d.seq AND k.type <> 5"
    "      AND k.sealed_with IS NOT NULL AND k.sealed_with <> ALL($5::text[]))"
    "  ORDER BY d.next_at_us, d.seq LIMIT $2 FOR UPDATE SKIP LOCKED),"
    " b AS (SELECT x.sub_id, x.seq FROM (SELECT c.sub_id, c.seq, sum(octet_length(e.data))"
    "   OVER (ORDER BY c.next_at_us, c.seq) - octet_length(e.data) AS before"
    "   FROM c JOIN outbox_events e ON e.seq = c.seq) x WHERE x.before < " OUTBOX_READ_BYTES
    "),"
    " u AS (UPDATE sub_deliveries d SET lease_owner = $3, lease_until_us = " DB_NOW_US
    " + $4"
    "  FROM b, outbox_events e WHERE d.sub_id = b.sub_id AND d.seq = b.seq AND e.seq = d.seq"
    "  RETURNING d.attempts, d.first_attempt_us, " EVENT_COLUMNS ") SELECT * FROM u ORDER BY seq";

/* Fan-out of one subscription. One filtered on an account ($6) matches events' account ids
 * against its blind indexes under this instance's keys ($7): an event sealed with a key this
 * instance lacks ($8 the ring's key ids; an instance still on an older ring, or without one,
 * during a rotation) cannot be matched, so the cursor stops before it, for an instance that
 * has the key, instead of passing it by. */
static const char fanout_sql[] =
    "WITH ev AS (SELECT seq, conversation_id, type, account_id FROM outbox_events"
    "  WHERE seq > $2 AND (NOT $5::bool OR seq < COALESCE((SELECT min(u.seq) FROM outbox_events u"
    "    WHERE u.seq > $2 AND u.sealed_with IS NOT NULL AND u.sealed_with <> ALL($7::text[])),"
    "    9223372036854775807)) ORDER BY seq LIMIT $3),"
    " ins AS (INSERT INTO sub_deliveries (sub_id, seq, conversation_id, state, attempts,"
    "  first_attempt_us, next_at_us)"
    "  SELECT $1, seq, conversation_id, 0, 0, 0, " DB_NOW_US
    " FROM ev"
    "  WHERE (($4::int >> type) & 1) = 1 AND (NOT $5::bool OR account_id = ANY($6::text[]))"
    "  ON CONFLICT (sub_id, seq) DO NOTHING RETURNING 1),"
    " up AS (UPDATE subscriptions SET cursor_seq = m.s FROM (SELECT max(seq) AS s FROM ev) m"
    "  WHERE id = $1 AND m.s IS NOT NULL) "
    "SELECT count(*) FROM ins";

/* A delivery in flight when it is replayed keeps its owner with lease_until_us 0: due again at
 * once, and its in-flight result (FINISH) leaves it pending from attempt 1 instead of closing
 * it, so the replay is not lost to an answer to the earlier send. */
static const char replay_sql[] =
    "WITH s AS (SELECT event_types, account_id, start_seq, cursor_seq FROM subscriptions"
    "  WHERE id = $1),"
    " r AS (INSERT INTO sub_deliveries (sub_id, seq, conversation_id, state, attempts,"
    "  first_attempt_us, next_at_us)"
    "  SELECT $1, e.seq, e.conversation_id, 0, 0, 0, " DB_NOW_US
    " FROM outbox_events e, s"
    "  WHERE e.created_us >= $2 AND e.seq > s.start_seq AND e.seq <= s.cursor_seq"
    "    AND ((s.event_types >> e.type) & 1) = 1"
    "    AND (s.account_id = '' OR e.account_id = ANY($3::text[])) ORDER BY e.seq"
    "  ON CONFLICT (sub_id, seq) DO UPDATE SET state = 0, attempts = 0, first_attempt_us = 0,"
    "    next_at_us = EXCLUDED.next_at_us, lease_until_us = CASE WHEN"
    "    sub_deliveries.lease_owner IS NULL THEN NULL ELSE 0 END RETURNING 1) "
    "SELECT count(*) FROM r";

/* An update: enabled ($5), paused and disabled_reason change only when the caller named enabled
 * ($8, store.h sub_enabled_given): then enabled is set, and enabling clears paused and the
 * reason and makes waiting deliveries due at once (the database's now); else they stay as stored (a
 * pause or a 410 that happened after the caller's read is not undone). */
static const char sub_update_sql[] =
    "WITH old AS (SELECT enabled, paused, hold_until_us FROM subscriptions WHERE id = $1),"
    " up AS (UPDATE subscriptions SET url = CASE WHEN $9::int & 1 <> 0 THEN $2 ELSE url END,"
    "  url_sealed = CASE WHEN $9::int & 1 <> 0 THEN $10::bytea ELSE url_sealed END,"
    "  event_types = CASE WHEN $9::int & 2 <> 0 THEN $3::int ELSE event_types END,"
    "  account_id = CASE WHEN $9::int & 4 <> 0 THEN $4 ELSE account_id END,"
    "  account_sealed = CASE WHEN $9::int & 4 <> 0 THEN $11::bytea ELSE account_sealed END,"
    "  secret = CASE WHEN $12::bytea IS NULL THEN secret ELSE '' END,"
    "  secret_sealed = COALESCE($12::bytea, secret_sealed),"
    "  sealed_with = CASE WHEN $12::bytea IS NULL THEN sealed_with ELSE $13 END,"
    "  enabled = CASE WHEN $8::bool THEN $5::bool ELSE enabled END,"
    "  max_per_second = CASE WHEN $9::int & 8 <> 0 THEN $6::bigint ELSE max_per_second END,"
    "  paused = CASE WHEN $8::bool AND $5::bool THEN false ELSE paused END,"
    "  disabled_reason = CASE WHEN $8::bool AND $5::bool THEN '' ELSE disabled_reason END,"
    "  hold_until_us = CASE WHEN $8::bool AND $5::bool THEN 0 ELSE hold_until_us END,"
    "  updated_us = $7 WHERE id = $1 RETURNING id),"
    " due AS (UPDATE sub_deliveries SET next_at_us = LEAST(next_at_us, " DB_NOW_US
    ") WHERE sub_id = $1"
    "  AND state = 0 AND $8::bool AND $5::bool AND EXISTS (SELECT 1 FROM old WHERE NOT old.enabled"
    "  OR old.paused OR old.hold_until_us > " DB_NOW_US
    ") RETURNING 1) "
    "SELECT (SELECT count(*) FROM up), (SELECT count(*) FROM due)";

/* After an update that changed what the subscription wants (its event types or account): the
 * events waiting for it that it no longer wants go, so none is sent to its URL (perhaps another
 * tenant's now). Not one in flight: its answer is recorded as any (FINISH) and a later event of
 * its conversation still waits for it. Not one sealed with a key this instance lacks (an
 * instance on an older ring during a rotation cannot tell its account, as fan-out holds such
 * events back). $2: it has an account; $3: that account's stored forms (account_values);
 * $4: this instance's key ids (ring_keys). */
static const char sub_refilter_sql[] =
    "DELETE FROM sub_deliveries d USING subscriptions s WHERE d.sub_id = $1 AND s.id = $1"
    "  AND d.state = 0 AND d.lease_owner IS NULL AND NOT EXISTS (SELECT 1 FROM outbox_events e"
    "    WHERE e.seq = d.seq AND (((s.event_types >> e.type) & 1) = 1"
    "    AND (NOT $2::bool OR e.account_id = ANY($3::text[]))"
    "    OR e.sealed_with IS NOT NULL AND e.sealed_with <> ALL($4::text[])))";

/* Prune: only live broker cursors hold events back (touched since $3, stale_before_us: store.h
 * STORE_OUTBOX_PRUNE); the second column counts the stale ones this prune passed. */
static const char prune_sql[] =
    "WITH lim AS (SELECT LEAST(COALESCE((SELECT min(seq) FROM outbox_cursors"
    "  WHERE touched_us >= $3), 9223372036854775807),"
    "  COALESCE((SELECT min(cursor_seq) FROM subscriptions), 9223372036854775807)) AS m),"
    " old AS (SELECT e.seq FROM outbox_events e, lim WHERE e.created_us < $1 AND e.seq <= lim.m"
    "  AND NOT EXISTS (SELECT 1 FROM sub_deliveries d WHERE d.seq = e.seq AND d.state = 0)"
    "  ORDER BY e.seq LIMIT $2 FOR UPDATE OF e SKIP LOCKED),"
    " fd AS (DELETE FROM sub_deliveries WHERE seq IN (SELECT seq FROM old)),"
    " de AS (DELETE FROM outbox_events WHERE seq IN (SELECT seq FROM old) RETURNING 1),"
    " da AS (DELETE FROM delivery_attempts WHERE id IN (SELECT id FROM delivery_attempts"
    "  WHERE at_us < $1 ORDER BY id LIMIT $2) RETURNING 1) "
    "SELECT (SELECT count(*) FROM de) + (SELECT count(*) FROM da),"
    "  (SELECT count(*) FROM outbox_cursors WHERE touched_us < $3"
    "    AND seq < (SELECT max(seq) FROM old))";

/* Every result of a FINISH at once ($1..$12, $14 and $15 the columns, see results_column; $13 the
 * owner; next_at: the wait before the next attempt, from the database's clock): only deliveries
 * whose lease is ours and the result's claim's (lease_owner is "owner:token"); an answer to an
 * earlier claim of ours of a delivery claimed again since (st: a replay, or a lease that ran out,
 * then a new claim) is recorded as an attempt (delivered, or a failure the new claim retries) and
 * changes nothing; another instance's lease: ignored; a success recorded by any result of the batch
 * counts for the pause rule (outcome FAILED becomes PAUSED when the subscription has had no success
 * since the delivery's first attempt); delivered rows go, others keep waiting (RETRY, PAUSED,
 * DISABLED, RELEASE) or are dead-lettered (FAILED), but one replayed while in flight (see
 * replay_sql) waits again from attempt 1; subscriptions move their last success, pause, are
 * disabled (410), or are held (a Retry-After, from the database's clock); every result but RELEASE
 * is recorded as an attempt, in order. */
static const char finish_sql[] =
    "WITH r AS (SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::int[], $5::int[],"
    "  $6::int[], $7::bigint[], $8::bigint[], $9::int[], $10::text[], $11::bigint[],"
    "  $12::bigint[], $14::bigint[], $15::bigint[]) WITH ORDINALITY AS r(sub_id, seq, event_id,"
    "  type, attempt, code, latency, at, outcome, head, first, next_at, token, hold, n)),"
    " d AS (SELECT r.*, d.lease_until_us AS lu,"
    "  CASE WHEN d.first_attempt_us <> 0 THEN d.first_attempt_us"
    "  WHEN r.first <> 0 THEN r.first ELSE r.at END AS f"
    "  FROM sub_deliveries d JOIN r ON d.sub_id = r.sub_id AND d.seq = r.seq"
    "  WHERE d.lease_owner = $13 || ':' || r.token ORDER BY d.sub_id, d.seq FOR UPDATE OF d),"
    " st AS (SELECT r.* FROM sub_deliveries x JOIN r ON x.sub_id = r.sub_id AND x.seq = r.seq"
    "  WHERE left(x.lease_owner, length($13) + 1) = $13 || ':'"
    "    AND x.lease_owner <> $13 || ':' || r.token AND r.outcome BETWEEN 1 AND 5),"
    " succ AS (SELECT sub_id, max(at) AS at FROM d WHERE outcome = 1 GROUP BY sub_id),"
    " y AS (SELECT d.*, CASE"
    "  WHEN d.outcome IN (3, 4) AND NOT (GREATEST(s.last_success_us, COALESCE(succ.at, 0)) > 0"
    "    AND GREATEST(s.last_success_us, COALESCE(succ.at, 0)) >= d.f) THEN 4"
    "  WHEN d.outcome IN (3, 4) THEN 3"
    "  WHEN d.outcome IN (1, 5, 100) THEN d.outcome ELSE 2 END AS oc"
    "  FROM d JOIN subscriptions s ON s.id = d.sub_id LEFT JOIN succ ON succ.sub_id = d.sub_id),"
    " del AS (DELETE FROM sub_deliveries t USING y WHERE y.oc = 1 AND y.lu IS DISTINCT FROM 0"
    "  AND t.sub_id = y.sub_id AND t.seq = y.seq),"
    " upd AS (UPDATE sub_deliveries t SET"
    "  state = CASE WHEN y.lu = 0 THEN 0 WHEN y.oc = 3 THEN 1 ELSE t.state END,"
    "  attempts = CASE WHEN y.lu = 0 THEN 0 WHEN y.oc = 100 THEN t.attempts ELSE y.attempt END,"
    "  first_attempt_us = CASE WHEN y.lu = 0 THEN 0 WHEN y.oc = 100 THEN t.first_attempt_us"
    "    ELSE y.f END,"
    "  next_at_us = CASE WHEN y.lu = 0 THEN t.next_at_us ELSE " DB_NOW_US
    " + y.next_at END,"
    "  lease_owner = NULL, lease_until_us = NULL"
    "  FROM y WHERE (y.oc <> 1 OR y.lu = 0) AND t.sub_id = y.sub_id AND t.seq = y.seq),"
    " su AS (UPDATE subscriptions t SET"
    "  last_success_us = GREATEST(t.last_success_us, COALESCE(x.ok_at, 0)),"
    "  paused = t.paused OR x.pause, enabled = t.enabled AND NOT x.gone,"
    "  disabled_reason = CASE WHEN x.gone THEN 'gone' ELSE t.disabled_reason END,"
    "  hold_until_us = CASE WHEN x.hold > 0 THEN GREATEST(t.hold_until_us, " DB_NOW_US
    "    + x.hold) ELSE t.hold_until_us END"
    "  FROM (SELECT sub_id, max(at) FILTER (WHERE oc = 1) AS ok_at, bool_or(oc = 4) AS pause,"
    "    bool_or(oc = 5) AS gone, max(hold) FILTER (WHERE oc <> 100) AS hold FROM y"
    "    GROUP BY sub_id) x WHERE t.id = x.sub_id),"
    " att AS (INSERT INTO delivery_attempts (sub_id, seq, event_id, type, attempt, status_code,"
    "  latency_ms, at_us, outcome, response_head)"
    "  SELECT sub_id, seq, event_id, type, attempt, code, latency, at, oc, decode(head, 'hex')"
    "  FROM (SELECT n, sub_id, seq, event_id, type, attempt, code, latency, at, oc, head FROM y"
    "    WHERE oc <> 100 UNION ALL SELECT n, sub_id, seq, event_id, type, attempt, code,"
    "    latency, at, CASE WHEN outcome = 1 THEN 1 ELSE 2 END, head FROM st) a ORDER BY n) "
    "SELECT count(*) FROM y";

static bool prepare_ob(PGconn *c) {
  return command_ok(c, "SET synchronous_commit = on") &&
         prepare(c, "ob_audit",
                 "SELECT id FROM gensendrep_audit_append(ARRAY[0], ARRAY[$1::bigint], "
                 "ARRAY[$2::text], ARRAY[$3::text], ARRAY[$4::text], ARRAY[$5::text], "
                 "ARRAY[$6::text], ARRAY[$7::text], ARRAY[1::bigint], ARRAY[false])",
                 0, NULL) &&
         prepare(c, "sub_create",
                 "INSERT INTO subscriptions (id, url, secret, secret_sealed, sealed_with, "
                 "event_types, account_id, enabled, paused, max_per_second, disabled_reason, "
                 "created_us, updated_us, last_success_us, start_seq, cursor_seq, url_sealed, "
                 "account_sealed) SELECT $1, $2, "
                 "$3, $4::bytea, $5, $6::int, $7, $8::bool, $9::bool, $10::bigint, $11, "
                 "$12::bigint, $13::bigint, $14::bigint, m, m, $15::bytea, $16::bytea FROM "
                 "(SELECT COALESCE(max(seq), 0) AS m FROM outbox_events) x",
                 0, NULL) &&
         prepare(c, "record_key", record_key_sql, 0, NULL) &&
         prepare(c, "sub_lock",
                 "SELECT account_id, account_sealed, secret, secret_sealed, url, url_sealed "
                 "FROM subscriptions WHERE id = $1 FOR UPDATE",
                 0, NULL) &&
         prepare(c, "sub_update", sub_update_sql, 0, NULL) &&
         prepare(c, "sub_refilter", sub_refilter_sql, 0, NULL) &&
         prepare(c, "sub_delete",
                 "WITH d AS (DELETE FROM subscriptions WHERE id = $1 RETURNING id),"
                 " x AS (DELETE FROM sub_deliveries WHERE sub_id = $1),"
                 " y AS (DELETE FROM delivery_attempts WHERE sub_id = $1) "
                 "SELECT count(*) FROM d",
                 0, NULL) &&
         prepare(c, "replay", replay_sql, 0, NULL) &&
         prepare(c, "fanout_subs",
                 "SELECT id, event_types, account_id, cursor_seq, account_sealed, url, url_sealed "
                 "FROM subscriptions ORDER BY id "
                 "FOR UPDATE SKIP LOCKED",
                 0, NULL) &&
         prepare(c, "fanout", fanout_sql, 0, NULL) && prepare(c, "claim", claim_sql, 0, NULL) &&
         prepare(c, "fin_subs",
                 "SELECT id, last_success_us FROM subscriptions WHERE id = ANY($1::text[]) "
                 "ORDER BY id FOR NO KEY UPDATE",
                 0, NULL) &&
         prepare(c, "finish", finish_sql, 0, NULL) &&
         prepare(c, "cursor_make",
                 "INSERT INTO outbox_cursors (name, seq, touched_us) VALUES ($1, 0, " DB_NOW_US
                 ") ON CONFLICT DO NOTHING",
                 0, NULL) &&
         /* the lease ($3 its length) on the database's clock; read: touched (live for prune) */
         prepare(c, "cursor_lease",
                 "UPDATE outbox_cursors SET lease_owner = $2, lease_until_us = " DB_NOW_US
                 " + $3, touched_us = " DB_NOW_US
                 " WHERE name = $1 AND (lease_owner IS NULL OR lease_owner = $2 OR "
                 "lease_until_us <= " DB_NOW_US ") RETURNING seq",
                 0, NULL) &&
         /* the events after the cursor, as many as OUTBOX_READ_BYTES of data hold */
         prepare(c, "queue_events",
                 "SELECT " EVENT_COLUMNS
                 " FROM (SELECT x.*, sum(octet_length(x.data)) OVER (ORDER BY x.seq) - "
                 "octet_length(x.data) AS before FROM outbox_events x WHERE x.seq > $1 "
                 "ORDER BY x.seq LIMIT $2) e WHERE e.before < " OUTBOX_READ_BYTES " ORDER BY e.seq",
                 0, NULL) &&
         /* moved only by its holder; touched by any instance with this broker configured, and
          * created (at 0, as cursor_make) when missing: a broker never reached yet holds its
          * events back from prune too */
         prepare(c, "cursor_advance",
                 "INSERT INTO outbox_cursors AS k (name, seq, touched_us) VALUES ($1, 0, " DB_NOW_US
                 ") ON CONFLICT (name) DO UPDATE SET seq = CASE WHEN k.lease_owner = $2 AND "
                 "k.seq < $3 THEN $3 ELSE k.seq END, touched_us = " DB_NOW_US,
                 0, NULL) &&
         prepare(c, "prune", prune_sql, 0, NULL);
}

static bool ob_ready(struct pg_store *s) {
  if (conn_usable(s->ob_conn)) return true;
  PQfinish(s->ob_conn);
  s->ob_conn = pg_connect(s, &s->ob_pause_ms);
  if (s->ob_conn && !prepare_ob(s->ob_conn)) {
    PQfinish(s->ob_conn);
    s->ob_conn = NULL;
  }
  return s->ob_conn != NULL;
}

/* Runs a prepared statement (text parameters unless lens says a binary one: lens[i] > 0 or
 * bin[i]) on the outbox connection, binary results; NULL (logged, *st set) unless it answers
 * want. */
static PGresult *ob_exec(struct pg_store *s, const char *name, int n, const char *const *vals,
                         const int *lens, const int *formats, ExecStatusType want,
                         enum store_status *st) {
  PGresult *r = PQexecPrepared(s->ob_conn, name, n, vals, lens, formats, 1);
  if (PQresultStatus(r) == want) return r;
  *st = status_of(s->ob_conn, r);
  const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  s->ob_conflict = state && (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0 ||
                             strcmp(state, "23503") == 0);
  if (*st == STORE_CLIENT)
    log_msg(LOG_INFO, "postgresql refused a value (SQLSTATE %s)",
            PQresultErrorField(r, PG_DIAG_SQLSTATE));
  else
    log_msg(LOG_ERROR, "postgresql outbox %s: %s", name, PG_MSG(s->ob_conn));
  PQclear(r);
  return NULL;
}

static bool ob_command(struct pg_store *s, const char *sql, enum store_status *st) {
  PGresult *r = PQexec(s->ob_conn, sql);
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok) {
    *st = status_of(s->ob_conn, r);
    if (*st == STORE_CLIENT) *st = STORE_HARD;
    log_msg(LOG_ERROR, "postgresql outbox: %s", PG_MSG(s->ob_conn));
  }
  PQclear(r);
  return ok;
}

/* The values a filter on an event's account looks for, as a text[] literal: the value as it is
 * and, with a ring, its blind index under every key (events sealed with any of them); see
 * filter_values. */
static char *account_values(const struct seal_ring *r, const char *value) {
  return filter_values(r, value);
}

/* The ring's key ids as a text[] literal ("{}" without a ring); NULL when out of memory. */
static char *ring_keys(const struct seal_ring *r) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return NULL;
  fputc('{', f);
  for (size_t k = 0; r && k < seal_ring_count(r); k++) {
    if (k) fputc(',', f);
    fputc('"', f);
    for (const char *p = seal_ring_key_id(r, k); *p; p++) {
      if (*p == '"' || *p == '\\') fputc('\\', f);
      fputc(*p, f);
    }
    fputc('"', f);
  }
  fputc('}', f);
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* A change of subscriptions' audit entry (store.h's `who`), at now, in the transaction. */
static enum store_status ob_audit(struct pg_store *s, const struct store_write *w,
                                  enum audit_action action, const char *target) {
  char at[24];
  snprintf(at, sizeof at, "%lld", (long long)time_now_us());
  const char *vals[7] = {at,
                         w->who.request_id,
                         w->who.key_id,
                         w->who.client_ip,
                         audit_action_name(action),
                         target,
                         audit_outcome_name(AUDIT_OK)};
  enum store_status st = STORE_OK;
  PQclear(ob_exec(s, "ob_audit", 7, vals, NULL, NULL, PGRES_TUPLES_OK, &st));
  return st;
}

/* Fills out (struct sub_sealing) for sub; false when out of memory or sealing failed. */
static bool sub_seal(struct pg_store *s, const struct subscription *sub, const char *secret,
                     struct sub_sealing *out) {
  memset(out, 0, sizeof *out);
  out->url = sub->url;
  out->account = sub->account_id;
  if (!s->ring) return true;
  size_t n = seal_sealed_len(s->ring, strlen(sub->url)) +
             (secret ? seal_sealed_len(s->ring, strlen(secret)) : 0),
         at = 0;
  if (!store_seal_buf_reserve(&out->buf, n)) return false;
  char aad[STORE_AAD_MAX];
  size_t aad_len = row_aad(aad, "subscriptions.url", sub->id, NULL), len;
  unsigned char *p = out->buf.data;
  if (!seal_seal(s->ring, aad, aad_len, sub->url, strlen(sub->url), p)) return false;
  len = seal_sealed_len(s->ring, strlen(sub->url));
  out->url = "";
  out->url_sealed = (const char *)p;
  out->url_len = (int)len;
  at += len;
  if (secret) {
    aad_len = row_aad(aad, "subscriptions.secret", sub->id, NULL);
    if (!seal_seal(s->ring, aad, aad_len, secret, strlen(secret), p + at)) return false;
    out->secret_sealed = (const char *)(p + at);
    out->secret_len = (int)seal_sealed_len(s->ring, strlen(secret));
  }
  if (!sub->account_id[0]) return true;
  if (!store_seal_id(s->ring, "subscriptions.account_id", sub->id, sub->account_id,
                     &out->account_id))
    return false;
  out->account = out->account_id.index;
  out->account_sealed = (const char *)out->account_id.sealed;
  out->account_len = (int)out->account_id.len;
  return true;
}

/* The seal_keys lock and the first key recorded, as every sealing transaction does first: a
 * reencrypt finishing elsewhere cannot retire the key this write seals with. */
static enum store_status sub_record_key(struct pg_store *s) {
  if (!s->ring) return STORE_OK;
  char at[24];
  const char *kv[3];
  int kl[3], kf[3];
  record_key_params(s, at, kv, kl, kf);
  enum store_status st = STORE_OK;
  PGresult *k = ob_exec(s, "record_key", 3, kv, kl, kf, PGRES_COMMAND_OK, &st);
  PQclear(k);
  return k ? STORE_OK : st;
}

/* A subscription's account (account_id at col, account_sealed at sealed_col) into out: opened
 * when sealed; false when it does not open. */
static bool sub_account_get(const struct seal_ring *ring, const PGresult *r, int row, int col,
                            int sealed_col, const char *id, char *out, size_t cap) {
  if (PQgetisnull(r, row, sealed_col)) {
    get_text(r, row, col, out, cap);
    /* a plaintext account that passes for a blind index is one whose sealed value was lost:
     * it does not open (as on SQLite), never an account of its own */
    return !out[0] || store_id_sealable(out);
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = row_aad(aad, "subscriptions.account_id", id, NULL);
  return store_open_id(ring, aad, aad_len, PQgetvalue(r, row, sealed_col),
                       (size_t)PQgetlength(r, row, sealed_col), out, cap);
}

/* A subscription's URL (url at col, url_sealed at sealed_col) into out; false when it does not
 * open. */
static bool sub_url_get(const struct seal_ring *ring, const PGresult *r, int row, int col,
                        int sealed_col, const char *id, char *out, size_t cap) {
  if (PQgetisnull(r, row, sealed_col)) {
    get_text(r, row, col, out, cap);
    return true;
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = row_aad(aad, "subscriptions.url", id, NULL);
  return store_open_text(ring, aad, aad_len, PQgetvalue(r, row, sealed_col),
                         (size_t)PQgetlength(r, row, sealed_col), out, cap);
}

/* The secret of a sub_lock row (secret 2, secret_sealed 3) opened into out; false when it does
 * not open. */
static bool sub_secret_get(const struct seal_ring *ring, const PGresult *r, const char *id,
                           char *out, size_t cap) {
  if (PQgetisnull(r, 0, 3)) {
    get_text(r, 0, 2, out, cap);
    return true;
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = row_aad(aad, "subscriptions.secret", id, NULL);
  return store_open_text(ring, aad, aad_len, PQgetvalue(r, 0, 3), (size_t)PQgetlength(r, 0, 3), out,
                         cap);
}

static enum store_status sub_put(struct pg_store *s, struct store_write *w) {
  const struct subscription *sub = w->sub;
  char types[16], max[24], created[24], updated[24], success[24];
  snprintf(types, sizeof types, "%u", sub->event_types);
  snprintf(max, sizeof max, "%lld", (long long)sub->max_per_second);
  snprintf(created, sizeof created, "%lld", (long long)sub->created_us);
  snprintf(updated, sizeof updated, "%lld", (long long)sub->updated_us);
  snprintf(success, sizeof success, "%lld", (long long)sub->last_success_us);
  if (!utf8_valid(sub->url, strlen(sub->url)) ||
      !utf8_valid(sub->account_id, strlen(sub->account_id)) ||
      (sub->account_id[0] && !store_id_sealable(sub->account_id)))
    return STORE_CLIENT;
  enum store_status st = sub_record_key(s);
  if (st != STORE_OK) return st;
  struct sub_sealing sealed;
  if (w->sub_create) {
    if (!sub_seal(s, sub, sub->secret, &sealed)) {
      store_seal_buf_free(&sealed.buf);
      return STORE_RETRY;
    }
    const char *vals[16] = {sub->id,
                            sealed.url,
                            s->ring ? "" : sub->secret,
                            sealed.secret_sealed,
                            s->ring ? seal_ring_key_id(s->ring, 0) : NULL,
                            types,
                            sealed.account,
                            sub->enabled ? "t" : "f",
                            sub->paused ? "t" : "f",
                            max,
                            sub->disabled_reason,
                            created,
                            updated,
                            success,
                            sealed.url_sealed,
                            sealed.account_sealed};
    int lens[16] = {0, 0, 0, sealed.secret_len};
    int formats[16] = {0, 0, 0, 1};
    lens[14] = sealed.url_len;
    lens[15] = sealed.account_len;
    formats[14] = formats[15] = 1;
    PGresult *r = ob_exec(s, "sub_create", 16, vals, lens, formats, PGRES_COMMAND_OK, &st);
    PQclear(r);
    store_seal_buf_free(&sealed.buf);
    if (!r) return st;
    return ob_audit(s, w, AUDIT_SUBSCRIPTION_CREATED, sub->id);
  }
  const char *lock[1] = {sub->id};
  PGresult *r = ob_exec(s, "sub_lock", 1, lock, NULL, NULL, PGRES_TUPLES_OK, &st);
  if (!r) return st;
  bool found = PQntuples(r) == 1;
  /* sealed_with names the key of every sealed column of a row (reencrypt walks by it, start-up
   * checks the ring by it): only an update that seals the URL and the account again also
   * reseals the secret and names the first key; any other keeps the secret and sealed_with, so
   * a row a rotation left on an older key stays due for reencrypt, all of it. A secret that does
   * not open is kept as it is and fails no update. */
  char secret[OUTBOX_SECRET_MAX];
  bool reseal = found && s->ring &&
                (w->sub_fields & (STORE_SUB_URL | STORE_SUB_ACCOUNT)) ==
                    (STORE_SUB_URL | STORE_SUB_ACCOUNT) &&
                sub_secret_get(s->ring, r, sub->id, secret, sizeof secret);
  /* what it wants after the update: its account as given, else as stored */
  bool refilter = found && (w->sub_fields & (STORE_SUB_TYPES | STORE_SUB_ACCOUNT)) != 0;
  char account[MODEL_ACCOUNT_ID_MAX + 1] = "";
  if (refilter && (w->sub_fields & STORE_SUB_ACCOUNT))
    snprintf(account, sizeof account, "%s", sub->account_id);
  else if (refilter)
    refilter = sub_account_get(s->ring, r, 0, 0, 1, sub->id, account, sizeof account);
  PQclear(r);
  if (!found) return STORE_NOT_FOUND;
  bool ok = sub_seal(s, sub, reseal ? secret : NULL, &sealed);
  memset(secret, 0, sizeof secret);
  if (!ok) {
    store_seal_buf_free(&sealed.buf);
    return STORE_RETRY;
  }
  char fields[16];
  snprintf(fields, sizeof fields, "%u", w->sub_fields);
  const char *vals[13] = {sub->id,
                          sealed.url,
                          types,
                          sealed.account,
                          sub->enabled ? "t" : "f",
                          max,
                          updated,
                          w->sub_enabled_given ? "t" : "f",
                          fields,
                          sealed.url_sealed,
                          sealed.account_sealed,
                          sealed.secret_sealed,
                          s->ring ? seal_ring_key_id(s->ring, 0) : NULL};
  int lens[13] = {0}, formats[13] = {0};
  lens[9] = sealed.url_len;
  lens[10] = sealed.account_len;
  lens[11] = sealed.secret_len;
  formats[9] = formats[10] = formats[11] = 1;
  r = ob_exec(s, "sub_update", 13, vals, lens, formats, PGRES_TUPLES_OK, &st);
  store_seal_buf_free(&sealed.buf);
  if (!r) return st;
  w->erased = PQntuples(r) == 1 ? get_i64(r, 0, 1) : 0; /* deliveries made due */
  PQclear(r);
  if (refilter) { /* an account that does not open: the dispatcher holds the subscription */
    char *values = account_values(s->ring, account), *keys = ring_keys(s->ring);
    if (!values || !keys) {
      free(values);
      free(keys);
      return STORE_RETRY;
    }
    const char *rv[4] = {sub->id, account[0] ? "t" : "f", values, keys};
    r = ob_exec(s, "sub_refilter", 4, rv, NULL, NULL, PGRES_COMMAND_OK, &st);
    free(values);
    free(keys);
    if (!r) return st;
    PQclear(r);
  }
  return ob_audit(s, w, AUDIT_SUBSCRIPTION_UPDATED, sub->id);
}

static enum store_status sub_delete(struct pg_store *s, struct store_write *w) {
  const char *vals[1] = {w->sub_id};
  enum store_status st = STORE_OK;
  PGresult *r = ob_exec(s, "sub_lock", 1, vals, NULL, NULL, PGRES_TUPLES_OK, &st);
  if (!r) return st;
  bool found = PQntuples(r) == 1;
  PQclear(r);
  w->erased = 0;
  if (!found) return STORE_OK;
  r = ob_exec(s, "sub_delete", 1, vals, NULL, NULL, PGRES_TUPLES_OK, &st);
  if (!r) return st;
  w->erased = get_i64(r, 0, 0);
  PQclear(r);
  return ob_audit(s, w, AUDIT_SUBSCRIPTION_DELETED, w->sub_id);
}

static enum store_status replay(struct pg_store *s, struct store_write *w) {
  const char *lock[1] = {w->sub_id};
  enum store_status st = STORE_OK;
  PGresult *r = ob_exec(s, "sub_lock", 1, lock, NULL, NULL, PGRES_TUPLES_OK, &st);
  if (!r) return st;
  if (PQntuples(r) != 1) {
    PQclear(r);
    return STORE_NOT_FOUND;
  }
  /* a URL that does not open is refused as an account that does not open: rows made now
   * would wait under the account it has, not the one it gets once mended (as fan-out) */
  char account[MODEL_ACCOUNT_ID_MAX + 1], url[OUTBOX_URL_MAX + 1];
  bool opened = sub_account_get(s->ring, r, 0, 0, 1, w->sub_id, account, sizeof account) &&
                sub_url_get(s->ring, r, 0, 4, 5, w->sub_id, url, sizeof url);
  PQclear(r);
  if (!opened) {
    log_msg(LOG_ERROR, "subscription %s: its sealed URL or account does not open", w->sub_id);
    return STORE_HARD;
  }
  char *values = account_values(s->ring, account);
  if (!values) return STORE_RETRY;
  char since[24];
  snprintf(since, sizeof since, "%lld", (long long)w->replay_since_us);
  const char *vals[3] = {w->sub_id, since, values};
  r = ob_exec(s, "replay", 3, vals, NULL, NULL, PGRES_TUPLES_OK, &st);
  free(values);
  if (!r) return st;
  w->erased = get_i64(r, 0, 0);
  PQclear(r);
  return ob_audit(s, w, AUDIT_SUBSCRIPTION_REPLAYED, w->sub_id);
}

static enum store_status fanout(struct pg_store *s, struct store_outbox_work *o) {
  enum store_status st = STORE_OK;
  char *keys = ring_keys(s->ring);
  if (!keys) return STORE_RETRY;
  PGresult *subs = ob_exec(s, "fanout_subs", 0, NULL, NULL, NULL, PGRES_TUPLES_OK, &st);
  if (!subs) {
    free(keys);
    return st;
  }
  char limit[24];
  snprintf(limit, sizeof limit, "%lld", (long long)(o->limit > 0 ? o->limit : 1));
  for (int i = 0; st == STORE_OK && i < PQntuples(subs); i++) {
    char id[OUTBOX_SUB_ID_MAX], account[MODEL_ACCOUNT_ID_MAX + 1], types[16], cursor[24];
    get_text(subs, i, 0, id, sizeof id);
    uint32_t t;
    memcpy(&t, PQgetvalue(subs, i, 1), sizeof t);
    snprintf(types, sizeof types, "%u", be32toh(t));
    /* a URL that does not open as well as an account: nothing can go to it, and what it gets is
     * decided by the account it has once mended (PATCH url and accountId), not the one now (no
     * rows made under it) */
    char url[OUTBOX_URL_MAX + 1];
    if (!sub_account_get(s->ring, subs, i, 2, 4, id, account, sizeof account) ||
        !sub_url_get(s->ring, subs, i, 5, 6, id, url, sizeof url)) {
      /* its events wait (its cursor stays): the others go on; said once, not every round */
      store_unopened_note(&s->unopened, id);
      continue;
    }
    snprintf(cursor, sizeof cursor, "%lld", (long long)get_i64(subs, i, 3));
    char *values = account[0] ? account_values(s->ring, account) : strdup("{}");
    if (!values) {
      st = STORE_RETRY;
      break;
    }
    /* whether it filters by account, never the account itself: bind parameters reach the
     * server's logs (log_min_duration_statement, errors) */
    const char *vals[7] = {id, cursor, limit, types, account[0] ? "t" : "f", values, keys};
    PGresult *r = ob_exec(s, "fanout", 7, vals, NULL, NULL, PGRES_TUPLES_OK, &st);
    free(values);
    if (r) o->added += get_i64(r, 0, 0);
    PQclear(r);
  }
  store_unopened_end(&s->unopened, st == STORE_OK);
  PQclear(subs);
  free(keys);
  return st;
}

/* An event row (EVENT_COLUMNS from column first) read back: its data opened when sealed and
 * its audio put back. */
static enum store_status read_outbox_event(const struct seal_ring *ring, const PGresult *r, int row,
                                           int first, struct store_outbox_event *ev) {
  ev->seq = get_i64(r, row, first);
  get_text(r, row, first + 1, ev->id, sizeof ev->id);
  uint32_t t;
  memcpy(&t, PQgetvalue(r, row, first + 2), sizeof t);
  ev->type = (int)be32toh(t);
  get_text(r, row, first + 3, ev->conversation_id, sizeof ev->conversation_id);
  ev->created_us = get_i64(r, row, first + 4);
  int64_t audio = PQgetisnull(r, row, first + 6) ? -1 : get_i64(r, row, first + 6);
  if (!PQgetisnull(r, row, first + 7) && ev->type != OUTBOX_DELETED) {
    enum store_status st = open_alloc(ring, "outbox_events.data", ev->conversation_id, NULL, r, row,
                                      first + 5, &ev->data, &ev->data_len);
    if (st != STORE_OK) return st;
  } else {
    size_t len = (size_t)PQgetlength(r, row, first + 5);
    if (!(ev->data = malloc(len + 1))) return STORE_RETRY;
    memcpy(ev->data, PQgetvalue(r, row, first + 5), len);
    ev->data[len] = '\0';
    ev->data_len = len;
  }
  if (!outbox_with_audio(ev->conversation_id, audio, &ev->data, &ev->data_len)) {
    log_msg(LOG_ERROR, "outbox event %s: its audio cannot be put back in its data", ev->id);
    return STORE_HARD;
  }
  return STORE_OK;
}

static enum store_status claim(struct pg_store *s, struct store_outbox_work *o) {
  char limit[24], until[24];
  snprintf(limit, sizeof limit, "%lld", (long long)(o->limit > 0 ? o->limit : 1));
  snprintf(until, sizeof until, "%lld", (long long)o->lease_us); /* from the database's now */
  char *keys = ring_keys(s->ring);
  if (!keys) return STORE_RETRY;
  /* The claim's own token: a later claim of these deliveries gets another, so an answer to
   * this one's sends cannot act on that one (finish_sql). */
  int64_t token = ++s->lease_seq;
  char owner[sizeof s->owner + 24];
  snprintf(owner, sizeof owner, "%s:%lld", s->owner, (long long)token);
  const char *vals[5] = {o->sub_id ? o->sub_id : "", limit, owner, until, keys};
  enum store_status st = STORE_OK;
  PGresult *r = ob_exec(s, "claim", 5, vals, NULL, NULL, PGRES_TUPLES_OK, &st);
  free(keys);
  if (!r) return st;
  int rows = PQntuples(r);
  if (rows > 0 && !(o->jobs = calloc((size_t)rows, sizeof *o->jobs))) st = STORE_RETRY;
  for (int i = 0; st == STORE_OK && i < rows; i++) {
    struct store_delivery_job *j = &o->jobs[o->count++];
    snprintf(j->sub_id, sizeof j->sub_id, "%s", o->sub_id);
    uint32_t a;
    memcpy(&a, PQgetvalue(r, i, 0), sizeof a);
    j->attempt = (int)be32toh(a) + 1;
    j->first_attempt_us = get_i64(r, i, 1);
    j->lease_token = token;
    st = read_outbox_event(s->ring, r, i, 2, &j->event);
  }
  PQclear(r);
  return st;
}

/* The results as one PostgreSQL array literal per column (col: 0 sub, 1 seq, 2 event id, 3 type,
 * 4 attempt, 5 status code, 6 latency, 7 at, 8 outcome, 9 the answer's head in hex, 10 first
 * attempt, 11 the wait before the next attempt: next_at_us less the instance's now (now_us; see
 * finish_sql, which adds it to the database's now), 12 lease token, 13 hold); NULL when out of
 * memory. */
static void quoted(FILE *f, const char *v) {
  fputc('"', f);
  for (const char *p = v; *p; p++) {
    if (*p == '"' || *p == '\\') fputc('\\', f);
    fputc(*p, f);
  }
  fputc('"', f);
}

static char *results_column(const struct store_outbox_work *o, int col) {
  int64_t now_us = o->now_us ? o->now_us : time_now_us();
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f) return NULL;
  fputc('{', f);
  for (size_t i = 0; i < o->nresults; i++) {
    const struct store_delivery_result *r = &o->results[i];
    if (i) fputc(',', f);
    int64_t v = 0;
    switch (col) {
      case 0:
        quoted(f, r->sub_id);
        continue;
      case 2:
        quoted(f, r->event_id);
        continue;
      case 9:
        fputc('"', f);
        for (size_t k = 0; k < strnlen(r->response_head, sizeof r->response_head); k++)
          fprintf(f, "%02x", (unsigned char)r->response_head[k]);
        fputc('"', f);
        continue;
      case 1:
        v = r->seq;
        break;
      case 3:
        v = r->type;
        break;
      case 4:
        v = r->attempt;
        break;
      case 5:
        v = r->status_code;
        break;
      case 6:
        v = r->latency_ms;
        break;
      case 7:
        v = r->at_us;
        break;
      case 8:
        v = r->outcome;
        break;
      case 10:
        v = r->first_attempt_us;
        break;
      case 12:
        v = r->lease_token;
        break;
      case 13:
        v = r->hold_us;
        break;
      default:
        v = r->next_at_us - now_us;
        break;
    }
    fprintf(f, "%lld", (long long)v);
  }
  fputc('}', f);
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* FINISH: the results' subscriptions locked first, in id order (see above), then every result
 * applied by one statement (finish_sql). */
static enum store_status finish(struct pg_store *s, struct store_outbox_work *o) {
  if (o->nresults == 0) return STORE_OK;
  enum { COLS = 14 };
  char *cols[COLS];
  bool ok = true;
  for (int c = 0; c < COLS; c++) ok = (cols[c] = results_column(o, c)) != NULL && ok;
  enum store_status st = ok ? STORE_OK : STORE_RETRY;
  PGresult *r = NULL;
  if (ok) {
    const char *lock[1] = {cols[0]};
    PQclear(r = ob_exec(s, "fin_subs", 1, lock, NULL, NULL, PGRES_TUPLES_OK, &st));
  }
  if (r) {
    /* $1..$12 the columns 0..11, $13 the owner, $14 the tokens (column 12), $15 the holds */
    const char *vals[COLS + 1];
    for (int c = 0; c < 12; c++) vals[c] = cols[c];
    vals[12] = s->owner;
    vals[13] = cols[12];
    vals[14] = cols[13];
    PQclear(r = ob_exec(s, "finish", COLS + 1, vals, NULL, NULL, PGRES_TUPLES_OK, &st));
  }
  for (int c = 0; c < COLS; c++) free(cols[c]);
  return r ? STORE_OK : st;
}

static enum store_status queue_read(struct pg_store *s, struct store_outbox_work *o) {
  char until[24], limit[24];
  snprintf(until, sizeof until, "%lld", (long long)o->lease_us); /* from the database's now */
  snprintf(limit, sizeof limit, "%lld", (long long)(o->limit > 0 ? o->limit : 1));
  const char *name = o->cursor_name ? o->cursor_name : "";
  enum store_status st = STORE_OK;
  const char *mk[1] = {name};
  PGresult *r = ob_exec(s, "cursor_make", 1, mk, NULL, NULL, PGRES_COMMAND_OK, &st);
  if (!r) return st;
  PQclear(r);
  const char *lease[3] = {name, s->owner, until};
  r = ob_exec(s, "cursor_lease", 3, lease, NULL, NULL, PGRES_TUPLES_OK, &st);
  if (!r) return st;
  if (PQntuples(r) != 1) {
    PQclear(r);
    o->busy = true;
    return STORE_OK;
  }
  char after[24];
  snprintf(after, sizeof after, "%lld", (long long)get_i64(r, 0, 0));
  PQclear(r);
  const char *vals[2] = {after, limit};
  r = ob_exec(s, "queue_events", 2, vals, NULL, NULL, PGRES_TUPLES_OK, &st);
  if (!r) return st;
  int rows = PQntuples(r);
  if (rows > 0 && !(o->events = calloc((size_t)rows, sizeof *o->events))) st = STORE_RETRY;
  for (int i = 0; st == STORE_OK && i < rows; i++)
    st = read_outbox_event(s->ring, r, i, 0, &o->events[o->count++]);
  PQclear(r);
  return st;
}

static enum store_status outbox_work(struct pg_store *s, struct store_write *w) {
  struct store_outbox_work *o = w->outbox;
  o->added = 0;
  o->count = 0;
  o->jobs = NULL;
  o->events = NULL;
  o->busy = false;
  o->stale = 0;
  enum store_status st = STORE_OK;
  char a[24], b[24];
  switch (o->op) {
    case STORE_OUTBOX_FANOUT:
      return fanout(s, o);
    case STORE_OUTBOX_CLAIM:
      return claim(s, o);
    case STORE_OUTBOX_FINISH:
      return finish(s, o);
    case STORE_OUTBOX_QUEUE_READ:
      return queue_read(s, o);
    case STORE_OUTBOX_QUEUE_ADVANCE: {
      snprintf(a, sizeof a, "%lld", (long long)o->upto_seq);
      const char *vals[3] = {o->cursor_name ? o->cursor_name : "", s->owner, a};
      PGresult *r = ob_exec(s, "cursor_advance", 3, vals, NULL, NULL, PGRES_COMMAND_OK, &st);
      PQclear(r);
      return r ? STORE_OK : st;
    }
    case STORE_OUTBOX_PRUNE: {
      snprintf(a, sizeof a, "%lld", (long long)o->before_us);
      snprintf(b, sizeof b, "%lld", (long long)(o->limit > 0 ? o->limit : 1));
      char c[24];
      snprintf(c, sizeof c, "%lld", (long long)o->stale_before_us);
      const char *vals[3] = {a, b, c};
      PGresult *r = ob_exec(s, "prune", 3, vals, NULL, NULL, PGRES_TUPLES_OK, &st);
      if (!r) return st;
      o->added = get_i64(r, 0, 0);
      o->stale = get_i64(r, 0, 1);
      PQclear(r);
      return STORE_OK;
    }
  }
  return STORE_HARD;
}

#define ANALYZE_EVERY 1000

/* One write of the outbox's own, in its transaction; whether the dispatcher should look again
 * (deliveries made due) in *wake. */
static enum store_status ob_run_once(struct pg_store *s, struct store_write *w, bool *wake) {
  *wake = false;
  s->ob_conflict = false;
  if (!ob_ready(s)) return STORE_RETRY;
  enum store_status st = STORE_OK;
  if (!ob_command(s, "BEGIN", &st)) {
    if (PQstatus(s->ob_conn) != CONNECTION_OK) {
      PQfinish(s->ob_conn);
      s->ob_conn = NULL;
    }
    return st;
  }
  switch (w->kind) {
    case STORE_WRITE_SUB_PUT:
      st = sub_put(s, w);
      *wake = st == STORE_OK && w->erased > 0;
      break;
    case STORE_WRITE_SUB_DELETE:
      st = sub_delete(s, w);
      break;
    case STORE_WRITE_REPLAY:
      st = replay(s, w);
      *wake = st == STORE_OK && w->erased > 0;
      break;
    case STORE_WRITE_OUTBOX:
      st = outbox_work(s, w);
      break;
    default:
      st = STORE_HARD;
      break;
  }
  if (st == STORE_OK && !ob_command(s, "COMMIT", &st) && st == STORE_OK) st = STORE_RETRY;
  if (st != STORE_OK) {
    enum store_status ignored;
    if (PQstatus(s->ob_conn) == CONNECTION_OK) (void)ob_command(s, "ROLLBACK", &ignored);
    if (w->kind == STORE_WRITE_OUTBOX) store_jobs_free(w->outbox);
    *wake = false;
  }
  /* A claim's order check is planned well only with statistics of sub_deliveries that know a
   * subscription's rows (without, PostgreSQL walked every pending row of it per candidate:
   * seconds for a few thousand); autovacuum may come a minute after a burst, so fan-out asks
   * for them after every ANALYZE_EVERY deliveries it made. */
  if (st == STORE_OK && w->kind == STORE_WRITE_OUTBOX && w->outbox->op == STORE_OUTBOX_FANOUT &&
      (s->fanned_since_analyze += w->outbox->added) >= ANALYZE_EVERY) {
    s->fanned_since_analyze = 0;
    enum store_status ignored;
    (void)ob_command(s, "ANALYZE sub_deliveries", &ignored);
  }
  if (PQstatus(s->ob_conn) != CONNECTION_OK) {
    report_down(s, PG_MSG(s->ob_conn));
    PQfinish(s->ob_conn);
    s->ob_conn = NULL;
  }
  return st;
}

/* A transaction that lost a race (a deadlock's victim, a serialization failure, or a fan-out or
 * replay whose event an erasure or a prune removed meanwhile: 23503 of sub_deliveries' foreign
 * key, migration 0009) is rolled back whole and run once more: the second run no longer sees
 * what was erased. */
static enum store_status ob_run(struct pg_store *s, struct store_write *w, bool *wake) {
  enum store_status st = ob_run_once(s, w, wake);
  if (st != STORE_OK && s->ob_conflict && s->ob_conn) {
    log_msg(LOG_INFO, "postgresql outbox: a transaction lost a race with another; run again");
    st = ob_run_once(s, w, wake);
  }
  return st;
}

static void *ob_main(void *arg) {
  struct pg_store *s = arg;
  struct store_write *w;
  while ((w = write_queue_take(&s->ob_queue)) != NULL) {
    bool wake;
    /* Timed like the main writer's group commits (and like SQLite's outbox writes, which go
     * through its one writer): a batch of one. */
    write_queue_commit_begin(&s->ob_queue, w);
    enum store_status st = ob_run(s, w, &wake);
    write_queue_commit_end(&s->ob_queue);
    if (wake && s->notify) s->notify(s->notify_cls);
    write_queue_finish(w, st);
  }
  return NULL;
}

static void pg_set_outbox_notify(struct store *base, void (*notify)(void *cls), void *cls) {
  struct pg_store *s = (struct pg_store *)base;
  s->notify = notify;
  s->notify_cls = cls;
}

/* ---------- onward delivery: reads ---------- */

static enum store_status read_sub(const struct seal_ring *ring, const PGresult *r, int row,
                                  struct subscription *out) {
  memset(out, 0, sizeof *out);
  get_text(r, row, 0, out->id, sizeof out->id);
  /* never the secret (store.h sub_secret): one that does not open fails no read */
  /* nor does a URL or account that does not open: the subscription is read as unreadable (the
   * dispatcher holds it and says so once; GET shows it) */
  if (!sub_url_get(ring, r, row, 1, 13, out->id, out->url, sizeof out->url) ||
      !sub_account_get(ring, r, row, 5, 14, out->id, out->account_id, sizeof out->account_id)) {
    out->unreadable = true;
    out->url[0] = '\0';
    out->account_id[0] = '\0';
  }
  uint32_t t;
  memcpy(&t, PQgetvalue(r, row, 4), sizeof t);
  out->event_types = be32toh(t);
  out->enabled = *PQgetvalue(r, row, 6) != 0;
  out->paused = *PQgetvalue(r, row, 7) != 0;
  out->max_per_second = get_i64(r, row, 8);
  get_text(r, row, 9, out->disabled_reason, sizeof out->disabled_reason);
  out->created_us = get_i64(r, row, 10);
  out->updated_us = get_i64(r, row, 11);
  out->last_success_us = get_i64(r, row, 12);
  out->hold_until_us = get_i64(r, row, 15);
  return STORE_OK;
}

static enum store_status pg_sub_get(struct store *base, const char *id, struct subscription *out) {
  struct pg_store *s = (struct pg_store *)base;
  const char *vals[] = {id};
  enum store_status st = STORE_RETRY;
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_exec(s, r, "sub_get", 1, vals, &st);
    if (st == STORE_OK) st = PQntuples(res) == 0 ? STORE_NOT_FOUND : read_sub(s->ring, res, 0, out);
    PQclear(res);
    if (r->conn) break;
  }
  return st;
}

static enum store_status read_sub_row(const struct seal_ring *ring, const PGresult *res, int row,
                                      void *item) {
  return read_sub(ring, res, row, item);
}

static enum store_status pg_sub_list(struct store *base, struct subscription **out, size_t *count) {
  void *items;
  enum store_status st =
      read_list((struct pg_store *)base, "sub_list", sizeof **out, read_sub_row, &items, count);
  *out = items;
  return st;
}

/* The secret as text (secret), or sealed (secret_sealed). */
static enum store_status pg_sub_secret(struct store *base, const char *id, char *out) {
  struct pg_store *s = (struct pg_store *)base;
  const char *vals[] = {id};
  enum store_status st = STORE_RETRY;
  out[0] = '\0';
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_exec(s, r, "sub_secret", 1, vals, &st);
    if (st == STORE_OK && PQntuples(res) == 0) {
      st = STORE_NOT_FOUND;
    } else if (st == STORE_OK && !PQgetisnull(res, 0, 1)) {
      char aad[STORE_AAD_MAX];
      size_t aad_len = row_aad(aad, "subscriptions.secret", id, NULL);
      if (!store_open_text(s->ring, aad, aad_len, PQgetvalue(res, 0, 1),
                           (size_t)PQgetlength(res, 0, 1), out, OUTBOX_SECRET_MAX))
        st = STORE_HARD;
    } else if (st == STORE_OK) {
      get_text(res, 0, 0, out, OUTBOX_SECRET_MAX);
    }
    PQclear(res);
    if (r->conn) break;
  }
  if (st != STORE_OK) memset(out, 0, OUTBOX_SECRET_MAX);
  return st;
}

static enum store_status pg_attempt_list(struct store *base, const char *sub_id, int64_t before_id,
                                         int64_t skip, int64_t limit,
                                         struct store_attempt_page *out) {
  struct pg_store *s = (struct pg_store *)base;
  char before[24], lim[24], off[24];
  snprintf(before, sizeof before, "%lld", (long long)(before_id > 0 ? before_id : INT64_MAX));
  snprintf(lim, sizeof lim, "%lld", (long long)(limit < 1 ? 1 : limit > 1001 ? 1001 : limit));
  snprintf(off, sizeof off, "%lld", (long long)(skip > 0 ? skip : 0));
  const char *vals[] = {sub_id, before, lim, off};
  enum store_status st = STORE_RETRY;
  out->items = NULL;
  out->count = 0;
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_exec(s, r, "attempt_list", 4, vals, &st);
    int rows = st == STORE_OK ? PQntuples(res) : 0;
    if (st == STORE_OK && rows > 0 && !(out->items = calloc((size_t)rows, sizeof *out->items)))
      st = STORE_RETRY;
    for (int i = 0; st == STORE_OK && i < rows; i++) {
      struct store_attempt *a = &out->items[out->count++];
      uint32_t v;
      a->id = get_i64(res, i, 0);
      get_text(res, i, 1, a->event_id, sizeof a->event_id);
      memcpy(&v, PQgetvalue(res, i, 2), 4);
      a->type = (int)be32toh(v);
      memcpy(&v, PQgetvalue(res, i, 3), 4);
      a->attempt = (int)be32toh(v);
      memcpy(&v, PQgetvalue(res, i, 4), 4);
      a->status_code = (int)be32toh(v);
      a->latency_ms = get_i64(res, i, 5);
      a->at_us = get_i64(res, i, 6);
      memcpy(&v, PQgetvalue(res, i, 7), 4);
      a->outcome = (int)be32toh(v);
      get_text(res, i, 8, a->response_head, sizeof a->response_head);
    }
    PQclear(res);
    if (st != STORE_OK) {
      free(out->items);
      out->items = NULL;
      out->count = 0;
    }
    if (r->conn) break;
  }
  return st;
}

static enum store_status pg_outbox_stats(struct store *base, const char *cursor_name,
                                         struct store_outbox_stats *out) {
  struct pg_store *s = (struct pg_store *)base;
  const char *vals[] = {cursor_name ? cursor_name : "", cursor_name ? "t" : "f"};
  enum store_status st = STORE_RETRY;
  memset(out, 0, sizeof *out);
  for (int attempt = 0; attempt < READ_ATTEMPTS; attempt++) {
    struct pg_reader *r = reader_get(s);
    if (!r) return STORE_RETRY;
    PGresult *res = reader_exec(s, r, "outbox_stats", 2, vals, &st);
    if (st == STORE_OK && (PQntuples(res) != 1 || PQnfields(res) != 5)) st = STORE_HARD;
    if (st == STORE_OK) {
      out->pending_deliveries = get_i64(res, 0, 0);
      out->oldest_pending_us = time_or_zero(res, 0, 1);
      out->queue_backlog = get_i64(res, 0, 2);
      out->oldest_queue_us = time_or_zero(res, 0, 3);
      out->dead_letters = get_i64(res, 0, 4);
      out->count_cap = atoll(STATS_CAP);
    }
    PQclear(res);
    if (r->conn) break;
  }
  return st;
}

/* ---------- lifecycle ---------- */

static void pg_close(struct store *base) {
  struct pg_store *s = (struct pg_store *)base;
  write_queue_stop(&s->queue);
  write_queue_stop(&s->ob_queue);
  if (s->writer_started) pthread_join(s->writer, NULL);
  if (s->ob_started) pthread_join(s->ob_thread, NULL);
  write_queue_destroy(&s->queue);
  write_queue_destroy(&s->ob_queue);
  PQfinish(s->ob_conn);
  store_seal_buf_free(&s->outbox_buf[0]);
  store_seal_buf_free(&s->outbox_buf[1]);
  thread_slot_destroy(&s->readers, reader_release);
  PQfinish(s->writer_conn);
  for (int i = 0; i < AUDIT_COLUMNS; i++) free(s->audit_cols[i].p);
  store_seal_buf_free(&s->arena);
  free(s->audio_buf);
  store_unopened_free(&s->unopened);
  free(s->url);
  free(s);
}

/* TODO(seal): the backend's part is still to come. */

/* set_ring's checks on its own connection (store.h), in one transaction holding the seal_keys
 * lock, checks first and the record last (a refused start records nothing): every recorded key
 * must be in the ring and be the same key (its check value opens); then the ring's first key is
 * recorded. A key is retired only by a finished gensendrep reencrypt (reseal_finish), never at
 * a start, which could race an instance sealing with it. */
static enum store_status check_keys_locked(PGconn *c, const struct seal_ring *ring,
                                           const unsigned char *check, int check_len, char *err,
                                           size_t errlen) {
  char aad[STORE_AAD_MAX];
  PGresult *keys = PQexecParams(c, "SELECT key_id, check_value FROM seal_keys ORDER BY key_id", 0,
                                NULL, NULL, NULL, NULL, 1);
  if (PQresultStatus(keys) != PGRES_TUPLES_OK) {
    PQclear(keys);
    return STORE_RETRY;
  }
  enum store_status st = STORE_OK;
  for (int i = 0; st == STORE_OK && i < PQntuples(keys); i++) {
    const char *id = PQgetvalue(keys, i, 0);
    if (!ring) {
      snprintf(err, errlen,
               "ENCRYPTION_KEYS is not set, but this database's data is sealed (key \"%s\"): set "
               "ENCRYPTION_KEYS to the keys its data was sealed with",
               id);
      st = STORE_HARD;
    } else if (!seal_ring_has(ring, id)) {
      snprintf(err, errlen,
               "ENCRYPTION_KEYS lacks key \"%s\", which this database's data may be sealed with: "
               "add it back after the first key (it may go once `gensendrep reencrypt` has run)",
               id);
      st = STORE_HARD;
    } else {
      unsigned char plain[sizeof check_text];
      size_t aad_len = row_aad(aad, "seal_keys.check_value", id, NULL), n = 0;
      const char *v = PQgetvalue(keys, i, 1);
      size_t len = (size_t)PQgetlength(keys, i, 1);
      if (seal_plain_len(v, len) != sizeof check_text - 1 ||
          !seal_open(ring, aad, aad_len, v, len, plain, &n) || memcmp(plain, check_text, n) != 0) {
        snprintf(err, errlen,
                 "ENCRYPTION_KEYS: key \"%s\" is not the key of that id that sealed this "
                 "database's data (same id, other bytes)",
                 id);
        st = STORE_HARD;
      }
    }
  }
  PQclear(keys);
  if (st != STORE_OK || !ring) return st;
  char now[24];
  snprintf(now, sizeof now, "%lld", (long long)time_now_us());
  const char *vals[3] = {seal_ring_key_id(ring, 0), (const char *)check, now};
  int lens[3] = {0, check_len, 0};
  int formats[3] = {0, 1, 0};
  PGresult *r = PQexecParams(c,
                             "INSERT INTO seal_keys (key_id, check_value, added_us) "
                             "VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING",
                             3, NULL, vals, lens, formats, 0);
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  PQclear(r);
  return ok ? STORE_OK : STORE_RETRY;
}

static enum store_status check_keys(PGconn *c, const struct seal_ring *ring,
                                    const unsigned char *check, int check_len, char *err,
                                    size_t errlen) {
  if (!command_ok(c, "BEGIN")) return STORE_RETRY;
  PGresult *r = PQexec(c, "SELECT pg_advisory_xact_lock(" SEAL_LOCK ")");
  bool locked = PQresultStatus(r) == PGRES_TUPLES_OK;
  PQclear(r);
  enum store_status st =
      locked ? check_keys_locked(c, ring, check, check_len, err, errlen) : STORE_RETRY;
  if (st == STORE_OK && !command_ok(c, "COMMIT")) st = STORE_RETRY;
  if (st != STORE_OK) (void)command_ok(c, "ROLLBACK");
  return st;
}

static enum store_status pg_set_ring(struct store *base, const struct seal_ring *ring, char *err,
                                     size_t errlen) {
  struct pg_store *s = (struct pg_store *)base;
  char why[MSG_MAX];
  if (ring) { /* the first key's check value: recorded here, and by every batch (send_batch) */
    const char *id = seal_ring_key_id(ring, 0);
    char aad[STORE_AAD_MAX];
    size_t aad_len = row_aad(aad, "seal_keys.check_value", id, NULL);
    size_t len = seal_sealed_len(ring, sizeof check_text - 1);
    if (len > sizeof s->key0_check ||
        !seal_seal(ring, aad, aad_len, check_text, sizeof check_text - 1, s->key0_check)) {
      snprintf(err, errlen, "ENCRYPTION_KEYS: cannot seal with key \"%s\"", id);
      return STORE_HARD;
    }
    s->key0_check_len = (int)len;
  }
  PGconn *c = pg_connect_once(s, why, sizeof why);
  enum store_status st =
      c ? check_keys(c, ring, s->key0_check, s->key0_check_len, err, errlen) : STORE_RETRY;
  if (st == STORE_RETRY)
    snprintf(err, errlen, "ENCRYPTION_KEYS: cannot check the keys in use: postgresql: %s",
             c ? PG_MSG(c) : why);
  PQfinish(c);
  if (st == STORE_OK) s->ring = ring;
  return st;
}

static const struct store_ops pg_ops = {
    .name = "postgresql",
    .submit = pg_submit,
    .get = pg_get,
    .list = pg_list,
    .ping_read = pg_ping_read,
    .events = pg_events,
    .audio_read = pg_audio_read,
    .key_get = pg_key_get,
    .key_list = pg_key_list,
    .audit_list = pg_audit_list,
    .audit_head = pg_audit_head,
    .secret = pg_secret,
    .set_ring = pg_set_ring,
    .sub_get = pg_sub_get,
    .sub_list = pg_sub_list,
    .sub_secret = pg_sub_secret,
    .attempt_list = pg_attempt_list,
    .outbox_stats = pg_outbox_stats,
    .set_outbox_notify = pg_set_outbox_notify,
    .analytics_scan = pg_analytics_scan,
    .analytics_account_name = pg_analytics_account_name,
    .analytics_account_names = pg_analytics_account_names,
    .analytics_rebuild = rollup_rebuild_wait,
    .close = pg_close,
};

/* True when SIGTERM or SIGINT is waiting: the caller blocks them until it serves, and a
 * container being stopped must not sit out the whole start-up wait. */
static bool stop_requested(void) {
  sigset_t pending;
  return sigpending(&pending) == 0 &&
         (sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1);
}

/* The start-up connection: PostgreSQL may still be starting (a container started beside it),
 * so failed attempts are logged and tried again, a second apart, for up to wait_seconds. */
static PGconn *connect_at_start(struct pg_store *s, int wait_seconds, char *err, size_t errlen) {
  int64_t t0 = (int64_t)time_mono_ms(), deadline = t0 + (int64_t)wait_seconds * 1000;
  char why[MSG_MAX];
  for (unsigned attempt = 1;; attempt++) {
    PGconn *c = pg_connect_once(s, why, sizeof why);
    int64_t now = (int64_t)time_mono_ms();
    if (c) {
      if (attempt > 1)
        log_msg(LOG_INFO, "postgresql reachable after %u attempts in %lld ms", attempt,
                (long long)(now - t0));
      return c;
    }
    if (now >= deadline || stop_requested()) {
      if (wait_seconds > 0)
        snprintf(err, errlen,
                 "DATABASE_URL: cannot connect to PostgreSQL (%u attempts in %lld s, "
                 "DATABASE_CONNECT_TIMEOUT_SECONDS=%d): %s",
                 attempt, (long long)((now - t0 + 500) / 1000), wait_seconds, why);
      else
        snprintf(err, errlen, "DATABASE_URL: cannot connect to PostgreSQL: %s", why);
      return NULL;
    }
    log_msg(LOG_WARNING, "waiting for postgresql (attempt %u, %lld s left): %s", attempt,
            (long long)((deadline - now + 999) / 1000), why);
    int64_t pause = deadline - now < START_RETRY_MS ? deadline - now : START_RETRY_MS;
    struct timespec ts = {.tv_sec = pause / 1000, .tv_nsec = (pause % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
  }
}

struct store *store_pg_open(const char *url, int wait_seconds, char *err, size_t errlen) {
  struct pg_store *s = calloc(1, sizeof *s);
  if (!s || !(s->url = strdup(url)) || !(s->audio_buf = malloc(STORE_AUDIO_CHUNK_BYTES))) {
    if (s) free(s->url);
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
  write_queue_init(&s->ob_queue, 1);
  if (!crypto_random_hex(s->owner, sizeof s->owner, 16)) {
    snprintf(err, errlen, "cannot make a lease owner id (random source failed)");
    pg_close(&s->base);
    return NULL;
  }
  /* Start-up needs the database once, for migrations; afterwards outages are survived. */
  PGconn *c = connect_at_start(s, wait_seconds, err, errlen);
  if (!c) {
    pg_close(&s->base);
    return NULL;
  }
  bool migrated = migrate(c, err, errlen) && analytics_rebuild_if_due(c, err, errlen);
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
  pthread_setname_np(s->writer, "gsr-writer");
  s->writer_started = true;
  if (pthread_create(&s->ob_thread, NULL, ob_main, s) != 0) {
    snprintf(err, errlen, "cannot start the outbox thread");
    pg_close(&s->base);
    return NULL;
  }
  pthread_setname_np(s->ob_thread, "gsr-outbox");
  s->ob_started = true;
  return &s->base;
}
