/* Query parameters shared by the endpoints that take them (app.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/timeutil.h"

bool api_query_int(const char *s, int64_t min, int64_t max, int64_t def, int64_t *out) {
  if (!s) {
    *out = def;
    return true;
  }
  if ((*s < '0' || *s > '9') && !(*s == '-' && s[1] >= '0' && s[1] <= '9')) return false;
  if (strlen(s) > 20) return false; /* "-" and 19 digits; more is zero padding or too large */
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (errno || *end != '\0' || v < min || v > max) return false;
  *out = v;
  return true;
}

/* An optional RFC 3339 date-time with its offset. An unencoded '+' of an offset
 * (…T10:00:00+02:00) arrives as a space (form encoding): it can only mean '+' there. */
bool api_query_instant(const char *s, bool *has, int64_t *out) {
  *has = s != NULL;
  if (!s) return true;
  char buf[64];
  size_t len = strlen(s);
  if (len >= sizeof buf) return false;
  memcpy(buf, s, len + 1);
  for (size_t i = 19; i < len; i++)
    if (buf[i] == ' ') buf[i] = '+';
  return time_parse_rfc3339_bound(buf, len, out);
}

void api_bad_param(struct http_request *req, const char *field, const char *issue) {
  char message[200];
  snprintf(message, sizeof message, "%s %s", field, issue);
  http_reply_error(req, API_ERR_INVALID_PARAMETER, message,
                   json_pack("[{s:s,s:s}]", "field", field, "issue", issue));
}
