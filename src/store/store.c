/* Backend selection from DATABASE_URL, and helpers shared by every backend. */
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dsn.h"

struct store *store_open(const char *url, char *err, size_t errlen) {
  return store_open_wait(url, 0, err, errlen);
}

struct store *store_open_wait(const char *url, int wait_seconds, char *err, size_t errlen) {
  const char *path = dsn_sqlite_path(url);
  if (path) {
    if (!*path) {
      snprintf(err, errlen, "DATABASE_URL: sqlite URL has no file path");
      return NULL;
    }
    return store_sqlite_open(path, err, errlen);
  }
  if (dsn_is_postgres(url)) return store_pg_open(url, wait_seconds, err, errlen);
  snprintf(err, errlen, "DATABASE_URL: unsupported scheme");
  return NULL;
}

void store_close(struct store *s) {
  if (s) s->ops->close(s);
}

void store_page_free(struct store_page *p) {
  for (size_t i = 0; i < p->count; i++) free(p->items[i].body);
  free(p->items);
  memset(p, 0, sizeof *p);
}
