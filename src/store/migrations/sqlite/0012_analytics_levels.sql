-- Analytics (issue 11): analytics_dim also keeps, under its own dim codes, a UTC day's totals
-- (dim 5), 4 UTC hours' totals (dim 6) and 16-day blocks by dimension (dims 8..12), read by dim
-- first (store/rollup.h): the
-- table is made again keyed (dim, day_us, value) and every rollup is computed once more at the
-- next start. A filtered query reads analytics_hour by the filtered dimension.
DROP TABLE analytics_dim;
CREATE TABLE analytics_dim (
  dim           INTEGER NOT NULL,
  day_us        INTEGER NOT NULL,
  value         TEXT    NOT NULL,
  conversations INTEGER NOT NULL,
  messages      INTEGER NOT NULL,
  duration_sum  INTEGER NOT NULL,
  hist          BLOB    NOT NULL,
  PRIMARY KEY (dim, day_us, value)
) WITHOUT ROWID;
CREATE INDEX analytics_hour_account ON analytics_hour (account_id, hour_us);
CREATE INDEX analytics_hour_agent ON analytics_hour (agent_id, hour_us);
CREATE INDEX analytics_hour_platform ON analytics_hour (platform, hour_us);
CREATE INDEX analytics_hour_status ON analytics_hour (status, hour_us);
UPDATE analytics_state SET rebuild = 1 WHERE EXISTS (SELECT 1 FROM conversations);
