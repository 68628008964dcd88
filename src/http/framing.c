/* Request framing (RFC 9112 §6) and NUL bytes in the method and header lines: what
 * libmicrohttpd 0.9.75 accepts but a request smuggler or a truncation attack relies on.
 *
 * Framing. MHD frames a body by the first Transfer-Encoding line when there is one (chunked
 * only if its value is exactly "chunked"; any other value makes it read until the client
 * closes), else by the first Content-Length line, and ignores the rest. A proxy in front may
 * pick differently, so every ambiguous case is refused, answered at once, and the connection
 * closed: Transfer-Encoding with Content-Length, Content-Length lines that disagree,
 * Transfer-Encoding in HTTP/1.0 (400), and any coding but one "chunked" (501 when we do not
 * implement it, 400 when it is "chunked" written oddly or twice). A header name followed by
 * whitespace ("Content-Length : 5") is a 400 too (RFC 9112 §5.1): MHD takes it for another
 * header and frames by what remains, a lenient proxy trims it and frames by it.
 *
 * Field syntax. MHD keeps a header whose name is not a token ("Host : x", a control byte)
 * under that odd name, keeps a bare CR inside a value, and serves the first of several Host
 * lines: a proxy in front may read each differently (a CR as a line end, the last Host), so
 * each is a 400 (RFC 9110 §5.1 and §5.5, RFC 9112 §3.2), after the framing checks.
 *
 * NUL bytes. MHD measures header names and values with strlen, so "Bearer KEY\0junk" reaches
 * us as "Bearer KEY" and MHD_get_connection_values_n reports the shortened length. The raw
 * bytes are still in MHD's read buffer, where 0.9.75 leaves the request line and the header
 * lines in order, each value followed only by its line end (CR LF or LF), which MHD has
 * overwritten with NULs, and the blank line. So after each value there must be at most two
 * NULs and then the next header name (at most four before the end of the headers): anything
 * else there is what followed a NUL inside the value. Likewise the method must be followed by
 * the NUL MHD wrote over the space and then only spaces up to the URL. One case cannot be
 * told apart: a single NUL at the very end of a value on a line ended by a bare LF looks like
 * a CR LF. The layout is MHD's own, so the check runs only with the version whose parser was
 * read (MHD_get_version), and a header outside that layout (a folded line) is refused. */
#include "http/framing.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#define LAYOUT_VERSION "0.9.75"

struct scan {
  /* the raw request line and headers in MHD's read buffer; 0 when not known */
  uintptr_t start, end;
  uintptr_t prev_end; /* end of the request line or of the previous header value */
  bool nul, odd_layout;
  bool name_ws; /* whitespace in a header name: "Content-Length : 5" */
  unsigned n_cl, n_te;
  const char *cl;
  size_t cl_len;
  bool cl_differ;
  /* the Transfer-Encoding codings, over every line */
  bool te_unknown, te_bad;
  unsigned n_chunked;
  /* field syntax (RFC 9110 §5.1, §5.5; RFC 9112 §3.2) */
  bool name_not_token, value_cr;
  unsigned n_host, n_auth;
};

/* Bytes [from, to) must be NULs only, at most max of them. */
static bool only_line_end(uintptr_t from, uintptr_t to, size_t max) {
  if (to < from || to - from > max) return false;
  for (const char *p = (const char *)from; p < (const char *)to; p++)
    if (*p != '\0') return false;
  return true;
}

static void check_layout(struct scan *s, const char *key, size_t key_size, const char *value,
                         size_t value_size) {
  uintptr_t k = (uintptr_t)key, v = (uintptr_t)value;
  if (k < s->prev_end || k + key_size > s->end || v < k + key_size || v + value_size > s->end) {
    s->odd_layout = true;
    return;
  }
  if (!only_line_end(s->prev_end, k, 2)) s->nul = true;
  s->prev_end = v + value_size;
}

static bool is_ows(char c) { return c == ' ' || c == '\t'; }

static bool is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* One Transfer-Encoding line: a comma-separated list of codings. */
static void scan_codings(struct scan *s, const char *value, size_t len) {
  size_t i = 0;
  while (i <= len) {
    size_t j = i;
    while (j < len && value[j] != ',') j++;
    size_t a = i, b = j;
    while (a < b && is_ows(value[a])) a++;
    while (b > a && is_ows(value[b - 1])) b--;
    if (b == a)
      s->te_bad = true; /* an empty element */
    else if (b - a == 7 && strncasecmp(value + a, "chunked", 7) == 0)
      s->n_chunked++;
    else
      s->te_unknown = true;
    i = j + 1;
  }
}

static enum MHD_Result scan_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   size_t key_size, const char *value, size_t value_size) {
  (void)kind;
  struct scan *s = cls;
  if (s->start && !s->odd_layout) check_layout(s, key, key_size, value, value_size);
  for (size_t i = 0; i < key_size; i++)
    if (is_ows(key[i])) s->name_ws = true;
  if (key_size == 14 && strncasecmp(key, "Content-Length", 14) == 0) {
    if (s->n_cl++ == 0) {
      s->cl = value;
      s->cl_len = value_size;
    } else if (value_size != s->cl_len || memcmp(value, s->cl, value_size) != 0) {
      s->cl_differ = true;
    }
  } else if (key_size == 17 && strncasecmp(key, "Transfer-Encoding", 17) == 0) {
    s->n_te++;
    scan_codings(s, value, value_size);
  } else if (key_size == 4 && strncasecmp(key, "Host", 4) == 0) {
    s->n_host++;
  } else if (key_size == 13 && strncasecmp(key, "Authorization", 13) == 0) {
    s->n_auth++;
  }
  if (key_size == 0) s->name_not_token = true;
  for (size_t i = 0; i < key_size; i++)
    if (!is_tchar((unsigned char)key[i])) s->name_not_token = true;
  if (memchr(value, '\r', value_size)) s->value_cr = true;
  return MHD_YES;
}

/* The method ends at the NUL MHD wrote over the space; only spaces may follow up to the URL. */
static bool method_has_nul(const char *method, const char *url, const struct scan *s) {
  uintptr_t m = (uintptr_t)method, u = (uintptr_t)url;
  if (m != s->start || u <= m || u > s->end) return false; /* no URL in the buffer */
  for (const char *p = method + strlen(method) + 1; p < url; p++)
    if (*p != ' ') return true;
  return false;
}

static bool refuse(struct framing_problem *p, enum api_error e, const char *message) {
  p->error = e;
  p->message = message;
  return false;
}

bool framing_check(struct MHD_Connection *conn, const char *method, const char *url,
                   const char *version, struct framing_problem *problem) {
  struct scan s = {0};
  const union MHD_ConnectionInfo *hs =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
  if (hs && strcmp(MHD_get_version(), LAYOUT_VERSION) == 0) {
    s.start = (uintptr_t)method;
    s.end = s.start + hs->header_size;
    s.prev_end = (uintptr_t)version + strlen(version);
    if (s.prev_end < s.start || s.prev_end > s.end) s.start = 0; /* not where expected */
  }
  MHD_get_connection_values_n(conn, MHD_HEADER_KIND, scan_header, &s);
  if (s.start) {
    if (s.odd_layout)
      return refuse(problem, API_ERR_BAD_REQUEST, "Malformed header line (folded or garbled)");
    if (method_has_nul(method, url, &s))
      return refuse(problem, API_ERR_BAD_REQUEST, "NUL byte in the request method");
    if (s.nul || !only_line_end(s.prev_end, s.end, 4))
      return refuse(problem, API_ERR_BAD_REQUEST, "NUL byte in a header");
  }
  if (s.name_ws) return refuse(problem, API_ERR_BAD_REQUEST, "Whitespace in a header name");
  if (s.n_te > 0) {
    if (strcmp(version, "HTTP/1.0") == 0)
      return refuse(problem, API_ERR_BAD_REQUEST, "Transfer-Encoding is not allowed in HTTP/1.0");
    if (s.n_cl > 0)
      return refuse(problem, API_ERR_BAD_REQUEST,
                    "Content-Length and Transfer-Encoding must not be sent together");
    if (s.te_unknown)
      return refuse(problem, API_ERR_NOT_IMPLEMENTED,
                    "Only Transfer-Encoding: chunked is supported");
    if (s.te_bad || s.n_te > 1 || s.n_chunked != 1)
      return refuse(problem, API_ERR_BAD_REQUEST,
                    "Transfer-Encoding must name chunked exactly once");
    /* MHD itself frames the body as chunked only when the value is exactly "chunked" */
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding");
    if (!te || strcasecmp(te, "chunked") != 0)
      return refuse(problem, API_ERR_BAD_REQUEST,
                    "Transfer-Encoding must name chunked exactly once");
  }
  if (s.cl_differ)
    return refuse(problem, API_ERR_BAD_REQUEST, "Conflicting Content-Length headers");
  if (s.name_not_token)
    return refuse(problem, API_ERR_BAD_REQUEST,
                  "A header name holds a character a name cannot have (space, control, ...)");
  if (s.value_cr) return refuse(problem, API_ERR_BAD_REQUEST, "Bare CR byte in a header value");
  if (s.n_host > 1) return refuse(problem, API_ERR_BAD_REQUEST, "More than one Host header");
  /* MHD serves the first; a proxy in front may check or rewrite the last: who calls must be
   * one answer */
  if (s.n_auth > 1)
    return refuse(problem, API_ERR_BAD_REQUEST, "More than one Authorization header");
  return true;
}
