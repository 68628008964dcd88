/* The export's row writers (model/export.c). The first byte picks the neutralise flag and
 * where the input splits into two text fields; the input is used as one CSV cell, as a whole
 * CSV row (the fields as agent and account ids, any bytes, cut at a NUL as a C string is), and,
 * when it parses as a JSON object, as a stored body for an NDJSON line. Properties: a cell is
 * quoted exactly when it holds a comma, a quote, CR or LF, and an RFC 4180 reader gives back
 * the input (an apostrophe first when it begins with = + - @ TAB CR, or with = + - @ after
 * leading whitespace or a double quote, and neutralise is set); a row reads back as the
 * header's 13 cells with the fields in their place, no text cell a spreadsheet could run as a
 * formula (each either neutralised or starting otherwise); an NDJSON line is one line (its only LF
 * last) and valid JSON. */
#include <jansson.h>
#include <string.h>

#include "fuzz.h"
#include "model/export.h"

/* One RFC 4180 field at *p (up to end): its value into out (*n bytes). False when malformed. */
static bool read_field(const char **p, const char *end, char *out, size_t *n) {
  const char *s = *p;
  *n = 0;
  if (s < end && *s == '"') {
    s++;
    for (;;) {
      if (s >= end) return false;
      if (*s == '"') {
        if (s + 1 < end && s[1] == '"') {
          out[(*n)++] = '"';
          s += 2;
          continue;
        }
        s++;
        break;
      }
      out[(*n)++] = *s++;
    }
  } else {
    while (s < end && *s != ',' && *s != '\r' && *s != '\n') {
      if (*s == '"') return false;
      out[(*n)++] = *s++;
    }
  }
  *p = s;
  return true;
}

static bool formula(char c) {
  return c == '=' || c == '+' || c == '-' || c == '@' || c == '\t' || c == '\r';
}

/* What a spreadsheet could run as a formula: a formula character first, or = + - @ after
 * leading whitespace or after a double quote. */
static bool runs_as_formula(const char *s, size_t len) {
  if (len && formula(s[0])) return true;
  size_t i = 0;
  while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) i++;
  if (i < len && formula(s[i]) && s[i] != '\t' && s[i] != '\r') return true;
  return len >= 2 && s[0] == '"' && s[1] != '\t' && s[1] != '\r' && formula(s[1]);
}

static void check_cell(const char *in, size_t len, bool neutralise) {
  struct export_buf b;
  export_buf_init(&b);
  export_csv_cell(&b, in, len, neutralise);
  FUZZ_CHECK(b.ok);
  FUZZ_CHECK(b.len <= 2 * len + 3);
  bool special = false;
  for (size_t i = 0; i < len; i++)
    special = special || in[i] == ',' || in[i] == '"' || in[i] == '\r' || in[i] == '\n';
  FUZZ_CHECK(special == (b.len > 0 && b.p[0] == '"'));
  char *val = malloc(b.len + 1);
  size_t n;
  const char *p = b.p ? b.p : "";
  FUZZ_CHECK(read_field(&p, p + b.len, val, &n));
  FUZZ_CHECK(p == (b.p ? b.p : "") + b.len);
  size_t skip = neutralise && runs_as_formula(in, len) ? 1 : 0;
  FUZZ_CHECK(n == len + skip);
  if (skip) FUZZ_CHECK(val[0] == '\'');
  FUZZ_CHECK(memcmp(val + skip, in, len) == 0);
  free(val);
  export_buf_free(&b);
}

static void set_text(char *dst, size_t cap, const uint8_t *src, size_t n) {
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = '\0';
}

static void check_row(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
  struct store_conversation c;
  memset(&c, 0, sizeof c);
  snprintf(c.conversation_id, sizeof c.conversation_id, "conv-1");
  set_text(c.agent_id, sizeof c.agent_id, a, na);
  set_text(c.account_id, sizeof c.account_id, b, nb);
  set_text(c.conversation_id, sizeof c.conversation_id, b, nb);
  if (!c.conversation_id[0]) snprintf(c.conversation_id, sizeof c.conversation_id, "x");
  snprintf(c.status, sizeof c.status, "completed");
  c.audio_bytes = na % 2 ? 12 : -1;
  c.processed_us = 1700000000000000;
  struct export_buf out;
  export_buf_init(&out);
  export_csv_row(&out, &c);
  FUZZ_CHECK(out.ok && out.len >= 2);
  FUZZ_CHECK(out.p[out.len - 2] == '\r' && out.p[out.len - 1] == '\n');
  const char *p = out.p, *end = out.p + out.len - 2;
  char *val = malloc(out.len + 1);
  size_t cells = 0, n;
  for (;;) {
    FUZZ_CHECK(read_field(&p, end, val, &n));
    cells++;
    if (cells <= 6) FUZZ_CHECK(n == 0 || val[0] == '\'' || !runs_as_formula(val, n)); /* text */
    if (cells == 3) FUZZ_CHECK(n >= strlen(c.account_id));
    if (p == end) break;
    FUZZ_CHECK(*p == ',');
    p++;
  }
  FUZZ_CHECK(cells == 13);
  free(val);
  export_buf_free(&out);
}

static void check_ndjson(const uint8_t *data, size_t size) {
  json_t *obj = json_loadb((const char *)data, size, 0, NULL);
  if (!json_is_object(obj)) {
    json_decref(obj);
    return;
  }
  json_decref(obj);
  struct store_conversation c;
  memset(&c, 0, sizeof c);
  snprintf(c.conversation_id, sizeof c.conversation_id, "conv-1");
  snprintf(c.status, sizeof c.status, "completed");
  c.audio_bytes = -1;
  c.body = malloc(size + 1);
  memcpy(c.body, data, size);
  c.body[size] = '\0';
  c.body_len = size;
  struct export_buf out;
  export_buf_init(&out);
  export_ndjson_row(&out, &c, true);
  FUZZ_CHECK(out.ok && out.len > 0);
  FUZZ_CHECK(memchr(out.p, '\n', out.len) == out.p + out.len - 1);
  FUZZ_CHECK(memchr(out.p, '\r', out.len) == NULL);
  json_t *back = json_loadb(out.p, out.len, 0, NULL);
  FUZZ_CHECK(json_is_object(back));
  json_decref(back);
  free(c.body);
  export_buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  bool neutralise = data[0] & 1;
  size_t split = size > 1 ? (data[0] >> 1) % size : 0;
  check_cell((const char *)data + 1, size - 1, neutralise);
  check_row(data + 1, split, data + 1 + split, size - 1 - split);
  check_ndjson(data + 1, size - 1);
  return 0;
}
