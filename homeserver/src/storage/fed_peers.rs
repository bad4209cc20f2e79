//! SQL for peers' participants and media: the cached profile of a foreign participant, media
//! fetched from its origin, and where a media id was mentioned.

use super::{MediaRow, Store, WriteTx};

type StoreResult<T> = Result<T, sqlx::Error>;

impl Store {
    /// When the foreign participant's profile was last fetched from its server (Unix seconds),
    /// `None` if never (a record made from a member event only).
    pub async fn profile_fetched_at(&self, participant_id: &str) -> StoreResult<Option<i64>> {
        let at: Option<Option<i64>> = sqlx::query_scalar("SELECT profile_fetched_at FROM participants WHERE id = $1")
            .bind(participant_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(at.flatten())
    }

    /// The server a media row was fetched from; `None` for media uploaded here (or unknown).
    pub async fn media_origin(&self, media_id: &str) -> StoreResult<Option<String>> {
        let origin: Option<Option<String>> = sqlx::query_scalar("SELECT origin_server FROM media WHERE media_id = $1")
            .bind(media_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(origin.flatten())
    }

    /// Events naming `media_id` in their content, in rooms where `participant_id` is joined:
    /// `(content, sender fqid)` of accepted events, newest first, at most `limit`. The text match is only a
    /// prefilter (media ids are random, so false hits are rare); the caller reads the content.
    pub async fn events_mentioning_media(
        &self,
        participant_id: &str,
        media_id: &str,
        limit: i64,
    ) -> StoreResult<Vec<(String, String)>> {
        let pattern = format!("%{media_id}%");
        sqlx::query_as(
            "SELECT e.content, e.sender FROM events e
             JOIN memberships m ON m.room_id = e.room_id AND m.participant_id = $1 AND m.membership = 'join'
             WHERE e.content LIKE $2 AND e.status = 0
             ORDER BY e.stream_position DESC LIMIT $3",
        )
        .bind(participant_id)
        .bind(pattern)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Records media fetched from `origin_server`. A row already there (a concurrent first
    /// download) is kept; either way the stored row is answered.
    pub async fn insert_remote_media(&self, m: &MediaRow, origin_server: &str) -> StoreResult<MediaRow> {
        sqlx::query(
            "INSERT INTO media (media_id, sha256, size, mime_type, filename, uploader_id, created_at, origin_server)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (media_id) DO NOTHING",
        )
        .bind(&m.media_id)
        .bind(&m.sha256)
        .bind(m.size)
        .bind(&m.mime_type)
        .bind(&m.filename)
        .bind(&m.uploader_id)
        .bind(m.created_at)
        .bind(origin_server)
        .execute(&self.pool)
        .await?;
        self.media(&m.media_id).await?.ok_or(sqlx::Error::RowNotFound)
    }

    /// A media row uploaded here (not fetched from a peer): what `media/` serves to peers.
    pub async fn local_media(&self, media_id: &str) -> StoreResult<Option<MediaRow>> {
        sqlx::query_as(
            "SELECT media_id, sha256, size, mime_type, filename, uploader_id, created_at
             FROM media WHERE media_id = $1 AND origin_server IS NULL",
        )
        .bind(media_id)
        .fetch_optional(&self.pool)
        .await
    }
}

impl WriteTx {
    /// Stores a foreign participant's profile as its server just answered it.
    pub async fn update_foreign_profile(
        &mut self,
        participant_id: &str,
        display_name: &str,
        fetched_at: i64,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE participants SET display_name = $2, profile_fetched_at = $3 WHERE id = $1")
            .bind(participant_id)
            .bind(display_name)
            .bind(fetched_at)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
