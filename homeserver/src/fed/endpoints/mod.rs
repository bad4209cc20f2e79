//! The federation endpoints of contract 8.1, one file per endpoint, named after it. Each
//! handler takes a [`SignedRequest`](super::request::SignedRequest) as its last extractor (it
//! reads the body); the path extractors before it only parse the URI, and nothing else is read
//! or done before the request's signature is checked.

pub mod backfill;
pub mod event;
pub mod event_auth;
pub mod get_missing_events;
pub mod invite;
pub mod keys_query;
pub mod make_join;
pub mod make_leave;
pub mod media;
pub mod members;
pub mod profile;
pub mod send;
pub mod send_join;
pub mod send_leave;
pub mod state;
pub mod state_ids;

use axum::Router;
use axum::routing::{get, post, put};

use crate::api::AppState;

/// The federation routes, added to the federation listener's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_scaiwave/federation/v1/keys/query", post(keys_query::handle))
        .route("/_scaiwave/federation/v1/profile/{local_id}", get(profile::handle))
        .route("/_scaiwave/federation/v1/media/{media_id}", get(media::handle))
        .route("/_scaiwave/federation/v1/send/{txn_id}", put(send::handle))
        .route("/_scaiwave/federation/v1/event/{event_id}", get(event::handle))
        .route("/_scaiwave/federation/v1/state/{room_id}", get(state::handle))
        .route("/_scaiwave/federation/v1/state_ids/{room_id}", get(state_ids::handle))
        .route("/_scaiwave/federation/v1/event_auth/{room_id}/{event_id}", get(event_auth::handle))
        .route("/_scaiwave/federation/v1/get_missing_events/{room_id}", post(get_missing_events::handle))
        .route("/_scaiwave/federation/v1/rooms/{room_id}/backfill", get(backfill::handle))
        .route("/_scaiwave/federation/v1/rooms/{room_id}/members", get(members::handle))
        .route("/_scaiwave/federation/v1/make_join/{room_id}/{fqid}", get(make_join::handle))
        .route("/_scaiwave/federation/v1/send_join/{room_id}/{event_id}", put(send_join::handle))
        .route("/_scaiwave/federation/v1/make_leave/{room_id}/{fqid}", get(make_leave::handle))
        .route("/_scaiwave/federation/v1/send_leave/{room_id}/{event_id}", put(send_leave::handle))
        .route("/_scaiwave/federation/v1/invite/{room_id}/{event_id}", put(invite::handle))
}
