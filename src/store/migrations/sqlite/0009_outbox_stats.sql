-- Health and erasure stay cheap however large the outbox grows (issue 10 review).
-- Dead letters (state 1) are counted by health on every check: without this index the count
-- walked every pending row too. Counts are also capped (store_sqlite.c sqlite_outbox_stats).
CREATE INDEX sub_deliveries_dead ON sub_deliveries (sub_id) WHERE state = 1;
-- Erasure removes the erased conversation's attempts (their response_head may echo its data),
-- found by the seqs of its events.
CREATE INDEX delivery_attempts_seq ON delivery_attempts (seq);
