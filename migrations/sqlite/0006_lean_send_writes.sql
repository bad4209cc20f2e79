-- Fewer pages written per batch of sends (each page written is a 4 KiB frame in the write-ahead
-- log, and again when checkpointed). Reading the frames of a batch showed two that carry nothing
-- a reader needs:
--
-- * `AUTOINCREMENT` rewrote the `sqlite_sequence` page in every commit. Events are never
--   deleted, so a plain rowid key gives the same positions: always one past the highest stored
--   (a rolled-back append was never visible, so reusing its number is safe).
-- * `room_extremities` kept its rows in a rowid table plus a separate index for its primary key:
--   two pages per commit. Keyed by the primary key itself (`WITHOUT ROWID`) it is one.
--
-- Both tables are rebuilt: same columns, in the same order, same indexes.

CREATE TABLE events_rebuilt (
    stream_position  INTEGER PRIMARY KEY,
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL REFERENCES rooms(id),
    event_type       TEXT NOT NULL,
    state_key        TEXT,
    sender_id        TEXT NOT NULL REFERENCES participants(id),
    content          TEXT NOT NULL,               -- JSON object
    origin_ts        BIGINT NOT NULL,             -- unix seconds
    event_uuid       TEXT,
    unsigned_data    TEXT,                        -- JSON object, server-local
    relates_to       TEXT,                        -- target of an edit, reaction or redaction
    original_content TEXT,                        -- set by the first edit
    edited_at        BIGINT,
    redacted_at      BIGINT,
    pdu              TEXT,                        -- signed wire form (redacted form once redacted)
    depth            BIGINT NOT NULL DEFAULT 0
);
INSERT INTO events_rebuilt
SELECT stream_position, event_id, room_id, event_type, state_key, sender_id, content, origin_ts, event_uuid,
       unsigned_data, relates_to, original_content, edited_at, redacted_at, pdu, depth
FROM events ORDER BY stream_position;
DROP TABLE events;
ALTER TABLE events_rebuilt RENAME TO events;
CREATE INDEX events_room_pos ON events(room_id, stream_position);
CREATE INDEX events_room_type_pos ON events(room_id, event_type, stream_position);
CREATE UNIQUE INDEX events_uuid_sender ON events(event_uuid, sender_id);
CREATE INDEX events_relates_to ON events(relates_to) WHERE relates_to IS NOT NULL;

CREATE TABLE room_extremities_rebuilt (
    room_id  TEXT NOT NULL REFERENCES rooms(id),
    event_id TEXT NOT NULL,
    depth    BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) WITHOUT ROWID;
INSERT INTO room_extremities_rebuilt SELECT room_id, event_id, depth FROM room_extremities;
DROP TABLE room_extremities;
ALTER TABLE room_extremities_rebuilt RENAME TO room_extremities;
