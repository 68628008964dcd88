/* Unit tests for model/report: every field a client sent is escaped (text and attributes), a
 * transcript holding <script> stays text, invalid UTF-8 and control characters are replaced,
 * empty and missing fields read "unknown", and a very large transcript is bounded. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"
#include "model/report.h"

static void fill(struct store_conversation *c, const char *body) {
  memset(c, 0, sizeof *c);
  snprintf(c->conversation_id, sizeof c->conversation_id, "conv-1");
  snprintf(c->email_id, sizeof c->email_id, "u@example.com");
  snprintf(c->account_id, sizeof c->account_id, "acc");
  snprintf(c->agent_id, sizeof c->agent_id, "agent-1");
  snprintf(c->status, sizeof c->status, "completed");
  c->has_start = true;
  c->start_us = 1705314600LL * 1000000; /* 2024-01-15T10:30:00Z */
  c->duration = 300;
  c->message_count = 2;
  c->processed_us = 1705314900LL * 1000000;
  c->audio_bytes = -1;
  c->body = (char *)body;
  c->body_len = body ? strlen(body) : 0;
}

static char *render(const struct store_conversation *c, size_t max, size_t *len) {
  char *html = report_render_html(c, max, len);
  assert_non_null(html);
  assert_int_equal(strlen(html), *len);
  return html;
}

/* The page's own elements: any other '<' in the output would be markup from the data. */
static const char *const TAGS[] = {
    "!DOCTYPE", "html",   "head",    "meta",  "title", "style", "body", "header", "h1", "h2", "h3",
    "p",        "main",   "section", "dl",    "dt",    "dd",    "span", "time",   "a",  "ol", "li",
    "code",     "strong", "div",     "table", "thead", "tbody", "tr",   "th",     "td", "bdi"};

static void check_markup(const char *html, size_t len) {
  assert_true(utf8_valid(html, len));
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)html[i];
    /* no control character but tab and newline */
    assert_true(c >= 0x20 || c == '\n' || c == '\t' || c == '\r');
    assert_true(c != 0x7f);
    if (c != '<') continue;
    const char *name = html + i + 1 + (html[i + 1] == '/');
    size_t n = strspn(name, "!ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789");
    bool known = false;
    for (size_t k = 0; k < sizeof TAGS / sizeof TAGS[0]; k++)
      if (strlen(TAGS[k]) == n && memcmp(TAGS[k], name, n) == 0) known = true;
    if (!known) fail_msg("unexpected markup at %zu: %.40s", i, html + i);
    /* no event handler attribute in any tag */
    const char *end = strchr(html + i, '>');
    assert_non_null(end);
    for (const char *a = html + i; a < end; a++)
      if (a[0] == ' ' && (a[1] == 'o' || a[1] == 'O') && (a[2] == 'n' || a[2] == 'N'))
        fail_msg("event handler at %zu: %.40s", i, html + i);
  }
  /* inside the style element nothing of the data can appear; outside it, no script */
  assert_null(strstr(html, "<script"));
  assert_null(strstr(html, "<SCRIPT"));
}

static size_t count(const char *hay, const char *needle) {
  size_t n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
  return n;
}

/* Each field carries a marker and the five characters HTML must escape. */
#define NASTY "<>\"'&"
#define ESCAPED "&lt;&gt;&quot;&#39;&amp;"
#define JNASTY "<>\\\"'&" /* NASTY inside a JSON string */

static void test_every_field_is_escaped(void **state) {
  (void)state;
  static const char body[] =
      "{\"metadata\":{\"platform\":\"Mpl" JNASTY
      "\"},"
      "\"summary\":{\"call_summary_title\":\"Mti" JNASTY "\",\"transcript_summary\":\"Mts" JNASTY
      "\",\"call_successful\":\"Mcs" JNASTY
      "\","
      "\"evaluation_criteria_results\":{\"Mek" JNASTY "\":{\"result\":\"Mer" JNASTY
      "\",\"rationale\":\"Mra" JNASTY
      "\"}},"
      "\"data_collection_results\":{\"Mdk" JNASTY "\":{\"value\":\"Mdv" JNASTY
      "\",\"rationale\":\"Mdr" JNASTY
      "\"}},"
      "\"Mok" JNASTY "\":\"Mov" JNASTY "\",\"Mob\":{\"Mnk" JNASTY "\":\"Mnv" JNASTY
      "\"}},"
      "\"transcript\":[{\"speaker\":\"Msp" JNASTY "\",\"timestamp\":\"Mts2" JNASTY
      "\",\"content\":\"Mco" JNASTY "\"}]}";
  struct store_conversation c;
  fill(&c, body);
  snprintf(c.conversation_id, sizeof c.conversation_id, "Mid" NASTY);
  snprintf(c.email_id, sizeof c.email_id, "Mem" NASTY);
  snprintf(c.account_id, sizeof c.account_id, "Mac" NASTY);
  snprintf(c.agent_id, sizeof c.agent_id, "Mag" NASTY);
  snprintf(c.status, sizeof c.status, "Mst" NASTY);
  snprintf(c.failure_reason, sizeof c.failure_reason, "Mfr" NASTY);
  c.audio_bytes = 10;
  size_t len;
  char *html = render(&c, REPORT_PAGE_MAX, &len);
  check_markup(html, len);
  static const char *const markers[] = {"Mid", "Mem", "Mac", "Mag", "Mst", "Mfr",  "Mpl",
                                        "Mti", "Mts", "Mcs", "Mek", "Mer", "Mra",  "Mdk",
                                        "Mdv", "Mdr", "Mok", "Mov", "Msp", "Mts2", "Mco"};
  for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++) {
    char want[64], raw[16];
    snprintf(want, sizeof want, "%s" ESCAPED, markers[i]);
    snprintf(raw, sizeof raw, "%s<", markers[i]);
    if (!strstr(html, want)) fail_msg("%s not escaped", markers[i]);
    assert_null(strstr(html, raw));
  }
  /* a nested object is shown as JSON text, escaped too */
  assert_non_null(strstr(html, "{&quot;Mnk&lt;&gt;\\&quot;&#39;&amp;&quot;"));
  /* the id appears in the title, the heading and as a percent-encoded link */
  assert_true(count(html, "Mid" ESCAPED) >= 2);
  assert_non_null(strstr(html, "href=\"/api/v1/conversations/Mid%3C%3E%22%27%26/audio\""));
  free(html);
}

static void test_script_in_the_transcript_stays_text(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c,
       "{\"transcript\":[{\"timestamp\":\"2024-01-15T10:30:04Z\",\"speaker\":\"user\","
       "\"content\":\"<script>alert(1)</script>\"},{\"timestamp\":\"2024-01-15T10:31:02.5Z\","
       "\"speaker\":\"agent\",\"content\":\"</p></li></ol><SCRIPT src=//x></SCRIPT>\"}]}");
  size_t len;
  char *html = render(&c, REPORT_PAGE_MAX, &len);
  check_markup(html, len);
  assert_non_null(strstr(html, "<p class=\"text\">&lt;script&gt;alert(1)&lt;/script&gt;</p>"));
  assert_non_null(strstr(html, "&lt;/p&gt;&lt;/li&gt;&lt;/ol&gt;&lt;SCRIPT src=//x&gt;"));
  assert_non_null(strstr(html, "<span class=\"speaker\">User</span>"));
  assert_non_null(strstr(html, "<time datetime=\"2024-01-15T10:30:04Z\">2024-01-15 10:30:04 UTC"));
  assert_non_null(strstr(html, "<time datetime=\"2024-01-15T10:31:02.500000Z\">"));
  assert_non_null(strstr(html, ">+0:04<"));
  assert_non_null(strstr(html, ">+1:02<"));
  assert_int_equal(count(html, "<li class=\"turn "), 2);
  free(html);
}

static void test_controls_and_invalid_utf8_are_replaced(void **state) {
  (void)state;
  /* NUL, C0, DEL and C1 (U+0085) escaped in JSON; tab and newline kept */
  struct store_conversation c;
  fill(&c,
       "{\"transcript\":[{\"speaker\":\"user\",\"content\":\"a\\u0000b\\u0001c\\u007fd\\u0085e"
       "\\tf\\ng\\u00e9\"}]}");
  c.email_id[0] = '\xff'; /* bytes the store should never hold, shown as U+FFFD anyway */
  c.email_id[1] = '\x1b';
  c.email_id[2] = '\0';
  size_t len;
  char *html = render(&c, REPORT_PAGE_MAX, &len);
  check_markup(html, len);
  assert_non_null(strstr(html,
                         "a\xef\xbf\xbd"
                         "b\xef\xbf\xbd"
                         "c\xef\xbf\xbd"
                         "d\xef\xbf\xbd"
                         "e\tf\ng\xc3\xa9"));
  assert_non_null(strstr(html, "<dd>\xef\xbf\xbd\xef\xbf\xbd</dd>"));
  free(html);
}

static void test_empty_and_missing_fields(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c, NULL); /* no body: no summary, no transcript section */
  c.email_id[0] = c.account_id[0] = c.agent_id[0] = '\0';
  c.has_start = false;
  c.duration = 0;
  c.message_count = 0;
  size_t len;
  char *html = render(&c, REPORT_PAGE_MAX, &len);
  check_markup(html, len);
  assert_int_equal(count(html, "<span class=\"muted\">unknown</span>"), 5);
  assert_non_null(strstr(html, "<dt>Duration</dt><dd>0 s</dd>"));
  assert_non_null(strstr(html, "none stored"));
  assert_null(strstr(html, "Transcript"));
  assert_null(strstr(html, "Summary"));
  assert_null(strstr(html, "Failure reason"));
  free(html);

  static const struct {
    const char *body, *expect;
  } cases[] = {
      {"{}", "No messages."},
      {"{\"transcript\":[],\"summary\":null}", "No messages."},
      {"{\"transcript\":\"nope\",\"summary\":{}}", "No messages."},
      {"not json", "The transcript could not be read."},
      {"{\"transcript\":[1,null,{},{\"speaker\":7,\"content\":3,\"timestamp\":\"\"}]}",
       "Unknown speaker"},
      {"{\"transcript\":[{\"speaker\":\"robot\",\"content\":null,\"timestamp\":\"yesterday\"}]}",
       "<span class=\"speaker\"><bdi>robot</bdi></span> <span class=\"muted\"><bdi>yesterday</bdi>"
       "</span>"},
      {"{\"summary\":\"just text\",\"transcript\":[]}", "<p class=\"text\">just text</p>"},
      {"{\"summary\":{\"n\":123456789012345678901234567890},\"transcript\":[]}",
       "<dt>n</dt><dd class=\"text\">123456789012345678901234567890</dd>"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fill(&c, cases[i].body);
    html = render(&c, REPORT_PAGE_MAX, &len);
    check_markup(html, len);
    if (!strstr(html, cases[i].expect)) fail_msg("case %zu: %s missing", i, cases[i].expect);
    free(html);
  }
}

static void test_facts_and_formats(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c,
       "{\"metadata\":{\"platform\":\"web\"},\"transcript\":[{\"speaker\":\"agent\","
       "\"timestamp\":\"2024-01-15T10:29:59Z\",\"content\":\"early\"},{\"speaker\":\"user\","
       "\"timestamp\":\"2024-01-15T11:32:03+00:00\",\"content\":\"late\"}]}");
  c.duration = 3723;
  snprintf(c.conversation_id, sizeof c.conversation_id, "a b/c");
  snprintf(c.failure_reason, sizeof c.failure_reason, "busy");
  c.audio_bytes = 5063;
  size_t len;
  char *html = render(&c, REPORT_PAGE_MAX, &len);
  check_markup(html, len);
  assert_non_null(strstr(html, "<html lang=\"en\">"));
  assert_non_null(strstr(html, "<meta name=\"viewport\""));
  assert_non_null(strstr(html, "@media print"));
  assert_non_null(strstr(html, "<dt>Duration</dt><dd>1 h 2 min 3 s</dd>"));
  assert_non_null(strstr(html, "<dt>Platform</dt><dd>web</dd>"));
  assert_non_null(strstr(html, "<dt>Failure reason</dt><dd>busy</dd>"));
  assert_non_null(strstr(html, "<dt>Ended</dt><dd><time datetime=\"2024-01-15T11:32:03Z\">"));
  assert_non_null(strstr(html, "href=\"/api/v1/conversations/a%20b%2Fc/audio\""));
  assert_non_null(strstr(html, "5063 bytes"));
  assert_non_null(strstr(html,
                         ">\xe2\x88\x92"
                         "0:01<")); /* before the start */
  assert_non_null(strstr(html, ">+1:02:03<"));
  free(html);
}

static void test_elevenlabs_analysis(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c,
       "{\"transcript\":[],\"summary\":{\"call_successful\":\"success\","
       "\"call_summary_title\":\"Refund\",\"transcript_summary\":\"Two charges.\","
       "\"evaluation_criteria_results\":{\"solved\":{\"result\":\"success\","
       "\"rationale\":\"done\"}},\"data_collection_results\":{\"amount\":{\"value\":49.0,"
       "\"rationale\":\"said so\"},\"ok\":{\"value\":true},\"ratio\":{\"value\":0.1}},"
       "\"extra\":[1,2]}}");
  size_t len;
  char *html = render(&c, REPORT_PAGE_MAX, &len);
  check_markup(html, len);
  assert_non_null(strstr(html, "<p class=\"title\">Refund</p>"));
  assert_non_null(strstr(html, "<p class=\"text\">Two charges.</p>"));
  assert_non_null(strstr(html, "<strong>Call outcome:</strong> <bdi>success</bdi>"));
  assert_non_null(strstr(html, "<th scope=\"row\">solved</th><td>success</td><td>done</td></tr>"));
  assert_non_null(strstr(html, "<th scope=\"row\">amount</th><td>49.0</td><td>said so</td></tr>"));
  assert_non_null(strstr(html, "<th scope=\"row\">ok</th><td>true</td><td></td></tr>"));
  assert_non_null(strstr(html, "<td>0.1</td>"));
  assert_non_null(strstr(html, "<dt>extra</dt><dd class=\"text\"><code>[1,2]</code></dd>"));
  assert_null(strstr(html, "<dt>call_successful</dt>")); /* shown once, as the outcome */
  free(html);
}

/* Client text beside other text (a speaker's name, an unreadable timestamp, the call outcome,
 * the id in the title) is a bidi isolate: a U+202E in it cannot reorder its neighbours, and an
 * unmatched U+2069 in it cannot close the isolate early (it becomes U+FFFD); isolates it opens
 * are closed before the isolate ends. */
#define RLO "\xe2\x80\xae"
#define RLI "\xe2\x81\xa7"
#define FSI "\xe2\x81\xa8"
#define PDI "\xe2\x81\xa9"
static void test_client_text_is_bidi_isolated(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c,
       "{\"summary\":{\"call_successful\":\"\\u202eok\"},\"transcript\":["
       "{\"speaker\":\"\\u202eevil\",\"timestamp\":\"\\u202enot a time\",\"content\":\"x\"},"
       "{\"speaker\":\"a\\u2069\\u202eb\",\"content\":\"y\"},"
       "{\"speaker\":\"\\u2067x\\u2067y\\u2069\",\"content\":\"z\"}]}");
  snprintf(c.conversation_id, sizeof c.conversation_id, RLO "id" PDI);
  size_t len;
  char *html = render(&c, REPORT_PAGE_MAX, &len);
  check_markup(html, len);
  assert_non_null(
      strstr(html, "<title>Conversation " FSI RLO "id\xef\xbf\xbd" PDI " \xe2\x80\x94 report"));
  assert_non_null(strstr(html, "<span class=\"speaker\"><bdi>" RLO "evil</bdi></span>"));
  assert_non_null(strstr(html, "<span class=\"muted\"><bdi>" RLO "not a time</bdi></span>"));
  assert_non_null(strstr(html, "<strong>Call outcome:</strong> <bdi>" RLO "ok</bdi>"));
  assert_non_null(strstr(html, "<bdi>a\xef\xbf\xbd" RLO "b</bdi>"));
  assert_non_null(strstr(html, "<bdi>" RLI "x" RLI "y" PDI PDI "</bdi>"));
  /* the fixed labels need no isolate */
  fill(&c, "{\"transcript\":[{\"speaker\":\"user\",\"content\":\"\\u202ex\"}]}");
  free(html);
  html = render(&c, REPORT_PAGE_MAX, &len);
  assert_non_null(strstr(html, "<span class=\"speaker\">User</span>"));
  free(html);
}

/* The ids "." and ".." would make the audio link a dot segment a browser resolves away
 * (/api/v1/conversations/../audio is /api/v1/audio): their audio path is shown as text. */
static void test_dot_ids_get_no_audio_link(void **state) {
  (void)state;
  static const char *const ids[] = {".", ".."};
  for (size_t i = 0; i < 2; i++) {
    struct store_conversation c;
    fill(&c, "{}");
    snprintf(c.conversation_id, sizeof c.conversation_id, "%s", ids[i]);
    c.audio_bytes = 10;
    size_t len;
    char *html = render(&c, REPORT_PAGE_MAX, &len);
    check_markup(html, len);
    assert_null(strstr(html, "href="));
    char want[128];
    snprintf(want, sizeof want,
             "<dt>Audio</dt><dd>Recording (MP3, 10 bytes): <code>/api/v1/conversations/%s/audio"
             "</code></dd>",
             ids[i]);
    if (!strstr(html, want)) fail_msg("%s missing", want);
    free(html);
  }
  /* "..." is no dot segment: it keeps its link */
  struct store_conversation c;
  fill(&c, "{}");
  snprintf(c.conversation_id, sizeof c.conversation_id, "...");
  c.audio_bytes = 10;
  size_t len;
  char *html = render(&c, REPORT_PAGE_MAX, &len);
  assert_non_null(strstr(html, "<a href=\"/api/v1/conversations/.../audio\""));
  free(html);
}

/* Numbers are shown with the digits that were sent: an integer beyond 64 bits anywhere in the
 * body changes no other number, a real keeps its 17 digits, 5 stays 5 and 49.0 stays 49.0. */
static void test_numbers_are_shown_as_sent(void **state) {
  (void)state;
  struct store_conversation c;
  fill(&c,
       "{\"transcript\":[{\"speaker\":\"user\",\"content\":0.30000000000000004},"
       "{\"speaker\":\"agent\",\"content\":-1.5E+300}],\"summary\":{"
       "\"big\":123456789012345678901,\"five\":5,\"real\":49.0,\"tiny\":1e-7,"
       "\"nested\" : { \"n\" : 12345678901234567890123 , \"s\" : \"caf\\u00e9 \\\"x\\\"\" ,"
       "\"a\":[ 1 , 2.50 ] },"
       "\"data_collection_results\":{\"amount\":{\"value\":0.1000,\"rationale\":7}}}}");
  size_t len;
  char *html = render(&c, REPORT_PAGE_MAX, &len);
  check_markup(html, len);
  assert_non_null(strstr(html, "<dt>big</dt><dd class=\"text\">123456789012345678901</dd>"));
  assert_non_null(strstr(html, "<dt>five</dt><dd class=\"text\">5</dd>"));
  assert_non_null(strstr(html, "<dt>real</dt><dd class=\"text\">49.0</dd>"));
  assert_non_null(strstr(html, "<dt>tiny</dt><dd class=\"text\">1e-7</dd>"));
  /* a nested value: compact JSON, its numbers as sent, its strings as before */
  assert_non_null(strstr(html,
                         "<dd class=\"text\"><code>{&quot;n&quot;:12345678901234567890123,"
                         "&quot;s&quot;:&quot;caf\xc3\xa9 \\&quot;x\\&quot;&quot;,"
                         "&quot;a&quot;:[1,2.50]}</code></dd>"));
  assert_non_null(strstr(html, "<th scope=\"row\">amount</th><td>0.1000</td><td>7</td></tr>"));
  assert_non_null(strstr(html, "<p class=\"text\">0.30000000000000004</p>"));
  assert_non_null(strstr(html, "<p class=\"text\">-1.5E+300</p>"));
  free(html);
}

/* A JSON body with n turns of content `each` bytes of '<' (each escapes to 4 bytes). */
static char *big_body(size_t n, size_t each, size_t *len) {
  size_t cap = 64 + n * (each + 80);
  char *b = malloc(cap);
  assert_non_null(b);
  size_t w = (size_t)snprintf(b, cap, "{\"transcript\":[");
  for (size_t i = 0; i < n; i++) {
    w += (size_t)snprintf(b + w, cap - w, "%s{\"speaker\":\"%s\",\"content\":\"", i ? "," : "",
                          i % 2 ? "agent" : "user");
    memset(b + w, '<', each);
    w += each;
    w += (size_t)snprintf(b + w, cap - w, "\"}");
  }
  w += (size_t)snprintf(b + w, cap - w, "]}");
  *len = w;
  return b;
}

static void test_large_transcript_is_bounded(void **state) {
  (void)state;
  size_t blen;
  char *body = big_body(4000, 1000, &blen); /* 4 MB in, 16 MB escaped */
  struct store_conversation c;
  fill(&c, NULL);
  c.body = body;
  c.body_len = blen;
  const size_t max = 1024 * 1024;
  size_t len;
  char *html = render(&c, max, &len);
  assert_true(len <= max + REPORT_OVERSHOOT_MAX);
  check_markup(html, len);
  size_t shown = count(html, "<li class=\"turn ");
  assert_true(shown > 100 && shown < 4000);
  char note[128];
  snprintf(note, sizeof note, "Only the first %zu of 4000 messages are shown", shown);
  assert_non_null(strstr(html, note));
  assert_non_null(strstr(html, "/api/v1/conversations/conv-1?include=transcript"));
  assert_non_null(strstr(html, "</html>\n"));
  free(html);
  free(body);

  /* one huge message: cut at REPORT_TEXT_MAX source bytes, on a character boundary */
  size_t n = 100000;
  char *big = malloc(n * 2 + 64);
  assert_non_null(big);
  size_t w = (size_t)snprintf(big, 64, "{\"transcript\":[{\"content\":\"x");
  for (size_t i = 0; i < n; i++) {
    big[w++] = '\xc3';
    big[w++] = '\xa9'; /* é: the cut falls inside one */
  }
  memcpy(big + w, "\"}]}", 5);
  fill(&c, big);
  html = render(&c, REPORT_PAGE_MAX, &len);
  check_markup(html, len);
  assert_true(len < REPORT_TEXT_MAX + 16 * 1024);
  assert_non_null(strstr(html, "\xc3\xa9 [\xe2\x80\xa6]</p>"));
  free(html);
  free(big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_field_is_escaped),
      cmocka_unit_test(test_script_in_the_transcript_stays_text),
      cmocka_unit_test(test_controls_and_invalid_utf8_are_replaced),
      cmocka_unit_test(test_empty_and_missing_fields),
      cmocka_unit_test(test_facts_and_formats),
      cmocka_unit_test(test_elevenlabs_analysis),
      cmocka_unit_test(test_numbers_are_shown_as_sent),
      cmocka_unit_test(test_dot_ids_get_no_audio_link),
      cmocka_unit_test(test_client_text_is_bidi_isolated),
      cmocka_unit_test(test_large_transcript_is_bounded),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
