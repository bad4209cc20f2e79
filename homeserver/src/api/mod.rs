//! The client API: the router, its middleware, and one module per area. Handlers stay thin:
//! extractors parse and authenticate, the domain decides, [`views`] shapes the JSON.

pub mod auth;
pub mod bundle;
pub mod discovery;
pub mod extract;
pub mod fed_delivery;
pub mod fed_join;
pub mod fed_peers;
pub mod fed_policy;
pub mod media;
pub mod messages;
pub mod realtime;
pub mod rooms;
pub mod views;
pub mod workspaces;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::error::ApiError;
use crate::listener::{BodyLimit, RouteBody};
use crate::storage::Store;

/// What every handler shares. One `Arc`: extractors clone the state for each request, and
/// cloning a struct of a dozen `Arc`s cost a dozen atomic increments and decrements.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub store: Store,
    pub config: Arc<Config>,
    pub limiter: Arc<crate::ratelimit::SendLimiter>,
    pub group_commit: Arc<crate::group_commit::GroupCommit>,
    pub hub: Arc<crate::realtime::Hub>,
    pub keys: Arc<crate::signing::Keys>,
    pub discovery: discovery::DiscoveryState,
    pub tokens: Arc<crate::identity::TokenCache>,
    /// Typing notices per participant.
    pub typing_throttle: Arc<crate::ratelimit::Throttle>,
    /// Presence changes per participant.
    pub presence_throttle: Arc<crate::ratelimit::Throttle>,
    /// Rooms, DMs and imports created per participant (`limits.room_creation_per_participant`).
    pub room_creation: Arc<crate::ratelimit::Throttle>,
    /// Password hashing and the login limits.
    pub passwords: Arc<crate::identity::Passwords>,
    /// Federation: the signed-request client, peers' keys.
    pub fed: Arc<crate::fed::Federation>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a per-process random prefix and a counter, cheap and unique enough to follow
/// one request through the logs.
#[derive(Clone)]
struct NextRequestId {
    prefix: Arc<str>,
    counter: Arc<AtomicU64>,
}

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.prefix).parse().ok().map(RequestId::new)
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    ApiError::internal("handler panicked").into_response()
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let upload_limit = media::upload_body_limit(&state.config);
    let import_limit = bundle::import_body_limit(&state.config);
    let rooms = Router::new()
        .route("/v1/rooms", get(rooms::my_rooms).post(rooms::create))
        .route("/v1/rooms/archived", get(rooms::archived))
        .route("/v1/rooms/dm", post(rooms::dm))
        .route("/v1/rooms/import", post(bundle::import).layer(DefaultBodyLimit::max(import_limit)))
        .route("/v1/rooms/{room_id}", get(rooms::get))
        .route("/v1/rooms/{room_id}/members", get(rooms::members))
        .route("/v1/rooms/{room_id}/members/{participant_id}/power-level", put(rooms::power_level))
        .route("/v1/rooms/{room_id}/join", post(rooms::join))
        .route("/v1/rooms/{room_id}/leave", post(rooms::leave))
        .route("/v1/rooms/{room_id}/close", post(rooms::close))
        .route("/v1/rooms/{room_id}/archive", post(rooms::archive))
        .route("/v1/rooms/{room_id}/rejoin", post(rooms::rejoin))
        .route("/v1/rooms/{room_id}/invite", post(rooms::invite))
        .route("/v1/rooms/{room_id}/invitations", post(rooms::invite))
        .route("/v1/rooms/{room_id}/kick", post(rooms::kick))
        .route("/v1/rooms/{room_id}/ban", post(rooms::ban))
        .route("/v1/rooms/{room_id}/unban", post(rooms::unban))
        .route("/v1/rooms/{room_id}/name", put(rooms::rename))
        .route("/v1/rooms/{room_id}/topic", put(rooms::topic))
        .route("/v1/rooms/{room_id}/workspace", put(rooms::workspace))
        .route("/v1/rooms/{room_id}/notification-mode", put(rooms::notification_mode))
        .route("/v1/rooms/{room_id}/mute", put(rooms::mute))
        .route("/v1/rooms/{room_id}/read", put(rooms::read))
        .route("/v1/rooms/{room_id}/state", get(rooms::state))
        .route("/v1/rooms/{room_id}/export", get(bundle::export))
        .route("/v1/rooms/{room_id}/messages", get(messages::list))
        .route("/v1/rooms/{room_id}/send", post(messages::send))
        .route("/v1/rooms/{room_id}/events/{event_id}", get(messages::event))
        .route("/v1/rooms/{room_id}/events/{event_id}/edit", post(messages::edit))
        .route("/v1/rooms/{room_id}/events/{event_id}/redact", post(messages::redact))
        .route("/v1/rooms/{room_id}/events/{event_id}/reaction", post(messages::react).delete(messages::unreact));

    let v1 = Router::new()
        .route("/v1/auth/register", post(auth::register))
        .route("/v1/auth/token", post(auth::token))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/auth/whoami", get(auth::whoami))
        .route("/v1/workspaces", get(workspaces::list).post(workspaces::create))
        .route("/v1/participants/{participant_id}", get(workspaces::participant))
        .route("/v1/directory/rooms", get(rooms::directory))
        .route("/v1/admin/federation/resolve", post(discovery::resolve))
        .route("/v1/admin/federation/identity", get(fed_peers::identity))
        .route("/v1/admin/federation/foreign/{participant_id}/refresh", post(fed_peers::refresh_foreign))
        .route("/v1/admin/federation/peers", get(fed_delivery::peers))
        .route("/v1/admin/rooms/{room_id}/federation/backfill", post(fed_policy::backfill))
        .route("/v1/admin/federation/policy", get(fed_policy::get_policy).put(fed_policy::put_policy))
        .route(
            "/v1/admin/rooms/{room_id}/federation/servers",
            get(fed_policy::get_servers).put(fed_policy::put_servers),
        )
        .route("/v1/admin/rooms/{room_id}/federate", put(fed_join::federate))
        .route("/v1/admin/rooms/{room_id}/federation/invite", post(fed_join::invite))
        .route("/v1/me/federated-dms", post(fed_join::federated_dm))
        .route("/v1/sync", get(realtime::sync))
        .route("/v1/stream", get(realtime::stream))
        .route("/v1/typing", put(realtime::typing))
        .route("/v1/presence", get(realtime::presence).put(realtime::set_presence))
        // The route's own body limit overrides the global one below (the inner layer wins).
        .route("/v1/media/upload", post(media::upload).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/v1/media/download/{media_id}", get(media::download))
        .route("/v1/media/{media_id}/info", get(media::info))
        .merge(rooms);

    let prefix: String = crate::ids::new_session_id().chars().take(8).collect();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/.well-known/scaiwave/server", get(well_known))
        // One flat table: every nesting level cost each request a router call and a rewritten
        // URI (~2 % of a send's CPU).
        .merge(v1)
        .fallback(|| async { ApiError::UnknownEndpoint })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
                    tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
                })
                .on_response(|resp: &axum::response::Response, latency: Duration, _span: &tracing::Span| {
                    tracing::debug!(
                        status = resp.status().as_u16(),
                        latency_us = latency.as_micros() as u64,
                        "response"
                    );
                }),
        )
        .layer(SetRequestIdLayer::new(
            REQUEST_ID,
            NextRequestId { prefix: prefix.into(), counter: Arc::new(AtomicU64::new(1)) },
        ))
}

/// The largest body each client API path accepts (see [`crate::listener`]): uploads and
/// imports have their own limits, everything else `max_body_bytes`.
pub fn client_body_limit(config: &Config) -> BodyLimit {
    let body = config.max_body_bytes as u64;
    let upload = media::upload_body_limit(config) as u64;
    let import = bundle::import_body_limit(config) as u64;
    Arc::new(move |path: &str| match path {
        "/v1/media/upload" => RouteBody::plain(upload),
        // A bundle over the limit is a refused import (contract section 7), however it is sent.
        "/v1/rooms/import" => RouteBody {
            max_bytes: import,
            too_large: || ApiError::RoomImportRefused("the bundle is larger than max_import_bytes".into()),
        },
        _ => RouteBody::plain(body),
    })
}

/// A federation transaction is at most 8 MiB (contract 8.1); the listener admits that.
pub const FEDERATION_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;

pub fn federation_body_limit(config: &Config) -> BodyLimit {
    let limit = FEDERATION_MAX_BODY_BYTES.max(config.max_body_bytes as u64);
    Arc::new(move |_: &str| RouteBody::plain(limit))
}

/// The server-to-server listener. Federation endpoints join it as the protocol lands.
pub fn federation_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/.well-known/scaiwave/server", get(well_known))
        .merge(crate::fed::endpoints::routes())
        .fallback(|| async { ApiError::UnknownEndpoint })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// `GET /.well-known/scaiwave/server`: our name, protocol versions, endpoints and keys,
/// self-signed.
async fn well_known(axum::extract::State(st): axum::extract::State<AppState>) -> impl IntoResponse {
    axum::Json(st.keys.well_known(&st.config.server_name))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}
