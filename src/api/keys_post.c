/* POST /api/v1/keys (admin): {"name","scopes":[...],"accounts":[...],"expiresAt"} makes a key
 * and answers 201 with it, once committed. The key string is in this answer only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/timeutil.h"

struct create_job {
  struct store_write write;
  struct apikey_record rec;
  char key[APIKEY_LEN + 1];
  struct http_request *req;
};

static void job_free(void *p) {
  struct create_job *job = p;
  memset(job->key, 0, sizeof job->key);
  free(job);
}

static void on_stored(struct store_write *w, void *cls) {
  (void)w;
  struct create_job *job = cls;
  http_request_resume(job->req);
}

static void on_resume(struct http_request *req) {
  struct create_job *job = http_request_state(req);
  if (job->write.status != STORE_OK) {
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE, "The key could not be stored; retry", NULL);
    return;
  }
  json_t *obj = api_key_render(&job->rec);
  json_object_set_new(obj, "key", json_string(job->key));
  http_reply_json(req, 201, obj);
}

static void problem(json_t *problems, const char *field, const char *issue) {
  json_array_append_new(problems, json_pack("{s:s,s:s}", "field", field, "issue", issue));
}

/* Fills rec from the body; every problem is added with its field path. */
static void read_body(json_t *body, struct apikey_record *rec, json_t *problems) {
  char field[48];
  json_t *name = json_object_get(body, "name");
  const char *why;
  if (!json_is_string(name))
    problem(problems, "name", "is required and must be a string");
  else if ((why = apikey_text_problem(json_string_value(name), APIKEY_NAME_MAX)))
    problem(problems, "name", why);
  else
    snprintf(rec->name, sizeof rec->name, "%s", json_string_value(name));
  json_t *scopes = json_object_get(body, "scopes"), *v;
  size_t i;
  if (!json_is_array(scopes) || json_array_size(scopes) == 0) {
    problem(problems, "scopes", "is required: a non-empty array of ingest, read, delete, admin");
  } else {
    /* at most MODEL_PROBLEMS_MAX listed, the rest counted (200,000 bad scopes would otherwise
     * be answered with 16 MB of details) */
    size_t bad = 0;
    json_array_foreach(scopes, i, v) {
      unsigned bit =
          json_is_string(v) ? apikey_scope_named(json_string_value(v), json_string_length(v)) : 0;
      snprintf(field, sizeof field, "scopes[%zu]", i);
      if (!bit) {
        if (bad++ < MODEL_PROBLEMS_MAX)
          problem(problems, field, "must be one of ingest, read, delete, admin");
      } else {
        rec->scopes |= bit;
      }
    }
    if (bad > MODEL_PROBLEMS_MAX) {
      char more[64];
      snprintf(more, sizeof more, "%zu more problems not listed", bad - MODEL_PROBLEMS_MAX);
      problem(problems, "", more);
    }
  }
  json_t *accounts = json_object_get(body, "accounts");
  if (accounts && !json_is_null(accounts)) {
    if (!json_is_array(accounts)) {
      problem(problems, "accounts", "must be an array of account ids");
    } else if (json_array_size(accounts) > APIKEY_ACCOUNTS_MAX) {
      problem(problems, "accounts", "holds more than 16 accounts");
    } else {
      json_array_foreach(accounts, i, v) {
        snprintf(field, sizeof field, "accounts[%zu]", i);
        if (!json_is_string(v))
          problem(problems, field, "must be a string");
        else if ((why = apikey_text_problem(json_string_value(v), APIKEY_ACCOUNT_MAX)))
          problem(problems, field, why);
        else if (!apikey_add_account(rec, json_string_value(v)))
          problem(problems, field, "holds more than 16 accounts");
      }
    }
  }
  if (rec->naccounts && (rec->scopes & ~APIKEY_SCOPES_BOUND))
    problem(problems, "accounts",
            "a key bound to accounts may only have the scopes read and delete (a webhook names "
            "its own account: ingest and admin keys see every account)");
  json_t *expires = json_object_get(body, "expiresAt");
  if (expires && !json_is_null(expires)) {
    int64_t us = 0;
    if (!json_is_string(expires) ||
        !time_parse_rfc3339(json_string_value(expires), json_string_length(expires), &us) ||
        us <= 0)
      problem(problems, "expiresAt", "must be an RFC 3339 date-time such as 2027-01-01T00:00:00Z");
    else
      rec->expires_us = us;
  }
}

void api_keys_post(struct http_request *req) {
  if (!api_keys_manager_ok(req)) return;
  struct app *app = http_request_app(req);
  json_t *body = api_read_object(req);
  if (!body) return;
  struct create_job *job = calloc(1, sizeof *job);
  json_t *problems = json_array();
  if (!job || !problems) {
    free(job);
    json_decref(problems);
    json_decref(body);
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  read_body(body, &job->rec, problems);
  json_decref(body);
  if (json_array_size(problems) > 0) {
    free(job);
    http_reply_error(req, API_ERR_VALIDATION, NULL, problems);
    return;
  }
  json_decref(problems);
  if (!api_key_generate(&job->rec, job->key)) {
    free(job);
    http_reply_error(req, API_ERR_UNAVAILABLE, "Random number generator failed", NULL);
    return;
  }
  job->req = req;
  job->write.kind = STORE_WRITE_KEY_CREATE;
  job->write.key = &job->rec;
  api_who(req, &job->write.who);
  job->write.audio_fd = -1;
  job->write.done = on_stored;
  job->write.done_cls = job;
  http_request_suspend(req, on_resume, job, job_free);
  store_submit(app->store, &job->write);
}
