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
 *   - ElevenLabs events: kept byte for byte, oldest first; a redelivery (same conversation,
 *     same event hash) changes nothing and answers the first webhookId, also within a batch;
 *     an event's conversation (email/account unknown: "" and matched by no filter, status,
 *     agent, failure reason) is upserted; audio round-trips in ranges at chunk boundaries,
 *     may come before the transcript, is replaced whole, and an event whose audio cannot be
 *     read fails alone and leaves nothing behind;
 *   - migrations: a database made by 0001, with rows, is migrated keeping them;
 *   - erasure: every row of one conversation (row, deliveries, events, audio) goes and nothing
 *     of another; erasing nothing says so (0 rows); an erasure takes effect at its place in a
 *     batch; retention erases old conversations whole and orphan events/audio by their age, in
 *     batches of at most its limit, and keeps what is recent;
 *   - audit log: every change writes its entry (store.h's `who`) in its own transaction, a
 *     write that fails none, without a hole or a fork in the chain; STORE_WRITE_AUDIT appends the
 *     caller's entries with consecutive ids; lists filter by key, action, target and time, in
 *     both orders, page by page after a cursor; two instances appending at once keep one chain;
 *     audit_chain_verify passes on it and finds an entry edited or removed by hand;
 *   - SQLite: the background checkpointer moves the log into the database file and the log
 *     stays bounded;
 *   - encryption at rest (the "sealed" groups: a store with a ring runs every test above
 *     again, then the SEAL_TESTS): sealed rows read back whole (bodies, events, audio in ranges,
 *     email and account), filters find plaintext and sealed rows alike (and an account-bound
 *     key's accounts), an id that would pass for a blind index is refused, a value moved to
 *     another row by hand fails to open (an error, never its data), set_ring refuses a ring
 *     that cannot open what is stored (in one line naming ENCRYPTION_KEYS), reencrypt moves
 *     every row to a new key while another store writes, after which the old key can go;
 *     SQLite: the file and its log hold none of the plaintext.
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
#include <fcntl.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/timeutil.h"
#include "ext/crypto.h"
#include "model/audit.h"
#include "model/conversation.h"
#include "model/outbox.h"
#include "model/render.h"
#include "seal/seal.h"
#include "store/audit_chain.h"
#include "store/rollup.h"
#include "store/store.h"
#include "store/write_queue.h"

#define PG_URL_ENV "GSR_CONFORMANCE_PG_URL"
#define WAIT_SECONDS 60

struct backend {
  const char *name;
  char url[4400];
  char sqlite_path[4200]; /* SQLite only */
  char dir[4096];         /* SQLite only: the temporary directory */
  const char *ring_text;  /* the "sealed" groups: ENCRYPTION_KEYS of the store */
  struct seal_ring *ring;
  struct store *store;
};

static struct backend *B; /* the backend of the group running */

/* ---------- writes and their completion ---------- */

struct pending {
  struct store_write w;
  struct conversation_input in;
  bool parsed;
  char *body;
  char *event_body;
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
  free(p->event_body);
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
  struct store_filter f = {
      .email_id = email, .account_id = account, .status = status, .page = page, .limit = limit};
  return f;
}

/* ---------- API keys ---------- */

static enum store_status key_write(struct store_write *w) {
  struct pending *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->w = *w;
  p->w.done = on_done;
  p->w.done_cls = p;
  store_submit(B->store, &p->w);
  wait_done(p);
  *w = p->w;
  free(p);
  return w->status;
}

static void test_keys_create_read_revoke_touch(void **state) {
  (void)state;
  struct apikey_record k;
  memset(&k, 0, sizeof k);
  assert_true(crypto_random_hex(k.id, sizeof k.id, APIKEY_ID_LEN / 2));
  snprintf(k.name, sizeof k.name, "name \u00e9 %s", k.id);
  k.scopes = APIKEY_SCOPE_READ | APIKEY_SCOPE_DELETE;
  assert_true(apikey_add_account(&k, "acc-1"));
  assert_true(apikey_add_account(&k, "acc 2"));
  memset(k.secret_sha256, 0xab, 32);
  k.created_us = 1700000000123456;
  k.expires_us = 1900000000000000;
  struct store_write w = {.kind = STORE_WRITE_KEY_CREATE, .key = &k};
  assert_int_equal(key_write(&w), STORE_OK);
  struct apikey_record got;
  assert_int_equal(store_key_get(B->store, k.id, &got), STORE_OK);
  assert_string_equal(got.id, k.id);
  assert_string_equal(got.name, k.name);
  assert_int_equal(got.scopes, k.scopes);
  assert_int_equal(got.naccounts, 2);
  assert_string_equal(got.accounts[1], "acc 2");
  assert_memory_equal(got.secret_sha256, k.secret_sha256, 32);
  assert_int_equal(got.created_us, k.created_us);
  assert_int_equal(got.expires_us, k.expires_us);
  assert_int_equal(got.revoked_us, 0);
  assert_int_equal(got.last_used_us, 0);
  assert_int_equal(store_key_get(B->store, "0000000000000000", &got), STORE_NOT_FOUND);
  /* last use moves forward only */
  struct store_write t = {.kind = STORE_WRITE_KEY_TOUCH, .key_at_us = 1800000000000000};
  snprintf(t.key_id, sizeof t.key_id, "%s", k.id);
  assert_int_equal(key_write(&t), STORE_OK);
  t.key_at_us = 1750000000000000;
  assert_int_equal(key_write(&t), STORE_OK);
  assert_int_equal(store_key_get(B->store, k.id, &got), STORE_OK);
  assert_int_equal(got.last_used_us, 1800000000000000);
  /* revoked once: the first time stays */
  struct store_write r = {.kind = STORE_WRITE_KEY_REVOKE, .key_at_us = 1810000000000000};
  snprintf(r.key_id, sizeof r.key_id, "%s", k.id);
  assert_int_equal(key_write(&r), STORE_OK);
  assert_false(r.duplicate);
  r.key_at_us = 1820000000000000;
  assert_int_equal(key_write(&r), STORE_OK);
  assert_false(r.duplicate);
  assert_int_equal(store_key_get(B->store, k.id, &got), STORE_OK);
  assert_int_equal(got.revoked_us, 1810000000000000);
  snprintf(r.key_id, sizeof r.key_id, "0000000000000000");
  assert_int_equal(key_write(&r), STORE_OK);
  assert_true(r.duplicate); /* no such key */
  struct apikey_record *all;
  size_t n;
  assert_int_equal(store_key_list(B->store, &all, &n), STORE_OK);
  bool found = false;
  for (size_t i = 0; i < n; i++) found |= strcmp(all[i].id, k.id) == 0;
  assert_true(found);
  free(all);
}

static void test_list_bound_to_accounts(void **state) {
  (void)state;
  char tag[16], email[64], a[32], b[32], c[32], id[64];
  new_tag(tag);
  snprintf(email, sizeof email, "%s@example.com", tag);
  snprintf(a, sizeof a, "a-%s", tag);
  snprintf(b, sizeof b, "b-%s", tag);
  snprintf(c, sizeof c, "c-%s", tag);
  const char *accs[3] = {a, b, c};
  for (int i = 0; i < 3; i++) {
    snprintf(id, sizeof id, "%s-%d", tag, i);
    put_conv(id, email, accs[i]);
  }
  const char *bound[2] = {a, c};
  struct store_filter f = filter(email, NULL, NULL, 1, 100);
  f.accounts = bound;
  f.naccounts = 2;
  struct store_page page;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.total, 2);
  assert_int_equal(page.count, 2);
  for (size_t i = 0; i < page.count; i++) assert_true(strcmp(page.items[i].account_id, b) != 0);
  store_page_free(&page);
  f.account_id = b; /* outside the bound: nothing */
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.total, 0);
  assert_int_equal(page.count, 0);
  store_page_free(&page);
  f.account_id = c;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.total, 1);
  store_page_free(&page);
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
  assert_string_equal(c.agent_id, "a"); /* metadata.agentId */
  assert_string_equal(c.failure_reason, "");
  assert_int_equal(c.audio_bytes, -1);

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
  assert_int_equal(page.items[2].first_processed_us, va.processed_us);
  assert_true(page.items[0].processed_us > page.items[1].processed_us);
  for (size_t i = 0; i < 3; i++)
    assert_int_equal(page.items[i].first_processed_us, page.items[i].processed_us);
  store_page_free(&page);

  /* Neither an identical redelivery nor a new version moves a conversation: the list's order
   * is when each was first stored; processedAt is the new version's. */
  (void)put_conv(a, email, "acc");
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_ids(&page, (const char *[]){c, a, b}, 3);
  store_page_free(&page);
  char *v2 = conv_body(b, email, "acc", 5, NULL);
  struct version vb2 = put_ok(v2);
  free(v2);
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_ids(&page, (const char *[]){c, a, b}, 3);
  assert_int_equal(page.items[2].message_count, 5);
  assert_int_equal(page.items[2].processed_us, vb2.processed_us);
  assert_true(page.items[2].processed_us > page.items[0].processed_us);
  assert_int_equal(page.items[2].first_processed_us, va.processed_us);
  store_page_free(&page);

  /* Unfiltered, the newest first stored of all is first. */
  f = filter(NULL, NULL, NULL, 1, 1);
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_true(page.total >= 3);
  assert_ids(&page, (const char *[]){c}, 1);
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
    if (i) assert_true(page.items[i - 1].first_processed_us > page.items[i].first_processed_us);
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
      assert_true(page.items[i - 1].first_processed_us > page.items[i].first_processed_us);
    last_total = page.total;
    store_page_free(&page);
  }
  pthread_join(t, NULL);
  assert_int_equal(last_total, a.n);
}

/* ---------- keyset pages and time windows ---------- */

/* Walks filter f from the start by keyset pages of `limit` rows; appends each id to ids (cap
 * entries). Returns how many pages it took. */
static int walk_keyset(struct store_filter f, int64_t limit, char (*ids)[64], size_t cap,
                       size_t *n) {
  char last[MODEL_CONVERSATION_ID_MAX + 1] = "";
  int64_t last_us = 0;
  int pages = 0;
  *n = 0;
  for (;;) {
    f.limit = limit;
    f.page = 1;
    f.after = pages > 0;
    f.after_first_us = last_us;
    f.after_id = last;
    struct store_page page;
    assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
    if (f.after) assert_int_equal(page.total, 0); /* a keyset page is not counted */
    pages++;
    for (size_t i = 0; i < page.count; i++) {
      assert_true(*n < cap);
      snprintf(ids[(*n)++], 64, "%.63s", page.items[i].conversation_id);
    }
    size_t count = page.count;
    if (count) {
      last_us = page.items[count - 1].first_processed_us;
      snprintf(last, sizeof last, "%s", page.items[count - 1].conversation_id);
    }
    store_page_free(&page);
    if (count < (size_t)limit) return pages;
    assert_true(pages < 1000);
  }
}

static void test_keyset_pages_follow_the_list_order(void **state) {
  (void)state;
  char tag[16], email[64], id[64];
  new_tag(tag);
  snprintf(email, sizeof email, "%s@example.com", tag);
  for (int i = 0; i < 11; i++) {
    snprintf(id, sizeof id, "ks-%s-%02d", tag, i);
    (void)put_conv(id, email, i % 3 ? "acc-a" : "acc-b");
  }
  /* The whole list at once, in its order, against its walk by 1, 3, 4 and 11 rows a page. */
  struct store_filter all = filter(email, NULL, NULL, 1, 100);
  struct store_page page;
  assert_int_equal(store_list(B->store, &all, &page), STORE_OK);
  assert_int_equal(page.count, 11);
  char want[11][64], got[16][64];
  for (size_t i = 0; i < 11; i++) snprintf(want[i], 64, "%.63s", page.items[i].conversation_id);
  store_page_free(&page);
  const int64_t limits[] = {1, 3, 4, 11};
  for (size_t l = 0; l < 4; l++) {
    size_t n;
    int pages = walk_keyset(all, limits[l], got, 16, &n);
    assert_int_equal(n, 11);
    assert_int_equal(pages, 11 / limits[l] + 1);
    for (size_t i = 0; i < 11; i++) assert_string_equal(got[i], want[i]);
  }
  /* with the other filters and an account bound: the same rows the counted list gives */
  const char *bound[] = {"acc-b"};
  struct store_filter fb = filter(email, NULL, "completed", 1, 100);
  fb.accounts = bound;
  fb.naccounts = 1;
  assert_int_equal(store_list(B->store, &fb, &page), STORE_OK);
  assert_int_equal(page.count, 4);
  size_t n;
  (void)walk_keyset(fb, 2, got, 16, &n);
  assert_int_equal(n, 4);
  for (size_t i = 0; i < 4; i++) assert_string_equal(got[i], page.items[i].conversation_id);
  store_page_free(&page);
  /* after the last row: nothing */
  struct store_filter f = filter(email, NULL, NULL, 1, 5);
  f.after = true;
  f.after_first_us = INT64_MIN;
  f.after_id = "";
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.count, 0);
  store_page_free(&page);
}

/* A changed redelivery keeps the conversation's place in the list order (first stored newest
 * first), under each index the list reads (unfiltered, email, account): a keyset walk with
 * changes between its pages, to conversations already passed and not yet reached, meets each
 * conversation that was there when it began exactly once, in the order it began with; a
 * conversation stored during the walk is newer than its start, so never met. */
static void test_changed_redelivery_keeps_its_place(void **state) {
  (void)state;
  char tag[16], email[64], account[64], ids[8][64], got[16][64];
  int messages = 2;
  for (int k = 0; k < 3; k++) {
    /* fresh conversations per walk; the list's order: ids[7] .. ids[0] */
    new_tag(tag);
    snprintf(email, sizeof email, "ko-%s@example.com", tag);
    snprintf(account, sizeof account, "acc-ko-%s", tag);
    for (int i = 0; i < 8; i++) {
      snprintf(ids[i], sizeof ids[i], "ko-%s-%d", tag, i);
      (void)put_conv(ids[i], email, account);
    }
    struct store_filter fs[3] = {filter(email, NULL, NULL, 1, 100),
                                 filter(NULL, account, NULL, 1, 100),
                                 filter(NULL, NULL, "completed", 1, 100)};
    struct store_filter f = fs[k];
    /* unfiltered but for the status, the walk starts at ids[7]: nothing of ours is newer, and
     * rows other tests store meanwhile are newer still */
    char last[MODEL_CONVERSATION_ID_MAX + 1] = "";
    int64_t last_us = INT64_MAX;
    size_t n = 0;
    if (k == 2) {
      struct store_conversation c;
      assert_int_equal(store_get(B->store, ids[7], false, &c), STORE_OK);
      last_us = c.first_processed_us;
      snprintf(last, sizeof last, "%s", ids[7]);
      snprintf(got[n++], 64, "%s", ids[7]);
    }
    for (int pages = 0; n < 8; pages++) {
      f.limit = 2;
      f.after = true;
      f.after_first_us = last_us;
      f.after_id = last;
      struct store_page page;
      assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
      assert_true(page.count > 0);
      for (size_t i = 0; i < page.count && n < 8; i++) {
        for (size_t j = 0; j < n; j++)
          assert_string_not_equal(got[j], page.items[i].conversation_id);
        snprintf(got[n++], 64, "%.63s", page.items[i].conversation_id);
      }
      last_us = page.items[page.count - 1].first_processed_us;
      snprintf(last, sizeof last, "%s", page.items[page.count - 1].conversation_id);
      store_page_free(&page);
      /* between pages: the newest (passed) and the oldest (ahead) change, and a new one */
      char *v = conv_body(ids[7], email, account, messages, NULL);
      (void)put_ok(v);
      free(v);
      v = conv_body(ids[0], email, account, messages++, NULL);
      (void)put_ok(v);
      free(v);
      char extra[64];
      snprintf(extra, sizeof extra, "ko-%s-new-%d-%d", tag, k, pages);
      (void)put_conv(extra, email, account);
      assert_true(pages < 8);
    }
    for (int i = 0; i < 8; i++) assert_string_equal(got[i], ids[7 - i]);
  }
  /* the counted list (the last walk's) shows the same order, the new ones first, processedAt
   * the latest */
  struct store_filter f = filter(email, NULL, NULL, 1, 100);
  struct store_page page;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_true(page.count > 8);
  size_t tail = page.count - 8;
  for (size_t i = 0; i < 8; i++)
    assert_string_equal(page.items[tail + i].conversation_id, ids[7 - i]);
  for (size_t i = 0; i < tail; i++) assert_non_null(strstr(page.items[i].conversation_id, "-new-"));
  assert_true(page.items[page.count - 1].first_processed_us <
              page.items[page.count - 1].processed_us);
  assert_true(page.items[tail].processed_us > page.items[tail].first_processed_us);
  for (size_t i = 1; i < page.count; i++)
    assert_true(page.items[i - 1].first_processed_us > page.items[i].first_processed_us);
  store_page_free(&page);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, ids[0], false, &c), STORE_OK);
  assert_int_equal(c.message_count, messages - 1);
  assert_true(c.first_processed_us < c.processed_us);
}

/* A keyset walk while writes land: each row that was there when the walk began comes exactly
 * once, and no row twice (new rows sort before the position, so they are not met). */
static void test_keyset_walk_during_writes(void **state) {
  (void)state;
  struct writer_args a = {.n = 80};
  new_tag(a.tag);
  snprintf(a.email, sizeof a.email, "%s@example.com", a.tag);
  char id[64];
  for (int i = 0; i < 30; i++) {
    snprintf(id, sizeof id, "first-%s-%02d", a.tag, i);
    (void)put_conv(id, a.email, "acc");
  }
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, keep_writing, &a), 0);
  struct store_filter f = filter(a.email, NULL, NULL, 1, 100);
  static char got[200][64];
  size_t n;
  (void)walk_keyset(f, 2, got, 200, &n);
  pthread_join(t, NULL);
  for (int i = 0; i < 30; i++) {
    snprintf(id, sizeof id, "first-%s-%02d", a.tag, i);
    int seen = 0;
    for (size_t k = 0; k < n; k++) seen += strcmp(got[k], id) == 0;
    assert_int_equal(seen, 1);
  }
  for (size_t k = 0; k < n; k++)
    for (size_t j = k + 1; j < n; j++) assert_string_not_equal(got[k], got[j]);
}

/* A conversation whose transcript starts at `start` (NULL: an empty transcript, no start). */
static void put_started(const char *id, const char *email, const char *start) {
  char body[768];
  if (start)
    snprintf(body, sizeof body,
             "{\"emailId\":\"%s\",\"accountId\":\"acc\",\"conversationId\":\"%s\",\"transcript\":"
             "[{\"timestamp\":\"%s\",\"speaker\":\"user\",\"content\":\"hi\",\"messageId\":\"m\"}],"
             "\"metadata\":{\"sessionId\":\"s\",\"agentId\":\"a\",\"duration\":1,"
             "\"messageCount\":1,\"platform\":\"web\",\"userAgent\":\"ua\"}}",
             email, id, start);
  else
    snprintf(body, sizeof body,
             "{\"emailId\":\"%s\",\"accountId\":\"acc\",\"conversationId\":\"%s\",\"transcript\":"
             "[],\"metadata\":{\"sessionId\":\"s\",\"agentId\":\"a\",\"duration\":0,"
             "\"messageCount\":0,\"platform\":\"web\",\"userAgent\":\"ua\"}}",
             email, id);
  (void)put_ok(body);
}

/* The ids in window [from, to) (a bound < 0: unset), counted and by keyset; they must be
 * exactly want (in list order, newest processed first). */
static void check_window(const char *email, int64_t from, int64_t to, const char *const *want,
                         size_t nwant) {
  struct store_filter f = filter(email, NULL, NULL, 1, 100);
  f.has_from = from >= 0;
  f.from_us = from;
  f.has_to = to >= 0;
  f.to_us = to;
  struct store_page page;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.total, (int64_t)nwant);
  assert_ids(&page, want, nwant);
  store_page_free(&page);
  char got[8][64];
  size_t n;
  (void)walk_keyset(f, 1, got, 8, &n);
  assert_int_equal(n, nwant);
  for (size_t i = 0; i < n; i++) assert_string_equal(got[i], want[i]);
}

static void test_time_window_on_start_or_processed(void **state) {
  (void)state;
  char tag[16], email[64], a[64], b[64], c[64], d[64], e[64];
  new_tag(tag);
  snprintf(email, sizeof email, "%s@example.com", tag);
  snprintf(a, sizeof a, "a-%s", tag);
  snprintf(b, sizeof b, "b-%s", tag);
  snprintf(c, sizeof c, "c-%s", tag);
  snprintf(d, sizeof d, "d-%s", tag);
  snprintf(e, sizeof e, "e-%s", tag);
  int64_t before = time_now_us();
  put_started(a, email, "2024-03-01T09:59:59.999999Z");
  put_started(b, email, "2024-03-01T12:00:00+02:00"); /* 10:00:00Z, the window's first instant */
  put_started(c, email, "2024-03-01T10:30:00Z");
  put_started(d, email, "2024-03-01T11:00:00Z"); /* the window's end: outside */
  put_started(e, email, NULL);                   /* no start: its processed time counts */
  int64_t after = time_now_us() + 1;
  int64_t ten, eleven;
  assert_true(time_parse_rfc3339("2024-03-01T10:00:00Z", 20, &ten));
  assert_true(time_parse_rfc3339("2024-03-01T11:00:00Z", 20, &eleven));
  check_window(email, ten, eleven, (const char *[]){c, b}, 2);
  check_window(email, ten, -1, (const char *[]){e, d, c, b}, 4);
  check_window(email, -1, eleven, (const char *[]){c, b, a}, 3);
  check_window(email, -1, ten, (const char *[]){a}, 1);
  check_window(email, before, after, (const char *[]){e}, 1);
  check_window(email, ten, ten, NULL, 0);
  check_window(email, after, -1, NULL, 0);
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

/* The list cursors' secret: made once per database, the same for every store opened on it
 * (other instances, restarts), not all zeros; an unknown name is STORE_NOT_FOUND. */
static void test_secret_is_the_databases(void **state) {
  (void)state;
  unsigned char a[STORE_SECRET_LEN], b[STORE_SECRET_LEN], zero[STORE_SECRET_LEN] = {0};
  assert_int_equal(store_secret(B->store, "list_cursor", a), STORE_OK);
  assert_memory_not_equal(a, zero, sizeof a);
  char err[512] = "";
  struct store *other = store_open(B->url, err, sizeof err);
  if (!other) fail_msg("second store_open: %s", err);
  assert_int_equal(store_secret(other, "list_cursor", b), STORE_OK);
  assert_memory_equal(a, b, sizeof a);
  assert_int_equal(store_secret(other, "no such secret", b), STORE_NOT_FOUND);
  store_close(other);
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

/* ---------- ElevenLabs events ---------- */

/* An event write: conversation_id names it; seed_body (may be NULL) is the derived seed-shaped
 * body the conversation is upserted from, with email and account unknown (NULL). */
static struct pending *event_new(const char *conversation_id, const char *type,
                                 const char *event_body, const char *seed_body) {
  struct pending *p = seed_body ? pending_new(seed_body) : calloc(1, sizeof *p);
  assert_non_null(p);
  memset(&p->w, 0, sizeof p->w);
  p->w.kind = STORE_WRITE_EVENT;
  if (seed_body) {
    p->in.email_id = NULL;
    p->in.account_id = NULL;
    p->w.conv = &p->in;
    p->w.body = p->body;
    p->w.body_len = strlen(p->body);
    crypto_sha256(p->body, p->w.body_len, p->w.body_sha256);
  }
  p->event_body = strdup(event_body);
  assert_non_null(p->event_body);
  p->w.event_type = type;
  p->w.event_conversation_id = conversation_id;
  p->w.event_body = p->event_body;
  p->w.event_body_len = strlen(event_body);
  crypto_sha256(event_body, p->w.event_body_len, p->w.event_sha256);
  p->w.event_audio_at = -1;
  p->w.audio_fd = -1;
  p->w.done = on_done;
  p->w.done_cls = p;
  return p;
}

static struct version submit_ok(struct pending *p) {
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_OK);
  struct version v;
  memcpy(v.webhook_id, p->w.webhook_id, sizeof v.webhook_id);
  v.processed_us = p->w.processed_us;
  v.duplicate = p->w.duplicate;
  assert_true(strncmp(v.webhook_id, "webhook_", 8) == 0);
  assert_true(v.processed_us > 0);
  pending_free(p);
  return v;
}

static char *event_json(const char *type, const char *id, const char *extra) {
  char *buf = NULL;
  assert_true(asprintf(&buf,
                       "{\"type\":\"%s\",\"event_timestamp\":1739537297,\"data\":{"
                       "\"conversation_id\":\"%s\",\"agent_id\":\"agent_x\"%s%s}}",
                       type, id, extra ? "," : "", extra ? extra : "") > 0);
  return buf;
}

static void test_event_is_kept_and_redelivery_changes_nothing(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "ev-%s", tag);
  char *body = event_json("some_future_type", id, "\"x\":{\"y\":[1,2]}");
  struct version a = submit_ok(event_new(id, "some_future_type", body, NULL));
  assert_false(a.duplicate);
  struct version b = submit_ok(event_new(id, "some_future_type", body, NULL));
  assert_true(b.duplicate);
  assert_string_equal(b.webhook_id, a.webhook_id);
  assert_int_equal(b.processed_us, a.processed_us);
  /* Other bytes are another event, kept after the first. */
  char *other = event_json("post_call_transcription", id, NULL);
  struct version c = submit_ok(event_new(id, "post_call_transcription", other, NULL));
  assert_false(c.duplicate);
  assert_string_not_equal(c.webhook_id, a.webhook_id);
  assert_true(c.processed_us > a.processed_us);

  struct store_events evs;
  assert_int_equal(store_events(B->store, id, &evs), STORE_OK);
  assert_int_equal(evs.count, 2);
  assert_string_equal(evs.items[0].webhook_id, a.webhook_id);
  assert_string_equal(evs.items[0].type, "some_future_type");
  assert_int_equal(evs.items[0].received_us, a.processed_us);
  assert_int_equal(evs.items[0].body_len, strlen(body));
  assert_memory_equal(evs.items[0].body, body, strlen(body));
  assert_int_equal(evs.items[0].audio_at, -1);
  unsigned char digest[CRYPTO_SHA256_LEN];
  crypto_sha256(body, strlen(body), digest);
  assert_memory_equal(evs.items[0].sha256, digest, CRYPTO_SHA256_LEN);
  assert_string_equal(evs.items[1].webhook_id, c.webhook_id);
  assert_string_equal(evs.items[1].type, "post_call_transcription");
  assert_memory_equal(evs.items[1].body, other, strlen(other));
  store_events_free(&evs);
  assert_int_equal(evs.count, 0);
  /* An event alone makes no conversation; a conversation without events has none. */
  struct store_conversation conv;
  assert_int_equal(store_get(B->store, id, false, &conv), STORE_NOT_FOUND);
  char missing[64];
  snprintf(missing, sizeof missing, "none-%s", tag);
  assert_int_equal(store_events(B->store, missing, &evs), STORE_OK);
  assert_int_equal(evs.count, 0);
  store_events_free(&evs);

  /* Redeliveries within one batch: the first is kept, the others answer its webhookId. */
  char id2[64];
  snprintf(id2, sizeof id2, "ev2-%s", tag);
  char *body2 = event_json("x", id2, NULL);
  struct pending *p[3];
  for (int i = 0; i < 3; i++) p[i] = event_new(id2, "x", body2, NULL);
  for (int i = 0; i < 3; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 3; i++) {
    wait_done(p[i]);
    assert_int_equal(p[i]->w.status, STORE_OK);
    assert_int_equal(p[i]->w.duplicate, i > 0);
    assert_string_equal(p[i]->w.webhook_id, p[0]->w.webhook_id);
  }
  for (int i = 0; i < 3; i++) pending_free(p[i]);
  assert_int_equal(store_events(B->store, id2, &evs), STORE_OK);
  assert_int_equal(evs.count, 1);
  store_events_free(&evs);
  /* The audio offset is kept. */
  char id3[64];
  snprintf(id3, sizeof id3, "ev3-%s", tag);
  struct pending *q = event_new(id3, "post_call_audio", body2, NULL);
  q->w.event_audio_at = 42;
  (void)submit_ok(q);
  assert_int_equal(store_events(B->store, id3, &evs), STORE_OK);
  assert_int_equal(evs.count, 1);
  assert_int_equal(evs.items[0].audio_at, 42);
  store_events_free(&evs);
  free(body);
  free(other);
  free(body2);
}

static void test_event_upserts_its_conversation(void **state) {
  (void)state;
  char tag[16], id[64], email[64];
  new_tag(tag);
  snprintf(id, sizeof id, "elconv-%s", tag);
  snprintf(email, sizeof email, "%s@example.com", tag);
  char *seed = conv_body(id, "ignored@example.com", "ignored", 2, NULL);
  char *ev = event_json("post_call_transcription", id, NULL);
  struct pending *p = event_new(id, "post_call_transcription", ev, seed);
  p->in.status = "completed";
  p->in.agent_id = "agent_x";
  struct version v = submit_ok(p);
  assert_false(v.duplicate);

  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, true, &c), STORE_OK);
  assert_string_equal(c.email_id, ""); /* unknown */
  assert_string_equal(c.account_id, "");
  assert_string_equal(c.status, "completed");
  assert_string_equal(c.agent_id, "agent_x");
  assert_string_equal(c.failure_reason, "");
  assert_int_equal(c.audio_bytes, -1);
  assert_string_equal(c.webhook_id, v.webhook_id);
  assert_int_equal(c.processed_us, v.processed_us);
  assert_int_equal(c.message_count, 2);
  assert_int_equal(c.body_len, strlen(seed));
  assert_memory_equal(c.body, seed, c.body_len);
  free(c.body);

  /* Listed, but matched by no email or account filter. */
  struct store_filter f = filter(NULL, NULL, "completed", 1, 1);
  struct store_page page;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.count, 1);
  assert_string_equal(page.items[0].conversation_id, id);
  assert_string_equal(page.items[0].email_id, "");
  assert_string_equal(page.items[0].agent_id, "agent_x");
  assert_int_equal(page.items[0].audio_bytes, -1);
  store_page_free(&page);
  const char *filters[] = {"", "ignored@example.com", "ignored", "(null)"};
  for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
    for (int field = 0; field < 2; field++) {
      f = filter(field == 0 ? filters[i] : NULL, field == 1 ? filters[i] : NULL, NULL, 1, 100);
      assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
      for (size_t k = 0; k < page.count; k++)
        assert_string_not_equal(page.items[k].conversation_id, id);
      store_page_free(&page);
    }
  }

  /* A later event makes a new version; here the call failed and says why. */
  char *failed = event_json("call_initiation_failure", id, NULL);
  char *seed2 = conv_body(id, email, "acc", 0, NULL);
  p = event_new(id, "call_initiation_failure", failed, seed2);
  p->in.email_id = email; /* known this time */
  p->in.status = "failed";
  p->in.failure_reason = "busy";
  p->in.agent_id = NULL; /* unknown */
  struct version v2 = submit_ok(p);
  assert_true(v2.processed_us > v.processed_us);
  assert_int_equal(store_get(B->store, id, false, &c), STORE_OK);
  assert_string_equal(c.status, "failed");
  assert_string_equal(c.failure_reason, "busy");
  assert_string_equal(c.agent_id, "");
  assert_string_equal(c.email_id, email);
  assert_string_equal(c.webhook_id, v2.webhook_id);
  check_count(email, NULL, "failed", 1);
  check_count(email, NULL, "completed", 0);

  /* Redelivering the first event changes nothing, although the conversation moved on. */
  p = event_new(id, "post_call_transcription", ev, seed);
  struct version again = submit_ok(p);
  assert_true(again.duplicate);
  assert_string_equal(again.webhook_id, v.webhook_id);
  assert_int_equal(store_get(B->store, id, false, &c), STORE_OK);
  assert_string_equal(c.webhook_id, v2.webhook_id);
  assert_string_equal(c.status, "failed");
  struct store_events evs;
  assert_int_equal(store_events(B->store, id, &evs), STORE_OK);
  assert_int_equal(evs.count, 2);
  store_events_free(&evs);
  free(seed);
  free(seed2);
  free(ev);
  free(failed);
}

/* A temporary file of len bytes of a pattern that differs per seed and per position. */
static int audio_file(int64_t len, unsigned seed) {
  char path[4200];
  const char *tmp = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/gsr-audio-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  unlink(path);
  unsigned char buf[65536];
  for (int64_t off = 0; off < len;) {
    size_t n = len - off < (int64_t)sizeof buf ? (size_t)(len - off) : sizeof buf;
    for (size_t i = 0; i < n; i++) {
      uint64_t x = (uint64_t)(off + (int64_t)i) * 2654435761u + seed * 40503u;
      buf[i] = (unsigned char)(x >> 13);
    }
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
    off += (int64_t)n;
  }
  /* The writer must read by offset: the file position is left at the end. */
  return fd;
}

static unsigned char audio_byte(int64_t pos, unsigned seed) {
  uint64_t x = (uint64_t)pos * 2654435761u + seed * 40503u;
  return (unsigned char)(x >> 13);
}

static struct version put_audio(const char *id, int fd, int64_t len, const char *tag_body) {
  char *ev = event_json("post_call_audio", id, tag_body);
  struct pending *p = event_new(id, "post_call_audio", ev, NULL);
  p->w.audio_fd = fd;
  p->w.audio_len = len;
  p->w.event_audio_at = 10;
  struct version v = submit_ok(p);
  free(ev);
  return v;
}

/* Reads [offset, offset + cap) and checks every byte against the pattern. */
static void check_range(const char *id, int64_t offset, size_t cap, int64_t len, unsigned seed) {
  unsigned char *buf = malloc(cap ? cap : 1);
  assert_non_null(buf);
  size_t got = 12345;
  int64_t total = -1;
  assert_int_equal(store_audio_read(B->store, id, offset, buf, cap, &got, &total), STORE_OK);
  assert_int_equal(total, len);
  int64_t want = offset >= len ? 0 : (len - offset < (int64_t)cap ? len - offset : (int64_t)cap);
  assert_int_equal(got, (size_t)want);
  for (size_t i = 0; i < got; i++)
    if (buf[i] != audio_byte(offset + (int64_t)i, seed))
      fail_msg("audio byte %lld differs", (long long)(offset + (int64_t)i));
  free(buf);
}

static void test_audio_round_trips_in_ranges(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "audio-%s", tag);
  const int64_t C = STORE_AUDIO_CHUNK_BYTES;
  const int64_t len = 3 * 1024 * 1024 + 12345; /* several chunks and a partial one */
  int fd = audio_file(len, 1);
  struct store_conversation c;
  size_t got;
  int64_t total;
  unsigned char one;
  assert_int_equal(store_audio_read(B->store, id, 0, &one, 1, &got, &total), STORE_NOT_FOUND);
  struct version v = put_audio(id, fd, len, NULL);
  assert_false(v.duplicate);
  close(fd);
  /* Ranges inside a chunk, across one and several boundaries, the end, and past it. */
  check_range(id, 0, 1, len, 1);
  check_range(id, 0, 100, len, 1);
  check_range(id, C - 1, 2, len, 1);
  check_range(id, C, (size_t)C, len, 1);
  check_range(id, C - 7, (size_t)(2 * C + 14), len, 1);
  check_range(id, 5 * C + 3, (size_t)C, len, 1);
  check_range(id, len - 10, 100, len, 1);
  check_range(id, len - 1, 1, len, 1);
  check_range(id, len, 10, len, 1);
  check_range(id, len + 1000, 10, len, 1);
  check_range(id, 7, 0, len, 1);
  check_range(id, 0, (size_t)len + 100, len, 1); /* the whole of it in one read */
  /* Read front to back in odd-sized pieces: every byte once. */
  int64_t off = 0;
  unsigned char *buf = malloc(100003);
  assert_non_null(buf);
  while (off < len) {
    assert_int_equal(store_audio_read(B->store, id, off, buf, 100003, &got, &total), STORE_OK);
    assert_true(got > 0);
    for (size_t i = 0; i < got; i++) assert_int_equal(buf[i], audio_byte(off + (int64_t)i, 1));
    off += (int64_t)got;
  }
  free(buf);
  assert_int_equal(off, len);
  /* Audio alone makes no conversation, but is kept as an event. */
  assert_int_equal(store_get(B->store, id, false, &c), STORE_NOT_FOUND);
  struct store_events evs;
  assert_int_equal(store_events(B->store, id, &evs), STORE_OK);
  assert_int_equal(evs.count, 1);
  assert_string_equal(evs.items[0].type, "post_call_audio");
  assert_int_equal(evs.items[0].audio_at, 10);
  store_events_free(&evs);

  /* An empty audio is an audio of 0 bytes. */
  char empty[64];
  snprintf(empty, sizeof empty, "audio-empty-%s", tag);
  fd = audio_file(0, 1);
  (void)put_audio(empty, fd, 0, NULL);
  close(fd);
  check_range(empty, 0, 10, 0, 1);
}

static void test_audio_before_and_after_the_transcript(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "order-%s", tag);
  const int64_t len = 700 * 1000;
  int fd = audio_file(len, 2);
  (void)put_audio(id, fd, len, NULL);
  close(fd);
  /* The transcript comes second: the conversation appears with the audio's length. */
  char *seed = conv_body(id, "e@example.com", "acc", 1, NULL);
  char *ev = event_json("post_call_transcription", id, NULL);
  struct pending *p = event_new(id, "post_call_transcription", ev, seed);
  p->in.status = "completed";
  (void)submit_ok(p);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, false, &c), STORE_OK);
  assert_int_equal(c.audio_bytes, len);
  check_range(id, 0, (size_t)len, len, 2);
  struct store_filter f = filter(NULL, NULL, NULL, 1, 1);
  struct store_page page;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_string_equal(page.items[0].conversation_id, id);
  assert_int_equal(page.items[0].audio_bytes, len);
  store_page_free(&page);
  /* A newer transcript keeps the audio; audio arriving after keeps the transcript. */
  char *seed2 = conv_body(id, "e@example.com", "acc", 3, NULL);
  char *ev2 = event_json("post_call_transcription", id, "\"v\":2");
  p = event_new(id, "post_call_transcription", ev2, seed2);
  struct version v2 = submit_ok(p);
  assert_int_equal(store_get(B->store, id, false, &c), STORE_OK);
  assert_int_equal(c.audio_bytes, len);
  assert_int_equal(c.message_count, 3);
  check_range(id, 0, (size_t)len, len, 2);
  fd = audio_file(len, 3);
  (void)put_audio(id, fd, len, "\"v\":3");
  close(fd);
  assert_int_equal(store_get(B->store, id, false, &c), STORE_OK);
  assert_int_equal(c.message_count, 3);
  assert_string_equal(c.webhook_id, v2.webhook_id);
  check_range(id, 0, (size_t)len, len, 3);
  free(seed);
  free(seed2);
  free(ev);
  free(ev2);
}

static void test_audio_is_replaced_whole(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "replace-%s", tag);
  const int64_t C = STORE_AUDIO_CHUNK_BYTES;
  const int64_t big = 4 * C + 100, small = C + 1;
  int fd = audio_file(big, 4);
  (void)put_audio(id, fd, big, NULL);
  close(fd);
  check_range(id, 0, (size_t)big, big, 4);
  fd = audio_file(small, 5);
  (void)put_audio(id, fd, small, "\"second\":true");
  check_range(id, 0, (size_t)big, small, 5);
  check_range(id, 3 * C, 10, small, 5); /* the old chunks are gone */
  /* The same audio event again is a redelivery: nothing replaced. */
  int other = audio_file(small, 6);
  struct version v = put_audio(id, other, small, "\"second\":true");
  assert_true(v.duplicate);
  check_range(id, 0, (size_t)small, small, 5);
  close(fd);
  close(other);
  struct store_events evs;
  assert_int_equal(store_events(B->store, id, &evs), STORE_OK);
  assert_int_equal(evs.count, 2);
  store_events_free(&evs);
}

/* The same audio event twice at once (one batch, likely): the first is kept, the second is a
 * redelivery whose file is never stored, even though it differs. */
static void test_audio_redelivered_within_one_batch(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "twice-%s", tag);
  const int64_t len = STORE_AUDIO_CHUNK_BYTES + 17;
  int fds[2] = {audio_file(len, 9), audio_file(len, 10)};
  char *ev = event_json("post_call_audio", id, NULL);
  struct pending *p[2];
  for (int i = 0; i < 2; i++) {
    p[i] = event_new(id, "post_call_audio", ev, NULL);
    p[i]->w.audio_fd = fds[i];
    p[i]->w.audio_len = len;
  }
  for (int i = 0; i < 2; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 2; i++) {
    wait_done(p[i]);
    assert_int_equal(p[i]->w.status, STORE_OK);
  }
  assert_false(p[0]->w.duplicate);
  assert_true(p[1]->w.duplicate);
  assert_string_equal(p[1]->w.webhook_id, p[0]->w.webhook_id);
  check_range(id, 0, (size_t)len, len, 9);
  for (int i = 0; i < 2; i++) {
    pending_free(p[i]);
    close(fds[i]);
  }
  free(ev);
}

/* An event whose audio cannot be read (the file is shorter than announced) fails and leaves
 * nothing behind: no event, no conversation, no audio; the writes around it are stored. */
static void test_failed_event_stores_nothing(void **state) {
  (void)state;
  char tag[16], id[64], before[64], after[64];
  new_tag(tag);
  snprintf(id, sizeof id, "fail-%s", tag);
  snprintf(before, sizeof before, "fail-before-%s", tag);
  snprintf(after, sizeof after, "fail-after-%s", tag);
  const int64_t C = STORE_AUDIO_CHUNK_BYTES;
  int fd = audio_file(2 * C + 5, 7);
  char *seed = conv_body(id, "e@example.com", "acc", 1, NULL);
  char *ev = event_json("post_call_audio", id, NULL);
  char *b1 = conv_body(before, "e@example.com", "acc", 1, NULL);
  char *b2 = conv_body(after, "e@example.com", "acc", 1, NULL);
  struct pending *p[3] = {pending_new(b1), event_new(id, "post_call_audio", ev, seed),
                          pending_new(b2)};
  p[1]->w.audio_fd = fd;
  p[1]->w.audio_len = 3 * C; /* more than the file holds: the third chunk cannot be read */
  for (int i = 0; i < 3; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 3; i++) wait_done(p[i]);
  assert_int_not_equal(p[1]->w.status, STORE_OK);
  assert_false(p[1]->w.duplicate);
  assert_int_equal(p[0]->w.status, STORE_OK);
  assert_int_equal(p[2]->w.status, STORE_OK);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, false, &c), STORE_NOT_FOUND);
  assert_int_equal(store_get(B->store, before, false, &c), STORE_OK);
  assert_int_equal(store_get(B->store, after, false, &c), STORE_OK);
  struct store_events evs;
  assert_int_equal(store_events(B->store, id, &evs), STORE_OK);
  assert_int_equal(evs.count, 0);
  store_events_free(&evs);
  size_t got;
  int64_t total;
  unsigned char one;
  assert_int_equal(store_audio_read(B->store, id, 0, &one, 1, &got, &total), STORE_NOT_FOUND);
  for (int i = 0; i < 3; i++) pending_free(p[i]);
  /* Sent again whole, the same event is stored: the failure was not remembered. */
  struct pending *q = event_new(id, "post_call_audio", ev, seed);
  q->w.audio_fd = fd;
  q->w.audio_len = 2 * C + 5;
  struct version v = submit_ok(q);
  assert_false(v.duplicate);
  check_range(id, 0, (size_t)(3 * C), 2 * C + 5, 7);
  assert_int_equal(store_get(B->store, id, false, &c), STORE_OK);
  assert_int_equal(c.audio_bytes, 2 * C + 5);
  close(fd);
  free(seed);
  free(ev);
  free(b1);
  free(b2);
}

/* An event whose conversation id the database refuses (not UTF-8; the HTTP layer refuses it
 * first) fails alone, as the client's fault; the writes around it are stored. */
static void test_event_refused_for_its_bytes_fails_alone(void **state) {
  (void)state;
  char tag[16], bad[64], ok_id[64];
  new_tag(tag);
  snprintf(bad, sizeof bad, "ev-\xff-%s", tag);
  snprintf(ok_id, sizeof ok_id, "ev-ok-%s", tag);
  char *ev = event_json("x", tag, NULL);
  char *seed = conv_body(ok_id, "e@example.com", "acc", 1, NULL);
  struct pending *p[3] = {event_new(ok_id, "x", ev, NULL), event_new(bad, "x", ev, NULL),
                          pending_new(seed)};
  for (int i = 0; i < 3; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 3; i++) wait_done(p[i]);
  assert_int_equal(p[0]->w.status, STORE_OK);
  assert_int_equal(p[2]->w.status, STORE_OK);
  if (p[1]->w.status != STORE_OK && p[1]->w.status != STORE_CLIENT)
    fail_msg("refused event: status %d", p[1]->w.status);
  struct store_events evs;
  assert_int_equal(store_events(B->store, ok_id, &evs), STORE_OK);
  assert_int_equal(evs.count, 1);
  store_events_free(&evs);
  enum store_status st = store_events(B->store, bad, &evs);
  if (st != STORE_OK && st != STORE_CLIENT) fail_msg("events of a refused id: status %d", st);
  store_events_free(&evs);
  size_t got;
  int64_t total;
  unsigned char one;
  st = store_audio_read(B->store, bad, 0, &one, 1, &got, &total);
  if (st != STORE_NOT_FOUND && st != STORE_CLIENT) fail_msg("audio of a refused id: %d", st);
  for (int i = 0; i < 3; i++) pending_free(p[i]);
  free(ev);
  free(seed);
}

/* An audio event in the same batch as an event the database refuses (before it and after it):
 * the refused one fails alone and the audio, sent again with the rest, is stored whole. */
static void test_audio_survives_a_refused_neighbour(void **state) {
  (void)state;
  char tag[16], id[64], bad1[64], bad2[64];
  new_tag(tag);
  snprintf(id, sizeof id, "nb-%s", tag);
  snprintf(bad1, sizeof bad1, "nb-\xff-1-%s", tag);
  snprintf(bad2, sizeof bad2, "nb-\xff-2-%s", tag);
  const int64_t len = 2 * STORE_AUDIO_CHUNK_BYTES + 333;
  int fd = audio_file(len, 11);
  char *ev = event_json("post_call_audio", id, NULL);
  char *bev = event_json("x", tag, NULL);
  struct pending *p[3] = {event_new(bad1, "x", bev, NULL),
                          event_new(id, "post_call_audio", ev, NULL),
                          event_new(bad2, "x", bev, NULL)};
  p[1]->w.audio_fd = fd;
  p[1]->w.audio_len = len;
  for (int i = 0; i < 3; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 3; i++) wait_done(p[i]);
  assert_int_equal(p[1]->w.status, STORE_OK);
  assert_false(p[1]->w.duplicate);
  check_range(id, 0, (size_t)len, len, 11);
  check_range(id, STORE_AUDIO_CHUNK_BYTES - 3, 10, len, 11);
  struct store_events evs;
  assert_int_equal(store_events(B->store, id, &evs), STORE_OK);
  assert_int_equal(evs.count, 1);
  store_events_free(&evs);
  for (int i = 0; i < 3; i++) pending_free(p[i]);
  close(fd);
  free(ev);
  free(bev);
}

/* ---------- migrations: a database made by 0001, with rows, is migrated ---------- */

static const char old_rows_sqlite[] =
    "INSERT INTO deliveries VALUES (1, 'webhook_old', 'mig-conv', 1000, X'00', X'7b7d');"
    "INSERT INTO conversations VALUES ('mig-conv', 'old@example.com', 'acc-old', 'completed', "
    "NULL, 60, 2, 1000, 'webhook_old', X'00', 1);";
static const char old_rows_pg[] =
    "INSERT INTO deliveries (id, webhook_id, conversation_id, received_at_us, body_sha256, body) "
    "VALUES (1, 'webhook_old', 'mig-conv', 1000, '\\x00', '\\x7b7d');"
    "INSERT INTO conversations VALUES ('mig-conv', 'old@example.com', 'acc-old', 'completed', "
    "NULL, 60, 2, 1000, 'webhook_old', '\\x00', 1);"
    "SELECT setval('deliveries_id_seq', 1);"; /* as the sequence had given id 1 */
static const char migrations_table[] =
    "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
    "applied_at_us BIGINT NOT NULL);"
    "INSERT INTO schema_migrations VALUES (1, 'init', 0);";

/* Makes a database as version 0001 left it, at url (SQLite) or as a new database (PostgreSQL,
 * url rewritten to it). */
static void make_0001_database(char *url, size_t cap, const char *tag) {
  if (strcmp(B->name, "sqlite") == 0) {
    char path[4300];
    snprintf(path, sizeof path, "%s/old-%s.db", B->dir, tag);
    snprintf(url, cap, "sqlite:%s", path);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    const char *steps[] = {migrations_table, store_migrations_sqlite[0].sql, old_rows_sqlite};
    for (size_t i = 0; i < 3; i++)
      if (sqlite3_exec(db, steps[i], NULL, NULL, &err) != SQLITE_OK) fail_msg("sqlite: %s", err);
    sqlite3_close(db);
    return;
  }
  PGconn *c = PQconnectdb(B->url);
  assert_int_equal(PQstatus(c), CONNECTION_OK);
  char sql[128];
  snprintf(sql, sizeof sql, "CREATE DATABASE \"old_%s\"", tag);
  PGresult *r = PQexec(c, sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) fail_msg("postgres: %s", PQerrorMessage(c));
  PQclear(r);
  PQfinish(c);
  const char *slash = strrchr(B->url, '/');
  assert_non_null(slash);
  snprintf(url, cap, "%.*s/old_%s", (int)(slash - B->url), B->url, tag);
  c = PQconnectdb(url);
  assert_int_equal(PQstatus(c), CONNECTION_OK);
  const char *steps[] = {migrations_table, store_migrations_pg[0].sql, old_rows_pg};
  for (size_t i = 0; i < 3; i++) {
    r = PQexec(c, steps[i]);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
      fail_msg("postgres: %s", PQerrorMessage(c));
    PQclear(r);
  }
  PQfinish(c);
}

static void test_migration_keeps_existing_rows(void **state) {
  (void)state;
  char tag[16], url[4400], err[512] = "";
  new_tag(tag);
  make_0001_database(url, sizeof url, tag);
  struct store *old = store_open(url, err, sizeof err);
  if (!old) fail_msg("opening a 0001 database: %s", err);
  struct store *saved = B->store;
  B->store = old;
  struct store_conversation c;
  assert_int_equal(store_get(old, "mig-conv", true, &c), STORE_OK);
  assert_string_equal(c.email_id, "old@example.com");
  assert_string_equal(c.account_id, "acc-old");
  assert_string_equal(c.status, "completed");
  assert_string_equal(c.webhook_id, "webhook_old");
  assert_string_equal(c.agent_id, "");
  assert_string_equal(c.failure_reason, "");
  assert_int_equal(c.audio_bytes, -1);
  assert_int_equal(c.processed_us, 1000);
  assert_int_equal(c.first_processed_us, 1000); /* 0016: first stored when last processed */
  assert_int_equal(c.duration, 60);
  assert_int_equal(c.message_count, 2);
  assert_false(c.has_start);
  assert_int_equal(c.body_len, 2);
  assert_memory_equal(c.body, "{}", 2);
  free(c.body);
  check_count("old@example.com", "acc-old", "completed", 1);
  /* The migrated database takes what 0002 allows: unknown emails, events, audio. */
  char *seed = conv_body("mig-new", "e@example.com", "acc", 1, NULL);
  char *ev = event_json("post_call_transcription", "mig-new", NULL);
  (void)submit_ok(event_new("mig-new", "post_call_transcription", ev, seed));
  assert_int_equal(store_get(old, "mig-new", false, &c), STORE_OK);
  assert_string_equal(c.email_id, "");
  int fd = audio_file(1000, 8);
  (void)put_audio("mig-conv", fd, 1000, NULL);
  close(fd);
  check_range("mig-conv", 0, 2000, 1000, 8);
  /* In the list (0016) the old conversation keeps its place after a new version. */
  char *v2 = conv_body("mig-conv", "old@example.com", "acc-old", 3, NULL);
  (void)put_ok(v2);
  free(v2);
  struct store_filter lf = filter(NULL, NULL, NULL, 1, 10);
  struct store_page page;
  assert_int_equal(store_list(old, &lf, &page), STORE_OK);
  assert_int_equal(page.count, 2);
  assert_string_equal(page.items[0].conversation_id, "mig-new");
  assert_string_equal(page.items[1].conversation_id, "mig-conv");
  assert_int_equal(page.items[1].first_processed_us, 1000);
  assert_int_equal(page.items[1].message_count, 3);
  assert_true(page.items[1].processed_us > page.items[0].processed_us);
  store_page_free(&page);
  B->store = saved;
  store_close(old);
  /* Opened again, nothing is migrated twice. */
  old = store_open(url, err, sizeof err);
  if (!old) fail_msg("opening the migrated database again: %s", err);
  assert_int_equal(store_get(old, "mig-conv", false, &c), STORE_OK);
  assert_int_equal(c.audio_bytes, 1000);
  store_close(old);
  free(seed);
  free(ev);
  if (strcmp(B->name, "sqlite") == 0) {
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
      char path[4500];
      snprintf(path, sizeof path, "%s%s", url + strlen("sqlite:"), suffixes[i]);
      unlink(path);
    }
  }
}

/* ---------- erasure and retention ---------- */

/* Runs sql on the backend's database directly (test set-up: ageing rows); returns the first
 * column of the first row as a number when there is one, else 0. */
static int64_t direct_sql(const char *sql) {
  int64_t v = 0;
  if (strcmp(B->name, "sqlite") == 0) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(B->sqlite_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
      fail_msg("sqlite: %s", sqlite3_errmsg(db));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
      v = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE)
      fail_msg("sqlite: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
  }
  PGconn *c = PQconnectdb(B->url);
  assert_int_equal(PQstatus(c), CONNECTION_OK);
  PGresult *r = PQexec(c, sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
    fail_msg("postgres: %s", PQerrorMessage(c));
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
    v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  PQclear(r);
  PQfinish(c);
  return v;
}

/* Rows of conversation id in every table that keeps something of it. */
static int64_t rows_of(const char *id) {
  char sql[1024];
  snprintf(sql, sizeof sql,
           "SELECT (SELECT COUNT(*) FROM conversations WHERE conversation_id = '%s')"
           " + (SELECT COUNT(*) FROM deliveries WHERE conversation_id = '%s')"
           " + (SELECT COUNT(*) FROM events WHERE conversation_id = '%s')"
           " + (SELECT COUNT(*) FROM audio_meta WHERE conversation_id = '%s')"
           " + (SELECT COUNT(*) FROM audio_chunks WHERE conversation_id = '%s')",
           id, id, id, id, id);
  return direct_sql(sql);
}

static struct pending *erase_new(const char *id) {
  struct pending *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->w.kind = STORE_WRITE_ERASE;
  p->w.erase_conversation_id = id;
  p->w.audio_fd = -1;
  p->w.done = on_done;
  p->w.done_cls = p;
  return p;
}

/* Erases id; returns the rows removed. */
static int64_t erase_ok(const char *id) {
  struct pending *p = erase_new(id);
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_OK);
  int64_t n = p->w.erased;
  pending_free(p);
  return n;
}

static int64_t retain_ok(int64_t before_us, int64_t limit) {
  struct pending *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->w.kind = STORE_WRITE_RETAIN;
  p->w.retain_before_us = before_us;
  p->w.retain_limit = limit;
  p->w.audio_fd = -1;
  p->w.done = on_done;
  p->w.done_cls = p;
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_OK);
  int64_t n = p->w.erased;
  pending_free(p);
  return n;
}

/* A conversation with two versions, two events and audio: all of it goes; its neighbour, with
 * its own events and audio, keeps everything. */
static void test_erase_removes_one_conversation_whole(void **state) {
  (void)state;
  char tag[16], a[64], b[64], email[64];
  new_tag(tag);
  snprintf(a, sizeof a, "er-a-%s", tag);
  snprintf(b, sizeof b, "er-b-%s", tag);
  snprintf(email, sizeof email, "er-%s@example.com", tag);
  char *v1 = conv_body(a, email, "acc", 1, NULL), *v2 = conv_body(a, email, "acc", 2, NULL);
  (void)put_ok(v1);
  (void)put_ok(v2);
  char *ev = event_json("post_call_transcription", a, NULL);
  (void)submit_ok(event_new(a, "post_call_transcription", ev, NULL));
  int fd = audio_file(STORE_AUDIO_CHUNK_BYTES + 10, 3);
  (void)put_audio(a, fd, STORE_AUDIO_CHUNK_BYTES + 10, NULL);
  close(fd);
  (void)put_conv(b, email, "acc");
  char *evb = event_json("post_call_transcription", b, NULL);
  (void)submit_ok(event_new(b, "post_call_transcription", evb, NULL));
  fd = audio_file(1000, 4);
  (void)put_audio(b, fd, 1000, NULL);
  close(fd);
  int64_t before_b = rows_of(b);
  assert_int_equal(rows_of(a), 1 + 2 + 2 + 1 + 2); /* row, deliveries, events, meta, chunks */

  assert_int_equal(erase_ok(a), 8);
  assert_int_equal(rows_of(a), 0);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, a, true, &c), STORE_NOT_FOUND);
  struct store_events e;
  assert_int_equal(store_events(B->store, a, &e), STORE_OK);
  assert_int_equal(e.count, 0);
  store_events_free(&e);
  unsigned char buf[16];
  size_t got;
  int64_t total;
  assert_int_equal(store_audio_read(B->store, a, 0, buf, sizeof buf, &got, &total),
                   STORE_NOT_FOUND);
  check_count(email, NULL, NULL, 1); /* b alone */
  /* the neighbour keeps everything */
  assert_int_equal(rows_of(b), before_b);
  assert_int_equal(store_get(B->store, b, false, &c), STORE_OK);
  check_range(b, 0, 2000, 1000, 4);
  /* Delivered again afterwards, it is a new conversation (no trace decides "duplicate"). */
  struct version again = put_ok(v1);
  assert_false(again.duplicate);
  assert_int_equal(rows_of(a), 2);
  free(v1);
  free(v2);
  free(ev);
  free(evb);
}

static void test_erase_of_nothing_erases_nothing(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "er-none-%s", tag);
  assert_int_equal(erase_ok(id), 0);
  /* audio alone (no conversation row) is something */
  int fd = audio_file(100, 5);
  (void)put_audio(id, fd, 100, NULL);
  close(fd);
  assert_true(erase_ok(id) > 0);
  assert_int_equal(rows_of(id), 0);
  assert_int_equal(erase_ok(id), 0);
}

/* Submitted together (one batch, as a busy writer takes them): the erasure takes effect at its
 * place in the batch, and the writes around it are stored. */
static void test_erase_within_a_batch(void **state) {
  (void)state;
  char tag[16], gone[64], kept[64], back[64];
  new_tag(tag);
  snprintf(gone, sizeof gone, "er-gone-%s", tag);
  snprintf(kept, sizeof kept, "er-kept-%s", tag);
  snprintf(back, sizeof back, "er-back-%s", tag);
  (void)put_conv(gone, "x@example.com", "acc");
  (void)put_conv(back, "x@example.com", "acc");
  char *kb = conv_body(kept, "x@example.com", "acc", 1, NULL);
  char *bb = conv_body(back, "x@example.com", "acc", 3, NULL);
  struct pending *p[4] = {erase_new(gone), pending_new(kb), erase_new(back), pending_new(bb)};
  for (int i = 0; i < 4; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 4; i++) {
    wait_done(p[i]);
    assert_int_equal(p[i]->w.status, STORE_OK);
  }
  assert_int_equal(p[0]->w.erased, 2);
  assert_int_equal(p[2]->w.erased, 2);
  for (int i = 0; i < 4; i++) pending_free(p[i]);
  assert_int_equal(rows_of(gone), 0);
  assert_int_equal(rows_of(kept), 2);
  assert_int_equal(rows_of(back), 2); /* erased, then its new delivery stored */
  struct store_conversation c;
  assert_int_equal(store_get(B->store, back, false, &c), STORE_OK);
  assert_int_equal(c.message_count, 3);
  free(kb);
  free(bb);
}

/* Ages a conversation (processedAt) or an id's events and audio (received) to at_us. A
 * conversation aged so was delivered then: first stored then too (the list's order key). */
static void age(const char *table, const char *column, const char *id, int64_t at_us) {
  char sql[512];
  snprintf(sql, sizeof sql, "UPDATE %s SET %s = %lld WHERE conversation_id = '%s'", table, column,
           (long long)at_us, id);
  (void)direct_sql(sql);
  if (strcmp(table, "conversations") == 0 && strcmp(column, "processed_at_us") == 0)
    age(table, "first_processed_at_us", id, at_us);
}

static void test_retention_erases_only_what_is_old(void **state) {
  (void)state;
  char tag[16], old1[64], old2[64], old3[64], recent[64], lone_ev[64], lone_audio[64], new_ev[64];
  new_tag(tag);
  snprintf(old1, sizeof old1, "rt-old1-%s", tag);
  snprintf(old2, sizeof old2, "rt-old2-%s", tag);
  snprintf(old3, sizeof old3, "rt-old3-%s", tag);
  snprintf(recent, sizeof recent, "rt-new-%s", tag);
  snprintf(lone_ev, sizeof lone_ev, "rt-lone-ev-%s", tag);
  snprintf(lone_audio, sizeof lone_audio, "rt-lone-au-%s", tag);
  snprintf(new_ev, sizeof new_ev, "rt-new-ev-%s", tag);
  const int64_t day = 86400LL * 1000000LL, now = (int64_t)time(NULL) * 1000000LL;
  const char *olds[] = {old1, old2, old3};
  for (int i = 0; i < 3; i++) {
    (void)put_conv(olds[i], "rt@example.com", "acc");
    char *ev = event_json("post_call_transcription", olds[i], NULL);
    (void)submit_ok(event_new(olds[i], "post_call_transcription", ev, NULL));
    free(ev);
    age("conversations", "processed_at_us", olds[i], now - (40 + i) * day);
  }
  (void)put_conv(recent, "rt@example.com", "acc");
  age("deliveries", "received_at_us", recent, now - 90 * day); /* history of a live one */
  char *ev = event_json("post_call_transcription", lone_ev, NULL);
  (void)submit_ok(event_new(lone_ev, "post_call_transcription", ev, NULL));
  free(ev);
  age("events", "received_at_us", lone_ev, now - 40 * day);
  int fd = audio_file(300000, 6);
  (void)put_audio(lone_audio, fd, 300000, NULL);
  close(fd);
  age("audio_meta", "received_at_us", lone_audio, now - 40 * day);
  ev = event_json("post_call_transcription", new_ev, NULL);
  (void)submit_ok(event_new(new_ev, "post_call_transcription", ev, NULL));
  free(ev);

  /* Small batches: at most 2 conversations per pass, oldest first. */
  int64_t n = retain_ok(now - 30 * day, 2);
  assert_int_equal(n, 2 + 1 + 1); /* two conversations, the lone event, the lone audio */
  assert_int_equal(rows_of(old3), 0);
  assert_int_equal(rows_of(old2), 0);
  assert_int_equal(rows_of(old1), 3); /* its row, delivery and event */
  assert_int_equal(rows_of(lone_ev), 0);
  assert_int_equal(rows_of(lone_audio), 1); /* its event (recent) stays; its audio is gone */
  assert_int_equal(retain_ok(now - 30 * day, 2), 1);
  assert_int_equal(rows_of(old1), 0);
  assert_int_equal(retain_ok(now - 30 * day, 2), 0);
  /* what is recent is kept */
  assert_int_equal(rows_of(recent), 2);
  assert_int_equal(rows_of(new_ev), 1);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, recent, false, &c), STORE_OK);
}

/* Retention keeps its meaning with the list's order key (first stored): a conversation whose
 * processedAt is older than the cutoff goes, one first stored long ago but processed again since
 * (a changed redelivery) stays, whatever the batch size; it is passed over, not counted. */
static void test_retention_keeps_a_conversation_processed_again(void **state) {
  (void)state;
  char tag[16], back[64], old[64], later[64], sql[256];
  new_tag(tag);
  snprintf(back, sizeof back, "rk-back-%s", tag);
  snprintf(old, sizeof old, "rk-old-%s", tag);
  snprintf(later, sizeof later, "rk-later-%s", tag);
  const int64_t day = 86400LL * 1000000LL, now = time_now_us();
  (void)put_conv(back, "rk@example.com", "acc");
  age("conversations", "processed_at_us", back, now - 50 * day);
  char *v2 = conv_body(back, "rk@example.com", "acc", 4, NULL);
  struct version vb = put_ok(v2); /* processed again now; first stored 50 days ago */
  free(v2);
  (void)put_conv(old, "rk@example.com", "acc");
  age("conversations", "processed_at_us", old, now - 45 * day);
  (void)put_conv(later, "rk@example.com", "acc");
  age("conversations", "processed_at_us", later, now - 40 * day);
  snprintf(sql, sizeof sql,
           "UPDATE conversations SET processed_at_us = %lld WHERE conversation_id = '%s'",
           (long long)(now - 35 * day), later); /* processed again 35 days ago */
  (void)direct_sql(sql);
  /* one per pass, oldest first stored first; back is passed over each time */
  assert_int_equal(retain_ok(now - 30 * day, 1), 1);
  assert_int_equal(rows_of(old), 0);
  assert_true(rows_of(later) > 0);
  assert_int_equal(retain_ok(now - 30 * day, 1), 1);
  assert_int_equal(rows_of(later), 0);
  assert_int_equal(retain_ok(now - 30 * day, 1), 0);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, back, false, &c), STORE_OK);
  assert_int_equal(c.message_count, 4);
  assert_int_equal(c.processed_us, vb.processed_us);
  assert_int_equal(c.first_processed_us, now - 50 * day);
  /* once its processedAt is old too, it goes */
  age("conversations", "processed_at_us", back, now - 31 * day);
  assert_int_equal(retain_ok(now - 30 * day, 1), 1);
  assert_int_equal(store_get(B->store, back, false, &c), STORE_NOT_FOUND);
}

/* ---------- the audit log (store.h's `who`; model/audit.h; store/audit_chain.h) ---------- */

static int64_t audit_head_id(void) {
  int64_t id;
  unsigned char hash[AUDIT_HASH_LEN];
  assert_int_equal(store_audit_head(B->store, &id, hash), STORE_OK);
  return id;
}

/* Every entry after id after, oldest first (at most 1000). */
static struct store_audit_page audit_after(int64_t after) {
  struct store_audit_filter f = {.action = -1, .cursor = after, .limit = 1000};
  struct store_audit_page page;
  assert_int_equal(store_audit_list(B->store, &f, &page), STORE_OK);
  return page;
}

static void assert_chain_whole(void) {
  struct audit_verify_result r;
  assert_int_equal(audit_chain_verify(B->store, &r), STORE_OK);
  if (r.first_bad != 0) fail_msg("chain broken at %lld: %s", (long long)r.first_bad, r.why);
}

static struct audit_who who_of(const char *tag, const char *what) {
  struct audit_who w;
  memset(&w, 0, sizeof w);
  snprintf(w.request_id, sizeof w.request_id, "req-%s-%s", what, tag);
  snprintf(w.key_id, sizeof w.key_id, "key-%s", tag);
  snprintf(w.client_ip, sizeof w.client_ip, "2001:db8::%s", "7");
  return w;
}

static void check_entry(const struct audit_entry *e, enum audit_action action, const char *target,
                        enum audit_outcome outcome, const struct audit_who *who) {
  assert_int_equal(e->action, action);
  assert_string_equal(e->target, target);
  assert_int_equal(e->outcome, outcome);
  assert_int_equal(e->count, 1);
  assert_true(e->at_us > 0);
  assert_string_equal(e->who.request_id, who ? who->request_id : "");
  assert_string_equal(e->who.key_id, who ? who->key_id : "");
  assert_string_equal(e->who.client_ip, who ? who->client_ip : "");
}

/* A STORE_WRITE_AUDIT of n entries (action read, target tag-i) by who. */
static struct pending *audit_new(struct audit_entry *entries, size_t n, const char *tag,
                                 const struct audit_who *who) {
  struct pending *p = calloc(1, sizeof *p);
  assert_non_null(p);
  for (size_t i = 0; i < n; i++) {
    memset(&entries[i], 0, sizeof entries[i]);
    entries[i].at_us = time(NULL) * 1000000LL + (int64_t)i;
    entries[i].who = *who;
    entries[i].action = AUDIT_CONVERSATION_READ;
    snprintf(entries[i].target, sizeof entries[i].target, "t%zu-%s", i, tag);
    entries[i].outcome = i % 2 ? AUDIT_NOT_FOUND : AUDIT_OK;
    entries[i].count = 1;
  }
  p->w.kind = STORE_WRITE_AUDIT;
  p->w.audit_entries = entries;
  p->w.audit_count = n;
  p->w.audio_fd = -1;
  p->w.done = on_done;
  p->w.done_cls = p;
  return p;
}

/* Every change writes its entry, as store.h says, in its own transaction; a probe, a key's use,
 * an erasure of nothing and a revocation of no key write none. */
static void test_audit_every_change_has_its_entry(void **state) {
  (void)state;
  char tag[16], id[64], old1[64], old2[64];
  new_tag(tag);
  snprintf(id, sizeof id, "au-%s", tag);
  snprintf(old1, sizeof old1, "au-old1-%s", tag);
  snprintf(old2, sizeof old2, "au-old2-%s", tag);
  struct audit_who who = who_of(tag, "w");
  int64_t h0 = audit_head_id();

  char *body = conv_body(id, "au@example.com", "acc", 1, NULL);
  for (int i = 0; i < 2; i++) { /* the second is a redelivery: audited all the same */
    struct pending *p = pending_new(body);
    p->w.who = who;
    store_submit(B->store, &p->w);
    wait_done(p);
    assert_int_equal(p->w.status, STORE_OK);
    assert_int_equal(p->w.duplicate, i == 1);
    pending_free(p);
  }
  char *ev = event_json("post_call_transcription", id, NULL);
  struct pending *p = event_new(id, "post_call_transcription", ev, NULL);
  p->w.who = who;
  (void)submit_ok(p);
  p = event_new("", "x", ev, NULL); /* an event naming no conversation */
  p->w.who = who;
  (void)submit_ok(p);
  p = probe_new();
  store_submit(B->store, &p->w);
  wait_done(p);
  pending_free(p);
  p = erase_new(id);
  p->w.who = who;
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_true(p->w.erased > 0);
  pending_free(p);
  p = erase_new(id); /* nothing left to erase: no entry */
  p->w.who = who;
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.erased, 0);
  pending_free(p);

  struct apikey_record k;
  memset(&k, 0, sizeof k);
  assert_true(crypto_random_hex(k.id, sizeof k.id, APIKEY_ID_LEN / 2));
  snprintf(k.name, sizeof k.name, "audited");
  k.scopes = APIKEY_SCOPE_READ;
  k.created_us = 1700000000000000;
  struct store_write kw = {.kind = STORE_WRITE_KEY_CREATE, .key = &k, .who = who};
  assert_int_equal(key_write(&kw), STORE_OK);
  struct store_write t = {.kind = STORE_WRITE_KEY_TOUCH, .key_at_us = 1800000000000000, .who = who};
  snprintf(t.key_id, sizeof t.key_id, "%s", k.id);
  assert_int_equal(key_write(&t), STORE_OK);
  struct store_write r = {
      .kind = STORE_WRITE_KEY_REVOKE, .key_at_us = 1810000000000000, .who = who};
  snprintf(r.key_id, sizeof r.key_id, "%s", k.id);
  assert_int_equal(key_write(&r), STORE_OK);
  snprintf(r.key_id, sizeof r.key_id, "0000000000000000"); /* no such key: no entry */
  assert_int_equal(key_write(&r), STORE_OK);
  assert_true(r.duplicate);

  /* retention: one entry per conversation erased, outcome expired, no one asked */
  const int64_t day = 86400LL * 1000000LL, now = (int64_t)time(NULL) * 1000000LL;
  (void)put_conv(old2, "au@example.com", "acc");
  (void)put_conv(old1, "au@example.com", "acc");
  age("conversations", "processed_at_us", old1, now - 1000 * day);
  age("conversations", "processed_at_us", old2, now - 1001 * day);
  assert_int_equal(retain_ok(now - 900 * day, 10), 2);

  struct store_audit_page page = audit_after(h0);
  assert_int_equal(page.count, 11);
  const struct audit_entry *e = page.items;
  for (size_t i = 0; i < page.count; i++) assert_int_equal(e[i].id, h0 + 1 + (int64_t)i);
  check_entry(&e[0], AUDIT_WEBHOOK_ACCEPTED, id, AUDIT_OK, &who);
  check_entry(&e[1], AUDIT_WEBHOOK_ACCEPTED, id, AUDIT_OK, &who);
  check_entry(&e[2], AUDIT_WEBHOOK_ACCEPTED, id, AUDIT_OK, &who);
  check_entry(&e[3], AUDIT_WEBHOOK_ACCEPTED, "", AUDIT_OK, &who);
  check_entry(&e[4], AUDIT_CONVERSATION_ERASED, id, AUDIT_OK, &who);
  check_entry(&e[5], AUDIT_KEY_CREATED, k.id, AUDIT_OK, &who);
  check_entry(&e[6], AUDIT_KEY_REVOKED, k.id, AUDIT_OK, &who);
  check_entry(&e[7], AUDIT_WEBHOOK_ACCEPTED, old2, AUDIT_OK, NULL);
  check_entry(&e[8], AUDIT_WEBHOOK_ACCEPTED, old1, AUDIT_OK, NULL);
  /* the two erased by one retention pass, in either order */
  bool first_is_old1 = strcmp(e[9].target, old1) == 0;
  check_entry(&e[9], AUDIT_CONVERSATION_ERASED, first_is_old1 ? old1 : old2, AUDIT_EXPIRED, NULL);
  check_entry(&e[10], AUDIT_CONVERSATION_ERASED, first_is_old1 ? old2 : old1, AUDIT_EXPIRED, NULL);
  assert_true(e[0].at_us <= e[2].at_us);
  assert_int_equal(audit_head_id(), e[10].id);
  free(page.items);
  assert_chain_whole();
  free(body);
  free(ev);
}

/* STORE_WRITE_AUDIT appends the caller's entries in order, gives each its id and hash (what the
 * log then holds), also when several are in one batch. */
static void test_audit_entries_written_as_given(void **state) {
  (void)state;
  char tag[16];
  new_tag(tag);
  struct audit_who who = who_of(tag, "a");
  snprintf(who.client_ip, sizeof who.client_ip, "%s", "");                   /* null */
  snprintf(who.request_id, sizeof who.request_id, "r\"\\ \xc3\xa9 %s", tag); /* quoting */
  struct audit_entry a[3], b[2];
  struct pending *pa = audit_new(a, 3, tag, &who), *pb = audit_new(b, 2, tag, &who);
  b[1].action = AUDIT_AUTH_REJECTED;
  b[1].outcome = AUDIT_UNAUTHORIZED;
  b[1].count = 42;
  b[1].target[0] = '\0';
  int64_t h0 = audit_head_id();
  store_submit(B->store, &pa->w);
  store_submit(B->store, &pb->w);
  wait_done(pa);
  wait_done(pb);
  assert_int_equal(pa->w.status, STORE_OK);
  assert_int_equal(pb->w.status, STORE_OK);
  struct store_audit_page page = audit_after(h0);
  assert_int_equal(page.count, 5);
  const struct audit_entry *given[5] = {&a[0], &a[1], &a[2], &b[0], &b[1]};
  for (size_t i = 0; i < 5; i++) {
    const struct audit_entry *g = given[i], *e = &page.items[i];
    assert_int_equal(g->id, h0 + 1 + (int64_t)i);
    assert_int_equal(e->id, g->id);
    assert_memory_equal(e->hash, g->hash, AUDIT_HASH_LEN);
    assert_int_equal(e->at_us, g->at_us);
    assert_string_equal(e->who.request_id, g->who.request_id);
    assert_string_equal(e->who.key_id, g->who.key_id);
    assert_string_equal(e->who.client_ip, "");
    assert_int_equal(e->action, g->action);
    assert_string_equal(e->target, g->target);
    assert_int_equal(e->outcome, g->outcome);
    assert_int_equal(e->count, g->count);
  }
  /* each hash links to the one before, as the C side computes it */
  for (size_t i = 1; i < 5; i++) {
    struct audit_entry x = page.items[i];
    audit_chain_link(page.items[i - 1].hash, &x);
    assert_memory_equal(x.hash, page.items[i].hash, AUDIT_HASH_LEN);
  }
  free(page.items);
  pending_free(pa);
  pending_free(pb);
  assert_chain_whole();
}

static void expect_ids(const struct store_audit_filter *f, const int64_t *ids, size_t n) {
  struct store_audit_page page;
  assert_int_equal(store_audit_list(B->store, f, &page), STORE_OK);
  if (page.count != n) fail_msg("%zu entries, expected %zu", page.count, n);
  for (size_t i = 0; i < n; i++) assert_int_equal(page.items[i].id, ids[i]);
  free(page.items);
}

/* Filters (time, key, action, target, combined), both orders, and cursor pages that add up to
 * the whole. */
static void test_audit_list_filters_and_pages(void **state) {
  (void)state;
  char tag[16], key2[AUDIT_KEY_ID_MAX + 1], target[AUDIT_TARGET_MAX + 1];
  new_tag(tag);
  struct audit_who who = who_of(tag, "l");
  snprintf(key2, sizeof key2, "key2-%s", tag);
  struct audit_entry e[8];
  struct pending *p = audit_new(e, 8, tag, &who);
  const int64_t t0 = 1600000000000000;
  for (int i = 0; i < 8; i++) {
    e[i].at_us = t0 + i * 1000;
    if (i % 2) snprintf(e[i].who.key_id, sizeof e[i].who.key_id, "%s", key2);
    if (i >= 4) e[i].action = AUDIT_CONVERSATION_LIST;
    if (i == 6 || i == 2) snprintf(e[i].target, sizeof e[i].target, "same-%s", tag);
  }
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_OK);
  int64_t id0 = e[0].id; /* ids are id0 .. id0 + 7 */
  for (int i = 0; i < 8; i++) assert_int_equal(e[i].id, id0 + i);

  struct store_audit_filter f = {.action = -1, .key_id = who.key_id, .limit = 100};
  expect_ids(&f, (int64_t[]){id0, id0 + 2, id0 + 4, id0 + 6}, 4);
  f.newest_first = true;
  expect_ids(&f, (int64_t[]){id0 + 6, id0 + 4, id0 + 2, id0}, 4);
  f.key_id = key2;
  f.action = AUDIT_CONVERSATION_LIST;
  expect_ids(&f, (int64_t[]){id0 + 7, id0 + 5}, 2);
  snprintf(target, sizeof target, "same-%s", tag);
  f = (struct store_audit_filter){.action = -1, .target = target, .limit = 100};
  expect_ids(&f, (int64_t[]){id0 + 2, id0 + 6}, 2);
  f.action = AUDIT_CONVERSATION_READ;
  expect_ids(&f, (int64_t[]){id0 + 2}, 1);
  /* time: [since, until) */
  f = (struct store_audit_filter){
      .action = -1, .since_us = t0 + 2000, .until_us = t0 + 5000, .limit = 100};
  expect_ids(&f, (int64_t[]){id0 + 2, id0 + 3, id0 + 4}, 3);
  f.key_id = key2;
  f.newest_first = true;
  expect_ids(&f, (int64_t[]){id0 + 3}, 1);
  f = (struct store_audit_filter){.action = -1, .target = "no-such-target", .limit = 100};
  expect_ids(&f, NULL, 0);
  /* pages of 3 through the key's entries and key2's, both orders */
  for (int newest = 0; newest < 2; newest++) {
    int64_t seen[8];
    size_t n = 0;
    f = (struct store_audit_filter){
        .action = -1, .since_us = t0, .until_us = t0 + 8000, .newest_first = newest, .limit = 3};
    for (int pages = 0;; pages++) {
      assert_true(pages < 5);
      struct store_audit_page page;
      assert_int_equal(store_audit_list(B->store, &f, &page), STORE_OK);
      for (size_t i = 0; i < page.count; i++) {
        assert_true(n < 8);
        seen[n++] = page.items[i].id;
      }
      size_t got = page.count;
      if (got) f.cursor = page.items[got - 1].id;
      free(page.items);
      if (got < 3) break;
    }
    assert_int_equal(n, 8);
    for (size_t i = 0; i < 8; i++)
      assert_int_equal(seen[i], newest ? id0 + 7 - (int64_t)i : id0 + (int64_t)i);
  }
  pending_free(p);
}

/* A batch sent again after a write in it was refused leaves no hole and no fork: the refused
 * write has no entry, the others have theirs, once each. An entry whose text is not UTF-8 fails
 * its write alone, as the client's fault. */
static void test_audit_refused_write_leaves_no_hole(void **state) {
  (void)state;
  char tag[16], good[64], bad[64];
  new_tag(tag);
  snprintf(good, sizeof good, "au-good-%s", tag);
  snprintf(bad, sizeof bad, "au-\xff-%s", tag);
  struct audit_who who = who_of(tag, "h");
  char *gb = conv_body(good, "h@example.com", "acc", 1, NULL);
  char *bb = conv_body(good, "h@example.com", "acc", 2, NULL);
  struct audit_entry e1[1], e2[1];
  struct pending *p[4] = {pending_new(gb), pending_new(bb), audit_new(e1, 1, tag, &who),
                          audit_new(e2, 1, tag, &who)};
  p[1]->in.conversation_id = bad;
  snprintf(e2[0].target, sizeof e2[0].target, "bad-\xc3-%s", tag);
  int64_t h0 = audit_head_id();
  for (int i = 0; i < 4; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 4; i++) wait_done(p[i]);
  assert_int_equal(p[0]->w.status, STORE_OK);
  assert_int_equal(p[2]->w.status, STORE_OK);
  if (p[1]->w.status != STORE_OK && p[1]->w.status != STORE_CLIENT)
    fail_msg("refused write: status %d", p[1]->w.status);
  if (p[3]->w.status != STORE_OK && p[3]->w.status != STORE_CLIENT)
    fail_msg("refused entry: status %d", p[3]->w.status);
  int64_t expected = 2 + (p[1]->w.status == STORE_OK) + (p[3]->w.status == STORE_OK);
  struct store_audit_page page = audit_after(h0);
  assert_int_equal(page.count, expected);
  assert_int_equal(audit_head_id(), h0 + expected);
  assert_string_equal(page.items[0].target, good);
  assert_int_equal(e1[0].id, page.items[expected - 1 - (p[3]->w.status == STORE_OK)].id);
  free(page.items);
  for (int i = 0; i < 4; i++) pending_free(p[i]);
  free(gb);
  free(bb);
  assert_chain_whole();
}

/* The entries written with key_id (at most 100), oldest first. */
static struct store_audit_page audit_by_key(const char *key_id) {
  struct store_audit_filter f = {.action = -1, .key_id = key_id, .limit = 100};
  struct store_audit_page page;
  assert_int_equal(store_audit_list(B->store, &f, &page), STORE_OK);
  return page;
}

/* A write that fails at the writer (its audio file cannot be read) writes no entry; the batch
 * is sent again without it and the entries of the writes around it follow each other, no hole,
 * no fork. */
static void test_audit_failed_write_writes_none(void **state) {
  (void)state;
  char tag[16], bad_tag[16], id[64], a[64], b[64];
  new_tag(tag);
  new_tag(bad_tag);
  snprintf(id, sizeof id, "au-fail-%s", tag);
  snprintf(a, sizeof a, "au-a-%s", tag);
  snprintf(b, sizeof b, "au-b-%s", tag);
  struct audit_who who = who_of(tag, "f"), bad_who = who_of(bad_tag, "f");
  int fd = audio_file(100, 8);
  char *ev = event_json("post_call_audio", id, NULL);
  char *ba = conv_body(a, "au@example.com", "acc", 1, NULL);
  char *bb = conv_body(b, "au@example.com", "acc", 1, NULL);
  struct pending *p[3] = {pending_new(ba), event_new(id, "post_call_audio", ev, NULL),
                          pending_new(bb)};
  p[1]->w.audio_fd = fd;
  p[1]->w.audio_len = 1000; /* more than the file holds */
  p[0]->w.who = who;
  p[1]->w.who = bad_who;
  p[2]->w.who = who;
  for (int i = 0; i < 3; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 3; i++) wait_done(p[i]);
  assert_int_equal(p[0]->w.status, STORE_OK);
  assert_int_not_equal(p[1]->w.status, STORE_OK);
  assert_int_equal(p[2]->w.status, STORE_OK);
  for (int i = 0; i < 3; i++) pending_free(p[i]);
  struct store_audit_page none = audit_by_key(bad_who.key_id);
  assert_int_equal(none.count, 0);
  free(none.items);
  struct store_audit_page got = audit_by_key(who.key_id);
  assert_int_equal(got.count, 2);
  check_entry(&got.items[0], AUDIT_WEBHOOK_ACCEPTED, a, AUDIT_OK, &who);
  check_entry(&got.items[1], AUDIT_WEBHOOK_ACCEPTED, b, AUDIT_OK, &who);
  assert_int_equal(got.items[1].id, got.items[0].id + 1);
  assert_int_equal(audit_head_id(), got.items[1].id);
  free(got.items);
  assert_chain_whole();
  close(fd);
  free(ev);
  free(ba);
  free(bb);
}

/* Retention's entries are those of the conversations it erases: events and audio of no
 * conversation go without one. A redelivery's entry is dated when it was accepted again, not
 * at its first delivery's processedAt. */
static void test_audit_retention_orphans_and_redelivery_time(void **state) {
  (void)state;
  char tag[16], lone[64], id[64];
  new_tag(tag);
  snprintf(lone, sizeof lone, "au-lone-%s", tag);
  snprintf(id, sizeof id, "au-again-%s", tag);
  struct audit_who who = who_of(tag, "o");
  const int64_t day = 86400LL * 1000000LL, now = (int64_t)time(NULL) * 1000000LL;
  char *ev = event_json("post_call_transcription", lone, NULL);
  (void)submit_ok(event_new(lone, "post_call_transcription", ev, NULL));
  int fd = audio_file(100, 9);
  (void)put_audio(lone, fd, 100, NULL);
  close(fd);
  age("events", "received_at_us", lone, now - 2000 * day);
  age("audio_meta", "received_at_us", lone, now - 2000 * day);
  while (retain_ok(now - 1900 * day, 10) > 0) {
  }
  assert_int_equal(rows_of(lone), 0);
  struct store_audit_filter f = {.action = AUDIT_CONVERSATION_ERASED, .target = lone, .limit = 10};
  expect_ids(&f, NULL, 0);

  char *body = conv_body(id, "au@example.com", "acc", 1, NULL);
  struct pending *p = pending_new(body);
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_OK);
  pending_free(p);
  age("conversations", "processed_at_us", id, now - 10 * day); /* as if delivered long ago */
  int64_t before = time_now_us();
  p = pending_new(body);
  p->w.who = who;
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_OK);
  assert_true(p->w.duplicate);
  pending_free(p);
  struct store_audit_page got = audit_by_key(who.key_id);
  assert_int_equal(got.count, 1);
  check_entry(&got.items[0], AUDIT_WEBHOOK_ACCEPTED, id, AUDIT_OK, &who);
  assert_true(got.items[0].at_us >= before && got.items[0].at_us <= time_now_us() + 1000000);
  free(got.items);
  free(ev);
  free(body);
}

/* An audio event delivered again is audited as accepted again, dated when accepted again
 * (PostgreSQL recognises it before its batch, without sending the audio again: it still rides
 * the batch for its entry). */
static void test_audit_audio_redelivery_is_audited(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "au-audio-%s", tag);
  struct audit_who who = who_of(tag, "a2");
  const int64_t len = STORE_AUDIO_CHUNK_BYTES + 7;
  int fd = audio_file(len, 12);
  char *ev = event_json("post_call_audio", id, NULL);
  int64_t before[2];
  for (int i = 0; i < 2; i++) {
    struct pending *p = event_new(id, "post_call_audio", ev, NULL);
    p->w.audio_fd = fd;
    p->w.audio_len = len;
    p->w.event_audio_at = 10;
    p->w.who = who;
    before[i] = time_now_us();
    struct version v = submit_ok(p);
    assert_int_equal(v.duplicate, i == 1);
  }
  struct store_audit_page got = audit_by_key(who.key_id);
  assert_int_equal(got.count, 2);
  for (size_t i = 0; i < 2; i++) {
    check_entry(&got.items[i], AUDIT_WEBHOOK_ACCEPTED, id, AUDIT_OK, &who);
    assert_true(got.items[i].at_us >= before[i]);
  }
  free(got.items);
  check_range(id, 0, (size_t)len, len, 12);
  close(fd);
  free(ev);
}

/* An audit write holding an entry without a name (a caller's bug) fails alone; the
 * writes beside it keep their entries, the chain stays whole. */
static void test_audit_unnamed_entry_fails_alone(void **state) {
  (void)state;
  char tag[16];
  new_tag(tag);
  struct audit_who who = who_of(tag, "u");
  struct audit_entry a[1], bad[2], c[1];
  struct pending *p[3] = {audit_new(a, 1, tag, &who), audit_new(bad, 2, tag, &who),
                          audit_new(c, 1, tag, &who)};
  bad[1].action = AUDIT_ACTION_COUNT;
  int64_t h0 = audit_head_id();
  for (int i = 0; i < 3; i++) store_submit(B->store, &p[i]->w);
  for (int i = 0; i < 3; i++) wait_done(p[i]);
  assert_int_equal(p[0]->w.status, STORE_OK);
  assert_int_equal(p[1]->w.status, STORE_HARD);
  assert_int_equal(p[2]->w.status, STORE_OK);
  assert_int_equal(a[0].id, h0 + 1);
  assert_int_equal(c[0].id, h0 + 2);
  assert_int_equal(audit_head_id(), h0 + 2);
  for (int i = 0; i < 3; i++) pending_free(p[i]);
  assert_chain_whole();
}

/* The chain's head removed by hand: appends stop (unavailable until repaired, never a chain
 * started again from entry 1 beside the old one) and nothing of the write is stored; put back,
 * they go on. */
static void test_audit_head_removed_stops_appends(void **state) {
  (void)state;
  char tag[16], sql[256];
  new_tag(tag);
  struct audit_who who = who_of(tag, "hd");
  int64_t h0 = audit_head_id();
  snprintf(sql, sizeof sql, "CREATE TABLE head_aside_%s AS SELECT * FROM audit_head", tag);
  (void)direct_sql(sql);
  (void)direct_sql("DELETE FROM audit_head");
  struct audit_entry e[1];
  struct pending *p = audit_new(e, 1, tag, &who);
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_RETRY);
  pending_free(p);
  assert_int_equal(direct_sql("SELECT COUNT(*) FROM audit_log WHERE id > 0 AND target IS NOT NULL "
                              "AND request_id LIKE 'req-hd-%'"),
                   0);
  snprintf(sql, sizeof sql, "INSERT INTO audit_head SELECT * FROM head_aside_%s", tag);
  (void)direct_sql(sql);
  snprintf(sql, sizeof sql, "DROP TABLE head_aside_%s", tag);
  (void)direct_sql(sql);
  p = audit_new(e, 1, tag, &who);
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_OK);
  assert_int_equal(e[0].id, h0 + 1);
  pending_free(p);
  assert_chain_whole();
}

/* Entries are not appended in time order (a read's entry trails its answer, a batch of them
 * carries their own times): since/until find each entry by its own time, whatever came before
 * or after it in the chain. */
static void test_audit_time_filter_out_of_order(void **state) {
  (void)state;
  char tag[16];
  new_tag(tag);
  struct audit_who who = who_of(tag, "t");
  struct audit_entry e[4];
  struct pending *p = audit_new(e, 4, tag, &who);
  const int64_t t = time_now_us() + 60000000; /* after every entry so far */
  const int64_t at[4] = {t + 5000, t + 1000, t + 9000, t + 3000};
  for (int i = 0; i < 4; i++) e[i].at_us = at[i];
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_OK);
  int64_t id0 = e[0].id;
  struct store_audit_filter f = {
      .action = -1, .since_us = t + 1000, .until_us = t + 6000, .limit = 100};
  expect_ids(&f, (int64_t[]){id0, id0 + 1, id0 + 3}, 3);
  f.newest_first = true;
  expect_ids(&f, (int64_t[]){id0 + 3, id0 + 1, id0}, 3);
  f = (struct store_audit_filter){
      .action = -1, .since_us = t + 2000, .key_id = who.key_id, .limit = 100};
  expect_ids(&f, (int64_t[]){id0, id0 + 2, id0 + 3}, 3);
  f.since_us = t + 9001;
  expect_ids(&f, NULL, 0);
  f = (struct store_audit_filter){
      .action = -1, .until_us = t + 1001, .key_id = who.key_id, .limit = 100};
  expect_ids(&f, (int64_t[]){id0 + 1}, 1);
  pending_free(p);
}

/* `audit verify` finds an entry edited by hand, and the newest entry removed (the head still
 * names it); both restored, the chain is whole again. */
static void test_audit_verify_finds_hand_edits(void **state) {
  (void)state;
  char tag[16], sql[512];
  new_tag(tag);
  struct audit_who who = who_of(tag, "v");
  struct audit_entry e[3];
  struct pending *p = audit_new(e, 3, tag, &who);
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_OK);
  assert_chain_whole();
  struct audit_verify_result r;
  snprintf(sql, sizeof sql, "UPDATE audit_log SET target = 'edited' WHERE id = %lld",
           (long long)e[1].id);
  (void)direct_sql(sql);
  assert_int_equal(audit_chain_verify(B->store, &r), STORE_OK);
  assert_int_equal(r.first_bad, e[1].id);
  snprintf(sql, sizeof sql, "UPDATE audit_log SET target = '%s' WHERE id = %lld", e[1].target,
           (long long)e[1].id);
  (void)direct_sql(sql);
  assert_chain_whole();
  /* the newest entry removed: its row copied aside, deleted, put back */
  snprintf(sql, sizeof sql,
           "CREATE TABLE audit_aside_%s AS SELECT * FROM audit_log WHERE id = %lld", tag,
           (long long)e[2].id);
  (void)direct_sql(sql);
  snprintf(sql, sizeof sql, "DELETE FROM audit_log WHERE id = %lld", (long long)e[2].id);
  (void)direct_sql(sql);
  assert_int_equal(audit_chain_verify(B->store, &r), STORE_OK);
  assert_int_equal(r.first_bad, e[2].id);
  snprintf(sql, sizeof sql, "INSERT INTO audit_log SELECT * FROM audit_aside_%s", tag);
  (void)direct_sql(sql);
  snprintf(sql, sizeof sql, "DROP TABLE audit_aside_%s", tag);
  (void)direct_sql(sql);
  assert_chain_whole();
  pending_free(p);
}

/* PostgreSQL computes the entries' content and hashes in SQL (migration 0006): byte for byte
 * model/audit.c's, for multi-byte text, null texts, fields at their maximum length and
 * negative numbers. */
static void test_audit_pg_content_is_the_c_content(void **state) {
  (void)state;
  struct audit_entry e;
  memset(&e, 0, sizeof e);
  e.id = 123456789012345;
  e.at_us = -1;
  e.count = 7;
  snprintf(e.who.request_id, sizeof e.who.request_id,
           "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8e\x99 'q'");
  memset(e.who.key_id, 'k', AUDIT_KEY_ID_MAX);
  e.action = AUDIT_KEY_REVOKED;
  memset(e.target, 't', AUDIT_TARGET_MAX);
  e.outcome = AUDIT_EXPIRED;
  unsigned char c[AUDIT_CONTENT_MAX];
  size_t n = audit_entry_content(&e, c);
  char hex[2 * AUDIT_CONTENT_MAX + 1];
  for (size_t i = 0; i < n; i++) snprintf(hex + 2 * i, 3, "%02x", c[i]);
  PGconn *conn = PQconnectdb(B->url);
  assert_int_equal(PQstatus(conn), CONNECTION_OK);
  char at[24], id[24], count[24];
  snprintf(id, sizeof id, "%lld", (long long)e.id);
  snprintf(at, sizeof at, "%lld", (long long)e.at_us);
  snprintf(count, sizeof count, "%lld", (long long)e.count);
  const char *vals[9] = {id,
                         at,
                         count,
                         e.who.request_id,
                         e.who.key_id,
                         NULL,
                         audit_action_name(e.action),
                         e.target,
                         audit_outcome_name(e.outcome)};
  PGresult *r = PQexecParams(conn,
                             "SELECT encode(gensendrep_audit_content($1, $2, $3, $4, $5, $6, $7, "
                             "$8, $9), 'hex')",
                             9, NULL, vals, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) fail_msg("postgres: %s", PQerrorMessage(conn));
  assert_string_equal(PQgetvalue(r, 0, 0), hex);
  PQclear(r);
  PQfinish(conn);
  /* and appended through the writer, the chain verifies in C */
  struct pending *p = calloc(1, sizeof *p);
  assert_non_null(p);
  e.id = 0;
  e.at_us = 1700000000000001;
  p->w.kind = STORE_WRITE_AUDIT;
  p->w.audit_entries = &e;
  p->w.audit_count = 1;
  p->w.done = on_done;
  p->w.done_cls = p;
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_OK);
  pending_free(p);
  assert_chain_whole();
}

/* Two store instances on one database (two services sharing PostgreSQL) appending at once keep
 * one unbroken chain: every entry once, ids consecutive, every link whole. */
#ifndef CONCURRENT_WRITES
#define CONCURRENT_WRITES 120
#endif
static void test_audit_two_instances_one_chain(void **state) {
  (void)state;
  char err[512] = "";
  struct store *other = store_open(B->url, err, sizeof err);
  if (!other) fail_msg("second instance: %s", err);
  char tag[16];
  new_tag(tag);
  struct audit_who who = who_of(tag, "c");
  /* conversations erased while they append: entries decided inside the batch's transaction */
  char erased[CONCURRENT_WRITES / 10 + 1][64];
  for (int i = 0; i < CONCURRENT_WRITES / 10 + 1; i++) {
    snprintf(erased[i], sizeof erased[i], "cc-erased-%d-%s", i, tag);
    (void)put_conv(erased[i], "cc@example.com", "acc");
  }
  int64_t h0 = audit_head_id();
  struct pending *p[CONCURRENT_WRITES];
  struct audit_entry(*entries)[2] = calloc(CONCURRENT_WRITES, sizeof *entries);
  char **bodies = calloc(CONCURRENT_WRITES, sizeof *bodies);
  assert_non_null(entries);
  assert_non_null(bodies);
  for (int i = 0; i < CONCURRENT_WRITES; i++) {
    if (i % 10 == 5) {
      p[i] = erase_new(erased[i / 10]);
      p[i]->w.who = who;
    } else if (i % 3 == 0) {
      char id[64];
      snprintf(id, sizeof id, "cc-%d-%s", i, tag);
      bodies[i] = conv_body(id, "cc@example.com", "acc", 1, NULL);
      p[i] = pending_new(bodies[i]);
      p[i]->w.who = who;
    } else {
      p[i] = audit_new(entries[i], 2, tag, &who);
    }
  }
  for (int i = 0; i < CONCURRENT_WRITES; i++) store_submit(i % 2 ? other : B->store, &p[i]->w);
  /* verified while they append: entries committed after its last page are not "removed" */
  for (int i = 0; i < 3; i++) assert_chain_whole();
  int64_t expected = 0;
  for (int i = 0; i < CONCURRENT_WRITES; i++) {
    wait_done(p[i]);
    assert_int_equal(p[i]->w.status, STORE_OK);
    expected += i % 10 == 5 || i % 3 == 0 ? 1 : 2;
    if (i % 10 == 5) assert_true(p[i]->w.erased > 0);
    if (i % 10 != 5 && i % 3) {
      assert_true(entries[i][0].id > h0);
      assert_int_equal(entries[i][1].id, entries[i][0].id + 1);
    }
  }
  store_close(other);
  struct store_audit_page page = {.items = calloc((size_t)expected + 1, sizeof *page.items)};
  assert_non_null(page.items);
  for (;;) { /* pages of at most 1000 */
    struct store_audit_page more = audit_after(h0 + (int64_t)page.count);
    assert_true(page.count + more.count <= (size_t)expected);
    if (more.count) memcpy(page.items + page.count, more.items, more.count * sizeof *more.items);
    page.count += more.count;
    free(more.items);
    if (more.count < 1000) break;
  }
  assert_int_equal(page.count, expected);
  int64_t erasures = 0, erased_entries = 0;
  for (int i = 0; i < CONCURRENT_WRITES; i++) erasures += i % 10 == 5;
  for (size_t i = 0; i < page.count; i++) {
    assert_int_equal(page.items[i].id, h0 + 1 + (int64_t)i);
    erased_entries += page.items[i].action == AUDIT_CONVERSATION_ERASED &&
                      strncmp(page.items[i].target, "cc-erased-", 10) == 0;
  }
  assert_int_equal(erased_entries, erasures);
  /* every AUDIT write's ids are the entries the log holds under them */
  for (int i = 0; i < CONCURRENT_WRITES; i++) {
    if (i % 10 == 5 || i % 3 == 0) continue;
    const struct audit_entry *got = &page.items[entries[i][0].id - h0 - 1];
    assert_string_equal(got->target, entries[i][0].target);
    assert_memory_equal(got->hash, entries[i][0].hash, AUDIT_HASH_LEN);
  }
  free(page.items);
  assert_int_equal(audit_head_id(), h0 + expected);
  assert_chain_whole();
  for (int i = 0; i < CONCURRENT_WRITES; i++) {
    pending_free(p[i]);
    free(bodies[i]);
  }
  free(bodies);
  free(entries);
}

/* ---------- encryption at rest (a ring set: the "sealed" groups) ----------
 * The group's store seals with key k1 (RING_K1). These tests open more stores on the same
 * database: one without a ring (rows written before encryption was switched on), others with
 * rings that must be refused, and a rotation to k2. */

#define KEY_K1 "k1:ERERERERERERERERERERERERERERERERERERERERERE="
#define KEY_K2 "k2:IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI="
#define KEY_K1_OTHER "k1:MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=" /* same id, other bytes */
#define KEY_K8 "k8:REREREREREREREREREREREREREREREREREREREREREQ="
#define KEY_K9 "k9:mZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZk="
#define RING_K1 KEY_K1

static struct seal_ring *ring_of(const char *text) {
  char err[256] = "";
  struct seal_ring *r = seal_ring_parse(text, err, sizeof err);
  if (!r) fail_msg("ring %s: %s", text, err);
  return r;
}

/* Another store on the group's database; with_ring false: set_ring is not called (a store as
 * it was before encryption). */
static struct store *open_other(const struct seal_ring *ring, bool with_ring) {
  char err[512] = "";
  struct store *s = store_open(B->url, err, sizeof err);
  if (!s) fail_msg("opening another store: %s", err);
  if (with_ring && store_set_ring(s, ring, err, sizeof err) != STORE_OK)
    fail_msg("set_ring: %s", err);
  return s;
}

/* Runs fn's writes and reads against s instead of the group's store. */
static struct store *use_store(struct store *s) {
  struct store *saved = B->store;
  B->store = s;
  return saved;
}

static int64_t count_where(const char *table, const char *cond) {
  char sql[1024];
  snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s WHERE %s", table, cond);
  return direct_sql(sql);
}

static void test_sealed_rows_round_trip(void **state) {
  (void)state;
  char tag[16], id[64], email[64], account[64];
  new_tag(tag);
  snprintf(id, sizeof id, "seal-%s", tag);
  snprintf(email, sizeof email, "%s@example.com", tag);
  snprintf(account, sizeof account, "acc-%s", tag);
  char *body = conv_body(id, email, account, 3, NULL);
  struct version v = put_ok(body);
  const int64_t len = STORE_AUDIO_CHUNK_BYTES + 1000;
  int fd = audio_file(len, 7);
  (void)put_audio(id, fd, len, NULL);
  close(fd);
  /* Stored sealed: no plaintext email or account, every sealable row names its key. */
  char cond[512];
  snprintf(cond, sizeof cond,
           "conversation_id = '%s' AND sealed_with = 'k1' AND email_sealed IS NOT NULL AND "
           "account_sealed IS NOT NULL AND email_id <> '%s' AND account_id <> '%s'",
           id, email, account);
  assert_int_equal(count_where("conversations", cond), 1);
  snprintf(cond, sizeof cond, "conversation_id = '%s' AND sealed_with IS NULL", id);
  assert_int_equal(count_where("deliveries", cond), 0);
  assert_int_equal(count_where("events", cond), 0);
  assert_int_equal(count_where("audio_chunks", cond), 0);
  snprintf(cond, sizeof cond, "conversation_id = '%s' AND sealed_with = 'k1'", id);
  assert_int_equal(count_where("audio_chunks", cond), 2);
  /* Read back whole. */
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, true, &c), STORE_OK);
  assert_string_equal(c.email_id, email);
  assert_string_equal(c.account_id, account);
  assert_string_equal(c.webhook_id, v.webhook_id);
  assert_int_equal(c.body_len, strlen(body));
  assert_memory_equal(c.body, body, c.body_len);
  assert_int_equal(c.audio_bytes, len);
  free(c.body);
  check_count(email, NULL, NULL, 1);
  check_count(NULL, account, NULL, 1);
  check_count(email, account, "completed", 1);
  /* Audio in ranges: within the first chunk, across the boundary, the tail. */
  check_range(id, 0, 10, len, 7);
  check_range(id, STORE_AUDIO_CHUNK_BYTES - 5, 10, len, 7);
  check_range(id, len - 3, 100, len, 7);
  check_range(id, 0, (size_t)len, len, 7);
  struct store_events evs;
  assert_int_equal(store_events(B->store, id, &evs), STORE_OK);
  assert_int_equal(evs.count, 1);
  char *ev = event_json("post_call_audio", id, NULL);
  assert_int_equal(evs.items[0].body_len, strlen(ev));
  assert_memory_equal(evs.items[0].body, ev, strlen(ev));
  store_events_free(&evs);
  free(ev);
  free(body);
}

/* An id that would pass for a blind index is refused (the client's fault), alone. */
static void test_index_lookalike_ids_are_refused(void **state) {
  (void)state;
  char tag[16], id[64], email[64];
  new_tag(tag);
  snprintf(id, sizeof id, "look-%s", tag);
  snprintf(email, sizeof email, "\x01%s", tag);
  char *body = conv_body(id, "e@example.com", "acc", 1, NULL);
  struct pending *p = pending_new(body);
  p->in.email_id = email;
  store_submit(B->store, &p->w);
  wait_done(p);
  assert_int_equal(p->w.status, STORE_CLIENT);
  pending_free(p);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, false, &c), STORE_NOT_FOUND);
  /* A filter by such a value matches nothing. */
  char index_like[64];
  snprintf(index_like, sizeof index_like, "\x01%032d", 0);
  check_count(index_like, NULL, NULL, 0);
  free(body);
}

static void test_filters_find_plaintext_and_sealed_rows(void **state) {
  (void)state;
  char tag[16], email[64], a1[32], a2[32], plain_id[64], sealed_id[64], other[64];
  new_tag(tag);
  snprintf(email, sizeof email, "mix-%s@example.com", tag);
  snprintf(a1, sizeof a1, "a1-%s", tag);
  snprintf(a2, sizeof a2, "a2-%s", tag);
  snprintf(plain_id, sizeof plain_id, "plain-%s", tag);
  snprintf(sealed_id, sizeof sealed_id, "sealed-%s", tag);
  snprintf(other, sizeof other, "other-%s", tag);
  /* A row written before encryption was on, by a store without a ring. */
  struct store *plain = open_other(NULL, false);
  struct store *saved = use_store(plain);
  (void)put_conv(plain_id, email, a1);
  B->store = saved;
  (void)put_conv(sealed_id, email, a2);
  (void)put_conv(other, "someone-else@example.com", a2);
  char cond[160];
  snprintf(cond, sizeof cond, "conversation_id = '%s' AND sealed_with IS NULL", plain_id);
  assert_int_equal(count_where("conversations", cond), 1);
  check_count(email, NULL, NULL, 2);
  check_count(NULL, a1, NULL, 1);
  check_count(NULL, a2, NULL, 2);
  check_count(email, a2, NULL, 1);
  check_count(email, a1, "completed", 1);
  /* An account-bound key's accounts. */
  const char *bound[2] = {a1, a2};
  struct store_filter f = filter(email, NULL, NULL, 1, 100);
  f.accounts = bound;
  f.naccounts = 2;
  struct store_page page;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.total, 2);
  store_page_free(&page);
  f.naccounts = 1; /* a1 only: the plaintext row */
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.total, 1);
  assert_string_equal(page.items[0].conversation_id, plain_id);
  assert_string_equal(page.items[0].account_id, a1);
  store_page_free(&page);
  bound[0] = a2;
  f.email_id = NULL;
  assert_int_equal(store_list(B->store, &f, &page), STORE_OK);
  assert_int_equal(page.total, 2); /* sealed_id and other */
  store_page_free(&page);
  /* A store without the ring reads plaintext rows, and fails (never garbage) on sealed ones. */
  struct store_conversation c;
  assert_int_equal(store_get(plain, plain_id, true, &c), STORE_OK);
  assert_string_equal(c.email_id, email);
  free(c.body);
  assert_int_equal(store_get(plain, sealed_id, false, &c), STORE_HARD);
  store_close(plain);
}

/* A sealed value copied by hand to another row does not open there: an error, not its data. */
static void test_moved_values_do_not_open(void **state) {
  (void)state;
  char tag[16], x[64], y[64], sql[1024];
  new_tag(tag);
  snprintf(x, sizeof x, "mx-%s", tag);
  snprintf(y, sizeof y, "my-%s", tag);
  struct version vx = put_conv(x, "x@example.com", "acc-x");
  struct version vy = put_conv(y, "y@example.com", "acc-y");
  const int64_t len = STORE_AUDIO_CHUNK_BYTES + 10;
  int fd = audio_file(len, 3);
  (void)put_audio(x, fd, len, NULL);
  close(fd);
  /* y's body replaced by x's */
  snprintf(sql, sizeof sql,
           "UPDATE deliveries SET body = (SELECT body FROM deliveries WHERE webhook_id = '%s') "
           "WHERE webhook_id = '%s'",
           vx.webhook_id, vy.webhook_id);
  (void)direct_sql(sql);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, y, false, &c), STORE_OK); /* the row itself is intact */
  assert_int_equal(store_get(B->store, y, true, &c), STORE_HARD);
  /* y's email replaced by x's */
  snprintf(sql, sizeof sql,
           "UPDATE conversations SET email_sealed = (SELECT email_sealed FROM conversations "
           "WHERE conversation_id = '%s') WHERE conversation_id = '%s'",
           x, y);
  (void)direct_sql(sql);
  assert_int_equal(store_get(B->store, y, false, &c), STORE_HARD);
  /* x's audio chunks swapped */
  check_range(x, 0, 10, len, 3);
  snprintf(sql, sizeof sql,
           "UPDATE audio_chunks SET data = (SELECT data FROM audio_chunks "
           "WHERE conversation_id = '%s' AND seq = 1) WHERE conversation_id = '%s' AND seq = 0",
           x, x);
  (void)direct_sql(sql);
  size_t got;
  int64_t total;
  unsigned char buf[16];
  assert_int_equal(store_audio_read(B->store, x, 0, buf, sizeof buf, &got, &total), STORE_HARD);
  assert_int_equal(got, 0);
  /* an event body moved to another event */
  snprintf(sql, sizeof sql,
           "UPDATE events SET body = (SELECT body FROM events WHERE conversation_id = '%s') "
           "WHERE conversation_id = '%s'",
           x, x);
  (void)direct_sql(sql); /* its own: still opens */
  struct store_events evs;
  assert_int_equal(store_events(B->store, x, &evs), STORE_OK);
  store_events_free(&evs);
  char *ev = event_json("some_type", y, NULL);
  (void)submit_ok(event_new(y, "some_type", ev, NULL));
  free(ev);
  snprintf(sql, sizeof sql,
           "UPDATE events SET body = (SELECT body FROM events WHERE conversation_id = '%s') "
           "WHERE conversation_id = '%s'",
           x, y);
  (void)direct_sql(sql);
  assert_int_equal(store_events(B->store, y, &evs), STORE_HARD);
  assert_int_equal(evs.count, 0);
  /* Erasure takes sealed rows, opened or not. */
  assert_true(erase_ok(x) > 0);
  assert_true(erase_ok(y) > 0);
  assert_int_equal(rows_of(x) + rows_of(y), 0);
}

/* Runs reencrypt's writes on s (rows per write: limit) until every table is walked; returns the
 * final write's reseal_left. */
static int64_t reseal_to_end(struct store *s, int64_t limit) {
  struct store_write w;
  memset(&w, 0, sizeof w);
  struct store *saved = use_store(s);
  int rounds = 0;
  do {
    w.kind = STORE_WRITE_RESEAL;
    w.reseal_limit = limit;
    assert_int_equal(key_write(&w), STORE_OK);
    assert_true(++rounds < 100000);
  } while (w.reseal_pos[0]);
  B->store = saved;
  return w.reseal_left;
}

/* A key is never retired while an instance seals with it: the writer records its key in every
 * batch, so a reencrypt's retirement (or one racing it) is undone by the next sealed write, and a
 * start without that key stays refused. A reencrypt whose walk is overtaken by rows sealed with
 * another key says so (reseal_left) and retires nothing. */
static void test_keys_retire_only_after_a_full_reencrypt(void **state) {
  (void)state;
  char tag[16], x[64], z[64];
  new_tag(tag);
  snprintf(x, sizeof x, "kx-%s", tag);
  snprintf(z, sizeof z, "kz-%s", tag);
  /* k9 sealed a row in the refusal test: both rings hold it (the first pass retires it) */
  struct seal_ring *k8_first = ring_of(KEY_K8 "," KEY_K1 "," KEY_K9);
  struct seal_ring *k1_first = ring_of(KEY_K1 "," KEY_K8 "," KEY_K9);
  struct seal_ring *only_k1 = ring_of(KEY_K1);
  struct store *s8 = open_other(k8_first, true); /* an instance sealing with k8 */
  struct store *r = open_other(k1_first, true);  /* reencrypt to k1 */
  assert_int_equal(reseal_to_end(r, 1000), 0);
  assert_int_equal(count_where("seal_keys", "key_id = 'k8'"), 0); /* retired */
  struct store *saved = use_store(s8);
  (void)put_conv(x, "x@example.com", "acc-x"); /* sealed with k8: recorded again */
  int fd = audio_file(3 * STORE_AUDIO_CHUNK_BYTES, 7);
  (void)put_audio(x, fd, 3 * STORE_AUDIO_CHUNK_BYTES, NULL);
  close(fd);
  B->store = saved;
  assert_int_equal(count_where("seal_keys", "key_id = 'k8'"), 1);
  char err[512] = "";
  struct store *refused = open_other(NULL, false);
  assert_int_equal(store_set_ring(refused, only_k1, err, sizeof err), STORE_HARD);
  assert_non_null(strstr(err, "k8"));
  assert_int_equal(store_set_ring(refused, NULL, err, sizeof err), STORE_HARD);
  store_close(refused);
  /* a walk overtaken: once it reaches the audio chunks, s8 seals a conversation behind it */
  struct store_write w;
  memset(&w, 0, sizeof w);
  bool overtaken = false;
  int rounds = 0;
  do {
    w.kind = STORE_WRITE_RESEAL;
    w.reseal_limit = 1;
    saved = use_store(r);
    assert_int_equal(key_write(&w), STORE_OK);
    B->store = saved;
    if (!overtaken && (w.reseal_pos[0] == '3' || w.reseal_pos[0] == 'a')) {
      saved = use_store(s8);
      (void)put_conv(z, "z@example.com", "acc-z");
      B->store = saved;
      overtaken = true;
    }
    assert_true(++rounds < 100000);
  } while (w.reseal_pos[0]);
  assert_true(overtaken);
  assert_true(w.reseal_left != 0);
  assert_int_equal(count_where("seal_keys", "key_id = 'k8'"), 1); /* not retired */
  store_close(s8);
  /* the next full pass moves it and retires k8; k1 alone starts and reads it all */
  assert_int_equal(reseal_to_end(r, 1000), 0);
  store_close(r);
  assert_int_equal(count_where("seal_keys", "key_id = 'k8'"), 0);
  struct store *k1 = open_other(only_k1, true);
  struct store_conversation c;
  assert_int_equal(store_get(k1, z, true, &c), STORE_OK);
  assert_string_equal(c.email_id, "z@example.com");
  free(c.body);
  store_close(k1);
  assert_true(erase_ok(x) > 0);
  assert_true(erase_ok(z) > 0);
  seal_ring_free(k8_first);
  seal_ring_free(k1_first);
  seal_ring_free(only_k1);
}

/* Creates an API key (id from the random source) bound to account; its id into id. */
static void put_bound_key(const char *account, char id[APIKEY_ID_LEN + 1]) {
  struct apikey_record k;
  memset(&k, 0, sizeof k);
  assert_true(crypto_random_hex(k.id, sizeof k.id, APIKEY_ID_LEN / 2));
  snprintf(k.name, sizeof k.name, "bound %s", k.id);
  k.scopes = APIKEY_SCOPE_READ;
  assert_true(apikey_add_account(&k, account));
  memset(k.secret_sha256, 0xcd, 32);
  k.created_us = 1700000000000000;
  struct store_write w = {.kind = STORE_WRITE_KEY_CREATE, .key = &k};
  assert_int_equal(key_write(&w), STORE_OK);
  snprintf(id, APIKEY_ID_LEN + 1, "%s", k.id);
}

/* With a ring a key's bound account ids are sealed (with the key id as associated data): not in
 * api_keys.accounts, read back whole, and a sealed value copied to another key does not open. */
static void test_key_accounts_are_sealed(void **state) {
  (void)state;
  char tag[16], acct[64], other[64], a[APIKEY_ID_LEN + 1], b[APIKEY_ID_LEN + 1], sql[512];
  new_tag(tag);
  snprintf(acct, sizeof acct, "bound-acct-%s", tag);
  snprintf(other, sizeof other, "other-acct-%s", tag);
  put_bound_key(acct, a);
  put_bound_key(other, b);
  struct apikey_record got;
  assert_int_equal(store_key_get(B->store, a, &got), STORE_OK);
  assert_int_equal(got.naccounts, 1);
  assert_string_equal(got.accounts[0], acct);
  snprintf(sql, sizeof sql, "id = '%s' AND accounts = '' AND accounts_sealed IS NOT NULL", a);
  assert_int_equal(count_where("api_keys", sql), 1);
  snprintf(sql, sizeof sql, "accounts LIKE '%%%s%%'", tag);
  assert_int_equal(count_where("api_keys", sql), 0);
  snprintf(sql, sizeof sql,
           "UPDATE api_keys SET accounts_sealed = (SELECT accounts_sealed FROM api_keys "
           "WHERE id = '%s') WHERE id = '%s'",
           a, b);
  (void)direct_sql(sql);
  assert_int_equal(store_key_get(B->store, b, &got), STORE_HARD);
  snprintf(sql, sizeof sql, "DELETE FROM api_keys WHERE id = '%s'", b);
  (void)direct_sql(sql);
}

/* The reviewer's reproduction: a conversation re-pointed by hand at another one's delivery
 * (delivery_id and webhook_id), that delivery's conversation_id edited too, or another
 * conversation's event rows moved to it, is an error, never the other conversation's text. */
static void test_relinked_rows_do_not_open(void **state) {
  (void)state;
  char tag[16], a[64], b[64], sql[1024];
  new_tag(tag);
  snprintf(a, sizeof a, "la-%s", tag);
  snprintf(b, sizeof b, "lb-%s", tag);
  struct version va = put_conv(a, "a@example.com", "acc-a");
  struct version vb = put_conv(b, "b@example.com", "acc-b");
  snprintf(sql, sizeof sql, "SELECT delivery_id FROM conversations WHERE conversation_id = '%s'",
           a);
  int64_t da = direct_sql(sql);
  snprintf(sql, sizeof sql, "SELECT delivery_id FROM conversations WHERE conversation_id = '%s'",
           b);
  int64_t db = direct_sql(sql);
  assert_true(da > 0 && db > 0 && da != db);
  snprintf(sql, sizeof sql,
           "UPDATE conversations SET delivery_id = %lld, webhook_id = '%s' "
           "WHERE conversation_id = '%s'",
           (long long)db, vb.webhook_id, a);
  (void)direct_sql(sql);
  struct store_conversation c;
  memset(&c, 0, sizeof c);
  assert_int_equal(store_get(B->store, a, true, &c), STORE_HARD);
  assert_null(c.body);
  /* the delivery's own conversation column edited as well */
  snprintf(sql, sizeof sql, "UPDATE deliveries SET conversation_id = '%s' WHERE id = %lld", a,
           (long long)db);
  (void)direct_sql(sql);
  memset(&c, 0, sizeof c);
  assert_int_equal(store_get(B->store, a, true, &c), STORE_HARD);
  assert_null(c.body);
  /* put back: both read their own again */
  snprintf(sql, sizeof sql, "UPDATE deliveries SET conversation_id = '%s' WHERE id = %lld", b,
           (long long)db);
  (void)direct_sql(sql);
  snprintf(sql, sizeof sql,
           "UPDATE conversations SET delivery_id = %lld, webhook_id = '%s' "
           "WHERE conversation_id = '%s'",
           (long long)da, va.webhook_id, a);
  (void)direct_sql(sql);
  assert_int_equal(store_get(B->store, a, true, &c), STORE_OK);
  assert_non_null(strstr(c.body, a));
  free(c.body);
  assert_int_equal(store_get(B->store, b, true, &c), STORE_OK);
  assert_non_null(strstr(c.body, b));
  free(c.body);
  /* b's event moved to a */
  char *eva = event_json("some_type", a, "\"note\":\"event of a\"");
  char *evb = event_json("some_type", b, "\"note\":\"event of b\"");
  (void)submit_ok(event_new(a, "some_type", eva, NULL));
  struct version veb = submit_ok(event_new(b, "some_type", evb, NULL));
  snprintf(sql, sizeof sql, "UPDATE events SET conversation_id = '%s' WHERE conversation_id = '%s'",
           a, b);
  (void)direct_sql(sql);
  struct store_events evs;
  assert_int_equal(store_events(B->store, a, &evs), STORE_HARD);
  assert_int_equal(evs.count, 0);
  assert_int_equal(store_events(B->store, b, &evs), STORE_OK);
  assert_int_equal(evs.count, 0);
  store_events_free(&evs);
  snprintf(sql, sizeof sql, "UPDATE events SET conversation_id = '%s' WHERE webhook_id = '%s'", b,
           veb.webhook_id);
  (void)direct_sql(sql);
  assert_int_equal(store_events(B->store, a, &evs), STORE_OK);
  assert_int_equal(evs.count, 1);
  store_events_free(&evs);
  free(eva);
  free(evb);
  assert_true(erase_ok(a) > 0);
  assert_true(erase_ok(b) > 0);
  assert_int_equal(rows_of(a) + rows_of(b), 0);
}

/* A failure reason is sealed with its conversation's id: it reads back, and one copied by hand
 * to another conversation does not open there. */
static void test_failure_reason_is_sealed(void **state) {
  (void)state;
  char tag[16], f[64], g[64], reason[96], other[96], sql[1024];
  new_tag(tag);
  snprintf(f, sizeof f, "ff-%s", tag);
  snprintf(g, sizeof g, "fg-%s", tag);
  snprintf(reason, sizeof reason, "callee busy %s", tag);
  snprintf(other, sizeof other, "no answer %s", tag);
  const char *ids[2] = {f, g}, *reasons[2] = {reason, other};
  for (int i = 0; i < 2; i++) {
    char *seed = conv_body(ids[i], "f@example.com", "acc-f", 1, NULL);
    char *ev = event_json("call_initiation_failure", ids[i], NULL);
    struct pending *p = event_new(ids[i], "call_initiation_failure", ev, seed);
    p->in.failure_reason = reasons[i];
    (void)submit_ok(p);
    free(seed);
    free(ev);
  }
  struct store_conversation c;
  assert_int_equal(store_get(B->store, f, false, &c), STORE_OK);
  assert_string_equal(c.failure_reason, reason);
  snprintf(sql, sizeof sql,
           "SELECT COUNT(*) FROM conversations WHERE conversation_id = '%s' AND "
           "failure_reason IS NULL AND failure_sealed IS NOT NULL",
           f);
  assert_int_equal(direct_sql(sql), 1);
  snprintf(sql, sizeof sql,
           "UPDATE conversations SET failure_sealed = (SELECT failure_sealed FROM conversations "
           "WHERE conversation_id = '%s') WHERE conversation_id = '%s'",
           f, g);
  (void)direct_sql(sql);
  assert_int_equal(store_get(B->store, g, false, &c), STORE_HARD);
  assert_true(erase_ok(f) > 0);
  assert_true(erase_ok(g) > 0);
}

/* set_ring refuses a ring that cannot open what the database holds, naming ENCRYPTION_KEYS. */
static void test_set_ring_refusals(void **state) {
  (void)state;
  char seed[64];
  char tag[16];
  new_tag(tag);
  snprintf(seed, sizeof seed, "refusal-%s", tag);
  (void)put_conv(seed, "r@example.com", "acc-r"); /* k1 data exists */
  const char *rings[3] = {NULL, KEY_K9, KEY_K1_OTHER};
  const char *names[3] = {"k1", "k1", "k1"};
  for (int i = 0; i < 3; i++) {
    struct seal_ring *r = rings[i] ? ring_of(rings[i]) : NULL;
    struct store *s = open_other(NULL, false);
    char err[512] = "";
    assert_int_equal(store_set_ring(s, r, err, sizeof err), STORE_HARD);
    if (!strstr(err, "ENCRYPTION_KEYS") || !strstr(err, names[i]) || strchr(err, '\n'))
      fail_msg("refusal %d does not name ENCRYPTION_KEYS and the key in one line: %s", i, err);
    store_close(s);
    seal_ring_free(r);
  }
  /* A refused start records nothing (its checks come before the record, in one transaction). */
  assert_int_equal(count_where("seal_keys", "key_id = 'k9'"), 0);
  /* A key recorded (its store started) but sealing nothing yet is not retired by a start
   * without it (an instance may be about to seal with it): refused, until a finished reencrypt
   * finds no row under any key but its first and retires the others. */
  struct seal_ring *k8 = ring_of(KEY_K8 "," KEY_K1);
  store_close(open_other(k8, true));
  seal_ring_free(k8);
  struct seal_ring *only_k1 = ring_of(KEY_K1);
  {
    struct store *refused = open_other(NULL, false);
    char why[512] = "";
    assert_int_equal(store_set_ring(refused, only_k1, why, sizeof why), STORE_HARD);
    assert_non_null(strstr(why, "k8"));
    assert_int_equal(store_set_ring(refused, NULL, why, sizeof why), STORE_HARD);
    store_close(refused);
  }
  struct seal_ring *k1_k8 = ring_of(KEY_K1 "," KEY_K8);
  struct store *resealer = open_other(k1_k8, true);
  assert_int_equal(reseal_to_end(resealer, 1000), 0);
  store_close(resealer);
  seal_ring_free(k1_k8);
  assert_int_equal(count_where("seal_keys", "key_id = 'k8'"), 0);
  store_close(open_other(only_k1, true));
  /* k1 among others, in any place, is fine; with k9 first, a row is sealed with k9. */
  struct seal_ring *r = ring_of(KEY_K9 "," KEY_K1);
  struct store *s = open_other(r, true);
  struct store_conversation c;
  assert_int_equal(store_get(s, seed, true, &c), STORE_OK);
  assert_string_equal(c.email_id, "r@example.com");
  free(c.body);
  char seed9[64];
  snprintf(seed9, sizeof seed9, "refusal9-%s", tag);
  struct store *saved = use_store(s);
  (void)put_conv(seed9, "r9@example.com", "acc-r9");
  B->store = saved;
  store_close(s);
  /* k9 seals a row now: a ring without it is refused. */
  s = open_other(NULL, false);
  char err[512] = "";
  assert_int_equal(store_set_ring(s, only_k1, err, sizeof err), STORE_HARD);
  assert_non_null(strstr(err, "k9"));
  store_close(s);
  seal_ring_free(only_k1);
  seal_ring_free(r);
}

static int64_t ax_rebuild(void);
static void ax_assert_rollups_match_recount(void);

/* Reencrypt after a rotation: every row of every table (plaintext ones too) moves to the new
 * key in small resumable batches while another store writes, then the old keys can go. Runs
 * last in its group: the group's store (k1 first) is replaced by one with k2 alone. The rollups
 * (every level, analytics_block included) follow the accounts to their new blind indexes. */
static void test_reseal_across_a_rotation(void **state) {
  (void)state;
  char tag[16], plain_id[64], before[64], during[64];
  new_tag(tag);
  (void)ax_rebuild(); /* other tests edit rows by hand: start from rollups that are right */
  snprintf(plain_id, sizeof plain_id, "rp-%s", tag);
  snprintf(before, sizeof before, "rb-%s", tag);
  /* Rows of every kind: plaintext (before encryption), under k1, with audio and events. */
  struct store *plain = open_other(NULL, false);
  struct store *saved = use_store(plain);
  char *plain_body = conv_body(plain_id, "p@example.com", "acc-p", 2, NULL);
  (void)put_ok(plain_body);
  int fd = audio_file(1000, 4);
  (void)put_audio(plain_id, fd, 1000, NULL);
  close(fd);
  B->store = saved;
  store_close(plain);
  char *before_body = conv_body(before, "b@example.com", "acc-b", 2, NULL);
  (void)put_ok(before_body);
  fd = audio_file(STORE_AUDIO_CHUNK_BYTES + 5, 5);
  (void)put_audio(before, fd, STORE_AUDIO_CHUNK_BYTES + 5, NULL);
  close(fd);
  /* Rotation: k2 seals, k1 (and k9, which sealed a row in the refusal test) still open. */
  struct seal_ring *ring2 = ring_of(KEY_K2 "," KEY_K1 "," KEY_K9);
  struct store *resealer = open_other(ring2, true);
  struct store *writer = open_other(ring2, true);
  struct store_write w;
  int64_t rewritten = 0;
  int rounds = 0;
  memset(&w, 0, sizeof w);
  do {
    w.kind = STORE_WRITE_RESEAL;
    w.reseal_limit = 3;
    saved = use_store(resealer);
    assert_int_equal(key_write(&w), STORE_OK);
    B->store = writer; /* another store writes between the batches */
    snprintf(during, sizeof during, "rd-%s-%d", tag, rounds);
    (void)put_conv(during, "d@example.com", "acc-d");
    B->store = saved;
    assert_true(w.erased <= 3);
    rewritten += w.erased;
    assert_true(++rounds < 100000);
  } while (w.reseal_pos[0]);
  assert_true(rewritten >= 6);
  assert_true(rounds >= 3);
  /* Nothing is left plaintext or under another key. */
  assert_int_equal(count_where("conversations", "sealed_with IS NULL OR sealed_with <> 'k2'"), 0);
  assert_int_equal(count_where("deliveries", "sealed_with IS NULL OR sealed_with <> 'k2'"), 0);
  assert_int_equal(count_where("events", "sealed_with IS NULL OR sealed_with <> 'k2'"), 0);
  assert_int_equal(count_where("audio_chunks", "sealed_with IS NULL OR sealed_with <> 'k2'"), 0);
  assert_int_equal(count_where("api_keys", "sealed_with IS NULL OR sealed_with <> 'k2'"), 0);
  ax_assert_rollups_match_recount();
  /* A pass over nothing to do rewrites nothing. */
  memset(&w, 0, sizeof w);
  w.kind = STORE_WRITE_RESEAL;
  w.reseal_limit = 1000;
  saved = use_store(resealer);
  do assert_int_equal(key_write(&w), STORE_OK);
  while (w.reseal_pos[0] && w.erased == 0);
  assert_int_equal(w.erased, 0);
  B->store = saved;
  store_close(resealer);
  store_close(writer);
  /* The old keys can go now. */
  struct seal_ring *ring3 = ring_of(KEY_K2);
  store_close(B->store);
  B->store = NULL;
  B->store = open_other(ring3, true);
  struct store_conversation c;
  assert_int_equal(store_get(B->store, plain_id, true, &c), STORE_OK);
  assert_string_equal(c.email_id, "p@example.com");
  assert_memory_equal(c.body, plain_body, strlen(plain_body));
  free(c.body);
  assert_int_equal(store_get(B->store, before, true, &c), STORE_OK);
  assert_memory_equal(c.body, before_body, strlen(before_body));
  free(c.body);
  check_range(plain_id, 0, 2000, 1000, 4);
  check_range(before, 0, STORE_AUDIO_CHUNK_BYTES + 5, STORE_AUDIO_CHUNK_BYTES + 5, 5);
  check_count("p@example.com", "acc-p", NULL, 1);
  check_count("b@example.com", NULL, NULL, 1);
  struct store_events evs;
  assert_int_equal(store_events(B->store, plain_id, &evs), STORE_OK);
  assert_int_equal(evs.count, 1);
  store_events_free(&evs);
  /* ... and a ring still holding only k1 is refused. */
  struct seal_ring *old = ring_of(KEY_K1);
  struct store *s = open_other(NULL, false);
  char err[512] = "";
  assert_int_equal(store_set_ring(s, old, err, sizeof err), STORE_HARD);
  assert_non_null(strstr(err, "k2"));
  store_close(s);
  seal_ring_free(old);
  /* The group's store now runs with ring3 (teardown closes it); ring2 stays allocated until the
   * process ends, ring3 is kept in the backend. */
  seal_ring_free(ring2);
  seal_ring_free(B->ring);
  B->ring = ring3;
  free(plain_body);
  free(before_body);
}

/* A reencrypt write stops after about 4 MiB of rewritten bytes, whatever its row limit,
 * so a batch of audio chunks never holds ingest for long; the walk still ends with every row
 * sealed. */
static void test_reseal_batches_are_bounded_in_bytes(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "big-%s", tag);
  const int64_t len = 24 * (int64_t)STORE_AUDIO_CHUNK_BYTES; /* 6 MiB, plaintext */
  struct store *plain = open_other(NULL, false);
  struct store *saved = use_store(plain);
  int fd = audio_file(len, 11);
  (void)put_audio(id, fd, len, NULL);
  close(fd);
  B->store = saved;
  store_close(plain);
  struct store_write w;
  memset(&w, 0, sizeof w);
  int batches = 0;
  do {
    w.kind = STORE_WRITE_RESEAL;
    w.reseal_limit = 1000;
    assert_int_equal(key_write(&w), STORE_OK);
    batches++;
  } while (w.reseal_pos[0]);
  assert_true(batches >= 2);
  char cond[160];
  snprintf(cond, sizeof cond, "conversation_id = '%s' AND sealed_with IS NULL", id);
  assert_int_equal(count_where("audio_chunks", cond), 0);
  check_range(id, 0, (size_t)len, len, 11);
}

/* SQLite only: with a ring, nothing written can be found in the database file or its log. */
static bool file_contains(const char *path, const void *needle, size_t n) {
  FILE *f = fopen(path, "rb");
  if (!f) return false;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc(size > 0 ? (size_t)size : 1);
  assert_non_null(buf);
  size_t got = fread(buf, 1, size > 0 ? (size_t)size : 0, f);
  fclose(f);
  bool found = got >= n && memmem(buf, got, needle, n) != NULL;
  free(buf);
  return found;
}

static void test_sqlite_file_holds_no_plaintext(void **state) {
  (void)state;
  char tag[16], id[64], email[64], account[64], secret[64];
  new_tag(tag);
  snprintf(id, sizeof id, "raw-%s", tag);
  snprintf(email, sizeof email, "mail-%s@example.com", tag);
  snprintf(account, sizeof account, "account-%s", tag);
  snprintf(secret, sizeof secret, "summary-%s", tag);
  char extra[128];
  snprintf(extra, sizeof extra, "\"summary\":{\"text\":\"%s\"}", secret);
  char *body = conv_body(id, email, account, 2, extra);
  /* its outbox events are written (a copy of the conversation, sealed too): SQLite writes none
   * while nothing could read them */
  store_set_outbox_broker(B->store, true);
  (void)put_ok(body);
  char evextra[128];
  snprintf(evextra, sizeof evextra, "\"note\":\"event-%s\"", tag);
  char *ev = event_json("post_call_transcription", id, evextra);
  (void)submit_ok(event_new(id, "post_call_transcription", ev, NULL));
  /* a failed call's conversation with its failure reason (free text from ElevenLabs) */
  char failed[64], reason[64];
  snprintf(failed, sizeof failed, "rawf-%s", tag);
  snprintf(reason, sizeof reason, "reason-%s", tag);
  char *fseed = conv_body(failed, email, account, 1, NULL);
  char *fev = event_json("call_initiation_failure", failed, NULL);
  struct pending *fp = event_new(failed, "call_initiation_failure", fev, fseed);
  fp->in.failure_reason = reason;
  (void)submit_ok(fp);
  free(fseed);
  free(fev);
  struct store_conversation fc;
  assert_int_equal(store_get(B->store, failed, false, &fc), STORE_OK);
  assert_string_equal(fc.failure_reason, reason);
  char key_id[APIKEY_ID_LEN + 1];
  put_bound_key(account, key_id); /* its bound account is sealed too */
  int fd = audio_file(50000, 9);
  (void)put_audio(id, fd, 50000, NULL);
  close(fd);
  store_set_outbox_broker(B->store, false);
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox_events WHERE conversation_id = '%s'", id);
  assert_int_equal(direct_sql(sql), 2); /* created, audio_added */
  unsigned char audio[64];
  for (int i = 0; i < 64; i++) audio[i] = audio_byte(1000 + i, 9);
  char wal[4300];
  snprintf(wal, sizeof wal, "%s-wal", B->sqlite_path);
  char evneedle[64];
  snprintf(evneedle, sizeof evneedle, "event-%s", tag);
  const char *files[2] = {B->sqlite_path, wal};
  for (int i = 0; i < 2; i++) {
    assert_false(file_contains(files[i], email, strlen(email)));
    assert_false(file_contains(files[i], account, strlen(account)));
    assert_false(file_contains(files[i], secret, strlen(secret)));
    assert_false(file_contains(files[i], evneedle, strlen(evneedle)));
    assert_false(file_contains(files[i], reason, strlen(reason)));
    assert_false(file_contains(files[i], audio, sizeof audio));
  }
  assert_true(file_contains(wal, id, strlen(id)) || file_contains(B->sqlite_path, id, strlen(id)));
  free(body);
  free(ev);
}

/* ---------- encryption at rest: PostgreSQL only ----------
 * Run after the SEAL_TESTS, whose rotation leaves the group's store sealing with k2. */

#define KEY_K8_OTHER "k8:Q0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0M=" /* same id, other bytes */

/* A store on the same database with that ring (keys NULL: none); NULL with err when refused. */
static struct store *open_with_ring(const struct seal_ring *ring, char *err, size_t errlen) {
  struct store *s = store_open(B->url, err, errlen);
  if (!s) fail_msg("store_open: %s", err);
  if (store_set_ring(s, ring, err, errlen) != STORE_OK) {
    store_close(s);
    return NULL;
  }
  return s;
}

/* Rows of table holding text as it is, or its bytes in hex (how a bytea column reads as text). */
static int64_t raw_matches(const char *table, const char *text) {
  char sql[1024];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM %s x WHERE strpos(x::text, '%s') > 0 OR "
           "strpos(x::text, encode(convert_to('%s', 'UTF8'), 'hex')) > 0",
           table, text, text);
  return direct_sql(sql);
}

/* The same over every table of the database (what a pg_dump holds): the audit log, the keys, the
 * migrations' bookkeeping and any table added later included. */
static int64_t raw_matches_anywhere(const char *text) {
  PGconn *c = PQconnectdb(B->url);
  assert_int_equal(PQstatus(c), CONNECTION_OK);
  PGresult *r = PQexec(c,
                       "SELECT quote_ident(table_name) FROM information_schema.tables "
                       "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'");
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  assert_true(PQntuples(r) >= 5);
  int64_t n = 0;
  for (int i = 0; i < PQntuples(r); i++) n += raw_matches(PQgetvalue(r, i, 0), text);
  PQclear(r);
  PQfinish(c);
  return n;
}

/* With a ring nothing written reaches PostgreSQL in the clear (email, account, the body, an
 * event, its derived conversation, the audio), and everything reads back, filters included. */
static void test_pg_sealed_values_never_reach_the_database(void **state) {
  (void)state;
  char tag[16], id[64], email[64], account[64], secret[64], elid[64];
  new_tag(tag);
  snprintf(id, sizeof id, "sealed-%s", tag);
  snprintf(elid, sizeof elid, "sealed-el-%s", tag);
  snprintf(email, sizeof email, "mail%s@example.com", tag);
  snprintf(account, sizeof account, "acct%s", tag);
  snprintf(secret, sizeof secret, "whisper%s", tag);
  char extra[128];
  snprintf(extra, sizeof extra, "\"note\":\"%s\"", secret);
  char *body = conv_body(id, email, account, 2, extra);
  struct version v = put_ok(body);
  /* an event with a derived conversation, and audio */
  char *seed = conv_body(elid, "x@example.com", "x", 1, extra);
  char *ev = event_json("post_call_transcription", elid, extra);
  struct pending *p = event_new(elid, "post_call_transcription", ev, seed);
  p->in.email_id = email;
  p->in.account_id = account;
  char reason[64];
  snprintf(reason, sizeof reason, "reason%s", tag);
  p->in.failure_reason = reason;
  struct version ve = submit_ok(p);
  char key_id[APIKEY_ID_LEN + 1];
  put_bound_key(account, key_id); /* its bound account is sealed too */
  const int64_t len = STORE_AUDIO_CHUNK_BYTES + 5000;
  int fd = audio_file(len, 11);
  (void)put_audio(elid, fd, len, NULL);
  close(fd);
  char audio_hex[2 * 12 + 1];
  for (int i = 0; i < 12; i++)
    snprintf(audio_hex + 2 * i, 3, "%02x", audio_byte(STORE_AUDIO_CHUNK_BYTES + 100 + i, 11));

  assert_int_equal(raw_matches_anywhere(email), 0);
  assert_int_equal(raw_matches_anywhere(account), 0);
  assert_int_equal(raw_matches_anywhere(secret), 0);
  assert_int_equal(raw_matches_anywhere(reason), 0);
  char sql[256]; /* the pattern recurs in other audio: only this conversation's chunks count */
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM audio_chunks x WHERE conversation_id = '%s' AND "
           "strpos(x::text, '%s') > 0",
           elid, audio_hex);
  assert_int_equal(direct_sql(sql), 0);

  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, true, &c), STORE_OK);
  assert_string_equal(c.email_id, email);
  assert_string_equal(c.account_id, account);
  assert_string_equal(c.webhook_id, v.webhook_id);
  assert_int_equal(c.body_len, strlen(body));
  assert_memory_equal(c.body, body, strlen(body));
  free(c.body);
  assert_int_equal(store_get(B->store, elid, true, &c), STORE_OK);
  assert_string_equal(c.email_id, email);
  assert_string_equal(c.webhook_id, ve.webhook_id);
  assert_string_equal(c.failure_reason, reason);
  assert_memory_equal(c.body, seed, strlen(seed));
  assert_int_equal(c.audio_bytes, len);
  free(c.body);
  check_count(email, NULL, NULL, 2);
  check_count(NULL, account, NULL, 2);
  check_count(email, account, "completed", 2);
  struct store_events evs;
  assert_int_equal(store_events(B->store, elid, &evs), STORE_OK);
  assert_int_equal(evs.count, 2);
  assert_memory_equal(evs.items[0].body, ev, strlen(ev));
  store_events_free(&evs);
  check_range(elid, 0, (size_t)len, len, 11);
  check_range(elid, STORE_AUDIO_CHUNK_BYTES - 3, 10, len, 11);
  check_range(elid, STORE_AUDIO_CHUNK_BYTES + 17, 100, len, 11);
  free(body);
  free(seed);
  free(ev);
}

struct writer_arg {
  struct store *store;
  const char *tag;
  int failed;
};

/* Another instance's webhooks while reencrypt runs: new conversations, new versions of them,
 * events with audio. */
static void *rotation_writes(void *arg) {
  struct writer_arg *a = arg;
  for (int i = 0; i < 120; i++) {
    char id[64], email[64];
    snprintf(id, sizeof id, "rot-%s-%d", a->tag, i % 40);
    snprintf(email, sizeof email, "rot%s@example.com", a->tag);
    char *body = conv_body(id, email, "rot-acct", 1 + i / 40, NULL);
    struct pending *p = pending_new(body);
    free(body);
    store_submit(a->store, &p->w);
    wait_done(p);
    a->failed += p->w.status != STORE_OK;
    pending_free(p);
    if (i % 20 == 0) {
      int fd = audio_file(STORE_AUDIO_CHUNK_BYTES + 10, 20);
      char *ev = event_json("post_call_audio", id, NULL);
      struct pending *q = event_new(id, "post_call_audio", ev, NULL);
      q->w.audio_fd = fd;
      q->w.audio_len = STORE_AUDIO_CHUNK_BYTES + 10;
      store_submit(a->store, &q->w);
      wait_done(q);
      a->failed += q->w.status != STORE_OK;
      pending_free(q);
      free(ev);
      close(fd);
    }
  }
  return NULL;
}

/* Runs reencrypt on s to the end, a few rows at a time; the rows it rewrote. */
static int64_t reencrypt(struct store *s) {
  struct pending *p = calloc(1, sizeof *p);
  assert_non_null(p);
  int64_t total = 0;
  for (int steps = 0;; steps++) {
    assert_true(steps < 100000);
    p->done = false;
    p->w.kind = STORE_WRITE_RESEAL;
    p->w.reseal_limit = 7;
    p->w.done = on_done;
    p->w.done_cls = p;
    store_submit(s, &p->w);
    wait_done(p);
    assert_int_equal(p->w.status, STORE_OK);
    total += p->w.erased;
    if (!p->w.reseal_pos[0]) break;
  }
  free(p);
  return total;
}

static int64_t rows_not_sealed_with(const char *key) {
  static const char *const tables[] = {"conversations", "deliveries", "events", "audio_chunks"};
  int64_t n = 0;
  for (size_t i = 0; i < 4; i++) {
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE sealed_with IS DISTINCT FROM '%s'",
             tables[i], key);
    n += direct_sql(sql);
  }
  return n;
}

/* A key rotation with truly concurrent writes: with "k8,k2", reencrypt moves every row (sealed
 * with k2, and plaintext ones written just before by a store without a ring) to k8 while another
 * instance keeps writing from a thread (conversations, new versions, audio): no write fails,
 * nothing is left behind; then k2 can go, and every refusal set_ring owes (a missing key, the
 * same id with other bytes, no ring) holds. */
static void test_pg_reencrypt_rotates_while_another_instance_writes(void **state) {
  (void)state;
  char tag[16], id[64], email[64], err[512];
  new_tag(tag);
  snprintf(id, sizeof id, "before-%s", tag);
  snprintf(email, sizeof email, "before%s@example.com", tag);
  (void)put_conv(id, email, "before-acct"); /* sealed with k2 */
  int fd = audio_file(3 * STORE_AUDIO_CHUNK_BYTES, 21);
  (void)put_audio(id, fd, 3 * STORE_AUDIO_CHUNK_BYTES, NULL);
  close(fd);
  char plain_id[64];
  snprintf(plain_id, sizeof plain_id, "plain-%s", tag);
  struct store *plain = store_open(B->url, err, sizeof err);
  if (!plain) fail_msg("store_open: %s", err);
  struct store *saved = B->store;
  B->store = plain; /* a store as it was before encryption */
  (void)put_conv(plain_id, email, "before-acct");
  B->store = saved;
  store_close(plain);
  assert_true(direct_sql("SELECT count(*) FROM deliveries WHERE sealed_with IS NULL") > 0);

  struct seal_ring *both = ring_of(KEY_K8 "," KEY_K2);
  struct store *w = open_with_ring(both, err, sizeof err);
  struct store *r = open_with_ring(both, err, sizeof err);
  assert_non_null(w);
  assert_non_null(r);
  struct writer_arg a = {.store = w, .tag = tag};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, rotation_writes, &a), 0);
  int64_t rewritten = reencrypt(r);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(a.failed, 0);
  assert_true(rewritten > 0);
  /* rows written before the pass began are all k8's now; a second pass finds nothing left */
  (void)reencrypt(r);
  assert_int_equal(rows_not_sealed_with("k8"), 0);

  B->store = r;
  struct store_conversation c;
  assert_int_equal(store_get(r, id, true, &c), STORE_OK);
  assert_string_equal(c.email_id, email);
  free(c.body);
  check_count(email, "before-acct", NULL, 2);
  char rot_email[64];
  snprintf(rot_email, sizeof rot_email, "rot%s@example.com", tag);
  check_count(rot_email, "rot-acct", NULL, 40);
  check_range(id, 0, 3 * STORE_AUDIO_CHUNK_BYTES, 3 * STORE_AUDIO_CHUNK_BYTES, 21);
  B->store = saved;
  store_close(w);
  store_close(r);

  /* k2 may go now; without k8, or with other bytes under its id, or with no ring: refused */
  struct seal_ring *k8 = ring_of(KEY_K8), *k2 = ring_of(KEY_K2);
  struct seal_ring *other = ring_of(KEY_K8_OTHER);
  struct store *ok = open_with_ring(k8, err, sizeof err);
  if (!ok) fail_msg("k8 alone after reencrypt: %s", err);
  store_close(ok);
  assert_null(open_with_ring(k2, err, sizeof err));
  assert_non_null(strstr(err, "ENCRYPTION_KEYS"));
  assert_non_null(strstr(err, "\"k8\""));
  assert_null(open_with_ring(other, err, sizeof err));
  assert_non_null(strstr(err, "ENCRYPTION_KEYS"));
  assert_null(open_with_ring(NULL, err, sizeof err));
  assert_non_null(strstr(err, "ENCRYPTION_KEYS"));
  seal_ring_free(both);
  seal_ring_free(k8);
  seal_ring_free(k2);
  seal_ring_free(other);
}

/* ---------- the outbox (issue 10; store.h "The outbox") ----------
 * Every test makes its own subscriptions (which only see events committed after they exist) and
 * deletes them at its end, so tests never see each other's deliveries. */

#define OB_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/Y4MtL5gG3Q="
#define OB_LEASE_US (60LL * 1000000LL)
#define OB_ALL_TYPES OUTBOX_TYPES_ALL

static struct subscription ob_sub(unsigned types, const char *account) {
  struct subscription s;
  memset(&s, 0, sizeof s);
  char hex[25];
  assert_true(crypto_random_hex(hex, sizeof hex, 12));
  snprintf(s.id, sizeof s.id, "sub_%s", hex);
  snprintf(s.url, sizeof s.url, "https://example.com/hooks/%s?x=1", hex);
  snprintf(s.secret, sizeof s.secret, "%s", OB_SECRET);
  s.event_types = types;
  snprintf(s.account_id, sizeof s.account_id, "%s", account ? account : "");
  s.enabled = true;
  s.created_us = s.updated_us = time_now_us();
  return s;
}

/* A subscription write (SUB_PUT, SUB_DELETE, REPLAY); its status, *erased its count. */
static enum store_status ob_sub_write(enum store_write_kind kind, const struct subscription *sub,
                                      bool create, const char *id, int64_t since, int64_t *erased) {
  struct store_write w;
  memset(&w, 0, sizeof w);
  w.kind = kind;
  w.sub = sub;
  w.sub_create = create;
  w.sub_enabled_given = true; /* an update replaces the state too (as PATCH {"enabled": ..}) */
  w.sub_fields = STORE_SUB_ALL;
  w.sub_id = id;
  w.replay_since_us = since;
  w.audio_fd = -1;
  store_submit_wait(B->store, &w);
  if (erased) *erased = w.erased;
  return w.status;
}

static void ob_sub_create(struct subscription *s) {
  assert_int_equal(ob_sub_write(STORE_WRITE_SUB_PUT, s, true, NULL, 0, NULL), STORE_OK);
}

static void ob_sub_update(const struct subscription *s) {
  assert_int_equal(ob_sub_write(STORE_WRITE_SUB_PUT, s, false, NULL, 0, NULL), STORE_OK);
}

static void ob_sub_delete(const char *id) {
  int64_t n = -1;
  assert_int_equal(ob_sub_write(STORE_WRITE_SUB_DELETE, NULL, false, id, 0, &n), STORE_OK);
  assert_int_equal(n, 1);
}

static struct subscription ob_sub_read(const char *id) {
  struct subscription s;
  assert_int_equal(store_sub_get(B->store, id, &s), STORE_OK);
  return s;
}

/* The subscription's signing secret as the dispatcher reads it (store.h sub_secret): a read of
 * the subscription itself (sub_get, sub_list) never holds it. */
static void assert_sub_secret(const struct subscription *s, const char *want) {
  assert_string_equal(s->secret, "");
  char secret[OUTBOX_SECRET_MAX];
  assert_int_equal(store_sub_secret(B->store, s->id, secret), STORE_OK);
  assert_string_equal(secret, want);
}

static void ob_run_in(struct store *st, struct store_outbox_work *o) {
  struct store_write w;
  memset(&w, 0, sizeof w);
  w.kind = STORE_WRITE_OUTBOX;
  w.outbox = o;
  w.audio_fd = -1;
  store_submit_wait(st, &w);
  assert_int_equal(w.status, STORE_OK);
}

static void ob_run(struct store_outbox_work *o) { ob_run_in(B->store, o); }

static int64_t ob_fanout(int64_t now) {
  struct store_outbox_work o = {.op = STORE_OUTBOX_FANOUT, .now_us = now, .limit = 100000};
  ob_run(&o);
  return o.added;
}

/* Leases up to limit due deliveries of sub at now (free with store_jobs_free). */
static struct store_outbox_work ob_claim_in(struct store *st, const char *sub, int64_t now,
                                            int64_t lease, int64_t limit) {
  struct store_outbox_work o = {
      .op = STORE_OUTBOX_CLAIM, .now_us = now, .lease_us = lease, .limit = limit, .sub_id = sub};
  ob_run_in(st, &o);
  return o;
}

static struct store_outbox_work ob_claim(const char *sub, int64_t now, int64_t lease,
                                         int64_t limit) {
  return ob_claim_in(B->store, sub, now, lease, limit);
}

static struct store_delivery_result ob_result(const struct store_delivery_job *j, int outcome,
                                              int status, int64_t at, int64_t next_at) {
  struct store_delivery_result r;
  memset(&r, 0, sizeof r);
  snprintf(r.sub_id, sizeof r.sub_id, "%s", j->sub_id);
  r.seq = j->event.seq;
  snprintf(r.event_id, sizeof r.event_id, "%s", j->event.id);
  r.type = j->event.type;
  r.attempt = j->attempt;
  r.at_us = at;
  r.status_code = status;
  r.latency_ms = 12;
  snprintf(r.response_head, sizeof r.response_head, "answer %d", status);
  r.outcome = outcome;
  r.first_attempt_us = j->first_attempt_us ? j->first_attempt_us : at;
  r.next_at_us = next_at;
  r.lease_token = j->lease_token;
  return r;
}

static void ob_finish_in(struct store *st, const struct store_delivery_job *j, int outcome,
                         int status, int64_t at, int64_t next_at) {
  struct store_delivery_result r = ob_result(j, outcome, status, at, next_at);
  struct store_outbox_work o = {.op = STORE_OUTBOX_FINISH, .results = &r, .nresults = 1};
  ob_run_in(st, &o);
}

static void ob_finish(const struct store_delivery_job *j, int outcome, int status, int64_t at,
                      int64_t next_at) {
  ob_finish_in(B->store, j, outcome, status, at, next_at);
}

/* Time passes, for the leases held now: on PostgreSQL leases run on the database server's clock
 * alone (a store's now_us, however far ahead, never ends one), so the test moves the live leases
 * of subscription sub's deliveries and of broker cursor name (either NULL: none) back by us, as
 * that clock moving on would; on SQLite the now_us a test passes is the one clock, and its
 * leases are the test's to end that way. */
static void ob_leases_age(const char *sub, const char *cursor, int64_t us) {
  if (strcmp(B->name, "sqlite") == 0) return;
  char sql[256];
  if (sub) {
    snprintf(sql, sizeof sql,
             "UPDATE sub_deliveries SET lease_until_us = lease_until_us - %lld WHERE sub_id = "
             "'%s' AND lease_until_us > 0",
             (long long)us, sub);
    (void)direct_sql(sql);
  }
  if (cursor) {
    snprintf(sql, sizeof sql,
             "UPDATE outbox_cursors SET lease_until_us = lease_until_us - %lld WHERE name = '%s'",
             (long long)us, cursor);
    (void)direct_sql(sql);
  }
}

/* Time passes, for the retries waiting now: on PostgreSQL a delivery's next attempt time is
 * written and compared on the database server's clock alone (a store's now_us never makes one
 * due), so the test moves subscription sub's waiting deliveries' next attempt times back by us,
 * as that clock moving on would; on SQLite the now_us a test passes is the one clock. */
static void ob_retries_age(const char *sub, int64_t us) {
  if (strcmp(B->name, "sqlite") == 0) return;
  char sql[256];
  snprintf(sql, sizeof sql,
           "UPDATE sub_deliveries SET next_at_us = next_at_us - %lld WHERE sub_id = '%s' AND "
           "state = 0",
           (long long)us, sub);
  (void)direct_sql(sql);
}

/* One event as a subscriber got it. */
struct ob_got {
  int64_t seq;
  int64_t created_us;
  int type;
  char id[OUTBOX_EVENT_ID_MAX];
  char conv[MODEL_CONVERSATION_ID_MAX + 1];
  char *data;
  int attempt;
};

struct ob_gots {
  struct ob_got *items;
  size_t n;
};

static void ob_gots_free(struct ob_gots *g) {
  for (size_t i = 0; i < g->n; i++) free(g->items[i].data);
  free(g->items);
  memset(g, 0, sizeof *g);
}

static int ob_got_cmp(const void *a, const void *b) {
  const struct ob_got *x = a, *y = b;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void ob_keep(struct ob_gots *g, const struct store_delivery_job *j) {
  g->items = realloc(g->items, (g->n + 1) * sizeof *g->items);
  assert_non_null(g->items);
  struct ob_got *e = &g->items[g->n++];
  e->seq = j->event.seq;
  e->created_us = j->event.created_us;
  e->type = j->event.type;
  snprintf(e->id, sizeof e->id, "%s", j->event.id);
  snprintf(e->conv, sizeof e->conv, "%s", j->event.conversation_id);
  e->data = strndup(j->event.data, j->event.data_len);
  assert_non_null(e->data);
  assert_int_equal(strlen(e->data), j->event.data_len);
  e->attempt = j->attempt;
}

/* Fans out and delivers (finished as delivered) everything due to sub until nothing is left;
 * what arrived, in outbox order. */
static struct ob_gots ob_drain(const char *sub) {
  struct ob_gots g = {NULL, 0};
  for (int round = 0; round < 1000; round++) {
    (void)ob_fanout(time_now_us());
    int64_t now = time_now_us();
    struct store_outbox_work o = ob_claim(sub, now, OB_LEASE_US, 1000);
    if (!o.count) {
      store_jobs_free(&o);
      if (g.n) qsort(g.items, g.n, sizeof *g.items, ob_got_cmp);
      return g;
    }
    struct store_delivery_result *r = calloc(o.count, sizeof *r);
    assert_non_null(r);
    for (size_t i = 0; i < o.count; i++) {
      assert_string_equal(o.jobs[i].sub_id, sub);
      ob_keep(&g, &o.jobs[i]);
      r[i] = ob_result(&o.jobs[i], DELIVERY_DELIVERED, 200, now, 0);
    }
    struct store_outbox_work f = {.op = STORE_OUTBOX_FINISH, .results = r, .nresults = o.count};
    ob_run(&f);
    free(r);
    store_jobs_free(&o);
  }
  fail_msg("a subscription's deliveries never ran out");
  return g;
}

/* The conversation as GET /api/v1/conversations/{id} shows it now. */
static char *ob_get_rendered(const char *id) {
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, true, &c), STORE_OK);
  size_t len;
  char *text = render_conversation_detail(&c, &len);
  assert_non_null(text);
  free(c.body);
  return text;
}

static void ob_check(const struct ob_got *e, int type, const char *conv) {
  if (e->type != type || strcmp(e->conv, conv) != 0)
    fail_msg("event %lld: %s of %s, expected %s of %s", (long long)e->seq,
             outbox_type_name(e->type), e->conv, outbox_type_name(type), conv);
  assert_int_equal(strlen(e->id), 36);
  assert_memory_equal(e->id, "evt_", 4);
  for (size_t i = 4; i < 36; i++) assert_non_null(strchr("0123456789abcdef", e->id[i]));
}

static int ob_notified;
static void ob_count_notify(void *cls) {
  (void)cls;
  __atomic_add_fetch(&ob_notified, 1, __ATOMIC_SEQ_CST);
}

/* Each change writes its event, in its transaction, once: a redelivery none; its data is the
 * conversation as GET shows it after that change. */
static void test_outbox_every_change_writes_its_event(void **state) {
  (void)state;
  char tag[16], a[64], b[64], c[64], d[64], e[64];
  new_tag(tag);
  snprintf(a, sizeof a, "ob-a-%s", tag);
  snprintf(b, sizeof b, "ob-b-%s", tag);
  snprintf(c, sizeof c, "ob-c-%s", tag);
  snprintf(d, sizeof d, "ob d/%s", tag); /* a path segment to escape */
  snprintf(e, sizeof e, "ob-e-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  B->store->ops->set_outbox_notify(B->store, ob_count_notify, NULL);
  int notified0 = __atomic_load_n(&ob_notified, __ATOMIC_SEQ_CST);

  char *a1 = conv_body(a, "a@example.com", "acc", 1, NULL),
       *a2 = conv_body(a, "a@example.com", "acc", 2, NULL);
  (void)put_ok(a1);
  assert_true(__atomic_load_n(&ob_notified, __ATOMIC_SEQ_CST) > notified0);
  assert_true(put_ok(a1).duplicate); /* no event */
  (void)put_ok(a2);
  char *a_after_v2 = ob_get_rendered(a);
  /* an ElevenLabs event with its conversation, then the same event again */
  char *bseed = conv_body(b, "b@example.com", "acc", 2, NULL);
  char *bev = event_json("post_call_transcription", b, NULL);
  for (int i = 0; i < 2; i++) {
    struct pending *p = event_new(b, "post_call_transcription", bev, bseed);
    p->in.status = "completed";
    assert_int_equal(submit_ok(p).duplicate, i == 1);
  }
  char *b_before_audio = ob_get_rendered(b);
  /* a failed call */
  char *cseed = conv_body(c, "c@example.com", "acc", 0, NULL);
  char *cev = event_json("call_initiation_failure", c, NULL);
  struct pending *p = event_new(c, "call_initiation_failure", cev, cseed);
  p->in.status = "failed";
  p->in.failure_reason = "busy";
  (void)submit_ok(p);
  /* audio of no conversation, then audio of b */
  int fd = audio_file(100, 1);
  (void)put_audio(d, fd, 100, NULL);
  close(fd);
  fd = audio_file(300, 2);
  (void)put_audio(b, fd, 300, NULL);
  close(fd);
  /* a conversation and its audio in one event */
  char *eseed = conv_body(e, "e@example.com", "acc", 1, NULL);
  char *eev = event_json("post_call_audio", e, NULL);
  p = event_new(e, "post_call_audio", eev, eseed);
  p->in.status = "completed";
  fd = audio_file(50, 3);
  p->w.audio_fd = fd;
  p->w.audio_len = 50;
  p->w.event_audio_at = 10;
  (void)submit_ok(p);
  close(fd);
  /* none: an event naming no conversation, a probe */
  char *none = event_json("x", "", NULL);
  (void)submit_ok(event_new("", "x", none, NULL));
  p = probe_new();
  store_submit(B->store, &p->w);
  wait_done(p);
  pending_free(p);

  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 8);
  ob_check(&g.items[0], OUTBOX_CREATED, a);
  ob_check(&g.items[1], OUTBOX_UPDATED, a);
  ob_check(&g.items[2], OUTBOX_CREATED, b);
  ob_check(&g.items[3], OUTBOX_FAILED, c);
  ob_check(&g.items[4], OUTBOX_AUDIO_ADDED, d);
  ob_check(&g.items[5], OUTBOX_AUDIO_ADDED, b);
  ob_check(&g.items[6], OUTBOX_CREATED, e);
  ob_check(&g.items[7], OUTBOX_AUDIO_ADDED, e);
  for (size_t i = 0; i < g.n; i++) {
    assert_int_equal(g.items[i].attempt, 1);
    for (size_t k = 0; k < i; k++) assert_string_not_equal(g.items[i].id, g.items[k].id);
  }
  /* data: the conversation as GET showed it right after that change */
  assert_non_null(strstr(g.items[0].data, "\"messageCount\":1"));
  assert_string_equal(g.items[1].data, a_after_v2);
  assert_string_equal(g.items[2].data, b_before_audio);
  assert_null(strstr(g.items[2].data, "\"audio\""));
  char *now_b = ob_get_rendered(b), *now_c = ob_get_rendered(c), *now_e = ob_get_rendered(e);
  assert_string_equal(g.items[3].data, now_c);
  assert_non_null(strstr(now_c, "\"failureReason\":\"busy\""));
  char want_d[256];
  snprintf(want_d, sizeof want_d,
           "{\"conversationId\":\"%s\",\"audio\":{\"bytes\":100,\"url\":"
           "\"/api/v1/conversations/ob%%20d%%2F%s/audio\"}}",
           d, tag);
  assert_string_equal(g.items[4].data, want_d);
  assert_string_equal(g.items[5].data, now_b);
  assert_non_null(strstr(now_b, "\"audio\":{\"bytes\":300"));
  assert_string_equal(g.items[6].data, now_e);
  assert_string_equal(g.items[7].data, now_e);
  ob_gots_free(&g);
  B->store->ops->set_outbox_notify(B->store, NULL, NULL);
  ob_sub_delete(sub.id);
  free(a1);
  free(a2);
  free(a_after_v2);
  free(bseed);
  free(bev);
  free(b_before_audio);
  free(cseed);
  free(cev);
  free(eseed);
  free(eev);
  free(none);
  free(now_b);
  free(now_c);
  free(now_e);
}

/* A subscription whose signing secret does not open (sealed with a key the ring lacks, or
 * damaged) fails no read and no update: get, list and PATCH's write answer as ever; only
 * sub_secret, the dispatcher's read, says it does not open (and holds nothing of it). */
static void test_outbox_unopenable_secret_fails_no_read(void **state) {
  (void)state;
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  sub.max_per_second = 5;
  ob_sub_create(&sub);
  char sql[512];
  if (strcmp(B->name, "sqlite") == 0)
    snprintf(sql, sizeof sql,
             "UPDATE subscriptions SET secret = randomblob(48), sealed_with = 'gone' "
             "WHERE id = '%s'",
             sub.id);
  else
    snprintf(sql, sizeof sql,
             "UPDATE subscriptions SET secret = '', secret_sealed = decode(md5('a') || "
             "md5('b'), 'hex'), sealed_with = 'gone' WHERE id = '%s'",
             sub.id);
  (void)direct_sql(sql);
  struct subscription got = ob_sub_read(sub.id);
  assert_string_equal(got.url, sub.url);
  assert_string_equal(got.secret, "");
  assert_int_equal(got.max_per_second, 5);
  struct subscription *all;
  size_t n, found = 0;
  assert_int_equal(store_sub_list(B->store, &all, &n), STORE_OK);
  for (size_t i = 0; i < n; i++) found += strcmp(all[i].id, sub.id) == 0;
  free(all);
  assert_int_equal(found, 1);
  char secret[OUTBOX_SECRET_MAX];
  memset(secret, 'x', sizeof secret);
  assert_int_equal(store_sub_secret(B->store, sub.id, secret), STORE_HARD);
  assert_string_equal(secret, "");
  got.max_per_second = 9;
  ob_sub_update(&got);
  assert_int_equal(ob_sub_read(sub.id).max_per_second, 9);
  struct subscription ghost = ob_sub(OB_ALL_TYPES, NULL);
  assert_int_equal(store_sub_secret(B->store, ghost.id, secret), STORE_NOT_FOUND);
  ob_sub_delete(sub.id);
}

/* A subscription whose sealed URL and account do not open (damaged, or sealed with a key the
 * ring lacks) fails no read (read as unreadable, URL and account empty, never "every account"),
 * and fan-out skips it alone: the others get their events, it gets none. */
static void test_outbox_unopenable_url_and_account_fail_no_read(void **state) {
  (void)state;
  char tag[16], conv[64], account[64];
  new_tag(tag);
  snprintf(conv, sizeof conv, "ob-uo-%s", tag);
  snprintf(account, sizeof account, "acct-uo-%s", tag);
  struct subscription bad = ob_sub(OB_ALL_TYPES, account), good = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&bad);
  ob_sub_create(&good);
  char sql[512];
  if (strcmp(B->name, "sqlite") == 0)
    snprintf(sql, sizeof sql,
             "UPDATE subscriptions SET url = '', url_sealed = randomblob(48), account_sealed = "
             "randomblob(48), sealed_with = 'gone' WHERE id = '%s'",
             bad.id);
  else
    snprintf(sql, sizeof sql,
             "UPDATE subscriptions SET url = '', url_sealed = decode(md5('a') || md5('b'), "
             "'hex'), account_sealed = decode(md5('c') || md5('d'), 'hex'), sealed_with = "
             "'gone' WHERE id = '%s'",
             bad.id);
  (void)direct_sql(sql);
  struct subscription got = ob_sub_read(bad.id);
  assert_true(got.unreadable);
  assert_string_equal(got.url, "");
  assert_string_equal(got.account_id, "");
  assert_false(ob_sub_read(good.id).unreadable);
  struct subscription *all;
  size_t n, found = 0;
  assert_int_equal(store_sub_list(B->store, &all, &n), STORE_OK);
  for (size_t i = 0; i < n; i++)
    if (strcmp(all[i].id, bad.id) == 0) found += all[i].unreadable ? 1 : 100;
  free(all);
  assert_int_equal(found, 1);
  (void)put_conv(conv, "uo@example.com", account);
  (void)ob_fanout(time_now_us()); /* asserts STORE_OK: one subscription fails no fan-out */
  (void)ob_fanout(time_now_us());
  struct ob_gots g = ob_drain(good.id);
  size_t mine = 0;
  for (size_t i = 0; i < g.n; i++) mine += strcmp(g.items[i].conv, conv) == 0;
  ob_gots_free(&g);
  assert_int_equal(mine, 1);
  g = ob_drain(bad.id);
  assert_int_equal(g.n, 0);
  ob_gots_free(&g);
  ob_sub_delete(bad.id);
  ob_sub_delete(good.id);
}

/* Sub_deliveries rows of subscription id (any state). */
static int64_t ob_rows_of_sub(const char *id) {
  char sql[160];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM sub_deliveries WHERE sub_id = '%s'", id);
  return direct_sql(sql);
}

/* Only a subscription's sealed URL does not open (its account does), active or disabled: fan-out
 * makes nothing for it (nothing can go to a URL nobody can read, and no row is made under the
 * account it had), its events wait behind its cursor; mended by an update of url and accountId
 * together, what waited goes out with the mended account filter applied. */
static void test_outbox_unopenable_url_alone_holds_events_for_the_mended_subscription(
    void **state) {
  (void)state;
  char tag[16], ca[64], cb[64], acc_a[64], acc_b[64];
  new_tag(tag);
  snprintf(ca, sizeof ca, "ob-ua-a-%s", tag);
  snprintf(cb, sizeof cb, "ob-ua-b-%s", tag);
  snprintf(acc_a, sizeof acc_a, "acct-ua-a-%s", tag);
  snprintf(acc_b, sizeof acc_b, "acct-ua-b-%s", tag);
  struct subscription on = ob_sub(OB_ALL_TYPES, acc_a), off = ob_sub(OB_ALL_TYPES, acc_a);
  off.enabled = false;
  ob_sub_create(&on);
  ob_sub_create(&off);
  char sql[512];
  for (int i = 0; i < 2; i++) {
    const char *id = i ? off.id : on.id;
    if (strcmp(B->name, "sqlite") == 0)
      snprintf(sql, sizeof sql,
               "UPDATE subscriptions SET url = '', url_sealed = randomblob(48) WHERE id = '%s'",
               id);
    else
      snprintf(sql, sizeof sql,
               "UPDATE subscriptions SET url = '', url_sealed = decode(md5('a') || md5('b'), "
               "'hex') WHERE id = '%s'",
               id);
    (void)direct_sql(sql);
    struct subscription got = ob_sub_read(id);
    assert_true(got.unreadable);
  }
  (void)put_conv(ca, "ua@example.com", acc_a);
  (void)put_conv(cb, "ub@example.com", acc_b);
  (void)ob_fanout(time_now_us());
  (void)ob_fanout(time_now_us());
  assert_int_equal(ob_rows_of_sub(on.id), 0);
  assert_int_equal(ob_rows_of_sub(off.id), 0);
  /* a replay is refused as for an account that does not open: no row under account a */
  for (int i = 0; i < 2; i++) {
    int64_t replayed = -1;
    assert_int_equal(
        ob_sub_write(STORE_WRITE_REPLAY, NULL, false, i ? off.id : on.id, 0, &replayed),
        STORE_HARD);
    assert_int_equal(ob_rows_of_sub(i ? off.id : on.id), 0);
  }
  struct ob_gots g = ob_drain(on.id);
  assert_int_equal(g.n, 0);
  ob_gots_free(&g);
  /* mended: a new URL and account b (the disabled one enabled with it) */
  for (int i = 0; i < 2; i++) {
    struct subscription fix = i ? off : on;
    snprintf(fix.url, sizeof fix.url, "https://example.com/mended/%s", fix.id);
    snprintf(fix.account_id, sizeof fix.account_id, "%s", acc_b);
    fix.enabled = true;
    struct store_write w;
    memset(&w, 0, sizeof w);
    w.kind = STORE_WRITE_SUB_PUT;
    w.sub = &fix;
    w.sub_fields = STORE_SUB_URL | STORE_SUB_ACCOUNT;
    w.sub_enabled_given = i == 1;
    w.audio_fd = -1;
    store_submit_wait(B->store, &w);
    assert_int_equal(w.status, STORE_OK);
    struct subscription got = ob_sub_read(fix.id);
    assert_false(got.unreadable);
    assert_true(got.enabled);
    g = ob_drain(fix.id);
    assert_int_equal(g.n, 1);
    ob_check(&g.items[0], OUTBOX_CREATED, cb);
    ob_gots_free(&g);
  }
  ob_sub_delete(on.id);
  ob_sub_delete(off.id);
}

/* Conversations counted in the totals of an analytics scan (FULL and TOTAL cells). */
static void ix_count_cell(void *cls, const struct store_cell *c) {
  if (c->kind != STORE_CELL_DIM) *(int64_t *)cls += c->conversations;
}

static int64_t ix_analytics_count(struct store *st, const char *account) {
  int64_t n = 0, now = time_now_us(), day = 86400LL * 1000000LL;
  struct store_analytics_query q = {.from_us = INT64_C(1577836800000000),
                                    /* conv_body: 2024 */ .to_us = now + day,
                                    .account_id = account};
  assert_int_equal(st->ops->analytics_scan(st, &q, ix_count_cell, &n), STORE_OK);
  return n;
}

/* How many conversations a list filtered on account finds (asserting the store answers). */
static int64_t ix_list_count(struct store *st, const char *account) {
  struct store_filter f = filter(NULL, account, NULL, 1, 100);
  struct store_page page;
  assert_int_equal(store_list(st, &f, &page), STORE_OK);
  int64_t n = page.total;
  for (size_t i = 0; i < page.count; i++) assert_string_equal(page.items[i].account_id, account);
  store_page_free(&page);
  return n;
}

/* An account id that passes for a blind index (STORE_INDEX_MARK and 32 hex digits: what a sealed
 * row keeps in account_id; no id a user gives starts so) is matched by nothing but itself, and
 * nothing has it: a list or analytics filter on it finds nothing, with ENCRYPTION_KEYS or
 * without, on either backend (PostgreSQL without a ring matched it as it is, so it found the
 * sealed rows whose index it is: another account's conversations); the account as given finds
 * its conversations exactly. A subscription whose plaintext account passes for one (its sealed
 * value lost) does not open: held, passed by at fan-out (PostgreSQL read it as an account of its
 * own and fanned out to it). */
static void test_an_account_that_passes_for_a_blind_index_matches_nothing(void **state) {
  (void)state;
  char tag[16], conv[64], conv2[64], acc[64], idx[STORE_INDEX_TEXT_LEN + 1];
  new_tag(tag);
  snprintf(conv, sizeof conv, "ob-ix-%s", tag);
  snprintf(conv2, sizeof conv2, "ob-ix2-%s", tag);
  snprintf(acc, sizeof acc, "acct-ix-%s", tag);
  (void)put_conv(conv, "ix@example.com", acc);
  if (B->ring) {
    assert_true(store_index_text(B->ring, 0, acc, idx)); /* what conv's row keeps */
  } else {
    idx[0] = STORE_INDEX_MARK;
    for (int i = 0; i < 32; i++) idx[1 + i] = "0123456789abcdef"[(tag[i % 8] + i) & 15];
    idx[STORE_INDEX_TEXT_LEN] = '\0';
  }
  assert_int_equal(ix_list_count(B->store, acc), 1);
  assert_int_equal(ix_list_count(B->store, idx), 0);
  assert_true(ix_analytics_count(B->store, acc) >= 1);
  assert_int_equal(ix_analytics_count(B->store, idx), 0);
  if (strcmp(B->name, "sqlite") != 0) {
    /* an instance without ENCRYPTION_KEYS on the same database */
    char err[512] = "";
    struct store *plain = store_open(B->url, err, sizeof err);
    if (!plain) fail_msg("an instance without a ring: %s", err);
    assert_int_equal(ix_list_count(plain, idx), 0);
    assert_int_equal(ix_analytics_count(plain, idx), 0);
    store_close(plain);
  }
  struct subscription sub = ob_sub(OB_ALL_TYPES, acc);
  ob_sub_create(&sub);
  char sql[256];
  snprintf(sql, sizeof sql,
           "UPDATE subscriptions SET account_id = %s(1) || '%s', account_sealed = NULL WHERE id "
           "= '%s'",
           strcmp(B->name, "sqlite") == 0 ? "char" : "chr", idx + 1, sub.id);
  (void)direct_sql(sql);
  struct subscription got = ob_sub_read(sub.id);
  assert_true(got.unreadable);
  assert_string_equal(got.account_id, "");
  (void)put_conv(conv2, "ix@example.com", acc);
  (void)ob_fanout(time_now_us());
  assert_int_equal(ob_rows_of_sub(sub.id), 0);
  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 0);
  ob_gots_free(&g);
  ob_sub_delete(sub.id);
}

/* An update changes only the members it names (sub_fields), in one statement: two made from
 * one read, as two PATCHes of different members at once are, keep both changes. */
/* An update as PATCH makes it without "enabled": only the members in fields change. */
static enum store_status ob_sub_change(const struct subscription *sub, unsigned fields) {
  struct store_write w;
  memset(&w, 0, sizeof w);
  w.kind = STORE_WRITE_SUB_PUT;
  w.sub = sub;
  w.sub_fields = fields;
  w.audio_fd = -1;
  store_submit_wait(B->store, &w);
  return w.status;
}

static void test_outbox_update_changes_only_the_named_members(void **state) {
  (void)state;
  char tag[16], account[64];
  new_tag(tag);
  snprintf(account, sizeof account, "acct-m-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, account);
  ob_sub_create(&sub);
  struct subscription a = ob_sub_read(sub.id), b = a;
  snprintf(a.url, sizeof a.url, "https://example.net/a-%s", tag);
  a.max_per_second = 99; /* not named: ignored */
  b.max_per_second = 42;
  b.event_types = 1u << OUTBOX_CREATED;
  snprintf(b.url, sizeof b.url, "https://example.net/not-named");
  assert_int_equal(ob_sub_change(&a, STORE_SUB_URL), STORE_OK);
  assert_int_equal(ob_sub_change(&b, STORE_SUB_MAX_PER_SECOND | STORE_SUB_TYPES), STORE_OK);
  struct subscription got = ob_sub_read(sub.id);
  assert_string_equal(got.url, a.url);
  assert_int_equal(got.max_per_second, 42);
  assert_int_equal(got.event_types, 1u << OUTBOX_CREATED);
  assert_string_equal(got.account_id, account);
  assert_true(got.enabled);
  /* the account alone, to every account; then nothing named: only updated_us moves */
  struct subscription c = got;
  c.account_id[0] = '\0';
  c.max_per_second = 0;
  assert_int_equal(ob_sub_change(&c, STORE_SUB_ACCOUNT), STORE_OK);
  got = ob_sub_read(sub.id);
  assert_string_equal(got.account_id, "");
  assert_int_equal(got.max_per_second, 42);
  struct subscription d = sub; /* a stale read of everything */
  d.enabled = false;
  d.updated_us = got.updated_us + 7;
  assert_int_equal(ob_sub_change(&d, 0), STORE_OK);
  got = ob_sub_read(sub.id);
  assert_string_equal(got.url, a.url);
  assert_int_equal(got.max_per_second, 42);
  assert_int_equal(got.event_types, 1u << OUTBOX_CREATED);
  assert_string_equal(got.account_id, "");
  assert_true(got.enabled);
  assert_int_equal(got.updated_us, d.updated_us);
  ob_sub_delete(sub.id);
}

/* Whether text is anywhere in the database as stored: SQLite's file and write-ahead log,
 * every PostgreSQL table. */
static bool raw_contains(const char *text) {
  if (strcmp(B->name, "sqlite") != 0) return raw_matches_anywhere(text) > 0;
  char wal[4300];
  snprintf(wal, sizeof wal, "%s-wal", B->sqlite_path);
  return file_contains(B->sqlite_path, text, strlen(text)) ||
         file_contains(wal, text, strlen(text));
}

/* A subscription left with its URL and account in plaintext (as rows from before they were
 * sealed are) for test_outbox_reads_after_rotation: the rotation's reencrypt seals them. */
static char plain_sub_id[OUTBOX_SUB_ID_MAX], plain_sub_url[OUTBOX_URL_MAX + 1],
    plain_sub_account[64];

/* With a ring a subscription's URL (tokens in it) and its account are sealed at rest on both
 * backends (the URL '' and the account a blind index in their columns), read back opened, also
 * after an update; the account filter still matches events; a row from before they were sealed
 * (plaintext URL and account) reads as it is and is still filtered by its account. */
static void test_outbox_subscription_url_and_account_sealed(void **state) {
  (void)state;
  char tag[16], account[64], token[64], id1[64], id2[64], sql[OUTBOX_URL_MAX + 512];
  new_tag(tag);
  snprintf(account, sizeof account, "acct-sealed-%s", tag);
  snprintf(token, sizeof token, "tok-%s", tag);
  snprintf(id1, sizeof id1, "seal-sub-1-%s", tag);
  snprintf(id2, sizeof id2, "seal-sub-2-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, account);
  snprintf(sub.url, sizeof sub.url, "https://example.com/hooks?token=%s", token);
  ob_sub_create(&sub);
  struct subscription got = ob_sub_read(sub.id);
  assert_string_equal(got.url, sub.url);
  assert_string_equal(got.account_id, account);
  (void)put_conv(id1, "s@example.com", account);
  (void)put_conv(id2, "s@example.com", "acct-someone-else");
  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_CREATED, id1);
  ob_gots_free(&g);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM subscriptions WHERE id = '%s' AND url = '' AND url_sealed IS NOT "
           "NULL AND account_sealed IS NOT NULL AND account_id <> '%s'",
           sub.id, account);
  assert_int_equal(direct_sql(sql), B->ring ? 1 : 0);
  if (B->ring) {
    assert_false(raw_contains(token));
    assert_false(raw_contains(account));
  }
  /* changed: the new URL sealed likewise */
  snprintf(sub.url, sizeof sub.url, "https://example.com/hooks?token=%s-changed", token);
  assert_int_equal(ob_sub_change(&sub, STORE_SUB_URL), STORE_OK);
  got = ob_sub_read(sub.id);
  assert_string_equal(got.url, sub.url);
  assert_string_equal(got.account_id, account);
  assert_int_equal(direct_sql(sql), B->ring ? 1 : 0);
  if (B->ring) assert_false(raw_contains("-changed"));
  ob_sub_delete(sub.id);
}

/* With a ring, a subscription row from before URLs and accounts were sealed (both plaintext)
 * reads as it is and is still filtered by its account; kept for test_outbox_reads_after_rotation,
 * where the rotation's reencrypt has sealed it. Run late: a kept subscription holds prune back. */
static void test_outbox_subscription_from_before_sealing(void **state) {
  (void)state;
  char tag[16], account[64], id1[64], id2[64], sql[OUTBOX_URL_MAX + 512];
  new_tag(tag);
  snprintf(account, sizeof account, "acct-plain-%s", tag);
  snprintf(id1, sizeof id1, "plain-sub-1-%s", tag);
  snprintf(id2, sizeof id2, "plain-sub-2-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, account);
  snprintf(sub.url, sizeof sub.url, "https://example.com/hooks?token=plaintok-%s", tag);
  ob_sub_create(&sub);
  snprintf(sql, sizeof sql,
           "UPDATE subscriptions SET url = '%s', url_sealed = NULL, account_id = '%s', "
           "account_sealed = NULL WHERE id = '%s'",
           sub.url, account, sub.id);
  (void)direct_sql(sql);
  struct subscription got = ob_sub_read(sub.id);
  assert_string_equal(got.url, sub.url);
  assert_string_equal(got.account_id, account);
  (void)put_conv(id1, "s@example.com", account);
  (void)put_conv(id2, "s@example.com", "acct-someone-else");
  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_CREATED, id1);
  ob_gots_free(&g);
  snprintf(plain_sub_id, sizeof plain_sub_id, "%s", sub.id);
  snprintf(plain_sub_url, sizeof plain_sub_url, "%s", sub.url);
  snprintf(plain_sub_account, sizeof plain_sub_account, "%s", account);
}

/* Subscriptions: read back as written (secret included), listed oldest first, replaced, deleted
 * with their deliveries; each change audited in its transaction. */
static void test_outbox_subscriptions_round_trip(void **state) {
  (void)state;
  char tag[16], account[64];
  new_tag(tag);
  snprintf(account, sizeof account, "acct-%s", tag);
  int64_t h0 = audit_head_id();
  struct audit_who who = who_of(tag, "sub");
  struct subscription s1 = ob_sub((1u << OUTBOX_CREATED) | (1u << OUTBOX_DELETED), account);
  s1.max_per_second = 7;
  struct subscription s2 = ob_sub(OB_ALL_TYPES, NULL);
  s2.created_us = s1.created_us + 1;
  struct store_write w;
  memset(&w, 0, sizeof w);
  w.kind = STORE_WRITE_SUB_PUT;
  w.sub = &s1;
  w.sub_create = true;
  w.who = who;
  w.audio_fd = -1;
  store_submit_wait(B->store, &w);
  assert_int_equal(w.status, STORE_OK);
  ob_sub_create(&s2);
  struct subscription dup = s2; /* the same id again: refused alone, the stored one kept */
  snprintf(dup.url, sizeof dup.url, "https://example.com/dup");
  assert_int_not_equal(ob_sub_write(STORE_WRITE_SUB_PUT, &dup, true, NULL, 0, NULL), STORE_OK);
  struct subscription got = ob_sub_read(s2.id);
  assert_string_equal(got.url, s2.url);
  got = ob_sub_read(s1.id);
  assert_string_equal(got.id, s1.id);
  assert_string_equal(got.url, s1.url);
  assert_sub_secret(&got, OB_SECRET);
  assert_int_equal(got.event_types, s1.event_types);
  assert_string_equal(got.account_id, account);
  assert_true(got.enabled);
  assert_false(got.paused);
  assert_int_equal(got.max_per_second, 7);
  assert_string_equal(got.disabled_reason, "");
  assert_int_equal(got.created_us, s1.created_us);
  assert_int_equal(got.updated_us, s1.updated_us);
  assert_int_equal(got.last_success_us, 0);
  assert_string_equal(subscription_state(&got), "active");
  got = ob_sub_read(s2.id);
  assert_string_equal(got.account_id, "");
  assert_int_equal(got.event_types, OB_ALL_TYPES);

  struct subscription *all;
  size_t n;
  assert_int_equal(store_sub_list(B->store, &all, &n), STORE_OK);
  size_t i1 = n, i2 = n;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(all[i].id, s1.id) == 0) i1 = i;
    if (strcmp(all[i].id, s2.id) == 0) i2 = i;
  }
  assert_true(i1 < i2 && i2 < n);
  assert_sub_secret(&all[i1], OB_SECRET);
  free(all);

  /* replaced: every field but the id, the secret and the creation time */
  struct subscription upd = s1;
  snprintf(upd.url, sizeof upd.url, "http://example.org/other");
  snprintf(upd.secret, sizeof upd.secret, "whsec_not-kept");
  upd.event_types = 1u << OUTBOX_UPDATED;
  upd.account_id[0] = '\0';
  upd.enabled = false;
  upd.max_per_second = 0;
  upd.updated_us = s1.updated_us + 5;
  memset(&w, 0, sizeof w);
  w.kind = STORE_WRITE_SUB_PUT;
  w.sub = &upd;
  w.sub_enabled_given = true;
  w.sub_fields = STORE_SUB_ALL;
  w.who = who;
  w.audio_fd = -1;
  store_submit_wait(B->store, &w);
  assert_int_equal(w.status, STORE_OK);
  got = ob_sub_read(s1.id);
  assert_string_equal(got.url, "http://example.org/other");
  assert_sub_secret(&got, OB_SECRET);
  assert_int_equal(got.event_types, 1u << OUTBOX_UPDATED);
  assert_string_equal(got.account_id, "");
  assert_false(got.enabled);
  assert_string_equal(subscription_state(&got), "disabled");
  assert_int_equal(got.created_us, s1.created_us);
  assert_int_equal(got.updated_us, s1.updated_us + 5);

  /* unknown ids */
  struct subscription ghost = ob_sub(OB_ALL_TYPES, NULL);
  assert_int_equal(store_sub_get(B->store, ghost.id, &got), STORE_NOT_FOUND);
  assert_int_equal(ob_sub_write(STORE_WRITE_SUB_PUT, &ghost, false, NULL, 0, NULL),
                   STORE_NOT_FOUND);
  int64_t erased = -1;
  assert_int_equal(ob_sub_write(STORE_WRITE_REPLAY, NULL, false, ghost.id, 0, &erased),
                   STORE_NOT_FOUND);
  assert_int_equal(ob_sub_write(STORE_WRITE_SUB_DELETE, NULL, false, ghost.id, 0, &erased),
                   STORE_OK);
  assert_int_equal(erased, 0);

  /* deleted, with what it had pending and its attempts */
  char conv[64];
  snprintf(conv, sizeof conv, "ob-sub-%s", tag);
  (void)put_conv(conv, "s@example.com", "acc");
  (void)ob_fanout(time_now_us());
  struct store_outbox_work o = ob_claim(s2.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  ob_finish(&o.jobs[0], DELIVERY_RETRY, 500, time_now_us(), time_now_us());
  store_jobs_free(&o);
  struct store_attempt_page page;
  assert_int_equal(store_attempt_list(B->store, s2.id, 0, 0, 10, &page), STORE_OK);
  assert_int_equal(page.count, 1);
  free(page.items);
  memset(&w, 0, sizeof w);
  w.kind = STORE_WRITE_SUB_DELETE;
  w.sub_id = s2.id;
  w.who = who;
  w.audio_fd = -1;
  store_submit_wait(B->store, &w);
  assert_int_equal(w.status, STORE_OK);
  assert_int_equal(w.erased, 1);
  assert_int_equal(store_sub_get(B->store, s2.id, &got), STORE_NOT_FOUND);
  assert_int_equal(store_attempt_list(B->store, s2.id, 0, 0, 10, &page), STORE_OK);
  assert_int_equal(page.count, 0);
  free(page.items);
  o = ob_claim(s2.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);

  struct store_audit_page ap = audit_after(h0);
  size_t seen = 0;
  for (size_t i = 0; i < ap.count; i++) {
    const struct audit_entry *e = &ap.items[i];
    if (strcmp(e->who.request_id, who.request_id) != 0) continue;
    enum audit_action want[] = {AUDIT_SUBSCRIPTION_CREATED, AUDIT_SUBSCRIPTION_UPDATED,
                                AUDIT_SUBSCRIPTION_DELETED};
    assert_true(seen < 3);
    check_entry(e, want[seen], seen == 2 ? s2.id : s1.id, AUDIT_OK, &who);
    seen++;
  }
  assert_int_equal(seen, 3);
  free(ap.items);
  assert_chain_whole();
  ob_sub_delete(s1.id);
}

/* Fan-out gives each subscription the events its types and account ask for, also while it is
 * disabled or paused (they wait); made active again, what waited is due at once. A new
 * subscription gets only what is committed after it. */
static void test_outbox_fanout_types_accounts_and_waiting(void **state) {
  (void)state;
  char tag[16], x[64], y[64], acc_x[64], acc_y[64];
  new_tag(tag);
  snprintf(x, sizeof x, "ob-x-%s", tag);
  snprintf(y, sizeof y, "ob-y-%s", tag);
  snprintf(acc_x, sizeof acc_x, "acc-x-%s", tag);
  snprintf(acc_y, sizeof acc_y, "acc-y-%s", tag);
  struct subscription created_only = ob_sub(1u << OUTBOX_CREATED, NULL);
  struct subscription of_x = ob_sub(OB_ALL_TYPES, acc_x);
  struct subscription off = ob_sub(OB_ALL_TYPES, NULL);
  off.enabled = false;
  struct subscription paused = ob_sub(OB_ALL_TYPES, NULL);
  paused.paused = true;
  ob_sub_create(&created_only);
  ob_sub_create(&of_x);
  ob_sub_create(&off);
  ob_sub_create(&paused);
  char *x2 = conv_body(x, "x@example.com", acc_x, 2, NULL);
  (void)put_conv(x, "x@example.com", acc_x);
  (void)put_ok(x2);
  (void)put_conv(y, "y@example.com", acc_y);
  struct subscription late = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&late);
  assert_true(ob_fanout(time_now_us()) >= 2 + 2 + 3 + 3);

  struct ob_gots g = ob_drain(created_only.id);
  assert_int_equal(g.n, 2);
  ob_check(&g.items[0], OUTBOX_CREATED, x);
  ob_check(&g.items[1], OUTBOX_CREATED, y);
  ob_gots_free(&g);
  g = ob_drain(of_x.id);
  assert_int_equal(g.n, 2);
  ob_check(&g.items[0], OUTBOX_CREATED, x);
  ob_check(&g.items[1], OUTBOX_UPDATED, x);
  ob_gots_free(&g);
  g = ob_drain(late.id);
  assert_int_equal(g.n, 0);
  ob_gots_free(&g);
  /* disabled and paused: nothing is due, nothing is lost */
  struct subscription *waiting[2] = {&off, &paused};
  for (int i = 0; i < 2; i++) {
    g = ob_drain(waiting[i]->id);
    assert_int_equal(g.n, 0);
    ob_gots_free(&g);
  }
  struct store_outbox_stats st;
  assert_int_equal(store_outbox_stats(B->store, NULL, &st), STORE_OK);
  assert_true(st.pending_deliveries >= 6);
  assert_true(st.oldest_pending_us > 0);
  for (int i = 0; i < 2; i++) {
    waiting[i]->enabled = true;
    waiting[i]->paused = false;
    ob_sub_update(waiting[i]);
    g = ob_drain(waiting[i]->id);
    assert_int_equal(g.n, 3);
    ob_check(&g.items[0], OUTBOX_CREATED, x);
    ob_check(&g.items[1], OUTBOX_UPDATED, x);
    ob_check(&g.items[2], OUTBOX_CREATED, y);
    ob_gots_free(&g);
  }
  ob_sub_delete(created_only.id);
  ob_sub_delete(of_x.id);
  ob_sub_delete(off.id);
  ob_sub_delete(paused.id);
  ob_sub_delete(late.id);
  free(x2);
}

/* A conversation's deliveries to one subscription go in event order: a later one is due only
 * when no earlier one is pending (leased or waiting for a retry); other conversations go on. */
static void test_outbox_claims_keep_each_conversations_order(void **state) {
  (void)state;
  char tag[16], k[64], l[64];
  new_tag(tag);
  snprintf(k, sizeof k, "ob-k-%s", tag);
  snprintf(l, sizeof l, "ob-l-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  char *k2 = conv_body(k, "k@example.com", "acc", 2, NULL);
  char *k3 = conv_body(k, "k@example.com", "acc", 3, NULL);
  (void)put_conv(k, "k@example.com", "acc");
  (void)put_ok(k2);
  (void)put_ok(k3);
  (void)put_conv(l, "l@example.com", "acc");
  const int64_t t = time_now_us(), hour = 3600LL * 1000000LL;
  assert_true(ob_fanout(t) >= 4);
  struct store_outbox_work o = ob_claim(sub.id, t, OB_LEASE_US, 10);
  assert_int_equal(o.count, 2); /* k's first event and l's */
  const struct store_delivery_job *kj = &o.jobs[0], *lj = &o.jobs[1];
  assert_string_equal(kj->event.conversation_id, k);
  assert_int_equal(kj->event.type, OUTBOX_CREATED);
  assert_string_equal(lj->event.conversation_id, l);
  assert_int_equal(kj->attempt, 1);
  assert_int_equal(kj->first_attempt_us, 0);
  char k1_id[OUTBOX_EVENT_ID_MAX];
  snprintf(k1_id, sizeof k1_id, "%s", kj->event.id);
  struct store_outbox_work again = ob_claim(sub.id, t, OB_LEASE_US, 10);
  assert_int_equal(again.count, 0); /* k's next waits behind the first, which is leased */
  store_jobs_free(&again);
  ob_finish(kj, DELIVERY_RETRY, 503, t, t + hour);
  ob_finish(lj, DELIVERY_DELIVERED, 200, t, 0);
  store_jobs_free(&o);
  again = ob_claim(sub.id, t + 1000000, OB_LEASE_US, 10);
  assert_int_equal(again.count, 0); /* k's first waits for its retry, k's next behind it */
  store_jobs_free(&again);
  ob_retries_age(sub.id, hour);
  o = ob_claim(sub.id, t + hour, OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.id, k1_id);
  assert_int_equal(o.jobs[0].attempt, 2);
  assert_int_equal(o.jobs[0].first_attempt_us, t);
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, t + hour, 0);
  store_jobs_free(&o);
  for (int v = 2; v <= 3; v++) {
    o = ob_claim(sub.id, t + hour, OB_LEASE_US, 10);
    assert_int_equal(o.count, 1);
    assert_string_equal(o.jobs[0].event.conversation_id, k);
    assert_int_equal(o.jobs[0].event.type, OUTBOX_UPDATED);
    char want[32];
    snprintf(want, sizeof want, "\"messageCount\":%d", v);
    assert_non_null(strstr(o.jobs[0].event.data, want));
    ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, t + hour, 0);
    store_jobs_free(&o);
  }
  o = ob_claim(sub.id, t + hour, OB_LEASE_US, 10);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  ob_sub_delete(sub.id);
  free(k2);
  free(k3);
}

/* A claimed delivery is leased: not claimed again until its lease runs out, then it is (a
 * dispatcher that died: at least once). A result for a delivery not leased by us is ignored; a
 * release hands it back without an attempt. */
static void test_outbox_leases(void **state) {
  (void)state;
  char tag[16], m[64], m2[64];
  new_tag(tag);
  snprintf(m, sizeof m, "ob-m-%s", tag);
  snprintf(m2, sizeof m2, "ob-m2-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  (void)put_conv(m, "m@example.com", "acc");
  const int64_t t = time_now_us(), s = 1000000;
  (void)ob_fanout(t);
  struct store_outbox_work o = ob_claim(sub.id, t, 10 * s, 10);
  assert_int_equal(o.count, 1);
  char id[OUTBOX_EVENT_ID_MAX];
  snprintf(id, sizeof id, "%s", o.jobs[0].event.id);
  store_jobs_free(&o);
  o = ob_claim(sub.id, t + 5 * s, 10 * s, 10);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  ob_leases_age(sub.id, NULL, 11 * s);
  o = ob_claim(sub.id, t + 11 * s, 10 * s, 10);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.id, id);
  assert_int_equal(o.jobs[0].attempt, 1);
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, t + 11 * s, 0);
  store_jobs_free(&o);
  o = ob_claim(sub.id, t + 60 * s, 10 * s, 10);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);

  (void)put_conv(m2, "m@example.com", "acc");
  (void)ob_fanout(t);
  o = ob_claim(sub.id, t, 10 * s, 10);
  assert_int_equal(o.count, 1);
  ob_finish(&o.jobs[0], STORE_DELIVERY_RELEASE, 0, t, t); /* due again at once */
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, t, 0);   /* no longer ours: ignored */
  store_jobs_free(&o);
  o = ob_claim(sub.id, t, 10 * s, 10);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.conversation_id, m2);
  assert_int_equal(o.jobs[0].attempt, 1);
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, t, 0);
  store_jobs_free(&o);
  struct store_attempt_page page;
  assert_int_equal(store_attempt_list(B->store, sub.id, 0, 0, 100, &page), STORE_OK);
  assert_int_equal(page.count, 2); /* the two deliveries; neither the release nor the ignored */
  free(page.items);
  ob_sub_delete(sub.id);
}

/* The attempts store_attempt_list gives for (before_id, skip, limit): exactly the ids want. */
static void attempt_ids_are(const char *sub, int64_t before_id, int64_t skip, int64_t limit,
                            const int64_t *want, size_t n) {
  struct store_attempt_page got;
  assert_int_equal(store_attempt_list(B->store, sub, before_id, skip, limit, &got), STORE_OK);
  assert_int_equal(got.count, n);
  for (size_t i = 0; i < n; i++) assert_int_equal(got.items[i].id, want[i]);
  free(got.items);
}

/* What FINISH does with each outcome: delivered goes; a retry waits for its time; exhausted, a
 * dead letter when the subscription succeeded since the event's first attempt, else the
 * subscription is paused and the event waits; 410 disables it and the event waits; made active
 * again, what waited is due at once. Every attempt is recorded, newest first. */
static void test_outbox_finish_outcomes(void **state) {
  (void)state;
  char tag[16], p1[64], p2[64], q[64], r[64];
  new_tag(tag);
  snprintf(p1, sizeof p1, "ob-p1-%s", tag);
  snprintf(p2, sizeof p2, "ob-p2-%s", tag);
  snprintf(q, sizeof q, "ob-q-%s", tag);
  snprintf(r, sizeof r, "ob-r-%s", tag);
  const int64_t t = time_now_us(), hour = 3600LL * 1000000LL;
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  struct store_outbox_stats st0;
  assert_int_equal(store_outbox_stats(B->store, NULL, &st0), STORE_OK);
  (void)put_conv(p1, "p@example.com", "acc");
  (void)put_conv(p2, "p@example.com", "acc");
  (void)ob_fanout(t);
  struct store_outbox_work o = ob_claim(sub.id, t, OB_LEASE_US, 10);
  assert_int_equal(o.count, 2);
  assert_string_equal(o.jobs[1].event.conversation_id, p2);
  ob_finish(&o.jobs[1], DELIVERY_RETRY, 500, t, t);
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, t + 1, 0);
  char p1_id[OUTBOX_EVENT_ID_MAX], p2_id[OUTBOX_EVENT_ID_MAX];
  snprintf(p1_id, sizeof p1_id, "%s", o.jobs[0].event.id);
  snprintf(p2_id, sizeof p2_id, "%s", o.jobs[1].event.id);
  store_jobs_free(&o);
  assert_int_equal(ob_sub_read(sub.id).last_success_us, t + 1);
  o = ob_claim(sub.id, t + 2, OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.id, p2_id);
  assert_int_equal(o.jobs[0].attempt, 2);
  assert_int_equal(o.jobs[0].first_attempt_us, t);
  ob_finish(&o.jobs[0], DELIVERY_FAILED, 500, t + 3, t + hour); /* success since: dead letter */
  store_jobs_free(&o);
  o = ob_claim(sub.id, t + 2 * hour, OB_LEASE_US, 10);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  struct subscription now = ob_sub_read(sub.id);
  assert_string_equal(subscription_state(&now), "active");
  struct store_outbox_stats st;
  assert_int_equal(store_outbox_stats(B->store, NULL, &st), STORE_OK);
  assert_int_equal(st.dead_letters, st0.dead_letters + 1);
  /* a dead letter holds nothing back: the conversation's next event goes */
  char *p2b = conv_body(p2, "p@example.com", "acc", 2, NULL);
  (void)put_ok(p2b);
  free(p2b);
  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_UPDATED, p2);
  ob_gots_free(&g);
  struct store_attempt_page page;
  assert_int_equal(store_attempt_list(B->store, sub.id, 0, 0, 100, &page), STORE_OK);
  assert_int_equal(page.count, 4);
  const struct store_attempt *a = page.items;
  assert_true(a[0].id > a[1].id && a[1].id > a[2].id && a[2].id > a[3].id);
  assert_int_equal(a[0].outcome, DELIVERY_DELIVERED); /* p2's update */
  assert_int_equal(a[1].outcome, DELIVERY_FAILED);
  assert_string_equal(a[1].event_id, p2_id);
  assert_int_equal(a[1].type, OUTBOX_CREATED);
  assert_int_equal(a[1].attempt, 2);
  assert_int_equal(a[1].status_code, 500);
  assert_int_equal(a[1].latency_ms, 12);
  assert_int_equal(a[1].at_us, t + 3);
  assert_string_equal(a[1].response_head, "answer 500");
  assert_int_equal(a[2].outcome, DELIVERY_DELIVERED);
  assert_string_equal(a[2].event_id, p1_id);
  assert_int_equal(a[3].outcome, DELIVERY_RETRY);
  assert_int_equal(a[3].attempt, 1);
  attempt_ids_are(sub.id, a[1].id, 0, 1, (int64_t[]){a[2].id}, 1);
  /* skipping: the page a page number names (newest first), after a cursor too */
  attempt_ids_are(sub.id, 0, 2, 2, (int64_t[]){a[2].id, a[3].id}, 2);
  attempt_ids_are(sub.id, a[0].id, 2, 10, (int64_t[]){a[3].id}, 1);
  attempt_ids_are(sub.id, 0, 4, 10, NULL, 0);
  free(page.items);

  /* no success since the first attempt: paused, the event waits (and is due once resumed) */
  struct subscription never = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&never);
  (void)put_conv(q, "q@example.com", "acc");
  (void)ob_fanout(t);
  o = ob_claim(never.id, t, OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  ob_finish(&o.jobs[0], DELIVERY_FAILED, 0, t, t + hour);
  store_jobs_free(&o);
  now = ob_sub_read(never.id);
  assert_true(now.paused);
  assert_string_equal(subscription_state(&now), "paused");
  assert_int_equal(store_attempt_list(B->store, never.id, 0, 0, 10, &page), STORE_OK);
  assert_int_equal(page.count, 1);
  assert_int_equal(page.items[0].outcome, DELIVERY_PAUSED);
  free(page.items);
  o = ob_claim(never.id, t + 2 * hour, OB_LEASE_US, 10);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  assert_int_equal(store_outbox_stats(B->store, NULL, &st), STORE_OK);
  assert_true(st.pending_deliveries >= 1);
  now.paused = false;
  ob_sub_update(&now);
  o = ob_claim(never.id, time_now_us(), OB_LEASE_US, 10); /* due at once, not in an hour */
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.conversation_id, q);
  assert_int_equal(o.jobs[0].attempt, 2);
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  store_jobs_free(&o);

  /* 410 Gone: disabled ("gone"), the event waits */
  struct subscription gone = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&gone);
  (void)put_conv(r, "r@example.com", "acc");
  (void)ob_fanout(t);
  o = ob_claim(gone.id, t, OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  ob_finish(&o.jobs[0], DELIVERY_DISABLED, 410, t, t + hour);
  store_jobs_free(&o);
  now = ob_sub_read(gone.id);
  assert_false(now.enabled);
  assert_string_equal(now.disabled_reason, "gone");
  assert_string_equal(subscription_state(&now), "disabled");
  o = ob_claim(gone.id, t + 2 * hour, OB_LEASE_US, 10);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  now.enabled = true;
  now.disabled_reason[0] = '\0';
  ob_sub_update(&now);
  o = ob_claim(gone.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.conversation_id, r);
  assert_int_equal(o.jobs[0].attempt, 2);
  store_jobs_free(&o);
  assert_int_equal(store_attempt_list(B->store, gone.id, 0, 0, 10, &page), STORE_OK);
  assert_int_equal(page.count, 1);
  assert_int_equal(page.items[0].outcome, DELIVERY_DISABLED);
  assert_int_equal(page.items[0].status_code, 410);
  free(page.items);
  ob_sub_delete(sub.id);
  ob_sub_delete(never.id);
  ob_sub_delete(gone.id);
}

/* Reads broker cursor name with store s (busy: another holds it): the events after it. */
static struct store_outbox_work ob_queue_read(struct store *s, const char *name, int64_t now,
                                              int64_t limit) {
  struct store *saved = use_store(s);
  struct store_outbox_work o = {.op = STORE_OUTBOX_QUEUE_READ,
                                .now_us = now,
                                .lease_us = 10LL * 1000000LL,
                                .limit = limit,
                                .cursor_name = name};
  ob_run(&o);
  use_store(saved);
  return o;
}

static void ob_queue_advance(struct store *s, const char *name, int64_t upto) {
  struct store *saved = use_store(s);
  struct store_outbox_work o = {.op = STORE_OUTBOX_QUEUE_ADVANCE,
                                .now_us = time_now_us(),
                                .cursor_name = name,
                                .upto_seq = upto};
  ob_run(&o);
  use_store(saved);
}

/* Moves broker cursor name past every event there is now. */
static void ob_queue_skip_all(const char *name) {
  for (;;) {
    struct store_outbox_work o = ob_queue_read(B->store, name, time_now_us(), 10000);
    assert_false(o.busy);
    size_t n = o.count;
    if (n) ob_queue_advance(B->store, name, o.events[n - 1].seq);
    store_jobs_free(&o);
    if (!n) return;
  }
}

/* A broker cursor left behind would hold back every later prune (PostgreSQL's groups share one
 * database): no store operation removes one, so the test does (the suggested schema's name). */
static void ob_queue_drop(const char *name) {
  char sql[160];
  snprintf(sql, sizeof sql, "DELETE FROM outbox_cursors WHERE name = '%s'", name);
  (void)direct_sql(sql);
}

static int64_t ob_replay(const char *sub, int64_t since) {
  int64_t n = -1;
  assert_int_equal(ob_sub_write(STORE_WRITE_REPLAY, NULL, false, sub, since, &n), STORE_OK);
  return n;
}

/* Replay: every event since then that the subscription wants and was given becomes due again,
 * with its original id, attempts counted from 1. */
static void test_outbox_replay(void **state) {
  (void)state;
  char tag[16], u1[64], u2[64];
  new_tag(tag);
  snprintf(u1, sizeof u1, "ob-u1-%s", tag);
  snprintf(u2, sizeof u2, "ob-u2-%s", tag);
  struct subscription all = ob_sub(OB_ALL_TYPES, NULL);
  struct subscription created = ob_sub(1u << OUTBOX_CREATED, NULL);
  ob_sub_create(&all);
  ob_sub_create(&created);
  int64_t h0 = audit_head_id();
  char *u1b = conv_body(u1, "u@example.com", "acc", 2, NULL);
  (void)put_conv(u1, "u@example.com", "acc");
  (void)put_ok(u1b);
  (void)put_conv(u2, "u@example.com", "acc");
  struct ob_gots first = ob_drain(all.id);
  assert_int_equal(first.n, 3);
  struct ob_gots g = ob_drain(created.id);
  assert_int_equal(g.n, 2);
  ob_gots_free(&g);
  assert_int_equal(ob_replay(all.id, 0), 3);
  g = ob_drain(all.id);
  assert_int_equal(g.n, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_string_equal(g.items[i].id, first.items[i].id);
    assert_int_equal(g.items[i].attempt, 1);
    assert_string_equal(g.items[i].data, first.items[i].data);
  }
  ob_gots_free(&g);
  /* since the second event's time: the second and the third */
  assert_int_equal(ob_replay(all.id, first.items[1].created_us), 2);
  g = ob_drain(all.id);
  assert_int_equal(g.n, 2);
  assert_string_equal(g.items[0].id, first.items[1].id);
  assert_string_equal(g.items[1].id, first.items[2].id);
  ob_gots_free(&g);
  assert_int_equal(ob_replay(created.id, 0), 2); /* only the types it wants */
  /* replayed while its delivery is in flight: the answer to that send does not close it */
  (void)ob_fanout(time_now_us());
  struct store_outbox_work o = ob_claim(created.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 2);
  assert_int_equal(ob_replay(created.id, first.items[2].created_us), 1);
  for (size_t i = 0; i < o.count; i++)
    ob_finish(&o.jobs[i], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  store_jobs_free(&o);
  g = ob_drain(created.id);
  assert_int_equal(g.n, 1);
  assert_string_equal(g.items[0].id, first.items[2].id);
  assert_int_equal(g.items[0].attempt, 1);
  ob_gots_free(&g);
  assert_int_equal(ob_replay(all.id, time_now_us() + 1000000), 0);
  struct store_audit_page ap = audit_after(h0);
  int replayed = 0;
  for (size_t i = 0; i < ap.count; i++)
    if (ap.items[i].action == AUDIT_SUBSCRIPTION_REPLAYED) {
      assert_true(strcmp(ap.items[i].target, all.id) == 0 ||
                  strcmp(ap.items[i].target, created.id) == 0);
      replayed++;
    }
  assert_int_equal(replayed, 5);
  free(ap.items);
  ob_gots_free(&first);
  ob_sub_delete(all.id);
  ob_sub_delete(created.id);
  free(u1b);
}

/* Erasure and retention take a conversation's earlier events and their pending deliveries with
 * it and write conversation.deleted (kept with the conversation's account); erasing nothing
 * writes nothing. */
static void test_outbox_erasure_leaves_only_deleted(void **state) {
  (void)state;
  char tag[16], z[64], w[64], old[64], acc[64];
  new_tag(tag);
  snprintf(z, sizeof z, "ob-z-%s", tag);
  snprintf(w, sizeof w, "ob-w-%s", tag);
  snprintf(old, sizeof old, "ob-old-%s", tag);
  snprintf(acc, sizeof acc, "acc-z-%s", tag);
  struct subscription all = ob_sub(OB_ALL_TYPES, NULL);
  struct subscription of_acc = ob_sub(OB_ALL_TYPES, acc);
  ob_sub_create(&all);
  ob_sub_create(&of_acc);
  char *z2 = conv_body(z, "z@example.com", acc, 2, NULL);
  (void)put_conv(z, "z@example.com", acc);
  (void)ob_fanout(time_now_us());
  struct store_outbox_work inflight = ob_claim(all.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(inflight.count, 1); /* z's first event, on its way when z is erased */
  (void)put_ok(z2);
  (void)put_conv(w, "w@example.com", "acc");
  assert_true(erase_ok(z) > 0);
  ob_finish(&inflight.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0); /* gone: ignored */
  store_jobs_free(&inflight);
  assert_int_equal(erase_ok(z), 0); /* nothing: no second deleted event */
  struct ob_gots g = ob_drain(all.id);
  assert_int_equal(g.n, 2);
  ob_check(&g.items[0], OUTBOX_CREATED, w);
  ob_check(&g.items[1], OUTBOX_DELETED, z);
  char want[160];
  snprintf(want, sizeof want, "{\"conversationId\":\"%s\",\"reason\":\"erased\"}", z);
  assert_string_equal(g.items[1].data, want);
  ob_gots_free(&g);
  g = ob_drain(of_acc.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_DELETED, z);
  ob_gots_free(&g);
  /* a replay finds nothing of z but its deletion */
  assert_int_equal(ob_replay(all.id, 0), 2);
  g = ob_drain(all.id);
  assert_int_equal(g.n, 2);
  ob_check(&g.items[1], OUTBOX_DELETED, z);
  ob_gots_free(&g);

  /* retention: the same, reason expired */
  const int64_t day = 86400LL * 1000000LL, now = time_now_us();
  (void)put_conv(old, "o@example.com", acc);
  age("conversations", "processed_at_us", old, now - 1000 * day);
  assert_true(retain_ok(now - 900 * day, 100) >= 1);
  g = ob_drain(of_acc.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_DELETED, old);
  snprintf(want, sizeof want, "{\"conversationId\":\"%s\",\"reason\":\"expired\"}", old);
  assert_string_equal(g.items[0].data, want);
  ob_gots_free(&g);
  g = ob_drain(all.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_DELETED, old);
  ob_gots_free(&g);
  ob_sub_delete(all.id);
  ob_sub_delete(of_acc.id);
  free(z2);
}

/* The pause rule judges an exhausted delivery against every success of the same FINISH, in
 * either order of the results: both dead-letter, neither pauses. */
static void test_outbox_success_anywhere_in_a_finish_counts(void **state) {
  (void)state;
  char tag[16], x[64], y[64];
  new_tag(tag);
  snprintf(x, sizeof x, "ob-bx-%s", tag);
  snprintf(y, sizeof y, "ob-by-%s", tag);
  const int64_t t = time_now_us(), hour = 3600LL * 1000000LL;
  struct subscription a = ob_sub(OB_ALL_TYPES, NULL), b = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&a);
  ob_sub_create(&b);
  struct store_outbox_stats st0, st;
  assert_int_equal(store_outbox_stats(B->store, NULL, &st0), STORE_OK);
  (void)put_conv(x, "ob-batch@example.com", "acc");
  (void)put_conv(y, "ob-batch@example.com", "acc");
  (void)ob_fanout(t);
  for (int order = 0; order < 2; order++) {
    struct subscription *sub = order ? &b : &a;
    struct store_outbox_work o = ob_claim(sub->id, t, OB_LEASE_US, 10);
    assert_int_equal(o.count, 2);
    assert_string_equal(o.jobs[0].event.conversation_id, x);
    /* x exhausted (first attempt at t), y delivered at t + 1: one FINISH */
    struct store_delivery_result failed = ob_result(&o.jobs[0], DELIVERY_FAILED, 500, t, t + hour);
    struct store_delivery_result ok = ob_result(&o.jobs[1], DELIVERY_DELIVERED, 200, t + 1, 0);
    struct store_delivery_result rs[2];
    rs[order ? 1 : 0] = failed;
    rs[order ? 0 : 1] = ok;
    struct store_outbox_work f = {.op = STORE_OUTBOX_FINISH, .results = rs, .nresults = 2};
    ob_run(&f);
    store_jobs_free(&o);
    struct subscription now = ob_sub_read(sub->id);
    if (now.paused) fail_msg("results in order %d paused the subscription", order);
    assert_string_equal(subscription_state(&now), "active");
    struct store_attempt_page page;
    assert_int_equal(store_attempt_list(B->store, sub->id, 0, 0, 10, &page), STORE_OK);
    assert_int_equal(page.count, 2);
    int dead = 0;
    for (size_t i = 0; i < page.count; i++) dead += page.items[i].outcome == DELIVERY_FAILED;
    assert_int_equal(dead, 1);
    free(page.items);
    o = ob_claim(sub->id, t + 2 * hour, OB_LEASE_US, 10);
    assert_int_equal(o.count, 0);
    store_jobs_free(&o);
  }
  assert_int_equal(store_outbox_stats(B->store, NULL, &st), STORE_OK);
  assert_int_equal(st.dead_letters, st0.dead_letters + 2);
  ob_sub_delete(a.id);
  ob_sub_delete(b.id);
}

/* An answer to a send made before a replay, arriving after the replayed delivery was claimed
 * again, is recorded as an attempt and changes nothing: attempts count from 1 after the replay,
 * the new claim keeps its lease, a stale success does not close the delivery. */
static void test_outbox_stale_answer_after_replay_and_claim(void **state) {
  (void)state;
  char tag[16], x[64];
  new_tag(tag);
  snprintf(x, sizeof x, "ob-st-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  (void)put_conv(x, "ob-stale@example.com", "acc");
  (void)ob_fanout(time_now_us());
  struct store_outbox_work o;
  for (int i = 1; i <= 2; i++) { /* two failed attempts, due again at once */
    int64_t now = time_now_us();
    o = ob_claim(sub.id, now, OB_LEASE_US, 10);
    assert_int_equal(o.count, 1);
    assert_int_equal(o.jobs[0].attempt, i);
    ob_finish(&o.jobs[0], DELIVERY_RETRY, 500, now, now);
    store_jobs_free(&o);
  }
  struct store_outbox_work old = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(old.count, 1);
  assert_int_equal(old.jobs[0].attempt, 3); /* in flight */
  assert_int_equal(ob_replay(sub.id, 0), 1);
  struct store_outbox_work fresh = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(fresh.count, 1); /* replayed: due at once, claimed again */
  assert_int_equal(fresh.jobs[0].attempt, 1);
  assert_string_equal(fresh.jobs[0].event.id, old.jobs[0].event.id);
  int64_t now = time_now_us();
  ob_finish(&old.jobs[0], DELIVERY_RETRY, 500, now, now); /* the stale answer */
  o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 0); /* still the fresh claim's */
  store_jobs_free(&o);
  ob_finish(&old.jobs[0], DELIVERY_DELIVERED, 200, now, 0); /* stale too: closes nothing */
  now = time_now_us();
  ob_finish(&fresh.jobs[0], DELIVERY_RETRY, 503, now, now);
  store_jobs_free(&fresh);
  o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  assert_int_equal(o.jobs[0].attempt, 2); /* counted from 1 after the replay */
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  store_jobs_free(&o);
  store_jobs_free(&old);
  o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  /* every answer is an attempt on record, newest first: 200, 503, stale 200, stale 500, 500,
   * 500; the stale ones changed nothing */
  struct store_attempt_page page;
  assert_int_equal(store_attempt_list(B->store, sub.id, 0, 0, 20, &page), STORE_OK);
  assert_int_equal(page.count, 6);
  assert_int_equal(page.items[0].outcome, DELIVERY_DELIVERED);
  assert_int_equal(page.items[0].attempt, 2);
  assert_int_equal(page.items[1].status_code, 503);
  assert_int_equal(page.items[1].attempt, 1);
  assert_int_equal(page.items[2].status_code, 200);
  assert_int_equal(page.items[2].attempt, 3);
  assert_int_equal(page.items[3].status_code, 500);
  assert_int_equal(page.items[3].attempt, 3);
  assert_int_equal(page.items[3].outcome, DELIVERY_RETRY);
  free(page.items);
  ob_sub_delete(sub.id);
}

/* Retention of audio that has no conversation is an erasure like ERASE of it: its audio_added
 * events and their pending deliveries go, conversation.deleted (expired) is written. */
static void test_outbox_retention_of_audio_alone(void **state) {
  (void)state;
  char tag[16], lone[64];
  new_tag(tag);
  snprintf(lone, sizeof lone, "ob-lone-%s", tag);
  const int64_t day = 86400LL * 1000000LL, now = time_now_us();
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  int fd = audio_file(1000, 7);
  (void)put_audio(lone, fd, 1000, "lone");
  close(fd);
  (void)ob_fanout(time_now_us()); /* its audio_added is pending */
  age("audio_meta", "received_at_us", lone, now - 1000 * day);
  age("events", "received_at_us", lone, now - 1000 * day);
  assert_true(retain_ok(now - 900 * day, 100) >= 1);
  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_DELETED, lone);
  char want[160];
  snprintf(want, sizeof want, "{\"conversationId\":\"%s\",\"reason\":\"expired\"}", lone);
  assert_string_equal(g.items[0].data, want);
  ob_gots_free(&g);
  assert_int_equal(ob_replay(sub.id, 0), 1); /* only the deletion is left of it */
  g = ob_drain(sub.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_DELETED, lone);
  ob_gots_free(&g);
  ob_sub_delete(sub.id);
}

/* Erasure takes the erased conversation's recorded attempts too (an answer may echo its data);
 * other conversations' stay. */
static void test_outbox_erasure_takes_attempts(void **state) {
  (void)state;
  char tag[16], gone[64], kept[64];
  new_tag(tag);
  snprintf(gone, sizeof gone, "ob-eg-%s", tag);
  snprintf(kept, sizeof kept, "ob-ek-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  (void)put_conv(gone, "ob-gone@example.com", "acc");
  (void)put_conv(kept, "ob-kept@example.com", "acc");
  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 2);
  char kept_id[OUTBOX_EVENT_ID_MAX];
  snprintf(kept_id, sizeof kept_id, "%s", g.items[1].id);
  ob_gots_free(&g);
  assert_true(erase_ok(gone) > 0);
  struct store_attempt_page page;
  assert_int_equal(store_attempt_list(B->store, sub.id, 0, 0, 10, &page), STORE_OK);
  assert_int_equal(page.count, 1);
  assert_string_equal(page.items[0].event_id, kept_id);
  free(page.items);
  g = ob_drain(sub.id); /* its deletion */
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_DELETED, gone);
  ob_gots_free(&g);
  ob_sub_delete(sub.id);
}

/* FANOUT counts each event once: a second FANOUT with nothing new adds nothing (the dispatcher
 * runs fan-out again at once while one fills its limit). */
static void test_outbox_fanout_counts_each_event_once(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  for (int i = 0; i < 3; i++) {
    snprintf(id, sizeof id, "ob-fc%d-%s", i, tag);
    (void)put_conv(id, "fc@example.com", "acc");
  }
  assert_true(ob_fanout(time_now_us()) >= 3);
  assert_int_equal(ob_fanout(time_now_us()), 0);
  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 3);
  ob_gots_free(&g);
  ob_sub_delete(sub.id);
}

/* A subscription for one account, claiming one delivery at a time (maxPerSecond): its event
 * behind 20 of another account is claimed at once, not after 20 claims. */
static void test_outbox_filtered_subscription_passes_others_events(void **state) {
  (void)state;
  char tag[16], id[64], acc_a[64], acc_b[64];
  new_tag(tag);
  snprintf(acc_a, sizeof acc_a, "fa-%s", tag);
  snprintf(acc_b, sizeof acc_b, "fb-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, acc_a);
  ob_sub_create(&sub);
  for (int i = 0; i < 20; i++) {
    snprintf(id, sizeof id, "ob-fb%d-%s", i, tag);
    (void)put_conv(id, "f@example.com", acc_b);
  }
  snprintf(id, sizeof id, "ob-fa-%s", tag);
  (void)put_conv(id, "f@example.com", acc_a);
  (void)ob_fanout(time_now_us());
  struct store_outbox_work o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 1);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.conversation_id, id);
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  store_jobs_free(&o);
  ob_sub_delete(sub.id);
}

/* A delivery in flight when its conversation is erased: the answer to it records no attempt (it
 * may echo the erased data) and leaves nothing pending; the deletion goes out next. */
static void test_outbox_erasure_while_in_flight(void **state) {
  (void)state;
  char tag[16], gone[64];
  new_tag(tag);
  snprintf(gone, sizeof gone, "ob-ef-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  (void)put_conv(gone, "ob-ef@example.com", "acc");
  (void)ob_fanout(time_now_us());
  struct store_outbox_work o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  assert_true(erase_ok(gone) > 0);
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  store_jobs_free(&o);
  struct store_attempt_page page;
  assert_int_equal(store_attempt_list(B->store, sub.id, 0, 0, 10, &page), STORE_OK);
  assert_int_equal(page.count, 0);
  free(page.items);
  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_DELETED, gone);
  ob_gots_free(&g);
  ob_sub_delete(sub.id);
}

/* A random mix of new versions, claims of any size, and answers in any order (success, retry
 * due at once, release): a conversation never has two deliveries in flight, its successes come
 * in event order, and in the end every event was delivered exactly once. */
static void test_outbox_random_mix_keeps_order_and_loses_nothing(void **state) {
  (void)state;
  enum { CONVS = 4, STEPS = 400, MAX_EVENTS = 256, MAX_FLIGHT = 64 };
  char tag[16], ids[CONVS][64];
  new_tag(tag);
  uint64_t seed = (uint64_t)time_now_us() | 1, x = seed;
#define OB_RAND() (x ^= x << 13, x ^= x >> 7, x ^= x << 17, x)
  for (int c = 0; c < CONVS; c++) snprintf(ids[c], sizeof ids[c], "ob-rm%d-%s", c, tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  int versions[CONVS] = {0}, delivered[CONVS] = {0}, written = 0;
  int64_t last_seq[CONVS] = {0};
  struct store_delivery_job flight[MAX_FLIGHT];
  size_t nflight = 0;
  for (int step = 0;; step++) {
    bool draining = step >= STEPS;
    if (step > STEPS + 20000)
      fail_msg("seed %llu: deliveries never ran out", (unsigned long long)seed);
    uint64_t r = OB_RAND() % 10;
    if (!draining && r < 3 && written < MAX_EVENTS) {
      int c = (int)(OB_RAND() % CONVS);
      char *body = conv_body(ids[c], "rm@example.com", "acc", ++versions[c], NULL);
      (void)put_ok(body);
      free(body);
      written++;
    } else if (r < 6 || nflight == 0) {
      /* Draining ends on an empty claim: fan out first, so that it means nothing is due (the
       * PostgreSQL dispatcher fans out before it claims; SQLite's claims read the outbox). */
      if (OB_RAND() % 2 || draining) (void)ob_fanout(time_now_us());
      int64_t limit = 1 + (int64_t)(OB_RAND() % 4);
      if ((size_t)limit > MAX_FLIGHT - nflight) limit = (int64_t)(MAX_FLIGHT - nflight);
      if (limit <= 0) continue;
      struct store_outbox_work o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, limit);
      size_t got = o.count;
      for (size_t i = 0; i < o.count; i++) {
        for (size_t k = 0; k < nflight; k++)
          if (strcmp(flight[k].event.conversation_id, o.jobs[i].event.conversation_id) == 0)
            fail_msg("seed %llu: two deliveries of %s in flight", (unsigned long long)seed,
                     o.jobs[i].event.conversation_id);
        flight[nflight] = o.jobs[i];
        flight[nflight].event.data = NULL; /* the data stays with o */
        nflight++;
      }
      store_jobs_free(&o);
      if (draining && got == 0 && nflight == 0) break;
    } else {
      size_t k = (size_t)(OB_RAND() % nflight);
      struct store_delivery_job j = flight[k];
      flight[k] = flight[--nflight];
      uint64_t how = OB_RAND() % 10;
      int64_t now = time_now_us();
      if (how < 7) {
        int c = 0;
        while (c < CONVS && strcmp(ids[c], j.event.conversation_id) != 0) c++;
        assert_true(c < CONVS);
        if (j.event.seq <= last_seq[c])
          fail_msg("seed %llu: %s delivered out of order (%lld after %lld)",
                   (unsigned long long)seed, ids[c], (long long)j.event.seq,
                   (long long)last_seq[c]);
        last_seq[c] = j.event.seq;
        delivered[c]++;
        ob_finish(&j, DELIVERY_DELIVERED, 200, now, 0);
      } else {
        ob_finish(&j, how < 9 ? DELIVERY_RETRY : STORE_DELIVERY_RELEASE, how < 9 ? 500 : 0, now,
                  now);
      }
    }
  }
#undef OB_RAND
  for (int c = 0; c < CONVS; c++)
    if (delivered[c] != versions[c])
      fail_msg("seed %llu: %s: %d of %d events delivered", (unsigned long long)seed, ids[c],
               delivered[c], versions[c]);
  ob_sub_delete(sub.id);
}

/* An update that does not name enabled (PATCH {"maxPerSecond": ..}, read before the service
 * paused or disabled the subscription) keeps the stored state; one that does enables it again,
 * and what waited is due at once. */
static void test_outbox_update_keeps_the_services_state(void **state) {
  (void)state;
  char tag[16], p[64], q[64];
  new_tag(tag);
  snprintf(p, sizeof p, "ob-kp-%s", tag);
  snprintf(q, sizeof q, "ob-kq-%s", tag);
  const int64_t hour = 3600LL * 1000000LL;
  const char *convs[2] = {p, q};
  for (int c = 0; c < 2; c++) { /* 0: 410 disables it; 1: no success ever pauses it */
    struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
    ob_sub_create(&sub);
    struct subscription read_before = ob_sub_read(sub.id);
    (void)put_conv(convs[c], "ob-kept@example.com", "acc");
    int64_t t = time_now_us();
    (void)ob_fanout(t);
    struct store_outbox_work o = ob_claim(sub.id, t, OB_LEASE_US, 10);
    assert_int_equal(o.count, 1);
    if (c == 0)
      ob_finish(&o.jobs[0], DELIVERY_DISABLED, 410, t, t + hour);
    else
      ob_finish(&o.jobs[0], DELIVERY_FAILED, 500, t, t + hour);
    store_jobs_free(&o);
    read_before.max_per_second = 5;
    read_before.updated_us = time_now_us();
    struct store_write w;
    memset(&w, 0, sizeof w);
    w.kind = STORE_WRITE_SUB_PUT;
    w.sub = &read_before;
    w.sub_fields = STORE_SUB_MAX_PER_SECOND;
    w.audio_fd = -1;
    store_submit_wait(B->store, &w);
    assert_int_equal(w.status, STORE_OK);
    struct subscription now = ob_sub_read(sub.id);
    assert_int_equal(now.max_per_second, 5);
    assert_string_equal(subscription_state(&now), c == 0 ? "disabled" : "paused");
    if (c == 0) assert_string_equal(now.disabled_reason, "gone");
    o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
    assert_int_equal(o.count, 0);
    store_jobs_free(&o);
    /* named: enabled again, due at once */
    memset(&w, 0, sizeof w);
    w.kind = STORE_WRITE_SUB_PUT;
    w.sub = &read_before;
    w.sub_enabled_given = true;
    w.audio_fd = -1;
    store_submit_wait(B->store, &w);
    assert_int_equal(w.status, STORE_OK);
    now = ob_sub_read(sub.id);
    assert_string_equal(subscription_state(&now), "active");
    assert_string_equal(now.disabled_reason, "");
    o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
    assert_int_equal(o.count, 1);
    assert_string_equal(o.jobs[0].event.conversation_id, convs[c]);
    ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0);
    store_jobs_free(&o);
    ob_sub_delete(sub.id);
  }
}

/* CLAIM and QUEUE_READ stop once the event data they read passes about 16 MiB (at least one
 * row): four conversations of ~6.6 MiB each come three at a time, then the fourth. */
static void test_outbox_reads_are_bounded_in_bytes(void **state) {
  (void)state;
  char tag[16], cursor[64], id[64];
  new_tag(tag);
  snprintf(cursor, sizeof cursor, "bytes-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  ob_queue_skip_all(cursor);
  const size_t pad = 6900000; /* a summary of ~6.6 MiB */
  char *summary = malloc(pad + 32);
  assert_non_null(summary);
  memcpy(summary, "\"summary\":{\"text\":\"", 19);
  memset(summary + 19, 'a', pad);
  memcpy(summary + 19 + pad, "\"}", 3);
  for (int i = 0; i < 4; i++) {
    snprintf(id, sizeof id, "ob-big%d-%s", i, tag);
    char *body = conv_body(id, "ob-big@example.com", "acc", 1, summary);
    assert_true(strlen(body) > 6 * 1024 * 1024 && strlen(body) < 8 * 1024 * 1024);
    (void)put_ok(body);
    free(body);
  }
  free(summary);
  struct store_outbox_work q = ob_queue_read(B->store, cursor, time_now_us(), 100);
  assert_int_equal(q.count, 3);
  ob_queue_advance(B->store, cursor, q.events[2].seq);
  store_jobs_free(&q);
  q = ob_queue_read(B->store, cursor, time_now_us(), 100);
  assert_int_equal(q.count, 1);
  store_jobs_free(&q);
  ob_queue_drop(cursor);
  (void)ob_fanout(time_now_us());
  struct store_outbox_work o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 100);
  assert_int_equal(o.count, 3);
  for (size_t i = 0; i < o.count; i++)
    ob_finish(&o.jobs[i], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  store_jobs_free(&o);
  o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 100); /* the fourth was not leased */
  assert_int_equal(o.count, 1);
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  store_jobs_free(&o);
  ob_sub_delete(sub.id);
}

/* Prune erases old events no subscription still needs (pending, or not yet fanned out to it)
 * and no broker cursor still has to pass, and old attempts. */
static void test_outbox_prune(void **state) {
  (void)state;
  char tag[16], n1[64], n2[64], n3[64], cursor[64];
  new_tag(tag);
  snprintf(n1, sizeof n1, "ob-n1-%s", tag);
  snprintf(n2, sizeof n2, "ob-n2-%s", tag);
  snprintf(n3, sizeof n3, "ob-n3-%s", tag);
  snprintf(cursor, sizeof cursor, "prune-%s", tag);
  const int64_t hour = 3600LL * 1000000LL;
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  int64_t t0 = time_now_us();
  (void)put_conv(n1, "n@example.com", "acc");
  (void)put_conv(n2, "n@example.com", "acc");
  (void)ob_fanout(time_now_us());
  struct store_outbox_work o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 2);
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  ob_finish(&o.jobs[1], DELIVERY_RETRY, 500, time_now_us(), time_now_us() + hour);
  store_jobs_free(&o);
  /* a broker cursor at the start holds every event */
  struct store_outbox_work q = ob_queue_read(B->store, cursor, time_now_us(), 1);
  store_jobs_free(&q);
  struct store_outbox_work p = {
      .op = STORE_OUTBOX_PRUNE, .before_us = time_now_us() + 1000000, .limit = 100000};
  ob_run(&p);
  assert_int_equal(ob_replay(sub.id, t0), 2); /* both still there */
  ob_queue_skip_all(cursor);
  /* a subscription the newest event is not fanned out to yet */
  struct subscription late = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&late);
  (void)put_conv(n3, "n@example.com", "acc");
  ob_queue_skip_all(cursor);
  /* n1 and n2 replayed, due first (at most two: on SQLite a larger claim would take n3 too, by
   * the lane); n2 stays pending */
  o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 2);
  assert_int_equal(o.count, 2);
  ob_finish(&o.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  ob_finish(&o.jobs[1], DELIVERY_RETRY, 500, time_now_us(), time_now_us() + hour);
  store_jobs_free(&o);
  p = (struct store_outbox_work){
      .op = STORE_OUTBOX_PRUNE, .before_us = time_now_us() + 1000000, .limit = 100000};
  ob_run(&p);
  assert_true(p.added >= 1 + 4);              /* n1's event, the attempts */
  assert_int_equal(ob_replay(sub.id, t0), 1); /* n2 only: n1 is gone, n3 not fanned out yet */
  struct store_attempt_page page;
  assert_int_equal(store_attempt_list(B->store, sub.id, 0, 0, 100, &page), STORE_OK);
  assert_int_equal(page.count, 0);
  free(page.items);
  struct ob_gots g = ob_drain(late.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_CREATED, n3);
  ob_gots_free(&g);
  g = ob_drain(sub.id);
  assert_int_equal(g.n, 2);
  ob_check(&g.items[0], OUTBOX_CREATED, n2);
  ob_check(&g.items[1], OUTBOX_CREATED, n3);
  ob_gots_free(&g);
  p = (struct store_outbox_work){
      .op = STORE_OUTBOX_PRUNE, .before_us = time_now_us() + 1000000, .limit = 100000};
  ob_run(&p);
  assert_true(p.added >= 2);
  assert_int_equal(ob_replay(sub.id, t0), 0);
  ob_sub_delete(sub.id);
  ob_sub_delete(late.id);
  ob_queue_drop(cursor);
}

/* ---- issue 10 follow-ups (store.h: hold_us, stale_before_us) ---- */

static int64_t ob_events_of(const char *conv) {
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox_events WHERE conversation_id = '%s'",
           conv);
  return direct_sql(sql);
}

/* A receiver's Retry-After holds the whole subscription in the store: no claim takes any of its
 * deliveries (the answered one, another conversation's) before the hold ends, not another
 * store's either (another instance, or this one after a restart); then everything goes out. */
static void test_outbox_retry_after_holds_the_subscription(void **state) {
  (void)state;
  char tag[16], h1[64], h2[64];
  new_tag(tag);
  snprintf(h1, sizeof h1, "ob-h1-%s", tag);
  snprintf(h2, sizeof h2, "ob-h2-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  (void)put_conv(h1, "h@example.com", "acc");
  (void)ob_fanout(time_now_us());
  struct store_outbox_work o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 1);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.conversation_id, h1);
  const int64_t hold = 1500000;
  int64_t answered = time_now_us();
  /* 429 with Retry-After: due again at once by the schedule, but held */
  struct store_delivery_result r = ob_result(&o.jobs[0], DELIVERY_RETRY, 429, answered, answered);
  r.hold_us = hold;
  struct store_outbox_work f = {
      .op = STORE_OUTBOX_FINISH, .now_us = time_now_us(), .results = &r, .nresults = 1};
  ob_run(&f);
  store_jobs_free(&o);
  (void)put_conv(h2, "h@example.com", "acc");
  (void)ob_fanout(time_now_us());
  o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  struct store *other = open_other(B->ring, B->ring != NULL);
  o = ob_claim_in(other, sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  store_close(other);
  int64_t left = answered + hold + 100000 - time_now_us();
  if (left > 0) usleep((useconds_t)left);
  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 2);
  ob_check(&g.items[0], OUTBOX_CREATED, h1);
  ob_check(&g.items[1], OUTBOX_CREATED, h2);
  assert_int_equal(g.items[0].attempt, 2);
  ob_gots_free(&g);
  ob_sub_delete(sub.id);
}

/* Prune, after a fan-out: a subscription another test kept (PostgreSQL's groups share one
 * database) holds back what its cursor has not considered yet. */
static void ob_prune_fanned(struct store_outbox_work *p) {
  (void)ob_fanout(time_now_us());
  ob_run(p);
}

/* A broker cursor that nobody touched (read, advanced, or kept while its broker is down) since
 * stale_before_us (the dispatcher: OUTBOX_RETENTION_DAYS ago) no longer holds back prune, and
 * the prune says how many it passed; one that is read or kept still holds; its backlog (health)
 * counts only what is left; a paused subscription keeps its events whatever the cursors. */
static void test_outbox_prune_passes_stale_broker_cursors(void **state) {
  (void)state;
  char tag[16], c1[64], c2[64], c3[64], gone[64], live[64];
  new_tag(tag);
  snprintf(c1, sizeof c1, "ob-c1-%s", tag);
  snprintf(c2, sizeof c2, "ob-c2-%s", tag);
  snprintf(c3, sizeof c3, "ob-c3-%s", tag);
  snprintf(gone, sizeof gone, "gone-%s", tag);
  snprintf(live, sizeof live, "live-%s", tag);
  ob_queue_skip_all(gone);
  ob_queue_skip_all(live);
  usleep(20000);
  int64_t t_mid = time_now_us();
  usleep(20000);
  (void)put_conv(c1, "c@example.com", "acc");
  /* both touched since t_mid - 1 s: both hold */
  struct store_outbox_work p = {.op = STORE_OUTBOX_PRUNE,
                                .before_us = time_now_us() + 1000000,
                                .stale_before_us = t_mid - 1000000,
                                .limit = 100000};
  ob_prune_fanned(&p);
  assert_int_equal(ob_events_of(c1), 1);
  assert_int_equal(p.stale, 0);
  /* read since t_mid (not advanced): the live one holds alone, the other is stale */
  struct store_outbox_work q = ob_queue_read(B->store, live, time_now_us(), 1);
  assert_int_equal(q.count, 1);
  store_jobs_free(&q);
  p = (struct store_outbox_work){.op = STORE_OUTBOX_PRUNE,
                                 .before_us = time_now_us() + 1000000,
                                 .stale_before_us = t_mid,
                                 .limit = 100000};
  ob_prune_fanned(&p);
  assert_int_equal(ob_events_of(c1), 1);
  struct store_outbox_stats st;
  assert_int_equal(store_outbox_stats(B->store, gone, &st), STORE_OK);
  assert_int_equal(st.queue_backlog, 1);
  /* the live one moves past: the stale one is passed, and said so */
  ob_queue_skip_all(live);
  p = (struct store_outbox_work){.op = STORE_OUTBOX_PRUNE,
                                 .before_us = time_now_us() + 1000000,
                                 .stale_before_us = t_mid,
                                 .limit = 100000};
  ob_prune_fanned(&p);
  assert_int_equal(ob_events_of(c1), 0);
  assert_int_equal(p.stale, 1);
  assert_int_equal(store_outbox_stats(B->store, gone, &st), STORE_OK);
  assert_int_equal(st.queue_backlog, 0);
  /* without stale_before_us every cursor holds, as before */
  (void)put_conv(c3, "c@example.com", "acc");
  ob_queue_skip_all(live);
  p = (struct store_outbox_work){
      .op = STORE_OUTBOX_PRUNE, .before_us = time_now_us() + 1000000, .limit = 100000};
  ob_prune_fanned(&p);
  assert_int_equal(ob_events_of(c3), 1);
  /* kept by another instance whose broker is down (an advance to 0 without the lease): live
   * again, not moved */
  int64_t t_keep = time_now_us();
  usleep(20000);
  struct store *other = open_other(B->ring, B->ring != NULL);
  ob_queue_advance(other, gone, 0);
  store_close(other);
  p = (struct store_outbox_work){.op = STORE_OUTBOX_PRUNE,
                                 .before_us = time_now_us() + 1000000,
                                 .stale_before_us = t_keep,
                                 .limit = 100000};
  ob_prune_fanned(&p);
  assert_int_equal(ob_events_of(c3), 1);
  assert_int_equal(store_outbox_stats(B->store, gone, &st), STORE_OK);
  assert_int_equal(st.queue_backlog, 1);
  /* a paused subscription keeps its events even when every cursor is stale */
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  (void)put_conv(c2, "c@example.com", "acc");
  (void)ob_fanout(time_now_us());
  struct store_outbox_work o = ob_claim(sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  ob_finish(&o.jobs[0], DELIVERY_FAILED, 500, time_now_us(), time_now_us());
  store_jobs_free(&o);
  struct subscription read = ob_sub_read(sub.id);
  assert_true(read.paused);
  p = (struct store_outbox_work){.op = STORE_OUTBOX_PRUNE,
                                 .before_us = time_now_us() + 1000000,
                                 .stale_before_us = time_now_us() + 1000000,
                                 .limit = 100000};
  ob_prune_fanned(&p);
  assert_int_equal(ob_events_of(c2), 1);
  assert_int_equal(ob_events_of(c3), 0);
  ob_sub_delete(sub.id);
  ob_queue_drop(gone);
  ob_queue_drop(live);
}

/* QUEUE_URL set, the broker never reached: the dispatcher's keepalive (an advance to 0) creates
 * the cursor, at the start, so prune keeps every event for it (none erased before the broker
 * saw it), and the broker's first read gets them all, from the oldest kept. */
static void test_outbox_keepalive_creates_a_missing_cursor(void **state) {
  (void)state;
  char tag[16], k1[64], name[64];
  new_tag(tag);
  snprintf(k1, sizeof k1, "ob-k1-%s", tag);
  snprintf(name, sizeof name, "never-%s", tag);
  store_set_outbox_broker(B->store, true); /* QUEUE_URL is set: its events are written */
  (void)put_conv(k1, "k@example.com", "acc");
  store_set_outbox_broker(B->store, false);
  (void)ob_fanout(time_now_us());
  usleep(20000);
  int64_t t_before = time_now_us();
  usleep(20000);
  struct store *other = open_other(B->ring, B->ring != NULL); /* another instance keeps it */
  ob_queue_advance(other, name, 0);
  store_close(other);
  struct store_outbox_work p = {.op = STORE_OUTBOX_PRUNE,
                                .before_us = time_now_us() + 1000000,
                                .stale_before_us = t_before,
                                .limit = 100000};
  ob_prune_fanned(&p);
  assert_int_equal(ob_events_of(k1), 1);
  int64_t oldest = direct_sql("SELECT min(seq) FROM outbox_events");
  assert_true(oldest > 0);
  int64_t got_k1 = 0, first = 0;
  for (;;) {
    struct store_outbox_work o = ob_queue_read(B->store, name, time_now_us(), 10000);
    assert_false(o.busy);
    size_t n = o.count;
    if (n && !first) first = o.events[0].seq;
    for (size_t i = 0; i < n; i++)
      if (strcmp(o.events[i].conversation_id, k1) == 0) got_k1++;
    if (n) ob_queue_advance(B->store, name, o.events[n - 1].seq);
    store_jobs_free(&o);
    if (!n) break;
  }
  assert_int_equal(first, oldest);
  assert_int_equal(got_k1, 1);
  ob_queue_drop(name);
}

/* Events nothing could read are not written (SQLite): with no subscription, no broker cursor
 * and no broker configured (store_set_outbox_broker) a change writes no outbox event; a
 * subscription in any state, a broker's cursor or a configured broker makes every later change
 * write them, erasures' conversation.deleted too; a subscription created in the same batch
 * before a change counts. PostgreSQL writes them always. */
static void test_outbox_events_only_when_something_reads_them(void **state) {
  (void)state;
  bool skips = strcmp(B->name, "sqlite") == 0;
  if (skips) { /* nothing left by the tests before reads the outbox */
    struct subscription *all;
    size_t n;
    assert_int_equal(store_sub_list(B->store, &all, &n), STORE_OK);
    for (size_t i = 0; i < n; i++) ob_sub_delete(all[i].id);
    free(all);
    (void)direct_sql("DELETE FROM outbox_cursors");
  }
  char tag[16], id[6][64], name[64], email[64];
  new_tag(tag);
  for (int i = 0; i < 6; i++) snprintf(id[i], sizeof id[i], "ob-only-%d-%s", i, tag);
  snprintf(name, sizeof name, "only-%s", tag);
  snprintf(email, sizeof email, "only-%s@example.com", tag);

  (void)put_conv(id[0], email, "acc");
  assert_int_equal(ob_events_of(id[0]), skips ? 0 : 1);
  /* a disabled subscription reads them too (they wait for it) */
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  sub.enabled = false;
  ob_sub_create(&sub);
  (void)put_conv(id[1], email, "acc");
  assert_int_equal(ob_events_of(id[1]), 1);
  assert_true(erase_ok(id[0]) > 0);
  assert_int_equal(ob_events_of(id[0]), 1); /* its conversation.deleted */
  ob_sub_delete(sub.id);
  (void)put_conv(id[2], email, "acc");
  assert_int_equal(ob_events_of(id[2]), skips ? 0 : 1);
  assert_true(erase_ok(id[2]) > 0);
  assert_int_equal(ob_events_of(id[2]), skips ? 0 : 1);

  /* a subscription and a change in one batch: the change is the subscription's */
  struct subscription both = ob_sub(OB_ALL_TYPES, NULL);
  struct pending *ps = probe_new(); /* its completion, for a subscription write */
  ps->w.kind = STORE_WRITE_SUB_PUT;
  ps->w.sub = &both;
  ps->w.sub_create = true;
  ps->w.sub_enabled_given = true;
  ps->w.sub_fields = STORE_SUB_ALL;
  ps->w.audio_fd = -1;
  char *body = conv_body(id[3], email, "acc", 1, NULL);
  struct pending *pc = pending_new(body);
  store_submit(B->store, &ps->w);
  store_submit(B->store, &pc->w); /* one batch when the writer is busy: in order either way */
  wait_done(ps);
  wait_done(pc);
  assert_int_equal(ps->w.status, STORE_OK);
  assert_int_equal(pc->w.status, STORE_OK);
  pending_free(ps);
  pending_free(pc);
  free(body);
  assert_int_equal(ob_events_of(id[3]), 1);
  ob_sub_delete(both.id);

  /* a configured broker, then its cursor alone */
  store_set_outbox_broker(B->store, true);
  (void)put_conv(id[4], email, "acc");
  store_set_outbox_broker(B->store, false);
  assert_int_equal(ob_events_of(id[4]), 1);
  ob_queue_advance(B->store, name, 0);
  (void)put_conv(id[5], email, "acc");
  assert_int_equal(ob_events_of(id[5]), 1);
  ob_queue_drop(name);
}

/* A broker's cursor: leased by one store at a time, read in seq order from where it stands,
 * moved only forward and only by its holder; the backlog behind it in the stats. */
static void test_outbox_queue_cursor(void **state) {
  (void)state;
  char tag[16], q1[64], q2[64], name[64];
  new_tag(tag);
  snprintf(q1, sizeof q1, "ob-q1-%s", tag);
  snprintf(q2, sizeof q2, "ob-q2-%s", tag);
  snprintf(name, sizeof name, "queue-%s", tag);
  struct store *other = open_other(B->ring, B->ring != NULL); /* before any lease is taken */
  ob_queue_skip_all(name);
  (void)put_conv(q1, "q@example.com", "acc");
  (void)put_conv(q2, "q@example.com", "acc");
  const int64_t t = time_now_us(), s = 1000000;
  struct store_outbox_work o = ob_queue_read(B->store, name, t, 100);
  assert_false(o.busy);
  assert_int_equal(o.count, 2);
  assert_string_equal(o.events[0].conversation_id, q1);
  assert_string_equal(o.events[1].conversation_id, q2);
  assert_true(o.events[0].seq < o.events[1].seq);
  assert_int_equal(o.events[0].type, OUTBOX_CREATED);
  assert_true(o.events[0].created_us <= o.events[1].created_us);
  char *rendered = ob_get_rendered(q2);
  assert_int_equal(o.events[1].data_len, strlen(rendered));
  assert_memory_equal(o.events[1].data, rendered, strlen(rendered));
  free(rendered);
  int64_t s1 = o.events[0].seq, s2 = o.events[1].seq;
  char id2[OUTBOX_EVENT_ID_MAX];
  snprintf(id2, sizeof id2, "%s", o.events[1].id);
  store_jobs_free(&o);
  o = ob_queue_read(B->store, name, t, 100); /* not advanced: the same again */
  assert_int_equal(o.count, 2);
  store_jobs_free(&o);
  ob_queue_advance(B->store, name, s1);
  ob_queue_advance(B->store, name, s1 - 1); /* never back */
  o = ob_queue_read(B->store, name, t, 100);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.events[0].id, id2);
  store_jobs_free(&o);
  struct store_outbox_stats st;
  assert_int_equal(store_outbox_stats(B->store, name, &st), STORE_OK);
  assert_int_equal(st.queue_backlog, 1);
  assert_true(st.oldest_queue_us > 0);
  /* another store: busy while the lease runs, its advance ignored */
  o = ob_queue_read(other, name, t + s, 100);
  assert_true(o.busy);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  ob_queue_advance(other, name, s2);
  assert_int_equal(store_outbox_stats(B->store, name, &st), STORE_OK);
  assert_int_equal(st.queue_backlog, 1);
  /* the lease ran out: the other store takes over, and the first one's advance is ignored */
  ob_leases_age(NULL, name, 11 * s);
  o = ob_queue_read(other, name, t + 11 * s, 100);
  assert_false(o.busy);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.events[0].id, id2);
  store_jobs_free(&o);
  ob_queue_advance(B->store, name, s2);
  assert_int_equal(store_outbox_stats(B->store, name, &st), STORE_OK);
  assert_int_equal(st.queue_backlog, 1);
  o = ob_queue_read(B->store, name, t + 12 * s, 100);
  assert_true(o.busy);
  store_jobs_free(&o);
  ob_queue_advance(other, name, s2);
  assert_int_equal(store_outbox_stats(B->store, name, &st), STORE_OK);
  assert_int_equal(st.queue_backlog, 0);
  assert_int_equal(st.oldest_queue_us, 0);
  assert_int_equal(store_outbox_stats(B->store, NULL, &st), STORE_OK);
  assert_int_equal(st.queue_backlog, 0);
  store_close(other);
  ob_queue_drop(name);
}

/* After a rotation (SEAL_TESTS last): every subscription and event opens with the new key
 * alone (reencrypt moved them too). */
static void test_outbox_reads_after_rotation(void **state) {
  (void)state;
  char tag[16], name[64];
  new_tag(tag);
  snprintf(name, sizeof name, "rotated-%s", tag);
  struct subscription *all;
  size_t n;
  assert_int_equal(store_sub_list(B->store, &all, &n), STORE_OK);
  /* SQLite: test_sqlite_outbox_sealed_at_rest kept one */
  for (size_t i = 0; i < n; i++) assert_sub_secret(&all[i], OB_SECRET);
  /* the rotation's reencrypt sealed every URL and account, the plaintext ones included */
  assert_true(plain_sub_id[0]);
  bool found = false;
  for (size_t i = 0; i < n; i++)
    if (strcmp(all[i].id, plain_sub_id) == 0) {
      found = true;
      assert_string_equal(all[i].url, plain_sub_url);
      assert_string_equal(all[i].account_id, plain_sub_account);
    }
  assert_true(found);
  free(all);
  assert_int_equal(direct_sql("SELECT count(*) FROM subscriptions WHERE url <> '' OR url_sealed "
                              "IS NULL OR (account_id <> '' AND account_sealed IS NULL)"),
                   0);
  assert_false(raw_contains(plain_sub_url));
  ob_sub_delete(plain_sub_id);
  plain_sub_id[0] = '\0';
  size_t events = 0;
  for (;;) {
    struct store_outbox_work o = ob_queue_read(B->store, name, time_now_us(), 10000);
    size_t got = o.count;
    for (size_t i = 0; i < got; i++) assert_true(o.events[i].data_len > 0);
    if (got) ob_queue_advance(B->store, name, o.events[got - 1].seq);
    store_jobs_free(&o);
    events += got;
    if (!got) break;
  }
  assert_true(events > 10);
  ob_queue_drop(name);
}

/* SQLite: a delivery leased as a row (a retry claimed again) by a process that died is free at
 * once for the store opened after it, and goes out once: its attempt counted, not sent again by
 * the lane. */
static void test_sqlite_outbox_row_leases_cleared_at_open(void **state) {
  (void)state;
  char tag[16], id[64];
  new_tag(tag);
  snprintf(id, sizeof id, "obrow-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  (void)put_conv(id, "r@example.com", "acc");
  const int64_t t = time_now_us(), hour = 3600LL * 1000000LL;
  (void)ob_fanout(t);
  struct store_outbox_work o = ob_claim(sub.id, t, hour, 10);
  assert_int_equal(o.count, 1);
  ob_finish(&o.jobs[0], DELIVERY_RETRY, 500, t, t); /* a row now, due at once */
  store_jobs_free(&o);
  o = ob_claim(sub.id, time_now_us(), hour, 10); /* the row, leased for an hour */
  assert_int_equal(o.count, 1);
  assert_int_equal(o.jobs[0].attempt, 2);
  store_jobs_free(&o);
  struct store *other = open_other(B->ring, B->ring != NULL);
  o = ob_claim_in(other, sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.conversation_id, id);
  assert_int_equal(o.jobs[0].attempt, 2);
  ob_finish_in(other, &o.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  store_jobs_free(&o);
  o = ob_claim_in(other, sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 0); /* delivered; and its event is not the lane's to send again */
  store_jobs_free(&o);
  store_close(other);
  ob_sub_delete(sub.id);
}

/* SQLite: after a restart the lane reads again from the persisted cursor (behind a delivery that
 * was in flight); an event already dead-lettered there is not sent again. */
static void test_sqlite_outbox_restart_skips_dead_letters(void **state) {
  (void)state;
  char tag[16], a[64], b[64], c[64];
  new_tag(tag);
  snprintf(a, sizeof a, "obdl-a-%s", tag);
  snprintf(b, sizeof b, "obdl-b-%s", tag);
  snprintf(c, sizeof c, "obdl-c-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  (void)put_conv(a, "d@example.com", "acc");
  (void)put_conv(b, "d@example.com", "acc");
  (void)put_conv(c, "d@example.com", "acc");
  const int64_t t = time_now_us(), hour = 3600LL * 1000000LL;
  (void)ob_fanout(t);
  struct store_outbox_work o = ob_claim(sub.id, t, hour, 10);
  assert_int_equal(o.count, 3);
  ob_finish(&o.jobs[2], DELIVERY_DELIVERED, 200, t, 0);
  ob_finish(&o.jobs[1], DELIVERY_FAILED, 500, t, t); /* a success since: a dead letter */
  store_jobs_free(&o);                               /* a's send is still in flight */
  struct store_outbox_stats st;
  assert_int_equal(store_outbox_stats(B->store, NULL, &st), STORE_OK);
  assert_true(st.dead_letters >= 1);
  struct store *other = open_other(B->ring, B->ring != NULL);
  o = ob_claim_in(other, sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_true(o.count >= 1);
  for (size_t i = 0; i < o.count; i++) assert_string_not_equal(o.jobs[i].event.conversation_id, b);
  assert_string_equal(o.jobs[0].event.conversation_id, a);
  for (size_t i = 0; i < o.count; i++)
    ob_finish_in(other, &o.jobs[i], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  store_jobs_free(&o);
  store_close(other);
  ob_sub_delete(sub.id);
}

/* SQLite: one process per file, so a store opening it clears every lease (what a process killed
 * mid-delivery held): those deliveries and the broker cursor are free again at once. The
 * delivery was claimed by the lane (in memory, lane.h): the store opened after it finds it
 * again behind the subscription's cursor. */
static void test_sqlite_outbox_leases_cleared_at_open(void **state) {
  (void)state;
  char tag[16], id[64], name[64];
  new_tag(tag);
  snprintf(id, sizeof id, "oblease-%s", tag);
  snprintf(name, sizeof name, "lease-%s", tag);
  struct subscription sub = ob_sub(OB_ALL_TYPES, NULL);
  ob_sub_create(&sub);
  (void)put_conv(id, "l@example.com", "acc");
  const int64_t t = time_now_us(), hour = 3600LL * 1000000LL;
  (void)ob_fanout(t);
  struct store_outbox_work o = ob_claim(sub.id, t, hour, 10);
  assert_int_equal(o.count, 1);
  store_jobs_free(&o);
  ob_queue_skip_all(name);
  struct store_outbox_work q = ob_queue_read(B->store, name, t, 1); /* leased for 10 s */
  store_jobs_free(&q);
  struct store *other = open_other(B->ring, B->ring != NULL);
  q = ob_queue_read(other, name, t, 1);
  assert_false(q.busy);
  store_jobs_free(&q);
  o = ob_claim_in(other, sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.conversation_id, id);
  assert_int_equal(o.jobs[0].attempt, 1);
  ob_finish_in(other, &o.jobs[0], DELIVERY_DELIVERED, 200, time_now_us(), 0);
  store_jobs_free(&o);
  o = ob_claim_in(other, sub.id, time_now_us(), OB_LEASE_US, 10);
  assert_int_equal(o.count, 0); /* delivered: its cursor passed it */
  store_jobs_free(&o);
  store_close(other);
  ob_sub_delete(sub.id);
  ob_queue_drop(name);
}

/* SQLite with a ring: the file holds none of an event's data, a subscription's secret or an
 * account; they read back, and fan-out still finds a subscription's account's events. */
static void test_sqlite_outbox_sealed_at_rest(void **state) {
  (void)state;
  char tag[16], id[64], account[64], summary[64], extra[128];
  new_tag(tag);
  snprintf(id, sizeof id, "obseal-%s", tag);
  snprintf(account, sizeof account, "obacct-%s", tag);
  snprintf(summary, sizeof summary, "obsum-%s", tag);
  snprintf(extra, sizeof extra, "\"summary\":{\"text\":\"%s\"}", summary);
  struct subscription sub = ob_sub(OB_ALL_TYPES, account);
  ob_sub_create(&sub); /* kept: test_outbox_reads_after_rotation reads it after the rotation */
  char *body = conv_body(id, "x@example.com", account, 1, extra);
  (void)put_ok(body);
  free(body);
  struct ob_gots g = ob_drain(sub.id);
  assert_int_equal(g.n, 1);
  ob_check(&g.items[0], OUTBOX_CREATED, id);
  assert_non_null(strstr(g.items[0].data, summary));
  ob_gots_free(&g);
  struct subscription got = ob_sub_read(sub.id);
  assert_sub_secret(&got, OB_SECRET);
  assert_string_equal(got.account_id, account);
  char wal[4300];
  snprintf(wal, sizeof wal, "%s-wal", B->sqlite_path);
  const char *files[2] = {B->sqlite_path, wal};
  for (int i = 0; i < 2; i++) {
    assert_false(file_contains(files[i], summary, strlen(summary)));
    assert_false(file_contains(files[i], account, strlen(account)));
    assert_false(file_contains(files[i], OB_SECRET, strlen(OB_SECRET)));
  }
}

/* ---------- groups ---------- */

static int open_backend(struct backend *b) {
  char err[512] = "";
  b->store = store_open(b->url, err, sizeof err);
  if (!b->store) {
    fprintf(stderr, "conformance: cannot open %s store: %s\n", b->name, err);
    return -1;
  }
  if (b->ring_text && (!(b->ring = seal_ring_parse(b->ring_text, err, sizeof err)) ||
                       store_set_ring(b->store, b->ring, err, sizeof err) != STORE_OK)) {
    fprintf(stderr, "conformance: cannot set the %s store's ring: %s\n", b->name, err);
    return -1;
  }
  B = b;
  return 0;
}

static void close_backend(struct backend *b) {
  store_close(b->store);
  seal_ring_free(b->ring); /* after the store, which uses it until closed */
  b->store = NULL;
  b->ring = NULL;
}

static struct backend sqlite_backend = {.name = "sqlite"};
static struct backend sqlite_sealed_backend = {.name = "sqlite", .ring_text = RING_K1};
static struct backend pg_backend = {.name = "postgres"};
static struct backend pg_sealed_backend = {.name = "postgres", .ring_text = RING_K1};

static int setup_sqlite_in(struct backend *b) {
  const char *tmp = getenv("TMPDIR");
  snprintf(b->dir, sizeof b->dir, "%s/gsr-conformance-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(b->dir)) {
    perror("conformance: mkdtemp");
    return -1;
  }
  snprintf(b->sqlite_path, sizeof b->sqlite_path, "%s/store.db", b->dir);
  snprintf(b->url, sizeof b->url, "sqlite:%s", b->sqlite_path);
  return open_backend(b);
}

static void teardown_sqlite_in(struct backend *b) {
  close_backend(b);
  const char *suffixes[] = {"", "-wal", "-shm"};
  for (size_t i = 0; i < 3; i++) {
    char path[4300];
    snprintf(path, sizeof path, "%s%s", b->sqlite_path, suffixes[i]);
    unlink(path);
  }
  rmdir(b->dir);
}

static int setup_sqlite(void **state) {
  (void)state;
  return setup_sqlite_in(&sqlite_backend);
}

static int teardown_sqlite(void **state) {
  (void)state;
  teardown_sqlite_in(&sqlite_backend);
  return 0;
}

static int setup_sqlite_sealed(void **state) {
  (void)state;
  return setup_sqlite_in(&sqlite_sealed_backend);
}

static int teardown_sqlite_sealed(void **state) {
  (void)state;
  teardown_sqlite_in(&sqlite_sealed_backend);
  return 0;
}

static int setup_pg(void **state) {
  (void)state;
  return open_backend(&pg_backend);
}

static int teardown_pg(void **state) {
  (void)state;
  close_backend(&pg_backend);
  return 0;
}

static int setup_pg_sealed(void **state) {
  (void)state;
  return open_backend(&pg_sealed_backend);
}

static int teardown_pg_sealed(void **state) {
  (void)state;
  close_backend(&pg_sealed_backend);
  return 0;
}

/* ---------- onward delivery on PostgreSQL (the "pg" block; OUTBOX_TESTS are the shared
 * contract): events written with their change, leased work shared by two stores on one
 * database ---------- */

static enum store_status ob_submit(struct store *st, struct store_write *w) {
  struct pending *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->w = *w;
  p->w.audio_fd = -1;
  p->w.done = on_done;
  p->w.done_cls = p;
  store_submit(st, &p->w);
  wait_done(p);
  *w = p->w;
  free(p);
  return w->status;
}

static void pg_sub_create(struct store *st, const char *id, unsigned types, const char *account) {
  struct subscription sub = {.event_types = types, .enabled = true};
  snprintf(sub.id, sizeof sub.id, "%s", id);
  snprintf(sub.url, sizeof sub.url, "https://example.com/hook/%s", id);
  snprintf(sub.secret, sizeof sub.secret, "whsec_c2VjcmV0LW9mLSVz");
  snprintf(sub.account_id, sizeof sub.account_id, "%s", account ? account : "");
  sub.created_us = sub.updated_us = time_now_us();
  struct store_write w = {.kind = STORE_WRITE_SUB_PUT, .sub = &sub, .sub_create = true};
  assert_int_equal(ob_submit(st, &w), STORE_OK);
}

static void pg_sub_delete(const char *id) {
  struct store_write w = {.kind = STORE_WRITE_SUB_DELETE, .sub_id = id};
  assert_int_equal(ob_submit(B->store, &w), STORE_OK);
  assert_int_equal(w.erased, 1);
}

static int64_t pg_fanout(struct store *st) {
  struct store_outbox_work o = {.op = STORE_OUTBOX_FANOUT, .now_us = time_now_us(), .limit = 1000};
  struct store_write w = {.kind = STORE_WRITE_OUTBOX, .outbox = &o};
  assert_int_equal(ob_submit(st, &w), STORE_OK);
  return o.added;
}

/* Claims up to limit jobs of sub (the caller frees them with store_jobs_free). */
static struct store_outbox_work pg_claim(struct store *st, const char *sub, int64_t limit,
                                         int64_t now_us) {
  struct store_outbox_work o = {.op = STORE_OUTBOX_CLAIM,
                                .now_us = now_us ? now_us : time_now_us(),
                                .lease_us = 30 * 1000000LL,
                                .limit = limit,
                                .sub_id = sub};
  struct store_write w = {.kind = STORE_WRITE_OUTBOX, .outbox = &o};
  assert_int_equal(ob_submit(st, &w), STORE_OK);
  return o;
}

static struct store_delivery_result pg_result(const struct store_delivery_job *j, int outcome,
                                              int code) {
  struct store_delivery_result r = {.seq = j->event.seq,
                                    .type = j->event.type,
                                    .attempt = j->attempt,
                                    .at_us = time_now_us(),
                                    .status_code = code,
                                    .latency_ms = 3,
                                    .outcome = outcome,
                                    .first_attempt_us = j->first_attempt_us,
                                    .next_at_us = time_now_us(),
                                    .lease_token = j->lease_token};
  snprintf(r.sub_id, sizeof r.sub_id, "%s", j->sub_id);
  snprintf(r.event_id, sizeof r.event_id, "%s", j->event.id);
  snprintf(r.response_head, sizeof r.response_head, "answer %d", code);
  return r;
}

static void pg_finish(struct store *st, const struct store_delivery_result *r, size_t n) {
  struct store_outbox_work o = {.op = STORE_OUTBOX_FINISH, .results = r, .nresults = n};
  struct store_write w = {.kind = STORE_WRITE_OUTBOX, .outbox = &o};
  assert_int_equal(ob_submit(st, &w), STORE_OK);
}

/* The conversation's data as GET shows it now. */
static char *pg_detail(const char *id) {
  struct store_conversation c;
  assert_int_equal(store_get(B->store, id, true, &c), STORE_OK);
  size_t len;
  char *d = render_conversation_detail(&c, &len);
  free(c.body);
  assert_non_null(d);
  return d;
}

static void pg_check_event(const struct store_outbox_event *e, int type, const char *id,
                           const char *data) {
  assert_int_equal(e->type, type);
  assert_string_equal(e->conversation_id, id);
  assert_int_equal(strlen(e->id), 36);
  assert_memory_equal(e->id, "evt_", 4);
  assert_true(e->created_us > 0);
  assert_int_equal(e->data_len, strlen(data));
  assert_string_equal(e->data, data);
}

/* Delivers every job of one claim. */
static void pg_deliver_all(struct store_outbox_work *o) {
  for (size_t i = 0; i < o->count; i++) {
    struct store_delivery_result r = pg_result(&o->jobs[i], DELIVERY_DELIVERED, 200);
    pg_finish(B->store, &r, 1);
  }
  store_jobs_free(o);
}

static void test_pg_outbox_events_follow_changes(void **state) {
  (void)state;
  char tag[16], sub[OUTBOX_SUB_ID_MAX], id[64];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_%s", tag);
  snprintf(id, sizeof id, "ob-%s", tag);
  pg_sub_create(B->store, sub, OUTBOX_TYPES_ALL, NULL);
  (void)pg_fanout(B->store);
  struct store_outbox_work o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 0); /* nothing from before it was made */
  char *v1 = conv_body(id, "e@example.com", "acc", 1, NULL);
  char *v2 = conv_body(id, "e@example.com", "acc", 2, NULL);
  (void)put_ok(v1);
  char *d1 = pg_detail(id);
  assert_true(put_ok(v1).duplicate); /* a redelivery: no event */
  (void)put_ok(v2);
  char *d2 = pg_detail(id);
  assert_int_equal(pg_fanout(B->store), 2);
  assert_int_equal(pg_fanout(B->store), 0);
  /* in order: the update waits for the creation */
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  pg_check_event(&o.jobs[0].event, OUTBOX_CREATED, id, d1);
  assert_int_equal(o.jobs[0].attempt, 1);
  int64_t first_seq = o.jobs[0].event.seq;
  pg_deliver_all(&o);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  pg_check_event(&o.jobs[0].event, OUTBOX_UPDATED, id, d2);
  assert_true(o.jobs[0].event.seq > first_seq);
  pg_deliver_all(&o);
  /* erasure: earlier events go, conversation.deleted comes */
  assert_true(erase_ok(id) > 0);
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox_events WHERE conversation_id = '%s'", id);
  assert_int_equal(direct_sql(sql), 1);
  assert_int_equal(pg_fanout(B->store), 1);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  size_t dl;
  char *deleted = outbox_deleted_data(id, false, &dl);
  pg_check_event(&o.jobs[0].event, OUTBOX_DELETED, id, deleted);
  free(deleted);
  pg_deliver_all(&o);
  /* erasing it again (nothing left) keeps that event and writes none */
  assert_int_equal(erase_ok(id), 0);
  assert_int_equal(direct_sql(sql), 1);
  assert_int_equal(pg_fanout(B->store), 0);
  struct store_attempt_page page;
  assert_int_equal(store_attempt_list(B->store, sub, 0, 0, 10, &page), STORE_OK);
  /* the created and updated events' attempts went with the erasure (their answers may echo the
   * data); the deletion's own stays */
  assert_int_equal(page.count, 1);
  assert_int_equal(page.items[0].type, OUTBOX_DELETED);
  assert_int_equal(page.items[0].outcome, DELIVERY_DELIVERED);
  assert_int_equal(page.items[0].status_code, 200);
  assert_string_equal(page.items[0].response_head, "answer 200");
  free(page.items);
  struct subscription got;
  assert_int_equal(store_sub_get(B->store, sub, &got), STORE_OK);
  assert_sub_secret(&got, "whsec_c2VjcmV0LW9mLSVz");
  assert_true(got.last_success_us > 0);
  pg_sub_delete(sub);
  assert_int_equal(store_sub_get(B->store, sub, &got), STORE_NOT_FOUND);
  free(v1);
  free(v2);
  free(d1);
  free(d2);
}

static void test_pg_outbox_audio_and_failed_events(void **state) {
  (void)state;
  char tag[16], sub[OUTBOX_SUB_ID_MAX], id[64];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_%s", tag);
  snprintf(id, sizeof id, "oba-%s", tag);
  pg_sub_create(B->store, sub, OUTBOX_TYPES_ALL, NULL);
  (void)pg_fanout(B->store);
  /* audio before the conversation: the audio alone */
  int fd = audio_file(1000, 7);
  (void)put_audio(id, fd, 1000, NULL);
  close(fd);
  /* then the conversation: GET shows the audio with it */
  char *v1 = conv_body(id, "e@example.com", "acc", 1, NULL);
  (void)put_ok(v1);
  char *d1 = pg_detail(id);
  assert_non_null(strstr(d1, "\"audio\":{\"bytes\":1000,"));
  /* new audio for the stored conversation: its data with the new audio */
  fd = audio_file(2000, 8);
  (void)put_audio(id, fd, 2000, "\"x\":1");
  close(fd);
  char *d2 = pg_detail(id);
  assert_int_equal(pg_fanout(B->store), 3);
  struct store_outbox_work o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  size_t n;
  char *alone = NULL;
  assert_true(asprintf(&alone,
                       "{\"conversationId\":\"%s\",\"audio\":{\"bytes\":1000,\"url\":"
                       "\"/api/v1/conversations/%s/audio\"}}",
                       id, id) > 0);
  pg_check_event(&o.jobs[0].event, OUTBOX_AUDIO_ADDED, id, alone);
  pg_deliver_all(&o);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  pg_check_event(&o.jobs[0].event, OUTBOX_CREATED, id, d1);
  pg_deliver_all(&o);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  pg_check_event(&o.jobs[0].event, OUTBOX_AUDIO_ADDED, id, d2);
  pg_deliver_all(&o);
  /* a failed call's event */
  char fid[64];
  snprintf(fid, sizeof fid, "obf-%s", tag);
  char *ev = event_json("call_initiation_failure", fid, NULL);
  char *seed = conv_body(fid, "f@example.com", "acc", 0, NULL);
  struct pending *p = event_new(fid, "call_initiation_failure", ev, seed);
  p->in.status = "failed";
  p->in.failure_reason = "busy";
  (void)submit_ok(p);
  char *df = pg_detail(fid);
  assert_int_equal(pg_fanout(B->store), 1);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  pg_check_event(&o.jobs[0].event, OUTBOX_FAILED, fid, df);
  pg_deliver_all(&o);
  (void)n;
  pg_sub_delete(sub);
  free(ev);
  free(seed);
  free(df);
  free(alone);
  free(v1);
  free(d1);
  free(d2);
}

static void test_pg_outbox_pause_dead_letter_resume_replay(void **state) {
  (void)state;
  char tag[16], sub[OUTBOX_SUB_ID_MAX], id[64];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_%s", tag);
  pg_sub_create(B->store, sub, OUTBOX_TYPES_ALL, NULL);
  (void)pg_fanout(B->store);
  int64_t t0 = time_now_us();
  for (int i = 0; i < 2; i++) {
    snprintf(id, sizeof id, "obp-%d-%s", i, tag);
    (void)put_conv(id, "e@example.com", "acc");
  }
  assert_int_equal(pg_fanout(B->store), 2);
  /* the schedule exhausted with no success since: paused, the event waits */
  struct store_outbox_work o = pg_claim(B->store, sub, 1, 0);
  assert_int_equal(o.count, 1);
  struct store_delivery_result r = pg_result(&o.jobs[0], DELIVERY_FAILED, 500);
  pg_finish(B->store, &r, 1);
  store_jobs_free(&o);
  struct subscription got;
  assert_int_equal(store_sub_get(B->store, sub, &got), STORE_OK);
  assert_true(got.paused);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 0);
  struct store_outbox_stats stats;
  assert_int_equal(store_outbox_stats(B->store, NULL, &stats), STORE_OK);
  assert_true(stats.pending_deliveries >= 2);
  /* re-enabled: due at once, both */
  got.paused = false;
  got.updated_us = time_now_us();
  struct store_write w = {.kind = STORE_WRITE_SUB_PUT, .sub = &got, .sub_enabled_given = true};
  assert_int_equal(ob_submit(B->store, &w), STORE_OK);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 2);
  /* one succeeds; the other exhausts its schedule after that success: dead letter */
  struct store_delivery_result rs[2] = {pg_result(&o.jobs[0], DELIVERY_DELIVERED, 204),
                                        pg_result(&o.jobs[1], DELIVERY_FAILED, 500)};
  rs[1].first_attempt_us = t0;
  rs[1].at_us = time_now_us() + 1000;
  pg_finish(B->store, rs, 2);
  store_jobs_free(&o);
  assert_int_equal(store_sub_get(B->store, sub, &got), STORE_OK);
  assert_false(got.paused);
  assert_int_equal(store_outbox_stats(B->store, NULL, &stats), STORE_OK);
  assert_true(stats.dead_letters >= 1);
  struct store_attempt_page page;
  assert_int_equal(store_attempt_list(B->store, sub, 0, 0, 10, &page), STORE_OK);
  assert_int_equal(page.count, 3);
  assert_int_equal(page.items[0].outcome, DELIVERY_FAILED);
  assert_int_equal(page.items[2].outcome, DELIVERY_PAUSED);
  free(page.items);
  /* replay: both again, their ids kept, attempts from 1 */
  struct store_write rw = {.kind = STORE_WRITE_REPLAY, .sub_id = sub, .replay_since_us = t0};
  assert_int_equal(ob_submit(B->store, &rw), STORE_OK);
  assert_int_equal(rw.erased, 2);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 2);
  assert_int_equal(o.jobs[0].attempt, 1);
  assert_int_equal(o.jobs[1].attempt, 1);
  pg_deliver_all(&o);
  /* a replay while the delivery is in flight: its answer does not close it, it goes again */
  snprintf(id, sizeof id, "obr-%s", tag);
  (void)put_conv(id, "e@example.com", "acc");
  assert_int_equal(pg_fanout(B->store), 1);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  struct store_write iw = {.kind = STORE_WRITE_REPLAY, .sub_id = sub, .replay_since_us = t0};
  assert_int_equal(ob_submit(B->store, &iw), STORE_OK);
  assert_int_equal(iw.erased, 3);
  r = pg_result(&o.jobs[0], DELIVERY_DELIVERED, 200);
  pg_finish(B->store, &r, 1);
  char evt[OUTBOX_EVENT_ID_MAX];
  snprintf(evt, sizeof evt, "%s", o.jobs[0].event.id);
  store_jobs_free(&o);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 3);
  bool again = false;
  for (size_t i = 0; i < o.count; i++) {
    assert_int_equal(o.jobs[i].attempt, 1);
    again = again || strcmp(o.jobs[i].event.id, evt) == 0;
  }
  assert_true(again);
  pg_deliver_all(&o);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 0);
  struct store_write nw = {.kind = STORE_WRITE_REPLAY, .sub_id = "sub_none", .replay_since_us = 0};
  assert_int_equal(ob_submit(B->store, &nw), STORE_NOT_FOUND);
  /* 410: disabled, the event waits */
  snprintf(id, sizeof id, "obg-%s", tag);
  (void)put_conv(id, "e@example.com", "acc");
  assert_int_equal(pg_fanout(B->store), 1);
  o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  r = pg_result(&o.jobs[0], DELIVERY_DISABLED, 410);
  pg_finish(B->store, &r, 1);
  store_jobs_free(&o);
  assert_int_equal(store_sub_get(B->store, sub, &got), STORE_OK);
  assert_false(got.enabled);
  assert_string_equal(got.disabled_reason, "gone");
  pg_sub_delete(sub);
}

static void test_pg_outbox_account_filter(void **state) {
  (void)state;
  char tag[16], sub[OUTBOX_SUB_ID_MAX], id[64], acc[64];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_%s", tag);
  snprintf(acc, sizeof acc, "acc-%s", tag);
  pg_sub_create(B->store, sub, 1u << OUTBOX_CREATED, acc);
  (void)pg_fanout(B->store);
  snprintf(id, sizeof id, "obx-1-%s", tag);
  (void)put_conv(id, "e@example.com", acc);
  snprintf(id, sizeof id, "obx-2-%s", tag);
  (void)put_conv(id, "e@example.com", "other");
  char *v2 = conv_body(id, "e@example.com", acc, 3, NULL); /* updated: not wanted */
  (void)put_ok(v2);
  free(v2);
  assert_int_equal(pg_fanout(B->store), 1);
  struct store_outbox_work o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  snprintf(id, sizeof id, "obx-1-%s", tag);
  assert_string_equal(o.jobs[0].event.conversation_id, id);
  pg_deliver_all(&o);
  pg_sub_delete(sub);
}

/* Two stores on one database: no job leased by both, fan-out not doubled, a broker cursor
 * leased by one. */
struct pg_claimer {
  struct store *store;
  const char *sub;
  int64_t seqs[512];
  size_t n;
  int64_t fanned; /* deliveries its fan-outs made */
};

static void *pg_claim_loop(void *arg) {
  struct pg_claimer *c = arg;
  for (int round = 0; round < 200; round++) {
    c->fanned += pg_fanout(c->store);
    struct store_outbox_work o = pg_claim(c->store, c->sub, 7, 0);
    for (size_t i = 0; i < o.count && c->n < 512; i++) {
      c->seqs[c->n++] = o.jobs[i].event.seq;
      struct store_delivery_result r = pg_result(&o.jobs[i], DELIVERY_DELIVERED, 200);
      pg_finish(c->store, &r, 1);
    }
    store_jobs_free(&o);
  }
  return NULL;
}

static struct store *pg_other_store(void) {
  char err[512] = "";
  struct store *other = store_open(B->url, err, sizeof err);
  if (!other) fail_msg("second instance: %s", err);
  if (B->ring && store_set_ring(other, B->ring, err, sizeof err) != STORE_OK)
    fail_msg("second instance's ring: %s", err);
  return other;
}

static void test_pg_outbox_two_stores_share_the_work(void **state) {
  (void)state;
  struct store *other = pg_other_store();
  char tag[16], sub[OUTBOX_SUB_ID_MAX], id[64];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_%s", tag);
  pg_sub_create(B->store, sub, OUTBOX_TYPES_ALL, NULL);
  (void)pg_fanout(B->store);
  enum { N = 60 };
  /* the broker cursor starts where the outbox ends now (a read is bounded in bytes: the shared
   * database's earlier, large events are not what this test reads) */
  char cursor[64], sql[256];
  snprintf(cursor, sizeof cursor, "queue-%s", tag);
  snprintf(sql, sizeof sql,
           "INSERT INTO outbox_cursors (name, seq) SELECT '%s', COALESCE(max(seq), 0) "
           "FROM outbox_events",
           cursor);
  (void)direct_sql(sql);
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "ob2-%d-%s", i, tag);
    (void)put_conv(id, "e@example.com", "acc");
  }
  struct pg_claimer a = {.store = B->store, .sub = sub}, b = {.store = other, .sub = sub};
  pthread_t ta, tb;
  assert_int_equal(pthread_create(&ta, NULL, pg_claim_loop, &a), 0);
  assert_int_equal(pthread_create(&tb, NULL, pg_claim_loop, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_int_equal(a.fanned + b.fanned, N); /* each event fanned out once, by one of them */
  assert_int_equal(a.n + b.n, N);           /* every one once: leased by one */
  for (size_t i = 0; i < a.n; i++)
    for (size_t k = 0; k < b.n; k++) assert_true(a.seqs[i] != b.seqs[k]);
  assert_true(a.n > 0 || b.n > 0);
  /* the broker cursor: one holder at a time, until its lease runs out */
  int64_t now = time_now_us();
  struct store_outbox_work q = {.op = STORE_OUTBOX_QUEUE_READ,
                                .now_us = now,
                                .lease_us = 5 * 1000000LL,
                                .limit = 1000000,
                                .cursor_name = cursor};
  struct store_write w = {.kind = STORE_WRITE_OUTBOX, .outbox = &q};
  assert_int_equal(ob_submit(B->store, &w), STORE_OK);
  assert_false(q.busy);
  assert_true(q.count >= N);
  int64_t upto = q.events[q.count - 1].seq;
  for (size_t i = 1; i < q.count; i++) assert_true(q.events[i].seq > q.events[i - 1].seq);
  store_jobs_free(&q);
  struct store_outbox_work q2 = q;
  q2.now_us = now + 1000000;
  w.outbox = &q2;
  assert_int_equal(ob_submit(other, &w), STORE_OK);
  assert_true(q2.busy);
  assert_int_equal(q2.count, 0);
  /* the other cannot move it; the holder can */
  struct store_outbox_work adv = {
      .op = STORE_OUTBOX_QUEUE_ADVANCE, .cursor_name = cursor, .upto_seq = upto};
  w.outbox = &adv;
  assert_int_equal(ob_submit(other, &w), STORE_OK);
  struct store_outbox_stats stats;
  assert_int_equal(store_outbox_stats(B->store, cursor, &stats), STORE_OK);
  assert_true(stats.queue_backlog >= N);
  assert_int_equal(ob_submit(B->store, &w), STORE_OK);
  assert_int_equal(store_outbox_stats(B->store, cursor, &stats), STORE_OK);
  assert_int_equal(stats.queue_backlog, 0);
  /* expired: the other takes it, from where it was moved */
  ob_leases_age(NULL, cursor, 6 * 1000000LL);
  q2.now_us = now + 6 * 1000000LL;
  w.outbox = &q2;
  assert_int_equal(ob_submit(other, &w), STORE_OK);
  assert_false(q2.busy);
  assert_int_equal(q2.count, 0);
  /* an expired delivery lease makes the delivery due again, for either */
  snprintf(id, sizeof id, "ob2-late-%s", tag);
  (void)put_conv(id, "e@example.com", "acc");
  assert_int_equal(pg_fanout(other), 1);
  struct store_outbox_work o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  struct store_outbox_work o2 = pg_claim(other, sub, 10, 0);
  assert_int_equal(o2.count, 0);
  ob_leases_age(sub, NULL, 31 * 1000000LL);
  o2 = pg_claim(other, sub, 10, time_now_us() + 31 * 1000000LL);
  assert_int_equal(o2.count, 1);
  assert_int_equal(o2.jobs[0].event.seq, o.jobs[0].event.seq);
  assert_int_equal(o2.jobs[0].attempt, 1);
  /* the first lease is no longer its holder's: its result is ignored */
  struct store_delivery_result stale = pg_result(&o.jobs[0], DELIVERY_DELIVERED, 200);
  pg_finish(B->store, &stale, 1);
  store_jobs_free(&o);
  struct store_attempt_page page;
  assert_int_equal(store_attempt_list(B->store, sub, 0, 0, 1, &page), STORE_OK);
  assert_int_equal(page.count, 1);
  assert_true(strcmp(page.items[0].event_id, o2.jobs[0].event.id) != 0);
  free(page.items);
  struct store_delivery_result fresh = pg_result(&o2.jobs[0], DELIVERY_DELIVERED, 200);
  pg_finish(other, &fresh, 1);
  store_jobs_free(&o2);
  store_close(other);
  pg_sub_delete(sub);
  /* a broker cursor left behind would hold back every later prune */
  snprintf(sql, sizeof sql, "DELETE FROM outbox_cursors WHERE name = '%s'", cursor);
  (void)direct_sql(sql);
}

/* Leases run on the database server's clock (issue 10 follow-up): an instance whose clock is ten
 * minutes ahead (the now_us it passes) takes neither another's live delivery lease nor its broker
 * cursor, nor claims through a receiver's hold; one ten minutes behind takes the cursor as soon
 * as its lease ran out by the database's clock (it does not wait ten minutes more). */
static void test_pg_outbox_leases_use_the_database_clock(void **state) {
  (void)state;
  struct store *other = pg_other_store();
  char tag[16], sub[OUTBOX_SUB_ID_MAX], id[64], cursor[64], sql[256];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_%s", tag);
  snprintf(id, sizeof id, "skew-%s", tag);
  snprintf(cursor, sizeof cursor, "queue-%s", tag);
  pg_sub_create(B->store, sub, OUTBOX_TYPES_ALL, NULL);
  (void)pg_fanout(B->store);
  snprintf(sql, sizeof sql,
           "INSERT INTO outbox_cursors (name, seq) SELECT '%s', COALESCE(max(seq), 0) "
           "FROM outbox_events",
           cursor);
  (void)direct_sql(sql);
  (void)put_conv(id, "e@example.com", "acc");
  assert_int_equal(pg_fanout(B->store), 1);
  const int64_t skew = 600LL * 1000000LL, lease = 2LL * 1000000LL;
  struct store_outbox_work o = {.op = STORE_OUTBOX_CLAIM,
                                .now_us = time_now_us(),
                                .lease_us = lease,
                                .limit = 10,
                                .sub_id = sub};
  struct store_write w = {.kind = STORE_WRITE_OUTBOX, .outbox = &o};
  assert_int_equal(ob_submit(B->store, &w), STORE_OK);
  assert_int_equal(o.count, 1);
  struct store_outbox_work q = {.op = STORE_OUTBOX_QUEUE_READ,
                                .now_us = time_now_us(),
                                .lease_us = lease,
                                .limit = 10,
                                .cursor_name = cursor};
  w.outbox = &q;
  assert_int_equal(ob_submit(B->store, &w), STORE_OK);
  assert_false(q.busy);
  assert_int_equal(q.count, 1);
  store_jobs_free(&q);
  int64_t leased = time_now_us();
  /* ahead: nothing of either */
  struct store_outbox_work o2 = pg_claim(other, sub, 10, time_now_us() + skew);
  assert_int_equal(o2.count, 0);
  struct store_outbox_work q2 = {.op = STORE_OUTBOX_QUEUE_READ,
                                 .now_us = time_now_us() + skew,
                                 .lease_us = lease,
                                 .limit = 10,
                                 .cursor_name = cursor};
  w.outbox = &q2;
  assert_int_equal(ob_submit(other, &w), STORE_OK);
  assert_true(q2.busy);
  /* the database's clock passes the leases */
  int64_t left = leased + lease + 200000 - time_now_us();
  if (left > 0) usleep((useconds_t)left);
  q2.now_us = time_now_us() - skew;
  assert_int_equal(ob_submit(other, &w), STORE_OK);
  assert_false(q2.busy);
  assert_int_equal(q2.count, 1);
  store_jobs_free(&q2);
  o2 = pg_claim(other, sub, 10, 0);
  assert_int_equal(o2.count, 1);
  assert_int_equal(o2.jobs[0].event.seq, o.jobs[0].event.seq);
  store_jobs_free(&o);
  /* a receiver's hold, on the database's clock too: a clock ahead does not end it */
  struct store_delivery_result r = pg_result(&o2.jobs[0], DELIVERY_RETRY, 429);
  r.next_at_us = time_now_us();
  r.hold_us = 30LL * 1000000LL;
  pg_finish(other, &r, 1);
  store_jobs_free(&o2);
  o = pg_claim(B->store, sub, 10, time_now_us() + skew);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  snprintf(sql, sizeof sql,
           "SELECT (hold_until_us - (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) "
           "/ 1000000 FROM subscriptions WHERE id = '%s'",
           sub);
  int64_t held_s = direct_sql(sql);
  assert_true(held_s >= 25 && held_s <= 30);
  store_close(other);
  pg_sub_delete(sub);
  snprintf(sql, sizeof sql, "DELETE FROM outbox_cursors WHERE name = '%s'", cursor);
  (void)direct_sql(sql);
}

/* A failed delivery's next attempt on the database's clock too (pgclock): fan-out by an instance
 * whose clock runs ahead makes its deliveries due at once for one behind; the one behind records
 * a retry in 60 s; an instance ahead finds it not due yet, and finds it due once 60 s passed on
 * the database's clock (the stored time is the database's now + 60 s, whatever the clocks say;
 * the 60 s pass by ob_retries_age, so a loaded machine's delays never reach the margin). */
static void test_pg_outbox_retry_times_use_the_database_clock(void **state) {
  (void)state;
  struct store *other = pg_other_store();
  char tag[16], sub[OUTBOX_SUB_ID_MAX], id[64], sql[256];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_%s", tag);
  pg_sub_create(B->store, sub, OUTBOX_TYPES_ALL, NULL);
  (void)pg_fanout(B->store);
  const int64_t skew = 600LL * 1000000LL, wait = 60LL * 1000000LL;
  snprintf(id, sizeof id, "retry-skew-%s", tag);
  (void)put_conv(id, "e@example.com", "acc");
  /* fan-out by an instance ahead: due at once for one behind */
  struct store_outbox_work f = {
      .op = STORE_OUTBOX_FANOUT, .now_us = time_now_us() + skew, .limit = 1000};
  struct store_write w = {.kind = STORE_WRITE_OUTBOX, .outbox = &f};
  assert_int_equal(ob_submit(B->store, &w), STORE_OK);
  assert_int_equal(f.added, 1);
  struct store_outbox_work o = pg_claim(other, sub, 10, time_now_us() - skew);
  assert_int_equal(o.count, 1);
  /* it fails: the instance behind asks for a retry in 60 s from its own now */
  struct store_delivery_result r = pg_result(&o.jobs[0], DELIVERY_RETRY, 500);
  r.at_us = time_now_us() + skew;
  struct store_outbox_work fin = {
      .op = STORE_OUTBOX_FINISH, .now_us = time_now_us() - skew, .results = &r, .nresults = 1};
  r.next_at_us = fin.now_us + wait;
  w.outbox = &fin;
  assert_int_equal(ob_submit(other, &w), STORE_OK);
  store_jobs_free(&o);
  /* stored as the database's now + 60 s (not 10 min in the past or future) */
  snprintf(sql, sizeof sql,
           "SELECT (next_at_us - (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) / 1000 "
           "FROM sub_deliveries WHERE sub_id = '%s'",
           sub);
  int64_t left_ms = direct_sql(sql);
  assert_true(left_ms > 30000 && left_ms <= 60000);
  /* an instance ahead further: not due yet */
  o = pg_claim(B->store, sub, 10, time_now_us() + 2 * skew);
  assert_int_equal(o.count, 0);
  store_jobs_free(&o);
  /* 60 s later on the database's clock: due */
  ob_retries_age(sub, wait);
  o = pg_claim(B->store, sub, 10, time_now_us() + 2 * skew);
  assert_int_equal(o.count, 1);
  assert_int_equal(o.jobs[0].attempt, 2);
  store_jobs_free(&o);
  store_close(other);
  pg_sub_delete(sub);
}

/* ---- pgfix: races between the dispatcher's work and erasure (review of the pg outbox) ---- */

/* A second connection of the test's own, with a transaction open (its locks held). */
static PGconn *pg_hold(void) {
  PGconn *c = PQconnectdb(B->url);
  assert_int_equal(PQstatus(c), CONNECTION_OK);
  PGresult *r = PQexec(c, "BEGIN");
  assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  return c;
}

/* Runs sql in the held transaction; whether it succeeded (SQLSTATE in state otherwise). */
static bool pg_held_sql(PGconn *c, const char *sql, char state[6]) {
  PGresult *r = PQexec(c, sql);
  bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok && state) {
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(state, 6, "%s", st ? st : "");
  }
  PQclear(r);
  return ok;
}

static void pg_release(PGconn *c) {
  (void)pg_held_sql(c, "COMMIT", NULL);
  PQfinish(c);
}

static int64_t pg_orphans(void) {
  return direct_sql(
      "SELECT count(*) FROM sub_deliveries d WHERE NOT EXISTS "
      "(SELECT 1 FROM outbox_events e WHERE e.seq = d.seq)");
}

/* A fan-out that made deliveries of a conversation's events while an erasure of it ran (here: a
 * second connection inserting them as fan-out does, its transaction still open) leaves no
 * delivery without its event: the erasure waits for it and takes what it made along. Before,
 * such rows stayed pending for good and, by the per-conversation order, held back the
 * conversation's conversation.deleted (and with a claim limit of 1, everything). */
static void test_pg_outbox_fanout_racing_an_erasure(void **state) {
  (void)state;
  char tag[16], sub[OUTBOX_SUB_ID_MAX], y[64], z[64], sql[512];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_race_%s", tag);
  snprintf(y, sizeof y, "race-y-%s", tag);
  snprintf(z, sizeof z, "race-z-%s", tag);
  pg_sub_create(B->store, sub, OUTBOX_TYPES_ALL, NULL);
  (void)pg_fanout(B->store);
  (void)put_conv(y, "e@example.com", "acc");
  char *y2 = conv_body(y, "e@example.com", "acc", 2, NULL);
  struct pending *p = put(y2);
  pending_free(p);
  free(y2);
  (void)put_conv(z, "e@example.com", "acc");
  PGconn *fan = pg_hold();
  snprintf(sql, sizeof sql,
           "INSERT INTO sub_deliveries (sub_id, seq, conversation_id, state, attempts, "
           "first_attempt_us, next_at_us) SELECT '%s', seq, conversation_id, 0, 0, 0, 0 "
           "FROM outbox_events WHERE conversation_id = '%s'",
           sub, y);
  assert_true(pg_held_sql(fan, sql, NULL));
  struct pending *er = erase_new(y);
  store_submit(B->store, &er->w);
  usleep(300 * 1000); /* the erasure reaches the fan-out's locks */
  pg_release(fan);
  wait_done(er);
  assert_int_equal(er->w.status, STORE_OK);
  assert_true(er->w.erased > 0);
  pending_free(er);
  assert_int_equal(pg_orphans(), 0);
  /* the subscription gets z's event and y's conversation.deleted, one claim slot at a time */
  assert_int_equal(pg_fanout(B->store), 2);
  bool got_deleted = false, got_z = false;
  for (int i = 0; i < 4; i++) {
    struct store_outbox_work o = pg_claim(B->store, sub, 1, 0);
    if (o.count == 0) break;
    assert_int_equal(o.count, 1);
    if (o.jobs[0].event.type == OUTBOX_DELETED && strcmp(o.jobs[0].event.conversation_id, y) == 0)
      got_deleted = true;
    if (strcmp(o.jobs[0].event.conversation_id, z) == 0) got_z = true;
    pg_deliver_all(&o);
  }
  assert_true(got_deleted);
  assert_true(got_z);
  pg_sub_delete(sub);
}

/* FINISH locks a batch's deliveries in (sub_id, seq) order; the erasure of their conversation
 * locks them in that order too, so the two wait for each other without deadlock (before, the
 * erasure deleted them in the order of the rows on disk: it held one FINISH wanted next, and
 * the writer's batch, every webhook in it, was the deadlock's victim). */
static void test_pg_outbox_erasure_and_finish_lock_in_one_order(void **state) {
  (void)state;
  char tag[16], s1[OUTBOX_SUB_ID_MAX], s2[OUTBOX_SUB_ID_MAX], x[64], sql[512];
  new_tag(tag);
  snprintf(s1, sizeof s1, "sub_a_%s", tag);
  snprintf(s2, sizeof s2, "sub_b_%s", tag);
  snprintf(x, sizeof x, "lock-x-%s", tag);
  pg_sub_create(B->store, s1, OUTBOX_TYPES_ALL, NULL);
  pg_sub_create(B->store, s2, OUTBOX_TYPES_ALL, NULL);
  (void)pg_fanout(B->store);
  (void)put_conv(x, "e@example.com", "acc");
  assert_int_equal(pg_fanout(B->store), 2);
  /* s1's row rewritten (a retry): on disk it now comes after s2's */
  struct store_outbox_work o = pg_claim(B->store, s1, 10, 0);
  assert_int_equal(o.count, 1);
  struct store_delivery_result r = pg_result(&o.jobs[0], DELIVERY_RETRY, 500);
  pg_finish(B->store, &r, 1);
  store_jobs_free(&o);
  /* a FINISH of both (as finish_sql locks them): s1's first... */
  PGconn *fin = pg_hold();
  (void)pg_held_sql(fin, "SET deadlock_timeout = '200ms'", NULL);
  snprintf(sql, sizeof sql,
           "SELECT 1 FROM sub_deliveries WHERE sub_id = '%s' AND conversation_id = '%s' "
           "FOR UPDATE",
           s1, x);
  assert_true(pg_held_sql(fin, sql, NULL));
  struct pending *er = erase_new(x);
  store_submit(B->store, &er->w);
  usleep(300 * 1000); /* the erasure waits for s1's row */
  /* ...then s2's: the erasure must not hold it */
  snprintf(sql, sizeof sql,
           "SELECT 1 FROM sub_deliveries WHERE sub_id = '%s' AND conversation_id = '%s' "
           "FOR UPDATE",
           s2, x);
  char st[6] = "";
  bool ok = pg_held_sql(fin, sql, st);
  if (!ok) fail_msg("the FINISH's second lock failed (SQLSTATE %s)", st);
  pg_release(fin);
  wait_done(er);
  assert_int_equal(er->w.status, STORE_OK);
  pending_free(er);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM sub_deliveries WHERE conversation_id = '%s'", x);
  assert_int_equal(direct_sql(sql), 0);
  pg_sub_delete(s1);
  pg_sub_delete(s2);
}

/* Two erasures of one conversation in one writer batch (a client's retry, or erasure and
 * retention at once): the first one's conversation.deleted is written; the second, of nothing,
 * writes none and removes nothing of the first's. */
static void test_pg_outbox_two_erasures_in_one_batch(void **state) {
  (void)state;
  char tag[16], x[64], w[64], sql[512];
  new_tag(tag);
  snprintf(x, sizeof x, "twice-x-%s", tag);
  snprintf(w, sizeof w, "twice-w-%s", tag);
  (void)put_conv(x, "e@example.com", "acc");
  (void)put_conv(w, "e@example.com", "acc");
  /* the writer held on w's row, so the two erasures queue up behind it as one batch */
  PGconn *hold = pg_hold();
  snprintf(sql, sizeof sql, "SELECT 1 FROM conversations WHERE conversation_id = '%s' FOR UPDATE",
           w);
  assert_true(pg_held_sql(hold, sql, NULL));
  char *w2 = conv_body(w, "e@example.com", "acc", 2, NULL);
  struct pending *first = pending_new(w2);
  store_submit(B->store, &first->w);
  usleep(200 * 1000);
  struct pending *e1 = erase_new(x), *e2 = erase_new(x);
  store_submit(B->store, &e1->w);
  store_submit(B->store, &e2->w);
  usleep(100 * 1000);
  pg_release(hold);
  wait_done(first);
  wait_done(e1);
  wait_done(e2);
  assert_int_equal(first->w.status, STORE_OK);
  assert_int_equal(e1->w.status, STORE_OK);
  assert_int_equal(e2->w.status, STORE_OK);
  assert_true(e1->w.erased > 0);
  assert_int_equal(e2->w.erased, 0);
  pending_free(first);
  pending_free(e1);
  pending_free(e2);
  free(w2);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM outbox_events WHERE conversation_id = '%s' AND type = 5", x);
  assert_int_equal(direct_sql(sql), 1);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM outbox_events WHERE conversation_id = '%s' AND type <> 5", x);
  assert_int_equal(direct_sql(sql), 0);
}

/* Retention of audio that has no conversation takes its audio_added events with it and writes
 * conversation.deleted, as an erasure of it does. */
static void test_pg_outbox_retention_of_lone_audio(void **state) {
  (void)state;
  char tag[16], id[64], sql[512];
  new_tag(tag);
  snprintf(id, sizeof id, "lone-au-%s", tag);
  int fd = audio_file(1000, 3);
  (void)put_audio(id, fd, 1000, NULL);
  close(fd);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM outbox_events WHERE conversation_id = '%s' AND type = 3", id);
  assert_int_equal(direct_sql(sql), 1);
  const int64_t day = 86400LL * 1000000LL, now = (int64_t)time(NULL) * 1000000LL;
  age("audio_meta", "received_at_us", id, now - 40 * day);
  age("events", "received_at_us", id, now - 40 * day);
  int64_t n = 0, got;
  while ((got = retain_ok(now - 30 * day, 1000)) > 0) n += got;
  assert_true(n >= 1);
  assert_int_equal(direct_sql(sql), 0);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM outbox_events WHERE conversation_id = '%s' AND type = 5", id);
  assert_int_equal(direct_sql(sql), 1);
}

/* Events sealed with a key this instance lacks (another instance already on a new ring): a
 * subscription filtered on an account cannot tell whether it wants them, so its fan-out stops
 * before the first of them (before, it passed them by and they were lost to it); a claim leaves
 * such a delivery to an instance that can open it and takes the others. */
static void test_pg_outbox_unknown_key_waits(void **state) {
  (void)state;
  char tag[16], filtered[OUTBOX_SUB_ID_MAX], all[OUTBOX_SUB_ID_MAX], x1[64], x2[64], acc[64];
  char sql[512];
  new_tag(tag);
  snprintf(filtered, sizeof filtered, "sub_f_%s", tag);
  snprintf(all, sizeof all, "sub_all_%s", tag);
  snprintf(acc, sizeof acc, "acc-%s", tag);
  snprintf(x1, sizeof x1, "uk-1-%s", tag);
  snprintf(x2, sizeof x2, "uk-2-%s", tag);
  pg_sub_create(B->store, filtered, OUTBOX_TYPES_ALL, acc);
  pg_sub_create(B->store, all, OUTBOX_TYPES_ALL, NULL);
  (void)pg_fanout(B->store);
  (void)put_conv(x1, "e@example.com", acc);
  (void)put_conv(x2, "e@example.com", acc);
  /* x1's event as if sealed with a key no ring here has */
  snprintf(sql, sizeof sql,
           "UPDATE outbox_events SET sealed_with = CASE WHEN sealed_with IS NULL THEN 'kz' "
           "ELSE 'kz:' || sealed_with END WHERE conversation_id = '%s'",
           x1);
  (void)direct_sql(sql);
  assert_int_equal(pg_fanout(B->store), 2); /* x1 and x2 for "all"; none for the filtered */
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM subscriptions s, outbox_events e WHERE s.id = '%s' AND "
           "e.conversation_id = '%s' AND s.cursor_seq < e.seq",
           filtered, x1);
  assert_int_equal(direct_sql(sql), 1); /* its cursor waits before x1's event */
  struct store_outbox_work o = pg_claim(B->store, all, 10, 0);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.conversation_id, x2);
  pg_deliver_all(&o);
  /* the key is known again (the instance has it now): both go on */
  snprintf(sql, sizeof sql,
           "UPDATE outbox_events SET sealed_with = CASE WHEN sealed_with = 'kz' THEN NULL ELSE "
           "substr(sealed_with, 4) END WHERE conversation_id = '%s'",
           x1);
  (void)direct_sql(sql);
  assert_int_equal(pg_fanout(B->store), 2);
  o = pg_claim(B->store, all, 10, 0);
  assert_int_equal(o.count, 1);
  assert_string_equal(o.jobs[0].event.conversation_id, x1);
  pg_deliver_all(&o);
  o = pg_claim(B->store, filtered, 10, 0);
  assert_int_equal(o.count, 2);
  pg_deliver_all(&o);
  pg_sub_delete(filtered);
  pg_sub_delete(all);
}

/* A claim and a broker read hold at most about 16 MiB of event data (always one event at least):
 * a backlog of large conversations does not take the process's memory. */
static void test_pg_outbox_reads_bounded_in_bytes(void **state) {
  (void)state;
  if (B->ring) return; /* data made large by hand: plaintext only */
  char tag[16], sub[OUTBOX_SUB_ID_MAX], id[64], sql[512], cursor[64];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_big_%s", tag);
  snprintf(cursor, sizeof cursor, "queue-big-%s", tag);
  pg_sub_create(B->store, sub, OUTBOX_TYPES_ALL, NULL);
  (void)pg_fanout(B->store);
  for (int i = 0; i < 3; i++) {
    snprintf(id, sizeof id, "big-%d-%s", i, tag);
    (void)put_conv(id, "e@example.com", "acc");
  }
  snprintf(sql, sizeof sql,
           "UPDATE outbox_events SET data = data || convert_to(repeat(' ', 9000000), 'UTF8') "
           "WHERE conversation_id LIKE 'big-%%-%s'",
           tag);
  (void)direct_sql(sql);
  assert_int_equal(pg_fanout(B->store), 3);
  struct store_outbox_work o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 2); /* 9 MB + 9 MB: the third would pass 16 MiB */
  struct store_outbox_work o2 = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o2.count, 1);
  pg_deliver_all(&o);
  pg_deliver_all(&o2);
  snprintf(sql, sizeof sql,
           "INSERT INTO outbox_cursors (name, seq) SELECT '%s', min(seq) - 1 FROM outbox_events "
           "WHERE conversation_id LIKE 'big-%%-%s'",
           cursor, tag);
  (void)direct_sql(sql);
  struct store_outbox_work q = {.op = STORE_OUTBOX_QUEUE_READ,
                                .now_us = time_now_us(),
                                .lease_us = 5 * 1000000LL,
                                .limit = 100,
                                .cursor_name = cursor};
  struct store_write w = {.kind = STORE_WRITE_OUTBOX, .outbox = &q};
  assert_int_equal(ob_submit(B->store, &w), STORE_OK);
  assert_int_equal(q.count, 2);
  store_jobs_free(&q);
  snprintf(sql, sizeof sql, "DELETE FROM outbox_cursors WHERE name = '%s'", cursor);
  (void)direct_sql(sql);
  pg_sub_delete(sub);
  /* the shared database's later readers of the whole outbox need not wade through them */
  snprintf(sql, sizeof sql, "DELETE FROM outbox_events WHERE conversation_id LIKE 'big-%%-%s'",
           tag);
  (void)direct_sql(sql);
}

/* An audio event for a stored conversation that has no event of its own to copy (stored before
 * the outbox existed, or its events pruned): its data is still the conversation as GET shows it,
 * with the conversation's account (a subscription filtered on it gets it), not the audio alone. */
static void test_pg_outbox_audio_of_a_conversation_without_events(void **state) {
  (void)state;
  char tag[16], sub[OUTBOX_SUB_ID_MAX], id[64], acc[64], sql[256];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_au_%s", tag);
  snprintf(acc, sizeof acc, "acc-au-%s", tag);
  snprintf(id, sizeof id, "au-old-%s", tag);
  (void)put_conv(id, "e@example.com", acc);
  snprintf(sql, sizeof sql, "DELETE FROM outbox_events WHERE conversation_id = '%s'", id);
  (void)direct_sql(sql); /* as before the outbox, or after a prune */
  pg_sub_create(B->store, sub, 1u << OUTBOX_AUDIO_ADDED, acc);
  (void)pg_fanout(B->store);
  int fd = audio_file(2000, 5);
  (void)put_audio(id, fd, 2000, "au");
  close(fd);
  assert_int_equal(pg_fanout(B->store), 1);
  struct store_outbox_work o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  char *detail = pg_detail(id);
  pg_check_event(&o.jobs[0].event, OUTBOX_AUDIO_ADDED, id, detail);
  free(detail);
  pg_deliver_all(&o);
  pg_sub_delete(sub);
}

#define PG_KEPT_SUB "sub_kept_over_the_rotation"

/* With a ring: what the outbox keeps is sealed, and opened on read. */
static void test_pg_outbox_sealed(void **state) {
  (void)state;
  if (!B->ring) return;
  char tag[16], sub[OUTBOX_SUB_ID_MAX], id[64], acc[64];
  new_tag(tag);
  snprintf(sub, sizeof sub, "sub_%s", tag);
  snprintf(id, sizeof id, "obs-%s", tag);
  snprintf(acc, sizeof acc, "acc-sealed-%s", tag);
  pg_sub_create(B->store, sub, OUTBOX_TYPES_ALL, acc);
  (void)pg_fanout(B->store);
  (void)put_conv(id, "sealed@example.com", acc);
  char *d = pg_detail(id);
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM outbox_events WHERE conversation_id = '%s' AND sealed_with IS "
           "NOT NULL AND position('sealed@example.com'::bytea IN data) = 0 AND account_id <> '%s' "
           "AND account_sealed IS NOT NULL",
           id, acc);
  assert_int_equal(direct_sql(sql), 1);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM subscriptions WHERE id = '%s' AND secret = '' AND "
           "secret_sealed IS NOT NULL",
           sub);
  assert_int_equal(direct_sql(sql), 1);
  assert_int_equal(pg_fanout(B->store), 1); /* its sealed account matched */
  struct store_outbox_work o = pg_claim(B->store, sub, 10, 0);
  assert_int_equal(o.count, 1);
  pg_check_event(&o.jobs[0].event, OUTBOX_CREATED, id, d);
  pg_deliver_all(&o);
  struct subscription got;
  assert_int_equal(store_sub_get(B->store, sub, &got), STORE_OK);
  assert_sub_secret(&got, "whsec_c2VjcmV0LW9mLSVz");
  pg_sub_delete(sub);
  free(d);
  /* kept for test_pg_outbox_carried_by_reencrypt, after the rotation */
  pg_sub_create(B->store, PG_KEPT_SUB, 1u << OUTBOX_DELETED, NULL);
}

/* After the SEAL_TESTS' rotation (the store seals with k2, k1 retired by a full reencrypt): the
 * outbox written before it was carried along, every event and secret opens. */
static void test_pg_outbox_carried_by_reencrypt(void **state) {
  (void)state;
  assert_int_equal(direct_sql("SELECT count(*) FROM outbox_events WHERE sealed_with IS DISTINCT "
                              "FROM 'k2' AND (type <> 5 OR account_id IS NOT NULL)"),
                   0);
  assert_true(direct_sql("SELECT count(*) FROM outbox_events WHERE sealed_with = 'k2'") > 0);
  assert_int_equal(direct_sql("SELECT count(*) FROM subscriptions WHERE sealed_with IS DISTINCT "
                              "FROM 'k2' OR secret <> ''"),
                   0);
  struct subscription kept;
  assert_int_equal(store_sub_get(B->store, PG_KEPT_SUB, &kept), STORE_OK);
  assert_sub_secret(&kept, "whsec_c2VjcmV0LW9mLSVz");
  pg_sub_delete(PG_KEPT_SUB);
  char tag[16], cursor[64];
  new_tag(tag);
  snprintf(cursor, sizeof cursor, "reencrypted-%s", tag);
  struct store_outbox_work q = {.op = STORE_OUTBOX_QUEUE_READ,
                                .now_us = time_now_us(),
                                .lease_us = 1000000,
                                .limit = 100000,
                                .cursor_name = cursor};
  /* every event opens (read in as many calls as the reads' byte bound takes) */
  int64_t read = 0;
  for (;;) {
    struct store_write w = {.kind = STORE_WRITE_OUTBOX, .outbox = &q};
    q.now_us = time_now_us();
    assert_int_equal(ob_submit(B->store, &w), STORE_OK);
    if (q.count == 0) break;
    read += (int64_t)q.count;
    for (size_t i = 0; i < q.count; i++) assert_true(q.events[i].data_len > 0);
    struct store_outbox_work adv = {.op = STORE_OUTBOX_QUEUE_ADVANCE,
                                    .cursor_name = cursor,
                                    .upto_seq = q.events[q.count - 1].seq};
    store_jobs_free(&q);
    struct store_write wa = {.kind = STORE_WRITE_OUTBOX, .outbox = &adv};
    assert_int_equal(ob_submit(B->store, &wa), STORE_OK);
  }
  assert_int_equal(read, direct_sql("SELECT count(*) FROM outbox_events"));
  char sql[160];
  snprintf(sql, sizeof sql, "DELETE FROM outbox_cursors WHERE name = '%s'", cursor);
  (void)direct_sql(sql);
  char sub[OUTBOX_SUB_ID_MAX];
  snprintf(sub, sizeof sub, "sub_%s", tag);
  pg_sub_create(B->store, sub, OUTBOX_TYPES_ALL, NULL);
  struct subscription *subs = NULL;
  size_t n = 0;
  assert_int_equal(store_sub_list(B->store, &subs, &n), STORE_OK);
  assert_true(n >= 1);
  free(subs);
  pg_sub_delete(sub);
}

/* clang-format off */
#define PG_OUTBOX_TESTS                                                  \
  cmocka_unit_test(test_pg_outbox_events_follow_changes),                \
  cmocka_unit_test(test_pg_outbox_audio_and_failed_events),              \
  cmocka_unit_test(test_pg_outbox_pause_dead_letter_resume_replay),      \
  cmocka_unit_test(test_pg_outbox_account_filter),                       \
  cmocka_unit_test(test_pg_outbox_two_stores_share_the_work),            \
  cmocka_unit_test(test_pg_outbox_leases_use_the_database_clock),        \
  cmocka_unit_test(test_pg_outbox_retry_times_use_the_database_clock),   \
  cmocka_unit_test(test_pg_outbox_fanout_racing_an_erasure),             \
  cmocka_unit_test(test_pg_outbox_erasure_and_finish_lock_in_one_order), \
  cmocka_unit_test(test_pg_outbox_two_erasures_in_one_batch),            \
  cmocka_unit_test(test_pg_outbox_retention_of_lone_audio),              \
  cmocka_unit_test(test_pg_outbox_unknown_key_waits),                    \
  cmocka_unit_test(test_pg_outbox_reads_bounded_in_bytes),               \
  cmocka_unit_test(test_pg_outbox_audio_of_a_conversation_without_events), \
  cmocka_unit_test(test_pg_outbox_sealed)
/* clang-format on */

/* ---------- analytics (issue 11 part 1; store/rollup.h) ---------- */

/* Every rollup row of the store against a recount of its conversations, read directly from the
 * database: each stored row equals the recount's sum for its key, and every key the recount has
 * is stored. */
static void ax_recount_map(struct rollup_map *m) {
  static const char sql[] =
      "SELECT COALESCE(start_time_us, processed_at_us), account_id, agent_id, platform, status, "
      "outcome, duration, message_count FROM conversations";
  rollup_map_init(m, true);
  if (strcmp(B->name, "sqlite") == 0) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(B->sqlite_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
      struct rollup_row row = {.event_us = sqlite3_column_int64(st, 0),
                               .duration = sqlite3_column_int64(st, 6),
                               .messages = sqlite3_column_int64(st, 7)};
      for (int d = 0; d < STORE_DIM_COUNT; d++)
        row.dims[d] = (const char *)sqlite3_column_text(st, 1 + d);
      assert_true(rollup_map_add(m, 1, &row));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return;
  }
  PGconn *c = PQconnectdb(B->url);
  assert_int_equal(PQstatus(c), CONNECTION_OK);
  PGresult *r = PQexec(c, sql);
  assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
  for (int i = 0; i < PQntuples(r); i++) {
    struct rollup_row row = {.event_us = strtoll(PQgetvalue(r, i, 0), NULL, 10),
                             .duration = strtoll(PQgetvalue(r, i, 6), NULL, 10),
                             .messages = strtoll(PQgetvalue(r, i, 7), NULL, 10)};
    for (int d = 0; d < STORE_DIM_COUNT; d++)
      row.dims[d] = PQgetisnull(r, i, 1 + d) ? NULL : PQgetvalue(r, i, 1 + d);
    assert_true(rollup_map_add(m, 1, &row));
  }
  PQclear(r);
  PQfinish(c);
}

static void ax_check_row(struct rollup_map *m, enum rollup_level level, int dim, int64_t at,
                         const char *const *vals, int64_t conv, int64_t msgs, int64_t dur,
                         const int64_t *hist, size_t *rows) {
  struct rollup_entry *e = rollup_map_find(m, level, dim, at, vals);
  if (!e)
    fail_msg("%s: a level %d rollup row at %lld (%s) counts %lld conversations the recount has not",
             B->name, (int)level, (long long)at, vals && vals[0] ? vals[0] : "", (long long)conv);
  if (e->conversations != conv || e->messages != msgs || e->duration_sum != dur)
    fail_msg("%s: level %d rollup row at %lld: %lld/%lld/%lld, recount %lld/%lld/%lld", B->name,
             (int)level, (long long)at, (long long)conv, (long long)msgs, (long long)dur,
             (long long)e->conversations, (long long)e->messages, (long long)e->duration_sum);
  if (rollup_keeps_hist(level, dim)) {
    assert_memory_equal(e->hist, hist, sizeof e->hist);
  } else { /* kept empty: no scan reads it */
    static const int64_t none[ANALYTICS_HIST_BUCKETS];
    assert_memory_equal(none, hist, sizeof none);
  }
  (*rows)++;
}

static void ax_parse_pg_hist(const char *text, int64_t hist[ANALYTICS_HIST_BUCKETS]) {
  memset(hist, 0, ANALYTICS_HIST_BUCKETS * sizeof *hist);
  if (strcmp(text, "{}") == 0) return; /* an empty one */
  const char *p = text;
  assert_true(*p == '{');
  p++;
  for (int b = 0; b < ANALYTICS_HIST_BUCKETS; b++) {
    char *end;
    hist[b] = strtoll(p, &end, 10);
    assert_true(end != p);
    p = end + 1;
  }
}

static void ax_assert_rollups_match_recount(void) {
  struct rollup_map m;
  ax_recount_map(&m);
  size_t want = 0, rows = 0;
  for (size_t i = 0; i < m.n; i++) want += m.e[i].conversations != 0;
  static const char *const sql[ROLLUP_LEVELS] = {
      "SELECT hour_us, account_id, agent_id, platform, status, outcome, conversations, messages, "
      "duration_sum, hist FROM analytics_hour",
      "SELECT hour_us, '', '', '', '', '', conversations, messages, duration_sum, hist "
      "FROM analytics_total",
      "SELECT day_us, dim, value, '', '', '', conversations, messages, duration_sum, hist "
      "FROM analytics_dim",
      "SELECT block_us, account_id, agent_id, platform, status, outcome, conversations, "
      "messages, duration_sum, hist FROM analytics_block"};
  _Static_assert(ROLLUP_FULL == 0 && ROLLUP_TOTAL == 1 && ROLLUP_DIM == 2 && ROLLUP_BLOCK == 3,
                 "sql[] by level");
  for (int l = 0; l < ROLLUP_LEVELS; l++) {
    if (strcmp(B->name, "sqlite") == 0) {
      sqlite3 *db;
      assert_int_equal(sqlite3_open(B->sqlite_path, &db), SQLITE_OK);
      sqlite3_stmt *st;
      assert_int_equal(sqlite3_prepare_v2(db, sql[l], -1, &st, NULL), SQLITE_OK);
      while (sqlite3_step(st) == SQLITE_ROW) {
        const char *vals[STORE_DIM_COUNT];
        for (int d = 0; d < STORE_DIM_COUNT; d++)
          vals[d] = (const char *)sqlite3_column_text(st, 1 + d);
        int dim = l == ROLLUP_DIM ? sqlite3_column_int(st, 1) : 0;
        int64_t hist[ANALYTICS_HIST_BUCKETS] = {0};
        rollup_hist_add_blob(hist, sqlite3_column_blob(st, 9), (size_t)sqlite3_column_bytes(st, 9));
        ax_check_row(&m, (enum rollup_level)l, dim, sqlite3_column_int64(st, 0),
                     l == ROLLUP_DIM ? vals + 1 : vals, sqlite3_column_int64(st, 6),
                     sqlite3_column_int64(st, 7), sqlite3_column_int64(st, 8), hist, &rows);
      }
      sqlite3_finalize(st);
      sqlite3_close(db);
      continue;
    }
    PGconn *c = PQconnectdb(B->url);
    assert_int_equal(PQstatus(c), CONNECTION_OK);
    PGresult *r = PQexec(c, sql[l]);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    for (int i = 0; i < PQntuples(r); i++) {
      const char *vals[STORE_DIM_COUNT];
      for (int d = 0; d < STORE_DIM_COUNT; d++) vals[d] = PQgetvalue(r, i, 1 + d);
      int64_t hist[ANALYTICS_HIST_BUCKETS];
      ax_parse_pg_hist(PQgetvalue(r, i, 9), hist);
      ax_check_row(&m, (enum rollup_level)l, l == ROLLUP_DIM ? atoi(PQgetvalue(r, i, 1)) : 0,
                   strtoll(PQgetvalue(r, i, 0), NULL, 10), l == ROLLUP_DIM ? vals + 1 : vals,
                   strtoll(PQgetvalue(r, i, 6), NULL, 10), strtoll(PQgetvalue(r, i, 7), NULL, 10),
                   strtoll(PQgetvalue(r, i, 8), NULL, 10), hist, &rows);
    }
    PQclear(r);
    PQfinish(c);
  }
  if (rows != want)
    fail_msg("%s: %zu rollup rows stored, the recount has %zu keys", B->name, rows, want);
  rollup_map_free(&m);
}

static int64_t ax_rebuild(void) {
  int64_t counted = -1;
  assert_int_equal(B->store->ops->analytics_rebuild(B->store, &counted), STORE_OK);
  assert_int_equal(counted, direct_sql("SELECT COUNT(*) FROM conversations"));
  return counted;
}

/* The test's own account of what it stored. */
#define AX_CONVS 48
#define AX_ACCOUNTS 3
struct ax_conv {
  char id[64];
  bool alive;
  char *body; /* the current version's (seed writes) */
  int64_t event_us;
  int account; /* index */
  const char *agent, *platform, *status, *outcome;
  int64_t duration, messages;
};

struct ax_state {
  char tag[16];
  char accounts[AX_ACCOUNTS][64];
  struct ax_conv c[AX_CONVS];
  unsigned seed;
  int n; /* versions made, for unique bodies */
  int64_t w0;
};

static unsigned ax_rand(struct ax_state *s) {
  s->seed = s->seed * 1103515245u + 12345u;
  return (s->seed >> 8) & 0xffffff;
}

/* The test's four days: from 2031-03-01T00:00:00Z on, a window of its own (the groups of one
 * backend share a database). */
static int64_t ax_w0_of(unsigned seed) {
  return (time_days_from_civil(2031, 3, 1) + 100 * (int64_t)(seed % 2000)) * 86400 *
         INT64_C(1000000);
}

static const char *const ax_agents[] = {"agent-a", "agent-b", "agent-c"};
static const char *const ax_platforms[] = {"web", "phone", ""}; /* "": unknown */

/* A new version's attributes and body for conversation i. */
static char *ax_body(struct ax_state *s, int i) {
  struct ax_conv *c = &s->c[i];
  int64_t w0 = s->w0;
  /* within four days, at a random second */
  int64_t start = w0 + (int64_t)(ax_rand(s) % (4 * 86400 - 3600)) * 1000000;
  c->event_us = start;
  c->account = (int)(ax_rand(s) % AX_ACCOUNTS);
  c->agent = ax_agents[ax_rand(s) % 3];
  const char *pl = ax_platforms[ax_rand(s) % 3];
  c->platform = *pl ? pl : NULL;
  c->status = "completed";
  c->outcome = NULL;
  static const int64_t durations[] = {0, 3, 9, 10, 11, 47, 300, 3599, 99436, 99437, 500000};
  c->duration = durations[ax_rand(s) % (sizeof durations / sizeof durations[0])];
  c->messages = 1 + ax_rand(s) % 7;
  char ts[40];
  assert_true(time_format_us(start, false, ts, sizeof ts));
  char *buf = NULL;
  assert_true(asprintf(&buf,
                       "{\"emailId\":\"e@example.com\",\"accountId\":\"%s\",\"conversationId\":"
                       "\"%s\",\"transcript\":[{\"timestamp\":\"%s\",\"speaker\":\"user\","
                       "\"content\":\"v%d\",\"messageId\":\"m0\"}],\"metadata\":{\"sessionId\":"
                       "\"s\",\"agentId\":\"%s\",\"duration\":%lld,\"messageCount\":%lld,"
                       "\"platform\":\"%s\",\"userAgent\":\"ua\"}}",
                       s->accounts[c->account], c->id, ts, s->n++, c->agent, (long long)c->duration,
                       (long long)c->messages, pl) > 0);
  return buf;
}

struct ax_op {
  struct pending *p;
  int conv;
  char *event; /* owned */
  char *body;  /* the body submitted (owned unless kept by the conversation) */
  struct ax_conv after;
  bool erase, failing;
};

/* One burst of random writes submitted at once (one batch, most often), then the test's own
 * account updated in order. */
static void ax_burst(struct ax_state *s, int nops) {
  struct ax_op ops[12];
  memset(ops, 0, sizeof ops);
  struct ax_conv shadow[AX_CONVS];
  memcpy(shadow, s->c, sizeof shadow);
  int fail_fd = -1;
  bool touched[AX_CONVS] = {false};
  for (int k = 0; k < nops; k++) {
    struct ax_op *o = &ops[k];
    int i = (int)(ax_rand(s) % AX_CONVS);
    o->conv = i;
    unsigned what = ax_rand(s) % 100;
    struct ax_conv saved = s->c[i];
    s->c[i] = shadow[i];
    if (what < 15 && shadow[i].alive) { /* erasure */
      o->p = erase_new(s->c[i].id);
      o->erase = true;
    } else if (what < 30 && !touched[i] && shadow[i].alive && shadow[i].body) {
      /* identical redelivery (of the version stored before this burst) */
      o->p = pending_new(shadow[i].body);
    } else if (what < 45) { /* an ElevenLabs event carrying the conversation, with an outcome */
      o->body = ax_body(s, i);
      assert_true(asprintf(&o->event,
                           "{\"type\":\"post_call_transcription\",\"data\":{"
                           "\"conversation_id\":\"%s\",\"n\":%d}}",
                           s->c[i].id, s->n) > 0);
      o->p = event_new(s->c[i].id, "post_call_transcription", o->event, o->body);
      static const char *const outcomes[] = {"success", "failure", NULL};
      s->c[i].outcome = outcomes[ax_rand(s) % 3];
      s->c[i].account = -1; /* events carry no account here */
      o->p->in.outcome = s->c[i].outcome;
    } else if (what < 50 && fail_fd < 0) { /* an event whose audio cannot be read: fails alone */
      o->body = ax_body(s, i);
      assert_true(asprintf(&o->event,
                           "{\"type\":\"post_call_audio\",\"data\":{"
                           "\"conversation_id\":\"%s\",\"n\":%d}}",
                           s->c[i].id, s->n) > 0);
      o->p = event_new(s->c[i].id, "post_call_audio", o->event, o->body);
      fail_fd = audio_file(10, 3);
      o->p->w.audio_fd = fail_fd;
      o->p->w.audio_len = 2 * STORE_AUDIO_CHUNK_BYTES;
      o->p->w.event_audio_at = 5;
      o->failing = true;
    } else { /* a new conversation or a new version */
      o->body = ax_body(s, i);
      o->p = pending_new(o->body);
    }
    o->after = s->c[i];
    o->after.alive = !o->erase;
    if (o->failing) o->after = shadow[i];
    shadow[i] = o->after;
    s->c[i] = saved;
    touched[i] = true;
  }
  for (int k = 0; k < nops; k++) store_submit(B->store, &ops[k].p->w);
  for (int k = 0; k < nops; k++) wait_done(ops[k].p);
  for (int k = 0; k < nops; k++) {
    struct ax_op *o = &ops[k];
    struct ax_conv *c = &s->c[o->conv];
    if (o->failing) {
      assert_int_not_equal(o->p->w.status, STORE_OK);
    } else {
      assert_int_equal(o->p->w.status, STORE_OK);
      char *keep = c->body;
      *c = o->after;
      if (o->erase) {
        free(keep);
        c->body = NULL;
      } else if (o->body && o->p->w.kind == STORE_WRITE_CONVERSATION) {
        free(keep);
        c->body = o->body;
        o->body = NULL;
      } else if (o->body) { /* an event's version: not resent as a seed body */
        free(keep);
        c->body = NULL;
      } else {
        c->body = keep; /* identical */
        assert_true(o->p->w.duplicate);
      }
    }
    free(o->body);
    free(o->event);
    pending_free(o->p);
  }
  if (fail_fd >= 0) close(fail_fd);
}

/* A scan's answer, summed the way a caller does (FULL and TOTAL cells in totals and series, FULL
 * and DIM cells in breakdowns). */
struct ax_sum {
  const struct store_analytics_query *q;
  int64_t conv, msgs, dur;
  int64_t hist[ANALYTICS_HIST_BUCKETS];
  int64_t seg[2048];
  struct {
    char value[96]; /* "-" for NULL; accounts as stored until named */
    int64_t conv, msgs, dur;
  } bd[STORE_DIM_COUNT][32];
  int nbd[STORE_DIM_COUNT];
  bool bad;
  char why[256];
};

static void ax_bd_add(struct ax_sum *r, int d, const char *value, int64_t conv, int64_t msgs,
                      int64_t dur) {
  const char *v = value ? value : "-";
  int j = 0;
  while (j < r->nbd[d] && strcmp(r->bd[d][j].value, v) != 0) j++;
  if (j == r->nbd[d]) {
    assert_true(j < 32);
    snprintf(r->bd[d][j].value, sizeof r->bd[d][j].value, "%s", v);
    r->nbd[d]++;
  }
  r->bd[d][j].conv += conv;
  r->bd[d][j].msgs += msgs;
  r->bd[d][j].dur += dur;
}

static int ax_segment(const struct store_analytics_query *q, int64_t at) {
  int i = 0;
  while ((size_t)i < q->ncuts && q->cuts[i] <= at) i++;
  return i;
}

static void ax_cell(void *cls, const struct store_cell *c) {
  struct ax_sum *r = cls;
  if (c->at_us < r->q->from_us || c->at_us >= r->q->to_us) {
    r->bad = true;
    snprintf(r->why, sizeof r->why, "a cell at %lld outside [from, to)", (long long)c->at_us);
  }
  if (c->kind == STORE_CELL_FULL && !c->has_hist) {
    r->bad = true;
    snprintf(r->why, sizeof r->why, "a FULL cell at %lld without a hist", (long long)c->at_us);
  }
  if (c->has_hist) /* store.h: each conversation in exactly one cell's hist */
    for (int b = 0; b < ANALYTICS_HIST_BUCKETS; b++) r->hist[b] += c->hist[b];
  if (c->kind != STORE_CELL_DIM) {
    r->conv += c->conversations;
    r->msgs += c->messages;
    r->dur += c->duration_sum;
    r->seg[ax_segment(r->q, c->at_us)] += c->conversations;
  }
  for (int d = 0; d < STORE_DIM_COUNT; d++)
    if (c->kind == STORE_CELL_FULL || (c->kind == STORE_CELL_DIM && (int)c->dim == d))
      ax_bd_add(r, d, c->value[d], c->conversations, c->messages, c->duration_sum);
}

static bool ax_matches(const struct ax_state *s, const struct ax_conv *c,
                       const struct store_analytics_query *q) {
  const char *account = c->account >= 0 ? s->accounts[c->account] : NULL;
  if (!c->alive || c->event_us < q->from_us || c->event_us >= q->to_us) return false;
  if (q->account_id && (!account || strcmp(q->account_id, account) != 0)) return false;
  if (q->agent_id && strcmp(q->agent_id, c->agent) != 0) return false;
  if (q->platform && (!c->platform || strcmp(q->platform, c->platform) != 0)) return false;
  if (q->status && strcmp(q->status, c->status) != 0) return false;
  if (q->naccounts) {
    bool in = false;
    for (size_t k = 0; account && k < q->naccounts; k++)
      in = in || strcmp(q->accounts[k], account) == 0;
    if (!in) return false;
  }
  return true;
}

static int ax_bd_cmp(const void *a, const void *b) { return strcmp(a, b); }

static void ax_check_scan(const struct ax_state *s, const struct store_analytics_query *q,
                          const char *what) {
  struct ax_sum *got = calloc(1, sizeof *got), *want = calloc(1, sizeof *want);
  assert_non_null(got);
  assert_non_null(want);
  got->q = want->q = q;
  assert_int_equal(B->store->ops->analytics_scan(B->store, q, ax_cell, got), STORE_OK);
  if (got->bad) fail_msg("%s: %s: %s", B->name, what, got->why);
  /* accounts as stored (a blind index when sealed) back to their names: one at a time, and all
   * at once (with a value no conversation has, which stays unnamed) */
  const char *stored[33];
  char *names[33] = {0};
  size_t nstored = 0;
  stored[nstored++] = "no-such-account-value";
  for (int j = 0; j < got->nbd[STORE_DIM_ACCOUNT]; j++)
    if (strcmp(got->bd[STORE_DIM_ACCOUNT][j].value, "-") != 0)
      stored[nstored++] = got->bd[STORE_DIM_ACCOUNT][j].value;
  assert_int_equal(B->store->ops->analytics_account_names(B->store, stored, nstored, names),
                   STORE_OK);
  assert_null(names[0]);
  for (size_t k = 1; k < nstored; k++) {
    char *v = (char *)stored[k];
    char name[96];
    assert_int_equal(B->store->ops->analytics_account_name(B->store, v, name, sizeof name),
                     STORE_OK);
    assert_non_null(names[k]);
    assert_string_equal(names[k], name);
    free(names[k]);
    if (B->ring && strcmp(name, v) == 0) /* sealed: stored as its blind index */
      fail_msg("%s: %s: account %s is stored in plaintext", B->name, what, v);
    snprintf(v, 96, "%s", name);
  }
  for (int i = 0; i < AX_CONVS; i++) {
    const struct ax_conv *c = &s->c[i];
    if (!ax_matches(s, c, q)) continue;
    want->conv++;
    want->msgs += c->messages;
    want->dur += c->duration;
    want->hist[analytics_hist_bucket(c->duration)]++;
    want->seg[ax_segment(q, c->event_us)]++;
    const char *vals[STORE_DIM_COUNT] = {c->account >= 0 ? s->accounts[c->account] : NULL, c->agent,
                                         c->platform, c->status, c->outcome};
    for (int d = 0; d < STORE_DIM_COUNT; d++)
      ax_bd_add(want, d, vals[d], 1, c->messages, c->duration);
  }
  if (got->conv != want->conv || got->msgs != want->msgs || got->dur != want->dur)
    fail_msg("%s: %s: totals %lld/%lld/%lld, want %lld/%lld/%lld", B->name, what,
             (long long)got->conv, (long long)got->msgs, (long long)got->dur, (long long)want->conv,
             (long long)want->msgs, (long long)want->dur);
  assert_memory_equal(got->hist, want->hist, sizeof got->hist);
  assert_true(q->ncuts < sizeof got->seg / sizeof got->seg[0]);
  for (size_t i = 0; i <= q->ncuts; i++)
    if (got->seg[i] != want->seg[i])
      fail_msg("%s: %s: interval %zu counts %lld, want %lld", B->name, what, i,
               (long long)got->seg[i], (long long)want->seg[i]);
  for (int d = 0; d < STORE_DIM_COUNT; d++) {
    qsort(got->bd[d], (size_t)got->nbd[d], sizeof got->bd[d][0], ax_bd_cmp);
    qsort(want->bd[d], (size_t)want->nbd[d], sizeof want->bd[d][0], ax_bd_cmp);
    if (got->nbd[d] != want->nbd[d])
      fail_msg("%s: %s: breakdown %d has %d keys, want %d", B->name, what, d, got->nbd[d],
               want->nbd[d]);
    for (int j = 0; j < got->nbd[d]; j++) {
      assert_string_equal(got->bd[d][j].value, want->bd[d][j].value);
      if (got->bd[d][j].conv != want->bd[d][j].conv || got->bd[d][j].msgs != want->bd[d][j].msgs ||
          got->bd[d][j].dur != want->bd[d][j].dur)
        fail_msg("%s: %s: breakdown %d key %s: %lld/%lld/%lld, want %lld/%lld/%lld", B->name, what,
                 d, got->bd[d][j].value, (long long)got->bd[d][j].conv,
                 (long long)got->bd[d][j].msgs, (long long)got->bd[d][j].dur,
                 (long long)want->bd[d][j].conv, (long long)want->bd[d][j].msgs,
                 (long long)want->bd[d][j].dur);
    }
  }
  free(got);
  free(want);
}

/* Queries filtered on one dimension over several whole 16-day blocks (rollup.h: totals and series
 * from the value's day rows of analytics_dim or, in days a cut falls inside, from analytics_hour
 * as totals; breakdowns and percentiles from analytics_block; analytics_hour outside the good
 * blocks), for each dimension, in windows that put the test's four days in a good block, in one
 * a cut inside an hour makes bad, and at the edges outside the blocks. */
static void ax_check_one_dim_scans(const struct ax_state *s) {
  const int64_t H = INT64_C(3600000000), D = 24 * H, M = 60000000, w0 = s->w0;
  const int64_t b0 = rollup_floor(w0, ROLLUP_BLOCK_US);
  const char *bound[2] = {s->accounts[0], s->accounts[2]};
  const char *one[1] = {s->accounts[1]};
  struct {
    const char *what, *account_id, *agent_id, *platform, *status;
    const char *const *accounts;
    size_t naccounts;
  } filters[] = {
      {"account", s->accounts[1], NULL, NULL, NULL, NULL, 0},
      {"agent", NULL, "agent-b", NULL, NULL, NULL, 0},
      {"platform", NULL, NULL, "web", NULL, NULL, 0},
      {"status", NULL, NULL, NULL, "completed", NULL, 0},
      {"a key's accounts", NULL, NULL, NULL, NULL, bound, 2},
      {"an account and a key's accounts", s->accounts[1], NULL, NULL, NULL, one, 1},
      {"an account outside a key's accounts", s->accounts[1], NULL, NULL, NULL, bound, 2},
      {"a status nothing has", NULL, NULL, NULL, "failed", NULL, 0},
  };
  static int64_t cuts[1300];
  for (int w = 0; w < 10; w++) {
    struct store_analytics_query q = {0};
    size_t n = 0;
    const char *window = "";
    switch (w) {
      case 0: /* UTC days: the four days in good blocks */
        window = "80 UTC days over whole blocks";
        q.from_us = b0 - 32 * D;
        q.to_us = b0 + 48 * D;
        for (int64_t t = q.from_us + D; t < q.to_us; t += D) cuts[n++] = t;
        break;
      case 1: /* every day split by a cut */
        window = "80 days at +05:30 over whole blocks";
        q.from_us = b0 - 32 * D - 5 * H - 30 * M;
        q.to_us = b0 + 48 * D - 5 * H - 30 * M;
        for (int64_t t = q.from_us + D; t < q.to_us; t += D) cuts[n++] = t;
        break;
      case 2:
        window = "48 days by the hour";
        q.from_us = b0 - 16 * D;
        q.to_us = b0 + 32 * D;
        for (int64_t t = q.from_us + H; t < q.to_us; t += H) cuts[n++] = t;
        break;
      case 3: /* the block holding w0 + D is read from analytics_hour */
        window = "80 UTC days, a cut inside an hour of the data";
        q.from_us = b0 - 32 * D;
        q.to_us = b0 + 48 * D;
        for (int64_t t = q.from_us + D; t < q.to_us; t += D) {
          cuts[n++] = t;
          if (t == w0 + D) cuts[n++] = w0 + D + 7 * M;
        }
        assert_int_equal(n, 80); /* w0 + D was among the midnights */
        break;
      case 4:
      case 5:
      case 6:
      case 7: /* from inside the data: its start outside the blocks */
        window = "70 days from inside the data, no cut";
        q.from_us = w0 + (w - 4) * D + 3 * H + 11 * M;
        q.to_us = q.from_us + 70 * D;
        break;
      case 8: /* to inside the data */
        window = "70 days to inside the data, no cut";
        q.to_us = w0 + 2 * D + 3 * H + 11 * M;
        q.from_us = q.to_us - 70 * D;
        break;
      case 9: /* w0 + D's block bad (a cut inside an hour), days split by a cut at 05:00 in it
               * and in the days after (in a good block when the data crosses a block edge) */
        window = "80 UTC days, a bad block, split days in it and after it";
        q.from_us = b0 - 32 * D;
        q.to_us = b0 + 48 * D;
        for (int64_t t = q.from_us + D; t < q.to_us; t += D) {
          cuts[n++] = t;
          if (t == w0 || t == w0 + 2 * D || t == w0 + 3 * D) cuts[n++] = t + 5 * H;
          if (t == w0 + D) cuts[n++] = t + 7 * M;
        }
        assert_int_equal(n, 83);
        break;
    }
    assert_true(n <= sizeof cuts / sizeof cuts[0]);
    q.cuts = n ? cuts : NULL;
    q.ncuts = n;
    for (size_t f = 0; f < sizeof filters / sizeof filters[0]; f++) {
      q.account_id = filters[f].account_id;
      q.agent_id = filters[f].agent_id;
      q.platform = filters[f].platform;
      q.status = filters[f].status;
      q.accounts = filters[f].accounts;
      q.naccounts = filters[f].naccounts;
      assert_true(rollup_query_one_dim(&q) >= 0);
      char what[160];
      snprintf(what, sizeof what, "%s, one dimension: %s", window, filters[f].what);
      ax_check_scan(s, &q, what);
    }
  }
}

static void ax_check_scans(const struct ax_state *s) {
  const int64_t H = INT64_C(3600000000), D = 24 * H, M = 60000000, w0 = s->w0;
  int64_t days[3] = {w0 + D, w0 + 2 * D, w0 + 3 * D};
  /* midnights at +05:30: 18:30Z the day before */
  int64_t india[4] = {w0 + 18 * H + 30 * M, w0 + D + 18 * H + 30 * M, w0 + 2 * D + 18 * H + 30 * M,
                      w0 + 3 * D + 18 * H + 30 * M};
  int64_t hours[23];
  for (int i = 0; i < 23; i++) hours[i] = w0 + D + (i + 1) * H;
  int64_t odd[3] = {w0 + D + 7 * M, w0 + D + 5 * H, w0 + 2 * D + 13 * H + 59 * M};
  const char *bound[2] = {s->accounts[0], s->accounts[2]};
  struct store_analytics_query q = {.from_us = w0, .to_us = w0 + 4 * D, .cuts = days, .ncuts = 3};
  ax_check_scan(s, &q, "whole UTC days");
  q.cuts = NULL;
  q.ncuts = 0;
  ax_check_scan(s, &q, "no cuts");
  q = (struct store_analytics_query){
      .from_us = w0 + 17 * M, .to_us = w0 + 4 * D - 23 * M, .cuts = india, .ncuts = 4};
  ax_check_scan(s, &q, "half-hour zone days, bounds inside hours");
  q.agent_id = "agent-b";
  ax_check_scan(s, &q, "agent");
  q.agent_id = NULL;
  q.account_id = s->accounts[1];
  ax_check_scan(s, &q, "account");
  q.account_id = NULL;
  q.accounts = bound;
  q.naccounts = 2;
  ax_check_scan(s, &q, "accounts bound");
  q.accounts = NULL;
  q.naccounts = 0;
  q.platform = "web";
  q.status = "completed";
  ax_check_scan(s, &q, "platform and status");
  q.platform = NULL;
  q.status = "failed";
  ax_check_scan(s, &q, "a status nothing has");
  q.status = NULL;
  /* an empty filter matches nothing: not the conversations whose value is not known (the
   * rollups keep those as '') */
  q.platform = "";
  ax_check_scan(s, &q, "an empty platform");
  q.platform = NULL;
  q.account_id = "";
  ax_check_scan(s, &q, "an empty account");
  q.account_id = NULL;
  q.agent_id = "";
  ax_check_scan(s, &q, "an empty agent");
  q.agent_id = NULL;
  q.status = "";
  q.from_us = w0 - 40 * D;
  q.to_us = w0 + 40 * D;
  q.cuts = NULL;
  q.ncuts = 0;
  ax_check_scan(s, &q, "an empty status, 80 days");
  q.status = NULL;
  q = (struct store_analytics_query){
      .from_us = w0 + D, .to_us = w0 + 2 * D, .cuts = hours, .ncuts = 23};
  ax_check_scan(s, &q, "hourly cuts");
  q = (struct store_analytics_query){
      .from_us = w0 + 5 * M, .to_us = w0 + 3 * D + 11 * M, .cuts = odd, .ncuts = 3};
  ax_check_scan(s, &q, "cuts inside hours");
  q = (struct store_analytics_query){.from_us = w0 + D + 10 * M, .to_us = w0 + D + 50 * M};
  ax_check_scan(s, &q, "inside one hour");
  /* 80 days around them: 16-day blocks for breakdowns, day totals, hours of days a cut splits */
  int64_t paris[80], delhi[80];
  for (int i = 0; i < 80; i++) {
    paris[i] = w0 - 40 * D + i * D - H;              /* +01:00 midnights */
    delhi[i] = w0 - 40 * D + i * D - 5 * H - 30 * M; /* +05:30 midnights */
  }
  q = (struct store_analytics_query){
      .from_us = w0 - 40 * D - H, .to_us = w0 + 40 * D - H, .cuts = paris + 1, .ncuts = 79};
  ax_check_scan(s, &q, "80 days at +01:00");
  q = (struct store_analytics_query){.from_us = w0 - 40 * D - 5 * H - 30 * M,
                                     .to_us = w0 + 40 * D - 5 * H - 30 * M,
                                     .cuts = delhi + 1,
                                     .ncuts = 79};
  ax_check_scan(s, &q, "80 days at +05:30");
  q = (struct store_analytics_query){.from_us = w0 - 40 * D + 3 * M, .to_us = w0 + 40 * D};
  ax_check_scan(s, &q, "80 days, no cut");
  q.cuts = odd;
  q.ncuts = 3;
  ax_check_scan(s, &q, "80 days, cuts inside hours");
  ax_check_one_dim_scans(s);
}

/* A new state with its own tag and seed, its accounts and ids named; the caller sets w0. */
static struct ax_state *ax_state_new(void) {
  struct ax_state *s = calloc(1, sizeof *s);
  assert_non_null(s);
  char tag[16];
  new_tag(tag);
  memcpy(s->tag, tag, sizeof tag);
  s->seed = (unsigned)strtoul(tag + 6, NULL, 16);
  for (int a = 0; a < AX_ACCOUNTS; a++)
    snprintf(s->accounts[a], sizeof s->accounts[a], "ax-acc%d-%s", a, tag);
  for (int i = 0; i < AX_CONVS; i++) snprintf(s->c[i].id, sizeof s->c[i].id, "ax-%d-%s", i, tag);
  return s;
}

static void ax_state_free(struct ax_state *s) {
  for (int i = 0; i < AX_CONVS; i++) free(s->c[i].body);
  free(s);
}

static void test_analytics_rollups_match_a_recount(void **state) {
  (void)state;
  struct ax_state *s = ax_state_new();
  s->w0 = ax_w0_of(s->seed);
  /* Other tests edit rows by hand (ageing them): start from rollups that are right. */
  (void)ax_rebuild();
  ax_assert_rollups_match_recount();
  for (int round = 0; round < 30; round++) ax_burst(s, 1 + (int)(ax_rand(s) % 12));
  /* audio added to a stored conversation counts nothing more */
  for (int i = 0; i < AX_CONVS; i++) {
    if (!s->c[i].alive) continue;
    int fd = audio_file(100, 1);
    (void)put_audio(s->c[i].id, fd, 100, NULL);
    close(fd);
    break;
  }
  /* retention: three conversations aged (their event time is their start time: unchanged) */
  int aged = 0;
  for (int i = 0; i < AX_CONVS && aged < 3; i++) {
    if (!s->c[i].alive) continue;
    age("conversations", "processed_at_us", s->c[i].id, 50);
    s->c[i].alive = false;
    aged++;
  }
  assert_true(retain_ok(100, 1000) >= aged);
  ax_assert_rollups_match_recount();
  ax_check_scans(s);
  /* PostgreSQL's triggers also count a change made by hand, outside the writer (in psql): every
   * level, the status and outcome blocks included */
  for (int i = 0; strcmp(B->name, "sqlite") != 0 && i < AX_CONVS; i++) {
    if (!s->c[i].alive) continue;
    char sql[512];
    snprintf(sql, sizeof sql,
             "UPDATE conversations SET status = 'hand-status', outcome = 'hand-outcome', "
             "agent_id = 'hand-agent' WHERE conversation_id = '%s'",
             s->c[i].id);
    (void)direct_sql(sql);
    s->c[i].status = "hand-status";
    s->c[i].outcome = "hand-outcome";
    s->c[i].agent = "hand-agent";
    ax_assert_rollups_match_recount();
    ax_check_scans(s);
    break;
  }
  /* Migration 0015 over stored rollups (here, after the writes): it empties the hists nothing
   * reads and, on PostgreSQL, counts the status and outcome blocks again from the conversations;
   * the rollups still match a recount, and every scan is still exact. */
  const struct store_migration *m =
      strcmp(B->name, "sqlite") == 0 ? store_migrations_sqlite : store_migrations_pg;
  size_t nm =
      strcmp(B->name, "sqlite") == 0 ? store_migrations_sqlite_count : store_migrations_pg_count;
  const char *m15 = NULL;
  for (size_t i = 0; i < nm; i++)
    if (m[i].version == 15) m15 = m[i].sql;
  assert_non_null(m15);
  if (strcmp(B->name, "sqlite") == 0) {
    sqlite3 *db;
    assert_int_equal(sqlite3_open(B->sqlite_path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    if (sqlite3_exec(db, m15, NULL, NULL, NULL) != SQLITE_OK)
      fail_msg("sqlite: %s", sqlite3_errmsg(db));
    sqlite3_close(db);
  } else {
    size_t len = strlen(m15) + 32;
    char *again = malloc(len);
    assert_non_null(again);
    snprintf(again, len, "BEGIN; %s; COMMIT;", m15);
    (void)direct_sql(again);
    free(again);
  }
  ax_assert_rollups_match_recount();
  ax_check_scans(s);
  /* a rebuild gives the same rollups */
  (void)ax_rebuild();
  ax_assert_rollups_match_recount();
  ax_check_scans(s);
  ax_state_free(s);
}

/* The same over four days before 1970: negative event times, so every hour, day, 4-hour span and
 * 16-day block the rollups and the scans floor is below zero (the four days straddle a block
 * boundary), in a window of its own per seed (160 days apart). */
static void test_analytics_before_1970(void **state) {
  (void)state;
  struct ax_state *s = ax_state_new();
  const int64_t D = 86400 * INT64_C(1000000);
  s->w0 = -(160 * (1 + (int64_t)(s->seed % 2000)) + 2) * D;
  assert_true(rollup_floor(s->w0 + 2 * D, ROLLUP_BLOCK_US) == s->w0 + 2 * D);
  (void)ax_rebuild();
  for (int round = 0; round < 20; round++) ax_burst(s, 1 + (int)(ax_rand(s) % 12));
  ax_assert_rollups_match_recount();
  ax_check_scans(s);
  ax_state_free(s);
}

static void test_analytics_account_name_of_unknown_is_not_found(void **state) {
  (void)state;
  char name[64];
  assert_int_equal(
      B->store->ops->analytics_account_name(B->store, "no-such-account-value", name, sizeof name),
      STORE_NOT_FOUND);
}

/* clang-format off */
#define ANALYTICS_TESTS                                                  \
  cmocka_unit_test(test_analytics_rollups_match_a_recount),              \
  cmocka_unit_test(test_analytics_before_1970),                          \
  cmocka_unit_test(test_analytics_account_name_of_unknown_is_not_found)
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
  cmocka_unit_test(test_keyset_pages_follow_the_list_order),             \
  cmocka_unit_test(test_changed_redelivery_keeps_its_place),             \
  cmocka_unit_test(test_keyset_walk_during_writes),                      \
  cmocka_unit_test(test_time_window_on_start_or_processed),              \
  cmocka_unit_test(test_unknown_id_is_not_found),                        \
  cmocka_unit_test(test_bytes_the_database_refuses_are_the_clients_fault), \
  cmocka_unit_test(test_health_probe_writes_and_reads),                  \
  cmocka_unit_test(test_close_drains_submitted_writes),                  \
  cmocka_unit_test(test_keys_create_read_revoke_touch),                 \
  cmocka_unit_test(test_list_bound_to_accounts),                         \
  cmocka_unit_test(test_secret_is_the_databases)
/* After the SQLite checkpoint test, whose bound on the log's size these megabytes of audio
 * would otherwise count against. */
#define EVENT_TESTS                                                      \
  cmocka_unit_test(test_event_is_kept_and_redelivery_changes_nothing),   \
  cmocka_unit_test(test_event_upserts_its_conversation),                 \
  cmocka_unit_test(test_audio_round_trips_in_ranges),                    \
  cmocka_unit_test(test_audio_before_and_after_the_transcript),          \
  cmocka_unit_test(test_audio_is_replaced_whole),                        \
  cmocka_unit_test(test_audio_redelivered_within_one_batch),             \
  cmocka_unit_test(test_failed_event_stores_nothing),                    \
  cmocka_unit_test(test_event_refused_for_its_bytes_fails_alone),        \
  cmocka_unit_test(test_audio_survives_a_refused_neighbour),             \
  cmocka_unit_test(test_migration_keeps_existing_rows),                  \
  cmocka_unit_test(test_erase_removes_one_conversation_whole),           \
  cmocka_unit_test(test_erase_of_nothing_erases_nothing),                \
  cmocka_unit_test(test_erase_within_a_batch),                           \
  cmocka_unit_test(test_retention_erases_only_what_is_old),                \
  cmocka_unit_test(test_retention_keeps_a_conversation_processed_again)
/* The audit log. */
#define AUDIT_TESTS                                                      \
  cmocka_unit_test(test_audit_every_change_has_its_entry),               \
  cmocka_unit_test(test_audit_entries_written_as_given),                 \
  cmocka_unit_test(test_audit_list_filters_and_pages),                   \
  cmocka_unit_test(test_audit_refused_write_leaves_no_hole),             \
  cmocka_unit_test(test_audit_failed_write_writes_none),                 \
  cmocka_unit_test(test_audit_time_filter_out_of_order),                 \
  cmocka_unit_test(test_audit_retention_orphans_and_redelivery_time),    \
  cmocka_unit_test(test_audit_audio_redelivery_is_audited),              \
  cmocka_unit_test(test_audit_unnamed_entry_fails_alone),                \
  cmocka_unit_test(test_audit_head_removed_stops_appends),               \
  cmocka_unit_test(test_audit_verify_finds_hand_edits),                  \
  cmocka_unit_test(test_audit_two_instances_one_chain)
/* The outbox (issue 10): events, subscriptions, fan-out, claims, results. */
#define OUTBOX_TESTS                                                     \
  cmocka_unit_test(test_outbox_every_change_writes_its_event),           \
  cmocka_unit_test(test_outbox_subscriptions_round_trip),                \
  cmocka_unit_test(test_outbox_unopenable_secret_fails_no_read),         \
  cmocka_unit_test(test_outbox_unopenable_url_and_account_fail_no_read), \
  cmocka_unit_test(test_outbox_unopenable_url_alone_holds_events_for_the_mended_subscription), \
  cmocka_unit_test(test_an_account_that_passes_for_a_blind_index_matches_nothing), \
  cmocka_unit_test(test_outbox_update_changes_only_the_named_members),   \
  cmocka_unit_test(test_outbox_subscription_url_and_account_sealed),     \
  cmocka_unit_test(test_outbox_fanout_types_accounts_and_waiting),       \
  cmocka_unit_test(test_outbox_claims_keep_each_conversations_order),    \
  cmocka_unit_test(test_outbox_leases),                                  \
  cmocka_unit_test(test_outbox_finish_outcomes),                         \
  cmocka_unit_test(test_outbox_replay),                                  \
  cmocka_unit_test(test_outbox_erasure_leaves_only_deleted),             \
  cmocka_unit_test(test_outbox_success_anywhere_in_a_finish_counts),     \
  cmocka_unit_test(test_outbox_prune),                                   \
  cmocka_unit_test(test_outbox_queue_cursor),                            \
  cmocka_unit_test(test_outbox_retry_after_holds_the_subscription),      \
  cmocka_unit_test(test_outbox_prune_passes_stale_broker_cursors),   \
  cmocka_unit_test(test_outbox_keepalive_creates_a_missing_cursor),     \
  cmocka_unit_test(test_outbox_events_only_when_something_reads_them)
/* The outbox reviews' fixes (store.h: lease_token, sub_enabled_given; retention of audio
 * alone; erasure takes attempts): backend-neutral, run on every group. */
#define OUTBOX_REVIEW_TESTS                                              \
  cmocka_unit_test(test_outbox_stale_answer_after_replay_and_claim),     \
  cmocka_unit_test(test_outbox_retention_of_audio_alone),                \
  cmocka_unit_test(test_outbox_erasure_takes_attempts),                  \
  cmocka_unit_test(test_outbox_erasure_while_in_flight),                 \
  cmocka_unit_test(test_outbox_fanout_counts_each_event_once),           \
  cmocka_unit_test(test_outbox_filtered_subscription_passes_others_events), \
  cmocka_unit_test(test_outbox_random_mix_keeps_order_and_loses_nothing), \
  cmocka_unit_test(test_outbox_update_keeps_the_services_state),        \
  cmocka_unit_test(test_outbox_reads_are_bounded_in_bytes)
/* With a ring (the "sealed" groups run the contract and event tests above too, then these; the
 * rotation last, as it replaces the group's store). */
#define SEAL_TESTS                                                       \
  cmocka_unit_test(test_sealed_rows_round_trip),                         \
  cmocka_unit_test(test_index_lookalike_ids_are_refused),                \
  cmocka_unit_test(test_filters_find_plaintext_and_sealed_rows),         \
  cmocka_unit_test(test_moved_values_do_not_open),                       \
  cmocka_unit_test(test_relinked_rows_do_not_open),                      \
  cmocka_unit_test(test_failure_reason_is_sealed),                       \
  cmocka_unit_test(test_key_accounts_are_sealed),                        \
  cmocka_unit_test(test_set_ring_refusals),                              \
  cmocka_unit_test(test_keys_retire_only_after_a_full_reencrypt),        \
  cmocka_unit_test(test_reseal_across_a_rotation)
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
  /* GSR_CONFORMANCE_FILTER: run only the tests whose names match (a cmocka pattern, * and ?) */
  const char *only = getenv("GSR_CONFORMANCE_FILTER");
  if (only && *only) cmocka_set_test_filter(only);
  int failed = 0;
  if (want_sqlite) {
    /* clang-format off */
    const struct CMUnitTest sqlite_tests[] = {
        CONTRACT_TESTS,
        cmocka_unit_test(test_sqlite_checkpoints_bound_the_log),
        EVENT_TESTS,
        AUDIT_TESTS,
        OUTBOX_TESTS,
        OUTBOX_REVIEW_TESTS,
        ANALYTICS_TESTS,
        cmocka_unit_test(test_sqlite_outbox_leases_cleared_at_open),       /* SQLite only */
        cmocka_unit_test(test_sqlite_outbox_row_leases_cleared_at_open),   /* SQLite only */
        cmocka_unit_test(test_sqlite_outbox_restart_skips_dead_letters),   /* SQLite only */
    };
    /* clang-format on */
    failed += cmocka_run_group_tests_name("store conformance: sqlite", sqlite_tests, setup_sqlite,
                                          teardown_sqlite);
    /* clang-format off */
    const struct CMUnitTest sqlite_sealed_tests[] = {
        CONTRACT_TESTS,
        EVENT_TESTS,
        AUDIT_TESTS,
        OUTBOX_TESTS,
        OUTBOX_REVIEW_TESTS,
        ANALYTICS_TESTS,
        cmocka_unit_test(test_sqlite_file_holds_no_plaintext),             /* SQLite only */
        cmocka_unit_test(test_reseal_batches_are_bounded_in_bytes),
        cmocka_unit_test(test_sqlite_outbox_sealed_at_rest),               /* SQLite only */
        cmocka_unit_test(test_outbox_subscription_from_before_sealing),
        SEAL_TESTS,
        cmocka_unit_test(test_outbox_reads_after_rotation),
    };
    /* clang-format on */
    failed += cmocka_run_group_tests_name("store conformance: sqlite, sealed", sqlite_sealed_tests,
                                          setup_sqlite_sealed, teardown_sqlite_sealed);
  }
  if (want_pg) {
    snprintf(pg_backend.url, sizeof pg_backend.url, "%s", url);
    const struct CMUnitTest pg_tests[] = {
        CONTRACT_TESTS,      EVENT_TESTS,
        AUDIT_TESTS,         cmocka_unit_test(test_audit_pg_content_is_the_c_content),
        PG_OUTBOX_TESTS,     OUTBOX_TESTS,
        OUTBOX_REVIEW_TESTS, ANALYTICS_TESTS};
    failed +=
        cmocka_run_group_tests_name("store conformance: postgres", pg_tests, setup_pg, teardown_pg);
    snprintf(pg_sealed_backend.url, sizeof pg_sealed_backend.url, "%s", url);
    const struct CMUnitTest pg_sealed_tests[] = {
        CONTRACT_TESTS,
        EVENT_TESTS,
        PG_OUTBOX_TESTS, /* before the rotations: reencrypt must carry the outbox along */
        OUTBOX_TESTS,
        OUTBOX_REVIEW_TESTS,
        ANALYTICS_TESTS,
        cmocka_unit_test(test_reseal_batches_are_bounded_in_bytes),
        cmocka_unit_test(test_outbox_subscription_from_before_sealing),
        SEAL_TESTS,
        cmocka_unit_test(test_pg_outbox_carried_by_reencrypt),
        cmocka_unit_test(test_outbox_reads_after_rotation),
        cmocka_unit_test(test_pg_sealed_values_never_reach_the_database),
        cmocka_unit_test(test_pg_reencrypt_rotates_while_another_instance_writes),
    };
    failed += cmocka_run_group_tests_name("store conformance: postgres, sealed", pg_sealed_tests,
                                          setup_pg_sealed, teardown_pg_sealed);
  }
  return failed ? 1 : 0;
}
