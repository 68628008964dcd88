/* Unit tests for store/lane: the SQLite store's fast lane bookkeeping. A batch rolled back
 * leaves the lane as the batch found it; the cursor never passes an entry in flight; erasure
 * and deletion forget exactly what they name. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "store/lane.h"

static struct lane_entry entry(const char *sub, const char *conv, int64_t seq, int64_t token) {
  struct lane_entry e;
  memset(&e, 0, sizeof e);
  snprintf(e.sub_id, sizeof e.sub_id, "%s", sub);
  snprintf(e.conversation_id, sizeof e.conversation_id, "%s", conv);
  e.seq = seq;
  e.token = token;
  e.until_us = 1000 + seq;
  return e;
}

static void add(struct lane_set *l, const char *sub, const char *conv, int64_t seq) {
  struct lane_entry e = entry(sub, conv, seq, seq * 10);
  assert_true(lanes_add(&l->cur, &e));
}

static void test_cursor_stops_before_the_oldest_in_flight(void **state) {
  (void)state;
  struct lane_set l;
  memset(&l, 0, sizeof l);
  int64_t c;
  assert_false(lanes_cursor(&l.cur, "sub_a", &c)); /* not read yet: no opinion */
  assert_true(lanes_set_head(&l.cur, "sub_a", 10));
  assert_true(lanes_cursor(&l.cur, "sub_a", &c));
  assert_int_equal(c, 10);
  add(&l, "sub_a", "c1", 7);
  add(&l, "sub_a", "c2", 9);
  add(&l, "sub_b", "c1", 3); /* another subscription's entry holds nothing of sub_a */
  assert_true(lanes_cursor(&l.cur, "sub_a", &c));
  assert_int_equal(c, 6);
  lanes_remove(&l.cur, (size_t)lanes_find(&l.cur, "sub_a", 7, 70));
  assert_true(lanes_cursor(&l.cur, "sub_a", &c));
  assert_int_equal(c, 8);
  assert_true(lanes_set_head(&l.cur, "sub_a", 5)); /* a head never moves back */
  assert_true(lanes_head(&l.cur, "sub_a", &c));
  assert_int_equal(c, 10);
  lanes_free(&l);
}

static void test_find_by_token_conversation_and_lease(void **state) {
  (void)state;
  struct lane_set l;
  memset(&l, 0, sizeof l);
  add(&l, "sub_a", "c1", 7);
  add(&l, "sub_a", "c2", 9);
  assert_int_equal(lanes_find(&l.cur, "sub_a", 7, 70), 0);
  assert_int_equal(lanes_find(&l.cur, "sub_a", 7, 71), -1); /* another claim's answer */
  assert_int_equal(lanes_find(&l.cur, "sub_a", 7, -1), 0);
  assert_int_equal(lanes_find(&l.cur, "sub_b", 7, 70), -1);
  assert_int_equal(lanes_find_conversation(&l.cur, "sub_a", "c2"), 1);
  assert_int_equal(lanes_find_conversation(&l.cur, "sub_b", "c2"), -1);
  assert_int_equal(lanes_find_expired(&l.cur, "sub_a", 1006), -1);
  assert_int_equal(lanes_find_expired(&l.cur, "sub_a", 1007), 0);
  assert_int_equal(lanes_find_sub(&l.cur, "sub_a"), 0);
  assert_int_equal(lanes_find_sub(&l.cur, "sub_c"), -1);
  lanes_free(&l);
}

static void test_rollback_restores_what_the_batch_found(void **state) {
  (void)state;
  struct lane_set l;
  memset(&l, 0, sizeof l);
  assert_true(lanes_set_head(&l.cur, "sub_a", 4));
  add(&l, "sub_a", "c1", 3);
  /* a committed batch: its changes stay */
  lanes_begin(&l);
  assert_true(lanes_touch(&l));
  add(&l, "sub_a", "c2", 4);
  lanes_begin(&l);
  /* a rolled-back batch that added, removed, moved the head and forgot a subscription */
  assert_true(lanes_touch(&l));
  for (int i = 5; i < 40; i++) add(&l, "sub_a", "cx", i); /* grows the arrays */
  assert_true(lanes_set_head(&l.cur, "sub_a", 40));
  assert_true(lanes_set_head(&l.cur, "sub_new", 1));
  lanes_remove(&l.cur, 0);
  assert_true(lanes_touch(&l)); /* a second touch keeps the first copy */
  lanes_forget_sub(&l.cur, "sub_a");
  lanes_rollback(&l);
  assert_int_equal(l.cur.n, 2);
  assert_int_equal(lanes_find(&l.cur, "sub_a", 3, 30), 0);
  assert_int_equal(lanes_find(&l.cur, "sub_a", 4, 40), 1);
  int64_t h;
  assert_true(lanes_head(&l.cur, "sub_a", &h));
  assert_int_equal(h, 4);
  assert_false(lanes_head(&l.cur, "sub_new", &h));
  /* a rollback without a change since the batch began changes nothing */
  lanes_begin(&l);
  lanes_rollback(&l);
  assert_int_equal(l.cur.n, 2);
  /* and the lane works on after it */
  lanes_begin(&l);
  assert_true(lanes_touch(&l));
  add(&l, "sub_a", "c3", 5);
  lanes_rollback(&l);
  assert_int_equal(l.cur.n, 2);
  lanes_free(&l);
}

static void test_forget_takes_exactly_what_it_names(void **state) {
  (void)state;
  struct lane_set l;
  memset(&l, 0, sizeof l);
  assert_true(lanes_set_head(&l.cur, "sub_a", 10));
  assert_true(lanes_set_head(&l.cur, "sub_b", 10));
  add(&l, "sub_a", "gone", 1);
  add(&l, "sub_b", "gone", 2);
  add(&l, "sub_a", "kept", 3);
  add(&l, "sub_b", "kept", 4);
  lanes_forget_conversation(&l.cur, "gone");
  assert_int_equal(l.cur.n, 2);
  assert_int_equal(lanes_find_conversation(&l.cur, "sub_a", "gone"), -1);
  assert_true(lanes_find_conversation(&l.cur, "sub_b", "kept") >= 0);
  lanes_forget_sub(&l.cur, "sub_a");
  assert_int_equal(l.cur.n, 1);
  int64_t h;
  assert_false(lanes_head(&l.cur, "sub_a", &h));
  assert_true(lanes_head(&l.cur, "sub_b", &h));
  assert_true(lanes_find(&l.cur, "sub_b", 4, 40) >= 0);
  lanes_free(&l);
}

static void test_counted_only_moves_forward(void **state) {
  (void)state;
  struct lane_set l;
  memset(&l, 0, sizeof l);
  assert_int_equal(lanes_counted(&l.cur, "sub_a"), 0);
  assert_true(lanes_set_counted(&l.cur, "sub_a", 5, 20)); /* makes the head, at 5 */
  int64_t h;
  assert_true(lanes_head(&l.cur, "sub_a", &h));
  assert_int_equal(h, 5);
  assert_int_equal(lanes_counted(&l.cur, "sub_a"), 20);
  assert_true(lanes_set_counted(&l.cur, "sub_a", 0, 10));
  assert_int_equal(lanes_counted(&l.cur, "sub_a"), 20);
  assert_true(lanes_set_head(&l.cur, "sub_a", 30));
  assert_int_equal(lanes_counted(&l.cur, "sub_a"), 20); /* the head moves alone */
  lanes_free(&l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cursor_stops_before_the_oldest_in_flight),
      cmocka_unit_test(test_find_by_token_conversation_and_lease),
      cmocka_unit_test(test_rollback_restores_what_the_batch_found),
      cmocka_unit_test(test_forget_takes_exactly_what_it_names),
      cmocka_unit_test(test_counted_only_moves_forward),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
