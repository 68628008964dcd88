/* Unit tests for core/thread_slot: one object per thread, made once, all released at the end. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>

#include "core/thread_slot.h"

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
  thread_slot_init(&ts);
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
  thread_slot_init(&ts);
  fail_next = 1;
  assert_null(thread_slot_get(&ts, make, NULL));
  assert_non_null(thread_slot_get(&ts, make, NULL));
  assert_int_equal(made, 1);
  thread_slot_destroy(&ts, release);
  assert_int_equal(released, 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_object_per_thread),
      cmocka_unit_test(test_failed_make_is_tried_again),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
