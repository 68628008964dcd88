/* Connection URL syntax, shared by the configuration check and the adapters. */
#include "core/dsn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool dsn_is_postgres(const char *url) {
  return strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0;
}

const char *dsn_sqlite_path(const char *url) {
  if (strncmp(url, "sqlite:", 7) != 0) return NULL;
  const char *p = url + 7;
  if (strncmp(p, "//", 2) == 0) p += 2;
  return p;
}

/* The userinfo of a URL, p up to at: "user:password" (either may be empty), or without a colon
 * one part, a password for Redis and a token for NATS. */
struct userinfo {
  const char *pass; /* after the colon, or the whole part without one */
  size_t ulen, plen;
  bool colon;
};

static struct userinfo userinfo_of(const char *p, const char *at) {
  const char *colon = memchr(p, ':', (size_t)(at - p));
  struct userinfo u = {.colon = colon != NULL};
  u.ulen = colon ? (size_t)(colon - p) : 0;
  u.plen = colon ? (size_t)(at - colon - 1) : (size_t)(at - p);
  u.pass = colon ? colon + 1 : p;
  return u;
}

bool dsn_parse_redis(const char *var, const char *url, struct dsn_redis *out, char *err,
                     size_t errlen) {
  memset(out, 0, sizeof *out);
  const char *p = url;
  if (strncmp(p, "redis://", 8) != 0) {
    snprintf(err, errlen, "%s: must look like redis://[:password@]host[:port][/db]", var);
    return false;
  }
  p += 8;
  const char *at = strrchr(p, '@');
  if (at) {
    struct userinfo u = userinfo_of(p, at);
    if (u.ulen >= sizeof out->user || u.plen >= sizeof out->password) {
      snprintf(err, errlen, "%s: user or password too long", var);
      return false;
    }
    memcpy(out->user, p, u.ulen);
    memcpy(out->password, u.pass, u.plen);
    p = at + 1;
  }
  size_t hlen = strcspn(p, ":/");
  if (hlen == 0 || hlen >= sizeof out->host) {
    snprintf(err, errlen, "%s: missing or too long host", var);
    return false;
  }
  memcpy(out->host, p, hlen);
  p += hlen;
  out->port = 6379;
  if (*p == ':') {
    char *end;
    long port = strtol(p + 1, &end, 10);
    if (end == p + 1 || port < 1 || port > 65535 || (*end && *end != '/')) {
      snprintf(err, errlen, "%s: bad port", var);
      return false;
    }
    out->port = (int)port;
    p = end;
  }
  if (*p == '/' && p[1]) {
    char *end;
    long db = strtol(p + 1, &end, 10);
    if (*end || end == p + 1 || db < 0 || db > 1000) {
      snprintf(err, errlen, "%s: bad database number", var);
      return false;
    }
    out->db = (int)db;
  }
  return true;
}

bool dsn_parse_nats(const char *url, struct dsn_nats *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (strncmp(url, "nats://", 7) != 0) goto syntax;
  const char *p = url + 7;
  const char *at = strrchr(p, '@');
  if (at) {
    struct userinfo u = userinfo_of(p, at);
    if (u.ulen >= sizeof out->user || u.plen >= sizeof out->password || (!u.colon && !u.plen)) {
      snprintf(err, errlen, "QUEUE_URL: user, password or token too long or empty");
      goto fail;
    }
    memcpy(out->user, p, u.ulen);
    memcpy(u.colon ? out->password : out->token, u.pass, u.plen);
    p = at + 1;
  }
  size_t hlen = strcspn(p, ":/?");
  if (hlen == 0 || hlen >= sizeof out->host) {
    snprintf(err, errlen, "QUEUE_URL: missing or too long host");
    goto fail;
  }
  memcpy(out->host, p, hlen);
  long port = 4222;
  const char *rest = p + hlen;
  if (*rest == ':') {
    char *end;
    port = strtol(rest + 1, &end, 10);
    if (end == rest + 1 || port < 1 || port > 65535) {
      snprintf(err, errlen, "QUEUE_URL: bad port");
      goto fail;
    }
    rest = end;
  }
  if (*rest && strcmp(rest, "/") != 0) goto syntax;
  out->port = (int)port;
  return true;
syntax:
  snprintf(err, errlen, "QUEUE_URL: must look like nats://[user:password@]host[:port]");
fail:
  memset(out, 0, sizeof *out); /* credentials */
  return false;
}
