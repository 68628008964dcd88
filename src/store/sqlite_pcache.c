/* SQLite's default page cache with truncates that find nothing to drop skipped (see the
 * header). Every other call goes to the default cache unchanged. */
#include "store/sqlite_pcache.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>

/* SQLite's lock-byte offset (PENDING_BYTE, fixed unless a test build moves it). */
#define LOCK_BYTE_OFFSET 0x40000000u

struct wrapped {
  sqlite3_pcache *inner;
  unsigned max_key;  /* no cached page has a greater key, but perhaps the lock-byte one */
  unsigned lock_key; /* the lock-byte page's number: the B-tree's temporary key */
  unsigned at_lock;  /* pages re-keyed to lock_key and not away since */
};

static sqlite3_pcache_methods2 inner_methods;
static sqlite3_pcache_methods2 wrapper_methods;
static bool installed;
static atomic_ulong truncates_skipped, truncates_passed;

static int w_init(void *arg) {
  (void)arg;
  return inner_methods.xInit ? inner_methods.xInit(inner_methods.pArg) : SQLITE_OK;
}

static void w_shutdown(void *arg) {
  (void)arg;
  if (inner_methods.xShutdown) inner_methods.xShutdown(inner_methods.pArg);
}

static sqlite3_pcache *w_create(int page_size, int extra, int purgeable) {
  struct wrapped *w = sqlite3_malloc(sizeof *w);
  if (!w) return NULL;
  w->inner = inner_methods.xCreate(page_size, extra, purgeable);
  if (!w->inner) {
    sqlite3_free(w);
    return NULL;
  }
  w->max_key = 0;
  w->lock_key = page_size > 0 ? LOCK_BYTE_OFFSET / (unsigned)page_size + 1 : 0;
  w->at_lock = 0;
  return (sqlite3_pcache *)w;
}

static void w_cachesize(sqlite3_pcache *p, int n) {
  inner_methods.xCachesize(((struct wrapped *)p)->inner, n);
}

static int w_pagecount(sqlite3_pcache *p) {
  return inner_methods.xPagecount(((struct wrapped *)p)->inner);
}

static sqlite3_pcache_page *w_fetch(sqlite3_pcache *p, unsigned key, int create) {
  struct wrapped *w = (struct wrapped *)p;
  sqlite3_pcache_page *page = inner_methods.xFetch(w->inner, key, create);
  /* (a page at the lock-byte number while one was re-keyed there is counted by at_lock) */
  if (page && key > w->max_key && !(key == w->lock_key && w->at_lock > 0)) w->max_key = key;
  return page;
}

static void w_unpin(sqlite3_pcache *p, sqlite3_pcache_page *page, int discard) {
  inner_methods.xUnpin(((struct wrapped *)p)->inner, page, discard);
}

static void w_rekey(sqlite3_pcache *p, sqlite3_pcache_page *page, unsigned old_key,
                    unsigned new_key) {
  struct wrapped *w = (struct wrapped *)p;
  inner_methods.xRekey(w->inner, page, old_key, new_key);
  if (old_key == w->lock_key && w->at_lock > 0) w->at_lock--;
  if (new_key == w->lock_key && new_key > w->max_key)
    w->at_lock++; /* held apart: it is normally re-keyed away before the transaction ends */
  else if (new_key > w->max_key)
    w->max_key = new_key;
}

static void w_truncate(sqlite3_pcache *p, unsigned limit) {
  struct wrapped *w = (struct wrapped *)p;
  bool lock_page_dropped = w->at_lock > 0 && w->lock_key >= limit;
  if (limit > w->max_key && !lock_page_dropped) { /* nothing cached at or past limit */
    atomic_fetch_add_explicit(&truncates_skipped, 1, memory_order_relaxed);
    return;
  }
  atomic_fetch_add_explicit(&truncates_passed, 1, memory_order_relaxed);
  inner_methods.xTruncate(w->inner, limit);
  if (limit <= w->max_key) w->max_key = limit > 0 ? limit - 1 : 0;
  if (lock_page_dropped) w->at_lock = 0;
}

static void w_destroy(sqlite3_pcache *p) {
  struct wrapped *w = (struct wrapped *)p;
  inner_methods.xDestroy(w->inner);
  sqlite3_free(w);
}

static void w_shrink(sqlite3_pcache *p) { inner_methods.xShrink(((struct wrapped *)p)->inner); }

static void install_once(void) {
  if (sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &inner_methods) != SQLITE_OK ||
      !inner_methods.xCreate || inner_methods.iVersion < 1)
    return;
  wrapper_methods = (sqlite3_pcache_methods2){
      .iVersion = 1,
      .pArg = NULL,
      .xInit = w_init,
      .xShutdown = w_shutdown,
      .xCreate = w_create,
      .xCachesize = w_cachesize,
      .xPagecount = w_pagecount,
      .xFetch = w_fetch,
      .xUnpin = w_unpin,
      .xRekey = w_rekey,
      .xTruncate = w_truncate,
      .xDestroy = w_destroy,
      .xShrink = w_shrink,
  };
  installed = sqlite3_config(SQLITE_CONFIG_PCACHE2, &wrapper_methods) == SQLITE_OK;
}

bool sqlite_pcache_install(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, install_once);
  return installed;
}

void sqlite_pcache_counts(unsigned long *skipped, unsigned long *passed) {
  *skipped = atomic_load_explicit(&truncates_skipped, memory_order_relaxed);
  *passed = atomic_load_explicit(&truncates_passed, memory_order_relaxed);
}
