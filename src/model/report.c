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
#include "model/json_raw.h"
#include "model/render.h"

struct page {
  char *buf;
  size_t len, cap;
  size_t max; /* past this, no further turn or summary entry is added */
  bool ok;    /* false after an allocation failed */
  /* Inside isolate_begin/isolate_end: the bidi isolates the text opened and has not closed
   * (an unmatched U+2069 would close the page's own isolate). */
  bool isolating;
  size_t isolates;
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
      } else if (p->isolating && step == 3 && c == 0xe2 && (unsigned char)s[i + 1] == 0x81 &&
                 (unsigned char)s[i + 2] >= 0xa6 && (unsigned char)s[i + 2] <= 0xa9) {
        if ((unsigned char)s[i + 2] < 0xa9) {
          p->isolates++; /* U+2066..U+2068 open an isolate */
        } else if (p->isolates) {
          p->isolates--; /* U+2069 closes one of the text's own */
        } else {
          rep = fffd; /* U+2069 would close ours */
          rep_len = 3;
        }
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

/* Client text beside other text goes between these: a bidi isolate (<bdi>, or FSI..PDI where
 * no markup is allowed), so that its direction controls (U+202E and the like) cannot reorder
 * the text around it. Embeddings it opens end with the isolate; isolates it opens are closed
 * here; a U+2069 without its opener is shown as U+FFFD (put_text). */
static void isolate_begin(struct page *p, bool markup) {
  if (markup)
    PUT_LIT(p, "<bdi>");
  else
    PUT_LIT(p, "\xe2\x81\xa8"); /* U+2068 FIRST STRONG ISOLATE */
  p->isolating = true;
  p->isolates = 0;
}

static void isolate_end(struct page *p, bool markup) {
  for (; p->isolates; p->isolates--) PUT_LIT(p, "\xe2\x81\xa9");
  p->isolating = false;
  if (markup)
    PUT_LIT(p, "</bdi>");
  else
    PUT_LIT(p, "\xe2\x81\xa9"); /* U+2069 POP DIRECTIONAL ISOLATE */
}

static void put_int(struct page *p, long long v) {
  char b[24];
  int n = snprintf(b, sizeof b, "%lld", v);
  if (n > 0) put(p, b, (size_t)n);
}

/* ---- the stored body, read as it was sent ----
 * Values are found and shown from their bytes in the stored body (valid JSON: put_page checks
 * it), never re-serialised: a number shows exactly the digits that were sent, whatever its
 * size. A struct raw with s == NULL is an absent value. */
struct raw {
  const char *s;
  size_t n;
};

static const struct raw NONE = {NULL, 0};

static bool raw_is(struct raw v, char first) { return v.s && v.n && v.s[0] == first; }

static bool raw_is_null(struct raw v) { return !v.s || (v.n == 4 && memcmp(v.s, "null", 4) == 0); }

/* Member key of the object v (the first one of that name), or NONE. */
static struct raw raw_get(struct raw v, const char *key) {
  struct raw out = NONE;
  if (!raw_is(v, '{') || !json_raw_member(v.s, v.n, key, &out.s, &out.n)) return NONE;
  return out;
}

/* Steps through the object or array v: *key is the member's key token (NONE in an array). */
static bool raw_next(struct raw v, size_t *pos, struct raw *key, struct raw *val) {
  if (!v.s) return false;
  return json_raw_next(v.s, v.n, pos, &key->s, &key->n, &val->s, &val->n);
}

/* A JSON string's text (it may hold NUL), or NULL when v is not a string. Text with an escape
 * is decoded into *tmp, which the caller releases (json_decref). */
static const char *raw_str(struct raw v, json_t **tmp, size_t *n) {
  *tmp = NULL;
  if (!raw_is(v, '"') || v.n < 2) return NULL;
  if (!memchr(v.s, '\\', v.n)) {
    *n = v.n - 2;
    return v.s + 1;
  }
  *tmp = json_loadb(v.s, v.n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
  if (!json_is_string(*tmp)) return NULL;
  *n = json_string_length(*tmp);
  return json_string_value(*tmp);
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
  char seg[RENDER_SEGMENT_MAX];
  put(p, seg, render_path_segment(s, seg));
}

static void put_facts(struct page *p, const struct store_conversation *c, struct raw metadata) {
  PUT_LIT(
      p,
      "<section aria-labelledby=\"facts\"><h2 id=\"facts\">Details</h2>\n<dl class=\"facts\">\n");
  fact_text(p, "Conversation", c->conversation_id);
  fact_text(p, "Email", c->email_id);
  fact_text(p, "Account", c->account_id);
  fact_text(p, "Agent", c->agent_id);
  json_t *tmp;
  size_t n = 0;
  const char *platform = raw_str(raw_get(metadata, "platform"), &tmp, &n);
  if (platform) {
    fact_start(p, "Platform");
    put_text(p, platform, n);
    PUT_LIT(p, "</dd>\n");
  }
  json_decref(tmp);
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
  /* "." and ".." as a path segment are resolved away by a browser (percent-encoded too): their
   * link would lead to /api/v1/audio, so the path is shown as text. */
  const char *id = c->conversation_id;
  bool dot_segment = strcmp(id, ".") == 0 || strcmp(id, "..") == 0;
  if (c->audio_bytes >= 0 && !dot_segment) {
    PUT_LIT(p, "<a href=\"/api/v1/conversations/");
    put_segment(p, id);
    PUT_LIT(p, "/audio\" type=\"audio/mpeg\">Recording (MP3, ");
    put_int(p, (long long)c->audio_bytes);
    PUT_LIT(p, " bytes)</a>");
  } else if (c->audio_bytes >= 0) {
    PUT_LIT(p, "Recording (MP3, ");
    put_int(p, (long long)c->audio_bytes);
    PUT_LIT(p, " bytes): <code>/api/v1/conversations/");
    put_str(p, id); /* "." or ".." */
    PUT_LIT(p, "/audio</code>");
  } else {
    PUT_LIT(p, "<span class=\"muted\">none stored</span>");
  }
  PUT_LIT(p, "</dd>\n</dl></section>\n");
}

/* ---- the summary ---- */

/* A value as text: a string as is, a number or literal as sent, an object or array as compact
 * JSON (whitespace between tokens dropped, numbers as sent, a string with an escape as jansson
 * writes it, so "caf\u00e9" reads café). Nothing for an absent value. */
static void put_value(struct page *p, struct raw v) {
  json_t *tmp;
  size_t n = 0;
  const char *s = raw_str(v, &tmp, &n);
  if (s) put_text(p, s, n);
  json_decref(tmp);
  if (s || !v.s) return;
  if (!raw_is(v, '{') && !raw_is(v, '[')) {
    put_text(p, v.s, v.n);
    return;
  }
  /* Past REPORT_TEXT_MAX bytes put_text cuts the text anyway: stop building there. */
  struct page t = {NULL, 0, 0, 0, true, false, 0};
  size_t i = 0;
  while (i < v.n && t.ok && t.len <= REPORT_TEXT_MAX) {
    size_t run = i;
    while (i < v.n && !memchr("\" \t\r\n", v.s[i], 5)) i++;
    put(&t, v.s + run, i - run);
    if (i >= v.n) break;
    if (v.s[i] != '"') {
      i++; /* whitespace between tokens */
      continue;
    }
    size_t end = json_raw_value_end(v.s, v.n, i);
    char *dump = NULL;
    if (memchr(v.s + i, '\\', end - i)) {
      json_t *js = json_loadb(v.s + i, end - i, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
      if (js) dump = json_dumps(js, JSON_ENCODE_ANY);
      json_decref(js);
    }
    if (dump)
      put_str(&t, dump);
    else
      put(&t, v.s + i, end - i);
    free(dump);
    i = end;
  }
  if (!t.ok) {
    free(t.buf);
    p->ok = false;
    return;
  }
  PUT_LIT(p, "<code>");
  put_text(p, t.buf, t.len);
  PUT_LIT(p, "</code>");
  free(t.buf);
}

/* A key token's text, shown escaped. */
static void put_key(struct page *p, struct raw key) {
  json_t *tmp;
  size_t n = 0;
  const char *s = raw_str(key, &tmp, &n);
  if (s) put_text(p, s, n);
  json_decref(tmp);
}

/* Whether the key token names exactly want. */
static bool key_is(struct raw key, const char *want) {
  json_t *tmp;
  size_t n = 0;
  const char *s = raw_str(key, &tmp, &n);
  bool eq = s && n == strlen(want) && memcmp(s, want, n) == 0;
  json_decref(tmp);
  return eq;
}

/* The number of members (or elements) of v from *pos on. */
static size_t raw_count_rest(struct raw v, size_t pos) {
  struct raw k, x;
  size_t n = 0;
  while (raw_next(v, &pos, &k, &x)) n++;
  return n;
}

/* ElevenLabs' evaluation_criteria_results / data_collection_results: an object of objects,
 * shown as a table of the member name, one field of each entry and its rationale. */
static void put_results(struct page *p, struct raw results, const char *id, const char *title,
                        const char *head, const char *field) {
  size_t pos = 0;
  struct raw key, entry;
  if (!raw_is(results, '{') || !raw_next(results, &pos, &key, &entry)) return;
  PUT_LIT(p, "<h3 id=\"");
  put_str(p, id);
  PUT_LIT(p, "\">");
  put_str(p, title);
  PUT_LIT(p, "</h3>\n<div class=\"scroll\"><table aria-labelledby=\"");
  put_str(p, id);
  PUT_LIT(p, "\"><thead><tr><th scope=\"col\">Name</th><th scope=\"col\">");
  put_str(p, head);
  PUT_LIT(p, "</th><th scope=\"col\">Rationale</th></tr></thead><tbody>\n");
  size_t left = 0;
  do {
    if (full(p)) {
      left = 1 + raw_count_rest(results, pos);
      break;
    }
    PUT_LIT(p, "<tr><th scope=\"row\">");
    put_key(p, key);
    PUT_LIT(p, "</th><td>");
    bool obj = raw_is(entry, '{');
    put_value(p, obj ? raw_get(entry, field) : entry);
    PUT_LIT(p, "</td><td>");
    if (obj) put_value(p, raw_get(entry, "rationale"));
    PUT_LIT(p, "</td></tr>\n");
  } while (raw_next(results, &pos, &key, &entry));
  PUT_LIT(p, "</tbody></table></div>\n");
  if (left) {
    PUT_LIT(p, "<p class=\"muted\">");
    put_int(p, (long long)left);
    PUT_LIT(p, " more not shown (page size limit).</p>\n");
  }
}

static bool is_shown_apart(struct raw key) {
  static const char *const apart[] = {"call_summary_title", "transcript_summary", "call_successful",
                                      "evaluation_criteria_results", "data_collection_results"};
  for (size_t i = 0; i < sizeof apart / sizeof apart[0]; i++)
    if (key_is(key, apart[i])) return true;
  return false;
}

/* A string member of v as text in the given element, when it is one. */
static void put_string_member(struct page *p, struct raw v, const char *key, const char *open,
                              const char *close) {
  json_t *tmp;
  size_t n = 0;
  const char *s = raw_str(raw_get(v, key), &tmp, &n);
  if (s) {
    put_str(p, open);
    put_text(p, s, n);
    put_str(p, close);
  }
  json_decref(tmp);
}

/* summary: the seed's optional object, or an ElevenLabs conversation's data.analysis (its
 * title, summary, outcome and result tables shown as such). Any other member is listed with
 * its value. Nothing at all for null or absent. */
static void put_summary(struct page *p, struct raw summary) {
  if (raw_is_null(summary)) return;
  size_t pos = 0;
  struct raw key, v;
  if (raw_is(summary, '{') && !raw_next(summary, &pos, &key, &v)) return; /* {} */
  PUT_LIT(p, "<section aria-labelledby=\"summary\"><h2 id=\"summary\">Summary</h2>\n");
  if (!raw_is(summary, '{')) {
    PUT_LIT(p, "<p class=\"text\">");
    put_value(p, summary);
    PUT_LIT(p, "</p></section>\n");
    return;
  }
  put_string_member(p, summary, "call_summary_title", "<p class=\"title\">", "</p>\n");
  put_string_member(p, summary, "transcript_summary", "<p class=\"text\">", "</p>\n");
  struct raw outcome = raw_get(summary, "call_successful");
  if (!raw_is_null(outcome)) {
    PUT_LIT(p, "<p><strong>Call outcome:</strong> ");
    isolate_begin(p, true);
    put_value(p, outcome);
    isolate_end(p, true);
    PUT_LIT(p, "</p>\n");
  }
  put_results(p, raw_get(summary, "evaluation_criteria_results"), "criteria", "Evaluation criteria",
              "Result", "result");
  put_results(p, raw_get(summary, "data_collection_results"), "collected", "Data collected",
              "Value", "value");
  bool open = false;
  pos = 0;
  while (raw_next(summary, &pos, &key, &v)) {
    if (is_shown_apart(key) || raw_is_null(v)) continue;
    if (full(p)) break;
    if (!open) {
      PUT_LIT(p, "<dl class=\"facts\">\n");
      open = true;
    }
    PUT_LIT(p, "<dt>");
    put_key(p, key);
    PUT_LIT(p, "</dt><dd class=\"text\">");
    put_value(p, v);
    PUT_LIT(p, "</dd>\n");
  }
  if (open) PUT_LIT(p, "</dl>\n");
  PUT_LIT(p, "</section>\n");
}

/* ---- the transcript ---- */

static void put_turn(struct page *p, struct raw turn, const struct store_conversation *c,
                     size_t index) {
  json_t *tmp;
  size_t n = 0;
  const char *speaker = raw_str(raw_get(turn, "speaker"), &tmp, &n);
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
  else if (speaker && n) {
    isolate_begin(p, true);
    put_text(p, speaker, n);
    isolate_end(p, true);
  } else
    PUT_LIT(p, "Unknown speaker");
  PUT_LIT(p, "</span>");
  json_decref(tmp);
  const char *ts = raw_str(raw_get(turn, "timestamp"), &tmp, &n);
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
    isolate_begin(p, true);
    put_text(p, ts, n); /* kept as sent when it is not a time we can read */
    isolate_end(p, true);
    PUT_LIT(p, "</span>");
  }
  json_decref(tmp);
  PUT_LIT(p, "<span class=\"visually-hidden\"> (message ");
  put_int(p, (long long)index + 1);
  PUT_LIT(p, ")</span></p>\n<p class=\"text\">");
  struct raw content = raw_get(turn, "content");
  if (!raw_is_null(content)) put_value(p, content);
  PUT_LIT(p, "</p></li>\n");
}

static void put_transcript(struct page *p, const struct store_conversation *c,
                           struct raw transcript, bool have_body) {
  PUT_LIT(p, "<section aria-labelledby=\"transcript\"><h2 id=\"transcript\">Transcript</h2>\n");
  size_t pos = 0;
  struct raw key, turn;
  if (!have_body) {
    PUT_LIT(p, "<p class=\"muted\">The transcript could not be read.</p></section>\n");
    return;
  }
  if (!raw_is(transcript, '[') || !raw_next(transcript, &pos, &key, &turn)) {
    PUT_LIT(p, "<p class=\"muted\">No messages.</p></section>\n");
    return;
  }
  PUT_LIT(p, "<ol class=\"dialogue\">\n");
  size_t i = 0, left = 0;
  do {
    if (full(p)) {
      left = 1 + raw_count_rest(transcript, pos);
      break;
    }
    put_turn(p, turn, c, i++);
  } while (raw_next(transcript, &pos, &key, &turn));
  PUT_LIT(p, "</ol>\n");
  if (left) {
    PUT_LIT(p, "<p class=\"note\" role=\"note\">Only the first ");
    put_int(p, (long long)i);
    PUT_LIT(p, " of ");
    put_int(p, (long long)(i + left));
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

const char *const report_style = STYLE;
const size_t report_style_len = sizeof STYLE - 1;

static void put_page(struct page *p, const struct store_conversation *c) {
  /* Shown only when it is JSON (an integer beyond 64 bits is; its digits are shown as sent). */
  bool have_body = false;
  if (c->body) {
    json_error_t err;
    json_t *root = json_loadb(c->body, c->body_len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &err);
    if (!root && json_error_code(&err) == json_error_numeric_overflow)
      root = json_loadb(c->body, c->body_len,
                        JSON_ALLOW_NUL | JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, &err);
    have_body = root != NULL;
    json_decref(root);
  }
  struct raw body = have_body ? (struct raw){c->body, c->body_len} : NONE;

  PUT_LIT(p,
          "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
          "<meta name=\"referrer\" content=\"no-referrer\">\n<title>Conversation ");
  isolate_begin(p, false); /* no markup in a title */
  put_cstr(p, c->conversation_id);
  isolate_end(p, false);
  PUT_LIT(p, " \xe2\x80\x94 report</title>\n<style>");
  put(p, STYLE, sizeof STYLE - 1);
  PUT_LIT(p, "</style>\n</head>\n<body>\n<header><h1>Conversation report</h1>\n<p class=\"sub\">");
  put_cstr(p, c->conversation_id);
  PUT_LIT(p, "</p></header>\n<main>\n");
  put_facts(p, c, raw_get(body, "metadata"));
  put_summary(p, raw_get(body, "summary"));
  if (c->body) put_transcript(p, c, raw_get(body, "transcript"), have_body);
  PUT_LIT(p, "</main>\n</body>\n</html>\n");
}

char *report_render_html(const struct store_conversation *c, size_t max_bytes, size_t *len) {
  struct page p = {NULL, 0, 0, max_bytes, true, false, 0};
  put_page(&p, c);
  if (!p.ok) {
    free(p.buf);
    return NULL;
  }
  *len = p.len;
  return p.buf;
}
