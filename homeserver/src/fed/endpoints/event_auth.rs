//! `GET event_auth/{room_id}/{event_id}` → `{auth_chain}`: the auth chain of an event of the
//! room (accepted or outlier events), at most `MAX_STATE_EVENTS`.

use crate::api::extract::Path;
use axum::Json;
use axum::extract::State;
use federation::wire::MAX_STATE_EVENTS;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::fed::inbound::room_readable_by;
use crate::fed::request::SignedRequest;
use crate::storage::EventStatus;

pub async fn handle(
    State(st): State<AppState>,
    Path((room_id, event_id)): Path<(String, String)>,
    req: SignedRequest,
) -> ApiResult<Json<Value>> {
    room_readable_by(&st, &room_id, &req.origin).await?;
    let event = st.store.fed_event(&event_id).await?.filter(|e| e.room_id == room_id).ok_or(ApiError::EventNotFound)?;
    if event.status == EventStatus::Rejected {
        return Err(ApiError::EventNotFound);
    }
    let chain = st.store.auth_chain_ids(&room_id, std::slice::from_ref(&event_id), MAX_STATE_EVENTS).await?;
    let pdus = st.store.room_pdus(&room_id, &chain, &[EventStatus::Accepted, EventStatus::Outlier]).await?;
    Ok(Json(json!({"data": {"auth_chain": pdus}})))
}
