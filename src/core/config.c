/* Configuration table and .env reader. The environment wins over .env, which wins over the
 * defaults; every value is validated here, so the rest of the program trusts struct config. */
#include "core/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/dsn.h"
#include "core/log.h"

#define OFF(f) offsetof(struct config, f)

const struct config_var config_vars[] = {
    {"API_SECRET_KEY", CONFIG_SECRET, "", 0, 0, OFF(api_secret_key),
     "Comma-separated API keys accepted as 'Authorization: Bearer <key>' (several allow rotation). "
     "Required."},
    {"WEBHOOK_SECRET", CONFIG_SECRET, "", 0, 0, OFF(webhook_secret),
     "Standard Webhooks secrets (whsec_<base64>), comma-separated during a rotation: when set, "
     "POST /api/v1/webhook/conversation verifies webhook-id/webhook-timestamp/webhook-signature "
     "(the Bearer key is still required)."},
    {"WEBHOOK_SIGNATURE_REQUIRED", CONFIG_BOOL, "false", 0, 0, OFF(webhook_signature_required),
     "true: a seed webhook without a valid Standard Webhooks signature is refused (401); false: "
     "only a request that carries signature headers must carry a valid one."},
    {"ELEVENLABS_WEBHOOK_SECRET", CONFIG_SECRET, "", 0, 0, OFF(elevenlabs_webhook_secret),
     "ElevenLabs workspace webhook secrets (used whole, prefix included), comma-separated during "
     "a rotation; POST /api/v1/webhook/elevenlabs verifies ElevenLabs-Signature with them. "
     "Empty: that endpoint requires the Bearer key instead."},
    {"ELEVENLABS_WEBHOOK_TOLERANCE_SECONDS", CONFIG_INT, "1800", 1, 86400,
     OFF(elevenlabs_webhook_tolerance),
     "Oldest accepted ElevenLabs-Signature timestamp, in seconds before now (at most 300 s "
     "ahead is accepted)."},
    {"RATE_LIMIT_ELEVENLABS_PER_MINUTE", CONFIG_INT, "10000", 1, 100000000,
     OFF(rate_limit_elevenlabs),
     "Validly signed ElevenLabs webhooks allowed per secret per minute (instead of the per-IP "
     "webhook limit)."},
    {"ELEVENLABS_EMAIL_VARIABLE", CONFIG_STRING, "user_email", 0, 0, OFF(elevenlabs_email_variable),
     "The dynamic variable of an ElevenLabs conversation that holds the emailId."},
    {"ELEVENLABS_ACCOUNT_VARIABLE", CONFIG_STRING, "account_id", 0, 0,
     OFF(elevenlabs_account_variable),
     "The dynamic variable of an ElevenLabs conversation that holds the accountId."},
    {"ELEVENLABS_AUDIO_MAX_BYTES", CONFIG_INT, "104857600", 1024, 1073741824,
     OFF(elevenlabs_audio_max_bytes),
     "Largest body accepted on POST /api/v1/webhook/elevenlabs (post_call_audio events carry "
     "the whole call as base64)."},
    {"ELEVENLABS_STORE_AUDIO", CONFIG_BOOL, "true", 0, 0, OFF(elevenlabs_store_audio),
     "false: post_call_audio events are acknowledged and kept in the event history without "
     "their audio."},
    {"ELEVENLABS_API_KEY", CONFIG_SECRET, "", 0, 0, OFF(elevenlabs_api_key),
     "ElevenLabs API key (xi-api-key) for the health check and `gensendrep elevenlabs "
     "backfill`; empty: the ElevenLabs API is not used."},
    {"ELEVENLABS_API_URL", CONFIG_STRING, "https://api.elevenlabs.io", 0, 0,
     OFF(elevenlabs_api_url), "Base URL of the ElevenLabs REST API."},
    {"ELEVENLABS_HEALTH_INTERVAL_SECONDS", CONFIG_INT, "60", 1, 86400,
     OFF(elevenlabs_health_interval),
     "Seconds between background checks of the ElevenLabs API (with ELEVENLABS_API_KEY)."},
    {"HOST", CONFIG_STRING, "0.0.0.0", 0, 0, OFF(host),
     "Address to listen on (IPv4 or IPv6 literal)."},
    {"PORT", CONFIG_INT, "8000", 1, 65535, OFF(port), "TCP port to listen on."},
    {"DATABASE_URL", CONFIG_STRING, "sqlite:data/gensendrep.db", 0, 0, OFF(database_url),
     "Storage: sqlite:PATH (relative to the working directory), sqlite:///absolute/path, or "
     "postgresql://user:password@host:port/dbname."},
    {"DATABASE_CONNECT_TIMEOUT_SECONDS", CONFIG_INT, "30", 0, 3600, OFF(database_connect_timeout),
     "Seconds gensendrep keeps trying to reach PostgreSQL at start-up (each attempt logged) "
     "before it gives up and exits; 0: one attempt."},
    {"REDIS_URL", CONFIG_STRING, "", 0, 0, OFF(redis_url),
     "redis://[[user]:password@]host[:port][/db]: rate limits shared by every instance using it; "
     "empty: each instance limits alone."},
    {"CORS_ORIGINS", CONFIG_STRING, "", 0, 0, OFF(cors_origins),
     "Comma-separated browser origins allowed by CORS; * allows any; empty allows none."},
    {"LOG_LEVEL", CONFIG_STRING, "info", 0, 0, OFF(log_level),
     "debug, info, warning or error; request lines are logged at info."},
    {"MAX_BODY_BYTES", CONFIG_INT, "5242880", 1024, 268435456, OFF(max_body_bytes),
     "Largest accepted request body in bytes; larger bodies get 413."},
    {"RATE_LIMIT_WEBHOOK_PER_MINUTE", CONFIG_INT, "100", 1, 100000000, OFF(rate_limit_webhook),
     "Webhook requests allowed per client IP per minute (60 one-second buckets)."},
    {"RATE_LIMIT_API_PER_MINUTE", CONFIG_INT, "1000", 1, 100000000, OFF(rate_limit_api),
     "Other /api/v1 requests allowed per API key per minute (60 one-second buckets)."},
    {"TRUSTED_PROXIES", CONFIG_STRING, "", 0, 0, OFF(trusted_proxies),
     "Comma-separated proxy IPs whose X-Forwarded-For names the client; others are ignored."},
    {"MAX_CONNECTIONS", CONFIG_INT, "1024", 1, 100000, OFF(max_connections),
     "Most simultaneous client connections. When full, a new connection evicts the oldest one "
     "still sending its request headers (else its body); with none such, it is refused."},
    {"MAX_CONNECTIONS_PER_IP", CONFIG_INT, "512", 0, 100000, OFF(max_connections_per_ip),
     "Most simultaneous connections from one client IP (0: no per-IP limit; raise it behind a "
     "proxy)."},
    {"CONNECTION_TIMEOUT_SECONDS", CONFIG_INT, "30", 1, 3600, OFF(connection_timeout),
     "Idle seconds after which a connection is closed."},
    {"REQUEST_TIMEOUT_SECONDS", CONFIG_INT, "60", 1, 3600, OFF(request_timeout),
     "Most seconds a client may take to send one request body; slower ones get 408."},
    {"HEADER_TIMEOUT_SECONDS", CONFIG_INT, "10", 1, 3600, OFF(header_timeout),
     "Most seconds a client may take to send a request's line and headers (from the connection, "
     "or from the first byte of a later request on it); slower ones are disconnected."},
    {"THREADS", CONFIG_INT, "0", 0, 256, OFF(threads), "HTTP worker threads; 0 means one per CPU."},
    {"OFFLOAD_THREADS", CONFIG_INT, "0", 0, 256, OFF(offload_threads),
     "Threads that run database reads and Redis rate-limit decisions, so HTTP threads never "
     "wait (each holds its own database connection); 0 means one per CPU."},
    {"OFFLOAD_QUEUE", CONFIG_INT, "256", 1, 100000, OFF(offload_queue),
     "Most requests waiting for an offload thread; more are answered 503 at once."},
    {"TLS_CERT_FILE", CONFIG_STRING, "", 0, 0, OFF(tls_cert_file),
     "PEM certificate chain: with TLS_KEY_FILE, gensendrep serves HTTPS itself (TLS 1.2+), "
     "reloading both on SIGHUP; empty: plain HTTP (TLS at a proxy)."},
    {"TLS_KEY_FILE", CONFIG_SECRET, "", 0, 0, OFF(tls_key_file),
     "PEM private key of TLS_CERT_FILE (a path; the key itself is never logged)."},
    {"RETENTION_DAYS", CONFIG_STRING, "", 0, 0, OFF(retention_days_text),
     "Conversations last processed more than this many days ago are erased whole (deliveries, "
     "events, audio) in the background, in batches of 100, and so are events and audio of no "
     "conversation received before then; empty: kept forever. Range 1–36500."},
    {"ENCRYPTION_KEYS", CONFIG_SECRET, "", 0, 0, OFF(encryption_keys),
     "Encryption at rest: <key id>:<base64 of 32 bytes>, comma-separated (the first seals new "
     "data, every one opens); `gensendrep genkey --encryption` makes one. Bodies, events, audio "
     "and email/account ids are then sealed with AES-256-GCM. Losing the key loses the data. "
     "Empty: stored as given."},
    {"QUEUE_URL", CONFIG_SECRET, "", 0, 0, OFF(queue_url),
     "Publish every outbox event to a broker as well: redis://[:password@]host:port[/db] (a "
     "Redis Stream) or nats://[user:password@]host:port (NATS JetStream, stream GENSENDREP, "
     "subjects gensendrep.events.<type>); empty: none. An event leaves the outbox for the "
     "broker only once the broker acknowledged it."},
    {"QUEUE_STREAM", CONFIG_STRING, "gensendrep:events", 0, 0, OFF(queue_stream),
     "The Redis Stream key events are added to (XADD) with QUEUE_URL=redis://..."},
    {"QUEUE_MAXLEN", CONFIG_INT, "1000000", 1, 2000000000, OFF(queue_maxlen),
     "The Redis Stream is trimmed to about this many entries (XADD MAXLEN ~)."},
    {"DELIVERY_RETRY_SCHEDULE", CONFIG_STRING, "0,5,300,1800,7200,18000,36000,36000", 0, 0,
     OFF(delivery_retry_schedule_text),
     "Seconds to wait before each attempt to deliver an event to a subscription, comma-separated "
     "(the first: after the event is stored); each wait gets up to 10% jitter. After the last "
     "attempt fails the delivery is marked failed (dead letter). 1–32 entries of 0–604800."},
    {"DELIVERY_ALLOW_PRIVATE_NETWORKS", CONFIG_BOOL, "false", 0, 0,
     OFF(delivery_allow_private_networks),
     "Allow subscription URLs that resolve to loopback, private, link-local or other "
     "non-public addresses (refused by default: SSRF)."},
    {"DELIVERY_TIMEOUT_SECONDS", CONFIG_INT, "15", 1, 300, OFF(delivery_timeout),
     "A delivery that has not been answered within this many seconds failed."},
    {"DELIVERY_CONCURRENCY", CONFIG_INT, "64", 1, 4096, OFF(delivery_concurrency),
     "Most deliveries in flight at once (all subscriptions together)."},
    {"OUTBOX_RETENTION_DAYS", CONFIG_INT, "7", 1, 36500, OFF(outbox_retention_days),
     "Events delivered everywhere are kept this many days for replay, then erased; events still "
     "waiting for a subscription or the broker are never erased for age (the broker's cursor no "
     "longer counts once no instance has used it for this long: QUEUE_URL removed from every "
     "instance)."},
    {"DOCS_ASSETS_URL", CONFIG_STRING, "", 0, 0, OFF(docs_assets_url),
     "Base URL serving swagger-ui-bundle.js, swagger-ui.css and redoc.standalone.js instead of the "
     "CDN."},
    {"DOCS_ASSETS_DIR", CONFIG_STRING, "", 0, 0, OFF(docs_assets_dir),
     "Local folder with those files (make docs-assets fills it), served under /docs/assets/."},
    {"METRICS_TOKEN", CONFIG_SECRET, "", 0, 0, OFF(metrics_token),
     "When set, GET /metrics requires 'Authorization: Bearer <token>' (Prometheus' "
     "authorization credentials); empty: /metrics is open."},
};
const size_t config_var_count = sizeof config_vars / sizeof config_vars[0];

/* ---- .env reading ---- */

struct dotenv {
  char **keys;
  char **values;
  size_t n;
};

static void dotenv_free(struct dotenv *d) {
  for (size_t i = 0; i < d->n; i++) {
    free(d->keys[i]);
    free(d->values[i]);
  }
  free(d->keys);
  free(d->values);
  memset(d, 0, sizeof *d);
}

static const char *dotenv_get(const struct dotenv *d, const char *key) {
  for (size_t i = d->n; i-- > 0;)
    if (strcmp(d->keys[i], key) == 0) return d->values[i];
  return NULL;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
  return s;
}

/* Unquotes a .env value in place: "..." (with \n \" \\ escapes), '...' literal, or bare text
 * where " #" starts a comment. Returns false on an unterminated quote. */
static bool dotenv_unquote(char *v) {
  char q = v[0];
  if (q == '"' || q == '\'') {
    char *r = v + 1, *w = v;
    for (; *r && *r != q; r++) {
      if (q == '"' && *r == '\\' && r[1]) {
        r++;
        *w++ = *r == 'n' ? '\n' : *r;
      } else {
        *w++ = *r;
      }
    }
    if (*r != q) return false;
    *w = '\0';
    return true;
  }
  for (char *p = v; *p; p++) {
    if (*p == '#' && (p == v || isspace((unsigned char)p[-1]))) {
      *p = '\0';
      break;
    }
  }
  char *t = trim(v);
  memmove(v, t, strlen(t) + 1);
  return true;
}

static bool dotenv_add(struct dotenv *d, const char *k, const char *v) {
  char **nk = realloc(d->keys, (d->n + 1) * sizeof *nk);
  if (!nk) return false;
  d->keys = nk;
  char **nv = realloc(d->values, (d->n + 1) * sizeof *nv);
  if (!nv) return false;
  d->values = nv;
  d->keys[d->n] = strdup(k);
  d->values[d->n] = strdup(v);
  if (!d->keys[d->n] || !d->values[d->n]) {
    free(d->keys[d->n]);
    free(d->values[d->n]);
    return false;
  }
  d->n++;
  return true;
}

static bool dotenv_read(const char *path, struct dotenv *d, char *err, size_t errlen) {
  FILE *f = fopen(path, "r");
  if (!f) return true; /* no .env is fine */
  char line[8192];
  unsigned lineno = 0;
  bool ok = true;
  while (ok && fgets(line, sizeof line, f)) {
    lineno++;
    char *s = trim(line);
    if (*s == '\0' || *s == '#') continue;
    if (strncmp(s, "export ", 7) == 0) s = trim(s + 7);
    char *eq = strchr(s, '=');
    if (!eq) {
      snprintf(err, errlen, "%s line %u: expected KEY=VALUE", path, lineno);
      ok = false;
      break;
    }
    *eq = '\0';
    char *key = trim(s), *val = trim(eq + 1);
    if (!*key || !dotenv_unquote(val)) {
      snprintf(err, errlen, "%s line %u: expected KEY=VALUE with a closed quote", path, lineno);
      ok = false;
      break;
    }
    if (!dotenv_add(d, key, val)) {
      snprintf(err, errlen, "%s: out of memory", path);
      ok = false;
    }
  }
  fclose(f);
  return ok;
}

/* ---- values ---- */

static bool parse_long(const char *s, long *out) {
  if (!*s) return false;
  errno = 0;
  char *end;
  long v = strtol(s, &end, 10);
  if (errno || *end != '\0' || isspace((unsigned char)*s)) return false;
  *out = v;
  return true;
}

static bool set_var(struct config *cfg, const struct config_var *v, const char *value, char *err,
                    size_t errlen) {
  char *base = (char *)cfg + v->offset;
  if (v->type == CONFIG_INT) {
    long n;
    if (!parse_long(value, &n) || n < v->min || n > v->max) {
      snprintf(err, errlen, "%s: must be an integer from %ld to %ld (got \"%.40s\")", v->name,
               v->min, v->max, value);
      return false;
    }
    *(long *)base = n;
    return true;
  }
  if (v->type == CONFIG_BOOL) {
    if (strcasecmp(value, "true") == 0 || strcmp(value, "1") == 0 ||
        strcasecmp(value, "yes") == 0) {
      *(bool *)base = true;
    } else if (strcasecmp(value, "false") == 0 || strcmp(value, "0") == 0 ||
               strcasecmp(value, "no") == 0) {
      *(bool *)base = false;
    } else {
      snprintf(err, errlen, "%s: must be true or false (got \"%.40s\")", v->name, value);
      return false;
    }
    return true;
  }
  char *copy = strdup(value);
  if (!copy) {
    snprintf(err, errlen, "%s: out of memory", v->name);
    return false;
  }
  *(char **)base = copy;
  return true;
}

size_t config_split_list(char *buf, char **items, size_t max) {
  size_t n = 0;
  char *p = buf;
  while (p && n < max) {
    char *comma = strchr(p, ',');
    if (comma) *comma = '\0';
    char *item = trim(p);
    if (*item) items[n++] = item;
    p = comma ? comma + 1 : NULL;
  }
  return n;
}

/* Number of non-empty items in a comma-separated list. */
static size_t count_items(const char *list) {
  size_t n = 0;
  bool in_item = false;
  for (const char *p = list;; p++) {
    if (*p == ',' || *p == '\0') {
      n += in_item;
      in_item = false;
      if (!*p) return n;
    } else if (!isspace((unsigned char)*p)) {
      in_item = true;
    }
  }
}

/* DELIVERY_RETRY_SCHEDULE into cfg->delivery_retry. */
static bool parse_retry_schedule(struct config *cfg, char *err, size_t errlen) {
  cfg->delivery_retry_count = 0;
  const char *p = cfg->delivery_retry_schedule_text;
  for (;;) {
    char item[32];
    size_t n = strcspn(p, ",");
    if (n >= sizeof item || cfg->delivery_retry_count == CONFIG_RETRY_MAX) goto bad;
    memcpy(item, p, n);
    item[n] = '\0';
    while (n > 0 && isspace((unsigned char)item[n - 1])) item[--n] = '\0';
    const char *t = item;
    while (isspace((unsigned char)*t)) t++;
    long v;
    if (!parse_long(t, &v) || v < 0 || v > 604800) goto bad;
    cfg->delivery_retry[cfg->delivery_retry_count++] = v;
    if (p[n] == '\0') return true;
    p += n + 1;
  }
bad:
  snprintf(err, errlen,
           "DELIVERY_RETRY_SCHEDULE: 1 to %d comma-separated whole seconds from 0 to 604800 "
           "(got \"%.60s\")",
           CONFIG_RETRY_MAX, cfg->delivery_retry_schedule_text);
  return false;
}

/* QUEUE_URL's syntax (and QUEUE_STREAM with Redis), as the publisher will parse it: a typo
 * stops start-up before the database is opened. */
static bool queue_url_valid(const struct config *cfg, char *err, size_t errlen) {
  if (strncmp(cfg->queue_url, "nats://", 7) == 0) {
    struct dsn_nats n;
    bool ok = dsn_parse_nats(cfg->queue_url, &n, err, errlen);
    memset(&n, 0, sizeof n); /* credentials */
    return ok;
  }
  if (strncmp(cfg->queue_url, "redis://", 8) != 0) return true;
  struct dsn_redis r;
  bool ok = dsn_parse_redis("QUEUE_URL", cfg->queue_url, &r, err, errlen);
  memset(&r, 0, sizeof r); /* the password */
  if (!ok) return false;
  size_t n = strlen(cfg->queue_stream);
  if (n == 0 || n > CONFIG_QUEUE_STREAM_MAX) {
    snprintf(err, errlen, "QUEUE_STREAM: must hold 1 to %d bytes", CONFIG_QUEUE_STREAM_MAX);
    return false;
  }
  return true;
}

static bool check_semantics(struct config *cfg, char *err, size_t errlen) {
  enum log_level lvl;
  if (!log_parse_level(cfg->log_level, &lvl)) {
    snprintf(err, errlen, "LOG_LEVEL: must be debug, info, warning or error (got \"%.40s\")",
             cfg->log_level);
    return false;
  }
  size_t nkeys = count_items(cfg->api_secret_key);
  if (nkeys == 0) {
    snprintf(err, errlen,
             "API_SECRET_KEY is not set: the service refuses to run without an API key. Set "
             "API_SECRET_KEY=<long random string> in the environment or in .env "
             "('make run' generates one).");
    return false;
  }
  if (nkeys > CONFIG_API_KEYS_MAX) {
    snprintf(err, errlen, "API_SECRET_KEY: at most %d keys (got %zu)", CONFIG_API_KEYS_MAX, nkeys);
    return false;
  }
  if (!!*cfg->tls_cert_file != !!*cfg->tls_key_file) {
    snprintf(err, errlen, "TLS_CERT_FILE and TLS_KEY_FILE: set both (HTTPS) or neither (HTTP)");
    return false;
  }
  cfg->retention_days = 0;
  if (*cfg->retention_days_text && (!parse_long(cfg->retention_days_text, &cfg->retention_days) ||
                                    cfg->retention_days < 1 || cfg->retention_days > 36500)) {
    snprintf(err, errlen,
             "RETENTION_DAYS: empty (keep forever) or whole days from 1 to 36500 "
             "(got \"%.40s\")",
             cfg->retention_days_text);
    return false;
  }
  if (!parse_retry_schedule(cfg, err, errlen)) return false;
  if (*cfg->queue_url && strncmp(cfg->queue_url, "redis://", 8) != 0 &&
      strncmp(cfg->queue_url, "nats://", 7) != 0) {
    snprintf(err, errlen, "QUEUE_URL: must start with redis:// or nats:// (or be empty)");
    return false;
  }
  if (!queue_url_valid(cfg, err, errlen)) return false;
  const char *sqlite_path = dsn_sqlite_path(cfg->database_url);
  if (!sqlite_path && !dsn_is_postgres(cfg->database_url)) {
    snprintf(err, errlen,
             "DATABASE_URL: unsupported scheme (supported: sqlite:PATH, sqlite:///absolute/path, "
             "postgresql://user:password@host:port/dbname)");
    return false;
  }
  if (sqlite_path && !*sqlite_path) {
    snprintf(err, errlen, "DATABASE_URL: sqlite URL has no file path (sqlite:PATH)");
    return false;
  }
  if (*cfg->redis_url) {
    struct dsn_redis r;
    bool ok = dsn_parse_redis("REDIS_URL", cfg->redis_url, &r, err, errlen);
    memset(&r, 0, sizeof r); /* the password */
    if (!ok) return false;
  }
  return true;
}

bool config_load(struct config *cfg, const char *env_file, char *err, size_t errlen) {
  memset(cfg, 0, sizeof *cfg);
  struct dotenv d = {0};
  if (env_file && !dotenv_read(env_file, &d, err, errlen)) {
    dotenv_free(&d);
    return false;
  }
  bool ok = true;
  for (size_t i = 0; ok && i < config_var_count; i++) {
    const struct config_var *v = &config_vars[i];
    const char *value = getenv(v->name);
    if (!value) value = dotenv_get(&d, v->name);
    if (!value) value = v->def;
    ok = set_var(cfg, v, value, err, errlen);
  }
  dotenv_free(&d);
  return ok && check_semantics(cfg, err, errlen);
}

void config_free(struct config *cfg) {
  for (size_t i = 0; i < config_var_count; i++) {
    if (config_vars[i].type == CONFIG_INT || config_vars[i].type == CONFIG_BOOL) continue;
    char **p = (char **)((char *)cfg + config_vars[i].offset);
    free(*p);
    *p = NULL;
  }
}

void config_print_help(FILE *out) {
  fprintf(out, "Environment variables (also read from ./.env; the environment wins):\n");
  for (size_t i = 0; i < config_var_count; i++) {
    const struct config_var *v = &config_vars[i];
    fprintf(out, "  %-30s %s", v->name, v->help);
    if (v->type == CONFIG_INT)
      fprintf(out, " [default %s, %ld..%ld]\n", v->def, v->min, v->max);
    else if (*v->def)
      fprintf(out, " [default %s]\n", v->def);
    else
      fprintf(out, "\n");
  }
}

void config_print_markdown(FILE *out) {
  fprintf(out, "| Variable | Default | Meaning |\n|---|---|---|\n");
  for (size_t i = 0; i < config_var_count; i++) {
    const struct config_var *v = &config_vars[i];
    fprintf(out, "| `%s` | %s%s%s | %s", v->name, *v->def ? "`" : "", *v->def ? v->def : "(empty)",
            *v->def ? "`" : "", v->help);
    if (v->type == CONFIG_INT) fprintf(out, " Range %ld–%ld.", v->min, v->max);
    fprintf(out, " |\n");
  }
}
