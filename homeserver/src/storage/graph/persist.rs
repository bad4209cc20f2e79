//! Events built elsewhere (peers, backfill): the state before each is computed from its
//! parents' groups (resolved when they differ), the rules decide its status, and the
//! extremities and current state follow. See the parent module for the model.

use super::*;
use std::collections::HashSet;

/// An event built elsewhere, for [`WriteTx::persist_backfilled`].
#[derive(Clone, Copy, Debug)]
pub struct Incoming<'a> {
    pub pdu: &'a Pdu,
    /// Its wire form.
    pub json: &'a str,
    /// The state before it as a peer answered it, for when none of its parents is stored.
    pub state_before: Option<&'a StateMap<EventId>>,
}

/// What [`WriteTx::persist_backfilled`] reads once for its whole batch instead of once per
/// event (each statement through sqlx is a hop to its SQLite thread: the per-event reads were
/// most of a backfill's time).
#[derive(Default)]
struct Prefetched {
    /// The graph rows of the batch's events and of every parent they name: stored before, or
    /// by this batch so far. An id of either kind missing here is not stored.
    rows: HashMap<EventId, GraphRow>,
    /// `(event_uuid, sender)` pairs taken.
    uuids: HashSet<(String, String)>,
    /// Stored events waiting for a parent of the batch: parent id → `(position, status)`.
    children: HashMap<EventId, Vec<(i64, i64)>>,
    /// The parents named by the batch that are forward extremities.
    extremities: HashSet<EventId>,
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

/// The `event_uuid` of an event's wire form, when it has a usable one.
fn event_uuid_of(json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Uuid {
        event_uuid: Option<String>,
    }
    serde_json::from_str::<Uuid>(json).ok()?.event_uuid.filter(|u| !u.is_empty() && u.len() <= 128)
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
        self.persist_at(pdu, json, None, None, None).await
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
        self.persist_at(pdu, json, None, Some(state_before), None).await
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
        let mut pre = self.prefetch(events).await?;
        let mut out: Vec<Option<Persisted>> = vec![None; events.len()];
        for (n, &i) in order.iter().enumerate() {
            let e = &events[i];
            let position = first + i64::try_from(n).unwrap_or(0);
            out[i] = Some(self.persist_at(e.pdu, e.json, Some(position), e.state_before, Some(&mut pre)).await?);
        }
        Ok(out.into_iter().map(|p| p.expect("every event persisted")).collect())
    }

    /// An event row of history at `at`, with its `edges` (`(event_pos, prev_pos)`, both ways)
    /// and its auth edges, in one call: sqlx runs the statements of one query string in one
    /// request to its SQLite thread, binding `$N` from one argument list.
    async fn insert_history_row(
        &mut self,
        e: &NewEvent<'_>,
        at: i64,
        status: EventStatus,
        state_group: Option<i64>,
        edges: &[(i64, i64)],
        auth_events: &[EventId],
    ) -> Result<(), sqlx::Error> {
        let mut sql = String::from(INSERT_EVENT_ROWID_SQL);
        let mut n = 15;
        if !edges.is_empty() {
            sql.push_str("; INSERT INTO event_edges (event_pos, prev_pos) VALUES ");
            for (i, _) in edges.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${})", n + 1, n + 2));
                n += 2;
            }
            sql.push_str(" ON CONFLICT DO NOTHING");
        }
        if !auth_events.is_empty() {
            sql.push_str(&format!(
                "; INSERT INTO event_auth_edges (event_pos, auth_pos) SELECT $1, stream_position FROM events
                 WHERE event_id IN ({}) ON CONFLICT DO NOTHING",
                placeholders(n + 1, auth_events.len())
            ));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(at)
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
            .bind(state_group);
        for (a, b) in edges {
            q = q.bind(*a).bind(*b);
        }
        for id in auth_events {
            q = q.bind(id);
        }
        q.execute(&mut *self.tx).await?;
        self.last_position = self.last_position.max(at);
        Ok(())
    }

    /// The reads of [`Prefetched`] for `events`, a few statements for the whole batch.
    async fn prefetch(&mut self, events: &[Incoming<'_>]) -> Result<Prefetched, sqlx::Error> {
        const CHUNK: usize = 5000;
        let mut pre = Prefetched::default();
        let batch: Vec<EventId> = events.iter().map(|e| e.pdu.event_id.clone()).collect();
        let mut named: Vec<EventId> = events.iter().flat_map(|e| e.pdu.prev_events.iter().cloned()).collect();
        named.sort();
        named.dedup();
        let mut all: Vec<EventId> = batch.iter().chain(&named).cloned().collect();
        all.sort();
        all.dedup();
        for chunk in all.chunks(CHUNK) {
            for row in self.graph_rows(chunk).await? {
                pre.rows.insert(row.event_id.clone(), row);
            }
        }
        let uuids: Vec<String> = events.iter().filter_map(|e| event_uuid_of(e.json)).collect();
        for chunk in uuids.chunks(CHUNK) {
            let sql =
                format!("SELECT event_uuid, sender FROM events WHERE event_uuid IN ({})", placeholders(1, chunk.len()));
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for u in chunk {
                q = q.bind(u);
            }
            let taken: Vec<(String, String)> = q.fetch_all(&mut *self.tx).await?;
            pre.uuids.extend(taken);
        }
        for chunk in batch.chunks(CHUNK) {
            let sql = format!(
                "SELECT m.prev_event_id, m.event_pos, e.status FROM event_missing_prevs m
                 JOIN events e ON e.stream_position = m.event_pos WHERE m.prev_event_id IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            let waiting: Vec<(String, i64, i64)> = q.fetch_all(&mut *self.tx).await?;
            for (prev, pos, status) in waiting {
                pre.children.entry(prev).or_default().push((pos, status));
            }
        }
        for chunk in named.chunks(CHUNK) {
            let sql =
                format!("SELECT event_id FROM room_extremities WHERE event_id IN ({})", placeholders(1, chunk.len()));
            let mut q = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            let heads: Vec<String> = q.fetch_all(&mut *self.tx).await?;
            pre.extremities.extend(heads);
        }
        Ok(pre)
    }

    /// Stores `pdu` with its edges and decides its status:
    /// - the state before it is its parent's state, or the resolution of its parents' states;
    ///   with no parent stored it is `given_state`, and without that (and not a create event)
    ///   the event is an outlier;
    /// - rejected when its own auth events or the state before it do not allow it;
    ///   soft-failed when they do but the room's current state does not; accepted otherwise;
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
        mut pre: Option<&mut Prefetched>,
    ) -> Result<Persisted, PersistError> {
        let found = match pre.as_deref() {
            Some(p) => p.rows.get(&pdu.event_id).cloned(),
            None => self.graph_rows(std::slice::from_ref(&pdu.event_id)).await?.pop(),
        };
        if let Some(found) = found {
            return Ok(Persisted {
                stream_position: found.pos,
                status: found.status,
                state_group: found.group.map(|g| g.id),
                existed: true,
            });
        }
        let prevs = match pre.as_deref() {
            Some(p) => pdu.prev_events.iter().filter_map(|id| p.rows.get(id).cloned()).collect(),
            None => self.graph_rows(&pdu.prev_events).await?,
        };
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
                    if auth::check(version, pdu, &state).is_err() {
                        // A room joined in stages lacks others' member events until its state
                        // is complete: its own auth events allowed the event, so it is taken
                        // for now and checked again then (`fed::partial`).
                        if self.room_is_partial(&pdu.room_id).await? {
                            EventStatus::Accepted
                        } else {
                            EventStatus::Rejected
                        }
                    } else if position.is_some() || self.allowed_by_current_state(version, pdu).await? {
                        // History (backfill) is not checked against today's state: a message
                        // of someone who left since was allowed when it was sent.
                        EventStatus::Accepted
                    } else if self.room_is_partial(&pdu.room_id).await? {
                        EventStatus::Accepted
                    } else {
                        EventStatus::SoftFailed
                    }
                }
            },
        };

        let event_uuid = match pre.as_deref_mut() {
            Some(p) => event_uuid_of(json).filter(|u| p.uuids.insert((u.clone(), pdu.sender.clone()))),
            None => self.free_event_uuid(pdu, json).await?,
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
            // The peer's idempotency key, shown as for a local event; a peer that reuses one
            // for the same sender gets it dropped rather than the event refused.
            event_uuid: event_uuid.as_deref(),
            relates_to: federation::inbound::relates_to(pdu),
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
        // A history batch knows the position, the parents' and the waiting children's: the row
        // and its edges go in one round trip to SQLite's thread (three statements, one call).
        let (pos, edges_written, children) = match (pre.as_deref_mut(), position) {
            (Some(p), Some(at)) => {
                let children = p.children.remove(&pdu.event_id).unwrap_or_default();
                let edges: Vec<(i64, i64)> =
                    prevs.iter().map(|r| (at, r.pos)).chain(children.iter().map(|(c, _)| (*c, at))).collect();
                self.insert_history_row(&new, at, status, group.map(|g| g.id), &edges, &pdu.auth_events).await?;
                (at, true, Some(children))
            }
            _ => (self.insert_event_row(&new, position, status, group.map(|g| g.id)).await?, false, None),
        };
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
        let children: Vec<(i64, i64)> = match (children, pre.as_deref_mut()) {
            (Some(known), _) => known,
            (None, Some(p)) => p.children.remove(&pdu.event_id).unwrap_or_default(),
            (None, None) => {
                sqlx::query_as(
                    "SELECT m.event_pos, e.status FROM event_missing_prevs m
                     JOIN events e ON e.stream_position = m.event_pos WHERE m.prev_event_id = $1",
                )
                .bind(&pdu.event_id)
                .fetch_all(&mut *self.tx)
                .await?
            }
        };
        if let Some(p) = pre.as_deref_mut() {
            p.rows.insert(pdu.event_id.clone(), GraphRow { event_id: pdu.event_id.clone(), pos, status, group });
        }
        rows.edges.extend(children.iter().map(|(child, _)| (*child, pos)));
        if !edges_written {
            self.write_graph_rows(&rows).await?;
        }
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
            // A parent later in the batch (a depth that lies) finds this child too.
            if let Some(p) = pre.as_deref_mut() {
                p.children.entry((*prev).to_owned()).or_default().push((pos, status.code()));
            }
        }

        // History fetched backwards is older than everything the room has: it never becomes a
        // forward extremity (its children may be outliers, which record no successor) and it
        // changes neither the state of what follows it nor the current state — unless it shows
        // that an extremity was in fact its ancestor.
        if status == EventStatus::Accepted && position.is_some() {
            let mut dropped = 0;
            for prev in &pdu.prev_events {
                // Read for the whole batch when there is one: a parent that is no extremity
                // needs no statement.
                if let Some(p) = pre.as_deref_mut()
                    && !p.extremities.remove(prev)
                {
                    continue;
                }
                dropped += sqlx::query(DELETE_EXTREMITY_SQL)
                    .bind(&pdu.room_id)
                    .bind(prev)
                    .execute(&mut *self.tx)
                    .await?
                    .rows_affected();
            }
            if dropped > 0 {
                self.resolve_current_state(&pdu.room_id, version).await?;
            }
        } else if status == EventStatus::Accepted {
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

    /// Step 6 of the inbound checks: whether the room's current state (as `room_state` holds
    /// it) allows `pdu`. A room without a current state yet allows it (the state before it
    /// decided).
    async fn allowed_by_current_state(&mut self, version: RoomVersion, pdu: &Pdu) -> Result<bool, PersistError> {
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT event_type, state_key, event_id FROM room_state WHERE room_id = $1")
                .bind(&pdu.room_id)
                .fetch_all(&mut *self.tx)
                .await?;
        if rows.is_empty() {
            return Ok(true);
        }
        let wanted_keys = auth::auth_types_for(pdu);
        let current: StateMap<EventId> =
            rows.into_iter().map(|(t, k, id)| ((t, k), id)).filter(|(k, _)| wanted_keys.contains(k)).collect();
        let ids: BTreeSet<EventId> = current.values().cloned().collect();
        let events = self.stored_events(&ids, false).await?;
        let state: StateMap<&Pdu> =
            current.iter().filter_map(|(k, id)| events.get(id).map(|e| (k.clone(), e))).collect();
        Ok(auth::check(version, pdu, &state).is_ok())
    }

    /// The event's `event_uuid` from its wire form, when no stored event of the same sender
    /// has it already (the pair is unique).
    async fn free_event_uuid(&mut self, pdu: &Pdu, json: &str) -> Result<Option<String>, sqlx::Error> {
        let Some(uuid) = event_uuid_of(json) else { return Ok(None) };
        let taken: Option<i64> =
            sqlx::query_scalar("SELECT stream_position FROM events WHERE event_uuid = $1 AND sender = $2")
                .bind(&uuid)
                .bind(&pdu.sender)
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(taken.is_none().then_some(uuid))
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
        if !with_auth_chains {
            // Only the named events: those read before in this transaction come from memory.
            let missing: Vec<&EventId> = ids.iter().filter(|id| !self.event_cache.contains_key(*id)).collect();
            if !missing.is_empty() {
                let sql = format!(
                    "SELECT event_id, pdu FROM events WHERE event_id IN ({}) AND status <> 2 AND pdu IS NOT NULL",
                    placeholders(1, missing.len())
                );
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for id in missing {
                    q = q.bind(id);
                }
                let rows: Vec<(String, String)> = q.fetch_all(&mut *self.tx).await?;
                for (id, pdu) in rows {
                    if let Some(p) = serde_json::from_str::<Value>(&pdu).ok().and_then(|v| Pdu::parse(&id, &v).ok()) {
                        self.event_cache.insert(id, p);
                    }
                }
            }
            for id in ids {
                if let Some(p) = self.event_cache.get(id) {
                    out.insert(id.clone(), p.clone());
                }
            }
            return Ok(out);
        }
        let sql = format!(
            "WITH RECURSIVE chain(pos) AS (
                 SELECT stream_position FROM events WHERE event_id IN ({})
                 UNION SELECT a.auth_pos FROM event_auth_edges a JOIN chain c ON a.event_pos = c.pos)
             SELECT e.event_id, e.pdu FROM chain c JOIN events e ON e.stream_position = c.pos
             WHERE e.status <> 2 AND e.pdu IS NOT NULL",
            placeholders(1, ids.len())
        );
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
                None => self.insert_snapshot_group(room_id, &after).await?,
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

    /// Stores `state` as a new full-snapshot group of the room; answers its id.
    async fn insert_snapshot_group(&mut self, room_id: &str, state: &PositionState) -> Result<i64, sqlx::Error> {
        let id: i64 = sqlx::query_scalar(INSERT_GROUP_SQL)
            .bind(room_id)
            .bind(None::<i64>)
            .bind(0i64)
            .fetch_one(&mut *self.tx)
            .await?;
        let entries: Vec<_> = state.iter().map(|(k, (p, _))| (k.clone(), Some(*p))).collect();
        self.insert_group_entries(id, &entries).await?;
        Ok(id)
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
                let id = self.insert_snapshot_group(room_id, &state).await?;
                (state, id)
            }
        };
        self.set_current_state(room_id, &state, group).await?;
        Ok(())
    }

    /// The entries of current state changed since the last call, `(room_id, event_id)`: a
    /// resolution may change keys other than the new event's own (a concurrent branch's ban
    /// undone, a name set back), and each needs its projection.
    pub fn take_state_changes(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.state_changes)
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
                self.state_changes.push((room_id.to_string(), id.clone()));
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
