/* The Range request header (RFC 9110 section 14), for one byte range. */
#ifndef GSR_RANGE_H
#define GSR_RANGE_H

#include <stdint.h>

enum http_range {
  HTTP_RANGE_NONE,          /* no header, or one to ignore: send the whole representation */
  HTTP_RANGE_OK,            /* [*first, *last], both inclusive, within total */
  HTTP_RANGE_UNSATISFIABLE, /* 416 */
};

/* One "bytes=first-last", "bytes=first-" or "bytes=-suffix" range against total bytes.
 * Anything else (several ranges, another unit, bad syntax, last < first) is ignored, as RFC
 * 9110 allows. */
enum http_range http_range_parse(const char *header, int64_t total, int64_t *first, int64_t *last);

#endif
