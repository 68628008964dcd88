/* The writer's VFS: the log's frames written end to end go out in writes of up to 64 KiB (see
 * the header). Every file but the log is the default VFS's own, opened in place: SQLite calls the
 * default VFS's methods on it directly, but for the database file's shared-memory lock calls,
 * which first write what its log holds back. */
#include "store/sqlite_walbuf.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define VFS_NAME "gsr-walbuf"
/* The frames go out in writes of up to this size: SQLite's unix layer cannot write more than
 * 128 KiB - 1 in one call (it masks a larger size to its low 17 bits). */
#define BUF_BYTES (64 * 1024)
/* Databases open on this VFS at once (the writer's connections: one per store); past it a
 * database's log is written as asked, unbuffered. */
#define OPEN_MAX 64

struct wal_file {
  sqlite3_file base;   /* our methods */
  sqlite3_file *real;  /* the default VFS's log file, in the same allocation */
  unsigned char *buf;  /* bytes not yet written (allocated at the first write) */
  sqlite3_int64 start; /* the file offset of buf[0] */
  size_t len;
  int failed;    /* a write of the buffer failed: every call fails so until the lock is let go */
  bool buffered; /* false (unpaired, or psow off): written as asked, nothing kept */
};

/* The default VFS's file object follows ours, aligned as malloc would align it. */
#define REAL_OFFSET                                                              \
  ((sizeof(struct wal_file) + alignof(max_align_t) - 1) / alignof(max_align_t) * \
   alignof(max_align_t))

/* A database file open on this VFS: SQLite names its log in the same allocation as the
 * database (sqlite3_filename_database gives the database's name pointer back), which pairs
 * them. */
struct pair {
  const char *db_name;
  sqlite3_file *db;
  struct wal_file *wal;
};

static sqlite3_vfs *inner;
static sqlite3_vfs vfs;
static const char *registered;
static atomic_ulong writes_asked, writes_done;

static pthread_mutex_t pairs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct pair pairs[OPEN_MAX];
static const sqlite3_io_methods *db_inner_methods; /* the default VFS's, for database files */
static sqlite3_io_methods db_methods;              /* the same, two calls wrapped */

/* Writes what the buffer holds. A failure empties it and is kept: the transaction whose frames
 * it held cannot commit. */
static int flush(struct wal_file *p) {
  if (p->failed) return p->failed;
  if (p->len == 0) return SQLITE_OK;
  size_t len = p->len;
  p->len = 0;
  atomic_fetch_add_explicit(&writes_done, 1, memory_order_relaxed);
  int rc = p->real->pMethods->xWrite(p->real, p->buf, (int)len, p->start);
  if (rc != SQLITE_OK) p->failed = rc;
  return rc;
}

static int wb_close(sqlite3_file *f) {
  struct wal_file *p = (struct wal_file *)f;
  int rc = flush(p);
  pthread_mutex_lock(&pairs_mu);
  for (size_t i = 0; i < OPEN_MAX; i++)
    if (pairs[i].wal == p) pairs[i].wal = NULL;
  pthread_mutex_unlock(&pairs_mu);
  int rc2 = p->real->pMethods->xClose(p->real);
  sqlite3_free(p->buf);
  p->buf = NULL;
  return rc != SQLITE_OK ? rc : rc2;
}

static int wb_read(sqlite3_file *f, void *out, int n, sqlite3_int64 off) {
  struct wal_file *p = (struct wal_file *)f;
  int rc = flush(p);
  return rc != SQLITE_OK ? rc : p->real->pMethods->xRead(p->real, out, n, off);
}

static int write_through(struct wal_file *p, const void *data, int n, sqlite3_int64 off) {
  atomic_fetch_add_explicit(&writes_done, 1, memory_order_relaxed);
  return p->real->pMethods->xWrite(p->real, data, n, off);
}

/* A write that continues the buffered bytes joins them; any other write first sends them. */
static int wb_write(sqlite3_file *f, const void *data, int n, sqlite3_int64 off) {
  struct wal_file *p = (struct wal_file *)f;
  atomic_fetch_add_explicit(&writes_asked, 1, memory_order_relaxed);
  if (p->len > 0 && off == p->start + (sqlite3_int64)p->len && n > 0 &&
      p->len + (size_t)n <= BUF_BYTES) {
    memcpy(p->buf + p->len, data, (size_t)n);
    p->len += (size_t)n;
    return SQLITE_OK;
  }
  int rc = flush(p);
  if (rc != SQLITE_OK) return rc;
  if (!p->buffered || n <= 0 || (size_t)n > BUF_BYTES ||
      (!p->buf && !(p->buf = sqlite3_malloc(BUF_BYTES))))
    return write_through(p, data, n, off);
  memcpy(p->buf, data, (size_t)n);
  p->start = off;
  p->len = (size_t)n;
  return SQLITE_OK;
}

static int wb_truncate(sqlite3_file *f, sqlite3_int64 size) {
  struct wal_file *p = (struct wal_file *)f;
  int rc = flush(p);
  return rc != SQLITE_OK ? rc : p->real->pMethods->xTruncate(p->real, size);
}

static int wb_sync(sqlite3_file *f, int flags) {
  struct wal_file *p = (struct wal_file *)f;
  int rc = flush(p);
  return rc != SQLITE_OK ? rc : p->real->pMethods->xSync(p->real, flags);
}

static int wb_file_size(sqlite3_file *f, sqlite3_int64 *size) {
  struct wal_file *p = (struct wal_file *)f;
  int rc = flush(p);
  return rc != SQLITE_OK ? rc : p->real->pMethods->xFileSize(p->real, size);
}

static int wb_lock(sqlite3_file *f, int level) {
  struct wal_file *p = (struct wal_file *)f;
  return p->real->pMethods->xLock(p->real, level);
}

static int wb_unlock(sqlite3_file *f, int level) {
  struct wal_file *p = (struct wal_file *)f;
  return p->real->pMethods->xUnlock(p->real, level);
}

static int wb_check_reserved(sqlite3_file *f, int *out) {
  struct wal_file *p = (struct wal_file *)f;
  return p->real->pMethods->xCheckReservedLock(p->real, out);
}

static int wb_file_control(sqlite3_file *f, int op, void *arg) {
  struct wal_file *p = (struct wal_file *)f;
  int rc = flush(p);
  return rc != SQLITE_OK ? rc : p->real->pMethods->xFileControl(p->real, op, arg);
}

static int wb_sector_size(sqlite3_file *f) {
  struct wal_file *p = (struct wal_file *)f;
  return p->real->pMethods->xSectorSize(p->real);
}

static int wb_device_characteristics(sqlite3_file *f) {
  struct wal_file *p = (struct wal_file *)f;
  return p->real->pMethods->xDeviceCharacteristics(p->real);
}

/* Version 1 methods only: the log has no shared memory and is never memory-mapped (SQLite
 * keeps those on the database file). */
static const sqlite3_io_methods wal_methods = {
    .iVersion = 1,
    .xClose = wb_close,
    .xRead = wb_read,
    .xWrite = wb_write,
    .xTruncate = wb_truncate,
    .xSync = wb_sync,
    .xFileSize = wb_file_size,
    .xLock = wb_lock,
    .xUnlock = wb_unlock,
    .xCheckReservedLock = wb_check_reserved,
    .xFileControl = wb_file_control,
    .xSectorSize = wb_sector_size,
    .xDeviceCharacteristics = wb_device_characteristics,
};

/* The database's shared-memory locks, through which wal.c takes and lets go of the log's write
 * lock (slot 0, exclusive; only its holder writes the log): before it is let go, the log's
 * buffer is written, so no byte of it outlives the transaction that wrote it (a rolled-back
 * one's would otherwise land later on frames another connection committed meanwhile), and a
 * failure is forgotten (its transaction is over). */
#define WAL_WRITE_LOCK 0

static int db_shm_lock(sqlite3_file *f, int offset, int n, int flags) {
  if (flags == (SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE) && offset <= WAL_WRITE_LOCK &&
      offset + n > WAL_WRITE_LOCK) {
    struct wal_file *wal = NULL;
    pthread_mutex_lock(&pairs_mu);
    for (size_t i = 0; i < OPEN_MAX && !wal; i++)
      if (pairs[i].db == f) wal = pairs[i].wal;
    pthread_mutex_unlock(&pairs_mu);
    if (wal) {
      (void)flush(wal);
      wal->failed = SQLITE_OK;
    }
  }
  return db_inner_methods->xShmLock(f, offset, n, flags);
}

static int db_close(sqlite3_file *f) {
  pthread_mutex_lock(&pairs_mu);
  for (size_t i = 0; i < OPEN_MAX; i++)
    if (pairs[i].db == f) pairs[i] = (struct pair){0};
  pthread_mutex_unlock(&pairs_mu);
  return db_inner_methods->xClose(f);
}

/* A database file: the default VFS's own, its methods but two wrapped, when it can be paired
 * with its log (the default VFS's methods have shared memory; a free slot). */
static int open_db(const char *name, sqlite3_file *f, int flags, int *out_flags) {
  int rc = inner->xOpen(inner, name, f, flags, out_flags);
  if (rc != SQLITE_OK || !name || !f->pMethods || f->pMethods->iVersion < 2 ||
      !f->pMethods->xShmLock)
    return rc;
  pthread_mutex_lock(&pairs_mu);
  if (!db_inner_methods) {
    db_inner_methods = f->pMethods;
    db_methods = *f->pMethods;
    db_methods.xShmLock = db_shm_lock;
    db_methods.xClose = db_close;
  }
  if (f->pMethods == db_inner_methods) {
    for (size_t i = 0; i < OPEN_MAX; i++) {
      if (pairs[i].db) continue;
      pairs[i] = (struct pair){.db_name = name, .db = f};
      f->pMethods = &db_methods;
      break;
    }
  }
  pthread_mutex_unlock(&pairs_mu);
  return rc;
}

static int open_wal(const char *name, sqlite3_file *f, int flags, int *out_flags) {
  struct wal_file *p = (struct wal_file *)f;
  memset(p, 0, sizeof *p);
  p->real = (sqlite3_file *)((char *)f + REAL_OFFSET);
  int rc = inner->xOpen(inner, name, p->real, flags, out_flags);
  if (rc != SQLITE_OK) {
    p->base.pMethods = NULL;
    return rc;
  }
  p->base.pMethods = &wal_methods;
  /* Paired with its database, unless that has power-safe overwrite off: SQLite then pads a
   * commit to a sector, syncs in the middle of a frame and publishes the commit with the
   * frame's tail written after the sync. */
  const char *db_name = sqlite3_filename_database(name);
  pthread_mutex_lock(&pairs_mu);
  for (size_t i = 0; db_name && i < OPEN_MAX; i++) {
    if (pairs[i].db && pairs[i].db_name == db_name && !pairs[i].wal) {
      sqlite3_file *db = pairs[i].db;
      if (db->pMethods->xDeviceCharacteristics(db) & SQLITE_IOCAP_POWERSAFE_OVERWRITE) {
        pairs[i].wal = p;
        p->buffered = true;
      }
      break;
    }
  }
  pthread_mutex_unlock(&pairs_mu);
  return SQLITE_OK;
}

static int wb_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out_flags) {
  (void)v;
  if (flags & SQLITE_OPEN_WAL) return open_wal(name, f, flags, out_flags);
  if (flags & SQLITE_OPEN_MAIN_DB) return open_db(name, f, flags, out_flags);
  return inner->xOpen(inner, name, f, flags, out_flags);
}

static void walbuf_register(void) {
  inner = sqlite3_vfs_find(NULL);
  if (!inner) return;
  vfs = *inner; /* every other method is the default VFS's own, with its data */
  vfs.zName = VFS_NAME;
  vfs.pNext = NULL;
  size_t need = REAL_OFFSET + (size_t)inner->szOsFile;
  vfs.szOsFile = (int)(need > (size_t)inner->szOsFile ? need : (size_t)inner->szOsFile);
  vfs.xOpen = wb_open;
  if (sqlite3_vfs_register(&vfs, 0) == SQLITE_OK) registered = VFS_NAME;
}

const char *sqlite_walbuf_vfs(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, walbuf_register);
  return registered;
}

void sqlite_walbuf_counts(unsigned long *asked, unsigned long *written) {
  *asked = atomic_load(&writes_asked);
  *written = atomic_load(&writes_done);
}
