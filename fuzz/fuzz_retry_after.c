/* Retry-After as a receiver sends it (outbound/policy.c outbound_retry_after): delay-seconds or
 * an HTTP date in any of its three forms. The first 8 bytes pick "now" and the cap, the rest is
 * the header value. Properties: the answer is -1 or within [0, cap]; a value made only of
 * digits is never refused, however long. */
#include <string.h>

#include "fuzz.h"
#include "outbound/outbound.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 8) return 0;
  uint32_t a, b;
  memcpy(&a, data, 4);
  memcpy(&b, data + 4, 4);
  int64_t now_s = (int64_t)a * 8;      /* 1970 .. about 2990 */
  int64_t cap = (int64_t)(b % 700000); /* up to the largest schedule entry allowed */
  size_t n = size - 8;
  char *s = malloc(n + 1); /* exact size: ASan sees any read past the end */
  if (!s) return 0;
  memcpy(s, data + 8, n);
  s[n] = '\0';
  int64_t r = outbound_retry_after(s, now_s, cap);
  FUZZ_CHECK(r == -1 || (r >= 0 && r <= cap));
  bool all_digits = strlen(s) == n && n > 0;
  for (size_t i = 0; i < n && all_digits; i++) all_digits = s[i] >= '0' && s[i] <= '9';
  if (all_digits) FUZZ_CHECK(r >= 0);
  free(s);
  return 0;
}
