-- Every event is stored in its signed wire form (the PDU) beside its folded projection, with
-- its depth in the room's DAG. Federation then adds transport, not a data migration.

ALTER TABLE events ADD COLUMN pdu TEXT;                 -- signed wire form (redacted form once redacted)
ALTER TABLE events ADD COLUMN depth BIGINT NOT NULL DEFAULT 0;

-- The room's current state: the latest event per (type, state_key).
CREATE TABLE room_state (
    room_id    TEXT NOT NULL REFERENCES rooms(id),
    event_type TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);

-- The room's forward extremities: events nothing points at yet; the next event's prev_events.
CREATE TABLE room_extremities (
    room_id  TEXT NOT NULL REFERENCES rooms(id),
    event_id TEXT NOT NULL,
    depth    BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
