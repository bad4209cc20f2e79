-- Federation II: rooms whose history this server holds from the room's creation on, because a
-- backfill walk reached the create event (a room created here needs no row).
CREATE TABLE fed_history_complete (
    room_id      TEXT PRIMARY KEY,
    completed_at BIGINT NOT NULL                 -- unix ms
);
