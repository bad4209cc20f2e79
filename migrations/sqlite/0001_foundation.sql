-- Foundation schema: tenants, participants, auth sessions, workspaces, rooms, memberships and
-- the append-only events table. Portable SQL: the PostgreSQL migrations mirror this file.

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY,           -- slug, e.g. 'default'
    name             TEXT NOT NULL,
    max_participants INTEGER NOT NULL,           -- per room
    send_rate_per_s  INTEGER NOT NULL,
    send_burst       INTEGER NOT NULL,
    created_at       BIGINT NOT NULL             -- unix seconds
);

CREATE TABLE participants (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    local_id      TEXT NOT NULL,
    server_name   TEXT NOT NULL,
    fqid          TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    password_hash TEXT,                          -- NULL for foreign participants
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL
);

-- A login session owns one live access token and one live refresh token at a time.
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    participant_id TEXT NOT NULL REFERENCES participants(id),
    created_at     BIGINT NOT NULL,
    revoked        BOOLEAN NOT NULL DEFAULT FALSE
);

-- Tokens are stored only as SHA-256 hashes of the bearer string.
CREATE TABLE tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    kind       TEXT NOT NULL,                    -- 'access' | 'refresh'
    expires_at BIGINT NOT NULL,
    used       BOOLEAN NOT NULL DEFAULT FALSE    -- refresh tokens are one-time-use
);
CREATE INDEX tokens_session ON tokens(session_id);

CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    owner_id   TEXT NOT NULL REFERENCES participants(id),
    name       TEXT NOT NULL,
    personal   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
CREATE INDEX workspaces_owner ON workspaces(owner_id);

CREATE TABLE rooms (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    room_alias   TEXT UNIQUE,                    -- NULL for DMs
    room_type    TEXT NOT NULL,                  -- group | public | incognito | dm
    name         TEXT,
    topic        TEXT,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    creator_id   TEXT NOT NULL REFERENCES participants(id),
    created_at   BIGINT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'open',   -- open | archived | closed
    federated    BOOLEAN NOT NULL DEFAULT FALSE,
    dm_key       TEXT                            -- 'a|b' (sorted ids) for DMs
);
CREATE INDEX rooms_directory ON rooms(tenant_id, room_type, state);
CREATE INDEX rooms_dm_key ON rooms(dm_key);

CREATE TABLE memberships (
    room_id           TEXT NOT NULL REFERENCES rooms(id),
    participant_id    TEXT NOT NULL REFERENCES participants(id),
    membership        TEXT NOT NULL,             -- join | invite | leave | ban
    power_level       INTEGER NOT NULL DEFAULT 0,
    joined_at         BIGINT,
    notification_mode TEXT NOT NULL DEFAULT 'all',
    muted_until       BIGINT,
    last_read_pos     BIGINT NOT NULL DEFAULT 0,
    last_read_event_id TEXT,
    PRIMARY KEY (room_id, participant_id)
);
CREATE INDEX memberships_participant ON memberships(participant_id, membership);

-- Append-only: every change to a room is an event; stream_position orders them per server.
CREATE TABLE events (
    stream_position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT NOT NULL UNIQUE,
    room_id         TEXT NOT NULL REFERENCES rooms(id),
    event_type      TEXT NOT NULL,
    state_key       TEXT,
    sender_id       TEXT NOT NULL REFERENCES participants(id),
    content         TEXT NOT NULL,               -- JSON object
    origin_ts       BIGINT NOT NULL,             -- unix seconds
    event_uuid      TEXT,
    unsigned_data   TEXT                         -- JSON object, server-local
);
CREATE INDEX events_room_pos ON events(room_id, stream_position);
CREATE INDEX events_room_type_pos ON events(room_id, event_type, stream_position);
