//! The client API: the router, its middleware, and one module per area. Handlers stay thin:
//! extractors parse and authenticate, the domain decides, [`views`] shapes the JSON.

pub mod auth;
pub mod bundle;
pub mod discovery;
pub mod extract;
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
use crate::storage::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<Config>,
    pub limiter: Arc<crate::ratelimit::SendLimiter>,
    pub sends: Arc<crate::send_queue::SendQueue>,
    pub hub: Arc<crate::realtime::Hub>,
    pub keys: Arc<crate::signing::Keys>,
    pub discovery: discovery::DiscoveryState,
    pub tokens: Arc<crate::identity::TokenCache>,
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
        .route("/", get(rooms::my_rooms).post(rooms::create))
        .route("/archived", get(rooms::archived))
        .route("/dm", post(rooms::dm))
        .route("/import", post(bundle::import).layer(DefaultBodyLimit::max(import_limit)))
        .route("/{room_id}", get(rooms::get))
        .route("/{room_id}/members", get(rooms::members))
        .route("/{room_id}/members/{participant_id}/power-level", put(rooms::power_level))
        .route("/{room_id}/join", post(rooms::join))
        .route("/{room_id}/leave", post(rooms::leave))
        .route("/{room_id}/close", post(rooms::close))
        .route("/{room_id}/archive", post(rooms::archive))
        .route("/{room_id}/rejoin", post(rooms::rejoin))
        .route("/{room_id}/invite", post(rooms::invite))
        .route("/{room_id}/invitations", post(rooms::invite))
        .route("/{room_id}/kick", post(rooms::kick))
        .route("/{room_id}/ban", post(rooms::ban))
        .route("/{room_id}/unban", post(rooms::unban))
        .route("/{room_id}/name", put(rooms::rename))
        .route("/{room_id}/topic", put(rooms::topic))
        .route("/{room_id}/workspace", put(rooms::workspace))
        .route("/{room_id}/notification-mode", put(rooms::notification_mode))
        .route("/{room_id}/mute", put(rooms::mute))
        .route("/{room_id}/read", put(rooms::read))
        .route("/{room_id}/state", get(rooms::state))
        .route("/{room_id}/export", get(bundle::export))
        .route("/{room_id}/messages", get(messages::list))
        .route("/{room_id}/send", post(messages::send))
        .route("/{room_id}/events/{event_id}", get(messages::event))
        .route("/{room_id}/events/{event_id}/edit", post(messages::edit))
        .route("/{room_id}/events/{event_id}/redact", post(messages::redact))
        .route("/{room_id}/events/{event_id}/reaction", post(messages::react).delete(messages::unreact));

    let v1 = Router::new()
        .route("/auth/register", post(auth::register))
        .route("/auth/token", post(auth::token))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/whoami", get(auth::whoami))
        .route("/workspaces", get(workspaces::list).post(workspaces::create))
        .route("/participants/{participant_id}", get(workspaces::participant))
        .route("/directory/rooms", get(rooms::directory))
        .route("/admin/federation/resolve", post(discovery::resolve))
        .route("/sync", get(realtime::sync))
        .route("/stream", get(realtime::stream))
        .route("/typing", put(realtime::typing))
        .route("/presence", get(realtime::presence).put(realtime::set_presence))
        // The route's own body limit overrides the global one below (the inner layer wins).
        .route("/media/upload", post(media::upload).layer(DefaultBodyLimit::max(upload_limit)))
        .route("/media/download/{media_id}", get(media::download))
        .route("/media/{media_id}/info", get(media::info))
        .nest("/rooms", rooms);

    let prefix: String = crate::ids::new_session_id().chars().take(8).collect();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/.well-known/scaiwave/server", get(well_known))
        .nest("/v1", v1)
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

/// The server-to-server listener. Federation endpoints join it as the protocol lands.
pub fn federation_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/.well-known/scaiwave/server", get(well_known))
        .fallback(|| async { ApiError::UnknownEndpoint })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
}

/// `GET /.well-known/scaiwave/server`: our name, protocol versions and keys, self-signed.
async fn well_known(axum::extract::State(st): axum::extract::State<AppState>) -> impl IntoResponse {
    let url = format!("https://{}/_scaiwave/federation/v1", st.config.server_name);
    axum::Json(st.keys.well_known(&st.config.server_name, &url))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}
