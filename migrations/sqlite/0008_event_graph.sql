-- The room is its event graph (issue 13). Each event records its place in the graph and the
-- room state after it; prev and auth edges are rows; the room's current state and forward
-- extremities are kept beside the graph as its materialised views.
--
-- * `events.sender` is the sender's fqid. A remote sender has no `participants` row, and a room
--   first seen from a peer no `rooms` row, so neither column has a foreign key any more.
-- * `events.status`: 0 accepted, 1 soft-failed (stored, passes its auth events, not the state
--   before it), 2 rejected (fails its auth events), 3 outlier (state before it unknown). Only 0
--   is ever shown to a client.
-- * `events.state_group`: the room state after the event (for a message, its parent's).
-- * Positions: appended events take the next stream position; backfilled ones take positions
--   below every stored one (negative, decreasing).
--
-- The state groups themselves are filled in by the server when it first opens the database
-- (`storage::graph::upgrade`): walking each room's events in order is not something SQL does
-- portably. This file only lays out the tables and copies what SQL can, and leaves a row in
-- `graph_upgrade_pending` that the upgrade deletes in the transaction that does the work, so an
-- upgrade interrupted halfway runs again at the next start.

CREATE TABLE events_rebuilt (
    stream_position  INTEGER PRIMARY KEY,
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    state_key        TEXT,
    sender           TEXT NOT NULL,               -- fqid
    content          TEXT NOT NULL,               -- JSON object
    origin_ts        BIGINT NOT NULL,             -- unix seconds
    event_uuid       TEXT,
    unsigned_data    TEXT,                        -- JSON object, server-local
    relates_to       TEXT,                        -- target of an edit, reaction or redaction
    original_content TEXT,                        -- set by the first edit
    edited_at        BIGINT,
    redacted_at      BIGINT,
    pdu              TEXT,                        -- signed wire form (redacted form once redacted)
    depth            BIGINT NOT NULL DEFAULT 0,
    status           INTEGER NOT NULL DEFAULT 0,  -- 0 accepted, 1 soft-failed, 2 rejected, 3 outlier
    state_group      BIGINT                       -- state after the event; NULL for an outlier
);
INSERT INTO events_rebuilt
SELECT e.stream_position, e.event_id, e.room_id, e.event_type, e.state_key, p.fqid, e.content, e.origin_ts,
       e.event_uuid, e.unsigned_data, e.relates_to, e.original_content, e.edited_at, e.redacted_at, e.pdu,
       e.depth, 0, NULL
FROM events e JOIN participants p ON p.id = e.sender_id ORDER BY e.stream_position;
DROP TABLE events;
ALTER TABLE events_rebuilt RENAME TO events;
CREATE INDEX events_room_pos ON events(room_id, stream_position);
CREATE INDEX events_room_type_pos ON events(room_id, event_type, stream_position);
CREATE UNIQUE INDEX events_uuid_sender ON events(event_uuid, sender);
CREATE INDEX events_relates_to ON events(relates_to) WHERE relates_to IS NOT NULL;

-- `prev_events` and `auth_events` as rows keyed by stream positions: two integers a row, no
-- rowid, so that the send path's one multi-row INSERT per batch stays cheap.
CREATE TABLE event_edges (
    event_pos BIGINT NOT NULL,
    prev_pos  BIGINT NOT NULL,
    PRIMARY KEY (event_pos, prev_pos)
) WITHOUT ROWID;
CREATE TABLE event_auth_edges (
    event_pos BIGINT NOT NULL,
    auth_pos  BIGINT NOT NULL,
    PRIMARY KEY (event_pos, auth_pos)
) WITHOUT ROWID;
-- A `prev_event` not stored yet: when it arrives, its edge is made and it is not an extremity.
CREATE TABLE event_missing_prevs (
    prev_event_id TEXT NOT NULL,
    event_pos     BIGINT NOT NULL,
    PRIMARY KEY (prev_event_id, event_pos)
) WITHOUT ROWID;

INSERT INTO event_edges (event_pos, prev_pos)
SELECT DISTINCT e.stream_position, p.stream_position
FROM events e, json_each(e.pdu, '$.prev_events') j JOIN events p ON p.event_id = j.value
WHERE e.pdu IS NOT NULL AND json_valid(e.pdu) AND json_type(e.pdu, '$.prev_events') = 'array';
INSERT INTO event_auth_edges (event_pos, auth_pos)
SELECT DISTINCT e.stream_position, a.stream_position
FROM events e, json_each(e.pdu, '$.auth_events') j JOIN events a ON a.event_id = j.value
WHERE e.pdu IS NOT NULL AND json_valid(e.pdu) AND json_type(e.pdu, '$.auth_events') = 'array';

-- A state group is the state after some event: a delta against `prev_group` (entries replace
-- the group's; an entry with a NULL event removes the key), or a full snapshot when
-- `prev_group` is NULL. `delta_depth` counts the deltas down to the last snapshot, so that
-- reading a group never walks more than a bounded chain.
CREATE TABLE state_groups (
    id          INTEGER PRIMARY KEY,
    room_id     TEXT NOT NULL,
    prev_group  BIGINT,
    delta_depth INTEGER NOT NULL
);
CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    event_type  TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    event_pos   BIGINT,                          -- NULL: the key is removed by this delta
    PRIMARY KEY (state_group, event_type, state_key)
) WITHOUT ROWID;

-- The state group of the room's current state (the resolution of the states at its forward
-- extremities); `room_state` lists the same state by key.
CREATE TABLE room_current (
    room_id     TEXT PRIMARY KEY,
    state_group BIGINT NOT NULL
) WITHOUT ROWID;

-- Both views lose their foreign key to `rooms`: a room first seen from a peer has none.
CREATE TABLE room_state_rebuilt (
    room_id    TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
) WITHOUT ROWID;
INSERT INTO room_state_rebuilt SELECT room_id, event_type, state_key, event_id FROM room_state;
DROP TABLE room_state;
ALTER TABLE room_state_rebuilt RENAME TO room_state;

CREATE TABLE room_extremities_rebuilt (
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    depth    BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) WITHOUT ROWID;
INSERT INTO room_extremities_rebuilt SELECT room_id, event_id, depth FROM room_extremities;
DROP TABLE room_extremities;
ALTER TABLE room_extremities_rebuilt RENAME TO room_extremities;

CREATE TABLE graph_upgrade_pending (pending INTEGER NOT NULL);
INSERT INTO graph_upgrade_pending VALUES (1);
