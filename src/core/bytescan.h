/* Finding the next byte of interest in a run of text eight bytes at a time (SWAR: one 64-bit
 * word holds eight bytes; no SIMD instructions needed). JSON bodies are mostly string
 * contents, where only a quote, a backslash (and, for a validator, controls and non-ASCII)
 * matter: the byte-at-a-time loops over them were most of what the JSON scanners cost. */
#ifndef GSR_CORE_BYTESCAN_H
#define GSR_CORE_BYTESCAN_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define BYTESCAN_ONES 0x0101010101010101ULL
#define BYTESCAN_HIGHS 0x8080808080808080ULL

/* High bit set in each byte of x that is below n (n <= 128); a byte above a match may be set
 * too (a borrow), never one below the first match. */
static inline uint64_t bytescan_below(uint64_t x, unsigned n) {
  return (x - BYTESCAN_ONES * n) & ~x & BYTESCAN_HIGHS;
}

/* High bit set in each byte of x equal to c (same caveat). */
static inline uint64_t bytescan_equal(uint64_t x, unsigned char c) {
  return bytescan_below(x ^ (BYTESCAN_ONES * c), 1);
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define BYTESCAN_WORDS 1
/* The index in the word of the first byte whose high bit is set in m (m != 0): the lowest
 * address is the least significant byte, so a borrow only ever marks bytes after the first
 * match. */
static inline size_t bytescan_first(uint64_t m) { return (size_t)__builtin_ctzll(m) / 8; }
#else
#define BYTESCAN_WORDS 0 /* elsewhere a byte at a time */
static inline size_t bytescan_first(uint64_t m) {
  (void)m;
  return 0;
}
#endif

/* The first p in [p, end) that is '"' or '\\'; end when none. */
static inline const unsigned char *bytescan_quote(const unsigned char *p,
                                                  const unsigned char *end) {
  while (BYTESCAN_WORDS && end - p >= 8) {
    uint64_t x;
    memcpy(&x, p, 8);
    uint64_t m = bytescan_equal(x, '"') | bytescan_equal(x, '\\');
    if (m) return p + bytescan_first(m);
    p += 8;
  }
  while (p < end && *p != '"' && *p != '\\') p++;
  return p;
}

/* The first p in [p, end) that is '"', '\\', a control (below 0x20) or not ASCII; end when
 * none. */
static inline const unsigned char *bytescan_json_special(const unsigned char *p,
                                                         const unsigned char *end) {
  while (BYTESCAN_WORDS && end - p >= 8) {
    uint64_t x;
    memcpy(&x, p, 8);
    uint64_t m = bytescan_equal(x, '"') | bytescan_equal(x, '\\') | bytescan_below(x, 0x20) |
                 (x & BYTESCAN_HIGHS);
    if (m) return p + bytescan_first(m);
    p += 8;
  }
  while (p < end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80) p++;
  return p;
}

#endif
