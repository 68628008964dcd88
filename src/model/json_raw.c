/* A tiny scanner over already-validated JSON: it only needs to find value boundaries. */
#include "model/json_raw.h"

#include <jansson.h>
#include <stdbool.h>
#include <string.h>

#include "core/bytescan.h"

static size_t skip_ws(const char *d, size_t len, size_t i) {
  while (i < len && (d[i] == ' ' || d[i] == '\t' || d[i] == '\n' || d[i] == '\r')) i++;
  return i;
}

/* Bytes that matter inside a container outside its strings (everything else is skipped in a
 * tight loop; inside strings bytescan_quote finds the next quote or backslash). */
static const bool CONTAINER_STOP[256] = {
    ['"'] = true, ['{'] = true, ['['] = true, ['}'] = true, [']'] = true};

/* d[i] is the opening quote; returns the index just past the closing quote. */
static size_t skip_string(const char *d, size_t len, size_t i) {
  const unsigned char *u = (const unsigned char *)d;
  for (i++; i < len; i++) {
    i = (size_t)(bytescan_quote(u + i, u + len) - u);
    if (i >= len) break;
    if (u[i] == '\\')
      i++;
    else
      return i + 1;
  }
  return len;
}

static size_t skip_value(const char *d, size_t len, size_t i) {
  if (i >= len) return len;
  if (d[i] == '"') return skip_string(d, len, i);
  if (d[i] == '{' || d[i] == '[') {
    int depth = 0;
    while (i < len) {
      while (i < len && !CONTAINER_STOP[(unsigned char)d[i]]) i++;
      if (i >= len) break;
      char c = d[i];
      if (c == '"') {
        i = skip_string(d, len, i);
        continue;
      }
      if (c == '{' || c == '[') depth++;
      if (c == '}' || c == ']') {
        if (--depth == 0) return i + 1;
      }
      i++;
    }
    return len;
  }
  /* memchr, not strchr: strchr would also match a NUL byte (its terminator). */
  while (i < len && !memchr(",}] \t\r\n", d[i], 7)) i++;
  return i;
}

/* Compares the quoted key token d[s..e) (quotes included) with key. */
static bool key_equals(const char *d, size_t s, size_t e, const char *key) {
  size_t klen = strlen(key);
  if (!memchr(d + s, '\\', e - s)) return e - s - 2 == klen && memcmp(d + s + 1, key, klen) == 0;
  json_t *k = json_loadb(d + s, e - s, JSON_DECODE_ANY, NULL);
  bool eq = k && json_is_string(k) && json_string_length(k) == klen &&
            memcmp(json_string_value(k), key, klen) == 0;
  json_decref(k);
  return eq;
}

bool json_raw_member(const char *doc, size_t len, const char *key, const char **val,
                     size_t *val_len) {
  size_t i = skip_ws(doc, len, 0);
  if (i >= len || doc[i] != '{') return false;
  i++;
  for (;;) {
    i = skip_ws(doc, len, i);
    if (i >= len || doc[i] != '"') return false;
    size_t ks = i, ke = skip_string(doc, len, i);
    i = skip_ws(doc, len, ke);
    if (i >= len || doc[i] != ':') return false;
    i = skip_ws(doc, len, i + 1);
    size_t vs = i, ve = skip_value(doc, len, i);
    if (key_equals(doc, ks, ke, key)) {
      *val = doc + vs;
      *val_len = ve - vs;
      return true;
    }
    i = skip_ws(doc, len, ve);
    if (i >= len || doc[i] != ',') return false;
    i++;
  }
}

size_t json_raw_value_end(const char *doc, size_t len, size_t i) { return skip_value(doc, len, i); }

bool json_raw_next(const char *doc, size_t len, size_t *pos, const char **key, size_t *key_len,
                   const char **val, size_t *val_len) {
  size_t open = skip_ws(doc, len, 0);
  if (open >= len || (doc[open] != '{' && doc[open] != '[')) return false;
  bool object = doc[open] == '{';
  size_t i = skip_ws(doc, len, *pos > open ? *pos : open + 1);
  if (i >= len || doc[i] == '}' || doc[i] == ']') {
    *pos = len;
    return false;
  }
  *key = NULL;
  *key_len = 0;
  if (object) {
    if (doc[i] != '"') {
      *pos = len;
      return false;
    }
    size_t ke = skip_string(doc, len, i);
    *key = doc + i;
    *key_len = ke - i;
    i = skip_ws(doc, len, ke);
    if (i >= len || doc[i] != ':') {
      *pos = len;
      return false;
    }
    i = skip_ws(doc, len, i + 1);
  }
  size_t ve = skip_value(doc, len, i);
  if (ve == i) {
    *pos = len;
    return false;
  }
  *val = doc + i;
  *val_len = ve - i;
  i = skip_ws(doc, len, ve);
  if (i < len && doc[i] == ',') i++;
  *pos = i;
  return true;
}
