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
use super::extract::{Caller, Json, Query, page_limit};
use super::views::data;
use super::workspaces::resolve_participant;
use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::identity;
use crate::messages::event_frame;
use crate::realtime::{PresenceStatus, StreamSeat};
use crate::storage::Participant;

pub const MAX_SYNC_LIMIT: i64 = 500;
pub const MAX_SYNC_TIMEOUT_MS: u64 = 30_000;
const PING_EVERY: Duration = Duration::from_secs(30);
/// WebSocket close code for a missing, bad or expired token.
const CLOSE_BAD_TOKEN: u16 = 4001;
/// WebSocket close code when the server shuts down.
const CLOSE_GOING_AWAY: u16 = 1001;

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
    let limit = page_limit(p.limit.as_deref(), 100, MAX_SYNC_LIMIT)?;
    // A longer wait than the server holds a request is capped, like a longer page.
    let timeout = match p.timeout.as_deref() {
        None | Some("") => 0,
        Some(t) if t.bytes().all(|b| b.is_ascii_digit()) => {
            t.parse::<u64>().unwrap_or(u64::MAX).min(MAX_SYNC_TIMEOUT_MS)
        }
        Some(_) => return Err(ApiError::bad_request(format!("timeout must be from 0 to {MAX_SYNC_TIMEOUT_MS} ms"))),
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
    // A bad token is told on the socket (close 4001); a good one over its participant's
    // stream cap is refused before the upgrade.
    let owner = match &bearer {
        Some(t) => identity::authenticate(&st.store, &st.tokens, t).await.ok(),
        None => None,
    };
    let (Some(owner), Some(token)) = (owner, bearer) else {
        return ws.on_upgrade(close_bad_token);
    };
    let cap = st.config.limits.max_streams_per_participant;
    let before = st.hub.presence_of(&owner.participant.id, &owner.participant.id, Instant::now());
    let Some(seat) = st.hub.take_stream_seat(&owner.participant.id, cap, Instant::now()) else {
        return ApiError::RateLimited(format!("at most {cap} streams may be open at once"), 5).into_response();
    };
    ws.on_upgrade(move |socket| run_stream(st, socket, owner.participant, token, since, (seat, before)))
}

async fn close_bad_token(mut socket: WebSocket) {
    let frame = CloseFrame { code: CLOSE_BAD_TOKEN, reason: Utf8Bytes::from_static("invalid or expired token") };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn send_json(socket: &mut WebSocket, v: &Value) -> bool {
    socket.send(Message::Text(v.to_string().into())).await.is_ok()
}

/// Sends every visible room event after `pos`; answers the new position. `top` was read
/// before looking: everything up to it is committed, so the position may skip past events the
/// participant may not see. The token is checked after each batch is read and before it is
/// sent: a batch read after a logout completed is never sent, and one read before could only
/// hold events committed before it.
async fn send_room_events(
    st: &AppState,
    socket: &mut WebSocket,
    me: &Participant,
    token: &str,
    mut pos: i64,
    top: i64,
) -> Result<i64, StreamEnd> {
    loop {
        let rows = st.store.events_since(&me.id, &me.fqid, pos, MAX_SYNC_LIMIT).await.map_err(|_| StreamEnd::Gone)?;
        if !rows.is_empty() && !still_valid(st, token).await {
            return Err(StreamEnd::BadToken);
        }
        let done = (rows.len() as i64) < MAX_SYNC_LIMIT;
        for row in &rows {
            if !send_json(socket, &event_frame(row)).await {
                return Err(StreamEnd::Gone);
            }
            pos = row.stream_position;
        }
        if done {
            return Ok(pos.max(top));
        }
    }
}

/// Announces a presence change of `participant_id`, if `before` (their own view before it)
/// differs from now: one query for their rooms, however many streams are open.
pub async fn announce_presence(st: &AppState, participant_id: &str, before: PresenceStatus) {
    let Some(frame) = st.hub.presence_change(participant_id, before, Instant::now()) else { return };
    if let Some(status) = frame.get("status").and_then(|s| s.as_str()) {
        st.fed.presence_out(participant_id, status);
    }
    match st.store.joined_room_ids(participant_id).await {
        Ok(rooms) => st.hub.publish_presence(participant_id, rooms, frame),
        Err(e) => tracing::warn!(error = %e, "presence not announced: cannot read the participant's rooms"),
    }
}

/// Whether the stream's token still authenticates (cheap: the token cache). A logout or a
/// rotation ends the stream with 4001 at once (the cache announces revocations); expiry at the
/// next wake or ping.
async fn still_valid(st: &AppState, token: &str) -> bool {
    identity::authenticate(&st.store, &st.tokens, token).await.is_ok()
}

async fn run_stream(
    st: AppState,
    mut socket: WebSocket,
    me: Participant,
    token: String,
    since: Option<i64>,
    (seat, before): (StreamSeat, PresenceStatus),
) {
    let session_id = crate::ids::new_session_id();
    let mut committed = st.store.subscribe();
    let mut ephemeral = st.hub.subscribe();
    let revocations = st.tokens.revocations();
    let mut shutdown = st.hub.on_shutdown();
    // A session revoked between the upgrade and the subscriptions above is not seen by them.
    if !still_valid(&st, &token).await {
        return close_bad_token(socket).await;
    }
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
    announce_presence(&st, &me.id, before).await;
    tracing::debug!(participant = %me.id, session = %session_id, "stream opened");
    let mut top = *committed.borrow_and_update();
    let mut pos = since.unwrap_or(top);
    let mut rooms: HashSet<String> = st.store.joined_room_ids(&me.id).await.unwrap_or_default().into_iter().collect();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    // The watches are waited on by futures that live across iterations: a stream wakes for
    // every ephemeral frame, and registering fresh waiters on shared watches each time cost
    // more than sending the frame.
    let mut shut_down = std::pin::pin!(async move {
        let _ = shutdown.changed().await;
    });
    let mut revoked = Box::pin(next_change(revocations));
    let mut new_commits = Box::pin(next_change(committed));
    let end = 'session: loop {
        // Catch up on whatever committed since the last look.
        match send_room_events(&st, &mut socket, &me, &token, pos, top).await {
            Ok(p) => pos = p,
            Err(end) => break end,
        }
        loop {
            tokio::select! {
                // In this order: a revoked session or a shutdown must win over frames that
                // arrived at the same time.
                biased;
                _ = &mut shut_down => break 'session StreamEnd::ShuttingDown,
                rx = &mut revoked => {
                    if !still_valid(&st, &token).await {
                        break 'session StreamEnd::BadToken;
                    }
                    revoked.set(next_change(rx));
                }
                mut rx = &mut new_commits => {
                    // The store is gone: the server is stopping.
                    if rx.has_changed().is_err() {
                        break 'session StreamEnd::Gone;
                    }
                    top = *rx.borrow_and_update();
                    new_commits.set(next_change(rx));
                    rooms = st.store.joined_room_ids(&me.id).await.unwrap_or_default().into_iter().collect();
                    continue 'session;
                }
                e = ephemeral.recv() => match e {
                    Ok(e) => {
                        if e.audience.includes(&me.id, &rooms)
                            && socket.send(Message::Text(Utf8Bytes::from(&*e.frame))).await.is_err()
                        {
                            break 'session StreamEnd::Gone;
                        }
                    }
                    Err(RecvError::Lagged(n)) => tracing::debug!(skipped = n, "stream fell behind on ephemeral events"),
                    Err(RecvError::Closed) => break 'session StreamEnd::Gone,
                },
                _ = ping.tick() => {
                    if !still_valid(&st, &token).await {
                        break 'session StreamEnd::BadToken;
                    }
                    if socket.send(Message::Ping(Default::default())).await.is_err() { break 'session StreamEnd::Gone; }
                }
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break 'session StreamEnd::Gone,
                    Some(Ok(Message::Text(t))) if t.as_str().contains("\"ping\"") => {
                        if !send_json(&mut socket, &json!({"type": "pong", "ts": now_secs()})).await {
                            break 'session StreamEnd::Gone;
                        }
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    };
    match end {
        StreamEnd::BadToken => close_bad_token(socket).await,
        StreamEnd::ShuttingDown => {
            let frame = CloseFrame { code: CLOSE_GOING_AWAY, reason: Utf8Bytes::from_static("server shutting down") };
            let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(Some(frame)))).await;
        }
        StreamEnd::Gone => {}
    }
    let before = st.hub.presence_of(&me.id, &me.id, Instant::now());
    drop(seat);
    announce_presence(&st, &me.id, before).await;
    tracing::debug!(participant = %me.id, session = %session_id, "stream closed");
}

/// Waits for the watch to change (or its sender to go) and hands the receiver back.
async fn next_change<T: Send + Sync>(mut rx: tokio::sync::watch::Receiver<T>) -> tokio::sync::watch::Receiver<T> {
    let _ = rx.changed().await;
    rx
}

enum StreamEnd {
    /// The client went away (or the socket failed).
    Gone,
    /// The token was revoked or expired: close 4001.
    BadToken,
    ShuttingDown,
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
    let now = Instant::now();
    st.typing_throttle
        .try_take(&caller.participant.id, now)
        .map_err(|s| ApiError::RateLimited("too many typing notices".into(), s))?;
    crate::rooms::own_seat(&st.store, &caller.participant, &b.room_id).await?;
    // Every accepted notice goes out: a peer lets a typing notice lapse unless it is renewed.
    st.fed.typing_out(&b.room_id, &caller.participant.fqid, b.typing);
    typing_notice(&st.hub, &b.room_id, &caller.participant.id, b.typing, now);
    Ok(data(json!({"room_id": b.room_id, "typing": b.typing})))
}

/// Records a typing notice (a local client's or a peer's) and lets it lapse on time.
pub fn typing_notice(hub: &std::sync::Arc<crate::realtime::Hub>, room_id: &str, who: &str, typing: bool, now: Instant) {
    if let Some(until) = hub.set_typing(room_id, who, typing, now) {
        let hub = hub.clone();
        let (room, who) = (room_id.to_string(), who.to_string());
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
    let now = Instant::now();
    st.presence_throttle.try_take(me, now).map_err(|s| ApiError::RateLimited("too many presence changes".into(), s))?;
    let before = st.hub.presence_of(me, me, now);
    st.hub.set_presence(me, b.status, now);
    announce_presence(&st, me, before).await;
    Ok(data(json!({"participant_id": me, "status": st.hub.presence_of(me, me, Instant::now())})))
}
