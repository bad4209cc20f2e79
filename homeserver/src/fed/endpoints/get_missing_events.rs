//! `POST get_missing_events/{room_id}` `{earliest_events, latest_events, limit (≤ 20),
//! min_depth}` → `{events}`: accepted events reached by walking `prev_events` back from
//! `latest_events`, not past `earliest_events`.

use crate::api::extract::Path;
use axum::Json;
use axum::extract::State;
use federation::wire::MAX_MISSING_EVENTS;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::fed::inbound::room_readable_by;
use crate::fed::request::SignedRequest;

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    earliest_events: Vec<String>,
    latest_events: Vec<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    min_depth: Option<i64>,
}

pub async fn handle(
    State(st): State<AppState>,
    Path(room_id): Path<String>,
    req: SignedRequest,
) -> ApiResult<Json<Value>> {
    let body: Body = req.json()?;
    if body.earliest_events.len() > 100 || body.latest_events.len() > 20 {
        return Err(ApiError::bad_request("at most 100 earliest and 20 latest events"));
    }
    room_readable_by(&st, &room_id, &req.origin).await?;
    let limit = body.limit.unwrap_or(10).min(MAX_MISSING_EVENTS as u64) as usize;
    let events = st
        .store
        .missing_events(&room_id, &body.earliest_events, &body.latest_events, limit, body.min_depth.unwrap_or(0))
        .await?;
    Ok(Json(json!({"data": {"events": events}})))
}
