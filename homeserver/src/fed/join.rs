//! Federating a room, and the membership flows that cross servers (contract 8 and 8.1): the
//! federation switch, invites of remote participants, remote joins and the decline of a remote
//! invite, each as a read-and-build transaction, the network call with no transaction open, then
//! a short transaction that stores what came back. The pure decisions (templates, the checks on
//! a `send_join` answer, stripped state) are in `federation::join`; the resident side's
//! endpoints are `fed/endpoints/{make_join,send_join,make_leave,send_leave,invite}.rs`.

use std::sync::Arc;

use federation::auth::RoomVersion;
use federation::client::FedError;
use federation::event::{Pdu, parse_fqid, types};
use federation::join::{self as fj, JoinError};
use federation::wire::path;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::rooms::project::{self, LocalFacts};
use crate::rooms::rules::{self, Seat};
use crate::rooms::{self, AuthEvents, NewEventSpec, service};
use crate::storage::{EventStatus, MemberRow, Membership, Participant, Room, RoomState, RoomType, RoomView, WriteTx};

/// The answers of a peer are bounded: a join's state and auth chain are the largest.
const MAX_JOIN_ANSWER_BYTES: usize = 64 * 1024 * 1024;

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

fn join_error(e: JoinError) -> ApiError {
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
async fn versioned_create(tx: &mut WriteTx, room_id: &str) -> ApiResult<Arc<Pdu>> {
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
    } else {
        drop(tx);
    }
    st.store.room_view(room_id, &caller.id).await?.ok_or(ApiError::RoomNotFound)
}

/// Who sends an operation's event: the caller, or, for a server admin without the room's
/// power, this server's service participant (with `sent_by` naming the admin).
async fn acting_sender(
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

async fn append_state(
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
async fn auth_for(
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
    let mut tx = st.store.write().await?;
    let room = tx.room(room_id).await?.ok_or(ApiError::RoomNotFound)?;
    if !tx.holds_room_graph(room_id).await? || room.room_type == RoomType::Incognito {
        return Err(ApiError::RoomNotFound);
    }
    if !room.federated {
        return Err(ApiError::FedDisabled("federation is off for this room".into()));
    }
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

/// A verdict of the inbound checks as a client-style error.
pub fn refusal_of(v: federation::wire::Verdict) -> ApiError {
    use federation::wire::Verdict;
    match v {
        Verdict::Accepted => ApiError::internal("an accepted event refused"),
        Verdict::Retry { message, .. } => ApiError::FedUnavailable(message),
        Verdict::Rejected { code, message } => match code.as_str() {
            "SW_FED_SIGNATURE_MISMATCH" => ApiError::FedSignatureMismatch(message),
            "SW_CONTENT_TOO_LARGE" => ApiError::ContentTooLarge(message),
            _ => ApiError::bad_request(message),
        },
    }
}

/// Who invites, and so which checks apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InviteMode {
    /// `POST /v1/rooms/{room_id}/invitations`: a joined member with the invite level.
    Member,
    /// `POST /v1/admin/rooms/{room_id}/federation/invite`: the creator, power 100, or a server
    /// admin through the service participant.
    Admin,
    /// The other party of a federated DM, invited by its creator.
    DmParty,
}

/// Invites a participant of another server: the invite is built and checked here, countersigned
/// by the invitee's server (`PUT invite/…`), then stored as this server's own event (the sender
/// delivers it to the room's other servers). Nothing is stored when the invitee's server cannot
/// be reached (502 `SW_FED_UNAVAILABLE`) or refuses (its code). `mode` picks the checks.
pub async fn invite_remote(
    st: &AppState,
    caller: &Participant,
    room_id: &str,
    fqid: &str,
    mode: InviteMode,
) -> ApiResult<(Participant, MemberRow)> {
    let as_admin = mode == InviteMode::Admin;
    let (_, server) =
        parse_fqid(fqid).ok_or_else(|| ApiError::bad_request("fqid must look like @local_id:server_name"))?;
    let server = server.to_owned();
    if service::is_service(fqid) {
        return Err(ApiError::ParticipantNotFound("a server's service participant is not a person".into()));
    }
    let (event_id, signed, version, body) = {
        let mut tx = st.store.write().await?;
        let (room, me) = rooms::load(&mut tx, room_id, caller).await?;
        let seat = Seat::of(me.as_ref());
        let levels = rooms::thresholds(&mut tx, room_id).await?;
        let mut unused = json!({});
        let sender = if as_admin {
            rules::require_owner(&room, seat, caller, "inviting through federation", rules::POWER_MAX)?;
            acting_sender(&mut tx, caller, seat, levels.invite, room_id, &mut unused).await?
        } else {
            rules::require_joined(&room, seat, caller)?;
            rules::require_power(seat, levels.invite, "inviting")?;
            caller.clone()
        };
        if mode != InviteMode::DmParty {
            rules::require_not_dm(&room, "inviting")?;
        }
        rules::require_open(&room)?;
        if !room.federated {
            return Err(ApiError::FedDisabled("federation is off for this room: federate it first".into()));
        }
        if let Some(p) = tx.participant_by_fqid(fqid).await? {
            match tx.member(room_id, &p.id).await?.map(|m| m.membership) {
                Some(Membership::Join) => return Err(ApiError::Conflict("already a member of the room".into())),
                Some(Membership::Ban) => {
                    return Err(ApiError::RoomForbidden("the participant is banned; unban them first".into()));
                }
                _ => {}
            }
        }
        let tenant = tx.tenant(&room.tenant_id).await?.ok_or(ApiError::TenantNotFound)?;
        rules::require_capacity(tx.count_members(room_id, true).await?, tenant.max_participants)?;
        let create = versioned_create(&mut tx, room_id).await?;
        let version = RoomVersion::of_create(&create).map_err(rooms::refusal)?;
        let head = tx.graph_head(room_id).await?;
        let (auth_ids, state) = auth_for(&mut tx, room_id, &sender.fqid, fqid, true).await?;
        let content = json!({"membership": "invite", "display_name": parse_fqid(fqid).map(|(l, _)| l).unwrap_or(fqid)});
        let depth = head.extremities.iter().map(|(_, d)| *d).max().unwrap_or(0) + 1;
        let prev: Vec<&str> = head.extremities.iter().map(|(id, _)| id.as_str()).collect();
        let event = json!({
            "event_uuid": ulid::Ulid::generate().to_string().to_lowercase(),
            "room_id": room_id,
            "sender": sender.fqid,
            "origin": st.fed.server_name,
            "origin_ts": now_secs(),
            "event_type": types::MEMBER,
            "state_key": fqid,
            "content": content,
            "prev_events": prev,
            "auth_events": auth_ids,
            "depth": depth,
        });
        let (event_id, signed) = crypto::prepare_event_with(version.redaction_rules(), event)
            .and_then(|u| u.sign(&st.fed.server_name, &st.keys.current))
            .map_err(ApiError::internal)?;
        let pdu = Pdu::parse(&event_id, &signed).map_err(ApiError::internal)?;
        rooms::authorize(&pdu, &state, state.create())?;
        let mut stripped = Vec::new();
        for (t, k) in fj::invite_state_keys(&sender.fqid) {
            if let Some(e) = state_event_of(&mut tx, room_id, &t, &k).await? {
                stripped.push(fj::stripped(&e));
            }
        }
        (event_id, signed.clone(), version, json!({"event": signed, "invite_room_state": stripped}))
    };
    let active = st.fed.active()?;
    let answer = active
        .client
        .request(&server, "PUT", &path::invite(room_id, &event_id), Some(&body))
        .await
        .map_err(peer_error)?;
    let back =
        answer.get("event").cloned().ok_or_else(|| ApiError::FedUnavailable(format!("{server} answered no event")))?;
    // The invitee's server adds its signature and changes nothing else.
    let same_id = crypto::event_id_with(version.redaction_rules(), &back).ok() == Some(event_id.clone());
    let countersigned = back
        .get("signatures")
        .and_then(|s| s.get(&server))
        .is_some_and(|s| s.as_object().is_some_and(|o| !o.is_empty()));
    if !same_id || !countersigned || crypto::check_content_hash(&back) != crypto::check_content_hash(&signed) {
        return Err(ApiError::FedUnavailable(format!("{server} answered another event")));
    }
    let back =
        federation::verify::verify_pdu(&active.keys, &back, version, None).await.map_err(|r| refusal_of(r.verdict))?;
    let json_str = crypto::to_canonical_string(&back.json).map_err(ApiError::internal)?;

    let mut tx = st.store.write().await?;
    let target = tx.ensure_foreign_participant(fqid, None, &caller.tenant_id, now_secs()).await?;
    let stored = tx.persist(&back.pdu, &json_str).await.map_err(ApiError::internal)?;
    if stored.status != EventStatus::Accepted {
        return Err(ApiError::Conflict("the room changed while the invite was sent; try again".into()));
    }
    if !stored.existed {
        project::apply(&mut tx, &back.pdu, None).await?;
    }
    let row = tx.member(room_id, &target.id).await?.ok_or_else(|| ApiError::internal("membership vanished"))?;
    tx.commit().await?;
    Ok((target, row))
}

async fn state_event_of(tx: &mut WriteTx, room_id: &str, event_type: &str, state_key: &str) -> ApiResult<Option<Pdu>> {
    let Some((id, Some(pdu))) = tx.state_pdu_keyed(room_id, event_type, state_key).await? else {
        return Ok(None);
    };
    Ok(Some((*tx.pdu_cache().get_or_parse(&id, &pdu).map_err(|e| ApiError::internal(e.to_string()))?).clone()))
}

/// The invitee's side of `PUT invite/{room_id}/{event_id}`: verifies the invite, checks it
/// names one of this server's participants, countersigns it and stores it so that it shows in
/// the invitee's room list and sync as a local invite does. Answers the countersigned event.
pub async fn receive_invite(
    st: &AppState,
    room_id: &str,
    event_id: &str,
    origin: &str,
    body: Option<Value>,
) -> ApiResult<Value> {
    let body = body.ok_or_else(|| ApiError::bad_request("a JSON body is required"))?;
    let event = body.get("event").cloned().ok_or_else(|| ApiError::bad_request("event is required"))?;
    let stripped: Vec<Value> = match body.get("invite_room_state") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ApiError::bad_request("invite_room_state must be a list")),
    };
    let summary = fj::read_invite_state(&stripped);
    let version = stripped
        .iter()
        .find(|s| s.get("event_type").and_then(Value::as_str) == Some(types::CREATE))
        .and_then(|s| s.get("content")?.get("room_version")?.as_str().map(str::to_owned))
        .map(|v| RoomVersion::parse(&v))
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?
        .unwrap_or(RoomVersion::V1);
    let active = st.fed.active()?;
    let verified = federation::verify::verify_pdu(&active.keys, &event, version, Some(origin))
        .await
        .map_err(|r| refusal_of(r.verdict))?;
    let pdu = verified.pdu;
    if pdu.event_id != event_id || pdu.room_id != room_id {
        return Err(ApiError::bad_request("the event is not the one the path names"));
    }
    let invitee = pdu.state_key.clone().unwrap_or_default();
    let is_invite =
        pdu.event_type == types::MEMBER && pdu.content.get("membership").and_then(Value::as_str) == Some("invite");
    if !is_invite {
        return Err(ApiError::bad_request("not an invite"));
    }
    let local = parse_fqid(&invitee).is_some_and(|(l, s)| s == st.fed.server_name && !service::is_reserved_local_id(l));
    let participant = match local {
        true => st.store.participant_by_fqid(&invitee).await?,
        false => None,
    };
    let participant = participant
        .filter(|p| p.server_name == st.fed.server_name)
        .ok_or_else(|| ApiError::ParticipantNotFound(format!("{invitee} is not a participant of this server")))?;
    let workspace = st
        .store
        .personal_workspace(&participant.id)
        .await?
        .ok_or_else(|| ApiError::internal("the invitee has no personal workspace"))?;
    let mut json = verified.json;
    crypto::countersign_event(version.redaction_rules(), &mut json, &st.fed.server_name, &st.keys.current)
        .map_err(ApiError::internal)?;
    let json_str = crypto::to_canonical_string(&json).map_err(ApiError::internal)?;

    let mut tx = st.store.write().await?;
    if tx.holds_room_graph(room_id).await? {
        // A room this server is in: the invite is an event like any other.
        let stored = tx.persist(&pdu, &json_str).await.map_err(ApiError::internal)?;
        if stored.status != EventStatus::Accepted {
            return Err(ApiError::RoomForbidden("the room's rules refuse this invite".into()));
        }
        if !stored.existed {
            project::apply(&mut tx, &pdu, None).await?;
        }
    } else {
        if tx.room(room_id).await?.is_none() {
            let creator_fqid = summary.creator.clone().unwrap_or_else(|| pdu.sender.clone());
            if parse_fqid(&creator_fqid).is_none_or(|(_, s)| s == st.fed.server_name) {
                return Err(ApiError::bad_request("the invite's room has no creator of another server"));
            }
            let creator =
                tx.ensure_foreign_participant(&creator_fqid, None, &participant.tenant_id, now_secs()).await?;
            let room_type = summary
                .room_type
                .as_deref()
                .and_then(|t| serde_json::from_value(Value::String(t.to_owned())).ok())
                .filter(|t| *t != RoomType::Incognito)
                .unwrap_or(RoomType::Group);
            let name = summary.name.as_deref().map(rooms::clean_name).transpose().ok().flatten();
            let topic = rooms::clean_topic(summary.topic.as_deref()).ok().flatten();
            tx.insert_room(&Room {
                id: room_id.to_owned(),
                tenant_id: participant.tenant_id.clone(),
                room_alias: None,
                room_type,
                name,
                topic,
                workspace_id: workspace.id.clone(),
                creator_id: creator.id,
                created_at: now_secs(),
                state: RoomState::Open,
                federated: true,
                dm_key: None,
            })
            .await?;
        }
        let inviter = tx.ensure_foreign_participant(&pdu.sender, None, &participant.tenant_id, now_secs()).await?;
        tx.persist_unplaced(&pdu, &json_str, EventStatus::Accepted).await?;
        let shown = match dm_parties_of(&stripped, &participant.fqid, &inviter.fqid) {
            true => settle_dm(&mut tx, room_id, &participant, &inviter).await?,
            false => true,
        };
        if shown {
            tx.set_membership(room_id, &participant.id, Membership::Invite, None, now_secs()).await?;
        }
    }
    tx.commit().await?;
    Ok(json!({"event": json}))
}

/// The servers to ask for a remote join or leave, in order: `via`, the inviter's server, the
/// servers this server knows in the room; never this one, each once.
async fn candidates(st: &AppState, room_id: &str, fqid: &str, via: &[String]) -> ApiResult<Vec<String>> {
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
struct Remote {
    event: Value,
    pdu: Pdu,
    answer: Value,
}

/// `make_*` then `send_*` against one server.
async fn remote_membership(
    st: &AppState,
    server: &str,
    room_id: &str,
    caller: &Participant,
    membership: &str,
) -> ApiResult<Remote> {
    let active = st.fed.active()?;
    let (make, send): (String, fn(&str, &str) -> String) = if membership == "join" {
        (path::make_join(room_id, &caller.fqid), |r, e| path::send_join(r, e, false))
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
async fn verify_all(st: &AppState, list: Option<&Value>) -> ApiResult<Vec<(Pdu, Value)>> {
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

async fn join_via(st: &AppState, server: &str, caller: &Participant, room_id: &str) -> ApiResult<RoomView> {
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
    tx.commit().await?;
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

/// Whether the stripped state names a DM whose two parties are `a` and `b`.
fn dm_parties_of(stripped: &[Value], a: &str, b: &str) -> bool {
    stripped.iter().any(|e| {
        e.get("event_type").and_then(Value::as_str) == Some(types::CREATE)
            && e.get("content").and_then(|c| c.get("room_type")).and_then(Value::as_str) == Some("dm")
            && e.get("content").and_then(|c| c.get("dm_parties")).and_then(Value::as_array).is_some_and(|p| {
                p.len() == 2 && p.iter().any(|x| x.as_str() == Some(a)) && p.iter().any(|x| x.as_str() == Some(b))
            })
    })
}

/// An invite to a federated DM of a pair that may already have one here. The pair keeps one
/// DM: the room whose id sorts first. When the invite's room wins, an open DM of the pair
/// created here is closed with `replaced_by` pointing at it, and the invite's room becomes the
/// pair's DM; when it loses, the invite is stored but not shown (its creator's server closes
/// that room when our own invite reaches it). Answers whether to show the invite.
async fn settle_dm(tx: &mut WriteTx, room_id: &str, local: &Participant, remote: &Participant) -> ApiResult<bool> {
    let key = rules::dm_key(&local.id, &remote.id);
    if let Some(existing) = tx.open_dm(&key).await? {
        if existing.id.as_str() < room_id {
            return Ok(false);
        }
        if existing.id != room_id {
            close_replaced_dm(tx, &existing.id, local, room_id).await?;
        }
    }
    tx.set_room_dm_key(room_id, Some(&key)).await?;
    Ok(true)
}

/// Closes a DM that another room of the same pair replaces, by a lifecycle event of the local
/// party whose content points at the room kept: `{state: "closed", replaced_by}`.
async fn close_replaced_dm(tx: &mut WriteTx, room_id: &str, local: &Participant, kept: &str) -> ApiResult<()> {
    if tx.holds_room_graph(room_id).await? {
        let content = json!({"state": "closed", "replaced_by": kept});
        append_state(tx, room_id, local, types::LIFECYCLE, "", &content).await?;
    } else {
        // An invite only: nothing of it is in this server's hands but the local view.
        tx.set_room_state(room_id, RoomState::Closed).await?;
    }
    tx.set_room_dm_key(room_id, None).await?;
    Ok(())
}

/// `POST /v1/me/federated-dms {fqid}`: the DM of the caller and a participant of another
/// server, made if missing (a federated `dm` room whose create event names both parties, the
/// other party invited), else the pair's DM as it is: an invitation from the other side is
/// joined, a room made here whose invite did not get through invites again. Answers whether a
/// room was created.
pub async fn federated_dm(st: &AppState, caller: &Participant, fqid: &str) -> ApiResult<(RoomView, bool)> {
    if service::is_service(fqid) {
        return Err(ApiError::ParticipantNotFound("a server's service participant is not a person".into()));
    }
    let other = {
        let mut tx = st.store.write().await?;
        let p = tx.ensure_foreign_participant(fqid, None, &caller.tenant_id, now_secs()).await?;
        tx.commit().await?;
        p
    };
    let key = rules::dm_key(&caller.id, &other.id);
    if let Some(v) = existing_dm(st, caller, &other, &key).await? {
        return Ok((v, false));
    }
    rooms::take_room_creation(&st.room_creation, caller)?;
    let workspace_id = rooms::workspace_of_caller(&st.store, caller, None).await?;
    let room = Room {
        id: crate::ids::new_room_id(),
        tenant_id: caller.tenant_id.clone(),
        room_alias: None,
        room_type: RoomType::Dm,
        name: None,
        topic: None,
        workspace_id,
        creator_id: caller.id.clone(),
        created_at: now_secs(),
        state: RoomState::Open,
        federated: false,
        dm_key: Some(key.clone()),
    };
    {
        let mut tx = st.store.write().await?;
        if tx.open_dm(&key).await?.is_some() {
            // The other side's invite came in meanwhile.
            drop(tx);
            let v = existing_dm(st, caller, &other, &key).await?.ok_or(ApiError::RoomNotFound)?;
            return Ok((v, false));
        }
        populate_federated_dm(&mut tx, &room, caller, &other).await?;
        tx.commit().await?;
    }
    let invited = invite_remote(st, caller, &room.id, &other.fqid, InviteMode::DmParty).await;
    // Both sides may have made one at the same moment: the pair's DM is the one still open.
    let open = {
        let mut tx = st.store.write().await?;
        tx.open_dm(&key).await?.map(|r| r.id)
    };
    if open.is_some_and(|id| id != room.id)
        && let Some(v) = existing_dm(st, caller, &other, &key).await?
    {
        return Ok((v, false));
    }
    invited?;
    let v = st.store.room_view(&room.id, &caller.id).await?.ok_or(ApiError::RoomNotFound)?;
    Ok((v, true))
}

/// The pair's open DM, brought to a state where the caller is joined and the other party at
/// least invited; `None` when there is none.
async fn existing_dm(
    st: &AppState,
    caller: &Participant,
    other: &Participant,
    key: &str,
) -> ApiResult<Option<RoomView>> {
    let (room, mine, theirs, resident) = {
        let mut tx = st.store.write().await?;
        let Some(room) = tx.open_dm(key).await? else { return Ok(None) };
        let mine = tx.member(&room.id, &caller.id).await?.map(|m| m.membership);
        let theirs = tx.member(&room.id, &other.id).await?.map(|m| m.membership);
        let resident = tx.holds_room_graph(&room.id).await?;
        (room, mine, theirs, resident)
    };
    let v = match (resident, mine) {
        (false, _) => join_remote(st, caller, &room.id, &[]).await?,
        (true, Some(Membership::Join)) => {
            st.store.room_view(&room.id, &caller.id).await?.ok_or(ApiError::RoomNotFound)?
        }
        (true, _) => rooms::join(&st.store, caller, &room.id).await?,
    };
    if resident && !matches!(theirs, Some(Membership::Join | Membership::Invite)) && room.creator_id == caller.id {
        invite_remote(st, caller, &room.id, &other.fqid, InviteMode::DmParty).await?;
    }
    Ok(Some(v))
}

/// The opening events of a federated DM made here: create (naming both parties and this
/// server's service participant), the creator's join, power levels (both parties and the
/// service participant at 100), the invite-only join rule, the service participant's join and
/// the federation switch on. The other party comes in through an invite.
async fn populate_federated_dm(
    tx: &mut WriteTx,
    room: &Room,
    creator: &Participant,
    other: &Participant,
) -> ApiResult<()> {
    let service = service::ensure(tx, &room.tenant_id).await?;
    let create = json!({
        "creator": creator.fqid,
        "room_type": room.room_type,
        "tenant_id": room.tenant_id,
        "room_version": RoomVersion::V1.as_str(),
        "dm_parties": [creator.fqid, other.fqid],
        "dm_service": service.fqid,
    });
    let local = LocalFacts {
        tenant_id: &room.tenant_id,
        workspace_id: &room.workspace_id,
        room_alias: None,
        dm_key: room.dm_key.as_deref(),
    };
    let spec = NewEventSpec {
        room_id: &room.id,
        sender_id: &creator.id,
        event_type: types::CREATE,
        state_key: Some(""),
        content: &create,
        event_uuid: None,
        relates_to: None,
        unsigned: None,
    };
    rooms::append_projected(tx, spec, creator.fqid.clone(), Some(&local)).await?;
    let member = |p: &Participant| json!({"membership": "join", "display_name": p.display_name});
    append_state(tx, &room.id, creator, types::MEMBER, &creator.fqid, &member(creator)).await?;
    let users: serde_json::Map<String, Value> =
        [creator, other, &service].iter().map(|p| (p.fqid.clone(), json!(rules::POWER_MAX))).collect();
    append_state(tx, &room.id, creator, types::POWER_LEVELS, "", &rules::default_power_levels(users)).await?;
    append_state(tx, &room.id, creator, types::JOIN_RULES, "", &json!({"join_rule": "invite"})).await?;
    append_state(tx, &room.id, &service, types::MEMBER, &service.fqid, &member(&service)).await?;
    append_state(tx, &room.id, creator, types::FEDERATION, "", &json!({"enabled": true})).await?;
    Ok(())
}
