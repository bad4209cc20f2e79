//! Federating a room, and the membership flows that cross servers (contract 8 and 8.1): the
//! federation switch, invites of remote participants, remote joins and the decline of a remote
//! invite, each as a read-and-build transaction, the network call with no transaction open, then
//! a short transaction that stores what came back. Invites are in [`super::invite`], federated
//! DMs in [`super::dm`]; both use this module's helpers. The pure decisions (templates, the checks on
//! a `send_join` answer, stripped state) are in `federation::join`; the resident side's
//! endpoints are `fed/endpoints/{make_join,send_join,make_leave,send_leave,invite}.rs`.

use std::sync::Arc;

use federation::auth::RoomVersion;
use federation::client::FedError;
use federation::event::{Pdu, parse_fqid, types};
use federation::join::{self as fj, JoinError};
use federation::wire::path;
use serde_json::{Value, json};

pub use super::dm::federated_dm;
pub use super::invite::{InviteMode, invite_remote, receive_invite, refusal_of};
use crate::api::AppState;
use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::rooms::project::{self, LocalFacts};
use crate::rooms::rules::{self, Seat};
use crate::rooms::{self, AuthEvents, NewEventSpec, service};
use crate::storage::{EventStatus, Membership, Participant, RoomType, RoomView, WriteTx};

/// The answers of a peer are bounded: a join's state and auth chain are the largest.
pub(super) const MAX_JOIN_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// A peer's failure as the client sees it: unreachable or garbled → 502 `SW_FED_UNAVAILABLE`;
/// a refusal keeps the peer's code where this server has the same one.
pub fn peer_error(e: FedError) -> ApiError {
    match e {
        FedError::Refused { code, message, server, .. } => {
            let why = format!("{server} refused: {message}");
            match code.as_str() {
                "SW_ROOM_NOT_FOUND" => ApiError::RoomNotFound,
                "SW_ROOM_FORBIDDEN" => ApiError::RoomForbidden(why),
                "SW_NOT_MEMBER" => ApiError::NotMember(why),
                "SW_ROOM_FROZEN" => ApiError::RoomFrozen(why),
                "SW_ROOM_TYPE_INVARIANT" => ApiError::RoomTypeInvariant(why),
                "SW_PARTICIPANT_NOT_FOUND" => ApiError::ParticipantNotFound(why),
                "SW_FED_DISABLED" => ApiError::FedDisabled(why),
                "SW_FED_PEER_UNKNOWN" => ApiError::FedPeerUnknown(why),
                "SW_CONFLICT" => ApiError::Conflict(why),
                "SW_BAD_REQUEST" => ApiError::bad_request(why),
                _ => ApiError::FedUnavailable(why),
            }
        }
        other => ApiError::FedUnavailable(other.to_string()),
    }
}

pub(super) fn join_error(e: JoinError) -> ApiError {
    match e {
        JoinError::Refused(a) => rooms::refusal(a),
        other => ApiError::FedUnavailable(other.to_string()),
    }
}

/// Whether `fqid` belongs to another server.
pub fn is_remote(st: &AppState, fqid: &str) -> bool {
    parse_fqid(fqid).is_some_and(|(_, server)| server != st.fed.server_name)
}

/// The room's create event, parsed; legacy rooms (no `room_version`) are never federated.
pub(super) async fn versioned_create(tx: &mut WriteTx, room_id: &str) -> ApiResult<Arc<Pdu>> {
    project::state_event(tx, room_id, types::CREATE)
        .await?
        .filter(|c| c.content.contains_key("room_version"))
        .ok_or_else(|| ApiError::RoomTypeInvariant("a room made before room versions cannot be federated".into()))
}

/// `PUT /v1/admin/rooms/{room_id}/federate {enabled}`: appends the room's
/// `swp.room.federation` state event. The room's creator, a member at power 100 or a server
/// admin (through the service participant when the room gives them no power); incognito and
/// legacy rooms refuse.
pub async fn federate(st: &AppState, caller: &Participant, room_id: &str, enabled: bool) -> ApiResult<RoomView> {
    let mut tx = st.store.write().await?;
    let (room, me) = rooms::load(&mut tx, room_id, caller).await?;
    let seat = Seat::of(me.as_ref());
    rules::require_owner(&room, seat, caller, "federating the room", rules::POWER_MAX)?;
    if room.room_type == RoomType::Incognito {
        return Err(ApiError::RoomTypeInvariant("an incognito room never leaves its server".into()));
    }
    rules::require_open(&room)?;
    versioned_create(&mut tx, room_id).await?;
    if room.federated != enabled {
        let needed = rooms::thresholds(&mut tx, room_id).await?.state(types::FEDERATION);
        let mut content = json!({"enabled": enabled});
        let sender = acting_sender(&mut tx, caller, seat, needed, room_id, &mut content).await?;
        append_state(&mut tx, room_id, &sender, types::FEDERATION, "", &content).await?;
        tx.commit().await?;
        // Events held for the room, or answered `retry` by peers while it was off, go now.
        if let Some(sender) = st.fed.sender() {
            sender.wake_all();
        }
    } else {
        drop(tx);
    }
    st.store.room_view(room_id, &caller.id).await?.ok_or(ApiError::RoomNotFound)
}

/// Who sends an operation's event: the caller, or, for a server admin without the room's
/// power, this server's service participant (with `sent_by` naming the admin).
pub(super) async fn acting_sender(
    tx: &mut WriteTx,
    caller: &Participant,
    seat: Seat,
    needed: i64,
    room_id: &str,
    content: &mut Value,
) -> ApiResult<Participant> {
    if caller.is_admin && (seat.effective_power() < needed || seat.membership != Some(Membership::Join)) {
        let service = service::joined_in(tx, room_id)
            .await?
            .ok_or_else(|| ApiError::RoomForbidden("this server has no seat in the room to act through".into()))?;
        content[crate::messages::SENT_BY] = json!(caller.fqid);
        return Ok(service);
    }
    Ok(caller.clone())
}

pub(super) async fn append_state(
    tx: &mut WriteTx,
    room_id: &str,
    sender: &Participant,
    event_type: &str,
    state_key: &str,
    content: &Value,
) -> ApiResult<()> {
    let spec = NewEventSpec {
        room_id,
        sender_id: &sender.id,
        event_type,
        state_key: Some(state_key),
        content,
        event_uuid: None,
        relates_to: None,
        unsigned: None,
    };
    rooms::append_by(tx, spec, sender.fqid.clone()).await?;
    Ok(())
}

/// The room's current auth state for an event by `sender` about `target`, and the ids of the
/// entries the rules read (its `auth_events`).
pub(super) async fn auth_for(
    tx: &mut WriteTx,
    room_id: &str,
    sender: &str,
    target: &str,
    joins_or_invites: bool,
) -> ApiResult<(Vec<String>, AuthEvents)> {
    let rows = tx.state_pdus(room_id, &[sender, target]).await?;
    let found: Vec<(String, String, String)> =
        rows.iter().map(|(t, k, id, _)| (t.clone(), k.clone(), id.clone())).collect();
    let ids = rooms::pick_auth_events(&found, sender, target, joins_or_invites);
    let mut state = AuthEvents::default();
    for (_, _, id, pdu) in &rows {
        if let Some(pdu) = pdu {
            state.0.push(tx.pdu_cache().get_or_parse(id, pdu).map_err(|e| ApiError::internal(e.to_string()))?);
        }
    }
    Ok((ids, state))
}

/// `make_join` / `make_leave` on the resident side: the template for `fqid` (of `origin`),
/// refused when the room's rules would refuse the membership.
pub async fn membership_template(
    st: &AppState,
    room_id: &str,
    fqid: &str,
    origin: &str,
    membership: &str,
) -> ApiResult<Value> {
    let (_, server) = parse_fqid(fqid).ok_or_else(|| ApiError::bad_request("not an fqid"))?;
    if server != origin {
        return Err(ApiError::RoomForbidden(format!("{origin} may ask only for its own participants")));
    }
    super::partial::refuse_if_partial(st, room_id).await?;
    let mut tx = st.store.write().await?;
    let room = tx.room(room_id).await?.ok_or(ApiError::RoomNotFound)?;
    if !tx.holds_room_graph(room_id).await? || room.room_type == RoomType::Incognito {
        return Err(ApiError::RoomNotFound);
    }
    if !room.federated {
        return Err(ApiError::FedDisabled("federation is off for this room".into()));
    }
    drop(tx);
    super::policy::check_room(st, room_id, origin).await?;
    if membership == "join" {
        super::policy::check_join_cap(st, room_id, fqid).await?;
    }
    let mut tx = st.store.write().await?;
    let head = tx.graph_head(room_id).await?;
    let (auth_ids, state) = auth_for(&mut tx, room_id, fqid, fqid, membership == "join").await?;
    drop(tx);
    let template = fj::template(room_id, fqid, membership, &head.extremities, &auth_ids);
    let pdu = fj::template_pdu(&template, origin).map_err(join_error)?;
    rooms::authorize(&pdu, &state, state.create())?;
    Ok(template)
}

/// `send_join` / `send_leave` on the resident side: verifies the joiner's signed event, stores
/// it (it must be accepted), countersigns it and has the sender relay it to the room's other
/// servers. Answers the countersigned event and, for a join, the state before it with its auth
/// chain.
pub async fn accept_membership(
    st: &AppState,
    room_id: &str,
    event_id: &str,
    origin: &str,
    body: Option<Value>,
    membership: &str,
    omit_members: bool,
) -> ApiResult<Value> {
    let event = body.ok_or_else(|| ApiError::bad_request("the signed event is the body"))?;
    if membership == "join" {
        super::partial::refuse_if_partial(st, room_id).await?;
    }
    let version = {
        let mut tx = st.store.write().await?;
        let room = tx.room(room_id).await?.ok_or(ApiError::RoomNotFound)?;
        if !tx.holds_room_graph(room_id).await? {
            return Err(ApiError::RoomNotFound);
        }
        if !room.federated {
            return Err(ApiError::FedDisabled("federation is off for this room".into()));
        }
        let create = versioned_create(&mut tx, room_id).await?;
        RoomVersion::of_create(&create).map_err(rooms::refusal)?
    };
    super::policy::check_room(st, room_id, origin).await?;
    let active = st.fed.active()?;
    let verified = federation::verify::verify_pdu(&active.keys, &event, version, Some(origin))
        .await
        .map_err(|r| refusal_of(r.verdict))?;
    let pdu = verified.pdu;
    if pdu.event_id != event_id || pdu.room_id != room_id {
        return Err(ApiError::bad_request("the event is not the one the path names"));
    }
    let is_membership = pdu.event_type == types::MEMBER
        && pdu.state_key.as_deref() == Some(pdu.sender.as_str())
        && pdu.content.get("membership").and_then(Value::as_str) == Some(membership);
    if !is_membership {
        return Err(ApiError::bad_request(format!("not a {membership} of its sender")));
    }
    if membership == "join" {
        super::policy::check_join_cap(st, room_id, &pdu.sender).await?;
    }
    let mut json = verified.json;
    crypto::countersign_event(version.redaction_rules(), &mut json, &st.fed.server_name, &st.keys.current)
        .map_err(ApiError::internal)?;
    let json_str = crypto::to_canonical_string(&json).map_err(ApiError::internal)?;

    let mut tx = st.store.write().await?;
    let state = if membership == "join" { tx.current_state_pdus(room_id).await? } else { Vec::new() };
    let auth_chain = if membership == "join" {
        tx.state_auth_chain_pdus(room_id, &pdu.auth_events, federation::wire::MAX_STATE_EVENTS).await?
    } else {
        Vec::new()
    };
    let stored = tx.persist(&pdu, &json_str).await.map_err(ApiError::internal)?;
    if stored.status != EventStatus::Accepted {
        return Err(ApiError::RoomForbidden(format!("the room's rules refuse this {membership}")));
    }
    if !stored.existed {
        tx.mark_for_relay(stored.stream_position).await?;
        project::apply(&mut tx, &pdu, None).await?;
    }
    tx.commit().await?;
    if membership != "join" {
        return Ok(json!({"event": json}));
    }
    let joiner = pdu.sender.as_str();
    let member_type = types::MEMBER;
    let mut omitted = false;
    let members_in_state = state.iter().filter(|(_, p)| p.contains(r#""event_type":"swp.room.member""#)).count();
    let omit_members = omit_members && members_in_state > st.config.federation.omit_members_above as usize;
    let mut state_out = Vec::with_capacity(state.len());
    for (_, pdu) in &state {
        let v: Value = serde_json::from_str(pdu).map_err(ApiError::internal)?;
        let is_other_member = v.get("event_type").and_then(Value::as_str) == Some(member_type)
            && v.get("state_key").and_then(Value::as_str) != Some(joiner);
        if omit_members && is_other_member {
            omitted = true;
            continue;
        }
        state_out.push(v);
    }
    let auth_out: Vec<Value> = auth_chain.iter().filter_map(|(_, p)| serde_json::from_str(p).ok()).collect();
    let servers = st.store.room_servers(room_id).await?;
    Ok(json!({
        "event": json,
        "state": state_out,
        "auth_chain": auth_out,
        "servers_in_room": servers,
        "members_omitted": omitted,
    }))
}

/// The servers to ask for a remote join or leave, in order: `via`, the inviter's server, the
/// servers this server knows in the room; never this one, each once.
pub(super) async fn candidates(st: &AppState, room_id: &str, fqid: &str, via: &[String]) -> ApiResult<Vec<String>> {
    let mut out: Vec<String> = via.to_vec();
    {
        let mut tx = st.store.write().await?;
        if let Some((id, pdu)) = tx.latest_member_pdu(room_id, fqid).await? {
            let parsed = serde_json::from_str::<Value>(&pdu).ok().and_then(|v| Pdu::parse(&id, &v).ok());
            if let Some(p) = parsed {
                out.push(p.origin);
            }
        }
    }
    out.extend(st.store.room_servers(room_id).await?);
    let mut seen = Vec::new();
    for s in out {
        if s != st.fed.server_name && federation::event::is_server_name(&s) && !seen.contains(&s) {
            seen.push(s);
        }
    }
    Ok(seen)
}

/// Whether the caller's join or leave of this room must go through another server: this
/// server does not hold the room's graph.
pub async fn needs_remote(st: &AppState, room_id: &str) -> ApiResult<bool> {
    let mut tx = st.store.write().await?;
    if tx.holds_room_graph(room_id).await? {
        return Ok(false);
    }
    // A room of this server always has its graph; a room row without one is an invitation
    // from another server (federated by construction).
    Ok(tx.room(room_id).await?.is_none_or(|r| r.federated))
}

/// A join or leave signed here from a resident server's template, and that server's answer.
pub(super) struct Remote {
    event: Value,
    pdu: Pdu,
    answer: Value,
}

/// `make_*` then `send_*` against one server.
pub(super) async fn remote_membership(
    st: &AppState,
    server: &str,
    room_id: &str,
    caller: &Participant,
    membership: &str,
) -> ApiResult<Remote> {
    let active = st.fed.active()?;
    let (make, send): (String, fn(&str, &str) -> String) = if membership == "join" {
        // In stages: others' member events come after, in the background (`fed::partial`).
        (path::make_join(room_id, &caller.fqid), |r, e| path::send_join(r, e, true))
    } else {
        (path::make_leave(room_id, &caller.fqid), path::send_leave)
    };
    let made = active.client.request(server, "GET", &make, None).await.map_err(peer_error)?;
    let template =
        made.get("event").ok_or_else(|| ApiError::FedUnavailable(format!("{server} answered no template")))?;
    let uuid = ulid::Ulid::generate().to_string().to_lowercase();
    let event =
        fj::complete_template(template, room_id, &caller.fqid, membership, now_secs(), &uuid).map_err(join_error)?;
    // Version 1 is the only one; a room of another version is refused below by its create event.
    let version = RoomVersion::V1;
    let (event_id, signed) = crypto::prepare_event_with(version.redaction_rules(), event)
        .and_then(|u| u.sign(&st.fed.server_name, &st.keys.current))
        .map_err(ApiError::internal)?;
    let answer = active
        .client
        .request_capped(server, "PUT", &send(room_id, &event_id), Some(&signed), MAX_JOIN_ANSWER_BYTES)
        .await
        .map_err(peer_error)?;
    let back = answer.get("event").cloned().unwrap_or_else(|| signed.clone());
    let back = if crypto::event_id_with(version.redaction_rules(), &back).ok().as_deref() == Some(event_id.as_str()) {
        back
    } else {
        signed
    };
    let pdu = Pdu::parse(&event_id, &back).map_err(|e| ApiError::FedUnavailable(e.to_string()))?;
    Ok(Remote { event: back, pdu, answer })
}

/// Verifies every event of a list from a peer (steps 1–3), answering them parsed with their
/// wire forms; an event that fails fails the whole answer.
pub(super) async fn verify_all(st: &AppState, list: Option<&Value>) -> ApiResult<Vec<(Pdu, Value)>> {
    let active = st.fed.active()?;
    let list = list.and_then(Value::as_array).ok_or_else(|| ApiError::FedUnavailable("a list is missing".into()))?;
    if list.len() > federation::wire::MAX_STATE_EVENTS {
        return Err(ApiError::FedUnavailable("the answer holds too many events".into()));
    }
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        let ok = federation::verify::verify_pdu(&active.keys, v, RoomVersion::V1, None).await.map_err(|r| {
            ApiError::FedUnavailable(format!("an event of the answer fails its checks: {:?}", r.verdict))
        })?;
        out.push((ok.pdu, ok.json));
    }
    Ok(out)
}

/// Joins a room this server is not in, through a resident server: `via`, else the inviter's
/// server, else the servers known in the room; the next one when one fails. The state and
/// auth chain answered are verified and checked before anything is stored; then, in one
/// transaction: the auth chain and state as outliers, the room's row (from the create event,
/// with the joiner's tenant and personal workspace), the join placed on that state, and every
/// state event projected (member lists, name, topic, power levels, federation switch).
pub async fn join_remote(st: &AppState, caller: &Participant, room_id: &str, via: &[String]) -> ApiResult<RoomView> {
    let servers = candidates(st, room_id, &caller.fqid, via).await?;
    if servers.is_empty() {
        return Err(ApiError::RoomNotFound);
    }
    let mut last = ApiError::RoomNotFound;
    for server in &servers {
        match join_via(st, server, caller, room_id).await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tracing::info!(%server, room = %room_id, error = %e, "remote join failed");
                let definitive = matches!(e, ApiError::RoomForbidden(_) | ApiError::NotMember(_));
                last = e;
                if definitive {
                    break;
                }
            }
        }
    }
    Err(last)
}

pub(super) async fn join_via(st: &AppState, server: &str, caller: &Participant, room_id: &str) -> ApiResult<RoomView> {
    let remote = remote_membership(st, server, room_id, caller, "join").await?;
    let state = verify_all(st, remote.answer.get("state")).await?;
    let auth_chain = verify_all(st, remote.answer.get("auth_chain")).await?;
    let state_pdus: Vec<Pdu> = state.iter().map(|(p, _)| p.clone()).collect();
    let auth_pdus: Vec<Pdu> = auth_chain.iter().map(|(p, _)| p.clone()).collect();
    let checked = fj::check_send_join(&remote.pdu, &state_pdus, &auth_pdus).map_err(join_error)?;
    let create = state_pdus
        .iter()
        .find(|e| e.is_room_state(types::CREATE))
        .cloned()
        .ok_or_else(|| ApiError::FedUnavailable("no create event".into()))?;
    let workspace = st
        .store
        .personal_workspace(&caller.id)
        .await?
        .ok_or_else(|| ApiError::internal("the joiner has no personal workspace"))?;

    let mut all: Vec<(Pdu, Value)> = auth_chain.into_iter().chain(state.iter().cloned()).collect();
    all.sort_by(|a, b| (a.0.depth, &a.0.event_id).cmp(&(b.0.depth, &b.0.event_id)));
    all.dedup_by(|a, b| a.0.event_id == b.0.event_id);
    let join_json = crypto::to_canonical_string(&remote.event).map_err(ApiError::internal)?;

    let omitted = remote.answer.get("members_omitted").and_then(Value::as_bool) == Some(true);
    let mut ask: Vec<String> = vec![server.to_string()];
    for s in remote.answer.get("servers_in_room").and_then(Value::as_array).into_iter().flatten() {
        if let Some(s) = s.as_str().filter(|s| federation::event::is_server_name(s) && *s != st.fed.server_name) {
            if !ask.iter().any(|a| a == s) {
                ask.push(s.to_string());
            }
        }
    }
    let mut tx = st.store.write().await?;
    if tx.holds_room_graph(room_id).await? {
        // Joined meanwhile through another path: a local join now.
        drop(tx);
        return rooms::join(&st.store, caller, room_id).await;
    }
    let now = now_secs();
    if parse_fqid(&create.sender).is_some_and(|(_, s)| s != st.fed.server_name) {
        tx.ensure_foreign_participant(&create.sender, None, &caller.tenant_id, now).await?;
    }
    for (pdu, json) in &all {
        let s = crypto::to_canonical_string(json).map_err(ApiError::internal)?;
        tx.persist_unplaced(pdu, &s, EventStatus::Outlier).await?;
    }
    let stored = tx.persist_with_state(&remote.pdu, &join_json, &checked.state).await.map_err(ApiError::internal)?;
    if stored.status != EventStatus::Accepted {
        return Err(ApiError::RoomForbidden("the room's rules refuse the join here".into()));
    }
    if tx.room(room_id).await?.is_none() {
        let local =
            LocalFacts { tenant_id: &caller.tenant_id, workspace_id: &workspace.id, room_alias: None, dm_key: None };
        project::apply(&mut tx, &create, Some(&local)).await?;
    }
    // Power levels first, so that every membership reads its level.
    let mut ordered: Vec<&Pdu> = state_pdus.iter().filter(|e| e.event_type != types::CREATE).collect();
    ordered.sort_by_key(|e| (e.event_type != types::POWER_LEVELS, e.depth));
    for e in ordered {
        project::apply(&mut tx, e, None).await?;
    }
    project::apply(&mut tx, &remote.pdu, None).await?;
    if omitted {
        tx.mark_partial(room_id, &remote.pdu.event_id, &ask, federation::now_ms() as i64).await?;
    }
    tx.commit().await?;
    if omitted {
        let room = crate::storage::PartialRoom {
            room_id: room_id.to_string(),
            join_event_id: remote.pdu.event_id.clone(),
            servers: ask,
        };
        super::partial::spawn_completion(st.clone(), room);
    }
    st.store.room_view(room_id, &caller.id).await?.ok_or(ApiError::RoomNotFound)
}

/// Declines an invite to a room this server is not in: a leave made on a resident server
/// (`make_leave` / `send_leave`, the inviter's server first), then stored here beside the
/// invite.
pub async fn decline_remote(st: &AppState, caller: &Participant, room_id: &str) -> ApiResult<()> {
    {
        let mut tx = st.store.write().await?;
        let (room, me) = rooms::load(&mut tx, room_id, caller).await?;
        rules::require_joined_or_invited(&room, Seat::of(me.as_ref()), caller)?;
    }
    let servers = candidates(st, room_id, &caller.fqid, &[]).await?;
    let mut last = ApiError::FedUnavailable("no server of the room to ask".into());
    for server in &servers {
        match remote_membership(st, server, room_id, caller, "leave").await {
            Ok(remote) => {
                let json = crypto::to_canonical_string(&remote.event).map_err(ApiError::internal)?;
                let mut tx = st.store.write().await?;
                tx.persist_unplaced(&remote.pdu, &json, EventStatus::Accepted).await?;
                tx.set_membership(room_id, &caller.id, Membership::Leave, None, now_secs()).await?;
                tx.commit().await?;
                return Ok(());
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}
