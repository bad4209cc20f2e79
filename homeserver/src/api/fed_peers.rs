//! Server-admin federation endpoints about this server and its peers' participants:
//! `GET /v1/admin/federation/identity` and
//! `POST /v1/admin/federation/foreign/{participant_id}/refresh`.
//!
//! Order of checks: authentication (401), then admin (403), then the rest.

use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Caller, Path};
use super::views::{self, data};
use crate::error::{ApiError, ApiResult};

fn require_admin(caller: &Caller) -> ApiResult<()> {
    if caller.participant.is_admin {
        Ok(())
    } else {
        Err(ApiError::InsufficientPermission("only a server admin may do this".into()))
    }
}

/// Who this server is to its peers: `{server_name, key_id, public_key, old_verify_keys,
/// protocol_versions, valid_until_ts, federation_listen, well_known}`, where `well_known` is
/// the signed document peers read and the rest is taken from it (plus the configured
/// federation listener address, `null` when federation is not served).
pub async fn identity(State(st): State<AppState>, caller: Caller) -> ApiResult<impl IntoResponse> {
    require_admin(&caller)?;
    let doc = st.keys.well_known(&st.config.server_name);
    let field = |k: &str| doc.get(k).cloned().unwrap_or(Value::Null);
    Ok(data(json!({
        "server_name": st.config.server_name,
        "key_id": st.keys.current.key_id(),
        "public_key": field("public_key"),
        "old_verify_keys": field("old_verify_keys"),
        "protocol_versions": field("protocol_versions"),
        "valid_until_ts": field("valid_until_ts"),
        "federation_listen": st.config.federation_listen.map(|a| a.to_string()),
        "well_known": doc,
    })))
}

/// Refetches a foreign participant's profile from its server now and answers the participant.
pub async fn refresh_foreign(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    require_admin(&caller)?;
    let p = crate::fed::remote::refresh_participant(&st, &id, &caller.participant.tenant_id).await?;
    Ok(data(views::participant(&p)))
}
