-- Analytics (issue 11): a query filtered on one dimension read every matching analytics_hour row
-- (a year of one agent: some 11,000 rows, each on a page of its own). analytics_block keeps every
-- dimension per 16-day block (ROLLUP_BLOCK_US from the epoch; the full key, with a duration
-- histogram): such a query takes its breakdowns and percentiles from it, its totals and series
-- from the filtered value's day rows of analytics_dim (found by analytics_dim_value), and only
-- the hours outside whole blocks from analytics_hour (store/rollup.h). The rollups are computed
-- once more at the next start.
CREATE TABLE analytics_block (
  block_us      BIGINT NOT NULL,
  account_id    TEXT COLLATE "C" NOT NULL,
  agent_id      TEXT COLLATE "C" NOT NULL,
  platform      TEXT COLLATE "C" NOT NULL,
  status        TEXT COLLATE "C" NOT NULL,
  outcome       TEXT COLLATE "C" NOT NULL,
  conversations BIGINT NOT NULL,
  messages      BIGINT NOT NULL,
  duration_sum  BIGINT NOT NULL,
  hist          INT[] NOT NULL,
  PRIMARY KEY (block_us, account_id, agent_id, platform, status, outcome)
) WITH (fillfactor = 50);
CREATE INDEX analytics_block_account ON analytics_block (account_id, block_us);
CREATE INDEX analytics_block_agent ON analytics_block (agent_id, block_us);
CREATE INDEX analytics_block_platform ON analytics_block (platform, block_us);
CREATE INDEX analytics_block_status ON analytics_block (status, block_us);
UPDATE analytics_state SET rebuild = true WHERE EXISTS (SELECT 1 FROM conversations);
-- analytics_dim holds rows of four kinds written at different paces: per day and value (dims
-- 0..4, ~190 rows a day), a day's and 4 hours' totals (5, 6: 7 a day) and per block and value
-- (8..12, mostly on a block's first day). In one heap, written hour after hour, a year's 2,190
-- 4-hour totals or 4,278 block rows lie one per page among the day rows (the New York year's
-- answer read 1,825 pages for its 4-hour totals). Partitioned by kind (the same table, key and
-- statements), each kind's rows lie together in the order written. The rows are copied over
-- (they are recounted at the next start anyway when there are conversations). The lock waits for
-- the writes in flight and holds new ones off until the commit (reads go on until the DROP): a
-- write committed between the copy and the DROP (an instance still on an older binary, a change
-- made by hand) would otherwise be lost with the old table, and with no conversation stored
-- when this ran, nothing would count it again.
LOCK TABLE analytics_dim IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE analytics_dim_by_kind (
  dim           INT NOT NULL,
  day_us        BIGINT NOT NULL,
  value         TEXT COLLATE "C" NOT NULL,
  conversations BIGINT NOT NULL,
  messages      BIGINT NOT NULL,
  duration_sum  BIGINT NOT NULL,
  hist          INT[] NOT NULL,
  PRIMARY KEY (dim, day_us, value)
) PARTITION BY LIST (dim);
CREATE TABLE analytics_dim_days PARTITION OF analytics_dim_by_kind FOR VALUES IN (0, 1, 2, 3, 4)
  WITH (fillfactor = 50);
CREATE TABLE analytics_dim_totals PARTITION OF analytics_dim_by_kind FOR VALUES IN (5, 6)
  WITH (fillfactor = 50);
CREATE TABLE analytics_dim_blocks PARTITION OF analytics_dim_by_kind
  FOR VALUES IN (8, 9, 10, 11, 12) WITH (fillfactor = 50);
CREATE TABLE analytics_dim_other PARTITION OF analytics_dim_by_kind DEFAULT WITH (fillfactor = 50);
INSERT INTO analytics_dim_by_kind SELECT dim, day_us, value, conversations, messages, duration_sum,
  hist FROM analytics_dim ORDER BY dim, day_us, value;
DROP TABLE analytics_dim;
ALTER TABLE analytics_dim_by_kind RENAME TO analytics_dim;
ALTER INDEX analytics_dim_by_kind_pkey RENAME TO analytics_dim_pkey;
CREATE INDEX analytics_dim_value ON analytics_dim (dim, value, day_us);
-- Rollup rows are updated at every batch that counts in them. A page filled to the brim moves the
-- new version of a row to any page with room (not a HOT update): over time a day's or a block's
-- rows, inserted side by side, end up one per page, and a year's scan reads a page per row (the
-- unfiltered year's day/hour/New York answers: 7.9/14.6/19.2 ms p50 on the 1,000,000-row bench
-- store, 5.4/10.2/13.4 once its rollups were CLUSTERed). Pages kept half empty take the updates
-- in place, so the rows stay where they were inserted, i.e. in time order. analytics_hour's rows
-- are updated only within their hour: less room is enough. (analytics_dim's partitions above.)
ALTER TABLE analytics_total SET (fillfactor = 50);
ALTER TABLE analytics_hour SET (fillfactor = 70);

-- A change made outside gensendrep's writer (by hand in psql: no pg_temp.analytics_pending) is
-- applied at once to analytics_block too, by a function of its own called next to
-- gensendrep_analytics_apply (which 0015 last replaced, and which stays as it is).
CREATE FUNCTION gensendrep_analytics_apply_block(hour BIGINT, acc TEXT, agent TEXT, plat TEXT,
    st TEXT, outc TEXT, n BIGINT, msgs BIGINT, dur BIGINT, b INT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  h INT[] := array_fill(0, ARRAY[80]);
  v_block BIGINT := hour - (((hour % 1382400000000) + 1382400000000) % 1382400000000);
BEGIN
  h[b + 1] := n;
  INSERT INTO analytics_block AS r VALUES (v_block, acc, agent, plat, st, outc, n, msgs, dur, h)
    ON CONFLICT (block_us, account_id, agent_id, platform, status, outcome) DO UPDATE SET
      conversations = r.conversations + n, messages = r.messages + msgs,
      duration_sum = r.duration_sum + dur, hist[b + 1] = r.hist[b + 1] + n;
  DELETE FROM analytics_block WHERE block_us = v_block AND account_id = acc AND agent_id = agent
    AND platform = plat AND status = st AND outcome = outc AND conversations = 0;
END
$$;

CREATE OR REPLACE FUNCTION gensendrep_analytics_stage(sign INT, t BIGINT, acc TEXT, agent TEXT,
    plat TEXT, st TEXT, outc TEXT, dur BIGINT, msgs BIGINT) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  hour BIGINT := t - (((t % 3600000000) + 3600000000) % 3600000000);
  b INT := gensendrep_hist_bucket(dur);
BEGIN
  IF to_regclass('pg_temp.analytics_pending') IS NOT NULL THEN
    INSERT INTO pg_temp.analytics_pending (hour_us, account_id, agent_id, platform, status,
      outcome, n, messages, duration, bucket)
    VALUES (hour, COALESCE(acc, ''), COALESCE(agent, ''), COALESCE(plat, ''), COALESCE(st, ''),
      COALESCE(outc, ''), sign, msgs, dur, b);
  ELSE
    PERFORM gensendrep_analytics_apply(hour, COALESCE(acc, ''), COALESCE(agent, ''),
      COALESCE(plat, ''), COALESCE(st, ''), COALESCE(outc, ''), sign, sign * msgs, sign * dur, b);
    PERFORM gensendrep_analytics_apply_block(hour, COALESCE(acc, ''), COALESCE(agent, ''),
      COALESCE(plat, ''), COALESCE(st, ''), COALESCE(outc, ''), sign, sign * msgs, sign * dur, b);
  END IF;
END
$$;
