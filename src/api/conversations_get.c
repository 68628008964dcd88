/* GET /api/v1/conversations/{conversation_id}[?include=transcript] */
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "model/render.h"

/* include is a comma-separated list; "transcript" is the only member today. */
static bool parse_include(const char *include, bool *with_transcript) {
  *with_transcript = false;
  if (!include) return true;
  char buf[128];
  if (strlen(include) >= sizeof buf) return false;
  memcpy(buf, include, strlen(include) + 1);
  char *items[8];
  size_t n = config_split_list(buf, items, 8);
  for (size_t i = 0; i < n; i++) {
    if (strcmp(items[i], "transcript") != 0) return false;
    *with_transcript = true;
  }
  return true;
}

static void reply_store_error(struct http_request *req, enum store_status st) {
  if (st == STORE_NOT_FOUND)
    http_reply_error(req, API_ERR_NOT_FOUND, "Conversation not found", NULL);
  else if (st == STORE_RETRY)
    http_reply_error(req, API_ERR_UNAVAILABLE, NULL, NULL);
  else
    http_reply_error(req, API_ERR_INTERNAL, NULL, NULL);
}

void api_conversations_get(struct http_request *req) {
  struct app *app = http_request_app(req);
  const char *id = http_request_path_param(req);
  bool with_transcript;
  if (!parse_include(http_request_query(req, "include"), &with_transcript)) {
    http_reply_error(
        req, API_ERR_INVALID_PARAMETER, "include: the only supported value is \"transcript\"",
        json_pack("[{s:s,s:s}]", "field", "include", "issue", "must be \"transcript\""));
    return;
  }
  size_t len = strlen(id);
  if (len == 0 || len > MODEL_CONVERSATION_ID_MAX || !model_is_printable(id, len)) {
    reply_store_error(req, STORE_NOT_FOUND);
    return;
  }
  struct store_conversation c;
  enum store_status st = store_get(app->store, id, with_transcript, &c);
  if (st != STORE_OK) {
    reply_store_error(req, st);
    return;
  }
  if (!with_transcript) {
    http_reply_json(req, 200, render_conversation(&c));
    return;
  }
  size_t out_len;
  char *out = render_conversation_detail(&c, &out_len);
  free(c.body);
  if (out)
    http_reply_json_text(req, 200, out, out_len);
  else
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
}
