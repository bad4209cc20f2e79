//! The SQL of remote joins, invites and leaves: outliers (events known without their place in
//! the graph: a join's auth chain and state, an invite to a room this server is not in), the
//! room's current state and its auth chain for `send_join`, and the reads the join flow needs.

use federation::event::Pdu;

use super::WriteTx;
use super::graph::{EventStatus, INSERT_EVENT_SQL};

type StoreResult<T> = Result<T, sqlx::Error>;

/// `(event_id, pdu)` of the room's current state events with a wire form.
const STATE_PDUS_SQL: &str = "SELECT e.event_id, e.pdu FROM room_state s JOIN events e ON e.event_id = s.event_id
     WHERE s.room_id = $1 AND e.pdu IS NOT NULL ORDER BY e.depth, e.event_id";

impl WriteTx {
    /// Stores an event of a room whose graph around it this server does not have, with its auth
    /// edges (to those of its auth events already stored) and no state group: `Outlier` for an
    /// auth chain or state event, `Accepted` for an invite to a room this server is not in, so
    /// that it shows in sync and the room list as a local invite does (it gets its place in the
    /// graph when the invitee joins). An event stored already is left as it is. Answers its
    /// stream position.
    pub async fn persist_unplaced(&mut self, pdu: &Pdu, json: &str, status: EventStatus) -> StoreResult<i64> {
        let found: Option<i64> = sqlx::query_scalar("SELECT stream_position FROM events WHERE event_id = $1")
            .bind(&pdu.event_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        if let Some(pos) = found {
            return Ok(pos);
        }
        let content = crypto::to_canonical_string(&serde_json::Value::Object(pdu.content.clone()))
            .map_err(|e| sqlx::Error::Protocol(format!("content is not canonical: {e}")))?;
        let pos: i64 = sqlx::query_scalar(INSERT_EVENT_SQL)
            .bind(None::<i64>)
            .bind(&pdu.event_id)
            .bind(&pdu.room_id)
            .bind(&pdu.event_type)
            .bind(pdu.state_key.as_deref())
            .bind(&pdu.sender)
            .bind(content)
            .bind(pdu.origin_ts)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(json)
            .bind(pdu.depth)
            .bind(status.code())
            .bind(None::<i64>)
            .fetch_one(&mut *self.tx)
            .await?;
        self.last_position = self.last_position.max(pos);
        for auth in &pdu.auth_events {
            sqlx::query(
                "INSERT INTO event_auth_edges (event_pos, auth_pos)
                 SELECT $1, stream_position FROM events WHERE event_id = $2 ON CONFLICT DO NOTHING",
            )
            .bind(pos)
            .bind(auth)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(pos)
    }

    /// Whether this server holds the room's graph (it has a current state): a resident server,
    /// as opposed to one that only knows an invite.
    pub async fn holds_room_graph(&mut self, room_id: &str) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM room_current WHERE room_id = $1")
            .bind(room_id)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(n > 0)
    }

    /// The room's current state events, `(event_id, pdu)`, shallowest first.
    pub async fn current_state_pdus(&mut self, room_id: &str) -> StoreResult<Vec<(String, String)>> {
        sqlx::query_as(STATE_PDUS_SQL).bind(room_id).fetch_all(&mut *self.tx).await
    }

    /// The auth chain of the room's current state and of `more` (a join's auth events):
    /// every event reached through auth edges, `(event_id, pdu)`, shallowest first, at most
    /// `limit`.
    pub async fn state_auth_chain_pdus(
        &mut self,
        room_id: &str,
        more: &[String],
        limit: usize,
    ) -> StoreResult<Vec<(String, String)>> {
        let extra = (0..more.len()).map(|i| format!("${}", i + 3)).collect::<Vec<_>>().join(", ");
        let extra = if more.is_empty() { String::new() } else { format!(" OR e.event_id IN ({extra})") };
        let sql = format!(
            "WITH RECURSIVE chain(pos) AS (
                 SELECT e.stream_position FROM events e
                 WHERE e.event_id IN (SELECT event_id FROM room_state WHERE room_id = $1){extra}
                 UNION SELECT a.auth_pos FROM event_auth_edges a JOIN chain c ON a.event_pos = c.pos)
             SELECT e.event_id, e.pdu FROM chain c JOIN events e ON e.stream_position = c.pos
             WHERE e.pdu IS NOT NULL AND e.status <> 2 ORDER BY e.depth, e.event_id LIMIT $2"
        );
        let mut q =
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(i64::try_from(limit).unwrap_or(i64::MAX));
        for id in more {
            q = q.bind(id);
        }
        q.fetch_all(&mut *self.tx).await
    }

    /// The newest member event stored about `fqid` in the room, whatever its status:
    /// `(event_id, pdu)`. How an invitee's server finds the invite it holds.
    pub async fn latest_member_pdu(&mut self, room_id: &str, fqid: &str) -> StoreResult<Option<(String, String)>> {
        sqlx::query_as(
            "SELECT event_id, pdu FROM events WHERE room_id = $1 AND event_type = 'swp.room.member'
             AND state_key = $2 AND pdu IS NOT NULL AND status <> 2 ORDER BY stream_position DESC LIMIT 1",
        )
        .bind(room_id)
        .bind(fqid)
        .fetch_optional(&mut *self.tx)
        .await
    }
}

impl WriteTx {
    /// Sets or clears the room's DM key: a federated DM replaced by another of the same pair
    /// gives its key up, and an invite's room takes it. Local organisation, not room state.
    pub async fn set_room_dm_key(&mut self, room_id: &str, dm_key: Option<&str>) -> StoreResult<()> {
        sqlx::query("UPDATE rooms SET dm_key = $2 WHERE id = $1")
            .bind(room_id)
            .bind(dm_key)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}
