//! `POST keys/query {server_keys: {server_name: {}}}` → `{server_keys: [document]}`: the key
//! documents this server holds for the servers asked about (its own included), each with its
//! origin's signature and ours added: this server acting as a notary.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::fed::request::SignedRequest;

/// At most this many servers per query.
const MAX_SERVERS: usize = 100;

#[derive(Deserialize)]
struct Query {
    server_keys: BTreeMap<String, Value>,
}

pub async fn handle(State(st): State<AppState>, req: SignedRequest) -> ApiResult<Json<Value>> {
    let query: Query = req.json()?;
    if query.server_keys.len() > MAX_SERVERS {
        return Err(ApiError::bad_request(format!("at most {MAX_SERVERS} servers per query")));
    }
    let active = st.fed.active()?;
    let servers: Vec<String> = query.server_keys.into_keys().collect();
    let docs: Vec<Value> = active
        .keys
        .documents(&servers)
        .iter()
        .map(|d| federation::keys::countersign_document(d, &st.fed.server_name, &st.keys.current))
        .collect();
    Ok(Json(json!({"data": {"server_keys": docs}})))
}
