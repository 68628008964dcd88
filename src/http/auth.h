/* Bearer API-key authentication with constant-time comparison. Keys are held only as
 * SHA-256 digests, so they are never in a log, a core dump's obvious strings, or an error. */
#ifndef GSR_AUTH_H
#define GSR_AUTH_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

#define AUTH_KEYS_MAX CONFIG_API_KEYS_MAX
/* A key's public name: hex of the first 16 bytes of a SHA-256 derived from the key. */
#define AUTH_KEY_ID_LEN 32

struct auth {
  size_t nkeys;
  unsigned char digest[AUTH_KEYS_MAX][32];
  char id[AUTH_KEYS_MAX][AUTH_KEY_ID_LEN + 1];
};

/* Loads comma-separated keys (items trimmed, empty items skipped). Allocates nothing, so it
 * cannot run out of memory. Returns the number loaded; 0 (no key, or more than AUTH_KEYS_MAX)
 * with one line naming API_SECRET_KEY in err: the service must not start then. */
__attribute__((warn_unused_result)) size_t auth_init(struct auth *a, const char *keys, char *err,
                                                     size_t errlen);

/* The token of an "Authorization: Bearer <token>" value (surrounding blanks trimmed; it may be
 * empty), or false when the value is not a Bearer one. */
bool auth_bearer_token(const char *authorization, const char **token, size_t *len);

/* Returns the index of the matching key for an "Authorization" header value, or -1.
 * Every configured key is compared, in time independent of which (if any) matches. */
int auth_check(const struct auth *a, const char *authorization);

/* The stable name of key i (0 <= i < nkeys): the same key has the same name on every instance
 * whatever its place in API_SECRET_KEY, and the name reveals nothing usable about the key
 * (shared rate-limit windows are keyed by it). */
const char *auth_key_id(const struct auth *a, int i);

#endif
