/* GET /dashboard, /dashboard/app.js and /dashboard/app.css: the dashboard page (README
 * "GET /dashboard"), its script and its style, embedded in the binary from web/dashboard/ at
 * build time. No data is in them and no key is needed to fetch them: the script signs in with
 * an API key the user types and reads the API with it.
 *
 * The Content-Security-Policy lets scripts and styles come only from this server (no inline
 * script, no eval), fetches go only to this server, and frames show only blob: documents: the
 * conversation reports the script fetched with the key. A blob: document keeps the policy of
 * the page that made it, so the policy also allows the report's one constant <style> by its
 * SHA-256 (model/report.h), computed once. */
#include <pthread.h>
#include <stdio.h>

#include "api/app.h"
#include "core/base64.h"
#include "ext/crypto.h"
#include "model/report.h"

#define CSP_HEAD "default-src 'none'; script-src 'self'; style-src 'self' 'sha256-"
#define CSP_TAIL                                                                         \
  "'; connect-src 'self'; img-src data:; frame-src blob:; base-uri 'none'; form-action " \
  "'none'; frame-ancestors 'none'"
#define SHA256_B64_LEN 44
/* http_reply_header keeps values up to 255 bytes (http/server_internal.h). */
_Static_assert(sizeof CSP_HEAD - 1 + SHA256_B64_LEN + sizeof CSP_TAIL <= 256,
               "the CSP must fit an extra header's value");

static char csp[256];
static pthread_once_t csp_once = PTHREAD_ONCE_INIT;

static void csp_make(void) {
  unsigned char digest[CRYPTO_SHA256_LEN];
  char b64[SHA256_B64_LEN + 1];
  crypto_sha256(report_style, report_style_len, digest);
  base64_encode(digest, sizeof digest, b64);
  snprintf(csp, sizeof csp, "%s%s%s", CSP_HEAD, b64, CSP_TAIL);
}

static void security_headers(struct http_request *req) {
  pthread_once(&csp_once, csp_make);
  http_reply_header(req, "Content-Security-Policy", csp);
  http_reply_header(req, "Referrer-Policy", "no-referrer");
  http_reply_header(req, "X-Frame-Options", "DENY");
  http_reply_header(req, "Cross-Origin-Opener-Policy", "same-origin");
}

void api_dashboard_get(struct http_request *req) {
  security_headers(req);
  http_reply_static(req, 200, "text/html; charset=utf-8", embedded_dashboard_html,
                    embedded_dashboard_html_len);
}

void api_dashboard_js_get(struct http_request *req) {
  security_headers(req);
  http_reply_static(req, 200, "text/javascript; charset=utf-8", embedded_dashboard_js,
                    embedded_dashboard_js_len);
}

void api_dashboard_css_get(struct http_request *req) {
  security_headers(req);
  http_reply_static(req, 200, "text/css; charset=utf-8", embedded_dashboard_css,
                    embedded_dashboard_css_len);
}
