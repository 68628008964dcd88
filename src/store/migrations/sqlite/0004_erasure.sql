-- Erasure and retention: a conversation's deliveries (every version it had) are found by its
-- id, and events of no conversation by their age, without reading the whole table.
CREATE INDEX deliveries_conversation ON deliveries (conversation_id);
CREATE INDEX events_received ON events (received_at_us);
CREATE INDEX audio_meta_received ON audio_meta (received_at_us);
