/* Unit tests for store/sqlite_walbuf: a writer connection on the buffering VFS, readers and a
 * checkpointer on the default one, as the store runs them. Every committed row must be in the
 * file when the commit returns (a child process that commits and dies without closing loses
 * nothing), readers must see each commit at once, transactions larger than the buffer, spilled
 * to the log and rolled back, must leave a sound database, and the log restarted, truncated and
 * checkpointed under the writer must read back the same, and a second writer's commit must
 * survive the first one's rolled-back transaction. And the frames must in fact go out in fewer
 * writes than SQLite asked for. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/sqlite_walbuf.h"

static char dir[] = "/tmp/gsr-walbuf-XXXXXX";

/* ---------- a default VFS that can fail the log's buffer writes ----------
 * Registered as the default before the buffering VFS wraps it: files open in place on the unix
 * VFS, but a log's writes larger than one frame (the buffer's) fail with SQLITE_FULL while
 * fail_flushes > 0. */

struct faulty_file {
  sqlite3_file base;
  sqlite3_file *real;
};

static sqlite3_vfs *unix_vfs;
static sqlite3_vfs faulty;
static sqlite3_io_methods faulty_methods;
static const sqlite3_io_methods *unix_methods;
static int fail_flushes;
static unsigned long log_calls, last_log_write, last_log_sync; /* order of the log's calls */

static int f_write(sqlite3_file *f, const void *data, int n, sqlite3_int64 off) {
  struct faulty_file *p = (struct faulty_file *)f;
  if (fail_flushes > 0 && n > 4200) {
    fail_flushes--;
    return SQLITE_FULL;
  }
  last_log_write = ++log_calls;
  return unix_methods->xWrite(p->real, data, n, off);
}

static int f_sync(sqlite3_file *f, int flags) {
  last_log_sync = ++log_calls;
  return unix_methods->xSync(((struct faulty_file *)f)->real, flags);
}

#define PASS(name, args, call) \
  static int name args { return unix_methods->call; }
PASS(f_close, (sqlite3_file * f), xClose(((struct faulty_file *)f)->real))
PASS(f_read, (sqlite3_file * f, void *o, int n, sqlite3_int64 off),
     xRead(((struct faulty_file *)f)->real, o, n, off))
PASS(f_truncate, (sqlite3_file * f, sqlite3_int64 n), xTruncate(((struct faulty_file *)f)->real, n))
PASS(f_size, (sqlite3_file * f, sqlite3_int64 *n), xFileSize(((struct faulty_file *)f)->real, n))
PASS(f_lock, (sqlite3_file * f, int l), xLock(((struct faulty_file *)f)->real, l))
PASS(f_unlock, (sqlite3_file * f, int l), xUnlock(((struct faulty_file *)f)->real, l))
PASS(f_reserved, (sqlite3_file * f, int *o), xCheckReservedLock(((struct faulty_file *)f)->real, o))
PASS(f_fcntl, (sqlite3_file * f, int op, void *a),
     xFileControl(((struct faulty_file *)f)->real, op, a))
PASS(f_sector, (sqlite3_file * f), xSectorSize(((struct faulty_file *)f)->real))
PASS(f_chars, (sqlite3_file * f), xDeviceCharacteristics(((struct faulty_file *)f)->real))

static int f_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out) {
  (void)v;
  if (!(flags & SQLITE_OPEN_WAL)) return unix_vfs->xOpen(unix_vfs, name, f, flags, out);
  struct faulty_file *p = (struct faulty_file *)f;
  p->real = (sqlite3_file *)(p + 1);
  int rc = unix_vfs->xOpen(unix_vfs, name, p->real, flags, out);
  if (rc != SQLITE_OK) {
    p->base.pMethods = NULL;
    return rc;
  }
  unix_methods = p->real->pMethods;
  faulty_methods = (sqlite3_io_methods){.iVersion = 1,
                                        .xClose = f_close,
                                        .xRead = f_read,
                                        .xWrite = f_write,
                                        .xTruncate = f_truncate,
                                        .xSync = f_sync,
                                        .xFileSize = f_size,
                                        .xLock = f_lock,
                                        .xUnlock = f_unlock,
                                        .xCheckReservedLock = f_reserved,
                                        .xFileControl = f_fcntl,
                                        .xSectorSize = f_sector,
                                        .xDeviceCharacteristics = f_chars};
  p->base.pMethods = &faulty_methods;
  return SQLITE_OK;
}

static void faulty_register(void) {
  unix_vfs = sqlite3_vfs_find(NULL);
  faulty = *unix_vfs;
  faulty.zName = "faulty";
  faulty.pNext = NULL;
  faulty.szOsFile = (int)sizeof(struct faulty_file) + unix_vfs->szOsFile + 16;
  faulty.xOpen = f_open;
  sqlite3_vfs_register(&faulty, 1);
}

static void db_path(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s", dir, name);
}

static sqlite3 *open_db(const char *path, bool buffered) {
  sqlite3 *db = NULL;
  const char *vfs = buffered ? sqlite_walbuf_vfs() : NULL;
  if (buffered) assert_non_null(vfs);
  assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs),
                   SQLITE_OK);
  sqlite3_busy_timeout(db, 5000);
  return db;
}

static void run(sqlite3 *db, const char *sql) {
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK) fail_msg("%s: %s", sql, msg ? msg : sqlite3_errmsg(db));
}

static int64_t one(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static void integrity_ok(sqlite3 *db) {
  sqlite3_stmt *st;
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
}

/* The writer as the store opens it: WAL, synchronous FULL, no automatic checkpoints. */
static sqlite3 *open_writer(const char *path, int cache_pages) {
  sqlite3 *db = open_db(path, true);
  run(db, "PRAGMA journal_mode = WAL");
  run(db, "PRAGMA synchronous = FULL");
  run(db, "PRAGMA wal_autocheckpoint = 0");
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA cache_size = %d", cache_pages);
  run(db, sql);
  run(db,
      "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB);"
      "CREATE INDEX IF NOT EXISTS t_v ON t (length(v), k)");
  return db;
}

static void insert(sqlite3 *db, int from, int n, int bytes) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "WITH RECURSIVE s(i) AS (SELECT %d UNION ALL SELECT i + 1 FROM s WHERE i < %d) "
           "INSERT INTO t (id, k, v) SELECT i, hex(randomblob(12)) || i, randomblob(%d) FROM s",
           from, from + n - 1, bytes);
  run(db, sql);
}

/* Each commit's frames are all written before the log is synced, the commit is visible to a
 * reader on the default VFS as soon as it returns, and the frames went out in fewer writes than
 * asked. */
static void test_readers_see_every_commit(void **state) {
  (void)state;
  char path[128];
  db_path(path, sizeof path, "readers.db");
  sqlite3 *w = open_writer(path, 2000);
  sqlite3 *r = open_db(path, false);
  unsigned long asked0, written0, asked1, written1;
  sqlite_walbuf_counts(&asked0, &written0);
  int total = 0;
  for (int i = 0; i < 200; i++) {
    int n = 1 + i % 37, bytes = (i % 5) * 900 + 10;
    run(w, "BEGIN");
    insert(w, total + 1, n, bytes);
    run(w, "COMMIT");
    total += n;
    assert_true(last_log_sync > last_log_write); /* every byte of the commit written, then synced */
    assert_int_equal(one(r, "SELECT count(*) FROM t"), total);
    assert_int_equal(one(r, "SELECT max(id) FROM t"), total);
  }
  sqlite_walbuf_counts(&asked1, &written1);
  /* a frame's header and page in one write: about half as many writes as asked */
  assert_true((written1 - written0) * 10 < (asked1 - asked0) * 6);
  integrity_ok(r);
  sqlite3_close(r);
  sqlite3_close(w);
}

/* A child commits, then dies without closing anything: everything it committed is in the
 * files, and the parent recovers it whole. */
static void test_a_commit_is_in_the_file_when_it_returns(void **state) {
  (void)state;
  char path[128];
  db_path(path, sizeof path, "crash.db");
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    sqlite3 *w = open_writer(path, 2000);
    int total = 0;
    for (int i = 0; i < 50; i++) {
      int n = 1 + i % 23;
      if (sqlite3_exec(w, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) _exit(2);
      char sql[256];
      snprintf(sql, sizeof sql,
               "WITH RECURSIVE s(i) AS (SELECT %d UNION ALL SELECT i + 1 FROM s WHERE i < %d) "
               "INSERT INTO t (id, k, v) SELECT i, 'k' || i, zeroblob(%d) FROM s",
               total + 1, total + n, 100 + i * 150);
      if (sqlite3_exec(w, sql, NULL, NULL, NULL) != SQLITE_OK) _exit(3);
      if (sqlite3_exec(w, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) _exit(4);
      total += n;
    }
    /* an uncommitted transaction in the buffer as it dies */
    if (sqlite3_exec(w, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) _exit(5);
    if (sqlite3_exec(w, "INSERT INTO t (id, k, v) VALUES (100000, 'lost', zeroblob(9000))", NULL,
                     NULL, NULL) != SQLITE_OK)
      _exit(6);
    _exit(0);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  sqlite3 *r = open_db(path, false);
  int expected = 0;
  for (int i = 0; i < 50; i++) expected += 1 + i % 23;
  assert_int_equal(one(r, "SELECT count(*) FROM t"), expected);
  assert_int_equal(one(r, "SELECT count(*) FROM t WHERE id = 100000"), 0);
  assert_int_equal(one(r, "SELECT sum(length(v)) FROM t WHERE id <= 1"), 100);
  integrity_ok(r);
  sqlite3_close(r);
}

/* Transactions many times the buffer's size, with a cache small enough that SQLite writes
 * frames before the commit (and reads them back), some rolled back; a checkpointer copying and
 * restarting the log meanwhile; a truncated log. The reader's answers match the writer's. */
static void test_spills_rollbacks_and_checkpoints(void **state) {
  (void)state;
  char path[128];
  db_path(path, sizeof path, "spill.db");
  sqlite3 *w = open_writer(path, 20);
  run(w, "PRAGMA journal_size_limit = 65536");
  sqlite3 *c = open_db(path, false);
  run(c, "PRAGMA synchronous = FULL");
  sqlite3 *r = open_db(path, false);
  int total = 0;
  for (int i = 0; i < 60; i++) {
    int n = 40 + (i * 7) % 90;
    run(w, "BEGIN");
    insert(w, total + 1, n, 3000 + (i % 4) * 2500); /* 120 KiB to 1 MiB of pages */
    run(w, "UPDATE t SET v = randomblob(50) WHERE id % 17 = 3");
    if (i % 3 == 1) {
      run(w, "ROLLBACK");
    } else {
      run(w, "COMMIT");
      total += n;
    }
    assert_int_equal(one(r, "SELECT count(*) FROM t"), total);
    assert_int_equal(one(r, "SELECT count(*) FROM t"), one(w, "SELECT count(*) FROM t"));
    int mode = i % 10 == 9 ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE;
    int rc = sqlite3_wal_checkpoint_v2(c, NULL, mode, NULL, NULL);
    assert_true(rc == SQLITE_OK || rc == SQLITE_BUSY);
  }
  assert_int_equal(one(r, "SELECT sum(length(v)) FROM t"), one(w, "SELECT sum(length(v)) FROM t"));
  integrity_ok(r);
  integrity_ok(w);
  sqlite3_close(r);
  sqlite3_close(c);
  sqlite3_close(w);
  /* reopened from the files alone */
  r = open_db(path, false);
  assert_int_equal(one(r, "SELECT count(*) FROM t"), total);
  integrity_ok(r);
  sqlite3_close(r);
}

/* Two writers on one file (a command-line tool while the server runs; two stores in one
 * process): one spills a large transaction into the log and rolls it back, right after the log
 * was truncated; the other then commits at the same log offsets. Nothing of the rolled-back
 * transaction may reach the log afterwards: the second writer's commit must survive the first
 * one's later reads, writes and close, and a recovery from the files alone. */
static void test_a_rolled_back_spill_leaves_nothing_behind(void **state) {
  (void)state;
  char path[128], copy[512];
  db_path(path, sizeof path, "two.db");
  sqlite3 *a = open_writer(path, 20);
  sqlite3 *b = open_writer(path, 2000);
  sqlite3 *r = open_db(path, false);
  insert(a, 1, 10, 3000);
  assert_int_equal(one(r, "SELECT count(*) FROM t"), 10);
  assert_int_equal(sqlite3_wal_checkpoint_v2(r, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL),
                   SQLITE_OK);
  run(a, "BEGIN");
  insert(a, 11, 400, 3000);
  run(a, "ROLLBACK");
  run(b, "BEGIN");
  run(b,
      "WITH RECURSIVE s(i) AS (SELECT 1000 UNION ALL SELECT i + 1 FROM s WHERE i < 1399) "
      "INSERT INTO t (id, k, v) SELECT i, 'b' || i, zeroblob(3000) FROM s");
  run(b, "COMMIT");
  assert_int_equal(one(a, "SELECT count(*) FROM t"), 410);
  insert(a, 2000, 3, 100);
  sqlite3_close(a);
  sqlite3 *fresh = open_db(path, false);
  assert_int_equal(one(fresh, "SELECT count(*) FROM t WHERE v = zeroblob(3000)"), 400);
  assert_int_equal(one(fresh, "SELECT count(*) FROM t"), 413);
  integrity_ok(fresh);
  sqlite3_close(fresh);
  /* the files as a crash would leave them (no shared memory): recovered whole */
  snprintf(copy, sizeof copy, "cp %s %s-wal %s/copy/ 2>/dev/null; true", path, path, dir);
  char mk[64];
  snprintf(mk, sizeof mk, "mkdir -p %s/copy", dir);
  assert_int_equal(system(mk), 0);
  assert_int_equal(system(copy), 0);
  db_path(copy, sizeof copy, "copy/two.db");
  fresh = open_db(copy, false);
  assert_int_equal(one(fresh, "SELECT count(*) FROM t"), 413);
  integrity_ok(fresh);
  sqlite3_close(fresh);
  sqlite3_close(r);
  sqlite3_close(b);
}

/* A write of the buffer that fails (a full disk) while a statement reads the transaction's
 * spilled pages: SQLite undoes that statement only and goes on, but the frames it lost are
 * part of the transaction, so its COMMIT must fail, leaving the database as it was; the next
 * transaction commits. */
static void test_a_failed_buffer_write_fails_its_transaction(void **state) {
  (void)state;
  char path[128];
  db_path(path, sizeof path, "full.db");
  sqlite3 *w = open_writer(path, 20);
  sqlite3 *r = open_db(path, false);
  run(w, "CREATE TABLE u (id INTEGER PRIMARY KEY, v BLOB UNIQUE)");
  insert(w, 1, 5, 100);
  run(w, "BEGIN");
  run(w,
      "WITH RECURSIVE s(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM s WHERE i < 309) "
      "INSERT INTO t (id, k, v) SELECT i, 'k' || i, printf('%03000d', i) FROM s");
  run(w, "INSERT INTO u (v) VALUES (1)");
  fail_flushes = 1;
  int rc =
      sqlite3_exec(w, "INSERT INTO u (id, v) SELECT id, v FROM t WHERE id > 280", NULL, NULL, NULL);
  int unused = fail_flushes;
  fail_flushes = 0;
  assert_int_equal(unused, 0); /* the statement's read met the failed write */
  assert_int_equal(rc, SQLITE_FULL);
  assert_int_equal(sqlite3_get_autocommit(w), 0); /* SQLite undid the statement only */
  assert_int_not_equal(sqlite3_exec(w, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  if (!sqlite3_get_autocommit(w)) run(w, "ROLLBACK");
  assert_int_equal(one(r, "SELECT count(*) FROM t"), 5);
  integrity_ok(r);
  insert(w, 1000, 50, 3000);
  assert_int_equal(one(r, "SELECT count(*) FROM t"), 55);
  integrity_ok(r);
  sqlite3_close(r);
  sqlite3_close(w);
  r = open_db(path, false);
  assert_int_equal(one(r, "SELECT count(*) FROM t"), 55);
  integrity_ok(r);
  sqlite3_close(r);
}

/* With power-safe overwrite off, SQLite syncs in the middle of a commit's last frame and writes
 * its tail after the sync: such a log is written as asked, and readers see every commit. */
static void test_psow_off_is_written_unbuffered(void **state) {
  (void)state;
  char path[160];
  snprintf(path, sizeof path, "file:%s/psow.db?psow=0", dir);
  sqlite3 *w = NULL;
  assert_int_equal(
      sqlite3_open_v2(path, &w, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                      sqlite_walbuf_vfs()),
      SQLITE_OK);
  run(w, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA wal_autocheckpoint = 0");
  run(w, "CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB)");
  char plain[128];
  db_path(plain, sizeof plain, "psow.db");
  sqlite3 *r = open_db(plain, false);
  unsigned long asked0, written0, asked1, written1;
  sqlite_walbuf_counts(&asked0, &written0);
  int total = 0;
  for (int i = 0; i < 40; i++) {
    int n = 1 + i % 7;
    run(w, "BEGIN");
    insert(w, total + 1, n, 700 + i * 97);
    run(w, "COMMIT");
    total += n;
    assert_int_equal(one(r, "SELECT count(*) FROM t"), total);
  }
  sqlite_walbuf_counts(&asked1, &written1);
  assert_int_equal(written1 - written0, asked1 - asked0);
  integrity_ok(r);
  sqlite3_close(r);
  sqlite3_close(w);
}

/* Files other than the log are the default VFS's own: a rollback-journal database and a
 * temporary table work as without it. */
static void test_other_files_pass_through(void **state) {
  (void)state;
  char path[128];
  db_path(path, sizeof path, "journal.db");
  sqlite3 *db = open_db(path, true);
  run(db, "PRAGMA journal_mode = DELETE");
  run(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
  run(db, "CREATE TEMP TABLE tmp (x)");
  run(db, "BEGIN");
  run(db, "INSERT INTO t (v) SELECT randomblob(5000) FROM (SELECT 1 UNION ALL SELECT 2)");
  run(db, "INSERT INTO tmp VALUES (1)");
  run(db, "ROLLBACK");
  run(db, "INSERT INTO t (v) VALUES (randomblob(7000))");
  assert_int_equal(one(db, "SELECT count(*) FROM t"), 1);
  integrity_ok(db);
  sqlite3_close(db);
}

static int setup(void **state) {
  (void)state;
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  faulty_register(); /* before the buffering VFS takes the default one */
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_readers_see_every_commit),
      cmocka_unit_test(test_a_commit_is_in_the_file_when_it_returns),
      cmocka_unit_test(test_spills_rollbacks_and_checkpoints),
      cmocka_unit_test(test_a_rolled_back_spill_leaves_nothing_behind),
      cmocka_unit_test(test_a_failed_buffer_write_fails_its_transaction),
      cmocka_unit_test(test_psow_off_is_written_unbuffered),
      cmocka_unit_test(test_other_files_pass_through),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
