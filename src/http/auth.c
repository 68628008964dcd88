/* Bearer authentication. Comparing SHA-256 digests makes every comparison the same length,
 * so neither a key's contents nor its length leaks through timing. */
#include "http/auth.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "ext/crypto.h"

/* Separates the key's public name from its digest: knowing a name (say, from Redis) gives no
 * digest to compare against. */
static const char key_id_domain[] = "gensendrep rate-limit key id v1:";

static void set_key_id(struct auth *a, size_t i) {
  static const char hex[] = "0123456789abcdef";
  unsigned char in[sizeof key_id_domain - 1 + 32], d[32];
  memcpy(in, key_id_domain, sizeof key_id_domain - 1);
  memcpy(in + sizeof key_id_domain - 1, a->digest[i], 32);
  crypto_sha256(in, sizeof in, d);
  for (size_t k = 0; k < AUTH_KEY_ID_LEN / 2; k++) {
    a->id[i][2 * k] = hex[d[k] >> 4];
    a->id[i][2 * k + 1] = hex[d[k] & 15];
  }
  a->id[i][AUTH_KEY_ID_LEN] = '\0';
}

size_t auth_init(struct auth *a, const char *keys, char *err, size_t errlen) {
  memset(a, 0, sizeof *a);
  /* Items are read in place (no copy of the keys is made, so none is left behind). */
  for (const char *p = keys; p;) {
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    while (p < end && isspace((unsigned char)*p)) p++;
    while (end > p && isspace((unsigned char)end[-1])) end--;
    if (end > p) {
      if (a->nkeys == AUTH_KEYS_MAX) {
        snprintf(err, errlen, "API_SECRET_KEY: more than %d keys", AUTH_KEYS_MAX);
        memset(a, 0, sizeof *a);
        return 0;
      }
      crypto_sha256(p, (size_t)(end - p), a->digest[a->nkeys]);
      set_key_id(a, a->nkeys);
      a->nkeys++;
    }
    p = comma ? comma + 1 : NULL;
  }
  if (a->nkeys == 0) snprintf(err, errlen, "API_SECRET_KEY: no key");
  return a->nkeys;
}

bool auth_bearer_token(const char *authorization, const char **token, size_t *len) {
  if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0) return false;
  const char *t = authorization + 7;
  while (*t == ' ') t++;
  size_t n = strlen(t);
  while (n && (t[n - 1] == ' ' || t[n - 1] == '\t')) n--;
  *token = t;
  *len = n;
  return true;
}

int auth_check(const struct auth *a, const char *authorization) {
  const char *token;
  size_t len;
  if (!auth_bearer_token(authorization, &token, &len) || len == 0) return -1;
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

const char *auth_key_id(const struct auth *a, int i) {
  return i >= 0 && (size_t)i < a->nkeys ? a->id[i] : "";
}
