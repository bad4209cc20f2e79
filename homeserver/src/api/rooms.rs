//! `/v1/rooms/*` and `/v1/directory/rooms`: parse, call [`crate::rooms`], shape the answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Caller, Json, Path, Query, RoomId, page_limit};
use super::views::{self, data};
use super::workspaces::resolve_participant;
use crate::error::{ApiError, ApiResult};
use crate::rooms::{self, CreateRoom, Lifecycle, Moderation};
use crate::storage::{DirectoryQuery, Membership, NotificationMode, Participant, RoomType, Store};

#[derive(Deserialize)]
pub struct DirectoryParams {
    q: Option<String>,
    room_type: Option<RoomType>,
    limit: Option<String>,
    offset: Option<i64>,
}

pub async fn directory(
    State(st): State<AppState>,
    caller: Caller,
    Query(p): Query<DirectoryParams>,
) -> ApiResult<impl IntoResponse> {
    let limit = page_limit(p.limit.as_deref(), 50, 200)?;
    let offset = p.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError::bad_request("offset must not be negative"));
    }
    if p.q.as_ref().is_some_and(|q| q.chars().count() > 256) {
        return Err(ApiError::bad_request("q must be at most 256 characters"));
    }
    let q = p.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let (rows, total) = st
        .store
        .directory(&DirectoryQuery {
            viewer_id: &caller.participant.id,
            tenant_id: &caller.participant.tenant_id,
            q,
            room_type: p.room_type,
            limit,
            offset,
        })
        .await?;
    Ok(axum::Json(json!({
        "data": rows.iter().map(views::room).collect::<Vec<_>>(),
        "meta": {"total": total, "limit": limit, "offset": offset},
    })))
}

pub async fn my_rooms(State(st): State<AppState>, caller: Caller) -> ApiResult<impl IntoResponse> {
    let rows = st.store.rooms_of(&caller.participant.id).await?;
    Ok(data(Value::Array(rows.iter().map(views::room).collect())))
}

pub async fn archived(State(st): State<AppState>, caller: Caller) -> ApiResult<impl IntoResponse> {
    let rows = st.store.archived_rooms_of(&caller.participant.id).await?;
    Ok(data(Value::Array(rows.iter().map(views::room).collect())))
}

#[derive(Deserialize)]
pub struct CreateBody {
    room_type: Option<RoomType>,
    name: Option<String>,
    topic: Option<String>,
    is_public: Option<bool>,
    workspace_id: Option<String>,
    scope_kind: Option<String>,
}

/// `room_type`, `is_public` and `scope_kind` must agree; whichever is given decides.
fn resolve_room_type(b: &CreateBody) -> ApiResult<RoomType> {
    let from_scope = match b.scope_kind.as_deref() {
        None => None,
        Some("incognito") => Some(RoomType::Incognito),
        Some(other) => return Err(ApiError::bad_request(format!("unknown scope_kind {other:?}"))),
    };
    let room_type = match (b.room_type, from_scope, b.is_public) {
        (Some(t), Some(s), _) if t != s => {
            return Err(ApiError::RoomTypeInvariant("scope_kind incognito needs room_type incognito".into()));
        }
        (Some(t), _, _) => t,
        (None, Some(s), _) => s,
        (None, None, Some(true)) => RoomType::Public,
        (None, None, _) => RoomType::Group,
    };
    match (room_type, b.is_public) {
        (RoomType::Public, Some(false)) => {
            Err(ApiError::RoomTypeInvariant("a public room cannot have is_public false".into()))
        }
        (RoomType::Group | RoomType::Incognito | RoomType::Dm, Some(true)) => {
            Err(ApiError::RoomTypeInvariant("only public rooms can have is_public true".into()))
        }
        (t, _) => Ok(t),
    }
}

pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let room_type = resolve_room_type(&b)?;
    let v = rooms::create_room(
        &st.store,
        &st.config,
        &st.room_creation,
        &caller.participant,
        CreateRoom { room_type, name: b.name, topic: b.topic, workspace_id: b.workspace_id },
    )
    .await?;
    tracing::info!(room = %v.room.id, room_type = ?v.room.room_type, "room created");
    Ok((StatusCode::CREATED, data(views::room(&v))))
}

/// A participant named by `participant_id` or `fqid`.
#[derive(Deserialize)]
pub struct TargetBody {
    participant_id: Option<String>,
    fqid: Option<String>,
    reason: Option<String>,
}

async fn target(store: &Store, b: &TargetBody) -> ApiResult<Participant> {
    match (&b.participant_id, &b.fqid) {
        (Some(id), _) => resolve_participant(store, id).await,
        (None, Some(fqid)) => {
            if !fqid.starts_with('@') {
                return Err(ApiError::bad_request("fqid must look like @local_id:server_name"));
            }
            resolve_participant(store, fqid).await
        }
        (None, None) => Err(ApiError::bad_request("participant_id or fqid is required")),
    }
}

pub async fn dm(State(st): State<AppState>, caller: Caller, Json(b): Json<TargetBody>) -> ApiResult<impl IntoResponse> {
    let other = target(&st.store, &b).await?;
    let (v, created) = rooms::open_dm(&st.store, &st.room_creation, &caller.participant, &other).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, data(views::room(&v))))
}

pub async fn get(State(st): State<AppState>, caller: Caller, RoomId(room_id): RoomId) -> ApiResult<impl IntoResponse> {
    let v = rooms::get_room(&st.store, &caller.participant, &room_id).await?;
    Ok(data(views::room(&v)))
}

#[derive(Deserialize)]
pub struct MembersParams {
    membership: Option<Membership>,
}

pub async fn members(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Query(p): Query<MembersParams>,
) -> ApiResult<impl IntoResponse> {
    let filter = match p.membership {
        Some(m) => vec![m],
        None => vec![Membership::Join, Membership::Invite],
    };
    let rows = rooms::members(&st.store, &caller.participant, &room_id, &filter).await?;
    // `partial`: the room was joined in stages and its member list is still completing.
    let partial = st.store.is_partial(&room_id).await?;
    Ok(axum::Json(serde_json::json!({
        "data": Value::Array(rows.iter().map(views::member).collect()),
        "meta": {"partial": partial},
    })))
}

#[derive(Deserialize)]
pub struct JoinBody {
    /// Servers to join through when this server is not in the room (a federated room by id).
    via: Option<Vec<String>>,
}

pub async fn join(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Json(b): Json<JoinBody>,
) -> ApiResult<impl IntoResponse> {
    // A room this server is not in (a remote invite, or a federated room by id) is joined
    // through a resident server.
    let v = if crate::fed::join::needs_remote(&st, &room_id).await? {
        let via = b.via.unwrap_or_default();
        if via.len() > 10 || via.iter().any(|s| !federation::event::is_server_name(s)) {
            return Err(ApiError::bad_request("via must be at most 10 server names"));
        }
        crate::fed::join::join_remote(&st, &caller.participant, &room_id, &via).await?
    } else {
        rooms::join(&st.store, &caller.participant, &room_id).await?
    };
    Ok(data(views::room(&v)))
}

/// A body whose fields are all optional or ignored; it must still be a well-formed JSON object.
pub type NoFields = Json<serde_json::Map<String, Value>>;

pub async fn leave(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    _: NoFields,
) -> ApiResult<impl IntoResponse> {
    // Declining an invite to a room this server is not in goes through a resident server.
    if crate::fed::join::needs_remote(&st, &room_id).await? {
        crate::fed::join::decline_remote(&st, &caller.participant, &room_id).await?;
    } else {
        rooms::leave(&st.store, &caller.participant, &room_id).await?;
    }
    Ok(data(json!({"room_id": room_id, "membership": "leave"})))
}

async fn lifecycle(st: AppState, caller: Caller, room_id: String, op: Lifecycle) -> ApiResult<impl IntoResponse> {
    let v = rooms::set_lifecycle(&st.store, &caller.participant, &room_id, op).await?;
    Ok(data(views::room(&v)))
}

pub async fn close(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    _: NoFields,
) -> ApiResult<impl IntoResponse> {
    lifecycle(st, caller, id, Lifecycle::Close).await
}

pub async fn archive(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    _: NoFields,
) -> ApiResult<impl IntoResponse> {
    lifecycle(st, caller, id, Lifecycle::Archive).await
}

pub async fn rejoin(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    _: NoFields,
) -> ApiResult<impl IntoResponse> {
    lifecycle(st, caller, id, Lifecycle::Restore).await
}

async fn moderate(
    st: AppState,
    caller: Caller,
    room_id: String,
    b: TargetBody,
    op: Moderation,
) -> ApiResult<impl IntoResponse> {
    let reason = rooms::clean_reason(b.reason.as_deref())?;
    let who = target(&st.store, &b).await?;
    let row = rooms::moderate(&st.store, &caller.participant, &room_id, &who, op, reason.as_deref()).await?;
    let mut out = views::participant(&who);
    if let (Some(obj), Value::Object(more)) = (out.as_object_mut(), views::membership(&row)) {
        obj.extend(more);
    }
    Ok(data(out))
}

pub async fn invite(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Json(b): Json<TargetBody>,
) -> ApiResult<impl IntoResponse> {
    if let Some(fqid) = b.fqid.as_deref().filter(|f| b.participant_id.is_none() && crate::fed::join::is_remote(&st, f))
    {
        let (who, row) =
            crate::fed::join::invite_remote(&st, &caller.participant, &id, fqid, crate::fed::join::InviteMode::Member)
                .await?;
        return Ok(data(super::fed_join::member_view(&who, &row)).into_response());
    }
    moderate(st, caller, id, b, Moderation::Invite).await.map(IntoResponse::into_response)
}

pub async fn kick(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Json(b): Json<TargetBody>,
) -> ApiResult<impl IntoResponse> {
    moderate(st, caller, id, b, Moderation::Kick).await
}

pub async fn ban(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Json(b): Json<TargetBody>,
) -> ApiResult<impl IntoResponse> {
    moderate(st, caller, id, b, Moderation::Ban).await
}

pub async fn unban(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Json(b): Json<TargetBody>,
) -> ApiResult<impl IntoResponse> {
    moderate(st, caller, id, b, Moderation::Unban).await
}

#[derive(Deserialize)]
pub struct NameBody {
    name: String,
}

pub async fn rename(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Json(b): Json<NameBody>,
) -> ApiResult<impl IntoResponse> {
    let v = rooms::rename(&st.store, &caller.participant, &id, &b.name).await?;
    Ok(data(views::room(&v)))
}

#[derive(Deserialize)]
pub struct TopicBody {
    topic: Option<String>,
}

pub async fn topic(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Json(b): Json<TopicBody>,
) -> ApiResult<impl IntoResponse> {
    let v = rooms::set_topic(&st.store, &caller.participant, &id, b.topic.as_deref()).await?;
    Ok(data(views::room(&v)))
}

#[derive(Deserialize)]
pub struct WorkspaceBody {
    workspace_id: String,
}

pub async fn workspace(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Json(b): Json<WorkspaceBody>,
) -> ApiResult<impl IntoResponse> {
    let v = rooms::move_to_workspace(&st.store, &caller.participant, &id, &b.workspace_id).await?;
    Ok(data(views::room(&v)))
}

#[derive(Deserialize)]
pub struct ModeBody {
    mode: NotificationMode,
}

pub async fn notification_mode(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Json(b): Json<ModeBody>,
) -> ApiResult<impl IntoResponse> {
    rooms::set_notification_mode(&st.store, &caller.participant, &id, b.mode).await?;
    Ok(data(json!({"room_id": id, "notification_mode": b.mode})))
}

/// `{until: unix_seconds | null}`: `until` must be present; null unmutes.
pub async fn mute(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Json(b): Json<serde_json::Map<String, Value>>,
) -> ApiResult<impl IntoResponse> {
    let until = match b.get("until") {
        None => return Err(ApiError::bad_request("until is required (unix seconds, or null to unmute)")),
        Some(Value::Null) => None,
        Some(v) => Some(v.as_i64().ok_or_else(|| ApiError::bad_request("until must be an integer or null"))?),
    };
    let until = rooms::mute(&st.store, &caller.participant, &id, until).await?;
    Ok(data(json!({"room_id": id, "muted_until": until})))
}

#[derive(Deserialize)]
pub struct ReadBody {
    event_id: String,
}

pub async fn read(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Json(b): Json<ReadBody>,
) -> ApiResult<impl IntoResponse> {
    let (marker, unread) = rooms::mark_read(&st.store, &caller.participant, &id, &b.event_id).await?;
    if let Some(m) = &marker {
        st.hub.read_marker(&caller.participant.id, &id, m);
    }
    Ok(data(json!({"room_id": id, "last_read_event_id": marker, "unread_count": unread})))
}

#[derive(Deserialize)]
pub struct PowerBody {
    power_level: i64,
}

pub async fn power_level(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(id): RoomId,
    Path((_, who)): Path<(String, String)>,
    Json(b): Json<PowerBody>,
) -> ApiResult<impl IntoResponse> {
    let target = resolve_participant(&st.store, &who).await?;
    let row = rooms::set_power_level(&st.store, &caller.participant, &id, &target, b.power_level).await?;
    let mut out = views::participant(&target);
    if let (Some(obj), Value::Object(more)) = (out.as_object_mut(), views::membership(&row)) {
        obj.extend(more);
    }
    Ok(data(out))
}

/// `GET /v1/rooms/{room_id}/state`: the room, its members and the caller's reading state.
pub async fn state(State(st): State<AppState>, caller: Caller, RoomId(id): RoomId) -> ApiResult<impl IntoResponse> {
    let s = rooms::reading_state(&st.store, &caller.participant, &id).await?;
    Ok(data(json!({
        "room": views::room(&s.room),
        "members": s.members.iter().map(views::member).collect::<Vec<_>>(),
        "unread_count": s.unread_count,
        "last_read_event_id": s.me.last_read_event_id,
        "muted_until": views::membership(&s.me)["muted_until"],
        "notification_mode": s.me.notification_mode,
    })))
}
