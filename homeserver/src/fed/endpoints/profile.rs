//! `GET profile/{local_id}` → `{fqid, local_id, server_name, display_name}` of a participant of
//! this server; unknown (or foreign) → 404 `SW_PARTICIPANT_NOT_FOUND`.

use crate::api::extract::Path;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::error::{ApiError, ApiResult};
use crate::fed::request::SignedRequest;

pub async fn handle(
    State(st): State<AppState>,
    Path(local_id): Path<String>,
    _req: SignedRequest,
) -> ApiResult<Json<Value>> {
    let server = &st.fed.server_name;
    let fqid = format!("@{local_id}:{server}");
    let found = st.store.participant_by_fqid(&fqid).await?;
    let p = found
        .filter(|p| p.server_name == *server && !local_id.starts_with('_'))
        .ok_or_else(|| ApiError::ParticipantNotFound(format!("{fqid} is not a participant of this server")))?;
    Ok(Json(json!({"data": {
        "fqid": p.fqid, "local_id": p.local_id, "server_name": p.server_name, "display_name": p.display_name,
    }})))
}
