/* Time helpers: a wall clock in microseconds and strict RFC 3339 parsing/formatting. */
#ifndef GSR_TIMEUTIL_H
#define GSR_TIMEUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Microseconds since the Unix epoch (UTC wall clock). */
int64_t time_now_us(void);
/* Monotonic milliseconds, for durations and deadlines. */
double time_mono_ms(void);

/* The instants the service accepts and renders: 0001-01-01T00:00:00Z to
 * 9999-12-31T23:59:59.999999Z (four-digit years, and every common date library's range). */
#define TIME_MIN_US (-62135596800LL * 1000000)
#define TIME_MAX_US (253402300799LL * 1000000 + 999999)

/* Parses an RFC 3339 date-time ("2024-01-15T10:30:00Z", "...T10:30:00.5+02:00"; 'T'/'Z' in
 * any case). Fractions beyond microseconds are truncated. Returns false on anything else:
 * impossible dates such as February 30th, an instant outside TIME_MIN_US..TIME_MAX_US once the
 * offset is applied, and second 60 anywhere but a leap second's place, 23:59:60 UTC on the last
 * day of a month (counted as the next second). */
__attribute__((warn_unused_result)) bool time_parse_rfc3339(const char *s, size_t len,
                                                            int64_t *out_us);

/* The same, but a fraction beyond microseconds rounds up to the next microsecond: for a bound
 * (from, to, since) compared with stored microsecond instants, so that "at or after" and
 * "before" it keep their meaning (an instant stored as .500000 is before .5000001). */
__attribute__((warn_unused_result)) bool time_parse_rfc3339_bound(const char *s, size_t len,
                                                                  int64_t *out_us);

/* Formats us as UTC "YYYY-MM-DDTHH:MM:SSZ"; with always_fraction, or when the fraction is not
 * zero, as "YYYY-MM-DDTHH:MM:SS.ffffffZ". Returns false when us is outside
 * TIME_MIN_US..TIME_MAX_US. */
bool time_format_us(int64_t us, bool always_fraction, char *buf, size_t cap);

/* Days since 1970-01-01 of a proleptic Gregorian date (no range checks). */
int64_t time_days_from_civil(int64_t y, unsigned m, unsigned d);

#endif
