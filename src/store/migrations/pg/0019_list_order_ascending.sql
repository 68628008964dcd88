-- The list's three indexes ascending in the first processed time (the list reads them
-- backwards: conversation_id DESC keeps its order, newest first then id ascending). Kept
-- descending, every new conversation went in at the front of its range: the B-tree's fast path
-- (the rightmost leaf remembered between inserts) never applied, and pages split at the front
-- were left half empty. Retention reads conversations_recent forwards now (oldest first).
-- DROP INDEX locks conversations until the builds end: webhooks and reads wait (about 2 s per
-- million conversations).
DROP INDEX conversations_recent;
DROP INDEX conversations_email;
DROP INDEX conversations_account;
CREATE INDEX conversations_recent  ON conversations (first_processed_at_us, conversation_id DESC, processed_at_us);
CREATE INDEX conversations_email   ON conversations (email_id, first_processed_at_us, conversation_id DESC);
CREATE INDEX conversations_account ON conversations (account_id, first_processed_at_us, conversation_id DESC);
