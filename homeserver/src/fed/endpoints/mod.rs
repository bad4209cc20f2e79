//! The federation endpoints of contract 8.1, one file per endpoint, named after it. Each
//! handler takes a [`SignedRequest`](super::request::SignedRequest) as its last extractor (it
//! reads the body); the path extractors before it only parse the URI, and nothing else is read
//! or done before the request's signature is checked.

pub mod keys_query;
pub mod media;
pub mod profile;

use axum::Router;
use axum::routing::{get, post};

use crate::api::AppState;

/// The federation routes, added to the federation listener's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_scaiwave/federation/v1/keys/query", post(keys_query::handle))
        .route("/_scaiwave/federation/v1/profile/{local_id}", get(profile::handle))
        .route("/_scaiwave/federation/v1/media/{media_id}", get(media::handle))
}
