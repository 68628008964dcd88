/* A SQLite VFS for the writer's connection that writes each commit's log frames with one
 * system call instead of two per frame.
 *
 * SQLite appends every page a transaction changed to the write-ahead log as a 24-byte frame
 * header and the page, two `pwrite` calls per frame: 10 to 200 frames per group commit here,
 * each call costing the writer thread (the one SQLite allows) about half a microsecond of
 * kernel entry and file locking. This VFS passes every file but the log straight to the default
 * VFS (the same file objects, no call added). For the log it keeps bytes written end to end in
 * a buffer and writes them as one `pwrite` before anything that needs them in the file: a sync,
 * a read, a size, a truncate, a file control, a write elsewhere, a close. What reaches the disk,
 * and when it is synced, is unchanged.
 *
 * Only for a connection that keeps `PRAGMA synchronous = FULL`: SQLite then syncs the log at
 * every commit before it publishes the commit to other connections (the log-index header), so
 * no connection can look for a frame still in the buffer. With NORMAL or OFF a commit ends with
 * no call on the log, and readers would find its frames missing. */
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
