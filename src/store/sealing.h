/* Sealing rows (encryption at rest, seal/seal.h) the same way on every backend: the associated
 * data that names a row, the blind index kept in email_id/account_id, the values an equality
 * filter looks for, and a writer's reusable buffer.
 *
 * Storage shape (both backends): a sealed_with column (key id; NULL: plaintext) on every row
 * holding sealable data; bodies and audio chunks sealed in place; email and account sealed into
 * email_sealed/account_sealed while email_id/account_id hold their blind index as text:
 * STORE_INDEX_MARK and 32 hex digits. A validated id never starts with a control character (the
 * model refuses them, and so does the store), so an index never equals a plaintext id. */
#ifndef GSR_STORE_SEALING_H
#define GSR_STORE_SEALING_H

#include <stdbool.h>
#include <stddef.h>

#include "model/conversation.h"
#include "model/outbox.h"
#include "seal/seal.h"

#define STORE_INDEX_MARK '\x01'
#define STORE_INDEX_TEXT_LEN (1 + 2 * SEAL_INDEX_LEN) /* without the NUL */
/* "conversations.account_id" NUL, a webhook id (or a conversation id) NUL, a conversation id (or
 * a decimal sequence number): the longest associated data, never cut. */
#define STORE_AAD_MAX (32 + MODEL_CONVERSATION_ID_MAX + 1 + MODEL_CONVERSATION_ID_MAX + 1)
/* Sealed email or account, whichever is longer. */
#define STORE_SEALED_ID_MAX \
  (MODEL_EMAIL_ID_MAX + 2 + SEAL_KEY_ID_MAX + SEAL_NONCE_LEN + SEAL_TAG_LEN)
/* What a key's check value (seal_keys) seals. */
#define STORE_SEAL_CHECK "gensendrep seal check"

/* The row's identity as associated data: what ("table.column"), NUL, pk, and when pk2 is not
 * NULL, NUL and pk2. Returns its length (into out, STORE_AAD_MAX bytes; cut at the end). */
size_t store_seal_aad(char out[STORE_AAD_MAX], const char *what, const char *pk, const char *pk2);

/* Whether an email or account id may be stored: not NULL-free printable text starting with a
 * control character (which would pass for a blind index). */
bool store_id_sealable(const char *value);

/* value's blind index under ring key i as stored: STORE_INDEX_MARK + 32 lowercase hex + NUL.
 * false when it could not be computed (out must then match nothing: fail the caller). */
__attribute__((warn_unused_result)) bool store_index_text(const struct seal_ring *r, size_t i,
                                                          const char *value,
                                                          char out[STORE_INDEX_TEXT_LEN + 1]);

/* An email or account id sealed with the ring's first key: its blind index and its sealed value
 * (len bytes; 0: the id is unknown, NULL). */
struct store_sealed_id {
  char index[STORE_INDEX_TEXT_LEN + 1];
  unsigned char sealed[STORE_SEALED_ID_MAX];
  size_t len;
};

/* A write's email and account, sealed by the backend on the submitting thread so its writer
 * thread only binds them (store_write.presealed). */
struct store_presealed {
  bool done; /* false: not prepared; the writer seals them itself */
  struct store_sealed_id email, account;
};

/* Seals v (NULL: unknown, len 0) as what ("conversations.email_id") of conversation_id into out.
 * false when it is too long or OpenSSL failed. */
__attribute__((warn_unused_result)) bool store_seal_id(const struct seal_ring *r, const char *what,
                                                       const char *conversation_id, const char *v,
                                                       struct store_sealed_id *out);

/* A JSON array of the n account ids and, with a ring, each one's index under every key of it
 * (malloc'ed; NULL when out of memory): a list's account bound as one parameter, finding
 * plaintext and sealed rows alike. */
char *store_accounts_json_ring(const struct seal_ring *r, const char *const *accounts, size_t n);

/* A writer's buffer, grown when a value needs more and kept for the next one. */
struct store_seal_buf {
  unsigned char *data;
  size_t cap;
};

/* Makes b hold at least n bytes; false when out of memory. */
bool store_seal_buf_reserve(struct store_seal_buf *b, size_t n);
/* Seals plain[0..len) with the ring's first key and aad into b: the sealed bytes (valid until
 * the next call), *out_len set; NULL when out of memory or OpenSSL failed. */
const unsigned char *store_seal_into(struct store_seal_buf *b, const struct seal_ring *r,
                                     const void *aad, size_t aad_len, const void *plain, size_t len,
                                     size_t *out_len);
void store_seal_buf_free(struct store_seal_buf *b);

/* Opens a sealed text (a failure reason, a key's accounts) into out (NUL-terminated, cap bytes):
 * false when it does not open or holds a NUL or does not fit. */
bool store_open_text(const struct seal_ring *r, const void *aad, size_t aad_len, const void *sealed,
                     size_t len, char *out, size_t cap);

/* Opens a sealed email or account id into out (NUL-terminated, cap bytes): false when it does
 * not open (no ring, another key, moved, changed) or is not printable text that fits. */
bool store_open_id(const struct seal_ring *r, const void *aad, size_t aad_len, const void *sealed,
                   size_t len, char *out, size_t cap);

/* The subscriptions a fan-out found with a URL or account that does not open, so that each is
 * logged once (when it first turns up), not at every round. One per store, touched only by the
 * thread that fans out. */
struct store_unopened {
  char (*prev)[OUTBOX_SUB_ID_MAX], (*cur)[OUTBOX_SUB_ID_MAX];
  size_t nprev, ncur, capcur;
};

/* Notes subscription id in this round; logs it (one error line, never a value) unless the last
 * round had it too. */
void store_unopened_note(struct store_unopened *u, const char *id);
/* Ends a round: what was noted becomes what the next round compares with (complete false: the
 * round stopped short, so what the last round had is kept as well). */
void store_unopened_end(struct store_unopened *u, bool complete);
void store_unopened_free(struct store_unopened *u);

#endif
