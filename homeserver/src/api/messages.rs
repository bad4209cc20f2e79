//! `/v1/rooms/{room_id}/messages`, `send`, and the per-event edit, redact and reaction routes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Caller, Json, Path, Query, RoomId, page_limit};
use super::views::data;
use crate::error::{ApiError, ApiResult};
use crate::group_commit::SendRequest;
use crate::ids;
use crate::messages;

/// `{room_id}/events/{event_id}`, shape-checked.
fn event_path(event_id: &str) -> ApiResult<&str> {
    if ids::is_event_id(event_id) { Ok(event_id) } else { Err(ApiError::bad_request("event_id is not an event id")) }
}

#[derive(Deserialize)]
pub struct ListParams {
    limit: Option<String>,
    from: Option<String>,
    direction: Option<String>,
}

pub async fn list(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Query(p): Query<ListParams>,
) -> ApiResult<impl IntoResponse> {
    let limit = page_limit(p.limit.as_deref(), 50, messages::MAX_PAGE)?;
    let from = match p.from.as_deref() {
        None | Some("") => None,
        // Any integer: history fetched from peers sits at negative positions.
        Some(f) => {
            Some(f.parse::<i64>().map_err(|_| ApiError::bad_request("from must be a stream position (an integer)"))?)
        }
    };
    let forward = match p.direction.as_deref() {
        None | Some("back") | Some("b") => false,
        Some("forward") | Some("f") => true,
        Some(_) => return Err(ApiError::bad_request("direction must be back or forward")),
    };
    // `direction=forward&from=0` starts at the beginning of the room (contract section 5), which
    // is below zero once older history was backfilled; no event has position 0.
    let from = from.filter(|f| !(forward && *f == 0));
    let mut page = messages::list(&st.store, &caller.participant, &room_id, from, forward, limit).await?;
    // A backward page that reached the oldest stored event of a federated room joined late
    // asks peers for older history, then answers; `gap_before` tells the client whether older
    // history still exists elsewhere (docs/federation.md, "Backfill").
    let mut gap_before = None;
    if !forward && !page.has_more {
        let mut gap = crate::fed::backfill::history_gap(&st, &room_id).await?;
        if gap {
            if crate::fed::backfill::on_demand(&st, &room_id).await > 0 {
                page = messages::list(&st.store, &caller.participant, &room_id, from, forward, limit).await?;
            }
            gap = !page.has_more && crate::fed::backfill::history_gap(&st, &room_id).await?;
        }
        gap_before = Some(gap);
    } else if !forward {
        gap_before = Some(false);
    }
    #[derive(serde::Serialize)]
    struct Meta<'a> {
        has_more: bool,
        next_cursor: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        gap_before: Option<bool>,
    }
    #[derive(serde::Serialize)]
    struct Body<'a> {
        data: Vec<messages::MessageOut<'a>>,
        meta: Meta<'a>,
    }
    let body = Body {
        data: page.messages.iter().map(|m| messages::message_out(m, &page.reactions)).collect(),
        meta: Meta { has_more: page.has_more, next_cursor: page.next_cursor.as_deref(), gap_before },
    };
    Ok(axum::Json(body).into_response())
}

/// `{"data": …}` around a value that serialises itself.
#[derive(serde::Serialize)]
struct Data<T> {
    data: T,
}

#[derive(Deserialize)]
pub struct SendBody {
    content: Value,
    event_uuid: Option<String>,
    as_participant_id: Option<String>,
}

pub async fn send(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Json(b): Json<SendBody>,
) -> ApiResult<impl IntoResponse> {
    // Like every endpoint that names a participant, it takes a participant id or an fqid.
    let as_participant_id = match b.as_participant_id {
        Some(fqid) if fqid.starts_with('@') => Some(super::workspaces::resolve_participant(&st.store, &fqid).await?.id),
        other => other,
    };
    let req = SendRequest { content: b.content, event_uuid: b.event_uuid, as_participant_id };
    Ok(match messages::send(&st.store, &st.group_commit, &caller.participant, &room_id, req).await? {
        messages::SendOutcome::Created(row) => {
            (StatusCode::CREATED, axum::Json(Data { data: messages::message_out(&row, &[]) })).into_response()
        }
        messages::SendOutcome::Existing(message) => (StatusCode::OK, data(message)).into_response(),
    })
}

/// `GET /v1/rooms/{room_id}/events/{event_id}`: one event, folded, with its signed wire form.
pub async fn event(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Path((_, event_id)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let event_id = event_path(&event_id)?;
    let (event, pdu) = messages::fetch(&st.store, &caller.participant, &room_id, event_id).await?;
    Ok(data(json!({"event": event, "pdu": pdu})))
}

#[derive(Deserialize)]
pub struct EditBody {
    content: Value,
}

pub async fn edit(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Path((_, event_id)): Path<(String, String)>,
    Json(b): Json<EditBody>,
) -> ApiResult<impl IntoResponse> {
    let event_id = event_path(&event_id)?;
    let window = st.config.edit_window_secs;
    let m = messages::edit(&st.store, &caller.participant, &room_id, event_id, b.content, window).await?;
    Ok(data(m))
}

#[derive(Deserialize)]
pub struct RedactBody {
    reason: Option<String>,
}

pub async fn redact(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Path((_, event_id)): Path<(String, String)>,
    Json(b): Json<RedactBody>,
) -> ApiResult<impl IntoResponse> {
    let event_id = event_path(&event_id)?;
    let reason = crate::rooms::clean_reason(b.reason.as_deref())?;
    let m = messages::redact(&st.store, &caller.participant, &room_id, event_id, reason.as_deref()).await?;
    Ok(data(m))
}

#[derive(Deserialize)]
pub struct EmojiBody {
    emoji: Option<String>,
}

pub async fn react(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Path((_, event_id)): Path<(String, String)>,
    Json(b): Json<EmojiBody>,
) -> ApiResult<impl IntoResponse> {
    let event_id = event_path(&event_id)?;
    let emoji = b.emoji.ok_or_else(|| ApiError::bad_request("emoji is required"))?;
    Ok(data(messages::react(&st.store, &caller.participant, &room_id, event_id, &emoji).await?))
}

/// `DELETE …/reaction` with `{emoji}` as the body or `?emoji=`.
pub async fn unreact(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Path((_, event_id)): Path<(String, String)>,
    Query(q): Query<EmojiBody>,
    Json(b): Json<EmojiBody>,
) -> ApiResult<impl IntoResponse> {
    let event_id = event_path(&event_id)?;
    let emoji = b.emoji.or(q.emoji).ok_or_else(|| ApiError::bad_request("emoji is required (body or ?emoji=)"))?;
    Ok(data(messages::unreact(&st.store, &caller.participant, &room_id, event_id, &emoji).await?))
}
