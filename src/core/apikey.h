/* API keys kept as data (the keys table): the key string's format, scopes and the record a
 * key is stored as. Parsing only; hashing and randomness are the callers' (ext/crypto).
 *
 * A key reads gsr_<id>_<secret>: id is APIKEY_ID_LEN lowercase hex digits (public: it finds
 * the record), secret APIKEY_SECRET_LEN lowercase hex digits (32 random bytes, 256 bits). Only
 * SHA-256(secret) is stored: a secret that long cannot be guessed, so a fast hash is enough
 * (a slow password hash protects low-entropy secrets, which these are not). */
#ifndef GSR_APIKEY_H
#define GSR_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define APIKEY_PREFIX "gsr_"
#define APIKEY_ID_LEN 16     /* hex of 8 random bytes */
#define APIKEY_SECRET_LEN 64 /* hex of 32 random bytes */
#define APIKEY_LEN (4 + APIKEY_ID_LEN + 1 + APIKEY_SECRET_LEN)
#define APIKEY_NAME_MAX 128    /* bytes */
#define APIKEY_ACCOUNTS_MAX 16 /* accounts one key may be bound to */
#define APIKEY_ACCOUNT_MAX 256 /* bytes of one account id (as MODEL_ACCOUNT_ID_MAX) */
/* The accounts of a record joined with '\n' (how the store keeps them). */
#define APIKEY_ACCOUNTS_TEXT_MAX (APIKEY_ACCOUNTS_MAX * (APIKEY_ACCOUNT_MAX + 1))

/* Scopes: what a key may do. admin includes every other. */
#define APIKEY_SCOPE_INGEST 1u /* post webhooks */
#define APIKEY_SCOPE_READ 2u   /* get, list, audio, events */
#define APIKEY_SCOPE_DELETE 4u /* erase conversations */
#define APIKEY_SCOPE_ADMIN 8u  /* keys, and everything else */
/* What a key bound to accounts may hold. A webhook names its own account, and a bound writer
 * would need every write checked against the row it replaces (a conversationId of another
 * account would move over): so bound keys read and erase, writers see every account. */
#define APIKEY_SCOPES_BOUND (APIKEY_SCOPE_READ | APIKEY_SCOPE_DELETE)
/* The scopes a key really has: a bound key's ingest and admin count for nothing. */
static inline unsigned apikey_effective_scopes(unsigned scopes, size_t naccounts) {
  return naccounts ? scopes & APIKEY_SCOPES_BOUND : scopes;
}
#define APIKEY_SCOPES_ALL 15u
#define APIKEY_SCOPES_TEXT_MAX 32 /* "ingest,read,delete,admin" + NUL */

struct apikey_record {
  char id[APIKEY_ID_LEN + 1];
  char name[APIKEY_NAME_MAX + 1];
  unsigned scopes;
  size_t naccounts; /* 0: every account */
  char accounts[APIKEY_ACCOUNTS_MAX][APIKEY_ACCOUNT_MAX + 1];
  unsigned char secret_sha256[32];
  int64_t created_us;
  int64_t expires_us;   /* 0: never */
  int64_t revoked_us;   /* 0: not revoked */
  int64_t last_used_us; /* 0: never used */
};

/* Splits a key string of len bytes into its id (NUL-terminated) and secret (the
 * APIKEY_SECRET_LEN bytes at *secret, inside s). False unless s is exactly a well-formed key. */
__attribute__((warn_unused_result)) bool apikey_parse(const char *s, size_t len,
                                                      char id[APIKEY_ID_LEN + 1],
                                                      const char **secret);
/* True when s (NUL-terminated) is a well-formed key id. */
bool apikey_id_valid(const char *s);

/* The scope named by name[0..len) or 0 when there is none. */
unsigned apikey_scope_named(const char *name, size_t len);
/* "ingest,read,..." from a scope mask (in that fixed order) into out. */
void apikey_scopes_text(unsigned scopes, char out[APIKEY_SCOPES_TEXT_MAX]);
/* Parses comma-separated scope names (no spaces) into *scopes; false on an unknown name or an
 * empty list. */
__attribute__((warn_unused_result)) bool apikey_scopes_parse(const char *s, unsigned *scopes);
/* The name of scope bit i (0..3). */
const char *apikey_scope_name(unsigned i);
/* Whether a key holding scopes may do what needs `need` (admin may do everything). */
static inline bool apikey_scopes_allow(unsigned scopes, unsigned need) {
  return (scopes & APIKEY_SCOPE_ADMIN) || (need && (scopes & need) == need);
}

/* Checks a name or an account id a client gave: non-empty, at most max bytes, no control
 * characters. Returns NULL when fine, else what is wrong (a static string). */
const char *apikey_text_problem(const char *s, size_t max);
/* Adds an account to r (false: too many, or a duplicate is skipped and true returned). */
__attribute__((warn_unused_result)) bool apikey_add_account(struct apikey_record *r,
                                                            const char *account);
/* The accounts of r joined with '\n' into out (APIKEY_ACCOUNTS_TEXT_MAX bytes). */
void apikey_accounts_join(const struct apikey_record *r, char *out);
/* The reverse: fills r's accounts from text ("" gives none); false when it does not fit. */
__attribute__((warn_unused_result)) bool apikey_accounts_split(struct apikey_record *r,
                                                               const char *text);
/* Whether a key bound to r's accounts may see account (NULL: a conversation without one). */
bool apikey_account_allowed(const struct apikey_record *r, const char *account);

#endif
