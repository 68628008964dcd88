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
  int64_t page;  /* 1-based */
  int64_t limit; /* 1..100 */
  /* A key bound to accounts: only conversations of these (naccounts 0: no such bound). */
  const char *const *accounts;
  size_t naccounts;
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
  /* Encryption at rest (seal/seal.h): from now on new data is sealed with ring's first key and
   * sealed data is opened with any of its keys; ring NULL: nothing is sealed. Call once, right
   * after opening, before any write or read; the ring must outlive the store. Fails (STORE_HARD,
   * with one line for people in err naming ENCRYPTION_KEYS) when the database holds data sealed
   * with a key the ring lacks or with a key of the same id but other bytes, or holds sealed data
   * and ring is NULL. Records the ring's first key as one in use. */
  enum store_status (*set_ring)(struct store *s, const struct seal_ring *ring, char *err,
                                size_t errlen);
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

__attribute__((warn_unused_result)) static inline enum store_status store_set_ring(
    struct store *s, const struct seal_ring *ring, char *err, size_t errlen) {
  return s->ops->set_ring(s, ring, err, errlen);
}

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
