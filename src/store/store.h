/* The storage interface. One struct of operations, chosen from DATABASE_URL at start-up;
 * endpoints never know which backend answers.
 *
 * Writes are asynchronous: a caller hands a struct store_write to store_submit() and is
 * called back (on the store's writer thread) once the write is committed or has failed. The
 * writer commits everything that is waiting in one transaction, so concurrent webhooks share
 * one disk sync. Reads are synchronous and never wait for the writer. */
#ifndef GSR_STORE_H
#define GSR_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/apikey.h"
#include "model/audit.h"
#include "model/conversation.h"
#include "model/outbox.h"
#include "model/analytics_hist.h"
#include "model/stored.h"
#include "store/sealing.h"

enum store_status {
  STORE_OK,
  STORE_NOT_FOUND,
  STORE_RETRY,  /* transient: busy, I/O error, disk full; answer 503 */
  STORE_CLIENT, /* the database refused data the client sent (e.g. bytes that are not valid
                 * in its encoding): the client's fault, answer 400, never 500 */
  STORE_HARD,   /* a bug or corrupt database; answer 500 */
};

#define STORE_WEBHOOK_ID_MAX MODEL_WEBHOOK_ID_MAX
#define STORE_STATUS_MAX MODEL_STATUS_MAX
#define STORE_SECRET_LEN 32

enum store_write_kind {
  STORE_WRITE_CONVERSATION,
  STORE_WRITE_PROBE, /* health: prove the database accepts a committed write */
  /* An ElevenLabs event: kept in its conversation's event history, and optionally (conv set)
   * the conversation upserted from body (the derived seed-shaped body), and optionally
   * (audio_fd >= 0) the conversation's audio replaced. A redelivery, i.e. an event whose
   * conversation already has an event with the same event_sha256, changes nothing: duplicate
   * is set and webhook_id is that event's. */
  STORE_WRITE_EVENT,
  /* API keys (core/apikey.h): KEY_CREATE stores *key; KEY_REVOKE sets key_id's revoked time to
   * key_at_us unless it is revoked already (duplicate: no such key); KEY_TOUCH moves its last
   * use forward to key_at_us (never back). */
  STORE_WRITE_KEY_CREATE,
  STORE_WRITE_KEY_REVOKE,
  STORE_WRITE_KEY_TOUCH,
  /* Erasure: everything kept of erase_conversation_id goes (its conversations row, every
   * delivery, its ElevenLabs events, its audio), in the batch's one transaction. erased is the
   * number of rows removed: 0 when nothing of it existed (the status is still STORE_OK). */
  STORE_WRITE_ERASE,
  /* Retention: erases, as STORE_WRITE_ERASE does, at most retain_limit conversations whose
   * processedAt is before retain_before_us, plus at most retain_limit events and audios of no
   * conversation received before it. erased: conversations + orphan events + orphan audios
   * erased (0: nothing was due). Several instances may run it at once (PostgreSQL: rows
   * another transaction holds are skipped). */
  STORE_WRITE_RETAIN,
  /* Audit entries that change nothing else (reads, rejected authentications, an erasure of
   * nothing): audit_entries[0..audit_count) appended to the chain in order, each given its id
   * and hash. Their at_us, who, action, target, outcome and count are the caller's. */
  STORE_WRITE_AUDIT,
  /* `gensendrep reencrypt`: rewrites, sealed with the ring's first key, up to reseal_limit rows
   * (of every table holding sealed or sealable data) that are not sealed with it yet, plaintext
   * rows included, starting after reseal_pos (opaque, "" to start). Sets reseal_pos to where it
   * stopped ("" once every table has been walked) and erased to the rows rewritten. Fails
   * (STORE_HARD) without a ring. Safe while the service runs: rows are rewritten in place,
   * each in the batch's transaction. */
  STORE_WRITE_RESEAL,
  /* ---- Onward delivery (issue 10; model/outbox.h). The outbox itself needs no kind of its
   * own: CONVERSATION, EVENT, ERASE and RETAIN write their outbox events in their own
   * transaction (see outbox below). ---- */
  /* sub_create: stores *sub (id, secret and times set by the caller). Else replaces the stored
   * subscription sub->id's url, event_types, account_id, enabled, max_per_second, paused,
   * disabled_reason and updated_us (STORE_NOT_FOUND when there is none); a change from
   * disabled or paused to active makes its waiting deliveries due at once. */
  STORE_WRITE_SUB_PUT,
  /* The subscription sub_id goes, with its deliveries and attempts (erased 1; 0 when none). */
  STORE_WRITE_SUB_DELETE,
  /* Every outbox event created at or after replay_since_us that subscription sub_id wants
   * (its types and account) and that was fanned out to it becomes a pending delivery due at
   * once, attempts counted from 1 again, with its original event id; erased = how many.
   * STORE_NOT_FOUND when there is no such subscription. */
  STORE_WRITE_REPLAY,
  /* The dispatcher's work (struct store_outbox_work *outbox), see there. */
  STORE_WRITE_OUTBOX,
  /* Analytics (issue 11): every rollup recomputed from the conversations, in one transaction
   * (ops->analytics_rebuild submits it); erased: the conversations counted. */
  STORE_WRITE_ANALYTICS_REBUILD,
};

/* The members of a subscription an update may change (store_write.sub_fields). */
enum store_sub_field {
  STORE_SUB_URL = 1u << 0,
  STORE_SUB_TYPES = 1u << 1,
  STORE_SUB_ACCOUNT = 1u << 2,
  STORE_SUB_MAX_PER_SECOND = 1u << 3,
  STORE_SUB_ALL = (1u << 4) - 1,
};

/* ---- The outbox (issue 10) ----
 * Every change writes its event in its own transaction, never for a write that is not
 * committed, once (a duplicate redelivery writes none):
 *   CONVERSATION: conversation.created (first version) or conversation.updated (a new body);
 *   EVENT with conv: the same, except conversation.failed when conv->status is "failed";
 *   EVENT with audio: conversation.audio_added (after the conversation's own event if both);
 *   ERASE (erased > 0) and RETAIN (per conversation erased): conversation.deleted, and the
 *   conversation's earlier events, and their deliveries still pending, are erased with it.
 * An event's data is the conversation as GET shows it at that commit (render.h
 * render_conversation_detail), sealed like every body when a ring is set; its account id is
 * kept (sealed likewise) so subscriptions for one account get only its events.
 * Fan-out: each subscription has a cursor (the last event seq it has considered); FANOUT makes
 * every later event it wants a pending delivery (events arriving while it is disabled or paused
 * too: they wait, they are never dropped). Deliveries of one conversation to one subscription
 * go in event order: a delivery is due only when no earlier delivery of that conversation to
 * that subscription is still pending. Brokers (queue/) read the outbox in seq order through a
 * named cursor of their own. */

struct store_outbox_event {
  int64_t seq; /* the outbox's order (ascending with commit order on SQLite; unique always) */
  char id[OUTBOX_EVENT_ID_MAX];
  int type; /* enum outbox_type */
  char conversation_id[MODEL_CONVERSATION_ID_MAX + 1];
  int64_t created_us;
  char *data; /* owned (opened when it was sealed) */
  size_t data_len;
};

/* One delivery the dispatcher has leased. */
struct store_delivery_job {
  char sub_id[OUTBOX_SUB_ID_MAX];
  int attempt;              /* this attempt's number, 1-based (attempts made before + 1) */
  int64_t first_attempt_us; /* 0 when this is the first since it became pending */
  /* This claim's own token (opaque; a later claim of the same delivery gets another): the
   * result carries it back, and FINISH changes the delivery only while it is still this
   * claim's (a stale answer, e.g. to a send made before a replay and a new claim, or after
   * the lease ran out and the delivery was claimed again, is recorded as an attempt only). */
  int64_t lease_token;
  struct store_outbox_event event;
};

/* What one attempt did. */
struct store_delivery_result {
  char sub_id[OUTBOX_SUB_ID_MAX];
  int64_t seq;
  char event_id[OUTBOX_EVENT_ID_MAX];
  int type;
  int attempt;
  int64_t at_us;   /* when it was sent */
  int status_code; /* 0: no HTTP answer (refused, timeout, ...) */
  int64_t latency_ms;
  char response_head[OUTBOX_RESPONSE_HEAD_MAX + 1]; /* the answer's first bytes, or why none */
  /* DELIVERED: the delivery is done. RETRY: due again at next_at_us. FAILED: the schedule is
   * exhausted; the store decides, in the same transaction: when the subscription has had a
   * success since first_attempt_us, the delivery is dead-lettered (state failed, attempt
   * recorded as FAILED); else the subscription is paused and the delivery stays pending,
   * due at next_at_us (attempt recorded as PAUSED). DISABLED (410): the subscription is
   * disabled (disabled_reason "gone"), the delivery stays pending. Every result is also
   * recorded as an attempt (GET .../deliveries). RELEASE: not sent (throttled, shutting
   * down): the lease is dropped, due again at next_at_us, no attempt recorded.
   * next_at_us is on the instance's clock, as the FINISH work's now_us (0: the store reads it):
   * PostgreSQL stores it as the database server's now + (next_at_us - now_us), so instances
   * whose clocks disagree agree on when a retry is due. */
  int outcome; /* enum delivery_outcome, or STORE_DELIVERY_RELEASE */
  int64_t first_attempt_us;
  int64_t next_at_us;
  int64_t lease_token; /* the job's, copied as is */
  /* > 0: the receiver asked for a pause (429/503 Retry-After, already capped): the whole
   * subscription is held for hold_us from the store's now (PostgreSQL: the database server's
   * clock), kept with the subscription (a restart, another instance: CLAIM respects it); a
   * longer hold already there stays. Applied with results whose lease is ours. */
  int64_t hold_us;
};
#define STORE_DELIVERY_RELEASE 100

enum store_outbox_op {
  /* Fans out up to limit events per subscription (see above); *added = deliveries made
   * pending. Several instances may run it at once (each subscription's cursor is moved by one
   * at a time). SQLite makes no rows for an enabled, unpaused subscription: CLAIM takes its
   * events straight from the outbox behind its cursor (store/lane.h), and *added counts them. */
  STORE_OUTBOX_FANOUT,
  /* Leases up to limit due deliveries of subscription sub_id (enabled, not paused, not held
   * by a Retry-After (hold_us); PostgreSQL: rows another instance holds are skipped; fewer when
   * their data passes about 16 MiB, at least one), each until now_us + lease_us (PostgreSQL:
   * lease_us from the database server's clock, which alone decides when a lease ran out, so
   * instances with skewed clocks never take each other's live leases; which deliveries are due
   * is decided on that clock too, now_us unused for it): jobs[0..count)
   * (owned, free with store_jobs_free). A lease that runs out (a crash) makes the delivery due
   * again: at least once. Due deliveries come first, then (SQLite) the lane's new events. */
  STORE_OUTBOX_CLAIM,
  /* Records results[0..nresults) (the leases must be ours, with the job's lease_token; others
   * are ignored, but an answer to an earlier claim of a delivery claimed again since is
   * recorded as an attempt and changes nothing). Every success in results counts before any
   * exhausted result is judged (the pause rule), whatever their order. */
  STORE_OUTBOX_FINISH,
  /* Broker cursor cursor_name (created at seq 0 when missing): leases it until now_us +
   * lease_us (PostgreSQL: the database's clock, as CLAIM) when it is free, expired or ours, and
   * marks it touched (see PRUNE), and returns the up to limit events after it in
   * seq order (fewer when their data passes about 16 MiB, at least one) (events, owned, free with
   * store_jobs_free); busy set and nothing read when another instance holds it. */
  STORE_OUTBOX_QUEUE_READ,
  /* Moves broker cursor cursor_name to upto_seq (only forward, only while its lease is ours),
   * and marks it touched whoever holds it (upto_seq 0: only that; an instance whose broker is
   * down keeps its cursor so); creates it at seq 0 (as QUEUE_READ) when missing, so a broker
   * never reached yet holds back prune as well. */
  STORE_OUTBOX_QUEUE_ADVANCE,
  /* Erases up to limit outbox events created before before_us that no subscription still has
   * pending and every live broker cursor has passed, and attempts recorded before it; *added =
   * rows erased. A broker cursor nobody touched (read, advanced or kept) before
   * stale_before_us (0: none is stale) is not live: it no longer holds back prune (QUEUE_URL
   * removed from every instance: the outbox would grow for good; the dispatcher has one cursor,
   * "queue", whatever the broker, so another broker continues from it); stale = how many such
   * cursors this prune passed (events erased that they had not reached). Subscriptions hold their
   * events whatever their state. */
  STORE_OUTBOX_PRUNE,
};

struct store_outbox_work {
  enum store_outbox_op op;
  int64_t now_us;
  int64_t lease_us;
  int64_t limit;
  const char *sub_id;                          /* CLAIM */
  const char *cursor_name;                     /* QUEUE_READ, QUEUE_ADVANCE (at most 64 bytes) */
  int64_t upto_seq;                            /* QUEUE_ADVANCE */
  int64_t before_us;                           /* PRUNE */
  int64_t stale_before_us;                     /* PRUNE */
  const struct store_delivery_result *results; /* FINISH */
  size_t nresults;
  /* output */
  int64_t added;
  struct store_delivery_job *jobs;
  struct store_outbox_event *events;
  size_t count;
  bool busy;
  int64_t stale; /* PRUNE */
};

#define STORE_EVENT_TYPE_MAX 65 /* EL_TYPE_MAX + NUL */

struct store_write;
typedef void (*store_write_done)(struct store_write *w, void *cls);

struct store_write {
  enum store_write_kind kind;
  /* input (STORE_WRITE_CONVERSATION); the caller keeps these alive until done is called */
  const struct conversation_input *conv;
  const char *body;
  size_t body_len;
  unsigned char body_sha256[32]; /* computed by the caller, off the writer thread */
  /* input (STORE_WRITE_EVENT); conv may be NULL (then body is unused) */
  const char *event_type;            /* as sent, at most STORE_EVENT_TYPE_MAX - 1 bytes */
  const char *event_conversation_id; /* "" when the event names no conversation */
  const char *event_body;            /* kept as is (for audio events: the envelope) */
  size_t event_body_len;
  unsigned char event_sha256[32]; /* of the whole event body as received */
  int64_t event_audio_at; /* -1, or where base64 audio was cut out of event_body (el_split.h) */
  int audio_fd;           /* -1, or a file whose first audio_len bytes are the decoded audio */
  int64_t audio_len;
  /* input (STORE_WRITE_KEY_*) */
  const struct apikey_record *key; /* KEY_CREATE */
  char key_id[APIKEY_ID_LEN + 1];  /* KEY_REVOKE, KEY_TOUCH */
  int64_t key_at_us;
  /* input (STORE_WRITE_ERASE) */
  const char *erase_conversation_id;
  /* input (STORE_WRITE_RETAIN) */
  int64_t retain_before_us;
  int64_t retain_limit;
  /* Who asked for the change (request id, key id, client address; "" when none, e.g. the CLI
   * or retention). A change writes its audit entry in its own transaction, at processed_us (or
   * the commit's time): CONVERSATION and EVENT "webhook.accepted" (target: the conversation id,
   * or the event's, "" when it names none), ERASE "conversation.erased" when erased > 0,
   * RETAIN one "conversation.erased" (outcome "expired") per conversation id erased,
   * KEY_CREATE "key.created" and KEY_REVOKE "key.revoked" (unless duplicate); all "ok" but
   * RETAIN's. PROBE and KEY_TOUCH write none. */
  struct audit_who who;
  /* The backend's, filled in submit on the caller's thread (SQLite, with ENCRYPTION_KEYS: the
   * email and account sealed there, off its one writer thread). */
  struct store_presealed presealed;
  /* input (STORE_WRITE_SUB_PUT, SUB_DELETE, REPLAY) */
  const struct subscription *sub;
  bool sub_create;
  /* An update (not sub_create): false keeps the stored enabled, paused and disabled_reason
   * as they are in the database (sub's are ignored: a PATCH that does not name "enabled" never
   * undoes a pause or a 410 that happened after its read); true sets enabled = sub->enabled,
   * and true also clears paused and disabled_reason and makes waiting deliveries due. */
  bool sub_enabled_given;
  /* An update's other members that change (STORE_SUB_* bits), each set to sub's in one
   * statement, the others left as stored (so two PATCHes of different members never undo
   * each other). updated_us is always set. */
  unsigned sub_fields;
  const char *sub_id;
  int64_t replay_since_us;
  /* input and output (STORE_WRITE_OUTBOX) */
  struct store_outbox_work *outbox;
  /* input (STORE_WRITE_AUDIT) */
  struct audit_entry *audit_entries; /* ids and hashes filled in by the writer */
  size_t audit_count;
  /* input and output (STORE_WRITE_RESEAL) */
  int64_t reseal_limit;
  char reseal_pos[512];
  /* output (STORE_WRITE_RESEAL), set when reseal_pos comes back "": nonzero when rows not sealed
   * with the first key are still there (sealed meanwhile by an instance with another first key,
   * or skipped because another transaction held them); zero when none is, and then every other
   * recorded key has been retired (no start needs it any more). */
  int64_t reseal_left;
  /* output, valid in done() */
  int64_t erased; /* STORE_WRITE_ERASE, STORE_WRITE_RETAIN */
  enum store_status status;
  bool duplicate; /* byte-identical redelivery: nothing was changed */
  char webhook_id[STORE_WEBHOOK_ID_MAX];
  int64_t processed_us;
  /* completion */
  store_write_done done;
  void *done_cls;
  struct store_write *next; /* the store's queue link */
};

/* struct store_conversation (a stored conversation as read back) is in model/stored.h. */

struct store_filter {
  const char *email_id; /* NULL: any */
  const char *account_id;
  const char *status;
  int64_t page;  /* 1-based; ignored with after */
  int64_t limit; /* rows to return (the API asks for one more than it shows to see a next page) */
  /* Time window on the conversation's start time, or its processed time when it has none:
   * [from_us, to_us) for each bound that is set. */
  bool has_from, has_to;
  int64_t from_us, to_us;
  /* Keyset page: only rows after this position of the list's order (first processed time,
   * store_conversation.first_processed_us, newest first, then conversation id ascending), from
   * the first; total is not counted (0). The order key never changes once a conversation is
   * stored, so a walk meets every conversation that is there throughout exactly once. */
  bool after;
  int64_t after_first_us;
  const char *after_id;
  /* A key bound to accounts: only conversations of these (naccounts 0: no such bound). */
  const char *const *accounts;
  size_t naccounts;
  /* PostgreSQL also reads each row's raw webhook body (webhook_id and body set, as get with
   * with_body), in the page's one round trip; SQLite reads none (body NULL: a get there costs
   * no round trip). A caller reads a row whose body is NULL with get. */
  bool with_body;
};

struct store_page {
  struct store_conversation *items; /* owned; free with store_page_free */
  size_t count;
  int64_t total;
};

/* One event of a conversation's history, as read back. */
struct store_event {
  char webhook_id[STORE_WEBHOOK_ID_MAX];
  char type[STORE_EVENT_TYPE_MAX];
  int64_t received_us;
  char *body; /* owned */
  size_t body_len;
  int64_t audio_at;         /* -1, or where the audio's base64 belongs in body (el_split.h) */
  unsigned char sha256[32]; /* the event_sha256 it was written with */
};

struct store_events {
  struct store_event *items; /* oldest first; owned; free with store_events_free */
  size_t count;
};

/* A page of the audit log. */
struct store_audit_filter {
  int64_t since_us, until_us; /* at in [since, until); 0: unbounded */
  const char *key_id;         /* NULL: any */
  int action;                 /* enum audit_action, or -1: any */
  const char *target;         /* NULL: any */
  bool newest_first;
  int64_t cursor; /* 0: from the start; else only ids after it (oldest first) or before it
                   * (newest first) */
  int64_t limit;  /* 1..1001 (clamped): a page of up to 1000, plus one more entry to tell
                   * whether there is a next page, in the same query */
};

struct store_audit_page {
  struct audit_entry *items; /* owned; free() */
  size_t count;
};

/* A page of a subscription's recorded attempts, newest first. */
struct store_attempt {
  int64_t id; /* the cursor */
  char event_id[OUTBOX_EVENT_ID_MAX];
  int type;
  int attempt;
  int status_code; /* 0: no answer */
  int64_t latency_ms;
  int64_t at_us;
  int outcome; /* enum delivery_outcome */
  char response_head[OUTBOX_RESPONSE_HEAD_MAX + 1];
};

struct store_attempt_page {
  struct store_attempt *items; /* owned; free() */
  size_t count;
};

/* The outbox's backlog, for health. A backend stops counting at count_cap (SQLite 100000,
 * PostgreSQL 1000000): a count of count_cap then means at least that many. */
struct store_outbox_stats {
  int64_t pending_deliveries; /* deliveries to subscriptions not yet delivered or failed */
  int64_t oldest_pending_us;  /* created time of the oldest such event; 0: none */
  int64_t queue_backlog;      /* events after the broker cursor (cursor_name) */
  int64_t oldest_queue_us;    /* created time of the oldest of them; 0: none */
  int64_t dead_letters;       /* deliveries failed for good */
  int64_t count_cap;          /* where the counts above stop (0: they do not) */
};

/* ---- Analytics (issue 11 part 1) ----
 * Every stored conversation counts once in the rollups the writer keeps inside the same
 * transaction as the change (created, changed by a redelivery, erased, expired), under its event
 * time (start time, else processed time) and its dimensions. A scan answers from them, never by
 * reading every conversation; where a bound or a cut falls inside a rollup's time bucket, the
 * conversations of that bucket are read one by one instead, so every answer is exact. */
enum store_dim {
  STORE_DIM_ACCOUNT,
  STORE_DIM_AGENT,
  STORE_DIM_PLATFORM,
  STORE_DIM_STATUS,
  STORE_DIM_OUTCOME,
  STORE_DIM_COUNT
};

enum store_cell_kind {
  STORE_CELL_FULL,  /* every dimension known: counts in totals, the series and every breakdown */
  STORE_CELL_TOTAL, /* no dimension: counts in totals and the series only */
  STORE_CELL_DIM    /* one dimension (dim): counts in that breakdown only */
};

/* A scan's cells together count every matching conversation exactly once in the totals and
 * series (FULL and TOTAL cells), exactly once in each breakdown d (FULL cells and DIM cells of
 * dim d), and exactly once in the duration histogram (the cells with has_hist: every FULL cell,
 * and, when the scan has DIM cells, those of STORE_DIM_STATUS; TOTAL cells carry none). */
struct store_cell {
  enum store_cell_kind kind;
  enum store_dim dim; /* STORE_CELL_DIM */
  /* An instant of the cell: every conversation it counts lies in the same [cut i, cut i + 1)
   * (the query's from, cuts and to) as at_us. A DIM cell counts only in a breakdown, which is
   * over the whole [from, to): its conversations lie in [from, to), as at_us does, but may
   * straddle a cut (a UTC day's breakdown under a query cut at another zone's midnight). */
  int64_t at_us;
  /* NULL: not known (stored NULL). FULL: all set; DIM: value[dim] only. The account as stored:
   * a blind index when it was sealed (analytics_account_name gives it back). Valid during the
   * callback only. */
  const char *value[STORE_DIM_COUNT];
  int64_t conversations, messages, duration_sum;
  /* The durations' histogram, when has_hist (else not set). */
  bool has_hist;
  uint32_t hist[ANALYTICS_HIST_BUCKETS];
};

struct store_analytics_query {
  int64_t from_us, to_us; /* event time in [from_us, to_us) */
  /* Filters, NULL: any; an empty value ("") matches nothing (not the conversations whose value
   * is not known). account_id as the client gave it (the store blinds it when sealing). */
  const char *account_id, *agent_id, *platform, *status;
  /* A key bound to accounts: only conversations of these (naccounts 0: no such bound). */
  const char *const *accounts;
  size_t naccounts;
  /* Series boundaries strictly inside (from_us, to_us), ascending: no cell straddles one. */
  const int64_t *cuts;
  size_t ncuts;
};

typedef void (*store_cell_cb)(void *cls, const struct store_cell *cell);

struct seal_ring;

struct store;

struct store_ops {
  const char *name;
  void (*submit)(struct store *s, struct store_write *w);
  enum store_status (*get)(struct store *s, const char *conversation_id, bool with_body,
                           struct store_conversation *out);
  enum store_status (*list)(struct store *s, const struct store_filter *f, struct store_page *out);
  enum store_status (*ping_read)(struct store *s);
  /* Every event kept for conversation_id (STORE_OK with count 0 when none). */
  enum store_status (*events)(struct store *s, const char *conversation_id,
                              struct store_events *out);
  /* Up to cap bytes of the conversation's audio from offset into buf: *got bytes read, *total
   * the audio's length. STORE_NOT_FOUND when the conversation has no audio. offset beyond the
   * end reads nothing. */
  enum store_status (*audio_read)(struct store *s, const char *conversation_id, int64_t offset,
                                  void *buf, size_t cap, size_t *got, int64_t *total);
  /* The API key id (STORE_NOT_FOUND when there is none). */
  enum store_status (*key_get)(struct store *s, const char *id, struct apikey_record *out);
  /* Every API key, oldest first (*out owned, free()). */
  enum store_status (*key_list)(struct store *s, struct apikey_record **out, size_t *count);
  /* Audit entries matching f, each with its id and hash. */
  enum store_status (*audit_list)(struct store *s, const struct store_audit_filter *f,
                                  struct store_audit_page *out);
  /* The chain's head: the newest entry's id and hash as recorded with the last append (0 and
   * zeros when the log is empty). */
  enum store_status (*audit_head)(struct store *s, int64_t *last_id,
                                  unsigned char hash[AUDIT_HASH_LEN]);
  /* The service's own random secret name (table service_secrets: made once per database by a
   * migration, shared by every instance, kept across restarts): STORE_SECRET_LEN bytes into
   * out. STORE_NOT_FOUND when there is none of that name (or not that long). */
  enum store_status (*secret)(struct store *s, const char *name,
                              unsigned char out[STORE_SECRET_LEN]);
  /* Encryption at rest (seal/seal.h): from now on new data is sealed with ring's first key and
   * sealed data is opened with any of its keys; ring NULL: nothing is sealed. Call once, right
   * after opening, before any write or read; the ring must outlive the store. Fails (STORE_HARD,
   * with one line for people in err naming ENCRYPTION_KEYS) when the database holds data sealed
   * with a key the ring lacks or with a key of the same id but other bytes, or holds sealed data
   * and ring is NULL. Records the ring's first key as one in use. */
  enum store_status (*set_ring)(struct store *s, const struct seal_ring *ring, char *err,
                                size_t errlen);
  /* ---- Onward delivery (issue 10) ---- */
  /* The subscription id (STORE_NOT_FOUND when none). sub_get and sub_list never read the
   * signing secret (out->secret is ""): a secret that does not open fails no read. */
  enum store_status (*sub_get)(struct store *s, const char *id, struct subscription *out);
  /* Every subscription, oldest first (*out owned, free()). */
  enum store_status (*sub_list)(struct store *s, struct subscription **out, size_t *count);
  /* The subscription id's signing secret, opened, into out (OUTBOX_SECRET_MAX bytes): the
   * dispatcher's alone, to sign. STORE_NOT_FOUND when there is none; STORE_HARD when it does
   * not open (sealed with a key ENCRYPTION_KEYS no longer holds, or damaged), not logged: the
   * caller, which may ask again, says it once. */
  enum store_status (*sub_secret)(struct store *s, const char *id, char *out);
  /* Attempts recorded for subscription sub_id, newest first, ids below before_id (0: from the
   * newest), the first skip of those passed over, at most limit (1..1001). */
  enum store_status (*attempt_list)(struct store *s, const char *sub_id, int64_t before_id,
                                    int64_t skip, int64_t limit, struct store_attempt_page *out);
  /* Backlog numbers; cursor_name NULL: no broker (queue numbers 0). */
  enum store_status (*outbox_stats)(struct store *s, const char *cursor_name,
                                    struct store_outbox_stats *out);
  /* Called (on the writer thread, after the commit, cheap, never blocking) whenever a commit
   * wrote outbox events, so the dispatcher wakes without polling; NULL: none. Set once, before
   * any write. */
  void (*set_outbox_notify)(struct store *s, void (*notify)(void *cls), void *cls);
  /* This process publishes the outbox to a broker (QUEUE_URL): every change writes its events,
   * even before the broker's cursor is stored. Without it a store may leave out the events of
   * a change that nothing stored reads (no subscription, no broker cursor): nothing could ever
   * deliver them. NULL: the store always writes them. Set before the first write (a later
   * change applies from the next change the writer makes on). */
  void (*set_outbox_broker)(struct store *s, bool on);
  /* ---- Analytics (issue 11 part 1) ---- */
  /* Calls cell for every cell of the answer to q (on the caller's thread, in no given order). */
  enum store_status (*analytics_scan)(struct store *s, const struct store_analytics_query *q,
                                      store_cell_cb cell, void *cls);
  /* The account id a cell's account value stands for (a sealed account's blind index opened
   * through one of its conversations; a plaintext one as is), into out. STORE_NOT_FOUND when no
   * stored conversation has it. */
  enum store_status (*analytics_account_name)(struct store *s, const char *stored, char *out,
                                              size_t outlen);
  /* The same for n cell account values in one query (a request names every distinct one):
   * names[i] (NULL on entry) becomes an owned copy (free()) of the name of stored[i], or stays
   * NULL when no stored conversation has it. On an error some may be set: the caller frees them.
   * Callers keep n to a few hundred per call. */
  enum store_status (*analytics_account_names)(struct store *s, const char *const *stored, size_t n,
                                               char **names);
  /* Recomputes every rollup from the conversations (gensendrep analytics rebuild), in one
   * transaction, beside writes; *counted: the conversations counted. */
  enum store_status (*analytics_rebuild)(struct store *s, int64_t *counted);
  void (*close)(struct store *s);
};

struct store {
  const struct store_ops *ops;
};

/* Opens the backend named by url and applies migrations. On failure writes one line to err. */
__attribute__((warn_unused_result)) struct store *store_open(const char *url, char *err,
                                                             size_t errlen);
/* The same, but a database server that cannot be reached yet (still starting, as in a
 * container started beside it) is tried again, each attempt logged, for up to wait_seconds. */
__attribute__((warn_unused_result)) struct store *store_open_wait(const char *url, int wait_seconds,
                                                                  char *err, size_t errlen);
/* Drains pending writes, then closes; s is freed. */
void store_close(struct store *s);

static inline void store_submit(struct store *s, struct store_write *w) { s->ops->submit(s, w); }

__attribute__((warn_unused_result)) static inline enum store_status store_get(
    struct store *s, const char *id, bool with_body, struct store_conversation *out) {
  return s->ops->get(s, id, with_body, out);
}

__attribute__((warn_unused_result)) static inline enum store_status store_list(
    struct store *s, const struct store_filter *f, struct store_page *out) {
  return s->ops->list(s, f, out);
}

__attribute__((warn_unused_result)) static inline enum store_status store_ping_read(
    struct store *s) {
  return s->ops->ping_read(s);
}

__attribute__((warn_unused_result)) static inline enum store_status store_events(
    struct store *s, const char *conversation_id, struct store_events *out) {
  return s->ops->events(s, conversation_id, out);
}

__attribute__((warn_unused_result)) static inline enum store_status store_audio_read(
    struct store *s, const char *conversation_id, int64_t offset, void *buf, size_t cap,
    size_t *got, int64_t *total) {
  return s->ops->audio_read(s, conversation_id, offset, buf, cap, got, total);
}

__attribute__((warn_unused_result)) static inline enum store_status store_key_get(
    struct store *s, const char *id, struct apikey_record *out) {
  return s->ops->key_get(s, id, out);
}

__attribute__((warn_unused_result)) static inline enum store_status store_key_list(
    struct store *s, struct apikey_record **out, size_t *count) {
  return s->ops->key_list(s, out, count);
}

__attribute__((warn_unused_result)) static inline enum store_status store_audit_list(
    struct store *s, const struct store_audit_filter *f, struct store_audit_page *out) {
  return s->ops->audit_list(s, f, out);
}

__attribute__((warn_unused_result)) static inline enum store_status store_audit_head(
    struct store *s, int64_t *last_id, unsigned char hash[AUDIT_HASH_LEN]) {
  return s->ops->audit_head(s, last_id, hash);
}

__attribute__((warn_unused_result)) static inline enum store_status store_secret(
    struct store *s, const char *name, unsigned char out[STORE_SECRET_LEN]) {
  return s->ops->secret(s, name, out);
}

static inline void store_set_outbox_broker(struct store *s, bool on) {
  if (s->ops->set_outbox_broker) s->ops->set_outbox_broker(s, on);
}

__attribute__((warn_unused_result)) static inline enum store_status store_set_ring(
    struct store *s, const struct seal_ring *ring, char *err, size_t errlen) {
  return s->ops->set_ring(s, ring, err, errlen);
}

/* Submits w and waits until it is done (w->status). May block: never on an HTTP event thread
 * (offload threads, the dispatcher, the CLI). */
void store_submit_wait(struct store *s, struct store_write *w);

__attribute__((warn_unused_result)) static inline enum store_status store_sub_get(
    struct store *s, const char *id, struct subscription *out) {
  return s->ops->sub_get(s, id, out);
}

__attribute__((warn_unused_result)) static inline enum store_status store_sub_secret(
    struct store *s, const char *id, char out[OUTBOX_SECRET_MAX]) {
  return s->ops->sub_secret(s, id, out);
}

__attribute__((warn_unused_result)) static inline enum store_status store_sub_list(
    struct store *s, struct subscription **out, size_t *count) {
  return s->ops->sub_list(s, out, count);
}

__attribute__((warn_unused_result)) static inline enum store_status store_attempt_list(
    struct store *s, const char *sub_id, int64_t before_id, int64_t skip, int64_t limit,
    struct store_attempt_page *out) {
  return s->ops->attempt_list(s, sub_id, before_id, skip, limit, out);
}

__attribute__((warn_unused_result)) static inline enum store_status store_outbox_stats(
    struct store *s, const char *cursor_name, struct store_outbox_stats *out) {
  return s->ops->outbox_stats(s, cursor_name, out);
}

/* Frees what STORE_OUTBOX_CLAIM and QUEUE_READ returned (and resets the pointers). */
void store_jobs_free(struct store_outbox_work *w);
void store_outbox_events_free(struct store_outbox_event *ev, size_t count);

void store_page_free(struct store_page *p);
void store_events_free(struct store_events *e);

/* Backends. */
struct store *store_sqlite_open(const char *path, char *err, size_t errlen);
struct store *store_pg_open(const char *url, int wait_seconds, char *err, size_t errlen);

/* Embedded migrations (generated from src/store/migrations/<backend>/NNNN_name.sql). */
struct store_migration {
  int version;
  const char *name;
  const char *sql;
};
extern const struct store_migration store_migrations_sqlite[];
extern const size_t store_migrations_sqlite_count;
extern const struct store_migration store_migrations_pg[];
extern const size_t store_migrations_pg_count;

#endif
