-- Onward delivery, after review (issue 10): what the dispatcher kept in memory, kept here.
-- Names shared with SQLite's 0013. Times written by the store on PostgreSQL are the database
-- server's clock (store_pg.c DB_NOW_US), so instances with skewed clocks agree.
--
-- hold_until_us: a receiver that answered 429 or 503 with Retry-After holds its whole
-- subscription until then (capped at the retry schedule's longest wait): no claim, on any
-- instance, takes any of its deliveries before it, after a restart too. 0: no hold.
ALTER TABLE subscriptions ADD COLUMN hold_until_us BIGINT NOT NULL DEFAULT 0;
-- touched_us: when an instance last read, advanced or kept (its broker down) a broker cursor. A
-- cursor nobody touched for OUTBOX_RETENTION_DAYS (QUEUE_URL removed, a broker renamed) no
-- longer holds back prune. Cursors that exist now count as touched by this migration.
ALTER TABLE outbox_cursors ADD COLUMN touched_us BIGINT NOT NULL DEFAULT 0;
UPDATE outbox_cursors SET touched_us = (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
