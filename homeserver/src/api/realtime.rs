//! `/v1/sync` (long-poll), `/v1/stream` (WebSocket), `/v1/typing`, `/v1/presence`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{
    CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::AppState;
use super::extract::{Caller, Json, Query};
use super::views::data;
use super::workspaces::resolve_participant;
use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::identity;
use crate::messages::event_frame;
use crate::realtime::{Audience, Ephemeral, PresenceStatus};
use crate::storage::Participant;

pub const MAX_SYNC_LIMIT: i64 = 500;
pub const MAX_SYNC_TIMEOUT_MS: u64 = 30_000;
const PING_EVERY: Duration = Duration::from_secs(30);
/// WebSocket close code for a missing, bad or expired token.
const CLOSE_BAD_TOKEN: u16 = 4001;

fn parse_position(v: Option<&str>, what: &str) -> ApiResult<Option<i64>> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|p| *p >= 0)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{what} must be a stream position"))),
    }
}

/// A cursor beyond what this server has committed cannot be ours (a restored backup, another
/// server): following it would skip events, so the client must start again.
fn check_not_ahead(st: &AppState, since: i64) -> ApiResult<()> {
    if since > st.store.committed_position() {
        return Err(ApiError::bad_request("since is ahead of this server's position; sync again without it"));
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct SyncParams {
    since: Option<String>,
    limit: Option<String>,
    timeout: Option<String>,
}

/// Long-poll for room events after `since`. Without `since` it answers at once with the
/// current position, the place to start from.
pub async fn sync(
    State(st): State<AppState>,
    caller: Caller,
    Query(p): Query<SyncParams>,
) -> ApiResult<impl IntoResponse> {
    let since = parse_position(p.since.as_deref(), "since")?;
    let limit = match p.limit.as_deref() {
        None | Some("") => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_SYNC_LIMIT).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be from 1 to {MAX_SYNC_LIMIT}")))?,
    };
    let timeout = match p.timeout.as_deref() {
        None | Some("") => 0,
        Some(t) => t
            .parse::<u64>()
            .ok()
            .filter(|t| *t <= MAX_SYNC_TIMEOUT_MS)
            .ok_or_else(|| ApiError::bad_request(format!("timeout must be from 0 to {MAX_SYNC_TIMEOUT_MS} ms")))?,
    };
    let me = &caller.participant;
    if let Some(s) = since {
        check_not_ahead(&st, s)?;
    }
    let Some(since) = since else {
        let top = st.store.committed_position();
        return Ok(data(json!({"events": [], "next_cursor": top.to_string(), "has_more": false})));
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
    let mut committed = st.store.subscribe();
    loop {
        // Read the top first: every event at or below it is committed, so an empty answer
        // lets the cursor skip past events the caller may not see.
        let top = *committed.borrow_and_update();
        let mut rows = st.store.events_since(&me.id, &me.fqid, since, limit + 1).await?;
        if !rows.is_empty() {
            let has_more = rows.len() as i64 > limit;
            rows.truncate(limit as usize);
            let next = rows.last().map(|r| r.stream_position).unwrap_or(since);
            let events: Vec<Value> = rows.iter().map(event_frame).collect();
            return Ok(data(json!({"events": events, "next_cursor": next.to_string(), "has_more": has_more})));
        }
        let waited = tokio::time::timeout_at(deadline, committed.changed()).await;
        if !matches!(waited, Ok(Ok(()))) {
            let next = since.max(top);
            return Ok(data(json!({"events": [], "next_cursor": next.to_string(), "has_more": false})));
        }
    }
}

#[derive(Deserialize)]
pub struct StreamParams {
    token: Option<String>,
    since: Option<String>,
}

/// `GET /v1/stream?token=…[&since=…]`: a WebSocket of room events and ephemeral events.
pub async fn stream(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(p): Query<StreamParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return ApiError::bad_request(format!("not a WebSocket upgrade: {}", e.body_text())).into_response(),
    };
    let since = match parse_position(p.since.as_deref(), "since") {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    if let Some(Err(e)) = since.map(|s| check_not_ahead(&st, s)) {
        return e.into_response();
    }
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::to_string)
        .or(p.token);
    ws.on_upgrade(move |socket| async move {
        let owner = match &bearer {
            Some(t) => identity::authenticate(&st.store, &st.tokens, t).await.ok(),
            None => None,
        };
        match (owner, bearer) {
            (Some(owner), Some(token)) => run_stream(st, socket, owner.participant, token, since).await,
            _ => close_bad_token(socket).await,
        }
    })
}

async fn close_bad_token(mut socket: WebSocket) {
    let frame = CloseFrame { code: CLOSE_BAD_TOKEN, reason: Utf8Bytes::from_static("invalid or expired token") };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn send_json(socket: &mut WebSocket, v: &Value) -> bool {
    socket.send(Message::Text(v.to_string().into())).await.is_ok()
}

/// Sends every visible room event after `pos`; answers the new position, or `None` when the
/// socket is gone. `top` was read before looking: everything up to it is committed, so the
/// position may skip past events the participant may not see.
async fn send_room_events(
    st: &AppState,
    socket: &mut WebSocket,
    me: &Participant,
    mut pos: i64,
    top: i64,
) -> Option<i64> {
    loop {
        let rows = st.store.events_since(&me.id, &me.fqid, pos, MAX_SYNC_LIMIT).await.ok()?;
        let done = (rows.len() as i64) < MAX_SYNC_LIMIT;
        for row in &rows {
            if !send_json(socket, &event_frame(row)).await {
                return None;
            }
            pos = row.stream_position;
        }
        if done {
            return Some(pos.max(top));
        }
    }
}

async fn wanted(st: &AppState, me: &Participant, rooms: &HashSet<String>, e: &Ephemeral) -> bool {
    match &e.audience {
        Audience::RoomMembers(room) => rooms.contains(room),
        Audience::Participant(p) => *p == me.id,
        Audience::PeersOf(p) => *p == me.id || st.store.shares_room(&me.id, p).await.unwrap_or(false),
    }
}

/// Whether the stream's token still authenticates (cheap: the token cache). A logout, a
/// rotation or expiry ends the stream with 4001 at the next wake or ping.
async fn still_valid(st: &AppState, token: &str) -> bool {
    identity::authenticate(&st.store, &st.tokens, token).await.is_ok()
}

async fn run_stream(st: AppState, mut socket: WebSocket, me: Participant, token: String, since: Option<i64>) {
    let session_id = crate::ids::new_session_id();
    let mut committed = st.store.subscribe();
    let mut ephemeral = st.hub.subscribe();
    let hello = json!({
        "type": "hello",
        "session_id": session_id,
        "server_name": me.server_name,
        "tenant_id": me.tenant_id,
        "participant_id": me.id,
        "ts": now_secs(),
        "position": st.store.committed_position().to_string(),
    });
    if !send_json(&mut socket, &hello).await {
        return;
    }
    st.hub.stream_opened(&me.id, Instant::now());
    tracing::debug!(participant = %me.id, session = %session_id, "stream opened");
    let mut pos = since.unwrap_or_else(|| *committed.borrow_and_update());
    let mut rooms: HashSet<String> = st.store.joined_room_ids(&me.id).await.unwrap_or_default().into_iter().collect();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    'session: loop {
        // Catch up on whatever committed since the last look.
        let top = *committed.borrow_and_update();
        match send_room_events(&st, &mut socket, &me, pos, top).await {
            Some(p) => pos = p,
            None => break,
        }
        loop {
            tokio::select! {
                changed = committed.changed() => {
                    if changed.is_err() { break 'session; }
                    if !still_valid(&st, &token).await {
                        close_bad_token(socket).await;
                        st.hub.stream_closed(&me.id, Instant::now());
                        return;
                    }
                    rooms = st.store.joined_room_ids(&me.id).await.unwrap_or_default().into_iter().collect();
                    continue 'session;
                }
                e = ephemeral.recv() => match e {
                    Ok(e) => {
                        if wanted(&st, &me, &rooms, &e).await && !send_json(&mut socket, &e.frame).await {
                            break 'session;
                        }
                    }
                    Err(RecvError::Lagged(n)) => tracing::debug!(skipped = n, "stream fell behind on ephemeral events"),
                    Err(RecvError::Closed) => break 'session,
                },
                _ = ping.tick() => {
                    if !still_valid(&st, &token).await {
                        close_bad_token(socket).await;
                        st.hub.stream_closed(&me.id, Instant::now());
                        return;
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() { break 'session; }
                }
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break 'session,
                    Some(Ok(Message::Text(t))) if t.as_str().contains("\"ping\"") => {
                        if !send_json(&mut socket, &json!({"type": "pong", "ts": now_secs()})).await { break 'session; }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }
    st.hub.stream_closed(&me.id, Instant::now());
    tracing::debug!(participant = %me.id, session = %session_id, "stream closed");
}

#[derive(Deserialize)]
pub struct TypingBody {
    room_id: String,
    typing: bool,
}

pub async fn typing(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<TypingBody>,
) -> ApiResult<impl IntoResponse> {
    if !crate::ids::is_room_id(&b.room_id) {
        return Err(ApiError::bad_request("room_id is not a room id"));
    }
    crate::rooms::own_seat(&st.store, &caller.participant, &b.room_id).await?;
    let now = Instant::now();
    if let Some(until) = st.hub.set_typing(&b.room_id, &caller.participant.id, b.typing, now) {
        let hub = st.hub.clone();
        let (room, who) = (b.room_id.clone(), caller.participant.id.clone());
        tokio::spawn(async move {
            let mut at = until;
            loop {
                tokio::time::sleep_until(at.into()).await;
                match hub.expire_typing(&room, &who, Instant::now()) {
                    Some(renewed) => at = renewed,
                    None => break,
                }
            }
        });
    }
    Ok(data(json!({"room_id": b.room_id, "typing": b.typing})))
}

#[derive(Deserialize)]
pub struct PresenceParams {
    ids: Option<String>,
}

/// `GET /v1/presence?ids=a,b` (participant ids or fqids) → `{id: status}`.
pub async fn presence(
    State(st): State<AppState>,
    caller: Caller,
    Query(p): Query<PresenceParams>,
) -> ApiResult<impl IntoResponse> {
    let ids: Vec<&str> = p.ids.as_deref().unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    if ids.is_empty() || ids.len() > 100 {
        return Err(ApiError::bad_request("ids must list 1 to 100 participant ids or fqids"));
    }
    let now = Instant::now();
    let mut out = Map::new();
    let me = &caller.participant;
    for id in ids {
        let who = resolve_participant(&st.store, id).await?;
        // Presence is for colleagues and people one talks to: a stranger looks offline.
        let related = who.id == me.id || who.tenant_id == me.tenant_id || st.store.shares_room(&me.id, &who.id).await?;
        let status = if related { st.hub.presence_of(&who.id, &me.id, now) } else { PresenceStatus::Offline };
        out.insert(id.to_string(), json!(status));
    }
    Ok(data(Value::Object(out)))
}

#[derive(Deserialize)]
pub struct SetPresenceBody {
    status: PresenceStatus,
}

/// `PUT /v1/presence {status}`: `online`, `idle`, `busy` or `appear_offline`.
pub async fn set_presence(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<SetPresenceBody>,
) -> ApiResult<impl IntoResponse> {
    if b.status == PresenceStatus::Offline {
        return Err(ApiError::bad_request("offline is derived; choose appear_offline to hide"));
    }
    let me = &caller.participant.id;
    st.hub.set_presence(me, b.status, Instant::now());
    Ok(data(json!({"participant_id": me, "status": st.hub.presence_of(me, me, Instant::now())})))
}
