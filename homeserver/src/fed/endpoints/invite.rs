//! `PUT invite/{room_id}/{event_id}` `{event, invite_room_state}` → `{event}` countersigned by
//! this server: an invite of one of this server's participants (else 404
//! `SW_PARTICIPANT_NOT_FOUND`), stored so that it shows in the invitee's room list and sync.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::extract::Path;
use crate::error::ApiResult;
use crate::fed::request::SignedRequest;

pub async fn handle(
    State(st): State<AppState>,
    Path((room_id, event_id)): Path<(String, String)>,
    req: SignedRequest,
) -> ApiResult<Json<Value>> {
    let answer = crate::fed::join::receive_invite(&st, &room_id, &event_id, &req.origin, req.body).await?;
    Ok(Json(json!({"data": answer})))
}
