/* Routing: the path and method of a request against the api layer's one route table
 * (api_routes), and the answer to OPTIONS. Knows no endpoint. */
#include <stdio.h>
#include <string.h>

#include "http/server_internal.h"

static bool path_matches(const struct route *r, const char *path) {
  if (r->match == MATCH_EXACT) return strcmp(r->path, path) == 0;
  return strncmp(r->path, path, strlen(r->path)) == 0;
}

static bool method_matches(const char *route_method, const char *method) {
  return strcmp(route_method, method) == 0 ||
         (strcmp(route_method, "GET") == 0 && strcmp(method, "HEAD") == 0);
}

const struct route *route_find(const char *path, const char *method, char *allow, size_t cap,
                               bool *path_known) {
  *path_known = false;
  allow[0] = '\0';
  size_t pos = 0;
  for (size_t i = 0; i < api_route_count; i++) {
    const struct route *r = &api_routes[i];
    if (!path_matches(r, path)) continue;
    *path_known = true;
    if (method_matches(r->method, method)) return r;
    pos += (size_t)snprintf(allow + pos, cap - pos, "%s%s", r->method,
                            strcmp(r->method, "GET") == 0 ? ", HEAD, " : ", ");
  }
  if (*path_known) snprintf(allow + pos, cap - pos, "OPTIONS");
  return NULL;
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
