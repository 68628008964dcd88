-- Encryption at rest for subscriptions (README "Encryption at rest"): with ENCRYPTION_KEYS a
-- subscription's URL (it often carries a token) is sealed into url_sealed (associated data
-- "subscriptions.url" and its id) and url holds ''. Rows written before keep their plaintext url
-- (url_sealed NULL) and are read as they are until `gensendrep reencrypt` seals them.
ALTER TABLE subscriptions ADD COLUMN url_sealed BLOB;
