/* The printable HTML report of one stored conversation (GET .../{id}/report): who, when, how
 * long, the status, the summary/analysis, the transcript as a dialogue with times and a link
 * to the audio. Pure: it reads the stored conversation (and its stored webhook body) and writes
 * text; it never touches a database or a socket.
 *
 * Every byte that came from a client is escaped for HTML text and attributes alike (& < > " '),
 * invalid UTF-8 and control characters become U+FFFD, and the page holds no script, no event
 * handler attribute and no external resource: the endpoint adds a Content-Security-Policy that
 * forbids scripts as a second line of defence. */
#ifndef GSR_MODEL_REPORT_H
#define GSR_MODEL_REPORT_H

#include <stddef.h>

#include "model/stored.h"

/* At most this many bytes of one text (a message, a summary value) are shown; the rest is cut
 * at a character boundary and marked. */
#define REPORT_TEXT_MAX (64 * 1024)
/* The page the endpoint asks for stops adding transcript turns past this size and says how
 * many were left out (the whole transcript stays available as JSON). */
#define REPORT_PAGE_MAX (8 * 1024 * 1024)

/* Renders c as a complete HTML document (UTF-8). c->body is the stored webhook body (seed-shaped
 * ConversationEndData; an ElevenLabs conversation's derived body carries data.analysis as
 * "summary") or NULL: then the page has no transcript or summary. Once the page has passed
 * max_bytes, no further transcript turn or summary entry is added; the result stays below
 * max_bytes + REPORT_OVERSHOOT_MAX. Returns a malloc'ed NUL-terminated text and its length in
 * *len, or NULL when out of memory. */
#define REPORT_OVERSHOOT_MAX (20 * REPORT_TEXT_MAX)
/* The text of the page's one <style> element, always the same: the dashboard shows reports in
 * a frame that keeps its own Content-Security-Policy, which allows this style by its hash. */
extern const char *const report_style;
extern const size_t report_style_len;

char *report_render_html(const struct store_conversation *c, size_t max_bytes, size_t *len);

#endif
