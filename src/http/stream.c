/* Streamed answers (http_reply_stream): a body of unknown length, produced a piece at a time
 * on the offload pool and sent by libmicrohttpd's content reader as the client takes it. At
 * most one piece is in memory per answer, and an event thread never waits for the producer:
 * when the piece in hand has been sent, the reader suspends the connection and hands the
 * producer to the pool, which resumes the connection once the next piece is ready (suspending
 * from a content reader is allowed by libmicrohttpd's contract: microhttpd.h,
 * MHD_suspend_connection). The connection is suspended only while a piece is being made, so
 * a piece being made always finishes (and resumes the connection) before the connection can
 * end; a client that goes away is seen at the next write, and the producer's state is freed
 * with the response.
 *
 * Shutdown: the request counts as parked (server.c's protocol) until it completes, so the
 * server waits for it; once the grace period is over (closed), the answer is cut at the
 * reader's next call, even in the middle of the piece in hand (chunked: without its last
 * chunk, so the client sees it is incomplete). */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "http/server_internal.h"

#define STREAM_BLOCK (64 * 1024) /* the most MHD asks of the reader at once */

struct stream {
  struct workpool_job job; /* first: run_piece finds the stream from it */
  struct http_server *server;
  struct MHD_Connection *conn;
  char request_id[REQUEST_ID_MAX + 1];
  enum http_stream_fill (*fill)(void *state, const char **data, size_t *len);
  void (*ended)(void *state, bool complete, bool handed);
  void *state;
  void (*free_state)(void *);
  const char *data; /* the piece in hand (the state's), data[off..len) still to send */
  size_t len, off;
  enum http_stream_fill last; /* what the last fill answered */
  bool head;                  /* HEAD: the headers alone */
};

void stream_ended(struct stream *st, enum MHD_RequestTerminationCode toe) {
  if (!st->ended) return;
  bool handed = st->off == st->len;
  bool complete = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK &&
                  (st->head || (st->last == HTTP_STREAM_END && handed));
  st->ended(st->state, complete, handed);
}

/* Pool thread, while the connection is suspended. */
static void run_piece(struct workpool_job *job) {
  struct stream *st = (struct stream *)job;
  st->data = NULL;
  st->len = st->off = 0;
  st->last = st->fill(st->state, &st->data, &st->len);
  if (!st->data) st->len = 0;
  MHD_resume_connection(st->conn); /* the last touch: the event thread takes it from here */
}

static ssize_t read_piece(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  struct stream *st = cls;
  if (st->off == st->len && st->last == HTTP_STREAM_END) return MHD_CONTENT_READER_END_OF_STREAM;
  if (st->off == st->len && st->last == HTTP_STREAM_FAILED)
    return MHD_CONTENT_READER_END_WITH_ERROR;
  /* Checked before the rest of the piece in hand is handed over: a client reading a trickle
   * would otherwise hold shutdown until it had taken up to a whole piece. */
  if (atomic_load(&st->server->closed)) {
    log_msg(LOG_WARNING, "request %s: streamed answer cut short by shutdown", st->request_id);
    return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  if (st->off < st->len) {
    size_t n = st->len - st->off < max ? st->len - st->off : max;
    memcpy(buf, st->data + st->off, n);
    st->off += n;
    return (ssize_t)n;
  }
  /* Suspend first: the pool may make the piece and resume before submit returns. The answer
   * was admitted when it began: its next piece passes a full queue (at most one job per open
   * answer: the connection stays suspended until the piece is made), or a burst of new
   * requests would cut answers already running. */
  MHD_suspend_connection(st->conn);
  if (!workpool_submit_admitted(st->server->pool, &st->job)) {
    MHD_resume_connection(st->conn);
    log_msg(LOG_ERROR, "request %s: streamed answer cut short: the offload pool is stopping",
            st->request_id);
    return MHD_CONTENT_READER_END_WITH_ERROR;
  }
  return 0; /* called again once resumed */
}

static void free_stream(void *cls) {
  struct stream *st = cls;
  if (st->free_state) st->free_state(st->state);
  free(st);
}

void http_reply_stream(struct http_request *req, unsigned status, const char *content_type,
                       enum http_stream_fill (*fill)(void *state, const char **data, size_t *len),
                       void (*ended)(void *state, bool complete, bool handed), void *state,
                       void (*free_state)(void *)) {
  struct stream *st = calloc(1, sizeof *st);
  struct MHD_Response *r = st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK,
                                                                  read_piece, st, free_stream)
                              : NULL;
  if (!r) {
    free(st);
    if (free_state) free_state(state);
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  /* HEAD: libmicrohttpd 0.9.75 sends the last chunk ("0" CRLF CRLF) after the headers of a
   * chunked answer to HEAD, which the client then reads as the start of its next answer. Sent
   * the HTTP/1.0 way (no chunking, the connection closed after it), HEAD gets headers only. */
  st->head = strcmp(req->method, "HEAD") == 0;
  if (st->head) (void)MHD_set_response_options(r, MHD_RF_HTTP_1_0_COMPATIBLE_STRICT, MHD_RO_END);
  st->server = req->server;
  st->conn = req->conn;
  memcpy(st->request_id, req->request_id, sizeof st->request_id);
  st->fill = fill;
  st->ended = ended;
  st->state = state;
  st->free_state = free_state;
  st->last = HTTP_STREAM_MORE;
  st->job.run = run_piece;
  /* Parked until it completes: shutdown waits for it (or cuts it, see above). */
  if (!req->parked) {
    req->parked = true;
    atomic_fetch_add(&req->server->parked, 1);
  }
  request_set_response(req, status, content_type, r);
  req->stream = st; /* told how the answer ended (on_completed) */
}
