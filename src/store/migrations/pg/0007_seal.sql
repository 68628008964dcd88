-- Encryption at rest (ENCRYPTION_KEYS, src/seal/seal.h). A row holding sealed data names the
-- key that sealed it in sealed_with (NULL: plaintext, written before encryption was on).
-- Bodies and audio chunks are sealed in place; a conversation's email and account are sealed
-- into email_sealed/account_sealed while email_id/account_id hold their blind index ("\x01"
-- and 32 hex digits, never a valid id), so the existing indexes still serve equality filters.
ALTER TABLE deliveries ADD COLUMN sealed_with TEXT COLLATE "C";
ALTER TABLE events ADD COLUMN sealed_with TEXT COLLATE "C";
ALTER TABLE audio_chunks ADD COLUMN sealed_with TEXT COLLATE "C";
ALTER TABLE conversations
  ADD COLUMN sealed_with TEXT COLLATE "C",
  ADD COLUMN email_sealed BYTEA,
  ADD COLUMN account_sealed BYTEA,
  ADD COLUMN failure_sealed BYTEA; -- a sealed failure reason (failure_reason is then NULL)
-- A key's bound account ids sealed (accounts is then ''), and the key that sealed them.
ALTER TABLE api_keys
  ADD COLUMN accounts_sealed BYTEA,
  ADD COLUMN sealed_with TEXT COLLATE "C";

-- The keys data was sealed with: each with a known text sealed under it, so a key of the same
-- id but other bytes is refused at start-up instead of failing every read.
CREATE TABLE seal_keys (
  key_id      TEXT COLLATE "C" PRIMARY KEY,
  check_value BYTEA  NOT NULL,
  added_us    BIGINT NOT NULL
);
