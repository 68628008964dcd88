-- Conversations: one row per conversationId, pointing at its current delivery.
-- Every accepted delivery's raw body is kept in deliveries (nothing received is lost).
CREATE TABLE deliveries (
  id              INTEGER PRIMARY KEY,
  webhook_id      TEXT    NOT NULL UNIQUE,
  conversation_id TEXT    NOT NULL,
  received_at_us  INTEGER NOT NULL,
  body_sha256     BLOB    NOT NULL,
  body            BLOB    NOT NULL
);
CREATE INDEX deliveries_conversation ON deliveries (conversation_id, id);

CREATE TABLE conversations (
  conversation_id TEXT    PRIMARY KEY,
  email_id        TEXT    NOT NULL,
  account_id      TEXT    NOT NULL,
  status          TEXT    NOT NULL,
  start_time_us   INTEGER,
  duration        INTEGER NOT NULL,
  message_count   INTEGER NOT NULL,
  processed_at_us INTEGER NOT NULL,
  delivery_id     INTEGER NOT NULL REFERENCES deliveries (id)
);
CREATE INDEX conversations_recent  ON conversations (processed_at_us DESC, conversation_id);
CREATE INDEX conversations_email   ON conversations (email_id, processed_at_us DESC, conversation_id);
CREATE INDEX conversations_account ON conversations (account_id, processed_at_us DESC, conversation_id);
CREATE INDEX conversations_status  ON conversations (status, processed_at_us DESC, conversation_id);

-- The health check's committed write.
CREATE TABLE health_probe (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  checked_us INTEGER NOT NULL
);
