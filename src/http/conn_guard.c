/* The connection guard: a table of every open connection (through MHD's connection
 * notifications) with where its current request is, and a sweeper thread that cuts the
 * connections that hold a slot without making progress. See conn_guard.h for why.
 *
 * Phases of a connection's current request:
 *   HEADERS  from accept, or from the end of the previous request, until the headers are
 *            complete. The first request must have its headers within the header timeout of
 *            the accept. A kept-alive connection may idle (MHD's idle timeout governs that),
 *            but once bytes of a next request arrive (seen in the kernel's byte count,
 *            TCP_INFO, against the count when the previous request was complete) its headers
 *            must follow within the header timeout. Bytes sent before that (a pipelined part of
 *            a next request) cannot be told from the previous request's: MHD's idle timeout
 *            bounds them.
 *   BODY     headers complete, body arriving (REQUEST_TIMEOUT_SECONDS, enforced by server.c,
 *            bounds it).
 *   WORKING  the request is complete: it is handled, parked on the store or being answered.
 *            Never cut here: an acknowledged write must get its answer.
 * A connection the client half-closed (its socket in CLOSE-WAIT) in HEADERS or BODY can never
 * complete a request: it is cut once seen so on two sweeps in the same phase (so a pipelined
 * request MHD is parsing right then is not lost), with nothing left unread in the kernel
 * (a busy event thread has not read the rest of the request yet). When the table is full, a new
 * connection evicts the oldest one in HEADERS, else the oldest in BODY, else it is refused itself.
 *
 * Cutting is shutdown(SHUT_RDWR), never close: MHD owns the descriptor, sees the hang-up on
 * its own thread and closes the connection the usual way (completion callback included).
 * The table's mutex is held around every shutdown, and MHD's CLOSED notification takes it
 * before MHD closes the descriptor (daemon.c, MHD_cleanup_connections: notify, then close), so
 * the sweeper can never shut down a descriptor number that was closed and reused. */
#include "http/conn_guard.h"

#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/timeutil.h"

#define SWEEP_MS 200
#define REPORT_EVERY_MS 10000.0
#define TCP_STATE_CLOSE_WAIT 8 /* the kernel's TCP_CLOSE_WAIT (include/net/tcp_states.h) */
#define FD_RESERVE 256         /* descriptors kept for the store, logs and the like */

enum phase { PHASE_HEADERS, PHASE_BODY, PHASE_WORKING };

struct guarded {
  struct guarded *prev, *next;
  struct conn_guard *guard;
  int fd;
  enum phase phase;
  unsigned gen;          /* bumped at every phase change */
  double phase_start_ms; /* accept, or the end of the previous request */
  bool keepalive;        /* waiting for a second or later request */
  bool have_base;        /* base_bytes known */
  uint64_t base_bytes;   /* bytes the kernel had received when the last request was complete */
  double first_byte_ms;  /* keepalive: when bytes of the next request were first seen; 0 none */
  bool close_wait_seen;  /* CLOSE-WAIT seen on the last sweep, in generation close_wait_gen */
  unsigned close_wait_gen;
  enum conn_guard_cut cut;
};

struct conn_guard {
  pthread_mutex_t mu;
  pthread_cond_t wake;
  pthread_t sweeper;
  bool started, stop;
  struct guarded *head, *tail; /* in accept order */
  long live;                   /* entries not cut */
  long max;
  double header_timeout_ms;
  unsigned mhd_limit;
  unsigned long counts[CONN_GUARD_REFUSED + 1]; /* cuts by reason, since the last report */
  double next_report_ms;
};

/* ---------------- the table (callers hold mu) ---------------- */

static void cut_locked(struct conn_guard *g, struct guarded *e, enum conn_guard_cut why) {
  if (e->cut) return;
  e->cut = why;
  g->live--;
  g->counts[why]++;
  (void)shutdown(e->fd, SHUT_RDWR);
}

/* The oldest connection in the given phase, other than except. */
static struct guarded *oldest_in(struct conn_guard *g, enum phase p, const struct guarded *except) {
  struct guarded *best = NULL;
  for (struct guarded *e = g->head; e; e = e->next)
    if (!e->cut && e != except && e->phase == p &&
        (!best || e->phase_start_ms < best->phase_start_ms))
      best = e;
  return best;
}

/* The bytes the kernel has received on fd; false when it cannot tell. */
static bool bytes_received(int fd, uint64_t *out) {
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
      len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(uint64_t))
    return false;
  *out = ti.tcpi_bytes_received;
  return true;
}

static void set_phase(struct MHD_Connection *conn, enum phase p) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  struct guarded *e = ci ? ci->socket_context : NULL;
  if (!e) return; /* not tracked (out of memory at accept) */
  struct conn_guard *g = e->guard;
  /* The count when the request was complete, before its answer: whatever arrives after it is
   * the next request's (MHD may notify the end of a request only once those bytes are in, so
   * a count taken then, or at the next sweep, would miss them). The descriptor is this
   * thread's own connection, open until MHD notifies CLOSED. */
  uint64_t done_bytes = 0;
  bool have_done_bytes = p == PHASE_WORKING && bytes_received(e->fd, &done_bytes);
  pthread_mutex_lock(&g->mu);
  if (p == PHASE_WORKING) {
    e->have_base = have_done_bytes;
    e->base_bytes = done_bytes;
  } else if (p == PHASE_HEADERS) {
    e->keepalive = true;
    e->phase_start_ms = time_mono_ms();
    e->first_byte_ms = 0;
  } else {
    e->have_base = false;
  }
  e->phase = p;
  e->gen++;
  e->close_wait_seen = false;
  pthread_mutex_unlock(&g->mu);
}

/* ---------------- MHD callbacks ---------------- */

static void on_started(struct conn_guard *g, struct MHD_Connection *conn, void **socket_context) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  struct guarded *e = ci ? calloc(1, sizeof *e) : NULL;
  *socket_context = e;
  if (!e) return; /* untracked: MHD's own limit and timeouts still apply */
  e->guard = g;
  e->fd = ci->connect_fd;
  e->phase = PHASE_HEADERS;
  e->phase_start_ms = time_mono_ms();
  pthread_mutex_lock(&g->mu);
  e->prev = g->tail;
  if (g->tail)
    g->tail->next = e;
  else
    g->head = e;
  g->tail = e;
  g->live++;
  if (g->live > g->max) {
    struct guarded *victim = oldest_in(g, PHASE_HEADERS, e);
    if (!victim) victim = oldest_in(g, PHASE_BODY, e);
    cut_locked(g, victim ? victim : e, victim ? CONN_GUARD_EVICTED : CONN_GUARD_REFUSED);
  }
  pthread_mutex_unlock(&g->mu);
}

static void on_closed(struct conn_guard *g, void **socket_context) {
  struct guarded *e = *socket_context;
  if (!e) return;
  pthread_mutex_lock(&g->mu);
  if (e->prev)
    e->prev->next = e->next;
  else
    g->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    g->tail = e->prev;
  if (!e->cut) g->live--;
  pthread_mutex_unlock(&g->mu);
  free(e);
  *socket_context = NULL;
}

void conn_guard_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                       enum MHD_ConnectionNotificationCode code) {
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    metrics_connections_add(1);
    on_started(cls, conn, socket_context);
  } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    metrics_connections_add(-1);
    on_closed(cls, socket_context);
  }
}

void conn_guard_headers_done(struct MHD_Connection *conn) { set_phase(conn, PHASE_BODY); }
void conn_guard_request_done(struct MHD_Connection *conn) { set_phase(conn, PHASE_WORKING); }
void conn_guard_request_ended(struct MHD_Connection *conn) { set_phase(conn, PHASE_HEADERS); }

enum conn_guard_cut conn_guard_cut_reason(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  struct guarded *e = ci ? ci->socket_context : NULL;
  if (!e) return CONN_GUARD_NOT_CUT;
  pthread_mutex_lock(&e->guard->mu);
  enum conn_guard_cut why = e->cut;
  pthread_mutex_unlock(&e->guard->mu);
  return why;
}

/* ---------------- the sweeper ---------------- */

static void sweep_one(struct conn_guard *g, struct guarded *e, double now) {
  if (e->cut || e->phase == PHASE_WORKING) return;
  struct tcp_info ti;
  socklen_t len = sizeof ti;
  bool have_info = getsockopt(e->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
                   len >= offsetof(struct tcp_info, tcpi_bytes_received) + sizeof(uint64_t);
  int unread = 0;
  if (have_info && ti.tcpi_state == TCP_STATE_CLOSE_WAIT && ioctl(e->fd, FIONREAD, &unread) == 0 &&
      unread > 0) {
    /* What the client sent before its FIN is not read yet (the event thread is busy): it may
     * be a whole request, to be answered. Once MHD has read it, the count starts. */
    e->close_wait_seen = false;
  } else if (have_info && ti.tcpi_state == TCP_STATE_CLOSE_WAIT) {
    if (e->close_wait_seen && e->close_wait_gen == e->gen) {
      cut_locked(g, e, CONN_GUARD_HALF_CLOSED);
      return;
    }
    e->close_wait_seen = true;
    e->close_wait_gen = e->gen;
  }
  if (e->phase != PHASE_HEADERS) return;
  double since = e->phase_start_ms;
  if (e->keepalive) {
    if (!have_info) return; /* cannot tell idling from a slow request: MHD's idle timeout */
    if (!e->have_base) {    /* not read when the request was complete */
      e->have_base = true;
      e->base_bytes = ti.tcpi_bytes_received;
      return;
    }
    if (!e->first_byte_ms && ti.tcpi_bytes_received > e->base_bytes) e->first_byte_ms = now;
    if (!e->first_byte_ms) return;
    since = e->first_byte_ms;
  }
  if (now - since > g->header_timeout_ms) cut_locked(g, e, CONN_GUARD_HEADER_TIMEOUT);
}

static void report_locked(struct conn_guard *g, double now) {
  if (now < g->next_report_ms) return;
  g->next_report_ms = now + REPORT_EVERY_MS;
  unsigned long *c = g->counts;
  if (c[CONN_GUARD_EVICTED] || c[CONN_GUARD_REFUSED])
    log_msg(LOG_WARNING,
            "connection table full (MAX_CONNECTIONS=%ld): %lu connections still receiving a "
            "request evicted, %lu new ones refused",
            g->max, c[CONN_GUARD_EVICTED], c[CONN_GUARD_REFUSED]);
  if (c[CONN_GUARD_HEADER_TIMEOUT] || c[CONN_GUARD_HALF_CLOSED])
    log_msg(LOG_INFO,
            "connections closed: %lu sent no complete headers within HEADER_TIMEOUT_SECONDS, "
            "%lu were half-closed by the client mid-request",
            c[CONN_GUARD_HEADER_TIMEOUT], c[CONN_GUARD_HALF_CLOSED]);
  for (size_t i = 0; i <= CONN_GUARD_REFUSED; i++) c[i] = 0;
}

static void *sweeper_main(void *arg) {
  struct conn_guard *g = arg;
  pthread_mutex_lock(&g->mu);
  while (!g->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += SWEEP_MS * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    while (!g->stop && pthread_cond_timedwait(&g->wake, &g->mu, &ts) != ETIMEDOUT) {
    }
    if (g->stop) break;
    double now = time_mono_ms();
    for (struct guarded *e = g->head; e; e = e->next) sweep_one(g, e, now);
    report_locked(g, now);
  }
  pthread_mutex_unlock(&g->mu);
  return NULL;
}

/* ---------------- set-up ---------------- */

/* Makes room for the table in the open-file limit (up to the hard limit). */
static void raise_fd_limit(unsigned need) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  rlim_t want = (rlim_t)need + FD_RESERVE;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
      log_msg(LOG_WARNING,
              "open-file limit %lu (was %lu) is below the %u connections MAX_CONNECTIONS may "
              "need: raise it (ulimit -n) or lower MAX_CONNECTIONS",
              (unsigned long)rl.rlim_cur, (unsigned long)was, need);
  }
}

struct conn_guard *conn_guard_new(long max_connections, long header_timeout_s) {
  struct conn_guard *g = calloc(1, sizeof *g);
  if (!g) return NULL;
  g->max = max_connections;
  g->header_timeout_ms = (double)header_timeout_s * 1000.0;
  /* Room for connections already cut but not yet closed by their MHD thread. */
  g->mhd_limit = (unsigned)(max_connections + max_connections / 2 + 64);
  raise_fd_limit(g->mhd_limit);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  bool ok = pthread_mutex_init(&g->mu, NULL) == 0;
  ok = pthread_cond_init(&g->wake, &ca) == 0 && ok;
  pthread_condattr_destroy(&ca);
  if (ok) g->started = pthread_create(&g->sweeper, NULL, sweeper_main, g) == 0;
  if (!g->started) {
    conn_guard_free(g);
    return NULL;
  }
  return g;
}

unsigned conn_guard_mhd_limit(const struct conn_guard *g) { return g->mhd_limit; }

void conn_guard_free(struct conn_guard *g) {
  if (!g) return;
  if (g->started) {
    pthread_mutex_lock(&g->mu);
    g->stop = true;
    pthread_cond_signal(&g->wake);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->sweeper, NULL);
    pthread_cond_destroy(&g->wake);
    pthread_mutex_destroy(&g->mu);
  }
  /* MHD has closed every connection by now; free what it never reported closed */
  for (struct guarded *e = g->head, *next; e; e = next) {
    next = e->next;
    free(e);
  }
  free(g);
}
