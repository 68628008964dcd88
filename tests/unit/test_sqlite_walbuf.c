/* Unit tests for store/sqlite_walbuf: a writer connection on the buffering VFS, readers and a
 * checkpointer on the default one, as the store runs them. Every committed row must be in the
 * file when the commit returns (a child process that commits and dies without closing loses
 * nothing), readers must see each commit at once, transactions larger than the buffer, spilled
 * to the log and rolled back, must leave a sound database, and the log restarted, truncated and
 * checkpointed under the writer must read back the same. And the frames must in fact go out in
 * fewer writes than SQLite asked for. */
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

/* Each commit is visible to a reader on the default VFS as soon as it returns, and the frames
 * went out in fewer writes than asked. */
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
    assert_int_equal(one(r, "SELECT count(*) FROM t"), total);
    assert_int_equal(one(r, "SELECT max(id) FROM t"), total);
  }
  sqlite_walbuf_counts(&asked1, &written1);
  assert_true(asked1 - asked0 > 2 * (written1 - written0));
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
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_readers_see_every_commit),
      cmocka_unit_test(test_a_commit_is_in_the_file_when_it_returns),
      cmocka_unit_test(test_spills_rollbacks_and_checkpoints),
      cmocka_unit_test(test_other_files_pass_through),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
