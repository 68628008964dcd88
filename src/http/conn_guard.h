/* Connection-level protection libmicrohttpd 0.9.75 does not give: a bound on the time to
 * receive a request's headers (its timeout is an idle timeout, which a client trickling a
 * byte at a time never reaches), prompt closing of connections the client half-closed, and a
 * connection table that keeps admitting new clients when it is full of slow ones. */
#ifndef GSR_CONN_GUARD_H
#define GSR_CONN_GUARD_H

#include <microhttpd.h>
#include <stdbool.h>

struct conn_guard;

/* Why the guard cut a connection (for the request log line). */
enum conn_guard_cut {
  CONN_GUARD_NOT_CUT = 0,
  CONN_GUARD_HEADER_TIMEOUT, /* headers not complete within the header timeout */
  CONN_GUARD_HALF_CLOSED,    /* the client shut down its side before sending a whole request */
  CONN_GUARD_EVICTED,        /* the table was full and this was the oldest still receiving */
  CONN_GUARD_REFUSED,        /* the table was full of connections that could not be evicted */
};

/* A guard admitting at most max_connections at once, cutting request headers slower than
 * header_timeout_s; NULL when out of memory. Starts its sweeper thread. Raises the open-file
 * soft limit if the table would not fit in it. */
__attribute__((warn_unused_result)) struct conn_guard *conn_guard_new(long max_connections,
                                                                      long header_timeout_s);
/* Stops the sweeper and frees the guard: call after MHD_stop_daemon. NULL is fine. */
void conn_guard_free(struct conn_guard *g);

/* What to give MHD as MHD_OPTION_CONNECTION_LIMIT: above max_connections, so that MHD keeps
 * accepting and the guard decides whom to drop. */
unsigned conn_guard_mhd_limit(const struct conn_guard *g);

/* MHD_OPTION_NOTIFY_CONNECTION callback (cls is the guard). MHD notifies CLOSED before it
 * closes the socket, so the guard never touches a descriptor that may have been reused. */
void conn_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code);

/* Where the connection's current request is; call from MHD's callbacks on its own thread. */
/* The headers are complete (first access-handler call): the body follows. */
void conn_guard_headers_done(struct MHD_Connection *conn);
/* The request is complete (or answered early): nothing is cut any more until it ends. */
void conn_guard_request_done(struct MHD_Connection *conn);
/* The request ended (MHD_OPTION_NOTIFY_COMPLETED): the connection waits for the next one. */
void conn_guard_request_ended(struct MHD_Connection *conn);
/* Whether, and why, the guard cut this connection. */
enum conn_guard_cut conn_guard_cut_reason(struct MHD_Connection *conn);

#endif
