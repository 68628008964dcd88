/* API key strings, scopes and accounts (see apikey.h). */
#include "core/apikey.h"

#include <stdio.h>
#include <string.h>

#include "core/utf8.h"

static const char *const scope_names[] = {"ingest", "read", "delete", "admin"};

static bool lower_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool apikey_parse(const char *s, size_t len, char id[APIKEY_ID_LEN + 1], const char **secret) {
  if (len != APIKEY_LEN || memcmp(s, APIKEY_PREFIX, 4) != 0 || s[4 + APIKEY_ID_LEN] != '_' ||
      !lower_hex(s + 4, APIKEY_ID_LEN) || !lower_hex(s + 5 + APIKEY_ID_LEN, APIKEY_SECRET_LEN))
    return false;
  memcpy(id, s + 4, APIKEY_ID_LEN);
  id[APIKEY_ID_LEN] = '\0';
  *secret = s + 5 + APIKEY_ID_LEN;
  return true;
}

bool apikey_id_valid(const char *s) {
  return strlen(s) == APIKEY_ID_LEN && lower_hex(s, APIKEY_ID_LEN);
}

const char *apikey_scope_name(unsigned i) { return i < 4 ? scope_names[i] : ""; }

unsigned apikey_scope_named(const char *name, size_t len) {
  for (unsigned i = 0; i < 4; i++)
    if (strlen(scope_names[i]) == len && memcmp(scope_names[i], name, len) == 0) return 1u << i;
  return 0;
}

void apikey_scopes_text(unsigned scopes, char out[APIKEY_SCOPES_TEXT_MAX]) {
  size_t pos = 0;
  out[0] = '\0';
  for (unsigned i = 0; i < 4; i++)
    if (scopes & (1u << i))
      pos += (size_t)snprintf(out + pos, APIKEY_SCOPES_TEXT_MAX - pos, "%s%s", pos ? "," : "",
                              scope_names[i]);
}

bool apikey_scopes_parse(const char *s, unsigned *scopes) {
  *scopes = 0;
  if (!*s) return false;
  for (const char *p = s;;) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    unsigned bit = apikey_scope_named(p, n);
    if (!bit) return false;
    *scopes |= bit;
    if (!comma) return true;
    p = comma + 1;
  }
}

const char *apikey_text_problem(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n == 0) return "must not be empty";
  if (n > max) return "is too long";
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return "contains a control character";
  if (!utf8_valid(s, n)) return "is not valid UTF-8";
  return NULL;
}

bool apikey_add_account(struct apikey_record *r, const char *account) {
  for (size_t i = 0; i < r->naccounts; i++)
    if (strcmp(r->accounts[i], account) == 0) return true;
  if (r->naccounts == APIKEY_ACCOUNTS_MAX || strlen(account) > APIKEY_ACCOUNT_MAX) return false;
  snprintf(r->accounts[r->naccounts++], APIKEY_ACCOUNT_MAX + 1, "%s", account);
  return true;
}

void apikey_accounts_join(const struct apikey_record *r, char *out) {
  size_t pos = 0;
  out[0] = '\0';
  for (size_t i = 0; i < r->naccounts; i++)
    pos += (size_t)snprintf(out + pos, APIKEY_ACCOUNTS_TEXT_MAX - pos, "%s%s", i ? "\n" : "",
                            r->accounts[i]);
}

bool apikey_accounts_split(struct apikey_record *r, const char *text) {
  r->naccounts = 0;
  if (!*text) return true;
  for (const char *p = text;;) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    if (r->naccounts == APIKEY_ACCOUNTS_MAX || n > APIKEY_ACCOUNT_MAX) return false;
    memcpy(r->accounts[r->naccounts], p, n);
    r->accounts[r->naccounts++][n] = '\0';
    if (!nl) return true;
    p = nl + 1;
  }
}

bool apikey_account_allowed(const struct apikey_record *r, const char *account) {
  if (r->naccounts == 0) return true;
  if (!account) return false;
  for (size_t i = 0; i < r->naccounts; i++)
    if (strcmp(r->accounts[i], account) == 0) return true;
  return false;
}
