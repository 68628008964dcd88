-- Encryption at rest (ENCRYPTION_KEYS, src/store/sealing.h). sealed_with: the id of the key a
-- row's sealed values were sealed with (NULL: plaintext, as before). Bodies and audio chunks are
-- sealed in place; a sealed email or account goes to email_sealed/account_sealed while
-- email_id/account_id keep its blind index ("\x01" and 32 hex digits), so the existing indexes
-- serve equality filters on sealed and plaintext rows alike. No new index: none is needed on
-- the ingest path, and gensendrep reencrypt walks tables in primary-key order.
ALTER TABLE deliveries ADD COLUMN sealed_with TEXT;
ALTER TABLE events ADD COLUMN sealed_with TEXT;
ALTER TABLE audio_chunks ADD COLUMN sealed_with TEXT;
ALTER TABLE conversations ADD COLUMN email_sealed BLOB;
ALTER TABLE conversations ADD COLUMN account_sealed BLOB;
ALTER TABLE conversations ADD COLUMN sealed_with TEXT;
-- A sealed failure reason (failure_reason is then NULL).
ALTER TABLE conversations ADD COLUMN failure_sealed BLOB;
-- A key's bound account ids sealed (accounts is then ''), and the key that sealed them.
ALTER TABLE api_keys ADD COLUMN accounts_sealed BLOB;
ALTER TABLE api_keys ADD COLUMN sealed_with TEXT;
-- The keys data may be sealed with: each with a value sealed by it, so a key of the same id but
-- other bytes is told apart at start-up. A finished reencrypt removes all but the current key.
CREATE TABLE seal_keys (
  key_id      TEXT    PRIMARY KEY,
  check_value BLOB    NOT NULL,
  added_us    INTEGER NOT NULL
) WITHOUT ROWID;
