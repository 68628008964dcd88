/* Time helpers. Civil-date arithmetic follows Howard Hinnant's public-domain algorithms,
 * so no timezone database or locale is involved. */
#include "core/timeutil.h"

#include <stdio.h>
#include <time.h>

int64_t time_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

double time_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

int64_t time_days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
  *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
  *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static unsigned days_in_month(int64_t y, unsigned m) {
  static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Reads exactly n digits at s[*i]. */
static bool digits(const char *s, size_t len, size_t *i, unsigned n, unsigned *out) {
  unsigned v = 0;
  for (unsigned k = 0; k < n; k++, (*i)++) {
    if (*i >= len || s[*i] < '0' || s[*i] > '9') return false;
    v = v * 10 + (unsigned)(s[*i] - '0');
  }
  *out = v;
  return true;
}

static bool expect(const char *s, size_t len, size_t *i, char c) {
  if (*i >= len || s[*i] != c) return false;
  (*i)++;
  return true;
}

/* Parses ".digits" if present into microseconds (truncating). */
/* *below: a digit past the microseconds is not 0 (the instant is after *us). */
static bool parse_fraction(const char *s, size_t len, size_t *i, int64_t *us, bool *below) {
  *us = 0;
  *below = false;
  if (*i >= len || s[*i] != '.') return true;
  (*i)++;
  unsigned n = 0;
  int64_t scale = 100000;
  while (*i < len && s[*i] >= '0' && s[*i] <= '9') {
    if (scale > 0) {
      *us += (s[*i] - '0') * scale;
      scale /= 10;
    } else if (s[*i] != '0') {
      *below = true;
    }
    (*i)++;
    n++;
  }
  return n > 0;
}

/* Parses "Z" or "+HH:MM"/"-HH:MM" into an offset in seconds east of UTC. */
static bool parse_offset(const char *s, size_t len, size_t *i, int64_t *offset_s) {
  if (*i >= len) return false;
  if (s[*i] == 'Z' || s[*i] == 'z') {
    (*i)++;
    *offset_s = 0;
    return true;
  }
  if (s[*i] != '+' && s[*i] != '-') return false;
  int sign = s[*i] == '-' ? -1 : 1;
  (*i)++;
  unsigned oh, om;
  if (!digits(s, len, i, 2, &oh) || !expect(s, len, i, ':') || !digits(s, len, i, 2, &om))
    return false;
  if (oh > 23 || om > 59) return false;
  *offset_s = sign * (int64_t)(oh * 3600 + om * 60);
  return true;
}

static bool parse_rfc3339(const char *s, size_t len, bool round_up, int64_t *out_us) {
  size_t i = 0;
  unsigned y, mo, d, h, mi, sec;
  if (!digits(s, len, &i, 4, &y) || !expect(s, len, &i, '-') || !digits(s, len, &i, 2, &mo) ||
      !expect(s, len, &i, '-') || !digits(s, len, &i, 2, &d))
    return false;
  if (i >= len || (s[i] != 'T' && s[i] != 't')) return false;
  i++;
  if (!digits(s, len, &i, 2, &h) || !expect(s, len, &i, ':') || !digits(s, len, &i, 2, &mi) ||
      !expect(s, len, &i, ':') || !digits(s, len, &i, 2, &sec))
    return false;
  int64_t frac_us, offset_s;
  bool below;
  if (!parse_fraction(s, len, &i, &frac_us, &below) || !parse_offset(s, len, &i, &offset_s))
    return false;
  if (i != len) return false;
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60)
    return false;
  int64_t days = time_days_from_civil(y, mo, d);
  int64_t secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_s;
  /* RFC 3339 allows second 60 for a leap second, which only ever follows 23:59:59 UTC on the
   * last day of a month (in local time that may read 15:59:60-08:00). It counts as the next
   * second: midnight UTC starting the first day of a month. */
  if (sec == 60) {
    int64_t next_y;
    unsigned next_m, next_d;
    if (secs % 86400 != 0) return false;
    civil_from_days(secs / 86400, &next_y, &next_m, &next_d);
    if (next_d != 1) return false;
  }
  int64_t us = secs * 1000000 + frac_us + (round_up && below ? 1 : 0);
  if (us < TIME_MIN_US || us > TIME_MAX_US) return false;
  *out_us = us;
  return true;
}

bool time_parse_rfc3339(const char *s, size_t len, int64_t *out_us) {
  return parse_rfc3339(s, len, false, out_us);
}

bool time_parse_rfc3339_bound(const char *s, size_t len, int64_t *out_us) {
  return parse_rfc3339(s, len, true, out_us);
}

/* The width lowest decimal digits of v, zero-padded, at out. */
static void put_digits(char *out, unsigned v, int width) {
  for (int i = width - 1; i >= 0; i--) {
    out[i] = (char)('0' + v % 10);
    v /= 10;
  }
}

bool time_format_us(int64_t us, bool always_fraction, char *buf, size_t cap) {
  if (us < TIME_MIN_US || us > TIME_MAX_US) {
    if (cap) buf[0] = '\0';
    return false;
  }
  int64_t secs = us / 1000000, frac = us % 1000000;
  if (frac < 0) {
    frac += 1000000;
    secs -= 1;
  }
  int64_t days = secs / 86400, rem = secs % 86400;
  if (rem < 0) {
    rem += 86400;
    days -= 1;
  }
  int64_t y;
  unsigned m, d;
  civil_from_days(days, &y, &m, &d);
  unsigned hh = (unsigned)(rem / 3600), mm = (unsigned)(rem % 3600 / 60), ss = (unsigned)(rem % 60);
  /* Written digit by digit: every answer and every outbox event formats times, and
   * snprintf costs about a microsecond each. y is 1..9999 (the range checked above). */
  bool with_fraction = always_fraction || frac != 0;
  size_t n = with_fraction ? 27 : 20; /* YYYY-MM-DDTHH:MM:SS[.ffffff]Z */
  if (cap < n + 1) {
    if (cap) buf[0] = '\0';
    return false;
  }
  put_digits(buf, (unsigned)y, 4);
  buf[4] = '-';
  put_digits(buf + 5, m, 2);
  buf[7] = '-';
  put_digits(buf + 8, d, 2);
  buf[10] = 'T';
  put_digits(buf + 11, hh, 2);
  buf[13] = ':';
  put_digits(buf + 14, mm, 2);
  buf[16] = ':';
  put_digits(buf + 17, ss, 2);
  if (with_fraction) {
    buf[19] = '.';
    put_digits(buf + 20, (unsigned)frac, 6);
  }
  buf[n - 1] = 'Z';
  buf[n] = '\0';
  return true;
}
