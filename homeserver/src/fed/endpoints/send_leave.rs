//! `PUT send_leave/{room_id}/{event_id}`: the leaver's signed leave (declining an invite to a
//! room its server is not in) → `{event}` countersigned; stored here and relayed to the room's
//! other servers.

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
    let answer =
        crate::fed::join::accept_membership(&st, &room_id, &event_id, &req.origin, req.body, "leave", false).await?;
    Ok(Json(json!({"data": answer})))
}
