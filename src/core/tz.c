/* IANA time zones (see tz.h): TZif files (RFC 8536, versions 1 to 4) read and checked into an
 * immutable list of transitions, plus the zone's POSIX TZ rule ("EST5EDT,M3.2.0,M11.1.0") for
 * instants after the last one. Everything else is arithmetic on "segments": maximal spans of
 * time with one UTC offset, found by a binary search in the transitions or computed from the
 * rule for the years around an instant. Local intervals are defined on top of that:
 *   - an hour starts where the local clock reads HH:00:00, or at a transition that jumps the
 *     clock forward over HH:00 (so a repeated hour at a fall-back is two intervals);
 *   - a day (week) D starts at the first instant whose local time is D 00:00 or later (so a
 *     midnight that happens twice, as in Havana where 01:00 falls back to 00:00, starts one day,
 *     25 hours long; a midnight that never happens starts the day at the jump).
 * Both give a partition of time; floor/next agree by construction. */
#include "core/tz.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/timeutil.h"

#define TZ_DEFAULT_DIR "/usr/share/zoneinfo"
/* Offsets are below 24 h either way, so RFC 3339 (hours 00-23) can write them; RFC 8536 allows
 * up to 26 h, which no zone ever used. */
#define TZ_OFF_MAX 86400
/* Instants beyond about 34,800 years either side of 1970 are clamped. */
#define TZ_T_LIMIT (INT64_C(1) << 40)
/* Transition times the file may hold (zic's "big bang" is -2^59). */
#define TZ_TRANS_LIMIT (INT64_C(1) << 61)
/* The largest zone Debian ships is under 4 KiB. */
#define TZ_FILE_MAX (256 * 1024)
#define TZ_ABBR_MAX 32

enum rule_kind { RULE_JULIAN1 /* Jn */, RULE_JULIAN0 /* n */, RULE_MONTH /* Mm.w.d */ };

struct tz_rule {
  enum rule_kind kind;
  int day;             /* Jn: 1..365; n: 0..365 */
  int mon, week, wday; /* Mm.w.d: 1..12, 1..5, 0..6 (Sunday 0) */
  int32_t secs;        /* local time of day of the change, -167 h..167 h */
};

struct tz_footer {
  bool present; /* a non-empty TZ string */
  bool has_dst;
  int32_t std_off, dst_off;  /* seconds east of UTC (the TZ string counts west) */
  struct tz_rule start, end; /* start in standard time, end in daylight saving time */
};

struct tz {
  size_t ntrans;
  int64_t *trans;     /* ascending */
  int32_t *trans_off; /* offset from trans[i] on */
  int32_t off0;       /* before the first transition (time type 0) */
  struct tz_footer f;
};

/* A span [a, e) with one offset; a == INT64_MIN / e == INT64_MAX when unbounded. */
struct seg {
  int64_t a, e;
  int32_t off;
};

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

static int64_t floormod(int64_t a, int64_t b) { return a - floordiv(a, b) * b; }

static int64_t clamp_t(int64_t t) {
  return t < -TZ_T_LIMIT ? -TZ_T_LIMIT : t > TZ_T_LIMIT ? TZ_T_LIMIT : t;
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

static int month_days(int64_t y, int m) {
  static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* ---- the POSIX TZ rule ---- */

/* Days since the epoch of the rule's date in year y. */
static int64_t rule_day(const struct tz_rule *r, int64_t y) {
  switch (r->kind) {
    case RULE_JULIAN1:
      return time_days_from_civil(y, 1, 1) + r->day - 1 + (is_leap(y) && r->day >= 60);
    case RULE_JULIAN0:
      return time_days_from_civil(y, 1, 1) + r->day;
    case RULE_MONTH:
    default: {
      int64_t first = time_days_from_civil(y, (unsigned)r->mon, 1);
      int64_t wd_first = floormod(first + 4, 7); /* Sunday 0; 1970-01-01 was a Thursday */
      int64_t d = first + (r->wday - wd_first + 7) % 7 + 7 * (r->week - 1);
      while (d >= first + month_days(y, r->mon)) d -= 7; /* week 5: the last such day */
      return d;
    }
  }
}

struct change {
  int64_t t;
  bool dst; /* starts daylight saving time (else ends it) */
};

/* The segment of the rule holding p: the changes of the years around p's, in order (an end
 * before a start at the same instant, so back-to-back periods make a year-round DST). */
static void footer_seg(const struct tz_footer *f, int64_t p, struct seg *s) {
  if (!f->has_dst) {
    s->a = INT64_MIN;
    s->e = INT64_MAX;
    s->off = f->std_off;
    return;
  }
  int64_t y;
  unsigned mo, d;
  civil_from_days(floordiv(p, 86400), &y, &mo, &d);
  struct change ev[10];
  int n = 0;
  for (int64_t yy = y - 2; yy <= y + 2; yy++) {
    ev[n].t = rule_day(&f->start, yy) * 86400 + f->start.secs - f->std_off;
    ev[n++].dst = true;
    ev[n].t = rule_day(&f->end, yy) * 86400 + f->end.secs - f->dst_off;
    ev[n++].dst = false;
  }
  for (int i = 1; i < n; i++) /* insertion sort by (t, end first) */
    for (int j = i; j > 0 && (ev[j - 1].t > ev[j].t ||
                              (ev[j - 1].t == ev[j].t && ev[j - 1].dst && !ev[j].dst));
         j--) {
      struct change tmp = ev[j];
      ev[j] = ev[j - 1];
      ev[j - 1] = tmp;
    }
  int last = -1;
  for (int i = 0; i < n && ev[i].t <= p; i++) last = i;
  /* two years either side: some change is <= p and some > p (rule times stay within 8 days
   * of their date) */
  s->a = last >= 0 ? ev[last].t : INT64_MIN;
  s->e = last + 1 < n ? ev[last + 1].t : INT64_MAX;
  s->off = (last >= 0 ? ev[last].dst : !ev[0].dst) ? f->dst_off : f->std_off;
}

static void seg_at(const struct tz *z, int64_t p, struct seg *s) {
  size_t n = z->ntrans;
  if (n == 0) {
    if (z->f.present) {
      footer_seg(&z->f, p, s);
    } else {
      s->a = INT64_MIN;
      s->e = INT64_MAX;
      s->off = z->off0;
    }
    return;
  }
  if (p < z->trans[0]) {
    s->a = INT64_MIN;
    s->e = z->trans[0];
    s->off = z->off0;
    return;
  }
  size_t lo = 0, hi = n; /* last i with trans[i] <= p */
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    if (z->trans[mid] <= p)
      lo = mid;
    else
      hi = mid;
  }
  if (lo + 1 < n) {
    s->a = z->trans[lo];
    s->e = z->trans[lo + 1];
    s->off = z->trans_off[lo];
  } else if (!z->f.present) {
    s->a = z->trans[lo];
    s->e = INT64_MAX;
    s->off = z->trans_off[lo];
  } else {
    footer_seg(&z->f, p, s);
    if (s->a < z->trans[lo]) s->a = z->trans[lo];
  }
}

static int32_t off_at(const struct tz *z, int64_t p) {
  struct seg s;
  seg_at(z, p, &s);
  return s.off;
}

int32_t tz_offset_at(const struct tz *z, int64_t t) { return off_at(z, clamp_t(t)); }

/* ---- local intervals ---- */

/* Whether the clock jumps forward over a multiple of unit at the segment start a (whose offset
 * is off): local(a - 1) < M < local(a) for some multiple M. */
static bool jumps_over(const struct tz *z, int64_t a, int32_t off, int64_t unit) {
  if (a == INT64_MIN) return false;
  int64_t before = a - 1 + off_at(z, a - 1);
  int64_t after = a + off;
  return floordiv(after - 1, unit) * unit > before;
}

static size_t guard_of(const struct tz *z) { return z->ntrans + 64; }

static int64_t hour_floor(const struct tz *z, int64_t t) {
  int64_t p = t, best = t;
  for (size_t g = guard_of(z); g > 0; g--) {
    struct seg s;
    seg_at(z, p, &s);
    int64_t c = floordiv(p + s.off, 3600) * 3600 - s.off;
    if (s.a == INT64_MIN || c >= s.a) return c;
    /* no HH:00 in this segment up to p: its start, if the clock jumped over one there */
    if (jumps_over(z, s.a, s.off, 3600)) return s.a;
    best = s.a;
    p = s.a - 1;
  }
  return best; /* a pathological file: thousands of transitions without an hour */
}

static int64_t hour_next(const struct tz *z, int64_t start) {
  int64_t p = start + 1;
  for (size_t g = guard_of(z); g > 0; g--) {
    struct seg s;
    seg_at(z, p, &s);
    if (p == s.a && jumps_over(z, s.a, s.off, 3600)) return p;
    int64_t c = -floordiv(-(p + s.off), 3600) * 3600 - s.off; /* first HH:00 at or after p */
    if (c < s.e) return c;
    p = s.e;
  }
  return p;
}

/* The first instant whose local time is x or later. */
static int64_t first_local_at_least(const struct tz *z, int64_t x) {
  int64_t p = x - TZ_OFF_MAX; /* before it, local time is below x whatever the offset */
  for (size_t g = guard_of(z); g > 0; g--) {
    struct seg s;
    seg_at(z, p, &s);
    int64_t c = x - s.off;
    if (c < p) c = p;
    if (c < s.e) return c;
    p = s.e;
  }
  return p;
}

/* The local midnight starting the day (or ISO week) of local time l. */
static int64_t local_unit_start(enum tz_interval iv, int64_t l) {
  int64_t d = floordiv(l, 86400);
  if (iv == TZ_WEEK) d -= floormod(d + 3, 7); /* back to Monday; 1970-01-01 was a Thursday */
  return d * 86400;
}

int64_t tz_interval_floor(const struct tz *z, enum tz_interval iv, int64_t t) {
  t = clamp_t(t);
  if (iv == TZ_HOUR) return hour_floor(z, t);
  int64_t step = iv == TZ_WEEK ? 7 * 86400 : 86400;
  int64_t x = local_unit_start(iv, t + off_at(z, t));
  int64_t best = first_local_at_least(z, x);
  if (best > t) best = t; /* only for a pathological file */
  /* a clock set back over midnight: a later day may already have started */
  for (int k = 1; k <= 8; k++) {
    int64_t s = first_local_at_least(z, x + k * step);
    if (s > t) break;
    best = s;
  }
  return best;
}

int64_t tz_interval_next(const struct tz *z, enum tz_interval iv, int64_t start) {
  start = clamp_t(start);
  if (iv == TZ_HOUR) {
    int64_t n = hour_next(z, start);
    return n > start ? n : start + 1;
  }
  int64_t step = iv == TZ_WEEK ? 7 * 86400 : 86400;
  int64_t x = local_unit_start(iv, start + off_at(z, start));
  /* days up to start's own have started by start; the first later one that starts after it
   * (within 8 steps: offsets differ by less than 52 h) */
  for (int k = 1; k <= 8; k++) {
    int64_t s = first_local_at_least(z, x + k * step);
    if (s > start) return s;
  }
  return start + step;
}

static void put_digits(char *p, unsigned v, int width) {
  for (int i = width - 1; i >= 0; i--) {
    p[i] = (char)('0' + v % 10);
    v /= 10;
  }
}

void tz_format(const struct tz *z, int64_t t, char *out, size_t outlen) {
  if (!out || outlen == 0) return;
  t = clamp_t(t);
  /* RFC 3339 offsets have no seconds (local mean time before ~1900, and Amsterdam's +00:19:32
   * until 1937, have them): the offset is rounded up to the minute and the local time written
   * is t at that offset, so the text still names the instant t exactly, and a local midnight
   * reads as that day's 00:00:ss, never as 23:59:ss of the day before (which truncating a
   * positive offset, as strftime's %z does, would write: a day's start label naming the wrong
   * date). */
  int32_t off = (int32_t)(floordiv(tz_offset_at(z, t) + 59, 60) * 60);
  if (off >= TZ_OFF_MAX) off = TZ_OFF_MAX - 60; /* +23:59:ss: "+24:00" is no RFC 3339 offset */
  int64_t l = t + off;
  const int64_t lmin = time_days_from_civil(1, 1, 1) * 86400;
  const int64_t lmax = time_days_from_civil(9999, 12, 31) * 86400 + 86399;
  if (l < lmin) l = lmin; /* four-digit years only */
  if (l > lmax) l = lmax;
  int64_t days = floordiv(l, 86400), sod = l - days * 86400, y;
  unsigned mo, d;
  civil_from_days(days, &y, &mo, &d);
  int32_t a = off < 0 ? -off : off;
  /* by hand: snprintf costs more than the rest of a series' interval (analytics writes one per
   * interval) */
  char buf[26];
  put_digits(buf, (unsigned)y, 4);
  buf[4] = '-';
  put_digits(buf + 5, mo, 2);
  buf[7] = '-';
  put_digits(buf + 8, d, 2);
  buf[10] = 'T';
  put_digits(buf + 11, (unsigned)(sod / 3600), 2);
  buf[13] = ':';
  put_digits(buf + 14, (unsigned)(sod / 60 % 60), 2);
  buf[16] = ':';
  put_digits(buf + 17, (unsigned)(sod % 60), 2);
  buf[19] = off < 0 ? '-' : '+';
  put_digits(buf + 20, (unsigned)(a / 3600), 2);
  buf[22] = ':';
  put_digits(buf + 23, (unsigned)(a / 60 % 60), 2);
  buf[25] = '\0';
  size_t n = outlen - 1 < 25 ? outlen - 1 : 25;
  memcpy(out, buf, n);
  out[n] = '\0';
}

/* ---- the POSIX TZ string (RFC 8536 section 3.3, with its version 3 extensions) ---- */

struct cursor {
  const char *p, *end;
};

static bool cur_peek(const struct cursor *c, char ch) { return c->p < c->end && *c->p == ch; }

/* up to max_digits digits into *v; false when none */
static bool parse_num(struct cursor *c, int max_digits, int *v) {
  int n = 0, x = 0;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9' && n < max_digits) {
    x = x * 10 + (*c->p - '0');
    c->p++;
    n++;
  }
  if (n == 0 || (c->p < c->end && *c->p >= '0' && *c->p <= '9')) return false;
  *v = x;
  return true;
}

/* [+-]hh[:mm[:ss]] with hh <= max_hours, into seconds */
static bool parse_hms(struct cursor *c, int max_hours, int32_t *out) {
  int sign = 1, h, m = 0, s = 0;
  if (cur_peek(c, '+')) {
    c->p++;
  } else if (cur_peek(c, '-')) {
    sign = -1;
    c->p++;
  }
  if (!parse_num(c, 3, &h) || h > max_hours) return false;
  if (cur_peek(c, ':')) {
    c->p++;
    if (!parse_num(c, 2, &m) || m > 59) return false;
    if (cur_peek(c, ':')) {
      c->p++;
      if (!parse_num(c, 2, &s) || s > 59) return false;
    }
  }
  *out = sign * (h * 3600 + m * 60 + s);
  return true;
}

/* An abbreviation: three or more letters, or <...> of letters, digits, + and -. */
static bool parse_abbr(struct cursor *c) {
  size_t n = 0;
  if (cur_peek(c, '<')) {
    c->p++;
    while (c->p < c->end && *c->p != '>') {
      char ch = *c->p;
      if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '+' || ch == '-'))
        return false;
      c->p++;
      n++;
    }
    if (!cur_peek(c, '>')) return false;
    c->p++;
  } else {
    while (c->p < c->end && ((*c->p >= 'A' && *c->p <= 'Z') || (*c->p >= 'a' && *c->p <= 'z'))) {
      c->p++;
      n++;
    }
  }
  return n >= 3 && n <= TZ_ABBR_MAX;
}

static bool parse_rule(struct cursor *c, struct tz_rule *r) {
  if (cur_peek(c, 'J')) {
    c->p++;
    r->kind = RULE_JULIAN1;
    if (!parse_num(c, 3, &r->day) || r->day < 1 || r->day > 365) return false;
  } else if (cur_peek(c, 'M')) {
    c->p++;
    r->kind = RULE_MONTH;
    if (!parse_num(c, 2, &r->mon) || r->mon < 1 || r->mon > 12 || !cur_peek(c, '.')) return false;
    c->p++;
    if (!parse_num(c, 1, &r->week) || r->week < 1 || r->week > 5 || !cur_peek(c, '.')) return false;
    c->p++;
    if (!parse_num(c, 1, &r->wday) || r->wday > 6) return false;
  } else {
    r->kind = RULE_JULIAN0;
    if (!parse_num(c, 3, &r->day) || r->day > 365) return false;
  }
  r->secs = 7200; /* 02:00 by default */
  if (cur_peek(c, '/')) {
    c->p++;
    if (!parse_hms(c, 167, &r->secs)) return false;
  }
  return true;
}

static bool parse_footer(const char *s, size_t len, struct tz_footer *f) {
  memset(f, 0, sizeof *f);
  if (len == 0) return true; /* no rule: the last transition's offset stays */
  struct cursor c = {s, s + len};
  int32_t std, dst;
  if (!parse_abbr(&c) || !parse_hms(&c, 24, &std)) return false;
  f->present = true;
  f->std_off = -std;
  if (c.p == c.end) return f->std_off > -TZ_OFF_MAX && f->std_off < TZ_OFF_MAX;
  if (!parse_abbr(&c)) return false;
  dst = std - 3600;
  if (!cur_peek(&c, ',') && !parse_hms(&c, 24, &dst)) return false;
  /* a DST name without a rule is left to the implementation by POSIX; zic always writes one */
  if (!cur_peek(&c, ',')) return false;
  c.p++;
  if (!parse_rule(&c, &f->start) || !cur_peek(&c, ',')) return false;
  c.p++;
  if (!parse_rule(&c, &f->end) || c.p != c.end) return false;
  f->has_dst = true;
  f->dst_off = -dst;
  return f->std_off > -TZ_OFF_MAX && f->std_off < TZ_OFF_MAX && f->dst_off > -TZ_OFF_MAX &&
         f->dst_off < TZ_OFF_MAX;
}

/* ---- TZif ---- */

struct tzif_hdr {
  uint8_t version; /* 0, '2', '3', '4' */
  uint32_t isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt;
};

static uint32_t be32(const uint8_t *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static int64_t be64s(const uint8_t *b) {
  uint64_t v = (uint64_t)be32(b) << 32 | be32(b + 4);
  return (int64_t)v; /* two's complement: implementation-defined in C11, exact on our targets */
}

static bool read_hdr(const uint8_t *b, size_t len, size_t pos, struct tzif_hdr *h) {
  if (len - pos < 44 || memcmp(b + pos, "TZif", 4) != 0) return false;
  h->version = b[pos + 4];
  if (h->version != 0 && (h->version < '2' || h->version > '4')) return false;
  const uint8_t *c = b + pos + 20;
  h->isutcnt = be32(c);
  h->isstdcnt = be32(c + 4);
  h->leapcnt = be32(c + 8);
  h->timecnt = be32(c + 12);
  h->typecnt = be32(c + 16);
  h->charcnt = be32(c + 20);
  return true;
}

static uint64_t block_size(const struct tzif_hdr *h, unsigned ts) {
  return (uint64_t)h->timecnt * ts + h->timecnt + (uint64_t)h->typecnt * 6 + h->charcnt +
         (uint64_t)h->leapcnt * (ts + 4) + h->isstdcnt + h->isutcnt;
}

void tz_free(struct tz *z) { free(z); }

/* Reads the data block at pos (time size ts) into a new zone, or NULL. */
static struct tz *read_block(const uint8_t *b, const struct tzif_hdr *h, unsigned ts) {
  if (h->typecnt == 0 || h->typecnt > 256 || h->charcnt == 0 ||
      (h->isutcnt != 0 && h->isutcnt != h->typecnt) ||
      (h->isstdcnt != 0 && h->isstdcnt != h->typecnt))
    return NULL;
  /* leap seconds ("right/" zones) count a clock that is not the POSIX time we are given */
  if (h->leapcnt != 0) return NULL;
  const uint8_t *times = b, *idx = times + (size_t)h->timecnt * ts, *types = idx + h->timecnt;
  const uint8_t *chars = types + (size_t)h->typecnt * 6, *isstd = chars + h->charcnt;
  const uint8_t *isut = isstd + h->isstdcnt;
  int32_t offs[256];
  for (uint32_t i = 0; i < h->typecnt; i++) {
    const uint8_t *tt = types + (size_t)i * 6;
    int32_t off = (int32_t)be32(tt);
    if (off <= -TZ_OFF_MAX || off >= TZ_OFF_MAX || tt[4] > 1 || tt[5] >= h->charcnt) return NULL;
    offs[i] = off;
  }
  if (chars[h->charcnt - 1] != 0) return NULL; /* every abbreviation is NUL-terminated */
  for (uint32_t i = 0; i < h->isstdcnt; i++)
    if (isstd[i] > 1) return NULL;
  for (uint32_t i = 0; i < h->isutcnt; i++)
    if (isut[i] > 1 || (isut[i] == 1 && (h->isstdcnt == 0 || isstd[i] != 1))) return NULL;

  size_t n = h->timecnt;
  struct tz *z = calloc(1, sizeof *z + n * (sizeof(int64_t) + sizeof(int32_t)));
  if (!z) return NULL;
  z->ntrans = n;
  z->trans = (int64_t *)(z + 1);
  z->trans_off = (int32_t *)(z->trans + n);
  z->off0 = offs[0];
  for (size_t i = 0; i < n; i++) {
    int64_t t = ts == 8 ? be64s(times + i * 8) : (int64_t)(int32_t)be32(times + i * 4);
    if (t < -TZ_TRANS_LIMIT || t > TZ_TRANS_LIMIT || (i > 0 && t <= z->trans[i - 1]) ||
        idx[i] >= h->typecnt) {
      free(z);
      return NULL;
    }
    z->trans[i] = t;
    z->trans_off[i] = offs[idx[i]];
  }
  return z;
}

/* The rule's changes up to 2200 are listed as transitions too (the rule decides from the last
 * transition on, as seg_at does without them), so the years people ask about cost one binary
 * search, not ten rule dates. Takes z; NULL when out of memory. */
#define TZ_RULE_LIST_END INT64_C(7258118400) /* 2200-01-01 */
#define TZ_RULE_LIST_MAX 1024

static struct tz *list_rule_changes(struct tz *z) {
  if (!z->f.has_dst || z->ntrans == 0 || z->trans[z->ntrans - 1] >= TZ_RULE_LIST_END) return z;
  int64_t *t = malloc(TZ_RULE_LIST_MAX * sizeof *t);
  int32_t *o = malloc(TZ_RULE_LIST_MAX * sizeof *o);
  struct tz *nz = NULL;
  if (!t || !o) goto out;
  size_t k = 0, n0 = z->ntrans;
  struct seg s;
  for (int64_t p = z->trans[n0 - 1]; k < TZ_RULE_LIST_MAX; p = t[k++]) {
    footer_seg(&z->f, p, &s);
    if (s.e >= TZ_RULE_LIST_END) break;
    t[k] = s.e;
    footer_seg(&z->f, s.e, &s);
    o[k] = s.off;
  }
  size_t n = n0 + k;
  nz = calloc(1, sizeof *nz + n * (sizeof(int64_t) + sizeof(int32_t)));
  if (!nz) goto out;
  nz->ntrans = n;
  nz->trans = (int64_t *)(nz + 1);
  nz->trans_off = (int32_t *)(nz->trans + n);
  nz->off0 = z->off0;
  nz->f = z->f;
  memcpy(nz->trans, z->trans, n0 * sizeof *t);
  memcpy(nz->trans_off, z->trans_off, n0 * sizeof *o);
  footer_seg(&z->f, z->trans[n0 - 1], &s);
  nz->trans_off[n0 - 1] = s.off;
  if (k > 0) {
    memcpy(nz->trans + n0, t, k * sizeof *t);
    memcpy(nz->trans_off + n0, o, k * sizeof *o);
  }
out:
  free(t);
  free(o);
  free(z);
  return nz;
}

struct tz *tz_parse(const void *buf, size_t len) {
  const uint8_t *b = buf;
  struct tzif_hdr h1, h2;
  if (!b || !read_hdr(b, len, 0, &h1)) return NULL;
  uint64_t size1 = block_size(&h1, 4);
  if (size1 > len - 44) return NULL;
  if (h1.version == 0) {
    if (44 + size1 != len) return NULL;
    return read_block(b + 44, &h1, 4);
  }
  /* version 2+: skip the 32-bit block; the 64-bit one and the footer follow */
  size_t pos = 44 + (size_t)size1;
  if (!read_hdr(b, len, pos, &h2) || h2.version != h1.version) return NULL;
  pos += 44;
  uint64_t size2 = block_size(&h2, 8);
  if (size2 > len - pos) return NULL;
  const uint8_t *block = b + pos;
  pos += (size_t)size2;
  /* "\n" TZ string "\n", and nothing after */
  if (pos >= len || b[pos] != '\n') return NULL;
  const uint8_t *nl = memchr(b + pos + 1, '\n', len - pos - 1);
  if (!nl || (size_t)(nl - b) + 1 != len) return NULL;
  struct tz_footer f;
  if (!parse_footer((const char *)b + pos + 1, (size_t)(nl - (b + pos + 1)), &f)) return NULL;
  struct tz *z = read_block(block, &h2, 8);
  if (!z) return NULL;
  z->f = f;
  return list_rule_changes(z);
}

/* ---- loading by name ---- */

static bool name_ok(const char *name) {
  size_t n = strnlen(name, TZ_NAME_MAX + 1);
  if (n == 0 || n > TZ_NAME_MAX || name[0] == '/' || name[n - 1] == '/') return false;
  /* files of the directory that name this host's settings, not a zone: "localtime" is whatever
   * /etc/localtime is, "posixrules" the default rules of POSIX TZ strings; as the last
   * component, since some systems link a subdirectory back to the top (zoneinfo/posix -> .) */
  const char *last = strrchr(name, '/');
  last = last ? last + 1 : name;
  if (strcmp(last, "localtime") == 0 || strcmp(last, "posixrules") == 0) return false;
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '/' || c == '_' || c == '+' || c == '-';
    /* no '.' at all, so neither "." nor ".." can name a directory; no empty component */
    if (!ok || (c == '/' && name[i + 1] == '/')) return false;
  }
  return true;
}

struct tz *tz_load(const char *name) {
  if (!name || !name_ok(name)) return NULL;
  const char *dir = getenv("TZDIR");
  if (!dir || !*dir) dir = TZ_DEFAULT_DIR;
  char path[PATH_MAX];
  int w = snprintf(path, sizeof path, "%s/%s", dir, name);
  if (w < 0 || (size_t)w >= sizeof path) return NULL;
  /* O_NONBLOCK: a FIFO in the directory must not block the caller */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return NULL;
  struct stat st;
  uint8_t *buf = NULL;
  struct tz *z = NULL;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > TZ_FILE_MAX)
    goto out;
  size_t len = (size_t)st.st_size, got = 0;
  buf = malloc(len);
  if (!buf) goto out;
  while (got < len) {
    ssize_t r = read(fd, buf + got, len - got);
    if (r <= 0) goto out; /* an error, or the file shrank */
    got += (size_t)r;
  }
  z = tz_parse(buf, len);
out:
  free(buf);
  close(fd);
  return z;
}
