/* Strict UTF-8 (RFC 3629): the table of well-formed byte sequences in Unicode 15, section 3.9,
 * table 3-7, written out as ranges so overlong forms and surrogates never pass. */
#include "core/utf8.h"

#include <string.h>

static bool in(unsigned char c, unsigned char lo, unsigned char hi) { return c >= lo && c <= hi; }

size_t utf8_sequence_length(const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  unsigned char c = u[0];
  if (c < 0x80) return 1;
  if (in(c, 0xc2, 0xdf)) return len >= 2 && in(u[1], 0x80, 0xbf) ? 2 : 0;
  if (in(c, 0xe0, 0xef)) {
    if (len < 3 || !in(u[2], 0x80, 0xbf)) return 0;
    unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
    return in(u[1], lo, hi) ? 3 : 0;
  }
  if (in(c, 0xf0, 0xf4)) {
    if (len < 4 || !in(u[2], 0x80, 0xbf) || !in(u[3], 0x80, 0xbf)) return 0;
    unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    return in(u[1], lo, hi) ? 4 : 0;
  }
  return 0;
}

bool utf8_valid(const char *s, size_t len) {
  for (size_t i = 0; i < len;) {
    size_t n = utf8_sequence_length(s + i, len - i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

size_t utf8_sanitize(char *dst, size_t cap, const char *src, size_t len) {
  static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
  size_t w = 0;
  for (size_t i = 0; i < len;) {
    size_t n = utf8_sequence_length(src + i, len - i);
    const char *from = n ? src + i : replacement;
    size_t take = n ? n : 3;
    if (w + take >= cap) break;
    memcpy(dst + w, from, take);
    w += take;
    i += n ? n : 1;
  }
  dst[w] = '\0';
  return w;
}
