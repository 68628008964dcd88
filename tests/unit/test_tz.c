/* Unit tests for core/tz: zone names, offsets, local hours/days/weeks across daylight saving
 * changes, RFC 3339 with the zone's offset. The offsets are also compared with glibc's
 * localtime_r (TZ set here, in the test only) over 1970-2100 for every zone Debian lists. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
                       "localtime", /* the host's setting, not a zone */
                       "posixrules",
                       "posix/localtime", /* where zoneinfo/posix links back to the top */
                       "posix/posixrules",
                       "Etc/localtime",
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
  /* Amsterdam +01:19:32 (summer 1937): the offset is rounded up, so the local midnight that
   * starts 1937-06-30 reads as that day, not as 23:59:28 of the day before */
  z = load("Europe/Amsterdam");
  assert_fmt(z, utc(1937, 6, 29, 22, 40) + 28, "1937-06-30T00:00:28+01:20");
  assert_iv(z, TZ_DAY, utc(1937, 6, 30, 12, 0), utc(1937, 6, 29, 22, 40) + 28,
            "1937-06-30T00:00:28+01:20", utc(1937, 6, 30, 22, 40) + 28);
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
  /* Samoa skipped 2011-12-30: Thursday the 29th (-10:00) is followed by Saturday the 31st
   * (+14:00) */
  z = load("Pacific/Apia");
  assert_iv(z, TZ_DAY, utc(2011, 12, 29, 20, 0), utc(2011, 12, 29, 10, 0),
            "2011-12-29T00:00:00-10:00", utc(2011, 12, 30, 10, 0));
  assert_iv(z, TZ_DAY, utc(2011, 12, 30, 10, 0), utc(2011, 12, 30, 10, 0),
            "2011-12-31T00:00:00+14:00", utc(2011, 12, 31, 10, 0));
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
static void compare_zone_between(const char *name, int64_t step, int64_t from, int64_t to) {
  struct tz *z = load(name);
  glibc_zone(name);
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

static void compare_zone(const char *name, int64_t step) {
  compare_zone_between(name, step, utc(1970, 1, 1, 0, 0), utc(2100, 12, 31, 0, 0));
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

static int64_t glibc_local(int64_t t) { return t + glibc_off(t); }

static int64_t floordiv(int64_t a, int64_t b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }

/* Walks the local days of 1970-2050 (weeks of 1970-2100) with tz_interval_next and checks each
 * start with glibc's offsets: it is the first instant at or past a local midnight (local(s - 1) < M
 * <= local(s)), a Monday's for weeks; the midnights follow each other; every instant tried in
 * between has that floor. */
static void walk_days(const struct tz *z, const char *name, enum tz_interval iv) {
  const int64_t unit = iv == TZ_WEEK ? 7 * D : D;
  int64_t s = tz_interval_floor(z, iv, utc(1970, 1, 8, 0, 0));
  int64_t prev_m = INT64_MIN;
  /* past 2037 glibc parses the zone's TZ string again at every call: days stop at 2050 */
  const int64_t end = iv == TZ_WEEK ? utc(2100, 12, 1, 0, 0) : utc(2050, 1, 1, 0, 0);
  while (s < end) {
    int64_t l = glibc_local(s), m = floordiv(l, D) * D;
    if (iv == TZ_WEEK && ((m / D + 3) % 7 + 7) % 7 != 0) {
      char buf[40];
      tz_format(z, s, buf, sizeof buf);
      fail_msg("%s: a week starts at %s, not on a Monday", name, buf);
    }
    if (!(glibc_local(s - 1) < m && m <= l)) {
      char buf[40];
      tz_format(z, s, buf, sizeof buf);
      fail_msg("%s: %s is not the first instant of its local day", name, buf);
    }
    if (prev_m != INT64_MIN &&
        (m <= prev_m || (m - prev_m != unit && strcmp(name, "Pacific/Apia") != 0))) {
      char buf[40];
      tz_format(z, s, buf, sizeof buf);
      fail_msg("%s: %s does not follow the previous interval's day", name, buf);
    }
    int64_t n = tz_interval_next(z, iv, s);
    if (n - s < unit - 3 * H || n - s > unit + 3 * H) {
      if (strcmp(name, "Pacific/Apia") != 0 || n - s > unit + 26 * H) {
        char buf[40];
        tz_format(z, s, buf, sizeof buf);
        fail_msg("%s: the interval at %s lasts %lld s", name, buf, (long long)(n - s));
      }
    }
    const int64_t probes[] = {s + (n - s) / 2, n - 1};
    for (size_t i = 0; i < 2; i++)
      if (tz_interval_floor(z, iv, probes[i]) != s)
        fail_msg("%s: floor(%lld) is not %lld", name, (long long)probes[i], (long long)s);
    prev_m = m;
    s = n;
  }
}

/* Walks the local hours of a year: each starts at HH:00 local or at a jump of the clock over
 * HH:00, and no HH:00 happens inside one. */
static void walk_hours(const struct tz *z, const char *name, int year) {
  int64_t s = tz_interval_floor(z, TZ_HOUR, utc(year, 1, 1, 0, 0));
  const int64_t end = utc(year + 1, 1, 1, 0, 0);
  while (s < end) {
    int64_t l = glibc_local(s), lb = glibc_local(s - 1);
    bool at_hour = floordiv(l, H) * H == l;
    bool jumped = floordiv(l - 1, H) * H > lb;
    char buf[40];
    tz_format(z, s, buf, sizeof buf);
    if (!at_hour && !jumped) fail_msg("%s: an hour starts at %s", name, buf);
    int64_t n = tz_interval_next(z, TZ_HOUR, s);
    if (n - s <= 0 || n - s > 2 * H)
      fail_msg("%s: the hour at %s lasts %lld s", name, buf, (long long)(n - s));
    if (glibc_off(s) == glibc_off(n - 1) && floordiv(glibc_local(n - 1), H) != floordiv(l, H))
      fail_msg("%s: the hour at %s holds another HH:00", name, buf);
    if (tz_interval_floor(z, TZ_HOUR, n - 1) != s ||
        tz_interval_floor(z, TZ_HOUR, s + (n - s) / 2) != s)
      fail_msg("%s: floor inside the hour at %s", name, buf);
    s = n;
  }
}

static const char *interval_zones[] = {
    "America/New_York",  "Europe/Berlin",    "America/Havana",
    "Asia/Beirut",       "America/Santiago", "Australia/Lord_Howe",
    "Australia/Sydney",  "Asia/Kolkata",     "Asia/Kathmandu",
    "America/Nuuk",      "Asia/Jerusalem",   "Pacific/Apia",
    "Africa/Casablanca", "Europe/Dublin",    "UTC",
    "Asia/Tokyo",        "America/St_Johns", "Pacific/Chatham"};

/* The rule's changes are listed up to 2200; past that the rule is computed at each call. */
static void test_glibc_far_future(void **state) {
  (void)state;
  const char *zones[] = {"America/New_York", "Australia/Sydney", "America/Santiago",
                         "Australia/Lord_Howe", "America/Havana"};
  for (size_t i = 0; i < sizeof zones / sizeof *zones; i++) {
    compare_zone_between(zones[i], D + 7 * 60 + 3, utc(2190, 1, 1, 0, 0), utc(2215, 1, 1, 0, 0));
    struct tz *z = load(zones[i]);
    glibc_zone(zones[i]);
    walk_hours(z, zones[i], 2199);
    walk_hours(z, zones[i], 2200);
    tz_free(z);
  }
  unsetenv("TZ");
  struct tz *z = load("America/New_York"); /* 2200-03-09 and 2300-03-11: 23 hours */
  assert_iv(z, TZ_DAY, utc(2200, 3, 9, 12, 0), utc(2200, 3, 9, 5, 0), "2200-03-09T00:00:00-05:00",
            utc(2200, 3, 10, 4, 0));
  assert_iv(z, TZ_DAY, utc(2300, 3, 11, 12, 0), utc(2300, 3, 11, 5, 0), "2300-03-11T00:00:00-05:00",
            utc(2300, 3, 12, 4, 0));
  tz_free(z);
}

static void test_glibc_days_and_weeks(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof interval_zones / sizeof *interval_zones; i++) {
    struct tz *z = load(interval_zones[i]);
    glibc_zone(interval_zones[i]);
    walk_days(z, interval_zones[i], TZ_DAY);
    walk_days(z, interval_zones[i], TZ_WEEK);
    tz_free(z);
  }
  unsetenv("TZ");
}

static void test_glibc_hours(void **state) {
  (void)state;
  const int years[] = {1983, 2011, 2026, 2038, 2099};
  for (size_t i = 0; i < sizeof interval_zones / sizeof *interval_zones; i++) {
    struct tz *z = load(interval_zones[i]);
    glibc_zone(interval_zones[i]);
    for (size_t y = 0; y < sizeof years / sizeof *years; y++)
      walk_hours(z, interval_zones[i], years[y]);
    tz_free(z);
  }
  unsetenv("TZ");
}

/* ---- files: TZDIR, slim files, the POSIX TZ rule, malformed TZif ---- */

#define SLIM_DIR "tests/fixtures/tz/slim"

static const char *slim_zones[] = {"America/New_York",    "America/Havana", "Australia/Sydney",
                                   "Australia/Lord_Howe", "Europe/Berlin",  "America/Santiago",
                                   "Asia/Beirut"};

/* Slim files end their transitions at the last rule change (2007 for New York): the footer
 * decides everything after, and must agree with glibc reading the same files. */
static void test_slim_files_with_tzdir(void **state) {
  (void)state;
  setenv("TZDIR", SLIM_DIR, 1);
  assert_null(tz_load("Asia/Tokyo")); /* not in the fixture directory */
  for (size_t i = 0; i < sizeof slim_zones / sizeof *slim_zones; i++) {
    compare_zone(slim_zones[i], 12 * H + 13 * 60 + 7);
    struct tz *z = load(slim_zones[i]);
    glibc_zone(slim_zones[i]);
    walk_days(z, slim_zones[i], TZ_DAY);
    walk_hours(z, slim_zones[i], 2026);
    tz_free(z);
  }
  struct tz *z = load("America/New_York");
  assert_iv(z, TZ_DAY, utc(2026, 3, 8, 16, 0), utc(2026, 3, 8, 5, 0), "2026-03-08T00:00:00-05:00",
            utc(2026, 3, 9, 4, 0));
  tz_free(z);
  unsetenv("TZDIR");
  unsetenv("TZ");
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* A version 2 file with one time type (offset 0), no transitions and footer as its rule. */
static size_t footer_file(const char *footer, uint8_t *buf, size_t cap) {
  size_t n = strlen(footer), len = 0;
  assert_true(2 * 51 + n + 2 <= cap);
  for (int k = 0; k < 2; k++) {
    memset(buf + len, 0, 51);
    memcpy(buf + len, "TZif2", 5);
    put32(buf + len + 36, 1); /* typecnt */
    put32(buf + len + 40, 1); /* charcnt */
    len += 51;
  }
  buf[len++] = '\n';
  memcpy(buf + len, footer, n);
  len += n;
  buf[len++] = '\n';
  return len;
}

/* Rules in every form (Mm.w.d, Jn, n, times past 24 h and negative, year-round DST, southern
 * hemisphere, 30- and 45-minute offsets) against glibc given the same TZ string. */
static void test_footer_rules_against_glibc(void **state) {
  (void)state;
  const char *rules[] = {
      "EST5EDT,M3.2.0,M11.1.0",
      "<-04>4<-03>,M9.1.6/24,M4.1.6/24",
      "IST-2IDT,M3.4.4/26,M10.5.0",
      "<-02>2<-01>,M3.5.0/-1,M10.5.0/0",
      "AAA3BBB,J60/1:30:15,200/-2",
      "CCC-3DDD,J2/0,J59/23:59:59",
      "EEE0FFF,1,364",
      "GGG-1HHH-2:30,59/12,300/1:00:01",
      "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0",
      "AEST-10AEDT,M10.1.0,M4.1.0/3",
      "NZST-12NZDT,M9.5.0,M4.1.0/3",
      "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45",
      "CST5CDT,M3.2.0/0,M11.1.0/1",
      "EET-2EEST,M3.5.0/0,M10.5.0/0",
      "<+0545>-5:45",
      "<-00>0",
      "XXX-14",
      "YYY12",
      "JST-9",
      "WET0WEST,M3.5.0/1,M10.5.0",
      "MMM3NNN,M2.5.4/167,M11.1.0/-167",
  };
  uint8_t buf[256];
  const int64_t from = utc(1970, 1, 1, 0, 0), to = utc(2100, 12, 31, 0, 0);
  for (size_t i = 0; i < sizeof rules / sizeof *rules; i++) {
    size_t len = footer_file(rules[i], buf, sizeof buf);
    struct tz *z = tz_parse(buf, len);
    if (!z) fail_msg("rule %s refused", rules[i]);
    setenv("TZ", rules[i], 1);
    tzset();
    int64_t prev_t = from;
    long prev_off = glibc_off(from);
    for (int64_t t = from; t <= to; t += 3 * D + 7 * H + 11) {
      long off = glibc_off(t);
      check_off(z, rules[i], t);
      if (off != prev_off) {
        int64_t lo = prev_t, hi = t;
        while (hi - lo > 1) {
          int64_t mid = lo + (hi - lo) / 2;
          if (glibc_off(mid) == prev_off)
            lo = mid;
          else
            hi = mid;
        }
        check_off(z, rules[i], lo);
        check_off(z, rules[i], hi);
      }
      prev_t = t;
      prev_off = off;
    }
    walk_hours(z, rules[i], 2026);
    walk_hours(z, rules[i], 2095);
    tz_free(z);
  }
  unsetenv("TZ");
  size_t len;
  struct tz *z;
  /* A period starting in the previous UTC year: 1971's begins on 1970-12-31 21:00 UTC (glibc
   * looks at the rules of the instant's UTC year only, and says standard time). */
  len = footer_file("CCC-3DDD,J1/0,J59/23:59:59", buf, sizeof buf);
  z = tz_parse(buf, len);
  assert_non_null(z);
  assert_int_equal(tz_offset_at(z, utc(1970, 12, 31, 21, 0) - 1), 3 * H);
  assert_int_equal(tz_offset_at(z, utc(1970, 12, 31, 21, 0)), 4 * H);
  /* J59/23:59:59 in DST (+4) is 19:59:59 UTC */
  assert_int_equal(tz_offset_at(z, utc(1971, 2, 28, 19, 59) + 58), 4 * H);
  assert_int_equal(tz_offset_at(z, utc(1971, 2, 28, 19, 59) + 59), 3 * H);
  tz_free(z);
  /* n counts February 29th: day 365 is December 31st in a leap year, else January 1st */
  len = footer_file("EEE0FFF,0,365", buf, sizeof buf);
  z = tz_parse(buf, len);
  assert_non_null(z);
  assert_int_equal(tz_offset_at(z, utc(1972, 12, 31, 1, 0) - 1), H);
  assert_int_equal(tz_offset_at(z, utc(1972, 12, 31, 1, 0)), 0);
  assert_int_equal(tz_offset_at(z, utc(1973, 1, 1, 2, 0) - 1), 0);
  assert_int_equal(tz_offset_at(z, utc(1973, 1, 1, 2, 0)), H);
  assert_int_equal(tz_offset_at(z, utc(1974, 1, 1, 1, 0) - 1), H); /* 1973 is not leap */
  assert_int_equal(tz_offset_at(z, utc(1974, 1, 1, 1, 0)), 0);
  assert_int_equal(tz_offset_at(z, utc(1974, 1, 1, 2, 0)), H);
  tz_free(z);
  /* Jn never counts February 29th: J60 is March 1st in any year */
  len = footer_file("AAA3BBB,J60/1:30:15,200/-2", buf, sizeof buf);
  z = tz_parse(buf, len);
  assert_non_null(z);
  assert_int_equal(tz_offset_at(z, utc(2024, 3, 1, 4, 30) + 14), -3 * H);
  assert_int_equal(tz_offset_at(z, utc(2024, 3, 1, 4, 30) + 15), -2 * H);
  assert_int_equal(tz_offset_at(z, utc(2025, 3, 1, 4, 30) + 15), -2 * H);
  /* n = 200 is July 19th in a leap year (day 0 is January 1st), at -2:00 local DST: 18th 22:00 */
  assert_int_equal(tz_offset_at(z, utc(2024, 7, 19, 0, 0) - 1), -2 * H);
  assert_int_equal(tz_offset_at(z, utc(2024, 7, 19, 0, 0)), -3 * H);
  tz_free(z);
  /* Year-round daylight saving time as tzfile(5) writes it: each year's period ends where the
   * next one starts. (glibc reads the rule of the instant's year only and so gives standard
   * time before 05:00 UTC on January 1st.) */
  len = footer_file("EST5EDT4,0/0,J365/25", buf, sizeof buf);
  z = tz_parse(buf, len);
  assert_non_null(z);
  for (int64_t t = from; t <= to; t += 5 * D + 3 * H + 11)
    assert_int_equal(tz_offset_at(z, t), -4 * H);
  for (int y = 1970; y <= 2100; y++) {
    assert_int_equal(tz_offset_at(z, utc(y, 1, 1, 0, 0)), -4 * H);
    assert_int_equal(tz_offset_at(z, utc(y, 1, 1, 5, 0) - 1), -4 * H);
    assert_int_equal(tz_offset_at(z, utc(y, 1, 1, 5, 0)), -4 * H);
  }
  assert_iv(z, TZ_DAY, utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 4, 0), "2026-01-01T00:00:00-04:00",
            utc(2026, 1, 2, 4, 0));
  tz_free(z);
}

static void test_footer_rules_refused(void **state) {
  (void)state;
  const char *bad[] = {
      "EST",                        /* no offset */
      "ES5",                        /* name too short */
      "<E5>5",                      /* quoted name too short */
      "<EST5",                      /* unterminated */
      "<E_T>5",                     /* a byte outside a quoted name's set */
      "EST25",                      /* offset hours past 24 */
      "EST5:60",                    /* minutes */
      "EST5:00:60",                 /* seconds */
      "EST5EDT",                    /* daylight saving time without a rule */
      "EST5EDT,M3.2.0",             /* one end only */
      "EST5EDT,M3.2.0,M11.1.0,",    /* trailing */
      "EST5EDT,M13.2.0,M11.1.0",    /* month */
      "EST5EDT,M3.6.0,M11.1.0",     /* week */
      "EST5EDT,M3.2.7,M11.1.0",     /* weekday */
      "EST5EDT,M3.0.0,M11.1.0",     /* week 0 */
      "EST5EDT,J0,J365",            /* Jn starts at 1 */
      "EST5EDT,J1,J366",            /* Jn ends at 365 */
      "EST5EDT,0,366",              /* n ends at 365 */
      "EST5EDT,M3.2.0/168,M11.1.0", /* rule time past 167 h */
      "EST5EDT,M3.2.0/-168,M11.1.0",
      "EST5EDT,M3.2.0/,M11.1.0",
      "EST5EDT,M3.2.0/2:,M11.1.0",
      "EST0005", /* too many digits */
      "EST5 ",
      "EST 5",
  };
  uint8_t buf[256];
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    size_t len = footer_file(bad[i], buf, sizeof buf);
    struct tz *z = tz_parse(buf, len);
    if (z) fail_msg("rule \"%s\" accepted", bad[i]);
  }
  /* an empty footer: the last offset stays */
  size_t len = footer_file("", buf, sizeof buf);
  struct tz *z = tz_parse(buf, len);
  assert_non_null(z);
  assert_int_equal(tz_offset_at(z, utc(2090, 1, 1, 0, 0)), 0);
  tz_free(z);
}

/* A version 1 file: 32-bit transitions, no footer. */
static void test_version1_file(void **state) {
  (void)state;
  uint8_t buf[128];
  memset(buf, 0, sizeof buf);
  memcpy(buf, "TZif", 4); /* version byte 0 */
  put32(buf + 32, 2);     /* timecnt */
  put32(buf + 36, 2);     /* typecnt */
  put32(buf + 40, 8);     /* charcnt */
  size_t p = 44;
  put32(buf + p, (uint32_t)(int32_t)-86400); /* 1969-12-31 */
  put32(buf + p + 4, 86400);                 /* 1970-01-02 */
  p += 8;
  buf[p++] = 1;
  buf[p++] = 0;
  put32(buf + p, (uint32_t)(int32_t)-18000); /* type 0: -05:00 */
  buf[p + 4] = 0;
  buf[p + 5] = 0;
  put32(buf + p + 6, (uint32_t)(int32_t)-14400); /* type 1: -04:00, DST */
  buf[p + 10] = 1;
  buf[p + 11] = 4;
  p += 12;
  memcpy(buf + p, "EST\0EDT", 8);
  p += 8;
  struct tz *z = tz_parse(buf, p);
  assert_non_null(z);
  assert_int_equal(tz_offset_at(z, -86401), -18000); /* before the first: type 0 */
  assert_int_equal(tz_offset_at(z, -86400), -14400);
  assert_int_equal(tz_offset_at(z, 86399), -14400);
  assert_int_equal(tz_offset_at(z, 86400), -18000);
  assert_int_equal(tz_offset_at(z, utc(2090, 1, 1, 0, 0)), -18000);
  assert_iv(z, TZ_DAY, utc(1970, 1, 1, 12, 0), 4 * H, "1970-01-01T00:00:00-04:00", 86400 + 5 * H);
  tz_free(z);
  /* one byte more or less, another version byte */
  assert_null(tz_parse(buf, p - 1));
  assert_null(tz_parse(buf, p + 1));
  buf[4] = '1';
  assert_null(tz_parse(buf, p));
  buf[4] = 0;
  /* transitions out of order, a type index out of range, an abbreviation index out of range,
   * isdst not 0/1, an offset of 24 h */
  const struct {
    size_t at;
    uint8_t v;
  } flips[] = {{44 + 4, 0xff}, {52, 2}, {65, 8}, {64, 2}, {54, 0x01}};
  for (size_t i = 0; i < sizeof flips / sizeof *flips; i++) {
    uint8_t save = buf[flips[i].at];
    buf[flips[i].at] = flips[i].v;
    if (tz_parse(buf, p)) fail_msg("flip %zu accepted", i);
    buf[flips[i].at] = save;
  }
  assert_non_null(z = tz_parse(buf, p));
  tz_free(z);
}

static uint8_t *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("cannot open %s", path);
  uint8_t *buf = malloc(1 << 16);
  assert_non_null(buf);
  *len = fread(buf, 1, 1 << 16, f);
  fclose(f);
  return buf;
}

/* Every truncation of real files, and a few corruptions, are refused without a crash. */
static void test_damaged_files(void **state) {
  (void)state;
  const char *files[] = {"/usr/share/zoneinfo/America/New_York", SLIM_DIR "/Australia/Lord_Howe"};
  for (size_t k = 0; k < 2; k++) {
    size_t len;
    uint8_t *buf = read_all(files[k], &len);
    struct tz *z = tz_parse(buf, len);
    assert_non_null(z);
    tz_free(z);
    for (size_t n = 0; n < len; n++) {
      uint8_t *copy = malloc(n ? n : 1); /* exact size: ASan sees reads past the end */
      memcpy(copy, buf, n);
      z = tz_parse(copy, n);
      if (z) fail_msg("%s cut to %zu bytes accepted", files[k], n);
      free(copy);
    }
    buf[len] = '\n'; /* trailing bytes */
    assert_null(tz_parse(buf, len + 1));
    buf[len - 1] = 'x'; /* the footer's closing newline */
    assert_null(tz_parse(buf, len));
    free(buf);
  }
  /* leap seconds are refused */
  size_t len;
  uint8_t *buf = read_all("/usr/share/zoneinfo/right/UTC", &len);
  assert_null(tz_parse(buf, len));
  free(buf);
  assert_null(tz_parse(NULL, 0));
  assert_null(tz_parse("TZif", 4));
}

/* tz_load opens regular files only: a FIFO does not block it, a directory, an empty or huge
 * file is no zone. */
static void test_load_special_files(void **state) {
  (void)state;
  char dir[] = "/tmp/test_tz_XXXXXX";
  assert_non_null(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/Fifo", dir);
  assert_int_equal(mkfifo(path, 0600), 0);
  snprintf(path, sizeof path, "%s/Empty", dir);
  FILE *f = fopen(path, "w");
  fclose(f);
  snprintf(path, sizeof path, "%s/Huge", dir);
  f = fopen(path, "w");
  assert_int_equal(ftruncate(fileno(f), 1 << 20), 0);
  fclose(f);
  snprintf(path, sizeof path, "%s/Sub", dir);
  assert_int_equal(mkdir(path, 0700), 0);
  snprintf(path, sizeof path, "%s/Sub/Zone", dir);
  size_t len;
  uint8_t *buf = read_all("/usr/share/zoneinfo/Asia/Kolkata", &len);
  f = fopen(path, "wb");
  fwrite(buf, 1, len, f);
  fclose(f);
  free(buf);
  setenv("TZDIR", dir, 1);
  assert_null(tz_load("Fifo"));
  assert_null(tz_load("Empty"));
  assert_null(tz_load("Huge"));
  assert_null(tz_load("Sub"));
  struct tz *z = load("Sub/Zone");
  assert_int_equal(tz_offset_at(z, 0), 5 * H + 1800);
  tz_free(z);
  unsetenv("TZDIR");
  const char *names[] = {"Fifo", "Empty", "Huge", "Sub/Zone", "Sub", ""};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (i == 4 || i == 5)
      rmdir(path);
    else
      unlink(path);
  }
}

/* ---- no shared state ---- */

/* TZ in the environment changes nothing: zones are read from their files by name. */
static void test_tz_variable_ignored(void **state) {
  (void)state;
  setenv("TZ", "Asia/Tokyo", 1);
  tzset();
  struct tz *z = load("UTC");
  assert_int_equal(tz_offset_at(z, utc(2026, 7, 1, 0, 0)), 0);
  assert_int_equal(tz_interval_floor(z, TZ_DAY, utc(2026, 7, 1, 3, 0)), utc(2026, 7, 1, 0, 0));
  tz_free(z);
  unsetenv("TZ");
}

struct walk_arg {
  const struct tz *z;
  int64_t sum;
};

static void *walk_thread(void *p) {
  struct walk_arg *a = p;
  int64_t sum = 0;
  for (int iv = TZ_HOUR; iv <= TZ_WEEK; iv++)
    for (int64_t s = tz_interval_floor(a->z, (enum tz_interval)iv, utc(2025, 1, 1, 0, 0));
         s < utc(2027, 1, 1, 0, 0); s = tz_interval_next(a->z, (enum tz_interval)iv, s)) {
      char buf[32];
      tz_format(a->z, s, buf, sizeof buf);
      sum += s + tz_offset_at(a->z, s) + buf[19];
    }
  a->sum = sum;
  return NULL;
}

/* One loaded zone used by several threads at once gives each the answers one thread gets. */
static void test_threads_share_a_zone(void **state) {
  (void)state;
  struct tz *z = load("Australia/Lord_Howe");
  struct walk_arg alone = {z, 0};
  walk_thread(&alone);
  pthread_t th[4];
  struct walk_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (struct walk_arg){z, 0};
    assert_int_equal(pthread_create(&th[i], NULL, walk_thread, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(args[i].sum, alone.sum);
  }
  tz_free(z);
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
      cmocka_unit_test(test_glibc_far_future),
      cmocka_unit_test(test_glibc_days_and_weeks),
      cmocka_unit_test(test_glibc_hours),
      cmocka_unit_test(test_slim_files_with_tzdir),
      cmocka_unit_test(test_footer_rules_against_glibc),
      cmocka_unit_test(test_footer_rules_refused),
      cmocka_unit_test(test_version1_file),
      cmocka_unit_test(test_damaged_files),
      cmocka_unit_test(test_load_special_files),
      cmocka_unit_test(test_tz_variable_ignored),
      cmocka_unit_test(test_threads_share_a_zone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
