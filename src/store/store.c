/* Backend selection from DATABASE_URL, and helpers shared by every backend. */
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* sqlite:PATH keeps PATH as written (relative to the working directory); sqlite://PATH drops
 * the "//" as in file URLs, so sqlite:///var/lib/x.db is absolute. */
static const char *sqlite_path(const char *url) {
  const char *p = url + strlen("sqlite:");
  if (strncmp(p, "//", 2) == 0) p += 2;
  return p;
}

bool store_url_is_pg(const char *url) {
  return strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0;
}

struct store *store_open(const char *url, char *err, size_t errlen) {
  if (strncmp(url, "sqlite:", 7) == 0) {
    const char *path = sqlite_path(url);
    if (!*path) {
      snprintf(err, errlen, "DATABASE_URL: sqlite URL has no file path");
      return NULL;
    }
    return store_sqlite_open(path, err, errlen);
  }
  if (store_url_is_pg(url)) return store_pg_open(url, err, errlen);
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
