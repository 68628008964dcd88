/* Unit tests for store/sqlite_pcache. A checker page cache sits above the wrapper (installed
 * after it, so SQLite calls the checker, the checker the wrapper): it remembers every key it has
 * seen cached and, after each truncate, asks the cache below for each remembered key at or past
 * the limit; any page still there means a truncate was wrongly skipped. Under it run databases
 * that grow by random-key inserts (B-tree splits re-key pages through the lock-byte page's
 * number), roll back, shrink (VACUUM, incremental vacuum) and are read by a second connection
 * between commits; and random sequences of the cache's calls, tiny caches included. The
 * commits' truncates that find nothing to drop must in fact be skipped. */
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

/* ---------- the checker ---------- */

#define KEY_LIMIT (1u << 23) /* keys tracked: the lock-byte page's number for pages >= 128 B */

static sqlite3_pcache_methods2 below; /* the wrapper */
static sqlite3_pcache_methods2 checker;
static unsigned long violations;

struct checked {
  sqlite3_pcache *inner;
  uint64_t *seen; /* bit per key: perhaps cached (a superset) */
  unsigned max_seen;
};

static void mark(struct checked *c, unsigned key, bool on) {
  if (key >= KEY_LIMIT) return;
  if (on) {
    c->seen[key / 64] |= UINT64_C(1) << (key % 64);
    if (key > c->max_seen) c->max_seen = key;
  } else {
    c->seen[key / 64] &= ~(UINT64_C(1) << (key % 64));
  }
}

static int c_init(void *arg) {
  (void)arg;
  return below.xInit ? below.xInit(below.pArg) : SQLITE_OK;
}

static void c_shutdown(void *arg) {
  (void)arg;
  if (below.xShutdown) below.xShutdown(below.pArg);
}

static sqlite3_pcache *c_create(int page_size, int extra, int purgeable) {
  struct checked *c = calloc(1, sizeof *c);
  if (!c || !(c->seen = calloc(KEY_LIMIT / 64, sizeof *c->seen)) ||
      !(c->inner = below.xCreate(page_size, extra, purgeable))) {
    if (c) free(c->seen);
    free(c);
    return NULL;
  }
  return (sqlite3_pcache *)c;
}

static void c_cachesize(sqlite3_pcache *p, int n) {
  below.xCachesize(((struct checked *)p)->inner, n);
}

static int c_pagecount(sqlite3_pcache *p) { return below.xPagecount(((struct checked *)p)->inner); }

static sqlite3_pcache_page *c_fetch(sqlite3_pcache *p, unsigned key, int create) {
  struct checked *c = (struct checked *)p;
  sqlite3_pcache_page *page = below.xFetch(c->inner, key, create);
  if (page) mark(c, key, true);
  return page;
}

static void c_unpin(sqlite3_pcache *p, sqlite3_pcache_page *page, int discard) {
  below.xUnpin(((struct checked *)p)->inner, page, discard);
}

static void c_rekey(sqlite3_pcache *p, sqlite3_pcache_page *page, unsigned from, unsigned to) {
  struct checked *c = (struct checked *)p;
  below.xRekey(c->inner, page, from, to);
  mark(c, to, true);
}

static void c_truncate(sqlite3_pcache *p, unsigned limit) {
  struct checked *c = (struct checked *)p;
  below.xTruncate(c->inner, limit);
  for (unsigned k = limit; k <= c->max_seen && k < KEY_LIMIT; k++) {
    if (k % 64 == 0 && c->seen[k / 64] == 0) {
      k += 63; /* a word with nothing seen */
      continue;
    }
    if (!(c->seen[k / 64] & (UINT64_C(1) << (k % 64)))) continue;
    sqlite3_pcache_page *page = below.xFetch(c->inner, k, 0);
    if (page) {
      fprintf(stderr, "page %u still cached after a truncate to %u\n", k, limit);
      violations++;
      below.xUnpin(c->inner, page, 0);
    }
    mark(c, k, false);
  }
  if (limit > 0 && c->max_seen >= limit) c->max_seen = limit - 1;
}

static void c_destroy(sqlite3_pcache *p) {
  struct checked *c = (struct checked *)p;
  below.xDestroy(c->inner);
  free(c->seen);
  free(c);
}

static void c_shrink(sqlite3_pcache *p) { below.xShrink(((struct checked *)p)->inner); }

/* ---------- databases under it ---------- */

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
  sqlite3_busy_timeout(db, 5000);
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

/* rounds batches of 40 random rows into t (every 7th rolled back), every 30th round half the
 * rows deleted and shrink run; after each round db, and reader when there is one, read back
 * what was committed. */
static struct model grow(sqlite3 *db, sqlite3 *reader, unsigned seed, int rounds,
                         const char *shrink) {
  unsigned long before = violations;
  exec_ok(db, "CREATE TABLE t (k TEXT NOT NULL, v BLOB NOT NULL); CREATE INDEX t_k ON t (k)");
  struct model m = {0};
  for (int round = 1; round <= rounds; round++) {
    insert_batch(db, &m, &seed, 40, round % 7 != 0);
    if (round % 30 == 0) {
      delete_half(db, &m);
      exec_ok(db, shrink);
    }
    check(db, &m);
    if (reader) check(reader, &m);
  }
  check_integrity(db);
  if (reader) check_integrity(reader);
  assert_int_equal(violations, before);
  return m;
}

/* One writer and one reader kept open on the same file, then a fresh connection. */
static void run(const char *name, const char *setup, const char *shrink) {
  sqlite3 *db = open_db(name);
  exec_ok(db, setup);
  sqlite3 *reader = open_db(name);
  exec_ok(reader, "PRAGMA cache_size = -2048");
  struct model m = grow(db, reader, 42, 120, shrink);
  sqlite3 *fresh = open_db(name);
  check(fresh, &m);
  check_integrity(fresh);
  sqlite3_close(fresh);
  sqlite3_close(reader);
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

static void test_small_pages_tiny_cache_and_memory(void **state) {
  (void)state;
  run("small.db", "PRAGMA page_size = 512; PRAGMA journal_mode = WAL; PRAGMA cache_size = 20",
      "VACUUM");
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
  (void)grow(db, NULL, 7, 60, "VACUUM");
  sqlite3_close(db);
}

/* ---------- the cache's calls, at random ---------- */

struct pinned {
  unsigned key;
  sqlite3_pcache_page *page;
};

static void test_random_calls_never_leave_a_page_past_a_truncate(void **state) {
  (void)state;
  const sqlite3_pcache_methods2 *m = &checker;
  unsigned long before = violations;
  for (unsigned run = 0; run < 40; run++) {
    unsigned seed = 1000 + run;
    int page_size = (run % 3 == 0) ? 512 : 4096;
    unsigned lock = 0x40000000u / (unsigned)page_size + 1;
    sqlite3_pcache *c = m->xCreate(page_size, 64, 1);
    assert_non_null(c);
    m->xCachesize(c, run % 2 ? 8 : 200); /* small: pages are recycled */
    struct pinned pins[64];
    int npins = 0;
    for (int step = 0; step < 4000; step++) {
      int op = rand_r(&seed) % 10;
      if (op < 4 && npins < 64) { /* fetch, now and then at the lock-byte number */
        unsigned key = rand_r(&seed) % 50 == 0 ? lock : 1 + (unsigned)rand_r(&seed) % 60;
        bool pinned_already = false;
        for (int i = 0; i < npins; i++) pinned_already |= pins[i].key == key;
        if (pinned_already) continue;
        sqlite3_pcache_page *pg = m->xFetch(c, key, rand_r(&seed) % 3);
        if (pg) pins[npins++] = (struct pinned){key, pg};
      } else if (op < 7 && npins > 0) { /* unpin, perhaps discarding */
        int i = rand_r(&seed) % npins;
        m->xUnpin(c, pins[i].page, rand_r(&seed) % 4 == 0);
        pins[i] = pins[--npins];
      } else if (op < 9 && npins > 0) { /* re-key a pinned page to a free key */
        int i = rand_r(&seed) % npins;
        unsigned to = rand_r(&seed) % 4 == 0 ? lock : 1 + (unsigned)rand_r(&seed) % 60;
        bool busy = false;
        for (int j = 0; j < npins; j++) busy |= pins[j].key == to;
        if (busy) continue;
        sqlite3_pcache_page *there = m->xFetch(c, to, 0); /* as SQLite does: drop it first */
        if (there) m->xUnpin(c, there, 1);
        m->xRekey(c, pins[i].page, pins[i].key, to);
        pins[i].key = to;
      } else { /* truncate: the pages at or past the limit go, pinned ones too */
        unsigned limit = rand_r(&seed) % 8 == 0 ? 1 : 1 + (unsigned)rand_r(&seed) % 70;
        m->xTruncate(c, limit);
        for (int i = 0; i < npins;)
          if (pins[i].key >= limit)
            pins[i] = pins[--npins];
          else
            i++;
      }
    }
    for (int i = 0; i < npins; i++) m->xUnpin(c, pins[i].page, 0);
    m->xDestroy(c);
  }
  assert_int_equal(violations, before);
}

static void test_commits_skip_the_empty_truncate(void **state) {
  (void)state;
  unsigned long s0, p0, s1, p1;
  sqlite_pcache_counts(&s0, &p0);
  sqlite3 *db = open_db("skip.db");
  exec_ok(db, "PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT NOT NULL, v BLOB NOT NULL)");
  exec_ok(db, "CREATE INDEX t_k ON t (k)");
  struct model m = {0};
  unsigned seed = 3;
  for (int round = 0; round < 50; round++) insert_batch(db, &m, &seed, 40, true);
  check(db, &m);
  sqlite3_close(db);
  sqlite_pcache_counts(&s1, &p1);
  assert_true(s1 - s0 >= 40); /* most of the 50 commits skip it */
}

static int setup_all(void **state) {
  (void)state;
  if (!mkdtemp(dir) || !sqlite_pcache_install()) return -1;
  if (sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &below) != SQLITE_OK) return -1;
  checker = (sqlite3_pcache_methods2){1,           NULL,        c_init,  c_shutdown, c_create,
                                      c_cachesize, c_pagecount, c_fetch, c_unpin,    c_rekey,
                                      c_truncate,  c_destroy,   c_shrink};
  if (sqlite3_config(SQLITE_CONFIG_PCACHE2, &checker) != SQLITE_OK) return -1;
  return sqlite3_initialize() == SQLITE_OK ? 0 : -1;
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
      cmocka_unit_test(test_small_pages_tiny_cache_and_memory),
      cmocka_unit_test(test_random_calls_never_leave_a_page_past_a_truncate),
      cmocka_unit_test(test_commits_skip_the_empty_truncate),
  };
  return cmocka_run_group_tests(tests, setup_all, teardown_all);
}
