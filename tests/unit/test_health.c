/* Unit tests for store/health: checks are coalesced (one at a time, a result reused for a
 * second), a waiting caller is answered within the bound even while the check is stuck, and
 * later callers are answered at once until it ends. The store is a stub whose read can be held:
 * the timing is the point here; the real backends are exercised in test_offload.py. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/timeutil.h"
#include "store/health.h"

struct stub {
  struct store base;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool hold; /* reads wait while set */
  bool read_ok, write_ok;
  atomic_int reads, writes;
};

static struct stub stub;

static enum store_status stub_ping_read(struct store *s) {
  (void)s;
  atomic_fetch_add(&stub.reads, 1);
  pthread_mutex_lock(&stub.mu);
  while (stub.hold) pthread_cond_wait(&stub.cv, &stub.mu);
  bool ok = stub.read_ok;
  pthread_mutex_unlock(&stub.mu);
  return ok ? STORE_OK : STORE_RETRY;
}

static void stub_submit(struct store *s, struct store_write *w) {
  (void)s;
  atomic_fetch_add(&stub.writes, 1);
  w->status = stub.write_ok ? STORE_OK : STORE_RETRY;
  w->done(w, w->done_cls); /* as a writer that commits at once */
}

static const struct store_ops stub_ops = {
    .name = "stub", .submit = stub_submit, .ping_read = stub_ping_read};

static void stub_reset(void) {
  stub.base.ops = &stub_ops;
  pthread_mutex_init(&stub.mu, NULL);
  pthread_cond_init(&stub.cv, NULL);
  stub.hold = false;
  stub.read_ok = stub.write_ok = true;
  atomic_store(&stub.reads, 0);
  atomic_store(&stub.writes, 0);
}

static void stub_release(void) {
  pthread_mutex_lock(&stub.mu);
  stub.hold = false;
  pthread_cond_broadcast(&stub.cv);
  pthread_mutex_unlock(&stub.mu);
}

static void *release_later(void *unused) {
  (void)unused;
  usleep(200 * 1000);
  stub_release();
  return NULL;
}

struct waiter {
  struct store_health_wait w;
  atomic_int answered;
  atomic_bool ok;
  double at_ms;
};

static void on_done(struct store_health_wait *w, bool ok) {
  struct waiter *x = (struct waiter *)w;
  x->at_ms = time_mono_ms();
  atomic_store(&x->ok, ok);
  atomic_fetch_add(&x->answered, 1);
}

static void wait_answered(struct waiter *x, double max_ms) {
  double until = time_mono_ms() + max_ms;
  while (!atomic_load(&x->answered) && time_mono_ms() < until) usleep(1000);
  assert_int_equal(atomic_load(&x->answered), 1);
}

static void test_one_check_answers_many_and_is_reused(void **state) {
  (void)state;
  stub_reset();
  struct store_health *h = store_health_new(&stub.base);
  assert_non_null(h);
  bool ok;
  assert_false(store_health_recent(h, &ok)); /* nothing checked yet */
  struct waiter ws[50] = {0};
  for (int i = 0; i < 50; i++) {
    ws[i].w.done = on_done;
    store_health_wait(h, &ws[i].w);
  }
  for (int i = 0; i < 50; i++) {
    wait_answered(&ws[i], 5000);
    assert_true(atomic_load(&ws[i].ok));
  }
  assert_true(atomic_load(&stub.writes) <= 2);
  /* Fresh: answered at once, no new check. */
  int writes = atomic_load(&stub.writes);
  assert_true(store_health_recent(h, &ok));
  assert_true(ok);
  assert_int_equal(atomic_load(&stub.writes), writes);
  /* After a second it is checked again. */
  usleep((STORE_HEALTH_FRESH_MS + 100) * 1000);
  assert_false(store_health_recent(h, &ok));
  struct waiter again = {.w.done = on_done};
  store_health_wait(h, &again.w);
  wait_answered(&again, 5000);
  assert_int_equal(atomic_load(&stub.writes), writes + 1);
  store_health_free(h);
}

static void test_failed_read_or_write_is_not_ok(void **state) {
  (void)state;
  for (int which = 0; which < 2; which++) {
    stub_reset();
    if (which == 0)
      stub.read_ok = false;
    else
      stub.write_ok = false;
    struct store_health *h = store_health_new(&stub.base);
    assert_non_null(h);
    struct waiter x = {.w.done = on_done};
    store_health_wait(h, &x.w);
    wait_answered(&x, 5000);
    assert_false(atomic_load(&x.ok));
    bool ok = true;
    assert_true(store_health_recent(h, &ok)); /* a failure is reused too */
    assert_false(ok);
    store_health_free(h);
  }
}

static void test_stuck_check_answers_within_the_bound(void **state) {
  (void)state;
  stub_reset();
  stub.hold = true;
  struct store_health *h = store_health_new(&stub.base);
  assert_non_null(h);
  double t0 = time_mono_ms();
  struct waiter first = {.w.done = on_done};
  store_health_wait(h, &first.w);
  usleep(500 * 1000);
  /* Joins the running check: answered at the same bound, counted from the check's start. */
  struct waiter second = {.w.done = on_done};
  store_health_wait(h, &second.w);
  wait_answered(&first, STORE_HEALTH_WAIT_MS + 2000);
  wait_answered(&second, 1000);
  assert_false(atomic_load(&first.ok));
  assert_false(atomic_load(&second.ok));
  assert_true(first.at_ms - t0 >= STORE_HEALTH_WAIT_MS - 50);
  assert_true(first.at_ms - t0 < STORE_HEALTH_WAIT_MS + 1000);
  assert_true(second.at_ms - first.at_ms < 200);
  /* Still stuck: later callers are answered at once, and no second check starts. */
  bool ok = true;
  assert_true(store_health_recent(h, &ok));
  assert_false(ok);
  struct waiter third = {.w.done = on_done};
  store_health_wait(h, &third.w);
  assert_int_equal(atomic_load(&third.answered), 1);
  assert_int_equal(atomic_load(&stub.reads), 1);
  /* The database moves again: the check ends well and its result is used. */
  stub_release();
  double until = time_mono_ms() + 2000;
  while (!(store_health_recent(h, &ok) && ok) && time_mono_ms() < until) usleep(1000);
  assert_true(ok);
  store_health_free(h);
}

static void test_free_answers_waiters_and_waits_for_the_check(void **state) {
  (void)state;
  stub_reset();
  stub.hold = true;
  struct store_health *h = store_health_new(&stub.base);
  assert_non_null(h);
  struct waiter x = {.w.done = on_done};
  store_health_wait(h, &x.w);
  while (atomic_load(&stub.reads) == 0) usleep(1000);
  pthread_t t;
  /* free waits for the stuck check; it is released from another thread a little later */
  assert_int_equal(pthread_create(&t, NULL, release_later, NULL), 0);
  store_health_free(h);
  pthread_join(t, NULL);
  assert_int_equal(atomic_load(&x.answered), 1);
  assert_false(atomic_load(&x.ok));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_check_answers_many_and_is_reused),
      cmocka_unit_test(test_failed_read_or_write_is_not_ok),
      cmocka_unit_test(test_stuck_check_answers_within_the_bound),
      cmocka_unit_test(test_free_answers_waiters_and_waits_for_the_check),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
