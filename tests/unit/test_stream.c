/* Unit tests for http/stream: how a streamed answer's reader behaves at shutdown. The reader
 * libmicrohttpd would call is captured (MHD_create_response_from_callback is wrapped, see the
 * Makefile) and called here; suspending and resuming a connection are no-ops. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "http/server_internal.h"

struct MHD_Response *__real_MHD_create_response_from_callback(uint64_t size, size_t block_size,
                                                              MHD_ContentReaderCallback crc,
                                                              void *crc_cls,
                                                              MHD_ContentReaderFreeCallback crfc);
struct MHD_Response *__wrap_MHD_create_response_from_callback(uint64_t size, size_t block_size,
                                                              MHD_ContentReaderCallback crc,
                                                              void *crc_cls,
                                                              MHD_ContentReaderFreeCallback crfc);
enum MHD_Result __wrap_MHD_suspend_connection(struct MHD_Connection *c);
enum MHD_Result __wrap_MHD_resume_connection(struct MHD_Connection *c);

static MHD_ContentReaderCallback reader;
static void *reader_cls;

struct MHD_Response *__wrap_MHD_create_response_from_callback(uint64_t size, size_t block_size,
                                                              MHD_ContentReaderCallback crc,
                                                              void *crc_cls,
                                                              MHD_ContentReaderFreeCallback crfc) {
  reader = crc;
  reader_cls = crc_cls;
  return __real_MHD_create_response_from_callback(size, block_size, crc, crc_cls, crfc);
}

enum MHD_Result __wrap_MHD_suspend_connection(struct MHD_Connection *c) {
  (void)c;
  return MHD_YES;
}

enum MHD_Result __wrap_MHD_resume_connection(struct MHD_Connection *c) {
  (void)c;
  return MHD_YES;
}

static char piece[1000];

static enum http_stream_fill fill_piece(void *state, const char **data, size_t *len) {
  (void)state;
  memset(piece, 'x', sizeof piece);
  *data = piece;
  *len = sizeof piece;
  return HTTP_STREAM_MORE;
}

/* Once shutdown has closed the gate, the reader stops at its next call, even in the middle of
 * the piece in hand: a client that reads a trickle cannot hold shutdown until it has taken the
 * rest of the piece (up to 256 KiB). */
static void test_closed_cuts_the_piece_in_hand(void **state) {
  (void)state;
  struct http_server server;
  memset(&server, 0, sizeof server);
  struct http_request *req = calloc(1, sizeof *req);
  assert_non_null(req);
  req->param = "";
  req->server = &server;
  req->method = "GET";
  http_reply_stream(req, 200, "text/plain", fill_piece, NULL, NULL, NULL);
  assert_non_null(req->response);
  assert_non_null(reader);
  /* the pool makes the first piece (run_piece: the job is the stream's first member) */
  struct workpool_job *job = reader_cls;
  job->run(job);
  char buf[100];
  assert_int_equal(reader(reader_cls, 0, buf, sizeof buf), (ssize_t)sizeof buf);
  assert_int_equal(reader(reader_cls, 100, buf, sizeof buf), (ssize_t)sizeof buf);
  atomic_store(&server.closed, true);
  assert_int_equal(reader(reader_cls, 200, buf, sizeof buf), MHD_CONTENT_READER_END_WITH_ERROR);
  atomic_fetch_sub(&server.parked, 1); /* counted by http_reply_stream */
  request_free(req);                   /* destroys the response and the stream */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_closed_cuts_the_piece_in_hand),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
