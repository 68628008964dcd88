-- API keys kept as data (gensendrep keys, /api/v1/keys). The secret is never stored: only
-- SHA-256 of its 256 random bits. scopes: comma-separated names; accounts: '\n'-separated ids
-- ('' = every account). Times in microseconds since the epoch; NULL = never.
CREATE TABLE api_keys (
  id            TEXT    PRIMARY KEY,
  name          TEXT    NOT NULL,
  scopes        TEXT    NOT NULL,
  accounts      TEXT    NOT NULL,
  secret_sha256 BLOB    NOT NULL,
  created_us    INTEGER NOT NULL,
  expires_us    INTEGER,
  revoked_us    INTEGER,
  last_used_us  INTEGER
) WITHOUT ROWID;
