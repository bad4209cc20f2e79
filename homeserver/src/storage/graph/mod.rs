//! The room's event graph: the one place that knows how an event is appended to it (its row,
//! prev and auth edges, forward extremities, state group, the room's current state).
//!
//! Two executors share the SQL and the planning below: [`WriteTx`] (sqlx, room operations,
//! imports, [`WriteTx::persist`] for events built elsewhere) and the send batch
//! ([`BatchTx`](super::BatchTx), rusqlite, one multi-row INSERT per table per batch). The
//! planning functions are pure: given the event and what is known of its parents, they answer
//! the rows to write.
//!
//! Model (see `docs/federation.md`, "Storage of the event graph"):
//! - edges are keyed by stream positions; a `prev_event` not stored yet waits in
//!   `event_missing_prevs` until it arrives;
//! - every accepted state event starts a state group (a delta against the group before it; a
//!   full snapshot every [`SNAPSHOT_EVERY`] deltas); a message shares its parent's group;
//! - `room_state` and `room_current` hold the room's current state, `room_extremities` its
//!   forward extremities; they change only here.

use std::collections::{BTreeSet, HashMap};

use federation::auth::{self, RoomVersion};
use federation::event::{EventId, EventSource, Pdu, StateKey, StateMap, types};
use federation::state_res;
use serde_json::Value;

use super::*;

/// What became of a stored event. Stored as a small integer (`events.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventStatus {
    /// Part of the room: shown to clients, changes state, may be a forward extremity.
    Accepted,
    /// Allowed by its own auth events but not by the state before it: kept (peers may
    /// reference it) but never shown, never state, never an extremity.
    SoftFailed,
    /// Not allowed by its own auth events: kept only so that it is not fetched again.
    Rejected,
    /// Stored without the state before it (its parents are unknown): an auth event or a
    /// fetched event, not part of the room's timeline.
    Outlier,
}

impl EventStatus {
    pub fn code(self) -> i64 {
        match self {
            EventStatus::Accepted => 0,
            EventStatus::SoftFailed => 1,
            EventStatus::Rejected => 2,
            EventStatus::Outlier => 3,
        }
    }

    pub fn from_code(code: i64) -> Option<EventStatus> {
        match code {
            0 => Some(EventStatus::Accepted),
            1 => Some(EventStatus::SoftFailed),
            2 => Some(EventStatus::Rejected),
            3 => Some(EventStatus::Outlier),
            _ => None,
        }
    }
}

/// A state group is written in full after this many deltas, so that reading one never walks a
/// longer chain (one recursive query of at most this many groups' entries).
pub const SNAPSHOT_EVERY: i64 = 64;

/// Appends an event row (`NewEvent`'s fields in order). A NULL position takes the next one.
macro_rules! insert_event_sql {
    () => {
        "INSERT INTO events (stream_position, event_id, room_id, event_type, state_key, sender, content, origin_ts,
                             event_uuid, relates_to, unsigned_data, pdu, depth, status, state_group)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    };
}
/// Appends an event and answers its stream position.
pub(super) const INSERT_EVENT_SQL: &str = concat!(insert_event_sql!(), " RETURNING stream_position");
/// Appends an event; its stream position is then `last_insert_rowid()`. For SQLite's send
/// writer: a `RETURNING` clause makes SQLite keep a statement journal (a copy of every page the
/// insert touches, so the statement can be undone alone), which cost ~4 % of a send's CPU.
pub(super) const INSERT_EVENT_ROWID_SQL: &str = insert_event_sql!();

/// The room's forward extremities (with their depths and positions) and its current state
/// group (with its delta depth), in one read. Always one row at least: the extremity columns
/// are NULL for a room without events, the group's for a room without state.
pub(super) const HEAD_SQL: &str = "SELECT x.event_id, x.depth, e.stream_position, c.state_group, g.delta_depth
     FROM (SELECT $1 AS room_id) r
     LEFT JOIN room_extremities x ON x.room_id = r.room_id
     LEFT JOIN events e ON e.event_id = x.event_id
     LEFT JOIN room_current c ON c.room_id = r.room_id
     LEFT JOIN state_groups g ON g.id = c.state_group
     ORDER BY x.event_id";

pub(super) const DELETE_EXTREMITIES_SQL: &str = "DELETE FROM room_extremities WHERE room_id = $1";
pub(super) const DELETE_EXTREMITY_SQL: &str = "DELETE FROM room_extremities WHERE room_id = $1 AND event_id = $2";
pub(super) const INSERT_EXTREMITY_SQL: &str =
    "INSERT INTO room_extremities (room_id, event_id, depth) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
pub(super) const INSERT_GROUP_SQL: &str =
    "INSERT INTO state_groups (room_id, prev_group, delta_depth) VALUES ($1, $2, $3) RETURNING id";
pub(super) const SET_CURRENT_SQL: &str = "INSERT INTO room_current (room_id, state_group) VALUES ($1, $2)
     ON CONFLICT (room_id) DO UPDATE SET state_group = excluded.state_group";
pub(super) const UPSERT_ROOM_STATE_SQL: &str =
    "INSERT INTO room_state (room_id, event_type, state_key, event_id) VALUES ($1, $2, $3, $4)
     ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id = excluded.event_id";

/// `(n, event_type, state_key, event_pos, event_id)` of every entry of group `$1` and of the
/// groups its deltas stand on; `n` counts from the group itself, so the lowest `n` per key wins.
pub(in crate::storage) const GROUP_ENTRIES_SQL: &str = "WITH RECURSIVE chain(id, prev, n) AS (
         SELECT id, prev_group, 0 FROM state_groups WHERE id = $1
         UNION ALL SELECT g.id, g.prev_group, c.n + 1 FROM state_groups g JOIN chain c ON g.id = c.prev)
     SELECT c.n, s.event_type, s.state_key, s.event_pos, e.event_id
     FROM chain c JOIN state_group_entries s ON s.state_group = c.id
     LEFT JOIN events e ON e.stream_position = s.event_pos";

/// `INSERT … VALUES` of `rows` rows of `cols` placeholders each, numbered in order.
fn values_sql(head: &str, rows: usize, cols: usize, tail: &str) -> String {
    let mut sql = String::with_capacity(head.len() + rows * cols * 5 + tail.len());
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", r * cols + c + 1));
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// Prev edges of `rows` events: `(event_pos, prev_pos)` pairs.
pub(super) fn edges_sql(rows: usize) -> String {
    values_sql("INSERT INTO event_edges (event_pos, prev_pos)", rows, 2, " ON CONFLICT DO NOTHING")
}

/// Auth edges of `rows` `(event_pos, auth_pos)` pairs.
pub(super) fn auth_edges_sql(rows: usize) -> String {
    values_sql("INSERT INTO event_auth_edges (event_pos, auth_pos)", rows, 2, " ON CONFLICT DO NOTHING")
}

/// Auth edges of `rows` `(event_pos, auth event id)` pairs: the ids are looked up in the same
/// statement, so the caller needs no position of its auth events.
pub(super) fn auth_edges_by_id_sql(rows: usize) -> String {
    let values = values_sql("", rows, 2, "");
    format!(
        "INSERT INTO event_auth_edges (event_pos, auth_pos)
         SELECT v.column1, e.stream_position FROM ({}) v JOIN events e ON e.event_id = v.column2
         WHERE true ON CONFLICT DO NOTHING",
        values.trim_start()
    )
}

/// Entries of one state group: `(group, event_type, state_key, event_pos)` rows.
pub(super) fn group_entries_sql(rows: usize) -> String {
    values_sql("INSERT INTO state_group_entries (state_group, event_type, state_key, event_pos)", rows, 4, "")
}

/// A row of [`HEAD_SQL`]: extremity id, depth, position; current group, its delta depth.
type HeadRow = (Option<String>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);
/// A row of [`GROUP_ENTRIES_SQL`].
pub(in crate::storage) type GroupEntryRow = (i64, String, String, Option<i64>, Option<String>);
/// An entry a group writes: the key and its event's position (`None` removes the key).
type GroupEntry = (StateKey, Option<i64>);
/// A row of [`GRAPH_ROW_SELECT`].
type GraphRowTuple = (String, i64, i64, Option<i64>, Option<i64>);

/// A state group as the planner sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupRef {
    pub id: i64,
    /// Deltas down to the last snapshot (0: this group is a snapshot).
    pub delta_depth: i64,
}

/// Where a room's next local event goes: its parents and the state it builds on.
#[derive(Clone, Debug, Default)]
pub struct GraphHead {
    /// `(event_id, depth)` of the forward extremities: the next event's `prev_events`.
    pub extremities: Vec<(String, i64)>,
    /// Their stream positions, in the same order.
    pub positions: Vec<i64>,
    /// The room's current state group.
    pub state: Option<GroupRef>,
}

impl GraphHead {
    /// Folds the rows of [`HEAD_SQL`].
    pub(super) fn from_rows(rows: Vec<HeadRow>) -> Self {
        let mut head = GraphHead::default();
        for (id, depth, pos, group, delta_depth) in rows {
            if let (Some(group), Some(delta_depth)) = (group, delta_depth) {
                head.state = Some(GroupRef { id: group, delta_depth });
            }
            if let (Some(id), Some(depth), Some(pos)) = (id, depth, pos) {
                head.extremities.push((id, depth));
                head.positions.push(pos);
            }
        }
        head
    }

    /// The head after a local event at `pos` was appended on top of it: its only extremity.
    pub fn advance(&mut self, event_id: &str, depth: i64, pos: i64, state: Option<GroupRef>) {
        self.extremities = vec![(event_id.to_string(), depth)];
        self.positions = vec![pos];
        if state.is_some() {
            self.state = state;
        }
    }
}

/// How a new state group is written, given the group before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupPlan {
    /// Only the changed entries, against `prev`.
    Delta { prev: GroupRef },
    /// Every entry: there is no group before, or the chain of deltas is long enough.
    Snapshot,
}

impl GroupPlan {
    pub fn after(before: Option<GroupRef>) -> GroupPlan {
        match before {
            Some(prev) if prev.delta_depth + 1 < SNAPSHOT_EVERY => GroupPlan::Delta { prev },
            _ => GroupPlan::Snapshot,
        }
    }

    fn prev_group(self) -> Option<i64> {
        match self {
            GroupPlan::Delta { prev } => Some(prev.id),
            GroupPlan::Snapshot => None,
        }
    }

    fn delta_depth(self) -> i64 {
        match self {
            GroupPlan::Delta { prev } => prev.delta_depth + 1,
            GroupPlan::Snapshot => 0,
        }
    }
}

/// The graph rows of events appended locally (their parents are all the room's extremities,
/// all stored): collected per statement, so a batch writes each table once.
#[derive(Debug, Default)]
pub struct GraphRows {
    /// `(event_pos, prev_pos)`.
    pub edges: Vec<(i64, i64)>,
    /// `(event_pos, auth event id)`.
    pub auth_edges: Vec<(i64, String)>,
}

impl GraphRows {
    /// Plans the edges of a local event at `pos` on top of `head`.
    pub fn add_local(&mut self, pos: i64, head: &GraphHead, auth_events: &[String]) {
        self.edges.extend(head.positions.iter().map(|&prev| (pos, prev)));
        self.auth_edges.extend(auth_events.iter().map(|a| (pos, a.clone())));
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty() && self.auth_edges.is_empty()
    }
}

/// A state map by stream position, with each entry's event id.
pub type PositionState = StateMap<(i64, EventId)>;

/// Folds the rows of [`GROUP_ENTRIES_SQL`] into the group's state.
pub(in crate::storage) fn fold_group(rows: Vec<GroupEntryRow>) -> PositionState {
    let mut best: HashMap<StateKey, (i64, Option<(i64, String)>)> = HashMap::new();
    for (n, t, k, pos, id) in rows {
        let entry = pos.zip(id);
        match best.get(&(t.clone(), k.clone())) {
            Some((seen, _)) if *seen <= n => {}
            _ => {
                best.insert((t, k), (n, entry));
            }
        }
    }
    best.into_iter().filter_map(|(k, (_, e))| e.map(|e| (k, e))).collect()
}

/// A local event appended through [`WriteTx::append_local`].
pub struct LocalAppend<'a> {
    pub event: &'a NewEvent<'a>,
    pub head: &'a GraphHead,
    pub auth_events: &'a [String],
}

impl WriteTx {
    /// The room's forward extremities and current state group.
    pub async fn graph_head(&mut self, room_id: &str) -> Result<GraphHead, sqlx::Error> {
        let rows = sqlx::query_as(HEAD_SQL).bind(room_id).fetch_all(&mut *self.tx).await?;
        Ok(GraphHead::from_rows(rows))
    }

    /// Appends a local event on top of the room's head: its row, its edges, its state group (a
    /// state event's own; a message shares the head's), the extremity and the current state.
    /// Answers its stream position and the head after it.
    pub async fn append_local(&mut self, a: LocalAppend<'_>) -> Result<(i64, GraphHead), sqlx::Error> {
        let e = a.event;
        let state_entry = e.state_key.map(|k| (e.event_type, k));
        let (plan, group) = match state_entry {
            Some(_) => {
                let plan = GroupPlan::after(a.head.state);
                let id: i64 = sqlx::query_scalar(INSERT_GROUP_SQL)
                    .bind(e.room_id)
                    .bind(plan.prev_group())
                    .bind(plan.delta_depth())
                    .fetch_one(&mut *self.tx)
                    .await?;
                (Some(plan), Some(GroupRef { id, delta_depth: plan.delta_depth() }))
            }
            None => (None, a.head.state),
        };
        let pos = self.insert_event_row(e, None, EventStatus::Accepted, group.map(|g| g.id)).await?;
        if let (Some(plan), Some(group), Some((t, k))) = (plan, group, state_entry) {
            let entries: Vec<GroupEntry> = match plan {
                GroupPlan::Delta { .. } => vec![((t.to_string(), k.to_string()), Some(pos))],
                GroupPlan::Snapshot => {
                    let mut full = match a.head.state {
                        Some(g) => self.state_group(g.id).await?,
                        None => PositionState::new(),
                    };
                    full.insert((t.to_string(), k.to_string()), (pos, e.event_id.to_string()));
                    full.into_iter().map(|(k, (p, _))| (k, Some(p))).collect()
                }
            };
            self.insert_group_entries(group.id, &entries).await?;
            sqlx::query(UPSERT_ROOM_STATE_SQL)
                .bind(e.room_id)
                .bind(t)
                .bind(k)
                .bind(e.event_id)
                .execute(&mut *self.tx)
                .await?;
            sqlx::query(SET_CURRENT_SQL).bind(e.room_id).bind(group.id).execute(&mut *self.tx).await?;
        }
        let mut rows = GraphRows::default();
        rows.add_local(pos, a.head, a.auth_events);
        self.write_graph_rows(&rows).await?;
        sqlx::query(DELETE_EXTREMITIES_SQL).bind(e.room_id).execute(&mut *self.tx).await?;
        sqlx::query(INSERT_EXTREMITY_SQL).bind(e.room_id).bind(e.event_id).bind(e.depth).execute(&mut *self.tx).await?;
        let mut head = a.head.clone();
        head.advance(e.event_id, e.depth, pos, group);
        Ok((pos, head))
    }

    /// Inserts an event row; `position` `None` takes the next stream position.
    async fn insert_event_row(
        &mut self,
        e: &NewEvent<'_>,
        position: Option<i64>,
        status: EventStatus,
        state_group: Option<i64>,
    ) -> Result<i64, sqlx::Error> {
        let pos: i64 = sqlx::query_scalar(INSERT_EVENT_SQL)
            .bind(position)
            .bind(e.event_id)
            .bind(e.room_id)
            .bind(e.event_type)
            .bind(e.state_key)
            .bind(e.sender)
            .bind(e.content)
            .bind(e.origin_ts)
            .bind(e.event_uuid)
            .bind(e.relates_to)
            .bind(e.unsigned.map(|u| u.to_string()))
            .bind(e.pdu)
            .bind(e.depth)
            .bind(status.code())
            .bind(state_group)
            .fetch_one(&mut *self.tx)
            .await?;
        self.last_position = self.last_position.max(pos);
        Ok(pos)
    }

    async fn insert_group_entries(&mut self, group: i64, entries: &[GroupEntry]) -> Result<(), sqlx::Error> {
        self.group_cache.remove(&group);
        // SQLite allows 32,766 parameters a statement: 4 per entry.
        for chunk in entries.chunks(4096) {
            let sql = group_entries_sql(chunk.len());
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ((t, k), pos) in chunk {
                q = q.bind(group).bind(t).bind(k).bind(*pos);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Writes planned edges: one statement per table.
    pub(super) async fn write_graph_rows(&mut self, rows: &GraphRows) -> Result<(), sqlx::Error> {
        for chunk in rows.edges.chunks(8192) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(edges_sql(chunk.len())));
            for (a, b) in chunk {
                q = q.bind(*a).bind(*b);
            }
            q.execute(&mut *self.tx).await?;
        }
        for chunk in rows.auth_edges.chunks(8192) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(auth_edges_by_id_sql(chunk.len())));
            for (a, id) in chunk {
                q = q.bind(*a).bind(id);
            }
            q.execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    /// Whether the room was joined in stages and its state is not complete yet.
    pub async fn room_is_partial(&mut self, room_id: &str) -> Result<bool, sqlx::Error> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM fed_partial_rooms WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(found.is_some())
    }

    /// Completes the state a join in stages stood on with `entries` (stored events: the member
    /// events the join's answer left out): each key the join's state group lacks is added to
    /// it (the groups after it are deltas on it and see them too), and each key the room's
    /// current state lacks is added there. Answers the ids added to the current state.
    pub async fn complete_partial_state(
        &mut self,
        room_id: &str,
        join_event_id: &str,
        entries: &[(StateKey, String)],
    ) -> Result<Vec<String>, sqlx::Error> {
        let group: Option<Option<i64>> = sqlx::query_scalar("SELECT state_group FROM events WHERE event_id = $1")
            .bind(join_event_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        let mut added = Vec::new();
        let mut positions: HashMap<String, i64> = HashMap::new();
        for chunk in entries.chunks(500) {
            let sql = format!(
                "SELECT event_id, stream_position FROM events WHERE event_id IN ({})",
                (1..=chunk.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
            );
            let mut q = sqlx::query_as::<_, (String, i64)>(sqlx::AssertSqlSafe(sql));
            for (_, id) in chunk {
                q = q.bind(id);
            }
            positions.extend(q.fetch_all(&mut *self.tx).await?);
        }
        if let Some(Some(group)) = group {
            let have = self.state_group(group).await?;
            let missing: Vec<GroupEntry> = entries
                .iter()
                .filter(|(k, _)| !have.contains_key(k))
                .filter_map(|(k, id)| positions.get(id).map(|p| (k.clone(), Some(*p))))
                .collect();
            self.insert_group_entries(group, &missing).await?;
        }
        let current: Vec<(String, String)> =
            sqlx::query_as("SELECT event_type, state_key FROM room_state WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(&mut *self.tx)
                .await?;
        let current: std::collections::HashSet<(String, String)> = current.into_iter().collect();
        for ((t, k), id) in entries {
            if current.contains(&(t.clone(), k.clone())) || !positions.contains_key(id) {
                continue;
            }
            sqlx::query(UPSERT_ROOM_STATE_SQL).bind(room_id).bind(t).bind(k).bind(id).execute(&mut *self.tx).await?;
            added.push(id.clone());
        }
        Ok(added)
    }

    /// After a room's state is complete: what was taken provisionally since the join and whose
    /// sender the complete state does not show joined (a ban or a leave the join's answer left
    /// out) is soft-failed — stored, no longer shown. Answers how many.
    pub async fn soft_fail_unjoined_since(&mut self, room_id: &str, since_pos: i64) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE events SET status = 1
             WHERE room_id = $1 AND stream_position > $2 AND status = 0 AND state_key IS NULL
               AND NOT EXISTS (SELECT 1 FROM room_state s JOIN events m ON m.event_id = s.event_id
                               WHERE s.room_id = $1 AND s.event_type = 'swp.room.member'
                                 AND s.state_key = events.sender
                                 AND m.content LIKE '%\"membership\":\"join\"%')",
        )
        .bind(room_id)
        .bind(since_pos)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    /// The state of a group, by key: `(event position, event id)`.
    /// Read once per transaction: consecutive events (a backfilled batch, a peer's burst)
    /// mostly stand on the same group.
    pub async fn state_group(&mut self, group: i64) -> Result<PositionState, sqlx::Error> {
        if let Some(state) = self.group_cache.get(&group) {
            return Ok(state.clone());
        }
        let rows = sqlx::query_as(GROUP_ENTRIES_SQL).bind(group).fetch_all(&mut *self.tx).await?;
        let state = fold_group(rows);
        self.group_cache.insert(group, state.clone());
        Ok(state)
    }
}

mod persist;
mod upgrade;

pub use persist::{Incoming, PersistError, Persisted};
pub(in crate::storage) use upgrade::upgrade;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_a_delta_until_the_chain_is_long_enough() {
        assert_eq!(GroupPlan::after(None), GroupPlan::Snapshot);
        let near = GroupRef { id: 7, delta_depth: SNAPSHOT_EVERY - 2 };
        assert_eq!(GroupPlan::after(Some(near)), GroupPlan::Delta { prev: near });
        assert_eq!(GroupPlan::after(Some(near)).delta_depth(), SNAPSHOT_EVERY - 1);
        let full = GroupRef { id: 8, delta_depth: SNAPSHOT_EVERY - 1 };
        assert_eq!(GroupPlan::after(Some(full)), GroupPlan::Snapshot);
        assert_eq!(GroupPlan::Snapshot.prev_group(), None);
    }

    #[test]
    fn a_group_reads_as_its_nearest_entries_and_removals_hide_keys() {
        let k = |t: &str| (t.to_string(), String::new());
        let rows = vec![
            (0, "name".into(), String::new(), Some(9), Some("evt-9".into())),
            (2, "name".into(), String::new(), Some(3), Some("evt-3".into())),
            (2, "topic".into(), String::new(), Some(4), Some("evt-4".into())),
            (1, "topic".into(), String::new(), None, None),
            (2, "create".into(), String::new(), Some(1), Some("evt-1".into())),
        ];
        let state = fold_group(rows);
        assert_eq!(state.get(&k("name")), Some(&(9, "evt-9".to_string())));
        assert_eq!(state.get(&k("topic")), None, "removed by a nearer delta");
        assert_eq!(state.get(&k("create")), Some(&(1, "evt-1".to_string())));
        assert_eq!(state.len(), 2);
    }

    #[test]
    fn local_events_chain_on_the_head() {
        let mut head = GraphHead::from_rows(vec![
            (Some("evt-a".into()), Some(4), Some(10), Some(3), Some(1)),
            (Some("evt-b".into()), Some(5), Some(12), Some(3), Some(1)),
        ]);
        assert_eq!(head.state, Some(GroupRef { id: 3, delta_depth: 1 }));
        let mut rows = GraphRows::default();
        rows.add_local(20, &head, &["evt-c".to_string()]);
        assert_eq!(rows.edges, vec![(20, 10), (20, 12)], "a local event's parents are every extremity");
        head.advance("evt-new", 6, 20, None);
        rows.add_local(21, &head, &[]);
        assert_eq!(rows.edges[2..], [(21, 20)]);
        assert_eq!(rows.auth_edges, vec![(20, "evt-c".to_string())]);
        assert_eq!(head.state, Some(GroupRef { id: 3, delta_depth: 1 }), "a message keeps the group");
        let empty = GraphHead::from_rows(vec![(None, None, None, None, None)]);
        assert!(empty.extremities.is_empty() && empty.state.is_none());
    }

    #[test]
    fn multi_row_statements_number_their_placeholders_in_order() {
        assert_eq!(
            edges_sql(2),
            "INSERT INTO event_edges (event_pos, prev_pos) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
        assert!(auth_edges_by_id_sql(2).contains("FROM (VALUES ($1, $2), ($3, $4)) v JOIN events e"));
    }
}
