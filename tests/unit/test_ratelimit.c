/* Unit tests for http/ratelimit: the arithmetic of the 60-second window, driven by an explicit
 * millisecond clock so every case is exact and fast. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ext/redis.h"
#include "http/ratelimit.h"

#define WINDOW_MS (RATELIMIT_WINDOW_S * 1000LL)
/* A hit is remembered at least this long (its one-second bucket ages out at 60 s). */
#define MEMORY_MS (WINDOW_MS - 1000)

static struct ratelimit_result hit(struct ratelimit *rl, const char *key, int64_t now_ms) {
  struct ratelimit_result r;
  memset(&r, 0x5a, sizeof r);
  ratelimit_hit(rl, key, now_ms, &r);
  return r;
}

/* What a test allocated, freed by teardown even when an assertion ends the test early (so a
 * failure is reported as itself, not also as a leak). */
static struct ratelimit *fixture_rl;
static int64_t *fixture_buf;

static int teardown(void **state) {
  (void)state;
  ratelimit_free(fixture_rl);
  fixture_rl = NULL;
  free(fixture_buf);
  fixture_buf = NULL;
  return 0;
}

/* Replaces the test's limiter with a new one. */
static struct ratelimit *new_limiter(long limit, size_t max_keys) {
  ratelimit_free(fixture_rl);
  fixture_rl = ratelimit_new(limit, max_keys);
  assert_non_null(fixture_rl);
  return fixture_rl;
}

static void test_allows_exactly_limit_then_denies(void **state) {
  (void)state;
  struct ratelimit *rl = new_limiter(5, 100);
  int64_t t = 1000000;
  for (long i = 0; i < 5; i++) {
    struct ratelimit_result r = hit(rl, "k", t + i);
    assert_true(r.allowed);
    assert_int_equal(r.limit, 5);
    assert_int_equal(r.remaining, 5 - 1 - i);
    assert_int_equal(r.retry_after_s, 0);
    assert_true(r.reset_s >= RATELIMIT_WINDOW_S && r.reset_s <= RATELIMIT_WINDOW_S + 1);
  }
  for (int i = 0; i < 10; i++) {
    struct ratelimit_result r = hit(rl, "k", t + 10 + i);
    assert_false(r.allowed);
    assert_int_equal(r.limit, 5);
    assert_int_equal(r.remaining, 0);
    assert_true(r.retry_after_s >= 1);
    assert_true(r.retry_after_s <= RATELIMIT_WINDOW_S + 1);
    assert_true(r.reset_s >= 1);
  }
}

static void test_limit_one(void **state) {
  (void)state;
  struct ratelimit *rl = new_limiter(1, 100);
  struct ratelimit_result r = hit(rl, "k", 0);
  assert_true(r.allowed);
  assert_int_equal(r.remaining, 0);
  r = hit(rl, "k", 1);
  assert_false(r.allowed);
  assert_int_equal(r.remaining, 0);
}

/* A hit is never forgotten sooner than 59 s after it was counted, and Retry-After is honest:
 * waiting retry_after_s seconds is enough, one second less is not. */
static void test_forgotten_only_after_window(void **state) {
  (void)state;
  for (int64_t t0 = 5000; t0 < 7000; t0 += 137) {
    struct ratelimit *rl = new_limiter(3, 100);
    for (int i = 0; i < 3; i++) assert_true(hit(rl, "k", t0).allowed);
    struct ratelimit_result r = hit(rl, "k", t0 + MEMORY_MS - 1);
    assert_false(r.allowed);
    assert_true(r.retry_after_s >= 1 && r.retry_after_s <= RATELIMIT_WINDOW_S);
    int64_t denied_at = t0 + MEMORY_MS - 1;
    if (r.retry_after_s > 1)
      assert_false(hit(rl, "k", denied_at + (r.retry_after_s - 1) * 1000).allowed);
    r = hit(rl, "k", denied_at + r.retry_after_s * 1000);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 2);
  }
}

static void test_retry_after_from_first_denial(void **state) {
  (void)state;
  struct ratelimit *rl = new_limiter(2, 100);
  assert_true(hit(rl, "k", 10000).allowed);
  assert_true(hit(rl, "k", 10500).allowed);
  struct ratelimit_result r = hit(rl, "k", 10600);
  assert_false(r.allowed);
  /* the first hit's bucket (second 10) ages out at second 70: 59.4 s from now */
  assert_int_equal(r.retry_after_s, 60);
  assert_int_equal(r.reset_s, 60);
  assert_false(hit(rl, "k", 10000 + WINDOW_MS - 1).allowed);
  assert_true(hit(rl, "k", 10600 + r.retry_after_s * 1000).allowed);
}

static void test_remaining_counts_down_across_time(void **state) {
  (void)state;
  struct ratelimit *rl = new_limiter(10, 100);
  for (long i = 0; i < 10; i++) {
    struct ratelimit_result r = hit(rl, "k", 100000 + i * 5000); /* one every 5 s */
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 9 - i);
  }
  assert_false(hit(rl, "k", 100000 + 50000).allowed);
  /* the first hit (t=100 s) leaves at the latest ~61 s later, the second 5 s after that */
  struct ratelimit_result r = hit(rl, "k", 100000 + 61000 + 999);
  assert_true(r.allowed);
  assert_int_equal(r.remaining, 0);
  assert_false(hit(rl, "k", 100000 + 61000 + 999).allowed);
  r = hit(rl, "k", 105000 + 61000 + 999);
  assert_true(r.allowed);
  assert_int_equal(r.remaining, 0);
}

/* Simulates many clients' traffic patterns and checks the invariant on every allowed hit: no 59 s
 * span ever holds more than `limit` allowed hits. Also checks the limiter is not much stricter
 * than that: after a denial, retry_after_s later a hit is allowed. */
static void check_pattern(long limit, int64_t step_ms, int64_t jitter_ms, unsigned seed) {
  struct ratelimit *rl = new_limiter(limit, 1000);
  srand(seed);
  size_t cap = 100000, n = 0;
  free(fixture_buf);
  int64_t *allowed = fixture_buf = calloc(cap, sizeof *allowed);
  assert_non_null(allowed);
  int64_t t = 123456;
  int64_t retry_at = -1;
  for (int i = 0; i < 20000 && n < cap; i++) {
    t += step_ms + (jitter_ms ? rand() % jitter_ms : 0);
    struct ratelimit_result r = hit(rl, "client", t);
    if (retry_at >= 0 && t >= retry_at) {
      if (!r.allowed)
        fail_msg("denied at %lld although retry was promised at %lld", (long long)t,
                 (long long)retry_at);
      retry_at = -1;
    }
    if (r.allowed) {
      retry_at = -1; /* the promise was about the next hit; this one took the freed slot */
      allowed[n++] = t;
      /* hits in (t - 59 s, t] */
      size_t in_window = 0;
      for (size_t j = n; j-- > 0 && allowed[j] > t - MEMORY_MS;) in_window++;
      if ((long)in_window > limit)
        fail_msg("%zu allowed hits within 59 s ending at %lld (limit %ld)", in_window, (long long)t,
                 limit);
      /* the limiter may remember a hit up to 60 s, never shorter than 59 s */
      assert_true(r.remaining >= 0 && r.remaining <= limit - (long)in_window);
    } else {
      assert_int_equal(r.remaining, 0);
      assert_true(r.retry_after_s >= 1);
      if (retry_at < 0) retry_at = t + r.retry_after_s * 1000;
    }
  }
  /* Under steady pressure (a request at least every second) the limiter lets its share
   * through: at least limit hits per 62 s (window plus bucket granularity plus one gap). */
  if (step_ms + jitter_ms <= 1000) {
    int64_t span_s = (t - 123456) / 1000;
    assert_true((long)n >= limit * (span_s / (RATELIMIT_WINDOW_S + 2)));
  }
}

static void test_never_more_than_limit_in_any_window(void **state) {
  (void)state;
  check_pattern(5, 250, 0, 1);
  check_pattern(5, 100, 900, 2);
  check_pattern(7, 1000, 0, 3);
  check_pattern(3, 999, 3, 4);
  check_pattern(20, 10, 5000, 5);
  check_pattern(1, 59000, 3000, 6);
  check_pattern(100, 1, 20, 7);
}

static void test_keys_are_independent(void **state) {
  (void)state;
  struct ratelimit *rl = new_limiter(2, 100);
  assert_true(hit(rl, "ip:10.0.0.1", 0).allowed);
  assert_true(hit(rl, "ip:10.0.0.1", 1).allowed);
  assert_false(hit(rl, "ip:10.0.0.1", 2).allowed);
  struct ratelimit_result r = hit(rl, "ip:10.0.0.2", 3);
  assert_true(r.allowed);
  assert_int_equal(r.remaining, 1);
  assert_true(hit(rl, "key:0", 4).allowed);
  assert_true(hit(rl, "key:0", 5).allowed);
  assert_false(hit(rl, "key:0", 6).allowed);
  assert_true(hit(rl, "ip:10.0.0.2", 7).allowed);
  assert_false(hit(rl, "ip:10.0.0.2", 8).allowed);
  assert_false(hit(rl, "ip:10.0.0.1", 9).allowed);
  /* prefixes are different keys */
  assert_true(hit(rl, "ip:10.0.0.", 10).allowed);
  assert_true(hit(rl, "ip:10.0.0.10", 10).allowed);
}

static void test_full_table_fails_open_and_reclaims(void **state) {
  (void)state;
  struct ratelimit *rl = new_limiter(1, 2);
  assert_true(hit(rl, "a", 1000).allowed);
  assert_true(hit(rl, "b", 1000).allowed);
  assert_false(hit(rl, "a", 1001).allowed);
  /* The table is full: a new key is let through, every time, rather than refused. */
  for (int i = 0; i < 5; i++) {
    struct ratelimit_result r = hit(rl, "c", 2000 + i);
    assert_true(r.allowed);
    assert_int_equal(r.limit, 1);
    assert_int_equal(r.remaining, 1);
  }
  /* Known keys are still limited while the table is full. */
  assert_false(hit(rl, "b", 3000).allowed);
  /* 61 s after a and b were last seen they are stale and their slots are reused. */
  int64_t later = 3000 + (RATELIMIT_WINDOW_S + 1) * 1000LL;
  assert_true(hit(rl, "c", later).allowed);
  assert_false(hit(rl, "c", later + 1).allowed);
  assert_true(hit(rl, "d", later + 2).allowed);
  assert_false(hit(rl, "d", later + 3).allowed);
  assert_true(hit(rl, "e", later + 4).allowed); /* full again (c, d): open */
  assert_true(hit(rl, "e", later + 5).allowed);
}

static void test_many_keys(void **state) {
  (void)state;
  /* more keys than hash buckets, so chains are exercised */
  struct ratelimit *rl = new_limiter(1, 20000);
  char key[32];
  for (int i = 0; i < 10000; i++) {
    snprintf(key, sizeof key, "ip:10.%d.%d.1", i / 256, i % 256);
    assert_true(hit(rl, key, 5000).allowed);
  }
  for (int i = 0; i < 10000; i += 97) {
    snprintf(key, sizeof key, "ip:10.%d.%d.1", i / 256, i % 256);
    assert_false(hit(rl, key, 5001).allowed);
  }
}

/* Keys are client identifiers (an IPv6 literal with a prefix can be long); a key longer than
 * the internal buffer must still be limited, not let through on every hit. */
static void test_long_keys_are_limited(void **state) {
  (void)state;
  struct ratelimit *rl = new_limiter(2, 100);
  char key[RATELIMIT_KEY_MAX + 16];
  memset(key, 'k', sizeof key - 1);
  key[sizeof key - 1] = '\0';
  assert_true(hit(rl, key, 0).allowed);
  assert_true(hit(rl, key, 1).allowed);
  struct ratelimit_result r = hit(rl, key, 2);
  assert_false(r.allowed);
}

/* Without Redis (or with Redis not reachable) every decision is local: try_local decides
 * exactly as hit does and never defers. */
static void test_try_local_decides_alone_without_redis(void **state) {
  (void)state;
  char err[128];
  struct redis_client *down = redis_client_new("redis://127.0.0.1:1", err, sizeof err);
  assert_non_null(down);
  for (int shared = 0; shared < 2; shared++) {
    struct ratelimit *a = new_limiter(3, 100);
    struct ratelimit *b = ratelimit_new(3, 100);
    assert_non_null(b);
    if (shared) {
      ratelimit_share(a, down, "t:");
      ratelimit_share(b, down, "t:");
    }
    for (int i = 0; i < 6; i++) {
      struct ratelimit_result ra, rb;
      assert_true(ratelimit_try_local(a, "k", 5000 + i, &ra));
      ratelimit_hit(b, "k", 5000 + i, &rb);
      assert_int_equal(ra.allowed, rb.allowed);
      assert_int_equal(ra.allowed, i < 3);
      assert_int_equal(ra.remaining, rb.remaining);
      assert_int_equal(ra.reset_s, rb.reset_s);
      assert_int_equal(ra.retry_after_s, rb.retry_after_s);
    }
    ratelimit_free(b);
  }
  redis_client_free(down);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_try_local_decides_alone_without_redis, teardown),
      cmocka_unit_test_teardown(test_allows_exactly_limit_then_denies, teardown),
      cmocka_unit_test_teardown(test_limit_one, teardown),
      cmocka_unit_test_teardown(test_forgotten_only_after_window, teardown),
      cmocka_unit_test_teardown(test_retry_after_from_first_denial, teardown),
      cmocka_unit_test_teardown(test_remaining_counts_down_across_time, teardown),
      cmocka_unit_test_teardown(test_never_more_than_limit_in_any_window, teardown),
      cmocka_unit_test_teardown(test_keys_are_independent, teardown),
      cmocka_unit_test_teardown(test_full_table_fails_open_and_reclaims, teardown),
      cmocka_unit_test_teardown(test_many_keys, teardown),
      cmocka_unit_test_teardown(test_long_keys_are_limited, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
