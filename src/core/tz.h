/* IANA time zones read from the system's compiled zoneinfo (TZif files under /usr/share/zoneinfo,
 * Debian's tzdata; TZDIR overrides the directory), so "per day" in analytics means the user's
 * day: offsets, daylight saving changes and the zone's POSIX rule for instants past its last
 * listed transition. Thread-safe: a loaded zone is immutable; nothing touches TZ or localtime. */
#ifndef GSR_CORE_TZ_H
#define GSR_CORE_TZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tz;

/* The longest zone name tz_load accepts (IANA's longest is 32). */
#define TZ_NAME_MAX 64

/* Loads the zone named name ("UTC", "Europe/Paris", "America/New_York"). NULL when the name is
 * not a zone: empty, too long, absolute, containing "..", a control character or a byte outside
 * [A-Za-z0-9/_+-], no such file, or a file that is not a valid TZif. Free with tz_free. */
struct tz *tz_load(const char *name);
void tz_free(struct tz *z);

/* Reads a TZif file (RFC 8536, versions 1 to 4) held in buf: the zone tz_load makes of it, or
 * NULL when it is not a valid one (also when it lists leap seconds: "right/" zones count a
 * clock other than POSIX time). tz_load's parser, exposed for the fuzzer and tests. */
struct tz *tz_parse(const void *buf, size_t len);

/* The zone's offset from UTC, in seconds, at the UTC instant t (seconds since the epoch).
 * Every function below clamps t to +-2^40 s (about 34,800 years either side of 1970). */
int32_t tz_offset_at(const struct tz *z, int64_t t);

enum tz_interval { TZ_HOUR, TZ_DAY, TZ_WEEK };

/* The UTC instant at which the local interval (hour, day, or ISO week starting Monday)
 * containing t starts. A local day or week starts at local midnight, or at the first instant
 * after it when midnight does not exist that day (a daylight saving change at midnight); a
 * local hour starts at local HH:00 (a 30- or 45-minute offset zone's hours start at :30/:15
 * UTC). Days can be 23 or 25 hours long. When the clock is set back, the repeated hour is an
 * interval of its own (New York's 01:00 EDT and 01:00 EST start two intervals) unless it does
 * not restart at HH:00 (Lord Howe's 01:30 after 02:00 continues the 01:00 hour); a midnight that
 * happens twice (Havana: 01:00 back to 00:00) starts one day, 25 hours long. */
int64_t tz_interval_floor(const struct tz *z, enum tz_interval iv, int64_t t);

/* The start of the interval after the one starting at start (start as tz_interval_floor
 * returns it). Always > start. */
int64_t tz_interval_next(const struct tz *z, enum tz_interval iv, int64_t start);

/* Writes t as RFC 3339 with the zone's offset at t ("2026-03-08T00:00:00-05:00"; "Z" never:
 * "+00:00" for UTC), into out (at least 26 bytes). */
void tz_format(const struct tz *z, int64_t t, char *out, size_t outlen);

#endif
