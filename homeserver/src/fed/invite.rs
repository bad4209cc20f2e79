//! Invites that cross servers: inviting a participant of another server (the invitee's server
//! countersigns), and this server's side of an invite of one of its participants
//! (`fed/endpoints/invite.rs`). Part of the membership flows of [`super::join`].

use super::dm::{dm_parties_of, settle_dm};
use super::join::*;
use crate::api::AppState;
use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::rooms::project::{self};
use crate::rooms::rules::{self, Seat};
use crate::rooms::{self, service};
use crate::storage::{EventStatus, MemberRow, Membership, Participant, Room, RoomState, RoomType, WriteTx};
use federation::auth::RoomVersion;
use federation::event::{Pdu, parse_fqid, types};
use federation::join::{self as fj};
use federation::wire::path;
use serde_json::{Value, json};

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
    super::policy::check_invite_to(st, &server)?;
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
        if !super::policy::acl_allows(&st.store, room_id, &server).await? {
            return Err(ApiError::FedPeerUnknown(format!("the room's server lists refuse {server}")));
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

pub(super) async fn state_event_of(
    tx: &mut WriteTx,
    room_id: &str,
    event_type: &str,
    state_key: &str,
) -> ApiResult<Option<Pdu>> {
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
    // A room this server holds whose server lists refuse the inviting server: refused like
    // every other endpoint of the room.
    if !super::policy::acl_allows(&st.store, room_id, origin).await? {
        return Err(ApiError::FedPeerUnknown(format!("the room's server lists refuse {origin}")));
    }
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
