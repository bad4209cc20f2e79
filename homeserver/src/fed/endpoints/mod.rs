//! The federation endpoints of contract 8.1, one file per endpoint, named after it. Each
//! handler takes a [`SignedRequest`](super::request::SignedRequest) as its last extractor (it
//! reads the body); the path extractors before it only parse the URI, and nothing else is read
//! or done before the request's signature is checked.

pub mod invite;
pub mod keys_query;
pub mod make_join;
pub mod make_leave;
pub mod profile;
pub mod send_join;
pub mod send_leave;

use axum::Router;
use axum::routing::{get, post, put};

use crate::api::AppState;

/// The federation routes, added to the federation listener's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_scaiwave/federation/v1/keys/query", post(keys_query::handle))
        .route("/_scaiwave/federation/v1/profile/{local_id}", get(profile::handle))
        .route("/_scaiwave/federation/v1/make_join/{room_id}/{fqid}", get(make_join::handle))
        .route("/_scaiwave/federation/v1/send_join/{room_id}/{event_id}", put(send_join::handle))
        .route("/_scaiwave/federation/v1/make_leave/{room_id}/{fqid}", get(make_leave::handle))
        .route("/_scaiwave/federation/v1/send_leave/{room_id}/{event_id}", put(send_leave::handle))
        .route("/_scaiwave/federation/v1/invite/{room_id}/{event_id}", put(invite::handle))
}
