/* Webhook subscriptions (admin): POST/GET /api/v1/subscriptions, GET/PATCH/DELETE
 * /api/v1/subscriptions/{id}. The body is checked on the event thread (model/outbox.h); the
 * URL's addresses (SSRF, a DNS lookup) and every store read and write are checked and done on
 * an offload thread. The store writes each change's audit entry (subscription.created,
 * .updated, .deleted) in the change's own transaction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "core/base64.h"
#include "core/timeutil.h"
#include "ext/crypto.h"
#include "outbound/outbound.h"

enum sub_op { OP_CREATE, OP_LIST, OP_GET, OP_PATCH, OP_DELETE };

struct sub_job {
  enum sub_op op;
  struct store *store;
  struct outbound *outbound;
  bool allow_private;
  char id[OUTBOX_SUB_ID_MAX];
  json_t *body; /* PATCH: the changes (owned) */
  struct subscription sub;
  struct store_write write;
  /* result */
  enum store_status status;
  bool url_refused;
  bool unreadable_refused; /* PATCH of an unreadable subscription without url and accountId */
  char why[600];
  struct subscription *items; /* OP_LIST (owned) */
  size_t count;
};

static void job_free(void *p) {
  struct sub_job *job = p;
  json_decref(job->body);
  free(job->items);
  memset(job->sub.secret, 0, sizeof job->sub.secret);
  free(job);
}

bool api_sub_id_valid(const char *id) {
  if (strncmp(id, "sub_", 4) != 0 || strlen(id) != 4 + 24) return false;
  for (const char *c = id + 4; *c; c++)
    if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return false;
  return true;
}

bool api_sub_manager_ok(struct http_request *req) {
  size_t n;
  if (!http_request_accounts(req, &n)) return true;
  http_reply_error(req, API_ERR_FORBIDDEN, "A key bound to accounts cannot manage subscriptions",
                   NULL);
  return false;
}

void api_sub_reply_store(struct http_request *req, enum store_status st) {
  switch (st) {
    case STORE_NOT_FOUND:
      http_reply_error(req, API_ERR_NOT_FOUND, "Subscription not found", NULL);
      return;
    case STORE_CLIENT:
      http_reply_error(req, API_ERR_VALIDATION, "The database refused this data", NULL);
      return;
    case STORE_HARD:
      http_reply_error(req, API_ERR_INTERNAL, NULL, NULL);
      return;
    case STORE_OK:
    case STORE_RETRY:
      break;
  }
  http_reply_header(req, "Retry-After", "1");
  http_reply_error(req, API_ERR_UNAVAILABLE, NULL, NULL);
}

static struct sub_job *job_new(struct http_request *req, enum sub_op op) {
  struct app *app = http_request_app(req);
  struct sub_job *job = calloc(1, sizeof *job);
  if (!job) {
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return NULL;
  }
  job->op = op;
  job->store = app->store;
  job->outbound = app->outbound;
  job->allow_private = app->cfg->delivery_allow_private_networks;
  job->write.audio_fd = -1;
  api_who(req, &job->write.who);
  return job;
}

/* Offload thread: the SSRF rule for the URL (a DNS lookup). */
static bool url_allowed(struct sub_job *job) {
  char why[512] = "";
  if (outbound_url_allowed(job->sub.url, job->allow_private, why, sizeof why)) return true;
  job->url_refused = true;
  snprintf(job->why, sizeof job->why, "is refused: %s",
           why[0] ? why
                  : "it resolves to a loopback, private or link-local address (deliveries to "
                    "those need DELIVERY_ALLOW_PRIVATE_NETWORKS=true)");
  return false;
}

static void put(struct sub_job *job, bool create) {
  job->write.kind = STORE_WRITE_SUB_PUT;
  job->write.sub = &job->sub;
  job->write.sub_create = create;
  store_submit_wait(job->store, &job->write);
  job->status = job->write.status;
}

/* The members the PATCH body names (store.h STORE_SUB_*; enabled apart). */
static unsigned patch_fields(json_t *body) {
  static const struct {
    const char *name;
    unsigned bit;
  } members[] = {{"url", STORE_SUB_URL},
                 {"eventTypes", STORE_SUB_TYPES},
                 {"accountId", STORE_SUB_ACCOUNT},
                 {"maxPerSecond", STORE_SUB_MAX_PER_SECOND}};
  unsigned fields = 0;
  for (size_t i = 0; i < sizeof members / sizeof members[0]; i++)
    if (json_object_get(body, members[i].name)) fields |= members[i].bit;
  return fields;
}

/* Offload thread. The store changes only the members the body names, in one statement (two
 * PATCHes of different members at once keep both); the answer is the subscription read after. */
static void patch(struct sub_job *job) {
  job->status = store_sub_get(job->store, job->id, &job->sub);
  if (job->status != STORE_OK) return;
  /* a URL or account that does not open is replaced whole (both sealed again) or not at all */
  if (job->sub.unreadable && (patch_fields(job->body) & (STORE_SUB_URL | STORE_SUB_ACCOUNT)) !=
                                 (STORE_SUB_URL | STORE_SUB_ACCOUNT)) {
    job->unreadable_refused = true;
    return;
  }
  char old_url[sizeof job->sub.url];
  memcpy(old_url, job->sub.url, sizeof old_url);
  json_t *problems = subscription_from_json(job->body, false, &job->sub);
  if (problems) { /* checked before: cannot happen */
    json_decref(problems);
    job->status = STORE_HARD;
    return;
  }
  if (strcmp(old_url, job->sub.url) != 0 && !url_allowed(job)) return;
  job->sub.updated_us = time_now_us();
  job->write.sub_enabled_given = json_object_get(job->body, "enabled") != NULL;
  job->write.sub_fields = patch_fields(job->body);
  put(job, false);
  if (job->status != STORE_OK) return;
  /* the answer: the subscription as committed (another PATCH's members included); when that
   * read fails, the change made is still answered, as this PATCH merged it */
  struct subscription now;
  if (store_sub_get(job->store, job->id, &now) == STORE_OK) job->sub = now;
}

/* Offload thread. */
static void sub_work(void *p) {
  struct sub_job *job = p;
  switch (job->op) {
    case OP_CREATE:
      if (url_allowed(job)) put(job, true);
      return;
    case OP_LIST:
      job->status = store_sub_list(job->store, &job->items, &job->count);
      return;
    case OP_GET:
      job->status = store_sub_get(job->store, job->id, &job->sub);
      return;
    case OP_PATCH:
      patch(job);
      return;
    case OP_DELETE:
      job->write.kind = STORE_WRITE_SUB_DELETE;
      job->write.sub_id = job->id;
      store_submit_wait(job->store, &job->write);
      job->status = job->write.status;
      if (job->status == STORE_OK && job->write.erased == 0) job->status = STORE_NOT_FOUND;
      return;
  }
}

/* The subscription as GET shows it: with "heldReason" when its deliveries are held (its URL or
 * account does not open; or this instance's dispatcher holds it, outbound_sub_held: its secret
 * does not open). */
static json_t *render_read(const struct sub_job *job, const struct subscription *sub) {
  json_t *obj = subscription_render(sub, false);
  /* sealed_unreadable: its URL or account does not open (store read: url and accountId are
   * shown empty / null, nothing is delivered for it) */
  const char *held = sub->unreadable                             ? "sealed_unreadable"
                     : outbound_sub_held(job->outbound, sub->id) ? "secret_unreadable"
                                                                 : NULL;
  if (obj && held && json_object_set_new(obj, "heldReason", json_string(held)) != 0) {
    json_decref(obj);
    return NULL;
  }
  return obj;
}

static void on_resume(struct http_request *req) {
  struct sub_job *job = http_request_state(req);
  if (job->unreadable_refused) {
    http_reply_error(req, API_ERR_CONFLICT,
                     "The subscription's sealed URL or account does not open: give url and "
                     "accountId together to replace both, or delete it",
                     NULL);
    return;
  }
  if (job->url_refused) {
    http_reply_error(req, API_ERR_VALIDATION, "The subscription's URL is not allowed",
                     json_pack("[{s:s,s:s}]", "field", "url", "issue", job->why));
    return;
  }
  if (job->status != STORE_OK) {
    if (job->status == STORE_NOT_FOUND && job->op == OP_PATCH)
      api_audit_read(req, AUDIT_SUBSCRIPTION_UPDATED, job->id, AUDIT_NOT_FOUND);
    else if (job->status == STORE_NOT_FOUND && job->op == OP_DELETE)
      api_audit_read(req, AUDIT_SUBSCRIPTION_DELETED, job->id, AUDIT_NOT_FOUND);
    api_sub_reply_store(req, job->status);
    return;
  }
  json_t *obj = NULL;
  switch (job->op) {
    case OP_CREATE:
      /* read at once: until the dispatcher knows it, the others' share of
       * DELIVERY_CONCURRENCY counts without it (a slow receiver could hold every slot) */
      if (job->outbound) outbound_wake(job->outbound);
      obj = subscription_render(&job->sub, true);
      if (obj) {
        http_reply_json(req, 201, obj);
        return;
      }
      break;
    case OP_LIST: {
      json_t *items = json_array();
      for (size_t i = 0; items && i < job->count; i++)
        if (json_array_append_new(items, render_read(job, &job->items[i])) != 0) {
          json_decref(items);
          items = NULL;
        }
      obj = items ? json_pack("{s:o}", "subscriptions", items) : NULL;
      break;
    }
    case OP_PATCH:
      /* Enabled again (or changed otherwise): waiting deliveries may be due now. */
      if (job->outbound) outbound_wake(job->outbound);
      obj = render_read(job, &job->sub);
      break;
    case OP_GET:
      obj = render_read(job, &job->sub);
      break;
    case OP_DELETE:
      if (job->outbound) outbound_wake(job->outbound);
      http_reply_static(req, 204, "application/json", "", 0);
      return;
  }
  if (!obj) {
    http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  http_reply_json(req, 200, obj);
}

/* "whsec_" + base64 of 32 random bytes. */
static bool make_secret(char out[OUTBOX_SECRET_MAX]) {
  unsigned char raw[32];
  if (!crypto_random(raw, sizeof raw)) return false;
  memcpy(out, "whsec_", 6);
  base64_encode(raw, sizeof raw, out + 6);
  memset(raw, 0, sizeof raw);
  return true;
}

void api_subscriptions_post(struct http_request *req) {
  if (!api_sub_manager_ok(req)) return;
  json_t *body = api_read_object(req);
  if (!body) return;
  struct sub_job *job = job_new(req, OP_CREATE);
  if (!job) {
    json_decref(body);
    return;
  }
  json_t *problems = subscription_from_json(body, true, &job->sub);
  json_decref(body);
  if (problems) {
    job_free(job);
    http_reply_error(req, API_ERR_VALIDATION, NULL, problems);
    return;
  }
  memcpy(job->sub.id, "sub_", 4);
  if (!crypto_random_hex(job->sub.id + 4, sizeof job->sub.id - 4, 12) ||
      !make_secret(job->sub.secret)) {
    job_free(job);
    http_reply_error(req, API_ERR_UNAVAILABLE, "Random number generator failed", NULL);
    return;
  }
  job->sub.created_us = job->sub.updated_us = time_now_us();
  http_request_offload(req, sub_work, on_resume, job, job_free);
}

void api_subscriptions_list(struct http_request *req) {
  if (!api_sub_manager_ok(req)) return;
  struct sub_job *job = job_new(req, OP_LIST);
  if (job) http_request_offload(req, sub_work, on_resume, job, job_free);
}

/* A job for the subscription the path names, or NULL after answering (404 for an id no
 * subscription can have). */
static struct sub_job *job_for_id(struct http_request *req, enum sub_op op, enum audit_action a) {
  if (!api_sub_manager_ok(req)) return NULL;
  const char *id = http_request_path_param(req);
  if (!api_sub_id_valid(id)) {
    if (op == OP_PATCH || op == OP_DELETE) api_audit_read(req, a, id, AUDIT_NOT_FOUND);
    http_reply_error(req, API_ERR_NOT_FOUND, "Subscription not found", NULL);
    return NULL;
  }
  struct sub_job *job = job_new(req, op);
  if (job) snprintf(job->id, sizeof job->id, "%s", id);
  return job;
}

void api_subscriptions_get(struct http_request *req) {
  struct sub_job *job = job_for_id(req, OP_GET, AUDIT_SUBSCRIPTION_UPDATED);
  if (job) http_request_offload(req, sub_work, on_resume, job, job_free);
}

void api_subscriptions_patch(struct http_request *req) {
  if (!api_sub_manager_ok(req)) return;
  json_t *body = api_read_object(req);
  if (!body) return;
  /* Every problem of the body itself first: none depends on what is stored. */
  struct subscription scratch = {0};
  json_t *problems = subscription_from_json(body, false, &scratch);
  if (problems) {
    json_decref(body);
    http_reply_error(req, API_ERR_VALIDATION, NULL, problems);
    return;
  }
  struct sub_job *job = job_for_id(req, OP_PATCH, AUDIT_SUBSCRIPTION_UPDATED);
  if (!job) {
    json_decref(body);
    return;
  }
  job->body = body;
  http_request_offload(req, sub_work, on_resume, job, job_free);
}

void api_subscriptions_delete(struct http_request *req) {
  struct sub_job *job = job_for_id(req, OP_DELETE, AUDIT_SUBSCRIPTION_DELETED);
  if (job) http_request_offload(req, sub_work, on_resume, job, job_free);
}
