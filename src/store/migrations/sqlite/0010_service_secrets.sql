-- Secrets the service makes for itself, once per database, shared by every instance that uses
-- it and kept across restarts and key rotations. list_cursor: the key GET /api/v1/conversations
-- tags its cursors with (api/list_cursor.h); it is never in any answer or log.
CREATE TABLE service_secrets (
  name  TEXT PRIMARY KEY,
  value BLOB NOT NULL
) WITHOUT ROWID;
INSERT INTO service_secrets (name, value) VALUES ('list_cursor', randomblob(32));
