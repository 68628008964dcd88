/* Strict base64 decoding (core/base64.h). */
#include "core/base64.h"

#include <stdint.h>
#include <string.h>

static int value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

bool base64_decode(const char *s, size_t len, bool canonical, unsigned char *out, size_t cap,
                   size_t *out_len) {
  *out_len = 0;
  if (len % 4 != 0) return false;
  size_t n = 0;
  bool ok = true;
  uint32_t w = 0;
  for (size_t i = 0; ok && i < len; i += 4) {
    int pad = 0;
    w = 0;
    for (int k = 0; ok && k < 4; k++) {
      char c = s[i + (size_t)k];
      int v = 0;
      if (c == '=' && i + 4 == len && k >= 2)
        pad++;
      else if (pad || (v = value(c)) < 0) /* data after '=', or not in the alphabet */
        ok = false;
      w = w << 6 | (uint32_t)v;
    }
    if (ok && canonical && ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff)))) ok = false;
    for (int k = 0; ok && k < 3 - pad; k++, n++)
      if (n < cap) out[n] = (unsigned char)(w >> (16 - 8 * k));
  }
  explicit_bzero(&w, sizeof w);
  if (ok) *out_len = n;
  return ok;
}

static size_t encode(const char alphabet[64], bool pad, const unsigned char *data, size_t len,
                     char *out) {
  size_t n = 0;
  for (size_t i = 0; i < len; i += 3) {
    unsigned v = (unsigned)data[i] << 16;
    if (i + 1 < len) v |= (unsigned)data[i + 1] << 8;
    if (i + 2 < len) v |= data[i + 2];
    out[n++] = alphabet[v >> 18 & 63];
    out[n++] = alphabet[v >> 12 & 63];
    if (i + 1 < len || pad) out[n++] = i + 1 < len ? alphabet[v >> 6 & 63] : '=';
    if (i + 2 < len || pad) out[n++] = i + 2 < len ? alphabet[v & 63] : '=';
  }
  out[n] = '\0';
  return n;
}

size_t base64_encode(const unsigned char *data, size_t len, char *out) {
  return encode("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", true, data, len,
                out);
}

size_t base64url_encode(const unsigned char *data, size_t len, char *out) {
  return encode("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", false, data,
                len, out);
}

static int url_value(char c) {
  if (c == '-') return 62;
  if (c == '_') return 63;
  if (c == '+' || c == '/') return -1;
  return value(c);
}

long base64url_decode(const char *s, size_t len, unsigned char *out, size_t cap) {
  if (len % 4 == 1 || len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0) > cap) return -1;
  size_t n = 0;
  uint32_t acc = 0;
  unsigned bits = 0;
  for (size_t i = 0; i < len; i++) {
    int v = url_value(s[i]);
    if (v < 0) return -1;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (unsigned char)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) return -1; /* unused low bits set: one text per byte string */
  return (long)n;
}
