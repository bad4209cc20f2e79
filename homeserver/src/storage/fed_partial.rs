//! SQL of rooms joined in stages: which are partial, the join they stand on, and the servers
//! to ask for the rest of their state.

use super::{Store, WriteTx};

type StoreResult<T> = Result<T, sqlx::Error>;

/// A room whose state is not complete yet.
#[derive(Debug, Clone)]
pub struct PartialRoom {
    pub room_id: String,
    pub join_event_id: String,
    pub servers: Vec<String>,
}

impl Store {
    /// Whether the room was joined in stages and its state is not complete yet.
    pub async fn is_partial(&self, room_id: &str) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM fed_partial_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// The servers a partial room's join answer named (none when the room is not partial).
    pub async fn partial_servers(&self, room_id: &str) -> StoreResult<Vec<String>> {
        let servers: Option<String> = sqlx::query_scalar("SELECT servers FROM fed_partial_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(servers.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default())
    }

    /// Every partial room (to complete after a restart).
    pub async fn partial_rooms(&self) -> StoreResult<Vec<PartialRoom>> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT room_id, join_event_id, servers FROM fed_partial_rooms ORDER BY since")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(room_id, join_event_id, servers)| PartialRoom {
                room_id,
                join_event_id,
                servers: serde_json::from_str(&servers).unwrap_or_default(),
            })
            .collect())
    }
}

impl WriteTx {
    pub async fn mark_partial(
        &mut self,
        room_id: &str,
        join_event_id: &str,
        servers: &[String],
        now_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO fed_partial_rooms (room_id, join_event_id, servers, since) VALUES ($1, $2, $3, $4)
             ON CONFLICT (room_id) DO UPDATE SET join_event_id = excluded.join_event_id, servers = excluded.servers",
        )
        .bind(room_id)
        .bind(join_event_id)
        .bind(serde_json::to_string(servers).unwrap_or_else(|_| "[]".into()))
        .bind(now_ms)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    pub async fn clear_partial(&mut self, room_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM fed_partial_rooms WHERE room_id = $1").bind(room_id).execute(&mut *self.tx).await?;
        Ok(())
    }
}
