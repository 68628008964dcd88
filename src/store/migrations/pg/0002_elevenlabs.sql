-- ElevenLabs: conversations may lack an email or account (stored NULL, rendered null), carry
-- the agent and, for a failed call, why it failed.
ALTER TABLE conversations
  ALTER COLUMN email_id DROP NOT NULL,
  ALTER COLUMN account_id DROP NOT NULL,
  ADD COLUMN agent_id TEXT COLLATE "C",
  ADD COLUMN failure_reason TEXT COLLATE "C";

-- Every accepted ElevenLabs event, byte for byte as received (for post_call_audio: the
-- envelope, with the audio's base64 cut out at audio_at; the decoded audio is in audio_chunks).
-- One index: it finds a conversation's events and answers the redelivery check
-- (same conversation, same body hash) alike.
CREATE TABLE events (
  id              BIGSERIAL PRIMARY KEY,
  webhook_id      TEXT COLLATE "C" NOT NULL,
  conversation_id TEXT COLLATE "C" NOT NULL,
  type            TEXT COLLATE "C" NOT NULL,
  received_at_us  BIGINT NOT NULL,
  body_sha256     BYTEA  NOT NULL,
  body            BYTEA  NOT NULL,
  audio_at        BIGINT
);
CREATE INDEX events_conversation ON events (conversation_id, body_sha256);

-- A conversation's audio (decoded MP3), independent of its conversations row: audio may
-- arrive before the transcript. Kept in chunks of chunk_bytes so writing and reading a range
-- never needs the whole file in memory. MP3 does not compress: EXTERNAL skips the attempt.
CREATE TABLE audio_meta (
  conversation_id TEXT COLLATE "C" PRIMARY KEY,
  bytes           BIGINT NOT NULL,
  chunk_bytes     BIGINT NOT NULL,
  webhook_id      TEXT COLLATE "C" NOT NULL,
  received_at_us  BIGINT NOT NULL
);
CREATE TABLE audio_chunks (
  conversation_id TEXT COLLATE "C" NOT NULL,
  seq             BIGINT NOT NULL,
  data            BYTEA  NOT NULL,
  PRIMARY KEY (conversation_id, seq)
);
ALTER TABLE audio_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
