/* Native TLS (TLS_CERT_FILE, TLS_KEY_FILE): the certificate chain and key libmicrohttpd serves
 * with GnuTLS, and their reload on SIGHUP without downtime.
 *
 * HOW THE CERTIFICATE REACHES A HANDSHAKE. libmicrohttpd 0.9.75 loads MHD_OPTION_HTTPS_MEM_CERT
 * and _KEY once, into credentials it owns and offers no way to replace while the daemon runs. So
 * the daemon gets MHD_OPTION_HTTPS_CERT_CALLBACK instead (GnuTLS's certificate retrieval
 * function, gnutls_certificate_retrieve_function2, called once in every handshake), at start-up
 * as after a reload: one path. It hands over the current credential set, an immutable {chain,
 * key} behind an atomic pointer. A reload builds a complete new set from the files, checks it
 * (the key must match the certificate) and swaps the pointer: handshakes that start afterwards
 * get the new certificate; established connections keep their session (their keys are
 * negotiated already) and are never touched. A reload that fails keeps the current set.
 *
 * LIFETIME OF A REPLACED SET. GnuTLS neither copies nor frees what the callback returns, and
 * uses it to write the server's first flight (Certificate, the signed key exchange), which it
 * builds right after the callback. The callback has no context argument and nothing tells us
 * when a handshake is over, so a replaced set is not freed at once: it is kept for longer than a
 * handshake can last. The connection guard cuts every connection whose first request headers
 * (the handshake comes before them) are not complete within HEADER_TIMEOUT_SECONDS of the
 * accept; a set replaced more than that plus a minute ago is freed at a later reload, and every
 * set when the server has stopped. Renewals are rare: what is kept is a few KiB each.
 *
 * One TLS server per process (the callback has no context). Load, reload and free run on one
 * thread (main); the callback runs on libmicrohttpd's threads and only reads the pointer. */
#include "http/tls.h"

#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/timeutil.h"

#define TLS_CHAIN_MAX 16
#define TLS_FILE_MAX (1024 * 1024) /* far beyond any PEM chain or key */
#define TLS_RETIRE_MARGIN_MS 60000.0

struct tls_creds {
  gnutls_pcert_st chain[TLS_CHAIN_MAX];
  unsigned nchain;
  gnutls_privkey_t key;
  double retired_ms;      /* when it was replaced (time_mono_ms) */
  struct tls_creds *next; /* replaced sets, newest first */
};

static _Atomic(struct tls_creds *) tls_current;
static struct tls_creds *tls_retired;
static char *tls_cert_path, *tls_key_path;
static double tls_keep_ms; /* how long a replaced set is kept */

static void creds_free(struct tls_creds *c) {
  if (!c) return;
  for (unsigned i = 0; i < c->nchain; i++) gnutls_pcert_deinit(&c->chain[i]);
  if (c->key) gnutls_privkey_deinit(c->key);
  free(c);
}

/* Reads a whole file; false with err saying why (errno's text, never the content). */
static bool read_file(const char *path, gnutls_datum_t *out, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot open the file: %s", strerror(errno));
    return false;
  }
  unsigned char *buf = malloc(TLS_FILE_MAX + 1);
  size_t n = buf ? fread(buf, 1, TLS_FILE_MAX + 1, f) : 0;
  bool failed = !buf || ferror(f);
  int saved = errno;
  fclose(f);
  if (failed || n > TLS_FILE_MAX || n == 0) {
    if (!buf)
      snprintf(err, errlen, "out of memory");
    else if (failed)
      snprintf(err, errlen, "cannot read the file: %s", strerror(saved));
    else
      snprintf(err, errlen, n ? "the file is larger than 1 MiB" : "the file is empty");
    if (buf) explicit_bzero(buf, TLS_FILE_MAX + 1);
    free(buf);
    return false;
  }
  buf[n] = '\0';
  out->data = buf;
  out->size = (unsigned)n;
  return true;
}

static void datum_wipe(gnutls_datum_t *d) {
  if (!d->data) return;
  explicit_bzero(d->data, d->size);
  free(d->data);
  d->data = NULL;
}

/* Whether key belongs to the chain's first certificate: GnuTLS's own check, made when a pair
 * goes into credentials (GNUTLS_E_CERTIFICATE_KEY_MISMATCH). */
static int check_pair(const gnutls_datum_t *cert, const gnutls_datum_t *key) {
  gnutls_certificate_credentials_t probe;
  if (gnutls_certificate_allocate_credentials(&probe) < 0) return GNUTLS_E_MEMORY_ERROR;
  int rc = gnutls_certificate_set_x509_key_mem2(probe, cert, key, GNUTLS_X509_FMT_PEM, NULL, 0);
  gnutls_certificate_free_credentials(probe);
  return rc < 0 ? rc : 0;
}

/* TLS_CERT_FILE's value as shown in an error: the path, unless it looks like PEM text pasted
 * into the variable instead of a path (which might be the key itself). */
static const char *shown_cert_path(void) {
  if (strchr(tls_cert_path, '\n') || strstr(tls_cert_path, "-----")) return "(not a file path)";
  return tls_cert_path;
}

/* A set from the two files; NULL with err naming the variable at fault. The key file's path
 * and content never appear in err (the variable might hold the key itself by mistake). */
static struct tls_creds *creds_load(char *err, size_t errlen) {
  char why[160];
  gnutls_datum_t cert = {0}, key = {0};
  struct tls_creds *c = calloc(1, sizeof *c);
  if (!c) {
    snprintf(err, errlen, "TLS_CERT_FILE: out of memory");
    return NULL;
  }
  if (!read_file(tls_cert_path, &cert, why, sizeof why)) {
    snprintf(err, errlen, "TLS_CERT_FILE: %.200s: %s", shown_cert_path(), why);
    goto fail;
  }
  if (!read_file(tls_key_path, &key, why, sizeof why)) {
    snprintf(err, errlen, "TLS_KEY_FILE: %s", why);
    goto fail;
  }
  c->nchain = TLS_CHAIN_MAX;
  int rc = gnutls_pcert_list_import_x509_raw(c->chain, &c->nchain, &cert, GNUTLS_X509_FMT_PEM,
                                             GNUTLS_X509_CRT_LIST_IMPORT_FAIL_IF_EXCEED);
  if (rc < 0 || c->nchain == 0) {
    c->nchain = 0;
    snprintf(err, errlen, "TLS_CERT_FILE: %.200s: not a PEM certificate chain (at most %d): %s",
             shown_cert_path(), TLS_CHAIN_MAX,
             gnutls_strerror(rc < 0 ? rc : GNUTLS_E_NO_CERTIFICATE_FOUND));
    goto fail;
  }
  if (gnutls_privkey_init(&c->key) < 0) {
    c->key = NULL;
    snprintf(err, errlen, "TLS_KEY_FILE: out of memory");
    goto fail;
  }
  rc = gnutls_privkey_import_x509_raw(c->key, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
  if (rc < 0) {
    snprintf(err, errlen,
             "TLS_KEY_FILE: not an unencrypted PEM private key (RSA, EC or Ed25519): %s",
             gnutls_strerror(rc));
    goto fail;
  }
  rc = check_pair(&cert, &key);
  if (rc < 0) {
    snprintf(err, errlen,
             rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH
                 ? "TLS_KEY_FILE: the key does not belong to the certificate of TLS_CERT_FILE"
                 : "TLS_KEY_FILE: the key cannot be used with the certificate of TLS_CERT_FILE: %s",
             gnutls_strerror(rc));
    goto fail;
  }
  datum_wipe(&cert);
  datum_wipe(&key);
  return c;
fail:
  datum_wipe(&cert);
  datum_wipe(&key);
  creds_free(c);
  return NULL;
}

bool http_tls_init(const struct config *cfg, char *err, size_t errlen) {
  if (!*cfg->tls_cert_file) return true;
  tls_cert_path = strdup(cfg->tls_cert_file);
  tls_key_path = strdup(cfg->tls_key_file);
  tls_keep_ms = (double)cfg->header_timeout * 1000.0 + TLS_RETIRE_MARGIN_MS;
  struct tls_creds *c = tls_cert_path && tls_key_path ? creds_load(err, errlen) : NULL;
  if (!c) {
    if (!tls_cert_path || !tls_key_path) snprintf(err, errlen, "TLS_CERT_FILE: out of memory");
    http_tls_free();
    return false;
  }
  atomic_store(&tls_current, c);
  return true;
}

bool http_tls_enabled(void) { return atomic_load(&tls_current) != NULL; }

bool http_tls_reload(char *err, size_t errlen) {
  struct tls_creds *old = atomic_load(&tls_current);
  if (!old) {
    snprintf(err, errlen, "TLS_CERT_FILE is not set: nothing to reload");
    return false;
  }
  struct tls_creds *c = creds_load(err, errlen);
  if (!c) return false;
  atomic_store(&tls_current, c);
  double now = time_mono_ms();
  old->retired_ms = now;
  /* Free the sets replaced long enough ago that no handshake can still hold them. */
  for (struct tls_creds **p = &tls_retired; *p;) {
    struct tls_creds *r = *p;
    if (now - r->retired_ms > tls_keep_ms) {
      *p = r->next;
      creds_free(r);
    } else {
      p = &r->next;
    }
  }
  old->next = tls_retired;
  tls_retired = old;
  return true;
}

int http_tls_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                      const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                      gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *pkey) {
  (void)session;
  (void)req_ca_rdn;
  (void)nreqs;
  (void)pk_algos;
  (void)pk_algos_length;
  struct tls_creds *c = atomic_load(&tls_current);
  if (!c) {
    *pcert_length = 0;
    return -1;
  }
  *pcert = c->chain;
  *pcert_length = c->nchain;
  *pkey = c->key;
  return 0;
}

void http_tls_free(void) {
  creds_free(atomic_exchange(&tls_current, NULL));
  while (tls_retired) {
    struct tls_creds *r = tls_retired;
    tls_retired = r->next;
    creds_free(r);
  }
  free(tls_cert_path);
  free(tls_key_path);
  tls_cert_path = tls_key_path = NULL;
}
