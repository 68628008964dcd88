/* Query parameters shared by the endpoints that take them (app.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"

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

void api_bad_param(struct http_request *req, const char *field, const char *issue) {
  char message[200];
  snprintf(message, sizeof message, "%s %s", field, issue);
  http_reply_error(req, API_ERR_INVALID_PARAMETER, message,
                   json_pack("[{s:s,s:s}]", "field", field, "issue", issue));
}
