-- Erasure finds every delivery of a conversation without an index that every webhook writes
-- (that index cost seed ingest about 5%): the current delivery through the conversation row
-- (deleted with it, by a trigger that fires only on erasure), the older versions through a
-- partial index holding superseded rows only, marked by a trigger when a conversation moves to
-- a new version (a redelivery with a different body: rare).
ALTER TABLE deliveries ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0;
UPDATE deliveries SET superseded = 1
  WHERE id NOT IN (SELECT delivery_id FROM conversations);
DROP INDEX deliveries_conversation;
CREATE INDEX deliveries_superseded ON deliveries (conversation_id) WHERE superseded = 1;
CREATE TRIGGER deliveries_supersede AFTER UPDATE OF delivery_id ON conversations
  WHEN NEW.delivery_id <> OLD.delivery_id
BEGIN
  UPDATE deliveries SET superseded = 1 WHERE id = OLD.delivery_id;
END;
CREATE TRIGGER conversations_erase_delivery AFTER DELETE ON conversations
BEGIN
  DELETE FROM deliveries WHERE id = OLD.delivery_id;
END;
