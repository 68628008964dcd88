/* Structured logging: one JSON object per line on stderr, never secrets or bodies. */
#ifndef GSR_LOG_H
#define GSR_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARNING, LOG_ERROR };

/* Parses "debug", "info", "warning"/"warn", "error" (any case). */
__attribute__((warn_unused_result)) bool log_parse_level(const char *s, enum log_level *out);
void log_set_level(enum log_level level);
bool log_enabled(enum log_level level);

/* Starts the output thread: from then on lines are written by it, many at a time, and a
 * thread that logs never waits on stderr (past 1 MiB waiting, lines are dropped and counted,
 * and the count is logged). Before it and after log_stop, each line is written by the thread
 * that logs it. False when the thread or its buffers cannot be had (lines are then written
 * directly). */
bool log_start(void);
/* Writes every line still waiting, then stops the thread (also at exit()). */
void log_stop(void);

/* Every line is one JSON object in valid UTF-8, whatever the values hold: a byte that is not
 * UTF-8 is written as the text \xNN, and a value too long for its budget is cut (never inside
 * a character) and followed by "<field>_truncated":true. */

/* A free-form event: {"time","level","msg"}. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The one line written per HTTP request. request_id, status, duration_ms and client_ip are
 * always present, however long or strange the method and path are. */
struct log_request {
  const char *request_id;
  const char *method;
  const char *path;
  unsigned status;
  double duration_ms;
  const char *client_ip;
};
void log_request_line(const struct log_request *r);

#endif
