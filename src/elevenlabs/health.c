/* The background ElevenLabs health check: one thread asks the API at start and then every
 * ELEVENLABS_HEALTH_INTERVAL_SECONDS; GET /api/v1/health only reads the last answer (an
 * atomic), so no request ever waits for ElevenLabs.
 *
 * The check is GET /v1/convai/conversations?page_size=1: it proves the key is accepted for the
 * very permission backfill needs (conversation history), costs one tiny page, and unlike
 * /v1/user works with a key restricted to Conversational AI. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/log.h"
#include "elevenlabs/elevenlabs.h"

#define EL_HEALTH_TIMEOUT_MS 10000L

struct el_health {
  const struct config *cfg;
  atomic_int connected; /* 0 or 1, read lock-free by health requests */
  atomic_bool stop;     /* also aborts a check in flight (the transfer's progress callback) */
  pthread_mutex_t mu;
  pthread_cond_t cv; /* monotonic clock: the interval, or stop */
  pthread_t thread;
};

/* One check; *why says what went wrong when it returns false. */
static bool check_once(struct el_api *api, char *why, size_t whylen) {
  struct el_api_response r;
  enum el_api_result res = el_api_get(api, "/v1/convai/conversations?page_size=1", &r);
  bool ok = false;
  switch (res) {
    case EL_API_OK:
      /* 429: the key was accepted and the API answers, it only asks us to slow down. */
      ok = (r.status >= 200 && r.status < 300) || r.status == 429;
      if (r.status == 401 || r.status == 403)
        snprintf(why, whylen, "ELEVENLABS_API_KEY was refused (%ld)", r.status);
      else if (!ok)
        snprintf(why, whylen, "the API answered HTTP %ld", r.status);
      break;
    case EL_API_UNREACHABLE:
    case EL_API_FAILED:
    case EL_API_TOO_BIG:
      snprintf(why, whylen, "%s", r.error);
      break;
    case EL_API_STOPPED:
      snprintf(why, whylen, "stopped");
      break;
  }
  el_api_response_free(&r);
  return ok;
}

static void *health_main(void *arg) {
  struct el_health *h = arg;
  struct el_api api = {.base_url = h->cfg->elevenlabs_api_url,
                       .key = h->cfg->elevenlabs_api_key,
                       .timeout_ms = EL_HEALTH_TIMEOUT_MS,
                       .stop = &h->stop};
  int last = -1; /* log the first result and every change, not every check */
  while (!atomic_load(&h->stop)) {
    char why[300] = "";
    bool ok = check_once(&api, why, sizeof why);
    if (atomic_load(&h->stop)) break;
    atomic_store(&h->connected, ok ? 1 : 0);
    if ((int)ok != last) {
      if (ok)
        log_msg(LOG_INFO, "ElevenLabs API: connected");
      else
        log_msg(LOG_WARNING, "ElevenLabs API: disconnected: %s", why);
      last = ok;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += h->cfg->elevenlabs_health_interval;
    pthread_mutex_lock(&h->mu);
    while (!atomic_load(&h->stop))
      if (pthread_cond_timedwait(&h->cv, &h->mu, &ts) != 0) break; /* ETIMEDOUT: check again */
    pthread_mutex_unlock(&h->mu);
  }
  el_api_close(&api);
  return NULL;
}

bool el_health_start(const struct config *cfg, struct el_health **out, char *err, size_t errlen) {
  *out = NULL;
  if (!cfg->elevenlabs_api_key || !*cfg->elevenlabs_api_key) return true;
  if (!el_api_url_ok(cfg->elevenlabs_api_url, err, errlen)) return false;
  struct el_health *h = calloc(1, sizeof *h);
  if (!h) {
    snprintf(err, errlen, "out of memory");
    return false;
  }
  h->cfg = cfg;
  atomic_init(&h->connected, 0);
  atomic_init(&h->stop, false);
  pthread_mutex_init(&h->mu, NULL);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cv, &attr);
  pthread_condattr_destroy(&attr);
  if (pthread_create(&h->thread, NULL, health_main, h) != 0) {
    snprintf(err, errlen, "cannot start the ElevenLabs health thread");
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
    free(h);
    return false;
  }
  *out = h;
  return true;
}

const char *el_health_state(const struct el_health *h) {
  if (!h) return "not_configured";
  return atomic_load(&((struct el_health *)h)->connected) ? "connected" : "disconnected";
}

void el_health_stop(struct el_health *h) {
  if (!h) return;
  pthread_mutex_lock(&h->mu);
  atomic_store(&h->stop, true);
  pthread_cond_broadcast(&h->cv);
  pthread_mutex_unlock(&h->mu);
  pthread_join(h->thread, NULL);
  pthread_cond_destroy(&h->cv);
  pthread_mutex_destroy(&h->mu);
  free(h);
}
