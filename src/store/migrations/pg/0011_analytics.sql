-- Analytics (issue 11): a conversation's platform (the seed's metadata.platform) and outcome
-- (ElevenLabs' analysis.call_successful), NULL when unknown; conversations read by event time
-- (start time, else processed time: analytics edges and the list's from/to).
ALTER TABLE conversations
  ADD COLUMN platform TEXT COLLATE "C",
  ADD COLUMN outcome TEXT COLLATE "C";
CREATE INDEX conversations_event_time
  ON conversations ((COALESCE(start_time_us, processed_at_us)));

-- Rollups (store/rollup.h): every stored conversation counts once in each table, under its
-- event time's bucket (UTC). Unknown dimensions are '' (no stored value is empty); account_id is
-- as stored (a blind index when sealed). hist: ANALYTICS_HIST_BUCKETS duration counts. A row
-- whose conversations reach 0 is deleted.
CREATE TABLE analytics_hour (
  hour_us       BIGINT NOT NULL,
  account_id    TEXT COLLATE "C" NOT NULL,
  agent_id      TEXT COLLATE "C" NOT NULL,
  platform      TEXT COLLATE "C" NOT NULL,
  status        TEXT COLLATE "C" NOT NULL,
  outcome       TEXT COLLATE "C" NOT NULL,
  conversations BIGINT NOT NULL,
  messages      BIGINT NOT NULL,
  duration_sum  BIGINT NOT NULL,
  hist          INT[] NOT NULL,
  PRIMARY KEY (hour_us, account_id, agent_id, platform, status, outcome)
);
CREATE TABLE analytics_total (
  hour_us       BIGINT PRIMARY KEY,
  conversations BIGINT NOT NULL,
  messages      BIGINT NOT NULL,
  duration_sum  BIGINT NOT NULL,
  hist          INT[] NOT NULL
);
-- dim: 0 account, 1 agent, 2 platform, 3 status, 4 outcome (enum store_dim).
CREATE TABLE analytics_dim (
  day_us        BIGINT NOT NULL,
  dim           INT NOT NULL,
  value         TEXT COLLATE "C" NOT NULL,
  conversations BIGINT NOT NULL,
  messages      BIGINT NOT NULL,
  duration_sum  BIGINT NOT NULL,
  hist          INT[] NOT NULL,
  PRIMARY KEY (day_us, dim, value)
);
CREATE TABLE analytics_state (
  id      INT PRIMARY KEY CHECK (id = 1),
  rebuild BOOLEAN NOT NULL
);
INSERT INTO analytics_state (id, rebuild)
  SELECT 1, EXISTS (SELECT 1 FROM conversations);

-- The duration's histogram bucket (model/analytics_hist.c: the lower edges of buckets 1..79).
CREATE FUNCTION gensendrep_hist_bucket(d BIGINT) RETURNS INT LANGUAGE sql IMMUTABLE AS $$
  SELECT width_bucket(d, ARRAY[1,2,3,4,5,6,7,8,9,10,11,12,13,14,16,18,20,23,26,29,33,37,42,48,
    55,63,72,82,94,108,124,142,163,187,215,247,284,326,374,430,494,568,653,750,862,991,1139,1309,
    1505,1730,1989,2287,2630,3024,3477,3998,4597,5286,6078,6989,8037,9242,10628,12222,14055,
    16163,18587,21375,24581,28268,32508,37384,42991,49439,56854,65382,75189,86467,99437]::BIGINT[])
$$;

-- A batch's contributions summed into rollup hists: bucket bs[i] gets ns[i].
CREATE FUNCTION gensendrep_hist_of(bs INT[], ns BIGINT[]) RETURNS INT[] LANGUAGE plpgsql
IMMUTABLE AS $$
DECLARE
  h INT[] := array_fill(0, ARRAY[80]);
BEGIN
  FOR i IN 1..COALESCE(array_length(bs, 1), 0) LOOP
    h[bs[i] + 1] := h[bs[i] + 1] + ns[i];
  END LOOP;
  RETURN h;
END
$$;
CREATE FUNCTION gensendrep_hist_add(a INT[], b INT[]) RETURNS INT[] LANGUAGE sql IMMUTABLE AS $$
  SELECT array_agg(x + y ORDER BY i) FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

-- A change's contributions: staged in the session's pg_temp.analytics_pending (the writer's,
-- ON COMMIT DELETE ROWS) and summed into the rollups once per batch, each key once, in key
-- order (store_pg.c: analytics_flush); a session without that table (psql, say) applies its
-- change to the rollups at once.
CREATE FUNCTION gensendrep_analytics_stage(sign INT, t BIGINT, acc TEXT, agent TEXT, plat TEXT,
    st TEXT, outc TEXT, dur BIGINT, msgs BIGINT) RETURNS void LANGUAGE plpgsql AS $$
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
  END IF;
END
$$;

-- One contribution applied at once to every level (a session that stages none).
CREATE FUNCTION gensendrep_analytics_apply(hour BIGINT, acc TEXT, agent TEXT, plat TEXT,
    st TEXT, outc TEXT, n BIGINT, msgs BIGINT, dur BIGINT, b INT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  h INT[] := array_fill(0, ARRAY[80]);
  v_day BIGINT := hour - (((hour % 86400000000) + 86400000000) % 86400000000);
  vals TEXT[] := ARRAY[acc, agent, plat, st, outc];
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
  FOR d IN 0..4 LOOP
    INSERT INTO analytics_dim AS r VALUES (v_day, d, vals[d + 1], n, msgs, dur, h)
      ON CONFLICT (day_us, dim, value) DO UPDATE SET
        conversations = r.conversations + n, messages = r.messages + msgs,
        duration_sum = r.duration_sum + dur, hist[b + 1] = r.hist[b + 1] + n;
    DELETE FROM analytics_dim WHERE day_us = v_day AND dim = d AND value = vals[d + 1]
      AND conversations = 0;
  END LOOP;
END
$$;

CREATE FUNCTION gensendrep_analytics_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM gensendrep_analytics_stage(-1, COALESCE(OLD.start_time_us, OLD.processed_at_us),
      OLD.account_id, OLD.agent_id, OLD.platform, OLD.status, OLD.outcome, OLD.duration,
      OLD.message_count);
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    PERFORM gensendrep_analytics_stage(1, COALESCE(NEW.start_time_us, NEW.processed_at_us),
      NEW.account_id, NEW.agent_id, NEW.platform, NEW.status, NEW.outcome, NEW.duration,
      NEW.message_count);
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER conversations_analytics_ins AFTER INSERT ON conversations
  FOR EACH ROW EXECUTE FUNCTION gensendrep_analytics_track();
CREATE TRIGGER conversations_analytics_del AFTER DELETE ON conversations
  FOR EACH ROW EXECUTE FUNCTION gensendrep_analytics_track();
CREATE TRIGGER conversations_analytics_upd AFTER UPDATE ON conversations
  FOR EACH ROW WHEN (
    OLD.start_time_us IS DISTINCT FROM NEW.start_time_us OR
    OLD.processed_at_us IS DISTINCT FROM NEW.processed_at_us OR
    OLD.account_id IS DISTINCT FROM NEW.account_id OR OLD.agent_id IS DISTINCT FROM NEW.agent_id OR
    OLD.platform IS DISTINCT FROM NEW.platform OR OLD.status IS DISTINCT FROM NEW.status OR
    OLD.outcome IS DISTINCT FROM NEW.outcome OR OLD.duration IS DISTINCT FROM NEW.duration OR
    OLD.message_count IS DISTINCT FROM NEW.message_count)
  EXECUTE FUNCTION gensendrep_analytics_track();
