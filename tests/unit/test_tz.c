/* Unit tests for core/tz: zone names, offsets, local hours/days/weeks across daylight saving
 * changes, RFC 3339 with the zone's offset. The offsets are also compared with glibc's
 * localtime_r (TZ set here, in the test only) over 1970-2100 for every zone Debian lists. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/timeutil.h"
#include "core/tz.h"

#define H 3600
#define D 86400

static int64_t utc(int y, int mo, int d, int h, int mi) {
  return time_days_from_civil(y, (unsigned)mo, (unsigned)d) * D + h * H + mi * 60;
}

static struct tz *load(const char *name) {
  struct tz *z = tz_load(name);
  if (!z) fail_msg("zone %s did not load", name);
  return z;
}

static void assert_fmt(const struct tz *z, int64_t t, const char *want) {
  char buf[40];
  tz_format(z, t, buf, sizeof buf);
  if (strcmp(buf, want) != 0) fail_msg("format %lld: want %s, got %s", (long long)t, want, buf);
  int64_t us = 0;
  if (!time_parse_rfc3339(buf, strlen(buf), &us) || us != t * 1000000)
    fail_msg("%s does not parse back to %lld", buf, (long long)t);
}

/* The interval holding t starts at start (formatted as want) and the next one at next. */
static void assert_iv(const struct tz *z, enum tz_interval iv, int64_t t, int64_t start,
                      const char *want, int64_t next) {
  int64_t f = tz_interval_floor(z, iv, t);
  if (f != start) {
    char a[40], b[40];
    tz_format(z, f, a, sizeof a);
    tz_format(z, start, b, sizeof b);
    fail_msg("floor(%d, %lld): got %s, want %s", iv, (long long)t, a, b);
  }
  assert_fmt(z, f, want);
  int64_t n = tz_interval_next(z, iv, f);
  if (n != next) {
    char a[40], b[40];
    tz_format(z, n, a, sizeof a);
    tz_format(z, next, b, sizeof b);
    fail_msg("next(%d, %s): got %s, want %s", iv, want, a, b);
  }
  /* every instant of the interval has the same floor */
  assert_int_equal(tz_interval_floor(z, iv, start), start);
  assert_int_equal(tz_interval_floor(z, iv, next - 1), start);
  assert_int_equal(tz_interval_floor(z, iv, next), next);
}

static void test_names(void **state) {
  (void)state;
  char longname[TZ_NAME_MAX + 2];
  memset(longname, 'A', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  const char *bad[] = {"",
                       "../etc/passwd",
                       "/etc/passwd",
                       "Europe/../../x",
                       "Europe/./Paris",
                       "./UTC",
                       "..",
                       longname,
                       "America",
                       "America/",
                       "Europe//Paris",
                       "Europe/Paris/",
                       "Europe/Paris\n",
                       "Europe/Paris ",
                       "Europe\\Paris",
                       "Europe/Z\xc3\xbcrich",
                       "Europe/Paris\x01",
                       "Nowhere/Zone",
                       "zone.tab",
                       "iso3166.tab",
                       "right/UTC", /* leap seconds */
                       "Europe/Paris%00"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    struct tz *z = tz_load(bad[i]);
    if (z) fail_msg("\"%s\" loaded", bad[i]);
  }
  assert_null(tz_load(NULL));
  const char *good[] = {"UTC",
                        "Etc/UTC",
                        "Europe/Paris",
                        "America/New_York",
                        "Etc/GMT+5",
                        "Etc/GMT-14",
                        "Asia/Kolkata",
                        "America/Port-au-Prince",
                        "Asia/Kathmandu",
                        "America/Argentina/ComodRivadavia"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) tz_free(load(good[i]));
  /* exactly TZ_NAME_MAX is a name's length, not refused as such */
  longname[TZ_NAME_MAX] = '\0';
  assert_null(tz_load(longname));
}

/* Every zone zone1970.tab lists (and the links zone.tab adds) loads. */
static void test_every_listed_zone_loads(void **state) {
  (void)state;
  const char *tabs[] = {"/usr/share/zoneinfo/zone1970.tab", "/usr/share/zoneinfo/zone.tab"};
  for (size_t k = 0; k < 2; k++) {
    FILE *f = fopen(tabs[k], "r");
    assert_non_null(f);
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
      if (line[0] == '#') continue;
      char cc[128], coord[64], name[128];
      if (sscanf(line, "%127s %63s %127s", cc, coord, name) != 3) continue;
      tz_free(load(name));
      n++;
    }
    fclose(f);
    assert_true(n > 200);
  }
}

static void test_offsets(void **state) {
  (void)state;
  struct {
    const char *zone;
    int64_t t;
    int32_t off;
  } cases[] = {
      {"UTC", utc(2026, 7, 1, 0, 0), 0},
      {"America/New_York", utc(2026, 1, 15, 12, 0), -5 * H},
      {"America/New_York", utc(2026, 7, 1, 12, 0), -4 * H},
      {"America/New_York", utc(2026, 3, 8, 6, 59) + 59, -5 * H},
      {"America/New_York", utc(2026, 3, 8, 7, 0), -4 * H},
      {"America/New_York", utc(2026, 11, 1, 5, 59) + 59, -4 * H},
      {"America/New_York", utc(2026, 11, 1, 6, 0), -5 * H},
      {"America/New_York", utc(2080, 7, 1, 12, 0), -4 * H}, /* past 2037: the footer rule */
      {"America/New_York", utc(2080, 12, 1, 12, 0), -5 * H},
      {"Europe/Berlin", utc(2026, 3, 29, 0, 59), 1 * H},
      {"Europe/Berlin", utc(2026, 3, 29, 1, 0), 2 * H},
      {"Asia/Kolkata", utc(2026, 1, 15, 0, 0), 5 * H + 1800},
      {"Asia/Kathmandu", utc(2026, 1, 15, 0, 0), 5 * H + 2700},
      {"Australia/Lord_Howe", utc(2026, 7, 1, 0, 0), 10 * H + 1800},
      {"Australia/Lord_Howe", utc(2026, 12, 1, 0, 0), 11 * H},
      {"Australia/Sydney", utc(2026, 7, 1, 0, 0), 10 * H},
      {"Australia/Sydney", utc(2026, 12, 1, 0, 0), 11 * H},
      {"Australia/Sydney", utc(2090, 1, 1, 0, 0), 11 * H},
      {"Asia/Tokyo", utc(2026, 7, 1, 0, 0), 9 * H},
      {"America/New_York", utc(1800, 1, 1, 0, 0), -17762}, /* local mean time */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    struct tz *z = load(cases[i].zone);
    int32_t off = tz_offset_at(z, cases[i].t);
    if (off != cases[i].off)
      fail_msg("%s at %lld: %d, want %d", cases[i].zone, (long long)cases[i].t, off, cases[i].off);
    tz_free(z);
  }
}

static void test_format(void **state) {
  (void)state;
  struct tz *z = load("UTC");
  assert_fmt(z, 0, "1970-01-01T00:00:00+00:00");
  assert_fmt(z, utc(2026, 3, 8, 5, 0), "2026-03-08T05:00:00+00:00");
  tz_free(z);
  z = load("America/New_York");
  assert_fmt(z, utc(2026, 3, 8, 5, 0), "2026-03-08T00:00:00-05:00");
  assert_fmt(z, utc(2026, 7, 4, 16, 30) + 15, "2026-07-04T12:30:15-04:00");
  /* LMT -4:56:02: minutes kept, the text still names the instant */
  assert_fmt(z, utc(1800, 1, 1, 0, 0), "1799-12-31T19:04:00-04:56");
  tz_free(z);
  z = load("Asia/Kolkata");
  assert_fmt(z, utc(2026, 1, 14, 18, 30), "2026-01-15T00:00:00+05:30");
  tz_free(z);
  z = load("America/St_Johns");
  assert_fmt(z, utc(2026, 1, 15, 3, 30), "2026-01-15T00:00:00-03:30");
  tz_free(z);
  z = load("Etc/GMT+1"); /* a negative offset under an hour keeps its sign */
  assert_fmt(z, utc(2026, 1, 15, 1, 0), "2026-01-15T00:00:00-01:00");
  char small[8];
  tz_format(z, 0, small, sizeof small); /* truncated, still terminated */
  assert_int_equal(strlen(small), 7);
  tz_free(z);
}

static void test_new_york(void **state) {
  (void)state;
  struct tz *z = load("America/New_York");
  /* 2026-03-08: 23 hours */
  assert_iv(z, TZ_DAY, utc(2026, 3, 8, 16, 0), utc(2026, 3, 8, 5, 0), "2026-03-08T00:00:00-05:00",
            utc(2026, 3, 9, 4, 0));
  /* 2026-11-01: 25 hours */
  assert_iv(z, TZ_DAY, utc(2026, 11, 1, 16, 0), utc(2026, 11, 1, 4, 0), "2026-11-01T00:00:00-04:00",
            utc(2026, 11, 2, 5, 0));
  assert_iv(z, TZ_DAY, utc(2026, 11, 2, 4, 59), utc(2026, 11, 1, 4, 0), "2026-11-01T00:00:00-04:00",
            utc(2026, 11, 2, 5, 0));
  /* hours: 01:00 EST follows 01:59:59 EST; 02:00 does not exist in March */
  assert_iv(z, TZ_HOUR, utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 6, 0), "2026-03-08T01:00:00-05:00",
            utc(2026, 3, 8, 7, 0));
  assert_iv(z, TZ_HOUR, utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 0), "2026-03-08T03:00:00-04:00",
            utc(2026, 3, 8, 8, 0));
  assert_iv(z, TZ_HOUR, utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 5, 0),
            "2026-11-01T01:00:00-04:00", utc(2026, 11, 1, 6, 0));
  assert_iv(z, TZ_HOUR, utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 6, 0),
            "2026-11-01T01:00:00-05:00", utc(2026, 11, 1, 7, 0));
  /* ISO weeks start on Monday; the one holding the March change is 167 hours long */
  assert_iv(z, TZ_WEEK, utc(2026, 3, 8, 16, 0), utc(2026, 3, 2, 5, 0), "2026-03-02T00:00:00-05:00",
            utc(2026, 3, 9, 4, 0));
  assert_iv(z, TZ_WEEK, utc(2026, 3, 9, 4, 0), utc(2026, 3, 9, 4, 0), "2026-03-09T00:00:00-04:00",
            utc(2026, 3, 16, 4, 0));
  /* past 2037 the footer rule: 2080-03-10 and 2080-11-03 */
  assert_iv(z, TZ_DAY, utc(2080, 3, 10, 12, 0), utc(2080, 3, 10, 5, 0), "2080-03-10T00:00:00-05:00",
            utc(2080, 3, 11, 4, 0));
  assert_iv(z, TZ_DAY, utc(2080, 11, 3, 12, 0), utc(2080, 11, 3, 4, 0), "2080-11-03T00:00:00-04:00",
            utc(2080, 11, 4, 5, 0));
  tz_free(z);
}

static void test_berlin(void **state) {
  (void)state;
  struct tz *z = load("Europe/Berlin");
  assert_iv(z, TZ_DAY, utc(2026, 3, 29, 12, 0), utc(2026, 3, 28, 23, 0),
            "2026-03-29T00:00:00+01:00", utc(2026, 3, 29, 22, 0));
  assert_iv(z, TZ_DAY, utc(2026, 10, 25, 12, 0), utc(2026, 10, 24, 22, 0),
            "2026-10-25T00:00:00+02:00", utc(2026, 10, 25, 23, 0));
  assert_iv(z, TZ_HOUR, utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 1, 0),
            "2026-10-25T02:00:00+01:00", utc(2026, 10, 25, 2, 0));
  assert_iv(z, TZ_WEEK, utc(2026, 10, 25, 12, 0), utc(2026, 10, 18, 22, 0),
            "2026-10-19T00:00:00+02:00", utc(2026, 10, 25, 23, 0));
  tz_free(z);
}

/* Havana changes at midnight: on 2026-03-08 00:00 becomes 01:00 (no midnight), on 2026-11-01
 * 01:00 becomes 00:00 (midnight twice: one day of 25 hours, two 00:00 hours). */
static void test_havana_midnight(void **state) {
  (void)state;
  struct tz *z = load("America/Havana");
  assert_iv(z, TZ_DAY, utc(2026, 3, 7, 12, 0), utc(2026, 3, 7, 5, 0), "2026-03-07T00:00:00-05:00",
            utc(2026, 3, 8, 5, 0));
  assert_iv(z, TZ_DAY, utc(2026, 3, 8, 12, 0), utc(2026, 3, 8, 5, 0), "2026-03-08T01:00:00-04:00",
            utc(2026, 3, 9, 4, 0));
  assert_iv(z, TZ_HOUR, utc(2026, 3, 8, 5, 0), utc(2026, 3, 8, 5, 0), "2026-03-08T01:00:00-04:00",
            utc(2026, 3, 8, 6, 0));
  assert_iv(z, TZ_DAY, utc(2026, 11, 1, 12, 0), utc(2026, 11, 1, 4, 0), "2026-11-01T00:00:00-04:00",
            utc(2026, 11, 2, 5, 0));
  assert_iv(z, TZ_DAY, utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 4, 0), "2026-11-01T00:00:00-04:00",
            utc(2026, 11, 2, 5, 0));
  assert_iv(z, TZ_HOUR, utc(2026, 11, 1, 4, 30), utc(2026, 11, 1, 4, 0),
            "2026-11-01T00:00:00-04:00", utc(2026, 11, 1, 5, 0));
  assert_iv(z, TZ_HOUR, utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 5, 0),
            "2026-11-01T00:00:00-05:00", utc(2026, 11, 1, 6, 0));
  /* the week holding the March change starts on Monday 2026-03-02 and has 167 hours */
  assert_iv(z, TZ_WEEK, utc(2026, 3, 8, 12, 0), utc(2026, 3, 2, 5, 0), "2026-03-02T00:00:00-05:00",
            utc(2026, 3, 9, 4, 0));
  tz_free(z);
}

/* Beirut: 2026-03-29 00:00 becomes 01:00; 2026-10-25 00:00 becomes Saturday 23:00 again
 * (Saturday has 25 hours). */
static void test_beirut_midnight(void **state) {
  (void)state;
  struct tz *z = load("Asia/Beirut");
  assert_iv(z, TZ_DAY, utc(2026, 3, 29, 12, 0), utc(2026, 3, 28, 22, 0),
            "2026-03-29T01:00:00+03:00", utc(2026, 3, 29, 21, 0));
  assert_iv(z, TZ_DAY, utc(2026, 10, 24, 20, 30), utc(2026, 10, 23, 21, 0),
            "2026-10-24T00:00:00+03:00", utc(2026, 10, 24, 22, 0));
  assert_iv(z, TZ_DAY, utc(2026, 10, 24, 22, 30), utc(2026, 10, 24, 22, 0),
            "2026-10-25T00:00:00+02:00", utc(2026, 10, 25, 22, 0));
  assert_iv(z, TZ_DAY, utc(2026, 10, 24, 21, 30), utc(2026, 10, 23, 21, 0),
            "2026-10-24T00:00:00+03:00", utc(2026, 10, 24, 22, 0));
  tz_free(z);
}

/* Santiago: the first Saturday of September at 24:00 becomes Sunday 01:00. */
static void test_santiago_midnight(void **state) {
  (void)state;
  struct tz *z = load("America/Santiago");
  assert_iv(z, TZ_DAY, utc(2026, 9, 6, 12, 0), utc(2026, 9, 6, 4, 0), "2026-09-06T01:00:00-03:00",
            utc(2026, 9, 7, 3, 0));
  assert_iv(z, TZ_DAY, utc(2026, 9, 5, 12, 0), utc(2026, 9, 5, 4, 0), "2026-09-05T00:00:00-04:00",
            utc(2026, 9, 6, 4, 0));
  /* and back in April: Saturday 24:00 is Saturday 23:00 again; Saturday has 25 hours */
  assert_iv(z, TZ_DAY, utc(2026, 4, 4, 12, 0), utc(2026, 4, 4, 3, 0), "2026-04-04T00:00:00-03:00",
            utc(2026, 4, 5, 4, 0));
  tz_free(z);
}

static void test_half_hour_zones(void **state) {
  (void)state;
  struct tz *z = load("Asia/Kolkata");
  assert_iv(z, TZ_HOUR, utc(2026, 1, 15, 10, 45), utc(2026, 1, 15, 10, 30),
            "2026-01-15T16:00:00+05:30", utc(2026, 1, 15, 11, 30));
  assert_iv(z, TZ_DAY, utc(2026, 1, 15, 10, 45), utc(2026, 1, 14, 18, 30),
            "2026-01-15T00:00:00+05:30", utc(2026, 1, 15, 18, 30));
  tz_free(z);
  z = load("Asia/Kathmandu");
  assert_iv(z, TZ_HOUR, utc(2026, 1, 15, 10, 10), utc(2026, 1, 15, 9, 15),
            "2026-01-15T15:00:00+05:45", utc(2026, 1, 15, 10, 15));
  assert_iv(z, TZ_DAY, utc(2026, 1, 15, 10, 10), utc(2026, 1, 14, 18, 15),
            "2026-01-15T00:00:00+05:45", utc(2026, 1, 15, 18, 15));
  tz_free(z);
  /* Lord Howe: +10:30, and +11 from the first Sunday of October 02:00 (02:00 becomes 02:30)
   * to the first Sunday of April 02:00 (02:00 becomes 01:30) */
  z = load("Australia/Lord_Howe");
  assert_iv(z, TZ_DAY, utc(2026, 10, 4, 0, 0), utc(2026, 10, 3, 13, 30),
            "2026-10-04T00:00:00+10:30", utc(2026, 10, 4, 13, 0)); /* 23.5 h */
  assert_iv(z, TZ_HOUR, utc(2026, 10, 3, 15, 0), utc(2026, 10, 3, 14, 30),
            "2026-10-04T01:00:00+10:30", utc(2026, 10, 3, 15, 30));
  assert_iv(z, TZ_HOUR, utc(2026, 10, 3, 15, 45), utc(2026, 10, 3, 15, 30),
            "2026-10-04T02:30:00+11:00", utc(2026, 10, 3, 16, 0)); /* 30 min */
  assert_iv(z, TZ_DAY, utc(2026, 4, 5, 0, 0), utc(2026, 4, 4, 13, 0), "2026-04-05T00:00:00+11:00",
            utc(2026, 4, 5, 13, 30)); /* 24.5 h */
  assert_iv(z, TZ_HOUR, utc(2026, 4, 4, 15, 10), utc(2026, 4, 4, 14, 0),
            "2026-04-05T01:00:00+11:00", utc(2026, 4, 4, 15, 30)); /* 90 min */
  tz_free(z);
}

static void test_southern_and_plain(void **state) {
  (void)state;
  struct tz *z = load("Australia/Sydney");
  assert_iv(z, TZ_DAY, utc(2026, 10, 4, 6, 0), utc(2026, 10, 3, 14, 0), "2026-10-04T00:00:00+10:00",
            utc(2026, 10, 4, 13, 0));
  assert_iv(z, TZ_DAY, utc(2026, 4, 5, 6, 0), utc(2026, 4, 4, 13, 0), "2026-04-05T00:00:00+11:00",
            utc(2026, 4, 5, 14, 0));
  /* a New Year's day inside summer time, past 2037 (the footer rule across a year end) */
  assert_iv(z, TZ_DAY, utc(2089, 12, 31, 20, 0), utc(2089, 12, 31, 13, 0),
            "2090-01-01T00:00:00+11:00", utc(2090, 1, 1, 13, 0));
  tz_free(z);
  z = load("UTC");
  assert_iv(z, TZ_DAY, utc(2026, 3, 8, 16, 0), utc(2026, 3, 8, 0, 0), "2026-03-08T00:00:00+00:00",
            utc(2026, 3, 9, 0, 0));
  assert_iv(z, TZ_HOUR, utc(2026, 3, 8, 16, 59), utc(2026, 3, 8, 16, 0),
            "2026-03-08T16:00:00+00:00", utc(2026, 3, 8, 17, 0));
  assert_iv(z, TZ_WEEK, utc(2026, 1, 1, 0, 0), utc(2025, 12, 29, 0, 0), "2025-12-29T00:00:00+00:00",
            utc(2026, 1, 5, 0, 0));
  assert_iv(z, TZ_DAY, -1, utc(1969, 12, 31, 0, 0), "1969-12-31T00:00:00+00:00", 0);
  tz_free(z);
  z = load("Asia/Tokyo");
  assert_iv(z, TZ_DAY, utc(2026, 7, 1, 0, 0), utc(2026, 6, 30, 15, 0), "2026-07-01T00:00:00+09:00",
            utc(2026, 7, 1, 15, 0));
  tz_free(z);
}

/* ---- against glibc ---- */

static void glibc_zone(const char *name) {
  char buf[160];
  snprintf(buf, sizeof buf, ":%s", name);
  setenv("TZ", buf, 1);
  tzset();
}

static long glibc_off(int64_t t) {
  time_t tt = (time_t)t;
  struct tm tm;
  if (!localtime_r(&tt, &tm)) fail_msg("localtime_r failed at %lld", (long long)t);
  return tm.tm_gmtoff;
}

static void check_off(const struct tz *z, const char *name, int64_t t) {
  long want = glibc_off(t);
  int32_t got = tz_offset_at(z, t);
  if (got != want) fail_msg("%s at %lld: tz %d, glibc %ld", name, (long long)t, got, want);
}

/* Samples 1970-2100 and, where glibc's offset changes between two samples, the exact
 * transition (found by bisection) and the second before it. */
static void compare_zone(const char *name, int64_t step) {
  struct tz *z = load(name);
  glibc_zone(name);
  const int64_t from = utc(1970, 1, 1, 0, 0), to = utc(2100, 12, 31, 0, 0);
  int64_t prev_t = from;
  long prev_off = glibc_off(from);
  check_off(z, name, from);
  for (int64_t t = from + step; t <= to; t += step) {
    long off = glibc_off(t);
    check_off(z, name, t);
    if (off != prev_off) {
      int64_t lo = prev_t, hi = t; /* off(lo) == prev_off, off(hi) != prev_off */
      while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (glibc_off(mid) == prev_off)
          lo = mid;
        else
          hi = mid;
      }
      check_off(z, name, lo);
      check_off(z, name, hi);
    }
    prev_t = t;
    prev_off = off;
  }
  tz_free(z);
}

static void test_glibc_every_zone(void **state) {
  (void)state;
  FILE *f = fopen("/usr/share/zoneinfo/zone1970.tab", "r");
  assert_non_null(f);
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f)) {
    if (line[0] == '#') continue;
    char cc[128], coord[64], name[128];
    if (sscanf(line, "%127s %63s %127s", cc, coord, name) != 3) continue;
    compare_zone(name, 10 * D + 3 * H + 7);
    n++;
  }
  fclose(f);
  assert_true(n > 200);
  unsetenv("TZ");
}

static void test_glibc_dense(void **state) {
  (void)state;
  const char *zones[] = {"America/New_York",  "Europe/Berlin",    "America/Havana",
                         "Asia/Beirut",       "America/Santiago", "Australia/Lord_Howe",
                         "Australia/Sydney",  "Asia/Kolkata",     "Asia/Kathmandu",
                         "America/Nuuk",      "Asia/Jerusalem",   "Pacific/Apia",
                         "Africa/Casablanca", "Europe/Dublin",    "UTC"};
  for (size_t i = 0; i < sizeof zones / sizeof *zones; i++)
    compare_zone(zones[i], 12 * H + 13 * 60 + 7);
  unsetenv("TZ");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_every_listed_zone_loads),
      cmocka_unit_test(test_offsets),
      cmocka_unit_test(test_format),
      cmocka_unit_test(test_new_york),
      cmocka_unit_test(test_berlin),
      cmocka_unit_test(test_havana_midnight),
      cmocka_unit_test(test_beirut_midnight),
      cmocka_unit_test(test_santiago_midnight),
      cmocka_unit_test(test_half_hour_zones),
      cmocka_unit_test(test_southern_and_plain),
      cmocka_unit_test(test_glibc_every_zone),
      cmocka_unit_test(test_glibc_dense),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
