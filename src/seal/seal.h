/* Encryption at rest: the envelope every sealed value is kept in, and the blind index that lets
 * equality filters work on sealed fields. One interface; store/ seals and opens through it, it
 * knows nothing of tables.
 *
 * ENCRYPTION_KEYS is "<key id>:<base64 of 32 bytes>[,...]": the first key seals, every key
 * opens. From each master key two keys are derived (HMAC-SHA256 of a fixed label): one for
 * AES-256-GCM, one for the blind index, so neither use weakens the other.
 *
 * A sealed value is: SEAL_MAGIC (1 byte), the key id's length (1 byte), the key id, a random
 * 12-byte nonce, the ciphertext (as long as the plaintext) and the 16-byte GCM tag. GCM
 * authenticates the header (magic, length, key id) followed by the caller's associated data
 * (the row's identity: table, column, primary key), which is not stored: a value copied to
 * another row or column, or relabelled with another key id, does not open. Two ids may not
 * name the same key bytes. */
#ifndef GSR_SEAL_H
#define GSR_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SEAL_MAGIC 0xA7
#define SEAL_KEY_ID_MAX 32 /* bytes of a key id: [A-Za-z0-9_-], 1 to 32 */
#define SEAL_KEYS_MAX 16
#define SEAL_NONCE_LEN 12
#define SEAL_TAG_LEN 16
#define SEAL_INDEX_LEN 16 /* bytes of a blind index (a truncated HMAC-SHA256) */

struct seal_ring;

/* Parses ENCRYPTION_KEYS (NULL or "" gives NULL with err empty: encryption is off). On a bad
 * value returns NULL with one line naming ENCRYPTION_KEYS in err (never a key's bytes). */
__attribute__((warn_unused_result)) struct seal_ring *seal_ring_parse(const char *text, char *err,
                                                                      size_t errlen);
void seal_ring_free(struct seal_ring *r);
size_t seal_ring_count(const struct seal_ring *r);
/* The id of key i (0: the key that seals). */
const char *seal_ring_key_id(const struct seal_ring *r, size_t i);
/* Whether the ring holds a key of that id. */
bool seal_ring_has(const struct seal_ring *r, const char *key_id);

/* Bytes a sealed value of plain_len bytes takes with the sealing key. */
size_t seal_sealed_len(const struct seal_ring *r, size_t plain_len);
/* Seals plain[0..len) with key 0 into out (seal_sealed_len bytes). false: the random source
 * or OpenSSL failed. */
__attribute__((warn_unused_result)) bool seal_seal(const struct seal_ring *r, const void *aad,
                                                   size_t aad_len, const void *plain, size_t len,
                                                   unsigned char *out);
/* Whether data looks like a sealed value (its first byte and framing); a plaintext body never
 * does, since every stored body is JSON text or MP3 audio kept beside a sealed_with marker. */
bool seal_is_sealed(const void *data, size_t len);
/* The key id a sealed value names (into id, SEAL_KEY_ID_MAX + 1 bytes); false when not sealed. */
bool seal_key_of(const void *sealed, size_t len, char id[SEAL_KEY_ID_MAX + 1]);
/* Plaintext length of a sealed value (0 when it is not one). */
size_t seal_plain_len(const void *sealed, size_t len);
/* Opens sealed into out (seal_plain_len bytes; *out_len set). false when the key it names is
 * not in the ring, or it was changed, or aad is not the one it was sealed with (moved). */
__attribute__((warn_unused_result)) bool seal_open(const struct seal_ring *r, const void *aad,
                                                   size_t aad_len, const void *sealed, size_t len,
                                                   unsigned char *out, size_t *out_len);

/* The blind index of value under key i: the first SEAL_INDEX_LEN bytes of HMAC-SHA256 with
 * key i's index key over value. Rows sealed with key i carry the index under key i, so a
 * filter looks for the index under every key in the ring. false (out untouched) for a bad i or
 * when OpenSSL fails: the caller must then fail its write or query, never use a placeholder. */
__attribute__((warn_unused_result)) bool seal_index(const struct seal_ring *r, size_t i,
                                                    const void *value, size_t len,
                                                    unsigned char out[SEAL_INDEX_LEN]);

/* A new ENCRYPTION_KEYS item "<key id>:<base64 of 32 random bytes>" into out (cap >= 100); the
 * key id is "k" and the UTC date and time (kYYYYMMDDHHMMSS). false when randomness failed. */
__attribute__((warn_unused_result)) bool seal_generate(char *out, size_t cap);

#endif
