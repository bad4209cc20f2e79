//! SQL of the server's federation policy and of what the policy and the room's server lists
//! read: the stored policy, a room's `swp.room.server_acl`, invitations that crossed between
//! this server and a peer, and a room's foreign participants.

use serde_json::Value;

use super::Store;

type StoreResult<T> = Result<T, sqlx::Error>;

/// `:server`, the suffix of every fqid of `server`.
fn suffix(server: &str) -> String {
    format!(":{server}")
}

impl Store {
    /// The stored policy document, if an admin ever set one.
    pub async fn fed_policy(&self) -> StoreResult<Option<Value>> {
        let doc: Option<String> =
            sqlx::query_scalar("SELECT document FROM fed_policy WHERE id = 1").fetch_optional(&self.pool).await?;
        Ok(doc.and_then(|d| serde_json::from_str(&d).ok()))
    }

    pub async fn save_fed_policy(&self, document: &Value, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO fed_policy (id, document, updated_at) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
        )
        .bind(document.to_string())
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The content of the room's current `swp.room.server_acl`, if it has one.
    pub async fn room_server_acl(&self, room_id: &str) -> StoreResult<Option<Value>> {
        let content: Option<String> = sqlx::query_scalar(
            "SELECT e.content FROM room_state s JOIN events e ON e.event_id = s.event_id
             WHERE s.room_id = $1 AND s.event_type = 'swp.room.server_acl' AND s.state_key = ''",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(content.and_then(|c| serde_json::from_str(&c).ok()))
    }

    /// Whether an invitation crossed between `us` and `peer` in the room: one of our
    /// participants invited one of its participants, or the other way round.
    pub async fn invite_crossed(&self, room_id: &str, us: &str, peer: &str) -> StoreResult<bool> {
        let (ours, theirs) = (suffix(us), suffix(peer));
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM events
             WHERE room_id = $1 AND event_type = 'swp.room.member' AND state_key IS NOT NULL
               AND content LIKE '%\"membership\":\"invite\"%'
               AND ((substr(sender, length(sender) - length($2) + 1) = $2
                     AND substr(state_key, length(state_key) - length($3) + 1) = $3)
                 OR (substr(sender, length(sender) - length($3) + 1) = $3
                     AND substr(state_key, length(state_key) - length($2) + 1) = $2))
             LIMIT 1",
        )
        .bind(room_id)
        .bind(&ours)
        .bind(&theirs)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Joined participants of the room from servers other than `us`.
    pub async fn foreign_joined_count(&self, room_id: &str, us: &str) -> StoreResult<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships m JOIN participants p ON p.id = m.participant_id
             WHERE m.room_id = $1 AND m.membership = 'join' AND p.server_name <> $2",
        )
        .bind(room_id)
        .bind(us)
        .fetch_one(&self.pool)
        .await
    }

    /// Whether `fqid` is a joined member of the room.
    pub async fn is_joined(&self, room_id: &str, fqid: &str) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM memberships m JOIN participants p ON p.id = m.participant_id
             WHERE m.room_id = $1 AND p.fqid = $2 AND m.membership = 'join'",
        )
        .bind(room_id)
        .bind(fqid)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }
}
