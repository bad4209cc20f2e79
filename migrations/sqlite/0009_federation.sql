-- Federation I: peers' keys, per-destination delivery, received transactions, remote profiles
-- and remote media. Portable SQL.

-- Peers' key documents as their origins signed them: the key ring's cache across restarts, and
-- what this server answers as a notary (`keys/query`).
CREATE TABLE fed_server_keys (
    server_name    TEXT PRIMARY KEY,
    document       TEXT NOT NULL,                -- the signed well-known document
    valid_until_ts BIGINT NOT NULL,              -- unix ms
    fetched_at     BIGINT NOT NULL               -- unix ms
);

-- One row per peer this server sends to or hears from. Delivery is a cursor over stream
-- positions: every local event at or below `delivered_pos` has been answered by the peer (or
-- did not concern it).
CREATE TABLE fed_destinations (
    server_name     TEXT PRIMARY KEY,
    delivered_pos   BIGINT NOT NULL DEFAULT 0,
    txn_counter     BIGINT NOT NULL DEFAULT 0,
    failures        INTEGER NOT NULL DEFAULT 0,
    retry_at        BIGINT,                      -- unix ms; NULL when not backing off
    last_error      TEXT,
    last_error_at   BIGINT,                      -- unix ms
    last_success_at BIGINT,                      -- unix ms
    last_seen_at    BIGINT                       -- unix ms: the peer's last request to us
);

-- Events a peer answered with `retry: true`: kept queued and sent again later.
CREATE TABLE fed_retry_events (
    server_name TEXT NOT NULL,
    event_pos   BIGINT NOT NULL,
    PRIMARY KEY (server_name, event_pos)
);

-- Events of other servers that this server delivers too, like its own: the joins and leaves it
-- accepted through send_join / send_leave (the other resident servers learn of them from it).
CREATE TABLE fed_relay_events (
    event_pos BIGINT PRIMARY KEY
);

-- Transactions received, for de-duplication: the same (origin, txn_id) gets the first answer.
CREATE TABLE fed_received_txns (
    origin      TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    answer      TEXT NOT NULL,                   -- the JSON `data` of the first answer
    received_at BIGINT NOT NULL,                 -- unix ms
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX fed_received_txns_age ON fed_received_txns(received_at);

-- Foreign participants' profiles are cached in `participants` (password_hash NULL).
ALTER TABLE participants ADD COLUMN profile_fetched_at BIGINT;   -- unix seconds; NULL for local ones

-- Remote media: fetched from its origin on first download, its hash checked.
ALTER TABLE media ADD COLUMN origin_server TEXT;                 -- NULL for media uploaded here
