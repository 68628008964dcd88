/* The subscriber for `make bench`'s delivery scenario: one thread, epoll, HTTP/1.1 keep-alive,
 * answering every POST "200 OK" at once and recording for each the delivery lag = arrival time
 * minus the event's "timestamp" (when gensendrep stored it; both on this machine's clock). No
 * signature check and no HTTP library: it stands for a receiver that is never the bottleneck
 * and costs the shared cores as little as a receiver can (a recv and a send per delivery), so
 * what the scenario measures is gensendrep's own cost. It understands exactly what gensendrep
 * (libcurl) sends: a request line, headers with Content-Length, a body.
 * GET /stats answers {"count":N,"bad":N,"p50_ms":..,"p99_ms":..,"max_ms":..}. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_LAGS (8u * 1024 * 1024)
#define BUF_MAX (4u * 1024 * 1024) /* a request larger than this closes the connection */

static int64_t *lags; /* microseconds */
static unsigned nlags;
static unsigned long bad; /* bodies without a readable timestamp */

struct conn {
  int fd;
  char *buf;
  size_t len, cap;
};

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* "2026-11-29T17:44:01.123456Z" -> microseconds since the epoch, or -1. */
static int64_t parse_ts(const char *s, const char *end) {
  if (end - s < 27) return -1;
  struct tm tm = {0};
  int us = 0;
  if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
             &tm.tm_min, &tm.tm_sec, &us) != 7)
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return (int64_t)timegm(&tm) * 1000000 + us;
}

static void record(const char *body, size_t len, int64_t at) {
  static const char key[] = "\"timestamp\":\"";
  const char *end = body + len;
  const char *p = memmem(body, len < 256 ? len : 256, key, sizeof key - 1);
  int64_t ts = p ? parse_ts(p + sizeof key - 1, end) : -1;
  if (ts < 0) {
    bad++;
    return;
  }
  if (nlags < MAX_LAGS) lags[nlags] = at - ts;
  nlags++;
}

static int cmp(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static int stats(char *out, size_t cap) {
  unsigned n = nlags < MAX_LAGS ? nlags : MAX_LAGS;
  int64_t *copy = malloc((n ? n : 1) * sizeof *copy);
  if (!copy) return -1;
  memcpy(copy, lags, n * sizeof *copy);
  qsort(copy, n, sizeof *copy, cmp);
  double p50 = n ? copy[n / 2] / 1000.0 : 0, p99 = n ? copy[(size_t)(n * 0.99)] / 1000.0 : 0,
         max = n ? copy[n - 1] / 1000.0 : 0;
  free(copy);
  return snprintf(out, cap,
                  "{\"count\":%u,\"bad\":%lu,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}",
                  nlags, bad, p50, p99, max);
}

static void conn_close(int ep, struct conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c->buf);
  free(c);
}

static int send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1; /* the answers are small: a full socket buffer is a dead peer */
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Answers every complete request in c->buf; -1: close the connection. */
static int serve(struct conn *c) {
  static const char ok[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
  size_t off = 0;
  char out[8192];
  size_t olen = 0;
  for (;;) {
    char *start = c->buf + off;
    size_t avail = c->len - off;
    char *hend = memmem(start, avail, "\r\n\r\n", 4);
    if (!hend) break;
    size_t hlen = (size_t)(hend - start) + 4, blen = 0;
    for (char *line = memchr(start, '\n', hlen); line && line < hend;
         line = memchr(line + 1, '\n', (size_t)(hend - line))) {
      if (strncasecmp(line + 1, "Content-Length:", 15) == 0) blen = strtoul(line + 16, NULL, 10);
    }
    if (blen > BUF_MAX) return -1;
    if (avail < hlen + blen) break;
    if (strncmp(start, "POST ", 5) == 0) {
      record(start + hlen, blen, now_us());
      if (olen + sizeof ok > sizeof out) {
        if (send_all(c->fd, out, olen)) return -1;
        olen = 0;
      }
      memcpy(out + olen, ok, sizeof ok - 1);
      olen += sizeof ok - 1;
    } else {
      char body[256], head[128];
      int bl = strncmp(start, "GET /stats ", 11) == 0 ? stats(body, sizeof body) : -1;
      int hl = bl >= 0 ? snprintf(head, sizeof head,
                                  "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  "Content-Length: %d\r\n\r\n",
                                  bl)
                       : snprintf(head, sizeof head,
                                  "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
      if (send_all(c->fd, out, olen) || send_all(c->fd, head, (size_t)hl) ||
          (bl > 0 && send_all(c->fd, body, (size_t)bl)))
        return -1;
      olen = 0;
    }
    off += hlen + blen;
  }
  if (olen && send_all(c->fd, out, olen)) return -1;
  memmove(c->buf, c->buf + off, c->len - off);
  c->len -= off;
  return 0;
}

int main(int argc, char **argv) {
  unsigned port = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 8098;
  lags = malloc(MAX_LAGS * sizeof *lags);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  if (!lags || lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1024) ||
      ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev)) {
    fprintf(stderr, "delivery_receiver: cannot listen on %u\n", port);
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (!c) {
        int fd;
        while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          struct conn *nc = calloc(1, sizeof *nc);
          struct epoll_event e = {.events = EPOLLIN, .data.ptr = nc};
          if (!nc || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e)) {
            free(nc);
            close(fd);
            continue;
          }
          nc->fd = fd;
        }
        continue;
      }
      int dead = 0;
      for (;;) {
        if (c->cap - c->len < 16384) {
          size_t ncap = c->cap ? c->cap * 2 : 65536;
          char *nb = ncap <= 2 * BUF_MAX ? realloc(c->buf, ncap) : NULL;
          if (!nb) {
            dead = 1;
            break;
          }
          c->buf = nb;
          c->cap = ncap;
        }
        size_t room = c->cap - c->len;
        ssize_t r = recv(c->fd, c->buf + c->len, room, 0);
        if (r > 0) {
          c->len += (size_t)r;
          if ((size_t)r < room) break; /* drained */
          continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) break;
        dead = 1;
        break;
      }
      if (dead || serve(c)) conn_close(ep, c);
    }
  }
}
