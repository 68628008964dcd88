/* A SQLite VFS for the writer's connection that writes each commit's log frames in a few large
 * system writes instead of two per frame.
 *
 * SQLite appends every page a transaction changed to the write-ahead log as a 24-byte frame
 * header and then the page, two `pwrite` calls per frame (10 to 200 frames per group commit
 * here), each costing the writer thread (the one SQLite allows) kernel entry, file locking and
 * page-cache work per call. This VFS passes every file but the log to the default VFS (the
 * same file objects; only the database file's shared-memory lock and close calls are wrapped).
 * For the log it keeps bytes written end to end in a 64 KiB buffer and writes them as one call
 * before anything that needs them in the file: a sync, a read, a size, a truncate, a file
 * control, a write elsewhere, a close, and the release of the log's write lock (the end of a
 * transaction, committed or rolled back: no byte outlives it, so none can land later on frames
 * another connection or process committed). A failed write of the buffer fails every later
 * call until that release: its transaction cannot commit.
 *
 * Only for a connection that keeps `PRAGMA synchronous = FULL` and the normal locking mode:
 * SQLite then syncs the log at every commit before it publishes the commit to other connections
 * (the log-index header), so no connection can look for a frame still in the buffer, and it
 * lets go of the write lock through the database's shared memory. With NORMAL or OFF a commit
 * is published with bytes still here; in exclusive locking mode the release is not seen. A
 * database with power-safe overwrite off (`psow=0`: a commit padded to a sector and synced in
 * the middle of a frame) has its log written as asked, unbuffered. */
#ifndef GSR_STORE_SQLITE_WALBUF_H
#define GSR_STORE_SQLITE_WALBUF_H

#include <stdbool.h>

/* The VFS's name for sqlite3_open_v2, registered once per process (not as the default); NULL
 * when SQLite has no default VFS to wrap or cannot register it (open with the default then). */
const char *sqlite_walbuf_vfs(void);

/* Process-wide counts since start (tests): the log writes SQLite asked for, and the system
 * writes they became. */
void sqlite_walbuf_counts(unsigned long *asked, unsigned long *written);

#endif
