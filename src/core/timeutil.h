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

/* Parses an RFC 3339 date-time ("2024-01-15T10:30:00Z", "...T10:30:00.5+02:00"; 'T'/'Z' in
 * any case). Fractions beyond microseconds are truncated. Returns false on anything else,
 * including impossible dates such as February 30th. */
__attribute__((warn_unused_result)) bool time_parse_rfc3339(const char *s, size_t len,
                                                            int64_t *out_us);

/* Formats us as UTC "YYYY-MM-DDTHH:MM:SSZ"; with always_fraction, or when the fraction is not
 * zero, as "YYYY-MM-DDTHH:MM:SS.ffffffZ". Returns false when the year is outside 0..9999. */
bool time_format_us(int64_t us, bool always_fraction, char *buf, size_t cap);

/* Days since 1970-01-01 of a proleptic Gregorian date (no range checks). */
int64_t time_days_from_civil(int64_t y, unsigned m, unsigned d);

#endif
