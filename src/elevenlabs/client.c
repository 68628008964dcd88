/* The libcurl side of the ElevenLabs client: one GET with every limit set. */
#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/version.h"
#include "elevenlabs/elevenlabs.h"

bool el_api_url_ok(const char *url, char *err, size_t errlen) {
  if (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0) return true;
  snprintf(err, errlen, "ELEVENLABS_API_URL must start with https:// (or http://)");
  return false;
}

bool el_api_global_init(void) { return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }

void el_api_global_cleanup(void) { curl_global_cleanup(); }

struct sink {
  char *buf;
  size_t len, cap;
  bool too_big;
};

static size_t on_data(char *data, size_t size, size_t n, void *cls) {
  struct sink *s = cls;
  size_t add = size * n;
  if (add > (size_t)EL_API_MAX_BODY - s->len) {
    s->too_big = true;
    return 0; /* aborts the transfer */
  }
  if (s->len + add + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 16384;
    while (cap < s->len + add + 1) cap *= 2;
    char *p = realloc(s->buf, cap);
    if (!p) return 0;
    s->buf = p;
    s->cap = cap;
  }
  memcpy(s->buf + s->len, data, add);
  s->len += add;
  s->buf[s->len] = '\0';
  return add;
}

/* Called about once a second and on every chunk: a set stop flag ends the transfer. */
static int on_progress(void *cls, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow) {
  (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
  const atomic_bool *stop = cls;
  return stop && atomic_load(stop) ? 1 : 0;
}

/* True when s holds no byte a header line cannot carry (CR/LF would inject headers). */
static bool header_safe(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f) return false;
  return true;
}

char *el_api_escape(const char *s) {
  char *e = curl_easy_escape(NULL, s, 0);
  if (!e) return NULL;
  char *out = strdup(e); /* the caller frees with free(), not curl_free() */
  curl_free(e);
  return out;
}

void el_api_response_free(struct el_api_response *r) {
  free(r->body);
  r->body = NULL;
  r->body_len = 0;
}

void el_api_close(struct el_api *api) {
  if (api->curl) curl_easy_cleanup(api->curl);
  api->curl = NULL;
}

enum el_api_result el_api_get(struct el_api *api, const char *path, struct el_api_response *out) {
  *out = (struct el_api_response){.retry_after = -1};
  if (!header_safe(api->key)) {
    snprintf(out->error, sizeof out->error, "ELEVENLABS_API_KEY holds a control character");
    return EL_API_FAILED;
  }
  size_t blen = strlen(api->base_url);
  while (blen > 0 && api->base_url[blen - 1] == '/') blen--;
  size_t ulen = blen + strlen(path) + 1;
  size_t hlen = strlen("xi-api-key: ") + strlen(api->key) + 1;
  char *url = malloc(ulen), *hdr = malloc(hlen);
  if (!url || !hdr) {
    free(url);
    free(hdr);
    snprintf(out->error, sizeof out->error, "out of memory");
    return EL_API_FAILED;
  }
  snprintf(url, ulen, "%.*s%s", (int)blen, api->base_url, path);
  snprintf(hdr, hlen, "xi-api-key: %s", api->key);

  if (!api->curl) api->curl = curl_easy_init();
  CURL *c = api->curl;
  struct curl_slist *headers = NULL, *h1 = NULL, *h2 = NULL;
  h1 = curl_slist_append(NULL, hdr);
  if (h1) h2 = curl_slist_append(h1, "Accept: application/json");
  headers = h2 ? h2 : h1;
  if (!c || !h2) {
    curl_slist_free_all(headers);
    free(url);
    free(hdr);
    snprintf(out->error, sizeof out->error, "out of memory");
    return EL_API_FAILED;
  }
  curl_easy_reset(c); /* keeps the open connection, clears every option */
  struct sink sink = {0};
  char errbuf[CURL_ERROR_SIZE] = "";
  long timeout = api->timeout_ms > 0 ? api->timeout_ms : EL_API_TIMEOUT_MS;
  long connect = timeout < EL_API_CONNECT_TIMEOUT_MS ? timeout : EL_API_CONNECT_TIMEOUT_MS;
  bool set =
      curl_easy_setopt(c, CURLOPT_URL, url) == CURLE_OK &&
      /* Only http(s), also after a redirect; and redirects are not followed at all: the
       * key must never travel to another host. */
      curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_USERAGENT, "gensendrep/" GSR_VERSION) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "") == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, connect) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)EL_API_MAX_BODY) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)api->stop) == CURLE_OK &&
      curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf) == CURLE_OK;
  enum el_api_result res = EL_API_OK;
  if (!set) {
    snprintf(out->error, sizeof out->error, "libcurl refused an option (ELEVENLABS_API_URL?)");
    res = EL_API_FAILED;
  } else {
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
      curl_off_t ra = -1;
      if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra >= 0)
        out->retry_after = ra > 86400 ? 86400 : (long)ra;
      else
        out->retry_after = -1;
      if (!sink.buf) sink.buf = calloc(1, 1);
      if (!sink.buf) {
        snprintf(out->error, sizeof out->error, "out of memory");
        res = EL_API_FAILED;
      }
    } else if (rc == CURLE_ABORTED_BY_CALLBACK) {
      snprintf(out->error, sizeof out->error, "stopped");
      res = EL_API_STOPPED;
    } else if (sink.too_big || rc == CURLE_FILESIZE_EXCEEDED) {
      snprintf(out->error, sizeof out->error, "the answer is larger than %ld bytes",
               EL_API_MAX_BODY);
      res = EL_API_TOO_BIG;
    } else if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL ||
               rc == CURLE_OUT_OF_MEMORY || rc == CURLE_WRITE_ERROR) {
      snprintf(out->error, sizeof out->error, "%s", *errbuf ? errbuf : curl_easy_strerror(rc));
      res = EL_API_FAILED;
    } else {
      snprintf(out->error, sizeof out->error, "%s", *errbuf ? errbuf : curl_easy_strerror(rc));
      res = EL_API_UNREACHABLE;
    }
  }
  /* The handle keeps pointers to these until the next reset: drop them now. */
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
  curl_slist_free_all(headers);
  explicit_bzero(hdr, hlen);
  free(hdr);
  free(url);
  if (res == EL_API_OK) {
    out->body = sink.buf;
    out->body_len = sink.len;
  } else {
    free(sink.buf);
  }
  return res;
}
