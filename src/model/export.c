/* CSV and NDJSON rows of the conversation export (export.h). */
#include "model/export.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "model/render.h"

void export_buf_init(struct export_buf *b) {
  b->p = NULL;
  b->len = b->cap = 0;
  b->ok = true;
}

void export_buf_free(struct export_buf *b) {
  free(b->p);
  export_buf_init(b);
}

/* Room for len more bytes (and a NUL). */
static bool reserve(struct export_buf *b, size_t len) {
  if (!b->ok) return false;
  if (b->len + len + 1 <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + len + 1) cap *= 2;
  char *np = realloc(b->p, cap);
  if (!np) {
    b->ok = false;
    return false;
  }
  b->p = np;
  b->cap = cap;
  return true;
}

void export_buf_add(struct export_buf *b, const char *s, size_t len) {
  if (!reserve(b, len)) return;
  if (len) memcpy(b->p + b->len, s, len);
  b->len += len;
  b->p[b->len] = '\0';
}

#define ADD_LIT(b, s) export_buf_add((b), (s), sizeof(s) - 1)

/* What a spreadsheet (Excel, LibreOffice, Google Sheets) takes as the start of a formula or a
 * command (OWASP "CSV injection"): = + - @ first, and TAB and CR, which some strip before
 * looking; also = + - @ after leading whitespace (spaces, TAB, CR, LF: some trim a cell before
 * reading it) or after a double quote (some read "=..." inside a quoted cell as the formula). */
static bool formula_char(char c) { return c == '=' || c == '+' || c == '-' || c == '@'; }

static bool formula_start(const char *s, size_t len) {
  if (len && (s[0] == '\t' || s[0] == '\r')) return true;
  size_t i = 0;
  while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) i++;
  if (i < len && formula_char(s[i])) return true;
  return len >= 2 && s[0] == '"' && formula_char(s[1]);
}

void export_csv_cell(struct export_buf *b, const char *s, size_t len, bool neutralise) {
  bool quote = false;
  for (size_t i = 0; i < len && !quote; i++)
    quote = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
  if (!reserve(b, 2 * len + 3)) return;
  char *o = b->p + b->len;
  size_t n = 0;
  if (quote) o[n++] = '"';
  if (neutralise && formula_start(s, len)) o[n++] = '\'';
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '"') o[n++] = '"';
    o[n++] = s[i];
  }
  if (quote) o[n++] = '"';
  b->len += n;
  b->p[b->len] = '\0';
}

static void text_cell(struct export_buf *b, const char *s) {
  export_csv_cell(b, s, strlen(s), true);
}

static void int_cell(struct export_buf *b, int64_t v) {
  char num[24];
  int n = snprintf(num, sizeof num, "%" PRId64, v);
  export_buf_add(b, num, (size_t)n);
}

static void time_cell(struct export_buf *b, bool present, int64_t us, bool always_fraction) {
  char t[40];
  if (present && time_format_us(us, always_fraction, t, sizeof t)) export_buf_add(b, t, strlen(t));
}

void export_csv_header(struct export_buf *b) {
  ADD_LIT(b,
          "conversationId,emailId,accountId,agentId,status,failureReason,startTime,endTime,"
          "duration,messageCount,processedAt,audioBytes,audioUrl\r\n");
}

/* The audio's URL as render_conversation writes it: the id percent-encoded as one path segment
 * (RFC 3986: all but the unreserved characters). */
static void audio_url_cell(struct export_buf *b, const char *id) {
  char seg[RENDER_SEGMENT_MAX];
  ADD_LIT(b, "/api/v1/conversations/");
  export_buf_add(b, seg, render_path_segment(id, seg));
  ADD_LIT(b, "/audio");
}

void export_csv_row(struct export_buf *b, const struct store_conversation *c) {
  text_cell(b, c->conversation_id);
  ADD_LIT(b, ",");
  text_cell(b, c->email_id);
  ADD_LIT(b, ",");
  text_cell(b, c->account_id);
  ADD_LIT(b, ",");
  text_cell(b, c->agent_id);
  ADD_LIT(b, ",");
  text_cell(b, c->status);
  ADD_LIT(b, ",");
  text_cell(b, c->failure_reason);
  ADD_LIT(b, ",");
  time_cell(b, c->has_start, c->start_us, false);
  ADD_LIT(b, ",");
  time_cell(b, c->has_start, c->start_us + c->duration * 1000000, false);
  ADD_LIT(b, ",");
  int_cell(b, c->duration);
  ADD_LIT(b, ",");
  int_cell(b, c->message_count);
  ADD_LIT(b, ",");
  time_cell(b, true, c->processed_us, true);
  ADD_LIT(b, ",");
  if (c->audio_bytes >= 0) int_cell(b, c->audio_bytes);
  ADD_LIT(b, ",");
  /* The URL percent-encodes every byte a formula could start with but '-': it begins with '/'
   * anyway, and holds no comma or quote, so it is never quoted either. */
  if (c->audio_bytes >= 0) audio_url_cell(b, c->conversation_id);
  ADD_LIT(b, "\r\n");
}

void export_ndjson_row(struct export_buf *b, const struct store_conversation *c, bool with_body) {
  if (!b->ok) return;
  char *line = NULL;
  size_t len = 0;
  if (with_body) {
    line = render_conversation_detail(c, &len);
  } else {
    json_t *obj = render_conversation(c);
    line = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (line) len = strlen(line);
  }
  if (!line) {
    b->ok = false;
    return;
  }
  /* The detail keeps transcript, metadata and summary byte for byte as received, whitespace
   * included: a line break there can only be whitespace between tokens (the body was parsed as
   * JSON, which allows no raw control character inside a string), so it becomes a space and
   * the conversation stays one line. */
  for (size_t i = 0; i < len; i++)
    if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
  /* U+2028, U+2029 and U+0085 may stand raw in a JSON string, but many line readers (Python's
   * str.splitlines, editors, some log tools) take them for line ends: written as \u escapes,
   * the line parses to the same value and every reader sees one line. In valid UTF-8 (the
   * line is JSON jansson wrote or parsed) those bytes are these characters and nothing else,
   * and they can only be inside a string. */
  size_t from = 0;
  for (size_t i = 0; i < len; i++) {
    const char *esc = NULL;
    size_t n = 0;
    if ((unsigned char)line[i] == 0xE2 && i + 2 < len && (unsigned char)line[i + 1] == 0x80 &&
        ((unsigned char)line[i + 2] == 0xA8 || (unsigned char)line[i + 2] == 0xA9)) {
      esc = (unsigned char)line[i + 2] == 0xA8 ? "\\u2028" : "\\u2029";
      n = 3;
    } else if ((unsigned char)line[i] == 0xC2 && i + 1 < len &&
               (unsigned char)line[i + 1] == 0x85) {
      esc = "\\u0085";
      n = 2;
    }
    if (!esc) continue;
    export_buf_add(b, line + from, i - from);
    export_buf_add(b, esc, 6);
    i += n - 1;
    from = i + 1;
  }
  export_buf_add(b, line + from, len - from);
  ADD_LIT(b, "\n");
  free(line);
}
