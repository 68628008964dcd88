-- The list's order key (issue 11, cursor pagination while writes continue): when the
-- conversation was first stored, set on insert and never changed by a redelivery's upsert
-- (processed_at_us, the latest processing, is). A walk by cursor, page or export therefore
-- never meets a conversation twice nor passes over one that a redelivery changed meanwhile.
-- Existing rows take their processed time. The three list indexes are rebuilt on the new key:
-- as many index entries per write as before (a changed redelivery now moves none of them).
-- The old indexes go first, so the UPDATE maintains none of them (about 4 s for 300,000
-- conversations, a 1.6 GB store; README "Running").
ALTER TABLE conversations ADD COLUMN first_processed_at_us INTEGER NOT NULL DEFAULT 0;
DROP INDEX conversations_recent;
DROP INDEX conversations_email;
DROP INDEX conversations_account;
UPDATE conversations SET first_processed_at_us = processed_at_us;
CREATE INDEX conversations_recent  ON conversations (first_processed_at_us DESC, conversation_id);
CREATE INDEX conversations_email   ON conversations (email_id, first_processed_at_us DESC, conversation_id);
CREATE INDEX conversations_account ON conversations (account_id, first_processed_at_us DESC, conversation_id);
