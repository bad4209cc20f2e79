//! `PUT send_join/{room_id}/{event_id}[?omit_members=true]`: the joiner's signed join (origin
//! = the requesting server) → `{event, state, auth_chain, servers_in_room, members_omitted}`.
//! The join is verified, stored (it must be accepted), countersigned and relayed to the room's
//! other servers; `state` is the room's state before it, `auth_chain` its auth chain.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::extract::{Path, Query};
use crate::error::ApiResult;
use crate::fed::request::SignedRequest;

#[derive(Deserialize)]
pub struct Params {
    omit_members: Option<bool>,
}

pub async fn handle(
    State(st): State<AppState>,
    Path((room_id, event_id)): Path<(String, String)>,
    Query(p): Query<Params>,
    req: SignedRequest,
) -> ApiResult<Json<Value>> {
    let omit = p.omit_members.unwrap_or(false);
    let answer =
        crate::fed::join::accept_membership(&st, &room_id, &event_id, &req.origin, req.body, "join", omit).await?;
    Ok(Json(json!({"data": answer})))
}
