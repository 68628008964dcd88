-- Secrets the service makes for itself, once per database, shared by every instance that uses
-- it and kept across restarts and key rotations. list_cursor: the key GET /api/v1/conversations
-- tags its cursors with (api/list_cursor.h); it is never in any answer or log. 32 bytes from two
-- version 4 UUIDs (244 bits from the server's strong random source; core since PostgreSQL 13).
CREATE TABLE service_secrets (
  name  TEXT PRIMARY KEY,
  value BYTEA NOT NULL
);
INSERT INTO service_secrets (name, value)
  VALUES ('list_cursor',
          decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
