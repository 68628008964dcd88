-- Analytics (issue 11): a conversation's platform (the seed's metadata.platform) and outcome
-- (ElevenLabs' analysis.call_successful), NULL when unknown; conversations read by event time
-- (start time, else processed time: analytics edges and the list's from/to).
ALTER TABLE conversations ADD COLUMN platform TEXT;
ALTER TABLE conversations ADD COLUMN outcome TEXT;
CREATE INDEX conversations_event_time ON conversations (coalesce(start_time_us, processed_at_us));

-- Rollups, kept by the writer inside each batch's transaction (store/rollup.h): every stored
-- conversation counts once in each table, under its event time's bucket (UTC). Unknown
-- dimensions are '' (no stored value is empty); account_id is as stored (a blind index when
-- sealed). hist: ANALYTICS_HIST_BUCKETS little-endian uint32 duration counts. A row whose
-- conversations reach 0 is deleted.
CREATE TABLE analytics_hour (
  hour_us       INTEGER NOT NULL,
  account_id    TEXT    NOT NULL,
  agent_id      TEXT    NOT NULL,
  platform      TEXT    NOT NULL,
  status        TEXT    NOT NULL,
  outcome       TEXT    NOT NULL,
  conversations INTEGER NOT NULL,
  messages      INTEGER NOT NULL,
  duration_sum  INTEGER NOT NULL,
  hist          BLOB    NOT NULL,
  PRIMARY KEY (hour_us, account_id, agent_id, platform, status, outcome)
) WITHOUT ROWID;
-- Per hour, no dimension: an unfiltered query's totals and series.
CREATE TABLE analytics_total (
  hour_us       INTEGER PRIMARY KEY,
  conversations INTEGER NOT NULL,
  messages      INTEGER NOT NULL,
  duration_sum  INTEGER NOT NULL,
  hist          BLOB    NOT NULL
) WITHOUT ROWID;
-- Per UTC day and one dimension (0 account, 1 agent, 2 platform, 3 status, 4 outcome: enum
-- store_dim): an unfiltered query's breakdowns.
CREATE TABLE analytics_dim (
  day_us        INTEGER NOT NULL,
  dim           INTEGER NOT NULL,
  value         TEXT    NOT NULL,
  conversations INTEGER NOT NULL,
  messages      INTEGER NOT NULL,
  duration_sum  INTEGER NOT NULL,
  hist          BLOB    NOT NULL,
  PRIMARY KEY (day_us, dim, value)
) WITHOUT ROWID;
-- 1 while the rollups are to be computed from the conversations (a store older than this
-- migration): done at the next start, in one transaction.
CREATE TABLE analytics_state (
  id      INTEGER PRIMARY KEY CHECK (id = 1),
  rebuild INTEGER NOT NULL
);
INSERT INTO analytics_state (id, rebuild)
  SELECT 1, CASE WHEN EXISTS (SELECT 1 FROM conversations) THEN 1 ELSE 0 END;
