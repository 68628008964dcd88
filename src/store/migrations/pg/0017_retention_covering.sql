-- Retention walks conversations_recent from its old end (first stored before the cutoff) and
-- keeps only conversations whose processed_at_us is before it too (0016). A conversation first
-- stored long ago but processed again since is passed over on every pass; without
-- processed_at_us in the index each one cost a heap fetch (and with many of them the planner
-- chose a sequential scan and a sort). With it as the index's last column the condition is
-- checked in the index. The entries per write stay as many; a changed redelivery rewrites this
-- one. CREATE INDEX blocks writes to conversations while it runs (seconds per million rows).
DROP INDEX conversations_recent;
CREATE INDEX conversations_recent ON conversations (first_processed_at_us DESC, conversation_id, processed_at_us);
