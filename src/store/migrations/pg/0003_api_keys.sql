-- API keys kept as data (gensendrep keys, /api/v1/keys). The secret is never stored: only
-- SHA-256 of its 256 random bits. scopes: comma-separated names; accounts: '\n'-separated ids
-- ('' = every account). Times in microseconds since the epoch; NULL = never.
CREATE TABLE api_keys (
  id            TEXT COLLATE "C" PRIMARY KEY,
  name          TEXT   NOT NULL,
  scopes        TEXT COLLATE "C" NOT NULL,
  accounts      TEXT COLLATE "C" NOT NULL,
  secret_sha256 BYTEA  NOT NULL,
  created_us    BIGINT NOT NULL,
  expires_us    BIGINT,
  revoked_us    BIGINT,
  last_used_us  BIGINT
);
