-- Messages: the folded state of each message lives on its own row (current content, the
-- original once edited, edit and redaction times), so a page of history is one indexed read.
-- Edits, reactions and redactions are still appended as events of their own.

ALTER TABLE events ADD COLUMN relates_to TEXT;          -- target of an edit, reaction or redaction
ALTER TABLE events ADD COLUMN original_content TEXT;    -- set by the first edit
ALTER TABLE events ADD COLUMN edited_at BIGINT;
ALTER TABLE events ADD COLUMN redacted_at BIGINT;

CREATE UNIQUE INDEX events_sender_uuid ON events(sender_id, event_uuid);

-- One reaction per (event, sender, emoji); the row points at the reaction event.
CREATE TABLE reactions (
    target_event_id   TEXT NOT NULL,
    sender_id         TEXT NOT NULL REFERENCES participants(id),
    emoji             TEXT NOT NULL,
    reaction_event_id TEXT NOT NULL,
    PRIMARY KEY (target_event_id, sender_id, emoji)
);
