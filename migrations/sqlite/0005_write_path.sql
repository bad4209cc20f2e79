-- Idempotency keys are looked up by (sender, key). Ordering the index by key first makes the
-- keys the server generates (time-ordered ULIDs) append at one end of the index, instead of at
-- one insertion point per sender: fewer pages written per batch of sends.
DROP INDEX events_sender_uuid;
CREATE UNIQUE INDEX events_uuid_sender ON events(event_uuid, sender_id);

-- Redactions and edits find the events related to a target; only those events carry the key.
CREATE INDEX events_relates_to ON events(relates_to) WHERE relates_to IS NOT NULL;
