//! Backfill: history of a federated room from before this server joined it, fetched from a
//! resident server (`GET rooms/{room_id}/backfill`), each event verified like any other
//! (well-formed, its origin's signature with the key valid at its `origin_ts`, its content hash,
//! then the room's rules as of its auth events and the state before it) and stored *below*
//! everything the room has (`WriteTx::persist_backfilled`: negative positions, graph order), so
//! pages show it where it belongs and sync never announces it as new.
//!
//! A walk starts at the room's oldest accepted events and goes back in rounds of at most
//! [`MAX_BACKFILL`] events until the limit, the room's create event, or a round that brings
//! nothing new. The oldest events of what was fetched have parents this server does not place
//! (not stored, or stored only as outliers: the state a join brought); for each of them the
//! state before it is asked from the same server (`state/` at its parent), bounded, so that it
//! and what follows it are placed in the room rather than kept as outliers.
//!
//! No transaction is open across a request to a peer: the fetches come first, then one write
//! transaction stores the batch.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use federation::auth::RoomVersion;
use federation::event::{EventId, StateMap};
use federation::gaps;
use federation::host::{Host, Network};
use federation::verify::{Verified, verify_pdu};
use federation::wire::{self, MAX_BACKFILL};
use serde_json::Value;

use super::host::StoreHost;
use super::inbound::apply_accepted;
use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::storage::{EventStatus, Incoming, Participant};

/// Events fetched by one admin backfill when the request names no limit.
pub const DEFAULT_LIMIT: usize = 1000;
/// The most one admin backfill fetches.
pub const MAX_LIMIT: usize = 10_000;
/// Events a page fetches on demand when it reaches the oldest stored event.
pub const ON_DEMAND: usize = 200;
/// How long a page waits for history from peers before it answers what it has.
pub const ON_DEMAND_WAIT: Duration = Duration::from_secs(10);
/// Starting points per request (the serving side takes at most 20).
const MAX_FROM: usize = 20;
/// Events of a fetched batch whose state is asked for (the rest stay outliers).
const MAX_STATE_FETCHES: usize = 20;
/// Events of a fetched batch whose missing auth chain is asked for.
const MAX_AUTH_FETCHES: usize = 10;

/// What a backfill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backfilled {
    /// Events fetched and stored (new to this server).
    pub fetched: usize,
    /// This server now holds the room's history from its creation on.
    pub complete: bool,
}

/// `POST /v1/admin/rooms/{room_id}/federation/backfill {server?, limit?}`: the room's
/// creator, a member at power 100 or a server admin.
pub async fn admin_backfill(
    st: &AppState,
    caller: &Participant,
    room_id: &str,
    server: Option<&str>,
    limit: Option<usize>,
) -> ApiResult<Backfilled> {
    super::require_room_admin(st, caller, room_id, "backfilling the room").await?;
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    if let Some(s) = server
        && (!federation::policy::is_server_name(s) || s == st.fed.server_name)
    {
        return Err(ApiError::bad_request("server must be the name of another server"));
    }
    backfill(st, room_id, server, limit).await
}

/// Whether a page that reached the room's oldest stored event stands at a gap: older history
/// exists on other servers (the room is federated and was neither created here nor backfilled
/// to its creation).
pub async fn history_gap(st: &AppState, room_id: &str) -> ApiResult<bool> {
    if st.store.room_federated(room_id).await? != Some(true) {
        return Ok(false);
    }
    Ok(!st.store.history_complete(room_id, &st.fed.server_name).await?)
}

/// One round of history for a page that reached the oldest stored event, within
/// [`ON_DEMAND_WAIT`]; peers that cannot answer leave the page as it is (logged, not an error).
pub async fn on_demand(st: &AppState, room_id: &str) -> usize {
    match tokio::time::timeout(ON_DEMAND_WAIT, backfill(st, room_id, None, ON_DEMAND)).await {
        Ok(Ok(b)) => b.fetched,
        Ok(Err(e)) => {
            tracing::info!(room_id, error = %e, "history not fetched for a page");
            0
        }
        Err(_) => {
            tracing::info!(room_id, "history not fetched for a page in time");
            0
        }
    }
}

/// Fetches up to `limit` events of the room's history from `server`, or from each server of
/// the room in turn until one answers.
pub async fn backfill(st: &AppState, room_id: &str, server: Option<&str>, limit: usize) -> ApiResult<Backfilled> {
    let federated = st.store.room_federated(room_id).await?.ok_or(ApiError::RoomNotFound)?;
    if !federated {
        return Err(ApiError::FedDisabled("federation is off for this room".into()));
    }
    let version = st.store.room_version(room_id).await?.ok_or(ApiError::RoomNotFound)?;
    let servers: Vec<String> = match server {
        Some(s) => vec![s.to_string()],
        None => {
            // A room joined in stages knows few members yet: its join's answer named the rest.
            let mut all = st.store.partial_servers(room_id).await?;
            for s in st.store.room_servers(room_id).await? {
                if !all.contains(&s) {
                    all.push(s);
                }
            }
            all.into_iter().filter(|s| *s != st.fed.server_name).collect()
        }
    };
    if servers.is_empty() {
        return Err(ApiError::FedUnavailable("no other server is in the room to ask for its history".into()));
    }
    let mut last = None;
    for server in &servers {
        match walk(st, room_id, version, server, limit).await {
            Ok(done) => {
                tracing::info!(room_id, %server, fetched = done.fetched, complete = done.complete, "backfilled");
                return Ok(done);
            }
            Err(e) => {
                tracing::info!(room_id, %server, error = %e, "backfill from this server failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| ApiError::FedUnavailable("no server answered".into())))
}

async fn walk(st: &AppState, room_id: &str, version: RoomVersion, server: &str, limit: usize) -> ApiResult<Backfilled> {
    let active = st.fed.active()?;
    let network = Network { client: &active.client, keys: &active.keys };
    let host = StoreHost { store: &st.store };
    // Every event a peer answered (verified, of the room), and those of them new here.
    let mut seen: HashSet<EventId> = HashSet::new();
    let mut prevs_of: HashMap<EventId, Vec<EventId>> = HashMap::new();
    let mut fresh: HashMap<EventId, Verified> = HashMap::new();
    let mut placed: HashSet<EventId> = HashSet::new();
    let mut reached_create = false;
    let mut frontier = st.store.oldest_accepted_events(room_id, MAX_FROM as i64).await?;
    placed.extend(frontier.iter().cloned());
    let mut refused = 0usize;
    let mut verify_time = Duration::ZERO;
    while !frontier.is_empty() && fresh.len() < limit {
        let want = (limit - fresh.len() + frontier.len()).min(MAX_BACKFILL);
        let path = wire::path::backfill(room_id, &frontier, want);
        let answer = active.client.request(server, "GET", &path, None).await.map_err(super::join::peer_error)?;
        let mut pdus = answer.get("pdus").and_then(Value::as_array).cloned().unwrap_or_default();
        pdus.truncate(MAX_BACKFILL);
        let started = std::time::Instant::now();
        let verified = verify_in_parallel(st, pdus, version).await;
        verify_time += started.elapsed();
        let mut round = Vec::new();
        for result in verified {
            match result {
                Ok(v) if v.pdu.room_id == room_id => {
                    if seen.insert(v.pdu.event_id.clone()) {
                        round.push(v);
                    }
                }
                _ => refused += 1,
            }
        }
        if round.is_empty() {
            break;
        }
        let ids: Vec<String> = round.iter().map(|v| v.pdu.event_id.clone()).collect();
        let stored = st.store.event_statuses(&ids).await?;
        for v in round {
            let id = v.pdu.event_id.clone();
            if v.pdu.event_type == federation::event::types::CREATE && v.pdu.prev_events.is_empty() {
                reached_create = true;
            }
            prevs_of.insert(id.clone(), v.pdu.prev_events.clone());
            match stored.get(&id) {
                Some(EventStatus::Accepted | EventStatus::SoftFailed) => {
                    placed.insert(id);
                }
                Some(_) => {}
                None => {
                    fresh.insert(id, v);
                }
            }
        }
        // Walk on from the parents nobody answered yet and that are not placed here.
        let open: Vec<String> = prevs_of
            .values()
            .flatten()
            .filter(|p| !seen.contains(*p) && !placed.contains(*p))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let open_status = st.store.event_statuses(&open).await?;
        frontier = open
            .into_iter()
            .filter(|p| !matches!(open_status.get(p), Some(EventStatus::Accepted | EventStatus::SoftFailed)))
            .take(MAX_FROM)
            .collect();
    }
    if refused > 0 {
        tracing::warn!(room_id, %server, refused, "backfill answer held events that do not verify or are of another room");
    }
    let complete = reached_create && frontier.is_empty();
    if fresh.is_empty() {
        if complete {
            st.store.set_history_complete(room_id, federation::now_ms() as i64).await?;
        }
        return Ok(Backfilled { fetched: 0, complete });
    }

    // Auth events nobody has yet (the rules read them): the auth chain, from the same server.
    let mut auth_missing: Vec<&Verified> = Vec::new();
    {
        let wanted: Vec<String> = fresh
            .values()
            .flat_map(|v| v.pdu.auth_events.iter())
            .filter(|a| !fresh.contains_key(*a))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let stored = host.stored_event_ids(&wanted).await.map_err(|e| ApiError::internal(e.0))?;
        for v in fresh.values() {
            if v.pdu.auth_events.iter().any(|a| !fresh.contains_key(a) && !stored.contains(a)) {
                auth_missing.push(v);
            }
        }
    }
    auth_missing.sort_by_key(|v| v.pdu.depth);
    for v in auth_missing.into_iter().take(MAX_AUTH_FETCHES) {
        let found = host.stored_event_ids(&v.pdu.auth_events).await.map_err(|e| ApiError::internal(e.0))?;
        if v.pdu.auth_events.iter().all(|a| fresh.contains_key(a) || found.contains(a)) {
            continue;
        }
        if let Err(e) = gaps::fetch_auth_chain(&host, &network, server, room_id, &v.pdu.event_id, version).await {
            tracing::info!(room_id, %server, event_id = %v.pdu.event_id, error = ?e, "auth chain not fetched");
        }
    }

    // The oldest fetched events stand on parents not placed here: the state before each, from
    // the same server, so that they and their descendants are placed in the room.
    let parent_ids: Vec<String> = fresh
        .values()
        .flat_map(|v| v.pdu.prev_events.iter())
        .filter(|p| !fresh.contains_key(*p))
        .cloned()
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let parent_status = st.store.event_statuses(&parent_ids).await?;
    let is_placed = |p: &str| {
        fresh.contains_key(p) || matches!(parent_status.get(p), Some(EventStatus::Accepted | EventStatus::SoftFailed))
    };
    let mut orphans: Vec<&Verified> =
        fresh.values().filter(|v| !v.pdu.prev_events.iter().any(|p| is_placed(p))).collect();
    orphans.sort_by_key(|v| (v.pdu.depth, v.pdu.event_id.clone()));
    let mut states: HashMap<EventId, StateMap<EventId>> = HashMap::new();
    for v in orphans.into_iter().take(MAX_STATE_FETCHES) {
        let Some(parent) = v.pdu.prev_events.first() else { continue };
        match state_at(st, &active.keys, server, room_id, parent, version, &fresh).await {
            Ok(state) => {
                states.insert(v.pdu.event_id.clone(), state);
            }
            Err(e) => {
                tracing::info!(room_id, %server, parent = %parent, error = %e, "state before history not fetched")
            }
        }
    }

    // One write transaction, oldest first.
    let mut batch: Vec<&Verified> = fresh.values().collect();
    batch.sort_by_key(|v| (v.pdu.depth, v.pdu.event_id.clone()));
    let mut jsons = Vec::with_capacity(batch.len());
    for v in &batch {
        jsons.push(crypto::to_canonical_string(&v.json).map_err(ApiError::internal)?);
    }
    let incoming: Vec<Incoming<'_>> = batch
        .iter()
        .zip(&jsons)
        .map(|(v, json)| Incoming { pdu: &v.pdu, json, state_before: states.get(&v.pdu.event_id) })
        .collect();
    let started = std::time::Instant::now();
    let mut tx = st.store.write().await?;
    let stored = tx.persist_backfilled(&incoming).await.map_err(|e| ApiError::internal(e.to_string()))?;
    let mut fetched = 0;
    for (v, p) in batch.iter().zip(&stored) {
        if !p.existed {
            fetched += 1;
            if p.status == EventStatus::Accepted {
                apply_accepted(&mut tx, &v.pdu).await?;
            }
        }
    }
    tx.commit().await?;
    tracing::info!(
        room_id,
        fetched,
        verify_ms = verify_time.as_millis() as u64,
        store_ms = started.elapsed().as_millis() as u64,
        "backfill stored"
    );
    if complete {
        st.store.set_history_complete(room_id, federation::now_ms() as i64).await?;
    }
    Ok(Backfilled { fetched, complete })
}

/// The state after `parent` (the state before its child) from `server`: its events verified,
/// those not stored and not about to be stored with the batch kept as outliers.
async fn state_at(
    st: &AppState,
    keys: &federation::keys::KeyRing,
    server: &str,
    room_id: &str,
    parent: &str,
    version: RoomVersion,
    batch: &HashMap<EventId, Verified>,
) -> ApiResult<StateMap<EventId>> {
    let active = st.fed.active()?;
    let answer = active
        .client
        .request(server, "GET", &wire::path::state(room_id, parent), None)
        .await
        .map_err(super::join::peer_error)?;
    let list = |k: &str| answer.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let (pdus, chain) = (list("pdus"), list("auth_chain"));
    if pdus.len() > wire::MAX_STATE_EVENTS || chain.len() > wire::MAX_STATE_EVENTS {
        return Err(ApiError::FedUnavailable("the state answered is over the limits".into()));
    }
    let mut state = StateMap::new();
    let mut keep = Vec::new();
    for (i, value) in chain.iter().chain(&pdus).enumerate() {
        let Ok(v) = verify_pdu(keys, value, version, None).await else { continue };
        if v.pdu.room_id != room_id {
            continue;
        }
        if i >= chain.len()
            && let Some(key) = v.pdu.state_entry()
        {
            state.insert(key, v.pdu.event_id.clone());
        }
        if !batch.contains_key(&v.pdu.event_id) {
            keep.push(v);
        }
    }
    let ids: Vec<String> = keep.iter().map(|v| v.pdu.event_id.clone()).collect();
    let stored = st.store.stored_event_ids(&ids).await?;
    keep.retain(|v| !stored.contains(&v.pdu.event_id));
    keep.sort_by(|a, b| (a.pdu.depth, &a.pdu.event_id).cmp(&(b.pdu.depth, &b.pdu.event_id)));
    let mut once = HashSet::new();
    keep.retain(|v| once.insert(v.pdu.event_id.clone()));
    if !keep.is_empty() {
        StoreHost { store: &st.store }.store_outliers(keep).await.map_err(|e| ApiError::internal(e.0))?;
    }
    Ok(state)
}

/// Steps 1–3 of the inbound checks over a peer's answer, on every core: signature checks are
/// most of a backfill's CPU. Answers in the order given.
async fn verify_in_parallel(
    st: &AppState,
    pdus: Vec<Value>,
    version: RoomVersion,
) -> Vec<Result<Verified, federation::verify::Refusal>> {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8);
    if pdus.len() < 64 || workers == 1 {
        let Ok(active) = st.fed.active() else { return Vec::new() };
        let mut out = Vec::with_capacity(pdus.len());
        for value in &pdus {
            out.push(verify_pdu(&active.keys, value, version, None).await);
        }
        return out;
    }
    let per = pdus.len().div_ceil(workers);
    let mut tasks = Vec::new();
    let mut pdus = pdus;
    while !pdus.is_empty() {
        let rest = pdus.split_off(per.min(pdus.len()));
        let chunk = std::mem::replace(&mut pdus, rest);
        let st = st.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(active) = st.fed.active() else { return Vec::new() };
            let mut out = Vec::with_capacity(chunk.len());
            for value in &chunk {
                out.push(verify_pdu(&active.keys, value, version, None).await);
            }
            out
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.unwrap_or_default());
    }
    out
}
