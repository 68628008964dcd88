/* Unit tests for outbound/'s rules: the Standard Webhooks signature (the specification's reference
 * vector), retry waits with their jitter bounds, Retry-After in every form a receiver may send,
 * and the SSRF rule (the address table with IPv6 and embedded IPv4 forms, and URLs). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "outbound/outbound.h"

/* ---- signing ---- */

/* The reference vector of the Standard Webhooks specification (its libraries' tests). */
static void test_sign_reference_vector(void **state) {
  (void)state;
  const char *body = "{\"test\": 2432232314}";
  char out[128];
  assert_true(outbound_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                            "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body), out,
                            sizeof out));
  assert_string_equal(out, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  /* the whsec_ prefix is optional, as receivers' libraries accept it */
  assert_true(outbound_sign("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                            1614265330, body, strlen(body), out, sizeof out));
  assert_string_equal(out, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

static void test_sign_depends_on_every_part(void **state) {
  (void)state;
  const char *secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const char *body = "{\"test\": 2432232314}";
  char ref[128], out[128];
  assert_true(outbound_sign(secret, "msg_1", 1614265330, body, strlen(body), ref, sizeof ref));
  assert_true(outbound_sign(secret, "msg_2", 1614265330, body, strlen(body), out, sizeof out));
  assert_string_not_equal(ref, out);
  assert_true(outbound_sign(secret, "msg_1", 1614265331, body, strlen(body), out, sizeof out));
  assert_string_not_equal(ref, out);
  assert_true(outbound_sign(secret, "msg_1", 1614265330, body, strlen(body) - 1, out, sizeof out));
  assert_string_not_equal(ref, out);
  assert_true(outbound_sign("whsec_c2Vjb25kIGtleSBmb3Igcm90YXRpb24=", "msg_1", 1614265330, body,
                            strlen(body), out, sizeof out));
  assert_string_not_equal(ref, out);
  /* an empty body signs too */
  assert_true(outbound_sign(secret, "msg_1", 0, "", 0, out, sizeof out));
  assert_int_equal(strlen(out), 47);
}

static void test_sign_refuses_malformed_secrets(void **state) {
  (void)state;
  char out[128];
  assert_false(outbound_sign("whsec_", "id", 1, "x", 1, out, sizeof out));
  assert_false(outbound_sign("whsec_not base64!", "id", 1, "x", 1, out, sizeof out));
  assert_false(outbound_sign("whsec_abc", "id", 1, "x", 1, out, sizeof out)); /* no padding */
  assert_false(outbound_sign(NULL, "id", 1, "x", 1, out, sizeof out));
  /* too small an output */
  assert_false(outbound_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "id", 1, "x", 1, out, 20));
}

/* ---- retries ---- */

static void test_retry_delay_follows_the_schedule_with_jitter(void **state) {
  (void)state;
  const long schedule[] = {0, 5, 300, 1800, 7200, 18000, 36000, 36000};
  size_t n = sizeof schedule / sizeof schedule[0];
  /* after attempt 1 fails, wait schedule[1]; rnd 0: exactly; rnd near 1: up to 10% more */
  assert_int_equal(outbound_retry_delay_us(schedule, n, 1, 0.0), 5000000);
  int64_t hi = outbound_retry_delay_us(schedule, n, 1, 0.999999);
  assert_true(hi >= 5000000 && hi <= 5500000);
  assert_true(hi > 5490000);
  assert_int_equal(outbound_retry_delay_us(schedule, n, 2, 0.5), 300000000 + 15000000);
  for (int a = 1; a < (int)n; a++)
    for (double r = 0; r < 1; r += 0.125) {
      int64_t d = outbound_retry_delay_us(schedule, n, a, r);
      int64_t base = (int64_t)schedule[a] * 1000000;
      assert_true(d >= base);
      assert_true(d <= base + base / 10);
    }
  /* the first wait (before attempt 1) is "immediately", jitter or not */
  assert_int_equal(outbound_retry_delay_us(schedule, n, 0, 0.7), 0);
  /* exhausted: after the last attempt (number n) nothing more */
  assert_int_equal(outbound_retry_delay_us(schedule, n, (int)n, 0.0), -1);
  assert_int_equal(outbound_retry_delay_us(schedule, n, 100, 0.0), -1);
  assert_int_equal(outbound_retry_delay_us(schedule, n, -1, 0.0), -1);
  assert_int_equal(outbound_retry_delay_us(NULL, 0, 1, 0.0), -1);
  /* a random source out of range never leaves the bounds */
  assert_int_equal(outbound_retry_delay_us(schedule, n, 1, -3.0), 5000000);
  int64_t over = outbound_retry_delay_us(schedule, n, 1, 7.0);
  assert_true(over >= 5000000 && over < 5500000);
  /* the largest wait the configuration allows */
  const long big[] = {0, 604800};
  int64_t w = outbound_retry_delay_us(big, 2, 1, 0.999999);
  assert_true(w >= 604800LL * 1000000 && w < 604800LL * 1100000);
}

/* ---- Retry-After ---- */

#define NOW 1700000000LL /* 2023-11-14T22:13:20Z */

static void test_retry_after_seconds(void **state) {
  (void)state;
  assert_int_equal(outbound_retry_after("120", NOW, 36000), 120);
  assert_int_equal(outbound_retry_after("0", NOW, 36000), 0);
  assert_int_equal(outbound_retry_after(" 7 ", NOW, 36000), 7);
  assert_int_equal(outbound_retry_after("007", NOW, 36000), 7);
  /* huge: capped, never overflowing */
  assert_int_equal(outbound_retry_after("99999999999999999999999999999", NOW, 36000), 36000);
  assert_int_equal(outbound_retry_after("36001", NOW, 36000), 36000);
  assert_int_equal(outbound_retry_after("5", NOW, 0), 0);
}

static void test_retry_after_http_dates(void **state) {
  (void)state;
  /* IMF-fixdate 90 s ahead of NOW */
  assert_int_equal(outbound_retry_after("Tue, 14 Nov 2023 22:14:50 GMT", NOW, 36000), 90);
  /* the two obsolete forms recipients must accept */
  assert_int_equal(outbound_retry_after("Tuesday, 14-Nov-23 22:14:50 GMT", NOW, 36000), 90);
  assert_int_equal(outbound_retry_after("Tue Nov 14 22:14:50 2023", NOW, 36000), 90);
  assert_int_equal(outbound_retry_after("Wed Nov  1 00:00:00 2023", NOW + 0, 36000), 0);
  /* the classic example, in the past: now */
  assert_int_equal(outbound_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", NOW, 36000), 0);
  /* far ahead: capped */
  assert_int_equal(outbound_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", NOW, 36000), 36000);
  assert_int_equal(outbound_retry_after("Wed, 15 Nov 2023 22:13:20 GMT", NOW, 36000), 36000);
  assert_int_equal(outbound_retry_after("Wed, 15 Nov 2023 08:13:20 GMT", NOW, 86400), 36000);
}

static void test_retry_after_garbage_and_negative(void **state) {
  (void)state;
  const char *bad[] = {
      "",
      "   ",
      "-5",
      "-0",
      "+5",
      "1.5",
      "5s",
      "0x10",
      "soon",
      "Tue, 14 Nov 2023 22:14:50 UTC",   /* not GMT */
      "Tue, 31 Nov 2023 22:14:50 GMT",   /* no 31st of November */
      "Tue, 29 Feb 2023 22:14:50 GMT",   /* not a leap year */
      "Tue, 14 Nov 2023 24:00:00 GMT",   /* no hour 24 */
      "Tue, 14 Foo 2023 22:14:50 GMT",   /* no such month */
      "Xyz, 14 Nov 2023 22:14:50 GMT",   /* no such day */
      "Tue, 14 Nov 2023 22:14:50 GMT x", /* trailing text */
      "Tue,14 Nov 2023 22:14:50 GMT",
      "2023-11-14T22:14:50Z", /* RFC 3339 is not an HTTP date */
      "Tuesday, 14-Nov-2023 22:14:50 GMT",
      "Tue Nov 14 22:14:50 23",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (outbound_retry_after(bad[i], NOW, 36000) != -1) fail_msg("accepted: '%s'", bad[i]);
  }
  assert_int_equal(outbound_retry_after(NULL, NOW, 36000), -1);
  /* a leap day that exists */
  assert_int_equal(outbound_retry_after("Thu, 29 Feb 2024 00:00:00 GMT", NOW, 1000000000),
                   1709164800LL - NOW);
}

/* ---- SSRF ---- */

static bool v4_private(const char *text) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  if (inet_pton(AF_INET, text, &a.sin_addr) != 1) fail_msg("bad test address %s", text);
  return outbound_addr_private((const struct sockaddr *)&a);
}

static bool v6_private(const char *text) {
  struct sockaddr_in6 a;
  memset(&a, 0, sizeof a);
  a.sin6_family = AF_INET6;
  if (inet_pton(AF_INET6, text, &a.sin6_addr) != 1) fail_msg("bad test address %s", text);
  return outbound_addr_private((const struct sockaddr *)&a);
}

static void test_private_ipv4_table(void **state) {
  (void)state;
  const char *refused[] = {
      "0.0.0.0",         "0.255.255.255",   "10.0.0.1",    "10.255.255.255",  "100.64.0.1",
      "100.127.255.254", "127.0.0.1",       "127.1.2.3",   "169.254.169.254", "172.16.0.1",
      "172.31.255.255",  "192.0.0.8",       "192.168.1.1", "198.18.0.1",      "198.19.255.255",
      "224.0.0.1",       "239.255.255.250", "240.0.0.1",   "255.255.255.255",
  };
  const char *allowed[] = {
      "1.1.1.1",        "8.8.8.8",         "9.255.255.255",   "11.0.0.1",        "100.63.255.255",
      "100.128.0.1",    "126.255.255.255", "128.0.0.1",       "169.253.255.255", "169.255.0.1",
      "172.15.255.255", "172.32.0.1",      "192.0.1.1",       "192.167.255.255", "192.169.0.1",
      "198.17.255.255", "198.20.0.1",      "223.255.255.255", "93.184.216.34",
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
    if (!v4_private(refused[i])) fail_msg("%s should be refused", refused[i]);
  for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
    if (v4_private(allowed[i])) fail_msg("%s should be allowed", allowed[i]);
}

static void test_private_ipv6_table_and_mapped_forms(void **state) {
  (void)state;
  const char *refused[] = {
      "::",
      "::1",
      "fc00::1",
      "fd12:3456:789a::1",
      "fe80::1",
      "febf:ffff::1",
      "ff02::1",
      "ff05::1:3",
      /* IPv4-mapped forms of private addresses */
      "::ffff:127.0.0.1",
      "::ffff:10.1.2.3",
      "::ffff:169.254.169.254",
      "::ffff:192.168.0.1",
      "::ffff:0.0.0.0",
      /* NAT64 of private ones */
      "64:ff9b::127.0.0.1",
      "64:ff9b::a9fe:a9fe", /* 169.254.169.254 */
      /* 6to4 of private ones */
      "2002:7f00:1::1",   /* 127.0.0.1 */
      "2002:c0a8:101::1", /* 192.168.1.1 */
      "2002:a00:1::",     /* 10.0.0.1 */
      /* the deprecated IPv4-compatible form */
      "::127.0.0.1",
      "::10.0.0.1",
      /* IPv4-translated (SIIT, ::ffff:0:0/96) of private ones */
      "::ffff:0:127.0.0.1",
      "::ffff:0:a00:1", /* 10.0.0.1 */
      /* local-use NAT64 (RFC 8215): behind a site's NAT64 it reaches private IPv4 space */
      "64:ff9b:1::a00:1",
      "64:ff9b:1:ffff::808:808",
      /* Teredo (2001::/32) carries IPv4 addresses: refused whole */
      "2001::1",
      "2001:0:4136:e378:8000:63bf:3fff:fdd2",
      /* the discard prefix 100::/64 */
      "100::",
      "100::1",
  };
  const char *allowed[] = {
      "2001:4860:4860::8888",
      "2606:4700:4700::1111",
      "::ffff:8.8.8.8",
      "::ffff:93.184.216.34",
      "64:ff9b::808:808", /* 8.8.8.8 */
      "2002:808:808::1",  /* 8.8.8.8 */
      "2a00:1450:4001::1",
      "fbff::1",          /* just below fc00::/7 */
      "fe00::1",          /* between fc00::/7 and fe80::/10 */
      "::ffff:0:808:808", /* IPv4-translated 8.8.8.8 */
      "64:ff9b:2::1",     /* just past 64:ff9b:1::/48 */
      "2001:1::1",        /* just past Teredo's /32 */
      "100:0:0:1::1",     /* just past 100::/64 */
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
    if (!v6_private(refused[i])) fail_msg("%s should be refused", refused[i]);
  for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
    if (v6_private(allowed[i])) fail_msg("%s should be allowed", allowed[i]);
  /* not an internet address at all */
  struct sockaddr other = {.sa_family = AF_UNIX};
  assert_true(outbound_addr_private(&other));
  assert_true(outbound_addr_private(NULL));
}

static void test_url_allowed_on_literals_and_localhost(void **state) {
  (void)state;
  char why[256];
  const char *refused[] = {
      "http://127.0.0.1:8080/hook",
      "https://10.0.0.5/hook",
      "http://169.254.169.254/latest/meta-data/",
      "http://[::1]:9000/",
      "http://[fe80::1]/",
      "http://[::ffff:127.0.0.1]/",
      "http://localhost:8000/hook",
      "http://LOCALHOST/hook",
      "http://0.0.0.0/",
      "http://2130706433/", /* 127.0.0.1 as one number */
      "http://0x7f.1/",     /* and in hex */
  };
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    if (outbound_url_allowed(refused[i], false, why, sizeof why))
      fail_msg("%s should be refused", refused[i]);
    assert_true(strlen(why) > 0);
    /* unless private networks are allowed */
    if (!outbound_url_allowed(refused[i], true, why, sizeof why))
      fail_msg("%s should be allowed with private networks (%s)", refused[i], why);
  }
  assert_false(outbound_url_allowed("http://localhost/", false, why, sizeof why));
  assert_non_null(strstr(why, "localhost"));
  /* public literals need no DNS */
  assert_true(outbound_url_allowed("https://93.184.216.34/hook", false, why, sizeof why));
  assert_true(outbound_url_allowed("http://[2606:4700:4700::1111]:8443/x", false, why, sizeof why));
  /* only http(s), whatever is allowed */
  const char *schemes[] = {"ftp://93.184.216.34/", "file:///etc/passwd", "gopher://1.1.1.1/",
                           "not a url", ""};
  for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
    if (outbound_url_allowed(schemes[i], true, why, sizeof why))
      fail_msg("%s should be refused", schemes[i]);
    assert_true(strlen(why) > 0);
  }
  assert_false(outbound_url_allowed(NULL, true, why, sizeof why));
  /* a name that does not resolve now is accepted: each delivery checks the address it
   * connects to (a machine without DNS, a name published later) */
  assert_true(outbound_url_allowed("http://no-such-host.invalid/", false, why, sizeof why));
  /* a host name too long to look up is refused */
  char longhost[400] = "http://";
  memset(longhost + 7, 'a', 300);
  strcpy(longhost + 307, ".example/");
  assert_false(outbound_url_allowed(longhost, false, why, sizeof why));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sign_reference_vector),
      cmocka_unit_test(test_sign_depends_on_every_part),
      cmocka_unit_test(test_sign_refuses_malformed_secrets),
      cmocka_unit_test(test_retry_delay_follows_the_schedule_with_jitter),
      cmocka_unit_test(test_retry_after_seconds),
      cmocka_unit_test(test_retry_after_http_dates),
      cmocka_unit_test(test_retry_after_garbage_and_negative),
      cmocka_unit_test(test_private_ipv4_table),
      cmocka_unit_test(test_private_ipv6_table_and_mapped_forms),
      cmocka_unit_test(test_url_allowed_on_literals_and_localhost),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
