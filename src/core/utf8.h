/* UTF-8 checks for bytes a client controls: strict validation (no overlong forms, no
 * surrogates, nothing above U+10FFFF, as jansson and PostgreSQL demand) and a sanitizer for
 * text that quotes client bytes in an answer or a log line. */
#ifndef GSR_UTF8_H
#define GSR_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Length of the valid UTF-8 sequence starting at s[0] (1..4), or 0 when s[0..len) does not
 * start with one. len must be at least 1. */
size_t utf8_sequence_length(const char *s, size_t len);

/* True when s[0..len) is entirely valid UTF-8 (NUL bytes count as valid U+0000). */
bool utf8_valid(const char *s, size_t len);

/* Copies src[0..len) into dst (cap bytes, cap >= 1), always NUL-terminated, replacing each
 * invalid byte with U+FFFD. When dst is too small the copy stops at a character boundary.
 * Returns the number of bytes written before the NUL. */
size_t utf8_sanitize(char *dst, size_t cap, const char *src, size_t len);

#endif
