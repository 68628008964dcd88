-- ElevenLabs: conversations may lack an email or account (stored NULL, rendered null), carry
-- the agent and, for a failed call, why it failed. SQLite cannot drop NOT NULL in place, so the
-- table is rebuilt (inside the migration's transaction: all of it or nothing) with its rows.
CREATE TABLE conversations_0002 (
  conversation_id TEXT    PRIMARY KEY,
  email_id        TEXT,
  account_id      TEXT,
  status          TEXT    NOT NULL,
  start_time_us   INTEGER,
  duration        INTEGER NOT NULL,
  message_count   INTEGER NOT NULL,
  processed_at_us INTEGER NOT NULL,
  webhook_id      TEXT    NOT NULL,
  body_sha256     BLOB    NOT NULL,
  delivery_id     INTEGER NOT NULL REFERENCES deliveries (id),
  agent_id        TEXT,
  failure_reason  TEXT
) WITHOUT ROWID;
INSERT INTO conversations_0002 (conversation_id, email_id, account_id, status, start_time_us,
  duration, message_count, processed_at_us, webhook_id, body_sha256, delivery_id)
  SELECT conversation_id, email_id, account_id, status, start_time_us, duration, message_count,
         processed_at_us, webhook_id, body_sha256, delivery_id FROM conversations;
DROP TABLE conversations;
ALTER TABLE conversations_0002 RENAME TO conversations;
CREATE INDEX conversations_recent  ON conversations (processed_at_us DESC, conversation_id);
CREATE INDEX conversations_email   ON conversations (email_id, processed_at_us DESC, conversation_id);
CREATE INDEX conversations_account ON conversations (account_id, processed_at_us DESC, conversation_id);

-- Every accepted ElevenLabs event, byte for byte as received (for post_call_audio: the
-- envelope, with the audio's base64 cut out at audio_at; the decoded audio is in audio_chunks).
-- One index: it finds a conversation's events and answers the redelivery check
-- (same conversation, same body hash) alike.
CREATE TABLE events (
  id              INTEGER PRIMARY KEY,
  webhook_id      TEXT    NOT NULL,
  conversation_id TEXT    NOT NULL,
  type            TEXT    NOT NULL,
  received_at_us  INTEGER NOT NULL,
  body_sha256     BLOB    NOT NULL,
  body            BLOB    NOT NULL,
  audio_at        INTEGER
);
CREATE INDEX events_conversation ON events (conversation_id, body_sha256);

-- A conversation's audio (decoded MP3), independent of its conversations row: audio may
-- arrive before the transcript. Kept in chunks of chunk_bytes so writing and reading a range
-- never needs the whole file in memory.
CREATE TABLE audio_meta (
  conversation_id TEXT    PRIMARY KEY,
  bytes           INTEGER NOT NULL,
  chunk_bytes     INTEGER NOT NULL,
  webhook_id      TEXT    NOT NULL,
  received_at_us  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE audio_chunks (
  conversation_id TEXT    NOT NULL,
  seq             INTEGER NOT NULL,
  data            BLOB    NOT NULL,
  PRIMARY KEY (conversation_id, seq)
);
