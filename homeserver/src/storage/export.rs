//! SQL for room export and import (see [`crate::bundle`]).
//!
//! An export reads through one [`ExportReader`]: a read transaction, so every page of events,
//! the members and the media rows come from the same snapshot however long the export runs
//! (SQLite in WAL mode keeps that snapshot without blocking writers). An import writes through
//! the ordinary [`WriteTx`] and needs a few extra statements, here.

use super::*;

/// One event as the export writes it: the folded projection and the signed wire form.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ExportEventRow {
    pub stream_position: i64,
    pub event_id: String,
    pub event_type: String,
    pub state_key: Option<String>,
    pub sender_id: String,
    pub sender_fqid: String,
    pub content: String,
    pub original_content: Option<String>,
    pub origin_ts: i64,
    pub edited_at: Option<i64>,
    pub redacted_at: Option<i64>,
    pub event_uuid: Option<String>,
    pub relates_to: Option<String>,
    pub pdu: Option<String>,
}

/// A member of an exported room.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ExportMember {
    pub participant_id: String,
    pub fqid: String,
    pub display_name: String,
    pub membership: Membership,
    pub power_level: i64,
    pub joined_at: Option<i64>,
}

/// A consistent read-only view of the database for the length of one export.
pub struct ExportReader {
    tx: Transaction<'static, Sqlite>,
}

impl Store {
    pub async fn export_reader(&self) -> Result<ExportReader, sqlx::Error> {
        Ok(ExportReader { tx: self.pool.begin().await? })
    }
}

impl ExportReader {
    pub async fn room(&mut self, room_id: &str) -> Result<Option<Room>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM rooms WHERE id = $1").bind(room_id).fetch_optional(&mut *self.tx).await
    }

    /// Every membership row of the room (joined, invited, left, banned), oldest joiners first.
    pub async fn members(&mut self, room_id: &str) -> Result<Vec<ExportMember>, sqlx::Error> {
        sqlx::query_as(
            "SELECT m.participant_id, p.fqid, p.display_name, m.membership, m.power_level, m.joined_at
             FROM memberships m JOIN participants p ON p.id = m.participant_id
             WHERE m.room_id = $1 ORDER BY m.joined_at IS NULL, m.joined_at, p.fqid",
        )
        .bind(room_id)
        .fetch_all(&mut *self.tx)
        .await
    }

    /// Up to `limit` events of the room after stream position `after`, in stream order.
    pub async fn event_page(
        &mut self,
        room_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<ExportEventRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT e.stream_position, e.event_id, e.event_type, e.state_key, COALESCE(p.id, e.sender) AS sender_id,
                    e.sender AS sender_fqid,
                    e.content, e.original_content, e.origin_ts, e.edited_at, e.redacted_at, e.event_uuid,
                    e.relates_to, e.pdu
             FROM events e LEFT JOIN participants p ON p.fqid = e.sender
             WHERE e.room_id = $1 AND e.status = 0 AND e.stream_position > $2
             ORDER BY e.stream_position LIMIT $3",
        )
        .bind(room_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await
    }

    pub async fn participant(&mut self, id: &str) -> Result<Option<Participant>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, tenant_id, local_id, server_name, fqid, display_name, is_admin, created_at
             FROM participants WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await
    }

    pub async fn media(&mut self, media_id: &str) -> Result<Option<MediaRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT media_id, sha256, size, mime_type, filename, uploader_id, created_at
             FROM media WHERE media_id = $1",
        )
        .bind(media_id)
        .fetch_optional(&mut *self.tx)
        .await
    }

    /// Ends the snapshot.
    pub async fn finish(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl WriteTx {
    pub async fn insert_media(&mut self, m: &MediaRow) -> Result<(), sqlx::Error> {
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
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn participant_id_by_fqid(&mut self, fqid: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT id FROM participants WHERE fqid = $1").bind(fqid).fetch_optional(&mut *self.tx).await
    }

    /// Replaces an event's folded content (not its signed wire form).
    pub async fn set_event_content(&mut self, event_id: &str, content: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE events SET content = $2 WHERE event_id = $1")
            .bind(event_id)
            .bind(content)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
