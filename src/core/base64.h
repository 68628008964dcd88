/* Strict base64: padded standard base64, shared by the signature secrets and signatures (sig/)
 * and the encryption keys (seal/); unpadded base64url for tokens in URLs (the list cursor). */
#ifndef GSR_BASE64_H
#define GSR_BASE64_H

#include <stdbool.h>
#include <stddef.h>

/* Decodes s[0..len) as Python's b64decode(validate=True) does: the standard alphabet, a length
 * that is a multiple of 4, '=' only as the last one or two characters ("" decodes to nothing).
 * With canonical, the unused bits before the padding must be zero too. *out_len is the decoded
 * length, even when it exceeds cap (only the first cap bytes are written). False when s is not
 * such base64. Temporaries are wiped: the bytes may be a key. */
__attribute__((warn_unused_result)) bool base64_decode(const char *s, size_t len, bool canonical,
                                                       unsigned char *out, size_t cap,
                                                       size_t *out_len);

/* Encodes data[0..len) as padded standard base64 into out, which holds at least
 * 4 * ((len + 2) / 3) + 1 bytes; returns the length written (NUL not counted). */
size_t base64_encode(const unsigned char *data, size_t len, char *out);

/* base64url (RFC 4648 section 5) without padding, as tokens in URLs use it. Encodes into out,
 * which holds at least (4 * len + 2) / 3 + 1 bytes; returns the length written. */
size_t base64url_encode(const unsigned char *data, size_t len, char *out);

/* Strict: the url alphabet only, no padding, unused low bits zero (one text per byte string).
 * Returns the decoded length, or -1 (also when it would exceed cap). */
__attribute__((warn_unused_result)) long base64url_decode(const char *s, size_t len,
                                                          unsigned char *out, size_t cap);

#endif
