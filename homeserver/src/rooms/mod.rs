//! Room operations: each reads what it needs inside one write transaction, decides with the
//! pure rules of [`rules`], builds the change as a room event, runs the room's authorization
//! rules on it, appends it, lets [`project`] apply it to the rooms and memberships rows, then
//! commits.

mod append;
pub mod project;
pub mod rules;
pub mod service;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use federation::auth::{AuthError, AuthState, RoomVersion};
use federation::event::{Pdu, StateKey};

use serde_json::{Value, json};

use crate::clock::now_secs;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::ratelimit::Throttle;
use crate::storage::{
    EventSigner, LocalAppend, MemberRow, MemberWithParticipant, Membership, NewEvent, NotificationMode, Participant,
    Room, RoomState, RoomType, RoomView, Store, WriteTx,
};
pub use append::*;
use project::LocalFacts;
use rules::Seat;

pub const MAX_NAME_CHARS: usize = 255;
pub const MAX_TOPIC_CHARS: usize = 4096;
pub const MAX_REASON_CHARS: usize = 1024;

/// The event types, shared with the federation crate's rules.
pub use federation::event::types as event_types;

/// What `POST /v1/rooms` asks for, already shape-checked by the API layer.
pub struct CreateRoom {
    pub room_type: RoomType,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub workspace_id: Option<String>,
}

pub enum Lifecycle {
    Close,
    Archive,
    Restore,
}

pub enum Moderation {
    Invite,
    Kick,
    Ban,
    Unban,
}

pub fn clean_name(name: &str) -> ApiResult<String> {
    let name = crate::names::clean("name", name, crate::names::Lines::One)?;
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::bad_request(format!("name must be 1 to {MAX_NAME_CHARS} characters")));
    }
    Ok(name)
}

pub fn clean_topic(topic: Option<&str>) -> ApiResult<Option<String>> {
    let topic = topic.map(|t| crate::names::clean("topic", t, crate::names::Lines::Many)).transpose()?;
    match topic.as_deref() {
        None | Some("") => Ok(None),
        Some(t) if t.chars().count() > MAX_TOPIC_CHARS => {
            Err(ApiError::bad_request(format!("topic must be at most {MAX_TOPIC_CHARS} characters")))
        }
        Some(t) => Ok(Some(t.to_string())),
    }
}

pub fn clean_reason(reason: Option<&str>) -> ApiResult<Option<String>> {
    match reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => {
            Err(ApiError::bad_request(format!("reason must be at most {MAX_REASON_CHARS} characters")))
        }
        other => Ok(other.map(str::to_string)),
    }
}

pub async fn load(tx: &mut WriteTx, room_id: &str, caller: &Participant) -> ApiResult<(Room, Option<MemberRow>)> {
    let room = tx.room(room_id).await?.ok_or(ApiError::RoomNotFound)?;
    let me = tx.member(room_id, &caller.id).await?;
    Ok((room, me))
}

async fn emit_membership(
    tx: &mut WriteTx,
    room_id: &str,
    sender: &Participant,
    target: &Participant,
    membership: Membership,
    reason: Option<&str>,
) -> ApiResult<()> {
    let mut content = json!({"membership": membership.as_str(), "display_name": target.display_name});
    if let Some(r) = reason {
        content["reason"] = json!(r);
    }
    emit(tx, room_id, sender, event_types::MEMBER, Some(&target.fqid), content).await?;
    Ok(())
}

/// The thresholds of the room's current power-levels event (the defaults of [`rules`] for
/// what it leaves out, or when its wire form predates migration 4).
pub(crate) async fn thresholds(tx: &mut WriteTx, room_id: &str) -> ApiResult<rules::Thresholds> {
    let event = project::state_event(tx, room_id, event_types::POWER_LEVELS).await?;
    Ok(event.and_then(|e| rules::Thresholds::of(&e.content)).unwrap_or_default())
}

/// The content of the room's current power-levels event, to change one entry of: rebuilt from
/// the members' levels when its wire form predates migration 4.
async fn power_levels_content(tx: &mut WriteTx, room_id: &str) -> ApiResult<Value> {
    if let Some(event) = project::state_event(tx, room_id, event_types::POWER_LEVELS).await? {
        return Ok(Value::Object(event.content.clone()));
    }
    let users = tx.power_users(room_id).await?.into_iter().map(|(fqid, level)| (fqid, json!(level))).collect();
    Ok(rules::default_power_levels(users))
}

async fn view(store: &Store, room_id: &str, caller: &Participant) -> ApiResult<RoomView> {
    store.room_view(room_id, &caller.id).await?.ok_or(ApiError::RoomNotFound)
}

/// Finds a free `#slug:server` alias, numbering duplicates.
pub(crate) async fn free_alias(tx: &mut WriteTx, name: &str, server_name: &str) -> ApiResult<String> {
    let slug = ids::alias_slug(name);
    for n in 1..=20 {
        let candidate = if n == 1 { format!("#{slug}:{server_name}") } else { format!("#{slug}-{n}:{server_name}") };
        if !tx.alias_taken(&candidate).await? {
            return Ok(candidate);
        }
    }
    Ok(format!("#{slug}-{}:{server_name}", ulid::Ulid::generate().to_string().to_lowercase()))
}

pub(crate) async fn workspace_of_caller(
    store: &Store,
    caller: &Participant,
    workspace_id: Option<&str>,
) -> ApiResult<String> {
    match workspace_id {
        Some(id) => {
            let ws = if ids::is_workspace_id(id) { store.workspace(id).await? } else { None };
            match ws {
                Some(ws) if ws.owner_id == caller.id => Ok(ws.id),
                _ => Err(ApiError::bad_request("workspace_id names no workspace of yours")),
            }
        }
        None => store
            .personal_workspace(&caller.id)
            .await?
            .map(|w| w.id)
            .ok_or_else(|| ApiError::internal(format!("participant {} has no personal workspace", caller.id))),
    }
}

/// Takes one room creation (a room, a new DM, an import) from the caller's allowance,
/// `limits.room_creation_per_participant`; over it: 429 `SW_RATE_LIMIT_EXCEEDED`.
pub fn take_room_creation(limit: &Throttle, caller: &Participant) -> ApiResult<()> {
    limit
        .try_take(&caller.id, Instant::now())
        .map_err(|wait| ApiError::RateLimited(format!("too many rooms created; try again in {wait} s"), wait))
}

pub async fn create_room(
    store: &Store,
    config: &Config,
    limit: &Throttle,
    caller: &Participant,
    req: CreateRoom,
) -> ApiResult<RoomView> {
    if req.room_type == RoomType::Dm {
        return Err(ApiError::RoomTypeInvariant("direct messages are created with POST /v1/rooms/dm".into()));
    }
    let name = match (&req.name, req.room_type) {
        (Some(n), _) => clean_name(n)?,
        (None, RoomType::Incognito) => "Incognito room".to_string(),
        (None, _) => return Err(ApiError::bad_request("name is required for group and public rooms")),
    };
    let topic = clean_topic(req.topic.as_deref())?;
    let workspace_id = workspace_of_caller(store, caller, req.workspace_id.as_deref()).await?;
    take_room_creation(limit, caller)?;
    let now = now_secs();
    let room_id = ids::new_room_id();

    let mut tx = store.write().await?;
    let room_alias = Some(free_alias(&mut tx, &name, &config.server_name).await?);
    let room = Room {
        id: room_id.clone(),
        tenant_id: caller.tenant_id.clone(),
        room_alias,
        room_type: req.room_type,
        name: Some(name.clone()),
        topic: topic.clone(),
        workspace_id,
        creator_id: caller.id.clone(),
        created_at: now,
        state: RoomState::Open,
        federated: false,
        dm_key: None,
    };
    populate_new_room(&mut tx, &room, caller, &[]).await?;
    tx.commit().await?;
    view(store, &room_id, caller).await
}

/// The opening events of a room: create, the creator's join, power levels, join rule, the
/// service participant's seat, name, topic; `also_joined` are joined alongside the creator
/// (the other side of a DM). `room` is the room as intended: the projector makes its row from
/// the create event and the local facts, then from each event in turn.
pub(crate) async fn populate_new_room(
    tx: &mut WriteTx,
    room: &Room,
    creator: &Participant,
    also_joined: &[&Participant],
) -> ApiResult<()> {
    let service = service::ensure(tx, &room.tenant_id).await?;
    let dm = room.room_type == RoomType::Dm;
    // The room version picks the rules every replica applies (`federation::auth`); a DM names
    // its two parties, the only people its rules seat, and this server's service participant.
    let mut create = json!({
        "creator": creator.fqid,
        "room_type": room.room_type,
        "tenant_id": room.tenant_id,
        "room_version": federation::auth::RoomVersion::V1.as_str(),
    });
    if dm {
        let parties: Vec<&str> =
            std::iter::once(creator.fqid.as_str()).chain(also_joined.iter().map(|p| p.fqid.as_str())).collect();
        create["dm_parties"] = json!(parties);
        create["dm_service"] = json!(service.fqid);
    }
    let local = LocalFacts {
        tenant_id: &room.tenant_id,
        workspace_id: &room.workspace_id,
        room_alias: room.room_alias.as_deref(),
        dm_key: room.dm_key.as_deref(),
    };
    let spec = NewEventSpec {
        room_id: &room.id,
        sender_id: &creator.id,
        event_type: event_types::CREATE,
        state_key: Some(""),
        content: &create,
        event_uuid: None,
        relates_to: None,
        unsigned: None,
    };
    append_projected(tx, spec, creator.fqid.clone(), Some(&local)).await?;
    emit_membership(tx, &room.id, creator, creator, Membership::Join, None).await?;
    for other in also_joined {
        // A join is its joiner's own event: the rules refuse one member joining another.
        emit_membership(tx, &room.id, other, other, Membership::Join, None).await?;
    }
    // The creator (and a DM's other party) and the service participant hold the top level.
    let users: serde_json::Map<String, Value> = std::iter::once(creator)
        .chain(also_joined.iter().copied())
        .chain(std::iter::once(&service))
        .map(|p| (p.fqid.clone(), json!(rules::POWER_MAX)))
        .collect();
    emit(tx, &room.id, creator, event_types::POWER_LEVELS, Some(""), rules::default_power_levels(users)).await?;
    let join_rule = if room.room_type == RoomType::Public { "public" } else { "invite" };
    emit(tx, &room.id, creator, event_types::JOIN_RULES, Some(""), json!({"join_rule": join_rule})).await?;
    // A DM's rules seat the service participant as its create event names it; elsewhere it
    // comes in as anyone does: invited, unless the room is public.
    if !dm && join_rule == "invite" {
        emit_membership(tx, &room.id, creator, &service, Membership::Invite, None).await?;
    }
    emit_membership(tx, &room.id, &service, &service, Membership::Join, None).await?;
    if let Some(name) = &room.name {
        emit(tx, &room.id, creator, event_types::NAME, Some(""), json!({"name": name})).await?;
    }
    if let Some(topic) = &room.topic {
        emit(tx, &room.id, creator, event_types::TOPIC, Some(""), json!({"topic": topic})).await?;
    }
    Ok(())
}

/// Creates the DM between the caller and `other`, or returns the open one (re-joining either
/// side that had left). Answers whether a room was created. Only creating one counts against
/// the caller's room-creation allowance.
pub async fn open_dm(
    store: &Store,
    limit: &Throttle,
    caller: &Participant,
    other: &Participant,
) -> ApiResult<(RoomView, bool)> {
    if other.id == caller.id {
        return Err(ApiError::RoomTypeInvariant("a direct message needs two different participants".into()));
    }
    if service::is_service(&other.fqid) {
        return Err(ApiError::ParticipantNotFound("the server's service participant is not a person".into()));
    }
    let key = rules::dm_key(&caller.id, &other.id);
    let now = now_secs();
    let mut tx = store.write().await?;
    if let Some(room) = tx.open_dm(&key).await? {
        for p in [caller, other] {
            let seat = Seat::of(tx.member(&room.id, &p.id).await?.as_ref());
            if !seat.joined() {
                emit_membership(&mut tx, &room.id, p, p, Membership::Join, None).await?;
            }
        }
        tx.commit().await?;
        return Ok((view(store, &room.id, caller).await?, false));
    }
    take_room_creation(limit, caller)?;
    let workspace_id = workspace_of_caller(store, caller, None).await?;
    let room = Room {
        id: ids::new_room_id(),
        tenant_id: caller.tenant_id.clone(),
        room_alias: None,
        room_type: RoomType::Dm,
        name: None,
        topic: None,
        workspace_id,
        creator_id: caller.id.clone(),
        created_at: now,
        state: RoomState::Open,
        federated: false,
        dm_key: Some(key),
    };
    populate_new_room(&mut tx, &room, caller, &[other]).await?;
    tx.commit().await?;
    Ok((view(store, &room.id, caller).await?, true))
}

pub async fn get_room(store: &Store, caller: &Participant, room_id: &str) -> ApiResult<RoomView> {
    let v = view(store, room_id, caller).await?;
    let seat = Seat { membership: v.my_membership, power: v.my_power_level.unwrap_or(0) };
    rules::require_visible(&v.room, seat, caller)?;
    if seat.membership == Some(Membership::Ban) {
        return Err(ApiError::RoomForbidden("you are banned from this room".into()));
    }
    Ok(v)
}

pub async fn members(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    filter: &[Membership],
) -> ApiResult<Vec<MemberWithParticipant>> {
    let v = view(store, room_id, caller).await?;
    let seat = Seat { membership: v.my_membership, power: v.my_power_level.unwrap_or(0) };
    rules::require_joined_or_invited(&v.room, seat, caller)?;
    Ok(store.members(room_id, filter).await?)
}

pub async fn join(store: &Store, caller: &Participant, room_id: &str) -> ApiResult<RoomView> {
    let mut tx = store.write().await?;
    let (room, me) = load(&mut tx, room_id, caller).await?;
    let seat = Seat::of(me.as_ref());
    rules::require_visible(&room, seat, caller)?;
    match seat.membership {
        Some(Membership::Ban) => return Err(ApiError::RoomForbidden("you are banned from this room".into())),
        Some(Membership::Join) => {
            drop(tx);
            return view(store, room_id, caller).await;
        }
        _ => {}
    }
    // A DM seats its two participants only: a server admin sees every room, not a seat in it.
    rules::require_dm_party(&room, &caller.id)?;
    let allowed = seat.membership == Some(Membership::Invite)
        || (room.room_type == RoomType::Public && room.tenant_id == caller.tenant_id)
        || room.room_type == RoomType::Dm;
    if !allowed {
        return Err(ApiError::RoomForbidden("this room needs an invitation".into()));
    }
    rules::require_open(&room)?;
    let tenant = tx.tenant(&room.tenant_id).await?.ok_or(ApiError::TenantNotFound)?;
    rules::require_capacity(tx.count_members(room_id, false).await?, tenant.max_participants)?;
    // The level comes back from the power-levels event, where it stayed while out.
    emit_membership(&mut tx, room_id, caller, caller, Membership::Join, None).await?;
    tx.commit().await?;
    view(store, room_id, caller).await
}

/// Leaving a joined room, or declining an invitation. The last owner (level 100) of a room
/// with other joined members must hand the room over first: 409 `SW_ROOM_LAST_OWNER`.
pub async fn leave(store: &Store, caller: &Participant, room_id: &str) -> ApiResult<()> {
    let mut tx = store.write().await?;
    let (room, me) = load(&mut tx, room_id, caller).await?;
    let seat = Seat::of(me.as_ref());
    rules::require_joined_or_invited(&room, seat, caller)?;
    rules::require_open(&room)?;
    if seat.effective_power() >= rules::POWER_OWNER {
        // The service participant has no membership row: it is neither an owner nor a member.
        let others = tx.count_members(room_id, false).await? - 1;
        let other_owners = tx.count_joined_at_least(room_id, rules::POWER_OWNER).await? - 1;
        rules::require_not_last_owner(others, other_owners)?;
    }
    emit_membership(&mut tx, room_id, caller, caller, Membership::Leave, None).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn set_lifecycle(store: &Store, caller: &Participant, room_id: &str, op: Lifecycle) -> ApiResult<RoomView> {
    let mut tx = store.write().await?;
    let (room, me) = load(&mut tx, room_id, caller).await?;
    let seat = Seat::of(me.as_ref());
    let (what, target) = match op {
        Lifecycle::Close => ("closing the room", RoomState::Closed),
        Lifecycle::Archive => ("archiving the room", RoomState::Archived),
        Lifecycle::Restore => ("restoring the room", RoomState::Open),
    };
    let needed = thresholds(&mut tx, room_id).await?.state(event_types::LIFECYCLE);
    rules::require_owner(&room, seat, caller, what, needed)?;
    let changes = match (room.state, target) {
        (RoomState::Closed, _) => return Err(ApiError::RoomFrozen("the room is closed for good".into())),
        (from, to) if from == to => false,
        _ => true,
    };
    if changes {
        let mut content = json!({"state": target});
        // A server admin without the room's own power acts through this server's service
        // participant, which the room's rules know; `sent_by` names the admin.
        let service = if caller.is_admin && seat.effective_power() < needed {
            let service = service::joined_in(&mut tx, room_id).await?.ok_or_else(|| {
                ApiError::RoomForbidden(format!(
                    "{what} needs power level {needed} in the room: this server has no seat in it to act through"
                ))
            })?;
            content[crate::messages::SENT_BY] = json!(caller.fqid);
            Some(service)
        } else {
            None
        };
        let sender = service.as_ref().unwrap_or(caller);
        emit(&mut tx, room_id, sender, event_types::LIFECYCLE, Some(""), content).await?;
        tx.commit().await?;
    }
    view(store, room_id, caller).await
}

/// Invite, kick, ban and unban: one participant's membership changed by another.
pub async fn moderate(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    target: &Participant,
    op: Moderation,
    reason: Option<&str>,
) -> ApiResult<MemberRow> {
    let mut tx = store.write().await?;
    let (room, me) = load(&mut tx, room_id, caller).await?;
    let seat = Seat::of(me.as_ref());
    rules::require_joined(&room, seat, caller)?;
    let what = match op {
        Moderation::Invite => "inviting",
        Moderation::Kick => "kicking",
        Moderation::Ban => "banning",
        Moderation::Unban => "unbanning",
    };
    rules::require_not_dm(&room, what)?;
    // Its seat is the server's, taken when the room is created: nobody moves it.
    if service::is_service(&target.fqid) {
        return Err(ApiError::ParticipantNotFound("the server's service participant is not a person".into()));
    }
    let levels = thresholds(&mut tx, room_id).await?;
    let target_row = tx.member(room_id, &target.id).await?;
    let target_seat = Seat::of(target_row.as_ref());
    let target_power = target_row.as_ref().map(|m| m.power_level).unwrap_or(0);
    let new_membership = match op {
        Moderation::Invite => {
            rules::require_power(seat, levels.invite, what)?;
            rules::require_open(&room)?;
            match target_seat.membership {
                Some(Membership::Join) => return Err(ApiError::Conflict("already a member of the room".into())),
                Some(Membership::Ban) => {
                    return Err(ApiError::RoomForbidden("the participant is banned; unban them first".into()));
                }
                Some(Membership::Invite) => return Ok(target_row.expect("invite row exists")),
                _ => {}
            }
            let tenant = tx.tenant(&room.tenant_id).await?.ok_or(ApiError::TenantNotFound)?;
            rules::require_capacity(tx.count_members(room_id, true).await?, tenant.max_participants)?;
            Membership::Invite
        }
        Moderation::Kick => {
            rules::require_above(seat, levels.kick, target_power, what)?;
            rules::require_open(&room)?;
            if !matches!(target_seat.membership, Some(Membership::Join | Membership::Invite)) {
                return Err(ApiError::ParticipantNotFound("the participant is not in this room".into()));
            }
            Membership::Leave
        }
        Moderation::Ban => {
            rules::require_above(seat, levels.ban, target_power, what)?;
            rules::require_open(&room)?;
            if target_seat.membership == Some(Membership::Ban) {
                return Ok(target_row.expect("ban row exists"));
            }
            Membership::Ban
        }
        Moderation::Unban => {
            rules::require_above(seat, levels.ban, target_power, what)?;
            rules::require_open(&room)?;
            if target_seat.membership != Some(Membership::Ban) {
                return Err(ApiError::ParticipantNotFound("the participant is not banned from this room".into()));
            }
            Membership::Leave
        }
    };
    emit_membership(&mut tx, room_id, caller, target, new_membership, reason).await?;
    let row = tx.member(room_id, &target.id).await?.ok_or_else(|| ApiError::internal("membership vanished"))?;
    tx.commit().await?;
    Ok(row)
}

pub async fn rename(store: &Store, caller: &Participant, room_id: &str, name: &str) -> ApiResult<RoomView> {
    let name = clean_name(name)?;
    let mut tx = store.write().await?;
    let (room, me) = load(&mut tx, room_id, caller).await?;
    let seat = Seat::of(me.as_ref());
    rules::require_joined(&room, seat, caller)?;
    rules::require_not_dm(&room, "renaming")?;
    let needed = thresholds(&mut tx, room_id).await?.state(event_types::NAME);
    rules::require_power(seat, needed, "renaming the room")?;
    rules::require_open(&room)?;
    if room.name.as_deref() != Some(name.as_str()) {
        emit(&mut tx, room_id, caller, event_types::NAME, Some(""), json!({"name": name})).await?;
        tx.commit().await?;
    }
    view(store, room_id, caller).await
}

pub async fn set_topic(store: &Store, caller: &Participant, room_id: &str, topic: Option<&str>) -> ApiResult<RoomView> {
    let topic = clean_topic(topic)?;
    let mut tx = store.write().await?;
    let (room, me) = load(&mut tx, room_id, caller).await?;
    let seat = Seat::of(me.as_ref());
    rules::require_joined(&room, seat, caller)?;
    let needed = thresholds(&mut tx, room_id).await?.state(event_types::TOPIC);
    rules::require_power(seat, needed, "setting the topic")?;
    rules::require_open(&room)?;
    if room.topic != topic {
        emit(&mut tx, room_id, caller, event_types::TOPIC, Some(""), json!({"topic": topic})).await?;
        tx.commit().await?;
    }
    view(store, room_id, caller).await
}

/// Moving a room between workspaces is local organisation, not room state: no event, and it
/// is allowed while the room is frozen.
pub async fn move_to_workspace(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    workspace_id: &str,
) -> ApiResult<RoomView> {
    let workspace_id = workspace_of_caller(store, caller, Some(workspace_id)).await?;
    let mut tx = store.write().await?;
    let (room, me) = load(&mut tx, room_id, caller).await?;
    let needed = thresholds(&mut tx, room_id).await?.state(event_types::LIFECYCLE);
    rules::require_owner(&room, Seat::of(me.as_ref()), caller, "moving the room", needed)?;
    tx.set_room_workspace(room_id, &workspace_id).await?;
    tx.commit().await?;
    view(store, room_id, caller).await
}

pub async fn set_power_level(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    target: &Participant,
    level: i64,
) -> ApiResult<MemberRow> {
    if !(0..=rules::POWER_MAX).contains(&level) {
        return Err(ApiError::bad_request("power_level must be between 0 and 100"));
    }
    let mut tx = store.write().await?;
    let (room, me) = load(&mut tx, room_id, caller).await?;
    let seat = Seat::of(me.as_ref());
    rules::require_joined(&room, seat, caller)?;
    rules::require_not_dm(&room, "changing power levels")?;
    // Members who are out (left, kicked, banned) keep their level for a re-join, in the
    // power-levels event, so it can be set while they are out, by the same rules as for members.
    let target_row = tx.member(room_id, &target.id).await?;
    rules::require_power_target(target_row.as_ref().map(|m| m.membership))?;
    let target_row = target_row.expect("checked above");
    let needed = thresholds(&mut tx, room_id).await?.state(event_types::POWER_LEVELS);
    rules::check_power_change(seat, needed, target.id == caller.id, target_row.power_level, level)?;
    rules::require_open(&room)?;
    if target_row.power_level == level {
        return Ok(target_row);
    }
    let mut content = power_levels_content(&mut tx, room_id).await?;
    let users_default = content.get("users_default").and_then(Value::as_i64).unwrap_or(0);
    let users = content
        .as_object_mut()
        .ok_or_else(|| ApiError::internal("power levels content is not an object"))?
        .entry("users")
        .or_insert_with(|| json!({}));
    let users = users.as_object_mut().ok_or_else(|| ApiError::internal("power levels users is not an object"))?;
    // The default level needs no entry: the map stays as long as the list of raised members.
    if level == users_default {
        users.remove(&target.fqid);
    } else {
        users.insert(target.fqid.clone(), json!(level));
    }
    emit(&mut tx, room_id, caller, event_types::POWER_LEVELS, Some(""), content).await?;
    let row = tx.member(room_id, &target.id).await?.ok_or_else(|| ApiError::internal("membership vanished"))?;
    tx.commit().await?;
    Ok(row)
}

/// The caller's own seat in a room they have joined; personal settings need nothing more.
pub async fn own_seat(store: &Store, caller: &Participant, room_id: &str) -> ApiResult<RoomView> {
    let v = view(store, room_id, caller).await?;
    let seat = Seat { membership: v.my_membership, power: v.my_power_level.unwrap_or(0) };
    rules::require_joined(&v.room, seat, caller)?;
    Ok(v)
}

pub async fn set_notification_mode(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    mode: NotificationMode,
) -> ApiResult<()> {
    own_seat(store, caller, room_id).await?;
    store.set_notification_mode(room_id, &caller.id, mode).await?;
    Ok(())
}

pub async fn mute(store: &Store, caller: &Participant, room_id: &str, until: Option<i64>) -> ApiResult<Option<i64>> {
    if let Some(u) = until {
        if !(0..=253_402_300_799).contains(&u) {
            return Err(ApiError::bad_request("until must be a unix time in seconds"));
        }
    }
    own_seat(store, caller, room_id).await?;
    // A time already past unmutes.
    let until = until.filter(|u| *u > now_secs());
    store.set_muted_until(room_id, &caller.id, until).await?;
    Ok(until)
}

/// Moves the read marker forward to `event_id`; answers the marker and the unread count.
pub async fn mark_read(
    store: &Store,
    caller: &Participant,
    room_id: &str,
    event_id: &str,
) -> ApiResult<(Option<String>, i64)> {
    own_seat(store, caller, room_id).await?;
    if !ids::is_event_id(event_id) {
        return Err(ApiError::bad_request("event_id is not an event id"));
    }
    let pos = store.event_position(room_id, event_id).await?.ok_or(ApiError::EventNotFound)?;
    store.advance_read_marker(room_id, &caller.id, pos, event_id).await?;
    let me = store.member(room_id, &caller.id).await?.ok_or(ApiError::RoomNotFound)?;
    let unread = store.unread_count(room_id, &caller.id, me.member.last_read_pos).await?;
    Ok((me.member.last_read_event_id, unread))
}

/// What a client needs to draw a room: the room, its members, and the caller's marker.
pub struct ReadingState {
    pub room: RoomView,
    pub members: Vec<MemberWithParticipant>,
    pub me: MemberRow,
    pub unread_count: i64,
}

pub async fn reading_state(store: &Store, caller: &Participant, room_id: &str) -> ApiResult<ReadingState> {
    let room = own_seat(store, caller, room_id).await?;
    let members = store.members(room_id, &[Membership::Join, Membership::Invite]).await?;
    let me = store.member(room_id, &caller.id).await?.ok_or(ApiError::RoomNotFound)?.member;
    let unread_count = store.unread_count(room_id, &caller.id, me.last_read_pos).await?;
    Ok(ReadingState { room, members, me, unread_count })
}

#[cfg(test)]
mod tests;
