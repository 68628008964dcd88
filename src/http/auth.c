/* Bearer authentication. Comparing SHA-256 digests makes every comparison the same length,
 * so neither a key's contents nor its length leaks through timing. */
#include "http/auth.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/config.h"
#include "ext/crypto.h"

size_t auth_init(struct auth *a, const char *keys) {
  memset(a, 0, sizeof *a);
  char *copy = strdup(keys);
  if (!copy) return 0;
  char *items[AUTH_KEYS_MAX];
  a->nkeys = config_split_list(copy, items, AUTH_KEYS_MAX);
  for (size_t i = 0; i < a->nkeys; i++) crypto_sha256(items[i], strlen(items[i]), a->digest[i]);
  /* The plaintext keys do not outlive this function. */
  memset(copy, 0, strlen(keys));
  free(copy);
  return a->nkeys;
}

int auth_check(const struct auth *a, const char *authorization) {
  if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0) return -1;
  const char *token = authorization + 7;
  while (*token == ' ') token++;
  size_t len = strlen(token);
  while (len && (token[len - 1] == ' ' || token[len - 1] == '\t')) len--;
  if (len == 0) return -1;
  unsigned char d[32];
  crypto_sha256(token, len, d);
  int found = -1;
  for (size_t i = 0; i < a->nkeys; i++) {
    /* No early exit: every key is compared. */
    int eq = crypto_equal(d, a->digest[i], sizeof d);
    found = eq && found < 0 ? (int)i : found;
  }
  return found;
}
