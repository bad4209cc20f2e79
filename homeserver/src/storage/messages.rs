//! SQL for messages, edits, redactions and reactions.

use super::*;

/// A message row with its folded state.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct MessageRow {
    pub stream_position: i64,
    pub event_id: String,
    pub room_id: String,
    pub event_type: String,
    pub sender_id: String,
    pub sender_fqid: String,
    pub content: String,
    pub original_content: Option<String>,
    pub origin_ts: i64,
    pub edited_at: Option<i64>,
    pub redacted_at: Option<i64>,
    pub event_uuid: Option<String>,
    pub unsigned_data: Option<String>,
    pub relates_to: Option<String>,
    pub state_key: Option<String>,
}

/// `emoji → (count, reacted_by_viewer)` for one target.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ReactionCount {
    pub target_event_id: String,
    pub emoji: String,
    pub count: i64,
    pub mine: i64,
}

const MESSAGE_SELECT: &str = "SELECT e.stream_position, e.event_id, e.room_id, e.event_type,
    COALESCE(p.id, e.sender) AS sender_id, e.sender AS sender_fqid, e.content, e.original_content, e.origin_ts, e.edited_at, e.redacted_at, e.event_uuid,
    e.unsigned_data, e.relates_to, e.state_key
  FROM events e LEFT JOIN participants p ON p.fqid = e.sender";

/// [`MESSAGE_SELECT`] plus whether the message has reactions, so a page without any needs no
/// second query.
const PAGE_SELECT: &str = "SELECT e.stream_position, e.event_id, e.room_id, e.event_type,
    COALESCE(p.id, e.sender) AS sender_id, e.sender AS sender_fqid, e.content, e.original_content, e.origin_ts, e.edited_at, e.redacted_at, e.event_uuid,
    e.unsigned_data, e.relates_to, e.state_key,
    EXISTS (SELECT 1 FROM reactions x WHERE x.target_event_id = e.event_id) AS has_reactions
  FROM events e LEFT JOIN participants p ON p.fqid = e.sender";

/// A row of a page: the message and whether any reaction points at it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PageRow {
    #[sqlx(flatten)]
    pub message: MessageRow,
    pub has_reactions: bool,
}

/// A page request over a room's messages.
pub struct PageQuery<'a> {
    pub room_id: &'a str,
    /// Exclusive bound; `None` starts at the newest (back) or oldest (forward) end.
    pub from: Option<i64>,
    pub forward: bool,
    /// One more than the page size is fetched to learn whether more exist.
    pub limit: i64,
}

impl Store {
    /// A page of a room's messages. Runs on a direct connection (see [`Store::read_direct`]):
    /// through sqlx every one of the up to 201 rows would cross threads on its own.
    pub async fn message_page(&self, q: &PageQuery<'_>) -> Result<Vec<PageRow>, rusqlite::Error> {
        let sql = if q.forward {
            "WHERE e.room_id = ?1 AND e.event_type = 'swp.room.message' AND e.status = 0 AND e.stream_position > ?2
             ORDER BY e.stream_position ASC LIMIT ?3"
        } else {
            "WHERE e.room_id = ?1 AND e.event_type = 'swp.room.message' AND e.status = 0 AND e.stream_position < ?2
             ORDER BY e.stream_position DESC LIMIT ?3"
        };
        // Backfilled history sits at negative positions: the oldest end is below zero.
        let from = q.from.unwrap_or(if q.forward { i64::MIN } else { i64::MAX });
        let (room_id, limit) = (q.room_id.to_string(), q.limit);
        self.read_direct(move |conn| {
            let mut stmt = conn.prepare_cached(&format!("{PAGE_SELECT} {sql}"))?;
            let rows = stmt.query_map(rusqlite::params![room_id, from, limit], |r| {
                Ok(PageRow {
                    message: MessageRow {
                        stream_position: r.get(0)?,
                        event_id: r.get(1)?,
                        room_id: r.get(2)?,
                        event_type: r.get(3)?,
                        sender_id: r.get(4)?,
                        sender_fqid: r.get(5)?,
                        content: r.get(6)?,
                        original_content: r.get(7)?,
                        origin_ts: r.get(8)?,
                        edited_at: r.get(9)?,
                        redacted_at: r.get(10)?,
                        event_uuid: r.get(11)?,
                        unsigned_data: r.get(12)?,
                        relates_to: r.get(13)?,
                        state_key: r.get(14)?,
                    },
                    has_reactions: r.get(15)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    pub async fn message(&self, room_id: &str, event_id: &str) -> Result<Option<MessageRow>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{MESSAGE_SELECT} WHERE e.room_id = $1 AND e.event_id = $2")))
            .bind(room_id)
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Reaction counts for a set of targets, with whether `viewer_id` is among the reactors.
    pub async fn reaction_counts(
        &self,
        targets: &[String],
        viewer_id: &str,
    ) -> Result<Vec<ReactionCount>, sqlx::Error> {
        if targets.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..targets.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT r.target_event_id, r.emoji, COUNT(*) AS count,
                    MAX(CASE WHEN r.sender_id = $1 THEN 1 ELSE 0 END) AS mine
             FROM reactions r JOIN events e ON e.event_id = r.reaction_event_id
             WHERE r.target_event_id IN ({}) GROUP BY r.target_event_id, r.emoji
             ORDER BY r.target_event_id, MIN(e.stream_position)",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(viewer_id);
        for t in targets {
            query = query.bind(t);
        }
        query.fetch_all(&self.pool).await
    }
}

impl Store {
    /// Events after `since` that a participant may receive: everything in the rooms they are
    /// joined to, and membership events about them (invites, kicks) wherever they happen.
    pub async fn events_since(
        &self,
        participant_id: &str,
        fqid: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<MessageRow>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{MESSAGE_SELECT} WHERE e.stream_position > $1 AND e.status = 0 AND (
                e.room_id IN (SELECT room_id FROM memberships WHERE participant_id = $2 AND membership = 'join')
                OR (e.event_type = 'swp.room.member' AND e.state_key = $3))
             ORDER BY e.stream_position LIMIT $4"
        )))
        .bind(since)
        .bind(participant_id)
        .bind(fqid)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn joined_room_ids(&self, participant_id: &str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT room_id FROM memberships WHERE participant_id = $1 AND membership = 'join'")
            .bind(participant_id)
            .fetch_all(&self.pool)
            .await
    }

    /// Whether two participants are joined to a common room.
    pub async fn shares_room(&self, a: &str, b: &str) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships x JOIN memberships y ON x.room_id = y.room_id
             WHERE x.participant_id = $1 AND y.participant_id = $2 AND x.membership = 'join' AND y.membership = 'join'",
        )
        .bind(a)
        .bind(b)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }
}

impl WriteTx {
    pub async fn message(&mut self, room_id: &str, event_id: &str) -> Result<Option<MessageRow>, sqlx::Error> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("{MESSAGE_SELECT} WHERE e.room_id = $1 AND e.event_id = $2")))
            .bind(room_id)
            .bind(event_id)
            .fetch_optional(&mut *self.tx)
            .await
    }

    /// Replaces a message's current content, keeping the first original.
    pub async fn apply_edit(&mut self, event_id: &str, new_content: &str, at: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE events SET original_content = COALESCE(original_content, content), content = $2, edited_at = $3
             WHERE event_id = $1",
        )
        .bind(event_id)
        .bind(new_content)
        .bind(at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Wipes a message's body for good, with the bodies of its edits.
    pub async fn apply_redaction(&mut self, event_id: &str, at: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE events SET content = '{}', original_content = NULL, redacted_at = COALESCE(redacted_at, $2)
             WHERE event_id = $1",
        )
        .bind(event_id)
        .bind(at)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "UPDATE events SET content = '{}', redacted_at = COALESCE(redacted_at, $2)
             WHERE relates_to = $1 AND event_type = 'swp.room.edit'",
        )
        .bind(event_id)
        .bind(at)
        .execute(&mut *self.tx)
        .await?;
        // A redacted message keeps no reactions.
        sqlx::query("DELETE FROM reactions WHERE target_event_id = $1").bind(event_id).execute(&mut *self.tx).await?;
        Ok(())
    }

    /// Records a reaction; answers false when the (target, sender, emoji) triple exists.
    pub async fn add_reaction(
        &mut self,
        target: &str,
        sender_id: &str,
        emoji: &str,
        reaction_event_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "INSERT INTO reactions (target_event_id, sender_id, emoji, reaction_event_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (target_event_id, sender_id, emoji) DO NOTHING",
        )
        .bind(target)
        .bind(sender_id)
        .bind(emoji)
        .bind(reaction_event_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Drops the uniqueness row of a reaction event that was redacted directly.
    pub async fn forget_reaction_event(&mut self, reaction_event_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM reactions WHERE reaction_event_id = $1")
            .bind(reaction_event_id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Removes a reaction; answers the reaction event it pointed at.
    pub async fn remove_reaction(
        &mut self,
        target: &str,
        sender_id: &str,
        emoji: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "DELETE FROM reactions WHERE target_event_id = $1 AND sender_id = $2 AND emoji = $3
             RETURNING reaction_event_id",
        )
        .bind(target)
        .bind(sender_id)
        .bind(emoji)
        .fetch_optional(&mut *self.tx)
        .await
    }
}
