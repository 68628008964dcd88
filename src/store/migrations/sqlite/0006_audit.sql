-- The audit log (model/audit.h, store/audit_chain.h): one row per entry, id = its position in
-- the hash chain (the rowid: appends go to the right edge of the table's B-tree). Texts that
-- are "" in an entry are NULL here. hash = SHA-256(previous entry's hash || canonical content).
CREATE TABLE audit_log (
  id         INTEGER PRIMARY KEY,
  at_us      INTEGER NOT NULL,
  request_id TEXT,
  key_id     TEXT,
  client_ip  TEXT,
  action     TEXT    NOT NULL,
  target     TEXT,
  outcome    TEXT    NOT NULL,
  count      INTEGER NOT NULL,
  hash       BLOB    NOT NULL,
  -- The largest at_us of this entry and every one before it: never decreases along the chain
  -- (at_us may: a read's entry trails its answer), so the first id whose at_max_us reaches a
  -- since bound is found by a binary search over ids, and no entry before it is at or after
  -- since. Not part of the hashed content (it is derived from it).
  at_max_us  INTEGER NOT NULL
);
-- Every index is one more B-tree written by each webhook: only the filters of GET
-- /api/v1/audit that would otherwise read the whole log have one. Each also holds the rowid,
-- so "filter, then id after the cursor, in id order" is one range of the index.
--   target: who touched this conversation (or key)? (one random leaf per webhook)
--   key_id: what did this key do? (appends at the end of the key's range)
--   action: the rare actions only (changes of keys, erasures, rejections): the webhook and read
--           entries, the bulk of the log and of the ingest path, are left out and cost nothing
--           here; a filter on a common action finds its page quickly in id order anyway. The
--           reader's query repeats this WHERE term, which is how SQLite knows it may use it.
-- Partial: entries without one (rejections, lists) are not in them.
-- No index on time: a page is asked for in id order after a cursor, and SQLite plans every
-- since/until statement as a scan of the rowid range (an index on at_us would need a sort of
-- the whole time range per page), so such an index would be written by every webhook and read
-- by none. since starts the scan at the id at_max_us gives (a binary search, ~20 primary-key
-- lookups); until is checked row by row.
CREATE INDEX audit_log_target ON audit_log (target) WHERE target IS NOT NULL;
CREATE INDEX audit_log_key ON audit_log (key_id) WHERE key_id IS NOT NULL;
CREATE INDEX audit_log_action ON audit_log (action) WHERE action NOT IN ('webhook.accepted',
  'conversation.read', 'conversation.list', 'conversation.audio', 'conversation.export');

-- The chain's head: the newest entry's id and hash, updated in the transaction of every
-- append, so removing the newest entries by hand is seen too.
CREATE TABLE audit_head (
  id          INTEGER PRIMARY KEY CHECK (id = 1),
  last_id     INTEGER NOT NULL,
  last_hash   BLOB    NOT NULL,
  last_at_max INTEGER NOT NULL -- the newest entry's at_max_us
);
INSERT INTO audit_head (id, last_id, last_hash, last_at_max) VALUES (1, 0, zeroblob(32), 0);
