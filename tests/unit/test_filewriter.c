/* The file writer: bytes handed over arrive in the file in order, a flush tells when they
 * have, a failed write or the bound fails the file, and a file released with writes pending is
 * closed only after them. */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/filewriter.h"

struct waiter {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;
};

static void on_done(void *cls) {
  struct waiter *w = cls;
  pthread_mutex_lock(&w->lock);
  w->done = true;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

/* Waits until everything appended to f is written. */
static void flush_and_wait(struct filewriter_file *f) {
  struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
  if (!filewriter_flush(f, on_done, &w)) return;
  pthread_mutex_lock(&w.lock);
  while (!w.done) pthread_cond_wait(&w.cond, &w.lock);
  pthread_mutex_unlock(&w.lock);
}

static void test_bytes_arrive_in_order(void **state) {
  (void)state;
  struct filewriter *fw = filewriter_new(64 * 1024 * 1024);
  assert_non_null(fw);
  struct filewriter_file *f = filewriter_file_new(fw, "/tmp", -1);
  assert_non_null(f);
  unsigned char *all = malloc(1000 * 997);
  for (size_t i = 0; i < 1000; i++) {
    unsigned char chunk[997];
    for (size_t j = 0; j < sizeof chunk; j++) chunk[j] = (unsigned char)(i * 31 + j);
    memcpy(all + i * sizeof chunk, chunk, sizeof chunk);
    assert_true(filewriter_append(f, chunk, sizeof chunk));
  }
  flush_and_wait(f);
  assert_true(filewriter_ok(f));
  int fd = filewriter_fd(f);
  assert_true(fd >= 0);
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  assert_int_equal(st.st_size, 1000 * 997);
  assert_int_equal(st.st_nlink, 0); /* unlinked: nothing left behind */
  unsigned char *back = malloc(1000 * 997);
  assert_int_equal(pread(fd, back, 1000 * 997, 0), 1000 * 997);
  assert_memory_equal(back, all, 1000 * 997);
  free(back);
  free(all);
  filewriter_file_release(f);
  filewriter_free(fw);
}

static void test_nothing_pending_means_no_wait(void **state) {
  (void)state;
  struct filewriter *fw = filewriter_new(1024);
  struct filewriter_file *f = filewriter_file_new(fw, "/tmp", -1);
  struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
  assert_false(filewriter_flush(f, on_done, &w));
  assert_int_equal(filewriter_fd(f), -1);
  assert_true(filewriter_ok(f));
  filewriter_file_release(f);
  filewriter_free(fw);
}

static void test_failed_write_fails_the_file(void **state) {
  (void)state;
  struct filewriter *fw = filewriter_new(1024 * 1024);
  int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  struct filewriter_file *f = filewriter_file_new(fw, NULL, fd);
  assert_true(filewriter_append(f, "abc", 3));
  flush_and_wait(f);
  assert_false(filewriter_ok(f));
  assert_false(filewriter_append(f, "def", 3)); /* refused once failed */
  filewriter_file_release(f);
  /* No such directory: the temporary file cannot be made. */
  struct filewriter_file *g = filewriter_file_new(fw, "/nonexistent-gensendrep-dir", -1);
  assert_true(filewriter_append(g, "abc", 3));
  flush_and_wait(g);
  assert_false(filewriter_ok(g));
  filewriter_file_release(g);
  filewriter_free(fw);
}

static void test_bound_fails_the_file(void **state) {
  (void)state;
  struct filewriter *fw = filewriter_new(4);
  struct filewriter_file *f = filewriter_file_new(fw, "/tmp", -1);
  assert_false(filewriter_append(f, "12345", 5)); /* more than may wait at once */
  flush_and_wait(f);
  assert_false(filewriter_ok(f));
  filewriter_file_release(f);
  filewriter_free(fw);
}

static void test_release_with_writes_pending(void **state) {
  (void)state;
  struct filewriter *fw = filewriter_new(64 * 1024 * 1024);
  for (int k = 0; k < 50; k++) {
    struct filewriter_file *f = filewriter_file_new(fw, "/tmp", -1);
    static unsigned char big[256 * 1024];
    for (int i = 0; i < 8; i++) assert_true(filewriter_append(f, big, sizeof big));
    filewriter_file_release(f); /* the writer frees it after its writes (ASan sees leaks) */
  }
  filewriter_free(fw);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bytes_arrive_in_order),
      cmocka_unit_test(test_nothing_pending_means_no_wait),
      cmocka_unit_test(test_failed_write_fails_the_file),
      cmocka_unit_test(test_bound_fails_the_file),
      cmocka_unit_test(test_release_with_writes_pending),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
