/* The dispatcher's rules that need no thread (outbound.h): Standard Webhooks signing, the retry
 * schedule with jitter, Retry-After, and the SSRF rule on addresses and subscription URLs. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/base64.h"
#include "core/timeutil.h"
#include "outbound/outbound.h"

/* ---- Standard Webhooks signatures ---- */

static EVP_MAC *hmac_alg; /* fetched once per process (OpenSSL 3 looks it up otherwise) */
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void hmac_fetch(void) { hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL); }

bool outbound_sign(const char *secret, const char *id, int64_t timestamp, const char *body,
                   size_t len, char *out, size_t outlen) {
  /* "v1," + 44 characters of base64 + NUL */
  if (!secret || !id || !out || outlen < 48 || (!body && len)) return false;
  if (strncmp(secret, "whsec_", 6) == 0) secret += 6;
  unsigned char key[256];
  size_t klen = 0;
  if (!base64_decode(secret, strlen(secret), false, key, sizeof key, &klen) || klen == 0 ||
      klen > sizeof key) {
    OPENSSL_cleanse(key, sizeof key);
    return false;
  }
  pthread_once(&hmac_once, hmac_fetch);
  EVP_MAC_CTX *ctx = hmac_alg ? EVP_MAC_CTX_new(hmac_alg) : NULL;
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_end()};
  char ts[32];
  int tn = snprintf(ts, sizeof ts, ".%lld.", (long long)timestamp);
  unsigned char mac[32];
  size_t mlen = 0;
  bool ok = ctx && EVP_MAC_init(ctx, key, klen, params) == 1 &&
            EVP_MAC_update(ctx, (const unsigned char *)id, strlen(id)) == 1 &&
            EVP_MAC_update(ctx, (const unsigned char *)ts, (size_t)tn) == 1 &&
            (len == 0 || EVP_MAC_update(ctx, (const unsigned char *)body, len) == 1) &&
            EVP_MAC_final(ctx, mac, &mlen, sizeof mac) == 1 && mlen == sizeof mac;
  EVP_MAC_CTX_free(ctx);
  OPENSSL_cleanse(key, sizeof key);
  if (!ok) return false;
  memcpy(out, "v1,", 3);
  base64_encode(mac, sizeof mac, out + 3);
  return true;
}

/* ---- retries ---- */

int64_t outbound_retry_delay_us(const long *schedule, size_t count, int attempt, double rnd) {
  if (!schedule || attempt < 0 || (size_t)attempt >= count) return -1;
  if (!(rnd >= 0.0)) rnd = 0.0; /* NaN too */
  if (rnd >= 1.0) rnd = 0.999999;
  long s = schedule[attempt] < 0 ? 0 : schedule[attempt];
  int64_t base = (int64_t)s * 1000000;
  return base + (int64_t)((double)base * 0.1 * rnd);
}

/* Retry-After (RFC 9110 10.2.3): delay-seconds (1*DIGIT) or an HTTP-date in any of its three
 * forms (IMF-fixdate, the obsolete RFC 850 and asctime forms that recipients must accept). */

static const char *const month_names[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const day_short[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const day_long[7] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                        "Friday", "Saturday", "Sunday"};

/* n digits at s into *v; false unless they all are digits. */
static bool digits(const char *s, int n, int *v) {
  int x = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    x = x * 10 + (s[i] - '0');
  }
  *v = x;
  return true;
}

static int month_parse(const char *s) {
  for (int m = 0; m < 12; m++)
    if (memcmp(s, month_names[m], 3) == 0) return m + 1;
  return 0;
}

/* "HH:MM:SS" */
static bool time_of_day(const char *s, int *h, int *mi, int *se) {
  return digits(s, 2, h) && s[2] == ':' && digits(s + 3, 2, mi) && s[5] == ':' &&
         digits(s + 6, 2, se) && *h < 24 && *mi < 60 && *se <= 60;
}

static bool date_valid(int y, int m, int d) {
  static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (y < 1 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1]) return false;
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return !(m == 2 && d == 29 && !leap);
}

/* An HTTP-date of len bytes at s as Unix seconds. now_s places a two-digit RFC 850 year. */
static bool http_date(const char *s, size_t len, int64_t now_s, int64_t *out) {
  int y = 0, m = 0, d = 0, h = 0, mi = 0, se = 0;
  const char *comma = memchr(s, ',', len);
  if (len == 29 && comma == s + 3) {
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
    bool day = false;
    for (int i = 0; i < 7; i++) day = day || memcmp(s, day_short[i], 3) == 0;
    if (!day || s[4] != ' ' || !digits(s + 5, 2, &d) || s[7] != ' ' || !(m = month_parse(s + 8)) ||
        s[11] != ' ' || !digits(s + 12, 4, &y) || s[16] != ' ' ||
        !time_of_day(s + 17, &h, &mi, &se) || memcmp(s + 25, " GMT", 4) != 0)
      return false;
  } else if (comma) {
    /* RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT" */
    size_t dn = (size_t)(comma - s);
    bool day = false;
    for (int i = 0; i < 7; i++)
      day = day || (strlen(day_long[i]) == dn && memcmp(s, day_long[i], dn) == 0);
    const char *p = comma + 1;
    if (!day || len - dn != 24) return false;
    int yy = 0;
    if (p[0] != ' ' || !digits(p + 1, 2, &d) || p[3] != '-' || !(m = month_parse(p + 4)) ||
        p[7] != '-' || !digits(p + 8, 2, &yy) || p[10] != ' ' ||
        !time_of_day(p + 11, &h, &mi, &se) || memcmp(p + 19, " GMT", 4) != 0)
      return false;
    /* RFC 9110: a year more than 50 years ahead is the most recent past one with those digits */
    int64_t now_year = 1970 + now_s / 31556952;
    y = (int)(now_year / 100 * 100) + yy;
    if (y > now_year + 50) y -= 100;
  } else if (len == 24) {
    /* asctime: "Sun Nov  6 08:49:37 1994" */
    bool day = false;
    for (int i = 0; i < 7; i++) day = day || memcmp(s, day_short[i], 3) == 0;
    char dd[2] = {s[8] == ' ' ? '0' : s[8], s[9]};
    if (!day || s[3] != ' ' || !(m = month_parse(s + 4)) || s[7] != ' ' || !digits(dd, 2, &d) ||
        s[10] != ' ' || !time_of_day(s + 11, &h, &mi, &se) || s[19] != ' ' ||
        !digits(s + 20, 4, &y))
      return false;
  } else {
    return false;
  }
  if (!date_valid(y, m, d)) return false;
  *out = time_days_from_civil(y, (unsigned)m, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se;
  return true;
}

int64_t outbound_retry_after(const char *value, int64_t now_s, int64_t cap) {
  if (!value) return -1;
  if (cap < 0) cap = 0;
  while (*value == ' ' || *value == '\t') value++;
  size_t len = strlen(value);
  while (len && (value[len - 1] == ' ' || value[len - 1] == '\t')) len--;
  if (len == 0) return -1;
  size_t nd = 0;
  while (nd < len && value[nd] >= '0' && value[nd] <= '9') nd++;
  if (nd == len) {
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
      v = v * 10 + (value[i] - '0');
      if (v > cap) return cap; /* saturates long before it could overflow */
    }
    return v;
  }
  int64_t t;
  if (!http_date(value, len, now_s, &t)) return -1;
  if (t <= now_s) return 0;
  return t - now_s > cap ? cap : t - now_s;
}

/* ---- SSRF ---- */

/* a in host order. */
static bool v4_private(uint32_t a) {
  return (a >> 24) == 0 ||                   /* 0.0.0.0/8 "this network" */
         (a >> 24) == 10 ||                  /* 10/8 */
         (a & 0xFFC00000u) == 0x64400000u || /* 100.64/10 CGNAT */
         (a >> 24) == 127 ||                 /* loopback */
         (a >> 16) == 0xA9FEu ||             /* 169.254/16 link-local (cloud metadata) */
         (a & 0xFFF00000u) == 0xAC100000u || /* 172.16/12 */
         (a & 0xFFFFFF00u) == 0xC0000000u || /* 192.0.0/24 IETF protocol assignments */
         (a >> 16) == 0xC0A8u ||             /* 192.168/16 */
         (a & 0xFFFE0000u) == 0xC6120000u || /* 198.18/15 benchmarking */
         (a >> 28) == 0xEu ||                /* 224/4 multicast */
         (a >> 28) == 0xFu;                  /* 240/4 reserved, 255.255.255.255 broadcast */
}

static uint32_t v4_at(const unsigned char *b) {
  return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static bool v6_private(const unsigned char *b) {
  static const unsigned char zero[12] = {0};
  static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
  /* ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d: all judged as the IPv4 at the end
   * (:: is 0.0.0.0, ::1 is 0.0.0.1, both in 0/8) */
  if (memcmp(b, zero, 12) == 0) return true;
  static const unsigned char translated[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
  static const unsigned char nat64_local[6] = {0, 0x64, 0xff, 0x9b, 0, 0x01};
  static const unsigned char teredo[4] = {0x20, 0x01, 0, 0};
  static const unsigned char discard[8] = {0x01, 0, 0, 0, 0, 0, 0, 0};
  /* ::ffff:a.b.c.d mapped, 64:ff9b::a.b.c.d NAT64, ::ffff:0:a.b.c.d IPv4-translated (SIIT) */
  if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0 || memcmp(b, translated, 12) == 0)
    return v4_private(v4_at(b + 12));
  if (memcmp(b, nat64_local, 6) == 0) return true; /* 64:ff9b:1::/48 local-use NAT64 (RFC 8215) */
  if (memcmp(b, teredo, 4) == 0) return true;      /* 2001::/32 Teredo: tunnels to any IPv4 */
  if (memcmp(b, discard, 8) == 0) return true;     /* 100::/64 discard-only */
  if (b[0] == 0x20 && b[1] == 0x02) return v4_private(v4_at(b + 2)); /* 2002::/16 6to4 */
  if ((b[0] & 0xFE) == 0xFC) return true;                            /* fc00::/7 unique local */
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0x80) return true;            /* fe80::/10 link-local */
  if (b[0] == 0xFE && (b[1] & 0xC0) == 0xC0) return true;            /* fec0::/10 old site-local */
  if (b[0] == 0xFF) return true;                                     /* ff00::/8 multicast */
  return false;
}

bool outbound_addr_private(const struct sockaddr *addr) {
  if (!addr) return true;
  if (addr->sa_family == AF_INET) {
    struct sockaddr_in in;
    memcpy(&in, addr, sizeof in);
    return v4_private(ntohl(in.sin_addr.s_addr));
  }
  if (addr->sa_family == AF_INET6) {
    struct sockaddr_in6 in6;
    memcpy(&in6, addr, sizeof in6);
    return v6_private(in6.sin6_addr.s6_addr);
  }
  return true; /* anything else (a Unix socket ...) is never a public web address */
}

__attribute__((format(printf, 3, 4))) static void say(char *why, size_t whylen, const char *fmt,
                                                      ...) {
  if (!why || !whylen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, whylen, fmt, ap);
  va_end(ap);
}

bool outbound_url_allowed(const char *url, bool allow_private, char *why, size_t whylen) {
  if (why && whylen) *why = '\0';
  CURLU *u = url ? curl_url() : NULL;
  char *scheme = NULL, *host = NULL;
  bool parsed = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
                curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
                curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK && host && *host;
  bool ok = false;
  if (!parsed) {
    say(why, whylen, "%s", "the URL cannot be parsed");
  } else if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
    say(why, whylen, "%s", "the URL must start with http:// or https://");
  } else if (allow_private) {
    ok = true;
  } else {
    /* an IPv6 literal comes back in brackets */
    char name[256];
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
      host[n - 1] = '\0';
      memmove(host, host + 1, n - 1);
    }
    snprintf(name, sizeof name, "%s", host);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (strlen(host) >= sizeof name) {
      say(why, whylen, "%s", "the host name is too long");
    } else if (getaddrinfo(name, NULL, &hints, &res) != 0 || !res) {
      /* nothing to judge yet (a name not published yet, a resolver away, a machine without
       * DNS): accepted, since every delivery checks the address it connects to (the open-socket
       * callback), which is what keeps private addresses out */
      ok = true;
    } else {
      ok = true;
      for (struct addrinfo *ai = res; ai && ok; ai = ai->ai_next) {
        if (!outbound_addr_private(ai->ai_addr)) continue;
        char text[INET6_ADDRSTRLEN] = "?";
        if (ai->ai_family == AF_INET)
          inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr, text,
                    sizeof text);
        else if (ai->ai_family == AF_INET6)
          inet_ntop(AF_INET6, &((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr, text,
                    sizeof text);
        say(why, whylen,
            "the host %s resolves to %s, a loopback, private, link-local or other non-public "
            "address (DELIVERY_ALLOW_PRIVATE_NETWORKS=true allows it)",
            name, text);
        ok = false;
      }
      freeaddrinfo(res);
    }
  }
  curl_free(scheme);
  curl_free(host);
  curl_url_cleanup(u);
  return ok;
}
