/* What the endpoints put into the audit log beside their changes: who asked (copied into every
 * write's `who`), reads of conversation data and rejected authentications (through the
 * recorder, audit/audit.h). The store writes a change's own entry in its transaction. */
#include <string.h>

#include "api/app.h"
#include "audit/audit.h"
#include "core/utf8.h"

void api_who(const struct http_request *req, struct audit_who *who) {
  audit_who_set(who, http_request_id(req), http_request_key_id(req), http_request_client_ip(req));
}

/* A target the database takes as text: a conversation id as a webhook could have stored it. A
 * path naming anything else (too long, control characters) is recorded as none. */
static const char *usable_target(const char *id) {
  return id && api_conversation_id_storable(id) && utf8_valid(id, strlen(id)) ? id : NULL;
}

void api_audit_read(struct http_request *req, enum audit_action action, const char *target,
                    enum audit_outcome outcome) {
  struct app *app = http_request_app(req);
  struct audit_who who;
  api_who(req, &who);
  audit_record(app->audit, &who, action, usable_target(target), outcome);
}

/* Whether the request's path names a conversation (GET, /audio, /report, DELETE). */
static bool names_conversation(const struct route *route) {
  return route && (route->handler == api_conversations_get ||
                   route->handler == api_conversations_audio_get ||
                   route->handler == api_conversations_report_get ||
                   route->handler == api_conversations_delete);
}

/* Called on an HTTP thread as a 401 or 403 completes: the recorder only copies it. */
void api_auth_rejected(void *app_ptr, const struct http_request *req, unsigned status) {
  struct app *app = app_ptr;
  struct audit_who who;
  api_who(req, &who);
  const char *target = names_conversation(http_request_route(req))
                           ? usable_target(http_request_path_param(req))
                           : NULL;
  audit_record_rejected(app->audit, &who, target,
                        status == 403 ? AUDIT_FORBIDDEN : AUDIT_UNAUTHORIZED);
}
