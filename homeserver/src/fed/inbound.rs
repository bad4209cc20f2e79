//! The inbound pipeline (`FEDERATION.md`, "Checks on every inbound event", "Receiving"): a
//! transaction's events are grouped by room, rooms run in parallel (at most
//! [`PARALLEL_ROOMS`]), a room's events in topological order. Each event is checked
//! (`federation::verify`, steps 1–3), its missing auth events and parents are fetched from the
//! origin (bounded, with a back-off per event: `federation::gaps`, over this server's
//! [`StoreHost`]), then [`WriteTx::persist`] decides its status
//! (steps 4–6) and, when accepted, the same projections as for a local event are applied
//! (rooms and memberships through the projector, edits, reactions, redactions) before the
//! commit, so that pages, sync and the stream show it like a local one.
//!
//! No lock and no write transaction is held across a request to a peer: fetches come first,
//! each write is one short transaction.

use std::collections::HashMap;
use std::time::Instant;

use federation::auth::RoomVersion;
use federation::event::{EventId, Pdu, StateMap, types};
use federation::gaps;
use federation::host::Network;
use federation::inbound::{PARALLEL_ROOMS, order_batch};
use federation::verify::{Verified, verify_pdu, well_formed};
use federation::wire::{self, Verdict};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::host::{StoreHost, status_of};
use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::messages::{EDIT, REACTION, REDACTION};
use crate::storage::{EventStatus, PersistError, Persisted, Store, WriteTx};

/// What the receiving side remembers between transactions (failed fetches).
pub type InboundState = federation::gaps::FetchBackoff;

/// `PUT send/{txn_id}`: checks the transaction, answers a repeated one with its first answer,
/// applies the pdus and the edus; answers `{pdus: {event_id: verdict}}`.
pub async fn receive_transaction(st: &AppState, origin: &str, txn_id: &str, body: &Value) -> ApiResult<Value> {
    if txn_id.is_empty() || txn_id.len() > wire::MAX_TXN_ID_LEN {
        return Err(ApiError::bad_request(format!("a transaction id is 1 to {} characters", wire::MAX_TXN_ID_LEN)));
    }
    if let Some(answer) = st.store.received_txn(origin, txn_id).await? {
        return Ok(answer);
    }
    let claimed = body.get("origin").and_then(Value::as_str);
    if claimed != Some(origin) {
        return Err(ApiError::bad_request("the transaction's origin is not the request's"));
    }
    let list = |key: &str| -> ApiResult<&[Value]> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a.as_slice()),
            Some(_) => Err(ApiError::bad_request(format!("{key} is not a list"))),
        }
    };
    let (pdus, edus) = (list("pdus")?, list("edus")?);
    if pdus.len() > wire::MAX_PDUS_PER_TXN || edus.len() > wire::MAX_EDUS_PER_TXN {
        return Err(ApiError::bad_request(format!(
            "at most {} pdus and {} edus per transaction",
            wire::MAX_PDUS_PER_TXN,
            wire::MAX_EDUS_PER_TXN
        )));
    }
    let verdicts = receive_pdus(st, origin, pdus).await;
    receive_edus(st, origin, edus).await;
    // A peer's federation switch event may free the events this server held for the room.
    if pdus.iter().any(|p| p.get("event_type").and_then(Value::as_str) == Some(types::FEDERATION))
        && let Some(sender) = st.fed.sender()
    {
        sender.wake_all();
    }
    let map: Map<String, Value> = verdicts.into_iter().map(|(id, v)| (id, v.to_json())).collect();
    let answer = json!({"pdus": map});
    st.store.save_received_txn(origin, txn_id, &answer, federation::now_ms() as i64).await?;
    Ok(answer)
}

/// Verdicts of a transaction's pdus, keyed by the event ids computed here.
async fn receive_pdus(st: &AppState, origin: &str, values: &[Value]) -> Vec<(EventId, Verdict)> {
    let mut out = Vec::new();
    let mut versions: HashMap<String, Option<RoomVersion>> = HashMap::new();
    let mut parsed: Vec<Pdu> = Vec::new();
    let mut raw: Vec<(&Value, Option<RoomVersion>)> = Vec::new();
    for value in values {
        let room_id = value.get("room_id").and_then(Value::as_str).unwrap_or("").to_string();
        let version = match versions.get(&room_id) {
            Some(v) => *v,
            None => {
                let v = st.store.room_version(&room_id).await.ok().flatten();
                versions.insert(room_id.clone(), v);
                v
            }
        };
        match well_formed(value, version.unwrap_or(RoomVersion::V1), Some(origin)) {
            Ok(pdu) => {
                parsed.push(pdu);
                raw.push((value, version));
            }
            Err(refusal) => {
                // A verdict only for what parses as an event (contract 8.1): a pdu too large, or
                // of another origin, gets its refusal; a shapeless one none.
                if let Some(id) = refusal.event_id.filter(|id| Pdu::parse(id, value).is_ok()) {
                    out.push((id, refusal.verdict));
                }
            }
        }
    }
    let rooms = order_batch(&parsed);
    let parsed = &parsed;
    let raw = &raw;
    let per_room = futures_util::stream::iter(rooms)
        .map(|(_, order)| async move {
            // A room whose server lists or this server's policy refuse the origin takes none
            // of its events (not stored: the refusal is transport, not the room's verdict).
            if let Some(&first) = order.first()
                && let Err(e) = super::policy::check_room(st, &parsed[first].room_id, origin).await
            {
                let (code, message) = match &e {
                    ApiError::FedPeerUnknown(m) => ("SW_FED_PEER_UNKNOWN", m.clone()),
                    other => ("SW_FED_UNAVAILABLE", other.to_string()),
                };
                let verdict = if code == "SW_FED_PEER_UNKNOWN" {
                    Verdict::rejected(code, message)
                } else {
                    Verdict::retry(code, message)
                };
                return order.iter().map(|&i| (parsed[i].event_id.clone(), verdict.clone())).collect();
            }
            if let Some(verdicts) = receive_room_at_once(st, origin, &order, raw, parsed).await {
                return verdicts;
            }
            let mut verdicts = Vec::with_capacity(order.len());
            for i in order {
                let (value, version) = raw[i];
                let id = parsed[i].event_id.clone();
                let verdict = match version {
                    None => Verdict::rejected("SW_ROOM_NOT_FOUND", "this server does not know the room"),
                    Some(version) => receive_pdu(st, origin, value, version).await,
                };
                verdicts.push((id, verdict));
            }
            verdicts
        })
        .buffer_unordered(PARALLEL_ROOMS)
        .collect::<Vec<_>>()
        .await;
    out.extend(per_room.into_iter().flatten());
    out
}

/// The common case of a room's events in a transaction, in one write transaction: the room is
/// resident and federated, every event verifies, and every parent and auth event is stored
/// or comes earlier in the batch (no gap to fill). `None` sends the room's events through
/// [`receive_pdu`] one by one instead, which handles everything else (and answers the same
/// for what this path takes). One transaction and one check of the room per batch, instead of
/// per event, is most of a peer's delivery rate.
async fn receive_room_at_once(
    st: &AppState,
    origin: &str,
    order: &[usize],
    raw: &[(&Value, Option<RoomVersion>)],
    parsed: &[Pdu],
) -> Option<Vec<(EventId, Verdict)>> {
    let first = *order.first()?;
    let version = raw[first].1?;
    let room_id = parsed[first].room_id.as_str();
    if !st.store.room_federated(room_id).await.ok()?? {
        return None;
    }
    if !st.store.room_servers(room_id).await.ok()?.iter().any(|s| *s == st.fed.server_name) {
        return None;
    }
    let active = st.fed.active().ok()?;
    let mut verified = Vec::with_capacity(order.len());
    for &i in order {
        verified.push(verify_pdu(&active.keys, raw[i].0, version, Some(origin)).await.ok()?);
    }
    let in_batch: std::collections::HashSet<&str> = verified.iter().map(|v| v.pdu.event_id.as_str()).collect();
    let mut needed: Vec<String> = verified
        .iter()
        .flat_map(|v| v.pdu.prev_events.iter().chain(v.pdu.auth_events.iter()))
        .filter(|id| !in_batch.contains(id.as_str()))
        .cloned()
        .collect();
    needed.sort_unstable();
    needed.dedup();
    let stored = st.store.stored_event_ids(&needed).await.ok()?;
    if needed.iter().any(|id| !stored.contains(id)) {
        return None;
    }
    // An event whose parents are all outliers here needs the state at them from the origin.
    let outside_prevs: Vec<String> = verified
        .iter()
        .flat_map(|v| &v.pdu.prev_events)
        .filter(|id| !in_batch.contains(id.as_str()))
        .cloned()
        .collect();
    let placed = st.store.placed_event_ids(&outside_prevs).await.ok()?;
    let hangs_off_outliers = |v: &Verified| {
        !v.pdu.prev_events.is_empty()
            && v.pdu.prev_events.iter().all(|p| !in_batch.contains(p.as_str()) && !placed.contains(p))
    };
    if verified.iter().any(hangs_off_outliers) {
        return None;
    }
    let mut tx = st.store.write().await.ok()?;
    let mut out = Vec::with_capacity(verified.len());
    for v in &verified {
        let json = match crypto::to_canonical_string(&v.json) {
            Ok(j) => j,
            Err(e) => {
                out.push((
                    v.pdu.event_id.clone(),
                    Verdict::rejected("SW_BAD_REQUEST", format!("not canonical JSON: {e}")),
                ));
                continue;
            }
        };
        let persisted = match tx.persist(&v.pdu, &json).await {
            Ok(p) => p,
            Err(PersistError::Unstorable(m)) => {
                out.push((v.pdu.event_id.clone(), Verdict::rejected("SW_BAD_REQUEST", m)));
                continue;
            }
            // The transaction may be unusable: start over, event by event.
            Err(_) => return None,
        };
        if !persisted.existed && persisted.status == EventStatus::Accepted {
            apply_accepted(&mut tx, &v.pdu).await.ok()?;
        }
        out.push((v.pdu.event_id.clone(), verdict_of(persisted.status)));
    }
    tx.commit().await.ok()?;
    Some(out)
}

/// One pdu of a transaction, through every check; never fails the others.
async fn receive_pdu(st: &AppState, origin: &str, value: &Value, version: RoomVersion) -> Verdict {
    match receive_pdu_inner(st, origin, value, version).await {
        Ok(v) | Err(v) => v,
    }
}

fn unavailable(e: impl std::fmt::Display) -> Verdict {
    Verdict::retry("SW_FED_UNAVAILABLE", e.to_string())
}

async fn receive_pdu_inner(
    st: &AppState,
    origin: &str,
    value: &Value,
    version: RoomVersion,
) -> Result<Verdict, Verdict> {
    let room_id = value.get("room_id").and_then(Value::as_str).unwrap_or("");
    let event_type = value.get("event_type").and_then(Value::as_str).unwrap_or("");
    let federated = st.store.room_federated(room_id).await.map_err(unavailable)?;
    let servers = st.store.room_servers(room_id).await.map_err(unavailable)?;
    let Some(federated) = federated.filter(|_| servers.iter().any(|s| *s == st.fed.server_name)) else {
        return Ok(Verdict::rejected("SW_ROOM_NOT_FOUND", "no member of this server is in the room"));
    };
    // The switch gates transport; its own events always flow so it can be turned on again.
    if !federated && event_type != types::FEDERATION {
        return Ok(Verdict::retry("SW_FED_DISABLED", "federation is off for this room"));
    }
    let active = st.fed.active().map_err(unavailable)?;
    let verified = verify_pdu(&active.keys, value, version, Some(origin)).await.map_err(|r| r.verdict)?;
    let host = StoreHost { store: &st.store };
    let network = Network { client: &active.client, keys: &active.keys };
    Ok(gaps::receive(&host, &network, &st.fed.inbound, origin, &verified, version).await)
}

/// The verdict for a stored event ([`federation::host::Status::verdict`]).
pub fn verdict_of(status: EventStatus) -> Verdict {
    status_of(status).verdict()
}

/// Persists one verified event (with the state before it when its parents are missing) and,
/// when accepted, applies it to the projections; one transaction.
pub async fn store_event(
    store: &Store,
    event: &Verified,
    state: Option<&StateMap<EventId>>,
) -> Result<Persisted, Verdict> {
    let json = crypto::to_canonical_string(&event.json)
        .map_err(|e| Verdict::rejected("SW_BAD_REQUEST", format!("not canonical JSON: {e}")))?;
    let mut tx = store.write().await.map_err(unavailable)?;
    let persisted = match state {
        Some(s) => tx.persist_with_state(&event.pdu, &json, s).await,
        None => tx.persist(&event.pdu, &json).await,
    }
    .map_err(|e| match e {
        PersistError::Unstorable(m) => Verdict::rejected("SW_BAD_REQUEST", m),
        other => unavailable(other),
    })?;
    if !persisted.existed && persisted.status == EventStatus::Accepted {
        apply_accepted(&mut tx, &event.pdu).await.map_err(unavailable)?;
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(persisted)
}

/// Events stored in turn, parents first ([`federation::host::Host::store_events`]): a write
/// transaction per [`STORE_CHUNK`] events, each persisted and, when accepted, projected as
/// [`store_event`] does. An event that cannot be stored (not canonical, unstorable) is left
/// out; its children then hang off a missing parent.
pub async fn store_events(store: &Store, events: &[(&Verified, Option<StateMap<EventId>>)]) -> Result<(), Verdict> {
    for chunk in events.chunks(STORE_CHUNK) {
        let mut tx = store.write().await.map_err(unavailable)?;
        for (event, state) in chunk {
            let Ok(json) = crypto::to_canonical_string(&event.json) else { continue };
            let persisted = match state {
                Some(s) => tx.persist_with_state(&event.pdu, &json, s).await,
                None => tx.persist(&event.pdu, &json).await,
            };
            let persisted = match persisted {
                Ok(p) => p,
                Err(PersistError::Unstorable(_)) => continue,
                Err(other) => return Err(unavailable(other)),
            };
            if !persisted.existed && persisted.status == EventStatus::Accepted {
                apply_accepted(&mut tx, &event.pdu).await.map_err(unavailable)?;
            }
        }
        tx.commit().await.map_err(unavailable)?;
    }
    Ok(())
}

/// Events per write transaction of [`store_events`]: long enough to share the commit, short
/// enough not to hold the write turn from local sends for long.
const STORE_CHUNK: usize = 200;

/// What an accepted event from a peer changes beside the graph, as the same event does when
/// sent here: the sender's local record, the projections of a state event that is now part
/// of the current state, and the folded rows of edits, reactions and redactions.
pub async fn apply_accepted(tx: &mut WriteTx, pdu: &Pdu) -> ApiResult<()> {
    apply_event(tx, pdu).await?;
    // The resolution may have changed other entries of the current state (a concurrent
    // branch's ban undone, a name set back): each gets its projection too, so that every
    // server shows the state it resolved.
    for (room_id, event_id) in tx.take_state_changes() {
        if event_id == pdu.event_id || room_id != pdu.room_id {
            continue;
        }
        let Some(json) = tx.stored_pdu(&event_id).await? else { continue };
        let now_current =
            tx.pdu_cache().get_or_parse(&event_id, &json).map_err(|e| ApiError::internal(e.to_string()))?;
        if now_current.event_type == types::CREATE {
            continue;
        }
        let own_name = (now_current.event_type == types::MEMBER
            && now_current.state_key.as_deref() == Some(now_current.sender.as_str()))
        .then(|| now_current.content.get("display_name").and_then(Value::as_str))
        .flatten();
        tx.ensure_foreign_participant(&now_current.sender, own_name, "default", crate::clock::now_secs()).await?;
        crate::rooms::project::apply(tx, &now_current, None).await?;
    }
    Ok(())
}

async fn apply_event(tx: &mut WriteTx, pdu: &Pdu) -> ApiResult<()> {
    let now = crate::clock::now_secs();
    // A member event about its sender names the display name to create the record with.
    let own_name = (pdu.event_type == types::MEMBER && pdu.state_key.as_deref() == Some(pdu.sender.as_str()))
        .then(|| pdu.content.get("display_name").and_then(Value::as_str))
        .flatten();
    let sender = tx.ensure_foreign_participant(&pdu.sender, own_name, "default", now).await?;
    if let Some(key) = pdu.state_key.as_deref() {
        let current = tx.state_pdu_keyed(&pdu.room_id, &pdu.event_type, key).await?;
        // A create event comes only with a join (its local facts are the joiner's business).
        if pdu.event_type != types::CREATE && current.is_some_and(|(id, _)| id == pdu.event_id) {
            crate::rooms::project::apply(tx, pdu, None).await?;
        }
        return Ok(());
    }
    let text = |k: &str| pdu.content.get(k).and_then(Value::as_str);
    match pdu.event_type.as_str() {
        EDIT => {
            let (Some(target), Some(new_content)) = (text("event_id"), pdu.content.get("new_content")) else {
                return Ok(());
            };
            let Some(msg) = tx.message(&pdu.room_id, target).await? else { return Ok(()) };
            // As for a local edit: the sender's own message, not redacted.
            if msg.event_type == types::MESSAGE && msg.sender_fqid == pdu.sender && msg.redacted_at.is_none() {
                tx.apply_edit(target, &new_content.to_string(), pdu.origin_ts).await?;
            }
        }
        REACTION => {
            let (Some(target), Some(emoji)) = (text("event_id"), text("emoji")) else { return Ok(()) };
            if crate::messages::validate_emoji(emoji).is_err() {
                return Ok(());
            }
            let Some(msg) = tx.message(&pdu.room_id, target).await? else { return Ok(()) };
            if msg.event_type == types::MESSAGE && msg.redacted_at.is_none() {
                tx.add_reaction(target, &sender.id, emoji, &pdu.event_id).await?;
            }
        }
        REDACTION => {
            let Some(target) = text("redacts") else { return Ok(()) };
            let Some(msg) = tx.message(&pdu.room_id, target).await? else { return Ok(()) };
            if msg.event_type != types::MESSAGE && msg.event_type != REACTION || msg.redacted_at.is_some() {
                return Ok(());
            }
            // The rules let any member's redaction in; it takes effect for the target's sender
            // or a member at the room's `redact` level above the target's sender.
            if msg.sender_fqid != pdu.sender {
                // Levels from the power-levels event itself, not the member projections: a room
                // joined in stages may not list the redacting moderator yet.
                let levels = crate::rooms::project::state_event(tx, &pdu.room_id, types::POWER_LEVELS).await?;
                let create = crate::rooms::project::state_event(tx, &pdu.room_id, types::CREATE).await?;
                let creator = create.map(|c| c.sender.clone()).unwrap_or_default();
                let power = federation::auth::power::Power::new(levels.as_deref(), &creator)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let (mine, theirs) = (power.user(&pdu.sender), power.user(&msg.sender_fqid));
                let needed = crate::rooms::thresholds(tx, &pdu.room_id).await?.redact;
                if mine < needed || mine <= theirs {
                    return Ok(());
                }
            }
            tx.apply_redaction(target, pdu.origin_ts).await?;
            if msg.event_type == REACTION {
                tx.forget_reaction_event(target).await?;
            }
            crate::rooms::redact_stored_pdus(tx, target).await?;
        }
        _ => {}
    }
    Ok(())
}

/// The transaction's edus: typing and presence of the origin's participants, to local
/// clients through the realtime hub. Anything else, or not the origin's, is ignored.
async fn receive_edus(st: &AppState, origin: &str, edus: &[Value]) {
    for edu in edus {
        let Ok(edu) = serde_json::from_value::<wire::Edu>(edu.clone()) else { continue };
        let fqid = edu.content.get("fqid").and_then(Value::as_str).unwrap_or("");
        if federation::event::parse_fqid(fqid).is_none_or(|(_, server)| server != origin) {
            continue;
        }
        let Ok(Some(participant)) = st.store.participant_by_fqid(fqid).await else { continue };
        match edu.edu_type.as_str() {
            wire::edu::TYPING => {
                let room_id = edu.content.get("room_id").and_then(Value::as_str).unwrap_or("");
                let Some(typing) = edu.content.get("typing").and_then(Value::as_bool) else { continue };
                let joined = st
                    .store
                    .member(room_id, &participant.id)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|m| m.member.membership == crate::storage::Membership::Join);
                if joined && super::policy::check_room(st, room_id, origin).await.is_ok() {
                    crate::api::realtime::typing_notice(&st.hub, room_id, &participant.id, typing, Instant::now());
                }
            }
            wire::edu::PRESENCE => {
                let Some(status) = edu
                    .content
                    .get("presence")
                    .and_then(|p| serde_json::from_value::<crate::realtime::PresenceStatus>(p.clone()).ok())
                else {
                    continue;
                };
                let before = st.hub.presence_of(&participant.id, &participant.id, Instant::now());
                st.hub.set_presence(&participant.id, status, Instant::now());
                crate::api::realtime::announce_presence(st, &participant.id, before).await;
            }
            _ => {}
        }
    }
}

/// What every read endpoint checks before serving a room to `origin`: the room is known here
/// and `origin` has or had a member in it (else 404 `SW_ROOM_NOT_FOUND`, never leaking the
/// room), the room's server lists and this server's policy let `origin` in (else 403
/// `SW_FED_PEER_UNKNOWN`), and its federation is on (else 409 `SW_FED_DISABLED`).
pub async fn room_readable_by(st: &AppState, room_id: &str, origin: &str) -> ApiResult<()> {
    let federated = st.store.room_federated(room_id).await?.ok_or(ApiError::RoomNotFound)?;
    if !st.store.server_ever_in_room(room_id, origin).await? {
        return Err(ApiError::RoomNotFound);
    }
    super::policy::check_room(st, room_id, origin).await?;
    if !federated {
        return Err(ApiError::FedDisabled("federation is off for this room".into()));
    }
    Ok(())
}

#[cfg(test)]
#[path = "inbound_tests.rs"]
mod tests;
