//! `GET state_ids/{room_id}?event_id=` → `{pdu_ids, auth_chain_ids}`: the state at an event
//! (the state after it, its state group), at most `MAX_STATE_EVENTS` entries, and its auth
//! chain.

use crate::api::extract::{Path, Query};
use axum::Json;
use axum::extract::State;
use federation::wire::MAX_STATE_EVENTS;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::fed::inbound::room_readable_by;
use crate::fed::request::SignedRequest;

#[derive(Deserialize)]
pub struct At {
    pub event_id: String,
}

/// The state at `event_id` and its auth chain, as ids (shared with `state/`).
pub async fn state_and_chain(st: &AppState, room_id: &str, event_id: &str) -> ApiResult<(Vec<String>, Vec<String>)> {
    let ids = st.store.state_ids_at(room_id, event_id, MAX_STATE_EVENTS).await?.ok_or(ApiError::EventNotFound)?;
    let chain = st.store.auth_chain_ids(room_id, &ids, MAX_STATE_EVENTS).await?;
    Ok((ids, chain))
}

pub async fn handle(
    State(st): State<AppState>,
    Path(room_id): Path<String>,
    Query(at): Query<At>,
    req: SignedRequest,
) -> ApiResult<Json<Value>> {
    room_readable_by(&st, &room_id, &req.origin).await?;
    // A server that joined in stages does not hold the whole state yet.
    crate::fed::partial::refuse_if_partial(&st, &room_id).await?;
    let (ids, chain) = state_and_chain(&st, &room_id, &at.event_id).await?;
    Ok(Json(json!({"data": {"pdu_ids": ids, "auth_chain_ids": chain}})))
}
