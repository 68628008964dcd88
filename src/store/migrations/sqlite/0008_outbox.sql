-- Onward delivery (issue 10, store.h "The outbox"): every change's event, written in the
-- change's transaction; webhook subscriptions with their deliveries and attempts; the brokers'
-- cursors. Times in microseconds since the epoch.
--
-- outbox_events: one row per event. seq is the outbox's order: AUTOINCREMENT, so a seq is never
-- used twice (cursors point at seqs; the newest events may be erased). One index, on the
-- conversation (erasure): each webhook writes one row and one index entry here. account_id and
-- account_sealed hold the conversation's account exactly as its conversations row does
-- (plaintext, or with ENCRYPTION_KEYS its blind index and its sealed value, same associated
-- data), NULL when unknown. data: the event's data JSON (sealed when sealed_with is set).
CREATE TABLE outbox_events (
  seq             INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id        TEXT    NOT NULL,
  type            INTEGER NOT NULL,
  conversation_id TEXT    NOT NULL,
  account_id      TEXT,
  account_sealed  BLOB,
  created_us      INTEGER NOT NULL,
  data            BLOB    NOT NULL,
  sealed_with     TEXT
);
CREATE INDEX outbox_events_conversation ON outbox_events (conversation_id);

-- Webhook subscriptions. secret: as text, or sealed (sealed_with set); account_id: NULL for
-- every account, else the account (plaintext, or its blind index with account_sealed).
-- cursor_seq: the last outbox seq fan-out has considered for it; start_seq: the newest seq when
-- it was created (it receives what is committed after; a replay reaches back no further).
CREATE TABLE subscriptions (
  id              TEXT    PRIMARY KEY,
  url             TEXT    NOT NULL,
  secret          BLOB    NOT NULL,
  event_types     INTEGER NOT NULL,
  account_id      TEXT,
  account_sealed  BLOB,
  enabled         INTEGER NOT NULL,
  paused          INTEGER NOT NULL,
  max_per_second  INTEGER NOT NULL,
  disabled_reason TEXT    NOT NULL,
  created_us      INTEGER NOT NULL,
  updated_us      INTEGER NOT NULL,
  last_success_us INTEGER NOT NULL,
  cursor_seq      INTEGER NOT NULL,
  start_seq       INTEGER NOT NULL,
  sealed_with     TEXT
) WITHOUT ROWID;

-- One row per event fanned out to a subscription and not delivered yet: state 0 pending, 1
-- failed (dead letter). Delivered rows are deleted (the attempts keep the history). A claimed
-- row holds its lease (owner, until) and is due again at lease_until_us (next_at_us moves
-- there), so the due index never holds a delivery in flight.
CREATE TABLE sub_deliveries (
  sub_id           TEXT    NOT NULL,
  seq              INTEGER NOT NULL,
  conversation_id  TEXT    NOT NULL,
  state            INTEGER NOT NULL,
  attempts         INTEGER NOT NULL,
  first_attempt_us INTEGER NOT NULL,
  next_at_us       INTEGER NOT NULL,
  lease_owner      TEXT,
  lease_until_us   INTEGER NOT NULL,
  PRIMARY KEY (sub_id, seq)
) WITHOUT ROWID;
-- Claims: a subscription's pending rows by when they are due.
CREATE INDEX sub_deliveries_due ON sub_deliveries (sub_id, next_at_us) WHERE state = 0;
-- Ordering (an earlier pending delivery of the same conversation holds a later one back) and
-- erasure (every delivery of a conversation).
CREATE INDEX sub_deliveries_conversation ON sub_deliveries (sub_id, conversation_id, seq);

-- Every attempt (GET /api/v1/subscriptions/{id}/deliveries, newest first).
CREATE TABLE delivery_attempts (
  id            INTEGER PRIMARY KEY,
  sub_id        TEXT    NOT NULL,
  seq           INTEGER NOT NULL,
  event_id      TEXT    NOT NULL,
  type          INTEGER NOT NULL,
  attempt       INTEGER NOT NULL,
  status_code   INTEGER NOT NULL,
  latency_ms    INTEGER NOT NULL,
  at_us         INTEGER NOT NULL,
  outcome       INTEGER NOT NULL,
  response_head TEXT    NOT NULL
);
CREATE INDEX delivery_attempts_sub ON delivery_attempts (sub_id, id);

-- The brokers' named cursors (queue/): the last seq published, and who publishes.
CREATE TABLE outbox_cursors (
  name           TEXT    PRIMARY KEY,
  seq            INTEGER NOT NULL,
  lease_owner    TEXT,
  lease_until_us INTEGER NOT NULL
) WITHOUT ROWID;
