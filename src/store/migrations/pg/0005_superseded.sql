-- Erasure finds every delivery of a conversation without an index that every webhook writes
-- (that index cost seed ingest about 5%): the current delivery through the conversation row
-- (deleted with it, by a trigger that fires only on erasure), the older versions through a
-- partial index holding superseded rows only, marked by a trigger when a conversation moves to
-- a new version (a redelivery with a different body: rare).
ALTER TABLE deliveries ADD COLUMN superseded BOOLEAN NOT NULL DEFAULT false;
UPDATE deliveries SET superseded = true
  WHERE id NOT IN (SELECT delivery_id FROM conversations);
DROP INDEX deliveries_conversation;
CREATE INDEX deliveries_superseded ON deliveries (conversation_id) WHERE superseded;
CREATE FUNCTION gensendrep_supersede_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE deliveries SET superseded = true WHERE id = OLD.delivery_id;
  RETURN NULL;
END
$$;
CREATE TRIGGER deliveries_supersede AFTER UPDATE OF delivery_id ON conversations
  FOR EACH ROW WHEN (NEW.delivery_id IS DISTINCT FROM OLD.delivery_id)
  EXECUTE FUNCTION gensendrep_supersede_delivery();
CREATE FUNCTION gensendrep_erase_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM deliveries WHERE id = OLD.delivery_id;
  RETURN NULL;
END
$$;
CREATE TRIGGER conversations_erase_delivery AFTER DELETE ON conversations
  FOR EACH ROW EXECUTE FUNCTION gensendrep_erase_delivery();
