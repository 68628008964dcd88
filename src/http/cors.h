/* CORS policy from CORS_ORIGINS. */
#ifndef GSR_CORS_H
#define GSR_CORS_H

#include <stdbool.h>
#include <stddef.h>

#define CORS_ORIGINS_MAX 64
#define CORS_ORIGIN_BYTES_MAX 512 /* a host name is at most 253 bytes */

struct cors {
  bool any;
  size_t n;
  char *origins[CORS_ORIGINS_MAX];
  char *buf;
};

void cors_init(struct cors *c, const char *origins);
void cors_free(struct cors *c);
/* True when a browser at origin may read our answers (never for an Origin that is not
 * visible ASCII with "://", or is longer than CORS_ORIGIN_BYTES_MAX). */
bool cors_allowed(const struct cors *c, const char *origin);

#define CORS_ALLOW_HEADERS "Authorization, Content-Type, X-Request-Id"
#define CORS_EXPOSE_HEADERS                                                            \
  "X-Request-Id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, " \
  "WWW-Authenticate"
#define CORS_MAX_AGE "600"

#endif
