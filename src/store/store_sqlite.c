/* SQLite backend: one writer thread with its own connection commits queued writes in
 * batches (group commit: one WAL sync per batch, synchronous=FULL); every HTTP worker thread
 * reads through its own connection, so reads never wait behind the writer (WAL). */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/thread_slot.h"
#include "core/timeutil.h"
#include "ext/crypto.h"
#include "model/render.h"
#include "seal/seal.h"
#include "store/audit_chain.h"
#include "store/lane.h"
#include "store/rollup.h"
#include "store/sealing.h"
#include "store/sqlite_pcache.h"
#include "store/sqlite_walbuf.h"
#include "store/store.h"
#include "store/write_queue.h"

#define BATCH_MAX 512
#define CHECKPOINT_MS 20
/* Past this many log frames (4 MiB of 4 KiB pages) the checkpointer makes sure the log gets
 * restarted from its beginning: the log file stays near this size whatever is written. */
#define WAL_RESET_FRAMES 1024
/* Before the gated pass, up to this many passes outside the gate, until one finds at most
 * GATED_FRAMES appended since the one before. */
#define CATCH_UP_PASSES 4
#define GATED_FRAMES 64
#define BUSY_TIMEOUT_MS 5000
/* One statement per combination of the four filters, the time window (LIST_WINDOW) and a
 * keyset position (LIST_AFTER); each prepared on first use. */
#define LIST_WINDOW 16u
#define LIST_AFTER 32u
#define LIST_VARIANTS 64
#define KEY_COLUMNS \
  "id, name, scopes, accounts, secret_sha256, created_us, expires_us, revoked_us, last_used_us"
/* ... and, read, the sealed accounts (column 9; NULL: accounts is plaintext) */
#define KEY_READ_COLUMNS KEY_COLUMNS ", accounts_sealed"
/* Erasure: the conversation first (it refers to its delivery, which a trigger deletes with
 * it), the older versions (superseded deliveries, migration 0005), then the rest. */
#define ERASE_STEPS 5
static const char *const erase_sql[ERASE_STEPS] = {
    "DELETE FROM conversations WHERE conversation_id = ?1",
    "DELETE FROM deliveries WHERE conversation_id = ?1 AND superseded = 1",
    "DELETE FROM events WHERE conversation_id = ?1",
    "DELETE FROM audio_chunks WHERE conversation_id = ?1",
    "DELETE FROM audio_meta WHERE conversation_id = ?1",
};
#define ERASE_AUDIO_FROM 3 /* erase_sql[3..]: the audio alone */
/* GET /api/v1/audit: one statement per combination of the five filters and the order, each
 * prepared on first use (most combinations are never asked for). */
#define AUDIT_FILTERS 5
#define AUDIT_VARIANTS (4 << AUDIT_FILTERS) /* the filters, newest first, a rare action */
#define AUDIT_COLUMNS \
  "id, at_us, request_id, key_id, client_ip, action, target, outcome, count, hash"

/* Columns 10.. of the get/list layout. Audio lives apart from conversations (it may come
 * first): a primary-key lookup per row read, nothing on the write path. */
#define AUDIO_COLUMNS                  \
  "c.agent_id, c.failure_reason, "     \
  "(SELECT a.bytes FROM audio_meta a " \
  "WHERE a.conversation_id = c.conversation_id)"

/* Columns 13..16: the sealed email, account and failure reason (NULL: plaintext), and (get with
 * the body) the key that sealed the body; 17 the first processed time (the list's order). */
#define SEAL_COLUMNS ", c.email_sealed, c.account_sealed, c.failure_sealed"

/* One conversation as GET reads it (?2: with its body); the writer reads it so too (the outbox's
 * data of audio stored alone). */
#define GET_SQL                                                                        \
  "SELECT c.conversation_id, c.email_id, c.account_id, c.status, c.start_time_us, "    \
  "c.duration, c.message_count, c.processed_at_us, c.webhook_id, "                     \
  "CASE WHEN ?2 THEN (SELECT body FROM deliveries WHERE id = c.delivery_id) "          \
  "END, " AUDIO_COLUMNS SEAL_COLUMNS                                                   \
  ", CASE WHEN ?2 THEN (SELECT sealed_with FROM deliveries WHERE id = c.delivery_id) " \
  "END, c.first_processed_at_us FROM conversations c WHERE c.conversation_id = ?1"

/* With a ring, temporary files (sorts, statement journals holding a page's earlier content while
 * reencrypt rewrites it) stay in memory: nothing of a row reaches a file but the database's. */
#define KEEP_TEMP_IN_MEMORY "PRAGMA temp_store = MEMORY"

/* gensendrep reencrypt (STORE_WRITE_RESEAL) walks these tables in this order, each in
 * primary-key order; its position is "<table>:<last primary key walked>". */
enum reseal_table {
  RESEAL_CONVERSATIONS,
  RESEAL_DELIVERIES,
  RESEAL_EVENTS,
  RESEAL_CHUNKS,
  RESEAL_KEYS,   /* api_keys.accounts */
  RESEAL_OUTBOX, /* outbox_events.data and account */
  RESEAL_SUBS,   /* subscriptions.secret and account */
  RESEAL_TABLES
};

/* The outbox's writer statements (issue 10), each prepared on first use: most stores never run
 * most of them (no subscription, no broker). */
enum ob_stmt {
  OB_INSERT,
  OB_EXISTS,
  OB_CONV_ROW,
  OB_ACCOUNT_OF,
  OB_ERASE_ATTEMPTS,
  OB_ERASE_EVENTS,
  OB_ERASE_DELIVERIES,
  OB_SUB_INSERT,
  OB_SUB_STATE,
  OB_SUB_UPDATE,
  OB_SUB_REFILTER,
  OB_SUB_WAKE,
  OB_SUB_DELETE,
  OB_SUB_DEL_DELIVERIES,
  OB_SUB_DEL_ATTEMPTS,
  OB_SUB_ALL,
  OB_REPLAY,
  OB_FAN_UPTO,
  OB_FAN_INSERT,
  OB_FAN_CURSOR,
  OB_CLAIM_SELECT,
  OB_CLAIM_LEASE,
  OB_EVENT_GET,
  OB_FIN_GET,
  OB_FIN_DELETE,
  OB_FIN_UPDATE,
  OB_SUB_SUCCESS,
  OB_SUB_LAST_SUCCESS,
  OB_SUB_PAUSE,
  OB_SUB_DISABLE,
  OB_SUB_HOLD,
  OB_ATTEMPT_INSERT,
  OB_Q_CREATE,
  OB_Q_LEASE,
  OB_Q_READ,
  OB_Q_ADVANCE,
  OB_PRUNE_BOUND,
  OB_PRUNE_SELECT,
  OB_PRUNE_EVENT,
  OB_PRUNE_DEAD,
  OB_PRUNE_ATT_SCAN,
  OB_PRUNE_ATT_DELETE,
  OB_PRUNE_STALE,
  OB_LANE_READ,
  OB_LANE_ANY_PENDING,
  OB_LANE_CONV_PENDING,
  OB_LANE_ROW,
  OB_LANE_COUNT,
  OB_CONSUMED,
  OB_COUNT
};

/* The outbox's reader statements, prepared on first use. */
enum ob_read_stmt {
  OR_SUB_GET,
  OR_SUB_LIST,
  OR_SUB_SECRET,
  OR_ATTEMPTS,
  OR_PENDING,
  OR_CREATED,
  OR_DEAD,
  OR_CURSOR,
  OR_QUEUE_COUNT,
  OR_QUEUE_OLDEST,
  OR_COUNT
};

struct reader {
  sqlite3 *db;
  sqlite3_stmt *get;
  sqlite3_stmt *ping;
  sqlite3_stmt *events;
  sqlite3_stmt *audio_meta;
  sqlite3_stmt *audio_chunks;
  sqlite3_stmt *key_get, *key_list;
  sqlite3_stmt *audit_head, *audit_at_max;
  sqlite3_stmt *audit[AUDIT_VARIANTS]; /* NULL until first used */
  sqlite3_stmt *list[LIST_VARIANTS];
  sqlite3_stmt *count[LIST_VARIANTS];
  sqlite3_stmt *ob[OR_COUNT];   /* NULL until first used */
  const struct seal_ring *ring; /* the store's, as set before this reader was opened */
  unsigned char *chunk;         /* an opened audio chunk (STORE_AUDIO_CHUNK_BYTES), on first use */
};

#define CHECK_VALUE_MAX \
  (sizeof STORE_SEAL_CHECK + 2 + SEAL_KEY_ID_MAX + SEAL_NONCE_LEN + SEAL_TAG_LEN)

struct sqlite_store {
  struct store base;
  struct store_unopened unopened; /* the writer's: fan-out */
  char *path;
  /* writer side: only the writer thread touches these after open */
  sqlite3 *wdb;
  sqlite3_stmt *w_find, *w_ins_delivery, *w_upsert, *w_probe, *w_begin, *w_commit, *w_rollback;
  sqlite3_stmt *w_find_event, *w_ins_event, *w_del_chunks, *w_put_audio, *w_ins_chunk;
  sqlite3_stmt *w_key_ins, *w_key_revoke, *w_key_touch;
  sqlite3_stmt *w_erase[ERASE_STEPS]; /* one conversation's rows, table by table */
  sqlite3_stmt *w_old_convs, *w_old_events, *w_old_audio; /* retention */
  sqlite3_stmt *w_audit_head, *w_audit_ins, *w_audit_set;
  /* The audit chain as the batch being committed leaves it: read from the head row at the
   * batch's first append (inside its transaction: another process may have appended since the
   * last batch), written back once before COMMIT. A batch rolled back and sent again reads it
   * again, so it leaves neither a hole nor a fork. */
  bool chain_loaded;
  int64_t chain_start_id, chain_id, chain_now_us, chain_at_max;
  unsigned char chain_hash[AUDIT_HASH_LEN];
  unsigned char *audio_buf; /* one chunk of audio on its way from the file to the database */
  /* Encryption at rest (set_ring): NULL, or the ring whose first key (key0) seals. */
  const struct seal_ring *ring;
  char key0[SEAL_KEY_ID_MAX + 1];
  /* key0's check value (seal_keys): every batch with a ring records key0 unless it is (a
   * finished reencrypt may have retired it meanwhile, from another process). */
  unsigned char key0_check[CHECK_VALUE_MAX];
  size_t key0_check_len;
  sqlite3_stmt *w_record_key, *w_reseal_left, *w_retire_keys;
  struct store_seal_buf seal_buf; /* writer: the value being sealed */
  struct store_seal_buf open_buf; /* writer: a value opened to be sealed again (reseal) */
  sqlite3_stmt *w_reseal_scan[RESEAL_TABLES], *w_reseal_get[RESEAL_TABLES];
  sqlite3_stmt *w_reseal_put[RESEAL_TABLES];
  /* The outbox (issue 10). */
  sqlite3_stmt *ob[OB_COUNT]; /* writer statements, NULL until first used */
  char owner[17];             /* this store's lease owner id (random per open) */
  int64_t lease_seq;          /* the last claim token given out (lease_owner is "owner:token") */
  struct lane_set lane;       /* the fast lane (lane.h) */
  /* Whether this process delivers the outbox (outbox_owned, outbox_lock_take): the lock's
   * file identity once held; logged once each: waiting for it, a lock file not made. */
  bool outbox_owner, outbox_waiting, outbox_lock_warned;
  int64_t outbox_next_try_ms; /* a non-owner asks for the lock again from then (monotonic) */
  dev_t outbox_lock_dev;
  ino_t outbox_lock_ino;
  /* Analytics (rollup.h): the batch's contributions, added by the writer connection's temporary
   * triggers on conversations (every insert, change and delete, whatever statement made it),
   * written to the rollups once per key before COMMIT; forgotten when the batch rolls back. */
  struct rollup_map roll;
  /* per level, and [1]: for rows that keep a hist (rollup_keeps_hist), [0]: the others */
  sqlite3_stmt *w_roll_put[ROLLUP_LEVELS][2], *w_roll_del[ROLLUP_LEVELS];
  bool ob_notify; /* the batch being committed wrote events or made deliveries due */
  /* Whether the batch's changes write their outbox events (ob_consumed): 1 yes, 0 no, -1 not
   * read yet in this batch. ob_broker: this process publishes to a broker (always yes). */
  int ob_consumed;
  atomic_bool ob_broker;
  void (*notify)(void *cls); /* set_outbox_notify */
  void *notify_cls;
  pthread_t writer;
  bool writer_started;
  /* checkpoints run on their own connection and thread, off the writer's path */
  sqlite3 *cdb;
  pthread_t checkpointer;
  bool checkpointer_started;
  pthread_mutex_t ckpt_mu; /* guards the fields below and the gate */
  pthread_cond_t ckpt_cv;  /* wakes the checkpointer */
  bool ckpt_stop;
  bool ckpt_wake;    /* the writer saw the log pass WAL_RESET_FRAMES */
  bool ckpt_failing; /* a checkpoint failure was logged; log the next success */
  /* An erasure committed: the log, which still holds the erased rows' old pages, is to be
   * emptied (a TRUNCATE checkpoint) as soon as no reader needs it. */
  bool ckpt_truncate;
  /* The gate between batches (see catch_up): the writer is inside a batch, the checkpointer
   * holds the gate or waits for it. The writer never waits while the checkpointer does not. */
  pthread_cond_t gate_cv;
  bool gate_writer_in, gate_ckpt_in, gate_ckpt_wants;
  struct write_queue queue;
  struct thread_slot readers; /* one struct reader per calling thread */
};

/* An account an outbox event is kept with: as its conversation's row holds it (plaintext, or
 * the blind index and the sealed value). */
struct ob_account {
  bool has_id;
  char id[MODEL_ACCOUNT_ID_MAX + 1];
  size_t sealed_len; /* 0: not sealed */
  unsigned char sealed[STORE_SEALED_ID_MAX];
};

static int ob_conversation_state(struct sqlite_store *s, const char *id, bool *exists,
                                 int64_t *audio_bytes);
static int ob_of_version(struct sqlite_store *s, struct store_write *w, bool existed,
                         int64_t audio_bytes);
static int ob_audio_only(struct sqlite_store *s, struct store_write *w);
static int ob_account_before_erase(struct sqlite_store *s, const char *id, struct ob_account *a);
static int ob_erased(struct sqlite_store *s, const char *id, bool expired,
                     const struct ob_account *a);
static int apply_sub_put(struct sqlite_store *s, struct store_write *w);
static int apply_sub_delete(struct sqlite_store *s, struct store_write *w);
static int apply_replay(struct sqlite_store *s, struct store_write *w);
static int apply_outbox(struct sqlite_store *s, struct store_write *w);
/* the fast lane (lane.h) */
static int lane_materialize(struct sqlite_store *s, size_t i);
static int lane_materialize_sub(struct sqlite_store *s, const char *sub_id);
static int lane_claim(struct sqlite_store *s, struct store_outbox_work *o, int64_t limit,
                      int64_t cursor, int64_t types, const char *accounts, size_t *bytes);
static int lane_finish(struct sqlite_store *s, const struct store_delivery_result *r,
                       int64_t now_us);
static int lane_save_cursor(struct sqlite_store *s, const char *sub_id);
static int reseal_outbox(struct sqlite_store *s, const char *key, int64_t *bytes);
static int reseal_subscription(struct sqlite_store *s, const char *id);
static bool prepare_outbox(struct sqlite_store *s);
static bool clear_leases(struct sqlite_store *s, char *err, size_t errlen);
static int outbox_owned(struct sqlite_store *s, bool *owned);
static void outbox_lock_release(struct sqlite_store *s);
static enum store_status read_row(const struct seal_ring *ring, sqlite3_stmt *st,
                                  struct store_conversation *out);

static enum store_status status_of(int rc) {
  switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
      return STORE_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_NOMEM:
    case SQLITE_PROTOCOL:
    case SQLITE_CORRUPT: /* the database is unusable until an operator acts: unavailable, */
    case SQLITE_NOTADB:  /* as health says, rather than a bug of ours */
      return STORE_RETRY;
    default:
      return STORE_HARD;
  }
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st) {
  int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
  if (rc != SQLITE_OK) log_msg(LOG_ERROR, "sqlite prepare failed: %s", sqlite3_errmsg(db));
  return rc;
}

/* Runs a statement that returns no rows, then resets it. */
static int step_done(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ---------- opening and migrations ---------- */

static bool make_parent_dirs(const char *path, char *err, size_t errlen) {
  char buf[4096];
  if (strlen(path) >= sizeof buf) {
    snprintf(err, errlen, "DATABASE_URL: path too long");
    return false;
  }
  memcpy(buf, path, strlen(path) + 1);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0750) != 0 && errno != EEXIST) {
      snprintf(err, errlen, "DATABASE_URL: cannot create directory %s: %s", buf, strerror(errno));
      return false;
    }
    *p = '/';
  }
  return true;
}

/* vfs: NULL for the default one. */
static int open_conn_vfs(const char *path, sqlite3 **db, const char *vfs) {
  int rc = sqlite3_open_v2(path, db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, vfs);
  if (rc != SQLITE_OK) return rc;
  sqlite3_busy_timeout(*db, BUSY_TIMEOUT_MS);
  sqlite3_extended_result_codes(*db, 1);
  return SQLITE_OK;
}

static int open_conn(const char *path, sqlite3 **db) { return open_conn_vfs(path, db, NULL); }

static bool exec(sqlite3 *db, const char *sql, char *err, size_t errlen) {
  char *msg = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &msg) == SQLITE_OK) return true;
  snprintf(err, errlen, "DATABASE_URL: sqlite: %s", msg ? msg : sqlite3_errmsg(db));
  sqlite3_free(msg);
  return false;
}

static bool set_wal(sqlite3 *db, char *err, size_t errlen) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "DATABASE_URL: sqlite: %s", sqlite3_errmsg(db));
    return false;
  }
  bool ok = sqlite3_step(st) == SQLITE_ROW &&
            strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
  sqlite3_finalize(st);
  if (!ok) snprintf(err, errlen, "DATABASE_URL: sqlite: cannot enable WAL mode");
  return ok;
}

static int64_t schema_version(sqlite3 *db) {
  sqlite3_stmt *st;
  int64_t v = -1;
  if (sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations", -1, &st,
                         NULL) != SQLITE_OK)
    return -1;
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* Whether migration version is recorded. Migrations are applied when not recorded rather than
 * above the highest one: two landed out of order (0007 before 0006) both reach every database. */
static bool migration_recorded(sqlite3 *db, int version) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, "SELECT 1 FROM schema_migrations WHERE version = ?1", -1, &st, NULL) !=
      SQLITE_OK)
    return false;
  sqlite3_bind_int(st, 1, version);
  bool found = sqlite3_step(st) == SQLITE_ROW;
  sqlite3_finalize(st);
  return found;
}

static bool record_migration(sqlite3 *db, const struct store_migration *m) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO schema_migrations (version, name, applied_at_us) "
                         "VALUES (?1, ?2, ?3)",
                         -1, &st, NULL) != SQLITE_OK)
    return false;
  sqlite3_bind_int(st, 1, m->version);
  sqlite3_bind_text(st, 2, m->name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, time_now_us());
  bool ok = sqlite3_step(st) == SQLITE_DONE;
  sqlite3_finalize(st);
  return ok;
}

/* Applies pending migrations in one IMMEDIATE transaction, which also serialises several
 * processes starting on the same file. */
static bool migrate(sqlite3 *db, char *err, size_t errlen) {
  if (!exec(db, "BEGIN IMMEDIATE", err, errlen)) return false;
  bool ok = exec(db,
                 "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                 "name TEXT NOT NULL, applied_at_us INTEGER NOT NULL)",
                 err, errlen);
  int64_t have = ok ? schema_version(db) : -1;
  if (ok && have < 0) {
    snprintf(err, errlen, "DATABASE_URL: sqlite: cannot read schema_migrations");
    ok = false;
  }
  for (size_t i = 0; ok && i < store_migrations_sqlite_count; i++) {
    const struct store_migration *m = &store_migrations_sqlite[i];
    if (m->version <= have && migration_recorded(db, m->version)) continue;
    ok = exec(db, m->sql, err, errlen) && record_migration(db, m);
    if (ok) log_msg(LOG_INFO, "applied migration %04d_%s", m->version, m->name);
  }
  if (ok) return exec(db, "COMMIT", err, errlen);
  char ignored[8];
  (void)exec(db, "ROLLBACK", ignored, sizeof ignored);
  return false;
}

/* Orphans: events and audio of no conversation (audio may come first, events may name none). */
#define NO_CONVERSATION(t) \
  "NOT EXISTS (SELECT 1 FROM conversations c WHERE c.conversation_id = " t ".conversation_id)"

static bool prepare_erasure(struct sqlite_store *s) {
  for (int i = 0; i < ERASE_STEPS; i++)
    if (prepare(s->wdb, erase_sql[i], &s->w_erase[i]) != SQLITE_OK) return false;
  return prepare(s->wdb,
                 /* conversations_recent from its old end: a conversation first stored
                  * before ?1 but processed again since is passed over (first <= processed) */
                 "SELECT conversation_id FROM conversations WHERE first_processed_at_us < ?1 "
                 "AND processed_at_us < ?1 ORDER BY first_processed_at_us LIMIT ?2",
                 &s->w_old_convs) == SQLITE_OK &&
         prepare(s->wdb,
                 "DELETE FROM events WHERE id IN (SELECT e.id FROM events e "
                 "WHERE e.received_at_us < ?1 AND " NO_CONVERSATION("e") " LIMIT ?2)",
                 &s->w_old_events) == SQLITE_OK &&
         prepare(s->wdb,
                 "SELECT a.conversation_id FROM audio_meta a "
                 "WHERE a.received_at_us < ?1 AND " NO_CONVERSATION("a") " LIMIT ?2",
                 &s->w_old_audio) == SQLITE_OK;
}

static bool prepare_audit(struct sqlite_store *s) {
  return prepare(s->wdb, "SELECT last_id, last_hash, last_at_max FROM audit_head WHERE id = 1",
                 &s->w_audit_head) == SQLITE_OK &&
         prepare(s->wdb,
                 "INSERT INTO audit_log (" AUDIT_COLUMNS
                 ", at_max_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                 &s->w_audit_ins) == SQLITE_OK &&
         prepare(s->wdb,
                 "UPDATE audit_head SET last_id = ?1, last_hash = ?2, last_at_max = ?3 "
                 "WHERE id = 1",
                 &s->w_audit_set) == SQLITE_OK;
}

/* Reencrypt: per table, a walk in primary-key order telling which rows are sealed with the
 * current key (?1) yet, one row's sealable values by primary key, and their rewrite. Columns of
 * a body or chunk: the associated data's parts (two), the value, the key it is sealed with. */
/* A subscription row reencrypt has nothing left to do for (?1 the first key): its secret sealed
 * with it, and its URL and account sealed (rows from before they were sealed hold them plain;
 * an update seals what it changes with the first key and the secret again, sealed_with then). */
#define SUB_SEALED_DONE                                                                            \
  "sealed_with IS ?1 AND url_sealed IS NOT NULL AND (account_id IS NULL OR account_sealed IS NOT " \
  "NULL)"

static const char *const reseal_sql[RESEAL_TABLES][3] = {
    {"SELECT conversation_id, sealed_with IS ?1 FROM conversations WHERE conversation_id > ?2 "
     "ORDER BY conversation_id",
     "SELECT email_id, account_id, email_sealed, account_sealed, failure_reason, "
     "failure_sealed FROM conversations WHERE conversation_id = ?1",
     "UPDATE conversations SET email_id = ?2, account_id = ?3, email_sealed = ?4, "
     "account_sealed = ?5, sealed_with = ?6, failure_reason = ?7, failure_sealed = ?8 "
     "WHERE conversation_id = ?1"},
    {"SELECT id, sealed_with IS ?1 FROM deliveries WHERE id > ?2 ORDER BY id",
     "SELECT webhook_id, conversation_id, body, sealed_with FROM deliveries WHERE id = ?1",
     "UPDATE deliveries SET body = ?2, sealed_with = ?3 WHERE id = ?1"},
    {"SELECT id, sealed_with IS ?1 FROM events WHERE id > ?2 ORDER BY id",
     "SELECT webhook_id, conversation_id, body, sealed_with FROM events WHERE id = ?1",
     "UPDATE events SET body = ?2, sealed_with = ?3 WHERE id = ?1"},
    {"SELECT rowid, sealed_with IS ?1 FROM audio_chunks WHERE rowid > ?2 ORDER BY rowid",
     "SELECT conversation_id, seq, data, sealed_with FROM audio_chunks WHERE rowid = ?1",
     "UPDATE audio_chunks SET data = ?2, sealed_with = ?3 WHERE rowid = ?1"},
    {"SELECT id, sealed_with IS ?1 FROM api_keys WHERE id > ?2 ORDER BY id",
     "SELECT accounts, NULL, NULL, accounts_sealed FROM api_keys WHERE id = ?1",
     "UPDATE api_keys SET accounts = ?2, accounts_sealed = ?3, sealed_with = ?4 WHERE id = ?1"},
    {"SELECT seq, sealed_with IS ?1 FROM outbox_events WHERE seq > ?2 ORDER BY seq",
     "SELECT event_id, conversation_id, data, sealed_with, account_id, account_sealed "
     "FROM outbox_events WHERE seq = ?1",
     "UPDATE outbox_events SET data = ?2, sealed_with = ?3, account_id = ?4, account_sealed = ?5 "
     "WHERE seq = ?1"},
    {"SELECT id, " SUB_SEALED_DONE " FROM subscriptions WHERE id > ?2 ORDER BY id",
     "SELECT secret, sealed_with, account_id, account_sealed, url, url_sealed "
     "FROM subscriptions WHERE id = ?1",
     "UPDATE subscriptions SET secret = ?2, sealed_with = ?3, account_id = ?4, "
     "account_sealed = ?5, url = ?7, url_sealed = ?6 WHERE id = ?1"},
};
/* The associated data's first part per table (sealing.h). */
static const char *const reseal_what[RESEAL_TABLES] = {NULL,
                                                       "deliveries.body",
                                                       "events.body",
                                                       "audio_chunks.data",
                                                       "api_keys.accounts",
                                                       "outbox_events.data",
                                                       "subscriptions.secret"};

static bool prepare_reseal(struct sqlite_store *s) {
  if (prepare(s->wdb,
              "INSERT INTO seal_keys (key_id, check_value, added_us) VALUES (?1, ?2, ?3) "
              "ON CONFLICT (key_id) DO NOTHING",
              &s->w_record_key) != SQLITE_OK ||
      prepare(s->wdb,
              "SELECT EXISTS (SELECT 1 FROM conversations WHERE sealed_with IS NOT ?1) OR "
              "EXISTS (SELECT 1 FROM deliveries WHERE sealed_with IS NOT ?1) OR "
              "EXISTS (SELECT 1 FROM events WHERE sealed_with IS NOT ?1) OR "
              "EXISTS (SELECT 1 FROM audio_chunks WHERE sealed_with IS NOT ?1) OR "
              "EXISTS (SELECT 1 FROM api_keys WHERE sealed_with IS NOT ?1) OR "
              "EXISTS (SELECT 1 FROM outbox_events WHERE sealed_with IS NOT ?1) OR "
              "EXISTS (SELECT 1 FROM subscriptions WHERE NOT (" SUB_SEALED_DONE "))",
              &s->w_reseal_left) != SQLITE_OK ||
      prepare(s->wdb, "DELETE FROM seal_keys WHERE key_id <> ?1", &s->w_retire_keys) != SQLITE_OK)
    return false;
  for (int t = 0; t < RESEAL_TABLES; t++)
    if (prepare(s->wdb, reseal_sql[t][0], &s->w_reseal_scan[t]) != SQLITE_OK ||
        prepare(s->wdb, reseal_sql[t][1], &s->w_reseal_get[t]) != SQLITE_OK ||
        prepare(s->wdb, reseal_sql[t][2], &s->w_reseal_put[t]) != SQLITE_OK)
      return false;
  return true;
}

/* ---------- analytics rollups (rollup.h) ----------
 * The writer connection's temporary triggers (invisible to any other connection: a hand edit
 * in the sqlite3 shell still works, and `gensendrep analytics rebuild` puts the rollups right
 * after it) call gensendrep_analytics() for every row of conversations inserted, changed or
 * deleted, whatever statement did it (a new version, an erasure, retention, reencrypt); it adds
 * the row's contribution to s->roll, written out once per key before COMMIT (roll_flush). */

static const char *const roll_table[ROLLUP_LEVELS] = {"analytics_hour", "analytics_total",
                                                      "analytics_dim", "analytics_block"};
static const char *const roll_keys[ROLLUP_LEVELS][6] = {
    {"hour_us", "account_id", "agent_id", "platform", "status", "outcome"},
    {"hour_us"},
    {"day_us", "dim", "value"},
    {"block_us", "account_id", "agent_id", "platform", "status", "outcome"}};
static const int roll_nkeys[ROLLUP_LEVELS] = {6, 1, 3, 6};

#define ROLL_ARGS(r)                                                                              \
  r ".start_time_us, " r ".processed_at_us, " r ".account_id, " r ".agent_id, " r ".platform, " r \
    ".status, " r ".outcome, " r ".duration, " r ".message_count"
static const char roll_triggers_sql[] =
    "CREATE TEMP TRIGGER IF NOT EXISTS gensendrep_analytics_ins AFTER INSERT ON "
    "main.conversations BEGIN SELECT gensendrep_analytics(1, " ROLL_ARGS("NEW") "); END;"
    "CREATE TEMP TRIGGER IF NOT EXISTS gensendrep_analytics_del AFTER DELETE ON "
    "main.conversations BEGIN SELECT gensendrep_analytics(-1, " ROLL_ARGS("OLD") "); END;"
    "CREATE TEMP TRIGGER IF NOT EXISTS gensendrep_analytics_upd AFTER UPDATE ON "
    "main.conversations WHEN OLD.start_time_us IS NOT NEW.start_time_us OR "
    "OLD.processed_at_us IS NOT NEW.processed_at_us OR OLD.account_id IS NOT NEW.account_id OR "
    "OLD.agent_id IS NOT NEW.agent_id OR OLD.platform IS NOT NEW.platform OR "
    "OLD.status IS NOT NEW.status OR OLD.outcome IS NOT NEW.outcome OR "
    "OLD.duration IS NOT NEW.duration OR OLD.message_count IS NOT NEW.message_count "
    "BEGIN SELECT gensendrep_analytics(-1, " ROLL_ARGS("OLD")
    "); SELECT gensendrep_analytics(1, " ROLL_ARGS("NEW") "); END;";

static void roll_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  struct sqlite_store *s = sqlite3_user_data(ctx);
  if (argc != 10) return;
  struct rollup_row row;
  int sign = sqlite3_value_int(argv[0]) < 0 ? -1 : 1;
  row.event_us = sqlite3_value_type(argv[1]) != SQLITE_NULL ? sqlite3_value_int64(argv[1])
                                                            : sqlite3_value_int64(argv[2]);
  for (int d = 0; d < STORE_DIM_COUNT; d++)
    row.dims[d] = sqlite3_value_type(argv[3 + d]) == SQLITE_NULL
                      ? NULL
                      : (const char *)sqlite3_value_text(argv[3 + d]);
  row.duration = sqlite3_value_int64(argv[8]);
  row.messages = sqlite3_value_int64(argv[9]);
  if (!rollup_map_add(&s->roll, sign, &row)) sqlite3_result_error_nomem(ctx);
}

/* gensendrep_hist_add(a, b): two stored hists added bucket by bucket (uint32, modulo 2^32: a
 * batch's delta may hold negative counts). */
static void hist_add_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  if (argc != 2) return;
  int64_t h[ANALYTICS_HIST_BUCKETS] = {0};
  for (int i = 0; i < 2; i++)
    rollup_hist_add_blob(h, sqlite3_value_blob(argv[i]), (size_t)sqlite3_value_bytes(argv[i]));
  unsigned char out[ROLLUP_HIST_BYTES];
  rollup_hist_encode(h, out);
  sqlite3_result_blob(ctx, out, sizeof out, SQLITE_TRANSIENT);
}

static bool prepare_rollups(struct sqlite_store *s) {
  if (sqlite3_create_function(s->wdb, "gensendrep_analytics", 10, SQLITE_UTF8, s, roll_fn, NULL,
                              NULL) != SQLITE_OK ||
      sqlite3_create_function(s->wdb, "gensendrep_hist_add", 2,
                              SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_DIRECTONLY, NULL,
                              hist_add_fn, NULL, NULL) != SQLITE_OK ||
      sqlite3_exec(s->wdb, roll_triggers_sql, NULL, NULL, NULL) != SQLITE_OK)
    return false;
  for (int l = 0; l < ROLLUP_LEVELS; l++) {
    char where[256] = "", cols[128] = "", vals[64] = "", sql[1024];
    size_t wp = 0, cp = 0, vp = 0;
    for (int k = 0; k < roll_nkeys[l]; k++) {
      wp += (size_t)snprintf(where + wp, sizeof where - wp, "%s%s = ?%d", k ? " AND " : "",
                             roll_keys[l][k], k + 1);
      cp += (size_t)snprintf(cols + cp, sizeof cols - cp, "%s%s", k ? ", " : "", roll_keys[l][k]);
      vp += (size_t)snprintf(vals + vp, sizeof vals - vp, "%s?%d", k ? ", " : "", k + 1);
    }
    int n = roll_nkeys[l];
    for (int keeps = 0; keeps < 2; keeps++) { /* both, whatever rollup_keeps_hist says */
      char hist[16] = "x''";
      if (keeps) snprintf(hist, sizeof hist, "?%d", n + 4);
      snprintf(sql, sizeof sql,
               "INSERT INTO %s (%s, conversations, messages, duration_sum, hist) VALUES (%s, "
               "?%d, ?%d, ?%d, %s) ON CONFLICT (%s) DO UPDATE SET "
               "conversations = conversations + excluded.conversations, "
               "messages = messages + excluded.messages, "
               "duration_sum = duration_sum + excluded.duration_sum%s",
               roll_table[l], cols, vals, n + 1, n + 2, n + 3, hist, cols,
               keeps ? ", hist = gensendrep_hist_add(hist, excluded.hist)" : "");
      if (prepare(s->wdb, sql, &s->w_roll_put[l][keeps]) != SQLITE_OK) return false;
    }
    snprintf(sql, sizeof sql, "DELETE FROM %s WHERE %s AND conversations = 0", roll_table[l],
             where);
    if (prepare(s->wdb, sql, &s->w_roll_del[l]) != SQLITE_OK) return false;
  }
  rollup_map_init(&s->roll, true);
  return true;
}

static void roll_bind_key(sqlite3_stmt *st, const struct rollup_entry *e) {
  sqlite3_bind_int64(st, 1, e->at_us);
  if (e->level == ROLLUP_FULL || e->level == ROLLUP_BLOCK)
    for (int d = 0; d < STORE_DIM_COUNT; d++)
      sqlite3_bind_text(st, 2 + d, e->vals[d], -1, SQLITE_STATIC);
  if (e->level == ROLLUP_DIM) {
    sqlite3_bind_int(st, 2, e->dim);
    sqlite3_bind_text(st, 3, e->vals[0], -1, SQLITE_STATIC);
  }
}

/* One key: the batch's contributions added to its row in one upsert; a row a decrease leaves at
 * zero conversations is deleted. */
static int roll_flush_one(struct sqlite_store *s, const struct rollup_entry *e) {
  if (rollup_entry_zero(e)) return SQLITE_OK;
  int l = (int)e->level, n = roll_nkeys[l];
  bool keeps = rollup_keeps_hist(e->level, e->dim);
  unsigned char blob[ROLLUP_HIST_BYTES];
  sqlite3_stmt *st = s->w_roll_put[l][keeps];
  roll_bind_key(st, e);
  sqlite3_bind_int64(st, n + 1, e->conversations);
  sqlite3_bind_int64(st, n + 2, e->messages);
  sqlite3_bind_int64(st, n + 3, e->duration_sum);
  if (keeps) {
    rollup_hist_encode(e->hist, blob);
    sqlite3_bind_blob(st, n + 4, blob, sizeof blob, SQLITE_STATIC);
  }
  int rc = step_done(st);
  if (rc != SQLITE_OK || e->conversations >= 0) return rc;
  st = s->w_roll_del[l];
  roll_bind_key(st, e);
  return step_done(st);
}

/* Writes out the contributions summed so far and forgets them. */
static int roll_flush(struct sqlite_store *s) {
  int rc = s->roll.oom ? SQLITE_NOMEM : SQLITE_OK;
  for (size_t i = 0; rc == SQLITE_OK && i < s->roll.n; i++) rc = roll_flush_one(s, &s->roll.e[i]);
  rollup_map_clear(&s->roll);
  return rc;
}

/* Every rollup recomputed from the conversations, in event-time order: the sums are written out
 * a day at a time (no key spans two days), so memory stays a day's keys. *counted: conversations
 * counted. Inside the caller's transaction. */
static int roll_rebuild(struct sqlite_store *s, int64_t *counted, int64_t total) {
  *counted = 0;
  int64_t started = time_now_us(), logged = started;
  rollup_map_clear(&s->roll); /* the batch's earlier changes are in the conversations */
  int rc = sqlite3_exec(s->wdb,
                        "DELETE FROM analytics_hour; DELETE FROM analytics_total; "
                        "DELETE FROM analytics_dim; DELETE FROM analytics_block; "
                        "UPDATE analytics_state SET rebuild = 0",
                        NULL, NULL, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_stmt *st;
  rc = sqlite3_prepare_v2(s->wdb,
                          "SELECT coalesce(start_time_us, processed_at_us), account_id, agent_id, "
                          "platform, status, outcome, duration, message_count FROM conversations "
                          "ORDER BY coalesce(start_time_us, processed_at_us)",
                          -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  int64_t day = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct rollup_row row;
    row.event_us = sqlite3_column_int64(st, 0);
    int64_t d = rollup_floor(row.event_us, ROLLUP_DAY_US);
    if (s->roll.n && d != day) {
      if ((rc = roll_flush(s)) != SQLITE_OK) break;
      int64_t now = time_now_us();
      if (now - logged >= INT64_C(10000000)) { /* progress, every 10 s at most */
        logged = now;
        long long secs = (long long)((now - started) / 1000000);
        if (total >= 0)
          log_msg(LOG_INFO, "analytics rollups: %lld of %lld conversations counted (%lld s so far)",
                  (long long)*counted, (long long)total, secs);
        else
          log_msg(LOG_INFO, "analytics rollups: %lld conversations counted (%lld s so far)",
                  (long long)*counted, secs);
      }
    }
    day = d;
    for (int k = 0; k < STORE_DIM_COUNT; k++)
      row.dims[k] = (const char *)sqlite3_column_text(st, 1 + k);
    row.duration = sqlite3_column_int64(st, 6);
    row.messages = sqlite3_column_int64(st, 7);
    if (!rollup_map_add(&s->roll, 1, &row)) {
      rc = SQLITE_NOMEM;
      break;
    }
    (*counted)++;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) return rc == SQLITE_ROW ? SQLITE_ERROR : rc;
  return roll_flush(s);
}

/* At start-up: a store older than migration 0011 gets its rollups once. */
static bool roll_rebuild_if_due(struct sqlite_store *s, char *err, size_t errlen) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->wdb, "SELECT rebuild FROM analytics_state WHERE id = 1", -1, &st,
                         NULL) != SQLITE_OK) {
    snprintf(err, errlen, "DATABASE_URL: sqlite: %s", sqlite3_errmsg(s->wdb));
    return false;
  }
  bool due = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0) != 0;
  sqlite3_finalize(st);
  if (!due) return true;
  int64_t counted = 0, total = 0;
  int rc = sqlite3_exec(s->wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  if (rc == SQLITE_OK && (rc = sqlite3_prepare_v2(s->wdb, "SELECT count(*) FROM conversations", -1,
                                                  &st, NULL)) == SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) total = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  /* Before HTTP is up: say why start-up takes a while (about 17 s a million conversations on the
   * benchmark machine, README), and that stopping it only makes the next start do it again. */
  int64_t started = time_now_us();
  if (rc == SQLITE_OK)
    log_msg(LOG_INFO,
            "computing analytics rollups for %lld conversations, once (store older than "
            "migration 0011, 0012 or 0018); this takes about %lld s; HTTP starts when it is done "
            "(stopping the process now makes the next start begin again)",
            (long long)total, (long long)(total * 17 / 1000000 + 1));
  if (rc == SQLITE_OK) rc = roll_rebuild(s, &counted, total);
  if (rc == SQLITE_OK) rc = sqlite3_exec(s->wdb, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "DATABASE_URL: sqlite: cannot compute the analytics rollups: %s",
             sqlite3_errmsg(s->wdb));
    if (!sqlite3_get_autocommit(s->wdb)) sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    rollup_map_clear(&s->roll);
    return false;
  }
  log_msg(LOG_INFO, "analytics rollups computed from %lld conversations in %.1f s",
          (long long)counted, (double)(time_now_us() - started) / 1e6);
  return true;
}

static bool prepare_writer(struct sqlite_store *s) {
  sqlite3 *db = s->wdb;
  return prepare_audit(s) &&
         prepare(db,
                 "SELECT c.body_sha256, c.webhook_id, c.processed_at_us, "
                 "(SELECT bytes FROM audio_meta WHERE conversation_id = ?1), "
                 "c.conversation_id IS NOT NULL FROM "
                 "(SELECT 1) LEFT JOIN conversations c ON c.conversation_id = ?1",
                 &s->w_find) == SQLITE_OK &&
         prepare(db,
                 "INSERT INTO deliveries (webhook_id, conversation_id, received_at_us, "
                 "body_sha256, body, sealed_with) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                 &s->w_ins_delivery) == SQLITE_OK &&
         prepare(db,
                 "INSERT INTO conversations (conversation_id, email_id, account_id, status, "
                 "start_time_us, duration, message_count, processed_at_us, webhook_id, "
                 "body_sha256, delivery_id, agent_id, failure_reason, email_sealed, "
                 "account_sealed, sealed_with, failure_sealed, platform, outcome, "
                 "first_processed_at_us) "
                 "VALUES (?1, ?2, ?3, ?11, ?4, ?5, ?6, ?7, ?9, ?10, ?8, ?12, ?13, ?14, ?15, ?16, "
                 "?17, ?18, ?19, ?7) "
                 "ON CONFLICT (conversation_id) DO UPDATE SET email_id = excluded.email_id, "
                 "account_id = excluded.account_id, status = excluded.status, "
                 "start_time_us = excluded.start_time_us, duration = excluded.duration, "
                 "message_count = excluded.message_count, "
                 "processed_at_us = excluded.processed_at_us, webhook_id = excluded.webhook_id, "
                 "body_sha256 = excluded.body_sha256, delivery_id = excluded.delivery_id, "
                 "agent_id = excluded.agent_id, failure_reason = excluded.failure_reason, "
                 "email_sealed = excluded.email_sealed, "
                 "account_sealed = excluded.account_sealed, sealed_with = excluded.sealed_with, "
                 "failure_sealed = excluded.failure_sealed, platform = excluded.platform, "
                 "outcome = excluded.outcome",
                 &s->w_upsert) == SQLITE_OK &&
         prepare(db,
                 "SELECT webhook_id, received_at_us FROM events "
                 "WHERE conversation_id = ?1 AND body_sha256 = ?2 ORDER BY id LIMIT 1",
                 &s->w_find_event) == SQLITE_OK &&
         prepare(
             db,
             "INSERT INTO events (webhook_id, conversation_id, type, received_at_us, "
             "body_sha256, body, audio_at, sealed_with) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
             &s->w_ins_event) == SQLITE_OK &&
         prepare(db, "DELETE FROM audio_chunks WHERE conversation_id = ?1", &s->w_del_chunks) ==
             SQLITE_OK &&
         prepare(db,
                 "INSERT INTO audio_meta (conversation_id, bytes, chunk_bytes, webhook_id, "
                 "received_at_us) VALUES (?1, ?2, ?3, ?4, ?5) "
                 "ON CONFLICT (conversation_id) DO UPDATE SET bytes = excluded.bytes, "
                 "chunk_bytes = excluded.chunk_bytes, webhook_id = excluded.webhook_id, "
                 "received_at_us = excluded.received_at_us",
                 &s->w_put_audio) == SQLITE_OK &&
         prepare(db,
                 "INSERT INTO audio_chunks (conversation_id, seq, data, sealed_with) "
                 "VALUES (?1, ?2, ?3, ?4)",
                 &s->w_ins_chunk) == SQLITE_OK &&
         prepare(db,
                 "INSERT INTO health_probe (id, checked_us) VALUES (1, ?1) "
                 "ON CONFLICT (id) DO UPDATE SET checked_us = excluded.checked_us",
                 &s->w_probe) == SQLITE_OK &&
         prepare(db,
                 "INSERT INTO api_keys (" KEY_COLUMNS
                 ", accounts_sealed, sealed_with) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, NULL, "
                 "?8, ?9)",
                 &s->w_key_ins) == SQLITE_OK &&
         prepare(db,
                 "UPDATE api_keys SET revoked_us = COALESCE(revoked_us, ?2) WHERE id = ?1 "
                 "RETURNING id",
                 &s->w_key_revoke) == SQLITE_OK &&
         prepare(db,
                 "UPDATE api_keys SET last_used_us = ?2 WHERE id = ?1 "
                 "AND (last_used_us IS NULL OR last_used_us < ?2)",
                 &s->w_key_touch) == SQLITE_OK &&
         prepare_erasure(s) && prepare_reseal(s) && prepare_outbox(s) && prepare_rollups(s) &&
         prepare(db, "BEGIN IMMEDIATE", &s->w_begin) == SQLITE_OK &&
         prepare(db, "COMMIT", &s->w_commit) == SQLITE_OK &&
         prepare(db, "ROLLBACK", &s->w_rollback) == SQLITE_OK;
}

/* ---------- checkpoints ----------
 *
 * The writer never checkpoints (wal_autocheckpoint=0): a checkpoint copies the log into the
 * database file and syncs that file, which would hold up a batch. The checkpointer thread does
 * it every CHECKPOINT_MS on its own connection, PASSIVE: it neither waits for nor blocks the
 * writer or the readers.
 *
 * SQLite starts the log again from its beginning when a write transaction begins while the
 * whole log is in the database file and no reader still needs it. Under a steady stream of
 * commits a passive checkpoint never ends with the whole log copied (the writer appended
 * meanwhile), so the log would only grow. Past WAL_RESET_FRAMES the checkpointer therefore
 * copies what is left while holding the gate between two batches: only the frames committed
 * during its previous pass, so the writer waits for a short copy and one sync at most once per
 * CHECKPOINT_MS, and its next batch restarts the log. */

static void gate_writer_enter(struct sqlite_store *s) {
  pthread_mutex_lock(&s->ckpt_mu);
  while (s->gate_ckpt_in || s->gate_ckpt_wants) pthread_cond_wait(&s->gate_cv, &s->ckpt_mu);
  s->gate_writer_in = true;
  pthread_mutex_unlock(&s->ckpt_mu);
}

static void gate_writer_leave(struct sqlite_store *s) {
  pthread_mutex_lock(&s->ckpt_mu);
  s->gate_writer_in = false;
  if (s->gate_ckpt_wants) pthread_cond_broadcast(&s->gate_cv);
  pthread_mutex_unlock(&s->ckpt_mu);
}

/* Waits for the batch being committed (if any) to end; the writer starts no other meanwhile. */
static void gate_ckpt_enter(struct sqlite_store *s) {
  pthread_mutex_lock(&s->ckpt_mu);
  s->gate_ckpt_wants = true;
  while (s->gate_writer_in) pthread_cond_wait(&s->gate_cv, &s->ckpt_mu);
  s->gate_ckpt_wants = false;
  s->gate_ckpt_in = true;
  pthread_mutex_unlock(&s->ckpt_mu);
}

static void gate_ckpt_leave(struct sqlite_store *s) {
  pthread_mutex_lock(&s->ckpt_mu);
  s->gate_ckpt_in = false;
  pthread_cond_broadcast(&s->gate_cv);
  pthread_mutex_unlock(&s->ckpt_mu);
}

/* One passive checkpoint; *log_frames is -1 when the connection does not use the log. */
static int checkpoint_pass(struct sqlite_store *s, int *log_frames, int *copied) {
  *log_frames = *copied = -1;
  return sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, log_frames, copied);
}

/* Logs the first failure of a run of failures (a full disk fails every round) and the
 * recovery, not every round. */
static void checkpoint_report(struct sqlite_store *s, int rc) {
  if (rc == SQLITE_OK && s->ckpt_failing) {
    s->ckpt_failing = false;
    log_msg(LOG_INFO, "sqlite checkpoints work again");
  } else if (rc != SQLITE_OK && rc != SQLITE_BUSY && !s->ckpt_failing) {
    s->ckpt_failing = true;
    log_msg(LOG_WARNING, "sqlite checkpoint failed (retried every %d ms): %s", CHECKPOINT_MS,
            sqlite3_errmsg(s->cdb));
  }
}

/* After an erasure: the log still holds the pages as they were before (the erased text), until
 * it is overwritten or cut. Between two batches, with no reader left on an older snapshot,
 * a TRUNCATE checkpoint copies the log into the database file (whose pages secure_delete has
 * zeroed) and cuts the log to zero bytes. Busy readers are not waited for (the writer waits at
 * the gate meanwhile): the next round tries again. True once done. */
static bool truncate_log(struct sqlite_store *s) {
  gate_ckpt_enter(s);
  sqlite3_busy_timeout(s->cdb, 0);
  int rc = sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
  sqlite3_busy_timeout(s->cdb, BUSY_TIMEOUT_MS);
  if (rc == SQLITE_OK) { /* still inside the gate: no erasure committed since */
    pthread_mutex_lock(&s->ckpt_mu);
    s->ckpt_truncate = false;
    pthread_mutex_unlock(&s->ckpt_mu);
  }
  gate_ckpt_leave(s);
  if (rc != SQLITE_BUSY) checkpoint_report(s, rc);
  return rc == SQLITE_OK;
}

/* A pass's counts are those of the log when it started: "all copied" says nothing of what the
 * writer appended meanwhile, so past WAL_RESET_FRAMES the gated pass always runs. */
static void checkpoint_round(struct sqlite_store *s) {
  int log_frames, copied;
  pthread_mutex_lock(&s->ckpt_mu);
  bool truncate = s->ckpt_truncate;
  pthread_mutex_unlock(&s->ckpt_mu);
  if (truncate && truncate_log(s)) return;
  int rc = checkpoint_pass(s, &log_frames, &copied);
  /* Catch up outside the gate first: each pass copies what the writer appended during the one
   * before, fewer frames each time while the copy outruns the writer, so the gated pass (the
   * writer waits for it) copies and syncs little. A log started again meanwhile needs none. */
  for (int i = 0; rc == SQLITE_OK && log_frames > WAL_RESET_FRAMES && i < CATCH_UP_PASSES; i++) {
    int before = log_frames;
    rc = checkpoint_pass(s, &log_frames, &copied);
    if (log_frames < before || log_frames - before <= GATED_FRAMES) break;
  }
  if (rc == SQLITE_OK && log_frames > WAL_RESET_FRAMES) {
    gate_ckpt_enter(s);
    rc = checkpoint_pass(s, &log_frames, &copied);
    gate_ckpt_leave(s);
  }
  checkpoint_report(s, rc);
}

static void *checkpointer_main(void *arg) {
  struct sqlite_store *s = arg;
  pthread_mutex_lock(&s->ckpt_mu);
  while (!s->ckpt_stop) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += CHECKPOINT_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(&s->ckpt_cv, &s->ckpt_mu, &until);
    if (s->ckpt_stop) break;
    pthread_mutex_unlock(&s->ckpt_mu);
    checkpoint_round(s);
    pthread_mutex_lock(&s->ckpt_mu);
  }
  pthread_mutex_unlock(&s->ckpt_mu);
  return NULL;
}

/* A connection that has not read the database yet does not know it is in WAL mode, and its
 * checkpoints return OK without copying anything: read once, then check that it sees the log. */
static bool open_checkpointer_conn(struct sqlite_store *s, char *err, size_t errlen) {
  if (open_conn(s->path, &s->cdb) != SQLITE_OK) {
    snprintf(err, errlen, "DATABASE_URL: sqlite: cannot open the checkpoint connection: %s",
             s->cdb ? sqlite3_errmsg(s->cdb) : "out of memory");
    return false;
  }
  if (!exec(s->cdb, "PRAGMA synchronous = FULL", err, errlen) ||
      !exec(s->cdb, "SELECT COUNT(*) FROM schema_migrations", err, errlen))
    return false;
  int log_frames, copied;
  int rc = checkpoint_pass(s, &log_frames, &copied);
  if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
    snprintf(err, errlen, "DATABASE_URL: sqlite: checkpoint failed: %s", sqlite3_errmsg(s->cdb));
    return false;
  }
  if (rc == SQLITE_OK && log_frames < 0) {
    snprintf(err, errlen, "DATABASE_URL: sqlite: the checkpoint connection does not see the log");
    return false;
  }
  return true;
}

static bool start_checkpointer(struct sqlite_store *s, char *err, size_t errlen) {
  if (!open_checkpointer_conn(s, err, errlen)) return false;
  s->checkpointer_started = pthread_create(&s->checkpointer, NULL, checkpointer_main, s) == 0;
  if (s->checkpointer_started) pthread_setname_np(s->checkpointer, "gsr-checkpoint");
  if (!s->checkpointer_started)
    snprintf(err, errlen, "cannot start the database checkpoint thread");
  return s->checkpointer_started;
}

static void stop_checkpointer(struct sqlite_store *s) {
  if (s->checkpointer_started) {
    pthread_mutex_lock(&s->ckpt_mu);
    s->ckpt_stop = true;
    pthread_cond_signal(&s->ckpt_cv);
    pthread_mutex_unlock(&s->ckpt_mu);
    pthread_join(s->checkpointer, NULL);
  }
  sqlite3_close(s->cdb);
}

/* ---------- the writer ---------- */

static void copy_text(char *dst, size_t cap, const unsigned char *src) {
  snprintf(dst, cap, "%s", src ? (const char *)src : "");
}

/* Unknown values (an ElevenLabs call without an email, say) are stored as NULL. */
static void bind_text_or_null(sqlite3_stmt *st, int idx, const char *v) {
  if (v)
    sqlite3_bind_text(st, idx, v, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, idx);
}

/* Looks for the current version (*found); sets w->duplicate when the stored body is
 * byte-identical; *audio_bytes: the conversation's stored audio size (-1: none), for its outbox
 * event (one statement for both). */
static int find_current(struct sqlite_store *s, struct store_write *w, bool *found,
                        int64_t *audio_bytes) {
  sqlite3_stmt *st = s->w_find;
  sqlite3_bind_text(st, 1, w->conv->conversation_id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  *found = rc == SQLITE_ROW && sqlite3_column_int(st, 4);
  *audio_bytes = rc == SQLITE_ROW && sqlite3_column_type(st, 3) != SQLITE_NULL
                     ? sqlite3_column_int64(st, 3)
                     : -1;
  if (*found) {
    const void *hash = sqlite3_column_blob(st, 0);
    if (sqlite3_column_bytes(st, 0) == CRYPTO_SHA256_LEN &&
        memcmp(hash, w->body_sha256, CRYPTO_SHA256_LEN) == 0) {
      w->duplicate = true;
      copy_text(w->webhook_id, sizeof w->webhook_id, sqlite3_column_text(st, 1));
      w->processed_us = sqlite3_column_int64(st, 2);
    }
  }
  if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc;
}

/* Binds a body or an audio chunk at idx: as it is, or with a ring sealed with its first key
 * (whose id goes to key_idx) and the row's identity (what, pk, pk2) as associated data. The
 * sealed bytes live in the writer's buffer until the next value is sealed. */
static int bind_sealable(struct sqlite_store *s, sqlite3_stmt *st, int idx, int key_idx,
                         const char *what, const char *pk, const char *pk2, const void *data,
                         size_t len) {
  if (!s->ring) {
    sqlite3_bind_blob64(st, idx, data, len, SQLITE_STATIC);
    return SQLITE_OK;
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, what, pk, pk2), n;
  const unsigned char *sealed = store_seal_into(&s->seal_buf, s->ring, aad, aad_len, data, len, &n);
  if (!sealed) return SQLITE_NOMEM;
  sqlite3_bind_blob64(st, idx, sealed, n, SQLITE_STATIC);
  sqlite3_bind_text(st, key_idx, s->key0, -1, SQLITE_STATIC);
  return SQLITE_OK;
}

/* Binds a sealed email or account id: its blind index at idx, the sealed value at sealed_idx
 * (NULL at idx when unknown). id must outlive the statement's step. */
static void bind_sealed_id(sqlite3_stmt *st, int idx, int sealed_idx,
                           const struct store_sealed_id *id) {
  if (!id->len) {
    sqlite3_bind_null(st, idx);
    return;
  }
  sqlite3_bind_text(st, idx, id->index, STORE_INDEX_TEXT_LEN, SQLITE_STATIC);
  sqlite3_bind_blob(st, sealed_idx, id->sealed, (int)id->len, SQLITE_STATIC);
}

/* Binds an email or account id (v; NULL: unknown) at idx: as it is, or with a ring sealed into
 * buf (bind_sealed_id). */
static int bind_id(struct sqlite_store *s, sqlite3_stmt *st, int idx, int sealed_idx,
                   const char *what, const char *conversation_id, const char *v,
                   struct store_sealed_id *buf) {
  if (!s->ring || !v) {
    bind_text_or_null(st, idx, v);
    return SQLITE_OK;
  }
  if (!store_seal_id(s->ring, what, conversation_id, v, buf)) return SQLITE_NOMEM;
  bind_sealed_id(st, idx, sealed_idx, buf);
  return SQLITE_OK;
}

/* Binds a conversation's failure reason (v; NULL: none) at idx: as it is, or with a ring NULL
 * there and sealed at sealed_idx (in the writer's seal buffer: nothing else may be sealed into
 * it before the statement's step). */
static int bind_failure(struct sqlite_store *s, sqlite3_stmt *st, int idx, int sealed_idx,
                        const char *conversation_id, const char *v) {
  if (!s->ring || !v) {
    bind_text_or_null(st, idx, v);
    sqlite3_bind_null(st, sealed_idx);
    return SQLITE_OK;
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, "conversations.failure_reason", conversation_id, NULL), n;
  const unsigned char *sealed =
      store_seal_into(&s->seal_buf, s->ring, aad, aad_len, v, strlen(v), &n);
  if (!sealed) return SQLITE_NOMEM;
  sqlite3_bind_null(st, idx);
  sqlite3_bind_blob64(st, sealed_idx, sealed, n, SQLITE_STATIC);
  return SQLITE_OK;
}

/* Keeps the derived body of a stamped write. */
static int insert_delivery(struct sqlite_store *s, struct store_write *w, sqlite3_int64 *rowid) {
  sqlite3_stmt *st = s->w_ins_delivery;
  sqlite3_bind_text(st, 1, w->webhook_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, w->conv->conversation_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, w->processed_us);
  sqlite3_bind_blob(st, 4, w->body_sha256, CRYPTO_SHA256_LEN, SQLITE_STATIC);
  int rc = bind_sealable(s, st, 5, 6, "deliveries.body", w->webhook_id, w->conv->conversation_id,
                         w->body, w->body_len);
  if (rc != SQLITE_OK) {
    sqlite3_clear_bindings(st);
    return rc;
  }
  rc = step_done(st);
  *rowid = sqlite3_last_insert_rowid(s->wdb);
  return rc;
}

static int upsert_conversation(struct sqlite_store *s, struct store_write *w,
                               sqlite3_int64 delivery_id) {
  const struct conversation_input *c = w->conv;
  sqlite3_stmt *st = s->w_upsert;
  struct store_sealed_id email, account;
  int rc = SQLITE_OK;
  if (s->ring && w->presealed.done) { /* sealed in submit, on the caller's thread */
    bind_sealed_id(st, 2, 14, &w->presealed.email);
    bind_sealed_id(st, 3, 15, &w->presealed.account);
  } else {
    rc = bind_id(s, st, 2, 14, "conversations.email_id", c->conversation_id, c->email_id, &email);
    if (rc == SQLITE_OK)
      rc = bind_id(s, st, 3, 15, "conversations.account_id", c->conversation_id, c->account_id,
                   &account);
  }
  if (rc == SQLITE_OK) rc = bind_failure(s, st, 13, 17, c->conversation_id, c->failure_reason);
  if (rc != SQLITE_OK) {
    sqlite3_clear_bindings(st);
    return rc;
  }
  if (s->ring) sqlite3_bind_text(st, 16, s->key0, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 1, c->conversation_id, -1, SQLITE_STATIC);
  if (c->has_start)
    sqlite3_bind_int64(st, 4, c->start_us);
  else
    sqlite3_bind_null(st, 4);
  sqlite3_bind_int64(st, 5, c->duration);
  sqlite3_bind_int64(st, 6, c->message_count);
  sqlite3_bind_int64(st, 7, w->processed_us);
  sqlite3_bind_int64(st, 8, delivery_id);
  sqlite3_bind_text(st, 9, w->webhook_id, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 10, w->body_sha256, CRYPTO_SHA256_LEN, SQLITE_STATIC);
  sqlite3_bind_text(st, 11, c->status ? c->status : "completed", -1, SQLITE_STATIC);
  bind_text_or_null(st, 12, c->agent_id);
  bind_text_or_null(st, 18, c->platform);
  bind_text_or_null(st, 19, c->outcome);
  return step_done(st);
}

/* The conversation's new version: its derived body in deliveries, its row upserted. */
static int store_version(struct sqlite_store *s, struct store_write *w) {
  sqlite3_int64 delivery_id = 0;
  int rc = insert_delivery(s, w, &delivery_id);
  return rc == SQLITE_OK ? upsert_conversation(s, w, delivery_id) : rc;
}

/* Looks for an event of the same conversation with the same bytes; sets w->duplicate. */
static int find_event(struct sqlite_store *s, struct store_write *w) {
  sqlite3_stmt *st = s->w_find_event;
  sqlite3_bind_text(st, 1, w->event_conversation_id, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, w->event_sha256, CRYPTO_SHA256_LEN, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    w->duplicate = true;
    copy_text(w->webhook_id, sizeof w->webhook_id, sqlite3_column_text(st, 0));
    w->processed_us = sqlite3_column_int64(st, 1);
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int insert_event(struct sqlite_store *s, struct store_write *w) {
  sqlite3_stmt *st = s->w_ins_event;
  sqlite3_bind_text(st, 1, w->webhook_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, w->event_conversation_id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, w->event_type, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, w->processed_us);
  sqlite3_bind_blob(st, 5, w->event_sha256, CRYPTO_SHA256_LEN, SQLITE_STATIC);
  if (w->event_audio_at >= 0)
    sqlite3_bind_int64(st, 7, w->event_audio_at);
  else
    sqlite3_bind_null(st, 7);
  int rc = bind_sealable(s, st, 6, 8, "events.body", w->webhook_id, w->event_conversation_id,
                         w->event_body ? w->event_body : "", w->event_body_len);
  if (rc != SQLITE_OK) {
    sqlite3_clear_bindings(st);
    return rc;
  }
  return step_done(st);
}

/* Set when an event's audio file could not be read: that write alone fails. */
#define AUDIO_READ_FAILED (-1)
/* An email or account id that would pass for a blind index (sealing.h): that write alone fails,
 * the client's fault (the model refuses such ids first). */
#define ID_REFUSED (-2)
/* A row reencrypt cannot open (another key, moved, changed): that write alone fails. */
#define RESEAL_FAILED (-3)
/* A STORE_WRITE_AUDIT entry without a name (a caller's bug): that write alone fails. */
#define AUDIT_ENTRY_REFUSED (-4)
/* An outbox row or a subscription that does not open: that write alone fails. */
#define OUTBOX_UNREADABLE (-5)
/* A STORE_WRITE_OUTBOX without what its op needs (a caller's bug): that write alone fails. */
#define OUTBOX_REFUSED (-6)

/* Replaces the conversation's audio, one chunk of the file at a time. */
static int replace_audio(struct sqlite_store *s, struct store_write *w) {
  const char *id = w->event_conversation_id;
  sqlite3_bind_text(s->w_del_chunks, 1, id, -1, SQLITE_STATIC);
  int rc = step_done(s->w_del_chunks);
  if (rc != SQLITE_OK) return rc;
  sqlite3_stmt *st = s->w_put_audio;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, w->audio_len);
  sqlite3_bind_int64(st, 3, STORE_AUDIO_CHUNK_BYTES);
  sqlite3_bind_text(st, 4, w->webhook_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 5, w->processed_us);
  rc = step_done(st);
  st = s->w_ins_chunk;
  for (int64_t off = 0, seq = 0; rc == SQLITE_OK && off < w->audio_len; seq++) {
    size_t n = w->audio_len - off < STORE_AUDIO_CHUNK_BYTES ? (size_t)(w->audio_len - off)
                                                            : STORE_AUDIO_CHUNK_BYTES;
    int err = store_audio_pread(w, off, s->audio_buf, n);
    if (err) {
      log_msg(LOG_ERROR, "cannot read an event's audio (%lld of %lld bytes read): %s",
              (long long)off, (long long)w->audio_len, strerror(err));
      return AUDIO_READ_FAILED;
    }
    char seq_text[24];
    snprintf(seq_text, sizeof seq_text, "%lld", (long long)seq);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, seq);
    rc = bind_sealable(s, st, 3, 4, "audio_chunks.data", id, seq_text, s->audio_buf, n);
    if (rc != SQLITE_OK) {
      sqlite3_clear_bindings(st);
      return rc;
    }
    rc = step_done(st);
    off += (int64_t)n;
  }
  return rc;
}

/* An ElevenLabs event: kept unless its conversation already has one with the same bytes; the
 * conversation upserted and the audio replaced when the event carries them. */
static int apply_event(struct sqlite_store *s, struct store_write *w) {
  int rc = find_event(s, w);
  if (rc != SQLITE_OK || w->duplicate) return rc;
  if (!write_queue_stamp(&s->queue, w)) return SQLITE_ERROR;
  bool existed = false;
  int64_t audio_bytes = -1;
  if (w->conv) rc = ob_conversation_state(s, w->conv->conversation_id, &existed, &audio_bytes);
  if (rc == SQLITE_OK) rc = insert_event(s, w);
  if (rc == SQLITE_OK && w->conv) rc = store_version(s, w);
  if (rc == SQLITE_OK && store_write_has_audio(w)) rc = replace_audio(s, w);
  /* Its outbox events, after everything it changed (their data shows the audio too). */
  if (rc == SQLITE_OK && w->conv) return ob_of_version(s, w, existed, audio_bytes);
  if (rc == SQLITE_OK && store_write_has_audio(w)) return ob_audio_only(s, w);
  return rc;
}

static void bind_time_or_null(sqlite3_stmt *st, int idx, int64_t us) {
  if (us)
    sqlite3_bind_int64(st, idx, us);
  else
    sqlite3_bind_null(st, idx);
}

/* Binds a key's accounts (joined text) at idx: as it is, or with a ring "" there, sealed at
 * sealed_idx (into the writer's seal buffer) and key0 at key_idx. */
static int bind_accounts(struct sqlite_store *s, sqlite3_stmt *st, int idx, int sealed_idx,
                         int key_idx, const char *key_id, const char *accounts) {
  if (!s->ring) {
    sqlite3_bind_text(st, idx, accounts, -1, SQLITE_TRANSIENT);
    return SQLITE_OK;
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, "api_keys.accounts", key_id, NULL), n;
  const unsigned char *sealed =
      store_seal_into(&s->seal_buf, s->ring, aad, aad_len, accounts, strlen(accounts), &n);
  if (!sealed) return SQLITE_NOMEM;
  sqlite3_bind_text(st, idx, "", 0, SQLITE_STATIC);
  sqlite3_bind_blob64(st, sealed_idx, sealed, n, SQLITE_STATIC);
  sqlite3_bind_text(st, key_idx, s->key0, -1, SQLITE_STATIC);
  return SQLITE_OK;
}

/* A key's accounts (col, sealed at sealed_col) as joined text into out: false when the sealed
 * value does not open, or a sealed value sits in the plaintext column. */
static bool read_accounts(const struct seal_ring *ring, sqlite3_stmt *st, int col, int sealed_col,
                          const char *key_id, char *out, size_t cap) {
  if (sqlite3_column_type(st, sealed_col) != SQLITE_NULL) {
    char aad[STORE_AAD_MAX];
    size_t aad_len = store_seal_aad(aad, "api_keys.accounts", key_id, NULL);
    return store_open_text(ring, aad, aad_len, sqlite3_column_blob(st, sealed_col),
                           (size_t)sqlite3_column_bytes(st, sealed_col), out, cap);
  }
  const unsigned char *v = sqlite3_column_text(st, col); /* "" for an unbound key */
  size_t len = (size_t)sqlite3_column_bytes(st, col);
  if (!v || seal_is_sealed(v, len) || len >= cap) return false;
  memcpy(out, v, len);
  out[len] = '\0';
  return strlen(out) == len;
}

/* The API key writes (store.h). */
static int apply_key(struct sqlite_store *s, struct store_write *w) {
  if (w->kind == STORE_WRITE_KEY_CREATE) {
    const struct apikey_record *k = w->key;
    char scopes[APIKEY_SCOPES_TEXT_MAX], accounts[APIKEY_ACCOUNTS_TEXT_MAX];
    apikey_scopes_text(k->scopes, scopes);
    apikey_accounts_join(k, accounts);
    sqlite3_stmt *st = s->w_key_ins;
    sqlite3_bind_text(st, 1, k->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, k->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, scopes, -1, SQLITE_TRANSIENT);
    int rc = bind_accounts(s, st, 4, 8, 9, k->id, accounts);
    if (rc != SQLITE_OK) {
      sqlite3_clear_bindings(st);
      return rc;
    }
    sqlite3_bind_blob(st, 5, k->secret_sha256, 32, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, k->created_us);
    bind_time_or_null(st, 7, k->expires_us);
    return step_done(st);
  }
  sqlite3_stmt *st = w->kind == STORE_WRITE_KEY_REVOKE ? s->w_key_revoke : s->w_key_touch;
  sqlite3_bind_text(st, 1, w->key_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, w->key_at_us);
  int rc = sqlite3_step(st);
  w->duplicate = rc != SQLITE_ROW; /* KEY_REVOKE: no such key */
  if (rc == SQLITE_ROW) rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ---------- the audit log (writer) ---------- */

/* An entry's text: NULL when "" (as the canonical bytes, which cut at max, see them). */
static void bind_entry_text(sqlite3_stmt *st, int idx, const char *v, size_t max) {
  size_t n = v ? strnlen(v, max) : 0;
  if (n)
    sqlite3_bind_text(st, idx, v, (int)n, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, idx);
}

/* The chain's head, read once per batch inside its transaction. */
static int chain_load(struct sqlite_store *s) {
  if (s->chain_loaded) return SQLITE_OK;
  sqlite3_stmt *st = s->w_audit_head;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    s->chain_id = s->chain_start_id = sqlite3_column_int64(st, 0);
    if (sqlite3_column_bytes(st, 1) == AUDIT_HASH_LEN) {
      memcpy(s->chain_hash, sqlite3_column_blob(st, 1), AUDIT_HASH_LEN);
      s->chain_at_max = sqlite3_column_int64(st, 2);
      rc = SQLITE_OK;
    } else {
      rc = SQLITE_CORRUPT;
    }
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_CORRUPT;
  }
  sqlite3_reset(st);
  if (rc == SQLITE_CORRUPT)
    log_msg(LOG_ERROR,
            "the audit log's head (table audit_head, row 1) is missing or damaged: "
            "nothing is written until it is repaired (gensendrep audit verify)");
  if (rc != SQLITE_OK) return rc;
  s->chain_now_us = time_now_us();
  s->chain_loaded = true;
  return SQLITE_OK;
}

/* Gives e the next id and its link, and inserts it. */
static int audit_append(struct sqlite_store *s, struct audit_entry *e) {
  int rc = chain_load(s);
  if (rc != SQLITE_OK) return rc;
  const char *action = audit_action_name(e->action), *outcome = audit_outcome_name(e->outcome);
  if (!action || !outcome) return SQLITE_MISUSE; /* a caller's bug: the entry cannot be named */
  e->id = s->chain_id + 1;
  audit_chain_link(s->chain_hash, e);
  sqlite3_stmt *st = s->w_audit_ins;
  sqlite3_bind_int64(st, 1, e->id);
  sqlite3_bind_int64(st, 2, e->at_us);
  bind_entry_text(st, 3, e->who.request_id, AUDIT_REQUEST_ID_MAX);
  bind_entry_text(st, 4, e->who.key_id, AUDIT_KEY_ID_MAX);
  bind_entry_text(st, 5, e->who.client_ip, AUDIT_CLIENT_IP_MAX);
  sqlite3_bind_text(st, 6, action, -1, SQLITE_STATIC);
  bind_entry_text(st, 7, e->target, AUDIT_TARGET_MAX);
  sqlite3_bind_text(st, 8, outcome, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 9, e->count);
  sqlite3_bind_blob(st, 10, e->hash, AUDIT_HASH_LEN, SQLITE_STATIC);
  int64_t at_max = e->at_us > s->chain_at_max ? e->at_us : s->chain_at_max;
  sqlite3_bind_int64(st, 11, at_max);
  rc = step_done(st);
  if (rc != SQLITE_OK) return rc;
  s->chain_at_max = at_max;
  s->chain_id = e->id;
  memcpy(s->chain_hash, e->hash, AUDIT_HASH_LEN);
  return SQLITE_OK;
}

/* The entry of a change (store.h's `who` comment): w's who, at at_us (0: the batch's time). */
static int audit_change(struct sqlite_store *s, const struct store_write *w,
                        enum audit_action action, const char *target, enum audit_outcome outcome,
                        int64_t at_us) {
  int rc = chain_load(s);
  if (rc != SQLITE_OK) return rc;
  struct audit_entry e;
  memset(&e, 0, sizeof e);
  e.who = w->who;
  e.at_us = at_us ? at_us : s->chain_now_us;
  e.action = action;
  snprintf(e.target, sizeof e.target, "%s", target ? target : "");
  e.outcome = outcome;
  e.count = 1;
  return audit_append(s, &e);
}

/* STORE_WRITE_AUDIT: the caller's entries, in order. An entry whose action or outcome has no
 * name (a caller's bug) fails its write alone, before anything of it is written. */
static int audit_given(struct sqlite_store *s, struct store_write *w) {
  for (size_t i = 0; i < w->audit_count; i++) {
    const struct audit_entry *e = &w->audit_entries[i];
    if (!audit_action_name(e->action) || !audit_outcome_name(e->outcome)) {
      log_msg(LOG_ERROR, "an audit entry with action %d, outcome %d cannot be written",
              (int)e->action, (int)e->outcome);
      return AUDIT_ENTRY_REFUSED;
    }
  }
  int rc = SQLITE_OK;
  for (size_t i = 0; rc == SQLITE_OK && i < w->audit_count; i++)
    rc = audit_append(s, &w->audit_entries[i]);
  return rc;
}

/* The head row, once per batch that appended. */
static int chain_save(struct sqlite_store *s) {
  if (!s->chain_loaded || s->chain_id == s->chain_start_id) return SQLITE_OK;
  sqlite3_bind_int64(s->w_audit_set, 1, s->chain_id);
  sqlite3_bind_blob(s->w_audit_set, 2, s->chain_hash, AUDIT_HASH_LEN, SQLITE_STATIC);
  sqlite3_bind_int64(s->w_audit_set, 3, s->chain_at_max);
  int rc = step_done(s->w_audit_set);
  return rc == SQLITE_OK && sqlite3_changes(s->wdb) != 1 ? SQLITE_CORRUPT : rc;
}

/* Runs erase_sql[from..] for id; adds the rows removed to *erased. */
static int erase_one(struct sqlite_store *s, const char *id, int from, int64_t *erased) {
  for (int i = from; i < ERASE_STEPS; i++) {
    sqlite3_bind_text(s->w_erase[i], 1, id, -1, SQLITE_STATIC);
    int rc = step_done(s->w_erase[i]);
    if (rc != SQLITE_OK) return rc;
    int64_t n = sqlite3_changes64(s->wdb);
    /* A conversation row takes its current delivery with it (a trigger's change, which
     * sqlite3_changes does not count). */
    *erased += i == 0 ? 2 * n : n;
  }
  return SQLITE_OK;
}

/* The ids a retention query selects (at most limit), copied: rows are deleted after. */
static int select_ids(sqlite3_stmt *st, int64_t before_us, int64_t limit, char ***ids, size_t *n) {
  *ids = NULL;
  *n = 0;
  if (limit <= 0) return SQLITE_OK;
  *ids = calloc((size_t)limit, sizeof **ids);
  if (!*ids) return SQLITE_NOMEM;
  sqlite3_bind_int64(st, 1, before_us);
  sqlite3_bind_int64(st, 2, limit);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < (size_t)limit) {
    const unsigned char *id = sqlite3_column_text(st, 0);
    if (!id || !((*ids)[*n] = strdup((const char *)id))) {
      rc = SQLITE_NOMEM;
      break;
    }
    (*n)++;
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void free_ids(char **ids, size_t n) {
  for (size_t i = 0; i < n; i++) free(ids[i]);
  free(ids);
}

/* Erases each id a retention query selects, from erase_sql[from] on; counts the ids. Each
 * whole conversation erased (from 0) gets its audit entry. */
static int erase_selected(struct sqlite_store *s, sqlite3_stmt *select, int from,
                          struct store_write *w) {
  char **ids;
  size_t n;
  int rc = select_ids(select, w->retain_before_us, w->retain_limit, &ids, &n);
  int64_t rows = 0;
  for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
    /* Audio of no conversation too (from ERASE_AUDIO_FROM): its audio_added events and their
     * deliveries go and conversation.deleted is written, as ERASE of it does. */
    struct ob_account a;
    rc = ob_account_before_erase(s, ids[i], &a);
    if (rc == SQLITE_OK) rc = erase_one(s, ids[i], from, &rows);
    if (rc == SQLITE_OK) rc = ob_erased(s, ids[i], true, &a);
    if (rc == SQLITE_OK && from == 0)
      rc = audit_change(s, w, AUDIT_CONVERSATION_ERASED, ids[i], AUDIT_EXPIRED, 0);
  }
  free_ids(ids, n);
  if (rc == SQLITE_OK) w->erased += (int64_t)n;
  return rc;
}

/* A retention batch: old conversations whole, then old events and audio of no conversation. */
static int apply_retain(struct sqlite_store *s, struct store_write *w) {
  int rc = erase_selected(s, s->w_old_convs, 0, w);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(s->w_old_events, 1, w->retain_before_us);
    sqlite3_bind_int64(s->w_old_events, 2, w->retain_limit);
    rc = step_done(s->w_old_events);
    if (rc == SQLITE_OK) w->erased += sqlite3_changes64(s->wdb);
  }
  if (rc == SQLITE_OK) rc = erase_selected(s, s->w_old_audio, ERASE_AUDIO_FROM, w);
  return rc;
}

/* ---------- reencrypt (STORE_WRITE_RESEAL) ---------- */

/* The walk's budget of rows looked at per write (rows already sealed with the current key cost
 * a look only): the batch holding it stays short however few rows need a rewrite. */
#define RESEAL_SCAN_PER_ROW 16
#define RESEAL_SCAN_MIN 1024
/* Sealed bytes rewritten per write, at most (and at least one row): 500 audio chunks would be
 * 128 MiB in one transaction, holding every webhook behind it. */
#define RESEAL_BYTES_MAX (4 * 1024 * 1024)

/* Binds table t's primary key from its text form (as the position keeps it). */
static void bind_pk(sqlite3_stmt *st, int idx, int t, const char *key) {
  if (t == RESEAL_CONVERSATIONS || t == RESEAL_KEYS || t == RESEAL_SUBS)
    sqlite3_bind_text(st, idx, key, -1, SQLITE_STATIC);
  else
    sqlite3_bind_int64(st, idx, *key ? strtoll(key, NULL, 10) : INT64_MIN);
}

/* Walks table t after key (a primary key as text, "" from the start) until a row not sealed
 * with the current key: *found and key set to it. Else key is the last row looked at and *end
 * says whether the table is done. Each row looked at costs one of *budget. */
static int reseal_next(struct sqlite_store *s, int t, char *key, size_t cap, int64_t *budget,
                       bool *found, bool *end) {
  sqlite3_stmt *st = s->w_reseal_scan[t];
  sqlite3_bind_text(st, 1, s->key0, -1, SQLITE_STATIC);
  bind_pk(st, 2, t, key);
  *found = *end = false;
  int rc = SQLITE_ROW;
  char last[MODEL_CONVERSATION_ID_MAX + 1] = "";
  bool moved = false;
  while (*budget > 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    (*budget)--;
    copy_text(last, sizeof last, sqlite3_column_text(st, 0));
    moved = true;
    if (sqlite3_column_int(st, 1) == 0) {
      *found = true;
      break;
    }
  }
  *end = rc == SQLITE_DONE;
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (moved) snprintf(key, cap, "%s", last);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* One id (of a conversations row, or an account kept with an outbox event or a subscription:
 * what names the column, pk the row) as plaintext (into out; NULL when unknown), from its
 * sealed value when it has one. */
static bool reseal_id(struct sqlite_store *s, sqlite3_stmt *st, int col, int sealed_col,
                      const char *what, const char *conversation_id, char *out, size_t cap,
                      const char **v) {
  *v = NULL;
  if (sqlite3_column_type(st, sealed_col) != SQLITE_NULL) {
    char aad[STORE_AAD_MAX];
    size_t aad_len = store_seal_aad(aad, what, conversation_id, NULL);
    if (!store_open_id(s->ring, aad, aad_len, sqlite3_column_blob(st, sealed_col),
                       (size_t)sqlite3_column_bytes(st, sealed_col), out, cap))
      return false;
    *v = out;
    return true;
  }
  const unsigned char *text = sqlite3_column_text(st, col);
  if (!text) return true;
  if (!store_id_sealable((const char *)text)) return false; /* an index without its value */
  copy_text(out, cap, text);
  *v = out;
  return true;
}

/* A conversation's failure reason (col, sealed at sealed_col) as text into out (*v NULL when
 * none): false when its sealed value does not open (no ring, another key, moved, changed), or
 * it is a sealed value in the plaintext column. */
static bool read_failure(const struct seal_ring *ring, sqlite3_stmt *st, int col, int sealed_col,
                         const char *conversation_id, char *out, size_t cap, const char **v) {
  *v = NULL;
  out[0] = '\0';
  if (sqlite3_column_type(st, sealed_col) != SQLITE_NULL) {
    char aad[STORE_AAD_MAX];
    size_t aad_len = store_seal_aad(aad, "conversations.failure_reason", conversation_id, NULL);
    if (!store_open_text(ring, aad, aad_len, sqlite3_column_blob(st, sealed_col),
                         (size_t)sqlite3_column_bytes(st, sealed_col), out, cap))
      return false;
    *v = out;
    return true;
  }
  if (sqlite3_column_type(st, col) == SQLITE_NULL) return true;
  const void *text = sqlite3_column_blob(st, col);
  size_t len = (size_t)sqlite3_column_bytes(st, col);
  if (text && seal_is_sealed(text, len)) return false; /* sealed, yet not marked so */
  copy_text(out, cap, sqlite3_column_text(st, col));
  *v = out;
  return true;
}

static int reseal_conversation(struct sqlite_store *s, const char *id) {
  sqlite3_stmt *get = s->w_reseal_get[RESEAL_CONVERSATIONS];
  sqlite3_bind_text(get, 1, id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(get);
  char email[MODEL_EMAIL_ID_MAX + 1], account[MODEL_ACCOUNT_ID_MAX + 1];
  char failure[MODEL_FAILURE_REASON_MAX + 1];
  const char *e = NULL, *a = NULL, *f = NULL;
  bool ok = rc == SQLITE_ROW &&
            reseal_id(s, get, 0, 2, "conversations.email_id", id, email, sizeof email, &e) &&
            reseal_id(s, get, 1, 3, "conversations.account_id", id, account, sizeof account, &a) &&
            read_failure(s->ring, get, 4, 5, id, failure, sizeof failure, &f);
  sqlite3_reset(get);
  sqlite3_clear_bindings(get);
  if (rc != SQLITE_ROW) return rc == SQLITE_DONE ? SQLITE_OK : rc;
  if (!ok) {
    log_msg(LOG_ERROR,
            "reencrypt: the email, account or failure reason of conversation %s does not open", id);
    return RESEAL_FAILED;
  }
  sqlite3_stmt *put = s->w_reseal_put[RESEAL_CONVERSATIONS];
  struct store_sealed_id es, as;
  rc = bind_id(s, put, 2, 4, "conversations.email_id", id, e, &es);
  if (rc == SQLITE_OK) rc = bind_id(s, put, 3, 5, "conversations.account_id", id, a, &as);
  if (rc == SQLITE_OK) rc = bind_failure(s, put, 7, 8, id, f);
  if (rc != SQLITE_OK) {
    sqlite3_clear_bindings(put);
    return rc;
  }
  sqlite3_bind_text(put, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_text(put, 6, s->key0, -1, SQLITE_STATIC);
  return step_done(put);
}

/* An API key's accounts: opened when sealed, sealed again with the current key. */
static int reseal_apikey(struct sqlite_store *s, const char *id) {
  sqlite3_stmt *get = s->w_reseal_get[RESEAL_KEYS];
  sqlite3_bind_text(get, 1, id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(get);
  char accounts[APIKEY_ACCOUNTS_TEXT_MAX];
  bool ok = rc == SQLITE_ROW && read_accounts(s->ring, get, 0, 3, id, accounts, sizeof accounts);
  sqlite3_reset(get);
  sqlite3_clear_bindings(get);
  if (rc != SQLITE_ROW) return rc == SQLITE_DONE ? SQLITE_OK : rc;
  if (!ok) {
    log_msg(LOG_ERROR, "reencrypt: the accounts of API key %s do not open", id);
    return RESEAL_FAILED;
  }
  sqlite3_stmt *put = s->w_reseal_put[RESEAL_KEYS];
  sqlite3_bind_text(put, 1, id, -1, SQLITE_STATIC);
  rc = bind_accounts(s, put, 2, 3, 4, id, accounts);
  if (rc != SQLITE_OK) {
    sqlite3_clear_bindings(put);
    return rc;
  }
  return step_done(put);
}

/* A body or chunk: opened when sealed, sealed again with the current key. */
static int reseal_blob(struct sqlite_store *s, int t, const char *key, int64_t *bytes) {
  sqlite3_stmt *get = s->w_reseal_get[t];
  bind_pk(get, 1, t, key);
  int rc = sqlite3_step(get);
  if (rc != SQLITE_ROW) {
    sqlite3_reset(get);
    sqlite3_clear_bindings(get);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, reseal_what[t], (const char *)sqlite3_column_text(get, 0),
                                  (const char *)sqlite3_column_text(get, 1));
  const void *data = sqlite3_column_blob(get, 2);
  size_t len = (size_t)sqlite3_column_bytes(get, 2);
  if (!data) data = "";
  /* A body sealed yet not marked so is refused (audio may start like a sealed value). */
  bool ok = t == RESEAL_CHUNKS || sqlite3_column_type(get, 3) != SQLITE_NULL ||
            !seal_is_sealed(data, len);
  if (ok && sqlite3_column_type(get, 3) != SQLITE_NULL) {
    size_t plain = seal_plain_len(data, len), got = 0;
    ok = store_seal_buf_reserve(&s->open_buf, plain + 1) &&
         seal_open(s->ring, aad, aad_len, data, len, s->open_buf.data, &got) && got == plain;
    data = s->open_buf.data;
    len = got;
  }
  const unsigned char *sealed =
      ok ? store_seal_into(&s->seal_buf, s->ring, aad, aad_len, data, len, &len) : NULL;
  sqlite3_reset(get);
  sqlite3_clear_bindings(get);
  if (!sealed) {
    log_msg(LOG_ERROR, "reencrypt: row %s of %s does not open", key, reseal_what[t]);
    return RESEAL_FAILED;
  }
  *bytes += (int64_t)len;
  sqlite3_stmt *put = s->w_reseal_put[t];
  bind_pk(put, 1, t, key);
  sqlite3_bind_blob64(put, 2, sealed, len, SQLITE_STATIC);
  sqlite3_bind_text(put, 3, s->key0, -1, SQLITE_STATIC);
  return step_done(put);
}

/* Rewrites up to reseal_limit rows not sealed with the current key, from reseal_pos on. */
static int apply_reseal(struct sqlite_store *s, struct store_write *w) {
  w->erased = 0; /* a batch sent again counts again */
  w->reseal_left = 0;
  if (!s->ring) {
    log_msg(LOG_ERROR, "reencrypt needs ENCRYPTION_KEYS");
    return RESEAL_FAILED;
  }
  int t = 0;
  char key[MODEL_CONVERSATION_ID_MAX + 1] = "";
  const char *colon = strchr(w->reseal_pos, ':');
  if (w->reseal_pos[0] && (!colon || w->reseal_pos[0] < '0' ||
                           w->reseal_pos[0] >= '0' + RESEAL_TABLES || colon != w->reseal_pos + 1))
    return RESEAL_FAILED; /* not a position this store made */
  if (w->reseal_pos[0]) {
    t = w->reseal_pos[0] - '0';
    snprintf(key, sizeof key, "%s", colon + 1);
  }
  int64_t limit = w->reseal_limit > 0 ? w->reseal_limit : 1;
  int64_t budget = limit * RESEAL_SCAN_PER_ROW;
  if (budget < RESEAL_SCAN_MIN) budget = RESEAL_SCAN_MIN;
  int rc = SQLITE_OK;
  int64_t bytes = 0; /* rewritten: a batch of audio chunks stops at RESEAL_BYTES_MAX */
  while (rc == SQLITE_OK && t < RESEAL_TABLES && w->erased < limit && budget > 0 &&
         bytes < RESEAL_BYTES_MAX) {
    bool found, end;
    rc = reseal_next(s, t, key, sizeof key, &budget, &found, &end);
    if (rc != SQLITE_OK) break;
    if (found) {
      rc = t == RESEAL_CONVERSATIONS ? reseal_conversation(s, key)
           : t == RESEAL_KEYS        ? reseal_apikey(s, key)
           : t == RESEAL_OUTBOX      ? reseal_outbox(s, key, &bytes)
           : t == RESEAL_SUBS        ? reseal_subscription(s, key)
                                     : reseal_blob(s, t, key, &bytes);
      if (rc == SQLITE_OK) w->erased++;
    } else if (end) {
      t++;
      key[0] = '\0';
    }
  }
  if (rc != SQLITE_OK) return rc;
  if (t < RESEAL_TABLES) {
    snprintf(w->reseal_pos, sizeof w->reseal_pos, "%d:%s", t, key);
    return SQLITE_OK;
  }
  /* Every table walked: checked again in this transaction (rows another instance sealed with
   * another key meanwhile). None left: every other key is retired (a writer sealing with one
   * records it again in its next batch, and the next start without it is refused). */
  w->reseal_pos[0] = '\0';
  sqlite3_bind_text(s->w_reseal_left, 1, s->key0, -1, SQLITE_STATIC);
  rc = sqlite3_step(s->w_reseal_left);
  w->reseal_left = rc == SQLITE_ROW ? sqlite3_column_int64(s->w_reseal_left, 0) : 0;
  sqlite3_reset(s->w_reseal_left);
  sqlite3_clear_bindings(s->w_reseal_left);
  if (rc != SQLITE_ROW) return rc;
  if (w->reseal_left) return SQLITE_OK;
  sqlite3_bind_text(s->w_retire_keys, 1, s->key0, -1, SQLITE_STATIC);
  rc = step_done(s->w_retire_keys);
  if (rc == SQLITE_OK && sqlite3_changes(s->wdb) > 0)
    log_msg(LOG_INFO, "reencrypt: every row is sealed with key %s: %d other key(s) retired",
            s->key0, sqlite3_changes(s->wdb));
  return rc;
}

/* With a ring, the batch records the key it seals with (unless recorded): see key0_check. */
static int record_key0(struct sqlite_store *s) {
  if (!s->ring) return SQLITE_OK;
  sqlite3_stmt *st = s->w_record_key;
  sqlite3_bind_text(st, 1, s->key0, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, s->key0_check, (int)s->key0_check_len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, time_now_us());
  return step_done(st);
}

/* Whether a conversation's email and account may be stored (sealing.h). */
static bool ids_storable(const struct store_write *w) {
  return !w->conv ||
         (store_id_sealable(w->conv->email_id) && store_id_sealable(w->conv->account_id));
}

static int apply_write(struct sqlite_store *s, struct store_write *w) {
  if (w->kind == STORE_WRITE_AUDIT) return audit_given(s, w);
  if (w->kind == STORE_WRITE_RESEAL) return apply_reseal(s, w);
  if (w->kind == STORE_WRITE_ANALYTICS_REBUILD) return roll_rebuild(s, &w->erased, -1);
  if ((w->kind == STORE_WRITE_CONVERSATION || w->kind == STORE_WRITE_EVENT) && !ids_storable(w))
    return ID_REFUSED;
  if (store_write_is_key(w)) return apply_key(s, w);
  switch (w->kind) {
    case STORE_WRITE_SUB_PUT:
      return apply_sub_put(s, w);
    case STORE_WRITE_SUB_DELETE:
      return apply_sub_delete(s, w);
    case STORE_WRITE_REPLAY:
      return apply_replay(s, w);
    case STORE_WRITE_OUTBOX:
      return apply_outbox(s, w);
    default:
      break;
  }
  if (w->kind == STORE_WRITE_ERASE || w->kind == STORE_WRITE_RETAIN) {
    w->erased = 0; /* a batch sent again counts again */
    if (w->kind == STORE_WRITE_RETAIN) return apply_retain(s, w);
    struct ob_account a;
    int rc = ob_account_before_erase(s, w->erase_conversation_id, &a);
    if (rc == SQLITE_OK) rc = erase_one(s, w->erase_conversation_id, 0, &w->erased);
    if (rc == SQLITE_OK && w->erased > 0) rc = ob_erased(s, w->erase_conversation_id, false, &a);
    return rc;
  }
  if (w->kind == STORE_WRITE_PROBE) {
    sqlite3_bind_int64(s->w_probe, 1, time_now_us());
    return step_done(s->w_probe);
  }
  w->duplicate = false;
  if (w->kind == STORE_WRITE_EVENT) return apply_event(s, w);
  bool found;
  int64_t audio_bytes;
  int rc = find_current(s, w, &found, &audio_bytes);
  if (rc != SQLITE_OK || w->duplicate) return rc;
  if (!write_queue_stamp(&s->queue, w)) return SQLITE_ERROR;
  rc = store_version(s, w);
  return rc == SQLITE_OK ? ob_of_version(s, w, found, audio_bytes) : rc;
}

/* The audit entry a change writes in its transaction (store.h's `who` comment); retention's
 * are written as it erases. A new version's entry is at its processedAt, others at the batch's
 * time (a redelivery's processedAt is its first delivery's). */
static int audit_of(struct sqlite_store *s, const struct store_write *w) {
  switch (w->kind) {
    case STORE_WRITE_CONVERSATION:
    case STORE_WRITE_EVENT:
      return audit_change(s, w, AUDIT_WEBHOOK_ACCEPTED, store_write_conversation_id(w), AUDIT_OK,
                          w->duplicate ? 0 : w->processed_us);
    case STORE_WRITE_ERASE:
      return w->erased > 0 ? audit_change(s, w, AUDIT_CONVERSATION_ERASED, w->erase_conversation_id,
                                          AUDIT_OK, 0)
                           : SQLITE_OK;
    case STORE_WRITE_KEY_CREATE:
      return audit_change(s, w, AUDIT_KEY_CREATED, w->key->id, AUDIT_OK, 0);
    case STORE_WRITE_KEY_REVOKE:
      return w->duplicate ? SQLITE_OK
                          : audit_change(s, w, AUDIT_KEY_REVOKED, w->key_id, AUDIT_OK, 0);
    case STORE_WRITE_SUB_PUT:
      return w->status == STORE_NOT_FOUND ? SQLITE_OK
                                          : audit_change(s, w,
                                                         w->sub_create ? AUDIT_SUBSCRIPTION_CREATED
                                                                       : AUDIT_SUBSCRIPTION_UPDATED,
                                                         w->sub->id, AUDIT_OK, 0);
    case STORE_WRITE_SUB_DELETE:
      return w->erased > 0 ? audit_change(s, w, AUDIT_SUBSCRIPTION_DELETED, w->sub_id, AUDIT_OK, 0)
                           : SQLITE_OK;
    case STORE_WRITE_REPLAY:
      return w->status == STORE_NOT_FOUND
                 ? SQLITE_OK
                 : audit_change(s, w, AUDIT_SUBSCRIPTION_REPLAYED, w->sub_id, AUDIT_OK, 0);
    default: /* PROBE, KEY_TOUCH: no entry; AUDIT, RETAIN: appended as they are applied */
      return SQLITE_OK;
  }
}

/* After a committed batch that erased rows: the checkpointer empties the log soon. */
static void request_truncate(struct sqlite_store *s, const struct store_write *batch) {
  for (const struct store_write *w = batch; w; w = w->next) {
    /* A reencrypt batch too: the log holds the rows as they were (plaintext, or under the old
     * key). */
    if ((w->kind == STORE_WRITE_ERASE || w->kind == STORE_WRITE_RETAIN ||
         w->kind == STORE_WRITE_RESEAL) &&
        w->erased > 0) {
      pthread_mutex_lock(&s->ckpt_mu);
      s->ckpt_truncate = true;
      pthread_cond_signal(&s->ckpt_cv);
      pthread_mutex_unlock(&s->ckpt_mu);
      return;
    }
  }
}

/* What a STORE_WRITE_OUTBOX read, released when its batch is not committed. */
static void outbox_output_free(struct store_write *w) {
  if (w->kind == STORE_WRITE_OUTBOX && w->outbox) store_jobs_free(w->outbox);
}

/* After a committed batch: a subscription write or replay that found no subscription is
 * finished alone as STORE_NOT_FOUND (it changed nothing). */
static void finish_not_found(struct store_write **head) {
  struct store_write *w = *head;
  while (w) {
    struct store_write *next = w->next;
    if ((w->kind == STORE_WRITE_SUB_PUT || w->kind == STORE_WRITE_REPLAY) &&
        w->status == STORE_NOT_FOUND)
      write_queue_finish_one(head, w, STORE_NOT_FOUND);
    w = next;
  }
}

/* Commits the whole batch in *head in one transaction; on any failure nothing of it is stored.
 * An event whose audio file cannot be read fails alone: the batch is rolled back, that write
 * finished, and the rest committed without it. Returns the status of what is left in *head. */
static enum store_status commit_batch(struct sqlite_store *s, struct store_write **head) {
  while (*head) {
    struct store_write *failed = NULL;
    int rc = step_done(s->w_begin);
    if (rc == SQLITE_OK) rc = record_key0(s);
    s->chain_loaded = false;
    s->ob_notify = false;
    s->ob_consumed = -1;
    lanes_begin(&s->lane);
    rollup_map_clear(&s->roll);
    for (struct store_write *w = *head; rc == SQLITE_OK && w; w = w->next) {
      rc = apply_write(s, w);
      if (rc < 0)
        failed = w; /* AUDIO_READ_FAILED, ID_REFUSED, RESEAL_FAILED, AUDIT_ENTRY_REFUSED */
      if (rc == SQLITE_OK) rc = audit_of(s, w);
    }
    if (rc == SQLITE_OK) rc = roll_flush(s);
    if (rc == SQLITE_OK) rc = chain_save(s);
    if (rc == SQLITE_OK) rc = step_done(s->w_commit);
    if (rc == SQLITE_OK) {
      request_truncate(s, *head);
      if (s->ob_notify && s->notify) s->notify(s->notify_cls);
      return STORE_OK;
    }
    if (!failed)
      log_msg(LOG_ERROR, "sqlite batch failed, nothing of it stored: %s", sqlite3_errmsg(s->wdb));
    if (!sqlite3_get_autocommit(s->wdb)) (void)step_done(s->w_rollback);
    lanes_rollback(&s->lane);
    rollup_map_clear(&s->roll);
    if (!failed) {
      for (struct store_write *w = *head; w; w = w->next) outbox_output_free(w);
      return status_of(rc) == STORE_OK ? STORE_HARD : status_of(rc);
    }
    outbox_output_free(failed);
    write_queue_finish_one(head, failed, rc == ID_REFUSED ? STORE_CLIENT : STORE_HARD);
  }
  return STORE_OK;
}

static void *writer_main(void *arg) {
  struct sqlite_store *s = arg;
  struct store_write *batch;
  while ((batch = write_queue_take(&s->queue)) != NULL) {
    gate_writer_enter(s);
    write_queue_commit_begin(&s->queue, batch);
    enum store_status st = commit_batch(s, &batch);
    write_queue_commit_end(&s->queue);
    gate_writer_leave(s);
    if (st == STORE_OK) finish_not_found(&batch);
    write_queue_finish(batch, st);
  }
  return NULL;
}

/* With a ring, a conversation's email and account are sealed here, on the submitting thread:
 * the writer, which every webhook waits for in turn, only binds them. */
static void preseal(const struct sqlite_store *s, struct store_write *w) {
  w->presealed.done = false;
  const struct conversation_input *c = w->conv;
  if (!s->ring || !c || (w->kind != STORE_WRITE_CONVERSATION && w->kind != STORE_WRITE_EVENT) ||
      !ids_storable(w))
    return;
  w->presealed.done = store_seal_id(s->ring, "conversations.email_id", c->conversation_id,
                                    c->email_id, &w->presealed.email) &&
                      store_seal_id(s->ring, "conversations.account_id", c->conversation_id,
                                    c->account_id, &w->presealed.account);
}

static void sqlite_submit(struct store *base, struct store_write *w) {
  struct sqlite_store *s = (struct sqlite_store *)base;
  preseal(s, w);
  write_queue_push(&s->queue, w);
}

/* ---------- readers ---------- */

static const char *const list_filters[4] = {"c.email_id = ?", "c.account_id = ?", "c.status = ?",
                                            "c.account_id IN (SELECT value FROM json_each(?))"};

/* With a ring, email and account filters also look for the value's blind index under each of
 * its keys (nkeys): "c.email_id IN (?, ?...)", the value first. The window compares the start
 * time, or the processed time without one; the keyset position takes the rows after it in the
 * list's order (first processed time newest first, then id), a range of conversations_recent
 * (or of the email/account index under an equality filter) whatever the page's depth. */
static void build_where(unsigned mask, size_t nkeys, char *buf, size_t cap) {
  size_t pos = 0;
  buf[0] = '\0';
  for (unsigned i = 0; i < 4; i++) {
    if (!(mask & (1u << i))) continue;
    pos += (size_t)snprintf(buf + pos, cap - pos, "%s", pos ? " AND " : " WHERE ");
    if (i >= 2 || !nkeys) {
      pos += (size_t)snprintf(buf + pos, cap - pos, "%s", list_filters[i]);
      continue;
    }
    pos += (size_t)snprintf(buf + pos, cap - pos, "%s IN (?", i ? "c.account_id" : "c.email_id");
    for (size_t k = 0; k < nkeys; k++) pos += (size_t)snprintf(buf + pos, cap - pos, ", ?");
    pos += (size_t)snprintf(buf + pos, cap - pos, ")");
  }
  if (mask & LIST_WINDOW)
    pos += (size_t)snprintf(buf + pos, cap - pos,
                            "%scoalesce(c.start_time_us, c.processed_at_us) >= ? AND "
                            "coalesce(c.start_time_us, c.processed_at_us) < ?",
                            pos ? " AND " : " WHERE ");
  if (mask & LIST_AFTER)
    pos += (size_t)snprintf(buf + pos, cap - pos,
                            "%sc.first_processed_at_us <= ? AND "
                            "(c.first_processed_at_us < ? OR c.conversation_id > ?)",
                            pos ? " AND " : " WHERE ");
}

/* Prepares list<mask> and count<mask> on first use on this reader's connection. */
static int prepare_list(struct reader *r, unsigned mask) {
  if (r->list[mask]) return SQLITE_OK;
  size_t nkeys = r->ring ? seal_ring_count(r->ring) : 0;
  char where[1024], sql[2000];
  build_where(mask, nkeys, where, sizeof where);
  /* The page is chosen on an index alone (skipped rows cost no table lookups), then only
   * its rows are read. */
  snprintf(sql, sizeof sql,
           "SELECT c.conversation_id, c.email_id, c.account_id, c.status, c.start_time_us, "
           "c.duration, c.message_count, c.processed_at_us, NULL, NULL, " AUDIO_COLUMNS SEAL_COLUMNS
           ", NULL, c.first_processed_at_us FROM conversations c "
           "WHERE c.conversation_id IN (SELECT c.conversation_id FROM conversations c%s "
           "ORDER BY c.first_processed_at_us DESC, c.conversation_id ASC LIMIT ? OFFSET ?) "
           "ORDER BY c.first_processed_at_us DESC, c.conversation_id ASC",
           where);
  int rc = prepare(r->db, sql, &r->list[mask]);
  if (rc == SQLITE_OK && !(mask & LIST_AFTER)) {
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM conversations c%s", where);
    rc = prepare(r->db, sql, &r->count[mask]);
  }
  if (rc != SQLITE_OK) {
    sqlite3_finalize(r->list[mask]);
    r->list[mask] = NULL;
  }
  return rc;
}

static void reader_free(struct reader *r) {
  sqlite3_finalize(r->get);
  sqlite3_finalize(r->ping);
  sqlite3_finalize(r->events);
  sqlite3_finalize(r->audio_meta);
  sqlite3_finalize(r->audio_chunks);
  sqlite3_finalize(r->key_get);
  sqlite3_finalize(r->key_list);
  sqlite3_finalize(r->audit_head);
  sqlite3_finalize(r->audit_at_max);
  for (int i = 0; i < AUDIT_VARIANTS; i++) sqlite3_finalize(r->audit[i]);
  for (int i = 0; i < OR_COUNT; i++) sqlite3_finalize(r->ob[i]);
  free(r->chunk);
  for (int i = 0; i < LIST_VARIANTS; i++) {
    sqlite3_finalize(r->list[i]);
    sqlite3_finalize(r->count[i]);
  }
  sqlite3_close(r->db);
  free(r);
}

static struct reader *reader_open(struct sqlite_store *s) {
  struct reader *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  r->ring = s->ring;
  if (open_conn(s->path, &r->db) != SQLITE_OK ||
      sqlite3_exec(r->db, "PRAGMA query_only = 1", NULL, NULL, NULL) != SQLITE_OK ||
      (r->ring && sqlite3_exec(r->db, KEEP_TEMP_IN_MEMORY, NULL, NULL, NULL) != SQLITE_OK) ||
      prepare(r->db, GET_SQL, &r->get) != SQLITE_OK ||
      prepare(r->db,
              "SELECT webhook_id, type, received_at_us, body, audio_at, body_sha256, "
              "sealed_with FROM events WHERE conversation_id = ?1 ORDER BY id",
              &r->events) != SQLITE_OK ||
      prepare(r->db, "SELECT bytes, chunk_bytes FROM audio_meta WHERE conversation_id = ?1",
              &r->audio_meta) != SQLITE_OK ||
      prepare(r->db,
              "SELECT seq, data, sealed_with FROM audio_chunks WHERE conversation_id = ?1 "
              "AND seq BETWEEN ?2 AND ?3 ORDER BY seq",
              &r->audio_chunks) != SQLITE_OK ||
      prepare(r->db, "SELECT " KEY_READ_COLUMNS " FROM api_keys WHERE id = ?1", &r->key_get) !=
          SQLITE_OK ||
      prepare(r->db, "SELECT " KEY_READ_COLUMNS " FROM api_keys ORDER BY created_us, id",
              &r->key_list) != SQLITE_OK ||
      prepare(r->db, "SELECT last_id, last_hash FROM audit_head WHERE id = 1", &r->audit_head) !=
          SQLITE_OK ||
      prepare(r->db, "SELECT id, at_max_us FROM audit_log WHERE id >= ?1 ORDER BY id LIMIT 1",
              &r->audit_at_max) != SQLITE_OK ||
      prepare(r->db, "SELECT COUNT(*) FROM (SELECT 1 FROM conversations LIMIT 1)", &r->ping) !=
          SQLITE_OK) {
    log_msg(LOG_ERROR, "sqlite reader open failed: %s", r->db ? sqlite3_errmsg(r->db) : "?");
    reader_free(r);
    return NULL;
  }
  return r;
}

static void *reader_make(void *store) { return reader_open(store); }

static void reader_release(void *r) { reader_free(r); }

/* The calling thread's reader connection, opened on first use. */
static struct reader *reader_get(struct sqlite_store *s) {
  return thread_slot_get(&s->readers, reader_make, s);
}

/* A sealed value that does not open is an error, never other data: logged, and the read fails. */
static enum store_status not_opened(const char *what, const char *id) {
  log_msg(LOG_ERROR,
          "a sealed %s of %s does not open: moved or changed, or sealed with a key "
          "ENCRYPTION_KEYS lacks",
          what, id);
  return STORE_HARD;
}

/* An email or account id of a row: its sealed value opened when it has one (col + 12), else the
 * column as it is. */
static bool read_id(const struct seal_ring *ring, sqlite3_stmt *st, int col, const char *what,
                    const char *conversation_id, char *out, size_t cap) {
  int sealed_col = col + 12;
  if (sqlite3_column_type(st, sealed_col) == SQLITE_NULL) {
    const unsigned char *v = sqlite3_column_text(st, col);
    copy_text(out, cap, v);
    return store_id_sealable((const char *)v); /* else an index without its sealed value */
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, what, conversation_id, NULL);
  return store_open_id(ring, aad, aad_len, sqlite3_column_blob(st, sealed_col),
                       (size_t)sqlite3_column_bytes(st, sealed_col), out, cap);
}

/* A body or chunk (data, len) into a new buffer with a NUL after it: opened when sealed_with
 * names a key. False when it does not open or memory runs out (*oom). */
static bool read_body(const struct seal_ring *ring, bool sealed, const char *what, const char *pk,
                      const char *pk2, const void *data, size_t len, char **out, size_t *out_len,
                      bool *oom) {
  *oom = false;
  if (!sealed && seal_is_sealed(data, len)) return false; /* sealed, yet not marked so */
  size_t plain = len;
  if (sealed) {
    plain = ring ? seal_plain_len(data, len) : 0;
    if (!ring || (plain == 0 && !seal_is_sealed(data, len))) return false;
  }
  *out = malloc(plain + 1);
  if (!*out) {
    *oom = true;
    return false;
  }
  size_t got = plain;
  if (!sealed) {
    if (len) memcpy(*out, data, len);
  } else {
    char aad[STORE_AAD_MAX];
    size_t aad_len = store_seal_aad(aad, what, pk, pk2);
    if (!seal_open(ring, aad, aad_len, data, len, (unsigned char *)*out, &got) || got != plain) {
      free(*out);
      *out = NULL;
      return false;
    }
  }
  (*out)[got] = '\0';
  *out_len = got;
  return true;
}

/* Copies a row of the get/list column layout into out. */
static enum store_status read_row(const struct seal_ring *ring, sqlite3_stmt *st,
                                  struct store_conversation *out) {
  memset(out, 0, sizeof *out);
  copy_text(out->conversation_id, sizeof out->conversation_id, sqlite3_column_text(st, 0));
  if (!read_id(ring, st, 1, "conversations.email_id", out->conversation_id, out->email_id,
               sizeof out->email_id) ||
      !read_id(ring, st, 2, "conversations.account_id", out->conversation_id, out->account_id,
               sizeof out->account_id))
    return not_opened("email or account", out->conversation_id);
  copy_text(out->status, sizeof out->status, sqlite3_column_text(st, 3));
  out->has_start = sqlite3_column_type(st, 4) != SQLITE_NULL;
  out->start_us = sqlite3_column_int64(st, 4);
  out->duration = sqlite3_column_int64(st, 5);
  out->message_count = sqlite3_column_int64(st, 6);
  out->processed_us = sqlite3_column_int64(st, 7);
  out->first_processed_us = sqlite3_column_int64(st, 17);
  copy_text(out->webhook_id, sizeof out->webhook_id, sqlite3_column_text(st, 8));
  copy_text(out->agent_id, sizeof out->agent_id, sqlite3_column_text(st, 10));
  const char *failure;
  if (!read_failure(ring, st, 11, 15, out->conversation_id, out->failure_reason,
                    sizeof out->failure_reason, &failure))
    return not_opened("failure reason", out->conversation_id);
  out->audio_bytes = sqlite3_column_type(st, 12) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 12);
  if (sqlite3_column_type(st, 9) == SQLITE_NULL) return STORE_OK;
  bool oom;
  /* The body's associated data names this conversation: a delivery of another one (delivery_id
   * and webhook_id edited by hand) does not open here. */
  if (read_body(ring, sqlite3_column_type(st, 16) != SQLITE_NULL, "deliveries.body",
                out->webhook_id, out->conversation_id, sqlite3_column_blob(st, 9),
                (size_t)sqlite3_column_bytes(st, 9), &out->body, &out->body_len, &oom))
    return STORE_OK;
  return oom ? STORE_RETRY : not_opened("body", out->conversation_id);
}

static enum store_status sqlite_get(struct store *base, const char *id, bool with_body,
                                    struct store_conversation *out) {
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  sqlite3_bind_text(r->get, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int(r->get, 2, with_body);
  int rc = sqlite3_step(r->get);
  enum store_status st = rc == SQLITE_ROW    ? read_row(r->ring, r->get, out)
                         : rc == SQLITE_DONE ? STORE_NOT_FOUND
                                             : status_of(rc);
  sqlite3_reset(r->get);
  sqlite3_clear_bindings(r->get);
  return st;
}

/* A list's filter values: with a ring, an email or account filter's blind index under each of
 * its keys too (build_where). */
struct filter_values {
  const char *vals[4]; /* email, account, status, the account bound as JSON (NULL: none) */
  size_t nkeys;
  char index[2][SEAL_KEYS_MAX][STORE_INDEX_TEXT_LEN + 1];
};

static bool filter_values(const struct seal_ring *ring, const struct store_filter *f,
                          const char *aj, struct filter_values *fv) {
  fv->vals[0] = f->email_id;
  fv->vals[1] = f->account_id;
  fv->vals[2] = f->status;
  fv->vals[3] = aj;
  fv->nkeys = ring ? seal_ring_count(ring) : 0;
  for (int i = 0; i < 2; i++)
    for (size_t k = 0; fv->vals[i] && k < fv->nkeys; k++)
      if (!store_index_text(ring, k, fv->vals[i], fv->index[i][k])) return false;
  return true;
}

/* Binds the filters of build_where(mask); returns the next parameter's number. */
static unsigned bind_filters(sqlite3_stmt *st, const struct filter_values *fv,
                             const struct store_filter *f, unsigned mask) {
  unsigned idx = 1;
  for (int i = 0; i < 4; i++) {
    if (!fv->vals[i]) continue;
    /* A value that would pass for a blind index matches nothing (NULL) */
    if (i < 2 && !store_id_sealable(fv->vals[i]))
      sqlite3_bind_null(st, (int)idx++);
    else
      sqlite3_bind_text(st, (int)idx++, fv->vals[i], -1, SQLITE_STATIC);
    for (size_t k = 0; i < 2 && k < fv->nkeys; k++)
      sqlite3_bind_text(st, (int)idx++, fv->index[i][k], STORE_INDEX_TEXT_LEN, SQLITE_STATIC);
  }
  if (mask & LIST_WINDOW) {
    sqlite3_bind_int64(st, (int)idx++, f->has_from ? f->from_us : INT64_MIN);
    sqlite3_bind_int64(st, (int)idx++, f->has_to ? f->to_us : INT64_MAX);
  }
  if (mask & LIST_AFTER) {
    sqlite3_bind_int64(st, (int)idx++, f->after_first_us);
    sqlite3_bind_int64(st, (int)idx++, f->after_first_us);
    sqlite3_bind_text(st, (int)idx++, f->after_id, -1, SQLITE_STATIC);
  }
  return idx;
}

static enum store_status count_rows(struct reader *r, unsigned mask, const struct store_filter *f,
                                    const struct filter_values *fv, int64_t *total) {
  sqlite3_stmt *st = r->count[mask];
  bind_filters(st, fv, f, mask);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *total = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc == SQLITE_ROW ? STORE_OK : status_of(rc);
}

static enum store_status fetch_page(struct reader *r, unsigned mask, const struct store_filter *f,
                                    const struct filter_values *fv, struct store_page *out) {
  sqlite3_stmt *st = r->list[mask];
  unsigned idx = bind_filters(st, fv, f, mask);
  sqlite3_bind_int64(st, (int)idx, f->limit);
  sqlite3_bind_int64(st, (int)idx + 1, f->after ? 0 : (f->page - 1) * f->limit);
  enum store_status result = STORE_OK;
  int rc = SQLITE_DONE;
  while (result == STORE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW &&
         out->count < (size_t)f->limit)
    result = read_row(r->ring, st, &out->items[out->count++]);
  if (result == STORE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) result = status_of(rc);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return result;
}

static enum store_status sqlite_list(struct store *base, const struct store_filter *f,
                                     struct store_page *out) {
  memset(out, 0, sizeof *out);
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  char *aj = NULL;
  if (f->naccounts && !(aj = store_accounts_json_ring(r->ring, f->accounts, f->naccounts)))
    return STORE_RETRY;
  struct filter_values fv;
  if (!filter_values(r->ring, f, aj, &fv)) {
    free(aj);
    return STORE_HARD;
  }
  unsigned mask = (f->email_id ? 1u : 0) | (f->account_id ? 2u : 0) | (f->status ? 4u : 0) |
                  (aj ? 8u : 0) | (f->has_from || f->has_to ? LIST_WINDOW : 0) |
                  (f->after ? LIST_AFTER : 0);
  if (prepare_list(r, mask) != SQLITE_OK) {
    free(aj);
    return STORE_RETRY;
  }
  /* One read transaction, so the count and the page agree. */
  if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
    free(aj);
    return STORE_RETRY;
  }
  /* A keyset page is not counted: its cost must not grow with the store. */
  enum store_status st = f->after ? STORE_OK : count_rows(r, mask, f, &fv, &out->total);
  if (st == STORE_OK && (f->after || (f->page - 1) * f->limit < out->total)) {
    out->items = calloc((size_t)f->limit, sizeof *out->items);
    st = out->items ? fetch_page(r, mask, f, &fv, out) : STORE_RETRY;
  }
  sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
  free(aj);
  if (st != STORE_OK) store_page_free(out);
  return st;
}

/* ---------- analytics (rollup.h) ---------- */

/* A scan's filters as SQL over columns named as in conversations and analytics_hour, and their
 * values in binding order. With a ring an account filter also looks for the value's blind index
 * under each key (as the list does). */
struct scan_filter {
  char sql[512];
  /* the same filter on analytics_dim's rows of the one dimension filtered (rollup_query_one_dim;
   * "" when there is none): dim = d, the value in place of the dimension's column, the same
   * values bound in the same order */
  char dim_sql[512];
  const struct store_analytics_query *q;
  size_t nkeys;
  char index[SEAL_KEYS_MAX][STORE_INDEX_TEXT_LEN + 1];
  char *aj; /* the key's accounts as JSON (owned), NULL: none */
};

/* The filter's SQL into out; cols[d]: the column of dimension d (store_dim order). */
static void scan_filter_sql(const struct scan_filter *f, const char *const cols[4], char *out,
                            size_t len, size_t pos) {
  const struct store_analytics_query *q = f->q;
  if (q->account_id) {
    pos += (size_t)snprintf(out + pos, len - pos, " AND %s IN (?", cols[STORE_DIM_ACCOUNT]);
    for (size_t k = 0; k < f->nkeys; k++) pos += (size_t)snprintf(out + pos, len - pos, ", ?");
    pos += (size_t)snprintf(out + pos, len - pos, ")");
  }
  if (q->agent_id)
    pos += (size_t)snprintf(out + pos, len - pos, " AND %s = ?", cols[STORE_DIM_AGENT]);
  if (q->platform)
    pos += (size_t)snprintf(out + pos, len - pos, " AND %s = ?", cols[STORE_DIM_PLATFORM]);
  if (q->status)
    pos += (size_t)snprintf(out + pos, len - pos, " AND %s = ?", cols[STORE_DIM_STATUS]);
  if (q->naccounts)
    pos += (size_t)snprintf(out + pos, len - pos, " AND %s IN (SELECT value FROM json_each(?))",
                            cols[STORE_DIM_ACCOUNT]);
}

static bool scan_filter_make(const struct seal_ring *ring, const struct store_analytics_query *q,
                             struct scan_filter *f) {
  memset(f, 0, sizeof *f);
  f->q = q;
  if (q->account_id) {
    f->nkeys = ring ? seal_ring_count(ring) : 0;
    for (size_t k = 0; k < f->nkeys; k++)
      if (!store_index_text(ring, k, q->account_id, f->index[k])) return false;
  }
  if (q->naccounts && !(f->aj = store_accounts_json_ring(ring, q->accounts, q->naccounts)))
    return false;
  static const char *const cols[4] = {"account_id", "agent_id", "platform", "status"};
  _Static_assert(STORE_DIM_ACCOUNT == 0 && STORE_DIM_AGENT == 1 && STORE_DIM_PLATFORM == 2 &&
                     STORE_DIM_STATUS == 3,
                 "scan_filter_sql's columns");
  scan_filter_sql(f, cols, f->sql, sizeof f->sql, 0);
  int dim = rollup_query_one_dim(q);
  if (dim >= 0) {
    static const char *const value[4] = {"value", "value", "value", "value"};
    int pos = snprintf(f->dim_sql, sizeof f->dim_sql, " AND dim = %d", dim);
    scan_filter_sql(f, value, f->dim_sql, sizeof f->dim_sql, (size_t)pos);
  }
  return true;
}

static void scan_filter_bind(sqlite3_stmt *st, const struct scan_filter *f, int idx) {
  const struct store_analytics_query *q = f->q;
  if (q->account_id) {
    /* a value that would pass for a blind index matches nothing */
    if (!store_id_sealable(q->account_id))
      sqlite3_bind_null(st, idx++);
    else
      sqlite3_bind_text(st, idx++, q->account_id, -1, SQLITE_STATIC);
    for (size_t k = 0; k < f->nkeys; k++)
      sqlite3_bind_text(st, idx++, f->index[k], STORE_INDEX_TEXT_LEN, SQLITE_STATIC);
  }
  if (q->agent_id) sqlite3_bind_text(st, idx++, q->agent_id, -1, SQLITE_STATIC);
  if (q->platform) sqlite3_bind_text(st, idx++, q->platform, -1, SQLITE_STATIC);
  if (q->status) sqlite3_bind_text(st, idx++, q->status, -1, SQLITE_STATIC);
  if (f->aj) sqlite3_bind_text(st, idx++, f->aj, -1, SQLITE_STATIC);
}

/* One scan's statements on a reader's connection, one per source, prepared on first use. */
struct scan_ctx {
  struct reader *r;
  struct scan_filter f;
  sqlite3_stmt *st[ROLLUP_SRC_COUNT];
};

static const char *const scan_sql[ROLLUP_SRC_COUNT] = {
    "SELECT coalesce(start_time_us, processed_at_us), account_id, agent_id, platform, status, "
    "outcome, duration, message_count FROM conversations "
    "WHERE coalesce(start_time_us, processed_at_us) >= ?1 "
    "AND coalesce(start_time_us, processed_at_us) < ?2",
    "SELECT hour_us, account_id, agent_id, platform, status, outcome, conversations, messages, "
    "duration_sum, hist FROM analytics_hour WHERE hour_us >= ?1 AND hour_us < ?2",
    "SELECT hour_us, conversations, messages, duration_sum, NULL FROM analytics_total "
    "WHERE hour_us >= ?1 AND hour_us < ?2",
    "SELECT day_us, dim, value, conversations, messages, duration_sum, NULL FROM analytics_dim "
    "WHERE dim = 5 AND day_us >= ?1 AND day_us < ?2",
    "SELECT day_us, dim, value, conversations, messages, duration_sum, NULL FROM analytics_dim "
    "WHERE dim = 6 AND day_us >= ?1 AND day_us < ?2",
    /* the status rows' hists: the totals' percentiles (rollup.h) */
    "SELECT day_us, dim, value, conversations, messages, duration_sum, "
    "CASE dim WHEN 3 THEN hist END FROM analytics_dim "
    "WHERE dim IN (0, 1, 2, 3, 4) AND day_us >= ?1 AND day_us < ?2",
    "SELECT day_us, dim - 8, value, conversations, messages, duration_sum, "
    "CASE dim WHEN 11 THEN hist END FROM analytics_dim "
    "WHERE dim IN (8, 9, 10, 11, 12) AND day_us >= ?1 AND day_us < ?2",
    /* filtered (scan_read adds the filter) */
    "SELECT hour_us, account_id, agent_id, platform, status, outcome, conversations, messages, "
    "duration_sum, NULL FROM analytics_hour WHERE hour_us >= ?1 AND hour_us < ?2",
    /* without stats the planner takes the primary key (dim, day_us, value), covering but
     * reading every value's rows of the range */
    "SELECT day_us, dim, value, conversations, messages, duration_sum, NULL FROM analytics_dim "
    "INDEXED BY analytics_dim_value WHERE day_us >= ?1 AND day_us < ?2",
    "SELECT block_us, account_id, agent_id, platform, status, outcome, conversations, messages, "
    "duration_sum, hist FROM analytics_block WHERE block_us >= ?1 AND block_us < ?2"};
_Static_assert(STORE_DIM_STATUS == 3 && ROLLUP_DIM_BLOCK == 8, "scan_sql's status dims");

static void scan_row(struct rollup_sink *k, sqlite3_stmt *st) {
  struct store_cell c;
  const char *dims[STORE_DIM_COUNT];
  int at = 0; /* the first of conversations, messages, duration_sum, hist */
  switch (k->src) {
    case ROLLUP_SRC_RAW:
      for (int d = 0; d < STORE_DIM_COUNT; d++)
        dims[d] = (const char *)sqlite3_column_text(st, 1 + d);
      rollup_cell_raw(&c, sqlite3_column_int64(st, 0), dims, sqlite3_column_int64(st, 6),
                      sqlite3_column_int64(st, 7));
      rollup_sink_cell(k, &c);
      return;
    case ROLLUP_SRC_FULL:
    case ROLLUP_SRC_FULL_TOTAL:
    case ROLLUP_SRC_FULL_BLOCK:
      rollup_cell_init(&c, STORE_CELL_FULL, sqlite3_column_int64(st, 0));
      for (int d = 0; d < STORE_DIM_COUNT; d++)
        c.value[d] = rollup_value((const char *)sqlite3_column_text(st, 1 + d));
      at = 6;
      break;
    case ROLLUP_SRC_TOTAL:
      rollup_cell_init(&c, STORE_CELL_TOTAL, sqlite3_column_int64(st, 0));
      at = 1;
      break;
    case ROLLUP_SRC_DAY_TOTAL:
    case ROLLUP_SRC_TOTAL4:
    case ROLLUP_SRC_DIM_VALUE:
      rollup_cell_init(&c, STORE_CELL_TOTAL, sqlite3_column_int64(st, 0));
      at = 3;
      break;
    case ROLLUP_SRC_DIM:
    case ROLLUP_SRC_BLOCK: {
      rollup_cell_init(&c, STORE_CELL_DIM, sqlite3_column_int64(st, 0));
      int d = sqlite3_column_int(st, 1);
      if (d < 0 || d >= STORE_DIM_COUNT) return;
      c.dim = (enum store_dim)d;
      c.value[d] = rollup_value((const char *)sqlite3_column_text(st, 2));
      at = 3;
      break;
    }
    case ROLLUP_SRC_COUNT:
      return;
  }
  c.conversations = sqlite3_column_int64(st, at);
  c.messages = sqlite3_column_int64(st, at + 1);
  c.duration_sum = sqlite3_column_int64(st, at + 2);
  rollup_cell_hist(&c, sqlite3_column_blob(st, at + 3), (size_t)sqlite3_column_bytes(st, at + 3));
  rollup_sink_cell(k, &c);
}

static enum store_status scan_read(void *cls, struct rollup_sink *k, const int64_t (*ranges)[2],
                                   size_t n) {
  struct scan_ctx *x = cls;
  int i = (int)k->src;
  bool filtered = rollup_source_filtered(k->src);
  if (!x->st[i]) {
    char sql[1536];
    snprintf(sql, sizeof sql, "%s%s", scan_sql[i],
             i == ROLLUP_SRC_DIM_VALUE ? x->f.dim_sql
             : filtered                ? x->f.sql
                                       : "");
    if (sqlite3_prepare_v2(x->r->db, sql, -1, &x->st[i], NULL) != SQLITE_OK) {
      log_msg(LOG_ERROR, "sqlite prepare failed: %s", sqlite3_errmsg(x->r->db));
      return STORE_RETRY;
    }
  }
  sqlite3_stmt *st = x->st[i];
  int rc = SQLITE_DONE;
  for (size_t r = 0; rc == SQLITE_DONE && r < n; r++) {
    sqlite3_bind_int64(st, 1, ranges[r][0]);
    sqlite3_bind_int64(st, 2, ranges[r][1]);
    if (filtered) scan_filter_bind(st, &x->f, 3);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) scan_row(k, st);
    sqlite3_reset(st);
  }
  sqlite3_clear_bindings(st);
  return rc == SQLITE_DONE ? STORE_OK : status_of(rc);
}

static enum store_status sqlite_analytics_scan(struct store *base,
                                               const struct store_analytics_query *q,
                                               store_cell_cb cell, void *cls) {
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  struct scan_ctx x = {.r = r};
  if (!scan_filter_make(r->ring, q, &x.f)) {
    free(x.f.aj);
    return STORE_RETRY;
  }
  /* One read transaction: the rollups and the conversations read at edges agree. */
  enum store_status st = STORE_RETRY;
  if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK) {
    st = rollup_scan(q, scan_read, &x, cell, cls);
    sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
  }
  for (int i = 0; i < ROLLUP_SRC_COUNT; i++) sqlite3_finalize(x.st[i]);
  free(x.f.aj);
  return st;
}

static enum store_status sqlite_analytics_account_name(struct store *base, const char *stored,
                                                       char *out, size_t outlen) {
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(r->db,
                         "SELECT conversation_id, account_id, account_sealed FROM conversations "
                         "WHERE account_id = ?1 LIMIT 1",
                         -1, &st, NULL) != SQLITE_OK)
    return STORE_RETRY;
  sqlite3_bind_text(st, 1, stored, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  enum store_status result = rc == SQLITE_DONE ? STORE_NOT_FOUND : status_of(rc);
  if (rc == SQLITE_ROW) {
    char id[MODEL_CONVERSATION_ID_MAX + 1];
    copy_text(id, sizeof id, sqlite3_column_text(st, 0));
    result = STORE_OK;
    if (sqlite3_column_type(st, 2) == SQLITE_NULL) {
      copy_text(out, outlen, sqlite3_column_text(st, 1));
    } else {
      char aad[STORE_AAD_MAX];
      size_t aad_len = store_seal_aad(aad, "conversations.account_id", id, NULL);
      if (!store_open_id(r->ring, aad, aad_len, sqlite3_column_blob(st, 2),
                         (size_t)sqlite3_column_bytes(st, 2), out, outlen))
        result = not_opened("account", id);
    }
  }
  sqlite3_finalize(st);
  return result;
}

static enum store_status sqlite_analytics_account_names(struct store *base,
                                                        const char *const *stored, size_t n,
                                                        char **names) {
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  if (n == 0) return STORE_OK;
  char *json = store_accounts_json(stored, n);
  if (!json) return STORE_RETRY;
  /* one probe of conversations_account per value */
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(r->db,
                         "SELECT j.key, c.conversation_id, c.account_id, c.account_sealed "
                         "FROM json_each(?1) AS j JOIN conversations c ON c.conversation_id = "
                         "(SELECT conversation_id FROM conversations WHERE account_id = j.value "
                         "LIMIT 1)",
                         -1, &st, NULL) != SQLITE_OK) {
    free(json);
    return STORE_RETRY;
  }
  sqlite3_bind_text(st, 1, json, -1, SQLITE_STATIC);
  enum store_status result = STORE_OK;
  int rc;
  while (result == STORE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    int64_t i = sqlite3_column_int64(st, 0);
    if (i < 0 || (size_t)i >= n || names[i]) continue;
    char id[MODEL_CONVERSATION_ID_MAX + 1], name[MODEL_ACCOUNT_ID_MAX + 64];
    copy_text(id, sizeof id, sqlite3_column_text(st, 1));
    if (sqlite3_column_type(st, 3) == SQLITE_NULL) {
      copy_text(name, sizeof name, sqlite3_column_text(st, 2));
    } else {
      char aad[STORE_AAD_MAX];
      size_t aad_len = store_seal_aad(aad, "conversations.account_id", id, NULL);
      if (!store_open_id(r->ring, aad, aad_len, sqlite3_column_blob(st, 3),
                         (size_t)sqlite3_column_bytes(st, 3), name, sizeof name)) {
        result = not_opened("account", id);
        break;
      }
    }
    if (!(names[i] = strdup(name))) result = STORE_RETRY;
  }
  if (result == STORE_OK && rc != SQLITE_DONE) result = status_of(rc);
  sqlite3_finalize(st);
  free(json);
  return result;
}

static enum store_status sqlite_ping_read(struct store *base) {
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  int rc = sqlite3_step(r->ping);
  sqlite3_reset(r->ping);
  return rc == SQLITE_ROW ? STORE_OK : status_of(rc);
}

/* The events of conversation_id (st bound to it): an event row moved to it from another
 * conversation by hand does not open (its associated data names the other one). */
static enum store_status read_events(const struct seal_ring *ring, sqlite3_stmt *st,
                                     const char *conversation_id, struct store_events *out) {
  size_t cap = 0;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (out->count == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      struct store_event *items = realloc(out->items, ncap * sizeof *items);
      if (!items) return STORE_RETRY;
      out->items = items;
      cap = ncap;
    }
    /* Counted at once, so store_events_free frees its body whatever fails below. */
    struct store_event *e = &out->items[out->count++];
    memset(e, 0, sizeof *e);
    copy_text(e->webhook_id, sizeof e->webhook_id, sqlite3_column_text(st, 0));
    copy_text(e->type, sizeof e->type, sqlite3_column_text(st, 1));
    e->received_us = sqlite3_column_int64(st, 2);
    bool oom;
    if (!read_body(ring, sqlite3_column_type(st, 6) != SQLITE_NULL, "events.body", e->webhook_id,
                   conversation_id, sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3),
                   &e->body, &e->body_len, &oom))
      return oom ? STORE_RETRY : not_opened("event", e->webhook_id);
    e->audio_at = sqlite3_column_type(st, 4) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 4);
    if (sqlite3_column_bytes(st, 5) != CRYPTO_SHA256_LEN) return STORE_HARD;
    memcpy(e->sha256, sqlite3_column_blob(st, 5), CRYPTO_SHA256_LEN);
  }
  return rc == SQLITE_DONE ? STORE_OK : status_of(rc);
}

static enum store_status sqlite_events(struct store *base, const char *conversation_id,
                                       struct store_events *out) {
  memset(out, 0, sizeof *out);
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  sqlite3_bind_text(r->events, 1, conversation_id, -1, SQLITE_STATIC);
  enum store_status st = read_events(r->ring, r->events, conversation_id, out);
  sqlite3_reset(r->events);
  sqlite3_clear_bindings(r->events);
  if (st != STORE_OK) store_events_free(out);
  return st;
}

/* A sealed chunk opened into the reader's chunk buffer (*data, *len then point there). */
static enum store_status open_chunk(struct reader *r, const char *id, int64_t seq,
                                    const void **data, size_t *len) {
  size_t plain = r->ring ? seal_plain_len(*data, *len) : 0, got = 0;
  if (plain > STORE_AUDIO_CHUNK_BYTES) return not_opened("audio chunk", id);
  if (!r->chunk && !(r->chunk = malloc(STORE_AUDIO_CHUNK_BYTES))) return STORE_RETRY;
  char seq_text[24], aad[STORE_AAD_MAX];
  snprintf(seq_text, sizeof seq_text, "%lld", (long long)seq);
  size_t aad_len = store_seal_aad(aad, "audio_chunks.data", id, seq_text);
  if (!r->ring || !seal_open(r->ring, aad, aad_len, *data, *len, r->chunk, &got) || got != plain)
    return not_opened("audio chunk", id);
  *data = r->chunk;
  *len = got;
  return STORE_OK;
}

/* The chunks that hold [offset, end), copied into buf. */
static enum store_status read_chunks(struct reader *r, const char *id, int64_t chunk_bytes,
                                     int64_t offset, int64_t end, void *buf, size_t *got) {
  sqlite3_stmt *st = r->audio_chunks;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, offset / chunk_bytes);
  sqlite3_bind_int64(st, 3, (end - 1) / chunk_bytes);
  enum store_status result = STORE_OK;
  int rc;
  while (result == STORE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    int64_t seq = sqlite3_column_int64(st, 0);
    const void *data = sqlite3_column_blob(st, 1);
    size_t len = (size_t)sqlite3_column_bytes(st, 1);
    if (sqlite3_column_type(st, 2) != SQLITE_NULL) { /* sealed: opened whole, then sliced */
      result = open_chunk(r, id, seq, &data, &len);
      if (result != STORE_OK) break;
    }
    if (!store_audio_piece(offset, end, seq * chunk_bytes, data, len, buf, got))
      result = STORE_HARD;
  }
  if (result == STORE_OK && rc != SQLITE_DONE) result = status_of(rc);
  if (result == STORE_OK && (int64_t)*got != end - offset) result = STORE_HARD; /* chunk missing */
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return result;
}

static enum store_status sqlite_audio_read(struct store *base, const char *conversation_id,
                                           int64_t offset, void *buf, size_t cap, size_t *got,
                                           int64_t *total) {
  *got = 0;
  *total = 0;
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  /* One read transaction: the length and the bytes are those of one version of the audio. */
  if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return STORE_RETRY;
  sqlite3_stmt *st = r->audio_meta;
  sqlite3_bind_text(st, 1, conversation_id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  int64_t chunk_bytes = 0;
  enum store_status result = rc == SQLITE_ROW    ? STORE_OK
                             : rc == SQLITE_DONE ? STORE_NOT_FOUND
                                                 : status_of(rc);
  if (rc == SQLITE_ROW) {
    *total = sqlite3_column_int64(st, 0);
    chunk_bytes = sqlite3_column_int64(st, 1);
    if (chunk_bytes <= 0) result = STORE_HARD;
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (offset < 0) offset = 0;
  int64_t end = *total;
  if (cap < (size_t)INT64_MAX && offset < *total && (int64_t)cap < *total - offset)
    end = offset + (int64_t)cap;
  if (result == STORE_OK && offset < end)
    result = read_chunks(r, conversation_id, chunk_bytes, offset, end, buf, got);
  sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
  if (result != STORE_OK) *got = 0;
  return result;
}

/* ---------- API keys ---------- */

static int64_t time_or_zero(sqlite3_stmt *st, int col) {
  return sqlite3_column_type(st, col) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, col);
}

static enum store_status read_key(const struct seal_ring *ring, sqlite3_stmt *st,
                                  struct apikey_record *k) {
  memset(k, 0, sizeof *k);
  copy_text(k->id, sizeof k->id, sqlite3_column_text(st, 0));
  copy_text(k->name, sizeof k->name, sqlite3_column_text(st, 1));
  const unsigned char *scopes = sqlite3_column_text(st, 2);
  char accounts[APIKEY_ACCOUNTS_TEXT_MAX];
  if (!read_accounts(ring, st, 3, 9, k->id, accounts, sizeof accounts)) {
    log_msg(LOG_ERROR,
            "the accounts of API key %s do not open: moved or changed, or sealed with a key "
            "ENCRYPTION_KEYS lacks",
            k->id);
    return STORE_HARD;
  }
  if (!scopes || !apikey_scopes_parse((const char *)scopes, &k->scopes) ||
      !apikey_accounts_split(k, accounts) || sqlite3_column_bytes(st, 4) != 32)
    return STORE_HARD;
  memcpy(k->secret_sha256, sqlite3_column_blob(st, 4), 32);
  k->created_us = sqlite3_column_int64(st, 5);
  k->expires_us = time_or_zero(st, 6);
  k->revoked_us = time_or_zero(st, 7);
  k->last_used_us = time_or_zero(st, 8);
  return STORE_OK;
}

static enum store_status sqlite_key_get(struct store *base, const char *id,
                                        struct apikey_record *out) {
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  sqlite3_bind_text(r->key_get, 1, id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(r->key_get);
  enum store_status st = rc == SQLITE_ROW    ? read_key(r->ring, r->key_get, out)
                         : rc == SQLITE_DONE ? STORE_NOT_FOUND
                                             : status_of(rc);
  sqlite3_reset(r->key_get);
  sqlite3_clear_bindings(r->key_get);
  return st;
}

static enum store_status sqlite_key_list(struct store *base, struct apikey_record **out,
                                         size_t *count) {
  *out = NULL;
  *count = 0;
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  size_t cap = 0;
  enum store_status st = STORE_OK;
  int rc;
  while (st == STORE_OK && (rc = sqlite3_step(r->key_list)) == SQLITE_ROW) {
    if (*count == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      struct apikey_record *n = realloc(*out, ncap * sizeof *n);
      if (!n) {
        st = STORE_RETRY;
        break;
      }
      *out = n;
      cap = ncap;
    }
    st = read_key(r->ring, r->key_list, &(*out)[(*count)++]);
  }
  if (st == STORE_OK && rc != SQLITE_DONE) st = status_of(rc);
  sqlite3_reset(r->key_list);
  if (st != STORE_OK) {
    free(*out);
    *out = NULL;
    *count = 0;
  }
  return st;
}

/* ---------- the outbox (issue 10): the writer ----------
 * Events are written by the change's own write (apply_write), deliveries and cursors by
 * STORE_WRITE_OUTBOX, subscriptions by SUB_PUT/SUB_DELETE/REPLAY: all in the batch's one
 * transaction. One process per SQLite file delivers (outbox_owned): leases exist for its
 * dispatcher's own threads and are cleared when it becomes the owner. */

static const char *const ob_sql[OB_COUNT] = {
    /* Whether anything stored reads the outbox: a subscription (in any state) or a broker's
     * cursor (see ob_consumed). */
    [OB_CONSUMED] =
        "SELECT EXISTS (SELECT 1 FROM subscriptions) OR "
        "EXISTS (SELECT 1 FROM outbox_cursors)",
    [OB_INSERT] =
        "INSERT INTO outbox_events (event_id, type, conversation_id, account_id, "
        "account_sealed, created_us, data, sealed_with) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    /* Before an event's write: whether its conversation has a row, its stored audio's size. */
    [OB_EXISTS] =
        "SELECT EXISTS (SELECT 1 FROM conversations WHERE conversation_id = ?1), "
        "(SELECT bytes FROM audio_meta WHERE conversation_id = ?1)",
    [OB_CONV_ROW] = GET_SQL,
    /* The conversation's account as stored; when it has no row (audio alone), its newest
     * event's (the same value: both are sealed with the conversation's associated data). */
    [OB_ACCOUNT_OF] =
        "SELECT account_id, account_sealed FROM conversations "
        "WHERE conversation_id = ?1 UNION ALL "
        "SELECT * FROM (SELECT account_id, account_sealed FROM outbox_events "
        "WHERE conversation_id = ?1 ORDER BY seq DESC LIMIT 1)",
    /* An erased conversation's attempts go too: their response_head may echo its data
     * (delivery_attempts_seq, migration 0009). */
    [OB_ERASE_ATTEMPTS] =
        "DELETE FROM delivery_attempts WHERE seq IN "
        "(SELECT seq FROM outbox_events WHERE conversation_id = ?1)",
    [OB_ERASE_EVENTS] = "DELETE FROM outbox_events WHERE conversation_id = ?1",
    [OB_ERASE_DELIVERIES] =
        "DELETE FROM sub_deliveries WHERE sub_id IN (SELECT id FROM "
        "subscriptions) AND conversation_id = ?1",
    [OB_SUB_INSERT] =
        "INSERT INTO subscriptions (id, url, secret, event_types, account_id, account_sealed, "
        "enabled, paused, max_per_second, disabled_reason, created_us, updated_us, "
        "last_success_us, cursor_seq, start_seq, sealed_with, url_sealed) "
        "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, n.seq, n.seq, ?14, ?15 "
        "FROM (SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox_events'), "
        "0) AS seq) n WHERE true ON CONFLICT (id) DO NOTHING",
    [OB_SUB_STATE] =
        "SELECT enabled, paused, cursor_seq, event_types, account_id, "
        "account_sealed, secret, sealed_with, start_seq, hold_until_us, url, url_sealed FROM "
        "subscriptions WHERE id = ?1",
    [OB_SUB_UPDATE] =
        "UPDATE subscriptions SET url = CASE WHEN ?14 & 1 THEN ?2 ELSE url END, "
        "url_sealed = CASE WHEN ?14 & 1 THEN ?15 ELSE url_sealed END, "
        "secret = COALESCE(?11, secret), "
        "sealed_with = CASE WHEN ?11 IS NULL THEN sealed_with ELSE ?12 END, "
        "event_types = CASE WHEN ?14 & 2 THEN ?3 ELSE event_types END, "
        "account_id = CASE WHEN ?14 & 4 THEN ?4 ELSE account_id END, "
        "account_sealed = CASE WHEN ?14 & 4 THEN ?5 ELSE account_sealed END, "
        "max_per_second = CASE WHEN ?14 & 8 THEN ?7 ELSE max_per_second END, updated_us = ?10, "
        "enabled = CASE WHEN ?13 THEN ?6 ELSE enabled END, "
        "paused = CASE WHEN ?13 AND ?6 THEN 0 ELSE paused END, "
        "disabled_reason = CASE WHEN ?13 AND ?6 THEN '' ELSE disabled_reason END, "
        "hold_until_us = CASE WHEN ?13 AND ?6 THEN 0 ELSE hold_until_us END "
        "WHERE id = ?1",
    /* after an update changing what it wants (types, account): the events waiting for it that
     * it no longer wants go, but not one in flight (store_pg.c sub_refilter_sql) */
    [OB_SUB_REFILTER] =
        "DELETE FROM sub_deliveries WHERE sub_id = ?1 AND state = 0 AND lease_owner IS NULL "
        "AND NOT EXISTS "
        "(SELECT 1 FROM outbox_events e WHERE e.seq = sub_deliveries.seq "
        "AND ((?2 >> e.type) & 1) = 1 "
        "AND (?3 IS NULL OR e.account_id IN (SELECT value FROM json_each(?3))))",
    [OB_SUB_WAKE] =
        "UPDATE sub_deliveries SET next_at_us = ?2 WHERE sub_id = ?1 AND state = 0 "
        "AND next_at_us > ?2 AND lease_owner IS NULL",
    [OB_SUB_DELETE] = "DELETE FROM subscriptions WHERE id = ?1",
    [OB_SUB_DEL_DELIVERIES] = "DELETE FROM sub_deliveries WHERE sub_id = ?1",
    [OB_SUB_DEL_ATTEMPTS] = "DELETE FROM delivery_attempts WHERE sub_id = ?1",
    [OB_SUB_ALL] =
        "SELECT id, cursor_seq, event_types, account_id, account_sealed, enabled, paused, url, "
        "url_sealed FROM subscriptions ORDER BY id",
    /* A delivery in flight when it is replayed keeps its owner with lease_until_us 0: due again
     * at once, and the answer to the earlier send (FINISH) leaves it pending from attempt 1
     * instead of closing it: the replay is not lost to that answer. */
    [OB_REPLAY] =
        "INSERT INTO sub_deliveries (sub_id, seq, conversation_id, state, attempts, "
        "first_attempt_us, next_at_us, lease_owner, lease_until_us) "
        "SELECT ?1, e.seq, e.conversation_id, 0, 0, 0, ?2, NULL, 0 FROM outbox_events e "
        "WHERE e.seq > ?7 AND e.seq <= ?3 AND e.created_us >= ?4 AND ((?5 >> e.type) & 1) = 1 "
        "AND (?6 IS NULL OR e.account_id IN (SELECT value FROM json_each(?6))) "
        "ON CONFLICT (sub_id, seq) DO UPDATE SET state = 0, attempts = 0, first_attempt_us = 0, "
        "next_at_us = excluded.next_at_us, lease_until_us = 0",
    [OB_FAN_UPTO] =
        "SELECT MAX(seq) FROM (SELECT seq FROM outbox_events WHERE seq > ?1 "
        "ORDER BY seq LIMIT ?2)",
    [OB_FAN_INSERT] =
        "INSERT OR IGNORE INTO sub_deliveries (sub_id, seq, conversation_id, state, attempts, "
        "first_attempt_us, next_at_us, lease_owner, lease_until_us) "
        "SELECT ?1, e.seq, e.conversation_id, 0, 0, 0, ?2, NULL, 0 FROM outbox_events e "
        "WHERE e.seq > ?3 AND e.seq <= ?4 AND ((?5 >> e.type) & 1) = 1 "
        "AND (?6 IS NULL OR e.account_id IN (SELECT value FROM json_each(?6)))",
    [OB_FAN_CURSOR] = "UPDATE subscriptions SET cursor_seq = ?2 WHERE id = ?1 AND cursor_seq < ?2",
    /* Due: pending, its time come (a leased row is due when its lease runs out), and no earlier
     * delivery of its conversation to this subscription still pending (looked up in the
     * conversation's index: without statistics SQLite would walk every earlier row). */
    [OB_CLAIM_SELECT] =
        "SELECT d.seq, d.attempts, d.first_attempt_us FROM sub_deliveries d "
        "WHERE d.sub_id = ?1 AND d.state = 0 AND d.next_at_us <= ?2 AND NOT EXISTS "
        "(SELECT 1 FROM sub_deliveries p INDEXED BY sub_deliveries_conversation WHERE p.sub_id = "
        "?1 AND "
        "p.conversation_id = d.conversation_id AND p.seq < d.seq AND p.state = 0) "
        "ORDER BY d.next_at_us, d.seq LIMIT ?3",
    [OB_CLAIM_LEASE] =
        "UPDATE sub_deliveries SET lease_owner = ?3, lease_until_us = ?4, "
        "next_at_us = ?4 WHERE sub_id = ?1 AND seq = ?2",
    [OB_EVENT_GET] =
        "SELECT seq, event_id, type, conversation_id, created_us, data, sealed_with "
        "FROM outbox_events WHERE seq = ?1",
    [OB_FIN_GET] =
        "SELECT attempts, first_attempt_us, lease_owner, lease_until_us, next_at_us "
        "FROM sub_deliveries WHERE sub_id = ?1 AND seq = ?2 AND state = 0",
    [OB_FIN_DELETE] = "DELETE FROM sub_deliveries WHERE sub_id = ?1 AND seq = ?2",
    [OB_FIN_UPDATE] =
        "UPDATE sub_deliveries SET state = ?3, attempts = ?4, "
        "first_attempt_us = ?5, next_at_us = ?6, lease_owner = NULL, "
        "lease_until_us = 0 WHERE sub_id = ?1 AND seq = ?2",
    [OB_SUB_SUCCESS] =
        "UPDATE subscriptions SET last_success_us = MAX(last_success_us, ?2) "
        "WHERE id = ?1",
    [OB_SUB_LAST_SUCCESS] = "SELECT last_success_us FROM subscriptions WHERE id = ?1",
    [OB_SUB_PAUSE] = "UPDATE subscriptions SET paused = 1 WHERE id = ?1",
    [OB_SUB_DISABLE] =
        "UPDATE subscriptions SET enabled = 0, disabled_reason = 'gone' "
        "WHERE id = ?1",
    /* a receiver's Retry-After (migration 0013): the longer hold stays */
    [OB_SUB_HOLD] = "UPDATE subscriptions SET hold_until_us = MAX(hold_until_us, ?2) WHERE id = ?1",
    [OB_ATTEMPT_INSERT] =
        "INSERT INTO delivery_attempts (sub_id, seq, event_id, type, attempt, "
        "status_code, latency_ms, at_us, outcome, response_head) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [OB_Q_CREATE] =
        "INSERT INTO outbox_cursors (name, seq, lease_owner, lease_until_us, touched_us) "
        "VALUES (?1, 0, NULL, 0, ?2) ON CONFLICT (name) DO NOTHING",
    /* touched_us (migration 0013): read by an instance, so live (OB_PRUNE_BOUND) */
    [OB_Q_LEASE] =
        "UPDATE outbox_cursors SET lease_owner = ?2, lease_until_us = ?3, "
        "touched_us = MAX(touched_us, ?4) "
        "WHERE name = ?1 AND (lease_owner IS NULL OR lease_owner = ?2 OR "
        "lease_until_us <= ?4) RETURNING seq",
    [OB_Q_READ] =
        "SELECT seq, event_id, type, conversation_id, created_us, data, sealed_with "
        "FROM outbox_events WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    /* moved only by its holder; touched by any instance that has this broker configured, and
     * created (at 0, as OB_Q_CREATE) when missing: a broker never reached yet holds its events
     * back from prune too */
    [OB_Q_ADVANCE] =
        "INSERT INTO outbox_cursors (name, seq, lease_owner, lease_until_us, touched_us) "
        "VALUES (?1, 0, NULL, 0, ?4) ON CONFLICT (name) DO UPDATE SET seq = CASE WHEN "
        "lease_owner = ?2 AND seq < ?3 THEN ?3 ELSE seq END, touched_us = MAX(touched_us, ?4)",
    /* The last seq prune may take: before the first event created at or after before_us, and
     * no further than every subscription's and every live broker's cursor (one touched since
     * ?2, stale_before_us: store.h STORE_OUTBOX_PRUNE). */
    [OB_PRUNE_BOUND] =
        "SELECT MIN(COALESCE((SELECT seq - 1 FROM outbox_events WHERE created_us >= ?1 "
        "ORDER BY seq LIMIT 1), 9223372036854775807), "
        "COALESCE((SELECT MIN(cursor_seq) FROM subscriptions), 9223372036854775807), "
        "COALESCE((SELECT MIN(seq) FROM outbox_cursors WHERE touched_us >= ?2), "
        "9223372036854775807))",
    /* Per event, one primary-key lookup per subscription (CROSS JOIN keeps subscriptions the
     * outer loop; +state keeps SQLite off the partial index, which it would scan whole). */
    [OB_PRUNE_SELECT] =
        "SELECT e.seq FROM outbox_events e WHERE e.seq <= ?1 AND NOT EXISTS "
        "(SELECT 1 FROM subscriptions s CROSS JOIN sub_deliveries d WHERE d.sub_id = s.id "
        "AND d.seq = e.seq AND +d.state = 0) ORDER BY e.seq LIMIT ?2",
    [OB_PRUNE_EVENT] = "DELETE FROM outbox_events WHERE seq = ?1",
    [OB_PRUNE_DEAD] =
        "DELETE FROM sub_deliveries WHERE sub_id IN (SELECT id FROM subscriptions) "
        "AND seq = ?1",
    [OB_PRUNE_ATT_SCAN] = "SELECT id, at_us FROM delivery_attempts ORDER BY id LIMIT ?1",
    [OB_PRUNE_ATT_DELETE] = "DELETE FROM delivery_attempts WHERE id <= ?1",
    /* stale broker cursors a prune passed: behind the last event it erased */
    [OB_PRUNE_STALE] = "SELECT COUNT(*) FROM outbox_cursors WHERE touched_us < ?1 AND seq < ?2",
    /* The fast lane (lane.h): a subscription's events in (?1, ?2] it wants, in order, but for
     * those that have a row already (after a restart the lane reads again from the persisted
     * cursor: a dead letter or a delivery waiting as a row is the rows' business) */
    [OB_LANE_READ] =
        "SELECT seq, event_id, type, conversation_id, created_us, data, sealed_with "
        "FROM outbox_events e WHERE e.seq > ?1 AND e.seq <= ?2 AND ((?3 >> e.type) & 1) = 1 "
        "AND (?4 IS NULL OR e.account_id IN (SELECT value FROM json_each(?4))) "
        "AND NOT EXISTS (SELECT 1 FROM sub_deliveries d WHERE d.sub_id = ?5 AND d.seq = e.seq) "
        "ORDER BY e.seq",
    [OB_LANE_ANY_PENDING] =
        "SELECT EXISTS (SELECT 1 FROM sub_deliveries WHERE sub_id = ?1 AND state = 0)",
    [OB_LANE_CONV_PENDING] =
        "SELECT 1 FROM sub_deliveries INDEXED BY sub_deliveries_conversation WHERE sub_id = ?1 "
        "AND conversation_id = ?2 AND state = 0 LIMIT 1",
    /* An event of the lane becomes a row: leased by its claim (?5 its owner, ?6 its lease), or
     * waiting (?5 NULL, ?6 0) */
    [OB_LANE_ROW] =
        "INSERT INTO sub_deliveries (sub_id, seq, conversation_id, state, attempts, "
        "first_attempt_us, next_at_us, lease_owner, lease_until_us) "
        "VALUES (?1, ?2, ?3, 0, 0, 0, ?4, ?5, ?6) ON CONFLICT (sub_id, seq) DO NOTHING",
    [OB_LANE_COUNT] =
        "SELECT COUNT(*) FROM outbox_events e WHERE e.seq > ?1 AND e.seq <= ?2 "
        "AND ((?3 >> e.type) & 1) = 1 "
        "AND (?4 IS NULL OR e.account_id IN (SELECT value FROM json_each(?4)))",
};

static bool prepare_outbox(struct sqlite_store *s) {
  for (int i = 0; i < OB_COUNT; i++)
    if (prepare(s->wdb, ob_sql[i], &s->ob[i]) != SQLITE_OK) return false;
  return true;
}

/* Runs a statement whose first row (if any) is all the caller wants: *found, and st is left on
 * that row for the caller to read, which then calls ob_done(st). */
static int ob_step(sqlite3_stmt *st, bool *found) {
  int rc = sqlite3_step(st);
  *found = rc == SQLITE_ROW;
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void ob_done(sqlite3_stmt *st) {
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
}

static void ob_account_from(sqlite3_stmt *st, int col, int sealed_col, struct ob_account *a) {
  a->has_id = sqlite3_column_type(st, col) != SQLITE_NULL;
  copy_text(a->id, sizeof a->id, sqlite3_column_text(st, col));
  size_t n = (size_t)sqlite3_column_bytes(st, sealed_col);
  a->sealed_len =
      sqlite3_column_type(st, sealed_col) != SQLITE_NULL && n <= sizeof a->sealed ? n : 0;
  if (a->sealed_len) memcpy(a->sealed, sqlite3_column_blob(st, sealed_col), n);
}

/* A conversation write's account as its conversations row holds it. */
static int ob_account_of_write(struct sqlite_store *s, const struct store_write *w,
                               struct ob_account *a) {
  const char *account = w->conv->account_id;
  a->has_id = false;
  a->sealed_len = 0;
  if (!account) return SQLITE_OK;
  if (!s->ring) {
    a->has_id = true;
    copy_text(a->id, sizeof a->id, (const unsigned char *)account);
    return SQLITE_OK;
  }
  struct store_sealed_id own;
  const struct store_sealed_id *id = &w->presealed.account;
  if (!w->presealed.done) {
    if (!store_seal_id(s->ring, "conversations.account_id", w->conv->conversation_id, account,
                       &own))
      return SQLITE_NOMEM;
    id = &own;
  }
  if (!id->len) return SQLITE_OK;
  a->has_id = true;
  copy_text(a->id, sizeof a->id, (const unsigned char *)id->index);
  memcpy(a->sealed, id->sealed, id->len);
  a->sealed_len = id->len;
  return SQLITE_OK;
}

/* Whether this batch's changes write outbox events: only when something can read them, a
 * subscription (enabled or not: a paused one's events wait) or a broker (its cursor, or
 * ob_broker before the broker thread made it). A subscription receives only what is committed
 * after its creation, so an event written while none exists could only ever reach a broker
 * configured later, which starts at the oldest event kept: that broker misses these changes
 * (README "Onward delivery"), the price of skipping the row, its rendering and its checkpoint,
 * most of what the outbox costs a webhook. Read once per batch inside the write transaction,
 * which every writer of the file (another process too) takes in turn, so a subscription
 * committed before this batch is always seen; one created in this batch sets it
 * (apply_sub_put, outbox_queue_read). */
static int ob_consumed(struct sqlite_store *s, bool *yes) {
  if (atomic_load(&s->ob_broker)) s->ob_consumed = 1;
  if (s->ob_consumed < 0) {
    sqlite3_stmt *st = s->ob[OB_CONSUMED];
    bool row;
    int rc = ob_step(st, &row);
    s->ob_consumed = row && sqlite3_column_int(st, 0) ? 1 : 0;
    ob_done(st);
    if (rc != SQLITE_OK) {
      s->ob_consumed = -1;
      return rc;
    }
  }
  *yes = s->ob_consumed == 1;
  return SQLITE_OK;
}

/* Writes one event (a new random id), its data sealed with a ring. */
static int ob_insert(struct sqlite_store *s, int type, const char *conversation_id,
                     int64_t created_us, const char *data, size_t len, const struct ob_account *a) {
  char hex[33], id[OUTBOX_EVENT_ID_MAX];
  if (!crypto_random_hex(hex, sizeof hex, 16)) return SQLITE_ERROR;
  snprintf(id, sizeof id, "evt_%s", hex);
  sqlite3_stmt *st = s->ob[OB_INSERT];
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, type);
  sqlite3_bind_text(st, 3, conversation_id, -1, SQLITE_STATIC);
  if (a && a->has_id) sqlite3_bind_text(st, 4, a->id, -1, SQLITE_STATIC);
  if (a && a->sealed_len) sqlite3_bind_blob(st, 5, a->sealed, (int)a->sealed_len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 6, created_us);
  int rc = bind_sealable(s, st, 7, 8, "outbox_events.data", id, conversation_id, data, len);
  if (rc != SQLITE_OK) {
    sqlite3_clear_bindings(st);
    return rc;
  }
  rc = step_done(st);
  if (rc == SQLITE_OK) s->ob_notify = true;
  return rc;
}

static int ob_conversation_state(struct sqlite_store *s, const char *id, bool *exists,
                                 int64_t *audio_bytes) {
  sqlite3_stmt *st = s->ob[OB_EXISTS];
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  bool row;
  int rc = ob_step(st, &row);
  *exists = row && sqlite3_column_int(st, 0);
  *audio_bytes =
      row && sqlite3_column_type(st, 1) != SQLITE_NULL ? sqlite3_column_int64(st, 1) : -1;
  ob_done(st);
  return rc;
}

/* Whether a conversation's texts can be rendered as JSON (valid UTF-8): the database takes
 * other bytes, the outbox cannot; such a write fails alone, the client's fault (the model lets
 * none through). */
static bool texts_renderable(const struct store_conversation *c) {
  const char *texts[] = {c->conversation_id, c->email_id, c->account_id,
                         c->status,          c->agent_id, c->failure_reason};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    json_t *j = json_string(texts[i]);
    if (!j) return false;
    json_decref(j);
  }
  return true;
}

/* The events of a new version (conversation.created, .updated or .failed, then
 * .audio_added when the write also stored audio): the conversation as GET shows it after this
 * write, built from the write itself (what its row and delivery now hold), rendered once.
 * audio_bytes: the stored audio's size before the write (-1: none), read by the write's own
 * first SELECT; audio the write stores replaces it. */
static int ob_of_version(struct sqlite_store *s, struct store_write *w, bool existed,
                         int64_t audio_bytes) {
  bool consumed;
  int rc = ob_consumed(s, &consumed);
  if (rc != SQLITE_OK || !consumed) return rc;
  const struct conversation_input *in = w->conv;
  struct store_conversation c;
  memset(&c, 0, sizeof c);
  c.audio_bytes = store_write_has_audio(w) ? w->audio_len : audio_bytes;
  copy_text(c.conversation_id, sizeof c.conversation_id,
            (const unsigned char *)in->conversation_id);
  copy_text(c.email_id, sizeof c.email_id, (const unsigned char *)in->email_id);
  copy_text(c.account_id, sizeof c.account_id, (const unsigned char *)in->account_id);
  copy_text(c.status, sizeof c.status,
            (const unsigned char *)(in->status ? in->status : "completed"));
  copy_text(c.agent_id, sizeof c.agent_id, (const unsigned char *)in->agent_id);
  copy_text(c.failure_reason, sizeof c.failure_reason, (const unsigned char *)in->failure_reason);
  c.has_start = in->has_start;
  c.start_us = in->start_us;
  c.duration = in->duration;
  c.message_count = in->message_count;
  c.processed_us = w->processed_us;
  copy_text(c.webhook_id, sizeof c.webhook_id, (const unsigned char *)w->webhook_id);
  c.body = (char *)w->body;
  c.body_len = w->body_len;
  size_t len;
  char *data = render_conversation_detail(&c, &len);
  if (!data) return texts_renderable(&c) ? SQLITE_NOMEM : ID_REFUSED;
  struct ob_account a;
  rc = ob_account_of_write(s, w, &a);
  int type = strcmp(c.status, "failed") == 0 ? OUTBOX_FAILED
             : existed                       ? OUTBOX_UPDATED
                                             : OUTBOX_CREATED;
  if (rc == SQLITE_OK) rc = ob_insert(s, type, in->conversation_id, w->processed_us, data, len, &a);
  if (rc == SQLITE_OK && store_write_has_audio(w))
    rc = ob_insert(s, OUTBOX_AUDIO_ADDED, in->conversation_id, w->processed_us, data, len, &a);
  free(data);
  return rc;
}

/* {"conversationId":..,"audio":{"bytes":N,"url":".../audio"}}: audio of no conversation yet. */
static char *ob_audio_data(const char *id, int64_t bytes, size_t *len) {
  static const char hex[] = "0123456789ABCDEF";
  char url[sizeof "/api/v1/conversations/" + 3 * MODEL_CONVERSATION_ID_MAX + sizeof "/audio"];
  size_t n = (size_t)snprintf(url, sizeof url, "/api/v1/conversations/");
  for (const unsigned char *p = (const unsigned char *)id; *p && n + 4 < sizeof url; p++) {
    if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
        *p == '-' || *p == '.' || *p == '_' || *p == '~') {
      url[n++] = (char)*p;
    } else {
      url[n++] = '%';
      url[n++] = hex[*p >> 4];
      url[n++] = hex[*p & 15];
    }
  }
  snprintf(url + n, sizeof url - n, "/audio");
  json_t *o = json_pack("{s:s,s:{s:I,s:s}}", "conversationId", id, "audio", "bytes",
                        (json_int_t)bytes, "url", url);
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (text) *len = strlen(text);
  return text;
}

/* conversation.audio_added of an event that stored audio alone: the conversation as GET shows
 * it when it has a row, else its audio alone. */
static int ob_audio_only(struct sqlite_store *s, struct store_write *w) {
  const char *id = w->event_conversation_id;
  if (!id || !*id) return SQLITE_OK;
  bool consumed;
  int crc = ob_consumed(s, &consumed);
  if (crc != SQLITE_OK || !consumed) return crc;
  sqlite3_stmt *st = s->ob[OB_CONV_ROW];
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 2, 1);
  struct ob_account a = {.has_id = false};
  char *data = NULL;
  size_t len = 0;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    struct store_conversation c;
    enum store_status got = read_row(s->ring, st, &c);
    ob_account_from(st, 2, 14, &a);
    if (got == STORE_OK) data = render_conversation_detail(&c, &len);
    free(c.body);
    rc = got == STORE_OK      ? (data ? SQLITE_OK : SQLITE_NOMEM)
         : got == STORE_RETRY ? SQLITE_NOMEM
                              : OUTBOX_UNREADABLE;
  } else if (rc == SQLITE_DONE) {
    struct store_conversation c = {.audio_bytes = w->audio_len};
    copy_text(c.conversation_id, sizeof c.conversation_id, (const unsigned char *)id);
    data = ob_audio_data(id, w->audio_len, &len);
    rc = data ? SQLITE_OK : texts_renderable(&c) ? SQLITE_NOMEM : ID_REFUSED;
  }
  ob_done(st);
  if (rc == SQLITE_OK) rc = ob_insert(s, OUTBOX_AUDIO_ADDED, id, w->processed_us, data, len, &a);
  free(data);
  return rc;
}

/* Before an erasure: the account its conversation.deleted event is kept with. */
static int ob_account_before_erase(struct sqlite_store *s, const char *id, struct ob_account *a) {
  a->has_id = false;
  a->sealed_len = 0;
  sqlite3_stmt *st = s->ob[OB_ACCOUNT_OF];
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  bool found;
  int rc = ob_step(st, &found);
  if (found) ob_account_from(st, 0, 1, a);
  ob_done(st);
  return rc;
}

/* After an erasure that removed something: the conversation's earlier events and their
 * deliveries go, and conversation.deleted is written. */
static int ob_erased(struct sqlite_store *s, const char *id, bool expired,
                     const struct ob_account *a) {
  /* an answer to a delivery of it in flight then changes nothing and records nothing */
  if (!lanes_touch(&s->lane)) return SQLITE_NOMEM;
  lanes_forget_conversation(&s->lane.cur, id);
  for (int i = OB_ERASE_ATTEMPTS; i <= OB_ERASE_DELIVERIES; i++) {
    sqlite3_bind_text(s->ob[i], 1, id, -1, SQLITE_STATIC);
    int rc = step_done(s->ob[i]);
    if (rc != SQLITE_OK) return rc;
  }
  bool consumed;
  int rc = ob_consumed(s, &consumed);
  if (rc != SQLITE_OK || !consumed) return rc;
  size_t len;
  char *data = outbox_deleted_data(id, expired, &len);
  if (!data) return SQLITE_NOMEM;
  rc = ob_insert(s, OUTBOX_DELETED, id, time_now_us(), data, len, a);
  free(data);
  return rc;
}

/* A subscription's secret (col; sealed when key_col names a key) into out. */
static bool sub_secret_read(const struct seal_ring *ring, sqlite3_stmt *st, int col, int key_col,
                            const char *id, char *out, size_t cap) {
  const void *v = sqlite3_column_blob(st, col);
  size_t n = (size_t)sqlite3_column_bytes(st, col);
  if (sqlite3_column_type(st, key_col) != SQLITE_NULL) {
    char aad[STORE_AAD_MAX];
    size_t aad_len = store_seal_aad(aad, "subscriptions.secret", id, NULL);
    return store_open_text(ring, aad, aad_len, v, n, out, cap);
  }
  if (!v || seal_is_sealed(v, n) || n >= cap || memchr(v, 0, n)) return false;
  memcpy(out, v, n);
  out[n] = '\0';
  return true;
}

/* A subscription's account (col, sealed at sealed_col) into out: "" for every account. */
static bool sub_account_read(const struct seal_ring *ring, sqlite3_stmt *st, int col,
                             int sealed_col, const char *id, char *out, size_t cap) {
  out[0] = '\0';
  if (sqlite3_column_type(st, sealed_col) != SQLITE_NULL) {
    char aad[STORE_AAD_MAX];
    size_t aad_len = store_seal_aad(aad, "subscriptions.account_id", id, NULL);
    return store_open_id(ring, aad, aad_len, sqlite3_column_blob(st, sealed_col),
                         (size_t)sqlite3_column_bytes(st, sealed_col), out, cap);
  }
  const unsigned char *v = sqlite3_column_text(st, col);
  if (!v) return true;
  copy_text(out, cap, v);
  return store_id_sealable((const char *)v);
}

/* The account values an event must hold for a subscription of account (""): every account,
 * NULL); as a JSON array of the id and its blind index under each key of the ring. */
static int sub_accounts_json(const struct seal_ring *ring, const char *account, char **json) {
  *json = NULL;
  if (!*account) return SQLITE_OK;
  const char *one[1] = {account};
  *json = store_accounts_json_ring(ring, one, 1);
  return *json ? SQLITE_OK : SQLITE_NOMEM;
}

/* Binds a subscription's account (sealed with a ring) at idx, sealed_idx. */
static int bind_sub_account(struct sqlite_store *s, sqlite3_stmt *st, int idx, int sealed_idx,
                            const struct subscription *sub, struct store_sealed_id *buf) {
  if (!sub->account_id[0]) return SQLITE_OK; /* NULL: every account */
  if (!store_id_sealable(sub->account_id)) return ID_REFUSED;
  return bind_id(s, st, idx, sealed_idx, "subscriptions.account_id", sub->id, sub->account_id, buf);
}

/* Binds a subscription's URL: as text at idx, or with a ring '' there and sealed (into buf,
 * freed by the caller after the step) at sealed_idx. */
static int bind_sub_url(struct sqlite_store *s, sqlite3_stmt *st, int idx, int sealed_idx,
                        const struct subscription *sub, struct store_seal_buf *buf) {
  if (!s->ring) {
    sqlite3_bind_text(st, idx, sub->url, -1, SQLITE_STATIC);
    return SQLITE_OK;
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, "subscriptions.url", sub->id, NULL), n;
  const unsigned char *sealed =
      store_seal_into(buf, s->ring, aad, aad_len, sub->url, strlen(sub->url), &n);
  if (!sealed) return SQLITE_NOMEM;
  sqlite3_bind_text(st, idx, "", 0, SQLITE_STATIC);
  sqlite3_bind_blob64(st, sealed_idx, sealed, n, SQLITE_STATIC);
  return SQLITE_OK;
}

/* A subscription's URL (col; sealed at sealed_col when that is not NULL) into out. */
static bool sub_url_read(const struct seal_ring *ring, sqlite3_stmt *st, int col, int sealed_col,
                         const char *id, char *out, size_t cap) {
  out[0] = '\0';
  if (sqlite3_column_type(st, sealed_col) == SQLITE_NULL) {
    copy_text(out, cap, sqlite3_column_text(st, col));
    return true;
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, "subscriptions.url", id, NULL);
  return store_open_text(ring, aad, aad_len, sqlite3_column_blob(st, sealed_col),
                         (size_t)sqlite3_column_bytes(st, sealed_col), out, cap);
}

/* What the subscription wants changed (its event types or account): the events waiting for it
 * that it no longer wants go, so none is sent to its URL (perhaps another tenant's now). Not
 * one in flight (a leased row, or the lane's): its answer is recorded as any, and a later event
 * of its conversation still waits for it. An account that does not open keeps them: the
 * dispatcher holds such a subscription. */
static int sub_refilter(struct sqlite_store *s, const char *sub_id) {
  sqlite3_stmt *st = s->ob[OB_SUB_STATE];
  sqlite3_bind_text(st, 1, sub_id, -1, SQLITE_STATIC);
  bool found;
  int rc = ob_step(st, &found);
  char account[MODEL_ACCOUNT_ID_MAX + 1] = "";
  int64_t types = found ? sqlite3_column_int64(st, 3) : 0;
  bool opened = found && sub_account_read(s->ring, st, 4, 5, sub_id, account, sizeof account);
  ob_done(st);
  if (rc != SQLITE_OK || !opened) return rc;
  char *accounts;
  rc = sub_accounts_json(s->ring, account, &accounts);
  if (rc != SQLITE_OK) return rc;
  st = s->ob[OB_SUB_REFILTER];
  sqlite3_bind_text(st, 1, sub_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, types);
  if (accounts) sqlite3_bind_text(st, 3, accounts, -1, SQLITE_STATIC);
  rc = step_done(st);
  free(accounts);
  return rc;
}

static int apply_sub_put(struct sqlite_store *s, struct store_write *w) {
  const struct subscription *sub = w->sub;
  w->status = STORE_OK;
  s->ob_notify = true; /* the dispatcher looks at its subscriptions again */
  struct store_sealed_id account;
  if (w->sub_create) {
    s->ob_consumed = 1; /* the batch's changes after it are its (a rollback resets it) */
    sqlite3_stmt *st = s->ob[OB_SUB_INSERT];
    struct store_seal_buf url = {0};
    int rc = bind_sub_account(s, st, 5, 6, sub, &account);
    if (rc == SQLITE_OK) rc = bind_sub_url(s, st, 2, 15, sub, &url);
    if (rc == SQLITE_OK)
      rc = bind_sealable(s, st, 3, 14, "subscriptions.secret", sub->id, NULL, sub->secret,
                         strlen(sub->secret));
    if (rc != SQLITE_OK) {
      sqlite3_clear_bindings(st);
      store_seal_buf_free(&url);
      return rc;
    }
    sqlite3_bind_text(st, 1, sub->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, sub->event_types);
    sqlite3_bind_int(st, 7, sub->enabled);
    sqlite3_bind_int(st, 8, sub->paused);
    sqlite3_bind_int64(st, 9, sub->max_per_second);
    sqlite3_bind_text(st, 10, sub->disabled_reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, sub->created_us);
    sqlite3_bind_int64(st, 12, sub->updated_us);
    sqlite3_bind_int64(st, 13, sub->last_success_us);
    rc = step_done(st);
    store_seal_buf_free(&url);
    if (rc == SQLITE_OK && sqlite3_changes(s->wdb) == 0) {
      log_msg(LOG_ERROR, "a subscription %s exists already: not created again", sub->id);
      return OUTBOX_REFUSED; /* a caller's bug: fails alone, not the batch */
    }
    return rc;
  }
  /* An update. With a ring, what it changes is sealed with the first key. sealed_with names the
   * key of every sealed column of a row (reencrypt walks by it, start-up checks the ring by it):
   * only an update that seals the URL and the account again also reseals the secret and names
   * the first key; any other keeps the secret and sealed_with as they are, so a row a rotation
   * left on an older key stays due for reencrypt, all of it. A secret that does not open is kept
   * as it is and fails no update. */
  sqlite3_stmt *st = s->ob[OB_SUB_STATE];
  sqlite3_bind_text(st, 1, sub->id, -1, SQLITE_STATIC);
  bool found;
  int rc = ob_step(st, &found);
  /* held by a Retry-After: not active (enabling lifts the hold, what waited is due) */
  bool was_active = found && sqlite3_column_int(st, 0) && !sqlite3_column_int(st, 1) &&
                    sqlite3_column_int64(st, 9) <= time_now_us();
  char secret[OUTBOX_SECRET_MAX];
  bool reseal = found && s->ring &&
                (w->sub_fields & (STORE_SUB_URL | STORE_SUB_ACCOUNT)) ==
                    (STORE_SUB_URL | STORE_SUB_ACCOUNT) &&
                sub_secret_read(s->ring, st, 6, 7, sub->id, secret, sizeof secret);
  ob_done(st);
  if (rc != SQLITE_OK) return rc;
  if (!found) {
    w->status = STORE_NOT_FOUND;
    return SQLITE_OK;
  }
  st = s->ob[OB_SUB_UPDATE];
  struct store_seal_buf url = {0};
  rc = bind_sub_account(s, st, 4, 5, sub, &account);
  if (rc == SQLITE_OK) rc = bind_sub_url(s, st, 2, 15, sub, &url);
  if (rc == SQLITE_OK && reseal)
    rc =
        bind_sealable(s, st, 11, 12, "subscriptions.secret", sub->id, NULL, secret, strlen(secret));
  memset(secret, 0, sizeof secret);
  if (rc != SQLITE_OK) {
    sqlite3_clear_bindings(st);
    store_seal_buf_free(&url);
    return rc;
  }
  sqlite3_bind_text(st, 1, sub->id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, sub->event_types);
  sqlite3_bind_int(st, 6, sub->enabled);
  sqlite3_bind_int64(st, 7, sub->max_per_second);
  sqlite3_bind_int64(st, 10, sub->updated_us);
  sqlite3_bind_int(st, 13, w->sub_enabled_given);
  sqlite3_bind_int(st, 14, (int)w->sub_fields);
  rc = step_done(st);
  store_seal_buf_free(&url);
  if (rc == SQLITE_OK && (w->sub_fields & (STORE_SUB_TYPES | STORE_SUB_ACCOUNT)))
    rc = sub_refilter(s, sub->id);
  /* Only an update naming enabled (true) changes the state: what the service paused or
   * disabled (FINISH) after the caller's read stays so otherwise. */
  if (rc != SQLITE_OK || was_active || !w->sub_enabled_given || !sub->enabled) return rc;
  /* Active again: what waited is due at once. */
  st = s->ob[OB_SUB_WAKE];
  sqlite3_bind_text(st, 1, sub->id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, time_now_us());
  return step_done(st);
}

static int apply_sub_delete(struct sqlite_store *s, struct store_write *w) {
  w->erased = 0;
  if (!lanes_touch(&s->lane)) return SQLITE_NOMEM;
  lanes_forget_sub(&s->lane.cur, w->sub_id);
  int rc = SQLITE_OK;
  for (int i = OB_SUB_DELETE; rc == SQLITE_OK && i <= OB_SUB_DEL_ATTEMPTS; i++) {
    sqlite3_bind_text(s->ob[i], 1, w->sub_id, -1, SQLITE_STATIC);
    rc = step_done(s->ob[i]);
    if (rc == SQLITE_OK && i == OB_SUB_DELETE) w->erased = sqlite3_changes64(s->wdb);
  }
  s->ob_consumed = -1; /* it may have been the last */
  s->ob_notify = true;
  return rc;
}

static int apply_replay(struct sqlite_store *s, struct store_write *w) {
  w->erased = 0;
  w->status = STORE_OK;
  /* the lane's deliveries in flight become rows (replayed like any), its cursor its head */
  int rc = lane_materialize_sub(s, w->sub_id);
  if (rc != SQLITE_OK) return rc;
  sqlite3_stmt *st = s->ob[OB_SUB_STATE];
  sqlite3_bind_text(st, 1, w->sub_id, -1, SQLITE_STATIC);
  bool found;
  rc = ob_step(st, &found);
  int64_t cursor = 0, types = 0, start = 0;
  char account[MODEL_ACCOUNT_ID_MAX + 1] = "";
  bool opened = true;
  if (found) {
    cursor = sqlite3_column_int64(st, 2);
    start = sqlite3_column_int64(st, 8);
    types = sqlite3_column_int64(st, 3);
    /* a URL that does not open is refused as an account that does not open: rows made now
     * would wait under the account it has, not the one it gets once mended (as fan-out) */
    char url[OUTBOX_URL_MAX + 1];
    opened = sub_account_read(s->ring, st, 4, 5, w->sub_id, account, sizeof account) &&
             sub_url_read(s->ring, st, 10, 11, w->sub_id, url, sizeof url);
  }
  ob_done(st);
  if (rc != SQLITE_OK) return rc;
  if (!found) {
    w->status = STORE_NOT_FOUND;
    return SQLITE_OK;
  }
  if (!opened) {
    log_msg(LOG_ERROR, "the URL or account of subscription %s does not open", w->sub_id);
    return OUTBOX_UNREADABLE;
  }
  char *accounts;
  rc = sub_accounts_json(s->ring, account, &accounts);
  if (rc != SQLITE_OK) return rc;
  st = s->ob[OB_REPLAY];
  sqlite3_bind_text(st, 1, w->sub_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, time_now_us());
  sqlite3_bind_int64(st, 3, cursor);
  sqlite3_bind_int64(st, 4, w->replay_since_us);
  sqlite3_bind_int64(st, 5, types);
  if (accounts) sqlite3_bind_text(st, 6, accounts, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 7, start);
  rc = step_done(st);
  free(accounts);
  if (rc == SQLITE_OK) w->erased = sqlite3_changes64(s->wdb);
  s->ob_notify = true;
  return rc;
}

/* One subscription as fan-out sees it. */
struct fan_sub {
  char id[OUTBOX_SUB_ID_MAX];
  int64_t cursor, types;
  bool active;    /* enabled and not paused: its new events go by the lane */
  char *accounts; /* sub_accounts_json */
};

/* An active subscription's new events go by the lane (counted as added, no rows); another's
 * become waiting rows, after its lane's entries became rows (its cursor then passes them). */
static int fanout_one(struct sqlite_store *s, const struct fan_sub *f, int64_t now, int64_t limit,
                      int64_t *added) {
  int64_t start = f->cursor, head;
  int rc = SQLITE_OK;
  if (!f->active) rc = lane_materialize_sub(s, f->id);
  if (rc != SQLITE_OK) return rc;
  if (lanes_head(&s->lane.cur, f->id, &head) && head > start) start = head;
  /* the lane's events are counted once: from where the last FANOUT stopped */
  int64_t from = start;
  if (f->active && lanes_counted(&s->lane.cur, f->id) > from)
    from = lanes_counted(&s->lane.cur, f->id);
  sqlite3_stmt *st = s->ob[OB_FAN_UPTO];
  sqlite3_bind_int64(st, 1, from);
  sqlite3_bind_int64(st, 2, limit);
  bool found;
  rc = ob_step(st, &found);
  bool any = found && sqlite3_column_type(st, 0) != SQLITE_NULL;
  int64_t upto = any ? sqlite3_column_int64(st, 0) : 0;
  ob_done(st);
  if (rc != SQLITE_OK || !any) return rc;
  if (f->active) {
    if (!lanes_touch(&s->lane) || !lanes_set_counted(&s->lane.cur, f->id, start, upto))
      return SQLITE_NOMEM;
    start = from;
    st = s->ob[OB_LANE_COUNT];
    sqlite3_bind_int64(st, 1, start);
    sqlite3_bind_int64(st, 2, upto);
    sqlite3_bind_int64(st, 3, f->types);
    if (f->accounts) sqlite3_bind_text(st, 4, f->accounts, -1, SQLITE_STATIC);
    rc = ob_step(st, &found);
    if (rc == SQLITE_OK && found) *added += sqlite3_column_int64(st, 0);
    ob_done(st);
    return rc;
  }
  st = s->ob[OB_FAN_INSERT];
  sqlite3_bind_text(st, 1, f->id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, now);
  sqlite3_bind_int64(st, 3, start);
  sqlite3_bind_int64(st, 4, upto);
  sqlite3_bind_int64(st, 5, f->types);
  if (f->accounts) sqlite3_bind_text(st, 6, f->accounts, -1, SQLITE_STATIC);
  rc = step_done(st);
  if (rc != SQLITE_OK) return rc;
  *added += sqlite3_changes64(s->wdb);
  st = s->ob[OB_FAN_CURSOR];
  sqlite3_bind_text(st, 1, f->id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, upto);
  return step_done(st);
}

static int outbox_fanout(struct sqlite_store *s, struct store_outbox_work *o) {
  struct fan_sub *subs = NULL;
  size_t n = 0, cap = 0;
  sqlite3_stmt *st = s->ob[OB_SUB_ALL];
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      struct fan_sub *more = realloc(subs, ncap * sizeof *more);
      if (!more) {
        rc = SQLITE_NOMEM;
        break;
      }
      subs = more;
      cap = ncap;
    }
    struct fan_sub *f = &subs[n];
    copy_text(f->id, sizeof f->id, sqlite3_column_text(st, 0));
    f->cursor = sqlite3_column_int64(st, 1);
    f->types = sqlite3_column_int64(st, 2);
    f->active = sqlite3_column_int(st, 5) && !sqlite3_column_int(st, 6);
    f->accounts = NULL;
    char account[MODEL_ACCOUNT_ID_MAX + 1], url[OUTBOX_URL_MAX + 1];
    /* a URL that does not open as well as an account: nothing can go to it, and what it gets is
     * decided by the account it has once mended (PATCH url and accountId), not the one now */
    if (!sub_account_read(s->ring, st, 3, 4, f->id, account, sizeof account) ||
        !sub_url_read(s->ring, st, 7, 8, f->id, url, sizeof url)) {
      /* skipped alone: its events wait (its cursor stays), the others go on; said once */
      store_unopened_note(&s->unopened, f->id);
      continue;
    }
    if ((rc = sub_accounts_json(s->ring, account, &f->accounts)) != SQLITE_OK) break;
    n++;
  }
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
  store_unopened_end(&s->unopened, rc == SQLITE_OK);
  int64_t limit = o->limit > 0 ? o->limit : 1000;
  for (size_t i = 0; rc == SQLITE_OK && i < n; i++)
    rc = fanout_one(s, &subs[i], o->now_us, limit, &o->added);
  for (size_t i = 0; i < n; i++) free(subs[i].accounts);
  free(subs);
  return rc;
}

/* A row of the outbox layout (seq, event_id, type, conversation_id, created_us, data,
 * sealed_with) into ev, its data opened. */
static int read_outbox_row(const struct seal_ring *ring, sqlite3_stmt *st,
                           struct store_outbox_event *ev) {
  memset(ev, 0, sizeof *ev);
  ev->seq = sqlite3_column_int64(st, 0);
  copy_text(ev->id, sizeof ev->id, sqlite3_column_text(st, 1));
  ev->type = sqlite3_column_int(st, 2);
  copy_text(ev->conversation_id, sizeof ev->conversation_id, sqlite3_column_text(st, 3));
  ev->created_us = sqlite3_column_int64(st, 4);
  bool oom;
  if (read_body(ring, sqlite3_column_type(st, 6) != SQLITE_NULL, "outbox_events.data", ev->id,
                ev->conversation_id, sqlite3_column_blob(st, 5),
                (size_t)sqlite3_column_bytes(st, 5), &ev->data, &ev->data_len, &oom))
    return SQLITE_OK;
  if (oom) return SQLITE_NOMEM;
  (void)not_opened("outbox event", ev->id);
  return OUTBOX_UNREADABLE;
}

/* Event data read per CLAIM or QUEUE_READ, about (the row that passes it is kept; at least one
 * row): both run on the one writer thread, every webhook waits behind them. */
#define OB_READ_BYTES_MAX ((size_t)16 * 1024 * 1024)

static int64_t clamp_limit(int64_t limit, int64_t max) {
  return limit < 1 ? 1 : limit > max ? max : limit;
}

/* A claim's lease_owner: this store's owner id and the claim's token. */
#define OB_LEASE_OWNER_MAX 48
static void lease_owner_of(const struct sqlite_store *s, int64_t token,
                           char out[OB_LEASE_OWNER_MAX]) {
  snprintf(out, OB_LEASE_OWNER_MAX, "%s:%lld", s->owner, (long long)token);
}

static int outbox_claim(struct sqlite_store *s, struct store_outbox_work *o) {
  if (!o->sub_id) return OUTBOX_REFUSED;
  sqlite3_stmt *st = s->ob[OB_SUB_STATE];
  sqlite3_bind_text(st, 1, o->sub_id, -1, SQLITE_STATIC);
  bool found;
  int rc = ob_step(st, &found);
  /* held by a receiver's Retry-After (FINISH hold_us): nothing of it before then */
  bool active = found && sqlite3_column_int(st, 0) && !sqlite3_column_int(st, 1) &&
                sqlite3_column_int64(st, 9) <= o->now_us;
  int64_t cursor = active ? sqlite3_column_int64(st, 2) : 0;
  int64_t types = active ? sqlite3_column_int64(st, 3) : 0;
  char account[MODEL_ACCOUNT_ID_MAX + 1] = "", url[OUTBOX_URL_MAX + 1];
  /* an account or URL that does not open: its rows are claimed, its lane waits (fan-out says
   * why; it makes no rows for it either) */
  bool opened = active && sub_account_read(s->ring, st, 4, 5, o->sub_id, account, sizeof account) &&
                sub_url_read(s->ring, st, 10, 11, o->sub_id, url, sizeof url);
  ob_done(st);
  if (rc != SQLITE_OK || !active) return rc;
  /* the lane's leases that ran out: rows again, due at once (claimed below) */
  long expired;
  while ((expired = lanes_find_expired(&s->lane.cur, o->sub_id, o->now_us)) >= 0)
    if ((rc = lane_materialize(s, (size_t)expired)) != SQLITE_OK) return rc;
  int64_t limit = clamp_limit(o->limit, 1000);
  o->jobs = calloc((size_t)limit, sizeof *o->jobs);
  if (!o->jobs) return SQLITE_NOMEM;
  size_t n = 0;
  st = s->ob[OB_CLAIM_SELECT];
  sqlite3_bind_text(st, 1, o->sub_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, o->now_us);
  sqlite3_bind_int64(st, 3, limit);
  while (n < (size_t)limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    struct store_delivery_job *j = &o->jobs[n++];
    j->event.seq = sqlite3_column_int64(st, 0);
    j->attempt = sqlite3_column_int(st, 1) + 1;
    j->first_attempt_us = sqlite3_column_int64(st, 2);
  }
  ob_done(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return rc;
  rc = SQLITE_OK;
  int64_t until = o->now_us + o->lease_us;
  size_t bytes = 0;
  for (size_t i = 0; rc == SQLITE_OK && i < n && bytes < OB_READ_BYTES_MAX; i++) {
    struct store_delivery_job *j = &o->jobs[o->count];
    int64_t seq = o->jobs[i].event.seq;
    int attempt = o->jobs[i].attempt;
    int64_t first = o->jobs[i].first_attempt_us;
    st = s->ob[OB_EVENT_GET];
    sqlite3_bind_int64(st, 1, seq);
    rc = ob_step(st, &found);
    if (rc == SQLITE_OK && found) {
      rc = read_outbox_row(s->ring, st, &j->event);
      if (rc == SQLITE_OK) {
        copy_text(j->sub_id, sizeof j->sub_id, (const unsigned char *)o->sub_id);
        j->attempt = attempt;
        j->first_attempt_us = first;
        o->count++;
        bytes += j->event.data_len;
      }
    }
    ob_done(st);
    if (rc != SQLITE_OK) break;
    /* Leased; or, its event gone (never: erasure takes both), dropped. */
    st = s->ob[found ? OB_CLAIM_LEASE : OB_FIN_DELETE];
    sqlite3_bind_text(st, 1, o->sub_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, seq);
    if (found) {
      /* The claim's own token: a later claim of this delivery gets another, so an answer to
       * this one's send cannot act on that one (finish_one). */
      j->lease_token = ++s->lease_seq;
      char owner[OB_LEASE_OWNER_MAX];
      lease_owner_of(s, j->lease_token, owner);
      sqlite3_bind_text(st, 3, owner, -1, SQLITE_TRANSIENT);
      sqlite3_bind_int64(st, 4, until);
    }
    rc = step_done(st);
  }
  if (rc != SQLITE_OK || !opened || (int64_t)o->count >= limit || bytes >= OB_READ_BYTES_MAX)
    return rc;
  char *accounts;
  if ((rc = sub_accounts_json(s->ring, account, &accounts)) != SQLITE_OK) return rc;
  rc = lane_claim(s, o, limit, cursor, types, accounts, &bytes);
  free(accounts);
  return rc;
}

/* Records one attempt. */
static int record_attempt(struct sqlite_store *s, const struct store_delivery_result *r,
                          int outcome) {
  sqlite3_stmt *st = s->ob[OB_ATTEMPT_INSERT];
  sqlite3_bind_text(st, 1, r->sub_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, r->seq);
  sqlite3_bind_text(st, 3, r->event_id, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 4, r->type);
  sqlite3_bind_int(st, 5, r->attempt);
  sqlite3_bind_int(st, 6, r->status_code);
  sqlite3_bind_int64(st, 7, r->latency_ms);
  sqlite3_bind_int64(st, 8, r->at_us);
  sqlite3_bind_int(st, 9, outcome);
  sqlite3_bind_text(st, 10, r->response_head,
                    (int)strnlen(r->response_head, OUTBOX_RESPONSE_HEAD_MAX), SQLITE_STATIC);
  return step_done(st);
}

static int sub_simple(struct sqlite_store *s, enum ob_stmt i, const char *id, int64_t v) {
  sqlite3_stmt *st = s->ob[i];
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  if (i == OB_SUB_SUCCESS) sqlite3_bind_int64(st, 2, v);
  return step_done(st);
}

static int finish_one(struct sqlite_store *s, const struct store_delivery_result *r,
                      int64_t now_us) {
  sqlite3_stmt *st = s->ob[OB_FIN_GET];
  sqlite3_bind_text(st, 1, r->sub_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, r->seq);
  bool found;
  int rc = ob_step(st, &found);
  int attempts = found ? sqlite3_column_int(st, 0) : 0;
  int64_t first = found ? sqlite3_column_int64(st, 1) : 0;
  const unsigned char *owner = found ? sqlite3_column_text(st, 2) : NULL;
  char mine[OB_LEASE_OWNER_MAX];
  lease_owner_of(s, r->lease_token, mine);
  bool ours = owner && strcmp((const char *)owner, mine) == 0;
  size_t own_len = strlen(s->owner);
  bool reclaimed = !ours && owner && strncmp((const char *)owner, s->owner, own_len) == 0 &&
                   owner[own_len] == ':';
  /* Replayed while this send was in flight (OB_REPLAY): waits again from attempt 1. */
  bool replayed = ours && sqlite3_column_int64(st, 3) == 0;
  int64_t replay_at = found ? sqlite3_column_int64(st, 4) : 0;
  ob_done(st);
  if (rc != SQLITE_OK) return rc;
  /* Pending and claimed again by this store since (a replay, or a lease that ran out, then a
   * new claim): the stale answer is an attempt made, recorded, and changes nothing. Gone, not
   * leased, or another's lease (none on SQLite, one process per file): ignored. */
  if (!ours) {
    if (!reclaimed || r->outcome == STORE_DELIVERY_RELEASE) return SQLITE_OK;
    /* a failure is one the current claim retries, whatever this answer's schedule said */
    if (r->outcome < DELIVERY_DELIVERED || r->outcome > DELIVERY_DISABLED) return SQLITE_OK;
    return record_attempt(s, r,
                          r->outcome == DELIVERY_DELIVERED ? DELIVERY_DELIVERED : DELIVERY_RETRY);
  }
  if (r->hold_us > 0 && r->outcome != STORE_DELIVERY_RELEASE) {
    /* the receiver's Retry-After holds the whole subscription, kept past a restart */
    st = s->ob[OB_SUB_HOLD];
    sqlite3_bind_text(st, 1, r->sub_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_us + r->hold_us);
    if ((rc = step_done(st)) != SQLITE_OK) return rc;
  }
  int state = 0, outcome = r->outcome;
  int64_t next_at = r->next_at_us;
  if (outcome != STORE_DELIVERY_RELEASE) {
    attempts = r->attempt;
    if (!first) first = r->first_attempt_us ? r->first_attempt_us : r->at_us;
  }
  switch (outcome) {
    case DELIVERY_DELIVERED: /* its success counted before any result (apply_outbox) */
      if (replayed) break;
      st = s->ob[OB_FIN_DELETE];
      sqlite3_bind_text(st, 1, r->sub_id, -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 2, r->seq);
      rc = step_done(st);
      return rc == SQLITE_OK ? record_attempt(s, r, outcome) : rc;
    case DELIVERY_FAILED: {
      /* Exhausted: a dead letter when the subscription succeeded since this event's first
       * attempt, else the subscription is paused and the event waits. */
      st = s->ob[OB_SUB_LAST_SUCCESS];
      sqlite3_bind_text(st, 1, r->sub_id, -1, SQLITE_STATIC);
      rc = ob_step(st, &found);
      int64_t last_success = found ? sqlite3_column_int64(st, 0) : 0;
      ob_done(st);
      if (rc != SQLITE_OK) return rc;
      if (last_success > 0 && last_success >= first) {
        state = 1;
      } else {
        outcome = DELIVERY_PAUSED;
        rc = sub_simple(s, OB_SUB_PAUSE, r->sub_id, 0);
      }
      break;
    }
    case DELIVERY_DISABLED:
      rc = sub_simple(s, OB_SUB_DISABLE, r->sub_id, 0);
      break;
    case DELIVERY_PAUSED: /* the store decides that; taken as a retry */
      outcome = DELIVERY_RETRY;
      break;
    case DELIVERY_RETRY:
    case STORE_DELIVERY_RELEASE:
      break;
    default:
      log_msg(LOG_ERROR, "a delivery result with outcome %d is ignored", outcome);
      return SQLITE_OK;
  }
  if (rc != SQLITE_OK) return rc;
  if (replayed) {
    state = 0;
    attempts = 0;
    first = 0;
    next_at = replay_at;
  }
  st = s->ob[OB_FIN_UPDATE];
  sqlite3_bind_text(st, 1, r->sub_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, r->seq);
  sqlite3_bind_int(st, 3, state);
  sqlite3_bind_int(st, 4, attempts);
  sqlite3_bind_int64(st, 5, first);
  sqlite3_bind_int64(st, 6, next_at);
  rc = step_done(st);
  if (rc == SQLITE_OK && outcome != STORE_DELIVERY_RELEASE) rc = record_attempt(s, r, outcome);
  return rc;
}

/* ---- the fast lane (lane.h) ---- */

/* Event seq of sub_id becomes a row: leased by claim token until until_us, or (token < 0)
 * waiting, due at until_us. */
static int lane_row(struct sqlite_store *s, const char *sub_id, int64_t seq,
                    const char *conversation_id, int64_t token, int64_t until_us) {
  sqlite3_stmt *st = s->ob[OB_LANE_ROW];
  sqlite3_bind_text(st, 1, sub_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, seq);
  sqlite3_bind_text(st, 3, conversation_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, until_us);
  if (token >= 0) {
    char owner[OB_LEASE_OWNER_MAX];
    lease_owner_of(s, token, owner);
    sqlite3_bind_text(st, 5, owner, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 6, until_us);
  } else {
    sqlite3_bind_null(st, 5);
    sqlite3_bind_int64(st, 6, 0);
  }
  return step_done(st);
}

/* Entry i becomes a row leased by its claim: the answer to it then takes the rows' path. */
static int lane_materialize(struct sqlite_store *s, size_t i) {
  if (!lanes_touch(&s->lane)) return SQLITE_NOMEM;
  struct lane_entry e = s->lane.cur.e[i];
  lanes_remove(&s->lane.cur, i);
  return lane_row(s, e.sub_id, e.seq, e.conversation_id, e.token, e.until_us);
}

/* The subscription's persisted cursor moves up to where its lane allows: never past an event
 * in flight, so a restart sends those again. */
static int lane_save_cursor(struct sqlite_store *s, const char *sub_id) {
  int64_t c;
  if (!lanes_cursor(&s->lane.cur, sub_id, &c)) return SQLITE_OK;
  sqlite3_stmt *st = s->ob[OB_FAN_CURSOR];
  sqlite3_bind_text(st, 1, sub_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, c);
  return step_done(st);
}

/* Every entry of sub_id becomes a row; its cursor then moves up to its lane's head. */
static int lane_materialize_sub(struct sqlite_store *s, const char *sub_id) {
  int rc = SQLITE_OK;
  long i;
  while (rc == SQLITE_OK && (i = lanes_find_sub(&s->lane.cur, sub_id)) >= 0)
    rc = lane_materialize(s, (size_t)i);
  return rc == SQLITE_OK ? lane_save_cursor(s, sub_id) : rc;
}

static int lane_exists(struct sqlite_store *s, enum ob_stmt i, const char *sub_id,
                       const char *conversation_id, bool *yes) {
  sqlite3_stmt *st = s->ob[i];
  sqlite3_bind_text(st, 1, sub_id, -1, SQLITE_STATIC);
  if (conversation_id) sqlite3_bind_text(st, 2, conversation_id, -1, SQLITE_STATIC);
  bool found;
  int rc = ob_step(st, &found);
  *yes = found && sqlite3_column_int(st, 0) != 0;
  ob_done(st);
  return rc;
}

#define LANE_WINDOW 1000 /* outbox events a lane claim looks through at least (as FANOUT_LIMIT) */

/* CLAIM's second half: the subscription's events after its cursor and head, straight from the
 * outbox, up to o->limit jobs in all. An event whose conversation has a delivery pending (a
 * row, or one of the lane in flight, which becomes a row first) becomes a waiting row behind
 * it instead: each conversation's order holds. */
static int lane_claim(struct sqlite_store *s, struct store_outbox_work *o, int64_t limit,
                      int64_t cursor, int64_t types, const char *accounts, size_t *bytes) {
  int64_t start = cursor, head;
  if (lanes_head(&s->lane.cur, o->sub_id, &head) && head > start) start = head;
  /* a window of the outbox whatever the claim's limit: a subscription filtered by type or
   * account passes the events it does not want at the same pace as fan-out (the loop below
   * stops at the limit and keeps its place) */
  int64_t window = limit - (int64_t)o->count;
  if (window < LANE_WINDOW) window = LANE_WINDOW;
  sqlite3_stmt *st = s->ob[OB_FAN_UPTO];
  sqlite3_bind_int64(st, 1, start);
  sqlite3_bind_int64(st, 2, window);
  bool found;
  int rc = ob_step(st, &found);
  bool any = found && sqlite3_column_type(st, 0) != SQLITE_NULL;
  int64_t upto = any ? sqlite3_column_int64(st, 0) : 0;
  ob_done(st);
  if (rc != SQLITE_OK || !any) return rc;
  if (!lanes_touch(&s->lane)) return SQLITE_NOMEM;
  bool any_pending;
  rc = lane_exists(s, OB_LANE_ANY_PENDING, o->sub_id, NULL, &any_pending);
  if (rc != SQLITE_OK) return rc;
  int64_t until = o->now_us + o->lease_us, last = start;
  bool all = true;
  st = s->ob[OB_LANE_READ];
  sqlite3_bind_int64(st, 1, start);
  sqlite3_bind_int64(st, 2, upto);
  sqlite3_bind_int64(st, 3, types);
  if (accounts) sqlite3_bind_text(st, 4, accounts, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, o->sub_id, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (*bytes >= OB_READ_BYTES_MAX || (int64_t)o->count >= limit) {
      all = false;
      break;
    }
    struct store_delivery_job *j = &o->jobs[o->count];
    rc = read_outbox_row(s->ring, st, &j->event);
    if (rc != SQLITE_OK) break;
    last = j->event.seq;
    long same = lanes_find_conversation(&s->lane.cur, o->sub_id, j->event.conversation_id);
    bool wait = same >= 0;
    if (same >= 0)
      rc = lane_materialize(s, (size_t)same);
    else if (any_pending)
      rc = lane_exists(s, OB_LANE_CONV_PENDING, o->sub_id, j->event.conversation_id, &wait);
    if (rc == SQLITE_OK && wait) {
      rc = lane_row(s, o->sub_id, j->event.seq, j->event.conversation_id, -1, o->now_us);
      any_pending = true;
    } else if (rc == SQLITE_OK) {
      struct lane_entry e;
      memset(&e, 0, sizeof e);
      copy_text(e.sub_id, sizeof e.sub_id, (const unsigned char *)o->sub_id);
      copy_text(e.conversation_id, sizeof e.conversation_id,
                (const unsigned char *)j->event.conversation_id);
      e.seq = j->event.seq;
      e.token = ++s->lease_seq;
      e.until_us = until;
      if (!lanes_add(&s->lane.cur, &e)) {
        rc = SQLITE_NOMEM;
      } else {
        copy_text(j->sub_id, sizeof j->sub_id, (const unsigned char *)o->sub_id);
        j->attempt = 1;
        j->first_attempt_us = 0;
        j->lease_token = e.token;
        o->count++;
        *bytes += j->event.data_len;
        continue;
      }
    }
    free(j->event.data); /* waits as a row, or failed */
    memset(&j->event, 0, sizeof j->event);
    if (rc != SQLITE_OK) break;
  }
  if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
  ob_done(st);
  if (rc != SQLITE_OK) return rc;
  if (!lanes_set_head(&s->lane.cur, o->sub_id, all ? upto : last)) return SQLITE_NOMEM;
  return lane_save_cursor(s, o->sub_id);
}

/* FINISH of one result: an entry of the lane that succeeded is an attempt recorded and nothing
 * else; any other answer to one makes it a row first. Everything else: finish_one. */
static int lane_finish(struct sqlite_store *s, const struct store_delivery_result *r,
                       int64_t now_us) {
  long i = lanes_find(&s->lane.cur, r->sub_id, r->seq, r->lease_token);
  if (i < 0) return finish_one(s, r, now_us);
  int rc;
  if (r->outcome == DELIVERY_DELIVERED) {
    if (!lanes_touch(&s->lane)) return SQLITE_NOMEM;
    lanes_remove(&s->lane.cur, (size_t)i);
    rc = record_attempt(s, r, DELIVERY_DELIVERED);
  } else {
    rc = lane_materialize(s, (size_t)i);
    if (rc == SQLITE_OK) rc = finish_one(s, r, now_us);
  }
  return rc;
}

static int outbox_queue_read(struct sqlite_store *s, struct store_outbox_work *o) {
  if (!o->cursor_name) return OUTBOX_REFUSED;
  sqlite3_stmt *st = s->ob[OB_Q_CREATE];
  sqlite3_bind_text(st, 1, o->cursor_name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, o->now_us);
  int rc = step_done(st);
  if (rc != SQLITE_OK) return rc;
  s->ob_consumed = 1;
  st = s->ob[OB_Q_LEASE];
  sqlite3_bind_text(st, 1, o->cursor_name, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, s->owner, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, o->now_us + o->lease_us);
  sqlite3_bind_int64(st, 4, o->now_us);
  rc = sqlite3_step(st);
  int64_t cursor = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  o->busy = rc == SQLITE_DONE;
  if (rc == SQLITE_ROW) rc = sqlite3_step(st);
  ob_done(st);
  if (rc != SQLITE_DONE) return rc;
  if (o->busy) return SQLITE_OK;
  int64_t limit = clamp_limit(o->limit, 10000);
  o->events = calloc((size_t)limit, sizeof *o->events);
  if (!o->events) return SQLITE_NOMEM;
  st = s->ob[OB_Q_READ];
  sqlite3_bind_int64(st, 1, cursor);
  sqlite3_bind_int64(st, 2, limit);
  rc = SQLITE_OK;
  size_t bytes = 0;
  while (rc == SQLITE_OK && o->count < (size_t)limit && bytes < OB_READ_BYTES_MAX &&
         (rc = sqlite3_step(st)) == SQLITE_ROW) {
    rc = read_outbox_row(s->ring, st, &o->events[o->count]);
    if (rc == SQLITE_OK) bytes += o->events[o->count++].data_len;
  }
  ob_done(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int outbox_prune(struct sqlite_store *s, struct store_outbox_work *o) {
  sqlite3_stmt *st = s->ob[OB_PRUNE_BOUND];
  sqlite3_bind_int64(st, 1, o->before_us);
  sqlite3_bind_int64(st, 2, o->stale_before_us);
  bool found;
  int rc = ob_step(st, &found);
  int64_t bound = found ? sqlite3_column_int64(st, 0) : 0;
  ob_done(st);
  if (rc != SQLITE_OK) return rc;
  int64_t limit = clamp_limit(o->limit, 100000);
  int64_t *seqs = calloc((size_t)limit, sizeof *seqs);
  if (!seqs) return SQLITE_NOMEM;
  size_t n = 0;
  st = s->ob[OB_PRUNE_SELECT];
  sqlite3_bind_int64(st, 1, bound);
  sqlite3_bind_int64(st, 2, limit);
  while (n < (size_t)limit && (rc = sqlite3_step(st)) == SQLITE_ROW)
    seqs[n++] = sqlite3_column_int64(st, 0);
  ob_done(st);
  rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
  for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
    for (int k = OB_PRUNE_EVENT; rc == SQLITE_OK && k <= OB_PRUNE_DEAD; k++) {
      sqlite3_bind_int64(s->ob[k], 1, seqs[i]);
      rc = step_done(s->ob[k]);
      if (rc == SQLITE_OK && k == OB_PRUNE_EVENT) o->added += sqlite3_changes64(s->wdb);
    }
  }
  if (rc == SQLITE_OK && n) {
    /* broker cursors nobody keeps any more, passed: the caller warns */
    st = s->ob[OB_PRUNE_STALE];
    sqlite3_bind_int64(st, 1, o->stale_before_us);
    sqlite3_bind_int64(st, 2, seqs[n - 1]);
    rc = ob_step(st, &found);
    o->stale = found ? sqlite3_column_int64(st, 0) : 0;
    ob_done(st);
  }
  free(seqs);
  if (rc != SQLITE_OK) return rc;
  /* Attempts: the oldest first (ids grow with time), up to the first one that is recent. */
  st = s->ob[OB_PRUNE_ATT_SCAN];
  sqlite3_bind_int64(st, 1, limit);
  int64_t last = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && sqlite3_column_int64(st, 1) < o->before_us)
    last = sqlite3_column_int64(st, 0);
  ob_done(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return rc;
  if (!last) return SQLITE_OK;
  sqlite3_bind_int64(s->ob[OB_PRUNE_ATT_DELETE], 1, last);
  rc = step_done(s->ob[OB_PRUNE_ATT_DELETE]);
  if (rc == SQLITE_OK) o->added += sqlite3_changes64(s->wdb);
  return rc;
}

/* Broker cursor o->cursor_name moved to upto_seq if its lease is ours (0: only touched). */
static int queue_advance(struct sqlite_store *s, const struct store_outbox_work *o,
                         int64_t upto_seq) {
  sqlite3_stmt *st = s->ob[OB_Q_ADVANCE];
  sqlite3_bind_text(st, 1, o->cursor_name, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, s->owner, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, upto_seq);
  sqlite3_bind_int64(st, 4, o->now_us ? o->now_us : time_now_us());
  return step_done(st);
}

static int apply_outbox(struct sqlite_store *s, struct store_write *w) {
  struct store_outbox_work *o = w->outbox;
  if (!o) return OUTBOX_REFUSED;
  store_jobs_free(o); /* what an earlier try of this batch read */
  o->added = 0;
  o->busy = false;
  o->stale = 0;
  int rc;
  if (o->op == STORE_OUTBOX_FANOUT || o->op == STORE_OUTBOX_CLAIM ||
      o->op == STORE_OUTBOX_QUEUE_READ || o->op == STORE_OUTBOX_PRUNE) {
    bool owned;
    if ((rc = outbox_owned(s, &owned)) != SQLITE_OK) return rc;
    if (!owned && o->op == STORE_OUTBOX_QUEUE_READ) {
      if (!o->cursor_name) return OUTBOX_REFUSED;
      /* as a broker cursor another instance holds: busy, and the cursor kept live (touched), so
       * prune never passes it while the owner has no broker of its own */
      o->busy = true;
      return queue_advance(s, o, 0);
    }
    if (!owned) return SQLITE_OK;
  }
  switch (o->op) {
    case STORE_OUTBOX_FANOUT:
      return outbox_fanout(s, o);
    case STORE_OUTBOX_CLAIM:
      rc = outbox_claim(s, o);
      break;
    case STORE_OUTBOX_FINISH:
      /* Every success of the batch first: an exhausted delivery is judged against them all,
       * whatever order the results came in (the pause rule). */
      rc = SQLITE_OK;
      for (size_t i = 0; rc == SQLITE_OK && i < o->nresults; i++) {
        const struct store_delivery_result *r = &o->results[i];
        if (r->outcome != DELIVERY_DELIVERED) continue;
        /* one update per run of the same subscription's successes: the latest counts */
        int64_t at = r->at_us;
        while (i + 1 < o->nresults && o->results[i + 1].outcome == DELIVERY_DELIVERED &&
               strcmp(o->results[i + 1].sub_id, r->sub_id) == 0) {
          i++;
          if (o->results[i].at_us > at) at = o->results[i].at_us;
        }
        rc = sub_simple(s, OB_SUB_SUCCESS, r->sub_id, at);
      }
      for (size_t i = 0; rc == SQLITE_OK && i < o->nresults; i++)
        rc = lane_finish(s, &o->results[i], o->now_us ? o->now_us : time_now_us());
      /* each subscription's cursor once (a run of results of one subscription: once per run) */
      for (size_t i = 0; rc == SQLITE_OK && i < o->nresults; i++)
        if (i + 1 == o->nresults || strcmp(o->results[i + 1].sub_id, o->results[i].sub_id) != 0)
          rc = lane_save_cursor(s, o->results[i].sub_id);
      return rc;
    case STORE_OUTBOX_QUEUE_READ:
      rc = outbox_queue_read(s, o);
      break;
    case STORE_OUTBOX_QUEUE_ADVANCE:
      return o->cursor_name ? queue_advance(s, o, o->upto_seq) : OUTBOX_REFUSED;
    case STORE_OUTBOX_PRUNE:
      return outbox_prune(s, o);
    default:
      return OUTBOX_REFUSED;
  }
  if (rc != SQLITE_OK) store_jobs_free(o);
  return rc;
}

/* Several processes on one SQLite file (several instances on one machine): one of them
 * delivers the outbox, the one holding an exclusive flock on "<database>-outbox-lock" (next to
 * the database's real path). A process asks for it at its dispatcher's first outbox step (FANOUT,
 * CLAIM, QUEUE_READ, PRUNE), so a subcommand never takes it. The others store events,
 * subscriptions and replays as usual, and their dispatchers find nothing to do; the owner picks
 * their events up within its tick (a second). The kernel drops the lock when its process ends,
 * even killed, and the next one to ask takes over: leases are then cleared (what the last owner
 * had in flight is sent again: at least once). Inside one process the lock is shared by every
 * store open on the same file (flock is per open file description), as a restart is. */
struct outbox_lock {
  dev_t dev;
  ino_t ino;
  int fd;
  int refs;
};
#define OUTBOX_LOCKS_MAX 16
static struct outbox_lock outbox_locks[OUTBOX_LOCKS_MAX];
static pthread_mutex_t outbox_locks_mu = PTHREAD_MUTEX_INITIALIZER;

/* Takes (or, share_only, only shares) the lock of the file s->path is: true when the store now
 * holds it, *fresh when this process had not (the flock itself was taken: no other process
 * delivers now). A lock file that cannot be made (a read-only directory, another user's file)
 * leaves the process delivering, as when it is alone (logged once). */
static bool outbox_lock_take(struct sqlite_store *s, bool share_only, bool *fresh) {
  *fresh = false;
  struct stat st;
  char *real = realpath(s->path, NULL);
  if (!real || stat(real, &st) != 0) { /* no file to name a lock after: delivers, as alone */
    if (!s->outbox_lock_warned) {
      s->outbox_lock_warned = true;
      log_msg(LOG_WARNING,
              "sqlite: cannot resolve %s (%s): this process delivers the outbox without knowing "
              "whether another on the same database does",
              s->path, strerror(errno));
    }
    free(real);
    *fresh = !share_only;
    return !share_only;
  }
  bool held = false;
  pthread_mutex_lock(&outbox_locks_mu);
  for (int i = 0; !held && i < OUTBOX_LOCKS_MAX; i++)
    if (outbox_locks[i].refs > 0 && outbox_locks[i].dev == st.st_dev &&
        outbox_locks[i].ino == st.st_ino) {
      outbox_locks[i].refs++;
      held = true;
    }
  int slot = -1;
  for (int i = 0; !held && !share_only && slot < 0 && i < OUTBOX_LOCKS_MAX; i++)
    if (outbox_locks[i].refs == 0) slot = i;
  if (!held && !share_only && slot < 0) { /* 16 files in one process: delivers, as alone */
    pthread_mutex_unlock(&outbox_locks_mu);
    free(real);
    *fresh = true;
    return true;
  }
  if (slot >= 0) {
    size_t n = strlen(real) + sizeof "-outbox-lock";
    char *name = malloc(n);
    int fd = -1;
    if (name) {
      snprintf(name, n, "%s-outbox-lock", real);
      fd = open(name, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, st.st_mode & 0666);
    }
    if (fd < 0 && !s->outbox_lock_warned) {
      s->outbox_lock_warned = true;
      log_msg(LOG_WARNING,
              "sqlite: cannot open %s-outbox-lock (%s): this process delivers the outbox "
              "without knowing whether another on the same database does",
              real, name ? strerror(errno) : "out of memory");
    }
    free(name);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) == 0) {
      outbox_locks[slot] = (struct outbox_lock){st.st_dev, st.st_ino, fd, 1};
      held = *fresh = true;
    } else {
      close(fd);
    }
  }
  pthread_mutex_unlock(&outbox_locks_mu);
  free(real);
  if (held) {
    s->outbox_lock_dev = st.st_dev;
    s->outbox_lock_ino = st.st_ino;
  }
  return held;
}

/* At close: the store's share of the lock (the last share closes its file: the kernel drops the
 * flock). */
static void outbox_lock_release(struct sqlite_store *s) {
  if (!s->outbox_owner) return;
  pthread_mutex_lock(&outbox_locks_mu);
  for (int i = 0; i < OUTBOX_LOCKS_MAX; i++)
    if (outbox_locks[i].refs > 0 && outbox_locks[i].dev == s->outbox_lock_dev &&
        outbox_locks[i].ino == s->outbox_lock_ino) {
      if (--outbox_locks[i].refs == 0 && outbox_locks[i].fd >= 0) close(outbox_locks[i].fd);
      break;
    }
  pthread_mutex_unlock(&outbox_locks_mu);
}

/* Whether this process delivers the outbox, asking for it when not; on the writer thread, inside
 * a batch. Becoming the owner clears the leases in that batch (if it is rolled back, they run
 * out instead). */
static int outbox_owned(struct sqlite_store *s, bool *owned) {
  *owned = s->outbox_owner;
  if (*owned) return SQLITE_OK;
  /* at most once a second (the owner's tick): not a path resolution and an open per batch */
  int64_t now_ms = (int64_t)time_mono_ms();
  if (now_ms < s->outbox_next_try_ms) return SQLITE_OK;
  s->outbox_next_try_ms = now_ms + 1000;
  bool fresh = false;
  if (!outbox_lock_take(s, false, &fresh)) {
    if (!s->outbox_waiting) {
      s->outbox_waiting = true;
      log_msg(LOG_INFO,
              "sqlite: another process on this database delivers the outbox; this one takes "
              "over when it stops");
    }
    return SQLITE_OK;
  }
  s->outbox_owner = *owned = true;
  char err[256];
  /* another store of this process may hold leases and be live: only a fresh lock clears */
  if (fresh && !clear_leases(s, err, sizeof err)) {
    int rc = sqlite3_errcode(s->wdb);
    return rc != SQLITE_OK ? rc : SQLITE_ERROR;
  }
  if (s->outbox_waiting)
    log_msg(LOG_INFO, "sqlite: the process that delivered the outbox stopped; this one does now");
  return SQLITE_OK;
}

/* When this process becomes the outbox's owner: no lease held now is anyone's. */
static bool clear_leases(struct sqlite_store *s, char *err, size_t errlen) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->wdb,
                         "UPDATE sub_deliveries SET lease_owner = NULL, lease_until_us = 0, "
                         "next_at_us = ?1 WHERE lease_owner IS NOT NULL",
                         -1, &st, NULL) != SQLITE_OK) {
    snprintf(err, errlen, "DATABASE_URL: sqlite: %s", sqlite3_errmsg(s->wdb));
    return false;
  }
  sqlite3_bind_int64(st, 1, time_now_us());
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return (rc == SQLITE_DONE ||
          (snprintf(err, errlen, "DATABASE_URL: sqlite: %s", sqlite3_errmsg(s->wdb)), false)) &&
         exec(s->wdb,
              "UPDATE outbox_cursors SET lease_owner = NULL, lease_until_us = 0 "
              "WHERE lease_owner IS NOT NULL",
              err, errlen);
}

/* ---------- the outbox: reencrypt ---------- */

/* A sealable value of a row being resealed, opened (into the writer's open buffer) when sealed:
 * *v, *len then point at the plaintext. False when it does not open or is sealed yet not marked
 * so. */
static bool reseal_open_value(struct sqlite_store *s, const char *aad, size_t aad_len, bool sealed,
                              const void **v, size_t *len) {
  if (!*v) *v = "";
  if (!sealed) return !seal_is_sealed(*v, *len);
  size_t plain = seal_plain_len(*v, *len), got = 0;
  if (!store_seal_buf_reserve(&s->open_buf, plain + 1) ||
      !seal_open(s->ring, aad, aad_len, *v, *len, s->open_buf.data, &got) || got != plain)
    return false;
  *v = s->open_buf.data;
  *len = got;
  return true;
}

static int reseal_outbox(struct sqlite_store *s, const char *key, int64_t *bytes) {
  sqlite3_stmt *get = s->w_reseal_get[RESEAL_OUTBOX];
  bind_pk(get, 1, RESEAL_OUTBOX, key);
  int rc = sqlite3_step(get);
  if (rc != SQLITE_ROW) {
    ob_done(get);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  char event_id[OUTBOX_EVENT_ID_MAX], conv[MODEL_CONVERSATION_ID_MAX + 1];
  char account[MODEL_ACCOUNT_ID_MAX + 1];
  copy_text(event_id, sizeof event_id, sqlite3_column_text(get, 0));
  copy_text(conv, sizeof conv, sqlite3_column_text(get, 1));
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, "outbox_events.data", event_id, conv), len;
  const void *data = sqlite3_column_blob(get, 2);
  len = (size_t)sqlite3_column_bytes(get, 2);
  const char *acc;
  struct store_sealed_id sid = {.len = 0};
  bool ok =
      reseal_id(s, get, 4, 5, "conversations.account_id", conv, account, sizeof account, &acc) &&
      store_seal_id(s->ring, "conversations.account_id", conv, acc, &sid) &&
      reseal_open_value(s, aad, aad_len, sqlite3_column_type(get, 3) != SQLITE_NULL, &data, &len);
  const unsigned char *sealed =
      ok ? store_seal_into(&s->seal_buf, s->ring, aad, aad_len, data, len, &len) : NULL;
  ob_done(get);
  if (!sealed) {
    log_msg(LOG_ERROR, "reencrypt: outbox event %s does not open", key);
    return RESEAL_FAILED;
  }
  *bytes += (int64_t)len;
  sqlite3_stmt *put = s->w_reseal_put[RESEAL_OUTBOX];
  bind_pk(put, 1, RESEAL_OUTBOX, key);
  sqlite3_bind_blob64(put, 2, sealed, len, SQLITE_STATIC);
  sqlite3_bind_text(put, 3, s->key0, -1, SQLITE_STATIC);
  if (sid.len) {
    sqlite3_bind_text(put, 4, sid.index, STORE_INDEX_TEXT_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(put, 5, sid.sealed, (int)sid.len, SQLITE_STATIC);
  }
  return step_done(put);
}

static int reseal_subscription(struct sqlite_store *s, const char *id) {
  sqlite3_stmt *get = s->w_reseal_get[RESEAL_SUBS];
  sqlite3_bind_text(get, 1, id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(get);
  if (rc != SQLITE_ROW) {
    ob_done(get);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  char secret[OUTBOX_SECRET_MAX], account[MODEL_ACCOUNT_ID_MAX + 1];
  struct subscription sub; /* its id and URL, for bind_sub_url */
  snprintf(sub.id, sizeof sub.id, "%s", id);
  const char *acc;
  struct store_sealed_id sid = {.len = 0};
  bool ok =
      sub_secret_read(s->ring, get, 0, 1, id, secret, sizeof secret) &&
      sub_url_read(s->ring, get, 4, 5, id, sub.url, sizeof sub.url) &&
      reseal_id(s, get, 2, 3, "subscriptions.account_id", id, account, sizeof account, &acc) &&
      store_seal_id(s->ring, "subscriptions.account_id", id, acc, &sid);
  ob_done(get);
  if (!ok) {
    log_msg(LOG_ERROR, "reencrypt: the secret, URL or account of subscription %s does not open",
            id);
    return RESEAL_FAILED;
  }
  sqlite3_stmt *put = s->w_reseal_put[RESEAL_SUBS];
  struct store_seal_buf url = {0};
  rc = bind_sub_url(s, put, 7, 6, &sub, &url);
  if (rc == SQLITE_OK)
    rc = bind_sealable(s, put, 2, 3, "subscriptions.secret", id, NULL, secret, strlen(secret));
  memset(secret, 0, sizeof secret);
  if (rc != SQLITE_OK) {
    sqlite3_clear_bindings(put);
    store_seal_buf_free(&url);
    return rc;
  }
  sqlite3_bind_text(put, 1, id, -1, SQLITE_STATIC);
  if (sid.len) {
    sqlite3_bind_text(put, 4, sid.index, STORE_INDEX_TEXT_LEN, SQLITE_STATIC);
    sqlite3_bind_blob(put, 5, sid.sealed, (int)sid.len, SQLITE_STATIC);
  }
  rc = step_done(put);
  store_seal_buf_free(&url);
  return rc;
}

/* ---------- the outbox: readers ---------- */

#define SUB_COLUMNS                                                                             \
  "id, url, secret, event_types, account_id, account_sealed, enabled, paused, max_per_second, " \
  "disabled_reason, created_us, updated_us, last_success_us, sealed_with, url_sealed, "         \
  "CASE WHEN hold_until_us > CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER) "  \
  "THEN hold_until_us ELSE 0 END"

/* Health's counts stop here (store.h struct store_outbox_stats). */
#define OB_COUNT_CAP_SQL "100000"

static const char *const or_sql[OR_COUNT] = {
    [OR_SUB_GET] = "SELECT " SUB_COLUMNS " FROM subscriptions WHERE id = ?1",
    [OR_SUB_LIST] = "SELECT " SUB_COLUMNS " FROM subscriptions ORDER BY created_us, id",
    [OR_SUB_SECRET] = "SELECT secret, sealed_with FROM subscriptions WHERE id = ?1",
    [OR_ATTEMPTS] =
        "SELECT id, event_id, type, attempt, status_code, latency_ms, at_us, outcome, "
        "response_head FROM delivery_attempts WHERE sub_id = ?1 AND id < ?2 "
        "ORDER BY id DESC LIMIT ?3 OFFSET ?4",
    /* Counts stop at OB_COUNT_CAP (health reports that many as "at least"); the oldest pending
     * seq is each subscription's first pending row in its primary key's order. */
    /* Rows pending, and every subscription's events after its cursor that it wants (types,
     * and its account by the stored value: the blind index it was sealed with) and have no
     * row: the lane's not yet delivered, and those of one fan-out passes by (held: its URL or
     * account does not open), as PostgreSQL's outbox_stats_sql counts them; capped. An
     * estimate: the persisted cursor stays behind the oldest delivery in flight. */
    [OR_PENDING] =
        "SELECT MIN(" OB_COUNT_CAP_SQL
        ", (SELECT COUNT(*) FROM (SELECT 1 FROM sub_deliveries "
        "WHERE state = 0 LIMIT " OB_COUNT_CAP_SQL
        ")) + (SELECT COUNT(*) FROM (SELECT 1 FROM subscriptions s JOIN outbox_events e "
        "ON e.seq > s.cursor_seq AND ((s.event_types >> e.type) & 1) = 1 "
        "AND (s.account_id IS NULL OR e.account_id = s.account_id) "
        "WHERE NOT EXISTS (SELECT 1 FROM sub_deliveries d "
        "WHERE d.sub_id = s.id AND d.seq = e.seq) LIMIT " OB_COUNT_CAP_SQL
        "))), (SELECT MIN(x) FROM (SELECT (SELECT d.seq FROM sub_deliveries d "
        "WHERE d.sub_id = s.id AND +d.state = 0 ORDER BY d.seq LIMIT 1) AS x FROM subscriptions s "
        "UNION ALL SELECT (SELECT e.seq FROM outbox_events e WHERE e.seq > s.cursor_seq AND "
        "((s.event_types >> e.type) & 1) = 1 AND (s.account_id IS NULL OR "
        "e.account_id = s.account_id) ORDER BY e.seq LIMIT 1) FROM subscriptions s))",
    [OR_CREATED] = "SELECT created_us FROM outbox_events WHERE seq = ?1",
    [OR_DEAD] =
        "SELECT COUNT(*) FROM (SELECT 1 FROM sub_deliveries WHERE state = 1 LIMIT " OB_COUNT_CAP_SQL
        ")",
    [OR_CURSOR] = "SELECT seq FROM outbox_cursors WHERE name = ?1",
    [OR_QUEUE_COUNT] =
        "SELECT COUNT(*) FROM (SELECT 1 FROM outbox_events WHERE seq > ?1 LIMIT " OB_COUNT_CAP_SQL
        ")",
    [OR_QUEUE_OLDEST] = "SELECT created_us FROM outbox_events WHERE seq > ?1 ORDER BY seq LIMIT 1",
};

/* The reader's statement i, prepared on first use. */
static sqlite3_stmt *or_stmt(struct reader *r, enum ob_read_stmt i) {
  if (!r->ob[i]) (void)prepare(r->db, or_sql[i], &r->ob[i]);
  return r->ob[i];
}

static enum store_status read_sub(const struct seal_ring *ring, sqlite3_stmt *st,
                                  struct subscription *out) {
  memset(out, 0, sizeof *out);
  copy_text(out->id, sizeof out->id, sqlite3_column_text(st, 0));
  /* never the secret (store.h sub_secret): one that does not open cannot fail a read */
  /* nor does a URL or account that does not open: the subscription is read as unreadable (the
   * dispatcher holds it and says so once; GET shows it) */
  if (!sub_url_read(ring, st, 1, 14, out->id, out->url, sizeof out->url) ||
      !sub_account_read(ring, st, 4, 5, out->id, out->account_id, sizeof out->account_id)) {
    out->unreadable = true;
    out->url[0] = '\0';
    out->account_id[0] = '\0';
  }
  out->event_types = (unsigned)sqlite3_column_int64(st, 3);
  out->enabled = sqlite3_column_int(st, 6) != 0;
  out->paused = sqlite3_column_int(st, 7) != 0;
  out->max_per_second = sqlite3_column_int64(st, 8);
  copy_text(out->disabled_reason, sizeof out->disabled_reason, sqlite3_column_text(st, 9));
  out->created_us = sqlite3_column_int64(st, 10);
  out->updated_us = sqlite3_column_int64(st, 11);
  out->last_success_us = sqlite3_column_int64(st, 12);
  out->hold_until_us = sqlite3_column_int64(st, 15);
  return STORE_OK;
}

static enum store_status sqlite_sub_get(struct store *base, const char *id,
                                        struct subscription *out) {
  struct reader *r = reader_get((struct sqlite_store *)base);
  sqlite3_stmt *st = r ? or_stmt(r, OR_SUB_GET) : NULL;
  if (!st) return STORE_RETRY;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  enum store_status result = rc == SQLITE_ROW    ? read_sub(r->ring, st, out)
                             : rc == SQLITE_DONE ? STORE_NOT_FOUND
                                                 : status_of(rc);
  ob_done(st);
  return result;
}

static enum store_status sqlite_sub_list(struct store *base, struct subscription **out,
                                         size_t *count) {
  *out = NULL;
  *count = 0;
  struct reader *r = reader_get((struct sqlite_store *)base);
  sqlite3_stmt *st = r ? or_stmt(r, OR_SUB_LIST) : NULL;
  if (!st) return STORE_RETRY;
  size_t cap = 0;
  enum store_status result = STORE_OK;
  int rc = SQLITE_DONE;
  while (result == STORE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (*count == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      struct subscription *more = realloc(*out, ncap * sizeof *more);
      if (!more) {
        result = STORE_RETRY;
        break;
      }
      *out = more;
      cap = ncap;
    }
    result = read_sub(r->ring, st, &(*out)[(*count)++]);
  }
  if (result == STORE_OK && rc != SQLITE_DONE) result = status_of(rc);
  ob_done(st);
  if (result != STORE_OK) {
    free(*out);
    *out = NULL;
    *count = 0;
  }
  return result;
}

static enum store_status sqlite_sub_secret(struct store *base, const char *id, char *out) {
  out[0] = '\0';
  struct reader *r = reader_get((struct sqlite_store *)base);
  sqlite3_stmt *st = r ? or_stmt(r, OR_SUB_SECRET) : NULL;
  if (!st) return STORE_RETRY;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  enum store_status result =
      rc == SQLITE_ROW
          ? (sub_secret_read(r->ring, st, 0, 1, id, out, OUTBOX_SECRET_MAX) ? STORE_OK : STORE_HARD)
      : rc == SQLITE_DONE ? STORE_NOT_FOUND
                          : status_of(rc);
  ob_done(st);
  if (result != STORE_OK) memset(out, 0, OUTBOX_SECRET_MAX);
  return result;
}

static enum store_status sqlite_attempt_list(struct store *base, const char *sub_id,
                                             int64_t before_id, int64_t skip, int64_t limit,
                                             struct store_attempt_page *out) {
  out->items = NULL;
  out->count = 0;
  struct reader *r = reader_get((struct sqlite_store *)base);
  sqlite3_stmt *st = r ? or_stmt(r, OR_ATTEMPTS) : NULL;
  if (!st) return STORE_RETRY;
  limit = clamp_limit(limit, 1001);
  sqlite3_bind_text(st, 1, sub_id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, before_id > 0 ? before_id : INT64_MAX);
  sqlite3_bind_int64(st, 3, limit);
  sqlite3_bind_int64(st, 4, skip > 0 ? skip : 0);
  enum store_status result = STORE_OK;
  size_t cap = 0;
  int rc = SQLITE_DONE;
  while ((int64_t)out->count < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (out->count == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      struct store_attempt *more = realloc(out->items, ncap * sizeof *more);
      if (!more) {
        result = STORE_RETRY;
        break;
      }
      out->items = more;
      cap = ncap;
    }
    struct store_attempt *a = &out->items[out->count++];
    memset(a, 0, sizeof *a);
    a->id = sqlite3_column_int64(st, 0);
    copy_text(a->event_id, sizeof a->event_id, sqlite3_column_text(st, 1));
    a->type = sqlite3_column_int(st, 2);
    a->attempt = sqlite3_column_int(st, 3);
    a->status_code = sqlite3_column_int(st, 4);
    a->latency_ms = sqlite3_column_int64(st, 5);
    a->at_us = sqlite3_column_int64(st, 6);
    a->outcome = sqlite3_column_int(st, 7);
    copy_text(a->response_head, sizeof a->response_head, sqlite3_column_text(st, 8));
  }
  if (result == STORE_OK && rc != SQLITE_ROW && rc != SQLITE_DONE) result = status_of(rc);
  ob_done(st);
  if (result != STORE_OK) {
    free(out->items);
    out->items = NULL;
    out->count = 0;
  }
  return result;
}

/* Steps st (bound) for one row of integers: cols into v (NULL columns 0). */
static int or_ints(sqlite3_stmt *st, int64_t *v, int cols) {
  int rc = sqlite3_step(st);
  for (int i = 0; i < cols; i++) v[i] = rc == SQLITE_ROW ? sqlite3_column_int64(st, i) : 0;
  sqlite3_reset(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static enum store_status sqlite_outbox_stats(struct store *base, const char *cursor_name,
                                             struct store_outbox_stats *out) {
  memset(out, 0, sizeof *out);
  out->count_cap = atoll(OB_COUNT_CAP_SQL);
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  for (int i = OR_PENDING; i <= OR_QUEUE_OLDEST; i++)
    if (!or_stmt(r, (enum ob_read_stmt)i)) return STORE_RETRY;
  /* One read transaction: numbers of one moment. */
  if (sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return STORE_RETRY;
  int64_t v[2];
  int rc = or_ints(r->ob[OR_PENDING], v, 2);
  out->pending_deliveries = v[0];
  if (rc == SQLITE_OK && v[0]) {
    sqlite3_bind_int64(r->ob[OR_CREATED], 1, v[1]);
    rc = or_ints(r->ob[OR_CREATED], &out->oldest_pending_us, 1);
  }
  if (rc == SQLITE_OK) rc = or_ints(r->ob[OR_DEAD], &out->dead_letters, 1);
  if (rc == SQLITE_OK && cursor_name) {
    int64_t cursor;
    sqlite3_bind_text(r->ob[OR_CURSOR], 1, cursor_name, -1, SQLITE_STATIC);
    rc = or_ints(r->ob[OR_CURSOR], &cursor, 1);
    for (int i = OR_QUEUE_COUNT; rc == SQLITE_OK && i <= OR_QUEUE_OLDEST; i++) {
      sqlite3_bind_int64(r->ob[i], 1, cursor);
      rc = or_ints(r->ob[i], i == OR_QUEUE_COUNT ? &out->queue_backlog : &out->oldest_queue_us, 1);
    }
  }
  for (int i = OR_PENDING; i <= OR_QUEUE_OLDEST; i++) sqlite3_clear_bindings(r->ob[i]);
  sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
  return rc == SQLITE_OK ? STORE_OK : status_of(rc);
}

static void sqlite_set_outbox_notify(struct store *base, void (*notify)(void *cls), void *cls) {
  struct sqlite_store *s = (struct sqlite_store *)base;
  s->notify = notify;
  s->notify_cls = cls;
}

static void sqlite_set_outbox_broker(struct store *base, bool on) {
  atomic_store(&((struct sqlite_store *)base)->ob_broker, on); /* read by the writer */
}

/* ---------- lifecycle ---------- */

static void writer_finalize(struct sqlite_store *s) {
  sqlite3_stmt *all[] = {s->w_find,       s->w_ins_delivery, s->w_upsert,      s->w_probe,
                         s->w_begin,      s->w_commit,       s->w_rollback,    s->w_find_event,
                         s->w_ins_event,  s->w_del_chunks,   s->w_put_audio,   s->w_ins_chunk,
                         s->w_key_ins,    s->w_key_revoke,   s->w_key_touch,   s->w_old_convs,
                         s->w_old_events, s->w_old_audio,    s->w_audit_head,  s->w_audit_ins,
                         s->w_audit_set,  s->w_record_key,   s->w_reseal_left, s->w_retire_keys};
  for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) sqlite3_finalize(all[i]);
  for (int i = 0; i < ERASE_STEPS; i++) sqlite3_finalize(s->w_erase[i]);
  for (int i = 0; i < OB_COUNT; i++) sqlite3_finalize(s->ob[i]);
  for (int l = 0; l < ROLLUP_LEVELS; l++) {
    sqlite3_finalize(s->w_roll_put[l][0]);
    sqlite3_finalize(s->w_roll_put[l][1]);
    sqlite3_finalize(s->w_roll_del[l]);
  }
  rollup_map_free(&s->roll);
  for (int t = 0; t < RESEAL_TABLES; t++) {
    sqlite3_finalize(s->w_reseal_scan[t]);
    sqlite3_finalize(s->w_reseal_get[t]);
    sqlite3_finalize(s->w_reseal_put[t]);
  }
}

static void sqlite_close(struct store *base) {
  struct sqlite_store *s = (struct sqlite_store *)base;
  write_queue_stop(&s->queue);
  if (s->writer_started) pthread_join(s->writer, NULL);
  stop_checkpointer(s);
  thread_slot_destroy(&s->readers, reader_release);
  writer_finalize(s);
  sqlite3_close(s->wdb);
  write_queue_destroy(&s->queue);
  pthread_mutex_destroy(&s->ckpt_mu);
  pthread_cond_destroy(&s->ckpt_cv);
  pthread_cond_destroy(&s->gate_cv);
  free(s->audio_buf);
  store_seal_buf_free(&s->seal_buf);
  store_seal_buf_free(&s->open_buf);
  lanes_free(&s->lane);
  store_unopened_free(&s->unopened);
  outbox_lock_release(s);
  free(s->path);
  free(s);
}

/* ---------- the audit log (readers) ---------- */

static const char *const audit_filter_sql[AUDIT_FILTERS] = {" AND at_us >= ?2 AND id >= ?8",
                                                            " AND at_us < ?3", " AND key_id = ?4",
                                                            " AND action = ?5", " AND target = ?6"};

/* The WHERE terms of the partial index audit_log_action (migration 0019), repeated word for
 * word in a query filtering on a rare action: SQLite uses a partial index only when the query's
 * WHERE holds its terms (a bound value does not prove it). */
#define AUDIT_RARE_ACTION_SQL                                                          \
  " AND action <> 'webhook.accepted' AND action <> 'conversation.read' AND action <> " \
  "'conversation.list' AND action <> 'conversation.audio' AND action <> 'conversation.export'"

/* Whether audit_log_action holds the entries of action a. */
static bool audit_action_indexed(enum audit_action a) {
  return a != AUDIT_WEBHOOK_ACCEPTED && a != AUDIT_CONVERSATION_READ &&
         a != AUDIT_CONVERSATION_LIST && a != AUDIT_CONVERSATION_AUDIO &&
         a != AUDIT_CONVERSATION_EXPORT;
}

/* The statement of one combination of filters and order, prepared on first use. Numbered
 * parameters: every value is bound whatever the variant (an index the statement lacks is
 * ignored), ?1 the cursor, ?7 the limit, ?8 the first id since may hold (audit_since_id). */
static sqlite3_stmt *audit_statement(struct reader *r, unsigned variant) {
  if (r->audit[variant]) return r->audit[variant];
  bool newest_first = variant & (1u << AUDIT_FILTERS);
  char sql[768];
  size_t pos = (size_t)snprintf(sql, sizeof sql, "SELECT " AUDIT_COLUMNS " FROM audit_log WHERE %s",
                                newest_first ? "id < ?1" : "id > ?1");
  for (unsigned i = 0; i < AUDIT_FILTERS; i++)
    if (variant & (1u << i))
      pos += (size_t)snprintf(sql + pos, sizeof sql - pos, "%s", audit_filter_sql[i]);
  if (variant & (2u << AUDIT_FILTERS))
    pos += (size_t)snprintf(sql + pos, sizeof sql - pos, "%s", AUDIT_RARE_ACTION_SQL);
  snprintf(sql + pos, sizeof sql - pos, " ORDER BY id%s LIMIT ?7", newest_first ? " DESC" : "");
  if (prepare(r->db, sql, &r->audit[variant]) != SQLITE_OK) return NULL;
  return r->audit[variant];
}

/* Column col's text into dst (cap bytes with its NUL); its stored bytes are all kept or the
 * entry is marked damaged: longer than the field, or holding a NUL (which a C string would cut
 * off, hiding an append from the hash). */
static const char *audit_text(sqlite3_stmt *st, int col, char *dst, size_t cap,
                              struct audit_entry *e) {
  const unsigned char *v = sqlite3_column_text(st, col);
  size_t n = v ? (size_t)sqlite3_column_bytes(st, col) : 0;
  if (n >= cap || (n && memchr(v, 0, n))) e->damaged = true;
  if (n >= cap) n = cap - 1;
  if (n) memcpy(dst, v, n);
  dst[n] = '\0';
  return dst;
}

/* A row as stored, whatever it holds: a row edited by hand (an unknown action, a hash of the
 * wrong length, a text longer than its field or with a NUL inside) comes back as far as it
 * fits, marked damaged when it did not fit, for audit_chain_verify to report. */
static void read_audit_row(sqlite3_stmt *st, struct audit_entry *e) {
  char name[40];
  memset(e, 0, sizeof *e);
  e->id = sqlite3_column_int64(st, 0);
  e->at_us = sqlite3_column_int64(st, 1);
  audit_text(st, 2, e->who.request_id, sizeof e->who.request_id, e);
  audit_text(st, 3, e->who.key_id, sizeof e->who.key_id, e);
  audit_text(st, 4, e->who.client_ip, sizeof e->who.client_ip, e);
  int a = audit_action_named(audit_text(st, 5, name, sizeof name, e));
  e->action = a < 0 ? AUDIT_ACTION_COUNT : (enum audit_action)a;
  audit_text(st, 6, e->target, sizeof e->target, e);
  int o = audit_outcome_named(audit_text(st, 7, name, sizeof name, e));
  e->outcome = o < 0 ? AUDIT_OUTCOME_COUNT : (enum audit_outcome)o;
  e->count = sqlite3_column_int64(st, 8);
  const void *hash = sqlite3_column_blob(st, 9);
  int n = sqlite3_column_bytes(st, 9);
  if (n != AUDIT_HASH_LEN) e->damaged = true;
  if (hash && n > 0) memcpy(e->hash, hash, n < AUDIT_HASH_LEN ? (size_t)n : AUDIT_HASH_LEN);
}

static enum store_status read_audit_rows(sqlite3_stmt *st, int64_t limit,
                                         struct store_audit_page *out) {
  size_t cap = 0;
  int rc = SQLITE_DONE;
  while ((int64_t)out->count < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (out->count == cap) {
      size_t ncap = cap ? cap * 2 : (limit < 64 ? (size_t)limit : 64);
      struct audit_entry *items = realloc(out->items, ncap * sizeof *items);
      if (!items) return STORE_RETRY;
      out->items = items;
      cap = ncap;
    }
    read_audit_row(st, &out->items[out->count++]);
  }
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? STORE_OK : status_of(rc);
}

/* The first id whose at_max_us reaches since: no entry before it is at or after since (at_max_us
 * never decreases along the chain). A binary search over ids, each step the first entry at or
 * after an id (entries removed by hand leave holes). Entries appended meanwhile come after it. */
static enum store_status audit_since_id(struct reader *r, int64_t since, int64_t *first) {
  int rc = sqlite3_step(r->audit_head);
  int64_t last_id = rc == SQLITE_ROW ? sqlite3_column_int64(r->audit_head, 0) : 0;
  sqlite3_reset(r->audit_head);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return status_of(rc);
  int64_t lo = 1, hi = last_id + 1; /* the answer is in [lo, hi] */
  sqlite3_stmt *st = r->audit_at_max;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    sqlite3_bind_int64(st, 1, mid);
    rc = sqlite3_step(st);
    bool reaches = rc != SQLITE_ROW || sqlite3_column_int64(st, 1) >= since;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return status_of(rc);
    if (reaches)
      hi = mid;
    else
      lo = mid + 1;
  }
  *first = lo;
  return STORE_OK;
}

static enum store_status sqlite_audit_list(struct store *base, const struct store_audit_filter *f,
                                           struct store_audit_page *out) {
  out->items = NULL;
  out->count = 0;
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  const char *action = f->action >= 0 ? audit_action_name((enum audit_action)f->action) : NULL;
  if (f->action >= 0 && !action) return STORE_OK; /* no entry has an unknown action */
  int64_t limit = f->limit < 1 ? 1 : f->limit > 1001 ? 1001 : f->limit;
  unsigned variant = (f->since_us ? 1u : 0) | (f->until_us ? 2u : 0) | (f->key_id ? 4u : 0) |
                     (action ? 8u : 0) | (f->target ? 16u : 0) |
                     (f->newest_first ? 1u << AUDIT_FILTERS : 0) |
                     /* a target's own index is the better one when there is a target */
                     (action && !f->target && audit_action_indexed((enum audit_action)f->action)
                          ? 2u << AUDIT_FILTERS
                          : 0);
  int64_t since_id = 0;
  if (f->since_us) {
    enum store_status found = audit_since_id(r, f->since_us, &since_id);
    if (found != STORE_OK) return found;
  }
  sqlite3_stmt *st = audit_statement(r, variant);
  if (!st) return STORE_HARD;
  sqlite3_bind_int64(st, 1, f->newest_first && f->cursor <= 0 ? INT64_MAX : f->cursor);
  sqlite3_bind_int64(st, 2, f->since_us);
  sqlite3_bind_int64(st, 3, f->until_us);
  sqlite3_bind_text(st, 4, f->key_id ? f->key_id : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, action ? action : "", -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 6, f->target ? f->target : "", -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 7, limit);
  sqlite3_bind_int64(st, 8, since_id);
  enum store_status result = read_audit_rows(st, limit, out);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (result != STORE_OK) {
    free(out->items);
    out->items = NULL;
    out->count = 0;
  }
  return result;
}

static enum store_status sqlite_audit_head(struct store *base, int64_t *last_id,
                                           unsigned char hash[AUDIT_HASH_LEN]) {
  *last_id = 0;
  memset(hash, 0, AUDIT_HASH_LEN);
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  int rc = sqlite3_step(r->audit_head);
  if (rc == SQLITE_ROW) {
    *last_id = sqlite3_column_int64(r->audit_head, 0);
    int n = sqlite3_column_bytes(r->audit_head, 1);
    const void *h = sqlite3_column_blob(r->audit_head, 1);
    if (h && n > 0) memcpy(hash, h, n < AUDIT_HASH_LEN ? (size_t)n : AUDIT_HASH_LEN);
  }
  sqlite3_reset(r->audit_head);
  /* No head row (removed by hand): as an empty log's, which verify sees not to match. */
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? STORE_OK : status_of(rc);
}

static enum store_status sqlite_secret(struct store *base, const char *name,
                                       unsigned char out[STORE_SECRET_LEN]) {
  struct reader *r = reader_get((struct sqlite_store *)base);
  if (!r) return STORE_RETRY;
  sqlite3_stmt *st = NULL;
  int rc =
      sqlite3_prepare_v2(r->db, "SELECT value FROM service_secrets WHERE name = ?1", -1, &st, NULL);
  if (rc != SQLITE_OK) return status_of(rc);
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  enum store_status res = STORE_NOT_FOUND;
  if (rc == SQLITE_ROW) {
    const void *v = sqlite3_column_blob(st, 0);
    if (v && sqlite3_column_bytes(st, 0) == STORE_SECRET_LEN) {
      memcpy(out, v, STORE_SECRET_LEN);
      res = STORE_OK;
    }
  } else if (rc != SQLITE_DONE) {
    res = status_of(rc);
  }
  sqlite3_finalize(st);
  return res;
}

/* ---------- encryption at rest: the keys in use ---------- */

/* Checks one recorded key (id, check value) against ring; a refusal's line into err. Every
 * recorded key must be in the ring: a key is recorded by every writer that seals with it and
 * retired only by a finished gensendrep reencrypt that found no row left under any other key,
 * never at a start (which could race an instance sealing with it). */
static enum store_status key_usable(const struct seal_ring *ring, const char *id, const void *check,
                                    size_t len, char *err, size_t errlen) {
  if (!ring) {
    snprintf(err, errlen,
             "ENCRYPTION_KEYS is not set, but the database's data is sealed (key %s): set "
             "ENCRYPTION_KEYS with that key",
             id);
    return STORE_HARD;
  }
  if (!seal_ring_has(ring, id)) {
    snprintf(err, errlen,
             "ENCRYPTION_KEYS lacks key %s, which this database's data may be sealed with: add it "
             "(a key goes only after gensendrep reencrypt has moved every row off it)",
             id);
    return STORE_HARD;
  }
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, "seal_keys.check_value", id, NULL), got = 0;
  unsigned char plain[sizeof STORE_SEAL_CHECK];
  if (seal_plain_len(check, len) != sizeof STORE_SEAL_CHECK - 1 ||
      !seal_open(ring, aad, aad_len, check, len, plain, &got) ||
      got != sizeof STORE_SEAL_CHECK - 1 || memcmp(plain, STORE_SEAL_CHECK, got) != 0) {
    snprintf(err, errlen,
             "ENCRYPTION_KEYS: key %s is not the key the database's data was sealed with (same "
             "id, other bytes)",
             id);
    return STORE_HARD;
  }
  return STORE_OK;
}

/* ring's first key's check value into check (CHECK_VALUE_MAX bytes); its length, 0 on failure. */
static size_t key0_check_value(const struct seal_ring *ring, unsigned char *check) {
  const char *id = seal_ring_key_id(ring, 0);
  char aad[STORE_AAD_MAX];
  size_t aad_len = store_seal_aad(aad, "seal_keys.check_value", id, NULL);
  size_t len = seal_sealed_len(ring, sizeof STORE_SEAL_CHECK - 1);
  if (len > CHECK_VALUE_MAX ||
      !seal_seal(ring, aad, aad_len, STORE_SEAL_CHECK, sizeof STORE_SEAL_CHECK - 1, check))
    return 0;
  return len;
}

/* Records ring's first key (with its check value) unless it is recorded already. */
static int record_key(sqlite3 *db, const struct seal_ring *ring) {
  const char *id = seal_ring_key_id(ring, 0);
  unsigned char check[CHECK_VALUE_MAX];
  size_t len = key0_check_value(ring, check);
  if (!len) return SQLITE_ERROR;
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "INSERT INTO seal_keys (key_id, check_value, added_us) "
                              "VALUES (?1, ?2, ?3) ON CONFLICT (key_id) DO NOTHING",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, check, (int)len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, time_now_us());
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* A recorded key, read whole before any is checked (checking may retire one). */
struct recorded_key {
  char id[SEAL_KEY_ID_MAX + 1];
  unsigned char check[CHECK_VALUE_MAX];
  size_t len; /* 0: a check value of no possible length, which opens under no key */
};

static int read_keys(sqlite3 *db, struct recorded_key *keys, size_t cap, size_t *n) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "SELECT key_id, check_value FROM seal_keys ORDER BY added_us", -1,
                              &st, NULL);
  if (rc != SQLITE_OK) return rc;
  *n = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < cap) {
    struct recorded_key *k = &keys[(*n)++];
    copy_text(k->id, sizeof k->id, sqlite3_column_text(st, 0));
    k->len = (size_t)sqlite3_column_bytes(st, 1);
    if (k->len > sizeof k->check) k->len = 0;
    if (k->len) memcpy(k->check, sqlite3_column_blob(st, 1), k->len);
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc == SQLITE_ROW ? SQLITE_TOOBIG : rc;
}

/* Every recorded key must be in ring and be the same key; then ring's first is recorded. On its own
 * connection, in one IMMEDIATE transaction (several processes may start at once; no write lands
 * between the check and the record). */
static enum store_status check_keys(struct sqlite_store *s, const struct seal_ring *ring, char *err,
                                    size_t errlen) {
  sqlite3 *db = NULL;
  struct recorded_key keys[SEAL_KEYS_MAX * 4];
  size_t n = 0;
  enum store_status result = STORE_RETRY;
  int rc = SQLITE_ERROR;
  if (open_conn(s->path, &db) == SQLITE_OK &&
      sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK &&
      (rc = read_keys(db, keys, sizeof keys / sizeof keys[0], &n)) == SQLITE_OK)
    result = STORE_OK;
  if (rc == SQLITE_TOOBIG) {
    snprintf(err, errlen,
             "ENCRYPTION_KEYS: the database records more than %zu encryption keys (table "
             "seal_keys): not a database this version can check",
             sizeof keys / sizeof keys[0]);
    result = STORE_HARD;
  }
  for (size_t i = 0; result == STORE_OK && i < n; i++)
    result = key_usable(ring, keys[i].id, keys[i].check, keys[i].len, err, errlen);
  if (result == STORE_OK && ring && record_key(db, ring) != SQLITE_OK) result = STORE_RETRY;
  if (result == STORE_OK && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
    result = STORE_RETRY;
  if (result == STORE_RETRY)
    snprintf(err, errlen, "DATABASE_URL: sqlite: cannot check the encryption keys in use: %s",
             db ? sqlite3_errmsg(db) : "out of memory");
  if (db && !sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(db);
  return result;
}

static enum store_status sqlite_set_ring(struct store *base, const struct seal_ring *ring,
                                         char *err, size_t errlen) {
  struct sqlite_store *s = (struct sqlite_store *)base;
  enum store_status st = check_keys(s, ring, err, errlen);
  if (st != STORE_OK) return st;
  /* Before any read or write (store.h): the writer thread is idle (its connection unused until
   * a write is queued), readers open after this. */
  if (ring) {
    char ignored[8];
    /* (a change of temp_store drops the connection's temporary triggers: made again) */
    if (!exec(s->wdb, KEEP_TEMP_IN_MEMORY, ignored, sizeof ignored) ||
        !exec(s->wdb, roll_triggers_sql, ignored, sizeof ignored)) {
      snprintf(err, errlen, "DATABASE_URL: sqlite: %s", sqlite3_errmsg(s->wdb));
      return STORE_RETRY;
    }
    snprintf(s->key0, sizeof s->key0, "%s", seal_ring_key_id(ring, 0));
    if (!(s->key0_check_len = key0_check_value(ring, s->key0_check))) {
      snprintf(err, errlen, "ENCRYPTION_KEYS: cannot seal with key %s", s->key0);
      return STORE_HARD;
    }
  }
  s->ring = ring;
  return STORE_OK;
}

static const struct store_ops sqlite_ops = {
    .name = "sqlite",
    .submit = sqlite_submit,
    .get = sqlite_get,
    .list = sqlite_list,
    .ping_read = sqlite_ping_read,
    .events = sqlite_events,
    .audio_read = sqlite_audio_read,
    .key_get = sqlite_key_get,
    .key_list = sqlite_key_list,
    .audit_list = sqlite_audit_list,
    .audit_head = sqlite_audit_head,
    .secret = sqlite_secret,
    .set_ring = sqlite_set_ring,
    .sub_get = sqlite_sub_get,
    .sub_list = sqlite_sub_list,
    .sub_secret = sqlite_sub_secret,
    .attempt_list = sqlite_attempt_list,
    .outbox_stats = sqlite_outbox_stats,
    .set_outbox_notify = sqlite_set_outbox_notify,
    .set_outbox_broker = sqlite_set_outbox_broker,
    .analytics_scan = sqlite_analytics_scan,
    .analytics_account_name = sqlite_analytics_account_name,
    .analytics_account_names = sqlite_analytics_account_names,
    .analytics_rebuild = rollup_rebuild_wait,
    .close = sqlite_close,
};

/* The writer's connection writes the log in large writes (sqlite_walbuf.h), which needs the log
 * synced at every commit: synchronous stays FULL on it. */
static bool open_writer(struct sqlite_store *s, char *err, size_t errlen) {
  if (open_conn_vfs(s->path, &s->wdb, sqlite_walbuf_vfs()) != SQLITE_OK) {
    snprintf(err, errlen, "DATABASE_URL: cannot open %s: %s", s->path,
             s->wdb ? sqlite3_errmsg(s->wdb) : "out of memory");
    return false;
  }
  /* The checkpointer does all checkpoints; a log file that grew far past its usual size
   * (readers kept it from restarting) is cut back to 16 MiB when it restarts. */
  if (!set_wal(s->wdb, err, errlen) || !exec(s->wdb, "PRAGMA synchronous = FULL", err, errlen) ||
      !exec(s->wdb, "PRAGMA foreign_keys = ON", err, errlen) ||
      !exec(s->wdb, "PRAGMA secure_delete = ON", err, errlen) ||
      !exec(s->wdb, "PRAGMA wal_autocheckpoint = 0", err, errlen) ||
      !exec(s->wdb, "PRAGMA journal_size_limit = 16777216", err, errlen) ||
      !exec(s->wdb, "PRAGMA cache_size = -16384", err, errlen) || !migrate(s->wdb, err, errlen))
    return false;
  /* Opened again in a process that delivers this file's outbox (a restart in place): it shares
   * the lock and, as a restart, clears the leases. */
  bool fresh;
  if (outbox_lock_take(s, true, &fresh)) {
    s->outbox_owner = true;
    if (!clear_leases(s, err, errlen)) return false;
  }
  if (!crypto_random_hex(s->owner, sizeof s->owner, 8)) {
    snprintf(err, errlen, "cannot draw the store's random lease owner id");
    return false;
  }
  if (!prepare_writer(s)) {
    snprintf(err, errlen, "DATABASE_URL: sqlite: %s", sqlite3_errmsg(s->wdb));
    return false;
  }
  return roll_rebuild_if_due(s, err, errlen);
}

/* SQLite keeps no memory statistics: nothing here reads them, and keeping them took a global
 * mutex on every allocation and free, some 4% of the writer's time (issue 12). Process-wide,
 * before SQLite's first use (later, SQLite refuses it and nothing changes). */
static void sqlite_no_memstatus(void) { (void)sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); }

struct store *store_sqlite_open(const char *path, char *err, size_t errlen) {
  static pthread_once_t configured = PTHREAD_ONCE_INIT;
  if (!make_parent_dirs(path, err, errlen)) return NULL;
  pthread_once(&configured, sqlite_no_memstatus);
  if (!sqlite_pcache_install()) log_msg(LOG_DEBUG, "sqlite: the default page cache stays as it is");
  /* (after the two above: it initialises SQLite) */
  if (!sqlite_walbuf_vfs()) log_msg(LOG_DEBUG, "sqlite: the log is written frame by frame");
  struct sqlite_store *s = calloc(1, sizeof *s);
  if (!s || !(s->path = strdup(path)) || !(s->audio_buf = malloc(STORE_AUDIO_CHUNK_BYTES))) {
    if (s) free(s->path);
    free(s);
    snprintf(err, errlen, "DATABASE_URL: out of memory");
    return NULL;
  }
  if (!thread_slot_init(&s->readers)) {
    free(s->path);
    free(s);
    snprintf(err, errlen, "DATABASE_URL: cannot create a per-thread connection slot");
    return NULL;
  }
  s->base.ops = &sqlite_ops;
  /* The log may hold pages of an erasure the last run committed but had not cut yet (a crash):
   * the first checkpoint round empties it. */
  s->ckpt_truncate = true;
  write_queue_init(&s->queue, BATCH_MAX);
  pthread_mutex_init(&s->ckpt_mu, NULL);
  pthread_cond_init(&s->ckpt_cv, NULL);
  pthread_cond_init(&s->gate_cv, NULL);
  if (!open_writer(s, err, errlen)) {
    sqlite_close(&s->base);
    return NULL;
  }
  if (pthread_create(&s->writer, NULL, writer_main, s) != 0) {
    snprintf(err, errlen, "cannot start the database writer thread");
    sqlite_close(&s->base);
    return NULL;
  }
  pthread_setname_np(s->writer, "gsr-writer");
  s->writer_started = true;
  if (!start_checkpointer(s, err, errlen)) {
    sqlite_close(&s->base);
    return NULL;
  }
  return &s->base;
}
