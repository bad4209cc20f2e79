//! Federated DMs: `POST /v1/me/federated-dms`, one room per pair from both sides, and the rule
//! that settles two DMs made at the same moment (the room id that sorts first is kept).

use super::join::*;
use crate::api::AppState;
use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::rooms::project::LocalFacts;
use crate::rooms::rules::{self};
use crate::rooms::{self, NewEventSpec, service};
use crate::storage::{Membership, Participant, Room, RoomState, RoomType, RoomView, WriteTx};
use federation::auth::RoomVersion;
use federation::event::types;
use serde_json::{Value, json};

/// Whether the stripped state names a DM whose two parties are `a` and `b`.
pub(super) fn dm_parties_of(stripped: &[Value], a: &str, b: &str) -> bool {
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
pub(super) async fn settle_dm(
    tx: &mut WriteTx,
    room_id: &str,
    local: &Participant,
    remote: &Participant,
) -> ApiResult<bool> {
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
pub(super) async fn close_replaced_dm(
    tx: &mut WriteTx,
    room_id: &str,
    local: &Participant,
    kept: &str,
) -> ApiResult<()> {
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
pub(super) async fn existing_dm(
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
pub(super) async fn populate_federated_dm(
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
