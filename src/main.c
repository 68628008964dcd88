/* gensendrep: argument parsing, start-up, signals and graceful shutdown. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/app.h"
#include "audit/audit.h"
#include "core/config.h"
#include "core/filewriter.h"
#include "core/log.h"
#include "core/timeutil.h"
#include "core/version.h"
#include "elevenlabs/elevenlabs.h"
#include "ext/crypto.h"
#include "ext/redis.h"
#include "http/server.h"
#include "http/tls.h"
#include "outbound/outbound.h"
#include "seal/seal.h"
#include "sig/sig.h"
#include "store/audit_chain.h"
#include "store/health.h"
#include "store/retention.h"

#define SHUTDOWN_GRACE_MS 30000
/* Decoded audio waiting to be written to temporary files, all uploads together; past it an
 * upload is answered 503 (the disk is far behind the network). */
#define SPOOL_QUEUE_BYTES ((size_t)64 * 1024 * 1024)

static void usage(FILE *out) {
  fprintf(out,
          "gensendrep %s - conversation webhook API\n\n"
          "Usage: gensendrep [serve]   run the HTTP service (default)\n"
          "       gensendrep migrate   apply database migrations and exit\n"
          "       gensendrep genkey    print a new random API key\n"
          "       gensendrep genkey --encryption   print a new ENCRYPTION_KEYS item\n"
          "       gensendrep reencrypt [--batch N]   seal every row with the first of\n"
          "                            ENCRYPTION_KEYS (safe while the service runs)\n"
          "       gensendrep keys create --name NAME --scope S[,S...] [--account ID ...]\n"
          "                          [--expires RFC3339]   make a scoped API key (shown once)\n"
          "       gensendrep keys list | keys revoke ID    the keys kept in the database\n"
          "       gensendrep elevenlabs backfill [--since RFC3339] [--agent AGENT_ID]\n"
          "                            store the ElevenLabs conversations we do not hold yet\n"
          "       gensendrep audit verify [--expect ID:HASH]   check the audit log\n"
          "       gensendrep audit export [--since T] [--until T] [--action A] [--key K]\n"
          "                          [--target T]   print the audit log (NDJSON)\n"
          "       gensendrep analytics rebuild   recompute the analytics rollups from the\n"
          "                            conversations\n"
          "       gensendrep --help | --version | --config-markdown\n\n",
          GSR_VERSION);
  config_print_help(out);
}

static int cmd_genkey(int argc, char **argv) {
  bool encryption = argc == 3 && strcmp(argv[2], "--encryption") == 0;
  if (argc > 2 && !encryption) {
    fprintf(stderr, "Usage: gensendrep genkey [--encryption]\n");
    return 2;
  }
  char key[100];
  if (encryption ? !seal_generate(key, sizeof key) : !crypto_random_hex(key, sizeof key, 32)) {
    fprintf(stderr, "gensendrep: random number generator failed\n");
    return 1;
  }
  printf("%s\n", key);
  if (encryption)
    fprintf(stderr,
            "a new encryption key: put it first in ENCRYPTION_KEYS (keep the older ones after it "
            "until `gensendrep reencrypt` has run), and keep a copy safe: data sealed with a lost "
            "key is lost\n");
  memset(key, 0, sizeof key);
  return 0;
}

static int load_config(struct config *cfg) {
  char err[512];
  if (!config_load(cfg, ".env", err, sizeof err)) {
    fprintf(stderr, "gensendrep: configuration error: %s\n", err);
    return 2;
  }
  enum log_level level = LOG_INFO;
  if (log_parse_level(cfg->log_level, &level)) log_set_level(level); /* validated already */
  return 0;
}

/* The signature keyrings; a bad secret stops start-up naming its variable, never its value. */
static bool load_keyrings(const struct config *cfg, struct app *app) {
  char err[256];
  if (!sig_keyring_standard(cfg->webhook_secret, &app->webhook_keys, err, sizeof err)) {
    fprintf(stderr, "gensendrep: configuration error: WEBHOOK_SECRET: %s\n", err);
    return false;
  }
  if (!sig_keyring_elevenlabs(cfg->elevenlabs_webhook_secret, &app->elevenlabs_keys, err,
                              sizeof err)) {
    fprintf(stderr, "gensendrep: configuration error: ELEVENLABS_WEBHOOK_SECRET: %s\n", err);
    sig_keyring_clear(&app->webhook_keys);
    return false;
  }
  return true;
}

static void clear_keyrings(struct app *app) {
  sig_keyring_clear(&app->webhook_keys);
  sig_keyring_clear(&app->elevenlabs_keys);
}

/* ENCRYPTION_KEYS into *ring (NULL: encryption is off); false, with the reason printed, when
 * the value is bad. Parsed before the database is opened, so a typo fails at once. */
static bool load_ring(const struct config *cfg, struct seal_ring **ring) {
  char err[256];
  *ring = seal_ring_parse(cfg->encryption_keys, err, sizeof err);
  if (!*ring && err[0]) {
    fprintf(stderr, "gensendrep: configuration error: %s\n", err);
    return false;
  }
  return true;
}

/* Opens DATABASE_URL and hands it the ring, as every command that opens the store must: the
 * store refuses (one line naming ENCRYPTION_KEYS) a ring that cannot open what it holds. NULL
 * with err set when either fails. The ring outlives the store (freed after store_close). */
static struct store *open_store(const struct config *cfg, const struct seal_ring *ring, char *err,
                                size_t errlen) {
  struct store *s =
      store_open_wait(cfg->database_url, (int)cfg->database_connect_timeout, err, errlen);
  if (s && store_set_ring(s, ring, err, errlen) != STORE_OK) {
    store_close(s);
    return NULL;
  }
  /* with a broker, every change's events are written from the first one (a broker that was
   * never reached has no cursor yet to show the store it is there) */
  if (s && *cfg->queue_url) store_set_outbox_broker(s, true);
  return s;
}

/* What a one-shot command works with: the configuration, ENCRYPTION_KEYS' ring, and the store
 * opened with it. cli_close it whatever cli_load and cli_open_store returned. */
struct cli {
  struct config cfg;
  struct seal_ring *ring;
  struct store *store;
};

/* The configuration and the ring: 0, or the exit code (2) with the reason printed. */
static int cli_load(struct cli *c) {
  memset(c, 0, sizeof *c);
  int rc = load_config(&c->cfg);
  if (rc == 0 && !load_ring(&c->cfg, &c->ring)) rc = 2;
  return rc;
}

/* The store: 0, or 1 with the reason printed. */
static int cli_open_store(struct cli *c) {
  char err[512];
  if ((c->store = open_store(&c->cfg, c->ring, err, sizeof err)) != NULL) return 0;
  fprintf(stderr, "gensendrep: %s\n", err);
  return 1;
}

/* cli_load, then cli_open_store when it succeeded. */
static int cli_open(struct cli *c) {
  int rc = cli_load(c);
  return rc != 0 ? rc : cli_open_store(c);
}

static void cli_close(struct cli *c) {
  store_close(c->store);   /* every write was waited for: nothing is pending */
  seal_ring_free(c->ring); /* after the store: it seals and opens with it */
  config_free(&c->cfg);
}

static int cmd_migrate(void) {
  struct cli c;
  int rc = cli_open(&c);
  cli_close(&c);
  return rc;
}

/* Set by SIGINT/SIGTERM during a backfill: the conversation in hand is finished (committed or
 * dropped whole), then the run stops. A second signal kills (SA_RESETHAND). */
static atomic_bool backfill_stop;

static void on_backfill_signal(int sig) {
  (void)sig;
  atomic_store(&backfill_stop, true);
}

static void backfill_usage(FILE *out) {
  fprintf(out,
          "Usage: gensendrep elevenlabs backfill [--since RFC3339] [--agent AGENT_ID]\n\n"
          "Stores the finished ElevenLabs conversations this database does not hold yet, read\n"
          "from the ElevenLabs API (ELEVENLABS_API_KEY, ELEVENLABS_API_URL) into DATABASE_URL.\n"
          "  --since T    only conversations started at or after T (RFC 3339)\n"
          "  --agent ID   only this agent's conversations\n"
          "Safe to repeat and to interrupt: what is stored stays, a rerun fetches the rest.\n");
}

/* --name VALUE or --name=VALUE at argv[*i]; *i moves past what was used. */
static bool flag_value(int argc, char **argv, int *i, const char *name, const char **out) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n) != 0) return false;
  if (argv[*i][n] == '=') {
    *out = argv[*i] + n + 1;
    return true;
  }
  if (argv[*i][n] != '\0' || *i + 1 >= argc) return false;
  *out = argv[++*i];
  return true;
}

static int cmd_elevenlabs(int argc, char **argv) {
  if (argc < 3 || strcmp(argv[2], "backfill") != 0) {
    backfill_usage(stderr);
    return 2;
  }
  struct el_backfill_options opt = {0};
  const char *since = NULL;
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      backfill_usage(stdout);
      return 0;
    }
    if (!flag_value(argc, argv, &i, "--since", &since) &&
        !flag_value(argc, argv, &i, "--agent", &opt.agent_id)) {
      fprintf(stderr, "gensendrep: unknown or incomplete option '%s'\n", argv[i]);
      backfill_usage(stderr);
      return 2;
    }
  }
  if (since) {
    int64_t us;
    if (!time_parse_rfc3339(since, strlen(since), &us)) {
      fprintf(stderr,
              "gensendrep: --since wants an RFC 3339 date-time such as "
              "2026-03-01T00:00:00Z\n");
      return 2;
    }
    opt.has_since = true;
    opt.since_unix = us >= 0 ? us / 1000000 : -((-us + 999999) / 1000000);
  }
  if (opt.agent_id && !*opt.agent_id) {
    fprintf(stderr, "gensendrep: --agent wants an agent id\n");
    return 2;
  }
  struct cli c;
  int rc = cli_load(&c);
  const struct config *cfg = &c.cfg;
  char err[512];
  if (rc == 0 && !*cfg->elevenlabs_api_key) {
    fprintf(stderr,
            "gensendrep: ELEVENLABS_API_KEY is not set: the backfill reads the "
            "ElevenLabs API with it\n");
    rc = 2;
  }
  if (rc == 0 && !el_api_url_ok(cfg->elevenlabs_api_url, err, sizeof err)) {
    fprintf(stderr, "gensendrep: %s\n", err);
    rc = 2;
  }
  if (rc != 0) {
    cli_close(&c);
    return rc;
  }
  struct sigaction sa = {.sa_handler = on_backfill_signal, .sa_flags = (int)SA_RESETHAND};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (cli_open_store(&c) != 0) {
    cli_close(&c);
    return 1;
  }
  opt.progress = isatty(STDERR_FILENO) ? stderr : NULL;
  struct el_backfill_counts n;
  enum el_backfill_result res =
      el_backfill_run(cfg, c.store, &opt, &backfill_stop, &n, err, sizeof err);
  cli_close(&c);
  fprintf(stderr, "backfill%s: %ld listed, %ld stored, %ld already present",
          res == EL_BACKFILL_INTERRUPTED ? " (interrupted)" : "", n.listed, n.stored, n.present);
  if (n.skipped) fprintf(stderr, ", %ld not finished or gone (skipped)", n.skipped);
  if (n.failed) fprintf(stderr, ", %ld failed", n.failed);
  fprintf(stderr, "\n");
  switch (res) {
    case EL_BACKFILL_OK:
      return 0;
    case EL_BACKFILL_INTERRUPTED:
      fprintf(stderr, "gensendrep: interrupted; run the backfill again to continue\n");
      return 130;
    case EL_BACKFILL_FAILED:
      break;
  }
  fprintf(stderr, "gensendrep: %s\n", err);
  return 1;
}

/* ---- gensendrep keys: API keys kept as data ---- */

static void keys_usage(FILE *out) {
  fprintf(out,
          "Usage: gensendrep keys create --name NAME --scope S[,S...] [--account ID ...]\n"
          "                              [--expires RFC3339]\n"
          "       gensendrep keys list\n"
          "       gensendrep keys revoke ID\n\n"
          "Scopes: ingest (post webhooks), read (get, list, audio, events), delete (erase\n"
          "conversations), admin (keys, and everything). --account (repeatable) binds the key\n"
          "to those accounts: it sees no other account's conversations. The key is printed\n"
          "once; the database keeps only a SHA-256 of its secret.\n");
}

struct write_wait {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
};

static void write_waited(struct store_write *w, void *cls) {
  (void)w;
  struct write_wait *ww = cls;
  pthread_mutex_lock(&ww->mu);
  ww->done = true;
  pthread_cond_signal(&ww->cv);
  pthread_mutex_unlock(&ww->mu);
}

/* Submits w and waits until it is committed (or failed). */
static enum store_status submit_wait(struct store *store, struct store_write *w) {
  struct write_wait ww = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
  w->audio_fd = -1;
  w->done = write_waited;
  w->done_cls = &ww;
  store_submit(store, w);
  pthread_mutex_lock(&ww.mu);
  while (!ww.done) pthread_cond_wait(&ww.cv, &ww.mu);
  pthread_mutex_unlock(&ww.mu);
  return w->status;
}

static void print_time(const char *label, int64_t us) {
  char buf[40];
  printf("%s%s", label, us && time_format_us(us, false, buf, sizeof buf) ? buf : "-");
}

static int keys_create(struct store *store, struct apikey_record *rec) {
  char key[APIKEY_LEN + 1];
  if (!api_key_generate(rec, key)) {
    fprintf(stderr, "gensendrep: random number generator failed\n");
    return 1;
  }
  struct store_write w = {.kind = STORE_WRITE_KEY_CREATE, .key = rec};
  audit_who_set(&w.who, "cli", NULL, NULL);
  if (submit_wait(store, &w) != STORE_OK) {
    fprintf(stderr, "gensendrep: the key could not be stored\n");
    return 1;
  }
  printf("%s\n", key);
  fprintf(stderr, "key %s created; it is shown only now: keep it safe\n", rec->id);
  memset(key, 0, sizeof key);
  return 0;
}

static int keys_list(struct store *store) {
  struct apikey_record *keys;
  size_t n;
  if (store_key_list(store, &keys, &n) != STORE_OK) {
    fprintf(stderr, "gensendrep: cannot read the keys\n");
    return 1;
  }
  for (size_t i = 0; i < n; i++) {
    const struct apikey_record *k = &keys[i];
    char scopes[APIKEY_SCOPES_TEXT_MAX];
    apikey_scopes_text(k->scopes, scopes);
    printf("%s\tname=%s\tscopes=%s\taccounts=", k->id, k->name, scopes);
    for (size_t a = 0; a < k->naccounts; a++) printf("%s%s", a ? "," : "", k->accounts[a]);
    if (k->naccounts == 0) printf("*");
    print_time("\tcreated=", k->created_us);
    print_time("\texpires=", k->expires_us);
    print_time("\tlast_used=", k->last_used_us);
    if (k->revoked_us) print_time("\trevoked=", k->revoked_us);
    printf("\n");
  }
  free(keys);
  return 0;
}

static int keys_revoke(struct store *store, const char *id) {
  struct store_write w = {.kind = STORE_WRITE_KEY_REVOKE, .key_at_us = time_now_us()};
  audit_who_set(&w.who, "cli", NULL, NULL);
  snprintf(w.key_id, sizeof w.key_id, "%s", id);
  if (submit_wait(store, &w) != STORE_OK) {
    fprintf(stderr, "gensendrep: the key could not be revoked\n");
    return 1;
  }
  if (w.duplicate) {
    fprintf(stderr, "gensendrep: no key %s\n", id);
    return 1;
  }
  fprintf(stderr, "key %s revoked\n", id);
  return 0;
}

/* Reads keys create's options into rec; false (usage printed) when they are wrong. */
static bool keys_create_options(int argc, char **argv, struct apikey_record *rec) {
  const char *v, *name = NULL, *scope = NULL, *expires = NULL, *why;
  for (int i = 3; i < argc; i++) {
    if (flag_value(argc, argv, &i, "--name", &v)) {
      name = v;
    } else if (flag_value(argc, argv, &i, "--scope", &v)) {
      scope = v;
    } else if (flag_value(argc, argv, &i, "--expires", &v)) {
      expires = v;
    } else if (flag_value(argc, argv, &i, "--account", &v)) {
      if ((why = apikey_text_problem(v, APIKEY_ACCOUNT_MAX))) {
        fprintf(stderr, "gensendrep: --account %s\n", why);
        return false;
      }
      if (!apikey_add_account(rec, v)) {
        fprintf(stderr, "gensendrep: at most %d accounts per key\n", APIKEY_ACCOUNTS_MAX);
        return false;
      }
    } else {
      fprintf(stderr, "gensendrep: unknown or incomplete option '%s'\n", argv[i]);
      keys_usage(stderr);
      return false;
    }
  }
  if (!name || (why = apikey_text_problem(name, APIKEY_NAME_MAX))) {
    fprintf(stderr, "gensendrep: --name %s\n", name ? why : "is required");
    return false;
  }
  snprintf(rec->name, sizeof rec->name, "%s", name);
  if (!scope || !apikey_scopes_parse(scope, &rec->scopes)) {
    fprintf(stderr,
            "gensendrep: --scope wants a comma-separated list of ingest, read, delete, "
            "admin\n");
    return false;
  }
  if (rec->naccounts && (rec->scopes & ~APIKEY_SCOPES_BOUND)) {
    fprintf(stderr,
            "gensendrep: --account: a key bound to accounts may only have the scopes read and "
            "delete (a webhook names its own account: ingest and admin keys see every "
            "account)\n");
    return false;
  }
  if (expires &&
      (!time_parse_rfc3339(expires, strlen(expires), &rec->expires_us) || rec->expires_us <= 0)) {
    fprintf(stderr,
            "gensendrep: --expires wants an RFC 3339 date-time such as "
            "2027-01-01T00:00:00Z\n");
    return false;
  }
  return true;
}

static int cmd_keys(int argc, char **argv) {
  const char *sub = argc > 2 ? argv[2] : "";
  if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
    keys_usage(stdout);
    return 0;
  }
  struct apikey_record rec = {0};
  bool create = strcmp(sub, "create") == 0, list = strcmp(sub, "list") == 0,
       revoke = strcmp(sub, "revoke") == 0;
  if ((!create && !list && !revoke) || (list && argc != 3) || (revoke && argc != 4)) {
    keys_usage(stderr);
    return 2;
  }
  if (create && !keys_create_options(argc, argv, &rec)) return 2;
  if (revoke && !apikey_id_valid(argv[3])) {
    fprintf(stderr, "gensendrep: no key %s (an id is 16 hex digits)\n", argv[3]);
    return 1;
  }
  struct cli c;
  int rc = cli_open(&c);
  if (rc == 0)
    rc = create ? keys_create(c.store, &rec)
         : list ? keys_list(c.store)
                : keys_revoke(c.store, argv[3]);
  cli_close(&c);
  return rc;
}

/* ---- gensendrep reencrypt: every row sealed with the first of ENCRYPTION_KEYS ---- */

#define RESEAL_BATCH_DEFAULT 500
#define RESEAL_BATCH_MAX 100000

static void reencrypt_usage(FILE *out) {
  fprintf(out,
          "Usage: gensendrep reencrypt [--batch N]\n\n"
          "Rewrites every stored body, event, audio and email/account id that is not sealed\n"
          "with the first key of ENCRYPTION_KEYS (rows sealed with an older key, and rows\n"
          "written before encryption was switched on), N rows per transaction (default %d).\n"
          "Safe while the service runs on the same database, and to interrupt: a rerun\n"
          "finishes the rest. Once it is done, the older keys can leave ENCRYPTION_KEYS.\n",
          RESEAL_BATCH_DEFAULT);
}

/* Set by SIGINT/SIGTERM during a reencrypt: the batch in hand commits, then the run stops. */
static atomic_bool reencrypt_stop;

static void on_reencrypt_signal(int sig) {
  (void)sig;
  atomic_store(&reencrypt_stop, true);
}

/* Passes over every table a run makes at most: the first walk, then again while rows not
 * under the first key turn up behind it (sealed meanwhile by an instance with another first key,
 * or skipped because another transaction held them). */
#define RESEAL_PASSES 3

static int reencrypt_run(struct store *store, const struct seal_ring *ring, int64_t batch) {
  struct store_write w = {.kind = STORE_WRITE_RESEAL, .reseal_limit = batch};
  int64_t total = 0, batches = 0;
  const char *key = seal_ring_key_id(ring, 0);
  for (int passes = 1;;) {
    if (atomic_load(&reencrypt_stop)) {
      fprintf(stderr,
              "reencrypt: interrupted after %lld rows; run it again to finish (rows already "
              "sealed with key %s are skipped)\n",
              (long long)total, key);
      return 130;
    }
    w.erased = 0;
    enum store_status st = submit_wait(store, &w);
    if (st != STORE_OK) {
      fprintf(stderr,
              "gensendrep: reencrypt failed after %lld rows (%s); nothing of the failed batch "
              "was changed: run it again\n",
              (long long)total,
              st == STORE_RETRY ? "the database is busy or unavailable" : "database error");
      return 1;
    }
    total += w.erased;
    batches++;
    if (w.erased || !w.reseal_pos[0])
      fprintf(stderr, "reencrypt: %lld rows rewritten in %lld batches%s\n", (long long)total,
              (long long)batches, w.reseal_pos[0] ? "" : ", every table walked");
    if (w.reseal_pos[0]) continue;
    if (!w.reseal_left) break;
    if (passes++ >= RESEAL_PASSES) {
      fprintf(stderr,
              "gensendrep: reencrypt: after %d passes rows are still not sealed with key %s: an "
              "instance is still sealing with another key (give every instance ENCRYPTION_KEYS "
              "with %s first and restart it), or rows were held by other transactions; no key "
              "was retired: run it again\n",
              RESEAL_PASSES, key, key);
      return 1;
    }
    fprintf(stderr,
            "reencrypt: rows not sealed with key %s turned up behind the walk (sealed meanwhile "
            "with another key, or held by another transaction and skipped): walking again\n",
            key);
  }
  fprintf(stderr,
          "reencrypt: done: every row is sealed with key %s (%lld rewritten); the other keys "
          "are retired and may leave ENCRYPTION_KEYS\n",
          key, (long long)total);
  return 0;
}

static int cmd_reencrypt(int argc, char **argv) {
  int64_t batch = RESEAL_BATCH_DEFAULT;
  for (int i = 2; i < argc; i++) {
    const char *v;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      reencrypt_usage(stdout);
      return 0;
    }
    if (flag_value(argc, argv, &i, "--batch", &v)) {
      char *end;
      errno = 0;
      long long n = strtoll(v, &end, 10);
      if (errno || end == v || *end || n < 1 || n > RESEAL_BATCH_MAX) {
        fprintf(stderr, "gensendrep: --batch wants a number of rows from 1 to %d\n",
                RESEAL_BATCH_MAX);
        return 2;
      }
      batch = n;
      continue;
    }
    fprintf(stderr, "gensendrep: unknown or incomplete option '%s'\n", argv[i]);
    reencrypt_usage(stderr);
    return 2;
  }
  struct cli c;
  int rc = cli_load(&c);
  if (rc == 0 && !c.ring) {
    fprintf(stderr,
            "gensendrep: reencrypt needs ENCRYPTION_KEYS: the key to seal with first, then "
            "every older key still in use (`gensendrep genkey --encryption` makes one)\n");
    rc = 2;
  }
  if (rc != 0) {
    cli_close(&c);
    return rc;
  }
  struct sigaction sa = {.sa_handler = on_reencrypt_signal, .sa_flags = (int)SA_RESETHAND};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  rc = cli_open_store(&c);
  if (rc == 0) rc = reencrypt_run(c.store, c.ring, batch);
  cli_close(&c);
  return rc;
}

/* ---- gensendrep analytics rebuild: the rollups recomputed from the conversations ---- */

static void analytics_usage(FILE *out) {
  fprintf(out,
          "Usage: gensendrep analytics rebuild\n\n"
          "Recomputes every analytics rollup (GET /api/v1/analytics) from the stored\n"
          "conversations in one transaction, and prints how many conversations it counted.\n"
          "Safe while the service runs on the same database: writes wait for it, then go on.\n");
}

static int cmd_analytics(int argc, char **argv) {
  const char *sub = argc > 2 ? argv[2] : "";
  if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
    analytics_usage(stdout);
    return 0;
  }
  if (strcmp(sub, "rebuild") != 0 || argc != 3) {
    analytics_usage(stderr);
    return 2;
  }
  struct cli c;
  int rc = cli_open(&c);
  if (rc == 0) {
    int64_t counted = 0;
    enum store_status st = c.store->ops->analytics_rebuild(c.store, &counted);
    if (st == STORE_OK) {
      printf("analytics: rollups rebuilt from %lld conversations\n", (long long)counted);
    } else {
      fprintf(stderr, "gensendrep: analytics rebuild failed (%s); nothing was changed\n",
              st == STORE_RETRY ? "the database is busy or unavailable" : "database error");
      rc = 1;
    }
  }
  cli_close(&c);
  return rc;
}

/* ---- gensendrep audit: check and print the audit log ---- */

static void audit_usage(FILE *out) {
  fprintf(
      out,
      "Usage: gensendrep audit verify [--expect ID:HASH]\n"
      "       gensendrep audit export [--since T] [--until T] [--action A] [--key K]\n"
      "                               [--target T]\n\n"
      "verify walks the whole hash chain: exit 0 and a summary when every link holds, exit 1\n"
      "naming the first broken entry when a row was edited or removed by hand; it prints the\n"
      "head it verified (\"audit head: id N hash H\", as the service logs it). Keep heads\n"
      "outside the database: --expect ID:HASH also fails (exit 1) when the chain no longer\n"
      "holds entry ID with hash HASH (the log was rewritten, hashes recomputed and all).\n"
      "export prints the entries as NDJSON, oldest first: --since/--until (RFC 3339, at in\n"
      "[since, until)), --action (webhook.accepted, conversation.read, ...), --key (a key id),\n"
      "--target (a conversation or key id).\n");
}

/* An anchor: an entry's id and hash kept outside the database ("ID:HASH", as the service logs
 * the head: "audit head: id N hash H"). */
struct audit_anchor {
  int64_t id;
  unsigned char hash[AUDIT_HASH_LEN];
};

static bool audit_anchor_parse(const char *v, struct audit_anchor *a) {
  const char *colon = strchr(v, ':');
  if (!colon || colon == v || colon - v > 18) return false;
  a->id = 0;
  for (const char *p = v; p < colon; p++) {
    if (*p < '0' || *p > '9') return false;
    a->id = a->id * 10 + (*p - '0');
  }
  return a->id > 0 && audit_hash_parse(colon + 1, a->hash);
}

/* Whether the (whole) chain still holds the anchor's entry with the anchor's hash: an edit
 * with every later hash and the head recomputed passes the chain check, not this one. */
static int audit_check_anchor(struct store *store, const struct audit_anchor *a,
                              const struct audit_verify_result *r) {
  struct store_audit_filter f = {.action = -1, .cursor = a->id - 1, .limit = 1};
  struct store_audit_page page = {0};
  if (store_audit_list(store, &f, &page) != STORE_OK) {
    fprintf(stderr, "gensendrep: cannot read the audit log\n");
    return 1;
  }
  bool there = page.count == 1 && page.items[0].id == a->id;
  bool same = there && crypto_equal(page.items[0].hash, a->hash, AUDIT_HASH_LEN);
  free(page.items);
  if (!there) {
    printf(
        "audit log: the anchor's entry %lld is no longer in the log (%lld entries, newest "
        "%lld): the log was cut or rewritten after the anchor was taken\n",
        (long long)a->id, (long long)r->entries, (long long)r->head_id);
    return 1;
  }
  if (!same) {
    printf(
        "audit log: entry %lld does not have the anchor's hash: the log was rewritten after "
        "the anchor was taken (%lld entries, every link holds)\n",
        (long long)a->id, (long long)r->entries);
    return 1;
  }
  return 0;
}

static int audit_verify(struct store *store, const struct audit_anchor *expect) {
  struct audit_verify_result r;
  if (audit_chain_verify(store, &r) != STORE_OK) {
    fprintf(stderr, "gensendrep: cannot read the audit log\n");
    return 1;
  }
  if (r.first_bad) {
    printf("audit log: first broken link at entry %lld: %s (%lld entries checked)\n",
           (long long)r.first_bad, r.why, (long long)r.entries);
    return 1;
  }
  if (expect && audit_check_anchor(store, expect, &r) != 0) return 1;
  char hex[2 * AUDIT_HASH_LEN + 1];
  audit_hash_hex(r.head_hash, hex);
  printf("audit log: %lld entries, every link holds%s; audit head: id %lld hash %s\n",
         (long long)r.entries, expect ? " and the anchor's entry is in the chain" : "",
         (long long)r.head_id, hex);
  return 0;
}

#define EXPORT_PAGE 1000

/* Oldest first, a page at a time: memory stays constant however long the log. */
static int audit_export(struct store *store, struct store_audit_filter *f) {
  f->limit = EXPORT_PAGE;
  for (;;) {
    struct store_audit_page page = {0};
    if (store_audit_list(store, f, &page) != STORE_OK) {
      fprintf(stderr, "gensendrep: cannot read the audit log\n");
      return 1;
    }
    bool ok = true;
    for (size_t i = 0; ok && i < page.count; i++) {
      json_t *obj = audit_entry_json(&page.items[i]);
      char *line = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
      json_decref(obj);
      ok = line && printf("%s\n", line) >= 0;
      free(line);
      f->cursor = page.items[i].id;
    }
    size_t got = page.count;
    free(page.items);
    if (!ok || fflush(stdout) != 0) {
      fprintf(stderr, "gensendrep: cannot write the export\n");
      return 1;
    }
    if (got < EXPORT_PAGE) return 0;
  }
}

/* Reads export's flags into f; false (the problem printed) when they are wrong. */
static bool audit_export_options(int argc, char **argv, struct store_audit_filter *f) {
  const char *v;
  for (int i = 3; i < argc; i++) {
    bool since = false;
    if ((since = flag_value(argc, argv, &i, "--since", &v)) ||
        flag_value(argc, argv, &i, "--until", &v)) {
      int64_t us;
      if (!time_parse_rfc3339_bound(v, strlen(v), &us)) {
        fprintf(stderr, "gensendrep: %s wants an RFC 3339 date-time such as 2026-01-01T00:00:00Z\n",
                since ? "--since" : "--until");
        return false;
      }
      if (since)
        f->since_us = us;
      else
        f->until_us = us > 0 ? us : 1; /* 0 is unbounded to the store; nothing is that old */
    } else if (flag_value(argc, argv, &i, "--action", &v)) {
      if ((f->action = audit_action_named(v)) < 0) {
        fprintf(stderr,
                "gensendrep: --action: no action '%s' (webhook.accepted, "
                "conversation.read, conversation.list, conversation.audio, "
                "conversation.export, conversation.erased, key.created, key.revoked, "
                "auth.rejected)\n",
                v);
        return false;
      }
    } else if (flag_value(argc, argv, &i, "--key", &v)) {
      f->key_id = v;
    } else if (flag_value(argc, argv, &i, "--target", &v)) {
      f->target = v;
    } else {
      fprintf(stderr, "gensendrep: unknown or incomplete option '%s'\n", argv[i]);
      audit_usage(stderr);
      return false;
    }
  }
  if (f->since_us && f->until_us && f->since_us > f->until_us) {
    fprintf(stderr, "gensendrep: --until must not be before --since\n");
    return false;
  }
  return true;
}

static int cmd_audit(int argc, char **argv) {
  const char *sub = argc > 2 ? argv[2] : "";
  if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
    audit_usage(stdout);
    return 0;
  }
  bool verify = strcmp(sub, "verify") == 0, export = strcmp(sub, "export") == 0;
  struct audit_anchor anchor;
  bool expect = false;
  if (verify && argc > 3) {
    int i = 3;
    const char *v;
    expect = argc <= 5 && flag_value(argc, argv, &i, "--expect", &v) && i == argc - 1;
    if (expect && !audit_anchor_parse(v, &anchor)) {
      fprintf(stderr,
              "gensendrep: --expect wants ID:HASH (an entry's id and its 64 hex digit "
              "hash, as in \"audit head: id N hash H\")\n");
      return 2;
    }
  }
  if ((!verify && !export) || (verify && argc != 3 && !expect)) {
    audit_usage(stderr);
    return 2;
  }
  struct store_audit_filter f = {.action = -1};
  if (export && !audit_export_options(argc, argv, &f)) return 2;
  struct cli c;
  int rc = cli_open(&c);
  if (rc == 0)
    rc = verify ? audit_verify(c.store, expect ? &anchor : NULL) : audit_export(c.store, &f);
  cli_close(&c);
  return rc;
}

/* Blocks the stop signals and SIGHUP in every thread; the main thread then waits for them. */
static void block_signals(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGINT);
  sigset_t all = *set;
  sigaddset(&all, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  signal(SIGPIPE, SIG_IGN);
}

/* SIGHUP: the TLS certificate and key are read again; a bad file keeps the one in use. */
static void reload_tls(void) {
  char err[512];
  if (!http_tls_enabled())
    log_msg(LOG_INFO, "SIGHUP: nothing to reload (TLS_CERT_FILE is not set)");
  else if (http_tls_reload(err, sizeof err))
    log_msg(LOG_INFO, "SIGHUP: TLS certificate and key reloaded");
  else
    log_msg(LOG_ERROR, "SIGHUP: TLS reload failed, the certificate in use stays: %s", err);
}

/* Waits for a second stop signal during shutdown: an operator who asks twice wants the
 * process gone now, not after the in-flight requests (up to SHUTDOWN_GRACE_MS and more). */
static void *second_signal_main(void *arg) {
  const sigset_t *set = arg;
  int sig = 0;
  if (sigwait(set, &sig) != 0) return NULL;
  log_msg(LOG_ERROR, "signal %d again during shutdown: exiting now, in-flight requests dropped",
          sig);
  log_stop();
  _exit(128 + sig);
}

static void watch_second_signal(sigset_t *set) {
  pthread_t t;
  if (pthread_create(&t, NULL, second_signal_main, set) != 0) {
    log_msg(LOG_WARNING, "cannot watch for a second signal: only the first one is obeyed");
    return;
  }
  pthread_detach(t);
}

/* The list's cursor key (api/list_cursor.h), from the database's own random secret: every
 * instance on the database shares it, and neither a restart nor a change of API_SECRET_KEY or
 * ENCRYPTION_KEYS changes it. */
static bool load_cursor_key(struct app *app, char *err, size_t errlen) {
  unsigned char secret[STORE_SECRET_LEN];
  enum store_status st = store_secret(app->store, "list_cursor", secret);
  bool ok = st == STORE_OK && list_cursor_key(secret, sizeof secret, app->list_cursor_key);
  memset(secret, 0, sizeof secret);
  if (!ok)
    snprintf(err, errlen, "cannot read the list cursors' secret (table service_secrets): %s",
             st == STORE_NOT_FOUND ? "missing" : "database error");
  return ok;
}

static int serve(void) {
  static sigset_t stop_signals; /* read by the second-signal thread */
  block_signals(&stop_signals);
  struct config cfg;
  int rc = load_config(&cfg);
  if (rc != 0) {
    config_free(&cfg);
    return rc;
  }
  char err[512] = "out of memory";
  struct app app = {.cfg = &cfg};
  struct seal_ring *ring = NULL;
  if (!load_ring(&cfg, &ring)) {
    config_free(&cfg);
    return 2;
  }
  if (!load_keyrings(&cfg, &app)) {
    seal_ring_free(ring);
    config_free(&cfg);
    return 2;
  }
  if (!http_tls_init(&cfg, err, sizeof err)) {
    fprintf(stderr, "gensendrep: configuration error: %s\n", err);
    clear_keyrings(&app);
    seal_ring_free(ring);
    config_free(&cfg);
    return 2;
  }
  struct http_server *server = NULL;
  struct store_retention *retention = NULL;
  if (!log_start()) log_msg(LOG_WARNING, "no log output thread: lines are written directly");
  bool ok = (!*cfg.redis_url || (app.redis = redis_client_new(cfg.redis_url, err, sizeof err))) &&
            (app.store = open_store(&cfg, ring, err, sizeof err)) &&
            load_cursor_key(&app, err, sizeof err) && (app.health = store_health_new(app.store)) &&
            (app.audit = audit_recorder_start(app.store)) && app_docs_init(&app) &&
            (cfg.retention_days == 0 ||
             (retention = store_retention_start(app.store, cfg.retention_days))) &&
            el_health_start(&cfg, &app.elevenlabs, err, sizeof err) &&
            (app.spool = filewriter_new(SPOOL_QUEUE_BYTES)) &&
            (app.outbound = outbound_start(&cfg, app.store, err, sizeof err)) &&
            (server = http_server_start(&cfg, &app, app.redis, err, sizeof err));
  if (!ok) {
    log_stop(); /* the lines before this one first */
    fprintf(stderr, "gensendrep: %s\n", err);
    outbound_stop(app.outbound);
    el_health_stop(app.elevenlabs);
    filewriter_free(app.spool);
    store_retention_stop(retention);
    app_docs_free(&app);
    store_health_free(app.health);
    audit_recorder_stop(app.audit);
    store_close(app.store);
    seal_ring_free(ring);
    redis_client_free(app.redis);
    clear_keyrings(&app);
    http_tls_free();
    config_free(&cfg);
    return 1;
  }
  log_msg(LOG_INFO, "gensendrep %s listening on %s:%u (%s), storage %s", GSR_VERSION, cfg.host,
          http_server_port(server), http_tls_enabled() ? "HTTPS" : "HTTP", app.store->ops->name);
  sigset_t waited = stop_signals;
  sigaddset(&waited, SIGHUP);
  int sig = 0;
  while (sigwait(&waited, &sig) == 0 && sig == SIGHUP) reload_tls();
  log_msg(LOG_INFO,
          "signal %d: finishing in-flight requests, then stopping (a second one exits now)", sig);
  watch_second_signal(&stop_signals);
  if (!http_server_stop(server, SHUTDOWN_GRACE_MS)) {
    log_msg(LOG_ERROR, "shutdown timed out waiting for the database");
    log_stop();
    _exit(1);
  }
  outbound_stop(app.outbound); /* deliveries in flight get 2 s, then go out again after a start */
  el_health_stop(app.elevenlabs);  /* a check in flight is abandoned, not waited for */
  filewriter_free(app.spool);      /* after the server: every request has released its files */
  store_retention_stop(retention); /* waits for its batch in flight; before the store closes */
  store_health_free(app.health);
  audit_recorder_stop(app.audit); /* after the server (every request recorded), before the store */
  store_close(app.store);
  seal_ring_free(ring); /* after the store: its writer and readers seal and open with it */
  redis_client_free(app.redis);
  app_docs_free(&app);
  clear_keyrings(&app);
  http_tls_free(); /* after the server: no handshake is left */
  config_free(&cfg);
  log_msg(LOG_INFO, "stopped");
  log_stop();
  return 0;
}

static int run(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "serve";
  if (strcmp(cmd, "elevenlabs") == 0) return cmd_elevenlabs(argc, argv);
  if (strcmp(cmd, "keys") == 0) return cmd_keys(argc, argv);
  if (strcmp(cmd, "genkey") == 0) return cmd_genkey(argc, argv);
  if (strcmp(cmd, "reencrypt") == 0) return cmd_reencrypt(argc, argv);
  if (strcmp(cmd, "audit") == 0) return cmd_audit(argc, argv);
  if (strcmp(cmd, "analytics") == 0) return cmd_analytics(argc, argv);
  if (argc > 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
    printf("gensendrep %s\n", GSR_VERSION);
    return 0;
  }
  if (strcmp(cmd, "--config-markdown") == 0) {
    config_print_markdown(stdout);
    return 0;
  }
  if (strcmp(cmd, "migrate") == 0) return cmd_migrate();
  if (strcmp(cmd, "serve") == 0) return serve();
  fprintf(stderr, "gensendrep: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return 2;
}

int main(int argc, char **argv) {
  /* libcurl's global state is set up before any thread exists (it is not thread-safe). */
  if (!el_api_global_init()) {
    fprintf(stderr, "gensendrep: libcurl could not be initialised\n");
    return 1;
  }
  int rc = run(argc, argv);
  el_api_global_cleanup();
  return rc;
}
