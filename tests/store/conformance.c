/* The store's contract (src/store/store.h), checked the same way on every backend: SQLite on a
 * temporary file and PostgreSQL on the database named by GSR_CONFORMANCE_PG_URL (make
 * conformance starts a throw-away cluster through tests/store/run_conformance.py). What a
 * backend must do, whatever it is built on:
 *   - redelivery: the same bytes again change nothing and answer the stored webhookId and
 *     processedAt with the duplicate flag; other bytes make a new version (new webhookId,
 *     later processedAt), also when both arrive in one batch;
 *   - reads: get (with and without the body, which comes back byte for byte), lists ordered
 *     newest processedAt first, filtered by email, account and status in every combination,
 *     paginated with the total of all matches, the total and the page from one snapshot
 *     while writes land;
 *   - errors: unknown ids are NOT_FOUND; bytes the database cannot take (not UTF-8) are
 *     NOT_FOUND or CLIENT, never RETRY or HARD, and a write refused for its data fails alone;
 *   - the health probe's write and read; close drains what was submitted;
 *   - SQLite: the background checkpointer moves the log into the database file and the log
 *     stays bounded.
 * Usage: conformance [sqlite|postgres]... (default: both; postgres needs the URL: no URL is
 * a failure, never a skip). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "ext/crypto.h"
#include "model/conversation.h"
#include "store/store.h"

#define PG_URL_ENV "GSR_CONFORMANCE_PG_URL"
#define WAIT_SECONDS 60

struct backend {
  const char *name;
  char url[4400];
  char sqlite_path[4200]; /* SQLite only */
  char dir[4096];         /* SQLite only: the temporary directory */
  struct store *store;
};

static struct backend *B; /* the backend of the group running */

/* ---------- writes and their completion ---------- */

struct pending {
  struct store_write w;
  struct conversation_input in;
  bool parsed;
  char *body;
  bool done;
};

static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;

static void on_done(struct store_write *w, void *cls) {
  (void)w;
  struct pending *p = cls;
  pthread_mutex_lock(&done_mu);
  p->done = true;
  pthread_cond_broadcast(&done_cv);
  pthread_mutex_unlock(&done_mu);
}

static struct pending *pending_new(const char *body) {
  struct pending *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->body = strdup(body);
  assert_non_null(p->body);
  json_t *problems = NULL;
  char msg[256];
  enum model_result r =
      model_conversation_parse(p->body, strlen(p->body), &p->in, &problems, msg, sizeof msg);
  if (r != MODEL_OK) {
    char *why = problems ? json_dumps(problems, JSON_COMPACT) : NULL;
    fprintf(stderr, "test body does not validate: %s\n%s\n", why ? why : msg, body);
    free(why);
    json_decref(problems);
    fail();
  }
  json_decref(problems);
  p->parsed = true;
  p->w.kind = STORE_WRITE_CONVERSATION;
  p->w.conv = &p->in;
  p->w.body = p->body;
  p->w.body_len = strlen(p->body);
  crypto_sha256(p->body, p->w.body_len, p->w.body_sha256);
  p->w.done = on_done;
  p->w.done_cls = p;
  return p;
}

static struct pending *probe_new(void) {
  struct pending *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->w.kind = STORE_WRITE_PROBE;
  p->w.done = on_done;
  p->w.done_cls = p;
  return p;
}

static void pending_free(struct pending *p) {
  if (p->parsed) model_conversation_free(&p->in);
  free(p->body);
  free(p);
}

static void wait_done(struct pending *p) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += WAIT_SECONDS;
  pthread_mutex_lock(&done_mu);
  int rc = 0;
  while (!p->done && rc == 0) rc = pthread_cond_timedwait(&done_cv, &done_mu, &until);
  bool done = p->done;
  pthread_mutex_unlock(&done_mu);
  if (!done) fail_msg("a submitted write was not finished within %d s", WAIT_SECONDS);
}

/* Submits body, waits for it; the caller frees the result. */
static struct pending *put(const char *body) {
  struct pending *p = pending_new(body);
  store_submit(B->store, &p->w);
  wait_done(p);
  return p;
}

/* Stores body (must succeed) and returns the version it made or found. */
struct version {
  char webhook_id[STORE_WEBHOOK_ID_MAX];
  int64_t processed_us;
  bool duplicate;
};

static struct version put_ok(const char *body) {
  struct pending *p = put(body);
  assert_int_equal(p->w.status, STORE_OK);
  struct version v;
  memcpy(v.webhook_id, p->w.webhook_id, sizeof v.webhook_id);
  v.processed_us = p->w.processed_us;
  v.duplicate = p->w.duplicate;
  pending_free(p);
  assert_true(strncmp(v.webhook_id, "webhook_", 8) == 0);
  assert_true(v.processed_us > 0);
  return v;
}

/* ---------- test data ---------- */

/* A fresh prefix per test, so tests never see each other's rows. */
static void new_tag(char tag[16]) { assert_true(crypto_random_hex(tag, 16, 6)); }

static char *conv_body(const char *id, const char *email, const char *account, int messages,
                       const char *extra) {
  char *buf = NULL;
  size_t cap = 0;
  FILE *f = open_memstream(&buf, &cap);
  assert_non_null(f);
  fprintf(f, "{\"emailId\":\"%s\",\"accountId\":\"%s\",\"conversationId\":\"%s\",\"transcript\":[",
          email, account, id);
  for (int i = 0; i < messages; i++)
    fprintf(f,
            "%s{\"timestamp\":\"2024-01-15T10:%02d:00Z\",\"speaker\":\"%s\",\"content\":\"m%d "
            "caf\xc3\xa9 \\u00e9 \\\"q\\\"\",\"messageId\":\"msg_%d\"}",
            i ? "," : "", i % 60, i % 2 ? "agent" : "user", i, i);
  fprintf(f,
          "],\"metadata\":{\"sessionId\":\"s\",\"agentId\":\"a\",\"duration\":300,"
          "\"messageCount\":%d,\"platform\":\"web\",\"userAgent\":\"ua\"}%s%s}",
          messages, extra ? "," : "", extra ? extra : "");
  fclose(f);
  return buf;
}

static struct version put_conv(const char *id, const char *email, const char *account) {
  char *body = conv_body(id, email, account, 1, NULL);
  struct version v = put_ok(body);
  free(body);
  return v;
}

static struct store_filter filter(const char *email, const char *account, const char *status,
                                  int64_t page, int64_t limit) {
  struct store_filter f = {email, account, status, page, limit};
  return f;
}

/* ---------- redelivery and versions ---------- */

static void test_first_delivery_is_stored_and_read_back(void **state) {
  (void)state;
  char tag[16], id[64], email[64];
  new_tag(tag);
  snprintf(id, sizeof id, "conv-%s", tag);
  snprintf(email, sizeof email, "%s@example.com", tag);
  char *body = conv_body(id, email, "acc-1", 3, "\"summary\":{\"text\":\"r\xc3\xa9sum\xc3\xa9\"}");
  struct version v = put_ok(body);
  assert_false(v.duplicate);

  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, false, &c), STORE_OK);
  assert_string_equal(c.conversation_id, id);
  assert_string_equal(c.email_id, email);
  assert_string_equal(c.account_id, "acc-1");
  assert_string_equal(c.status, "completed");
  assert_string_equal(c.webhook_id, v.webhook_id);
  assert_int_equal(c.processed_us, v.processed_us);
  assert_int_equal(c.duration, 300);
  assert_int_equal(c.message_count, 3);
  assert_true(c.has_start);
  assert_int_equal(c.start_us, INT64_C(1705312800000000)); /* 2024-01-15T10:00:00Z */
  assert_null(c.body);

  assert_int_equal(store_get(B->store, id, true, &c), STORE_OK);
  assert_non_null(c.body);
  assert_int_equal(c.body_len, strlen(body));
  assert_memory_equal(c.body, body, c.body_len);
  free(c.body);
  free(body);
}

static void test_empty_transcript_has_no_start(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "conv-%s", tag);
  char *body = conv_body(id, "e@example.com", "acc", 0, NULL);
  (void)put_ok(body);
  free(body);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, false, &c), STORE_OK);
  assert_false(c.has_start);
  assert_int_equal(c.message_count, 0);
}

static void test_identical_redelivery_changes_nothing(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "conv-%s", tag);
  char *body = conv_body(id, "e@example.com", "acc", 2, NULL);
  struct version first = put_ok(body);
  struct version again = put_ok(body);
  assert_false(first.duplicate);
  assert_true(again.duplicate);
  assert_string_equal(again.webhook_id, first.webhook_id);
  assert_int_equal(again.processed_us, first.processed_us);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, true, &c), STORE_OK);
  assert_string_equal(c.webhook_id, first.webhook_id);
  assert_int_equal(c.processed_us, first.processed_us);
  free(c.body);
  free(body);
}

static void test_different_body_makes_a_new_version(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "conv-%s", tag);
  char *v1 = conv_body(id, "old@example.com", "acc-old", 2, NULL);
  char *v2 = conv_body(id, "new@example.com", "acc-new", 4, NULL);
  struct version a = put_ok(v1);
  struct version b = put_ok(v2);
  assert_false(b.duplicate);
  assert_string_not_equal(b.webhook_id, a.webhook_id);
  assert_true(b.processed_us > a.processed_us);

  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, true, &c), STORE_OK);
  assert_string_equal(c.email_id, "new@example.com");
  assert_string_equal(c.account_id, "acc-new");
  assert_int_equal(c.message_count, 4);
  assert_string_equal(c.webhook_id, b.webhook_id);
  assert_int_equal(c.body_len, strlen(v2));
  assert_memory_equal(c.body, v2, c.body_len);
  free(c.body);

  /* Only the current version is compared: the first body again is a third version. */
  struct version d = put_ok(v1);
  assert_false(d.duplicate);
  assert_string_not_equal(d.webhook_id, a.webhook_id);
  assert_true(d.processed_us > b.processed_us);
  assert_int_equal(store_get(B->store, id, false, &c), STORE_OK);
  assert_string_equal(c.email_id, "old@example.com");

  /* The old version no longer matches its old filters. */
  struct store_filter f = filter("new@example.com", "acc-new", NULL, 1, 100);
  struct store_page page;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  for (size_t i = 0; i < page.count; i++)
    assert_string_not_equal(page.items[i].conversation_id, id);
  store_page_free(&page);
  free(v1);
  free(v2);
}

/* A byte-different body with the same JSON meaning is a new version too: the bytes count. */
static void test_bytes_decide_not_meaning(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "conv-%s", tag);
  char *body = conv_body(id, "e@example.com", "acc", 1, NULL);
  char *spaced = malloc(strlen(body) + 2);
  assert_non_null(spaced);
  snprintf(spaced, strlen(body) + 2, "%s ", body);
  struct version a = put_ok(body);
  struct version b = put_ok(spaced);
  assert_false(b.duplicate);
  assert_string_not_equal(a.webhook_id, b.webhook_id);
  free(body);
  free(spaced);
}

/* Deliveries of one conversation submitted together (likely one batch): the same answers as
 * one after the other, the last one submitted is current. */
static void test_redelivery_within_one_batch(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "conv-%s", tag);
  char *v1 = conv_body(id, "e@example.com", "acc", 1, NULL);
  char *v2 = conv_body(id, "e@example.com", "acc", 2, NULL);
  const char *bodies[] = {v1, v1, v2, v2, v1};
  struct pending *p[5];
  for (int i = 0; i < 5; i++) p[i] = pending_new(bodies[i]);
  for (int i = 0; i < 5; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 5; i++) {
    wait_done(p[i]);
    assert_int_equal(p[i]->w.status, STORE_OK);
  }
  assert_false(p[0]->w.duplicate);
  assert_true(p[1]->w.duplicate);
  assert_string_equal(p[1]->w.webhook_id, p[0]->w.webhook_id);
  assert_int_equal(p[1]->w.processed_us, p[0]->w.processed_us);
  assert_false(p[2]->w.duplicate);
  assert_true(p[2]->w.processed_us > p[0]->w.processed_us);
  assert_true(p[3]->w.duplicate);
  assert_string_equal(p[3]->w.webhook_id, p[2]->w.webhook_id);
  assert_false(p[4]->w.duplicate);
  assert_true(p[4]->w.processed_us > p[2]->w.processed_us);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, true, &c), STORE_OK);
  assert_string_equal(c.webhook_id, p[4]->w.webhook_id);
  assert_int_equal(c.message_count, 1);
  assert_memory_equal(c.body, v1, strlen(v1));
  free(c.body);
  for (int i = 0; i < 5; i++) pending_free(p[i]);
  free(v1);
  free(v2);
}

static void test_large_body_round_trips(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "conv-%s", tag);
  char *body = conv_body(id, "e@example.com", "acc", 2000, NULL); /* ~200 KB */
  assert_true(strlen(body) > 100000);
  (void)put_ok(body);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, true, &c), STORE_OK);
  assert_int_equal(c.body_len, strlen(body));
  assert_memory_equal(c.body, body, c.body_len);
  free(c.body);
  free(body);
}

/* ---------- lists ---------- */

static void assert_ids(const struct store_page *page, const char *const *ids, size_t n) {
  assert_int_equal(page->count, n);
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(page->items[i].conversation_id, ids[i]);
    assert_null(page->items[i].body);
  }
}

static void test_lists_newest_first(void **state) {
  (void)state;
  char tag[16], email[64], a[64], b[64], c[64];
  new_tag(tag);
  snprintf(email, sizeof email, "%s@example.com", tag);
  snprintf(a, sizeof a, "a-%s", tag);
  snprintf(b, sizeof b, "b-%s", tag);
  snprintf(c, sizeof c, "c-%s", tag);
  struct version va = put_conv(b, email, "acc");
  (void)put_conv(a, email, "acc");
  (void)put_conv(c, email, "acc");
  struct store_filter f = filter(email, NULL, NULL, 1, 10);
  struct store_page page;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.total, 3);
  assert_ids(&page, (const char *[]){c, a, b}, 3);
  assert_int_equal(page.items[2].processed_us, va.processed_us);
  assert_true(page.items[0].processed_us > page.items[1].processed_us);
  store_page_free(&page);

  /* An identical redelivery does not move a conversation; a new version moves it first. */
  (void)put_conv(a, email, "acc");
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_ids(&page, (const char *[]){c, a, b}, 3);
  store_page_free(&page);
  char *v2 = conv_body(b, email, "acc", 5, NULL);
  (void)put_ok(v2);
  free(v2);
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_ids(&page, (const char *[]){b, c, a}, 3);
  assert_int_equal(page.items[0].message_count, 5);
  store_page_free(&page);

  /* Unfiltered, the newest of all is first. */
  f = filter(NULL, NULL, NULL, 1, 1);
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_true(page.total >= 3);
  assert_ids(&page, (const char *[]){b}, 1);
  store_page_free(&page);
}

static void check_count(const char *email, const char *account, const char *status,
                        int64_t expected) {
  struct store_filter f = filter(email, account, status, 1, 100);
  struct store_page page;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.total, expected);
  assert_int_equal(page.count, (size_t)expected);
  for (size_t i = 0; i < page.count; i++) {
    if (email) assert_string_equal(page.items[i].email_id, email);
    if (account) assert_string_equal(page.items[i].account_id, account);
    if (status) assert_string_equal(page.items[i].status, status);
    if (i) assert_true(page.items[i - 1].processed_us > page.items[i].processed_us);
  }
  store_page_free(&page);
}

static void test_filters_and_their_combinations(void **state) {
  (void)state;
  char tag[16], x[64], y[64], p[64], q[64], id[64];
  new_tag(tag);
  snprintf(x, sizeof x, "x-%s@example.com", tag);
  snprintf(y, sizeof y, "y-%s@example.com", tag);
  snprintf(p, sizeof p, "acc-p-%s", tag);
  snprintf(q, sizeof q, "acc-q-%s", tag);
  const struct {
    const char *email, *account;
    int n;
  } rows[] = {{x, p, 3}, {x, q, 2}, {y, p, 1}};
  int k = 0;
  for (size_t r = 0; r < 3; r++)
    for (int i = 0; i < rows[r].n; i++) {
      snprintf(id, sizeof id, "conv-%s-%d", tag, k++);
      (void)put_conv(id, rows[r].email, rows[r].account);
    }
  check_count(x, NULL, NULL, 5);
  check_count(y, NULL, NULL, 1);
  check_count(NULL, p, NULL, 4);
  check_count(NULL, q, NULL, 2);
  check_count(x, p, NULL, 3);
  check_count(x, q, NULL, 2);
  check_count(y, q, NULL, 0);
  check_count(x, NULL, "completed", 5);
  check_count(NULL, p, "completed", 4);
  check_count(x, p, "completed", 3);
  check_count(x, NULL, "failed", 0);
  check_count(x, p, "failed", 0);
  check_count("nobody@example.com", NULL, NULL, 0);
  /* Filters compare exactly: no case folding, no prefix match. */
  char upper[64];
  snprintf(upper, sizeof upper, "X-%s@example.com", tag);
  check_count(upper, NULL, NULL, 0);
  check_count("x-", NULL, NULL, 0);
}

static void test_pagination(void **state) {
  (void)state;
  char tag[16], email[64], ids[7][64];
  new_tag(tag);
  snprintf(email, sizeof email, "%s@example.com", tag);
  for (int i = 0; i < 7; i++) {
    snprintf(ids[i], sizeof ids[i], "conv-%s-%d", tag, i);
    (void)put_conv(ids[i], email, "acc");
  }
  size_t expected_counts[] = {3, 3, 1, 0};
  int seen = 0;
  for (int64_t pg = 1; pg <= 4; pg++) {
    struct store_filter f = filter(email, NULL, NULL, pg, 3);
    struct store_page page;
    assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
    assert_int_equal(page.total, 7);
    assert_int_equal(page.count, expected_counts[pg - 1]);
    for (size_t i = 0; i < page.count; i++) /* newest first across pages, none twice */
      assert_string_equal(page.items[i].conversation_id, ids[6 - seen++]);
    store_page_free(&page);
  }
  assert_int_equal(seen, 7);
  struct store_filter f = filter(email, NULL, NULL, 1, 100);
  struct store_page page;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.count, 7);
  store_page_free(&page);
  f = filter(email, NULL, NULL, 1000000, 100);
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.total, 7);
  assert_int_equal(page.count, 0);
  store_page_free(&page);
}

/* A list's total and its page come from one snapshot, even while writes land: with every match
 * on the first page, the page holds exactly total rows, newest first. */
struct writer_args {
  char email[64];
  char tag[16];
  int n;
};

static void *keep_writing(void *arg) {
  struct writer_args *a = arg;
  for (int i = 0; i < a->n; i++) {
    char id[64];
    snprintf(id, sizeof id, "agree-%s-%d", a->tag, i);
    char *body = conv_body(id, a->email, "acc", 1, NULL);
    struct pending *p = pending_new(body);
    free(body);
    store_submit(B->store, &p->w);
    wait_done(p);
    pending_free(p);
  }
  return NULL;
}

static void test_list_total_and_page_agree_during_writes(void **state) {
  (void)state;
  struct writer_args a = {.n = 60};
  new_tag(a.tag);
  snprintf(a.email, sizeof a.email, "%s@example.com", a.tag);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, keep_writing, &a), 0);
  int64_t last_total = 0;
  time_t give_up = time(NULL) + WAIT_SECONDS;
  while (last_total < a.n && time(NULL) < give_up) {
    struct store_filter f = filter(a.email, NULL, NULL, 1, 100);
    struct store_page page;
    assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
    assert_int_equal(page.count, (size_t)page.total);
    assert_true(page.total >= last_total); /* committed rows never disappear */
    for (size_t i = 1; i < page.count; i++)
      assert_true(page.items[i - 1].processed_us > page.items[i].processed_us);
    last_total = page.total;
    store_page_free(&page);
  }
  pthread_join(t, NULL);
  assert_int_equal(last_total, a.n);
}

/* ---------- errors ---------- */

static void test_unknown_id_is_not_found(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "missing-%s", tag);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, false, &c), STORE_NOT_FOUND);
  assert_int_equal(store_get(B->store, id, true, &c), STORE_NOT_FOUND);
  assert_int_equal(store_get(B->store, "", false, &c), STORE_NOT_FOUND);
}

/* Ids and filters that are not UTF-8 (the HTTP layer refuses them, but the store must not
 * depend on it): the client's fault or simply absent, never a failure of ours. */
static void test_bytes_the_database_refuses_are_the_clients_fault(void **state) {
  (void)state;
  static const char *const bad[] = {
      "ab\xff"
      "cd",
      "\xc3\x28", "acc\xe2\x82"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct store_conversation c;
    enum store_status st = store_get(B->store, bad[i], true, &c);
    if (st != STORE_NOT_FOUND && st != STORE_CLIENT) fail_msg("get %zu: status %d", i, st);
    for (int field = 0; field < 3; field++) { /* email, account, status */
      struct store_filter f = filter(field == 0 ? bad[i] : NULL, field == 1 ? bad[i] : NULL,
                                     field == 2 ? bad[i] : NULL, 1, 10);
      struct store_page page;
      st = store_list(B->store, &f, &page);
      if (st == STORE_OK) assert_int_equal(page.total, 0);
      if (st != STORE_OK && st != STORE_CLIENT)
        fail_msg("list %zu (filter %d): status %d", i, field, st);
      store_page_free(&page);
    }
  }
  /* A write whose id the database refuses fails alone: the writes around it are stored. */
  char tag[16], ids[3][64];
  new_tag(tag);
  struct pending *p[3];
  for (int i = 0; i < 3; i++) {
    snprintf(ids[i], sizeof ids[i], "refused-%d-%s", i, tag);
    char *body = conv_body(ids[i], "e@example.com", "acc", 1, NULL);
    p[i] = pending_new(body);
    free(body);
  }
  static char bad_id[64];
  snprintf(bad_id, sizeof bad_id, "refused-\xff-%s", tag);
  p[1]->in.conversation_id = bad_id;
  for (int i = 0; i < 3; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 3; i++) wait_done(p[i]);
  assert_int_equal(p[0]->w.status, STORE_OK);
  assert_int_equal(p[2]->w.status, STORE_OK);
  if (p[1]->w.status != STORE_OK && p[1]->w.status != STORE_CLIENT)
    fail_msg("refused write: status %d", p[1]->w.status);
  struct store_conversation c;
  for (int i = 0; i < 3; i += 2) {
    assert_int_equal(store_get(B->store, ids[i], false, &c), STORE_OK);
  }
  for (int i = 0; i < 3; i++) pending_free(p[i]);
}

/* ---------- health ---------- */

static void test_health_probe_writes_and_reads(void **state) {
  (void)state;
  for (int i = 0; i < 3; i++) {
    struct pending *p = probe_new();
    store_submit(B->store, &p->w);
    wait_done(p);
    assert_int_equal(p->w.status, STORE_OK);
    pending_free(p);
  }
  assert_int_equal(store_ping_read(B->store), STORE_OK);
}

/* ---------- lifecycle ---------- */

/* Closing finishes every write submitted before (committed, or failed as RETRY), and what was
 * committed is there for the next process. */
static void test_close_drains_submitted_writes(void **state) {
  (void)state;
  char err[512] = "";
  struct store *other = store_open(B->url, err, sizeof err);
  if (!other) fail_msg("second store_open: %s", err);
  char tag[16];
  new_tag(tag);
  enum { N = 40 };
  struct pending *p[N];
  for (int i = 0; i < N; i++) {
    char id[64];
    snprintf(id, sizeof id, "drain-%s-%d", tag, i);
    char *body = conv_body(id, "e@example.com", "acc", 1, NULL);
    p[i] = pending_new(body);
    free(body);
  }
  for (int i = 0; i < N; i++) store_submit(other, &p[i]->w);
  store_close(other);
  int committed = 0;
  for (int i = 0; i < N; i++) {
    assert_true(p[i]->done); /* finished before store_close returned */
    assert_true(p[i]->w.status == STORE_OK || p[i]->w.status == STORE_RETRY);
    struct store_conversation c;
    enum store_status st = store_get(B->store, p[i]->in.conversation_id, false, &c);
    if (p[i]->w.status == STORE_OK) {
      committed++;
      assert_int_equal(st, STORE_OK);
      assert_string_equal(c.webhook_id, p[i]->w.webhook_id);
    }
    pending_free(p[i]);
  }
  assert_int_equal(committed, N);
}

/* ---------- SQLite: the log is moved into the database file ---------- */

static int64_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

static void test_sqlite_checkpoints_bound_the_log(void **state) {
  (void)state;
  char wal[4300];
  snprintf(wal, sizeof wal, "%s-wal", B->sqlite_path);
  char tag[16];
  new_tag(tag);
  char pad[8200];
  memset(pad, 'x', sizeof pad - 1);
  pad[sizeof pad - 1] = '\0';
  char *extra = NULL;
  assert_true(asprintf(&extra, "\"summary\":{\"text\":\"%s\"}", pad) > 0);
  int64_t before = file_size(B->sqlite_path), largest_log = 0;
  enum { ROUNDS = 75, PER_ROUND = 20 }; /* 1,500 x 8 KB: more log than the bound, in batches */
  for (int r = 0; r < ROUNDS; r++) {
    struct pending *p[PER_ROUND];
    for (int i = 0; i < PER_ROUND; i++) {
      char id[64];
      snprintf(id, sizeof id, "wal-%s-%d-%d", tag, r, i);
      char *body = conv_body(id, "e@example.com", "acc", 1, extra);
      p[i] = pending_new(body);
      free(body);
      store_submit(B->store, &p[i]->w);
    }
    for (int i = 0; i < PER_ROUND; i++) {
      wait_done(p[i]);
      assert_int_equal(p[i]->w.status, STORE_OK);
      pending_free(p[i]);
    }
    int64_t log = file_size(wal);
    if (log > largest_log) largest_log = log;
  }
  free(extra);
  int64_t want = before + (int64_t)ROUNDS * PER_ROUND * 8192;
  for (int i = 0; i < 200 && file_size(B->sqlite_path) < want; i++) usleep(50 * 1000);
  /* Before the checkpointer worked, the database file did not grow at all. */
  assert_true(file_size(B->sqlite_path) >= want);
  assert_true(largest_log <= 10 * 1024 * 1024);
}

/* ---------- groups ---------- */

static int open_backend(struct backend *b) {
  char err[512] = "";
  b->store = store_open(b->url, err, sizeof err);
  if (!b->store) {
    fprintf(stderr, "conformance: cannot open %s store: %s\n", b->name, err);
    return -1;
  }
  B = b;
  return 0;
}

static struct backend sqlite_backend = {.name = "sqlite"};
static struct backend pg_backend = {.name = "postgres"};

static int setup_sqlite(void **state) {
  (void)state;
  const char *tmp = getenv("TMPDIR");
  snprintf(sqlite_backend.dir, sizeof sqlite_backend.dir, "%s/gsr-conformance-XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(sqlite_backend.dir)) {
    perror("conformance: mkdtemp");
    return -1;
  }
  snprintf(sqlite_backend.sqlite_path, sizeof sqlite_backend.sqlite_path, "%s/store.db",
           sqlite_backend.dir);
  snprintf(sqlite_backend.url, sizeof sqlite_backend.url, "sqlite:%s", sqlite_backend.sqlite_path);
  return open_backend(&sqlite_backend);
}

static int teardown_sqlite(void **state) {
  (void)state;
  store_close(sqlite_backend.store);
  const char *suffixes[] = {"", "-wal", "-shm"};
  for (size_t i = 0; i < 3; i++) {
    char path[4300];
    snprintf(path, sizeof path, "%s%s", sqlite_backend.sqlite_path, suffixes[i]);
    unlink(path);
  }
  rmdir(sqlite_backend.dir);
  return 0;
}

static int setup_pg(void **state) {
  (void)state;
  return open_backend(&pg_backend);
}

static int teardown_pg(void **state) {
  (void)state;
  store_close(pg_backend.store);
  return 0;
}

/* clang-format off */
#define CONTRACT_TESTS                                                   \
  cmocka_unit_test(test_first_delivery_is_stored_and_read_back),         \
  cmocka_unit_test(test_empty_transcript_has_no_start),                  \
  cmocka_unit_test(test_identical_redelivery_changes_nothing),           \
  cmocka_unit_test(test_different_body_makes_a_new_version),             \
  cmocka_unit_test(test_bytes_decide_not_meaning),                       \
  cmocka_unit_test(test_redelivery_within_one_batch),                    \
  cmocka_unit_test(test_large_body_round_trips),                         \
  cmocka_unit_test(test_lists_newest_first),                             \
  cmocka_unit_test(test_filters_and_their_combinations),                 \
  cmocka_unit_test(test_pagination),                                     \
  cmocka_unit_test(test_list_total_and_page_agree_during_writes),        \
  cmocka_unit_test(test_unknown_id_is_not_found),                        \
  cmocka_unit_test(test_bytes_the_database_refuses_are_the_clients_fault), \
  cmocka_unit_test(test_health_probe_writes_and_reads),                  \
  cmocka_unit_test(test_close_drains_submitted_writes)
/* clang-format on */

int main(int argc, char **argv) {
  bool want_sqlite = argc < 2, want_pg = argc < 2;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "sqlite") == 0)
      want_sqlite = true;
    else if (strcmp(argv[i], "postgres") == 0)
      want_pg = true;
    else {
      fprintf(stderr, "usage: %s [sqlite|postgres]...\n", argv[0]);
      return 2;
    }
  }
  const char *url = getenv(PG_URL_ENV);
  if (want_pg && (!url || !*url)) {
    fprintf(stderr,
            "conformance: %s is not set: PostgreSQL is part of the contract, run through "
            "tests/store/run_conformance.py (make conformance)\n",
            PG_URL_ENV);
    return 1;
  }
  log_set_level(LOG_WARNING);
  int failed = 0;
  if (want_sqlite) {
    const struct CMUnitTest sqlite_tests[] = {
        CONTRACT_TESTS,
        cmocka_unit_test(test_sqlite_checkpoints_bound_the_log),
    };
    failed += cmocka_run_group_tests_name("store conformance: sqlite", sqlite_tests, setup_sqlite,
                                          teardown_sqlite);
  }
  if (want_pg) {
    snprintf(pg_backend.url, sizeof pg_backend.url, "%s", url);
    const struct CMUnitTest pg_tests[] = {CONTRACT_TESTS};
    failed +=
        cmocka_run_group_tests_name("store conformance: postgres", pg_tests, setup_pg, teardown_pg);
  }
  return failed ? 1 : 0;
}
