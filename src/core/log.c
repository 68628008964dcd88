/* Structured logging. Each line is built in one buffer and written whole, so concurrent threads
 * never interleave within a line. Every line is valid JSON (and valid UTF-8) whatever the
 * logged values hold: see struct line. While the output thread runs (log_start), lines are
 * copied into its buffer and it writes them, many to a write(2): a thread that logs never
 * waits on stderr (a slow pipe, a disk behind on its writes). */
#include "core/log.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/timeutil.h"
#include "core/utf8.h"

/* Output budgets (bytes of escaped text) per value, and the line that holds them all with room
 * for the keys, the time, the numbers and the truncation markers. */
#define LOG_MSG_MAX 1024 /* formatted text of a free-form message */
#define LOG_MSG_OUT_MAX 3072
#define LOG_ID_OUT_MAX 256 /* request id, client IP, method */
#define LOG_PATH_OUT_MAX 2048
#define LOG_LINE_MAX 4096
_Static_assert(LOG_MSG_OUT_MAX + 512 <= LOG_LINE_MAX, "a message line fits");
_Static_assert(3 * LOG_ID_OUT_MAX + LOG_PATH_OUT_MAX + 768 <= LOG_LINE_MAX, "a request line fits");

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

/* A line under construction. Every value is written with an output budget, and the budgets
 * of a line add up to less than its capacity, so the closing brace always fits: a line is
 * valid JSON whatever a client sent (overlong values, invalid UTF-8, control bytes). */
struct line {
  char buf[LOG_LINE_MAX];
  size_t pos;
};

static void put_raw(struct line *l, const char *s) {
  size_t n = strlen(s);
  /* Keys and punctuation are ours and budgeted for; never overrun even if that is wrong. */
  if (n > sizeof l->buf - 2 - l->pos) n = sizeof l->buf - 2 - l->pos;
  memcpy(l->buf + l->pos, s, n);
  l->pos += n;
}

/* Appends the len bytes of s as the inside of a JSON string, in at most max bytes of output.
 * Quotes, backslashes and control bytes are escaped; a byte that is not part of valid UTF-8 is
 * written as the text \xNN (so the line stays UTF-8 and the byte stays visible). Returns false
 * when s did not fit and was cut (never inside a character or an escape). */
static bool put_escaped(struct line *l, const char *s, size_t len, size_t max) {
  static const char hex[] = "0123456789abcdef";
  size_t room = sizeof l->buf - 2 - l->pos;
  if (max > room) max = room;
  char *out = l->buf + l->pos;
  size_t o = 0;
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    char esc[8];
    size_t elen, step = 1;
    const unsigned char c = p[i];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      elen = 2;
    } else if (c < 0x20 || c == 0x7f) {
      memcpy(esc, "\\u00", 4);
      esc[4] = hex[c >> 4];
      esc[5] = hex[c & 15];
      elen = 6;
    } else if (c < 0x80) {
      esc[0] = (char)c;
      elen = 1;
    } else if ((step = utf8_sequence_length((const char *)p + i, len - i)) != 0) {
      memcpy(esc, p + i, step);
      elen = step;
    } else {
      memcpy(esc, "\\\\x", 3);
      esc[3] = hex[c >> 4];
      esc[4] = hex[c & 15];
      elen = 5;
      step = 1;
    }
    if (o + elen > max) break;
    memcpy(out + o, esc, elen);
    o += elen;
    i += step;
  }
  l->pos += o;
  return i == len;
}

/* Appends ,"key":"value" (or ,"key":null), value cut to max output bytes; a cut value is
 * followed by ,"key_truncated":true so a reader knows the text is not whole. */
static void put_string(struct line *l, const char *key, const char *value, size_t max) {
  put_raw(l, ",\"");
  put_raw(l, key);
  if (!value) {
    put_raw(l, "\":null");
    return;
  }
  put_raw(l, "\":\"");
  bool whole = put_escaped(l, value, strlen(value), max);
  put_raw(l, "\"");
  if (!whole) {
    put_raw(l, ",\"");
    put_raw(l, key);
    put_raw(l, "_truncated\":true");
  }
}

/* A batch of the output thread may be large: a pipe or terminal that takes part of it, or is
 * briefly non-blocking, gets the rest. */
static void write_all(const char *buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t n = write(STDERR_FILENO, buf + off, len - off);
    if (n > 0) {
      off += (size_t)n;
    } else if (n < 0 && errno == EAGAIN) {
      (void)poll(&(struct pollfd){.fd = STDERR_FILENO, .events = POLLOUT}, 1, 100);
    } else if (!(n < 0 && errno == EINTR)) {
      return;
    }
  }
}

/* ---------- the output thread ----------
 * Lines wait in `pending` until the thread swaps it for its empty buffer and writes it. Past
 * LOG_PENDING_MAX bytes (stderr stalled) a line is counted and dropped, never waited for; the
 * thread then writes how many were dropped. */

#define LOG_PENDING_MAX (1024 * 1024)
/* How long the thread lets lines gather before it writes them (about as long as a line waits,
 * while stderr keeps up). */
#define LOG_GATHER_MS 2

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t out_cv = PTHREAD_COND_INITIALIZER;
static pthread_t out_thread;
static bool out_running; /* under out_mu */
static bool out_stop;
static bool out_idle; /* the thread waits for a line (and is woken by the first) */
static bool out_done; /* stopping, the thread wrote everything and takes no more lines */
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static char *pending, *spare;
static size_t pending_len;
static unsigned long dropped;

static void put_head(struct line *l, enum log_level level);

static void *out_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&out_mu);
  for (;;) {
    while (pending_len == 0 && dropped == 0 && !out_stop) {
      out_idle = true;
      pthread_cond_wait(&out_cv, &out_mu);
      out_idle = false;
    }
    if (pending_len == 0 && dropped == 0) { /* stopping, and all written */
      out_done = true;
      pthread_cond_broadcast(&done_cv);
      break;
    }
    if (!out_stop) { /* let the lines of the next LOG_GATHER_MS join these */
      pthread_mutex_unlock(&out_mu);
      nanosleep(&(struct timespec){.tv_nsec = LOG_GATHER_MS * 1000000L}, NULL);
      pthread_mutex_lock(&out_mu);
    }
    char *buf = pending;
    size_t len = pending_len;
    unsigned long lost = dropped;
    pending = spare;
    spare = buf;
    pending_len = 0;
    dropped = 0;
    pthread_mutex_unlock(&out_mu);
    write_all(buf, len);
    if (lost) {
      struct line l;
      put_head(&l, LOG_WARNING);
      char msg[160];
      snprintf(msg, sizeof msg,
               ",\"msg\":\"%lu log lines dropped: stderr did not keep up\",\"dropped\":%lu}\n",
               lost, lost);
      size_t n = strlen(msg);
      if (l.pos + n <= sizeof l.buf) {
        memcpy(l.buf + l.pos, msg, n);
        write_all(l.buf, l.pos + n);
      }
    }
    pthread_mutex_lock(&out_mu);
  }
  pthread_mutex_unlock(&out_mu);
  return NULL;
}

static void stop_at_exit(void) { log_stop(); }

bool log_start(void) {
  static bool at_exit;
  if (!at_exit) at_exit = atexit(stop_at_exit) == 0; /* exit() writes what waits */
  pthread_mutex_lock(&out_mu);
  bool ok = out_running;
  if (!ok && (pending = malloc(LOG_PENDING_MAX)) && (spare = malloc(LOG_PENDING_MAX))) {
    out_stop = out_done = false;
    ok = out_running = pthread_create(&out_thread, NULL, out_main, NULL) == 0;
    if (ok) pthread_setname_np(out_thread, "gsr-stderr");
  }
  if (!ok) {
    free(pending);
    free(spare);
    pending = spare = NULL;
  }
  pthread_mutex_unlock(&out_mu);
  return ok;
}

/* Lines logged while it stops still go to the thread, after the ones waiting; once it has
 * written the last, later lines are written directly, after all of them. The first caller
 * joins the thread; a caller meanwhile (a second signal's thread) waits until all is written. */
void log_stop(void) {
  pthread_mutex_lock(&out_mu);
  if (!out_running) {
    pthread_mutex_unlock(&out_mu);
    return;
  }
  if (out_stop) {
    while (!out_done) pthread_cond_wait(&done_cv, &out_mu);
    pthread_mutex_unlock(&out_mu);
    return;
  }
  out_stop = true;
  pthread_cond_signal(&out_cv);
  pthread_mutex_unlock(&out_mu);
  pthread_join(out_thread, NULL);
  pthread_mutex_lock(&out_mu);
  out_running = false;
  free(pending);
  free(spare);
  pending = spare = NULL;
  pthread_mutex_unlock(&out_mu);
}

static void write_line(struct line *l) {
  l->buf[l->pos++] = '}';
  l->buf[l->pos++] = '\n';
  pthread_mutex_lock(&out_mu);
  if (out_running && !out_done) {
    /* Only the first line after a quiet spell wakes the thread; under load it finds lines
     * waiting each time it has written the last ones, and no line pays for a wake-up. */
    if (out_idle) pthread_cond_signal(&out_cv);
    if (pending_len + l->pos > LOG_PENDING_MAX) {
      dropped++;
    } else {
      memcpy(pending + pending_len, l->buf, l->pos);
      pending_len += l->pos;
    }
    pthread_mutex_unlock(&out_mu);
    return;
  }
  pthread_mutex_unlock(&out_mu);
  write_all(l->buf, l->pos); /* no output thread (before it starts, after its last write) */
}

static void put_head(struct line *l, enum log_level level) {
  char now[40];
  if (!time_format_us(time_now_us(), true, now, sizeof now)) now[0] = '\0';
  l->pos = 0;
  put_raw(l, "{\"time\":\"");
  put_raw(l, now);
  put_raw(l, "\",\"level\":\"");
  put_raw(l, level_names[level]);
  put_raw(l, "\"");
}

void log_msg(enum log_level level, const char *fmt, ...) {
  if (!log_enabled(level)) return;
  char msg[LOG_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  size_t len = strnlen(msg, sizeof msg);
  struct line l;
  put_head(&l, level);
  put_raw(&l, ",\"msg\":\"");
  bool whole = put_escaped(&l, msg, len, LOG_MSG_OUT_MAX) && (size_t)n < sizeof msg;
  put_raw(&l, "\"");
  if (!whole) put_raw(&l, ",\"msg_truncated\":true");
  write_line(&l);
}

void log_request_line(const struct log_request *r) {
  if (!log_enabled(LOG_INFO)) return;
  struct line l;
  put_head(&l, LOG_INFO);
  put_raw(&l, ",\"msg\":\"request\"");
  /* The fields a reader relies on come first and are short by construction; the path,
   * which a client chooses freely, comes last with its own budget. */
  put_string(&l, "request_id", r->request_id, LOG_ID_OUT_MAX);
  char num[64];
  double ms = r->duration_ms;
  if (!isfinite(ms) || ms < 0) ms = 0;
  if (ms > 1e12) ms = 1e12;
  snprintf(num, sizeof num, ",\"status\":%u,\"duration_ms\":%.3f", r->status, ms);
  put_raw(&l, num);
  put_string(&l, "client_ip", r->client_ip, LOG_ID_OUT_MAX);
  put_string(&l, "method", r->method, LOG_ID_OUT_MAX);
  put_string(&l, "path", r->path, LOG_PATH_OUT_MAX);
  write_line(&l);
}
