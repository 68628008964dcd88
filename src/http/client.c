/* Who the client is (its address, through trusted proxies' X-Forwarded-For) and what it may
 * do: rate-limit keys, rate limiting and bearer authentication. */
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/timeutil.h"
#include "http/server_internal.h"

static void peer_ip(struct MHD_Connection *conn, char *out, size_t cap) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  snprintf(out, cap, "unknown");
  if (!ci || !ci->client_addr) return;
  const struct sockaddr *sa = ci->client_addr;
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)cap);
  } else if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(a6))
      inet_ntop(AF_INET, &a6->s6_addr[12], out, (socklen_t)cap);
    else
      inet_ntop(AF_INET6, a6, out, (socklen_t)cap);
  }
}

static bool is_trusted(const struct http_server *s, const char *ip) {
  for (size_t i = 0; i < s->ntrusted; i++)
    if (strcmp(s->trusted[i], ip) == 0) return true;
  return false;
}

static bool is_ip_literal(const char *s) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

struct last_header {
  const char *name;
  const char *value;
};

static enum MHD_Result keep_last(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value) {
  (void)kind;
  struct last_header *h = cls;
  if (strcasecmp(key, h->name) == 0) h->value = value;
  return MHD_YES;
}

/* The client is the TCP peer, unless the peer is a trusted proxy: then it is the rightmost
 * X-Forwarded-For address that is not itself a trusted proxy. The value is read from its end
 * (what the proxies appended), whole, so no amount of client-written text in front can push
 * the real address out; with several header lines, the last one counts. */
void client_identify(struct http_request *req) {
  peer_ip(req->conn, req->client_ip, sizeof req->client_ip);
  if (!is_trusted(req->server, req->client_ip)) return;
  struct last_header h = {"X-Forwarded-For", NULL};
  MHD_get_connection_values(req->conn, MHD_HEADER_KIND, keep_last, &h);
  if (!h.value) return;
  size_t end = strlen(h.value);
  while (end > 0) {
    size_t start = end;
    while (start > 0 && h.value[start - 1] != ',') start--;
    size_t a = start, b = end;
    while (a < b && (h.value[a] == ' ' || h.value[a] == '\t')) a++;
    while (b > a && (h.value[b - 1] == ' ' || h.value[b - 1] == '\t')) b--;
    char item[INET6_ADDRSTRLEN];
    if (b - a == 0 || b - a >= sizeof item) return;
    memcpy(item, h.value + a, b - a);
    item[b - a] = '\0';
    if (!is_ip_literal(item)) return;
    if (!is_trusted(req->server, item)) {
      snprintf(req->client_ip, sizeof req->client_ip, "%s", item);
      return;
    }
    end = start > 0 ? start - 1 : 0;
  }
}

static void apply_limit(struct http_request *req, struct ratelimit *rl, const char *key) {
  req->limit_rl = rl; /* which limit refused it, for the metrics */
  /* Wall-clock time: with Redis, every instance's windows must agree on the seconds. */
  if (!ratelimit_try_local(rl, key, time_now_us() / 1000, &req->limit)) {
    offload_limit_defer(req, rl, key); /* only Redis can decide: not on this thread */
    return;
  }
  req->has_limit = true;
  if (req->limit.allowed) return;
  offload_limit_retry_after(req);
  request_set_pending(req, API_ERR_RATE_LIMITED, NULL);
}

/* The rate-limit key of a client address: IPv4 as is; IPv6 by its /64, the block one
 * customer usually holds, so that walking through its addresses does not buy new budgets. */
static void client_key(const char *ip, char *key, size_t cap) {
  unsigned char a6[16];
  char net[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET6, ip, a6) == 1) {
    memset(a6 + 8, 0, 8);
    inet_ntop(AF_INET6, a6, net, sizeof net);
    snprintf(key, cap, "ip:%s/64", net);
  } else {
    snprintf(key, cap, "ip:%s", ip);
  }
}

void client_ip_key(const struct http_request *req, char *key, size_t cap) {
  client_key(req->client_ip, key, cap);
}

void client_limit_ip(struct http_request *req) {
  char key[RATELIMIT_KEY_MAX];
  client_key(req->client_ip, key, sizeof key);
  req->limit_rl = req->server->rl_webhook;
  if (!ratelimit_try_local(req->server->rl_webhook, key, time_now_us() / 1000, &req->limit)) {
    offload_limit_defer(req, req->server->rl_webhook, key);
    return;
  }
  offload_limit_apply(req); /* a denial replaces the answer already decided */
}

/* A data key (gsr_...) on a ROUTE_BEARER route: decided now when its cache entry is fresh,
 * else left to the final call. Keys not verified yet are limited per client address. */
static void check_data_key(struct http_request *req, char *key, size_t cap) {
  const struct route *r = req->route;
  bool fresh = keys_lookup_fresh(req);
  enum key_outcome out = fresh ? keys_decide(req, r->scope) : KEY_OUT_NONE;
  if (r->limit == LIMIT_PER_KEY) {
    if (out == KEY_OUT_OK || out == KEY_OUT_FORBIDDEN) snprintf(key, cap, "gsr:%s", req->key_id);
    apply_limit(req, req->server->rl_api, key);
  }
  if (!fresh) {
    req->key_deferred = true;
    return;
  }
  keys_apply(req, out);
}

/* A ROUTE_SIGNED request without its signature header may authenticate with a Bearer key
 * instead (http_request_bearer_ok): a data key is read here, so the endpoint sees the answer. A
 * key that is not valid is left for the endpoint to refuse in its own words. */
static void check_signed_fallback(struct http_request *req) {
  req->env_key = auth_check(&req->server->auth, http_request_header(req, "Authorization"));
  if (req->env_key >= 0 || !keys_parse_header(req)) return;
  if (!keys_lookup_fresh(req)) {
    req->key_deferred = true;
    return;
  }
  enum key_outcome out = keys_decide(req, req->route->scope);
  if (out == KEY_OUT_INVALID)
    req->key_outcome = out;
  else
    keys_apply(req, out);
}

/* Rate limiting and authentication. The webhook is limited per client IP before the key is
 * checked, so key guessing is limited too; other endpoints are limited per key (per IP for
 * requests whose key is wrong). */
void client_check_access(struct http_request *req) {
  struct http_server *s = req->server;
  const struct route *r = req->route;
  char key[RATELIMIT_KEY_MAX];
  client_key(req->client_ip, key, sizeof key);
  req->limit_by_handler = r->auth == ROUTE_SIGNED && r->signature_header &&
                          http_request_header(req, r->signature_header) != NULL;
  if (r->limit == LIMIT_PER_IP && !req->limit_by_handler) apply_limit(req, s->rl_webhook, key);
  if (r->auth == ROUTE_SIGNED && !req->limit_by_handler) {
    check_signed_fallback(req);
    return;
  }
  if (r->auth != ROUTE_BEARER) return;
  int who = auth_check(&s->auth, http_request_header(req, "Authorization"));
  req->env_key = who;
  if (who < 0 && keys_parse_header(req)) {
    check_data_key(req, key, sizeof key);
    return;
  }
  if (r->limit == LIMIT_PER_KEY) {
    /* Named by a hash of the key, not its place in API_SECRET_KEY: instances whose lists
     * differ in order (during a rotation) share one window per key. */
    if (who >= 0) snprintf(key, sizeof key, "key:%s", auth_key_id(&s->auth, who));
    apply_limit(req, s->rl_api, key);
  }
  if (who < 0) {
    http_reply_header(req, "WWW-Authenticate", "Bearer");
    request_set_pending(req, API_ERR_UNAUTHORIZED, NULL);
  }
}

bool http_request_bearer_ok(const struct http_request *req) {
  return auth_check(&req->server->auth, http_request_header(req, "Authorization")) >= 0 ||
         req->key_outcome == KEY_OUT_OK || req->key_deferred;
}
