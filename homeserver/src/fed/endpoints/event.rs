//! `GET event/{event_id}` → `{pdu}`: an accepted event (or an outlier: auth events are asked
//! for one by one too) of a room the peer may read.

use crate::api::extract::Path;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::fed::inbound::room_readable_by;
use crate::fed::request::SignedRequest;
use crate::storage::EventStatus;

pub async fn handle(
    State(st): State<AppState>,
    Path(event_id): Path<String>,
    req: SignedRequest,
) -> ApiResult<Json<Value>> {
    let event = st.store.fed_event(&event_id).await?.ok_or(ApiError::EventNotFound)?;
    // An event of a room the peer may not read is as unknown as one that does not exist.
    room_readable_by(&st, &event.room_id, &req.origin).await.map_err(|e| match e {
        ApiError::RoomNotFound => ApiError::EventNotFound,
        other => other,
    })?;
    if !matches!(event.status, EventStatus::Accepted | EventStatus::Outlier) {
        return Err(ApiError::EventNotFound);
    }
    Ok(Json(json!({"data": {"pdu": event.pdu}})))
}
