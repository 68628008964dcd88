-- The list's order key (issue 11, cursor pagination while writes continue): when the
-- conversation was first stored, set on insert and never changed by a redelivery's upsert
-- (processed_at_us, the latest processing, is). A walk by cursor, page or export therefore
-- never meets a conversation twice nor passes over one that a redelivery changed meanwhile.
-- Existing rows take their processed time. The three list indexes are rebuilt on the new key:
-- as many index entries per write as before (a changed redelivery now moves none of them).
--
-- Big tables: the column is filled by a table rewrite (ALTER ... TYPE with a USING of another
-- column rewrites the table and rebuilds its indexes, as CLUSTER does), not by an UPDATE,
-- which would leave a dead version of every row behind (the table twice its size until vacuum)
-- and run the analytics update trigger once per row. The old list indexes are dropped first so
-- the rewrite does not rebuild them. The table is locked while it runs (README "Running").
ALTER TABLE conversations ADD COLUMN first_processed_at_us BIGINT;
DROP INDEX conversations_recent;
DROP INDEX conversations_email;
DROP INDEX conversations_account;
ALTER TABLE conversations
  ALTER COLUMN first_processed_at_us TYPE BIGINT USING processed_at_us;
ALTER TABLE conversations ALTER COLUMN first_processed_at_us SET NOT NULL;
-- An instance still on an older binary (several instances upgraded one by one) inserts without
-- the column: the database's time stands in for its processed time.
ALTER TABLE conversations ALTER COLUMN first_processed_at_us
  SET DEFAULT (extract(epoch FROM statement_timestamp()) * 1000000)::bigint;
CREATE INDEX conversations_recent  ON conversations (first_processed_at_us DESC, conversation_id);
CREATE INDEX conversations_email   ON conversations (email_id, first_processed_at_us DESC, conversation_id);
CREATE INDEX conversations_account ON conversations (account_id, first_processed_at_us DESC, conversation_id);
