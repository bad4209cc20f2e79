-- Federation II: rooms joined in stages (`send_join?omit_members=true`) whose state is not
-- complete yet: the join, the servers its answer named, and since when.
CREATE TABLE fed_partial_rooms (
    room_id       TEXT PRIMARY KEY,
    join_event_id TEXT NOT NULL,
    servers       TEXT NOT NULL,                 -- JSON list of server names to ask
    since         BIGINT NOT NULL                -- unix ms
);
