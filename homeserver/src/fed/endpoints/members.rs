//! `GET rooms/{room_id}/members` → `[{fqid, local_id, server_name, display_name, membership}]`.

use crate::api::extract::Path;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::error::ApiResult;
use crate::fed::inbound::room_readable_by;
use crate::fed::request::SignedRequest;

pub async fn handle(
    State(st): State<AppState>,
    Path(room_id): Path<String>,
    req: SignedRequest,
) -> ApiResult<Json<Value>> {
    room_readable_by(&st, &room_id, &req.origin).await?;
    let members = st.store.fed_members(&room_id).await?;
    Ok(Json(json!({"data": members})))
}
