/* API keys kept as data: what the HTTP layer asks of the application (reading a key, recording
 * its use), making a key, and showing one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/timeutil.h"
#include "ext/crypto.h"

int api_key_lookup(void *app_ptr, const char *id, struct apikey_record *out) {
  struct app *app = app_ptr;
  switch (store_key_get(app->store, id, out)) {
    case STORE_OK:
      return 1;
    case STORE_NOT_FOUND:
      return 0;
    case STORE_RETRY:
    case STORE_CLIENT:
    case STORE_HARD:
      break;
  }
  return -1;
}

static void touch_done(struct store_write *w, void *cls) {
  (void)cls;
  free(w);
}

void api_key_touch(void *app_ptr, const char *id, int64_t now_us) {
  struct app *app = app_ptr;
  struct store_write *w = calloc(1, sizeof *w);
  if (!w) return; /* a last-used time is not worth failing a request for */
  w->kind = STORE_WRITE_KEY_TOUCH;
  snprintf(w->key_id, sizeof w->key_id, "%s", id);
  w->key_at_us = now_us;
  w->done = touch_done;
  w->audio_fd = -1;
  store_submit(app->store, w);
}

bool api_key_generate(struct apikey_record *rec, char key[APIKEY_LEN + 1]) {
  char secret[APIKEY_SECRET_LEN + 1];
  if (!crypto_random_hex(rec->id, sizeof rec->id, APIKEY_ID_LEN / 2) ||
      !crypto_random_hex(secret, sizeof secret, APIKEY_SECRET_LEN / 2))
    return false;
  crypto_sha256(secret, APIKEY_SECRET_LEN, rec->secret_sha256);
  snprintf(key, APIKEY_LEN + 1, APIKEY_PREFIX "%s_%s", rec->id, secret);
  memset(secret, 0, sizeof secret);
  rec->created_us = time_now_us();
  return true;
}

bool api_keys_manager_ok(struct http_request *req) {
  size_t n;
  if (!http_request_accounts(req, &n)) return true;
  http_reply_error(req, API_ERR_FORBIDDEN, "A key bound to accounts cannot manage API keys", NULL);
  return false;
}

static json_t *time_or_null(int64_t us) {
  char buf[40];
  return us && time_format_us(us, false, buf, sizeof buf) ? json_string(buf) : json_null();
}

json_t *api_key_render(const struct apikey_record *rec) {
  json_t *scopes = json_array(), *accounts = json_array();
  for (unsigned i = 0; i < 4; i++)
    if (rec->scopes & (1u << i)) json_array_append_new(scopes, json_string(apikey_scope_name(i)));
  for (size_t i = 0; i < rec->naccounts; i++)
    json_array_append_new(accounts, json_string(rec->accounts[i]));
  return json_pack("{s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o}", "id", rec->id, "name", rec->name, "scopes",
                   scopes, "accounts", accounts, "createdAt", time_or_null(rec->created_us),
                   "expiresAt", time_or_null(rec->expires_us), "lastUsedAt",
                   time_or_null(rec->last_used_us), "revokedAt", time_or_null(rec->revoked_us));
}
