//! Filling the gaps of an event from a peer (`FEDERATION.md`, "Receiving, gaps and history"):
//! its missing auth events (`event_auth`, kept as outliers), its missing parents
//! (`get_missing_events`, at most [`MISSING_ROUNDS`] rounds), failing that the state at a
//! missing parent (`state/`), and the memory of events whose gaps could not be filled.
//!
//! Generic over the host's storage ([`Host`]) and the network ([`Remote`]); no storage
//! transaction is open across a request to a peer, as each [`Host`] call is its own.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::auth::RoomVersion;
use crate::client::FedError;
use crate::event::{EventId, Pdu, StateMap};
use crate::host::{Host, HostError, Remote};
use crate::inbound::{MAX_FETCHED_AUTH_EVENTS, MISSING_ROUNDS, fetch_backoff_ms, order_batch};
use crate::verify::Verified;
use crate::wire::{self, Verdict};

/// What the receiving side remembers between transactions: events whose gaps could not be
/// filled, so that a bad event does not make every later request slow.
#[derive(Default)]
pub struct FetchBackoff {
    /// event id → (failures, not before this unix ms).
    failed_fetches: Mutex<HashMap<EventId, (u32, u64)>>,
}

/// The most events one gap pulls before it is left to history (see [`pull_long_gap`]).
pub const MAX_PULLED_EVENTS: usize = 20_000;

/// At most this many events remembered as failed; the oldest entries go first past it.
const MAX_REMEMBERED_FAILURES: usize = 10_000;

impl FetchBackoff {
    pub fn backing_off(&self, event_id: &str, now_ms: u64) -> bool {
        let map = self.failed_fetches.lock().unwrap_or_else(|e| e.into_inner());
        map.get(event_id).is_some_and(|(_, until)| *until > now_ms)
    }

    pub fn failed(&self, event_id: &str, now_ms: u64) {
        let mut map = self.failed_fetches.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_REMEMBERED_FAILURES {
            map.retain(|_, (_, until)| *until > now_ms);
        }
        if map.len() < MAX_REMEMBERED_FAILURES {
            let entry = map.entry(event_id.to_string()).or_insert((0, 0));
            entry.0 += 1;
            entry.1 = now_ms + fetch_backoff_ms(entry.0);
        }
    }

    pub fn succeeded(&self, event_id: &str) {
        self.failed_fetches.lock().unwrap_or_else(|e| e.into_inner()).remove(event_id);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GapError {
    #[error(transparent)]
    Fed(#[from] FedError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("{0}")]
    Other(String),
}

impl From<Verdict> for GapError {
    fn from(v: Verdict) -> GapError {
        GapError::Other(format!("{:?}", v))
    }
}

fn unavailable(e: impl std::fmt::Display) -> Verdict {
    Verdict::retry("SW_FED_UNAVAILABLE", e.to_string())
}

/// An event of `origin`'s transaction that passed steps 1–3, to its verdict: the decision
/// made before when it is stored, else its gaps filled (unless its fetches are backing off),
/// then stored by the host (steps 4–6).
pub async fn receive<H: Host, R: Remote>(
    host: &H,
    remote: &R,
    memory: &FetchBackoff,
    origin: &str,
    event: &Verified,
    version: RoomVersion,
) -> Verdict {
    match receive_inner(host, remote, memory, origin, event, version).await {
        Ok(v) | Err(v) => v,
    }
}

async fn receive_inner<H: Host, R: Remote>(
    host: &H,
    remote: &R,
    memory: &FetchBackoff,
    origin: &str,
    event: &Verified,
    version: RoomVersion,
) -> Result<Verdict, Verdict> {
    let id = &event.pdu.event_id;
    // Stored before (sent again, or fetched as a parent): the decision made then.
    if let Some(status) = host.event_status(id).await.map_err(unavailable)? {
        return Ok(status.verdict());
    }
    let now = crate::now_ms();
    let state;
    if needs_fetching(host, &event.pdu).await.map_err(unavailable)? {
        if memory.backing_off(id, now) {
            return Ok(Verdict::retry("SW_FED_UNAVAILABLE", "its missing events could not be fetched; later"));
        }
        match fill_gap(host, remote, origin, event, version).await {
            Ok(given) => {
                memory.succeeded(id);
                state = given;
            }
            Err(e) => {
                tracing::info!(event_id = %id, %origin, error = %e, "a gap could not be filled");
                memory.failed(id, now);
                return Ok(Verdict::retry("SW_FED_UNAVAILABLE", format!("missing events not fetchable now: {e}")));
            }
        }
    } else {
        // Every parent stored, but perhaps only as outliers: then the state comes from the origin.
        match state_for_outlier_parents(host, remote, origin, &event.pdu, version).await {
            Ok(given) => state = given,
            Err(e) => {
                tracing::info!(event_id = %id, %origin, error = %e, "the state at its parents could not be fetched");
                return Ok(Verdict::retry(
                    "SW_FED_UNAVAILABLE",
                    format!("the state at its parents not fetchable now: {e}"),
                ));
            }
        }
    }
    let status = host.store_event(event, state.as_ref()).await?;
    Ok(status.verdict())
}

/// Whether some auth event or parent of `pdu` is not stored.
pub async fn needs_fetching<H: Host>(host: &H, pdu: &Pdu) -> Result<bool, HostError> {
    let wanted: Vec<String> = pdu.auth_events.iter().chain(&pdu.prev_events).cloned().collect();
    let found = host.stored_event_ids(&wanted).await?;
    Ok(wanted.iter().any(|id| !found.contains(id)))
}

/// Fetches what `event` lacks: its auth chain (`event_auth`, stored as outliers), then its
/// missing parents (`get_missing_events`, at most [`MISSING_ROUNDS`] rounds of
/// [`wire::MAX_MISSING_EVENTS`]), stored oldest first. If the parents still miss, the state at
/// one of them (`state/`, its events stored as outliers) is answered, for the host to store
/// the event with ([`Host::store_event`]).
pub async fn fill_gap<H: Host, R: Remote>(
    host: &H,
    remote: &R,
    origin: &str,
    event: &Verified,
    version: RoomVersion,
) -> Result<Option<StateMap<EventId>>, GapError> {
    let pdu = &event.pdu;
    let room_id = pdu.room_id.as_str();
    let auth_missing = {
        let found = host.stored_event_ids(&pdu.auth_events).await?;
        pdu.auth_events.iter().any(|a| !found.contains(a))
    };
    if auth_missing {
        fetch_auth_chain(host, remote, origin, room_id, &pdu.event_id, version).await?;
    }
    let stored_prevs = host.stored_event_ids(&pdu.prev_events).await?;
    if pdu.prev_events.iter().all(|p| stored_prevs.contains(p)) {
        return Ok(None);
    }
    let mut fetched: HashMap<EventId, Verified> = HashMap::new();
    let mut latest = vec![pdu.event_id.clone()];
    let mut open: Vec<EventId> = Vec::new();
    for _ in 0..MISSING_ROUNDS {
        let earliest = host.forward_extremities(room_id).await?;
        let body = json!({
            "earliest_events": earliest, "latest_events": latest,
            "limit": wire::MAX_MISSING_EVENTS, "min_depth": 0,
        });
        let answer = remote.request(origin, "POST", &wire::path::get_missing_events(room_id), Some(&body)).await?;
        let events = answer.get("events").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut new = 0;
        for value in events.iter().take(wire::MAX_MISSING_EVENTS) {
            let Ok(v) = remote.verify(value, version).await else { continue };
            if v.pdu.room_id == room_id && !fetched.contains_key(&v.pdu.event_id) {
                fetched.insert(v.pdu.event_id.clone(), v);
                new += 1;
            }
        }
        let mentioned: Vec<EventId> =
            pdu.prev_events.iter().chain(fetched.values().flat_map(|v| v.pdu.prev_events.iter())).cloned().collect();
        let stored = host.stored_event_ids(&mentioned).await?;
        open = mentioned.into_iter().filter(|id| !stored.contains(id) && !fetched.contains_key(id)).collect();
        if open.is_empty() || new == 0 {
            break;
        }
        latest = fetched
            .values()
            .filter(|v| v.pdu.prev_events.iter().any(|p| open.contains(p)))
            .map(|v| v.pdu.event_id.clone())
            .collect();
    }
    if !open.is_empty() {
        pull_long_gap(host, remote, origin, room_id, version, &mut fetched, &mut open).await?;
    }
    if open.is_empty() {
        // A walk back may answer events stored here already (as outliers): storing them is a
        // no-op, and they must not count as the parents the others hang off.
        let ids: Vec<EventId> = fetched.keys().cloned().collect();
        let already = host.stored_event_ids(&ids).await?;
        let list: Vec<Verified> = fetched.into_values().filter(|v| !already.contains(&v.pdu.event_id)).collect();
        let pdus: Vec<Pdu> = list.iter().map(|v| v.pdu.clone()).collect();
        let in_list: HashSet<&str> = pdus.iter().map(|p| p.event_id.as_str()).collect();
        // What the list names outside itself, read once: its auth events (each event missing
        // some gets its auth chain) and the parents it hangs off (an event whose parents are
        // all outside the list and unplaced here gets the state at them).
        let mut outside: Vec<EventId> = pdus
            .iter()
            .flat_map(|p| p.auth_events.iter().chain(&p.prev_events))
            .filter(|id| !in_list.contains(id.as_str()))
            .cloned()
            .collect();
        outside.sort();
        outside.dedup();
        let stored = host.stored_event_ids(&outside).await?;
        let placed = host.placed_event_ids(&outside).await?;
        let mut to_store: Vec<(&Verified, Option<StateMap<EventId>>)> = Vec::with_capacity(list.len());
        for (_, order) in order_batch(&pdus) {
            for i in order {
                let p = &pdus[i];
                if p.auth_events.iter().any(|a| !in_list.contains(a.as_str()) && !stored.contains(a)) {
                    ensure_auth(host, remote, origin, &list[i], version).await?;
                }
                let hangs_off_unplaced =
                    p.prev_events.iter().all(|prev| !in_list.contains(prev.as_str()) && !placed.contains(prev));
                let state = if hangs_off_unplaced {
                    state_for_outlier_parents(host, remote, origin, p, version).await?
                } else {
                    None
                };
                to_store.push((&list[i], state));
            }
        }
        host.store_events(&to_store).await?;
        // The event itself may hang off outliers only (a fetched parent that stayed one).
        return state_for_outlier_parents(host, remote, origin, pdu, version).await;
    }
    // The gap stays open: take the state at the first missing parent from the origin.
    let Some(prev) = pdu.prev_events.iter().find(|p| !stored_prevs.contains(*p)) else { return Ok(None) };
    state_at(host, remote, origin, room_id, prev, version).await.map(Some)
}

/// A gap longer than the missing-events rounds close (a peer catching up after an outage sends
/// only the newest event of each room): the rest is pulled with `backfill`, up to
/// [`wire::MAX_BACKFILL`] events a request, walking back from the ids still `open` until every
/// parent is known, at most [`MAX_PULLED_EVENTS`] in all. Past that the gap stays open and the
/// caller takes the state at the missing parent (the rest is history, for backfill).
async fn pull_long_gap<H: Host, R: Remote>(
    host: &H,
    remote: &R,
    origin: &str,
    room_id: &str,
    version: RoomVersion,
    fetched: &mut HashMap<EventId, Verified>,
    open: &mut Vec<EventId>,
) -> Result<(), GapError> {
    while !open.is_empty() && fetched.len() < MAX_PULLED_EVENTS {
        open.sort();
        open.truncate(wire::MAX_MISSING_EVENTS);
        let path = wire::path::backfill(room_id, open, wire::MAX_BACKFILL);
        // A peer that cannot answer it leaves the gap to the state fallback, as a short one.
        let answer = match remote.request(origin, "GET", &path, None).await {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(%origin, room_id, error = %e, "a long gap could not be pulled; the state at it is asked for");
                break;
            }
        };
        let pdus = answer.get("pdus").and_then(Value::as_array).cloned().unwrap_or_default();
        let ids: Vec<EventId> = pdus
            .iter()
            .take(wire::MAX_BACKFILL)
            .filter_map(|v| crate::verify::well_formed(v, version, None).ok().map(|p| p.event_id))
            .collect();
        let stored = host.stored_event_ids(&ids).await?;
        let mut new = 0;
        for value in pdus.iter().take(wire::MAX_BACKFILL) {
            let Ok(v) = remote.verify(value, version).await else { continue };
            if v.pdu.room_id == room_id && !stored.contains(&v.pdu.event_id) && !fetched.contains_key(&v.pdu.event_id) {
                fetched.insert(v.pdu.event_id.clone(), v);
                new += 1;
            }
        }
        if new == 0 {
            break;
        }
        let mut mentioned: Vec<EventId> = fetched
            .values()
            .flat_map(|v| v.pdu.prev_events.iter())
            .filter(|id| !fetched.contains_key(*id))
            .cloned()
            .collect();
        mentioned.sort();
        mentioned.dedup();
        let stored = host.stored_event_ids(&mentioned).await?;
        *open = mentioned.into_iter().filter(|id| !stored.contains(id) && !fetched.contains_key(id)).collect();
        open.sort();
        open.dedup();
    }
    Ok(())
}

/// The state after `event_id` as `origin` answers it (`state/`), its events (and their auth
/// chain) stored as outliers when new.
async fn state_at<H: Host, R: Remote>(
    host: &H,
    remote: &R,
    origin: &str,
    room_id: &str,
    event_id: &str,
    version: RoomVersion,
) -> Result<StateMap<EventId>, GapError> {
    let answer = remote.request(origin, "GET", &wire::path::state(room_id, event_id), None).await?;
    let list = |k: &str| answer.get(k).and_then(Value::as_array).cloned().unwrap_or_default();
    let (state_pdus, chain) = (list("pdus"), list("auth_chain"));
    if state_pdus.len() > wire::MAX_STATE_EVENTS || chain.len() > wire::MAX_STATE_EVENTS {
        return Err(GapError::Other("the state answered is over the limits".into()));
    }
    let mut state = StateMap::new();
    let mut to_store = Vec::new();
    for (i, value) in chain.iter().chain(&state_pdus).enumerate() {
        let Ok(v) = remote.verify(value, version).await else { continue };
        if v.pdu.room_id != room_id {
            continue;
        }
        if i >= chain.len() {
            if let Some(key) = v.pdu.state_entry() {
                state.insert(key, v.pdu.event_id.clone());
            }
        }
        to_store.push(v);
    }
    store_outliers(host, to_store).await?;
    Ok(state)
}

/// The state to place `pdu` on when no parent it has is placed here (each is stored only as an
/// outlier, known from a join's state or an auth chain, or kept without a state, as an
/// invitation that arrived before the join): the state after its
/// first parent, from `origin`. Without it the event would be an outlier too — an event made
/// concurrently with this server's join, on a parent from before the join, would never show.
pub async fn state_for_outlier_parents<H: Host, R: Remote>(
    host: &H,
    remote: &R,
    origin: &str,
    pdu: &Pdu,
    version: RoomVersion,
) -> Result<Option<StateMap<EventId>>, GapError> {
    let Some(first) = pdu.prev_events.first() else { return Ok(None) };
    if !host.placed_event_ids(&pdu.prev_events).await?.is_empty() {
        return Ok(None);
    }
    state_at(host, remote, origin, &pdu.room_id, first, version).await.map(Some)
}

/// Fetches and stores an event's auth chain from `origin` when some of its auth events are
/// not stored.
async fn ensure_auth<H: Host, R: Remote>(
    host: &H,
    remote: &R,
    origin: &str,
    event: &Verified,
    version: RoomVersion,
) -> Result<(), GapError> {
    let found = host.stored_event_ids(&event.pdu.auth_events).await?;
    if event.pdu.auth_events.iter().all(|a| found.contains(a)) {
        return Ok(());
    }
    fetch_auth_chain(host, remote, origin, &event.pdu.room_id, &event.pdu.event_id, version).await
}

/// `event_auth/{room_id}/{event_id}` from `origin`: every event verified, those of the room
/// not stored kept as outliers (or placed, when their parents are known), shallowest first.
pub async fn fetch_auth_chain<H: Host, R: Remote>(
    host: &H,
    remote: &R,
    origin: &str,
    room_id: &str,
    event_id: &str,
    version: RoomVersion,
) -> Result<(), GapError> {
    let answer = remote.request(origin, "GET", &wire::path::event_auth(room_id, event_id), None).await?;
    let chain = answer.get("auth_chain").and_then(Value::as_array).cloned().unwrap_or_default();
    if chain.len() > MAX_FETCHED_AUTH_EVENTS.max(wire::MAX_STATE_EVENTS) {
        return Err(GapError::Other("the auth chain answered is over the limits".into()));
    }
    let mut out = Vec::new();
    for value in &chain {
        if let Ok(v) = remote.verify(value, version).await {
            if v.pdu.room_id == room_id {
                out.push(v);
            }
        }
    }
    store_outliers(host, out).await
}

/// Hands the host the events fetched for their state or auth role that it does not store
/// yet, once each, auth events before what they authorise (by depth).
async fn store_outliers<H: Host>(host: &H, mut events: Vec<Verified>) -> Result<(), GapError> {
    let ids: Vec<String> = events.iter().map(|v| v.pdu.event_id.clone()).collect();
    let stored = host.stored_event_ids(&ids).await?;
    events.retain(|v| !stored.contains(&v.pdu.event_id));
    events.sort_by(|a, b| (a.pdu.depth, &a.pdu.event_id).cmp(&(b.pdu.depth, &b.pdu.event_id)));
    let mut seen = HashSet::new();
    events.retain(|v| seen.insert(v.pdu.event_id.clone()));
    if events.is_empty() {
        return Ok(());
    }
    Ok(host.store_outliers(events).await?)
}

#[cfg(test)]
#[path = "gaps_tests.rs"]
mod tests;
