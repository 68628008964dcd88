-- The outbox, after review (issue 10): no delivery without its event, cheap health, erasure of
-- attempts.
--
-- A delivery row always has its event: fan-out or replay racing an erasure, a retention or a
-- prune could otherwise leave a pending row whose event is gone, which no claim ever returns and
-- which, by the per-conversation order, held back every later event of that conversation (its
-- conversation.deleted too) for good. With the foreign key the erasing statement waits for a
-- fan-out that holds the event (its key-share lock), deletes what it made, and a fan-out that
-- loses the race fails and is run again (store_pg.c). Rows already orphaned are removed first.
DELETE FROM sub_deliveries d WHERE NOT EXISTS (SELECT 1 FROM outbox_events e WHERE e.seq = d.seq);
ALTER TABLE sub_deliveries ADD CONSTRAINT sub_deliveries_event FOREIGN KEY (seq)
  REFERENCES outbox_events (seq) ON DELETE CASCADE;
-- Dead letters (state 1), counted by health on every check, without walking pending rows.
CREATE INDEX sub_deliveries_dead ON sub_deliveries (sub_id) WHERE state = 1;
-- An event's attempts, found by its seq (erasure takes an erased conversation's attempts along:
-- their response_head may echo its data).
CREATE INDEX delivery_attempts_seq ON delivery_attempts (seq);
