-- Uploaded media. Files are content-addressed on disk (`<data_dir>/media/<ab>/<sha256 hex>`), so
-- identical bytes are stored once; each upload still gets its own random, unguessable media_id.
-- Portable SQL: the PostgreSQL migrations mirror this file.

CREATE TABLE media (
    media_id    TEXT PRIMARY KEY,                -- 'med-' + 128 random bits
    sha256      TEXT NOT NULL,                   -- lowercase hex of the content
    size        BIGINT NOT NULL,                 -- bytes
    mime_type   TEXT NOT NULL,
    filename    TEXT,                            -- as the uploader named it, if at all
    uploader_id TEXT NOT NULL REFERENCES participants(id),
    created_at  BIGINT NOT NULL                  -- unix seconds
);
CREATE INDEX media_sha256 ON media(sha256);
CREATE INDEX media_uploader ON media(uploader_id);
