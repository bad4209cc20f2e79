//! SQL for uploaded media metadata. The bytes themselves live on disk (see [`crate::media`]).

use super::*;

/// One upload: its metadata and where its content is (the `sha256` names the file).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct MediaRow {
    pub media_id: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    pub size: i64,
    pub mime_type: String,
    pub filename: Option<String>,
    pub uploader_id: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl Store {
    /// The media with this id, or `None` when no upload has it.
    pub async fn media(&self, media_id: &str) -> Result<Option<MediaRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT media_id, sha256, size, mime_type, filename, uploader_id, created_at
             FROM media WHERE media_id = $1",
        )
        .bind(media_id)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn insert_media(&self, m: &MediaRow) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO media (media_id, sha256, size, mime_type, filename, uploader_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&m.media_id)
        .bind(&m.sha256)
        .bind(m.size)
        .bind(&m.mime_type)
        .bind(&m.filename)
        .bind(&m.uploader_id)
        .bind(m.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
