//! Federation's SQL: peers' key documents, delivery state per destination, received
//! transactions.

use serde_json::Value;

use super::Store;

type StoreResult<T> = Result<T, sqlx::Error>;

impl Store {
    /// Every stored peer key document: `(server_name, document)`.
    pub async fn fed_server_keys(&self) -> StoreResult<Vec<(String, Value)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT server_name, document FROM fed_server_keys").fetch_all(&self.pool).await?;
        Ok(rows.into_iter().filter_map(|(s, d)| serde_json::from_str(&d).ok().map(|d| (s, d))).collect())
    }

    /// Keeps a peer's key document (the newest one wins).
    pub async fn save_fed_server_keys(
        &self,
        server_name: &str,
        document: &Value,
        valid_until_ts: u64,
    ) -> StoreResult<()> {
        let doc = document.to_string();
        sqlx::query(
            "INSERT INTO fed_server_keys (server_name, document, valid_until_ts, fetched_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (server_name) DO UPDATE SET document = excluded.document,
                 valid_until_ts = excluded.valid_until_ts, fetched_at = excluded.fetched_at
             WHERE excluded.valid_until_ts >= fed_server_keys.valid_until_ts",
        )
        .bind(server_name)
        .bind(doc)
        .bind(valid_until_ts as i64)
        .bind(federation::now_ms() as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl Store {
    /// The servers with a joined member in the room's current state (this one included when
    /// it has one), sorted: where the room's events go, and who may ask about it.
    pub async fn room_servers(&self, room_id: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT p.server_name FROM memberships m JOIN participants p ON p.id = m.participant_id
             WHERE m.room_id = $1 AND m.membership = 'join' ORDER BY p.server_name",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Whether `server` has or had any membership (join, invite, leave, ban) in the room: the
    /// servers that may read the room's history over federation.
    pub async fn server_ever_in_room(&self, room_id: &str, server: &str) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships m JOIN participants p ON p.id = m.participant_id
             WHERE m.room_id = $1 AND p.server_name = $2",
        )
        .bind(room_id)
        .bind(server)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }
}

impl super::WriteTx {
    /// Has the sender deliver the event at `event_pos` (another server's) to the room's other
    /// servers, as it does this server's own events: for joins and leaves accepted through
    /// send_join / send_leave.
    pub async fn mark_for_relay(&mut self, event_pos: i64) -> StoreResult<()> {
        sqlx::query("INSERT INTO fed_relay_events (event_pos) VALUES ($1) ON CONFLICT (event_pos) DO NOTHING")
            .bind(event_pos)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
