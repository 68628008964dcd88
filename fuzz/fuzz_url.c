/* Request-target decoding (http/url.c): percent-decoding of paths, form decoding and parsing
 * of query strings, route matching on the raw path. Properties: a decoded value is never
 * longer than its source, is NUL-terminated, holds no NUL and is valid UTF-8 (checked with
 * core/utf8, an independent implementation that must agree with url_utf8_valid); re-encoding
 * it and decoding again gives it back; a parsed query has unique names, at most
 * URL_QUERY_PARAMS_MAX of them, each found by url_query_get; a raw prefix matching a route
 * decodes to exactly the route's path and never contains an encoded '/'. */
#include <string.h>

#include "core/utf8.h"
#include "fuzz.h"
#include "http/url.h"

static const char *const routes[] = {"/api/v1/conversations", "/api/v1/health", "/docs", "/"};

static void check_value(const char *v, size_t len) {
  FUZZ_CHECK(v[len] == '\0');
  FUZZ_CHECK(memchr(v, '\0', len) == NULL);
  FUZZ_CHECK(utf8_valid(v, len));
}

static void check_decode(const char *src, size_t len, bool form) {
  char *dst = malloc(len + 1);
  if (!dst) return;
  size_t dlen = 0;
  if (url_decode(src, len, form, dst, &dlen) == URL_OK) {
    FUZZ_CHECK(dlen <= len);
    check_value(dst, dlen);
    /* percent-encode every byte, decode again: the same value */
    char *enc = malloc(dlen * 3 + 1), *back = malloc(dlen * 3 + 1);
    if (enc && back) {
      static const char hex[] = "0123456789ABCDEF";
      for (size_t i = 0; i < dlen; i++) {
        enc[3 * i] = '%';
        enc[3 * i + 1] = hex[(unsigned char)dst[i] >> 4];
        enc[3 * i + 2] = hex[(unsigned char)dst[i] & 15];
      }
      size_t blen = 0;
      FUZZ_CHECK(url_decode(enc, dlen * 3, form, back, &blen) == URL_OK);
      FUZZ_CHECK(blen == dlen && memcmp(back, dst, dlen) == 0);
    }
    free(enc);
    free(back);
  }
  free(dst);
}

static void check_query(const char *src, size_t len) {
  struct url_query q;
  memset(&q, 0, sizeof q);
  enum url_status st = url_query_parse(src, len, &q);
  FUZZ_CHECK(url_status_text(st) != NULL);
  if (st == URL_OK) {
    FUZZ_CHECK(q.count <= URL_QUERY_PARAMS_MAX);
    for (size_t i = 0; i < q.count; i++) {
      const struct url_param *p = &q.params[i];
      check_value(p->name, strlen(p->name));
      if (p->value) check_value(p->value, strlen(p->value));
      for (size_t j = 0; j < i; j++) FUZZ_CHECK(strcmp(q.params[j].name, p->name) != 0);
      FUZZ_CHECK(url_query_get(&q, p->name) == p->value);
    }
  } else if (q.bad_name) {
    check_value(q.bad_name, strlen(q.bad_name));
  }
  url_query_free(&q);
}

static void check_routes(const char *src, size_t len) {
  for (size_t r = 0; r < sizeof routes / sizeof routes[0]; r++) {
    size_t n = url_match_prefix(src, len, routes[r]);
    FUZZ_CHECK(n <= len);
    if (n == 0) continue;
    char *dst = malloc(n + 1);
    if (!dst) return;
    size_t dlen = 0;
    FUZZ_CHECK(url_decode(src, n, false, dst, &dlen) == URL_OK);
    FUZZ_CHECK(dlen == strlen(routes[r]) && memcmp(dst, routes[r], dlen) == 0);
    /* every '/' of the route is a real one in the raw path */
    size_t slashes = 0;
    for (const char *l = routes[r]; *l; l++) slashes += *l == '/';
    size_t raw_slashes = 0;
    for (size_t i = 0; i < n; i++) raw_slashes += src[i] == '/';
    FUZZ_CHECK(raw_slashes == slashes);
    free(dst);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *src = malloc(size ? size : 1); /* exact size: ASan sees any read past the end */
  if (!src) return 0;
  memcpy(src, data, size);
  FUZZ_CHECK(url_utf8_valid(src, size) == utf8_valid(src, size));
  check_decode(src, size, false);
  check_decode(src, size, true);
  check_query(src, size);
  check_routes(src, size);
  free(src);
  return 0;
}
