/* The one-pass JSON scanner (see json_scan.h): recursive descent over the bytes, as jansson's
 * lexer reads them, without building anything. */
#include "model/json_scan.h"

#include <stdint.h>
#include <string.h>

#include "core/bytescan.h"
#include "core/utf8.h"

void json_scan_ws(struct json_scan *sc) {
  while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r'))
    sc->p++;
}

static int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int hex4(const char *p) {
  int cp = 0;
  for (int i = 0; i < 4; i++) {
    int h = hex(p[i]);
    if (h < 0) return -1;
    cp = cp * 16 + h;
  }
  return cp;
}

/* A string starting at the opening quote. Raw control bytes (NUL included) and invalid UTF-8
 * are JSON errors; escapes are checked as jansson reads them (a surrogate half only in a
 * well-formed pair). */
static bool string(struct json_scan *sc, struct json_scan_val *v) {
  sc->p++; /* the quote */
  v->kind = JSON_SCAN_STRING;
  v->s = sc->p;
  v->escaped = false;
  const unsigned char *p = (const unsigned char *)sc->p, *end = (const unsigned char *)sc->end;
  for (;;) {
    p = bytescan_json_special(p, end);
    if (p >= end) return false;
    unsigned char c = *p;
    if (c == '"') {
      v->n = (size_t)((const char *)p - v->s);
      sc->p = (const char *)p + 1;
      return true;
    }
    if (c < 0x20) return false;
    if (c >= 0x80) {
      size_t n = utf8_sequence_length((const char *)p, (size_t)(end - p));
      if (n == 0) return false;
      p += n;
      continue;
    }
    /* a backslash */
    v->escaped = true;
    if (end - p < 2) return false;
    char e = (char)p[1];
    if (e == 'u') {
      if (end - p < 6) return false;
      int cp = hex4((const char *)p + 2);
      if (cp < 0) return false;
      if (cp >= 0xdc00 && cp <= 0xdfff) return false; /* a low half alone: jansson refuses it */
      if (cp >= 0xd800 && cp <= 0xdbff) {
        /* a high half only with its low half right after (what JSON encoders write for an emoji,
         * e.g. Python's json.dumps): jansson decodes the pair, and refuses anything else */
        if (end - p < 12 || p[6] != '\\' || p[7] != 'u') return false;
        int lo = hex4((const char *)p + 8);
        if (lo < 0xdc00 || lo > 0xdfff) return false;
        p += 12;
      } else {
        p += 6;
      }
    } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' ||
               e == 't') {
      p += 2;
    } else {
      return false;
    }
  }
}

static size_t digits(struct json_scan *sc) {
  const char *start = sc->p;
  while (sc->p < sc->end && *sc->p >= '0' && *sc->p <= '9') sc->p++;
  return (size_t)(sc->p - start);
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, within the bounds said in json_scan.h. */
static bool number(struct json_scan *sc, struct json_scan_val *v) {
  v->s = sc->p;
  if (*sc->p == '-') sc->p++;
  if (sc->p >= sc->end || *sc->p < '0' || *sc->p > '9') return false;
  size_t int_digits = digits(sc);
  if (int_digits > 1 && v->s[*v->s == '-' ? 1 : 0] == '0') return false;
  bool real = false;
  if (sc->p < sc->end && *sc->p == '.') {
    sc->p++;
    if (digits(sc) == 0) return false;
    real = true;
  }
  if (sc->p < sc->end && (*sc->p == 'e' || *sc->p == 'E')) {
    sc->p++;
    if (sc->p < sc->end && (*sc->p == '+' || *sc->p == '-')) sc->p++;
    size_t exp_digits = digits(sc);
    if (exp_digits == 0 || exp_digits > 2) return false;
    real = true;
  }
  if (real ? int_digits > 200 : int_digits > 18) return false;
  v->kind = real ? JSON_SCAN_REAL : JSON_SCAN_INT;
  v->n = (size_t)(sc->p - v->s);
  return true;
}

static bool literal(struct json_scan *sc, const char *word, size_t n, enum json_scan_kind kind,
                    struct json_scan_val *v) {
  if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, word, n) != 0) return false;
  v->kind = kind;
  v->s = sc->p;
  v->n = n;
  sc->p += n;
  return true;
}

/* A key's bit in an object's 64-bit summary of the keys seen: two keys with different bits
 * differ, so only keys sharing a bit are compared byte by byte. */
static uint64_t key_bit(const char *s, size_t n) {
  unsigned h = (unsigned)n * 31u;
  if (n) h += (unsigned char)s[0] * 7u + (unsigned char)s[n - 1] * 13u + (unsigned char)s[n / 2];
  return (uint64_t)1 << (h & 63);
}

bool json_scan_object(struct json_scan *sc, int depth, const struct json_scan_member *want,
                      size_t nwant) {
  if (depth > JSON_SCAN_DEPTH_MAX) return false;
  struct {
    const char *s;
    size_t n;
    uint64_t bit;
  } keys[JSON_SCAN_KEYS_MAX];
  size_t nkeys = 0,
         keys_max = sc->keys_max < JSON_SCAN_KEYS_MAX ? sc->keys_max : JSON_SCAN_KEYS_MAX;
  uint64_t seen = 0;
  sc->p++; /* '{' */
  json_scan_ws(sc);
  if (sc->p < sc->end && *sc->p == '}') {
    sc->p++;
    return true;
  }
  for (;;) {
    json_scan_ws(sc);
    if (sc->p >= sc->end || *sc->p != '"') return false;
    struct json_scan_val k;
    if (!string(sc, &k) || k.escaped || nkeys == keys_max) return false;
    uint64_t bit = key_bit(k.s, k.n);
    if (seen & bit)
      for (size_t i = 0; i < nkeys; i++)
        if (keys[i].bit == bit && keys[i].n == k.n && memcmp(keys[i].s, k.s, k.n) == 0)
          return false;
    seen |= bit;
    keys[nkeys].s = k.s;
    keys[nkeys].n = k.n;
    keys[nkeys].bit = bit;
    nkeys++;
    json_scan_ws(sc);
    if (sc->p >= sc->end || *sc->p != ':') return false;
    sc->p++;
    json_scan_ws(sc);
    if (sc->p >= sc->end) return false;
    const struct json_scan_member *m = NULL;
    char first = k.n ? k.s[0] : '\0';
    for (size_t i = 0; i < nwant && !m; i++)
      if (want[i].name[0] == first && strncmp(want[i].name, k.s, k.n) == 0 &&
          want[i].name[k.n] == '\0')
        m = &want[i];
    if (m && m->fn) {
      if (!m->fn(sc, depth + 1, m->ctx)) return false;
    } else {
      struct json_scan_val tmp;
      struct json_scan_val *v = m ? m->slot : &tmp;
      if (!json_scan_value(sc, depth + 1, v)) return false;
      v->seen = true;
    }
    json_scan_ws(sc);
    if (sc->p >= sc->end) return false;
    if (*sc->p == '}') {
      sc->p++;
      return true;
    }
    if (*sc->p != ',') return false;
    sc->p++;
  }
}

bool json_scan_array(struct json_scan *sc, int depth, bool (*fn)(struct json_scan *, int, void *),
                     void *ctx, size_t *count) {
  if (depth > JSON_SCAN_DEPTH_MAX) return false;
  *count = 0;
  sc->p++; /* '[' */
  json_scan_ws(sc);
  if (sc->p < sc->end && *sc->p == ']') {
    sc->p++;
    return true;
  }
  for (;;) {
    json_scan_ws(sc);
    if (sc->p >= sc->end) return false;
    (*count)++;
    if (fn) {
      if (!fn(sc, depth + 1, ctx)) return false;
    } else {
      struct json_scan_val tmp;
      if (!json_scan_value(sc, depth + 1, &tmp)) return false;
    }
    json_scan_ws(sc);
    if (sc->p >= sc->end) return false;
    if (*sc->p == ']') {
      sc->p++;
      return true;
    }
    if (*sc->p != ',') return false;
    sc->p++;
  }
}

bool json_scan_value(struct json_scan *sc, int depth, struct json_scan_val *v) {
  if (sc->p >= sc->end) return false;
  size_t count;
  v->escaped = false;
  v->s = sc->p;
  switch (*sc->p) {
    case '{':
      v->kind = JSON_SCAN_OBJECT;
      if (!json_scan_object(sc, depth, NULL, 0)) return false;
      v->n = (size_t)(sc->p - v->s);
      return true;
    case '[':
      v->kind = JSON_SCAN_ARRAY;
      if (!json_scan_array(sc, depth, NULL, NULL, &count)) return false;
      v->n = (size_t)(sc->p - v->s);
      return true;
    case '"':
      return string(sc, v);
    case 't':
      return literal(sc, "true", 4, JSON_SCAN_TRUE, v);
    case 'f':
      return literal(sc, "false", 5, JSON_SCAN_FALSE, v);
    case 'n':
      return literal(sc, "null", 4, JSON_SCAN_NULL, v);
    default:
      return number(sc, v);
  }
}

/* cp as UTF-8 into out; the number of bytes. */
static size_t put_utf8(unsigned cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xc0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | cp >> 12);
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | cp >> 18);
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

size_t json_scan_unescape(const char *raw, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    const char *bs = memchr(raw + i, '\\', n - i);
    size_t run = bs ? (size_t)(bs - (raw + i)) : n - i;
    memcpy(out + o, raw + i, run);
    o += run;
    i += run;
    if (i >= n) break;
    char e = raw[i + 1];
    if (e == 'u') {
      unsigned cp = (unsigned)hex4(raw + i + 2);
      i += 6;
      if (cp >= 0xd800 && cp <= 0xdbff) { /* the scanner saw its low half right after */
        unsigned lo = (unsigned)hex4(raw + i + 2);
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        i += 6;
      }
      o += put_utf8(cp, out + o);
      continue;
    }
    char c = e;
    switch (e) {
      case 'b':
        c = '\b';
        break;
      case 'f':
        c = '\f';
        break;
      case 'n':
        c = '\n';
        break;
      case 'r':
        c = '\r';
        break;
      case 't':
        c = '\t';
        break;
      default: /* '"', '\\', '/' */
        break;
    }
    out[o++] = c;
    i += 2;
  }
  return o;
}
