/* Query parameters shared by the endpoints that take them (app.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/timeutil.h"
#include "model/body.h"

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

json_t *api_read_object(struct http_request *req) {
  size_t len;
  const char *text = http_request_body(req, &len);
  json_t *body;
  bool reals;
  char message[300];
  enum model_result r = model_body_load(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &body,
                                        &reals, message, sizeof message);
  if (r == MODEL_NO_MEMORY) {
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory; retry", NULL);
    return NULL;
  }
  if (r != MODEL_OK) {
    http_reply_error(req, API_ERR_INVALID_JSON, message, NULL);
    return NULL;
  }
  if (!json_is_object(body)) {
    json_decref(body);
    http_reply_error(req, API_ERR_INVALID_JSON, "The body must be a JSON object", NULL);
    return NULL;
  }
  return body;
}
