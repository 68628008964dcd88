/* Unit tests for core/timeutil: strict RFC 3339 parsing and UTC formatting. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"

#define S 1000000LL /* microseconds per second */
#define T_20240115_1030 1705314600LL

static bool parse(const char *s, int64_t *us) { return time_parse_rfc3339(s, strlen(s), us); }

static void assert_parses(const char *s, int64_t expected_us) {
  int64_t us = -12345;
  if (!parse(s, &us)) fail_msg("expected \"%s\" to parse", s);
  if (us != expected_us)
    fail_msg("\"%s\": expected %lld, got %lld", s, (long long)expected_us, (long long)us);
}

static void assert_rejects(const char *s) {
  int64_t us = 0;
  if (parse(s, &us)) fail_msg("expected \"%s\" to be rejected", s);
}

static void test_parse_utc(void **state) {
  (void)state;
  assert_parses("2024-01-15T10:30:00Z", T_20240115_1030 * S);
  assert_parses("2024-01-15t10:30:00z", T_20240115_1030 * S);
  assert_parses("2024-01-15T10:30:00z", T_20240115_1030 * S);
  assert_parses("2024-01-15t10:30:00Z", T_20240115_1030 * S);
  assert_parses("1970-01-01T00:00:00Z", 0);
  assert_parses("0001-01-01T00:00:00Z", -62135596800LL * S);
  assert_parses("9999-12-31T23:59:59Z", 253402300799LL * S);
  assert_parses("1969-12-31T23:59:59Z", -1 * S);
}

static void test_parse_offsets(void **state) {
  (void)state;
  assert_parses("2024-01-15T12:30:00+02:00", T_20240115_1030 * S);
  assert_parses("2024-01-15T05:00:00-05:30", T_20240115_1030 * S);
  assert_parses("2024-01-15T10:30:00+00:00", T_20240115_1030 * S);
  assert_parses("2024-01-15T10:30:00-00:00", T_20240115_1030 * S);
  assert_parses("2024-01-16T10:29:00+23:59", T_20240115_1030 * S);
  /* crossing a day and a year boundary */
  assert_parses("2024-01-01T01:00:00+02:00", (1704067200LL - 3600) * S);
}

static void test_parse_fractions(void **state) {
  (void)state;
  int64_t base = T_20240115_1030 * S;
  assert_parses("2024-01-15T10:30:00.5Z", base + 500000);
  assert_parses("2024-01-15T10:30:00.12Z", base + 120000);
  assert_parses("2024-01-15T10:30:00.123Z", base + 123000);
  assert_parses("2024-01-15T10:30:00.1234Z", base + 123400);
  assert_parses("2024-01-15T10:30:00.12345Z", base + 123450);
  assert_parses("2024-01-15T10:30:00.123456Z", base + 123456);
  assert_parses("2024-01-15T10:30:00.1234567Z", base + 123456);
  assert_parses("2024-01-15T10:30:00.12345678Z", base + 123456);
  assert_parses("2024-01-15T10:30:00.123456789Z", base + 123456);
  assert_parses("2024-01-15T10:30:00.999999999Z", base + 999999);
  assert_parses("2024-01-15T10:30:00.000000Z", base);
  assert_parses("2024-01-15T12:30:00.25+02:00", base + 250000);
  /* before the epoch the fraction still adds forwards in time */
  assert_parses("1969-12-31T23:59:59.5Z", -500000);
}

/* A bound rounds a fraction past microseconds up, never down; without one it is the plain parse
 * (an instant stored as .500000 is before a bound of .5000001, so the bound is .500001). */
static void test_parse_bound_rounds_up(void **state) {
  (void)state;
  int64_t base = T_20240115_1030 * S, us = 0;
  struct {
    const char *s;
    int64_t want;
  } cases[] = {
      {"2024-01-15T10:30:00Z", base},
      {"2024-01-15T10:30:00.5Z", base + 500000},
      {"2024-01-15T10:30:00.500000Z", base + 500000},
      {"2024-01-15T10:30:00.5000000000Z", base + 500000},
      {"2024-01-15T10:30:00.5000001Z", base + 500001},
      {"2024-01-15T10:30:00.500000000001Z", base + 500001},
      {"2024-01-15T10:30:00.9999999Z", base + S},
      {"2024-01-15T12:30:00.0000001+02:00", base + 1},
      {"1969-12-31T23:59:59.9999991Z", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    if (!time_parse_rfc3339_bound(cases[i].s, strlen(cases[i].s), &us))
      fail_msg("\"%s\" refused", cases[i].s);
    if (us != cases[i].want)
      fail_msg("\"%s\": %lld, not %lld", cases[i].s, (long long)us, (long long)cases[i].want);
  }
  /* past the last representable microsecond once rounded: out of range, as any later instant */
  const char *last = "9999-12-31T23:59:59.9999991Z";
  assert_false(time_parse_rfc3339_bound(last, strlen(last), &us));
  assert_true(time_parse_rfc3339(last, strlen(last), &us));
  const char *bad = "2024-01-15T10:30:00.5000001";
  assert_false(time_parse_rfc3339_bound(bad, strlen(bad), &us));
}

static void test_parse_calendar(void **state) {
  (void)state;
  assert_parses("2024-02-29T00:00:00Z", 1709164800LL * S);
  assert_parses("2000-02-29T00:00:00Z", 951782400LL * S);
  assert_parses("2024-12-31T23:59:59Z", 1735689599LL * S);
  /* A leap second is accepted and counts as the next second. */
  assert_parses("2016-12-31T23:59:60Z", (1483228799LL + 1) * S);
  assert_parses("2024-04-30T00:00:00Z", 1714435200LL * S);
}

static void test_parse_rejects(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "2023-02-29T00:00:00Z", /* not a leap year */
      "1900-02-29T00:00:00Z", /* century, not a leap year */
      "2024-02-30T00:00:00Z",
      "2024-04-31T00:00:00Z",
      "2024-13-01T00:00:00Z",
      "2024-00-10T00:00:00Z",
      "2024-01-00T00:00:00Z",
      "2024-01-32T00:00:00Z",
      "2024-01-15T24:00:00Z",
      "2024-01-15T23:60:00Z",
      "2024-01-15T23:59:61Z",
      "2024-01-15T10:30:00",  /* missing offset */
      "2024-01-15 10:30:00Z", /* space separator */
      "2024-01-15T10:30:00Zjunk",
      "2024-01-15T10:30:00Z ",
      " 2024-01-15T10:30:00Z",
      "2024-01-15T10:30:00+02:00x",
      "2024-1-5T10:30:00Z",
      "2024-01-15T1:30:00Z",
      "2024-01-15T10:30Z",
      "2024-01-15",
      "2024-01-15T10:30:00.Z", /* fraction without digits */
      "2024-01-15T10:30:00+0200",
      "2024-01-15T10:30:00+02",
      "2024-01-15T10:30:00+24:00",
      "2024-01-15T10:30:00+02:60",
      "2024-01-15T10:30:00UTC",
      "+2024-01-15T10:30:00Z",
      "20240115T103000Z",
      "2024-01-15T10:30:00.5",
      "abcd-01-15T10:30:00Z",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_rejects(bad[i]);
}

/* Defect 9: second 60 only where a leap second can be, 23:59:60 UTC on a month's last day. */
static void test_parse_leap_second_place(void **state) {
  (void)state;
  assert_parses("2016-12-31T23:59:60Z", 1483228800LL * S);
  assert_parses("2015-06-30T23:59:60Z", 1435708800LL * S);
  assert_parses("2016-12-31T23:59:60.5Z", 1483228800LL * S + 500000);
  /* RFC 3339 section 5.8: the same leap second in local time */
  assert_parses("2016-12-31T15:59:60-08:00", 1483228800LL * S);
  assert_parses("2017-01-01T00:59:60+01:00", 1483228800LL * S);
  assert_rejects("2024-01-15T10:30:60Z");
  assert_rejects("2024-01-15T23:59:60Z");      /* not a month's last day */
  assert_rejects("2016-12-31T23:58:60Z");      /* not the last minute */
  assert_rejects("2016-12-31T23:59:60+01:00"); /* 22:59:60 UTC */
  assert_rejects("2016-12-31T00:59:60+01:00");
}

/* Defect 9: every instant accepted can be rendered (years 0001..9999 in UTC), so a stored
 * conversation never shows a null startTime for a timestamp that was accepted. */
static void test_parse_range(void **state) {
  (void)state;
  assert_parses("0001-01-01T00:00:00Z", TIME_MIN_US);
  assert_parses("0001-01-01T01:00:00+01:00", TIME_MIN_US);
  assert_parses("9999-12-31T23:59:59.999999Z", TIME_MAX_US);
  assert_parses("9999-12-31T23:59:59.9999999Z", TIME_MAX_US);
  assert_parses("9999-12-31T22:59:59-01:00", 253402300799LL * S);
  assert_rejects("0000-01-01T00:00:00Z");
  assert_rejects("0000-12-31T23:59:59Z");
  assert_rejects("0000-01-01T00:30:00+01:00"); /* 0000-12-31T23:30:00Z of year -1 */
  assert_rejects("0001-01-01T00:30:00+01:00");
  assert_rejects("9999-12-31T23:59:59-00:01"); /* 10000-01-01T00:00:59Z */
  assert_rejects("9999-12-31T23:30:00-01:00");
}

static void test_parse_respects_length(void **state) {
  (void)state;
  int64_t us;
  /* Only the first len bytes count: a valid prefix of a longer buffer parses... */
  const char *s = "2024-01-15T10:30:00Zgarbage";
  assert_true(time_parse_rfc3339(s, 20, &us));
  assert_int_equal(us, T_20240115_1030 * S);
  /* ...and a truncated one does not. */
  assert_false(time_parse_rfc3339(s, 19, &us));
  assert_false(time_parse_rfc3339(s, 0, &us));
  /* An embedded NUL is not a terminator. */
  const char nul[] = "2024-01-15T10:30:00Z\0";
  assert_false(time_parse_rfc3339(nul, sizeof nul - 1, &us));
}

static void assert_formats(int64_t us, bool always_fraction, const char *expected) {
  char buf[64];
  memset(buf, 'x', sizeof buf);
  assert_true(time_format_us(us, always_fraction, buf, sizeof buf));
  assert_string_equal(buf, expected);
}

static void test_format(void **state) {
  (void)state;
  assert_formats(0, false, "1970-01-01T00:00:00Z");
  assert_formats(0, true, "1970-01-01T00:00:00.000000Z");
  assert_formats(T_20240115_1030 * S, false, "2024-01-15T10:30:00Z");
  assert_formats(T_20240115_1030 * S, true, "2024-01-15T10:30:00.000000Z");
  assert_formats(T_20240115_1030 * S + 5, false, "2024-01-15T10:30:00.000005Z");
  assert_formats(T_20240115_1030 * S + 123456, false, "2024-01-15T10:30:00.123456Z");
  assert_formats(1709164800LL * S, false, "2024-02-29T00:00:00Z");
  assert_formats(-1, false, "1969-12-31T23:59:59.999999Z");
  assert_formats(-1 * S, false, "1969-12-31T23:59:59Z");
  assert_formats(-86400 * S, false, "1969-12-31T00:00:00Z");
  assert_formats(-62135596800LL * S, false, "0001-01-01T00:00:00Z");
  assert_formats(253402300799LL * S + 999999, false, "9999-12-31T23:59:59.999999Z");
}

static void test_format_out_of_range(void **state) {
  (void)state;
  char buf[64];
  assert_false(time_format_us(253402300800LL * S, false, buf, sizeof buf));     /* year 10000 */
  assert_false(time_format_us(-62135596800LL * S - 1, false, buf, sizeof buf)); /* year 0 */
  assert_false(time_format_us(-62167219200LL * S, false, buf, sizeof buf));
  assert_false(time_format_us(INT64_MAX, false, buf, sizeof buf));
  assert_false(time_format_us(INT64_MIN, true, buf, sizeof buf));
}

static void test_format_small_buffer(void **state) {
  (void)state;
  char buf[32];
  /* "1970-01-01T00:00:00Z" needs 21 bytes with the NUL */
  assert_true(time_format_us(0, false, buf, 21));
  assert_false(time_format_us(0, false, buf, 20));
  assert_false(time_format_us(0, true, buf, 27));
  assert_true(time_format_us(0, true, buf, 28));
}

static void test_round_trip(void **state) {
  (void)state;
  static const char *const texts[] = {
      "2024-01-15T10:30:00Z",        "2024-02-29T23:59:59.000001Z", "1970-01-01T00:00:00Z",
      "1969-07-20T20:17:40.500000Z", "0001-01-01T00:00:00Z",        "9999-12-31T23:59:59.999999Z",
      "2000-02-29T12:00:00.123456Z",
  };
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    int64_t us;
    char buf[64];
    assert_true(parse(texts[i], &us));
    assert_true(time_format_us(us, false, buf, sizeof buf));
    assert_string_equal(buf, texts[i]);
  }
  /* and from numbers: format, parse back, same value */
  for (int64_t us = -3 * 86400 * S - 7; us < 400LL * 86400 * S; us += 86400 * S / 7 + 12345) {
    char buf[64];
    int64_t back;
    assert_true(time_format_us(us, true, buf, sizeof buf));
    assert_true(parse(buf, &back));
    assert_int_equal(back, us);
  }
}

static void test_days_from_civil(void **state) {
  (void)state;
  assert_int_equal(time_days_from_civil(1970, 1, 1), 0);
  assert_int_equal(time_days_from_civil(2024, 1, 15), 1705314600LL / 86400);
  assert_int_equal(time_days_from_civil(1969, 12, 31), -1);
  assert_int_equal(time_days_from_civil(2000, 3, 1), 11017);
}

static void test_clocks(void **state) {
  (void)state;
  int64_t now = time_now_us();
  assert_true(now > 1704067200LL * S); /* after 2024-01-01 */
  double a = time_mono_ms(), b = time_mono_ms();
  assert_true(b >= a);
}

/* The digit-by-digit formatter: fixed widths, and what it writes parses back to the same
 * instant, over the whole range (the parser is independent of it). */
static void test_format_round_trips(void **state) {
  (void)state;
  unsigned seed = 3;
  for (int i = 0; i < 200000; i++) {
    int64_t span = TIME_MAX_US / 1000000 - TIME_MIN_US / 1000000;
    int64_t secs =
        TIME_MIN_US / 1000000 +
        (int64_t)(((uint64_t)rand_r(&seed) << 31 | (uint64_t)rand_r(&seed)) % (uint64_t)span);
    int64_t frac = i % 3 == 0 ? 0 : rand_r(&seed) % 1000000;
    if (i == 0) secs = TIME_MIN_US / 1000000, frac = 0;
    if (i == 1) secs = TIME_MAX_US / 1000000, frac = 999999;
    int64_t us = secs * 1000000 + frac;
    for (int always = 0; always < 2; always++) {
      char got[40];
      assert_true(time_format_us(us, always, got, sizeof got));
      int64_t back;
      assert_true(time_parse_rfc3339(got, strlen(got), &back));
      assert_int_equal(back, us);
      assert_int_equal(strlen(got), always || frac ? 27 : 20);
      assert_int_equal(got[19], always || frac ? '.' : 'Z');
      char small[20];
      assert_false(time_format_us(us, always, small, sizeof small));
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_utc),
      cmocka_unit_test(test_format_round_trips),
      cmocka_unit_test(test_parse_offsets),
      cmocka_unit_test(test_parse_fractions),
      cmocka_unit_test(test_parse_bound_rounds_up),
      cmocka_unit_test(test_parse_calendar),
      cmocka_unit_test(test_parse_rejects),
      cmocka_unit_test(test_parse_leap_second_place),
      cmocka_unit_test(test_parse_range),
      cmocka_unit_test(test_parse_respects_length),
      cmocka_unit_test(test_format),
      cmocka_unit_test(test_format_out_of_range),
      cmocka_unit_test(test_format_small_buffer),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_days_from_civil),
      cmocka_unit_test(test_clocks),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
