/* Structured logging. Each line is built in one buffer and written with one write(2),
 * so concurrent threads never interleave within a line. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/timeutil.h"

static enum log_level current_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warning", "error"};

bool log_parse_level(const char *s, enum log_level *out) {
  static const struct {
    const char *name;
    enum log_level level;
  } names[] = {
      {"debug", LOG_DEBUG},  {"info", LOG_INFO},   {"warning", LOG_WARNING},
      {"warn", LOG_WARNING}, {"error", LOG_ERROR}, {"critical", LOG_ERROR},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (strcasecmp(s, names[i].name) == 0) {
      *out = names[i].level;
      return true;
    }
  }
  return false;
}

void log_set_level(enum log_level level) { current_level = level; }

bool log_enabled(enum log_level level) { return level >= current_level; }

/* Appends s JSON-escaped into buf[*pos..cap); truncates silently (a log line is not data). */
static void append_escaped(char *buf, size_t cap, size_t *pos, const char *s) {
  for (; s && *s && *pos + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      buf[(*pos)++] = '\\';
      buf[(*pos)++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      *pos += (size_t)snprintf(buf + *pos, cap - *pos, "\\u%04x", c);
    } else {
      buf[(*pos)++] = (char)c;
    }
  }
}

static void append_raw(char *buf, size_t cap, size_t *pos, const char *s) {
  size_t n = strlen(s);
  if (*pos + n >= cap) n = cap - *pos - 1;
  memcpy(buf + *pos, s, n);
  *pos += n;
}

static void write_line(char *buf, size_t cap, size_t pos) {
  if (pos + 2 > cap) pos = cap - 2;
  buf[pos++] = '\n';
  ssize_t off = 0;
  while ((size_t)off < pos) {
    ssize_t n = write(STDERR_FILENO, buf + off, pos - (size_t)off);
    if (n <= 0) return;
    off += n;
  }
}

static void append_head(char *buf, size_t cap, size_t *pos, enum log_level level) {
  char now[40];
  time_format_us(time_now_us(), true, now, sizeof now);
  append_raw(buf, cap, pos, "{\"time\":\"");
  append_raw(buf, cap, pos, now);
  append_raw(buf, cap, pos, "\",\"level\":\"");
  append_raw(buf, cap, pos, level_names[level]);
  append_raw(buf, cap, pos, "\"");
}

void log_msg(enum log_level level, const char *fmt, ...) {
  if (!log_enabled(level)) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  char buf[2048];
  size_t pos = 0;
  append_head(buf, sizeof buf, &pos, level);
  append_raw(buf, sizeof buf, &pos, ",\"msg\":\"");
  append_escaped(buf, sizeof buf, &pos, msg);
  append_raw(buf, sizeof buf, &pos, "\"}");
  write_line(buf, sizeof buf, pos);
}

void log_request_line(const struct log_request *r) {
  if (!log_enabled(LOG_INFO)) return;
  char buf[2048];
  size_t pos = 0;
  char num[64];
  append_head(buf, sizeof buf, &pos, LOG_INFO);
  append_raw(buf, sizeof buf, &pos, ",\"msg\":\"request\",\"request_id\":\"");
  append_escaped(buf, sizeof buf, &pos, r->request_id);
  append_raw(buf, sizeof buf, &pos, "\",\"method\":\"");
  append_escaped(buf, sizeof buf, &pos, r->method);
  append_raw(buf, sizeof buf, &pos, "\",\"path\":\"");
  append_escaped(buf, sizeof buf, &pos, r->path);
  snprintf(num, sizeof num, "\",\"status\":%u,\"duration_ms\":%.3f,\"client_ip\":\"", r->status,
           r->duration_ms);
  append_raw(buf, sizeof buf, &pos, num);
  append_escaped(buf, sizeof buf, &pos, r->client_ip);
  append_raw(buf, sizeof buf, &pos, "\"}");
  write_line(buf, sizeof buf, pos);
}
