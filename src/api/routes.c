/* The one static route table. The last field is the scope a data key needs (http.h). */
#include "api/app.h"

const struct route api_routes[] = {
    {"POST", "/api/v1/webhook/conversation", MATCH_EXACT, api_webhook_conversation_post,
     ROUTE_BEARER, LIMIT_PER_IP, true, NULL, NULL, NULL, APIKEY_SCOPE_INGEST},
    {"POST", "/api/v1/webhook/elevenlabs", MATCH_EXACT, api_webhook_elevenlabs_post, ROUTE_SIGNED,
     LIMIT_PER_IP, true, NULL, "ElevenLabs-Signature", &api_elevenlabs_stream, APIKEY_SCOPE_INGEST},
    {"GET", "/api/v1/conversations", MATCH_EXACT, api_conversations_list, ROUTE_BEARER,
     LIMIT_PER_KEY, false, NULL, NULL, NULL, APIKEY_SCOPE_READ},
    /* Before the id routes, which would take "export" for a conversation id (the first match
     * wins, and "%65xport" spells the same path): GET of a conversation named "export" is the
     * export; its /audio, /report and DELETE still name it (README, Design decisions). */
    {"GET", "/api/v1/conversations/export", MATCH_EXACT, api_conversations_export, ROUTE_BEARER,
     LIMIT_PER_KEY, false, NULL, NULL, NULL, APIKEY_SCOPE_READ},
    {"GET", "/api/v1/conversations/", MATCH_PARAM_SUFFIX, api_conversations_audio_get, ROUTE_BEARER,
     LIMIT_PER_KEY, false, "/audio", NULL, NULL, APIKEY_SCOPE_READ},
    {"GET", "/api/v1/conversations/", MATCH_PARAM_SUFFIX, api_conversations_report_get,
     ROUTE_BEARER, LIMIT_PER_KEY, false, "/report", NULL, NULL, APIKEY_SCOPE_READ},
    {"GET", "/api/v1/conversations/", MATCH_PREFIX, api_conversations_get, ROUTE_BEARER,
     LIMIT_PER_KEY, false, NULL, NULL, NULL, APIKEY_SCOPE_READ},
    {"GET", "/api/v1/analytics", MATCH_EXACT, api_analytics_get, ROUTE_BEARER, LIMIT_PER_KEY, false,
     NULL, NULL, NULL, APIKEY_SCOPE_READ},
    {"POST", "/api/v1/keys", MATCH_EXACT, api_keys_post, ROUTE_BEARER, LIMIT_PER_KEY, true, NULL,
     NULL, NULL, APIKEY_SCOPE_ADMIN},
    {"GET", "/api/v1/keys", MATCH_EXACT, api_keys_list, ROUTE_BEARER, LIMIT_PER_KEY, false, NULL,
     NULL, NULL, APIKEY_SCOPE_ADMIN},
    {"DELETE", "/api/v1/keys/", MATCH_PREFIX, api_keys_delete, ROUTE_BEARER, LIMIT_PER_KEY, false,
     NULL, NULL, NULL, APIKEY_SCOPE_ADMIN},
    {"GET", "/api/v1/audit", MATCH_EXACT, api_audit_get, ROUTE_BEARER, LIMIT_PER_KEY, false, NULL,
     NULL, NULL, 0},
    /* Webhook subscriptions: admin only, like the audit log. */
    {"POST", "/api/v1/subscriptions", MATCH_EXACT, api_subscriptions_post, ROUTE_BEARER,
     LIMIT_PER_KEY, true, NULL, NULL, NULL, 0},
    {"GET", "/api/v1/subscriptions", MATCH_EXACT, api_subscriptions_list, ROUTE_BEARER,
     LIMIT_PER_KEY, false, NULL, NULL, NULL, 0},
    {"GET", "/api/v1/subscriptions/", MATCH_PARAM_SUFFIX, api_subscriptions_deliveries_get,
     ROUTE_BEARER, LIMIT_PER_KEY, false, "/deliveries", NULL, NULL, 0},
    {"POST", "/api/v1/subscriptions/", MATCH_PARAM_SUFFIX, api_subscriptions_replay_post,
     ROUTE_BEARER, LIMIT_PER_KEY, false, "/replay", NULL, NULL, 0},
    {"GET", "/api/v1/subscriptions/", MATCH_PARAM_SUFFIX, api_subscriptions_get, ROUTE_BEARER,
     LIMIT_PER_KEY, false, "", NULL, NULL, 0},
    {"PATCH", "/api/v1/subscriptions/", MATCH_PARAM_SUFFIX, api_subscriptions_patch, ROUTE_BEARER,
     LIMIT_PER_KEY, true, "", NULL, NULL, 0},
    {"DELETE", "/api/v1/subscriptions/", MATCH_PARAM_SUFFIX, api_subscriptions_delete, ROUTE_BEARER,
     LIMIT_PER_KEY, false, "", NULL, NULL, 0},
    /* The suffix "" keeps a raw '/' out of the id: DELETE .../{id}/audio is 405, never the
     * erasure of a conversation named "{id}/audio" (an id with '/' is written %2F). */
    {"DELETE", "/api/v1/conversations/", MATCH_PARAM_SUFFIX, api_conversations_delete, ROUTE_BEARER,
     LIMIT_PER_KEY, false, "", NULL, NULL, APIKEY_SCOPE_DELETE},
    {"GET", "/api/v1/health", MATCH_EXACT, api_health_get, ROUTE_PUBLIC, LIMIT_NONE, false, NULL,
     NULL, NULL, 0},
    /* Open unless METRICS_TOKEN is set: the endpoint checks that token itself. */
    {"GET", "/metrics", MATCH_EXACT, api_metrics_get, ROUTE_PUBLIC, LIMIT_NONE, false, NULL, NULL,
     NULL, 0},
    {"GET", "/openapi.json", MATCH_EXACT, api_openapi_get, ROUTE_PUBLIC, LIMIT_NONE, false, NULL,
     NULL, NULL, 0},
    {"GET", "/docs", MATCH_EXACT, api_docs_swagger_get, ROUTE_PUBLIC, LIMIT_NONE, false, NULL, NULL,
     NULL, 0},
    {"GET", "/redoc", MATCH_EXACT, api_docs_redoc_get, ROUTE_PUBLIC, LIMIT_NONE, false, NULL, NULL,
     NULL, 0},
    {"GET", "/docs/assets/", MATCH_PREFIX, api_docs_asset_get, ROUTE_PUBLIC, LIMIT_NONE, false,
     NULL, NULL, NULL, 0},
    /* The dashboard holds no data: the script signs in with a key and reads the API. */
    {"GET", "/dashboard", MATCH_EXACT, api_dashboard_get, ROUTE_PUBLIC, LIMIT_NONE, false, NULL,
     NULL, NULL, 0},
    {"GET", "/dashboard/app.js", MATCH_EXACT, api_dashboard_js_get, ROUTE_PUBLIC, LIMIT_NONE, false,
     NULL, NULL, NULL, 0},
    {"GET", "/dashboard/app.css", MATCH_EXACT, api_dashboard_css_get, ROUTE_PUBLIC, LIMIT_NONE,
     false, NULL, NULL, NULL, 0},
};
const size_t api_route_count = sizeof api_routes / sizeof api_routes[0];
