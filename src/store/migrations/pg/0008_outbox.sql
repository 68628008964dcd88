-- Onward delivery (issue 10, store.h "The outbox"). Names shared with SQLite's 0008.
--
-- outbox_events: one row per event, written in the change's own transaction. seq follows
-- commit order: rows are moved here from the batch's staging table (store_pg.c) only after the
-- batch holds the audit head's row lock, which it keeps until its commit, so a cursor reading
-- "seq > n" never passes a seq that commits later. data is the event's data (sealed with a
-- ring, sealed_with naming the key; a conversation.deleted event's data holds only the
-- conversation id and is never sealed), without the conversation's "audio" member:
-- audio_bytes (NULL: none) is put back in when read, so the store never has to read what a
-- concurrent write is replacing. account_id: plaintext, or its blind index with the value in
-- account_sealed (as conversations.account_id). One index besides the key: a conversation's
-- events, for erasure and for an audio event that copies its conversation's data.
CREATE TABLE outbox_events (
  seq             BIGSERIAL PRIMARY KEY,
  event_id        TEXT COLLATE "C" NOT NULL,
  type            INTEGER NOT NULL,
  conversation_id TEXT COLLATE "C" NOT NULL,
  account_id      TEXT COLLATE "C",
  account_sealed  BYTEA,
  created_us      BIGINT NOT NULL,
  data            BYTEA NOT NULL,
  audio_bytes     BIGINT,
  sealed_with     TEXT COLLATE "C"
);
CREATE INDEX outbox_events_conversation ON outbox_events (conversation_id, seq);

-- Webhook subscriptions. secret: plaintext, or '' with the value in secret_sealed (sealed_with
-- naming the key). account_id: '' for every account (kept plaintext: a configuration value;
-- events' sealed account ids are matched through their blind indexes). cursor_seq: the last
-- outbox seq fan-out has considered for it. Rows are locked before their deliveries' rows.
CREATE TABLE subscriptions (
  id              TEXT COLLATE "C" PRIMARY KEY,
  url             TEXT NOT NULL,
  secret          TEXT COLLATE "C" NOT NULL,
  secret_sealed   BYTEA,
  sealed_with     TEXT COLLATE "C",
  event_types     INTEGER NOT NULL,
  account_id      TEXT COLLATE "C" NOT NULL,
  enabled         BOOLEAN NOT NULL,
  paused          BOOLEAN NOT NULL,
  max_per_second  BIGINT NOT NULL,
  disabled_reason TEXT COLLATE "C" NOT NULL,
  created_us      BIGINT NOT NULL,
  updated_us      BIGINT NOT NULL,
  last_success_us BIGINT NOT NULL,
  start_seq       BIGINT NOT NULL, -- the last seq before it was created (replay goes no further back)
  cursor_seq      BIGINT NOT NULL
);

-- A subscription's deliveries still to make (state 0, pending) or failed for good (1, dead
-- letter); delivered ones are deleted (their history is in delivery_attempts). A lease
-- (lease_owner, lease_until_us) marks one being attempted by one instance; it expires.
CREATE TABLE sub_deliveries (
  sub_id           TEXT COLLATE "C" NOT NULL,
  seq              BIGINT NOT NULL,
  conversation_id  TEXT COLLATE "C" NOT NULL,
  state            INTEGER NOT NULL,
  attempts         INTEGER NOT NULL,
  first_attempt_us BIGINT NOT NULL,
  next_at_us       BIGINT NOT NULL,
  lease_owner      TEXT COLLATE "C",
  lease_until_us   BIGINT,
  PRIMARY KEY (sub_id, seq)
);
-- due pending rows of a subscription
CREATE INDEX sub_deliveries_due ON sub_deliveries (sub_id, next_at_us) WHERE state = 0;
-- the ordering check: an earlier pending delivery of the same conversation
CREATE INDEX sub_deliveries_order ON sub_deliveries (sub_id, conversation_id, seq)
  WHERE state = 0;
-- erasure and prune: the deliveries of an event
CREATE INDEX sub_deliveries_seq ON sub_deliveries (seq);

-- Every attempt (GET /api/v1/subscriptions/{id}/deliveries). response_head: the answer's first
-- bytes as received (not necessarily UTF-8).
CREATE TABLE delivery_attempts (
  id            BIGSERIAL PRIMARY KEY,
  sub_id        TEXT COLLATE "C" NOT NULL,
  seq           BIGINT NOT NULL,
  event_id      TEXT COLLATE "C" NOT NULL,
  type          INTEGER NOT NULL,
  attempt       INTEGER NOT NULL,
  status_code   INTEGER NOT NULL,
  latency_ms    BIGINT NOT NULL,
  at_us         BIGINT NOT NULL,
  outcome       INTEGER NOT NULL,
  response_head BYTEA NOT NULL
);
CREATE INDEX delivery_attempts_sub ON delivery_attempts (sub_id, id);
CREATE INDEX delivery_attempts_at ON delivery_attempts USING brin (at_us);

-- Brokers' cursors over the outbox (queue/), each leased to one instance at a time.
CREATE TABLE outbox_cursors (
  name           TEXT COLLATE "C" PRIMARY KEY,
  seq            BIGINT NOT NULL,
  lease_owner    TEXT COLLATE "C",
  lease_until_us BIGINT
);
