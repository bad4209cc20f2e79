//! The receiving side's SQL: received transactions, and what peers may read of a room (events,
//! the state at an event, auth chains, missing events, backfill, members). Every read serves
//! only events of the room named, accepted (outliers too for auth chains), and is bounded.

use std::collections::{BTreeSet, HashSet, VecDeque};

use federation::auth::RoomVersion;
use federation::event::types;
use serde_json::Value;

use super::graph::{GROUP_ENTRIES_SQL, GroupEntryRow, fold_group};
use super::{EventStatus, Store};

type StoreResult<T> = Result<T, sqlx::Error>;

/// Received transactions are kept this long (the contract asks for at least 24 h).
const KEEP_TXNS_MS: i64 = 48 * 3600 * 1000;

/// A stored event as a peer may be given it.
#[derive(Debug, Clone)]
pub struct FedEvent {
    pub room_id: String,
    pub status: EventStatus,
    pub depth: i64,
    /// The wire form.
    pub pdu: Value,
}

/// A member of a room, as `rooms/{room_id}/members` answers it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FedMember {
    pub fqid: String,
    pub local_id: String,
    pub server_name: String,
    pub display_name: String,
    pub membership: String,
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn status_of(code: i64) -> EventStatus {
    EventStatus::from_code(code).unwrap_or(EventStatus::Rejected)
}

impl Store {
    /// The answer first given to `(origin, txn_id)`, if it was received.
    pub async fn received_txn(&self, origin: &str, txn_id: &str) -> StoreResult<Option<Value>> {
        let row: Option<String> =
            sqlx::query_scalar("SELECT answer FROM fed_received_txns WHERE origin = $1 AND txn_id = $2")
                .bind(origin)
                .bind(txn_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|a| serde_json::from_str(&a).ok()))
    }

    /// Keeps the answer to `(origin, txn_id)` (the first one wins) and forgets transactions
    /// older than [`KEEP_TXNS_MS`].
    pub async fn save_received_txn(&self, origin: &str, txn_id: &str, answer: &Value, now_ms: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO fed_received_txns (origin, txn_id, answer, received_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (origin, txn_id) DO NOTHING",
        )
        .bind(origin)
        .bind(txn_id)
        .bind(answer.to_string())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM fed_received_txns WHERE received_at < $1")
            .bind(now_ms - KEEP_TXNS_MS)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The room's version, from its create event; `None` when no create event is stored.
    pub async fn room_version(&self, room_id: &str) -> StoreResult<Option<RoomVersion>> {
        let pdu: Option<String> = sqlx::query_scalar(
            "SELECT pdu FROM events WHERE room_id = $1 AND event_type = $2 AND state_key = ''
             AND status IN (0, 3) AND pdu IS NOT NULL ORDER BY stream_position LIMIT 1",
        )
        .bind(room_id)
        .bind(types::CREATE)
        .fetch_optional(&self.pool)
        .await?;
        let Some(pdu) = pdu else { return Ok(None) };
        let version = serde_json::from_str::<Value>(&pdu)
            .ok()
            .and_then(|v| federation::event::Pdu::parse("evt-create", &v).ok())
            .and_then(|p| RoomVersion::of_create(&p).ok())
            .unwrap_or(RoomVersion::V1);
        Ok(Some(version))
    }

    /// A stored event by id, with its wire form.
    pub async fn fed_event(&self, event_id: &str) -> StoreResult<Option<FedEvent>> {
        let row: Option<(String, i64, i64, Option<String>)> =
            sqlx::query_as("SELECT room_id, status, depth, pdu FROM events WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(room_id, status, depth, pdu)| {
            let pdu = serde_json::from_str(pdu.as_deref()?).ok()?;
            Some(FedEvent { room_id, status: status_of(status), depth, pdu })
        }))
    }

    /// Those of `ids` that are stored, whatever their status.
    pub async fn stored_event_ids(&self, ids: &[String]) -> StoreResult<HashSet<String>> {
        self.event_ids_where("true", ids).await
    }

    /// Those of `ids` stored with a state (placed in the room's graph): accepted or
    /// soft-failed with a state group; not outliers, not invitations kept without a state.
    pub async fn placed_event_ids(&self, ids: &[String]) -> StoreResult<HashSet<String>> {
        self.event_ids_where("status IN (0, 1) AND state_group IS NOT NULL", ids).await
    }

    /// Those of `ids` whose `events` row meets `condition` (a fixed SQL condition), 500 a read.
    async fn event_ids_where(&self, condition: &'static str, ids: &[String]) -> StoreResult<HashSet<String>> {
        let mut out = HashSet::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT event_id FROM events WHERE {condition} AND event_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            let found: Vec<String> = q.fetch_all(&self.pool).await?;
            out.extend(found);
        }
        Ok(out)
    }

    /// The room's forward extremities.
    pub async fn forward_extremities(&self, room_id: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT event_id FROM room_extremities WHERE room_id = $1 ORDER BY depth DESC LIMIT 20")
            .bind(room_id)
            .fetch_all(&self.pool)
            .await
    }

    /// The state at an accepted event of the room (the state after it: its state group), as
    /// event ids, at most `cap` entries; `None` when the event is not an accepted one of it.
    pub async fn state_ids_at(&self, room_id: &str, event_id: &str, cap: usize) -> StoreResult<Option<Vec<String>>> {
        let group: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT state_group FROM events WHERE event_id = $1 AND room_id = $2 AND status IN (0, 1)",
        )
        .bind(event_id)
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(Some(group)) = group else { return Ok(None) };
        let rows: Vec<GroupEntryRow> = sqlx::query_as(GROUP_ENTRIES_SQL).bind(group).fetch_all(&self.pool).await?;
        let mut ids: Vec<String> = fold_group(rows).into_values().map(|(_, id)| id).collect();
        ids.sort();
        ids.truncate(cap);
        Ok(Some(ids))
    }

    /// The auth chains of `ids` (their auth events, recursively, not `ids` themselves unless
    /// one authorises another), events of the room that are not rejected, at most `cap`.
    pub async fn auth_chain_ids(&self, room_id: &str, ids: &[String], cap: usize) -> StoreResult<Vec<String>> {
        let mut out = Vec::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "WITH RECURSIVE chain(pos) AS (
                     SELECT a.auth_pos FROM events e JOIN event_auth_edges a ON a.event_pos = e.stream_position
                     WHERE e.event_id IN ({})
                     UNION SELECT a.auth_pos FROM event_auth_edges a JOIN chain c ON a.event_pos = c.pos)
                 SELECT e.event_id FROM chain c JOIN events e ON e.stream_position = c.pos
                 WHERE e.room_id = $1 AND e.status <> 2 AND e.pdu IS NOT NULL LIMIT {}",
                placeholders(2, chunk.len()),
                cap + 1
            );
            let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(room_id);
            for id in chunk {
                q = q.bind(id);
            }
            let found: Vec<String> = q.fetch_all(&self.pool).await?;
            for id in found {
                if seen.len() >= cap {
                    break;
                }
                if seen.insert(id.clone()) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    /// The wire forms of those of `ids` that are events of the room with one of `statuses`, in
    /// the order of their positions.
    pub async fn room_pdus(&self, room_id: &str, ids: &[String], statuses: &[EventStatus]) -> StoreResult<Vec<Value>> {
        let codes: Vec<String> = statuses.iter().map(|s| s.code().to_string()).collect();
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT pdu FROM events WHERE room_id = $1 AND event_id IN ({}) AND status IN ({})
                 AND pdu IS NOT NULL ORDER BY stream_position",
                placeholders(2, chunk.len()),
                codes.join(", ")
            );
            let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(room_id);
            for id in chunk {
                q = q.bind(id);
            }
            let rows: Vec<String> = q.fetch_all(&self.pool).await?;
            out.extend(rows.iter().filter_map(|p| serde_json::from_str::<Value>(p).ok()));
        }
        Ok(out)
    }

    /// `get_missing_events`: the accepted events of the room reached by walking `prev_events`
    /// back from `latest` (not included), not past `earliest`, of depth at least `min_depth`,
    /// nearest first, at most `limit`. Looks at no more than `limit × 10` events.
    pub async fn missing_events(
        &self,
        room_id: &str,
        earliest: &[String],
        latest: &[String],
        limit: usize,
        min_depth: i64,
    ) -> StoreResult<Vec<Value>> {
        let stop: HashSet<&str> = earliest.iter().map(String::as_str).collect();
        let mut seen: HashSet<String> = latest.iter().cloned().collect();
        let mut queue: VecDeque<String> = VecDeque::new();
        for id in latest.iter().take(20) {
            for p in self.prevs_of(room_id, id).await? {
                if seen.insert(p.clone()) {
                    queue.push_back(p);
                }
            }
        }
        let mut out = Vec::new();
        let mut looked = 0;
        while let Some(id) = queue.pop_front() {
            if out.len() >= limit || looked >= limit * 10 {
                break;
            }
            looked += 1;
            if stop.contains(id.as_str()) {
                continue;
            }
            let Some(e) = self.fed_event(&id).await? else { continue };
            if e.room_id != room_id || e.status != EventStatus::Accepted || e.depth < min_depth {
                continue;
            }
            out.push(e.pdu);
            for p in self.prevs_of(room_id, &id).await? {
                if seen.insert(p.clone()) {
                    queue.push_back(p);
                }
            }
        }
        Ok(out)
    }

    /// The stored parents of an event of the room.
    async fn prevs_of(&self, room_id: &str, event_id: &str) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT p.event_id FROM events e JOIN event_edges x ON x.event_pos = e.stream_position
             JOIN events p ON p.stream_position = x.prev_pos
             WHERE e.event_id = $1 AND e.room_id = $2 AND p.room_id = $2",
        )
        .bind(event_id)
        .bind(room_id)
        .fetch_all(&self.pool)
        .await
    }

    /// `backfill`: up to `limit` accepted events of the room reached by walking `prev_events`
    /// back from `from` (included), the deepest first: what is left out is older than all
    /// that is answered, so the asker walks on from the parents of what it got.
    pub async fn backfill_events(&self, room_id: &str, from: &[String], limit: usize) -> StoreResult<Vec<Value>> {
        if from.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // SQLite stops a recursive walk at its LIMIT, so the walk itself is bounded.
        let sql = format!(
            "WITH RECURSIVE walk(pos) AS (
                 SELECT stream_position FROM events WHERE room_id = $1 AND event_id IN ({})
                 UNION SELECT x.prev_pos FROM event_edges x JOIN walk w ON x.event_pos = w.pos LIMIT {})
             SELECT e.pdu FROM walk w JOIN events e ON e.stream_position = w.pos
             WHERE e.room_id = $1 AND e.status = 0 AND e.pdu IS NOT NULL
             ORDER BY e.depth DESC, e.stream_position DESC",
            placeholders(2, from.len()),
            limit * 2
        );
        let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(room_id);
        for id in from {
            q = q.bind(id);
        }
        let rows: Vec<String> = q.fetch_all(&self.pool).await?;
        Ok(rows.iter().take(limit).filter_map(|p| serde_json::from_str::<Value>(p).ok()).collect())
    }

    /// The room's members (any membership), for `rooms/{room_id}/members`.
    pub async fn fed_members(&self, room_id: &str) -> StoreResult<Vec<FedMember>> {
        let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT p.fqid, p.local_id, p.server_name, p.display_name, m.membership
             FROM memberships m JOIN participants p ON p.id = m.participant_id
             WHERE m.room_id = $1 ORDER BY p.fqid",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(fqid, local_id, server_name, display_name, membership)| FedMember {
                fqid,
                local_id,
                server_name,
                display_name,
                membership,
            })
            .collect())
    }

    /// Whether the room is known here and federated: `None` unknown, else its switch.
    pub async fn room_federated(&self, room_id: &str) -> StoreResult<Option<bool>> {
        sqlx::query_scalar("SELECT federated FROM rooms WHERE id = $1").bind(room_id).fetch_optional(&self.pool).await
    }
}
