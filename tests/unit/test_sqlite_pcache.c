/* Unit tests for store/sqlite_pcache: with the wrapper around SQLite's page cache, databases
 * that grow by random-key inserts (B-tree splits re-key pages through the lock-byte page's
 * number), roll back, shrink (VACUUM) and move pages (incremental vacuum) read back exactly what
 * was committed, pass integrity_check, and read the same from a fresh connection; and the
 * commits' truncates that find nothing to drop are in fact skipped. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/sqlite_pcache.h"

static char dir[] = "/tmp/gsr-pcache-XXXXXX";
static sqlite3_pcache_methods2 installed; /* the cache SQLite uses (read before it starts) */

struct model {
  long long rows, bytes;
};

static void exec_ok(sqlite3 *db, const char *sql) {
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK) fprintf(stderr, "%s: %s\n", sql, msg ? msg : "?");
  sqlite3_free(msg);
  assert_int_equal(rc, SQLITE_OK);
}

static sqlite3 *open_db(const char *name) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  return db;
}

static void check(sqlite3 *db, const struct model *m) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(
      sqlite3_prepare_v2(db, "SELECT count(*), coalesce(sum(length(v)), 0) FROM t", -1, &st, NULL),
      SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int64(st, 0), m->rows);
  assert_int_equal(sqlite3_column_int64(st, 1), m->bytes);
  sqlite3_finalize(st);
}

static void check_integrity(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
}

/* n rows of random keys and sizes in one transaction; committed or rolled back. */
static void insert_batch(sqlite3 *db, struct model *m, unsigned *seed, int n, bool commit) {
  exec_ok(db, "BEGIN");
  sqlite3_stmt *st = NULL;
  assert_int_equal(
      sqlite3_prepare_v2(db, "INSERT INTO t (k, v) VALUES (?1, zeroblob(?2))", -1, &st, NULL),
      SQLITE_OK);
  long long bytes = 0;
  for (int i = 0; i < n; i++) {
    char key[40];
    snprintf(key, sizeof key, "conv_%08x%08x", (unsigned)rand_r(seed), (unsigned)rand_r(seed));
    int len = 100 + rand_r(seed) % 3000;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, len);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_reset(st);
    bytes += len;
  }
  sqlite3_finalize(st);
  exec_ok(db, commit ? "COMMIT" : "ROLLBACK");
  if (commit) {
    m->rows += n;
    m->bytes += bytes;
  }
}

static void delete_half(sqlite3 *db, struct model *m) {
  exec_ok(db, "DELETE FROM t WHERE rowid % 2 = 0");
  sqlite3_stmt *st = NULL;
  assert_int_equal(
      sqlite3_prepare_v2(db, "SELECT count(*), coalesce(sum(length(v)), 0) FROM t", -1, &st, NULL),
      SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  m->rows = sqlite3_column_int64(st, 0);
  m->bytes = sqlite3_column_int64(st, 1);
  sqlite3_finalize(st);
}

static void run(const char *name, const char *setup, const char *shrink) {
  sqlite3 *db = open_db(name);
  exec_ok(db, setup);
  exec_ok(db, "CREATE TABLE t (k TEXT NOT NULL, v BLOB NOT NULL); CREATE INDEX t_k ON t (k)");
  struct model m = {0};
  unsigned seed = 42;
  for (int round = 1; round <= 120; round++) {
    insert_batch(db, &m, &seed, 40, round % 7 != 0);
    if (round % 30 == 0) {
      delete_half(db, &m);
      exec_ok(db, shrink);
    }
    check(db, &m);
  }
  check_integrity(db);
  sqlite3 *fresh = open_db(name);
  check(fresh, &m);
  check_integrity(fresh);
  sqlite3_close(fresh);
  sqlite3_close(db);
}

static void test_wal_file_grows_rolls_back_and_vacuums(void **state) {
  (void)state;
  run("wal.db", "PRAGMA journal_mode = WAL; PRAGMA cache_size = -16384", "VACUUM");
}

static void test_rollback_journal_and_incremental_vacuum(void **state) {
  (void)state;
  run("inc.db", "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA cache_size = -4096",
      "PRAGMA incremental_vacuum");
}

/* The wrapper's methods called as SQLite calls them: a truncate is skipped only when no page at
 * or past its limit is cached, the lock-byte page's number (the B-tree's temporary key)
 * included. */
static bool cached(const sqlite3_pcache_methods2 *m, sqlite3_pcache *c, unsigned key) {
  sqlite3_pcache_page *pg = m->xFetch(c, key, 0);
  if (pg) m->xUnpin(c, pg, 0);
  return pg != NULL;
}

static void put(const sqlite3_pcache_methods2 *m, sqlite3_pcache *c, unsigned key) {
  sqlite3_pcache_page *pg = m->xFetch(c, key, 2);
  assert_non_null(pg);
  m->xUnpin(c, pg, 0);
}

static void rekey(const sqlite3_pcache_methods2 *m, sqlite3_pcache *c, unsigned from, unsigned to) {
  sqlite3_pcache_page *pg = m->xFetch(c, from, 0);
  assert_non_null(pg);
  m->xRekey(c, pg, from, to);
  m->xUnpin(c, pg, 0);
}

static void test_truncate_skipped_only_when_nothing_is_past_the_limit(void **state) {
  (void)state;
  const sqlite3_pcache_methods2 m = installed;
  const unsigned lock = 0x40000000u / 4096 + 1;
  sqlite3_pcache *c = m.xCreate(4096, 64, 1);
  assert_non_null(c);
  m.xCachesize(c, 100);
  for (unsigned k = 1; k <= 10; k++) put(&m, c, k);
  /* a split's pages put in order: 3 -> lock, 5 -> 3, lock -> 5 */
  rekey(&m, c, 3, lock);
  rekey(&m, c, 5, 3);
  rekey(&m, c, lock, 5);
  unsigned long s0, p0, s1, p1;
  sqlite_pcache_counts(&s0, &p0);
  m.xTruncate(c, 11); /* nothing at 11 or past it: skipped */
  sqlite_pcache_counts(&s1, &p1);
  assert_int_equal(s1, s0 + 1);
  assert_int_equal(p1, p0);
  assert_true(cached(&m, c, 3) && cached(&m, c, 5) && cached(&m, c, 10));
  assert_false(cached(&m, c, lock));
  m.xTruncate(c, 6); /* drops 6..10 */
  assert_true(cached(&m, c, 5));
  assert_false(cached(&m, c, 6));
  assert_false(cached(&m, c, 10));
  /* a page left at the lock-byte number is dropped by the next truncate below it */
  rekey(&m, c, 4, lock);
  sqlite_pcache_counts(&s0, &p0);
  m.xTruncate(c, 6);
  sqlite_pcache_counts(&s1, &p1);
  assert_int_equal(p1, p0 + 1);
  assert_false(cached(&m, c, lock));
  /* a page fetched past the end, then a truncate below it */
  put(&m, c, 20);
  m.xTruncate(c, 15);
  assert_false(cached(&m, c, 20));
  assert_true(cached(&m, c, 5));
  /* everything: a cache cleared */
  m.xTruncate(c, 1);
  assert_false(cached(&m, c, 1));
  assert_false(cached(&m, c, 5));
  m.xDestroy(c);
}

static void test_commits_skip_the_empty_truncate(void **state) {
  (void)state;
  unsigned long skipped, passed;
  sqlite_pcache_counts(&skipped, &passed);
  assert_true(skipped > 100);
  assert_true(passed > 0); /* the shrinks, at least */
}

static int setup_all(void **state) {
  (void)state;
  if (!mkdtemp(dir)) return -1;
  if (!sqlite_pcache_install()) return -1;
  return sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &installed) == SQLITE_OK ? 0 : -1;
}

static int teardown_all(void **state) {
  (void)state;
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_wal_file_grows_rolls_back_and_vacuums),
      cmocka_unit_test(test_rollback_journal_and_incremental_vacuum),
      cmocka_unit_test(test_truncate_skipped_only_when_nothing_is_past_the_limit),
      cmocka_unit_test(test_commits_skip_the_empty_truncate),
  };
  return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
