//! `/v1/workspaces` and `/v1/participants/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::extract::{Caller, Json, Path};
use super::views::{self, data};
use crate::clock::now_secs;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::storage::{Participant, Store, Workspace};

pub async fn list(State(st): State<AppState>, caller: Caller) -> ApiResult<impl IntoResponse> {
    let list = st.store.workspaces_of(&caller.participant.id).await?;
    Ok(data(Value::Array(list.iter().map(views::workspace).collect())))
}

#[derive(Deserialize)]
pub struct CreateBody {
    name: String,
}

pub async fn create(
    State(st): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateBody>,
) -> ApiResult<impl IntoResponse> {
    let name = crate::names::clean("name", &body.name, crate::names::Lines::One)?;
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ApiError::bad_request("name must be 1 to 255 characters"));
    }
    let w = Workspace {
        id: ids::new_workspace_id(),
        tenant_id: caller.participant.tenant_id.clone(),
        owner_id: caller.participant.id.clone(),
        name,
        personal: false,
        created_at: now_secs(),
    };
    st.store.create_workspace(&w).await?;
    Ok((StatusCode::CREATED, data(views::workspace(&w))))
}

/// Finds a participant by `participant_id` or `fqid`. Remote participants are known once
/// federation has met them.
pub async fn resolve_participant(store: &Store, id_or_fqid: &str) -> ApiResult<Participant> {
    let found = if id_or_fqid.starts_with('@') {
        if ids::parse_fqid(id_or_fqid).is_none() {
            return Err(ApiError::bad_request("fqid must look like @local_id:server_name"));
        }
        store.participant_by_fqid(id_or_fqid).await?
    } else {
        if !ids::is_participant_id(id_or_fqid) {
            return Err(ApiError::bad_request("participant_id is not a participant id"));
        }
        store.participant(id_or_fqid).await?
    };
    found.ok_or_else(|| ApiError::ParticipantNotFound(format!("no participant {id_or_fqid}")))
}

pub async fn participant(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    // A foreign fqid is looked up on its server (and cached), see `fed::remote`.
    let p = crate::fed::remote::resolve_participant(&st, &id, &caller.participant.tenant_id).await?;
    Ok(data(views::participant(&p)))
}
