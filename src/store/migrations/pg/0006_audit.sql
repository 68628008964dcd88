-- The audit log (model/audit.h, store/audit_chain.h): one row per entry, id = its position in
-- the hash chain (1, 2, ...; never a sequence: a rolled-back batch must leave no hole). hash =
-- SHA-256(previous entry's hash || this entry's canonical content). Empty texts are NULL.
CREATE TABLE audit_log (
  id         BIGINT PRIMARY KEY,
  at_us      BIGINT NOT NULL,
  request_id TEXT COLLATE "C",
  key_id     TEXT COLLATE "C",
  client_ip  TEXT COLLATE "C",
  action     TEXT COLLATE "C" NOT NULL,
  target     TEXT COLLATE "C",
  outcome    TEXT COLLATE "C" NOT NULL,
  count      BIGINT NOT NULL,
  hash       BYTEA  NOT NULL
);
-- Only what GET /api/v1/audit filters on, each written by every webhook: a key's and a
-- target's entries in chain order (cursor pagination walks them; entries with none are left
-- out), and time as a BRIN index (entries are appended in time order, so a block range's
-- summary is all a time filter needs; appending costs next to nothing, unlike a B-tree). The
-- action index holds the rare actions only (changes of keys, erasures, rejections): webhook
-- and read entries, the bulk of the log and of the ingest path, are left out and cost nothing
-- here; a common action finds its page quickly in id order anyway.
CREATE INDEX audit_log_key ON audit_log (key_id, id) WHERE key_id IS NOT NULL;
CREATE INDEX audit_log_target ON audit_log (target, id) WHERE target IS NOT NULL;
CREATE INDEX audit_log_action ON audit_log (action, id) WHERE action NOT IN ('webhook.accepted',
  'conversation.read', 'conversation.list', 'conversation.audio', 'conversation.export');
CREATE INDEX audit_log_at ON audit_log USING brin (at_us) WITH (autosummarize = on);

-- The chain's head: the newest entry's id and hash, moved by every append in the same
-- transaction, so removing the newest entries by hand is seen too. Its row lock serialises
-- appends across instances (taken last in a batch, see store_pg.c).
CREATE TABLE audit_head (
  id        INTEGER PRIMARY KEY CHECK (id = 1),
  last_id   BIGINT NOT NULL,
  last_hash BYTEA  NOT NULL
);
INSERT INTO audit_head (id, last_id, last_hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

-- One text of the canonical content: 4-byte big-endian length, then its UTF-8 bytes (NULL and
-- '' alike: length 0). One expression, no FROM, so it is inlined where it is called.
CREATE FUNCTION gensendrep_audit_text(t TEXT) RETURNS BYTEA
  LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT int4send(octet_length(convert_to(COALESCE(t, ''), 'UTF8')))
          || convert_to(COALESCE(t, ''), 'UTF8') $$;

-- Exactly model/audit.c's audit_entry_content: id, at_us, count as 8-byte big-endian integers,
-- then request id, key id, client ip, action, target, outcome as length-prefixed texts.
CREATE FUNCTION gensendrep_audit_content(id BIGINT, at_us BIGINT, count BIGINT, request_id TEXT,
                                         key_id TEXT, client_ip TEXT, action TEXT, target TEXT,
                                         outcome TEXT) RETURNS BYTEA
  LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT int8send(id) || int8send(at_us) || int8send(count)
          || gensendrep_audit_text(request_id) || gensendrep_audit_text(key_id)
          || gensendrep_audit_text(client_ip) || gensendrep_audit_text(action)
          || gensendrep_audit_text(target) || gensendrep_audit_text(outcome) $$;

-- Appends entries to the chain, in order, and answers each one's ord (the caller's tag), id
-- and hash. Element i of every array is one entry ('' texts are stored NULL). p_rest[i], when
-- given, is the entry's content after its id (the writer builds it with model/audit.c, which
-- keeps the hot path off SQL string building; the id is only known here); when NULL (or
-- p_rest omitted) the content is built here by gensendrep_audit_content. An entry with
-- p_pending true stands for one entry per row of the session's temporary table audit_pending
-- with its ord (its target taken from the row, in target order, content built here; none when
-- there is none; those rows are consumed): how a batch appends entries that its own earlier
-- statements decided (an erasure that erased something, each conversation retention erased,
-- the revocation of a key that exists) without a round trip. The head row is locked
-- (FOR UPDATE), then each entry gets the next id and hash = sha256(previous hash || content),
-- all are inserted and the head moves to the last.
CREATE FUNCTION gensendrep_audit_append(p_ord INT[], p_at BIGINT[], p_request_id TEXT[],
                                        p_key_id TEXT[], p_client_ip TEXT[], p_action TEXT[],
                                        p_target TEXT[], p_outcome TEXT[], p_count BIGINT[],
                                        p_pending BOOLEAN[], p_rest BYTEA[] DEFAULT NULL)
  RETURNS TABLE (ord INT, id BIGINT, hash BYTEA)
  LANGUAGE plpgsql
  -- Its statements' plans do not depend on the values (arrays and the one head row): planning
  -- them anew for each batch (what the default does with array arguments) doubled the cost of
  -- a small batch's append.
  SET plan_cache_mode = force_generic_plan AS
$$
DECLARE
  v_id   BIGINT; -- the head: the newest entry before this append
  v_hash BYTEA;
  hashes BYTEA[] := '{}';
  e      RECORD;
BEGIN
  IF true = ANY (p_pending) THEN
    SELECT array_agg(u.o ORDER BY u.n, p.target), array_agg(u.at ORDER BY u.n, p.target),
           array_agg(u.rq ORDER BY u.n, p.target), array_agg(u.k ORDER BY u.n, p.target),
           array_agg(u.ip ORDER BY u.n, p.target), array_agg(u.act ORDER BY u.n, p.target),
           array_agg(CASE WHEN u.pend THEN p.target ELSE u.tg END ORDER BY u.n, p.target),
           array_agg(u.oc ORDER BY u.n, p.target), array_agg(u.cnt ORDER BY u.n, p.target),
           array_agg(CASE WHEN u.pend THEN NULL ELSE u.rest END ORDER BY u.n, p.target)
      INTO p_ord, p_at, p_request_id, p_key_id, p_client_ip, p_action, p_target, p_outcome,
           p_count, p_rest
      FROM unnest(p_ord, p_at, p_request_id, p_key_id, p_client_ip, p_action, p_target,
                  p_outcome, p_count, p_pending, p_rest) WITH ORDINALITY
           AS u(o, at, rq, k, ip, act, tg, oc, cnt, pend, rest, n)
      LEFT JOIN pg_temp.audit_pending p ON u.pend AND p.ord = u.o
      WHERE NOT u.pend OR p.ord IS NOT NULL;
    DELETE FROM pg_temp.audit_pending;
  END IF;
  IF coalesce(array_length(p_ord, 1), 0) = 0 THEN
    RETURN;
  END IF;
  SELECT h.last_id, h.last_hash INTO v_id, v_hash FROM audit_head h WHERE h.id = 1 FOR UPDATE;
  IF NOT FOUND THEN
    -- class 55: the writer answers 503 (unavailable until an operator repairs it), as SQLite
    RAISE EXCEPTION 'the audit log''s head (table audit_head, row 1) is missing: nothing is '
                    'written until it is repaired (gensendrep audit verify)'
      USING ERRCODE = 'object_not_in_prerequisite_state';
  END IF;
  FOR e IN
    SELECT CASE WHEN x.rest IS NULL
                THEN gensendrep_audit_content(v_id + x.n, x.at, x.cnt, x.rq, x.k, x.ip, x.act,
                                              x.tg, x.oc)
                ELSE int8send(v_id + x.n) || x.rest END AS content
    FROM unnest(p_at, p_count, p_request_id, p_key_id, p_client_ip, p_action, p_target,
                p_outcome, p_rest) WITH ORDINALITY AS x(at, cnt, rq, k, ip, act, tg, oc, rest, n)
    ORDER BY x.n
  LOOP
    v_hash := sha256(v_hash || e.content);
    hashes := array_append(hashes, v_hash);
  END LOOP;
  INSERT INTO audit_log
    SELECT v_id + x.n, x.at, NULLIF(x.rq, ''), NULLIF(x.k, ''), NULLIF(x.ip, ''), x.act,
           NULLIF(x.tg, ''), x.oc, x.cnt, x.h
    FROM unnest(p_at, p_request_id, p_key_id, p_client_ip, p_action, p_target, p_outcome,
                p_count, hashes) WITH ORDINALITY AS x(at, rq, k, ip, act, tg, oc, cnt, h, n);
  UPDATE audit_head h SET last_id = v_id + array_length(hashes, 1), last_hash = v_hash
    WHERE h.id = 1;
  RETURN QUERY
    SELECT x.o, v_id + x.n, x.h FROM unnest(p_ord, hashes) WITH ORDINALITY AS x(o, h, n);
END
$$;
