/* Unit tests for audit/audit: entries reach the store within a flush period, rejections from
 * one address are aggregated per second, a full buffer drops (counted) instead of waiting, and
 * stopping hands over everything held. The store is a fake that keeps what it is given. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "core/timeutil.h"

struct fake_store {
  struct store base;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  struct audit_entry *got;
  size_t count, cap;
  int writes;
  bool closed_gate; /* submit waits until the gate opens (a slow database) */
  bool in_submit;
  enum store_status answer;
};

static void fake_submit(struct store *s, struct store_write *w) {
  struct fake_store *f = (struct fake_store *)s;
  assert_int_equal(w->kind, STORE_WRITE_AUDIT);
  pthread_mutex_lock(&f->mu);
  f->in_submit = true;
  pthread_cond_broadcast(&f->cv);
  while (f->closed_gate) pthread_cond_wait(&f->cv, &f->mu);
  f->in_submit = false;
  w->status = f->answer;
  if (f->answer == STORE_OK) {
    if (f->count + w->audit_count > f->cap) {
      f->cap = (f->count + w->audit_count) * 2;
      f->got = realloc(f->got, f->cap * sizeof *f->got);
      assert_non_null(f->got);
    }
    for (size_t i = 0; i < w->audit_count; i++) {
      w->audit_entries[i].id = (int64_t)(f->count + 1);
      f->got[f->count++] = w->audit_entries[i];
    }
  }
  f->writes++;
  pthread_mutex_unlock(&f->mu);
  w->done(w, w->done_cls);
}

static enum store_status fake_audit_head(struct store *s, int64_t *last_id,
                                         unsigned char hash[AUDIT_HASH_LEN]) {
  struct fake_store *f = (struct fake_store *)s;
  pthread_mutex_lock(&f->mu);
  *last_id = (int64_t)f->count;
  pthread_mutex_unlock(&f->mu);
  memset(hash, 0, AUDIT_HASH_LEN);
  return STORE_OK;
}

static const struct store_ops fake_ops = {
    .name = "fake", .submit = fake_submit, .audit_head = fake_audit_head};

static struct fake_store *fake_new(void) {
  struct fake_store *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->base.ops = &fake_ops;
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
  f->answer = STORE_OK;
  return f;
}

static void fake_free(struct fake_store *f) {
  pthread_mutex_destroy(&f->mu);
  pthread_cond_destroy(&f->cv);
  free(f->got);
  free(f);
}

static size_t fake_count(struct fake_store *f) {
  pthread_mutex_lock(&f->mu);
  size_t n = f->count;
  pthread_mutex_unlock(&f->mu);
  return n;
}

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

static struct audit_who who_of(const char *rid, const char *key, const char *ip) {
  struct audit_who w;
  audit_who_set(&w, rid, key, ip);
  return w;
}

static void test_reads_reach_the_store_within_a_second(void **state) {
  (void)state;
  struct fake_store *f = fake_new();
  struct audit_recorder *r = audit_recorder_start(&f->base);
  assert_non_null(r);
  struct audit_who w = who_of("req-1", "0123456789abcdef", "192.0.2.7");
  int64_t before = time_now_us();
  audit_record(r, &w, AUDIT_CONVERSATION_READ, "conv_1", AUDIT_OK);
  audit_record(r, &w, AUDIT_CONVERSATION_AUDIO, "conv_2", AUDIT_NOT_FOUND);
  audit_record(r, NULL, AUDIT_CONVERSATION_LIST, NULL, AUDIT_OK);
  double start = time_mono_ms();
  while (fake_count(f) < 3 && time_mono_ms() - start < 5000) sleep_ms(10);
  assert_int_equal(fake_count(f), 3);
  assert_true(time_mono_ms() - start < 1000); /* AUDIT_FLUSH_MS, with room for a loaded box */
  assert_string_equal(f->got[0].who.request_id, "req-1");
  assert_string_equal(f->got[0].who.key_id, "0123456789abcdef");
  assert_string_equal(f->got[0].who.client_ip, "192.0.2.7");
  assert_int_equal(f->got[0].action, AUDIT_CONVERSATION_READ);
  assert_string_equal(f->got[0].target, "conv_1");
  assert_int_equal(f->got[0].outcome, AUDIT_OK);
  assert_int_equal(f->got[0].count, 1);
  assert_true(f->got[0].at_us >= before && f->got[0].at_us <= time_now_us());
  assert_int_equal(f->got[1].outcome, AUDIT_NOT_FOUND);
  assert_string_equal(f->got[2].who.request_id, "");
  assert_string_equal(f->got[2].target, "");
  audit_recorder_stop(r);
  fake_free(f);
}

static void test_rejections_are_aggregated_per_address_and_second(void **state) {
  (void)state;
  struct fake_store *f = fake_new();
  struct audit_recorder *r = audit_recorder_start(&f->base);
  assert_non_null(r);
  struct audit_who a = who_of("a-1", "1111111111111111", "192.0.2.1");
  struct audit_who b = who_of("b-1", "2222222222222222", "192.0.2.2");
  for (int i = 0; i < 500; i++) {
    audit_record_rejected(r, &a, "conv_x", AUDIT_UNAUTHORIZED);
    if (i % 5 == 0) audit_record_rejected(r, &b, NULL, AUDIT_FORBIDDEN);
  }
  struct audit_who a2 = who_of("a-2", "3333333333333333", "192.0.2.1");
  audit_record_rejected(r, &a2, "conv_x", AUDIT_UNAUTHORIZED);
  audit_record_rejected(r, &a2, NULL, AUDIT_FORBIDDEN); /* another outcome: its own entry */
  /* Within a second nothing is written yet; once the second is over, one entry each. */
  double start = time_mono_ms();
  while (fake_count(f) < 3 && time_mono_ms() - start < 5000) sleep_ms(20);
  sleep_ms(300);
  assert_int_equal(fake_count(f), 3);
  int64_t total_a = 0;
  for (size_t i = 0; i < f->count; i++) {
    const struct audit_entry *e = &f->got[i];
    assert_int_equal(e->action, AUDIT_AUTH_REJECTED);
    if (strcmp(e->who.client_ip, "192.0.2.1") == 0 && e->outcome == AUDIT_UNAUTHORIZED) {
      assert_int_equal(e->count, 501);
      assert_string_equal(e->who.request_id, "a-1"); /* the first one's */
      assert_string_equal(e->who.key_id, "");        /* they differed */
      assert_string_equal(e->target, "conv_x");      /* they agreed */
      total_a += e->count;
    } else if (strcmp(e->who.client_ip, "192.0.2.2") == 0) {
      assert_int_equal(e->count, 100);
      assert_string_equal(e->who.key_id, "2222222222222222");
      assert_int_equal(e->outcome, AUDIT_FORBIDDEN);
    } else {
      assert_string_equal(e->who.client_ip, "192.0.2.1");
      assert_int_equal(e->outcome, AUDIT_FORBIDDEN);
      assert_int_equal(e->count, 1);
    }
  }
  assert_int_equal(total_a, 501);
  /* The next second opens a new window. */
  audit_record_rejected(r, &a, "conv_x", AUDIT_UNAUTHORIZED);
  audit_recorder_stop(r); /* hands over the open window */
  assert_int_equal(f->count, 4);
  assert_int_equal(f->got[3].count, 1);
  fake_free(f);
}

static void test_rejections_are_aggregated_per_ipv6_64_and_overflow(void **state) {
  (void)state;
  struct fake_store *f = fake_new();
  struct audit_recorder *r = audit_recorder_start(&f->base);
  assert_non_null(r);
  char ip[64];
  for (int i = 0; i < 300; i++) { /* one /64, many addresses */
    snprintf(ip, sizeof ip, "2001:db8:1:2:%x::%x", i, i + 1);
    struct audit_who w = who_of("s", NULL, ip);
    audit_record_rejected(r, &w, NULL, AUDIT_UNAUTHORIZED);
  }
  struct audit_who mapped = who_of("m", NULL, "::ffff:192.0.2.9");
  audit_record_rejected(r, &mapped, NULL, AUDIT_UNAUTHORIZED);
  /* more clients than windows: the rest are counted in one overflow entry per outcome */
  for (int i = 0; i < AUDIT_REJECT_SOURCES_MAX + 500; i++) {
    snprintf(ip, sizeof ip, "2001:db8:%x::1", i + 16);
    struct audit_who w = who_of("o", NULL, ip);
    audit_record_rejected(r, &w, NULL, i % 2 ? AUDIT_FORBIDDEN : AUDIT_UNAUTHORIZED);
  }
  audit_recorder_stop(r);
  int64_t total = 0, overflow = 0, prefix = 0;
  bool mapped_seen = false;
  for (size_t i = 0; i < f->count; i++) {
    const struct audit_entry *e = &f->got[i];
    total += e->count;
    if (strcmp(e->who.client_ip, "2001:db8:1:2::/64") == 0) prefix += e->count;
    if (strcmp(e->who.client_ip, "192.0.2.9") == 0) mapped_seen = true;
    if (e->who.client_ip[0] == '\0') {
      overflow++;
      assert_string_equal(e->who.request_id, "");
      assert_true(e->count > 1);
    }
  }
  assert_int_equal(total, 300 + 1 + AUDIT_REJECT_SOURCES_MAX + 500);
  assert_int_equal(prefix, 300);
  assert_true(mapped_seen);
  assert_true(overflow >= 1 && overflow <= 4); /* per outcome (and second) */
  assert_true(f->count <= AUDIT_REJECT_SOURCES_MAX + 8);
  fake_free(f);
}

static void test_full_buffer_drops_without_waiting(void **state) {
  (void)state;
  struct fake_store *f = fake_new();
  f->closed_gate = true;
  struct audit_recorder *r = audit_recorder_start(&f->base);
  assert_non_null(r);
  audit_record(r, NULL, AUDIT_CONVERSATION_READ, "first", AUDIT_OK);
  pthread_mutex_lock(&f->mu); /* the flusher is stuck in the store with the first entry */
  while (!f->in_submit) pthread_cond_wait(&f->cv, &f->mu);
  pthread_mutex_unlock(&f->mu);
  double start = time_mono_ms();
  for (int i = 0; i < AUDIT_BUFFER_MAX + 100; i++)
    audit_record(r, NULL, AUDIT_CONVERSATION_READ, "more", AUDIT_OK);
  assert_true(time_mono_ms() - start < 2000); /* never waited for the store */
  struct audit_recorder_stats st;
  audit_recorder_stats(r, &st);
  assert_int_equal(st.dropped, 100);
  pthread_mutex_lock(&f->mu);
  f->closed_gate = false;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
  audit_recorder_stop(r);
  assert_int_equal(f->count, 1 + AUDIT_BUFFER_MAX);
  fake_free(f);
}

static void test_stop_hands_over_what_it_holds(void **state) {
  (void)state;
  struct fake_store *f = fake_new();
  struct audit_recorder *r = audit_recorder_start(&f->base);
  assert_non_null(r);
  struct audit_who w = who_of("r", "", "2001:db8::1");
  for (int i = 0; i < 10; i++) audit_record(r, &w, AUDIT_CONVERSATION_LIST, NULL, AUDIT_OK);
  audit_record_rejected(r, &w, NULL, AUDIT_UNAUTHORIZED);
  audit_recorder_stop(r);
  assert_int_equal(f->count, 11);
  assert_int_equal(f->got[10].action, AUDIT_AUTH_REJECTED);
  fake_free(f);
}

static void test_a_failed_write_is_tried_again(void **state) {
  (void)state;
  struct fake_store *f = fake_new();
  f->answer = STORE_RETRY;
  struct audit_recorder *r = audit_recorder_start(&f->base);
  assert_non_null(r);
  audit_record(r, NULL, AUDIT_CONVERSATION_READ, "c", AUDIT_OK);
  double start = time_mono_ms();
  for (;;) {
    pthread_mutex_lock(&f->mu);
    int writes = f->writes;
    if (writes >= 1) f->answer = STORE_OK; /* the database is back */
    pthread_mutex_unlock(&f->mu);
    if (writes >= 1 || time_mono_ms() - start > 5000) break;
    sleep_ms(5);
  }
  while (fake_count(f) < 1 && time_mono_ms() - start < 5000) sleep_ms(10);
  assert_int_equal(fake_count(f), 1);
  audit_recorder_stop(r);
  fake_free(f);
}

static void test_who_is_cut_to_its_fields(void **state) {
  (void)state;
  char long_id[300];
  memset(long_id, 'x', sizeof long_id - 1);
  long_id[sizeof long_id - 1] = '\0';
  struct audit_who w = who_of(long_id, NULL, "");
  assert_int_equal(strlen(w.request_id), AUDIT_REQUEST_ID_MAX);
  assert_string_equal(w.key_id, "");
  assert_string_equal(w.client_ip, "");
  audit_record(NULL, &w, AUDIT_CONVERSATION_READ, NULL, AUDIT_OK); /* no recorder: nothing */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reads_reach_the_store_within_a_second),
      cmocka_unit_test(test_rejections_are_aggregated_per_address_and_second),
      cmocka_unit_test(test_rejections_are_aggregated_per_ipv6_64_and_overflow),
      cmocka_unit_test(test_full_buffer_drops_without_waiting),
      cmocka_unit_test(test_stop_hands_over_what_it_holds),
      cmocka_unit_test(test_a_failed_write_is_tried_again),
      cmocka_unit_test(test_who_is_cut_to_its_fields),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
