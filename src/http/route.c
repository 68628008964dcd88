/* Routing: the path and method of a request against the api layer's one route table
 * (api_routes), and the answer to OPTIONS. Knows no endpoint. */
#include <stdio.h>
#include <string.h>

#include "http/server_internal.h"

/* Routing looks at the raw path, before any decoding: "%2F" is data, never a separator, so
 * "/api/v1/conversations%2Fseed-1" is not "/api/v1/conversations/seed-1". A literal byte
 * other than '/' may still be percent-encoded, as RFC 3986 makes them equivalent. Returns
 * the raw bytes matched (where a MATCH_PREFIX parameter starts), 0 for no match. */
static size_t path_matches(const struct route *r, const char *raw, size_t raw_len) {
  size_t n = url_match_prefix(raw, raw_len, r->path);
  if (r->match == MATCH_EXACT && n != raw_len) return 0;
  if (n && r->match == MATCH_PARAM_SUFFIX) {
    /* The suffix is matched as written; the parameter between is not empty and holds no
     * raw '/' (a '/' in an id is written %2F). */
    size_t slen = strlen(r->suffix);
    if (raw_len < n + 1 + slen || memcmp(raw + raw_len - slen, r->suffix, slen) != 0 ||
        memchr(raw + n, '/', raw_len - slen - n))
      return 0;
  }
  return n;
}

static bool method_matches(const char *route_method, const char *method) {
  return strcmp(route_method, method) == 0 ||
         (strcmp(route_method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

const struct route *route_find(const char *raw_path, const char *method, size_t *param_at,
                               char *allow, size_t cap, bool *path_known) {
  *path_known = false;
  allow[0] = '\0';
  size_t pos = 0, raw_len = strlen(raw_path);
  for (size_t i = 0; i < api_route_count; i++) {
    const struct route *r = &api_routes[i];
    size_t matched = path_matches(r, raw_path, raw_len);
    if (!matched) continue;
    *path_known = true;
    if (method_matches(r->method, method)) {
      *param_at = matched;
      return r;
    }
    /* Several routes may match one path (an id route and its /audio): each method once. */
    bool listed = false;
    for (size_t j = 0; j < i && !listed; j++)
      listed = strcmp(api_routes[j].method, r->method) == 0 &&
               path_matches(&api_routes[j], raw_path, raw_len);
    if (listed) continue;
    pos += (size_t)snprintf(allow + pos, cap - pos, "%s%s", r->method,
                            strcmp(r->method, "GET") == 0 ? ", HEAD, " : ", ");
  }
  if (*path_known) snprintf(allow + pos, cap - pos, "OPTIONS");
  return NULL;
}

const struct route *route_of_path(const char *raw_path) {
  size_t raw_len = strlen(raw_path);
  for (size_t i = 0; i < api_route_count; i++)
    if (path_matches(&api_routes[i], raw_path, raw_len)) return &api_routes[i];
  return NULL;
}

/* The parameter is named after the collection it is in, as the API reference names it:
 * "/api/v1/conversations/" + "/audio" -> "/api/v1/conversations/{conversation_id}/audio". */
void route_pattern(const struct route *r, char *out, size_t cap) {
  if (r->match == MATCH_EXACT) {
    snprintf(out, cap, "%s", r->path);
    return;
  }
  size_t len = strlen(r->path);
  size_t end = len && r->path[len - 1] == '/' ? len - 1 : len, start = end;
  while (start > 0 && r->path[start - 1] != '/') start--;
  size_t word = end - start;
  if (word > 1 && r->path[end - 1] == 's') word--; /* conversations -> conversation */
  snprintf(out, cap, "%s{%.*s_id}%s", r->path, (int)word, r->path + start,
           r->match == MATCH_PARAM_SUFFIX ? r->suffix : "");
}

void route_reply_options(struct http_request *req, const char *allow) {
  const char *origin = http_request_header(req, "Origin");
  http_reply_header(req, "Allow", allow);
  if (cors_allowed(&req->server->cors, origin) &&
      http_request_header(req, "Access-Control-Request-Method")) {
    http_reply_header(req, "Access-Control-Allow-Methods", allow);
    http_reply_header(req, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
    http_reply_header(req, "Access-Control-Max-Age", CORS_MAX_AGE);
  }
  http_reply_static(req, 204, NULL, "", 0);
}
