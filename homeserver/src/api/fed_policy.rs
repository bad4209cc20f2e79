//! The federation switches of a server and of a room: `GET|PUT /v1/admin/federation/policy`
//! (server admin only) and `GET|PUT /v1/admin/rooms/{room_id}/federation/servers` (the room's
//! creator, a member at power 100 or a server admin), and the room-scoped
//! `POST /v1/admin/rooms/{room_id}/federation/backfill`. `fed::policy` and `fed::backfill` do
//! the work.

use axum::extract::State;
use axum::response::IntoResponse;
use federation::policy::ServerPolicy;
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::extract::{Caller, Json, RoomId};
use super::views::data;
use crate::error::{ApiError, ApiResult};

fn server_admin(caller: &Caller, what: &str) -> ApiResult<()> {
    if caller.participant.is_admin {
        Ok(())
    } else {
        Err(ApiError::InsufficientPermission(format!("only a server admin may {what}")))
    }
}

/// `GET /v1/admin/federation/policy` → the policy in force.
pub async fn get_policy(State(st): State<AppState>, caller: Caller) -> ApiResult<impl IntoResponse> {
    server_admin(&caller, "read the federation policy")?;
    Ok(data(serde_json::to_value(&*st.fed.policy.get()).map_err(ApiError::internal)?))
}

/// `PUT /v1/admin/federation/policy {default_mode?, allowed_peers?, denied_peers?,
/// max_foreign_participants_per_room?}` → the new policy; it applies to the next request and
/// the next transaction built.
pub async fn put_policy(
    State(st): State<AppState>,
    caller: Caller,
    Json(body): Json<Value>,
) -> ApiResult<impl IntoResponse> {
    server_admin(&caller, "set the federation policy")?;
    let policy: ServerPolicy =
        serde_json::from_value(body).map_err(|e| ApiError::bad_request(format!("invalid policy: {e}")))?;
    policy.validate(&st.fed.server_name).map_err(ApiError::bad_request)?;
    let doc = serde_json::to_value(&policy).map_err(ApiError::internal)?;
    st.store.save_fed_policy(&doc, federation::now_ms() as i64).await?;
    tracing::info!(policy = %doc, by = %caller.participant.fqid, "federation policy set");
    st.fed.policy.set(policy);
    Ok(data(doc))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServersBody {
    #[serde(default)]
    allow: Option<Vec<String>>,
    #[serde(default)]
    deny: Option<Vec<String>>,
}

/// `GET /v1/admin/rooms/{room_id}/federation/servers` → `{allow: [glob] | null, deny: [glob]}`.
pub async fn get_servers(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
) -> ApiResult<impl IntoResponse> {
    Ok(data(crate::fed::policy::room_servers(&st, &caller.participant, &room_id).await?))
}

/// `PUT /v1/admin/rooms/{room_id}/federation/servers {allow?, deny?}` → the lists now in force.
pub async fn put_servers(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Json(b): Json<ServersBody>,
) -> ApiResult<impl IntoResponse> {
    let lists =
        crate::fed::policy::set_room_servers(&st, &caller.participant, &room_id, b.allow, b.deny.unwrap_or_default())
            .await?;
    Ok(data(lists))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    #[serde(default)]
    server: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `POST /v1/admin/rooms/{room_id}/federation/backfill {server?, limit?}` →
/// `{fetched, history_complete}`.
pub async fn backfill(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Json(b): Json<BackfillBody>,
) -> ApiResult<impl IntoResponse> {
    let done =
        crate::fed::backfill::admin_backfill(&st, &caller.participant, &room_id, b.server.as_deref(), b.limit).await?;
    Ok(data(serde_json::json!({"fetched": done.fetched, "history_complete": done.complete})))
}
