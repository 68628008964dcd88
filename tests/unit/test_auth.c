/* Unit tests for http/auth (Bearer keys) and the constant-time compare in ext/crypto. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ext/crypto.h"
#include "http/auth.h"

static char err[256];

/* Start-up once lost every key when this failed (auth_init copied the keys): every request
 * then answered 401 with no message. auth_init now reads the keys in place. */
static int fail_strdup;
char *strdup(const char *s) {
  if (fail_strdup) return NULL;
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p) memcpy(p, s, n);
  return p;
}

static void test_crypto_equal(void **state) {
  (void)state;
  assert_true(crypto_equal("abc", "abc", 3));
  assert_false(crypto_equal("abc", "abd", 3));
  assert_false(crypto_equal("abc", "xbc", 3));
  assert_true(crypto_equal("abc", "abd", 2)); /* only len bytes are compared */
  assert_true(crypto_equal("x", "y", 0));
  unsigned char a[32] = {0}, b[32] = {0};
  assert_true(crypto_equal(a, b, sizeof a));
  b[31] = 0x80;
  assert_false(crypto_equal(a, b, sizeof a));
  b[31] = 0;
  b[0] = 1;
  assert_false(crypto_equal(a, b, sizeof a));
}

static void test_crypto_sha256(void **state) {
  (void)state;
  /* SHA-256("abc"), FIPS 180-2 test vector */
  static const unsigned char expected[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                             0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                             0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                             0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  unsigned char d[32];
  crypto_sha256("abc", 3, d);
  assert_memory_equal(d, expected, 32);
}

static void test_crypto_random_hex(void **state) {
  (void)state;
  char a[65], b[65];
  assert_true(crypto_random_hex(a, sizeof a, 32));
  assert_true(crypto_random_hex(b, sizeof b, 32));
  assert_int_equal(strlen(a), 64);
  assert_int_equal(strspn(a, "0123456789abcdef"), 64);
  assert_string_not_equal(a, b);
  char small[8];
  assert_false(crypto_random_hex(small, sizeof small, 4)); /* needs 9 bytes */
}

static void test_init_counts_trimmed_nonempty_keys(void **state) {
  (void)state;
  struct auth a;
  assert_int_equal(auth_init(&a, "a,b , ,c", err, sizeof err), 3);
  assert_int_equal(a.nkeys, 3);
  assert_int_equal(auth_init(&a, "", err, sizeof err), 0);
  assert_int_equal(auth_init(&a, " , ,", err, sizeof err), 0);
  assert_int_equal(auth_init(&a, "only-one", err, sizeof err), 1);
}

static void test_check(void **state) {
  (void)state;
  struct auth a;
  assert_int_equal(auth_init(&a, "a,b , ,c", err, sizeof err), 3);
  assert_int_equal(auth_check(&a, "Bearer a"), 0);
  assert_int_equal(auth_check(&a, "bearer b"), 1);
  assert_int_equal(auth_check(&a, "BEARER b"), 1);
  assert_int_equal(auth_check(&a, "Bearer  c "), 2);
  assert_int_equal(auth_check(&a, "Bearer c\t"), 2);
  assert_int_equal(auth_check(&a, "Bearer d"), -1);
  assert_int_equal(auth_check(&a, "Basic a"), -1);
  assert_int_equal(auth_check(&a, "Bearer "), -1);
  assert_int_equal(auth_check(&a, "Bearer    "), -1);
  assert_int_equal(auth_check(&a, "Bearer"), -1);
  assert_int_equal(auth_check(&a, "Bearera"), -1);
  assert_int_equal(auth_check(&a, "a"), -1);
  assert_int_equal(auth_check(&a, ""), -1);
  assert_int_equal(auth_check(&a, NULL), -1);
  /* the empty item between the commas is not a key */
  assert_int_equal(auth_check(&a, "Bearer ,"), -1);
}

static void test_check_exact_key_only(void **state) {
  (void)state;
  struct auth a;
  const char *key = "sk_live_0123456789abcdef";
  assert_int_equal(auth_init(&a, key, err, sizeof err), 1);
  char hdr[128];
  snprintf(hdr, sizeof hdr, "Bearer %s", key);
  assert_int_equal(auth_check(&a, hdr), 0);
  /* every proper prefix is refused */
  for (size_t n = 0; n < strlen(key); n++) {
    snprintf(hdr, sizeof hdr, "Bearer %.*s", (int)n, key);
    assert_int_equal(auth_check(&a, hdr), -1);
  }
  snprintf(hdr, sizeof hdr, "Bearer %sX", key);
  assert_int_equal(auth_check(&a, hdr), -1);
  snprintf(hdr, sizeof hdr, "Bearer X%s", key);
  assert_int_equal(auth_check(&a, hdr), -1);
  /* case matters in the key, not in the scheme */
  assert_int_equal(auth_check(&a, "Bearer SK_LIVE_0123456789ABCDEF"), -1);
  assert_int_equal(auth_check(&a, "bEaReR sk_live_0123456789abcdef"), 0);
}

static void test_check_no_keys(void **state) {
  (void)state;
  struct auth a;
  assert_int_equal(auth_init(&a, "", err, sizeof err), 0);
  assert_int_equal(auth_check(&a, "Bearer "), -1);
  assert_int_equal(auth_check(&a, "Bearer anything"), -1);
}

static void test_rotation_keys_with_same_prefix(void **state) {
  (void)state;
  struct auth a;
  assert_int_equal(auth_init(&a, "key,key2,key23", err, sizeof err), 3);
  assert_int_equal(auth_check(&a, "Bearer key"), 0);
  assert_int_equal(auth_check(&a, "Bearer key2"), 1);
  assert_int_equal(auth_check(&a, "Bearer key23"), 2);
  assert_int_equal(auth_check(&a, "Bearer key234"), -1);
}

static void test_many_keys(void **state) {
  (void)state;
  char keys[AUTH_KEYS_MAX * 8 + 1] = "";
  size_t off = 0;
  for (int i = 0; i < AUTH_KEYS_MAX; i++)
    off += (size_t)snprintf(keys + off, sizeof keys - off, "%sk%d", i ? "," : "", i);
  struct auth a;
  assert_int_equal(auth_init(&a, keys, err, sizeof err), AUTH_KEYS_MAX);
  char hdr[32];
  snprintf(hdr, sizeof hdr, "Bearer k%d", AUTH_KEYS_MAX - 1);
  assert_int_equal(auth_check(&a, hdr), AUTH_KEYS_MAX - 1);
}

static void test_init_needs_no_memory(void **state) {
  (void)state;
  struct auth a;
  fail_strdup = 1;
  size_t n = auth_init(&a, "k1, k2", err, sizeof err);
  fail_strdup = 0;
  assert_int_equal(n, 2);
  assert_int_equal(auth_check(&a, "Bearer k2"), 1);
}

/* No usable key, or more keys than can be held, stops start-up with a message naming the
 * variable (once the 33rd key was dropped silently). */
static void test_init_fails_loudly(void **state) {
  (void)state;
  struct auth a;
  err[0] = '\0';
  assert_int_equal(auth_init(&a, " , ,", err, sizeof err), 0);
  assert_non_null(strstr(err, "API_SECRET_KEY"));
  char keys[(AUTH_KEYS_MAX + 1) * 8 + 1] = "";
  size_t off = 0;
  for (int i = 0; i <= AUTH_KEYS_MAX; i++)
    off += (size_t)snprintf(keys + off, sizeof keys - off, "%sk%d", i ? "," : "", i);
  err[0] = '\0';
  assert_int_equal(auth_init(&a, keys, err, sizeof err), 0);
  assert_non_null(strstr(err, "API_SECRET_KEY"));
  assert_null(strstr(err, "k3"));
  assert_int_equal(auth_check(&a, "Bearer k0"), -1);
}

/* A key's id is the same whatever its place in the list (rate-limit windows shared through
 * Redis are keyed by it), differs between keys, and is not the key nor its plain digest. */
static void test_key_id_follows_the_key_not_its_position(void **state) {
  (void)state;
  struct auth ab, ba;
  assert_int_equal(auth_init(&ab, "key-a,key-b", err, sizeof err), 2);
  assert_int_equal(auth_init(&ba, "key-b, key-a", err, sizeof err), 2);
  const char *a1 = auth_key_id(&ab, auth_check(&ab, "Bearer key-a"));
  const char *a2 = auth_key_id(&ba, auth_check(&ba, "Bearer key-a"));
  const char *b1 = auth_key_id(&ab, auth_check(&ab, "Bearer key-b"));
  const char *b2 = auth_key_id(&ba, auth_check(&ba, "Bearer key-b"));
  assert_string_equal(a1, a2);
  assert_string_equal(b1, b2);
  assert_string_not_equal(a1, b1);
  assert_int_equal(strlen(a1), AUTH_KEY_ID_LEN);
  assert_int_equal(strspn(a1, "0123456789abcdef"), AUTH_KEY_ID_LEN);
  assert_null(strstr(a1, "key-a"));
  unsigned char d[32];
  char plain[65];
  crypto_sha256("key-a", 5, d);
  for (int i = 0; i < 32; i++) snprintf(plain + 2 * i, 3, "%02x", d[i]);
  assert_null(strstr(plain, a1));
  assert_string_equal(auth_key_id(&ab, -1), "");
  assert_string_equal(auth_key_id(&ab, 2), "");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_needs_no_memory),
      cmocka_unit_test(test_init_fails_loudly),
      cmocka_unit_test(test_key_id_follows_the_key_not_its_position),
      cmocka_unit_test(test_crypto_equal),
      cmocka_unit_test(test_crypto_sha256),
      cmocka_unit_test(test_crypto_random_hex),
      cmocka_unit_test(test_init_counts_trimmed_nonempty_keys),
      cmocka_unit_test(test_check),
      cmocka_unit_test(test_check_exact_key_only),
      cmocka_unit_test(test_check_no_keys),
      cmocka_unit_test(test_rotation_keys_with_same_prefix),
      cmocka_unit_test(test_many_keys),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
