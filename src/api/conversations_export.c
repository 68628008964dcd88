/* GET /api/v1/conversations/export?format=ndjson|csv: every conversation the list's filters
 * match (email_id, account_id, status, from/to; a key bound to accounts: only theirs), newest
 * first as the list orders them, streamed. The store is read EXPORT_CHUNK rows at a time on the
 * offload pool, and each piece of the answer (about EXPORT_PIECE bytes) is made there too when the
 * one before has been sent (http_reply_stream): memory stays the same whatever the size, and an
 * event thread never waits on the database.
 *
 * format=ndjson (the default): one conversation per line as GET /api/v1/conversations/{id}
 * shows it, without transcript, metadata and summary unless include=transcript (then as GET
 * with include=transcript shows it: each conversation is read again with its body, so it is
 * its version at that moment; one erased or moved out of the filters meanwhile is left out).
 * format=csv: model/export.h's columns; include is refused. bom=true puts a UTF-8 byte order mark
 * first (what Excel needs to read UTF-8); without it (the default) the first bytes are the header,
 * as a CSV reader expects (Python's csv module does not drop a mark).
 *
 * HTTP/1.0 is refused (400): without chunking a cut answer would look complete.
 *
 * The first piece is made before the answer starts, so a filter the database refuses or a
 * database that cannot be read is still a JSON error (400, 503); a failure later cuts the
 * answer short (chunked without its last chunk: the client sees it incomplete) and is logged.
 * HEAD reads one row instead (the same errors), and answers the headers alone.
 *
 * Audit: one conversation.export entry per export, written when the answer ends (sent, cut or
 * abandoned by the client): target the export's filters in query form (format=...&status=...,
 * the first AUDIT_TARGET_MAX bytes), outcome ok when libmicrohttpd reports the answer sent
 * whole (its end included), else incomplete (a store error, shutdown, the client gone), count
 * the conversations of the pieces handed to libmicrohttpd whole. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/app.h"
#include "audit/audit.h"
#include "core/log.h"
#include "model/export.h"

#define EXPORT_CHUNK 500 /* rows per store read */
/* With include=transcript, fewer: PostgreSQL reads the bodies with the rows (store_filter
 * with_body), and a body may be up to MAX_BODY_BYTES. */
#define EXPORT_CHUNK_BODY 50
#define EXPORT_PIECE (256 * 1024) /* a piece of the answer ends once it holds this much */

struct export_job {
  struct store *store;
  struct audit_recorder *audit;
  struct audit_who who;
  char request_id[AUDIT_REQUEST_ID_MAX + 1];
  bool csv, with_body;
  bool bom;  /* bom=true: a UTF-8 byte order mark before the CSV header */
  bool head; /* HEAD: the headers alone, after a one-row read */
  /* the filter; its strings are the job's own (the answer outlives the handler's request) */
  struct store_filter filter;
  char *email_id, *account_id, *status_filter;
  char **accounts;
  size_t naccounts;
  char target[AUDIT_TARGET_MAX + 1];
  /* the rows read and not yet written */
  struct store_page page;
  size_t next;
  bool list_done;
  /* Where the export stands in the list's order (first processed time newest first, then id,
   * a key no redelivery changes): the next read starts after it. */
  bool have_last;
  int64_t last_first_us;
  char last_id[MODEL_CONVERSATION_ID_MAX + 1];
  /* the piece of the answer being sent */
  struct export_buf out;
  enum http_stream_fill first; /* the first piece, made before the answer starts */
  bool first_pending;
  bool started; /* the answer began: the export is audited when it ends */
  enum store_status status;
  int64_t rows;       /* rows written into pieces so far */
  int64_t piece_rows; /* of which in the piece last handed to the stream */
  int64_t handed;     /* rows in pieces handed to libmicrohttpd whole (the audit's count) */
  bool complete;      /* the answer was sent whole, its end included */
};

/* Exports running: each keeps one job in the offload queue, past its size limit (stream.c), so
 * they may hold at most half of OFFLOAD_QUEUE; the other half stays for everything else. */
static atomic_long exports_running;

static void job_free(void *p) {
  struct export_job *job = p;
  atomic_fetch_sub(&exports_running, 1);
  if (job->started)
    audit_record_count(job->audit, &job->who, AUDIT_CONVERSATION_EXPORT, job->target,
                       job->complete ? AUDIT_OK : AUDIT_INCOMPLETE, job->handed);
  store_page_free(&job->page);
  export_buf_free(&job->out);
  free(job->email_id);
  free(job->account_id);
  free(job->status_filter);
  for (size_t i = 0; i < job->naccounts; i++) free(job->accounts[i]);
  free(job->accounts);
  free(job);
}

/* Whether row comes after the last one written in the list's order (the keyset read
 * guarantees it; checked so that a repeat could never be written). */
static bool after_last(const struct export_job *job, const struct store_conversation *row) {
  if (!job->have_last) return true;
  if (row->first_processed_us != job->last_first_us)
    return row->first_processed_us < job->last_first_us;
  return strcmp(row->conversation_id, job->last_id) > 0;
}

/* The next rows of the list: a keyset read after the last row written (the store's index
 * whatever the depth; rows written meanwhile never shift it). */
static enum store_status read_chunk(struct export_job *job) {
  store_page_free(&job->page);
  job->next = 0;
  int64_t chunk = job->with_body ? EXPORT_CHUNK_BODY : EXPORT_CHUNK;
  job->filter.limit = chunk;
  job->filter.with_body = job->with_body;
  job->filter.after = job->have_last;
  job->filter.after_first_us = job->last_first_us;
  job->filter.after_id = job->last_id;
  enum store_status st = store_list(job->store, &job->filter, &job->page);
  if (st != STORE_OK) return st;
  if (job->page.count < (size_t)chunk) job->list_done = true;
  return STORE_OK;
}

/* Whether a conversation read again still matches the export (a redelivery may have changed
 * its account, status or start time since the list was read). */
static bool still_matches(const struct export_job *job, const struct store_conversation *c) {
  const struct store_filter *f = &job->filter;
  int64_t at = c->has_start ? c->start_us : c->processed_us; /* what from/to apply to */
  return (!f->has_from || at >= f->from_us) && (!f->has_to || at < f->to_us) &&
         (!f->email_id || strcmp(f->email_id, c->email_id) == 0) &&
         (!f->account_id || strcmp(f->account_id, c->account_id) == 0) &&
         (!f->status || strcmp(f->status, c->status) == 0) &&
         api_account_visible(f->accounts, f->naccounts, c->account_id);
}

/* Writes one row; STORE_NOT_FOUND when it is to be left out. */
static enum store_status write_row(struct export_job *job, const struct store_conversation *row) {
  if (job->csv) {
    export_csv_row(&job->out, row);
    return STORE_OK;
  }
  if (!job->with_body) {
    export_ndjson_row(&job->out, row, false);
    return STORE_OK;
  }
  if (row->body) { /* read with the rows (PostgreSQL): the list's own version */
    export_ndjson_row(&job->out, row, true);
    return STORE_OK;
  }
  struct store_conversation full;
  enum store_status st = store_get(job->store, row->conversation_id, true, &full);
  if (st != STORE_OK) return st;
  if (still_matches(job, &full)) /* as GET: a conversation without a body shows nulls */
    export_ndjson_row(&job->out, &full, true);
  else
    st = STORE_NOT_FOUND;
  free(full.body);
  return st;
}

/* Offload thread: the next piece of the answer into job->out. */
static enum http_stream_fill make_piece(struct export_job *job) {
  job->out.len = 0;
  if (job->out.p) job->out.p[0] = '\0';
  while (job->out.ok && job->out.len < EXPORT_PIECE) {
    if (job->next == job->page.count) {
      if (job->list_done) break;
      job->status = read_chunk(job);
      if (job->status != STORE_OK) return HTTP_STREAM_FAILED;
      continue;
    }
    const struct store_conversation *row = &job->page.items[job->next++];
    if (!after_last(job, row)) continue;
    job->have_last = true;
    job->last_first_us = row->first_processed_us;
    memcpy(job->last_id, row->conversation_id, sizeof job->last_id);
    enum store_status st = write_row(job, row);
    if (st == STORE_NOT_FOUND) continue;
    if (st != STORE_OK) {
      job->status = st;
      return HTTP_STREAM_FAILED;
    }
    job->rows++;
  }
  if (!job->out.ok) {
    job->status = STORE_RETRY;
    return HTTP_STREAM_FAILED;
  }
  return job->list_done && job->next == job->page.count ? HTTP_STREAM_END : HTTP_STREAM_MORE;
}

static enum http_stream_fill fill(void *state, const char **data, size_t *len) {
  struct export_job *job = state;
  enum http_stream_fill r;
  job->handed += job->piece_rows; /* the piece before was handed whole */
  int64_t before = job->handed;
  if (job->first_pending) {
    job->first_pending = false;
    r = job->first;
  } else {
    r = make_piece(job);
    if (r == HTTP_STREAM_FAILED)
      log_msg(LOG_ERROR, "request %s: export cut short after %lld rows: the store answered %d",
              job->request_id, (long long)job->rows, (int)job->status);
  }
  job->piece_rows = job->rows - before;
  *data = job->out.p;
  *len = job->out.len;
  return r;
}

/* The answer ended (HTTP thread): how, for the audit entry. */
static void ended(void *state, bool complete, bool handed) {
  struct export_job *job = state;
  job->complete = complete;
  if (handed) job->handed += job->piece_rows;
  job->piece_rows = 0;
}

/* Offload thread: the first piece, before anything is answered. */
static void first_work(void *p) {
  struct export_job *job = p;
  job->status = STORE_OK;
  if (job->head) { /* one row read, so that HEAD answers what GET would (400, 503), no more */
    job->filter.limit = 1;
    job->status = store_list(job->store, &job->filter, &job->page);
    store_page_free(&job->page);
    job->first = job->status == STORE_OK ? HTTP_STREAM_END : HTTP_STREAM_FAILED;
    return;
  }
  job->first = make_piece(job);
  if (job->first == HTTP_STREAM_FAILED) return;
  if (job->csv) { /* the header goes first */
    struct export_buf head;
    export_buf_init(&head);
    if (job->bom) export_buf_add(&head, EXPORT_CSV_BOM, sizeof EXPORT_CSV_BOM - 1);
    export_csv_header(&head);
    export_buf_add(&head, job->out.p ? job->out.p : "", job->out.len);
    if (!head.ok) {
      export_buf_free(&head);
      job->status = STORE_RETRY;
      job->first = HTTP_STREAM_FAILED;
      return;
    }
    export_buf_free(&job->out);
    job->out = head;
  }
}

static void on_resume(struct http_request *req) {
  struct export_job *job = http_request_state(req);
  if (job->first == HTTP_STREAM_FAILED) {
    if (job->status == STORE_CLIENT)
      http_reply_error(req, API_ERR_INVALID_PARAMETER,
                       "A filter holds bytes the database cannot compare (it must be valid UTF-8)",
                       NULL);
    else if (job->status == STORE_OK || job->status == STORE_RETRY)
      http_reply_error(req, API_ERR_UNAVAILABLE, NULL, NULL);
    else
      http_reply_error(req, API_ERR_INTERNAL, NULL, NULL);
    return;
  }
  job->first_pending = true;
  job->started = true;
  if (job->csv)
    http_reply_header(req, "Content-Disposition", "attachment; filename=\"conversations.csv\"");
  /* The job stays the request's (freed with it, after the answer's last read). */
  http_reply_stream(req, 200, job->csv ? "text/csv; charset=utf-8" : "application/x-ndjson", fill,
                    ended, job, NULL);
}

static char *dup_or_null(const char *s, bool *oom) {
  if (!s) return NULL;
  char *d = strdup(s);
  if (!d) *oom = true;
  return d;
}

/* The filters in query form for the audit entry: name=value pairs in a fixed order, values
 * percent-encoded but for the unreserved characters, cut at the target's size. */
static void describe(struct export_job *job, const char *from, const char *to,
                     const char *include) {
  static const char hex[] = "0123456789ABCDEF";
  const char *names[] = {"format", "email_id", "account_id", "status", "from", "to", "include"};
  const char *vals[] = {job->csv ? "csv" : "ndjson",
                        job->email_id,
                        job->account_id,
                        job->status_filter,
                        from,
                        to,
                        include};
  char *t = job->target;
  size_t n = 0, cap = sizeof job->target - 1;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (!vals[i]) continue;
    char part[16];
    int pl = snprintf(part, sizeof part, "%s%s=", n ? "&" : "", names[i]);
    for (int k = 0; k < pl && n < cap; k++) t[n++] = part[k];
    for (const unsigned char *p = (const unsigned char *)vals[i]; *p && n < cap; p++) {
      if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
          *p == '-' || *p == '.' || *p == '_' || *p == '~') {
        t[n++] = (char)*p;
      } else if (n + 3 <= cap) {
        t[n++] = '%';
        t[n++] = hex[*p >> 4];
        t[n++] = hex[*p & 15];
      } else {
        n = cap;
      }
    }
  }
  t[n] = '\0';
}

void api_conversations_export(struct http_request *req) {
  struct app *app = http_request_app(req);
  /* HTTP/1.0 has no chunking: the answer would just end at connection close, and one cut
   * short would look complete. Refused (a proxy in front must speak HTTP/1.1 upstream). */
  if (http_request_http10(req)) {
    http_reply_error(req, API_ERR_BAD_REQUEST,
                     "The export needs HTTP/1.1 (it is sent chunked, so that a cut answer shows "
                     "as incomplete); a proxy in front must use HTTP/1.1 upstream (nginx: "
                     "proxy_http_version 1.1)",
                     NULL);
    return;
  }
  const char *format = http_request_query(req, "format");
  const char *include = http_request_query(req, "include");
  bool csv = false;
  if (format && strcmp(format, "csv") == 0) {
    csv = true;
  } else if (format && strcmp(format, "ndjson") != 0) {
    api_bad_param(req, "format", "must be ndjson or csv");
    return;
  }
  if (include && (csv || strcmp(include, "transcript") != 0)) {
    api_bad_param(
        req, "include",
        csv ? "is for format=ndjson only (a CSV row holds no transcript)" : "must be transcript");
    return;
  }
  const char *bom = http_request_query(req, "bom");
  if (bom && (!csv || (strcmp(bom, "true") != 0 && strcmp(bom, "false") != 0))) {
    api_bad_param(
        req, "bom",
        csv ? "must be true or false" : "is for format=csv only (a UTF-8 byte order mark)");
    return;
  }
  bool has_from, has_to;
  int64_t from_us, to_us;
  const char *from = http_request_query(req, "from"), *to = http_request_query(req, "to");
  if (!api_query_instant(from, &has_from, &from_us)) {
    api_bad_param(req, "from", "must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z");
    return;
  }
  if (!api_query_instant(to, &has_to, &to_us)) {
    api_bad_param(req, "to", "must be an RFC 3339 date-time such as 2026-02-01T00:00:00+01:00");
    return;
  }
  if (has_from && has_to && to_us < from_us) {
    api_bad_param(req, "to", "must not be before from");
    return;
  }
  long most = app->cfg->offload_queue / 2 > 0 ? app->cfg->offload_queue / 2 : 1;
  if (atomic_fetch_add(&exports_running, 1) >= most) {
    atomic_fetch_sub(&exports_running, 1);
    http_reply_header(req, "Retry-After", "5");
    http_reply_error(req, API_ERR_UNAVAILABLE,
                     "Too many exports are running (at most half of OFFLOAD_QUEUE at once); retry",
                     NULL);
    return;
  }
  struct export_job *job = calloc(1, sizeof *job);
  if (!job) {
    atomic_fetch_sub(&exports_running, 1);
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  bool oom = false;
  job->store = app->store;
  job->audit = app->audit;
  api_who(req, &job->who);
  snprintf(job->request_id, sizeof job->request_id, "%s", http_request_id(req));
  job->csv = csv;
  job->bom = bom && strcmp(bom, "true") == 0;
  job->head = strcmp(http_request_method(req), "HEAD") == 0;
  job->with_body = include != NULL;
  export_buf_init(&job->out);
  job->email_id = dup_or_null(http_request_query(req, "email_id"), &oom);
  job->account_id = dup_or_null(http_request_query(req, "account_id"), &oom);
  job->status_filter = dup_or_null(http_request_query(req, "status"), &oom);
  size_t n = 0;
  const char *const *accounts = http_request_accounts(req, &n);
  if (n) {
    job->accounts = calloc(n, sizeof *job->accounts);
    if (!job->accounts) oom = true;
    for (size_t i = 0; job->accounts && i < n; i++) {
      job->accounts[i] = dup_or_null(accounts[i], &oom);
      if (job->accounts[i]) job->naccounts++;
    }
  }
  if (oom) {
    job_free(job);
    http_reply_error(req, API_ERR_UNAVAILABLE, "Out of memory", NULL);
    return;
  }
  job->filter = (struct store_filter){
      .email_id = job->email_id,
      .account_id = job->account_id,
      .status = job->status_filter,
      .page = 1,
      .limit = EXPORT_CHUNK,
      .has_from = has_from,
      .has_to = has_to,
      .from_us = from_us,
      .to_us = to_us,
      .accounts = (const char *const *)job->accounts,
      .naccounts = job->naccounts,
  };
  describe(job, from, to, include);
  http_request_offload(req, first_work, on_resume, job, job_free);
}
