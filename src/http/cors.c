/* CORS origin matching: exact, case-insensitive comparison of scheme://host[:port];
 * a trailing slash in the configuration is tolerated. */
#include "http/cors.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"

void cors_init(struct cors *c, const char *origins) {
  memset(c, 0, sizeof *c);
  c->buf = strdup(origins ? origins : "");
  if (!c->buf) return;
  c->n = config_split_list(c->buf, c->origins, CORS_ORIGINS_MAX);
  for (size_t i = 0; i < c->n; i++) {
    size_t len = strlen(c->origins[i]);
    if (len > 1 && c->origins[i][len - 1] == '/') c->origins[i][len - 1] = '\0';
    if (strcmp(c->origins[i], "*") == 0) c->any = true;
  }
}

void cors_free(struct cors *c) {
  free(c->buf);
  memset(c, 0, sizeof *c);
}

/* The allowed Origin is echoed in a response header, so with "*" only one shaped like an
 * origin (scheme://host[:port]: visible ASCII, at most CORS_ORIGIN_BYTES_MAX bytes) may be:
 * anything else would copy a client's control bytes into our answer, or an Origin of ~20 KB
 * that, beside the request still held in the connection's memory pool, leaves no room for
 * the answer's headers (libmicrohttpd then closes the connection without a reply). */
static bool origin_plausible(const char *o) {
  for (size_t n = 0; o[n]; n++) {
    unsigned char c = (unsigned char)o[n];
    if (n >= CORS_ORIGIN_BYTES_MAX || c <= 0x20 || c >= 0x7f) return false;
  }
  return strstr(o, "://") != NULL;
}

bool cors_allowed(const struct cors *c, const char *origin) {
  if (!origin || !*origin || strcmp(origin, "null") == 0 || !origin_plausible(origin)) return false;
  if (c->any) return true;
  for (size_t i = 0; i < c->n; i++)
    if (strcasecmp(c->origins[i], origin) == 0) return true;
  return false;
}
