/* The printable HTML report of one conversation (model/report.h). The page is written into one
 * growing buffer; every client text goes through put_text, the one escaping function, and
 * only fixed strings of this file are written without it. Class names and ids in the markup
 * come from this file, never from the data. */
#include "model/report.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"
#include "core/utf8.h"

struct page {
  char *buf;
  size_t len, cap;
  size_t max; /* past this, no further turn or summary entry is added */
  bool ok;    /* false after an allocation failed */
};

static void put(struct page *p, const char *s, size_t n) {
  if (!p->ok || n == 0) return;
  if (p->len + n + 1 > p->cap) {
    size_t cap = p->cap ? p->cap : 16 * 1024;
    while (cap < p->len + n + 1) cap *= 2;
    char *nb = realloc(p->buf, cap);
    if (!nb) {
      p->ok = false;
      return;
    }
    p->buf = nb;
    p->cap = cap;
  }
  memcpy(p->buf + p->len, s, n);
  p->len += n;
  p->buf[p->len] = '\0';
}

#define PUT_LIT(p, s) put((p), (s), sizeof(s) - 1)

static void put_str(struct page *p, const char *s) { put(p, s, strlen(s)); }

static bool full(const struct page *p) { return p->len >= p->max; }

/* Writes s[0..n) as HTML text that is also safe inside a quoted attribute: & < > " ' as
 * references; invalid UTF-8, NUL and the control characters HTML calls parse errors (C0 but
 * tab, LF and CR; DEL; C1) as U+FFFD. At most REPORT_TEXT_MAX bytes of s are shown, cut at a
 * character boundary and marked with " […]". */
static void put_text(struct page *p, const char *s, size_t n) {
  static const char fffd[] = "\xef\xbf\xbd";
  bool cut = n > REPORT_TEXT_MAX;
  size_t end = cut ? REPORT_TEXT_MAX : n;
  size_t run = 0; /* start of the bytes not yet written */
  size_t i = 0;
  while (i < end) {
    unsigned char c = (unsigned char)s[i];
    const char *rep = NULL;
    size_t rep_len = 0, step = 1;
    if (c >= 0x80) {
      step = utf8_sequence_length(s + i, n - i);
      if (step == 0) {
        rep = fffd; /* an invalid byte */
        rep_len = 3;
        step = 1;
      } else if (i + step > end) {
        break; /* the cut falls inside this character */
      } else if (step == 2 && c == 0xc2 && (unsigned char)s[i + 1] < 0xa0) {
        rep = fffd; /* C1 control */
        rep_len = 3;
      }
    } else {
      switch (c) {
        case '&':
          rep = "&amp;";
          break;
        case '<':
          rep = "&lt;";
          break;
        case '>':
          rep = "&gt;";
          break;
        case '"':
          rep = "&quot;";
          break;
        case '\'':
          rep = "&#39;";
          break;
        case '\t':
        case '\n':
          break;
        case '\r':
          break;
        default:
          if (c < 0x20 || c == 0x7f) rep = fffd;
      }
      if (rep && !rep_len) rep_len = strlen(rep);
    }
    if (rep) {
      put(p, s + run, i - run);
      put(p, rep, rep_len);
      run = i + step;
    }
    i += step;
  }
  put(p, s + run, i - run);
  if (cut || i < end) PUT_LIT(p, " […]");
}

static void put_cstr(struct page *p, const char *s) { put_text(p, s, strlen(s)); }

static void put_int(struct page *p, long long v) {
  char b[24];
  int n = snprintf(b, sizeof b, "%lld", v);
  if (n > 0) put(p, b, (size_t)n);
}

/* A JSON string's text (it may hold NUL), or NULL. */
static const char *jstr(json_t *v, size_t *n) {
  if (!json_is_string(v)) return NULL;
  *n = json_string_length(v);
  return json_string_value(v);
}

/* ---- times ---- */

/* "2024-01-15 10:30:00 UTC" from microseconds: whole seconds for a reader (the datetime
 * attribute keeps the exact instant). */
static bool human_time(int64_t us, char *out, size_t cap) {
  char iso[40];
  if (!time_format_us(us, false, iso, sizeof iso) || strlen(iso) < 20 || cap < 24) return false;
  memcpy(out, iso, 19); /* YYYY-MM-DDTHH:MM:SS */
  out[10] = ' ';
  memcpy(out + 19, " UTC", 5);
  return true;
}

/* <time datetime="ISO">human</time>, or the fallback text. */
static void put_time(struct page *p, bool present, int64_t us, const char *fallback) {
  char iso[40], human[48];
  if (!present || !time_format_us(us, false, iso, sizeof iso) ||
      !human_time(us, human, sizeof human)) {
    put_str(p, fallback);
    return;
  }
  PUT_LIT(p, "<time datetime=\"");
  put_str(p, iso); /* digits, '-', ':', '.', 'T', 'Z' only */
  PUT_LIT(p, "\">");
  put_str(p, human);
  PUT_LIT(p, "</time>");
}

/* "1 h 2 min 3 s", "4 min 0 s", "45 s". */
static void put_duration(struct page *p, int64_t secs) {
  char b[64];
  if (secs < 0) secs = 0;
  long long h = (long long)(secs / 3600), m = (long long)(secs % 3600 / 60),
            s = (long long)(secs % 60);
  if (h)
    snprintf(b, sizeof b, "%lld h %lld min %lld s", h, m, s);
  else if (m)
    snprintf(b, sizeof b, "%lld min %lld s", m, s);
  else
    snprintf(b, sizeof b, "%lld s", s);
  put_str(p, b);
}

/* An offset into the call: "+0:04", "+1:02:03". */
static void put_offset(struct page *p, int64_t us) {
  char b[48];
  const char *sign = "+";
  if (us < 0) {
    sign = "\xe2\x88\x92"; /* U+2212 minus: a message stamped before the start */
    us = -us;
  }
  long long secs = (long long)(us / 1000000);
  if (secs >= 3600)
    snprintf(b, sizeof b, "%s%lld:%02lld:%02lld", sign, secs / 3600, secs % 3600 / 60, secs % 60);
  else
    snprintf(b, sizeof b, "%s%lld:%02lld", sign, secs / 60, secs % 60);
  put_str(p, b);
}

/* ---- the facts ---- */

static void fact_start(struct page *p, const char *label) {
  PUT_LIT(p, "<dt>");
  put_str(p, label);
  PUT_LIT(p, "</dt><dd>");
}

static void fact_text(struct page *p, const char *label, const char *value) {
  fact_start(p, label);
  if (*value)
    put_cstr(p, value);
  else
    PUT_LIT(p, "<span class=\"muted\">unknown</span>");
  PUT_LIT(p, "</dd>\n");
}

/* The conversation id as one percent-encoded path segment (RFC 3986 unreserved kept). */
static void put_segment(struct page *p, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if ((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
        *c == '-' || *c == '.' || *c == '_' || *c == '~') {
      put(p, (const char *)c, 1);
    } else {
      char e[3] = {'%', hex[*c >> 4], hex[*c & 15]};
      put(p, e, 3);
    }
  }
}

static void put_facts(struct page *p, const struct store_conversation *c, json_t *metadata) {
  PUT_LIT(
      p,
      "<section aria-labelledby=\"facts\"><h2 id=\"facts\">Details</h2>\n<dl class=\"facts\">\n");
  fact_text(p, "Conversation", c->conversation_id);
  fact_text(p, "Email", c->email_id);
  fact_text(p, "Account", c->account_id);
  fact_text(p, "Agent", c->agent_id);
  size_t n = 0;
  const char *platform = jstr(json_object_get(metadata, "platform"), &n);
  if (platform) {
    fact_start(p, "Platform");
    put_text(p, platform, n);
    PUT_LIT(p, "</dd>\n");
  }
  fact_text(p, "Status", c->status);
  if (*c->failure_reason) fact_text(p, "Failure reason", c->failure_reason);
  fact_start(p, "Started");
  put_time(p, c->has_start, c->start_us, "<span class=\"muted\">unknown</span>");
  PUT_LIT(p, "</dd>\n");
  fact_start(p, "Ended");
  put_time(p, c->has_start, c->start_us + c->duration * 1000000,
           "<span class=\"muted\">unknown</span>");
  PUT_LIT(p, "</dd>\n");
  fact_start(p, "Duration");
  put_duration(p, c->duration);
  PUT_LIT(p, "</dd>\n");
  fact_start(p, "Messages");
  put_int(p, (long long)c->message_count);
  PUT_LIT(p, "</dd>\n");
  fact_start(p, "Processed");
  put_time(p, true, c->processed_us, "<span class=\"muted\">unknown</span>");
  PUT_LIT(p, "</dd>\n");
  fact_start(p, "Audio");
  if (c->audio_bytes >= 0) {
    PUT_LIT(p, "<a href=\"/api/v1/conversations/");
    put_segment(p, c->conversation_id);
    PUT_LIT(p, "/audio\" type=\"audio/mpeg\">Recording (MP3, ");
    put_int(p, (long long)c->audio_bytes);
    PUT_LIT(p, " bytes)</a>");
  } else {
    PUT_LIT(p, "<span class=\"muted\">none stored</span>");
  }
  PUT_LIT(p, "</dd>\n</dl></section>\n");
}

/* ---- the summary ---- */

/* A value as text: a string as is, anything else as compact JSON. */
static void put_value(struct page *p, json_t *v) {
  size_t n = 0;
  const char *s = jstr(v, &n);
  if (s) {
    put_text(p, s, n);
    return;
  }
  if (!v) return;
  /* 15 digits: 0.1 reads 0.1 (17 would show 0.10000000000000001), 49.0 stays 49.0. */
  char *dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
  if (!dump) {
    p->ok = false;
    return;
  }
  bool scalar = !json_is_object(v) && !json_is_array(v);
  if (!scalar) PUT_LIT(p, "<code>");
  put_cstr(p, dump);
  if (!scalar) PUT_LIT(p, "</code>");
  free(dump);
}

/* ElevenLabs' evaluation_criteria_results / data_collection_results: an object of objects,
 * shown as a table of the member name, one field of each entry and its rationale. */
static void put_results(struct page *p, json_t *results, const char *id, const char *title,
                        const char *head, const char *field) {
  if (!json_is_object(results) || json_object_size(results) == 0) return;
  PUT_LIT(p, "<h3 id=\"");
  put_str(p, id);
  PUT_LIT(p, "\">");
  put_str(p, title);
  PUT_LIT(p, "</h3>\n<div class=\"scroll\"><table aria-labelledby=\"");
  put_str(p, id);
  PUT_LIT(p, "\"><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">");
  put_str(p, head);
  PUT_LIT(p, "</th><th scope=\"col\">Rationale</th></tr></thead><tbody>\n");
  const char *key;
  json_t *entry;
  size_t shown = 0;
  json_object_foreach(results, key, entry) {
    if (full(p)) break;
    PUT_LIT(p, "<tr><th scope=\"row\">");
    put_cstr(p, key);
    PUT_LIT(p, "</th><td>");
    json_t *v = json_is_object(entry) ? json_object_get(entry, field) : entry;
    put_value(p, v);
    PUT_LIT(p, "</td><td>");
    if (json_is_object(entry)) put_value(p, json_object_get(entry, "rationale"));
    PUT_LIT(p, "</td></tr>\n");
    shown++;
  }
  PUT_LIT(p, "</tbody></table></div>\n");
  if (shown < json_object_size(results)) {
    PUT_LIT(p, "<p class=\"muted\">");
    put_int(p, (long long)(json_object_size(results) - shown));
    PUT_LIT(p, " more not shown (page size limit).</p>\n");
  }
}

static bool is_shown_apart(const char *key) {
  static const char *const apart[] = {"call_summary_title", "transcript_summary", "call_successful",
                                      "evaluation_criteria_results", "data_collection_results"};
  for (size_t i = 0; i < sizeof apart / sizeof apart[0]; i++)
    if (strcmp(key, apart[i]) == 0) return true;
  return false;
}

/* summary: the seed's optional object, or an ElevenLabs conversation's data.analysis (its
 * title, summary, outcome and result tables shown as such). Any other member is listed with
 * its value. Nothing at all for null or absent. */
static void put_summary(struct page *p, json_t *summary) {
  if (!summary || json_is_null(summary)) return;
  if (json_is_object(summary) && json_object_size(summary) == 0) return;
  PUT_LIT(p, "<section aria-labelledby=\"summary\"><h2 id=\"summary\">Summary</h2>\n");
  if (!json_is_object(summary)) {
    PUT_LIT(p, "<p class=\"text\">");
    put_value(p, summary);
    PUT_LIT(p, "</p></section>\n");
    return;
  }
  size_t n = 0;
  const char *s = jstr(json_object_get(summary, "call_summary_title"), &n);
  if (s) {
    PUT_LIT(p, "<p class=\"title\">");
    put_text(p, s, n);
    PUT_LIT(p, "</p>\n");
  }
  s = jstr(json_object_get(summary, "transcript_summary"), &n);
  if (s) {
    PUT_LIT(p, "<p class=\"text\">");
    put_text(p, s, n);
    PUT_LIT(p, "</p>\n");
  }
  json_t *outcome = json_object_get(summary, "call_successful");
  if (outcome && !json_is_null(outcome)) {
    PUT_LIT(p, "<p><strong>Call outcome:</strong> ");
    put_value(p, outcome);
    PUT_LIT(p, "</p>\n");
  }
  put_results(p, json_object_get(summary, "evaluation_criteria_results"), "criteria",
              "Evaluation criteria", "Result", "result");
  put_results(p, json_object_get(summary, "data_collection_results"), "collected", "Data collected",
              "Value", "value");
  const char *key;
  json_t *v;
  bool open = false;
  json_object_foreach(summary, key, v) {
    if (is_shown_apart(key) || json_is_null(v)) continue;
    if (full(p)) break;
    if (!open) {
      PUT_LIT(p, "<dl class=\"facts\">\n");
      open = true;
    }
    PUT_LIT(p, "<dt>");
    put_cstr(p, key);
    PUT_LIT(p, "</dt><dd class=\"text\">");
    put_value(p, v);
    PUT_LIT(p, "</dd>\n");
  }
  if (open) PUT_LIT(p, "</dl>\n");
  PUT_LIT(p, "</section>\n");
}

/* ---- the transcript ---- */

static void put_turn(struct page *p, json_t *turn, const struct store_conversation *c,
                     size_t index) {
  size_t n = 0;
  const char *speaker = jstr(json_object_get(turn, "speaker"), &n);
  const char *cls = "other", *label = NULL;
  if (speaker && n == 5 && memcmp(speaker, "agent", 5) == 0) {
    cls = "agent";
    label = "Agent";
  } else if (speaker && n == 4 && memcmp(speaker, "user", 4) == 0) {
    cls = "user";
    label = "User";
  }
  PUT_LIT(p, "<li class=\"turn ");
  put_str(p, cls);
  PUT_LIT(p, "\"><p class=\"who\"><span class=\"speaker\">");
  if (label)
    put_str(p, label);
  else if (speaker && n)
    put_text(p, speaker, n);
  else
    PUT_LIT(p, "Unknown speaker");
  PUT_LIT(p, "</span>");
  const char *ts = jstr(json_object_get(turn, "timestamp"), &n);
  int64_t us = 0;
  if (ts && time_parse_rfc3339(ts, n, &us)) {
    char iso[40], human[48];
    if (time_format_us(us, false, iso, sizeof iso) && human_time(us, human, sizeof human)) {
      PUT_LIT(p, " <time datetime=\"");
      put_str(p, iso);
      PUT_LIT(p, "\">");
      put_str(p, human);
      PUT_LIT(p, "</time>");
      if (c->has_start) {
        PUT_LIT(p, " <span class=\"offset\" title=\"into the call\">");
        put_offset(p, us - c->start_us);
        PUT_LIT(p, "</span>");
      }
    }
  } else if (ts && n) {
    PUT_LIT(p, " <span class=\"muted\">");
    put_text(p, ts, n); /* kept as sent when it is not a time we can read */
    PUT_LIT(p, "</span>");
  }
  PUT_LIT(p, "<span class=\"visually-hidden\"> (message ");
  put_int(p, (long long)index + 1);
  PUT_LIT(p, ")</span></p>\n<p class=\"text\">");
  json_t *content = json_object_get(turn, "content");
  const char *text = jstr(content, &n);
  if (text)
    put_text(p, text, n);
  else if (content && !json_is_null(content))
    put_value(p, content);
  PUT_LIT(p, "</p></li>\n");
}

static void put_transcript(struct page *p, const struct store_conversation *c, json_t *transcript,
                           bool have_body) {
  PUT_LIT(p, "<section aria-labelledby=\"transcript\"><h2 id=\"transcript\">Transcript</h2>\n");
  size_t total = json_is_array(transcript) ? json_array_size(transcript) : 0;
  if (!have_body) {
    PUT_LIT(p, "<p class=\"muted\">The transcript could not be read.</p></section>\n");
    return;
  }
  if (total == 0) {
    PUT_LIT(p, "<p class=\"muted\">No messages.</p></section>\n");
    return;
  }
  PUT_LIT(p, "<ol class=\"dialogue\">\n");
  size_t i;
  for (i = 0; i < total && !full(p); i++) put_turn(p, json_array_get(transcript, i), c, i);
  PUT_LIT(p, "</ol>\n");
  if (i < total) {
    PUT_LIT(p, "<p class=\"note\" role=\"note\">Only the first ");
    put_int(p, (long long)i);
    PUT_LIT(p, " of ");
    put_int(p, (long long)total);
    PUT_LIT(p,
            " messages are shown: this page is limited in size. The whole transcript is at "
            "<code>/api/v1/conversations/");
    put_segment(p, c->conversation_id);
    PUT_LIT(p, "?include=transcript</code>.</p>\n");
  }
  PUT_LIT(p, "</section>\n");
}

/* ---- the page ---- */

static const char STYLE[] =
    "*{box-sizing:border-box}"
    "body{font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;color:#1a1a1a;"
    "background:#fff;max-width:50rem;margin:0 auto;padding:1rem}"
    "h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.2rem;margin:1.5rem 0 .5rem;"
    "border-bottom:1px solid #ccc}h3{font-size:1rem;margin:1rem 0 .25rem}"
    ".sub{margin:0;color:#444;overflow-wrap:anywhere}"
    "dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}"
    "dt{font-weight:600;color:#333}dd{margin:0;overflow-wrap:anywhere}"
    ".muted{color:#555}.title{font-weight:600}"
    ".text{white-space:pre-wrap;overflow-wrap:anywhere}"
    ".scroll{overflow-x:auto}table{border-collapse:collapse;width:100%}"
    "th,td{text-align:left;vertical-align:top;border-bottom:1px solid #ddd;padding:.25rem .5rem;"
    "overflow-wrap:anywhere}"
    "ol.dialogue{list-style:none;margin:0;padding:0}"
    ".turn{border-left:4px solid #767676;padding:.25rem .75rem;margin:.5rem 0;"
    "break-inside:avoid}"
    ".turn.agent{border-color:#1d4f91;background:#f1f5fb}"
    ".turn.user{border-color:#256029;background:#f2f8f2;margin-left:1.5rem}"
    ".who{margin:0;font-size:.875rem;color:#333}.speaker{font-weight:700;margin-right:.5rem}"
    ".offset{color:#555;margin-left:.5rem}.turn .text{margin:.25rem 0 0}"
    ".note{border:1px solid #b26b00;padding:.5rem}"
    "a{color:#1d4f91}code{font-family:ui-monospace,monospace;font-size:.875em;"
    "overflow-wrap:anywhere}"
    ".visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;"
    "clip:rect(0 0 0 0);white-space:nowrap}"
    "@media (max-width:36rem){body{padding:.5rem}dl.facts{grid-template-columns:1fr}"
    "dd{margin-bottom:.5rem}.turn.user{margin-left:.5rem}}"
    "@media print{body{max-width:none;padding:0;font-size:10.5pt;color:#000}"
    ".turn,.turn.agent,.turn.user{background:none;margin-left:0}"
    "a{color:#000;text-decoration:none}a[href]::after{content:\" (\" attr(href) \")\"}"
    "h2{break-after:avoid}}";

static void put_page(struct page *p, const struct store_conversation *c) {
  json_t *root = NULL;
  if (c->body) {
    json_error_t err;
    root = json_loadb(c->body, c->body_len, JSON_ALLOW_NUL, &err);
    if (!root && json_error_code(&err) == json_error_numeric_overflow)
      root = json_loadb(c->body, c->body_len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);
  }
  json_t *metadata = json_object_get(root, "metadata");

  PUT_LIT(p,
          "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<meta name=\"referrer\" content=\"no-referrer\">\n<title>Conversation ");
  put_cstr(p, c->conversation_id);
  PUT_LIT(p, " \xe2\x80\x94 report</title>\n<style>");
  put(p, STYLE, sizeof STYLE - 1);
  PUT_LIT(p, "</style>\n</head>\n<body>\n<header><h1>Conversation report</h1>\n<p class=\"sub\">");
  put_cstr(p, c->conversation_id);
  PUT_LIT(p, "</p></header>\n<main>\n");
  put_facts(p, c, metadata);
  if (root) put_summary(p, json_object_get(root, "summary"));
  if (c->body) put_transcript(p, c, json_object_get(root, "transcript"), root != NULL);
  PUT_LIT(p, "</main>\n</body>\n</html>\n");
  json_decref(root);
}

char *report_render_html(const struct store_conversation *c, size_t max_bytes, size_t *len) {
  struct page p = {NULL, 0, 0, max_bytes, true};
  put_page(&p, c);
  if (!p.ok) {
    free(p.buf);
    return NULL;
  }
  *len = p.len;
  return p.buf;
}
