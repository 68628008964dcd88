-- Analytics (issue 11): a query filtered on one dimension read every matching analytics_hour row
-- (a year of one agent: some 11,000 rows, each on a page of its own). analytics_block keeps every
-- dimension per 16-day block (ROLLUP_BLOCK_US from the epoch; the full key, with a duration
-- histogram): such a query takes its breakdowns and percentiles from it, its totals and series
-- from the filtered value's day rows of analytics_dim (found by analytics_dim_value), and only
-- the hours outside whole blocks from analytics_hour (store/rollup.h). The rollups are computed
-- once more at the next start.
CREATE TABLE analytics_block (
  block_us      INTEGER NOT NULL,
  account_id    TEXT    NOT NULL,
  agent_id      TEXT    NOT NULL,
  platform      TEXT    NOT NULL,
  status        TEXT    NOT NULL,
  outcome       TEXT    NOT NULL,
  conversations INTEGER NOT NULL,
  messages      INTEGER NOT NULL,
  duration_sum  INTEGER NOT NULL,
  hist          BLOB    NOT NULL,
  PRIMARY KEY (block_us, account_id, agent_id, platform, status, outcome)
) WITHOUT ROWID;
CREATE INDEX analytics_block_account ON analytics_block (account_id, block_us);
CREATE INDEX analytics_block_agent ON analytics_block (agent_id, block_us);
CREATE INDEX analytics_block_platform ON analytics_block (platform, block_us);
CREATE INDEX analytics_block_status ON analytics_block (status, block_us);
CREATE INDEX analytics_dim_value ON analytics_dim (dim, value, day_us);
UPDATE analytics_state SET rebuild = 1 WHERE EXISTS (SELECT 1 FROM conversations);
