-- Encryption at rest for subscriptions (README "Encryption at rest"), as on SQLite: with
-- ENCRYPTION_KEYS a subscription's URL (it often carries a token) is sealed into url_sealed (url
-- holds ''), and its account into account_sealed while account_id holds the account's blind
-- index (sealing.h), which fan-out and replay never match against: they open the account and
-- match events by its indexes under every key. Rows written before keep their plaintext values
-- (the sealed column NULL) and are read as they are until `gensendrep reencrypt` seals them.
ALTER TABLE subscriptions ADD COLUMN url_sealed BYTEA;
ALTER TABLE subscriptions ADD COLUMN account_sealed BYTEA;
