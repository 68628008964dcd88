-- Analytics: a duration histogram is kept only where a scan reads one (store/rollup.h,
-- rollup_keeps_hist): analytics_hour, and the status rows of analytics_dim (dims 3 and 11), whose
-- hists give an unfiltered answer's percentiles. The others' are emptied: a smaller table to
-- read, and 11 of the 14 keys a write adds to no longer add up a histogram.
-- The lock waits for the batches in flight and holds new ones off until the commit (they then
-- go on): this transaction never waits on a batch's row lock while the batch waits on it.
LOCK TABLE analytics_total, analytics_dim IN SHARE ROW EXCLUSIVE MODE;
UPDATE analytics_total SET hist = '{}' WHERE cardinality(hist) > 0;
UPDATE analytics_dim SET hist = '{}' WHERE dim NOT IN (3, 11) AND cardinality(hist) > 0;

-- The status and outcome blocks (dims 11, 12) counted again from the conversations: 0012's
-- gensendrep_analytics_apply (below, replaced) left them behind on a change made by hand, and
-- dim 11's hists now give percentiles.
DELETE FROM analytics_dim WHERE dim IN (11, 12);
INSERT INTO analytics_dim (dim, day_us, value, conversations, messages, duration_sum, hist)
SELECT dim, block, value, sum(n), sum(m), sum(d),
  CASE WHEN dim = 11 THEN gensendrep_hist_of(array_agg(bucket), array_agg(n)) ELSE '{}' END
FROM (
  SELECT v.dim, c.block, v.value, CASE WHEN v.dim = 11 THEN c.bucket ELSE 0 END AS bucket,
    count(*)::bigint AS n, sum(c.message_count)::bigint AS m, sum(c.duration)::bigint AS d
  FROM (SELECT status, outcome, message_count, duration,
          gensendrep_hist_bucket(duration) AS bucket,
          e - (((e % 1382400000000) + 1382400000000) % 1382400000000) AS block
        FROM (SELECT *, COALESCE(start_time_us, processed_at_us) AS e FROM conversations) x) c
  CROSS JOIN LATERAL (VALUES (11, COALESCE(c.status, '')), (12, COALESCE(c.outcome, '')))
    AS v (dim, value)
  GROUP BY 1, 2, 3, 4) g
GROUP BY 1, 2, 3;

-- A change made outside gensendrep's writer (by hand in psql: no pg_temp.analytics_pending)
-- applied at once, row by row, the same way: the histogram only where kept; and every block
-- dimension (8..12: 0012's loop stopped at 10, leaving the status and outcome blocks behind).
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
  INSERT INTO analytics_total AS r VALUES (hour, n, msgs, dur, '{}')
    ON CONFLICT (hour_us) DO UPDATE SET
      conversations = r.conversations + n, messages = r.messages + msgs,
      duration_sum = r.duration_sum + dur;
  DELETE FROM analytics_total WHERE hour_us = hour AND conversations = 0;
  FOR i IN 0..12 LOOP
    IF i = 7 THEN
      CONTINUE;
    END IF;
    v_at := CASE WHEN i >= 8 THEN v_block WHEN i = 6 THEN v_block4 ELSE v_day END;
    v_val := CASE WHEN i IN (5, 6) THEN '' WHEN i >= 8 THEN vals[i - 7] ELSE vals[i + 1] END;
    IF i IN (3, 11) THEN
      INSERT INTO analytics_dim AS r (dim, day_us, value, conversations, messages, duration_sum,
        hist) VALUES (i, v_at, v_val, n, msgs, dur, h)
        ON CONFLICT (dim, day_us, value) DO UPDATE SET
          conversations = r.conversations + n, messages = r.messages + msgs,
          duration_sum = r.duration_sum + dur, hist[b + 1] = r.hist[b + 1] + n;
    ELSE
      INSERT INTO analytics_dim AS r (dim, day_us, value, conversations, messages, duration_sum,
        hist) VALUES (i, v_at, v_val, n, msgs, dur, '{}')
        ON CONFLICT (dim, day_us, value) DO UPDATE SET
          conversations = r.conversations + n, messages = r.messages + msgs,
          duration_sum = r.duration_sum + dur;
    END IF;
    DELETE FROM analytics_dim WHERE dim = i AND day_us = v_at AND value = v_val
      AND conversations = 0;
  END LOOP;
END
$$;
