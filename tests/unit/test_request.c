/* Unit tests for http/request: a reply whose response cannot be created still frees the body
 * it was given. MHD_create_response_from_buffer is wrapped (-Wl,--wrap, see the Makefile) so
 * that it can be made to fail as it does when out of memory. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sanitizer/asan_interface.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http/server_internal.h"

struct MHD_Response *__real_MHD_create_response_from_buffer(size_t size, void *buffer,
                                                            enum MHD_ResponseMemoryMode mode);
struct MHD_Response *__wrap_MHD_create_response_from_buffer(size_t size, void *buffer,
                                                            enum MHD_ResponseMemoryMode mode);

static bool fail_create;

struct MHD_Response *__wrap_MHD_create_response_from_buffer(size_t size, void *buffer,
                                                            enum MHD_ResponseMemoryMode mode) {
  if (fail_create) return NULL;
  return __real_MHD_create_response_from_buffer(size, buffer, mode);
}

static struct http_request *new_request(void) {
  struct http_request *req = calloc(1, sizeof *req);
  assert_non_null(req);
  req->param = "";
  return req;
}

static void test_owned_body_freed_when_response_fails(void **state) {
  (void)state;
  struct http_request *req = new_request();
  char *body = malloc(64);
  assert_non_null(body);
  memset(body, 'x', 64);
  fail_create = true;
  http_reply_owned(req, 200, "text/plain", body, 64);
  fail_create = false;
  assert_null(req->response);
  assert_int_equal(req->status, 500);
  /* freed memory is poisoned by AddressSanitizer */
  assert_true(__asan_address_is_poisoned(body));
  request_free(req);
}

static void test_json_text_freed_when_response_fails(void **state) {
  (void)state;
  struct http_request *req = new_request();
  char *body = strdup("{\"a\":1}");
  assert_non_null(body);
  fail_create = true;
  http_reply_json_text(req, 200, body, strlen("{\"a\":1}"));
  fail_create = false;
  assert_null(req->response);
  assert_true(__asan_address_is_poisoned(body));
  request_free(req);
}

static void test_owned_body_kept_by_the_response(void **state) {
  (void)state;
  struct http_request *req = new_request();
  char *body = strdup("{}");
  assert_non_null(body);
  http_reply_owned(req, 201, "application/json", body, 2);
  assert_non_null(req->response);
  assert_int_equal(req->status, 201);
  assert_false(__asan_address_is_poisoned(body)); /* the response owns it now */
  request_free(req);                              /* destroys the response, and the body */
}

/* A reply that cannot be encoded (here: a message that is not UTF-8) answers 500 and says so
 * in the log, with the request id: never a silent 500. */
static void test_unencodable_reply_is_logged(void **state) {
  (void)state;
  struct http_request *req = new_request();
  snprintf(req->request_id, sizeof req->request_id, "rid-unencodable");
  FILE *tmp = tmpfile();
  assert_non_null(tmp);
  fflush(stderr);
  int saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
  http_reply_error(req, API_ERR_INVALID_JSON, "bad \xff byte", NULL);
  fflush(stderr);
  assert_true(dup2(saved, STDERR_FILENO) >= 0);
  close(saved);
  assert_int_equal(req->status, 500);
  char buf[4096] = {0};
  rewind(tmp);
  size_t n = fread(buf, 1, sizeof buf - 1, tmp);
  fclose(tmp);
  buf[n] = '\0';
  assert_non_null(strstr(buf, "rid-unencodable"));
  assert_non_null(strstr(buf, "could not be encoded"));
  request_free(req);
}

/* Extra headers: a value that fits is kept whole; one too long, or one past the limit, is not
 * sent at all (never a cut security header). */
static void test_extra_headers_are_whole_or_absent(void **state) {
  (void)state;
  struct http_request *req = new_request();
  char csp[256];
  memset(csp, 'a', sizeof csp - 1);
  csp[sizeof csp - 1] = '\0'; /* 255 bytes: fits */
  http_reply_header(req, "Content-Security-Policy", csp);
  assert_int_equal(req->nextra, 1);
  assert_string_equal(req->extra[0].value, csp);
  char longer[300];
  memset(longer, 'b', sizeof longer - 1);
  longer[sizeof longer - 1] = '\0';
  http_reply_header(req, "X-Long", longer);
  assert_int_equal(req->nextra, 1);
  static const char *const names[] = {"X-1", "X-2", "X-3", "X-4", "X-5", "X-6", "X-7", "X-8"};
  for (int i = 1; i < EXTRA_HEADERS_MAX; i++) http_reply_header(req, names[i - 1], "v");
  assert_int_equal(req->nextra, EXTRA_HEADERS_MAX);
  http_reply_header(req, "X-Past", "v");
  assert_int_equal(req->nextra, EXTRA_HEADERS_MAX);
  assert_string_equal(req->extra[EXTRA_HEADERS_MAX - 1].name, names[EXTRA_HEADERS_MAX - 2]);
  request_free(req);
}

/* A header said twice is sent once, with the last value (an answer replaced by a later
 * decision, e.g. a 503's Retry-After: 1 then a rate limit's 429 with its own wait); a value too
 * long for the second keeps the first whole. */
static void test_a_header_said_again_replaces_it(void **state) {
  (void)state;
  struct http_request *req = new_request();
  http_reply_header(req, "Retry-After", "1");
  http_reply_header(req, "X-Other", "o");
  http_reply_header(req, "retry-after", "42");
  assert_int_equal(req->nextra, 2);
  assert_string_equal(req->extra[0].name, "Retry-After");
  assert_string_equal(req->extra[0].value, "42");
  char longer[300];
  memset(longer, 'b', sizeof longer - 1);
  longer[sizeof longer - 1] = '\0';
  http_reply_header(req, "Retry-After", longer);
  assert_int_equal(req->nextra, 2);
  assert_string_equal(req->extra[0].value, "42");
  request_free(req);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_extra_headers_are_whole_or_absent),
      cmocka_unit_test(test_a_header_said_again_replaces_it),
      cmocka_unit_test(test_owned_body_freed_when_response_fails),
      cmocka_unit_test(test_unencodable_reply_is_logged),
      cmocka_unit_test(test_json_text_freed_when_response_fails),
      cmocka_unit_test(test_owned_body_kept_by_the_response),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
