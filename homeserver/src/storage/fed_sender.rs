//! The sender's SQL: which events a destination still needs, its cursor and back-off, the
//! events it asked us to send again, and the peers' list for admins.
//!
//! An event goes to a destination when it is accepted, appended (positive position), has a
//! signed wire form, belongs to a room whose federation switch is on (its own toggle events
//! always), was made here or is marked for relay, and the destination has a joined member in
//! the room now or is the server of a member event's subject. The room-version check (a room
//! whose create event names none never federates) is the caller's, over the create content.

use serde_json::Value;

use super::Store;

type StoreResult<T> = Result<T, sqlx::Error>;

/// The conditions on `e` (an `events` row joined with its room `r`) shared by every query
/// below: `$1` is the destination, `$2` this server's name.
const TO_DESTINATION: &str = "e.status = 0 AND e.stream_position > 0 AND e.pdu IS NOT NULL
    AND (r.federated = TRUE OR e.event_type = 'swp.room.federation')
    AND (EXISTS (SELECT 1 FROM participants o WHERE o.fqid = e.sender AND o.server_name = $2)
         OR EXISTS (SELECT 1 FROM fed_relay_events x WHERE x.event_pos = e.stream_position))
    AND (EXISTS (SELECT 1 FROM memberships m JOIN participants p ON p.id = m.participant_id
                 WHERE m.room_id = e.room_id AND m.membership = 'join' AND p.server_name = $1)
         OR (e.event_type = 'swp.room.member'
             AND EXISTS (SELECT 1 FROM participants s WHERE s.fqid = e.state_key AND s.server_name = $1)))";

/// An event waiting for a destination.
#[derive(Debug, Clone)]
pub struct OutboundEvent {
    pub pos: i64,
    pub event_id: String,
    pub room_id: String,
    /// The sender's fqid (its server is the event's origin).
    pub sender: String,
    /// The signed wire form, as stored.
    pub pdu: String,
}

/// A destination's delivery record (`fed_destinations`); timestamps in Unix ms.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DestinationRow {
    pub server_name: String,
    pub delivered_pos: i64,
    pub failures: i64,
    pub retry_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub last_success_at: Option<i64>,
    pub last_seen_at: Option<i64>,
}

/// A peer as the admin list shows it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub row: DestinationRow,
    /// Events still to deliver plus events to send again.
    pub queue_depth: i64,
}

type EventTuple = (i64, String, String, String, String);

fn outbound(rows: Vec<EventTuple>) -> Vec<OutboundEvent> {
    rows.into_iter()
        .map(|(pos, event_id, room_id, sender, pdu)| OutboundEvent { pos, event_id, room_id, sender, pdu })
        .collect()
}

const ROW_COLUMNS: &str = "server_name, delivered_pos, failures, retry_at, last_error, last_error_at, \
                           last_success_at, last_seen_at";

impl Store {
    /// Every destination's record, by name.
    pub async fn fed_destination_rows(&self) -> StoreResult<Vec<DestinationRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {ROW_COLUMNS} FROM fed_destinations ORDER BY server_name")))
            .fetch_all(&self.pool)
            .await
    }

    /// One destination's record.
    pub async fn fed_destination_row(&self, server: &str) -> StoreResult<Option<DestinationRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ROW_COLUMNS} FROM fed_destinations WHERE server_name = $1"
        )))
        .bind(server)
        .fetch_optional(&self.pool)
        .await
    }

    /// The events in `(after, upto]` that `destination` needs, in stream order, at most
    /// `limit`. `us` is this server's name.
    pub async fn fed_pending_events(
        &self,
        destination: &str,
        us: &str,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboundEvent>> {
        let rows: Vec<EventTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT e.stream_position, e.event_id, e.room_id, e.sender, e.pdu FROM events e
             JOIN rooms r ON r.id = e.room_id
             WHERE e.stream_position > $3 AND e.stream_position <= $4 AND {TO_DESTINATION}
             ORDER BY e.stream_position LIMIT $5"
        )))
        .bind(destination)
        .bind(us)
        .bind(after)
        .bind(upto)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(outbound(rows))
    }

    /// The events `destination` answered `retry: true`, oldest first, at most `limit`. An
    /// event that stopped concerning it (room switched off, server gone) stays listed but is
    /// not returned until it concerns it again.
    pub async fn fed_retry_candidates(
        &self,
        destination: &str,
        us: &str,
        limit: i64,
    ) -> StoreResult<Vec<OutboundEvent>> {
        let rows: Vec<EventTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT e.stream_position, e.event_id, e.room_id, e.sender, e.pdu FROM fed_retry_events q
             JOIN events e ON e.stream_position = q.event_pos JOIN rooms r ON r.id = e.room_id
             WHERE q.server_name = $1 AND {TO_DESTINATION}
             ORDER BY e.stream_position LIMIT $3"
        )))
        .bind(destination)
        .bind(us)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(outbound(rows))
    }

    /// Whether the room's create event names a `room_version` (rooms made before the rules
    /// existed never federate). `None` when the room has no create event here.
    pub async fn room_has_version(&self, room_id: &str) -> StoreResult<Option<bool>> {
        let content: Option<String> = sqlx::query_scalar(
            "SELECT content FROM events WHERE room_id = $1 AND event_type = 'swp.room.create' AND status = 0
             ORDER BY stream_position LIMIT 1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(content
            .map(|c| serde_json::from_str::<Value>(&c).ok().and_then(|v| v.get("room_version").cloned()).is_some()))
    }

    /// The servers (not `us`) that events in `(after, upto]` are addressed to, each with the
    /// first such position: where the dispatcher makes destination records.
    pub async fn fed_destinations_of_range(&self, us: &str, after: i64, upto: i64) -> StoreResult<Vec<(String, i64)>> {
        let common = "e.stream_position > $2 AND e.stream_position <= $3 AND e.status = 0 AND e.pdu IS NOT NULL
            AND (r.federated = TRUE OR e.event_type = 'swp.room.federation')
            AND (EXISTS (SELECT 1 FROM participants o WHERE o.fqid = e.sender AND o.server_name = $1)
                 OR EXISTS (SELECT 1 FROM fed_relay_events x WHERE x.event_pos = e.stream_position))
            AND p.server_name <> $1";
        let rows: Vec<(String, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT p.server_name, MIN(e.stream_position) FROM events e JOIN rooms r ON r.id = e.room_id
             JOIN memberships m ON m.room_id = e.room_id AND m.membership = 'join'
             JOIN participants p ON p.id = m.participant_id
             WHERE {common} GROUP BY p.server_name
             UNION ALL
             SELECT p.server_name, MIN(e.stream_position) FROM events e JOIN rooms r ON r.id = e.room_id
             JOIN participants p ON p.fqid = e.state_key
             WHERE e.event_type = 'swp.room.member' AND {common} GROUP BY p.server_name"
        )))
        .bind(us)
        .bind(after)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        let mut first: std::collections::BTreeMap<String, i64> = Default::default();
        for (server, pos) in rows {
            let e = first.entry(server).or_insert(pos);
            *e = (*e).min(pos);
        }
        Ok(first.into_iter().collect())
    }

    /// The lowest cursor of any destination, where the dispatcher starts after a restart (a
    /// destination first addressed just before a crash still gets its record).
    pub async fn fed_lowest_cursor(&self) -> StoreResult<Option<i64>> {
        sqlx::query_scalar("SELECT MIN(delivered_pos) FROM fed_destinations").fetch_one(&self.pool).await
    }

    /// Makes a record for each new destination, its cursor just before the first event it
    /// needs. Existing records are left alone.
    pub async fn fed_ensure_destinations(&self, first: &[(String, i64)]) -> StoreResult<()> {
        if first.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for (server, pos) in first {
            sqlx::query(
                "INSERT INTO fed_destinations (server_name, delivered_pos) VALUES ($1, $2)
                 ON CONFLICT (server_name) DO NOTHING",
            )
            .bind(server)
            .bind(pos - 1)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await
    }

    /// Moves a destination's cursor forward (never back).
    pub async fn fed_advance_cursor(&self, server: &str, cursor: i64) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query("UPDATE fed_destinations SET delivered_pos = $2 WHERE server_name = $1 AND delivered_pos < $2")
            .bind(server)
            .bind(cursor)
            .execute(&mut *tx.tx)
            .await?;
        tx.commit().await
    }

    /// Records an answered transaction in one write: the cursor moves to `cursor`, the
    /// back-off is cleared, events answered for good leave the retry list and those answered
    /// `retry: true` join it.
    pub async fn fed_transaction_answered(
        &self,
        server: &str,
        cursor: i64,
        done: &[i64],
        retry: &[i64],
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE fed_destinations SET
                 delivered_pos = CASE WHEN delivered_pos < $2 THEN $2 ELSE delivered_pos END,
                 failures = 0, retry_at = NULL, last_success_at = $3
             WHERE server_name = $1",
        )
        .bind(server)
        .bind(cursor)
        .bind(now_ms)
        .execute(&mut *tx.tx)
        .await?;
        for pos in done {
            sqlx::query("DELETE FROM fed_retry_events WHERE server_name = $1 AND event_pos = $2")
                .bind(server)
                .bind(pos)
                .execute(&mut *tx.tx)
                .await?;
        }
        for pos in retry {
            sqlx::query(
                "INSERT INTO fed_retry_events (server_name, event_pos) VALUES ($1, $2)
                 ON CONFLICT (server_name, event_pos) DO NOTHING",
            )
            .bind(server)
            .bind(pos)
            .execute(&mut *tx.tx)
            .await?;
        }
        tx.commit().await
    }

    /// Records a failed attempt: the failure count, when to try again, and why.
    pub async fn fed_delivery_failed(
        &self,
        server: &str,
        failures: i64,
        retry_at_ms: i64,
        error: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "UPDATE fed_destinations SET failures = $2, retry_at = $3, last_error = $4, last_error_at = $5
             WHERE server_name = $1",
        )
        .bind(server)
        .bind(failures)
        .bind(retry_at_ms)
        .bind(error)
        .bind(now_ms)
        .execute(&mut *tx.tx)
        .await?;
        tx.commit().await
    }

    /// Records that the peer contacted us; with `reset`, also clears its back-off. A peer seen
    /// for the first time gets a record whose cursor is `initial_cursor`.
    pub async fn fed_peer_seen(&self, server: &str, now_ms: i64, reset: bool, initial_cursor: i64) -> StoreResult<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO fed_destinations (server_name, delivered_pos, last_seen_at) VALUES ($1, $2, $3)
             ON CONFLICT (server_name) DO UPDATE SET last_seen_at = excluded.last_seen_at",
        )
        .bind(server)
        .bind(initial_cursor)
        .bind(now_ms)
        .execute(&mut *tx.tx)
        .await?;
        if reset {
            sqlx::query("UPDATE fed_destinations SET failures = 0, retry_at = NULL WHERE server_name = $1")
                .bind(server)
                .execute(&mut *tx.tx)
                .await?;
        }
        tx.commit().await
    }

    /// Every peer with its queue depth (events still to deliver up to `upto`, plus events to
    /// send again).
    pub async fn fed_peer_statuses(&self, us: &str, upto: i64) -> StoreResult<Vec<PeerStatus>> {
        let rows = self.fed_destination_rows().await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let pending: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM events e JOIN rooms r ON r.id = e.room_id
                 WHERE e.stream_position > $3 AND e.stream_position <= $4 AND {TO_DESTINATION}"
            )))
            .bind(&row.server_name)
            .bind(us)
            .bind(row.delivered_pos)
            .bind(upto)
            .fetch_one(&self.pool)
            .await?;
            let retry: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM fed_retry_events WHERE server_name = $1")
                .bind(&row.server_name)
                .fetch_one(&self.pool)
                .await?;
            out.push(PeerStatus { row, queue_depth: pending + retry });
        }
        Ok(out)
    }

    /// The servers (not `us`) with a joined member in the room, if its federation is on:
    /// where a typing notice goes.
    pub async fn fed_typing_servers(&self, room_id: &str, us: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT p.server_name FROM memberships m JOIN participants p ON p.id = m.participant_id
             JOIN rooms r ON r.id = m.room_id
             WHERE m.room_id = $1 AND m.membership = 'join' AND r.federated = TRUE AND p.server_name <> $2
             ORDER BY p.server_name",
        )
        .bind(room_id)
        .bind(us)
        .fetch_all(&self.pool)
        .await
    }

    /// The servers (not `us`) sharing a federated room with the participant: where their
    /// presence goes.
    pub async fn fed_presence_servers(&self, participant_id: &str, us: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT p.server_name FROM memberships mine
             JOIN rooms r ON r.id = mine.room_id
             JOIN memberships m ON m.room_id = mine.room_id JOIN participants p ON p.id = m.participant_id
             WHERE mine.participant_id = $1 AND mine.membership = 'join' AND r.federated = TRUE
               AND m.membership = 'join' AND p.server_name <> $2
             ORDER BY p.server_name",
        )
        .bind(participant_id)
        .bind(us)
        .fetch_all(&self.pool)
        .await
    }
}
