/* Percent- and form-decoding of the request target; see url.h. */
#include "http/url.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(URL_QUERY_PARAMS_MAX == 100, "url_status_text names the limit");

const char *url_status_text(enum url_status s) {
  switch (s) {
    case URL_OK:
      return "";
    case URL_BAD_ESCAPE:
      return "has a '%' not followed by two hexadecimal digits";
    case URL_NUL:
      return "contains a NUL byte (%00)";
    case URL_BAD_UTF8:
      return "is not valid UTF-8 once decoded";
    case URL_TOO_MANY:
      return "has more than 100 parameters";
    case URL_DUPLICATE:
      return "is given more than once";
    case URL_NO_MEMORY:
      return "could not be decoded (out of memory)";
  }
  return "is invalid";
}

static int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* The byte a "%XY" at s (len bytes left) stands for, or -1 when it is not one. */
static int escaped_byte(const char *s, size_t len) {
  if (len < 3 || s[0] != '%') return -1;
  int hi = hex_value((unsigned char)s[1]), lo = hex_value((unsigned char)s[2]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

bool url_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    unsigned c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false; /* a continuation byte, an overlong lead (C0, C1) or beyond F4 */
    }
    if (len - i <= n) return false;
    for (size_t k = 1; k <= n; k++) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

enum url_status url_decode(const char *src, size_t len, bool form, char *dst, size_t *dst_len) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    char c = src[i];
    if (c == '%') {
      int b = escaped_byte(src + i, len - i);
      if (b < 0) return URL_BAD_ESCAPE;
      c = (char)b;
      i += 2;
    } else if (c == '+' && form) {
      c = ' ';
    }
    if (c == '\0') return URL_NUL; /* a raw one too: it would cut the string */
    dst[o++] = c;
  }
  dst[o] = '\0';
  *dst_len = o;
  return url_utf8_valid(dst, o) ? URL_OK : URL_BAD_UTF8;
}

size_t url_match_prefix(const char *raw, size_t raw_len, const char *literal) {
  size_t i = 0;
  for (const char *l = literal; *l; l++) {
    if (i >= raw_len) return 0;
    if (raw[i] == *l) {
      i++;
    } else if (*l != '/' && escaped_byte(raw + i, raw_len - i) == (unsigned char)*l) {
      i += 3;
    } else {
      return 0;
    }
  }
  return i;
}

/* The number of non-empty '&'-separated parts, counting at most limit + 1. */
static size_t count_parts(const char *raw, size_t len, size_t limit) {
  size_t n = 0, start = 0;
  for (size_t i = 0; i <= len && n <= limit; i++) {
    if (i == len || raw[i] == '&') {
      if (i > start) n++;
      start = i + 1;
    }
  }
  return n;
}

enum url_status url_query_parse(const char *raw, size_t len, struct url_query *q) {
  memset(q, 0, sizeof *q);
  size_t parts = count_parts(raw, len, URL_QUERY_PARAMS_MAX);
  if (parts > URL_QUERY_PARAMS_MAX) return URL_TOO_MANY;
  if (parts == 0) return URL_OK;
  /* Each part decodes to at most its own length, plus a terminator for name and value. */
  q->buf = malloc(len + 2 * parts);
  q->params = calloc(parts, sizeof *q->params);
  if (!q->buf || !q->params) return URL_NO_MEMORY;
  char *out = q->buf;
  size_t start = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && raw[i] != '&') continue;
    size_t part_len = i - start;
    const char *part = raw + start;
    start = i + 1;
    if (part_len == 0) continue;
    const char *eq = memchr(part, '=', part_len);
    size_t name_len = eq ? (size_t)(eq - part) : part_len;
    struct url_param *p = &q->params[q->count];
    size_t n;
    enum url_status st = url_decode(part, name_len, true, out, &n);
    if (st != URL_OK) return st;
    p->name = out;
    out += n + 1;
    for (size_t k = 0; k < q->count; k++) {
      if (strcmp(q->params[k].name, p->name) == 0) {
        q->bad_name = p->name;
        return URL_DUPLICATE;
      }
    }
    if (eq) {
      st = url_decode(eq + 1, part_len - name_len - 1, true, out, &n);
      if (st != URL_OK) {
        q->bad_name = p->name;
        return st;
      }
      p->value = out;
      out += n + 1;
    }
    q->count++;
  }
  return URL_OK;
}

const char *url_query_get(const struct url_query *q, const char *name) {
  for (size_t i = 0; i < q->count; i++)
    if (strcmp(q->params[i].name, name) == 0) return q->params[i].value;
  return NULL;
}

void url_query_free(struct url_query *q) {
  free(q->buf);
  free(q->params);
  memset(q, 0, sizeof *q);
}
