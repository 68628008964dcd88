/* Range header parsing: decimal numbers only, no overflow, nothing after the range. */
#include "http/range.h"

#include <stdbool.h>
#include <string.h>

static bool parse_u63(const char **p, int64_t *out) {
  const char *s = *p;
  if (*s < '0' || *s > '9') return false;
  int64_t v = 0;
  for (; *s >= '0' && *s <= '9'; s++) {
    if (v > (INT64_MAX - 9) / 10) return false;
    v = v * 10 + (*s - '0');
  }
  *out = v;
  *p = s;
  return true;
}

static const char *skip_spaces(const char *p) {
  while (*p == ' ' || *p == '\t') p++;
  return p;
}

enum http_range http_range_parse(const char *h, int64_t total, int64_t *first, int64_t *last) {
  if (!h || strncmp(h, "bytes=", 6) != 0 || total < 0) return HTTP_RANGE_NONE;
  const char *p = skip_spaces(h + 6);
  int64_t a = -1, b = -1;
  if (*p == '-') { /* the last b bytes */
    p++;
    if (!parse_u63(&p, &b) || *skip_spaces(p)) return HTTP_RANGE_NONE;
    if (b == 0 || total == 0) return HTTP_RANGE_UNSATISFIABLE;
    *first = b >= total ? 0 : total - b;
    *last = total - 1;
    return HTTP_RANGE_OK;
  }
  if (!parse_u63(&p, &a) || *p++ != '-') return HTTP_RANGE_NONE;
  if (*p >= '0' && *p <= '9' && !parse_u63(&p, &b)) return HTTP_RANGE_NONE;
  if (*skip_spaces(p) || (b >= 0 && b < a)) return HTTP_RANGE_NONE;
  if (a >= total) return HTTP_RANGE_UNSATISFIABLE;
  *first = a;
  *last = (b < 0 || b >= total) ? total - 1 : b;
  return HTTP_RANGE_OK;
}
