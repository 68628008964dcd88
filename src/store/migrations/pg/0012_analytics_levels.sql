-- Analytics (issue 11): analytics_dim also keeps, under its own dim codes, a UTC day's totals
-- (dim 5), 4 UTC hours' totals (dim 6) and 16-day blocks by dimension (dims 8..12), read by dim
-- first (store/rollup.h): the
-- table is made again keyed (dim, day_us, value) and every rollup is computed once more at the
-- next start. A filtered query reads analytics_hour by the filtered dimension.
DROP TABLE analytics_dim;
CREATE TABLE analytics_dim (
  dim           INT NOT NULL,
  day_us        BIGINT NOT NULL,
  value         TEXT COLLATE "C" NOT NULL,
  conversations BIGINT NOT NULL,
  messages      BIGINT NOT NULL,
  duration_sum  BIGINT NOT NULL,
  hist          INT[] NOT NULL,
  PRIMARY KEY (dim, day_us, value)
);
CREATE INDEX analytics_hour_account ON analytics_hour (account_id, hour_us);
CREATE INDEX analytics_hour_agent ON analytics_hour (agent_id, hour_us);
CREATE INDEX analytics_hour_platform ON analytics_hour (platform, hour_us);
CREATE INDEX analytics_hour_status ON analytics_hour (status, hour_us);
UPDATE analytics_state SET rebuild = true WHERE EXISTS (SELECT 1 FROM conversations);

-- One contribution applied at once to every level (a session that stages none).
CREATE OR REPLACE FUNCTION gensendrep_analytics_apply(hour BIGINT, acc TEXT, agent TEXT, plat TEXT,
    st TEXT, outc TEXT, n BIGINT, msgs BIGINT, dur BIGINT, b INT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  h INT[] := array_fill(0, ARRAY[80]);
  v_day BIGINT := hour - (((hour % 86400000000) + 86400000000) % 86400000000);
  v_block BIGINT := hour - (((hour % 1382400000000) + 1382400000000) % 1382400000000);
  v_block4 BIGINT := hour - (((hour % 14400000000) + 14400000000) % 14400000000);
  vals TEXT[] := ARRAY[acc, agent, plat, st, outc];
  v_at BIGINT;
  v_val TEXT;
BEGIN
  h[b + 1] := n;
  INSERT INTO analytics_hour AS r VALUES (hour, acc, agent, plat, st, outc, n, msgs, dur, h)
    ON CONFLICT (hour_us, account_id, agent_id, platform, status, outcome) DO UPDATE SET
      conversations = r.conversations + n, messages = r.messages + msgs,
      duration_sum = r.duration_sum + dur, hist[b + 1] = r.hist[b + 1] + n;
  DELETE FROM analytics_hour WHERE hour_us = hour AND account_id = acc AND agent_id = agent
    AND platform = plat AND status = st AND outcome = outc AND conversations = 0;
  INSERT INTO analytics_total AS r VALUES (hour, n, msgs, dur, h)
    ON CONFLICT (hour_us) DO UPDATE SET
      conversations = r.conversations + n, messages = r.messages + msgs,
      duration_sum = r.duration_sum + dur, hist[b + 1] = r.hist[b + 1] + n;
  DELETE FROM analytics_total WHERE hour_us = hour AND conversations = 0;
  FOR i IN 0..10 LOOP
    IF i = 7 THEN
      CONTINUE;
    END IF;
    v_at := CASE WHEN i >= 8 THEN v_block WHEN i = 6 THEN v_block4 ELSE v_day END;
    v_val := CASE WHEN i IN (5, 6) THEN '' WHEN i >= 8 THEN vals[i - 7] ELSE vals[i + 1] END;
    INSERT INTO analytics_dim AS r (dim, day_us, value, conversations, messages, duration_sum,
      hist) VALUES (i, v_at, v_val, n, msgs, dur, h)
      ON CONFLICT (dim, day_us, value) DO UPDATE SET
        conversations = r.conversations + n, messages = r.messages + msgs,
        duration_sum = r.duration_sum + dur, hist[b + 1] = r.hist[b + 1] + n;
    DELETE FROM analytics_dim WHERE dim = i AND day_us = v_at AND value = v_val
      AND conversations = 0;
  END LOOP;
END
$$;

