/* /openapi.json, /docs (Swagger UI), /redoc (ReDoc) and, with DOCS_ASSETS_DIR, their
 * script and style files under /docs/assets/. Pages load assets from a CDN by default,
 * as FastAPI does: exact versions, each file with its Subresource Integrity hash (the pages
 * share the dashboard's origin, so a changed CDN file could read the dashboard's key; the
 * browser refuses a file whose hash differs). The hashes are sha384 of the files in the npm
 * tarballs (jsdelivr serves npm files byte for byte); scripts/docs-assets.sh pins the same
 * versions. DOCS_ASSETS_URL and DOCS_ASSETS_DIR are the operator's own files: no hash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"

#define CDN_SWAGGER "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.35.0"
#define CDN_REDOC "https://cdn.jsdelivr.net/npm/redoc@2.5.4/bundles"
#define SRI(hash) " integrity=\"sha384-" hash "\" crossorigin=\"anonymous\""
#define SRI_SWAGGER_JS SRI("gjRm0bEPMeTmMh5jT2cHccIwCUZSTd8YC+j0d0sXw0MdGEfScduGpSyF3ZSSLkX9")
#define SRI_SWAGGER_CSS SRI("WlYgdmXYOOBWL5apwjDEZwN+U3HmXSSu5R6V5aGxEcf7z+KuRNwBhoxKVN1i3D5I")
#define SRI_REDOC_JS SRI("w447zOpYfw/1Tv/5AK9NfHTlQIqE3RVR6KY62jCyy9zNDgO64cMwGGP1Fj0zJVf5")
#define ASSET_MAX_BYTES (16 * 1024 * 1024)

struct asset {
  const char *name;
  const char *type;
};

static const struct asset assets[] = {
    {"swagger-ui-bundle.js", "text/javascript; charset=utf-8"},
    {"swagger-ui.css", "text/css; charset=utf-8"},
    {"redoc.standalone.js", "text/javascript; charset=utf-8"},
};

/* Replaces each {{NAME}} in tmpl with the matching value. Returns a malloc'ed string. */
static char *render_template(const char *tmpl, size_t tlen, const char *const *names,
                             const char *const *values, size_t n, size_t *out_len) {
  size_t cap = tlen + 1;
  for (size_t i = 0; i < n; i++) cap += 4 * strlen(values[i]); /* each used a few times at most */
  char *out = malloc(cap);
  if (!out) return NULL;
  size_t pos = 0;
  for (size_t i = 0; i < tlen;) {
    bool replaced = false;
    for (size_t k = 0; k < n && !replaced; k++) {
      size_t nl = strlen(names[k]), vl = strlen(values[k]);
      if (i + nl <= tlen && memcmp(tmpl + i, names[k], nl) == 0 && pos + vl < cap) {
        memcpy(out + pos, values[k], vl);
        pos += vl;
        i += nl;
        replaced = true;
      }
    }
    if (!replaced && pos + 1 < cap)
      out[pos++] = tmpl[i++];
    else if (!replaced)
      i++;
  }
  out[pos] = '\0';
  *out_len = pos;
  return out;
}

bool app_docs_init(struct app *app) {
  const struct config *cfg = app->cfg;
  char swagger[512], redoc[512], swagger_css[512];
  const char *sri_swagger = "", *sri_swagger_css = "", *sri_redoc = "";
  if (*cfg->docs_assets_dir) {
    snprintf(swagger, sizeof swagger, "/docs/assets/swagger-ui-bundle.js");
    snprintf(swagger_css, sizeof swagger_css, "/docs/assets/swagger-ui.css");
    snprintf(redoc, sizeof redoc, "/docs/assets/redoc.standalone.js");
  } else {
    const char *base = *cfg->docs_assets_url ? cfg->docs_assets_url : NULL;
    if (!base) {
      sri_swagger = SRI_SWAGGER_JS;
      sri_swagger_css = SRI_SWAGGER_CSS;
      sri_redoc = SRI_REDOC_JS;
    }
    size_t bl = base ? strlen(base) : 0;
    while (bl && base[bl - 1] == '/') bl--;
    snprintf(swagger, sizeof swagger, "%.*s/swagger-ui-bundle.js",
             (int)(base ? bl : strlen(CDN_SWAGGER)), base ? base : CDN_SWAGGER);
    snprintf(swagger_css, sizeof swagger_css, "%.*s/swagger-ui.css",
             (int)(base ? bl : strlen(CDN_SWAGGER)), base ? base : CDN_SWAGGER);
    snprintf(redoc, sizeof redoc, "%.*s/redoc.standalone.js", (int)(base ? bl : strlen(CDN_REDOC)),
             base ? base : CDN_REDOC);
  }
  const char *names[] = {"{{SWAGGER_JS}}",     "{{SWAGGER_CSS}}",     "{{REDOC_JS}}",
                         "{{SWAGGER_JS_SRI}}", "{{SWAGGER_CSS_SRI}}", "{{REDOC_JS_SRI}}"};
  const char *values[] = {swagger, swagger_css, redoc, sri_swagger, sri_swagger_css, sri_redoc};
  app->swagger_html =
      render_template((const char *)embedded_swagger_html, embedded_swagger_html_len, names, values,
                      6, &app->swagger_len);
  app->redoc_html = render_template((const char *)embedded_redoc_html, embedded_redoc_html_len,
                                    names, values, 6, &app->redoc_len);
  return app->swagger_html && app->redoc_html;
}

void app_docs_free(struct app *app) {
  free(app->swagger_html);
  free(app->redoc_html);
  app->swagger_html = app->redoc_html = NULL;
}

void api_openapi_get(struct http_request *req) {
  http_reply_static(req, 200, "application/json", embedded_openapi_json, embedded_openapi_json_len);
}

void api_docs_swagger_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  http_reply_static(req, 200, "text/html; charset=utf-8", app->swagger_html, app->swagger_len);
}

void api_docs_redoc_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  http_reply_static(req, 200, "text/html; charset=utf-8", app->redoc_html, app->redoc_len);
}

/* Reads a whole small file; NULL when missing or too large. */
static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  if (fseek(f, 0, SEEK_END) == 0) {
    long size = ftell(f);
    if (size >= 0 && size <= ASSET_MAX_BYTES && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)size + 1)) != NULL) {
      *len = fread(buf, 1, (size_t)size, f);
      if (*len != (size_t)size) {
        free(buf);
        buf = NULL;
      }
    }
  }
  fclose(f);
  return buf;
}

/* Only the three known file names are served: nothing else in the folder is reachable. */
void api_docs_asset_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  const char *name = http_request_path_param(req);
  const struct asset *a = NULL;
  for (size_t i = 0; i < sizeof assets / sizeof assets[0]; i++)
    if (strcmp(assets[i].name, name) == 0) a = &assets[i];
  if (!a || !*app->cfg->docs_assets_dir) {
    http_reply_error(req, API_ERR_NOT_FOUND, "No such asset", NULL);
    return;
  }
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", app->cfg->docs_assets_dir, a->name);
  size_t len = 0;
  char *data = read_file(path, &len);
  if (!data) {
    http_reply_error(req, API_ERR_NOT_FOUND,
                     "Asset not found in DOCS_ASSETS_DIR (run make docs-assets)", NULL);
    return;
  }
  http_reply_owned(req, 200, a->type, data, len);
}
