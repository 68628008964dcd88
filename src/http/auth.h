/* Bearer API-key authentication with constant-time comparison. Keys are held only as
 * SHA-256 digests, so they are never in a log, a core dump's obvious strings, or an error. */
#ifndef GSR_AUTH_H
#define GSR_AUTH_H

#include <stddef.h>

#define AUTH_KEYS_MAX 32

struct auth {
  size_t nkeys;
  unsigned char digest[AUTH_KEYS_MAX][32];
};

/* Loads comma-separated keys; returns the number loaded (0: none). */
size_t auth_init(struct auth *a, const char *keys);

/* Returns the index of the matching key for an "Authorization" header value, or -1.
 * Every configured key is compared, in time independent of which (if any) matches. */
int auth_check(const struct auth *a, const char *authorization);

#endif
