-- Every accepted delivery's raw body, kept whole (nothing received is lost).
CREATE TABLE deliveries (
  id              INTEGER PRIMARY KEY,
  webhook_id      TEXT    NOT NULL,
  conversation_id TEXT    NOT NULL,
  received_at_us  INTEGER NOT NULL,
  body_sha256     BLOB    NOT NULL,
  body            BLOB    NOT NULL
);

-- One row per conversationId: its current version, with what redelivery checks need
-- (webhook_id, body_sha256) so that check reads this table alone. Few indexes on purpose:
-- every index is one more B-tree written by each webhook.
CREATE TABLE conversations (
  conversation_id TEXT    PRIMARY KEY,
  email_id        TEXT    NOT NULL,
  account_id      TEXT    NOT NULL,
  status          TEXT    NOT NULL,
  start_time_us   INTEGER,
  duration        INTEGER NOT NULL,
  message_count   INTEGER NOT NULL,
  processed_at_us INTEGER NOT NULL,
  webhook_id      TEXT    NOT NULL,
  body_sha256     BLOB    NOT NULL,
  delivery_id     INTEGER NOT NULL REFERENCES deliveries (id)
) WITHOUT ROWID;
CREATE INDEX conversations_recent  ON conversations (processed_at_us DESC, conversation_id);
CREATE INDEX conversations_email   ON conversations (email_id, processed_at_us DESC, conversation_id);
CREATE INDEX conversations_account ON conversations (account_id, processed_at_us DESC, conversation_id);

-- The health check's committed write.
CREATE TABLE health_probe (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  checked_us INTEGER NOT NULL
);
