/* Application state shared by the endpoints, and the endpoint entry points. */
#ifndef GSR_APP_H
#define GSR_APP_H

#include <string.h>

#include "core/config.h"
#include "http/http.h"
#include "sig/sig.h"
#include "api/list_cursor.h"
#include "store/store.h"

struct store_health;
struct el_health;
struct audit_recorder;
struct outbound;

struct app {
  const struct config *cfg;
  struct store *store;
  struct store_health *health;  /* coalesced health checks of store (store/health.h) */
  struct redis_client *redis;   /* NULL without REDIS_URL */
  struct el_health *elevenlabs; /* the ElevenLabs API check; NULL without ELEVENLABS_API_KEY */
  struct filewriter *spool;     /* writes temporary files for the HTTP threads (core/) */
  struct audit_recorder *audit; /* read and rejection entries (audit/audit.h); NULL: none */
  struct outbound *outbound;    /* the outbox dispatcher (outbound/outbound.h); NULL: none */
  /* signature secrets, loaded at start-up (empty rings: that scheme is off) */
  struct sig_keyring webhook_keys;    /* WEBHOOK_SECRET: Standard Webhooks on the seed webhook */
  struct sig_keyring elevenlabs_keys; /* ELEVENLABS_WEBHOOK_SECRET: ElevenLabs-Signature */
  /* the list's cursor key (list_cursor.h), from the database's secret at start-up */
  unsigned char list_cursor_key[LIST_CURSOR_KEY_LEN];
  /* docs pages rendered once at start-up (owned) */
  char *swagger_html;
  size_t swagger_len;
  char *redoc_html;
  size_t redoc_len;
};

/* Whether a key bound to accounts[0..n) (n 0: unbound) may see a conversation of account
 * ("" for one without account). */
static inline bool api_account_visible(const char *const *accounts, size_t n, const char *account) {
  if (n == 0) return true;
  for (size_t i = 0; i < n; i++)
    if (strcmp(accounts[i], account) == 0) return true;
  return false;
}

/* Whether id could name a stored conversation (webhooks refuse any other id): 1 to
 * MODEL_CONVERSATION_ID_MAX bytes, no control characters. No database read is needed otherwise. */
static inline bool api_conversation_id_storable(const char *id) {
  size_t len = strlen(id);
  return len > 0 && len <= MODEL_CONVERSATION_ID_MAX && model_is_printable(id, len);
}

/* The 400 for an id the database refused (STORE_CLIENT): bytes it cannot compare. */
void api_reply_conversation_id_refused(struct http_request *req);

/* The 200 of a stored webhook (both webhook endpoints); conversation_id NULL answers null. */
void api_reply_webhook_accepted(struct http_request *req, const char *conversation_id,
                                const char *webhook_id, int64_t processed_us);

/* API keys kept as data (keys.c): makes a new key for rec (id, secret digest, created time
 * set; the caller sets the rest) and writes the key string (shown once) into key. */
__attribute__((warn_unused_result)) bool api_key_generate(struct apikey_record *rec,
                                                          char key[APIKEY_LEN + 1]);
/* The keys endpoints are for keys that see every account: a key bound to accounts could
 * otherwise mint an unbound key (or list and revoke other accounts' keys). Replies 403 and
 * returns false for a bound key. */
bool api_keys_manager_ok(struct http_request *req);
/* A key as the API shows it (never its secret or digest). */
json_t *api_key_render(const struct apikey_record *rec);

/* The audit log (audit.c). Who asked: the request's id, key id and client address. */
void api_who(const struct http_request *req, struct audit_who *who);
/* Records a read of conversation data (or an erasure of nothing) by req through the recorder:
 * target the conversation id (NULL, or one that could not be stored: none). */
void api_audit_read(struct http_request *req, enum audit_action action, const char *target,
                    enum audit_outcome outcome);

/* Renders the docs pages from the embedded templates; false when out of memory. */
__attribute__((warn_unused_result)) bool app_docs_init(struct app *app);
void app_docs_free(struct app *app);

void api_metrics_get(struct http_request *req);
void api_webhook_conversation_post(struct http_request *req);
void api_webhook_elevenlabs_post(struct http_request *req);
extern const struct route_stream api_elevenlabs_stream;
void api_conversations_audio_get(struct http_request *req);
void api_conversations_report_get(struct http_request *req);
void api_conversations_get(struct http_request *req);
void api_conversations_delete(struct http_request *req);
void api_conversations_list(struct http_request *req);
void api_conversations_export(struct http_request *req);
void api_analytics_get(struct http_request *req);
void api_health_get(struct http_request *req);
void api_openapi_get(struct http_request *req);
void api_docs_swagger_get(struct http_request *req);
void api_docs_redoc_get(struct http_request *req);
void api_docs_asset_get(struct http_request *req);
void api_dashboard_get(struct http_request *req);
void api_dashboard_js_get(struct http_request *req);
void api_dashboard_css_get(struct http_request *req);
void api_keys_post(struct http_request *req);
void api_keys_list(struct http_request *req);
void api_keys_delete(struct http_request *req);
void api_audit_get(struct http_request *req);
void api_subscriptions_post(struct http_request *req);
void api_subscriptions_list(struct http_request *req);
void api_subscriptions_get(struct http_request *req);
void api_subscriptions_patch(struct http_request *req);
void api_subscriptions_delete(struct http_request *req);
void api_subscriptions_deliveries_get(struct http_request *req);
void api_subscriptions_replay_post(struct http_request *req);

/* Subscriptions (subscriptions.c). Whether id could name one ("sub_" + 24 lowercase hex). */
bool api_sub_id_valid(const char *id);
/* Subscriptions are for keys that see every account: replies 403 and returns false for a key
 * bound to accounts. */
bool api_sub_manager_ok(struct http_request *req);
/* The answer for a store status other than STORE_OK (404 for STORE_NOT_FOUND, 503 with
 * Retry-After for STORE_RETRY). */
void api_sub_reply_store(struct http_request *req, enum store_status st);

/* Embedded files (generated at build time). */
extern const unsigned char embedded_openapi_json[];
extern const size_t embedded_openapi_json_len;
extern const unsigned char embedded_swagger_html[];
extern const size_t embedded_swagger_html_len;
extern const unsigned char embedded_redoc_html[];
extern const size_t embedded_redoc_html_len;
extern const unsigned char embedded_dashboard_html[];
extern const size_t embedded_dashboard_html_len;
extern const unsigned char embedded_dashboard_js[];
extern const size_t embedded_dashboard_js_len;
extern const unsigned char embedded_dashboard_css[];
extern const size_t embedded_dashboard_css_len;

/* Query parameters (params.c). An optional decimal integer in [min, max] (absent: def); false
 * for anything else. */
__attribute__((warn_unused_result)) bool api_query_int(const char *s, int64_t min, int64_t max,
                                                       int64_t def, int64_t *out);
/* An optional RFC 3339 date-time with its offset (*has false when s is NULL); an offset's '+'
 * that arrived unencoded (a space) is taken as '+'. False when s is not one. */
__attribute__((warn_unused_result)) bool api_query_instant(const char *s, bool *has, int64_t *out);
/* 400 INVALID_PARAMETER "<field> <issue>" with details [{"field", "issue"}]. */
void api_bad_param(struct http_request *req, const char *field, const char *issue);
/* The request's body as a JSON object (duplicate keys refused), or NULL after answering 400 with
 * where it is not JSON (as the webhook says it), or that it is JSON but no object. */
json_t *api_read_object(struct http_request *req);

#endif
