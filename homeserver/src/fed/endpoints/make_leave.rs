//! `GET make_leave/{room_id}/{fqid}` → `{event}`: a leave template for a participant of the
//! requesting server, from any server that holds the room (its forward extremities as
//! `prev_events`, the auth events the rules read, `depth`). Refused as the room's rules would
//! refuse the leave (declining an invite); unknown room → 404 `SW_ROOM_NOT_FOUND`; federation off → 409
//! `SW_FED_DISABLED`.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::extract::Path;
use crate::error::ApiResult;
use crate::fed::request::SignedRequest;

pub async fn handle(
    State(st): State<AppState>,
    Path((room_id, fqid)): Path<(String, String)>,
    req: SignedRequest,
) -> ApiResult<Json<Value>> {
    let event = crate::fed::join::membership_template(&st, &room_id, &fqid, &req.origin, "leave").await?;
    Ok(Json(json!({"data": {"event": event}})))
}
