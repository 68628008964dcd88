/* SQLite's page cache, wrapped so that a COMMIT does not walk the whole cache for nothing.
 *
 * SQLite's B-tree, while it puts a split's new pages in order, re-keys a page through the
 * lock-byte page's number (1 GiB / page size + 1). The default page cache remembers that as its
 * largest key, so the truncate that ends the transaction (to the database's size) walks every
 * bucket of its hash table, every page header of a 16 MiB cache, looking for pages past the end
 * that are not there: a quarter to a third of the writer thread's time on this machine. The
 * wrapper passes every call to the default cache and skips a truncate only when it knows no
 * page at or past the limit is cached (the keys it saw fetched or re-keyed, and whether a page
 * still holds the lock-byte number). */
#ifndef GSR_STORE_SQLITE_PCACHE_H
#define GSR_STORE_SQLITE_PCACHE_H

#include <stdbool.h>

/* Installs the wrapper around SQLite's default page cache, once per process; must run before
 * SQLite initialises (the first connection opened). False when SQLite was initialised already
 * (the default cache then stays, which is only slower). */
bool sqlite_pcache_install(void);

/* The truncates skipped and passed to the default cache so far, process-wide (tests). */
void sqlite_pcache_counts(unsigned long *skipped, unsigned long *passed);

#endif
