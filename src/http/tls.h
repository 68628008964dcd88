/* Native TLS: the certificate chain and key of TLS_CERT_FILE / TLS_KEY_FILE, served by the
 * HTTP server through GnuTLS, reloaded on SIGHUP without downtime (how: tls.c). */
#ifndef GSR_TLS_H
#define GSR_TLS_H

#include <gnutls/abstract.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"

/* Loads TLS_CERT_FILE and TLS_KEY_FILE (before http_server_start, which then serves HTTPS);
 * true and nothing loaded when they are not set. False with err: one line naming the variable
 * at fault (a file that cannot be read, is not PEM, or a key that does not match), never the
 * key file's path or content. */
__attribute__((warn_unused_result)) bool http_tls_init(const struct config *cfg, char *err,
                                                       size_t errlen);
/* Whether http_tls_init loaded a certificate: the server speaks HTTPS only. */
bool http_tls_enabled(void);
/* Reads both files again: handshakes from now on get the new certificate, connections already
 * open are untouched. False with err when TLS is off or the files are bad: the certificate in
 * use stays. Call from one thread (the one that called http_tls_init). */
__attribute__((warn_unused_result)) bool http_tls_reload(char *err, size_t errlen);
/* Frees every set: only after the server has stopped. */
void http_tls_free(void);

/* For the server: GnuTLS's certificate retrieval callback (MHD_OPTION_HTTPS_CERT_CALLBACK). */
int http_tls_retrieve(gnutls_session_t session, const gnutls_datum_t *req_ca_rdn, int nreqs,
                      const gnutls_pk_algorithm_t *pk_algos, int pk_algos_length,
                      gnutls_pcert_st **pcert, unsigned int *pcert_length, gnutls_privkey_t *pkey);

#endif
