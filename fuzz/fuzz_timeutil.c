/* The RFC 3339 parser and formatter (core/timeutil.c). The input is tried as a timestamp
 * string; its first 8 bytes are also read as a microsecond value to format. Properties:
 * whatever parses lies in the supported range, formats, and parses back to the same instant;
 * whatever formats parses back to the value formatted; a leap second is 23:59:60 UTC on the
 * last day of a month. */
#include <string.h>

#include "core/timeutil.h"
#include "fuzz.h"

static void round_trip(int64_t us, bool always_fraction) {
  char buf[40];
  FUZZ_CHECK(time_format_us(us, always_fraction, buf, sizeof buf));
  int64_t back = 0;
  FUZZ_CHECK(time_parse_rfc3339(buf, strlen(buf), &back));
  FUZZ_CHECK(back == us);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size ? size : 1); /* exact size: ASan sees any read past the end */
  if (!s) return 0;
  memcpy(s, data, size);
  int64_t us;
  if (time_parse_rfc3339(s, size, &us)) {
    FUZZ_CHECK(us >= TIME_MIN_US && us <= TIME_MAX_US);
    round_trip(us, false);
    round_trip(us, true);
    if (size >= 19 && memcmp(s + 17, "60", 2) == 0) {
      char buf[40];
      FUZZ_CHECK(time_format_us(us, false, buf, sizeof buf));
      /* counted as the first second of the next day, which starts a month */
      FUZZ_CHECK(memcmp(buf + 8, "01T00:00:00", 11) == 0);
    }
  }
  free(s);
  if (size >= 8) {
    uint64_t raw;
    memcpy(&raw, data, 8);
    uint64_t span = (uint64_t)(TIME_MAX_US - TIME_MIN_US) + 1;
    int64_t v = TIME_MIN_US + (int64_t)(raw % span);
    round_trip(v, false);
    round_trip(v, true);
    char buf[40];
    /* past the range (into year 10000): never formatted as a wrong year */
    FUZZ_CHECK(
        !time_format_us(TIME_MAX_US + 1 + (int64_t)(raw % 1000000000), false, buf, sizeof buf));
  }
  return 0;
}
