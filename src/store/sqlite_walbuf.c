/* The writer's VFS: the log's frames written end to end go out in one system write (see the
 * header). Every file but the log is the default VFS's own, opened in place: SQLite calls the
 * default VFS's methods on it directly. */
#include "store/sqlite_walbuf.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#define VFS_NAME "gsr-walbuf"
/* A commit's frames go out in writes of up to this size: SQLite's unix layer cannot write more
 * than 128 KiB - 1 in one call (it masks a larger size to its low 17 bits). */
#define BUF_BYTES (64 * 1024)

struct wal_file {
  sqlite3_file base;   /* our methods */
  sqlite3_file *real;  /* the default VFS's log file, in the same allocation */
  unsigned char *buf;  /* bytes not yet written (allocated at the first write) */
  sqlite3_int64 start; /* the file offset of buf[0] */
  size_t len;
};

/* The default VFS's file object follows ours, aligned as malloc would align it. */
#define REAL_OFFSET                                                              \
  ((sizeof(struct wal_file) + alignof(max_align_t) - 1) / alignof(max_align_t) * \
   alignof(max_align_t))

static sqlite3_vfs *inner;
static sqlite3_vfs vfs;
static const char *registered;
static atomic_ulong writes_asked, writes_done;

/* Writes what the buffer holds; empty after, whatever the outcome (a failed write fails the
 * operation that needed it, and SQLite abandons that transaction's frames). */
static int flush(struct wal_file *p) {
  if (p->len == 0) return SQLITE_OK;
  size_t len = p->len;
  p->len = 0;
  atomic_fetch_add_explicit(&writes_done, 1, memory_order_relaxed);
  return p->real->pMethods->xWrite(p->real, p->buf, (int)len, p->start);
}

static int wb_close(sqlite3_file *f) {
  struct wal_file *p = (struct wal_file *)f;
  int rc = flush(p);
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

/* A write that continues the buffered bytes joins them; any other write first sends them. */
static int wb_write(sqlite3_file *f, const void *data, int n, sqlite3_int64 off) {
  struct wal_file *p = (struct wal_file *)f;
  atomic_fetch_add_explicit(&writes_asked, 1, memory_order_relaxed);
  if (n <= 0) return p->real->pMethods->xWrite(p->real, data, n, off);
  if (p->len > 0 && off == p->start + (sqlite3_int64)p->len && p->len + (size_t)n <= BUF_BYTES) {
    memcpy(p->buf + p->len, data, (size_t)n);
    p->len += (size_t)n;
    return SQLITE_OK;
  }
  int rc = flush(p);
  if (rc != SQLITE_OK) return rc;
  if (!p->buf && !(p->buf = sqlite3_malloc(BUF_BYTES))) { /* unbuffered, as without this VFS */
    atomic_fetch_add_explicit(&writes_done, 1, memory_order_relaxed);
    return p->real->pMethods->xWrite(p->real, data, n, off);
  }
  if ((size_t)n > BUF_BYTES) {
    atomic_fetch_add_explicit(&writes_done, 1, memory_order_relaxed);
    return p->real->pMethods->xWrite(p->real, data, n, off);
  }
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

static int wb_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out_flags) {
  (void)v;
  if (!(flags & SQLITE_OPEN_WAL)) return inner->xOpen(inner, name, f, flags, out_flags);
  struct wal_file *p = (struct wal_file *)f;
  memset(p, 0, sizeof *p);
  p->real = (sqlite3_file *)((char *)f + REAL_OFFSET);
  int rc = inner->xOpen(inner, name, p->real, flags, out_flags);
  p->base.pMethods = rc == SQLITE_OK ? &wal_methods : NULL;
  return rc;
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
