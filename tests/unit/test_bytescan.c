/* Unit tests for core/bytescan.h: the word-at-a-time searches find exactly the byte a plain
 * byte loop finds, for every start and end inside buffers holding each byte value at each
 * position of a word, and runs of bytes around the ones searched for (borrows between bytes). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/bytescan.h"

static const unsigned char *naive_quote(const unsigned char *p, const unsigned char *end) {
  while (p < end && *p != '"' && *p != '\\') p++;
  return p;
}

static const unsigned char *naive_special(const unsigned char *p, const unsigned char *end) {
  while (p < end && *p != '"' && *p != '\\' && *p >= 0x20 && *p < 0x80) p++;
  return p;
}

static void check_all(const unsigned char *buf, size_t n) {
  for (size_t s = 0; s <= n; s++)
    for (size_t e = s; e <= n && e <= s + 40; e++) {
      assert_ptr_equal(bytescan_quote(buf + s, buf + e), naive_quote(buf + s, buf + e));
      assert_ptr_equal(bytescan_json_special(buf + s, buf + e), naive_special(buf + s, buf + e));
    }
}

static void test_every_byte_at_every_place(void **state) {
  (void)state;
  unsigned char buf[40];
  for (int c = 0; c < 256; c++)
    for (size_t at = 0; at < 24; at++) {
      memset(buf, 'a', sizeof buf);
      buf[at] = (unsigned char)c;
      check_all(buf, sizeof buf);
      /* the same byte just after another match, and bytes one above the limits after it */
      buf[at + 1] = '"' + 1;
      buf[at + 2] = 0x20;
      buf[at + 3] = '\\' + 1;
      check_all(buf, sizeof buf);
    }
}

static void test_random_buffers(void **state) {
  (void)state;
  static const unsigned char pool[] = {'a',  '"',  '\\', 0x00, 0x1f, 0x20, 0x21, 0x23,
                                       0x5b, 0x5d, 0x7f, 0x80, 0xc3, 0xff, '/',  'u'};
  unsigned char buf[64];
  srand(12);
  for (int round = 0; round < 3000; round++) {
    int density = 1 + rand() % 16;
    for (size_t i = 0; i < sizeof buf; i++)
      buf[i] = rand() % density == 0 ? pool[rand() % sizeof pool] : (unsigned char)('A' + i % 26);
    check_all(buf, sizeof buf);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_byte_at_every_place),
      cmocka_unit_test(test_random_buffers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
