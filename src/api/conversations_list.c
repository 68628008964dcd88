/* GET /api/v1/conversations?email_id=&account_id=&status=&page=&limit= */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "api/app.h"
#include "model/render.h"

#define PAGE_MAX 2147483647LL
#define LIMIT_MAX 100
#define LIMIT_DEFAULT 20

/* Parses an optional decimal integer in [min, max]; absent means def. */
static bool parse_int_param(const char *s, long long min, long long max, long long def,
                            int64_t *out) {
  if (!s) {
    *out = def;
    return true;
  }
  if (*s < '0' || *s > '9') {
    if (!(*s == '-' && s[1] >= '0' && s[1] <= '9')) return false;
  }
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (errno || *end != '\0' || v < min || v > max) return false;
  *out = v;
  return true;
}

static void bad_param(struct http_request *req, const char *field, const char *issue) {
  char message[160];
  snprintf(message, sizeof message, "%s %s", field, issue);
  http_reply_error(req, API_ERR_INVALID_PARAMETER, message,
                   json_pack("[{s:s,s:s}]", "field", field, "issue", issue));
}

void api_conversations_list(struct http_request *req) {
  struct app *app = http_request_app(req);
  struct store_filter f = {
      .email_id = http_request_query(req, "email_id"),
      .account_id = http_request_query(req, "account_id"),
      .status = http_request_query(req, "status"),
  };
  if (!parse_int_param(http_request_query(req, "page"), 1, PAGE_MAX, 1, &f.page)) {
    bad_param(req, "page", "must be an integer from 1 to 2147483647");
    return;
  }
  if (!parse_int_param(http_request_query(req, "limit"), 1, LIMIT_MAX, LIMIT_DEFAULT, &f.limit)) {
    bad_param(req, "limit", "must be an integer from 1 to 100");
    return;
  }
  struct store_page page;
  enum store_status st = store_list(app->store, &f, &page);
  if (st != STORE_OK) {
    http_reply_error(req, st == STORE_RETRY ? API_ERR_UNAVAILABLE : API_ERR_INTERNAL, NULL, NULL);
    return;
  }
  json_t *items = json_array();
  for (size_t i = 0; i < page.count; i++)
    json_array_append_new(items, render_conversation(&page.items[i]));
  int64_t total_pages = (page.total + f.limit - 1) / f.limit;
  json_t *body = json_pack("{s:o,s:{s:I,s:I,s:I,s:I}}", "conversations", items, "pagination",
                           "page", (json_int_t)f.page, "limit", (json_int_t)f.limit, "total",
                           (json_int_t)page.total, "totalPages", (json_int_t)total_pages);
  store_page_free(&page);
  http_reply_json(req, 200, body);
}
