/* The API key parser (core/apikey.c), reached by every request's Authorization header, and the
 * scope and account texts read back from the database. Properties: a key is accepted only at
 * exactly APIKEY_LEN bytes starting "gsr_"; the id is valid, lowercase hex, and the secret
 * points inside the input; a parsed scope list prints back to a list that parses to the same
 * mask; accounts split then joined give the text back. */
#include <string.h>

#include "core/apikey.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1); /* exact size + NUL: ASan sees any read past the end */
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = '\0';
  char id[APIKEY_ID_LEN + 1];
  const char *secret = NULL;
  if (apikey_parse(s, size, id, &secret)) {
    FUZZ_CHECK(size == APIKEY_LEN && memcmp(s, "gsr_", 4) == 0);
    FUZZ_CHECK(apikey_id_valid(id));
    FUZZ_CHECK(secret == s + 5 + APIKEY_ID_LEN);
    FUZZ_CHECK(memchr(secret, '\0', APIKEY_SECRET_LEN) == NULL);
  }
  unsigned scopes;
  if (apikey_scopes_parse(s, &scopes)) {
    FUZZ_CHECK(scopes != 0 && (scopes & ~APIKEY_SCOPES_ALL) == 0);
    char text[APIKEY_SCOPES_TEXT_MAX];
    apikey_scopes_text(scopes, text);
    unsigned again;
    FUZZ_CHECK(apikey_scopes_parse(text, &again) && again == scopes);
  }
  struct apikey_record *r = calloc(1, sizeof *r);
  if (r && apikey_accounts_split(r, s)) {
    FUZZ_CHECK(r->naccounts <= APIKEY_ACCOUNTS_MAX);
    char *text = malloc(APIKEY_ACCOUNTS_TEXT_MAX);
    if (text && strlen(s) < APIKEY_ACCOUNTS_TEXT_MAX) {
      apikey_accounts_join(r, text);
      FUZZ_CHECK(strcmp(text, s) == 0);
    }
    free(text);
  }
  free(r);
  free(s);
  return 0;
}
