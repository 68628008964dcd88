/* Unit tests for queue/: URL checks, an unreachable broker (nothing counted, disconnected, the
 * reason without the password, reconnects paced), and, when the integration suite started real
 * servers (tests/integration/test_queue_publisher.py sets GSR_TEST_REDIS_URL and
 * GSR_TEST_NATS_URL), publishing to a real Redis Stream and a real JetStream stream, read back
 * with hiredis and libnats. Without those variables the server tests are skipped here and run
 * there. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/dsn.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "queue/queue.h"

#define PASSWORD "s3cret-do-not-print"

static struct queue *open_or_fail(const char *url, const char *stream, long maxlen) {
  char err[200] = "";
  struct queue *q = queue_open(url, stream, maxlen, 2000, err, sizeof err);
  if (!q) fail_msg("queue_open(%s): %s", url, err);
  return q;
}

static void test_bad_urls_are_refused_without_the_password(void **state) {
  (void)state;
  const char *bad[] = {
      "http://127.0.0.1:6379",
      "redis://:" PASSWORD "@",
      "redis://:" PASSWORD "@127.0.0.1:0",
      "redis://:" PASSWORD "@127.0.0.1:6379/x",
      "nats://user:" PASSWORD "@",
      "nats://user:" PASSWORD "@127.0.0.1:70000",
      "nats://user:" PASSWORD "@127.0.0.1:4222/path",
      "nats://" PASSWORD "@",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char err[200] = "";
    struct queue *q = queue_open(bad[i], "s", 10, 1000, err, sizeof err);
    if (q) fail_msg("accepted %s", bad[i]);
    assert_non_null(strstr(err, "QUEUE_URL"));
    assert_null(strstr(err, PASSWORD));
  }
}

static void test_kinds(void **state) {
  (void)state;
  struct queue *r = open_or_fail("redis://127.0.0.1:1", "s", 10);
  struct queue *n = open_or_fail("nats://127.0.0.1:1", "", 0);
  assert_string_equal(queue_kind(r), "redis");
  assert_string_equal(queue_kind(n), "nats");
  assert_false(queue_connected(r));
  assert_false(queue_connected(n));
  queue_close(r);
  queue_close(n);
}

/* A port nothing listens on (bound, never listening). */
static int dead_port(int *fd_out) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t len = sizeof a;
  assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
  *fd_out = fd;
  return ntohs(a.sin_port);
}

#define MSG(id, type, json) \
  { id, type, json, sizeof json - 1 }
static const struct queue_msg three[] = {
    MSG("evt_00000000000000000000000000000001", "conversation.created",
        "{\"type\":\"conversation.created\",\"id\":\"evt_00000000000000000000000000000001\"}"),
    MSG("evt_00000000000000000000000000000002", "conversation.updated",
        "{\"type\":\"conversation.updated\",\"id\":\"evt_00000000000000000000000000000002\"}"),
    MSG("evt_00000000000000000000000000000003", "conversation.deleted",
        "{\"type\":\"conversation.deleted\",\"id\":\"evt_00000000000000000000000000000003\"}"),
};

static void unreachable(const char *scheme, const char *userinfo) {
  int fd;
  int port = dead_port(&fd);
  char url[200];
  snprintf(url, sizeof url, "%s://%s127.0.0.1:%d", scheme, userinfo, port);
  struct queue *q = open_or_fail(url, "gensendrep:events", 100);
  double t0 = time_mono_ms();
  assert_int_equal(queue_publish(q, three, 3), 0);
  assert_false(queue_connected(q));
  char why[200];
  queue_last_error(q, why, sizeof why);
  assert_true(why[0]);
  assert_null(strstr(why, PASSWORD));
  /* The next attempt waits for its turn: at most one connection attempt a second. */
  assert_int_equal(queue_publish(q, three, 3), 0);
  assert_true(time_mono_ms() - t0 >= 900);
  /* A probe does not wait for its turn. */
  double t1 = time_mono_ms();
  assert_int_equal(queue_publish(q, NULL, 0), 0);
  assert_true(time_mono_ms() - t1 < 500);
  assert_false(queue_connected(q));
  queue_close(q);
  close(fd);
}

static void test_unreachable_redis(void **state) {
  (void)state;
  unreachable("redis", ":" PASSWORD "@");
}

static void test_unreachable_nats(void **state) {
  (void)state;
  unreachable("nats", "user:" PASSWORD "@");
}

/* ---------------- against a real redis-server ---------------- */

static redisContext *redis_at(const char *url) {
  struct dsn_redis d;
  char err[200];
  assert_true(dsn_parse_redis("QUEUE_URL", url, &d, err, sizeof err));
  redisContext *c = redisConnect(d.host, d.port);
  assert_non_null(c);
  assert_int_equal(c->err, 0);
  if (*d.password) {
    redisReply *r = redisCommand(c, "AUTH %s", d.password);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    freeReplyObject(r);
  }
  if (d.db) freeReplyObject(redisCommand(c, "SELECT %d", d.db));
  return c;
}

static const char *redis_url(void) {
  const char *u = getenv("GSR_TEST_REDIS_URL");
  if (!u || !*u) skip();
  return u;
}

static void test_redis_xadd_in_order_with_fields(void **state) {
  (void)state;
  const char *url = redis_url();
  redisContext *c = redis_at(url);
  freeReplyObject(redisCommand(c, "DEL unit:events"));
  struct queue *q = open_or_fail(url, "unit:events", 1000);
  assert_int_equal(queue_publish(q, three, 3), 3);
  assert_true(queue_connected(q));
  char why[200];
  queue_last_error(q, why, sizeof why);
  assert_string_equal(why, "");
  redisReply *r = redisCommand(c, "XRANGE unit:events - +");
  assert_int_equal(r->type, REDIS_REPLY_ARRAY);
  assert_int_equal(r->elements, 3);
  for (size_t i = 0; i < 3; i++) {
    redisReply *fields = r->element[i]->element[1];
    assert_int_equal(fields->elements, 6);
    assert_string_equal(fields->element[0]->str, "type");
    assert_string_equal(fields->element[1]->str, three[i].type);
    assert_string_equal(fields->element[2]->str, "id");
    assert_string_equal(fields->element[3]->str, three[i].id);
    assert_string_equal(fields->element[4]->str, "event");
    assert_int_equal(fields->element[5]->len, three[i].len);
    assert_memory_equal(fields->element[5]->str, three[i].json, three[i].len);
  }
  freeReplyObject(r);
  /* A probe on a held connection is a round trip */
  assert_int_equal(queue_publish(q, NULL, 0), 0);
  assert_true(queue_connected(q));
  queue_close(q);
  redisFree(c);
}

static void test_redis_trims_to_about_maxlen(void **state) {
  (void)state;
  const char *url = redis_url();
  redisContext *c = redis_at(url);
  freeReplyObject(redisCommand(c, "DEL unit:trim"));
  struct queue *q = open_or_fail(url, "unit:trim", 10);
  enum { N = 250, TOTAL = 2000 };
  static struct queue_msg batch[N];
  static char ids[N][48];
  for (int round = 0; round < TOTAL / N; round++) {
    for (int i = 0; i < N; i++) {
      snprintf(ids[i], sizeof ids[i], "evt_%032d", round * N + i);
      batch[i] = (struct queue_msg){ids[i], "conversation.created", "{}", 2};
    }
    assert_int_equal(queue_publish(q, batch, N), N);
  }
  redisReply *r = redisCommand(c, "XLEN unit:trim");
  assert_int_equal(r->type, REDIS_REPLY_INTEGER);
  /* "~": whole stream nodes (100 entries by default) are dropped, never below MAXLEN */
  assert_true(r->integer >= 10);
  assert_true(r->integer < 300);
  freeReplyObject(r);
  queue_close(q);
  redisFree(c);
}

static void test_redis_refusal_stops_at_that_event(void **state) {
  (void)state;
  const char *url = redis_url();
  redisContext *c = redis_at(url);
  freeReplyObject(redisCommand(c, "SET unit:notastream x"));
  struct queue *q = open_or_fail(url, "unit:notastream", 10);
  assert_int_equal(queue_publish(q, three, 3), 0);
  assert_false(queue_connected(q));
  char why[200];
  queue_last_error(q, why, sizeof why);
  assert_non_null(strstr(why, "WRONGTYPE"));
  freeReplyObject(redisCommand(c, "DEL unit:notastream"));
  /* Works again after the pause between attempts. */
  assert_int_equal(queue_publish(q, three, 3), 3);
  assert_true(queue_connected(q));
  queue_close(q);
  redisFree(c);
}

/* ---------------- against a real nats-server -js ---------------- */

static const char *nats_url(void) {
  const char *u = getenv("GSR_TEST_NATS_URL");
  if (!u || !*u) skip();
  return u;
}

struct reader {
  natsConnection *nc;
  jsCtx *js;
};

static void reader_open(struct reader *r, const char *url) {
  assert_int_equal(natsConnection_ConnectTo(&r->nc, url), NATS_OK);
  assert_int_equal(natsConnection_JetStream(&r->js, r->nc, NULL), NATS_OK);
}

static void reader_close(struct reader *r) {
  jsCtx_Destroy(r->js);
  natsConnection_Destroy(r->nc);
}

static uint64_t stream_last_seq(struct reader *r) {
  jsStreamInfo *si = NULL;
  assert_int_equal(js_GetStreamInfo(&si, r->js, "GENSENDREP", NULL, NULL), NATS_OK);
  assert_int_equal(si->Config->SubjectsLen, 1);
  assert_string_equal(si->Config->Subjects[0], "gensendrep.events.>");
  assert_int_equal(si->Config->Storage, js_FileStorage);
  uint64_t last = si->State.LastSeq;
  jsStreamInfo_Destroy(si);
  return last;
}

static void test_nats_publishes_with_ids_and_subjects(void **state) {
  (void)state;
  const char *url = nats_url();
  struct queue *q = open_or_fail(url, "", 0);
  assert_int_equal(queue_publish(q, three, 3), 3); /* creates the stream */
  assert_true(queue_connected(q));
  struct reader r;
  reader_open(&r, getenv("GSR_TEST_NATS_READER_URL") ? getenv("GSR_TEST_NATS_READER_URL") : url);
  uint64_t last = stream_last_seq(&r);
  assert_true(last >= 3);
  for (uint64_t i = 0; i < 3; i++) {
    natsMsg *m = NULL;
    assert_int_equal(js_GetMsg(&m, r.js, "GENSENDREP", last - 2 + i, NULL, NULL), NATS_OK);
    char subject[100];
    snprintf(subject, sizeof subject, "gensendrep.events.%s", three[i].type);
    assert_string_equal(natsMsg_GetSubject(m), subject);
    const char *id = NULL;
    assert_int_equal(natsMsgHeader_Get(m, "Nats-Msg-Id", &id), NATS_OK);
    assert_string_equal(id, three[i].id);
    assert_int_equal(natsMsg_GetDataLength(m), (int)three[i].len);
    assert_memory_equal(natsMsg_GetData(m), three[i].json, three[i].len);
    natsMsg_Destroy(m);
  }
  /* The same ids again: acknowledged, and JetStream keeps one copy. */
  assert_int_equal(queue_publish(q, three, 3), 3);
  assert_int_equal(stream_last_seq(&r), last);
  /* A probe on a held connection is a round trip */
  assert_int_equal(queue_publish(q, NULL, 0), 0);
  assert_true(queue_connected(q));
  reader_close(&r);
  queue_close(q);
}

static void test_nats_large_batch(void **state) {
  (void)state;
  const char *url = nats_url();
  struct queue *q = open_or_fail(url, "", 0);
  enum { N = 3000 };
  static struct queue_msg batch[N];
  static char ids[N][48];
  static char body[N][64];
  for (int i = 0; i < N; i++) {
    snprintf(ids[i], sizeof ids[i], "evt_%032lld", (long long)time_now_us() * 10 + i);
    int len = snprintf(body[i], sizeof body[i], "{\"n\":%d}", i);
    batch[i] = (struct queue_msg){ids[i], "conversation.created", body[i], (size_t)len};
  }
  assert_int_equal(queue_publish(q, batch, N), N);
  queue_close(q);
}

int main(void) {
  log_set_level(LOG_ERROR);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_urls_are_refused_without_the_password),
      cmocka_unit_test(test_kinds),
      cmocka_unit_test(test_unreachable_redis),
      cmocka_unit_test(test_unreachable_nats),
      cmocka_unit_test(test_redis_xadd_in_order_with_fields),
      cmocka_unit_test(test_redis_trims_to_about_maxlen),
      cmocka_unit_test(test_redis_refusal_stops_at_that_event),
      cmocka_unit_test(test_nats_publishes_with_ids_and_subjects),
      cmocka_unit_test(test_nats_large_batch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
