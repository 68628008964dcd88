/* The TZif reader (core/tz.c, tz_parse): any bytes as a zone file; input starting with '#' is
 * a POSIX TZ string (the footer) wrapped into a minimal version 2 file, to reach the rule
 * parser directly. Properties, for whatever parses and instants taken from the input and a
 * few fixed ones: offsets are under 24 h; each local hour, day and week interval holds its
 * instant (floor <= t < next), its start is its own floor and the second before next is in
 * it; days last under 3 days and weeks under 9; starts are what they are in terms of offsets
 * alone (an hour: local HH:00:00 or a jump forward over it; a day or week: the first instant at
 * or past its local midnight); the RFC 3339 text of an instant parses back to that instant. */
#include <string.h>

#include "core/timeutil.h"
#include "core/tz.h"
#include "fuzz.h"

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* header with one time type (offset 0) and one abbreviation byte, no transitions */
static size_t minimal_block(uint8_t *p) {
  memset(p, 0, 44 + 7);
  memcpy(p, "TZif2", 5);
  put32(p + 20 + 16, 1); /* typecnt */
  put32(p + 20 + 20, 1); /* charcnt */
  return 44 + 6 + 1;
}

static struct tz *footer_zone(const uint8_t *s, size_t n) {
  if (memchr(s, '\n', n)) return NULL;
  uint8_t *buf = malloc(2 * 51 + n + 2);
  if (!buf) return NULL;
  size_t len = minimal_block(buf);
  len += minimal_block(buf + len);
  buf[len++] = '\n';
  memcpy(buf + len, s, n);
  len += n;
  buf[len++] = '\n';
  struct tz *z = tz_parse(buf, len);
  free(buf);
  return z;
}

static int64_t fdiv(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

static int64_t local(const struct tz *z, int64_t t) { return t + tz_offset_at(z, t); }

/* What a start is, in terms of tz_offset_at alone: an hour starts where the local clock reads
 * HH:00:00 or jumps forward over it; a day or week at the first instant at or past its local
 * midnight (a Monday's). */
static void check_start(const struct tz *z, enum tz_interval iv, int64_t f, int64_t n) {
  int64_t l = local(z, f), before = local(z, f - 1);
  if (iv == TZ_HOUR) {
    FUZZ_CHECK(fdiv(l, 3600) * 3600 == l || fdiv(l - 1, 3600) * 3600 > before);
    if (tz_offset_at(z, f) == tz_offset_at(z, n - 1))
      FUZZ_CHECK(fdiv(local(z, n - 1), 3600) == fdiv(l, 3600));
    return;
  }
  int64_t day = fdiv(l, 86400);
  if (iv == TZ_WEEK) day -= (day + 3) - fdiv(day + 3, 7) * 7;
  FUZZ_CHECK(before < day * 86400 && day * 86400 <= l);
}

static void check_instant(const struct tz *z, int64_t t) {
  int32_t off = tz_offset_at(z, t);
  FUZZ_CHECK(off > -86400 && off < 86400);
  for (int iv = TZ_HOUR; iv <= TZ_WEEK; iv++) {
    int64_t f = tz_interval_floor(z, (enum tz_interval)iv, t);
    int64_t n = tz_interval_next(z, (enum tz_interval)iv, f);
    FUZZ_CHECK(f <= t && t < n);
    FUZZ_CHECK(tz_interval_floor(z, (enum tz_interval)iv, f) == f);
    FUZZ_CHECK(tz_interval_floor(z, (enum tz_interval)iv, n - 1) == f);
    FUZZ_CHECK(tz_interval_floor(z, (enum tz_interval)iv, n) == n);
    check_start(z, (enum tz_interval)iv, f, n);
    check_start(z, (enum tz_interval)iv, n, tz_interval_next(z, (enum tz_interval)iv, n));
    /* offsets within +-24 h: the clock is set back by less than two days in all */
    if (iv == TZ_DAY) FUZZ_CHECK(n - f < 3 * 86400);
    if (iv == TZ_WEEK) FUZZ_CHECK(n - f < 9 * 86400);
  }
  char buf[40];
  tz_format(z, t, buf, sizeof buf);
  FUZZ_CHECK(strlen(buf) == 25);
  int64_t us = 0;
  FUZZ_CHECK(time_parse_rfc3339(buf, strlen(buf), &us));
  FUZZ_CHECK(us == t * 1000000);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t *copy = malloc(size ? size : 1); /* exact size: ASan sees any read past the end */
  if (!copy) return 0;
  memcpy(copy, data, size);
  struct tz *z =
      size > 0 && data[0] == '#' ? footer_zone(copy + 1, size - 1) : tz_parse(copy, size);
  free(copy);
  if (!z) return 0;
  /* 1900..2200, where every local time has a four-digit year */
  const int64_t lo = -2208988800LL, span = 9467280000LL;
  int64_t fixed[] = {lo,           0, 1772953200LL /* 2026-03-08 */, 2147483647LL, 4102444800LL,
                     lo + span - 1};
  for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) check_instant(z, fixed[i]);
  for (size_t i = 0; i + 8 <= size && i < 64; i += 8) {
    uint64_t raw;
    memcpy(&raw, data + size - 8 - i, 8);
    check_instant(z, lo + (int64_t)(raw % (uint64_t)span));
  }
  tz_free(z);
  return 0;
}
