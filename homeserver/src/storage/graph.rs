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
const GROUP_ENTRIES_SQL: &str = "WITH RECURSIVE chain(id, prev, n) AS (
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
type GroupEntryRow = (i64, String, String, Option<i64>, Option<String>);
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
fn fold_group(rows: Vec<GroupEntryRow>) -> PositionState {
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

    /// The state of a group, by key: `(event position, event id)`.
    pub async fn state_group(&mut self, group: i64) -> Result<PositionState, sqlx::Error> {
        let rows = sqlx::query_as(GROUP_ENTRIES_SQL).bind(group).fetch_all(&mut *self.tx).await?;
        Ok(fold_group(rows))
    }
}

/// An event built elsewhere, for [`WriteTx::persist_backfilled`].
#[derive(Clone, Copy, Debug)]
pub struct Incoming<'a> {
    pub pdu: &'a Pdu,
    /// Its wire form.
    pub json: &'a str,
    /// The state before it as a peer answered it, for when none of its parents is stored.
    pub state_before: Option<&'a StateMap<EventId>>,
}

/// What [`WriteTx::persist`] stored (or found stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Persisted {
    pub stream_position: i64,
    pub status: EventStatus,
    pub state_group: Option<i64>,
    /// The event was stored before: nothing was written.
    pub existed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error("state resolution: {0}")]
    Resolve(#[from] state_res::ResolveError),
    #[error("the event cannot be stored: {0}")]
    Unstorable(String),
}

/// A stored event's place in the graph.
#[derive(Clone, Debug)]
struct GraphRow {
    event_id: String,
    pos: i64,
    status: EventStatus,
    group: Option<GroupRef>,
}

fn graph_row(r: GraphRowTuple) -> GraphRow {
    let (event_id, pos, status, group, delta_depth) = r;
    GraphRow {
        event_id,
        pos,
        // An unknown code reads as rejected: it then authorises nothing.
        status: EventStatus::from_code(status).unwrap_or(EventStatus::Rejected),
        group: group.map(|id| GroupRef { id, delta_depth: delta_depth.unwrap_or(0) }),
    }
}

const GRAPH_ROW_SELECT: &str = "SELECT e.event_id, e.stream_position, e.status, e.state_group, g.delta_depth
     FROM events e LEFT JOIN state_groups g ON g.id = e.state_group";

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `state` with its entries named by event id only, as state resolution reads it.
fn ids_of(state: &PositionState) -> StateMap<EventId> {
    state.iter().map(|(k, (_, id))| (k.clone(), id.clone())).collect()
}

/// The state before an event whose parents' states are `states`: their resolution.
fn resolve_states(
    version: RoomVersion,
    states: &[PositionState],
    events: &HashMap<EventId, Pdu>,
) -> Result<PositionState, state_res::ResolveError> {
    if states.len() == 1 {
        return Ok(states[0].clone());
    }
    let positions: HashMap<&str, i64> =
        states.iter().flat_map(|s| s.values().map(|(p, id)| (id.as_str(), *p))).collect();
    let by_id: Vec<StateMap<EventId>> = states.iter().map(ids_of).collect();
    let resolved = state_res::resolve(version, &by_id, events)?;
    Ok(resolved.into_iter().filter_map(|(k, id)| positions.get(id.as_str()).map(|&p| (k, (p, id)))).collect())
}

/// The room version of a room whose create event may be among `events` under `state`.
fn version_of(state: Option<&PositionState>, pdu: &Pdu, events: &HashMap<EventId, Pdu>) -> RoomVersion {
    let create_key = (types::CREATE.to_owned(), String::new());
    let create = if pdu.event_type == types::CREATE {
        Some(pdu)
    } else {
        state
            .and_then(|s| s.get(&create_key))
            .and_then(|(_, id)| events.get(id))
            .or_else(|| pdu.auth_events.iter().filter_map(|id| events.get(id)).find(|e| e.is_room_state(types::CREATE)))
    };
    create.and_then(|c| RoomVersion::of_create(c).ok()).unwrap_or(RoomVersion::V1)
}

impl WriteTx {
    /// Stores an event built and signed elsewhere (a peer's), already checked for signatures and
    /// hashes, with `json` its wire form, at the next stream position (how its status, state and
    /// edges are decided: `persist_at`, below).
    pub async fn persist(&mut self, pdu: &Pdu, json: &str) -> Result<Persisted, PersistError> {
        self.persist_at(pdu, json, None, None).await
    }

    /// [`Self::persist`] for an event whose parents are not stored, with the state before it as
    /// a peer answered it (a join's state, or the state at a gap): the events it names must be
    /// stored (as outliers, typically); those that are not are left out.
    pub async fn persist_with_state(
        &mut self,
        pdu: &Pdu,
        json: &str,
        state_before: &StateMap<EventId>,
    ) -> Result<Persisted, PersistError> {
        self.persist_at(pdu, json, None, Some(state_before)).await
    }

    /// Stores a batch of history (events older than what the room has, as a backwards fetch
    /// delivers them): they take positions below every stored one, negative, the oldest
    /// (smallest depth) lowest, so that pages show them in graph order before what follows.
    /// The oldest events of a batch usually have parents further back, not stored: each such
    /// event needs the state before it as the peer answered it (`state_before`), else it is an
    /// outlier, and so are its descendants in the batch. Answers in the order given.
    pub async fn persist_backfilled(&mut self, events: &[Incoming<'_>]) -> Result<Vec<Persisted>, PersistError> {
        let lowest: i64 =
            sqlx::query_scalar("SELECT COALESCE(MIN(stream_position), 0) FROM events").fetch_one(&mut *self.tx).await?;
        let mut order: Vec<usize> = (0..events.len()).collect();
        order.sort_by_key(|&i| (events[i].pdu.depth, i));
        let first = lowest.min(0) - i64::try_from(events.len()).unwrap_or(i64::MAX);
        let mut out: Vec<Option<Persisted>> = vec![None; events.len()];
        for (n, &i) in order.iter().enumerate() {
            let e = &events[i];
            let position = first + i64::try_from(n).unwrap_or(0);
            out[i] = Some(self.persist_at(e.pdu, e.json, Some(position), e.state_before).await?);
        }
        Ok(out.into_iter().map(|p| p.expect("every event persisted")).collect())
    }

    /// Stores `pdu` with its edges and decides its status:
    /// - the state before it is its parent's state, or the resolution of its parents' states;
    ///   with no parent stored it is `given_state`, and without that (and not a create event)
    ///   the event is an outlier;
    /// - rejected when its own auth events do not allow it; soft-failed when they do but the
    ///   state before it does not; accepted otherwise;
    /// - an accepted state event starts a state group; every other event with a known state
    ///   before it records that state's group;
    /// - a parent that arrives after its children gets its edges from them, is no forward
    ///   extremity, and the children's states are computed again;
    /// - the room's current state becomes the resolution of the states at its extremities.
    async fn persist_at(
        &mut self,
        pdu: &Pdu,
        json: &str,
        position: Option<i64>,
        given_state: Option<&StateMap<EventId>>,
    ) -> Result<Persisted, PersistError> {
        if let Some(found) = self.graph_rows(std::slice::from_ref(&pdu.event_id)).await?.pop() {
            return Ok(Persisted {
                stream_position: found.pos,
                status: found.status,
                state_group: found.group.map(|g| g.id),
                existed: true,
            });
        }
        let prevs = self.graph_rows(&pdu.prev_events).await?;
        let missing: Vec<&str> =
            pdu.prev_events.iter().filter(|id| !prevs.iter().any(|p| &p.event_id == *id)).map(String::as_str).collect();
        // Only parents that are part of the room give a state: not outliers, not rejected ones.
        let parents: Vec<&GraphRow> = prevs
            .iter()
            .filter(|p| matches!(p.status, EventStatus::Accepted | EventStatus::SoftFailed) && p.group.is_some())
            .collect();
        let mut parent_states = Vec::with_capacity(parents.len());
        for p in &parents {
            parent_states.push(self.state_group(p.group.expect("filtered").id).await?);
        }
        if let (true, Some(given)) = (parent_states.is_empty(), given_state) {
            let ids: Vec<EventId> = given.values().cloned().collect();
            let found: HashMap<String, i64> =
                self.graph_rows(&ids).await?.into_iter().map(|r| (r.event_id, r.pos)).collect();
            parent_states.push(
                given.iter().filter_map(|(k, id)| found.get(id).map(|&p| (k.clone(), (p, id.clone())))).collect(),
            );
        }
        let is_create = pdu.event_type == types::CREATE && pdu.prev_events.is_empty();
        // Everything the rules and the resolution read: the auth events, every state event of
        // the parents' states when they must be resolved, and all their auth chains.
        let mut wanted: BTreeSet<EventId> = pdu.auth_events.iter().cloned().collect();
        if parent_states.len() > 1 {
            wanted.extend(parent_states.iter().flat_map(|s| s.values().map(|(_, id)| id.clone())));
        } else if let Some(s) = parent_states.first() {
            wanted.extend(auth::auth_types_for(pdu).iter().filter_map(|k| s.get(k)).map(|(_, id)| id.clone()));
        }
        // Only a resolution walks auth chains; the checks read the named events alone.
        let events = self.stored_events(&wanted, parent_states.len() > 1).await?;
        let version = version_of(parent_states.first(), pdu, &events);
        let before: Option<PositionState> = if is_create {
            Some(PositionState::new())
        } else if parent_states.is_empty() {
            None
        } else {
            Some(resolve_states(version, &parent_states, &events)?)
        };
        let status = match auth::auth_state_from_auth_events(pdu, &events)
            .and_then(|auth_state| auth::check(version, pdu, &auth_state))
        {
            Err(_) => EventStatus::Rejected,
            Ok(()) => match &before {
                None => EventStatus::Outlier,
                Some(before) => {
                    let state: StateMap<&Pdu> =
                        before.iter().filter_map(|(k, (_, id))| events.event(id).map(|e| (k.clone(), e))).collect();
                    if auth::check(version, pdu, &state).is_ok() {
                        EventStatus::Accepted
                    } else {
                        EventStatus::SoftFailed
                    }
                }
            },
        };

        let content = crypto::to_canonical_string(&Value::Object(pdu.content.clone()))
            .map_err(|e| PersistError::Unstorable(e.to_string()))?;
        let new = NewEvent {
            event_id: &pdu.event_id,
            room_id: &pdu.room_id,
            event_type: &pdu.event_type,
            state_key: pdu.state_key.as_deref(),
            sender: &pdu.sender,
            content: &content,
            origin_ts: pdu.origin_ts,
            // Idempotency keys are this server's clients' business, not a peer's.
            event_uuid: None,
            relates_to: None,
            unsigned: None,
            pdu: json,
            depth: pdu.depth,
        };
        // The group of the state before, when it is one parent's; else the resolved state is
        // written as a snapshot.
        let before_group = match parents.as_slice() {
            [one] => one.group,
            _ => None,
        };
        let own_entry = (status == EventStatus::Accepted).then(|| pdu.state_entry()).flatten();
        let (group, group_entries): (Option<GroupRef>, Vec<GroupEntry>) = match (&before, before_group, &own_entry) {
            (None, _, _) => (None, Vec::new()),
            (Some(_), Some(g), None) => (Some(g), Vec::new()),
            (Some(before), g, _) => {
                let plan = GroupPlan::after(g);
                let id: i64 = sqlx::query_scalar(INSERT_GROUP_SQL)
                    .bind(&pdu.room_id)
                    .bind(plan.prev_group())
                    .bind(plan.delta_depth())
                    .fetch_one(&mut *self.tx)
                    .await?;
                let entries = match plan {
                    GroupPlan::Delta { .. } => Vec::new(),
                    GroupPlan::Snapshot => before.iter().map(|(k, (p, _))| (k.clone(), Some(*p))).collect(),
                };
                (Some(GroupRef { id, delta_depth: plan.delta_depth() }), entries)
            }
        };
        let pos = self.insert_event_row(&new, position, status, group.map(|g| g.id)).await?;
        if let Some(g) = group.filter(|g| Some(*g) != before_group) {
            let mut entries = group_entries;
            if let Some(key) = own_entry.clone() {
                entries.retain(|(k, _)| *k != key);
                entries.push((key, Some(pos)));
            }
            self.insert_group_entries(g.id, &entries).await?;
        }

        // Edges, the parents still missing, and children that were waiting for this event.
        let mut rows = GraphRows::default();
        rows.edges.extend(prevs.iter().map(|p| (pos, p.pos)));
        rows.auth_edges.extend(pdu.auth_events.iter().map(|a| (pos, a.clone())));
        let children: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT m.event_pos, e.status FROM event_missing_prevs m JOIN events e ON e.stream_position = m.event_pos
             WHERE m.prev_event_id = $1",
        )
        .bind(&pdu.event_id)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.edges.extend(children.iter().map(|(child, _)| (*child, pos)));
        self.write_graph_rows(&rows).await?;
        if !children.is_empty() {
            sqlx::query("DELETE FROM event_missing_prevs WHERE prev_event_id = $1")
                .bind(&pdu.event_id)
                .execute(&mut *self.tx)
                .await?;
        }
        for prev in &missing {
            sqlx::query(
                "INSERT INTO event_missing_prevs (prev_event_id, event_pos) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(*prev)
            .bind(pos)
            .execute(&mut *self.tx)
            .await?;
        }

        if status == EventStatus::Accepted {
            for prev in &pdu.prev_events {
                sqlx::query(DELETE_EXTREMITY_SQL).bind(&pdu.room_id).bind(prev).execute(&mut *self.tx).await?;
            }
            // A soft-failed child is no one's successor in the room: its parent stays an
            // extremity. Its state (the state before it) is still computed again.
            let has_accepted_child = children.iter().any(|(_, s)| *s == EventStatus::Accepted.code());
            if !has_accepted_child {
                sqlx::query(INSERT_EXTREMITY_SQL)
                    .bind(&pdu.room_id)
                    .bind(&pdu.event_id)
                    .bind(pdu.depth)
                    .execute(&mut *self.tx)
                    .await?;
            }
            let in_room: Vec<i64> = children
                .iter()
                .filter(|(_, s)| *s == EventStatus::Accepted.code() || *s == EventStatus::SoftFailed.code())
                .map(|(c, _)| *c)
                .collect();
            if !in_room.is_empty() {
                self.recompute_descendants(&pdu.room_id, version, in_room).await?;
            }
            self.resolve_current_state(&pdu.room_id, version).await?;
        }
        Ok(Persisted { stream_position: pos, status, state_group: group.map(|g| g.id), existed: false })
    }

    /// The graph rows of those of `ids` that are stored.
    async fn graph_rows(&mut self, ids: &[EventId]) -> Result<Vec<GraphRow>, sqlx::Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!("{GRAPH_ROW_SELECT} WHERE e.event_id IN ({})", placeholders(1, ids.len()));
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id);
        }
        let rows: Vec<GraphRowTuple> = q.fetch_all(&mut *self.tx).await?;
        Ok(rows.into_iter().map(graph_row).collect())
    }

    async fn events_with_auth_chains(&mut self, ids: &BTreeSet<EventId>) -> Result<HashMap<EventId, Pdu>, sqlx::Error> {
        self.stored_events(ids, true).await
    }

    /// The stored events among `ids` (and every event of their auth chains when
    /// `with_auth_chains`), parsed; rejected events and events without a wire form are left out
    /// (nothing is authorised by them).
    async fn stored_events(
        &mut self,
        ids: &BTreeSet<EventId>,
        with_auth_chains: bool,
    ) -> Result<HashMap<EventId, Pdu>, sqlx::Error> {
        let mut out = HashMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let sql = if with_auth_chains {
            format!(
                "WITH RECURSIVE chain(pos) AS (
                     SELECT stream_position FROM events WHERE event_id IN ({})
                     UNION SELECT a.auth_pos FROM event_auth_edges a JOIN chain c ON a.event_pos = c.pos)
                 SELECT e.event_id, e.pdu FROM chain c JOIN events e ON e.stream_position = c.pos
                 WHERE e.status <> 2 AND e.pdu IS NOT NULL",
                placeholders(1, ids.len())
            )
        } else {
            format!(
                "SELECT event_id, pdu FROM events WHERE event_id IN ({}) AND status <> 2 AND pdu IS NOT NULL",
                placeholders(1, ids.len())
            )
        };
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        for id in ids {
            q = q.bind(id);
        }
        let rows: Vec<(String, String)> = q.fetch_all(&mut *self.tx).await?;
        for (id, pdu) in rows {
            let parsed = serde_json::from_str::<Value>(&pdu).ok().and_then(|v| Pdu::parse(&id, &v).ok());
            if let Some(p) = parsed {
                out.insert(id, p);
            }
        }
        Ok(out)
    }

    /// The state after the stored event at `pos`, from its parents' states as stored now.
    async fn state_after(
        &mut self,
        pos: i64,
        version: RoomVersion,
    ) -> Result<Option<(PositionState, Option<GroupRef>)>, PersistError> {
        let parents: Vec<GraphRowTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{GRAPH_ROW_SELECT} JOIN event_edges x ON x.prev_pos = e.stream_position
             WHERE x.event_pos = $1 AND e.status IN (0, 1) AND e.state_group IS NOT NULL"
        )))
        .bind(pos)
        .fetch_all(&mut *self.tx)
        .await?;
        let parents: Vec<GraphRow> = parents.into_iter().map(graph_row).collect();
        let mut states = Vec::new();
        for p in &parents {
            states.push(self.state_group(p.group.expect("filtered").id).await?);
        }
        if states.is_empty() {
            return Ok(None);
        }
        let wanted: BTreeSet<EventId> = if states.len() > 1 {
            states.iter().flat_map(|s| s.values().map(|(_, id)| id.clone())).collect()
        } else {
            BTreeSet::new()
        };
        let events = self.events_with_auth_chains(&wanted).await?;
        let mut state = resolve_states(version, &states, &events)?;
        let own: (String, Option<String>, Option<String>, i64) =
            sqlx::query_as("SELECT event_id, event_type, state_key, status FROM events WHERE stream_position = $1")
                .bind(pos)
                .fetch_one(&mut *self.tx)
                .await?;
        let adds_state = own.3 == EventStatus::Accepted.code() && own.2.is_some();
        if let (id, Some(t), Some(k), 0) = own {
            state.insert((t, k), (pos, id));
        }
        let single = match parents.as_slice() {
            [one] if !adds_state => one.group,
            _ => None,
        };
        Ok(Some((state, single)))
    }

    /// After a parent arrived late: the states of `children` (and of their descendants, as far
    /// as they change) are computed again from their parents' states.
    async fn recompute_descendants(
        &mut self,
        room_id: &str,
        version: RoomVersion,
        children: Vec<i64>,
    ) -> Result<(), PersistError> {
        let mut queue: std::collections::VecDeque<i64> = children.into();
        let mut seen = BTreeSet::new();
        while let Some(pos) = queue.pop_front() {
            if !seen.insert(pos) {
                continue;
            }
            let Some((after, same_as_parent)) = self.state_after(pos, version).await? else { continue };
            let stored: Option<i64> = sqlx::query_scalar("SELECT state_group FROM events WHERE stream_position = $1")
                .bind(pos)
                .fetch_one(&mut *self.tx)
                .await?;
            let current = match stored {
                Some(g) => self.state_group(g).await?,
                None => PositionState::new(),
            };
            if current == after {
                continue;
            }
            let group = match same_as_parent {
                Some(g) => g.id,
                None => {
                    let id: i64 = sqlx::query_scalar(INSERT_GROUP_SQL)
                        .bind(room_id)
                        .bind(None::<i64>)
                        .bind(0i64)
                        .fetch_one(&mut *self.tx)
                        .await?;
                    let entries: Vec<_> = after.iter().map(|(k, (p, _))| (k.clone(), Some(*p))).collect();
                    self.insert_group_entries(id, &entries).await?;
                    id
                }
            };
            sqlx::query("UPDATE events SET state_group = $2 WHERE stream_position = $1")
                .bind(pos)
                .bind(group)
                .execute(&mut *self.tx)
                .await?;
            // Children were appended after their parent, or waited for it in
            // `event_missing_prevs` and got an edge on its arrival: both are found here.
            let next: Vec<i64> = sqlx::query_scalar(
                "SELECT x.event_pos FROM event_edges x JOIN events e ON e.stream_position = x.event_pos
                 WHERE x.prev_pos = $1 AND e.room_id = $2",
            )
            .bind(pos)
            .bind(room_id)
            .fetch_all(&mut *self.tx)
            .await?;
            queue.extend(next);
        }
        Ok(())
    }

    /// Sets the room's current state to the resolution of the states at its forward
    /// extremities, and `room_state` to match.
    async fn resolve_current_state(&mut self, room_id: &str, version: RoomVersion) -> Result<(), PersistError> {
        let rows: Vec<GraphRowTuple> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "{GRAPH_ROW_SELECT} JOIN room_extremities x ON x.event_id = e.event_id
             WHERE x.room_id = $1 AND e.state_group IS NOT NULL ORDER BY e.event_id"
        )))
        .bind(room_id)
        .fetch_all(&mut *self.tx)
        .await?;
        let heads: Vec<GraphRow> = rows.into_iter().map(graph_row).collect();
        let mut groups: Vec<GroupRef> = heads.iter().filter_map(|h| h.group).collect();
        groups.sort_by_key(|g| g.id);
        groups.dedup();
        let current: Option<i64> = sqlx::query_scalar("SELECT state_group FROM room_current WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        let (state, group) = match groups.as_slice() {
            [] => return Ok(()),
            // One extremity whose state is already the current one (a message on top of it).
            [one] if Some(one.id) == current => return Ok(()),
            [one] => (self.state_group(one.id).await?, one.id),
            many => {
                let mut states = Vec::with_capacity(many.len());
                for g in many {
                    states.push(self.state_group(g.id).await?);
                }
                let wanted: BTreeSet<EventId> =
                    states.iter().flat_map(|s| s.values().map(|(_, id)| id.clone())).collect();
                let events = self.events_with_auth_chains(&wanted).await?;
                let state = resolve_states(version, &states, &events)?;
                let id: i64 = sqlx::query_scalar(INSERT_GROUP_SQL)
                    .bind(room_id)
                    .bind(None::<i64>)
                    .bind(0i64)
                    .fetch_one(&mut *self.tx)
                    .await?;
                let entries: Vec<_> = state.iter().map(|(k, (p, _))| (k.clone(), Some(*p))).collect();
                self.insert_group_entries(id, &entries).await?;
                (state, id)
            }
        };
        self.set_current_state(room_id, &state, group).await?;
        Ok(())
    }

    /// Makes `state` (group `group`) the room's current state: `room_current`, and the rows of
    /// `room_state` that differ.
    pub(super) async fn set_current_state(
        &mut self,
        room_id: &str,
        state: &PositionState,
        group: i64,
    ) -> Result<(), sqlx::Error> {
        let stored: Vec<(String, String, String)> =
            sqlx::query_as("SELECT event_type, state_key, event_id FROM room_state WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(&mut *self.tx)
                .await?;
        for (t, k, _) in &stored {
            if !state.contains_key(&(t.clone(), k.clone())) {
                sqlx::query("DELETE FROM room_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3")
                    .bind(room_id)
                    .bind(t)
                    .bind(k)
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        for ((t, k), (_, id)) in state {
            let same = stored.iter().any(|(st, sk, sid)| st == t && sk == k && sid == id);
            if !same {
                sqlx::query(UPSERT_ROOM_STATE_SQL)
                    .bind(room_id)
                    .bind(t)
                    .bind(k)
                    .bind(id)
                    .execute(&mut *self.tx)
                    .await?;
            }
        }
        sqlx::query(SET_CURRENT_SQL).bind(room_id).bind(group).execute(&mut *self.tx).await?;
        Ok(())
    }
}

/// Fills the state groups, the current state and the extremities of a database that migration
/// 8 upgraded (it left a row in `graph_upgrade_pending`, deleted here in the same transaction): every room's events are walked in stream order (all of them were accepted
/// then), each state event starting a group that its following events share. Rooms made before
/// migration 4 had neither `room_state` nor extremities: they get both, so that their next
/// events carry `prev_events` and `auth_events`.
pub(super) async fn upgrade(pool: &sqlx::SqlitePool) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let rooms: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT room_id FROM events ORDER BY room_id").fetch_all(&mut *tx).await?;
    for room_id in rooms {
        let events: Vec<(i64, String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT stream_position, event_id, event_type, state_key, depth FROM events
             WHERE room_id = $1 ORDER BY stream_position",
        )
        .bind(&room_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut state = PositionState::new();
        let mut group: Option<GroupRef> = None;
        // Each group covers its event's position up to the next state event's.
        let starts: Vec<usize> = (0..events.len()).filter(|&i| events[i].3.is_some()).collect();
        for (n, &i) in starts.iter().enumerate() {
            let (pos, id, t, k, _) = &events[i];
            let key = (t.clone(), k.clone().expect("a state event"));
            state.insert(key.clone(), (*pos, id.clone()));
            let plan = GroupPlan::after(group);
            let gid: i64 = sqlx::query_scalar(INSERT_GROUP_SQL)
                .bind(&room_id)
                .bind(plan.prev_group())
                .bind(plan.delta_depth())
                .fetch_one(&mut *tx)
                .await?;
            let entries: Vec<((String, String), i64)> = match plan {
                GroupPlan::Delta { .. } => vec![(key, *pos)],
                GroupPlan::Snapshot => state.iter().map(|(k, (p, _))| (k.clone(), *p)).collect(),
            };
            for chunk in entries.chunks(4096) {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(group_entries_sql(chunk.len())));
                for ((t, k), p) in chunk {
                    q = q.bind(gid).bind(t).bind(k).bind(*p);
                }
                q.execute(&mut *tx).await?;
            }
            let end = starts.get(n + 1).map_or(i64::MAX, |&j| events[j].0);
            sqlx::query(
                "UPDATE events SET state_group = $1
                 WHERE room_id = $2 AND stream_position >= $3 AND stream_position < $4",
            )
            .bind(gid)
            .bind(&room_id)
            .bind(*pos)
            .bind(end)
            .execute(&mut *tx)
            .await?;
            group = Some(GroupRef { id: gid, delta_depth: plan.delta_depth() });
        }
        if let Some(g) = group {
            sqlx::query("DELETE FROM room_state WHERE room_id = $1").bind(&room_id).execute(&mut *tx).await?;
            for ((t, k), (_, id)) in &state {
                sqlx::query(UPSERT_ROOM_STATE_SQL).bind(&room_id).bind(t).bind(k).bind(id).execute(&mut *tx).await?;
            }
            sqlx::query(SET_CURRENT_SQL).bind(&room_id).bind(g.id).execute(&mut *tx).await?;
        }
        let has_extremity: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM room_extremities WHERE room_id = $1)")
                .bind(&room_id)
                .fetch_one(&mut *tx)
                .await?;
        if let (false, Some((_, id, _, _, depth))) = (has_extremity, events.last()) {
            sqlx::query(INSERT_EXTREMITY_SQL).bind(&room_id).bind(id).bind(*depth).execute(&mut *tx).await?;
        }
    }
    sqlx::query("DELETE FROM graph_upgrade_pending").execute(&mut *tx).await?;
    tx.commit().await
}

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
