//! Client API of federated rooms: the federation switch, the admin's federation invite, and
//! federated DMs (`fed::join` does the work).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::extract::{Caller, Json, RoomId};
use super::views::{self, data};
use crate::error::{ApiError, ApiResult};

#[derive(Deserialize)]
pub struct FederateBody {
    enabled: bool,
}

/// `PUT /v1/admin/rooms/{room_id}/federate {enabled}` → the room view.
pub async fn federate(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Json(b): Json<FederateBody>,
) -> ApiResult<impl IntoResponse> {
    let v = crate::fed::join::federate(&st, &caller.participant, &room_id, b.enabled).await?;
    Ok(data(views::room(&v)))
}

#[derive(Deserialize)]
pub struct FqidBody {
    fqid: String,
}

fn checked_fqid(fqid: &str) -> ApiResult<()> {
    if crate::ids::parse_fqid(fqid).is_none() {
        return Err(ApiError::bad_request("fqid must look like @local_id:server_name"));
    }
    Ok(())
}

/// `POST /v1/admin/rooms/{room_id}/federation/invite {fqid}` → the invitee with its
/// membership (the room's creator, a member at power 100 or a server admin).
pub async fn invite(
    State(st): State<AppState>,
    caller: Caller,
    RoomId(room_id): RoomId,
    Json(b): Json<FqidBody>,
) -> ApiResult<impl IntoResponse> {
    checked_fqid(&b.fqid)?;
    if !crate::fed::join::is_remote(&st, &b.fqid) {
        return Err(ApiError::bad_request("fqid names a participant of this server: invite them with /invitations"));
    }
    let (who, row) = crate::fed::join::invite_remote(
        &st,
        &caller.participant,
        &room_id,
        &b.fqid,
        crate::fed::join::InviteMode::Admin,
    )
    .await?;
    Ok(data(member_view(&who, &row)))
}

pub fn member_view(who: &crate::storage::Participant, row: &crate::storage::MemberRow) -> Value {
    let mut out = views::participant(who);
    if let (Some(obj), Value::Object(more)) = (out.as_object_mut(), views::membership(row)) {
        obj.extend(more);
    }
    out
}

/// `POST /v1/me/federated-dms {fqid}` → the DM room of the caller and a remote participant
/// (201 when created).
pub async fn federated_dm(
    State(st): State<AppState>,
    caller: Caller,
    Json(b): Json<FqidBody>,
) -> ApiResult<impl IntoResponse> {
    checked_fqid(&b.fqid)?;
    if !crate::fed::join::is_remote(&st, &b.fqid) {
        return Err(ApiError::bad_request("fqid names a participant of this server: use POST /v1/rooms/dm"));
    }
    let (v, created) = crate::fed::join::federated_dm(&st, &caller.participant, &b.fqid).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, data(views::room(&v))))
}
