/* Unit tests for core/thread_slot: one object per thread, made once, all released at the end. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/thread_slot.h"
#include "ext/redis.h"

static int made, released, fail_next;

static void *make(void *ctx) {
  (void)ctx;
  if (fail_next) {
    fail_next = 0;
    return NULL;
  }
  made++;
  return calloc(1, 16);
}

static void release(void *obj) {
  released++;
  free(obj);
}

static void *other_thread(void *ts) { return thread_slot_get(ts, make, NULL); }

static void test_one_object_per_thread(void **state) {
  (void)state;
  made = released = 0;
  struct thread_slot ts;
  assert_true(thread_slot_init(&ts));
  void *mine = thread_slot_get(&ts, make, NULL);
  assert_non_null(mine);
  assert_ptr_equal(thread_slot_get(&ts, make, NULL), mine);
  pthread_t t;
  void *theirs = NULL;
  assert_int_equal(pthread_create(&t, NULL, other_thread, &ts), 0);
  pthread_join(t, &theirs);
  assert_non_null(theirs);
  assert_ptr_not_equal(theirs, mine);
  assert_int_equal(made, 2);
  thread_slot_destroy(&ts, release);
  assert_int_equal(released, 2);
}

static void test_failed_make_is_tried_again(void **state) {
  (void)state;
  made = released = 0;
  struct thread_slot ts;
  assert_true(thread_slot_init(&ts));
  fail_next = 1;
  assert_null(thread_slot_get(&ts, make, NULL));
  assert_non_null(thread_slot_get(&ts, make, NULL));
  assert_int_equal(made, 1);
  thread_slot_destroy(&ts, release);
  assert_int_equal(released, 1);
}

/* pthread_key_create's failure was ignored: the slot then used an uninitialised key. Now
 * init says so, the slot is inert, and a client that needs one refuses to start. */
static void test_no_key_left_is_reported(void **state) {
  (void)state;
  char err[256] = "";
  /* OpenSSL (used by the client) takes its own thread keys on first use: let it first. */
  redis_client_free(redis_client_new("redis://127.0.0.1:1", err, sizeof err));
  static pthread_key_t taken[PTHREAD_KEYS_MAX];
  size_t n = 0;
  while (n < PTHREAD_KEYS_MAX && pthread_key_create(&taken[n], NULL) == 0) n++;
  struct thread_slot ts;
  bool ok = thread_slot_init(&ts);
  struct redis_client *r = redis_client_new("redis://127.0.0.1:1", err, sizeof err);
  void *got = ok ? NULL : thread_slot_get(&ts, make, NULL);
  thread_slot_destroy(&ts, release); /* safe after a failed init */
  for (size_t i = 0; i < n; i++) pthread_key_delete(taken[i]);
  assert_false(ok);
  assert_null(got);
  assert_null(r);
  assert_non_null(strstr(err, "REDIS_URL"));
  /* with keys back, all works again */
  assert_true(thread_slot_init(&ts));
  assert_non_null(thread_slot_get(&ts, make, NULL));
  thread_slot_destroy(&ts, release);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_object_per_thread),
      cmocka_unit_test(test_failed_make_is_tried_again),
      cmocka_unit_test(test_no_key_left_is_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
