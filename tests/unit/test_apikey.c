/* Unit tests for core/apikey: the gsr_<id>_<secret> parser, scopes and accounts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "core/apikey.h"

#define ID "0123456789abcdef"
#define SECRET "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static void test_parse_good(void **state) {
  (void)state;
  const char *k = "gsr_" ID "_" SECRET;
  char id[APIKEY_ID_LEN + 1];
  const char *secret = NULL;
  assert_true(apikey_parse(k, strlen(k), id, &secret));
  assert_string_equal(id, ID);
  assert_ptr_equal(secret, k + 5 + APIKEY_ID_LEN);
  assert_memory_equal(secret, SECRET, APIKEY_SECRET_LEN);
  assert_int_equal(strlen(k), APIKEY_LEN);
}

static void test_parse_bad(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "gsr_",
      "gsr_" ID,
      "gsr_" ID "_",
      "gsr_" ID "_" SECRET "0",
      "gsr_" ID "-" SECRET,
      "GSR_" ID "_" SECRET,
      "gsr_0123456789ABCDEF_" SECRET,
      "gsr_0123456789abcdeg_" SECRET,
      "gsr_" ID "_" SECRET, /* checked below with a cut length */
      "gsr_0123456789abcdef_00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg",
      "xsr_" ID "_" SECRET,
      "gsr_" ID "__112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
  };
  char id[APIKEY_ID_LEN + 1];
  const char *secret;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    size_t len = strlen(bad[i]);
    if (i == 9) len--; /* one byte short */
    assert_false(apikey_parse(bad[i], len, id, &secret));
  }
  /* a NUL inside: the length says more than the string holds */
  char withnul[APIKEY_LEN];
  memcpy(withnul, "gsr_" ID "_" SECRET, APIKEY_LEN);
  withnul[30] = '\0';
  assert_false(apikey_parse(withnul, APIKEY_LEN, id, &secret));
}

static void test_id_valid(void **state) {
  (void)state;
  assert_true(apikey_id_valid(ID));
  assert_false(apikey_id_valid("0123456789abcde"));
  assert_false(apikey_id_valid("0123456789abcdef0"));
  assert_false(apikey_id_valid("0123456789abcdeF"));
  assert_false(apikey_id_valid(""));
}

static void test_scopes(void **state) {
  (void)state;
  unsigned s;
  assert_true(apikey_scopes_parse("read,ingest", &s));
  assert_int_equal(s, APIKEY_SCOPE_READ | APIKEY_SCOPE_INGEST);
  char text[APIKEY_SCOPES_TEXT_MAX];
  apikey_scopes_text(APIKEY_SCOPES_ALL, text);
  assert_string_equal(text, "ingest,read,delete,admin");
  assert_true(apikey_scopes_parse(text, &s));
  assert_int_equal(s, APIKEY_SCOPES_ALL);
  assert_false(apikey_scopes_parse("", &s));
  assert_false(apikey_scopes_parse("read,", &s));
  assert_false(apikey_scopes_parse("read, ingest", &s));
  assert_false(apikey_scopes_parse("Read", &s));
  assert_true(apikey_scopes_allow(APIKEY_SCOPE_ADMIN, APIKEY_SCOPE_READ));
  assert_true(apikey_scopes_allow(APIKEY_SCOPE_ADMIN, 0));
  assert_true(apikey_scopes_allow(APIKEY_SCOPE_READ, APIKEY_SCOPE_READ));
  assert_false(apikey_scopes_allow(APIKEY_SCOPE_READ, APIKEY_SCOPE_INGEST));
  assert_false(apikey_scopes_allow(APIKEY_SCOPE_READ | APIKEY_SCOPE_INGEST, 0));
}

static void test_accounts(void **state) {
  (void)state;
  struct apikey_record r;
  memset(&r, 0, sizeof r);
  assert_true(apikey_account_allowed(&r, "any"));
  assert_true(apikey_account_allowed(&r, NULL));
  assert_true(apikey_add_account(&r, "a"));
  assert_true(apikey_add_account(&r, "b"));
  assert_true(apikey_add_account(&r, "a")); /* a duplicate is kept once */
  assert_int_equal(r.naccounts, 2);
  assert_true(apikey_account_allowed(&r, "b"));
  assert_false(apikey_account_allowed(&r, "c"));
  assert_false(apikey_account_allowed(&r, NULL));
  char text[APIKEY_ACCOUNTS_TEXT_MAX];
  apikey_accounts_join(&r, text);
  assert_string_equal(text, "a\nb");
  struct apikey_record back;
  memset(&back, 0, sizeof back);
  assert_true(apikey_accounts_split(&back, text));
  assert_int_equal(back.naccounts, 2);
  assert_string_equal(back.accounts[1], "b");
  assert_true(apikey_accounts_split(&back, ""));
  assert_int_equal(back.naccounts, 0);
  char name[16];
  for (int i = 2; i < APIKEY_ACCOUNTS_MAX; i++) {
    snprintf(name, sizeof name, "x%d", i);
    assert_true(apikey_add_account(&r, name));
  }
  assert_false(apikey_add_account(&r, "one-too-many"));
}

static void test_text_problem(void **state) {
  (void)state;
  assert_null(apikey_text_problem("ok name", 16));
  assert_non_null(apikey_text_problem("", 16));
  assert_non_null(apikey_text_problem("a\nb", 16));
  assert_non_null(apikey_text_problem("\xff", 16));
  assert_non_null(apikey_text_problem("toolongtoolongtoolong", 16));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_good), cmocka_unit_test(test_parse_bad),
      cmocka_unit_test(test_id_valid),   cmocka_unit_test(test_scopes),
      cmocka_unit_test(test_accounts),   cmocka_unit_test(test_text_problem),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
