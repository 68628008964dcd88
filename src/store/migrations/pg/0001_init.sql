-- Every accepted delivery's raw body, kept whole (nothing received is lost).
-- Text is COLLATE "C" so ordering and equality are bytewise, exactly as on SQLite.
CREATE TABLE deliveries (
  id              BIGSERIAL PRIMARY KEY,
  webhook_id      TEXT COLLATE "C" NOT NULL,
  conversation_id TEXT COLLATE "C" NOT NULL,
  received_at_us  BIGINT NOT NULL,
  body_sha256     BYTEA  NOT NULL,
  body            BYTEA  NOT NULL
);

-- One row per conversationId: its current version, with what redelivery checks need
-- (webhook_id, body_sha256) so that check reads this table alone. Few indexes on purpose:
-- every index is one more B-tree written by each webhook.
CREATE TABLE conversations (
  conversation_id TEXT COLLATE "C" PRIMARY KEY,
  email_id        TEXT COLLATE "C" NOT NULL,
  account_id      TEXT COLLATE "C" NOT NULL,
  status          TEXT COLLATE "C" NOT NULL,
  start_time_us   BIGINT,
  duration        BIGINT NOT NULL,
  message_count   BIGINT NOT NULL,
  processed_at_us BIGINT NOT NULL,
  webhook_id      TEXT COLLATE "C" NOT NULL,
  body_sha256     BYTEA  NOT NULL,
  delivery_id     BIGINT NOT NULL REFERENCES deliveries (id)
);
CREATE INDEX conversations_recent  ON conversations (processed_at_us DESC, conversation_id);
CREATE INDEX conversations_email   ON conversations (email_id, processed_at_us DESC, conversation_id);
CREATE INDEX conversations_account ON conversations (account_id, processed_at_us DESC, conversation_id);

-- The health check's committed write.
CREATE TABLE health_probe (
  id         INTEGER PRIMARY KEY CHECK (id = 1),
  checked_us BIGINT NOT NULL
);
