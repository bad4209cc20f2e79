//! `PUT send/{txn_id}` `{origin, origin_ts, pdus (≤ 50), edus (≤ 100)}` → `{pdus: {event_id:
//! verdict}}`: a peer's transaction, through the inbound pipeline ([`crate::fed::inbound`]).

use crate::api::extract::Path;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::fed::request::SignedRequest;

pub async fn handle(
    State(st): State<AppState>,
    Path(txn_id): Path<String>,
    req: SignedRequest,
) -> ApiResult<Json<Value>> {
    let body = req.body.as_ref().ok_or_else(|| ApiError::bad_request("a transaction needs a JSON body"))?;
    let answer = crate::fed::inbound::receive_transaction(&st, &req.origin, &txn_id, body).await?;
    Ok(Json(json!({"data": answer})))
}
