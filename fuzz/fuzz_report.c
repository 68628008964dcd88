/* The HTML report (model/report.c) over a stored body it reads as JSON. The first byte picks
 * the page budget (0..255 KiB, so truncation is reached), the second a few flags; the rest up
 * to the first 0xfe byte (at most the field's size) becomes the email and the other text fields
 * (any bytes, even invalid UTF-8), the rest the body. Properties: the page is valid UTF-8 with
 * no control character but tab, LF and CR; every '<' starts one of the page's own elements and
 * no tag holds an event handler attribute; the page ends with </html> and stays within the
 * budget plus REPORT_OVERSHOOT_MAX. */
#include <string.h>

#include "core/timeutil.h"
#include "core/utf8.h"
#include "fuzz.h"
#include "model/report.h"

static const char *const TAGS[] = {
    "!DOCTYPE", "html",   "head",    "meta",  "title", "style", "body", "header", "h1", "h2", "h3",
    "p",        "main",   "section", "dl",    "dt",    "dd",    "span", "time",   "a",  "ol", "li",
    "code",     "strong", "div",     "table", "thead", "tbody", "tr",   "th",     "td", "bdi"};

static void check_page(const char *html, size_t len) {
  FUZZ_CHECK(strlen(html) == len);
  FUZZ_CHECK(utf8_valid(html, len));
  static const char tail[] = "</html>\n";
  FUZZ_CHECK(len >= sizeof tail - 1 &&
             memcmp(html + len - (sizeof tail - 1), tail, sizeof tail - 1) == 0);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)html[i];
    FUZZ_CHECK(c >= 0x20 || c == '\n' || c == '\t' || c == '\r');
    FUZZ_CHECK(c != 0x7f);
    if (c != '<') continue;
    const char *name = html + i + 1 + (html[i + 1] == '/');
    size_t n = strspn(name, "!ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
    bool known = false;
    for (size_t k = 0; k < sizeof TAGS / sizeof TAGS[0]; k++)
      if (strlen(TAGS[k]) == n && memcmp(TAGS[k], name, n) == 0) known = true;
    FUZZ_CHECK(known);
    const char *end = strchr(html + i, '>');
    FUZZ_CHECK(end != NULL);
    for (const char *a = html + i; a < end; a++)
      FUZZ_CHECK(!(a[0] == ' ' && (a[1] | 0x20) == 'o' && (a[2] | 0x20) == 'n'));
  }
}

static void set_field(char *dst, size_t cap, const uint8_t *src, size_t n) {
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = '\0'; /* an embedded NUL simply ends it, as a C string would */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t max = (size_t)data[0] * 1024;
  uint8_t flags = data[1];
  data += 2;
  size -= 2;
  const uint8_t *sep = memchr(data, 0xfe, size);
  size_t flen = sep ? (size_t)(sep - data) : 0;
  struct store_conversation c;
  memset(&c, 0, sizeof c);
  set_field(c.conversation_id, sizeof c.conversation_id, data, flen);
  set_field(c.email_id, sizeof c.email_id, data, flen);
  set_field(c.account_id, sizeof c.account_id, data, flen);
  set_field(c.agent_id, sizeof c.agent_id, data, flen);
  set_field(c.status, sizeof c.status, data, flen);
  set_field(c.failure_reason, sizeof c.failure_reason, data, flen);
  c.has_start = flags & 1;
  c.start_us = (flags & 2) ? TIME_MAX_US : 1705314600LL * 1000000;
  c.duration = (flags & 4) ? 2147483647 : 300;
  c.processed_us = (flags & 8) ? TIME_MIN_US - 1 : 1705314600LL * 1000000;
  c.audio_bytes = (flags & 16) ? 5063 : -1;
  c.message_count = flags;
  const uint8_t *body = sep ? sep + 1 : data;
  size_t blen = sep ? size - flen - 1 : size;
  char *copy = NULL;
  if (!(flags & 32)) { /* else: no body */
    copy = malloc(blen + 1);
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, body, blen);
    copy[blen] = '\0';
    c.body = copy;
    c.body_len = blen;
  }
  size_t len = 0;
  char *html = report_render_html(&c, max, &len);
  FUZZ_CHECK(html != NULL);
  check_page(html, len);
  FUZZ_CHECK(len <= max + REPORT_OVERSHOOT_MAX);
  free(html);
  free(copy);
  return 0;
}
