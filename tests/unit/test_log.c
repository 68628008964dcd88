/* Unit tests for core/log: every line is one valid JSON object (valid UTF-8) whatever the
 * logged values hold; long values are cut with a marker; a request line always keeps its
 * status, client IP and request id. With the output thread, lines of several threads arrive
 * whole and in each thread's order, and a stderr nobody reads never holds a logging thread:
 * what does not fit is dropped and counted. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

/* Runs fn with stderr sent to a file and returns everything written (malloc'ed, NUL-ended). */
static char *capture(void (*fn)(const void *arg), const void *arg, size_t *len) {
  FILE *tmp = tmpfile();
  assert_non_null(tmp);
  int saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
  fn(arg);
  assert_true(dup2(saved, STDERR_FILENO) >= 0);
  close(saved);
  off_t n = lseek(fileno(tmp), 0, SEEK_END);
  assert_true(n >= 0);
  char *out = malloc((size_t)n + 1);
  assert_non_null(out);
  assert_int_equal(pread(fileno(tmp), out, (size_t)n, 0), n);
  out[n] = '\0';
  fclose(tmp);
  *len = (size_t)n;
  return out;
}

/* Exactly one line, ending in '\n', that parses as a JSON object (jansson rejects invalid
 * UTF-8 and unescaped control characters). */
static json_t *one_json_line(const char *out, size_t len) {
  assert_true(len > 0);
  assert_int_equal(out[len - 1], '\n');
  assert_ptr_equal(memchr(out, '\n', len), out + len - 1);
  json_error_t e;
  json_t *j = json_loadb(out, len - 1, 0, &e);
  if (!j) fail_msg("not JSON (%s at %d): %.300s", e.text, e.position, out);
  assert_true(json_is_object(j));
  return j;
}

static void log_request(const void *arg) { log_request_line(arg); }

static json_t *request_line(const struct log_request *r, size_t *len) {
  char *out = capture(log_request, r, len);
  json_t *j = one_json_line(out, *len);
  free(out);
  return j;
}

static void assert_keeps_essentials(json_t *j, const struct log_request *r) {
  assert_int_equal(json_integer_value(json_object_get(j, "status")), r->status);
  assert_true(json_is_string(json_object_get(j, "client_ip")));
  assert_true(json_is_string(json_object_get(j, "request_id")));
  assert_true(json_is_number(json_object_get(j, "duration_ms")));
  assert_string_equal(json_string_value(json_object_get(j, "msg")), "request");
}

static char *repeat(char c, size_t n) {
  char *s = malloc(n + 1);
  assert_non_null(s);
  memset(s, c, n);
  s[n] = '\0';
  return s;
}

static void test_plain_request_line(void **state) {
  (void)state;
  struct log_request r = {"rid-1", "GET", "/api/v1/health", 200, 1.5, "127.0.0.1"};
  size_t len;
  json_t *j = request_line(&r, &len);
  assert_keeps_essentials(j, &r);
  assert_string_equal(json_string_value(json_object_get(j, "request_id")), "rid-1");
  assert_string_equal(json_string_value(json_object_get(j, "client_ip")), "127.0.0.1");
  assert_string_equal(json_string_value(json_object_get(j, "method")), "GET");
  assert_string_equal(json_string_value(json_object_get(j, "path")), "/api/v1/health");
  assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
  assert_true(json_is_string(json_object_get(j, "time")));
  assert_null(json_object_get(j, "path_truncated"));
  json_decref(j);
}

/* Defect 6: a 3,000-byte URL cut the line before status and client_ip. */
static void test_long_path_is_cut_with_a_marker_and_keeps_status_and_ip(void **state) {
  (void)state;
  char *path = repeat('a', 3000);
  path[0] = '/';
  struct log_request r = {"rid-long", "GET", path, 404, 2.0, "203.0.113.9"};
  size_t len;
  json_t *j = request_line(&r, &len);
  assert_keeps_essentials(j, &r);
  assert_string_equal(json_string_value(json_object_get(j, "client_ip")), "203.0.113.9");
  assert_string_equal(json_string_value(json_object_get(j, "request_id")), "rid-long");
  assert_true(json_is_true(json_object_get(j, "path_truncated")));
  const char *logged = json_string_value(json_object_get(j, "path"));
  assert_non_null(logged);
  assert_true(strlen(logged) >= 1000 && strlen(logged) < 3000);
  assert_int_equal(strncmp(logged, path, strlen(logged)), 0);
  assert_true(len < 4096);
  json_decref(j);
  free(path);
}

/* Defect 6: /%FF%FE wrote raw invalid UTF-8. */
static void test_invalid_utf8_is_escaped(void **state) {
  (void)state;
  struct log_request r = {"rid-ff", "GET", "/\xff\xfe", 404, 0.1, "::1"};
  size_t len;
  json_t *j = request_line(&r, &len);
  assert_keeps_essentials(j, &r);
  assert_string_equal(json_string_value(json_object_get(j, "path")), "/\\xff\\xfe");
  json_decref(j);
}

static void test_every_kind_of_bad_byte(void **state) {
  (void)state;
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"/caf\xc3\xa9/\xf0\x9f\x98\x80", "/caf\xc3\xa9/\xf0\x9f\x98\x80"}, /* valid: kept */
      {"/\xc0\x80", "/\\xc0\\x80"},                                       /* overlong NUL */
      {"/\xe0\x80\xaf", "/\\xe0\\x80\\xaf"},                              /* overlong '/' */
      {"/\xed\xa0\x80", "/\\xed\\xa0\\x80"},                              /* surrogate */
      {"/\xf4\x90\x80\x80", "/\\xf4\\x90\\x80\\x80"},                     /* above U+10FFFF */
      {"/\xf5", "/\\xf5"},
      {"/x\xe2\x82", "/x\\xe2\\x82"}, /* cut at the end */
      {"/\xe2\x82x", "/\\xe2\\x82x"}, /* cut in the middle */
      {"/\x80", "/\\x80"},            /* lone continuation byte */
      {"/\"q\"\\\t\x01\x7f", "/\"q\"\\\t\x01\x7f"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct log_request r = {"rid", "GET", cases[i].in, 400, 0.1, "10.0.0.1"};
    size_t len;
    json_t *j = request_line(&r, &len);
    assert_keeps_essentials(j, &r);
    assert_string_equal(json_string_value(json_object_get(j, "path")), cases[i].out);
    json_decref(j);
  }
}

/* A cut never splits a character or an escape sequence. */
static void test_cut_inside_multibyte_and_escapes_stays_valid(void **state) {
  (void)state;
  static const char *const units[] = {"\xc3\xa9", "\xf0\x9f\x98\x80", "\xff", "\"", "\x01"};
  for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
    for (size_t pad = 0; pad < 4; pad++) {
      size_t ulen = strlen(units[u]);
      size_t n = 1 + pad + 3000 * ulen;
      char *path = malloc(n + 1);
      assert_non_null(path);
      memset(path, '/', 1 + pad);
      for (size_t k = 0; k < 3000; k++) memcpy(path + 1 + pad + k * ulen, units[u], ulen);
      path[n] = '\0';
      struct log_request r = {"rid", "POST", path, 414, 3.0, "192.0.2.1"};
      size_t len;
      json_t *j = request_line(&r, &len);
      assert_keeps_essentials(j, &r);
      assert_true(json_is_true(json_object_get(j, "path_truncated")));
      json_decref(j);
      free(path);
    }
  }
}

/* Every value hostile at once: the line still holds every field and parses. */
static void test_every_field_hostile(void **state) {
  (void)state;
  char *big = repeat('\xff', 5000);
  struct log_request r = {big, big, big, 400, NAN, big};
  size_t len;
  json_t *j = request_line(&r, &len);
  assert_keeps_essentials(j, &r);
  assert_true(json_is_true(json_object_get(j, "request_id_truncated")));
  assert_true(json_is_true(json_object_get(j, "client_ip_truncated")));
  assert_true(json_is_true(json_object_get(j, "method_truncated")));
  assert_true(json_is_true(json_object_get(j, "path_truncated")));
  json_decref(j);
  struct log_request none = {NULL, NULL, NULL, 0, -1.0, NULL};
  j = request_line(&none, &len);
  assert_true(json_is_null(json_object_get(j, "path")));
  assert_true(json_is_null(json_object_get(j, "client_ip")));
  assert_int_equal(json_integer_value(json_object_get(j, "status")), 0);
  json_decref(j);
  free(big);
}

static void log_long_message(const void *arg) {
  log_msg(LOG_ERROR, "client sent %s (end)", (const char *)arg);
}

static void test_message_lines_are_json_and_marked_when_cut(void **state) {
  (void)state;
  char *big = repeat('\xfe', 3000);
  size_t len;
  char *out = capture(log_long_message, big, &len);
  json_t *j = one_json_line(out, len);
  assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
  assert_true(json_is_true(json_object_get(j, "msg_truncated")));
  assert_int_equal(strncmp(json_string_value(json_object_get(j, "msg")), "client sent \\xfe", 16),
                   0);
  json_decref(j);
  free(out);
  out = capture(log_long_message, "caf\xc3\xa9 \"quoted\"\n", &len);
  j = one_json_line(out, len);
  assert_string_equal(json_string_value(json_object_get(j, "msg")),
                      "client sent caf\xc3\xa9 \"quoted\"\n (end)");
  assert_null(json_object_get(j, "msg_truncated"));
  json_decref(j);
  free(out);
  free(big);
}

/* ---------- the output thread ---------- */

static void *log_many(void *arg) {
  int t = *(const int *)arg;
  for (int i = 0; i < 5000; i++) log_msg(LOG_WARNING, "t%d n%d", t, i);
  return NULL;
}

static void threads_logging(const void *arg) {
  (void)arg;
  assert_true(log_start());
  pthread_t th[2];
  int ids[2] = {0, 1};
  for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, log_many, &ids[i]), 0);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  log_stop();
}

static void test_output_thread_keeps_every_line_whole_and_in_order(void **state) {
  (void)state;
  size_t len;
  char *out = capture(threads_logging, NULL, &len);
  int next[2] = {0, 0}, lines = 0;
  for (char *p = out, *nl; (nl = memchr(p, '\n', len - (size_t)(p - out))); p = nl + 1) {
    json_t *j = one_json_line(p, (size_t)(nl - p) + 1);
    int t, n;
    assert_int_equal(sscanf(json_string_value(json_object_get(j, "msg")), "t%d n%d", &t, &n), 2);
    assert_true(t == 0 || t == 1);
    assert_int_equal(n, next[t]++);
    json_decref(j);
    lines++;
  }
  assert_int_equal(lines, 10000);
  free(out);
}

/* Reads a pipe to its end into memory; slow: 4 KiB at a time, 0.2 ms apart. */
struct drain {
  int fd;
  bool slow;
  char *buf;
  size_t len, cap;
};

static void *drain_main(void *arg) {
  struct drain *d = arg;
  for (;;) {
    if (d->cap - d->len < 65536) {
      d->cap *= 2;
      d->buf = realloc(d->buf, d->cap);
      if (!d->buf) abort();
    }
    ssize_t n = read(d->fd, d->buf + d->len, d->slow ? 4096 : d->cap - d->len);
    if (n <= 0) return NULL;
    d->len += (size_t)n;
    if (d->slow) usleep(200);
  }
}

static void test_a_stalled_stderr_never_holds_a_thread(void **state) {
  (void)state;
  int p[2];
  assert_int_equal(pipe(p), 0);
  int saved = dup(STDERR_FILENO);
  assert_true(dup2(p[1], STDERR_FILENO) >= 0);
  close(p[1]);
  alarm(60); /* a logging thread held on the full pipe would hang here: fail instead */
  assert_true(log_start());
  struct log_request r = {.request_id = "0123456789abcdef0123456789abcdef",
                          .method = "POST",
                          .path = "/api/v1/webhook/conversation",
                          .status = 200,
                          .duration_ms = 1.5,
                          .client_ip = "127.0.0.1"};
  enum { LINES = 20000 }; /* about 4 MB: four times what may wait, sixty times the pipe */
  for (int i = 0; i < LINES; i++) log_request_line(&r);
  alarm(0);
  struct drain d = {.fd = p[0], .cap = 1 << 20};
  d.buf = malloc(d.cap);
  assert_non_null(d.buf);
  pthread_t reader;
  assert_int_equal(pthread_create(&reader, NULL, drain_main, &d), 0);
  log_stop();
  assert_true(dup2(saved, STDERR_FILENO) >= 0); /* the pipe's last writer gone: EOF */
  close(saved);
  pthread_join(reader, NULL);
  close(p[0]);
  long requests = 0, dropped = 0;
  for (char *q = d.buf, *nl; (nl = memchr(q, '\n', d.len - (size_t)(q - d.buf))); q = nl + 1) {
    json_t *j = one_json_line(q, (size_t)(nl - q) + 1);
    const char *msg = json_string_value(json_object_get(j, "msg"));
    if (strcmp(msg, "request") == 0) requests++;
    if (json_object_get(j, "dropped")) /* one line for each batch that dropped some */
      dropped += (long)json_integer_value(json_object_get(j, "dropped"));
    json_decref(j);
  }
  assert_true(requests > 0);
  assert_true(dropped > 0);
  assert_int_equal(requests + dropped, LINES);
  free(d.buf);
}

/* Lines logged while the thread stops, with a batch still going out to a slow pipe: whole, and
 * in each thread's order (written directly, they would cut into the batch and overtake it). */
static atomic_bool other_go;

static void *log_other(void *arg) {
  (void)arg;
  while (!atomic_load(&other_go)) {
  }
  for (int i = 0; i < 2000; i++) log_msg(LOG_WARNING, "t1 n%d", i);
  return NULL;
}

static void test_lines_logged_while_stopping_stay_whole_and_in_order(void **state) {
  (void)state;
  int p[2];
  assert_int_equal(pipe(p), 0);
  int saved = dup(STDERR_FILENO);
  assert_true(dup2(p[1], STDERR_FILENO) >= 0);
  close(p[1]);
  struct drain d = {.fd = p[0], .slow = true, .cap = 1 << 20};
  d.buf = malloc(d.cap);
  assert_non_null(d.buf);
  pthread_t reader, other;
  assert_int_equal(pthread_create(&reader, NULL, drain_main, &d), 0);
  assert_true(log_start());
  for (int i = 0; i < 3000; i++) log_msg(LOG_WARNING, "t0 n%d", i); /* ~300 KB waiting */
  atomic_store(&other_go, false);
  assert_int_equal(pthread_create(&other, NULL, log_other, NULL), 0);
  atomic_store(&other_go, true);
  log_stop();
  pthread_join(other, NULL);
  assert_true(dup2(saved, STDERR_FILENO) >= 0);
  close(saved);
  pthread_join(reader, NULL);
  close(p[0]);
  int next[2] = {0, 0};
  for (char *q = d.buf, *nl; (nl = memchr(q, '\n', d.len - (size_t)(q - d.buf))); q = nl + 1) {
    json_t *j = one_json_line(q, (size_t)(nl - q) + 1);
    int t, n;
    assert_int_equal(sscanf(json_string_value(json_object_get(j, "msg")), "t%d n%d", &t, &n), 2);
    assert_int_equal(n, next[t]++);
    json_decref(j);
  }
  assert_int_equal(next[0], 3000);
  assert_int_equal(next[1], 2000);
  free(d.buf);
}

int main(void) {
  log_set_level(LOG_DEBUG);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain_request_line),
      cmocka_unit_test(test_output_thread_keeps_every_line_whole_and_in_order),
      cmocka_unit_test(test_a_stalled_stderr_never_holds_a_thread),
      cmocka_unit_test(test_lines_logged_while_stopping_stay_whole_and_in_order),
      cmocka_unit_test(test_long_path_is_cut_with_a_marker_and_keeps_status_and_ip),
      cmocka_unit_test(test_invalid_utf8_is_escaped),
      cmocka_unit_test(test_every_kind_of_bad_byte),
      cmocka_unit_test(test_cut_inside_multibyte_and_escapes_stays_valid),
      cmocka_unit_test(test_every_field_hostile),
      cmocka_unit_test(test_message_lines_are_json_and_marked_when_cut),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
