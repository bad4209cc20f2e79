//! SQL of backfill: where a walk backwards starts, what is stored of what a peer answered, and
//! whether a room's history is held from its creation on.

use std::collections::HashMap;

use super::{EventStatus, Store};

type StoreResult<T> = Result<T, sqlx::Error>;

fn placeholders(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

impl Store {
    /// The room's oldest accepted events (lowest positions first): where a walk backwards
    /// starts.
    pub async fn oldest_accepted_events(&self, room_id: &str, n: i64) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT event_id FROM events WHERE room_id = $1 AND status = 0 ORDER BY stream_position LIMIT $2",
        )
        .bind(room_id)
        .bind(n)
        .fetch_all(&self.pool)
        .await
    }

    /// The status of each stored event among `ids`.
    pub async fn event_statuses(&self, ids: &[String]) -> StoreResult<HashMap<String, EventStatus>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(500) {
            let sql = format!("SELECT event_id, status FROM events WHERE event_id IN ({})", placeholders(chunk.len()));
            let mut q = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            for (id, status) in q.fetch_all(&self.pool).await? {
                out.insert(id, EventStatus::from_code(status).unwrap_or(EventStatus::Rejected));
            }
        }
        Ok(out)
    }

    /// Whether this server holds the room's history from its creation on: the room was
    /// created here (its create event's sender is of `us`), or a backfill reached its create
    /// event. A room without a create event (made before signed events) was made here.
    pub async fn history_complete(&self, room_id: &str, us: &str) -> StoreResult<bool> {
        let creator: Option<String> = sqlx::query_scalar(
            "SELECT sender FROM events WHERE room_id = $1 AND event_type = 'swp.room.create' AND state_key = '' LIMIT 1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(creator) = creator else { return Ok(true) };
        if creator.rsplit_once(':').is_some_and(|(_, server)| server == us) {
            return Ok(true);
        }
        let done: Option<i64> = sqlx::query_scalar("SELECT 1 FROM fed_history_complete WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(done.is_some())
    }

    pub async fn set_history_complete(&self, room_id: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO fed_history_complete (room_id, completed_at) VALUES ($1, $2) ON CONFLICT (room_id) DO NOTHING",
        )
        .bind(room_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

impl super::WriteTx {
    /// A stored event's wire form.
    pub async fn stored_pdu(&mut self, event_id: &str) -> Result<Option<String>, sqlx::Error> {
        let pdu: Option<Option<String>> = sqlx::query_scalar("SELECT pdu FROM events WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(pdu.flatten())
    }
}
