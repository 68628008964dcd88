/* Decoding what a client wrote in the request target: percent-decoding of the path (RFC 3986),
 * form decoding of query names and values ('+' is a space, as HTML forms and libmicrohttpd
 * do), and matching a route's literal path against the raw path. Pure functions: bytes in,
 * bytes out or an error; nothing here knows libmicrohttpd or an endpoint. Every decoded value
 * is valid UTF-8 without NUL, so it can be used as a C string, logged and stored as is. */
#ifndef GSR_URL_H
#define GSR_URL_H

#include <stdbool.h>
#include <stddef.h>

/* At most this many query parameters per request: far more than any endpoint reads. */
#define URL_QUERY_PARAMS_MAX 100

enum url_status {
  URL_OK,
  URL_BAD_ESCAPE, /* '%' not followed by two hex digits */
  URL_NUL,        /* %00 */
  URL_BAD_UTF8,   /* the decoded bytes are not valid UTF-8 */
  URL_TOO_MANY,   /* more than URL_QUERY_PARAMS_MAX query parameters */
  URL_DUPLICATE,  /* a query parameter named twice */
  URL_NO_MEMORY,
};

/* What is wrong, for an error message ("contains ..."); "" for URL_OK. */
const char *url_status_text(enum url_status s);

/* Decodes len bytes of src into dst, which has room for len + 1 bytes (decoding never
 * lengthens), and NUL-terminates it; *dst_len is the decoded length. With form, '+' decodes
 * to a space (query strings); without, it stays '+' (paths). On error dst is unspecified. */
__attribute__((warn_unused_result)) enum url_status url_decode(const char *src, size_t len,
                                                               bool form, char *dst,
                                                               size_t *dst_len);

/* True when the len bytes at s are valid UTF-8 (shortest forms, no surrogates, at most
 * U+10FFFF). */
bool url_utf8_valid(const char *s, size_t len);

/* How many bytes at the start of the raw (undecoded) path spell literal, a route's path: any
 * byte of literal other than '/' may appear percent-encoded ("/api/v1/h%65alth" spells
 * "/api/v1/health"), but a '/' must be a real one, so "%2F" never separates segments. 0 when
 * raw does not start with literal (literal is never empty). */
size_t url_match_prefix(const char *raw, size_t raw_len, const char *literal);

struct url_param {
  const char *name;
  const char *value; /* NULL for a name without '=' */
};

/* A decoded query string. */
struct url_query {
  char *buf; /* owned: the decoded names and values */
  struct url_param *params;
  size_t count;
  /* on error: the decoded name of the parameter at fault, when that name itself decoded
   * (else NULL); it points into buf. */
  const char *bad_name;
};

/* Parses the raw query (the text after '?', len bytes) into q: parameters separated by '&'
 * (empty ones skipped), each "name" or "name=value", both form-decoded. A duplicated name,
 * more than URL_QUERY_PARAMS_MAX parameters or a bad encoding is an error. q must be freed
 * with url_query_free whatever the result. */
__attribute__((warn_unused_result)) enum url_status url_query_parse(const char *raw, size_t len,
                                                                    struct url_query *q);
/* The value of name, or NULL when absent or given without '='. */
const char *url_query_get(const struct url_query *q, const char *name);
void url_query_free(struct url_query *q);

#endif
