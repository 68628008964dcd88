/* crypto_random hands out a per-thread pool of OpenSSL's randomness: the values must stay
 * distinct across pool refills, across threads and after a fork, and larger requests still work. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "ext/crypto.h"

#define IDS 5000

static int cmp16(const void *a, const void *b) { return memcmp(a, b, 16); }

static void test_values_stay_distinct_across_refills(void **state) {
  (void)state;
  unsigned char(*ids)[16] = calloc(IDS, 16);
  assert_non_null(ids);
  for (size_t i = 0; i < IDS; i++) {
    /* odd sizes in between, so pool refills fall at every offset */
    unsigned char odd[7];
    assert_true(crypto_random(odd, 1 + i % sizeof odd));
    assert_true(crypto_random(ids[i], 16));
  }
  qsort(ids, IDS, 16, cmp16);
  for (size_t i = 1; i < IDS; i++) assert_true(memcmp(ids[i - 1], ids[i], 16) != 0);
  free(ids);
}

static void test_a_large_request_is_random_too(void **state) {
  (void)state;
  unsigned char a[4096], b[4096];
  assert_true(crypto_random(a, sizeof a));
  assert_true(crypto_random(b, sizeof b));
  assert_true(memcmp(a, b, sizeof a) != 0);
  size_t zero = 0;
  for (size_t i = 0; i < sizeof a; i++) zero += a[i] == 0;
  assert_true(zero < 64); /* ~16 expected */
}

static void *draw(void *out) { return crypto_random(out, 16) ? out : NULL; }

static void test_threads_get_different_values(void **state) {
  (void)state;
  unsigned char mine[16], theirs[16];
  assert_true(crypto_random(mine, sizeof mine));
  pthread_t t;
  void *ok = NULL;
  assert_int_equal(pthread_create(&t, NULL, draw, theirs), 0);
  assert_int_equal(pthread_join(t, &ok), 0);
  assert_non_null(ok);
  assert_true(memcmp(mine, theirs, 16) != 0);
}

static void test_a_forked_child_does_not_repeat_the_parent(void **state) {
  (void)state;
  unsigned char warm[16], parent[16], child[16];
  assert_true(crypto_random(warm, sizeof warm)); /* the pool is filled before the fork */
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    unsigned char v[16];
    _exit(crypto_random(v, sizeof v) && write(fds[1], v, sizeof v) == (ssize_t)sizeof v ? 0 : 1);
  }
  assert_true(crypto_random(parent, sizeof parent));
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  assert_int_equal(read(fds[0], child, sizeof child), (ssize_t)sizeof child);
  close(fds[0]);
  close(fds[1]);
  assert_true(memcmp(parent, child, 16) != 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_values_stay_distinct_across_refills),
      cmocka_unit_test(test_a_large_request_is_random_too),
      cmocka_unit_test(test_threads_get_different_values),
      cmocka_unit_test(test_a_forked_child_does_not_repeat_the_parent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
