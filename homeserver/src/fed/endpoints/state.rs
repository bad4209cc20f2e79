//! `GET state/{room_id}?event_id=` → `{pdus, auth_chain}`: the state at an event (the state
//! after it, its state group) and its auth chain, as events.

use crate::api::extract::{Path, Query};
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::state_ids::{At, state_and_chain};
use crate::api::AppState;
use crate::error::ApiResult;
use crate::fed::inbound::room_readable_by;
use crate::fed::request::SignedRequest;
use crate::storage::EventStatus;

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
    let both = [EventStatus::Accepted, EventStatus::Outlier];
    let pdus = st.store.room_pdus(&room_id, &ids, &both).await?;
    let auth_chain = st.store.room_pdus(&room_id, &chain, &both).await?;
    Ok(Json(json!({"data": {"pdus": pdus, "auth_chain": auth_chain}})))
}
